"""The search's objective: k-fold validation over the seed pairs, paired against `original`. No Ray.

One *unit* is (repeat r, fold f): train on the other folds (less an inner validation part, whole
prompts, for early stopping), synthesize with the trial's method, fit the augmented head and the
`original` head with the same budget and seed, and score both on fold f. The objective is the mean
paired difference (augmented − original accuracy) over units; its standard error is the objective's
own noise, reported beside it. Test data is never touched here: `score_choice` is the one place that
scores on it, for configurations already chosen.

Shapes: n = seed pairs, d = embedding dim.
"""
from __future__ import annotations

import numpy as np
import torch

from lens_ray.augment import Augmenter
from lens_ray.config import LensConfig
from lens_ray.data import Pair, group_rows, seed_splits
from lens_ray.evaluate import best_of_n_gold, preference_accuracy
from lens_ray.fit import NonFiniteError, PairSet, augmented_set, fit_reward_head, fit_vae, score
from lens_ray.models.reward import LinearScorer, mean_diff_direction
from lens_ray.rng import FOLDS, INNER_SPLIT, keyed_rng
from lens_ray.run_types import Embedded
from lens_ray.stats import standard_error
from lens_ray.synth import synth_per_side


def kfold_by_group(groups: list[str], k: int, seed: int) -> list[np.ndarray]:
    """Row indices of k folds: each prompt's rows in one fold, sizes balanced (largest groups first)."""
    members = group_rows(groups)
    if len(members) < k:
        raise ValueError(f"{len(members)} distinct prompts cannot make {k} folds")
    keys = list(members)
    shuffled = [keys[i] for i in keyed_rng(seed, FOLDS).permutation(len(keys))]
    folds: list[list[int]] = [[] for _ in range(k)]
    for g in sorted(shuffled, key=lambda g: -len(members[g])):     # stable: random order among equal sizes
        min(folds, key=len).extend(members[g])
    return [np.sort(np.array(f, dtype=np.int64)) for f in folds]


def inner_split(groups: list[str], idx: np.ndarray, val_fraction: float,
                gen: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """idx -> (train, val) by whole prompts, val holding about val_fraction of the rows."""
    local = group_rows([groups[i] for i in idx])
    members = {g: [int(idx[j]) for j in rows] for g, rows in local.items()}
    keys = list(members)
    want, val = max(1, int(round(len(idx) * val_fraction))), []
    for j in gen.permutation(len(keys)):
        if len(val) >= want:
            break
        val += members[keys[j]]
    val_set = set(val)
    return np.array([i for i in idx if int(i) not in val_set], dtype=np.int64), np.sort(np.array(val, dtype=np.int64))


def units(folds: int, repeats: int) -> list[tuple[int, int]]:
    """(repeat, fold) in the order trials run them: repeat-major, so any prefix spans different folds."""
    return [(r, f) for r in range(repeats) for f in range(folds)]


def fit_method(cfg: LensConfig, method: str, factor: int, train_pos: torch.Tensor, train_neg: torch.Tensor,
               val_pos: torch.Tensor, val_neg: torch.Tensor, seed: int, groups: list[str]) -> torch.nn.Module:
    """One reward model by `method` from training pairs (n, d) x2 (groups: each pair's prompt), with the
    config's first head kind; the MLP early-stops on val (m, d) x2. A fit that diverges raises."""
    if method == "mean_diff":
        return LinearScorer(mean_diff_direction(train_pos, train_neg))
    train = PairSet(train_pos, train_neg)
    if method != "original":
        vae = fit_vae(cfg.vae, train_pos, train_neg, seed)[0] if method == "lens" else None
        aug = Augmenter.fit(method, seed, cfg.synth, train_pos, train_neg, vae)
        syn_pos, syn_neg = aug.draw(train_pos, train_neg, np.arange(len(train_pos)), synth_per_side(factor))
        train = augmented_set(train_pos, train_neg, syn_pos, syn_neg, factor, seed, cfg.reward.synthetic_weight)
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
        held_pos, held_neg = _rows(pos, neg, held)
        acc[name] = preference_accuracy(score(model, held_pos), score(model, held_neg))
    return {"repeat": repeat, "fold": fold, "accuracy": acc["method"], "accuracy_original": acc["original"],
            "delta": acc["method"] - acc["original"]}


def summarize_units(rows: list[dict]) -> dict:
    """Unit rows -> objective (mean paired delta), its standard error, and the mean accuracies."""
    delta = np.array([r["delta"] for r in rows], dtype=np.float64)
    return {"objective": float(delta.mean()), "objective_se": standard_error(delta), "units": len(rows),
            "accuracy": float(np.mean([r["accuracy"] for r in rows])),
            "accuracy_original": float(np.mean([r["accuracy_original"] for r in rows]))}


def score_choice(cfg: LensConfig, method: str, factor: int, seed_pairs: list[Pair], emb: Embedded,
                 seeds: int) -> list[dict]:
    """Fit on the seed pairs (the pipeline's per-seed validation splits) and score on the test data:
    one row per seed, accuracy (and BoN gold) of `method` at `factor`."""
    rows = []
    e_pos, e_neg = torch.tensor(emb.eval_pos), torch.tensor(emb.eval_neg)     # copies: arrays from Ray are read-only
    for s in seed_splits(seed_pairs, cfg.data.val_fraction, seeds, cfg.data.split_seed):
        model = fit_method(cfg, method, factor, *_rows(emb.seed_pos, emb.seed_neg, s.train),
                           *_rows(emb.seed_pos, emb.seed_neg, s.val), s.seed, [seed_pairs[i].group for i in s.train])
        row = {"seed": s.seed, "accuracy": preference_accuracy(score(model, e_pos), score(model, e_neg)),
               "bon_gold": None}
        if emb.bon is not None:
            flat = torch.tensor(emb.bon.reshape(-1, emb.bon.shape[-1]))
            row["bon_gold"] = best_of_n_gold(score(model, flat).reshape(emb.bon.shape[:2]), emb.bon_gold)
        rows.append(row)
    return rows
