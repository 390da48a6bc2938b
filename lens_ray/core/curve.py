"""The learning curve: every method x head at several seed-pair counts, on one held-out evaluation. No Ray.

A *task* is one (size, seed): a nested subset of the run's seed pairs by whole prompts (the subset of a
smaller size is part of every larger one, for the same seed), its own validation part (early stopping
only), one VAE, one augmentation per (method, factor), and a head of each kind on each. Every row is
scored on the run's evaluation pairs (and Best-of-N set), the same for every size, and paired against
`original` on the same head, size and seed; `mean_diff` is the floor.

Shapes: n = seed pairs of the run, d = embedding dim.
"""
from __future__ import annotations

import numpy as np
import torch

from lens_ray.config import AUGMENTING, LensConfig
from lens_ray.core.augment import PairSet, needs_vae, training_pairs
from lens_ray.core.fit import NonFiniteError, fit_reward_head, fit_vae
from lens_ray.core.heads import mean_diff_head
from lens_ray.core.metrics import head_metrics
from lens_ray.core.pairs import group_rows, inner_split
from lens_ray.core.records import Embedded
from lens_ray.core.rng import SUBSETS, VAL_SPLIT, keyed_rng
from lens_ray.core.stats import mean_std, paired, standard_error


def size_of(label: str, n: int) -> int:
    """A size label ("250", "all") -> pairs; a size above the run's n seed pairs is refused, never capped."""
    size = n if label == "all" else int(label)
    if size > n:
        raise ValueError(f"curve size {label} is more than the run's {n} seed pairs")
    return size


def nested_subset(groups: list[str], size: int, seed: int, split_seed: int) -> np.ndarray:
    """Indices of `size` seed pairs by whole prompts (the last prompt taken is cut to hit the size exactly);
    for one seed, the subset of a smaller size is a prefix of every larger one."""
    members = list(group_rows(groups).values())
    out: list[int] = []
    for g in keyed_rng(split_seed, SUBSETS, seed).permutation(len(members)):
        if len(out) >= size:
            break
        out += members[g][: size - len(out)]
    return np.array(out, dtype=np.int64)


def task_rows(cfg: LensConfig, emb: Embedded, groups: list[str], label: str, seed: int) -> list[dict]:
    """Every (method, factor, head) of one (size, seed) task -> result rows (failed fits: status and reason)."""
    split = cfg.data.split_seed
    idx = nested_subset(groups, size_of(label, len(groups)), seed, split)
    local = [groups[i] for i in idx]
    gen = keyed_rng(split, VAL_SPLIT, seed, len(idx))
    tr, va = inner_split(local, np.arange(len(idx)), cfg.data.val_fraction, gen)
    pos, neg = torch.from_numpy(emb.seed_pos[idx[tr]]), torch.from_numpy(emb.seed_neg[idx[tr]])
    val = PairSet(torch.from_numpy(emb.seed_pos[idx[va]]), torch.from_numpy(emb.seed_neg[idx[va]]))
    tr_groups = [local[i] for i in tr]
    base = {"size": int(len(idx)), "size_label": label, "seed": seed, "train_pairs": int(len(tr))}
    rows = [{**base, "status": "ok", **head_metrics(mean_diff_head(pos, neg), emb), "method": "mean_diff",
             "factor": 1, "head_kind": "linear"}]
    vae, vae_failure = None, None
    if any(needs_vae(m) for m in cfg.methods):
        try:
            vae = fit_vae(cfg.vae, pos, neg, seed)[0]
        except NonFiniteError as exc:
            vae_failure = f"VAE: {exc}"
    for method in (m for m in cfg.methods if m != "mean_diff"):
        for factor in (cfg.factors if method in AUGMENTING else (1,)):
            if needs_vae(method) and vae_failure:
                rows += [{**base, "method": method, "factor": factor, "head_kind": h, "status": "failed",
                          "reason": vae_failure, "accuracy": None, "bon_gold": None} for h in cfg.reward.heads]
                continue
            train = training_pairs(method, factor, pos, neg, seed, cfg.synth, cfg.reward.synthetic_weight, vae)
            for head in cfg.reward.heads:
                fit = fit_reward_head(cfg.reward, head, train, val, seed, tr_groups, pos, neg)
                row = {**base, "method": method, "factor": factor, "head_kind": head}
                rows.append({**row, "status": "failed", "reason": fit.failure, "accuracy": None, "bon_gold": None}
                            if fit.failure else {**row, "status": "ok", **head_metrics(fit.head, emb)})
    return rows


def summarize_curve(rows: list[dict]) -> list[dict]:
    """Per (size, method, factor, head): accuracy and BoN gold over seeds, and the gain over `original` on the
    same head and size, paired by seed, with its standard error."""
    cells: dict[tuple, dict[int, dict]] = {}
    for r in rows:
        cells.setdefault((r["size"], r["method"], r["factor"], r["head_kind"]), {})[r["seed"]] = r
    out = []
    for (size, method, factor, head), seeds in sorted(cells.items(), key=lambda kv: (kv[0][0], str(kv[0][1:]))):
        base = cells.get((size, "original", 1, head)) or cells.get((size, "original", 1, "mlp"), {})
        row = {"size": size, "method": method, "factor": factor, "head_kind": head,
               "failed": sum(r["status"] == "failed" for r in seeds.values())}
        for metric in ("accuracy", "bon_gold"):
            row[metric] = mean_std(r[metric] for r in seeds.values())
            gains = paired(seeds, base, metric) if method != "original" else []
            row[f"{metric}_vs_original"] = ({**mean_std(gains), "se": standard_error(gains)}
                                            if gains else None)
        out.append(row)
    return out


def verdicts(rows: list[dict], summary: list[dict], metric: str = "accuracy") -> list[dict]:
    """Per size: the best head on the original pairs, whether it beats mean_diff (paired by seed), and the best
    augmentation on that head against it. 'Beyond noise' means a paired gain above twice its standard error;
    the best augmentation is the best of several on these same test figures, so its gain is optimistic."""
    out = []
    for size in sorted({r["size"] for r in summary}):
        at = [r for r in summary if r["size"] == size and r[metric]]
        originals = [r for r in at if r["method"] == "original"]
        if not originals:
            continue
        head = max(originals, key=lambda r: r[metric]["mean"])
        by_seed = {(r["method"], r["head_kind"], r["factor"]): {} for r in rows}
        for r in rows:
            if r["size"] == size:
                by_seed[(r["method"], r["head_kind"], r["factor"])][r["seed"]] = r
        floor = paired(by_seed[("original", head["head_kind"], 1)], by_seed.get(("mean_diff", "linear", 1), {}),
                       metric)
        augmented = [r for r in at if r["method"] in AUGMENTING and r["head_kind"] == head["head_kind"]
                     and r.get(f"{metric}_vs_original")]
        best = max(augmented, key=lambda r: r[f"{metric}_vs_original"]["mean"], default=None)
        gain = best[f"{metric}_vs_original"] if best else None
        out.append({"size": size, "best_head": head["head_kind"], "original": head[metric]["mean"],
                    "over_mean_diff": float(np.mean(floor)) if floor else None,
                    "over_mean_diff_se": standard_error(floor) if floor else None,
                    "head_beats_mean_diff": bool(floor and np.mean(floor) > 2 * standard_error(floor)),
                    "best_augmentation": f"{best['method']} x{best['factor']}" if best else None,
                    "gain": gain["mean"] if gain else None, "gain_se": gain["se"] if gain else None,
                    "augmentation_pays": bool(gain and gain["mean"] > 2 * gain["se"])})
    return out
