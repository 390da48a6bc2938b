"""Ray Train's poll of its workers: Ray's default (every 2 s) against lens-ray's (every 0.25 s), on the same
fits in the same run. Each fitted model is a checkpoint the controller handles on its next poll, so a stage
that fits many small models (a VAE per seed, a reward head per method x factor x seed) waits for polls.

    .venv/bin/python bench/train_poll.py [--models 6] [--repeats 2]

The fit: `train_vaes` (one TorchTrainer, one DDP worker) of --models tiny VAEs, one checkpoint each; the two
poll settings alternate, --repeats times each. Prints the medians and their ratio and appends them, with the
machine, to bench/results.jsonl.
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))
VAR = "RAY_TRAIN_HEALTH_CHECK_INTERVAL_S"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--models", type=int, default=6, help="models (checkpoints) in one fit")
    ap.add_argument("--repeats", type=int, default=2, help="fits per poll setting")
    args = ap.parse_args()
    os.environ.setdefault("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "0")
    import numpy as np
    import ray

    from lens_ray.config import ResourcesConfig, VAEConfig
    from lens_ray.core.records import SeedData
    from lens_ray.distributed.training import train_vaes
    from lens_ray.store.storage import Storage

    rng = np.random.default_rng(0)
    seeds = [SeedData(s, *(rng.standard_normal((n, 16)).astype(np.float32) for n in (64, 64, 8, 8)))
             for s in range(args.models)]
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    times: dict[str, list[float]] = {"2.0": [], "0.25": []}
    with tempfile.TemporaryDirectory() as tmp:
        train_vaes(VAEConfig(epochs=2), seeds[:1], "warm-up", Storage(tmp), ResourcesConfig(vae_workers=1))
        for i in range(args.repeats):
            for poll in times:                       # the controller reads the variable when a fit starts
                os.environ[VAR] = poll
                t0 = time.time()
                states, _ = train_vaes(VAEConfig(epochs=2), seeds, f"fit-{poll}-{i}", Storage(tmp),
                                       ResourcesConfig(vae_workers=1))
                times[poll].append(time.time() - t0)
                assert len(states) == args.models
                print(f"  poll {poll} s: {times[poll][-1]:.1f} s for {args.models} models", flush=True)
    ray.shutdown()
    med = {k: statistics.median(v) for k, v in times.items()}
    from embed_throughput import machine
    print(f"| poll | median fit (s), {args.models} models | per model (s) |\n|---|---|---|")
    for k, v in med.items():
        print(f"| {k} s | {v:.1f} | {v / args.models:.2f} |")
    print(f"ratio (Ray's default / lens-ray's): {med['2.0'] / med['0.25']:.2f}x ({machine()})")
    with open(ROOT / "bench" / "results.jsonl", "a") as fh:
        fh.write(json.dumps({"bench": "train_poll", "machine": machine(), "time": time.strftime("%Y-%m-%d %H:%M"),
                             "models": args.models, "repeats": args.repeats, "seconds": times,
                             "median_s": med, "ratio": med["2.0"] / med["0.25"]}) + "\n")


if __name__ == "__main__":
    main()
