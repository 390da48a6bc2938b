"""Embedding throughput: the Ray Data path vs a plain single-process torch loop (same model, batching and
truncation), vs a naive padded loop without length sorting, and fp32 vs bf16 on CPU.

    .venv/bin/python bench/embed_throughput.py [--model smollm2] [--texts 192] [--batch 16]

Prints figures and appends them to bench/results.jsonl (with the machine).
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import numpy as np  # noqa: E402
import torch  # noqa: E402

from lens_ray.config import DataConfig, EmbedConfig, ResourcesConfig  # noqa: E402
from lens_ray.data import load_datasets  # noqa: E402
from lens_ray.embed import embed_ids, load_model, tokenize  # noqa: E402


def machine() -> str:
    return f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores, torch {torch.__version__}"


def loop(lm, prompts, responses, max_length, batch, sort: bool) -> tuple[float, int]:
    tk = tokenize(lm, prompts, responses, max_length)
    order = np.argsort([len(x) for x in tk.ids], kind="stable") if sort else np.arange(len(tk.ids))
    t0 = time.time()
    padded = 0
    for i in range(0, len(order), batch):
        ids = [tk.ids[j] for j in order[i:i + batch]]
        padded += max(len(x) for x in ids) * len(ids)
        embed_ids(lm, ids, "auto")
    return time.time() - t0, padded


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", default="smollm2")
    ap.add_argument("--texts", type=int, default=192)
    ap.add_argument("--batch", type=int, default=16)
    ap.add_argument("--max-length", type=int, default=256)
    ap.add_argument("--data", default=os.path.join(os.path.dirname(__file__), "..", "..", "shared", "data",
                                                   "hh_harmless_dev.jsonl.gz"))
    ap.add_argument("--skip-ray", action="store_true")
    args = ap.parse_args()
    ds = load_datasets(DataConfig(data=args.data, seed_pairs=args.texts))
    pairs = ds.seed_pairs[: args.texts]
    prompts, responses = [p.prompt for p in pairs], [p.chosen for p in pairs]
    torch.set_num_threads(os.cpu_count() or 1)
    rows = []
    for dtype in ("float32", "bfloat16"):
        lm = load_model(args.model, dtype)
        tokens = sum(len(x) for x in tokenize(lm, prompts, responses, args.max_length).ids)
        loop(lm, prompts[:args.batch], responses[:args.batch], args.max_length, args.batch, True)   # warm-up
        for sort in (True, False):
            secs, padded = loop(lm, prompts, responses, args.max_length, args.batch, sort)
            rows.append({"path": f"plain loop, {'length-sorted' if sort else 'naive padded'}", "dtype": dtype,
                         "tokens_per_s": round(tokens / secs, 1), "texts_per_s": round(len(pairs) / secs, 2),
                         "padding_share": round(1 - tokens / padded, 3)})
            print(json.dumps(rows[-1]), flush=True)
    if not args.skip_ray:
        import ray

        from lens_ray.embed import text_key
        from lens_ray.ray_data import EmbedItem, embed_items
        os.environ.setdefault("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "0")
        ray.init(include_dashboard=False, log_to_driver=False)
        from ray.data import DataContext
        DataContext.get_current().enable_progress_bars = False
        items = [EmbedItem(text_key("b", "auto", args.max_length, p, r), p, r) for p, r in zip(prompts, responses)]
        cfg = EmbedConfig(model=args.model, max_length=args.max_length)
        t0 = time.time()
        _, st = embed_items(items, cfg, ResourcesConfig(embed_batch_size=args.batch), log=lambda m: None)
        wall = time.time() - t0
        # the actor's model load is a one-off start-up cost; report with and without it
        load_t0 = time.time()
        load_model(args.model)
        load_s = time.time() - load_t0
        from lens_ray.embed import resolve_dtype
        ray_dtype = resolve_dtype(cfg.dtype, "cpu")
        rows.append({"path": "Ray Data actor pool (1 actor), length-sorted", "dtype": ray_dtype,
                     "tokens_per_s": round(st.tokens / wall, 1),
                     "tokens_per_s_excl_model_load": round(st.tokens / max(wall - load_s, 1e-9), 1),
                     "model_load_s": round(load_s, 1)})
        print(json.dumps(rows[-1]), flush=True)
        ray.shutdown()
        base = next(r for r in rows if r["path"].startswith("plain loop, length") and r["dtype"] == ray_dtype)
        overhead = 1 - rows[-1]["tokens_per_s_excl_model_load"] / base["tokens_per_s"]
        print(f"Ray Data overhead vs plain loop (excluding model load): {overhead * 100:.1f}%")
    record = {"bench": "embed_throughput", "model": args.model, "texts": len(pairs), "batch": args.batch,
              "max_length": args.max_length, "machine": machine(), "time": time.strftime("%Y-%m-%d %H:%M"),
              "rows": rows}
    with open(os.path.join(os.path.dirname(__file__), "results.jsonl"), "a") as fh:
        fh.write(json.dumps(record) + "\n")


if __name__ == "__main__":
    main()
