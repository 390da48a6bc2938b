"""The math of lens-ray, pure: torch and numpy on tensors, testable in milliseconds.

What it holds: the VAE and its LENS loss (vae.py), latent synthesis (synth.py, synth_stream.py), the latent
baselines (baselines.py), one entry point for every augmenting method and the training pairs they make
(augment.py), reward heads and their rewards (heads.py, linear_head.py), the training loops with hooks for
data-parallel workers (fit.py), metrics (metrics.py), summary statistics (stats.py), keyed randomness
(rng.py), preference pairs and their splits (pairs.py), the records stages hand each other (records.py), the
search's space and objective (search.py), the learning curve's task (curve.py), and progress lines
(progress.py). A new head goes in heads.py; a new augmenting method's math in baselines.py or synth.py and
its one entry in augment.py's `AUGMENTERS` (its name in config.AUGMENTING).

What it may import: `lens_ray.config` and itself. Never Ray, the store, the network or the packages above
(a test imports every module of it in a fresh interpreter and checks).
"""
