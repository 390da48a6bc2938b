"""Embedding throughput, and where the time goes: the Ray Data path against a plain single-process torch loop on
the same texts (the `make run` texts: HH seed and eval pairs), both against the best single-process
configuration found (dtype, threads, batch shape).

    .venv/bin/python bench/embed_throughput.py [--model smollm2] [--texts 0 (all)] [--sweep-texts 600]
        [--skip-sweep] [--skip-ray] [--ray-variants 1x2,2x1]

1. Sweep (on --sweep-texts texts spread over the length range): plain loop, dtype x threads x batching
   (rows per batch or a padded-token budget). Tokens/s of the forward passes; tokenization timed apart.
2. Plain loop with the best configuration on all texts: load, tokenize, forward, pool.
3. Ray Data path on all texts with the job's settings, for each actors x threads variant: wall time from
   submitting to the last batch, model load (in the actor), the actors' tokenize and forward time, and the
   rest (scheduling, transfers, idle gaps). Ratio to the plain loop excluding model load.
Prints JSON lines and a summary; appends everything to bench/results.jsonl with the machine.
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
from lens_ray.core.records import bon_draws, table_texts  # noqa: E402
from lens_ray.data.embed import embed_ids, load_model, text_key, tokenize  # noqa: E402
from lens_ray.data.ingest import load_datasets  # noqa: E402


def machine() -> str:
    flags = open("/proc/cpuinfo").read() if os.path.exists("/proc/cpuinfo") else ""
    model = next((line.split(":", 1)[1].strip() for line in flags.splitlines() if line.startswith("model name")),
                 platform.processor() or platform.machine())
    bf16 = "AVX512-BF16" if "avx512_bf16" in flags else ("AMX" if "amx_bf16" in flags else "no native bf16")
    return f"{model}, {os.cpu_count()} cores, {bf16}, torch {torch.__version__}"


def run_texts(data: str, n: int) -> list[tuple]:
    """The (prompt, response) texts `make run` embeds, distinct, in table order."""
    cfg = DataConfig(data=data)
    ds = load_datasets(cfg)
    seen, out = set(), []
    from lens_ray.config import LensConfig
    full = LensConfig()
    full.data = cfg
    for rows in table_texts(ds, bon_draws(full, ds)[0]).values():
        for prompt, response in rows:
            key = json.dumps([prompt, response])
            if key not in seen:
                seen.add(key)
                out.append((prompt, response))
    return out[:n] if n else out


def spread(texts: list[tuple], n: int) -> list[tuple]:
    """n texts spread evenly over the length order, so the subset has the full set's length profile."""
    order = np.argsort([len(json.dumps(t)) for t in texts], kind="stable")
    return [texts[i] for i in order[np.linspace(0, len(order) - 1, n).astype(int)]]


def batches(lengths: list[int], mode: str, size: int) -> list[list[int]]:
    """Length-sorted index batches: `rows` per batch, or as many as fit a padded-token budget."""
    order = list(np.argsort(lengths, kind="stable"))
    if mode == "rows":
        return [order[i:i + size] for i in range(0, len(order), size)]
    out, cur = [], []
    for i in order:
        if cur and lengths[i] * (len(cur) + 1) > size:
            out.append(cur)
            cur = []
        cur.append(i)
    return out + ([cur] if cur else [])


def plain(lm, ids: list[list[int]], mode: str, size: int) -> dict:
    """Forward passes over length-sorted batches -> tokens/s and padding share."""
    tokens = sum(len(x) for x in ids)
    padded, t0 = 0, time.perf_counter()
    for b in batches([len(x) for x in ids], mode, size):
        chunk = [ids[i] for i in b]
        padded += max(len(x) for x in chunk) * len(chunk)
        embed_ids(lm, chunk, "auto")
    secs = time.perf_counter() - t0
    return {"tokens": tokens, "forward_s": round(secs, 2), "tokens_per_s": round(tokens / secs, 1),
            "padding_share": round(1 - tokens / padded, 3)}


def sweep(model: str, texts: list[tuple], max_length: int) -> list[dict]:
    rows = []
    for dtype in ("bfloat16", "float32"):
        lm = load_model(model, dtype)
        tk = tokenize(lm, [p for p, _ in texts], [r for _, r in texts], max_length)
        shapes = [("rows", 16), ("rows", 32), ("tokens", 2048), ("tokens", 4096), ("tokens", 8192)]
        for threads in (2, 1):
            torch.set_num_threads(threads)
            for mode, size in (shapes if dtype == "bfloat16" else [("rows", 16)]):
                plain(lm, [tk.ids[i] for i in range(min(8, len(tk.ids)))], mode, size)       # warm-up
                rows.append({"stage": "sweep", "dtype": dtype, "threads": threads, "batching": f"{mode} {size}",
                             "texts": len(texts), **plain(lm, tk.ids, mode, size)})
                print(json.dumps(rows[-1]), flush=True)
    torch.set_num_threads(os.cpu_count() or 1)
    return rows


