"""Issue 34's candidates, measured as the select stage measures them: on a finished run's stored embeddings, the
k-fold over its seed pairs picks a reward model from each candidate set, and the pick is refitted on each of the
run's seed splits and scored on its held-out pairs (accuracy; and Best-of-N gold where the run has a Best-of-N
set), paired by seed against today's pick.

Candidate sets (each adds to today's layer x {mean_diff, linear, mlp}):
    today       the default (Bradley-Terry heads, the linear head's L2 grid 1e-4 .. 10)
    pointwise   every trained head also with the per-response loss (selection.losses=bradley_terry,pointwise)
    wide L2     the linear head's L2 grid 1e-4 .. 1e4 (reward.linear_l2)
    both        the two together
    concat      every head also on the candidate layers concatenated (selection.concat_layers)
    seeds       every MLP also as a 5-seed ensemble (selection.mlp_seeds=5)
    ensembles   top-2, top-3 and top-5 ensembles of the other candidates (selection.ensembles=2,3,5)
    all new     concat, seeds and ensembles together
    dense       today's heads on the layers --dense names (every few layers of the model, from the same forward
                pass; the run must have stored them: run it with selection.layers set to them)

    .venv/bin/python bench/candidates.py --from-run runs/hh_harmless_dev-smollm2 [--sets today,concat]
        [--layers -1,-10,-16]      the candidate layers (default: the run's); more need their stored tables
        [--dense -1,-4,-7,...]     the dense set's layers

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

WIDE_L2 = (1e-4, 1e-3, 1e-2, 1e-1, 1.0, 10.0, 100.0, 1e3, 1e4)
SETS = {"today": {}, "pointwise": {"selection.losses": ("bradley_terry", "pointwise")},
        "wide L2": {"reward.linear_l2": WIDE_L2},
        "both": {"selection.losses": ("bradley_terry", "pointwise"), "reward.linear_l2": WIDE_L2},
        "concat": {"selection.concat_layers": True}, "seeds": {"selection.mlp_seeds": 5},
        "ensembles": {"selection.ensembles": (2, 3, 5)},
        "all new": {"selection.concat_layers": True, "selection.mlp_seeds": 5, "selection.ensembles": (2, 3, 5)}}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--from-run", required=True)
    ap.add_argument("--sets", default=",".join(SETS))
    ap.add_argument("--layers", default=None, help="candidate layers, comma-separated (default: the run's)")
    ap.add_argument("--dense", default=None, help="the dense set's candidate layers, comma-separated")
    args = ap.parse_args()
    from embed_throughput import machine

    from lens_ray.config import load_config
    from lens_ray.core.metrics import head_metrics
    from lens_ray.core.pairs import seed_splits
    from lens_ray.core.records import Embedded
    from lens_ray.core.selection import (
        candidate_layers,
        choose,
        ensemble_units,
        ensembles,
        fold_scores,
        fold_splits,
        refit,
        resolved,
        stage_one,
        summarize,
    )
    from lens_ray.core.stats import mean_std, standard_error
    from lens_ray.data.embed import model_depth
    from lens_ray.data.ingest import load_datasets
    from lens_ray.pipelines.selection import seed_gold
    from lens_ray.store.artifacts import read_pair_embeddings
    from lens_ray.store.storage import Manifest, Storage

    store = Storage(args.from_run)
    report = store.read_json("report.json")
    base = load_config(None, {k: v for k, v in flat(report["config"]).items() if v is not None})
    ds = load_datasets(base.data)
    assert len(ds.seed_pairs) == report["seed_pairs"], "the data no longer gives the run's seed pairs"
    groups = [p.group for p in ds.seed_pairs]
    run_layers = base.selection.layers or candidate_layers(model_depth(base.embed.model))
    layers = [(int(x),) for x in args.layers.split(",")] if args.layers else [(x,) for x in run_layers]
    dense = [(int(x),) for x in args.dense.split(",")] if args.dense else []
    tables = {layer: run_table(store, base, ds, layer, Embedded, Manifest, read_pair_embeddings)
              for layer in dict.fromkeys(layers + dense)}
    folds = fold_splits(groups, base.selection.folds, base.data.val_fraction, base.data.split_seed)
    splits = seed_splits(ds.seed_pairs, base.data.val_fraction, base.seeds, base.data.split_seed)
    gold = seed_gold(ds) if ds.seed_pairs[0].chosen_gold is not None else None
    scored: dict[tuple, list] = {}               # (candidate, L2 grid) -> its fold results, computed once

    def table(layer):
        if layer not in tables:
            tables[layer] = Embedded.concat([tables[(x,)] for x in layer])
        return tables[layer]

    out, today = [], None
    for name in args.sets.split(","):
        cfg = copy.deepcopy(base)
        for k, v in SETS.get(name, {}).items():
            section, field = k.split(".")
            setattr(getattr(cfg, section), field, v)
        sc = cfg.selection
        t0 = time.time()
        at = dense if name == "dense" else layers
        concat = [tuple(x[0] for x in at)] if sc.concat_layers else []
        cands = stage_one(at + concat, sc.heads, sc.losses, sc.mlp_seeds)
        units = [dict() for _ in folds]
        for c in cands:
            key = (c, cfg.reward.linear_l2 if c.head == "linear" else None)
            if key not in scored:
                t = table(c.layer)
                scored[key] = [fold_scores(cfg, [c], t.seed_pos, t.seed_neg, groups, folds[f], f, gold,
                                           keep_rewards=True)[c.name] for f in range(len(folds))]
            for f in range(len(folds)):
                units[f][c.name] = scored[key][f]
        rows = summarize(cands, units)
        if sc.ensembles:
            rows += summarize(ensembles(sc.ensembles), ensemble_units(sc.ensembles, rows, units, folds, groups, gold))
            cands += ensembles(sc.ensembles)
        pick_row = choose(rows)
        select_s = time.time() - t0

        def held_out(row):
            """A candidate (its row) resolved, refitted on each seed's split, scored on the held-out data."""
            c = resolved(row.candidate, rows)
            emb = table(c.layer)
            return c, {s.seed: head_metrics(refit(cfg, c, emb.seed_pos, emb.seed_neg, groups, s.train, s.val,
                                                  s.seed), emb) for s in splits}
        pick, held = held_out(pick_row)
        row = {"set": name, "pick": pick.name, "members": [m.name for m in pick.members],
               "kfold": pick_row.kfold_accuracy, "kfold_se": pick_row.kfold_se, "candidates": len(cands),
               "select_s": round(select_s, 1), "by_seed": held}
        if today is None:
            today, today_names = held, {c.name for c in cands}
        added = [r for r in rows if r.name not in today_names and r.ok]
        if added:      # the best candidate this set adds, by k-fold, whether picked or not: would it have helped?
            best = max(added, key=lambda r: r.kfold_accuracy)
            c, best_held = held_out(best)
            diffs = [best_held[k]["accuracy"] - today[k]["accuracy"] for k in best_held]
            row["best_added"] = {"candidate": c.name, "members": [m.name for m in c.members],
                                 "kfold": best.kfold_accuracy, "kfold_se": best.kfold_se,
                                 "accuracy": mean_std([h["accuracy"] for h in best_held.values()]),
                                 "vs_today": {"mean": float(np.mean(diffs)), "se": standard_error(diffs)},
                                 "bon_gold": None}
            if next(iter(best_held.values()))["bon_gold"] is not None:
                gd = [best_held[k]["bon_gold"] - today[k]["bon_gold"] for k in best_held]
                row["best_added"].update(bon_gold=mean_std([h["bon_gold"] for h in best_held.values()]),
                                         bon_gold_vs_today={"mean": float(np.mean(gd)), "se": standard_error(gd)})
        for metric in ("accuracy", "bon_gold"):
            if held[next(iter(held))][metric] is None:
                continue
            row[metric] = mean_std([h[metric] for h in held.values()])
            diffs = [held[k][metric] - today[k][metric] for k in held]
            row[f"{metric}_vs_today"] = {"mean": float(np.mean(diffs)),
                                         "se": standard_error(diffs) if len(diffs) > 1 else None}
        out.append(row)
        print(f"{name}: {pick.name} {row['members'] or ''}, k-fold {row['kfold']:.3f} ± {row['kfold_se']:.3f}, "
              f"held-out {row['accuracy']['mean']:.3f} ± {row['accuracy']['std']:.3f}, vs today "
              f"{row['accuracy_vs_today']['mean']:+.4f}"
              + (f", gold {row['bon_gold']['mean']:.3f} ({row['bon_gold_vs_today']['mean']:+.4f})"
                 if "bon_gold" in row else "") + f", {len(cands)} candidates ({select_s:.0f} s)", flush=True)
        for r in sorted(rows, key=lambda r: -(r.kfold_accuracy or 0))[:8]:
            print(f"    {r.name}: {r.kfold_accuracy:.3f} ± {r.kfold_se:.3f}", flush=True)
    ep = tables[layers[0]].eval_pos
    print(f"\n{machine()}; {args.from_run}: {len(groups)} seed pairs, {len(ep)} held-out pairs, "
          f"{len(splits)} seeds; layers {[x[0] for x in layers]}\n")
    gold_cols = "bon_gold" in out[0]
    print("| candidate set | candidates | pick | k-fold | held-out (seeds) | vs today's pick, paired |"
          + (" Best-of-N gold | vs today |" if gold_cols else "") + " select s |")
    print("|---|---|---|---|---|---|" + ("---|---|" if gold_cols else "") + "---|")
    for r in out:
        print(f"| {r['set']} | {r['candidates']} | {r['pick']} | {r['kfold']:.3f} ± {r['kfold_se']:.3f} | "
              f"{r['accuracy']['mean']:.3f} ± {r['accuracy']['std']:.3f} | {gain(r['accuracy_vs_today'])} |"
              + (f" {r['bon_gold']['mean']:.3f} ± {r['bon_gold']['std']:.3f} | {gain(r['bon_gold_vs_today'])} |"
                 if gold_cols else "") + f" {r['select_s']} |")
    print("\nThe best candidate each set adds (by k-fold), picked or not, refitted and scored as the pick is:\n")
    print("| candidate set | best added candidate | k-fold | held-out (seeds) | vs today's pick, paired |"
          + (" Best-of-N gold | vs today |" if gold_cols else ""))
    print("|---|---|---|---|---|" + ("---|---|" if gold_cols else ""))
    for r in out:
        b = r.get("best_added")
        if b:
            print(f"| {r['set']} | {b['candidate']} | {b['kfold']:.3f} ± {b['kfold_se']:.3f} | "
                  f"{b['accuracy']['mean']:.3f} ± {b['accuracy']['std']:.3f} | {gain(b['vs_today'])} |"
                  + (f" {b['bon_gold']['mean']:.3f} ± {b['bon_gold']['std']:.3f} | {gain(b['bon_gold_vs_today'])} |"
                     if b["bon_gold"] else ""))
    with open(ROOT / "bench" / "results.jsonl", "a") as fh:
        fh.write(json.dumps({"bench": "candidates", "machine": machine(), "time": time.strftime("%Y-%m-%d %H:%M"),
                             "run": args.from_run, "layers": [x[0] for x in layers], "rows": out},
                            default=str) + "\n")


def gain(d: dict) -> str:
    return f"{100 * d['mean']:+.1f}" + (f" ± {100 * d['se']:.1f}" if d["se"] else "") + " pts"


def run_table(store, cfg, ds, layer, Embedded, Manifest, read_pair_embeddings):
    """One layer's stored tables of a finished run (seed, eval and, where the run has one, Best-of-N)."""
    from lens_ray.core.records import bon_draws
    folder = "embeddings" if layer == tuple(cfg.embed.layer) else f"embeddings-layer{layer[0]}"
    man = Manifest.load(store.child(folder))
    seed, evals = read_pair_embeddings(man, "seed"), read_pair_embeddings(man, "eval")
    bon, bon_gold = None, None
    if "bon.parquet" in man.files:
        bon_gold = bon_draws(cfg, ds)[1]
        bon = read_pair_embeddings(man, "bon")[0].reshape(*bon_gold.shape, -1)
    return Embedded(*seed, *evals, bon, bon_gold)


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
