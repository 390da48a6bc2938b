"""Ray job: N synthetic pairs (up to millions) from a finished run's VAE and embeddings, streamed with Ray Data.

    python jobs/synthesize.py --from-run runs/lens-hh --pairs 1000000 --mode materialized --out runs/pairs-1m
    python jobs/synthesize.py --from-run s3://b/lens-hh --pairs 5000000 --mode seeded --out s3://b/pairs-5m

materialized: each pair's embeddings are written (parquet, fixed-size float lists).
seeded: each pair is stored as (unit, source, slot a, slot b) - 14 bytes - and decoded on the fly
(`lens_ray.synth_stream.decode_seeded`) by whoever reads it, e.g. the streaming reward trainer.
Re-running the same command after a kill writes only the shards that are missing.
"""
import argparse
import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import torch  # noqa: E402

from lens_ray.artifacts import load_run_sources  # noqa: E402
from lens_ray.augment import Augmenter  # noqa: E402
from lens_ray.config import SynthConfig  # noqa: E402
from lens_ray.ray_session import connect  # noqa: E402
from lens_ray.storage import Storage  # noqa: E402


def main(argv=None):
    ap = argparse.ArgumentParser(prog="jobs/synthesize.py", description=__doc__.split("\n\n")[0])
    ap.add_argument("--from-run", required=True, help="a finished run's output URI")
    ap.add_argument("--pairs", type=int, required=True)
    ap.add_argument("--mode", choices=("materialized", "seeded"), default="materialized")
    ap.add_argument("--out", required=True)
    ap.add_argument("--method", default="lens", choices=("lens", "direct_perturbation", "gaussian_sampling"))
    ap.add_argument("--k", type=int, default=2, help="synthetic embeddings per side per unit: (k+1)^2-1 pairs a unit")
    ap.add_argument("--seed", type=int, default=0, help="which of the run's VAEs, and the RNG seed")
    ap.add_argument("--workers", type=int, default=1)
    ap.add_argument("--cpus-per-worker", type=float, default=1.0)
    ap.add_argument("--shard-pairs", type=int, default=16384)
    ap.add_argument("--dtype", choices=("float32", "float16"), default="float32")
    ap.add_argument("--ray-address")
    args = ap.parse_args(argv)
    if args.pairs < 1 or args.k < 1:
        ap.error("--pairs and --k must be >= 1")
    connect(args.ray_address)
    config, pos, neg, vae = load_run_sources(args.from_run, args.seed)
    synth = SynthConfig(**{k: v for k, v in config["synth"].items() if k in SynthConfig.__dataclass_fields__})
    if args.method == "lens" and vae is None:
        ap.error(f"{args.from_run} has no VAE for seed {args.seed}; run it with the lens method")
    aug = Augmenter.fit(args.method, args.seed, synth, torch.from_numpy(pos), torch.from_numpy(neg), vae)
    meta = {"from_run": Storage(args.from_run).uri, "method": args.method, "mode": args.mode, "pairs": args.pairs,
            "k": args.k, "seed": args.seed, "dim": int(pos.shape[1]), "sources": int(len(pos)),
            "dtype": args.dtype if args.mode == "materialized" else None, "synth": config["synth"]}
    from lens_ray.ray_data import synthesize_at_scale
    t0 = time.time()
    print(f"synthesizing {args.pairs:,} {args.method} pairs from {len(pos)} source pairs (d={pos.shape[1]}) -> {args.out}",
          flush=True)
    man = synthesize_at_scale(aug, pos, neg, args.k, args.mode, Storage(args.out), args.pairs, meta, args.shard_pairs,
                              args.workers, args.cpus_per_worker, args.dtype, log=lambda m: print(m, flush=True))
    rows = sum(f["rows"] for f in man.files.values())
    size = sum(f["bytes"] for f in man.files.values())
    secs = time.time() - t0
    print(f"done: {rows:,} pairs in {len(man.files)} shards, {size / 2**20:,.1f} MiB "
          f"({size / max(rows, 1):.1f} bytes/pair), {secs:.1f}s ({rows / secs:,.0f} pairs/s) -> {man.store.uri}")
    return man


if __name__ == "__main__":
    main()
