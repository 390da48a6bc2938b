"""Load on the reward server (`lens-ray serve`) over loopback: single-sample POST /get_reward requests at
concurrency 1, 8 and 32, batched (@serve.batch, --max-batch-size 32) against unbatched (--max-batch-size 1),
and the in-process RewardModel.score on the same texts as the floor. Bounded in requests and time.

The load comes from one asyncio process (aiohttp, keep-alive connections, one per concurrent client) rather
than Python threads, and its own CPU time is measured: on a 2-core machine the clients share the cores with
the proxy and the replica, and their share is reported beside every figure.

    .venv/bin/python bench/serve_load.py --run runs/hh_harmless_dev-smollm2 [--requests 256] [--head NAME]

Prints requests/s and p50/p99 latency per setting, the ratios, and appends them to bench/results.jsonl.
"""
from __future__ import annotations

import argparse
import json
import os
import socket
import sys
import time
import urllib.request

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import numpy as np  # noqa: E402

from lens_ray.config import ServeConfig  # noqa: E402
from lens_ray.core.pairs import Quarantine  # noqa: E402
from lens_ray.data.finished_run import FinishedRun  # noqa: E402
from lens_ray.data.formats import to_pairs  # noqa: E402
from lens_ray.data.ingest import read_table  # noqa: E402


def texts(run: FinishedRun, n: int) -> list[tuple[str, str]]:
    rows, where = read_table(run.config.data.data, Quarantine())
    pairs = to_pairs(rows, Quarantine(), where)[:n]
    return [(p.prompt[-1]["content"], p.chosen) for p in pairs]


def _body(prompt: str, response: str) -> bytes:
    return json.dumps({"query": [prompt + response], "prompts": [prompt], "labels": [""]}).encode()


def post(url: str, prompt: str, response: str) -> float:
    req = urllib.request.Request(url + "/get_reward", data=_body(prompt, response),
                                 headers={"Content-Type": "application/json"})
    t0 = time.perf_counter()
    with urllib.request.urlopen(req, timeout=120) as resp:
        json.loads(resp.read())
    return time.perf_counter() - t0


def info(url: str) -> dict:
    with urllib.request.urlopen(url + "/info", timeout=60) as resp:
        return json.loads(resp.read())


def _client(url: str, items: list[tuple[str, str]], concurrency: int, deadline_s: float) -> tuple:
    """In a process of its own: `concurrency` keep-alive clients send the items -> (latencies, wall, CPU s)."""
    import asyncio

    import aiohttp

    async def run() -> list[float]:
        queue, lat = list(items), []
        connector = aiohttp.TCPConnector(limit=concurrency)
        async with aiohttp.ClientSession(connector=connector, timeout=aiohttp.ClientTimeout(total=deadline_s)) as s:
            async def one_client():
                while queue:
                    prompt, response = queue.pop()
                    t0 = time.perf_counter()
                    async with s.post(url + "/get_reward", data=_body(prompt, response),
                                      headers={"Content-Type": "application/json"}) as resp:
                        await resp.read()
                        assert resp.status == 200, resp.status
                    lat.append(time.perf_counter() - t0)
            await asyncio.gather(*(one_client() for _ in range(concurrency)))
        return lat
    cpu0, t0 = time.process_time(), time.perf_counter()
    lat = asyncio.run(run())
    return lat, time.perf_counter() - t0, time.process_time() - cpu0


def load(url: str, items: list[tuple[str, str]], concurrency: int, deadline_s: float) -> dict:
    import multiprocessing
    with multiprocessing.get_context("spawn").Pool(1) as pool:
        lat, wall, cpu = pool.apply(_client, (url, items, concurrency, deadline_s))
    return {"requests": len(lat), "requests_per_s": round(len(lat) / wall, 2),
            "p50_ms": round(float(np.percentile(lat, 50)) * 1000, 1),
            "p99_ms": round(float(np.percentile(lat, 99)) * 1000, 1),
            "client_cpu_share": round(cpu / wall / (os.cpu_count() or 1), 3)}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--run", default="runs/hh_harmless_dev-smollm2")
    ap.add_argument("--head")
    ap.add_argument("--requests", type=int, default=256, help="requests per setting (concurrency 1: a quarter)")
    ap.add_argument("--deadline", type=float, default=600, help="seconds a setting may take at most")
    ap.add_argument("--cpus", type=int, default=os.cpu_count(),
                    help="CPUs of the replica, and torch threads of the in-process floor (the same, to be fair)")
    args = ap.parse_args()
    import torch
    torch.set_num_threads(args.cpus)
    from ray import serve

    from lens_ray.distributed.serving import APP, build
    from lens_ray.distributed.session import connect
    from lens_ray.scoring.reward_model import RewardModel
    run = FinishedRun.open(args.run)
    items = texts(run, args.requests)
    rm = RewardModel.from_run(args.run, args.head)
    rm.score([p for p, _ in items[:32]], [r for _, r in items[:32]], batch_size=32)        # warm-up
    t0 = time.perf_counter()
    rm.score([p for p, _ in items], [r for _, r in items], batch_size=32)
    floor = len(items) / (time.perf_counter() - t0)
    print(f"in-process RewardModel.score, batches of 32, {args.cpus} threads: {floor:.1f} items/s", flush=True)
    connect(log=lambda m: None)
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    serve.start(http_options={"host": "127.0.0.1", "port": port})
    url, rows = f"http://127.0.0.1:{port}", []
    try:
        for batch in (32, 1):
            sc = ServeConfig(head=rm.head_name, max_batch_size=batch, batch_wait_ms=10,
                             cpus_per_replica=float(args.cpus))
            serve.run(build(args.run, sc), name=APP, route_prefix="/", blocking=False)
            while True:
                try:
                    post(url, *items[0])
                    break
                except OSError:
                    time.sleep(0.5)
            for conc in (1, 8, 32):
                n = args.requests // 4 if conc == 1 else args.requests
                before = info(url)
                measured = load(url, items[:n], conc, args.deadline)
                after = info(url)
                batches = max(1, after["batches"] - before["batches"])     # one replica: its own counts
                rows.append({"max_batch_size": batch, "concurrency": conc, **measured,
                             "mean_batch": round((after["items"] - before["items"]) / batches, 1)})
                print(json.dumps(rows[-1]), flush=True)
            serve.delete(APP)
    finally:
        serve.shutdown()
    batched = next(r for r in rows if r["max_batch_size"] == 32 and r["concurrency"] == 32)
    single = next(r for r in rows if r["max_batch_size"] == 1 and r["concurrency"] == 32)
    ratios = {"batched_over_unbatched_c32": round(batched["requests_per_s"] / single["requests_per_s"], 2),
              "server_over_in_process": round(batched["requests_per_s"] / floor, 3)}
    print(f"batched / unbatched at concurrency 32: {ratios['batched_over_unbatched_c32']}x; "
          f"server / in-process floor: {ratios['server_over_in_process']:.2f}; the clients used "
          f"{batched['client_cpu_share']:.0%} of the machine's CPU at concurrency 32", flush=True)
    sys.path.insert(0, os.path.dirname(__file__))
    from embed_throughput import machine
    with open(os.path.join(os.path.dirname(__file__), "results.jsonl"), "a") as fh:
        fh.write(json.dumps({"bench": "serve_load", "run": args.run, "head": rm.head_name, "machine": machine(),
                             "time": time.strftime("%Y-%m-%d %H:%M"), "cpus": args.cpus,
                             "in_process_items_per_s": round(floor, 1), "rows": rows, **ratios}) + "\n")


if __name__ == "__main__":
    main()