def plain_full(model: str, texts: list[tuple], max_length: int, best: dict) -> dict:
    torch.set_num_threads(best["threads"])
    t0 = time.perf_counter()
    lm = load_model(model, best["dtype"])
    load_s = time.perf_counter() - t0
    t0 = time.perf_counter()
    tk = tokenize(lm, [p for p, _ in texts], [r for _, r in texts], max_length)
    tok_s = time.perf_counter() - t0
    mode, size = best["batching"].split()
    row = {"stage": "plain loop, all texts", "dtype": best["dtype"], "threads": best["threads"],
           "batching": best["batching"], "texts": len(texts), "load_s": round(load_s, 1),
           "tokenize_s": round(tok_s, 1), **plain(lm, tk.ids, mode, int(size))}
    row["tokens_per_s_with_tokenize"] = round(row["tokens"] / (row["forward_s"] + tok_s), 1)
    torch.set_num_threads(os.cpu_count() or 1)
    return row


def ray_path(model: str, texts: list[tuple], max_length: int, actors: int, threads: int, batch: int,
             batch_tokens: int) -> dict:
    from lens_ray.distributed.embedding import EmbedItem, embed_items
    items = [EmbedItem(text_key("bench", "auto", max_length, p, r), p, r) for p, r in texts]
    cfg = EmbedConfig(model=model, max_length=max_length)
    res = ResourcesConfig(embed_actors=actors, embed_threads=threads, embed_batch_size=batch,
                          embed_cpus_per_actor=0.5 if actors == 1 else 0.25)
    if hasattr(res, "embed_batch_tokens"):
        res.embed_batch_tokens = batch_tokens
    t0 = time.perf_counter()
    _, st = embed_items(items, cfg, res, log=lambda m: None)
    wall = time.perf_counter() - t0
    load = st.load_s / actors                          # actors load in parallel
    return {"stage": "ray data path", "actors": actors, "threads_per_actor": threads, "texts": len(texts),
            "tokens": st.tokens, "wall_s": round(wall, 1), "model_load_s": round(load, 1),
            "actor_tokenize_s": round(st.tokenize_s, 1), "actor_forward_s": round(st.forward_s, 1),
            "tokens_per_s_excl_load": round(st.tokens / max(wall - load, 1e-9), 1),
            "other_s": round(wall - load - (st.tokenize_s + st.forward_s) / actors, 1)}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", default="smollm2")
    ap.add_argument("--texts", type=int, default=0, help="0: every text make run embeds")
    ap.add_argument("--sweep-texts", type=int, default=600)
    ap.add_argument("--max-length", type=int, default=256)
    ap.add_argument("--batch", type=int, default=16)
    ap.add_argument("--batch-tokens", type=int, default=0)
    ap.add_argument("--ray-variants", default="1x2,2x1", help="actors x threads per actor")
    ap.add_argument("--skip-sweep", action="store_true")
    ap.add_argument("--skip-ray", action="store_true")
    ap.add_argument("--data", default=os.path.join(os.path.dirname(__file__), "..", "..", "shared", "data",
                                                   "hh_harmless_dev.jsonl.gz"))
    args = ap.parse_args()
    texts = run_texts(args.data, args.texts)
    rows: list[dict] = []
    best = {"dtype": "bfloat16", "threads": 2, "batching": f"rows {args.batch}"}
    if not args.skip_sweep:
        rows += sweep(args.model, spread(texts, min(args.sweep_texts, len(texts))), args.max_length)
        best = max((r for r in rows if r["stage"] == "sweep"), key=lambda r: r["tokens_per_s"])
        print(f"best single-process configuration: {best['dtype']}, {best['threads']} threads, "
              f"{best['batching']}: {best['tokens_per_s']} tokens/s", flush=True)
    rows.append(plain_full(args.model, texts, args.max_length, best))
    print(json.dumps(rows[-1]), flush=True)
    if not args.skip_ray:
        from lens_ray.distributed.session import connect
        connect(log=lambda m: None, dashboard=True)
        for variant in args.ray_variants.split(","):
            actors, threads = (int(x) for x in variant.split("x"))
            row = ray_path(args.model, texts, args.max_length, actors, threads, args.batch, args.batch_tokens)
            base = next(r for r in rows if r["stage"].startswith("plain loop"))      # tokenizing included, as in Ray
            row["ratio_to_plain"] = round(row["tokens_per_s_excl_load"] / base["tokens_per_s_with_tokenize"], 3)
            rows.append(row)
            print(json.dumps(row), flush=True)
    with open(os.path.join(os.path.dirname(__file__), "results.jsonl"), "a") as fh:
        fh.write(json.dumps({"bench": "embed_throughput", "model": args.model, "texts": len(texts),
                             "max_length": args.max_length, "machine": machine(),
                             "time": time.strftime("%Y-%m-%d %H:%M"), "rows": rows}) + "\n")


if __name__ == "__main__":
    main()
