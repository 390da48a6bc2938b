"""lens-ray: LENS latent-space preference synthesis, run on Ray."""
__version__ = "0.1.0"
