"""Where might LENS pay off? Runs LENS variants against `original` on the same data, seeds and splits
(embeddings come from the cache, so only the VAE, synthesis and heads are recomputed), in one Ray session.

    .venv/bin/python bench/variants.py --data ../shared/data/hh_harmless_dev.jsonl.gz [--model smollm2] [--seeds 5]

Prints one line per variant (accuracy / BoN gain over `original`, paired by seed, mean ± std) and appends
all figures to bench/results.jsonl.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from lens_ray.config import load_config  # noqa: E402

VARIANTS = {
    "paper defaults": {},
    "no divergence (gamma=0)": {"vae.gamma": 0.0},
    "strong divergence (gamma=0.5)": {"vae.gamma": 0.5},
    "bigger VAE (latent 64, hidden 512)": {"vae.latent_dim": 64, "vae.hidden_dims": "512"},
    "residual decoding, noise 0.1": {"synth.residual": True, "synth.noise_var": 0.1},
    "noise variance 1.0": {"synth.noise_var": 1.0},
    "synthetic weight 0.3": {"reward.synthetic_weight": 0.3},
    "posterior top-k, sampled z": {"synth.select": "posterior", "synth.encode": "sample"},
}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--data", required=True)
    ap.add_argument("--model", default="smollm2")
    ap.add_argument("--seeds", type=int, default=5)
    ap.add_argument("--seed-pairs", type=int, default=1000)
    ap.add_argument("--storage", default="runs")
    ap.add_argument("--only", help="variant names separated by |")
    args = ap.parse_args()
    from lens_ray.distributed.session import connect
    from lens_ray.pipelines.run import run
    connect()
    rows = []
    names = args.only.split("|") if args.only else list(VARIANTS)
    for i, name in enumerate(names):
        overrides = {"data.data": args.data, "embed.model": args.model, "seeds": args.seeds,
                     "data.seed_pairs": args.seed_pairs, "storage": args.storage, "name": f"variant-{i}",
                     "methods": "original,lens", **VARIANTS[name]}
        t0 = time.time()
        report = run(load_config(None, overrides), log=lambda m: None)
        for s in report["summary"]:
            if s["method"] != "lens":
                continue
            gain = s["accuracy_vs_original"]
            bon = s["bon_gold_vs_original"]
            rows.append({"variant": name, "factor": s["factor"], "accuracy": s["accuracy"]["mean"],
                         "gain": gain["mean"], "gain_std": gain["std"],
                         "bon_gain": bon["mean"] if bon else None, "bon_gain_std": bon["std"] if bon else None,
                         "rel_recon_val": sum(v["rel_recon_val"] for v in report["vae"].values()) / len(report["vae"]),
                         "seconds": round(time.time() - t0)})
            bon_txt = f", BoN {bon['mean']:+.3f} ± {bon['std']:.3f}" if bon else ""
            print(f"{name:38s} {s['factor']}x  acc {s['accuracy']['mean']:.3f}  vs original "
                  f"{gain['mean']:+.3f} ± {gain['std']:.3f}{bon_txt}  (VAE val recon {rows[-1]['rel_recon_val']:.2f})",
                  flush=True)
    from embed_throughput import machine
    with open(os.path.join(os.path.dirname(__file__), "results.jsonl"), "a") as fh:
        fh.write(json.dumps({"bench": "lens_variants", "data": args.data, "model": args.model, "seeds": args.seeds,
                             "machine": machine(), "time": time.strftime("%Y-%m-%d %H:%M"), "rows": rows}) + "\n")


if __name__ == "__main__":
    main()
