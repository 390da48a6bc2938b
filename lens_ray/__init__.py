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

# The public face: what docs and users import, loaded on first use (so `import lens_ray` stays light: no torch,
# no Ray until a name that needs them is touched).
_PUBLIC = {
    "LensConfig": "lens_ray.config",          # the typed settings; `load_config(path, overrides)` builds one
    "load_config": "lens_ray.config",
    "run": ("lens_ray.pipelines.job", "run_job"),   # the main job: run(cfg) -> report (starts or joins Ray)
    "RewardModel": "lens_ray.scoring.reward_model",  # a finished run's reward model: RewardModel.from_run(uri)
    "export": "lens_ray.scoring.export",      # export(RewardModel, folder): a transformers model folder
}
__all__ = ["__version__", *_PUBLIC]


def __getattr__(name: str):
    if name not in _PUBLIC:
        raise AttributeError(f"module 'lens_ray' has no attribute {name!r}")
    import importlib
    module, attr = _PUBLIC[name] if isinstance(_PUBLIC[name], tuple) else (_PUBLIC[name], name)
    value = getattr(importlib.import_module(module), attr)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(__all__)
