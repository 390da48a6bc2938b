"""The search space of the Tune search, and how a point of it becomes a LensConfig. No Ray.

A point is a flat dict: "method", "factor", "source" (which embeddings, when several runs are given,
e.g. last-token vs mean pooling) and dotted config fields ("vae.beta", "synth.noise_var", ...).
The space is define-by-run (Optuna): a method's own knobs are drawn only for that method, so the
searcher learns about each method's knobs from its own trials.
"""
from __future__ import annotations

import copy
from typing import Any

from lens_ray.config import LensConfig, TuneConfig, apply_overrides

# Categorical values must be primitives for Optuna: hidden layer widths as "64" / "256,256".
VAE_SHAPES = ("64", "256", "256,256")
LATENT_DIMS = (8, 16, 32, 64)
OVERSAMPLE = (1, 2, 4, 8)          # draws per kept sample; 1 = no top-k selection at all
HEAD_STEPS = (300, 600, 1200)      # the head's budget (the paired original gets the same)
KEYS = ("method", "factor", "source")


def _with(choices: tuple, value) -> list:
    """A categorical's choices, always including the base config's own value (so its default point exists)."""
    return sorted(set(choices) | {value}, key=lambda v: (str(type(v)), v))


def suggest(trial, tcfg: TuneConfig, sources: int, base: LensConfig) -> None:
    """Draw one point on an Optuna trial (define-by-run); categoricals include base's values."""
    method = trial.suggest_categorical("method", list(tcfg.methods))
    trial.suggest_categorical("reward.heads", list(tcfg.heads))     # the head (the paired original gets the same)
    trial.suggest_categorical("factor", list(tcfg.factors))   # the default point's factor is one of these
    if sources > 1:
        trial.suggest_categorical("source", list(range(sources)))
    trial.suggest_float("reward.synthetic_weight", 0.1, 1.0, log=True)
    if method == "lens":
        trial.suggest_float("vae.beta", 0.1, 4.0, log=True)
        trial.suggest_float("vae.gamma", 0.003, 1.0, log=True)
        trial.suggest_float("synth.noise_var", 1e-3, 1.0, log=True)
        trial.suggest_categorical("vae.latent_dim", _with(LATENT_DIMS, base.vae.latent_dim))
        trial.suggest_categorical("synth.select", ["prior", "posterior"])                  # top-k: which density
        trial.suggest_categorical("synth.oversample", _with(OVERSAMPLE, base.synth.oversample))  # top-k: how selective
        if tcfg.open_choices:
            trial.suggest_categorical("vae.hidden_dims", _with(VAE_SHAPES, _shape(base.vae.hidden_dims)))
            trial.suggest_categorical("synth.residual", [False, True])
    elif method == "direct_perturbation":
        trial.suggest_float("synth.dp_noise_var", 1e-3, 1.0, log=True)
    elif method == "gaussian_sampling":
        trial.suggest_categorical("synth.gs_covariance", ["full", "diag"])
        trial.suggest_float("synth.gs_shrinkage", 0.01, 0.9, log=True)
    if tcfg.open_choices:
        trial.suggest_categorical("reward.max_steps", _with(HEAD_STEPS, base.reward.max_steps))


def _shape(hidden_dims: tuple[int, ...]) -> str:
    return ",".join(str(h) for h in hidden_dims)


def default_point(cfg: LensConfig, sources: int) -> dict[str, Any]:
    """The run's own LENS settings (the paper's defaults unless the run changed them), as a point, so the
    search always measures them. Factor: the run's first factor the search spans."""
    t = cfg.tune
    point: dict[str, Any] = {
        "method": "lens", "reward.heads": cfg.reward.heads[0] if cfg.reward.heads[0] in t.heads else t.heads[0],
        "factor": next((f for f in cfg.factors if f in t.factors), t.factors[0]),
        "reward.synthetic_weight": cfg.reward.synthetic_weight,
        "vae.beta": cfg.vae.beta, "vae.gamma": cfg.vae.gamma, "synth.noise_var": cfg.synth.noise_var,
        "vae.latent_dim": cfg.vae.latent_dim, "synth.select": cfg.synth.select,
        "synth.oversample": cfg.synth.oversample,
    }
    if sources > 1:
        point["source"] = 0
    if t.open_choices:
        point["vae.hidden_dims"] = _shape(cfg.vae.hidden_dims)
        point["synth.residual"] = cfg.synth.residual
        point["reward.max_steps"] = cfg.reward.max_steps
    return point


def apply_point(base: LensConfig, point: dict[str, Any]) -> tuple[LensConfig, str, int, int]:
    """base config + point -> (config, method, factor, source index). `base` is not changed."""
    cfg = apply_overrides(copy.deepcopy(base), {k: v for k, v in point.items() if k not in KEYS})
    return cfg, point["method"], int(point["factor"]), int(point.get("source", 0))


def tuned_overrides(point: dict[str, Any], source_embed: dict[str, Any]) -> dict[str, Any]:
    """The dotted fields a run needs to use a chosen point (`jobs/full.py --from-tune`): the point's knobs
    and the embedding settings of the run whose embeddings it was measured on."""
    out = {k: v for k, v in point.items() if k not in KEYS}
    out.update({f"embed.{k}": source_embed[k] for k in ("model", "pooling", "max_length", "dtype", "layer",
                                                        "layer_combine") if k in source_embed})
    return out
