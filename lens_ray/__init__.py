"""lens-ray: LENS latent-space preference synthesis and reward models, measured fairly, on Ray.

The folders are the layers; each imports only from the ones listed before it (a test holds this):

    config.py     the typed settings (one `LensConfig` from YAML / CLI to every stage); imports nothing of ours
    core/         the math: models, synthesis, baselines, fits, heads, metrics, splits, the search's and the
                  curve's math, the records stages pass. No Ray, no storage, no network.
    store/        storage URIs (local, S3), manifests, leases, artifact formats, the embedding cache.
    data/         ingest of every format, the embedder (an LM), the reader of a finished run.
    scoring/      the reward-model API, its wire protocols, trainer integrations, the Hugging Face export.
    distributed/  the Ray layer: Ray Data, Ray Train, Ray Tune, Ray Serve, the session.
    pipelines/    the jobs' stages in order: the run, the search, the curve, synthesis at scale, batch scoring,
                  preflight checks, reports.
    cli.py        the `lens-ray` command (and `jobs/*.py`, what `ray job submit` runs).
"""
__version__ = "0.1.0"
