"""A prompt read once for all its responses (`embed.share_prefix`) against each text read whole, on the same
texts in the same process: the `make run` texts of --prompts HH prompts (each with its chosen and rejected
response), the embedding actor's own code (`Embedder`, batches of 16 in the order the Ray Data path gives).

    .venv/bin/python bench/embed_share.py [--prompts 200] [--repeats 1] [--threads 0] [--ray] [--model smollm2]

Prints tokens read, tokens computed (prompt tokens shared are not), forward seconds, their ratio and the
largest relative difference between the two ways' vectors; appends them, with the machine, to
bench/results.jsonl.
"""
from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--prompts", type=int, default=200, help="HH prompts (all their make-run texts)")
    ap.add_argument("--repeats", type=int, default=1, help="passes per setting, alternating")
    ap.add_argument("--model", default="smollm2")
    ap.add_argument("--threads", type=int, default=0, help="torch threads; 0: torch's default (the cores)")
    ap.add_argument("--max-length", type=int, default=256)
    ap.add_argument("--ray", action="store_true", help="the job's Ray Data path (its actors, batches and order) "
                    "on a local Ray, instead of one process; times are the actors' forward seconds")
    ap.add_argument("--data", default=str(ROOT.parent / "shared" / "data" / "hh_harmless_dev.jsonl.gz"))
    args = ap.parse_args()
    import numpy as np
    import pandas as pd
    import torch
    from embed_throughput import machine, run_texts

    from lens_ray.data.embed import Embedder, resolve_dtype
    from lens_ray.distributed.embedding import batch_order

    texts = run_texts(args.data, 0)
    prompts = list(dict.fromkeys(json.dumps(p) for p, _ in texts))[:args.prompts]
    keep = set(prompts)
    df = pd.DataFrame([{"prompt_json": json.dumps(p), "response": r} for p, r in texts if json.dumps(p) in keep])
    df["key"] = [str(i) for i in range(len(df))]
    dtype = resolve_dtype("auto", "cpu")
    threads = args.threads or torch.get_num_threads()
    embedders = {} if args.ray else {share: Embedder(args.model, max_length=args.max_length, dtype=dtype,
                                                     share_prefix=share, torch_threads=threads)
                                     for share in (False, True)}
    seconds: dict[bool, list[float]] = {False: [], True: []}
    walls: dict[bool, list[float]] = {False: [], True: []}          # --ray: from submitting to the last batch
    vectors, counts = {}, {}
    if args.ray:
        import os

        import ray

        from lens_ray.config import EmbedConfig, ResourcesConfig
        from lens_ray.distributed.embedding import EmbedItem, embed_items
        os.environ.setdefault("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "0")
        ray.init(num_cpus=os.cpu_count(), include_dashboard=False, log_to_driver=False)
        items = [EmbedItem(k, json.loads(p), r) for k, p, r in zip(df.key, df.prompt_json, df.response)]
        embedders = {}
    for _ in range(args.repeats if args.ray else 0):
        for share in (False, True):
            cfg = EmbedConfig(model=args.model, max_length=args.max_length, share_prefix=share)
            found, st = embed_items(items, cfg, ResourcesConfig(), log=lambda m: None)
            seconds[share].append(st.forward_s)
            walls[share].append(st.seconds)
            vectors[share] = {k: v[0] for k, v in found.items()}
            counts[share] = (st.tokens, st.shared_tokens)
            print(f"  share_prefix={share}: actors' forward {st.forward_s:.1f} s, wall {st.seconds:.1f} s, "
                  f"{st.tokens} tokens read, {st.shared_tokens} shared", flush=True)
    for _ in range(args.repeats):
        for share, emb in embedders.items():
            order = batch_order(df, grouped=share)
            t0, read, shared, out = time.perf_counter(), 0, 0, {}
            for i in range(0, len(order), 16):
                b = order.iloc[i:i + 16]
                res = emb({c: b[c].to_numpy() for c in ("prompt_json", "response", "key")})
                read += int(res["n_tokens"].sum())
                shared += int(res["n_shared"].sum())
                out.update(zip(res["key"], res["embedding"][:, 0]))
            seconds[share].append(time.perf_counter() - t0)
            vectors[share], counts[share] = out, (read, shared)
            print(f"  share_prefix={share}: {seconds[share][-1]:.1f} s, {read} tokens read, {shared} shared",
                  flush=True)
    med = {k: statistics.median(v) for k, v in seconds.items()}
    diff = max(float(np.linalg.norm(vectors[True][k] - v) / np.linalg.norm(v)) for k, v in vectors[False].items())
    read, shared = counts[True]
    print(f"| setting | tokens computed | seconds (median of {args.repeats}) | tokens read / s |\n|---|---|---|---|")
    for share in (False, True):
        done = read - (shared if share else 0)
        print(f"| share_prefix={str(share).lower()} | {done} | {med[share]:.1f} | {read / med[share]:.0f} |")
    ratio = med[False] / med[True]
    where = "Ray Data path, the job's actors" if args.ray else f"one process, {threads} threads"
    print(f"{len(df)} texts of {len(prompts)} prompts, dtype {dtype}, {where}: {ratio:.2f}x faster, "
          f"{shared / read:.1%} of the tokens shared; largest relative vector difference {diff:.1e} ({machine()})")
    with open(ROOT / "bench" / "results.jsonl", "a") as fh:
        fh.write(json.dumps({"bench": "embed_share", "machine": machine(), "time": time.strftime("%Y-%m-%d %H:%M"),
                             "model": args.model, "dtype": dtype, "path": where, "texts": len(df),
                             "prompts": len(prompts), "tokens_read": read, "tokens_shared": shared,
                             "seconds": {str(k): v for k, v in seconds.items()},
                             "wall_s": {str(k): v for k, v in walls.items()} if args.ray else None,
                             "ratio": ratio, "max_relative_difference": diff}) + "\n")


if __name__ == "__main__":
    main()
