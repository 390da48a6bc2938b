"""Cost of new pairs: text synthesis (generate responses with the same LLM, generation only, no labelling)
vs LENS latent synthesis (VAE decode), for the same number of new pairs, on this machine.

    .venv/bin/python bench/text_vs_latent.py --from-run runs/hh_harmless_dev-smollm2 [--prompts 8] [--new-tokens 64]

A text-synthesized pair needs two new responses; they are generated for a small sample of prompts and
the time is scaled to the pair count. LENS pairs are produced by `synth_stream.materialize` in-process.
Appends to bench/results.jsonl.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import torch  # noqa: E402

from lens_ray.config import DataConfig  # noqa: E402
from lens_ray.core.augment import Augmenter  # noqa: E402
from lens_ray.core.synth_stream import materialize  # noqa: E402
from lens_ray.data.finished_run import FinishedRun  # noqa: E402
from lens_ray.data.ingest import load_datasets  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--from-run", default="runs/hh_harmless_dev-smollm2")
    ap.add_argument("--prompts", type=int, default=8)
    ap.add_argument("--new-tokens", type=int, default=64)
    ap.add_argument("--pairs", type=int, default=8000, help="pair count both costs are scaled to (8x of 1,000)")
    args = ap.parse_args()
    run = FinishedRun.open(args.from_run)
    config, (pos, neg), vae = run.config.to_dict(), run.table("seed"), run.vae(0)
    torch.set_num_threads(os.cpu_count() or 1)
    # text: generate 2 responses per prompt with the embedding LLM (its own chat template)
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from lens_ray.data.embed import resolve_dtype, resolve_model
    src = resolve_model(config["embed"]["model"])
    kw = {"gguf_file": src.gguf_file} if src.gguf_file else {}
    tok = AutoTokenizer.from_pretrained(src.folder, **kw)
    dtype = {"float32": torch.float32, "bfloat16": torch.bfloat16}[resolve_dtype(config["embed"]["dtype"], "cpu")]
    model = AutoModelForCausalLM.from_pretrained(src.folder, dtype=dtype, **kw).eval()
    tok.padding_side = "left"
    ds = load_datasets(DataConfig(data=config["data"]["data"], seed_pairs=args.prompts))
    texts = [tok.apply_chat_template(p.prompt, tokenize=False, add_generation_prompt=True) for p in ds.seed_pairs]
    enc = tok(texts, return_tensors="pt", padding=True, truncation=True, max_length=256)
    t0 = time.time()
    with torch.inference_mode():
        out = model.generate(**enc, max_new_tokens=args.new_tokens, min_new_tokens=args.new_tokens, do_sample=True,
                             num_return_sequences=2, pad_token_id=tok.pad_token_id)
    gen_s = time.time() - t0
    new_tokens = (out.shape[1] - enc.input_ids.shape[1]) * out.shape[0]
    text_s_per_pair = gen_s / args.prompts          # one pair = 2 generated responses for one prompt
    # latent: LENS pairs decoded by the run's VAE
    aug = Augmenter.fit("lens", 0, run.config.synth, torch.from_numpy(pos), torch.from_numpy(neg), vae)
    t0 = time.time()
    materialize(aug, torch.from_numpy(pos), torch.from_numpy(neg), 0, args.pairs, 2)
    lens_s = time.time() - t0
    row = {"bench": "text_vs_latent", "model": config["embed"]["model"], "prompts_sampled": args.prompts,
           "new_tokens_per_response": args.new_tokens, "generation_tokens_per_s": round(new_tokens / gen_s, 1),
           "text_seconds_for_pairs": round(text_s_per_pair * args.pairs, 1),
           "lens_seconds_for_pairs": round(lens_s, 2),
           "pairs": args.pairs, "speedup": round(text_s_per_pair * args.pairs / lens_s, 1),
           "note": "text: generation only, scaled from the sample; excludes labelling and embedding the new texts"}
    from embed_throughput import machine
    row["machine"], row["time"] = machine(), time.strftime("%Y-%m-%d %H:%M")
    print(json.dumps(row, indent=1))
    with open(os.path.join(os.path.dirname(__file__), "results.jsonl"), "a") as fh:
        fh.write(json.dumps(row) + "\n")


if __name__ == "__main__":
    main()
