"""Which reward head should be the default? k-fold over a finished run's seed pairs (whole prompts per fold,
never its eval pairs): mean_diff, the MLP head and the linear head on the same folds, paired.

    .venv/bin/python bench/head_choice.py --from-run runs/hh_harmless_dev-smollm2 --from-run runs/lens-bon [--folds 5]

Prints each head's k-fold accuracy and the paired differences (mean ± standard error over folds x repeats)
and appends them to bench/results.jsonl (with the machine).
"""
from __future__ import annotations

import argparse
import copy
import json
import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import numpy as np  # noqa: E402
import torch  # noqa: E402

from lens_ray.core.heads import rewards  # noqa: E402
from lens_ray.core.metrics import preference_accuracy  # noqa: E402
from lens_ray.core.pairs import inner_split, kfold_by_group  # noqa: E402
from lens_ray.core.rng import INNER_SPLIT, keyed_rng  # noqa: E402
from lens_ray.core.search import fit_method
from lens_ray.core.stats import standard_error  # noqa: E402
from lens_ray.data.finished_run import load_run_inputs  # noqa: E402

HEADS = {"mean_diff": ("mean_diff", "mlp"), "mlp": ("original", "mlp"), "linear": ("original", "linear")}


def measure(uri: str, folds: int, repeats: int) -> dict:
    src = load_run_inputs(uri)
    pos, neg, groups = src.emb.seed_pos, src.emb.seed_neg, src.groups
    acc: dict[str, list[float]] = {h: [] for h in HEADS}
    for r in range(repeats):
        for f, held in enumerate(kfold_by_group(groups, folds, seed=r)):
            rest = np.setdiff1d(np.arange(len(groups)), held)
            tr, va = inner_split(groups, rest, src.config.data.val_fraction, keyed_rng(0, INNER_SPLIT, r, f))
            t = lambda i: (torch.from_numpy(pos[i]), torch.from_numpy(neg[i]))  # noqa: E731
            for name, (method, head) in HEADS.items():
                cfg = copy.deepcopy(src.config)
                cfg.reward.heads = (head,)
                model = fit_method(cfg, method, 1, *t(tr), *t(va), 1000 * r + f, [groups[i] for i in tr])
                acc[name].append(preference_accuracy(rewards(model, t(held)[0]), rewards(model, t(held)[1])))
    out = {"run": uri, "model": src.config.embed.model, "seed_pairs": len(groups), "folds": folds, "repeats": repeats}
    for name, values in acc.items():
        out[name] = {"mean": float(np.mean(values)), "se": standard_error(values)}
    for a, b in (("linear", "mlp"), ("mlp", "mean_diff"), ("linear", "mean_diff")):
        d = np.array(acc[a]) - np.array(acc[b])
        out[f"{a}-{b}"] = {"mean": float(d.mean()), "se": standard_error(d)}
    return out


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--from-run", action="append", required=True)
    ap.add_argument("--folds", type=int, default=5)
    ap.add_argument("--repeats", type=int, default=2)
    args = ap.parse_args()
    torch.set_num_threads(os.cpu_count() or 1)
    rows = []
    for uri in args.from_run:
        t0 = time.time()
        rows.append({**measure(uri, args.folds, args.repeats), "seconds": round(time.time() - t0, 1)})
        r = rows[-1]
        print(f"{uri}: " + ", ".join(f"{k} {r[k]['mean']:.4f} ± {r[k]['se']:.4f}" for k in
                                     ("mean_diff", "mlp", "linear", "linear-mlp", "mlp-mean_diff",
                                      "linear-mean_diff")), flush=True)
    from embed_throughput import machine
    with open(os.path.join(os.path.dirname(__file__), "results.jsonl"), "a") as fh:
        fh.write(json.dumps({"bench": "head_choice", "machine": machine(), "time": time.strftime("%Y-%m-%d %H:%M"),
                             "rows": rows}) + "\n")


if __name__ == "__main__":
    main()
