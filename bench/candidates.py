"""Issue 34's candidates, measured as the select stage measures them: on a finished run's stored embeddings, the
k-fold over its seed pairs picks a reward model from each candidate set, and the pick is refitted on each of the
run's seed splits and scored on its held-out pairs, paired by seed against today's pick.

Candidate sets (each adds to today's layer x {mean_diff, linear, mlp}):
    today       the default (Bradley-Terry heads, the linear head's L2 grid 1e-4 .. 10)
    pointwise   every trained head also with the per-response loss (selection.losses=bradley_terry,pointwise)
    wide L2     the linear head's L2 grid 1e-4 .. 1e4 (reward.linear_l2)
    both        the two together

    .venv/bin/python bench/candidates.py --from-run runs/hh_harmless_dev-smollm2 [--sets today,pointwise]

No Ray: the select stage's own functions in one process. Prints a markdown table and appends it, with the
machine, to bench/results.jsonl.
"""
from __future__ import annotations

import argparse
import copy
import json
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

import numpy as np  # noqa: E402
import torch  # noqa: E402

WIDE_L2 = (1e-4, 1e-3, 1e-2, 1e-1, 1.0, 10.0, 100.0, 1e3, 1e4)
SETS = {"today": (("bradley_terry",), None), "pointwise": (("bradley_terry", "pointwise"), None),
        "wide L2": (("bradley_terry",), WIDE_L2), "both": (("bradley_terry", "pointwise"), WIDE_L2)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--from-run", required=True)
    ap.add_argument("--sets", default=",".join(SETS))
    args = ap.parse_args()
    from embed_throughput import machine

    from lens_ray.config import load_config
    from lens_ray.core.heads import rewards
    from lens_ray.core.metrics import preference_accuracy
    from lens_ray.core.pairs import seed_splits
    from lens_ray.core.selection import candidate_layers, choose, fold_scores, fold_splits, refit, stage_one, summarize
    from lens_ray.core.stats import mean_std, standard_error
    from lens_ray.data.embed import model_depth
    from lens_ray.data.ingest import load_datasets
    from lens_ray.store.artifacts import read_pair_embeddings
    from lens_ray.store.storage import Manifest, Storage

    store = Storage(args.from_run)
    report = store.read_json("report.json")
    base = load_config(None, {k: v for k, v in flat(report["config"]).items() if v is not None})
    ds = load_datasets(base.data)
    assert len(ds.seed_pairs) == report["seed_pairs"], "the data no longer gives the run's seed pairs"
    groups = [p.group for p in ds.seed_pairs]
    layers = [tuple(base.selection.layers)] if base.selection.layers else \
        [(x,) for x in candidate_layers(model_depth(base.embed.model))]
    tables = {}
    for layer in layers:
        folder = "embeddings" if layer == tuple(base.embed.layer) else f"embeddings-layer{layer[0]}"
        man = Manifest.load(store.child(folder))
        tables[layer] = read_pair_embeddings(man, "seed") + read_pair_embeddings(man, "eval")
    folds = fold_splits(groups, base.selection.folds, base.data.val_fraction, base.data.split_seed)
    splits = seed_splits(ds.seed_pairs, base.data.val_fraction, base.seeds, base.data.split_seed)
    scored: dict[tuple, dict] = {}               # (candidate, L2 grid) -> its fold results, computed once
    out, today = [], None
    for name in args.sets.split(","):
        losses, l2 = SETS[name]
        cfg = copy.deepcopy(base)
        cfg.selection.losses = losses
        if l2:
            cfg.reward.linear_l2 = l2
        t0 = time.time()
        cands = stage_one(layers, cfg.selection.heads, losses)
        units = [dict() for _ in folds]
        for c in cands:
            key = (c, cfg.reward.linear_l2 if c.head == "linear" else None)
            if key not in scored:
                sp, sn = tables[c.layer][:2]
                scored[key] = {f: fold_scores(cfg, [c], sp, sn, groups, folds[f], f)[c.name]
                               for f in range(len(folds))}
            for f in range(len(folds)):
                units[f][c.name] = scored[key][f]
        rows = summarize(cands, units)
        pick_row = choose(rows)
        pick = next(c for c in cands if c.name == pick_row["candidate"])
        select_s = time.time() - t0
        sp, sn, ep, en = tables[pick.layer]
        held = {}
        for s in splits:
            head = refit(cfg, pick, sp, sn, groups, s.train, s.val, s.seed)
            held[s.seed] = preference_accuracy(rewards(head, torch.from_numpy(ep)),
                                               rewards(head, torch.from_numpy(en)))
        row = {"set": name, "pick": pick.name, "kfold": pick_row["kfold_accuracy"], "kfold_se": pick_row["kfold_se"],
               "held_out": mean_std(held.values()), "by_seed": held, "candidates": len(cands),
               "select_s": round(select_s, 1)}
        if today is None:
            today = held
        diffs = [held[k] - today[k] for k in held]
        row["vs_today"] = {"mean": float(np.mean(diffs)), "se": standard_error(diffs) if len(diffs) > 1 else None}
        out.append(row)
        print(f"{name}: {pick.name}, k-fold {row['kfold']:.3f} ± {row['kfold_se']:.3f}, held-out "
              f"{row['held_out']['mean']:.3f} ± {row['held_out']['std']:.3f}, vs today "
              f"{row['vs_today']['mean']:+.4f}, {len(cands)} candidates ({select_s:.0f} s)", flush=True)
        for r in sorted(rows, key=lambda r: -(r["kfold_accuracy"] or 0))[:6]:
            print(f"    {r['candidate']}: {r['kfold_accuracy']:.3f} ± {r['kfold_se']:.3f}", flush=True)
    print(f"\n{machine()}; {args.from_run}: {len(groups)} seed pairs, {len(ep)} held-out pairs, "
          f"{len(splits)} seeds\n")
    print("| candidate set | candidates | pick | k-fold | held-out (seeds) | vs today's pick, paired | select s |")
    print("|---|---|---|---|---|---|---|")
    for r in out:
        se = r["vs_today"]["se"]
        print(f"| {r['set']} | {r['candidates']} | {r['pick']} | {r['kfold']:.3f} ± {r['kfold_se']:.3f} | "
              f"{r['held_out']['mean']:.3f} ± {r['held_out']['std']:.3f} | {100 * r['vs_today']['mean']:+.1f}"
              + (f" ± {100 * se:.1f}" if se else "") + f" pts | {r['select_s']} |")
    with open(ROOT / "bench" / "results.jsonl", "a") as fh:
        fh.write(json.dumps({"bench": "candidates", "machine": machine(), "time": time.strftime("%Y-%m-%d %H:%M"),
                             "run": args.from_run, "rows": out}, default=str) + "\n")


def flat(doc: dict, prefix: str = "") -> dict:
    """A stored config as dotted overrides."""
    out = {}
    for k, v in doc.items():
        if isinstance(v, dict):
            out.update(flat(v, f"{prefix}{k}."))
        else:
            out[f"{prefix}{k}"] = v
    return out


if __name__ == "__main__":
    main()
