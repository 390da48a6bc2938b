"""The Tune search's math: its space, and its objective, k-fold validation paired against `original`. No Ray.

The space. A point is a flat dict: "method", "factor", "source" (which embeddings, when several runs are
given, e.g. last-token vs mean pooling) and dotted config fields ("vae.beta", "synth.noise_var", ...). The
space is define-by-run (Optuna): a method's own knobs are drawn only for that method, so the searcher learns
about each method's knobs from its own trials.

The objective. One *unit* is (repeat r, fold f): train on the other folds (less an inner validation part,
whole prompts, for early stopping), synthesize with the trial's method, fit the augmented head and the
`original` head with the same budget and seed, and score both on fold f. The objective is the mean paired
difference (augmented − original accuracy) over units; its standard error is the objective's own noise,
reported beside it. Test data is never touched here: `score_choice` is the one place that scores on it,
for configurations already chosen.

Shapes: n = seed pairs, d = embedding dim.
"""
from __future__ import annotations

import copy
from typing import Any

import numpy as np
import torch

from lens_ray.config import LensConfig, SearchConfig, apply_overrides
from lens_ray.core.augment import PairSet, needs_vae, training_pairs
from lens_ray.core.fit import NonFiniteError, fit_reward_head, fit_vae
from lens_ray.core.heads import mean_diff_head
from lens_ray.core.metrics import head_accuracy, head_metrics
from lens_ray.core.pairs import Pair, inner_split, seed_splits
from lens_ray.core.records import Embedded
from lens_ray.core.rng import INNER_SPLIT, keyed_rng
from lens_ray.core.stats import standard_error
from lens_ray.core.vae import PreferenceVAE

# ---------------------------------------------------------------- the space

# Categorical values must be primitives for Optuna: hidden layer widths as "64" / "256,256".
VAE_SHAPES = ("64", "256", "256,256")
LATENT_DIMS = (8, 16, 32, 64)
OVERSAMPLE = (1, 2, 4, 8)          # draws per kept sample; 1 = no top-k selection at all
HEAD_STEPS = (300, 600, 1200)      # the head's budget (the paired original gets the same)
KEYS = ("method", "factor", "source")


def _with(choices: tuple, value) -> list:
    """A categorical's choices, always including the base config's own value (so its default point exists)."""
    return sorted(set(choices) | {value}, key=lambda v: (str(type(v)), v))


def suggest(trial, tcfg: SearchConfig, sources: int, base: LensConfig) -> None:
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
    t = cfg.search
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


def describe_point(point: dict[str, Any]) -> str:
    """A point in one line: "lens x4 [beta=0.5, gamma=0.1, ...]"."""
    def short(v) -> str:
        return f"{v:.3g}" if isinstance(v, float) else str(v)
    knobs = ", ".join(f"{k.split('.')[-1]}={short(v)}" for k, v in point.items() if k not in ("method", "factor"))
    return f"{point['method']} x{point['factor']} [{knobs}]"


def tuned_overrides(point: dict[str, Any], source_embed: dict[str, Any]) -> dict[str, Any]:
    """The dotted fields a run needs to use a chosen point (`jobs/full.py --from-search`): the point's knobs
    and the embedding settings of the run whose embeddings it was measured on."""
    out = {k: v for k, v in point.items() if k not in KEYS}
    out.update({f"embed.{k}": source_embed[k] for k in ("model", "pooling", "max_length", "dtype", "layer",
                                                        "layer_combine") if k in source_embed})
    return out


# ---------------------------------------------------------------- the objective

def units(folds: int, repeats: int) -> list[tuple[int, int]]:
    """(repeat, fold) in the order trials run them: repeat-major, so any prefix spans different folds."""
    return [(r, f) for r in range(repeats) for f in range(folds)]


