"""Does reading an inner layer through the LM's final norm cost accuracy? On a run embedded before lens-ray read
inner layers that way (its `embeddings-layer<L>` tables hold the raw states), each candidate layer's mean_diff,
linear and MLP heads are scored raw and normed: the selection's own k-fold on the seed pairs (the same folds),
and a refit on 90% of the seed pairs scored on the run's held-out pairs. The norm is the model's own (weight and
epsilon), applied in float64 to the stored vectors: what `layer_states` computes at the last token.

    .venv/bin/python bench/inner_norm.py --from-run runs/hh_harmless_dev-smollm2 [--layers -10,-16]

Prints a markdown table and appends it, with the machine, to bench/results.jsonl.
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

import numpy as np  # noqa: E402
import torch  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--from-run", required=True)
    ap.add_argument("--layers", default="-10,-16")
    args = ap.parse_args()
    from embed_throughput import machine

    from lens_ray.core.heads import rewards
    from lens_ray.core.metrics import preference_accuracy
    from lens_ray.core.selection import fold_scores, fold_splits, refit, stage_one, summarize
    from lens_ray.data.embed import final_norm, load_model
    from lens_ray.data.finished_run import FinishedRun
    from lens_ray.store.artifacts import read_pair_embeddings
    from lens_ray.store.storage import Manifest

    run = FinishedRun.open(args.from_run)
    cfg = run.config
    norm = final_norm(load_model(cfg.embed.model, "float32").model)
    g, eps = norm.weight.detach().double().numpy(), norm.variance_epsilon

    def normed(x: np.ndarray) -> np.ndarray:
        x = x.astype(np.float64)
        return (x / np.sqrt((x ** 2).mean(1, keepdims=True) + eps) * g).astype(np.float32)

    groups = [p.group for p in run.inputs().seed_pairs]
    folds = fold_splits(groups, cfg.selection.folds, cfg.data.val_fraction, cfg.data.split_seed)
    cut = int(0.9 * len(groups))
    rows = []
    for layer in (int(v) for v in args.layers.split(",")):
        man = Manifest.load(run.store.child(f"embeddings-layer{layer}"))
        if man.meta.get("inner"):
            raise SystemExit(f"{args.from_run}: layer {layer} was embedded through the final norm already; this "
                             "compares raw stored states with normed ones (a run from before that change)")
        tables = read_pair_embeddings(man, "seed") + read_pair_embeddings(man, "eval")
        for how, f in (("raw", lambda x: x), ("final norm", normed)):
            sp, sn, ep, en = (f(t) for t in tables)
            cands = stage_one([(layer,)], ("mean_diff", "linear", "mlp"))
            units = [fold_scores(cfg, cands, sp, sn, groups, folds[i], i) for i in range(len(folds))]
            for r, c in zip(summarize(cands, units), cands):
                head = refit(cfg, c, sp, sn, groups, np.arange(cut), np.arange(cut, len(groups)), 0)
                held = preference_accuracy(rewards(head, torch.from_numpy(ep)), rewards(head, torch.from_numpy(en)))
                rows.append({"layer": layer, "head": c.head, "states": how, "kfold": r.kfold_accuracy,
                             "kfold_se": r.kfold_se, "held_out": held})
                print(f"layer {layer} {c.head} {how}: k-fold {r.kfold_accuracy:.3f} ± {r.kfold_se:.3f}, "
                      f"held-out {held:.3f}", flush=True)
    print(f"\n{machine()}, {len(groups)} seed pairs, {len(ep)} held-out pairs\n")
    print("| layer | head | k-fold raw | k-fold normed | held-out raw | held-out normed |\n|---|---|---|---|---|---|")
    by = {(r["layer"], r["head"], r["states"]): r for r in rows}
    for layer, head in dict.fromkeys((r["layer"], r["head"]) for r in rows):
        a, b = by[(layer, head, "raw")], by[(layer, head, "final norm")]
        print(f"| {layer} | {head} | {a['kfold']:.3f} ± {a['kfold_se']:.3f} | {b['kfold']:.3f} ± {b['kfold_se']:.3f} "
              f"| {a['held_out']:.3f} | {b['held_out']:.3f} |")
    with open(ROOT / "bench" / "results.jsonl", "a") as fh:
        fh.write(json.dumps({"bench": "inner_norm", "machine": machine(), "time": time.strftime("%Y-%m-%d %H:%M"),
                             "run": args.from_run, "rows": rows}) + "\n")


if __name__ == "__main__":
    main()
