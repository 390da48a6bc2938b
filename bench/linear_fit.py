"""The linear head's fit: scipy's L-BFGS-B (today's `fit_weights`) against torch.optim.LBFGS (the baseline, what
`fit_weights` used before), on a finished run's embeddings, in one process, one thread.

    .venv/bin/python bench/linear_fit.py [--from-run runs/hh_harmless_dev-smollm2] [--seeds 3]

For each seed: the whole linear head (`fit_linear_head`: 5 folds x 3 norms x 6 L2 strengths, then the refit) on
a seeded 80% of the run's seed pairs, once with each optimizer. Prints the seconds of each, their ratio, whether
the chosen design is the same, the cosine between the two heads' directions and how many of the run's eval pairs
they order differently; appends the figures, with the machine, to bench/results.jsonl.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import numpy as np  # noqa: E402
import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402

from lens_ray.core import linear_head  # noqa: E402
from lens_ray.data.finished_run import load_run_inputs  # noqa: E402


def torch_lbfgs(x: torch.Tensor, weight: torch.Tensor, l2: float, start: torch.Tensor | None = None,
                tolerance: float = 1e-6) -> torch.Tensor:
    """The baseline: the same objective and stopping rule through torch.optim.LBFGS (fit_weights until stop 27)."""
    w = (start.clone() if start is not None else torch.zeros(x.shape[1], dtype=x.dtype)).requires_grad_(True)
    opt = torch.optim.LBFGS([w], lr=1.0, max_iter=1000, tolerance_grad=tolerance, tolerance_change=1e-12,
                            history_size=20, line_search_fn="strong_wolfe")
    total = weight.sum()

    def closure():
        opt.zero_grad()
        loss = (weight * F.softplus(-(x @ w))).sum() / total + 0.5 * l2 * w.pow(2).sum()
        loss.backward()
        return loss
    opt.step(closure)
    return w.detach()


def fit(cfg, pos, neg, groups, seed, solver):
    n = len(pos)
    linear_head.fit_weights = solver
    t0 = time.perf_counter()
    out = linear_head.fit_linear_head(cfg, pos, neg, torch.ones(n), np.arange(n), torch.ones(n, dtype=torch.bool),
                                      groups, seed)
    return out, time.perf_counter() - t0


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--from-run", default="runs/hh_harmless_dev-smollm2", help="a finished run (its embeddings)")
    ap.add_argument("--seeds", type=int, default=3, help="training subsets, one fit each way")
    args = ap.parse_args()
    torch.set_num_threads(1)
    ri = load_run_inputs(args.from_run)
    cfg, emb, groups = ri.config.reward, ri.emb, ri.groups
    new_solver = linear_head.fit_weights
    warm = torch.randn(20, 3, dtype=torch.float64)
    for solver in (torch_lbfgs, new_solver):       # first calls pay imports (torch._dynamo: ~1 s), not timed
        solver(warm, torch.ones(20, dtype=torch.float64), 1.0)
    ev_pos, ev_neg = torch.from_numpy(emb.eval_pos), torch.from_numpy(emb.eval_neg)
    rows = []
    for seed in range(args.seeds):
        idx = np.sort(np.random.default_rng(seed).permutation(len(groups))[: int(0.8 * len(groups))])
        pos, neg = torch.from_numpy(emb.seed_pos[idx]), torch.from_numpy(emb.seed_neg[idx])
        sub = [groups[i] for i in idx]
        base, t_base = fit(cfg, pos, neg, sub, seed, torch_lbfgs)
        new, t_new = fit(cfg, pos, neg, sub, seed, new_solver)
        a, b = base.head.w.double(), new.head.w.double()
        differ = int(((ev_pos - ev_neg).double() @ a > 0).ne((ev_pos - ev_neg).double() @ b > 0).sum())
        rows.append({"seed": seed, "pairs": len(idx), "torch_s": round(t_base, 2), "scipy_s": round(t_new, 2),
                     "ratio": round(t_base / t_new, 2), "same_design": base.design == new.design,
                     "design": str(new.design), "cv_accuracy": [base.cv_accuracy, new.cv_accuracy],
                     "cosine": float(a @ b / (a.norm() * b.norm())), "eval_pairs": len(ev_pos),
                     "eval_pairs_ordered_differently": differ})
        print(json.dumps(rows[-1]))
    from embed_throughput import machine
    total = {k: round(sum(r[k] for r in rows), 2) for k in ("torch_s", "scipy_s")}
    print(f"linear head, {len(rows)} fits each way ({machine()}): torch.optim {total['torch_s']} s, scipy "
          f"{total['scipy_s']} s, ratio {total['torch_s'] / total['scipy_s']:.2f}x; same design in "
          f"{sum(r['same_design'] for r in rows)}/{len(rows)}; eval pairs ordered differently: "
          f"{sum(r['eval_pairs_ordered_differently'] for r in rows)} of {len(rows) * len(ev_pos)}")
    with open(os.path.join(os.path.dirname(__file__), "results.jsonl"), "a") as fh:
        fh.write(json.dumps({"bench": "linear_fit", "run": args.from_run, "machine": machine(),
                             "time": time.strftime("%Y-%m-%d %H:%M"), "threads": 1, "rows": rows, **total}) + "\n")


if __name__ == "__main__":
    main()