def fit_method(cfg: LensConfig, method: str, factor: int, train_pos: torch.Tensor, train_neg: torch.Tensor,
               val_pos: torch.Tensor, val_neg: torch.Tensor, seed: int, groups: list[str],
               vae: PreferenceVAE | None = None) -> torch.nn.Module:
    """One reward model by `method` from training pairs (n, d) x2 (groups: each pair's prompt), with the
    config's first head kind; the MLP early-stops on val (m, d) x2. `vae`: lens's VAE of these training
    pairs, if already fitted (else fitted here). A fit that diverges raises."""
    if method == "mean_diff":
        return mean_diff_head(train_pos, train_neg)
    if needs_vae(method) and vae is None:
        vae = fit_vae(cfg.vae, train_pos, train_neg, seed)[0]
    train = training_pairs(method, factor, train_pos, train_neg, seed, cfg.synth, cfg.reward.synthetic_weight, vae)
    fit = fit_reward_head(cfg.reward, cfg.reward.heads[0], train, PairSet(val_pos, val_neg), seed, groups,
                          train_pos, train_neg)
    if fit.failure:
        raise NonFiniteError(f"{method} x{factor} head, seed {seed}: {fit.failure}")
    return fit.head


def _rows(pos: np.ndarray, neg: np.ndarray, idx: np.ndarray) -> tuple[torch.Tensor, torch.Tensor]:
    return torch.from_numpy(pos[idx]), torch.from_numpy(neg[idx])


def paired_unit(cfg: LensConfig, method: str, factor: int, pos: np.ndarray, neg: np.ndarray, groups: list[str],
                folds: list[np.ndarray], repeat: int, fold: int) -> dict:
    """Fit `method` and `original` on all folds but `fold` and score both on it: one paired difference."""
    held = folds[fold]
    rest = np.sort(np.concatenate([folds[j] for j in range(len(folds)) if j != fold]))
    seed = 1000 * repeat + fold
    tr, va = inner_split(groups, rest, cfg.data.val_fraction,
                         keyed_rng(cfg.data.split_seed, INNER_SPLIT, repeat, fold))
    acc = {}
    for name, m, f in (("original", "original", 1), ("method", method, factor)):
        model = fit_method(cfg, m, f, *_rows(pos, neg, tr), *_rows(pos, neg, va), seed, [groups[i] for i in tr])
        acc[name] = head_accuracy(model, *_rows(pos, neg, held))
    return {"repeat": repeat, "fold": fold, "accuracy": acc["method"], "accuracy_original": acc["original"],
            "delta": acc["method"] - acc["original"]}


def summarize_units(rows: list[dict]) -> dict:
    """Unit rows -> objective (mean paired delta), its standard error, and the mean accuracies."""
    delta = np.array([r["delta"] for r in rows], dtype=np.float64)
    return {"objective": float(delta.mean()), "objective_se": standard_error(delta), "units": len(rows),
            "accuracy": float(np.mean([r["accuracy"] for r in rows])),
            "accuracy_original": float(np.mean([r["accuracy_original"] for r in rows]))}


def conclusions(objective: float, objective_se: float | None, test_gain: dict) -> tuple[bool, bool]:
    """(beats, holds): the k-fold objective beats original by more than two of its standard errors (None: one
    unit, no spread: never); the tuned configuration's test gain over original, paired by seed
    ({mean, std, n}), exceeds two standard errors of its mean (one seed: never)."""
    beats = objective_se is not None and objective - 2 * objective_se > 0
    holds = test_gain["n"] >= 2 and test_gain["mean"] > 2 * test_gain["std"] / np.sqrt(test_gain["n"])
    return bool(beats), bool(holds)


def score_choice(cfg: LensConfig, method: str, factor: int, seed_pairs: list[Pair], emb: Embedded,
                 seeds: int) -> list[dict]:
    """Fit on the seed pairs (the pipeline's per-seed validation splits) and score on the test data:
    one row per seed, accuracy (and BoN gold) of `method` at `factor`."""
    rows = []
    for s in seed_splits(seed_pairs, cfg.data.val_fraction, seeds, cfg.data.split_seed):
        model = fit_method(cfg, method, factor, *_rows(emb.seed_pos, emb.seed_neg, s.train),
                           *_rows(emb.seed_pos, emb.seed_neg, s.val), s.seed, [seed_pairs[i].group for i in s.train])
        rows.append({"seed": s.seed, **head_metrics(model, emb)})
    return rows


def score_point(base: LensConfig, point: dict[str, Any], method: str, seed_pairs: list[Pair],
                emb: Embedded) -> list[dict]:
    """`score_choice` of `method` under a point's settings, with the search's test_seeds (original: factor 1)."""
    cfg, _, factor, _ = apply_point(base, point)
    return score_choice(cfg, method, factor if method != "original" else 1, seed_pairs, emb, cfg.search.test_seeds)
