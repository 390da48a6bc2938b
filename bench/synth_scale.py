"""Synthesis at scale: pairs/s, peak memory and bytes/pair for N pairs at the run's d, in both modes,
with 1 and 2 Ray Data workers; then streaming reward training over the materialized set, 1 vs 2 DDP workers.

    .venv/bin/python bench/synth_scale.py --from-run runs/hh_harmless_dev-smollm2 [--pairs 1000000]

Prints figures and appends them to bench/results.jsonl (with the machine).
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import tempfile
import threading
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import psutil  # noqa: E402
import torch  # noqa: E402

from lens_ray.config import ResourcesConfig, RewardConfig  # noqa: E402
from lens_ray.core.augment import Augmenter  # noqa: E402
from lens_ray.data.finished_run import FinishedRun  # noqa: E402
from lens_ray.store.storage import Storage  # noqa: E402


class PeakRSS:
    """Peak total resident memory of this process and every Ray worker process, sampled every 0.2 s."""

    def __init__(self):
        self.peak, self._stop = 0, threading.Event()

    def _total(self) -> int:
        me = psutil.Process()
        total = me.memory_info().rss
        for p in psutil.process_iter(["name", "cmdline"]):
            try:
                cmd = " ".join(p.info["cmdline"] or [])
                if p.pid != me.pid and ("ray::" in cmd or "ray::" in (p.info["name"] or "")):
                    total += p.memory_info().rss
            except (psutil.NoSuchProcess, psutil.AccessDenied):
                pass
        return total

    def __enter__(self):
        self.base = self._total()
        self._t = threading.Thread(target=self._run, daemon=True)
        self._t.start()
        return self

    def _run(self):
        while not self._stop.is_set():
            self.peak = max(self.peak, self._total())
            time.sleep(0.2)

    def __exit__(self, *exc):
        self._stop.set()
        self._t.join()


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--from-run", default="runs/hh_harmless_dev-smollm2")
    ap.add_argument("--pairs", type=int, default=1_000_000)
    ap.add_argument("--train-pairs", type=int, default=1_000_000)
    ap.add_argument("--workers", default="1,2")
    args = ap.parse_args()
    import ray
    from ray.data import DataContext

    from lens_ray.distributed.synthesis import pairs_dataset, synthesize_at_scale
    from lens_ray.distributed.training import train_head_streaming
    os.environ.setdefault("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "0")
    ray.init(include_dashboard=False, log_to_driver=False)
    DataContext.get_current().enable_progress_bars = False
    run = FinishedRun.open(args.from_run)
    pos, neg = run.table("seed")
    aug = Augmenter.fit("lens", 0, run.config.synth, torch.from_numpy(pos), torch.from_numpy(neg), run.vae(0))
    tmp = tempfile.mkdtemp(prefix="lens-bench-")
    rows, keep = [], {}
    try:
        for mode in ("materialized", "seeded"):
            for workers in (int(w) for w in args.workers.split(",")):
                out = Storage(os.path.join(tmp, f"{mode}-{workers}"))
                with PeakRSS() as mem:
                    t0 = time.time()
                    res = ResourcesConfig(synth_actors=workers, synth_cpus_per_actor=2 / workers)
                    man = synthesize_at_scale(aug, pos, neg, 2, mode, out, args.pairs, {"bench": mode}, res,
                                              log=lambda m: None)
                    secs = time.time() - t0
                size = sum(f["bytes"] for f in man.files.values())
                rows.append({"stage": "synthesize", "mode": mode, "workers": workers, "pairs": args.pairs,
                             "seconds": round(secs, 1), "pairs_per_s": round(args.pairs / secs),
                             "peak_rss_gib": round(mem.peak / 2**30, 2),
                             "bytes_per_pair": round(size / args.pairs, 1)})
                print(json.dumps(rows[-1]), flush=True)
                if workers == 1:
                    keep[mode] = man
                else:
                    shutil.rmtree(out.path(), ignore_errors=True)
        # streaming reward training over the materialized set: 1 vs 2 DDP workers
        stats = torch.cat([torch.from_numpy(pos), torch.from_numpy(neg)])
        for workers in (1, 2):
            cfg = RewardConfig(batch_size=512)
            res = ResourcesConfig(reward_workers=workers, reward_cpus_per_worker=0.5)   # leave CPU for reads
            ds = pairs_dataset(keep["materialized"]).limit(args.train_pairs)
            t0 = time.time()
            _, metrics = train_head_streaming(cfg, ds, pos.shape[1], stats.mean(0).numpy(), stats.std(0).numpy(),
                                            f"bench-stream-{workers}", Storage(os.path.join(tmp, "train")), res)
            wall = time.time() - t0
            rows.append({"stage": "reward_stream", "workers": workers, "pairs": args.train_pairs,
                         "seconds_in_loop": round(metrics["seconds"], 1), "wall_s": round(wall, 1),
                         "pairs_per_s": round(metrics["pairs"] * workers / metrics["seconds"]),
                         "batch_size": 512})
            print(json.dumps(rows[-1]), flush=True)
        one, two = rows[-2]["pairs_per_s"], rows[-1]["pairs_per_s"]
        print(f"DDP efficiency (2 workers vs 1): {two / (2 * one) * 100:.0f}%")
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
        ray.shutdown()
    from embed_throughput import machine  # same folder
    with open(os.path.join(os.path.dirname(__file__), "results.jsonl"), "a") as fh:
        fh.write(json.dumps({"bench": "synth_scale", "machine": machine(), "time": time.strftime("%Y-%m-%d %H:%M"),
                             "dim": int(pos.shape[1]), "rows": rows}) + "\n")


if __name__ == "__main__":
    main()
