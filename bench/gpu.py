"""The GPU benchmark, ready as one short command for a GPU machine (torch and transformers, no Ray, no hub),
and this machine's own limit.

    .venv/bin/python bench/gpu.py --prepare          # here: real HH texts, tokenized, into bench/.gpu/ (git-ignored)
    python3 bench/gpu.py                             # on the GPU: carry bench/.gpu; ~1B, 3B and 8B Llama configs
    .venv/bin/python bench/gpu.py --smoke            # anywhere, on CPU, a tiny config: what a test runs
    .venv/bin/python bench/gpu.py --cpu-limit        # here: peak GEMM (fp32, bf16) at SmolLM2's shapes, and the
                                                     # embedding loop's share of it

1. Embedding: random-initialized Llama-style models (the cost of trained weights, no download) in bf16 with SDPA,
   through the code the Ray actors run (`data.embed.embed_layers`: length-sorted token-budget batches from
   `length_batches`, last-token pooling, three layers from one pass), over real tokenized HH texts: tokens/s
   and peak memory for several batch shapes, the best one named; then the same texts with each pair's prompt
   read once (`data.embed.Packing`, as the actors pack them: explicit attention masks, which SDPA may run
   without its fastest kernel) at the best shape, and its gain over that shape.
2. The math at the paper's width (d = 4,096, 1,000 seed pairs, 8x): the VAE fit, LENS synthesis, the MLP head
   and the linear head, seconds each, on synthetic embeddings.
3. --cpu-limit: fp32 and bf16 matrix products at the model's shapes (the ceiling), and the plain embedding loop's
   FLOP rate on SmolLM2 against it.
Prints JSON lines; appends each, with the machine, to --out (bench/results.jsonl).
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
from types import SimpleNamespace

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import numpy as np  # noqa: E402
import torch  # noqa: E402

from lens_ray.data.embed import LoadedModel, embed_layers, length_batches  # noqa: E402

HERE = os.path.dirname(os.path.abspath(__file__))
TOKENS = os.path.join(HERE, ".gpu", "hh_tokens.json")
# Llama-3.x shapes (hidden, layers, heads, kv heads, MLP width); the vocabulary is SmolLM2's tokenizer's
SIZES = {"1b": (2048, 16, 32, 8, 8192), "3b": (3072, 28, 24, 8, 8192), "8b": (4096, 32, 32, 8, 14336),
         "tiny": (64, 4, 4, 2, 128)}
VOCAB = 49152


def machine() -> str:
    cpu = platform.processor() or platform.machine()
    if os.path.exists("/proc/cpuinfo"):
        info = open("/proc/cpuinfo").read()
        cpu = next((ln.split(":", 1)[1].strip() for ln in info.splitlines() if ln.startswith("model name")), cpu)
    gpu = torch.cuda.get_device_name(0) if torch.cuda.is_available() else "no GPU"
    return f"{gpu}; {cpu}, {os.cpu_count()} cores; torch {torch.__version__}"


def emit(row: dict, out: str) -> None:
    row = {"bench": "gpu", "machine": machine(), "time": time.strftime("%Y-%m-%d %H:%M"), **row}
    print(json.dumps(row), flush=True)
    with open(out, "a") as fh:
        fh.write(json.dumps(row) + "\n")


# ---------------------------------------------------------------- texts

def prepare(n: int, max_length: int) -> None:
    """Tokenize the HH texts `make run` embeds with SmolLM2's tokenizer and chat template (left truncation as the
    job does) into bench/.gpu/hh_tokens.json: token ids only, small enough to carry."""
    from lens_ray.config import DataConfig
    from lens_ray.data.embed import load_model, tokenize
    from lens_ray.data.ingest import load_datasets
    ds = load_datasets(DataConfig(data=os.path.join(HERE, "..", "..", "shared", "data", "hh_harmless_dev.jsonl.gz")))
    texts = [(p.prompt, r) for p in ds.seed_pairs + ds.eval_pairs for r in (p.chosen, p.rejected)][:n]
    lm = load_model("smollm2", "float32")
    ids = tokenize(lm, [p for p, _ in texts], [r for _, r in texts], max_length).ids
    os.makedirs(os.path.dirname(TOKENS), exist_ok=True)
    with open(TOKENS, "w") as fh:
        json.dump({"max_length": max_length, "pad": lm.tokenizer.pad_token_id, "ids": ids}, fh)
    print(f"{len(ids)} texts, {sum(map(len, ids))} tokens -> {TOKENS} ({os.path.getsize(TOKENS) / 2**20:.1f} MiB)")


def texts(smoke: bool, n: int) -> tuple[list[list[int]], int]:
    """Token ids and the pad id: the prepared HH texts, or (smoke, or none prepared) random ids of HH-like lengths."""
    if os.path.exists(TOKENS) and not smoke:
        doc = json.load(open(TOKENS))
        return doc["ids"][:n], doc["pad"]
    rng = np.random.default_rng(0)                   # pairs: texts 2i and 2i + 1 share a prompt
    lengths = np.clip(rng.lognormal(5.0, 0.6, n).astype(int), 16, 256 if smoke else 512)
    vocab = VOCAB if not smoke else 500
    ids = [rng.integers(1, vocab, size=length).tolist() for length in lengths]
    for i in range(1, n, 2):
        prompt = ids[i - 1][:len(ids[i - 1]) // 2]
        ids[i] = prompt + ids[i][:max(1, len(ids[i]) - len(prompt))]
    return ids, 0


# ---------------------------------------------------------------- 1. embedding

def random_llama(size: str, device: str, dtype: torch.dtype) -> LoadedModel:
    from transformers import LlamaConfig, LlamaModel
    hidden, layers, heads, kv, mlp = SIZES[size]
    cfg = LlamaConfig(vocab_size=VOCAB if size != "tiny" else 512, hidden_size=hidden, num_hidden_layers=layers,
                      num_attention_heads=heads, num_key_value_heads=kv, intermediate_size=mlp,
                      max_position_embeddings=4096, attn_implementation="sdpa")
    torch.manual_seed(0)
    previous = torch.get_default_dtype()
    torch.set_default_dtype(dtype)                   # built in its dtype, on its device: no fp32 copy of 8B weights
    try:
        with torch.device(device):
            model = LlamaModel(cfg).eval()
    finally:
        torch.set_default_dtype(previous)
    return LoadedModel(SimpleNamespace(pad_token_id=0), model, "causal", f"random-llama-{size}", hidden,
                       torch.device(device))


def embed_bench(size: str, ids: list[list[int]], device: str, budgets: list[tuple[int, int]], out: str) -> None:
    dtype = torch.bfloat16 if device == "cuda" else torch.float32
    t0 = time.time()
    lm = random_llama(size, device, dtype)
    params = sum(p.numel() for p in lm.model.parameters())
    init_s = time.time() - t0
    layers = lm.model.config.num_hidden_layers
    picks = (-1, -(layers // 4) - 1, -(layers // 2) - 1)            # three layers, one pass
    lengths = [len(x) for x in ids]
    rows = []
    for max_items, max_tokens in budgets:
        if device == "cuda":
            torch.cuda.reset_peak_memory_stats()
            torch.cuda.synchronize()
        batches = length_batches(lengths, max_items, max_tokens)
        embed_layers(lm, [ids[i] for i in batches[0]], "last", layers=picks)          # warm-up
        start = time.time()
        for rows_ in batches:
            embed_layers(lm, [ids[i] for i in rows_], "last", layers=picks)
        if device == "cuda":
            torch.cuda.synchronize()
        secs = time.time() - start
        peak = torch.cuda.max_memory_allocated() / 2**30 if device == "cuda" else None
        rows.append({"max_items": max_items, "max_tokens": max_tokens, "batches": len(batches),
                     "tokens_per_s": round(sum(lengths) / secs, 1), "seconds": round(secs, 2),
                     "peak_gib": round(peak, 2) if peak else None})
    best = max(rows, key=lambda r: r["tokens_per_s"])
    packed = packed_bench(lm, ids, picks, (best["max_items"], best["max_tokens"]), device)
    # what a reward server's batching is worth here: 32 requests one by one against one batch of 32
    middle = sorted(range(len(ids)), key=lambda i: lengths[i])[len(ids) // 2 - 16:][:32]
    timed = {}
    for name, groups in (("one_by_one", [[i] for i in middle]), ("batch_of_32", [middle])):
        start = time.time()
        for group in groups:
            embed_layers(lm, [ids[i] for i in group], "last")
        if device == "cuda":
            torch.cuda.synchronize()
        timed[name] = round(len(middle) / (time.time() - start), 1)
    emit({"stage": "embed", "model": f"random Llama {size}", "params_b": round(params / 1e9, 3),
          "dtype": str(dtype).removeprefix("torch."), "texts": len(ids), "tokens": sum(lengths),
          "layers_pooled": list(picks), "init_s": round(init_s, 1), "rows": rows, "best": best,
          "texts_per_s": timed, "batching_gain": round(timed["batch_of_32"] / timed["one_by_one"], 2),
          "packed": {**packed, "gain": round(packed["tokens_per_s"] / best["tokens_per_s"], 2)}}, out)
    del lm
    if device == "cuda":
        torch.cuda.empty_cache()


def packed_bench(lm: LoadedModel, ids: list[list[int]], picks: tuple[int, ...], budget: tuple[int, int],
                 device: str) -> dict:
    """The texts again with a prompt read once for its responses (`embed.share_prefix`): texts 2i and 2i + 1 are
    one pair's chosen and rejected (one prompt), packed as the Ray actors pack them; tokens read per second."""
    from lens_ray.data.embed import Packing, embed_rows
    lengths = [len(x) for x in ids]
    order = sorted(range(len(ids) // 2), key=lambda g: lengths[2 * g] + lengths[2 * g + 1])
    rows = [i for g in order for i in (2 * g, 2 * g + 1)] + ([len(ids) - 1] if len(ids) % 2 else [])
    sorted_ids = [ids[i] for i in rows]
    packing = Packing(lm, "last")
    start = time.time()
    _, shared = packing.embed(sorted_ids, [str(i // 2) for i in rows],
                              lambda r: embed_rows(lm, sorted_ids, r, "last", picks, budget),
                              layers=picks, max_tokens=1024, pack_batch=budget)
    if device == "cuda":
        torch.cuda.synchronize()
    secs = time.time() - start
    return {"tokens_per_s": round(sum(lengths) / secs, 1), "seconds": round(secs, 2),
            "shared_tokens": int(shared.sum()), "agrees": packing.on}


# ---------------------------------------------------------------- 2. the math at d = 4,096

def math_bench(d: int, n: int, factor: int, out: str, quick: bool) -> None:
    from lens_ray.config import RewardConfig, SynthConfig, VAEConfig
    from lens_ray.core.augment import Augmenter, PairSet, augmented_set
    from lens_ray.core.fit import fit_head, fit_reward_head, fit_vae
    from lens_ray.core.synth import synth_per_side
    g = torch.Generator().manual_seed(0)
    w = torch.randn(d, generator=g)
    base = torch.randn(n, d, generator=g) * 2
    pos, neg = base + 0.05 * w + 0.5 * torch.randn(n, d, generator=g), base - 0.05 * w
    vcfg = VAEConfig(epochs=5 if quick else 150)
    rcfg = RewardConfig(max_steps=30 if quick else 600)
    if quick:
        rcfg.linear_l2, rcfg.linear_shrink, rcfg.linear_norms = (1e-2, 1.0), (0.0, 1.0), ("none", "diag")
    seconds = {}
    t = time.time()
    vae, _ = fit_vae(vcfg, pos, neg, seed=0)
    seconds["vae_fit"] = time.time() - t
    t = time.time()
    aug = Augmenter.fit("lens", 0, SynthConfig(), pos, neg, vae.eval())
    syn_pos, syn_neg = aug.draw(pos, neg, np.arange(n), synth_per_side(factor))
    train = augmented_set(pos, neg, syn_pos, syn_neg, factor, 0, 1.0)
    seconds["lens_synthesis"] = time.time() - t
    val = PairSet(pos[: n // 10], neg[: n // 10])
    t = time.time()
    fit_head(rcfg, train, val, 0, pos, neg)
    seconds["mlp_head"] = time.time() - t
    t = time.time()
    fit_reward_head(rcfg, "linear", train, val, 0, [f"p{i}" for i in range(n)], pos, neg)
    seconds["linear_head"] = time.time() - t
    emit({"stage": "math", "d": d, "seed_pairs": n, "factor": factor, "train_pairs": len(train),
          "vae_params": sum(p.numel() for p in vae.parameters()), "threads": torch.get_num_threads(),
          "seconds": {k: round(v, 2) for k, v in seconds.items()}}, out)


# ---------------------------------------------------------------- 3. this machine's limit

def gemm_gflops(m: int, k: int, n: int, dtype: torch.dtype, repeat: int = 5) -> float:
    a, b = torch.randn(m, k).to(dtype), torch.randn(k, n).to(dtype)
    for _ in range(3):
        a @ b
    t = time.perf_counter()
    for _ in range(repeat):
        a @ b
    return 2 * m * k * n * repeat / (time.perf_counter() - t) / 1e9


def cpu_limit(out: str, n_texts: int) -> None:
    """The ceiling (matrix products at SmolLM2's shapes) and the plain embedding loop's rate against it."""
    from lens_ray.data.embed import load_model
    shapes = {"attention q/o (tokens x 576 x 576)": (4096, 576, 576),
              "MLP up (tokens x 576 x 1536)": (4096, 576, 1536),
              "MLP down (tokens x 1536 x 576)": (4096, 1536, 576), "square 2048": (2048, 2048, 2048)}
    peaks = {f"{name} {dt}": round(gemm_gflops(*shape, getattr(torch, dt)), 1)
             for name, shape in shapes.items() for dt in ("float32", "bfloat16")}
    from lens_ray.data.embed import cpu_has_native_bf16
    all_ids, _ = texts(False, n_texts)
    rows = []
    for dtype in ("float32", "bfloat16"):
        # without native bf16 the CPU emulates it (an order of magnitude slower): fewer texts say as much
        ids = all_ids if dtype == "float32" or cpu_has_native_bf16() else all_ids[:max(8, n_texts // 10)]
        lengths = [len(x) for x in ids]
        lm = load_model("smollm2", dtype, "cpu")
        per_token = 2 * sum(p.numel() for n_, p in lm.model.named_parameters() if "embed_tokens" not in n_)
        batches = length_batches(lengths, 16, 4096)
        embed_layers(lm, [ids[i] for i in batches[0]], "last")
        t = time.perf_counter()
        for rows_ in batches:
            embed_layers(lm, [ids[i] for i in rows_], "last")
        secs = time.perf_counter() - t
        attention = sum(2 * 2 * 30 * 576 * n * n for n in lengths)          # QK^T and AV, every layer
        gflops = (per_token * sum(lengths) + attention) / secs / 1e9
        ceiling = max(v for k, v in peaks.items() if k.endswith(dtype) and "MLP" in k)
        rows.append({"dtype": dtype, "texts": len(ids), "tokens": sum(lengths),
                     "tokens_per_s": round(sum(lengths) / secs, 1), "gflops": round(gflops, 1),
                     "share_of_gemm_peak": round(gflops / ceiling, 3)})
    emit({"stage": "cpu_limit", "threads": torch.get_num_threads(), "native_bf16": cpu_has_native_bf16(),
          "gemm_gflops": peaks, "embedding_loop": rows}, out)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--smoke", action="store_true", help="a tiny config on CPU (what a test runs)")
    ap.add_argument("--prepare", action="store_true", help="tokenize real HH texts into bench/.gpu/ (here)")
    ap.add_argument("--cpu-limit", action="store_true", help="this machine's GEMM ceiling and the loop's share")
    ap.add_argument("--models", default="1b,3b,8b")
    ap.add_argument("--texts", type=int, default=2000)
    ap.add_argument("--out", default=os.path.join(HERE, "results.jsonl"))
    args = ap.parse_args()
    if args.prepare:
        return prepare(args.texts, 512)
    if args.cpu_limit:
        return cpu_limit(args.out, min(args.texts, 400))
    device = "cuda" if torch.cuda.is_available() and not args.smoke else "cpu"
    ids, _ = texts(args.smoke, 64 if args.smoke else args.texts)
    budgets = [(8, 1024), (32, 4096)] if args.smoke else [(16, 8192), (64, 32768), (256, 131072)]
    for size in (["tiny"] if args.smoke else args.models.split(",")):
        embed_bench(size, ids, device, budgets, args.out)
    math_bench(64 if args.smoke else 4096, 100 if args.smoke else 1000, 8, args.out, quick=args.smoke)


if __name__ == "__main__":
    main()
