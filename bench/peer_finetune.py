"""The peer a user would pick instead of lens-ray: TRL's RewardTrainer fine-tuning the whole LM (and LoRA) on the
same seed pairs, scored on the same held-out pairs as a finished lens-ray run, paired per pair with the run's pick.

Two halves, so the training half runs where there is no Ray (the GPU machine: torch, transformers, trl, peft):
- prepare (lens-ray here): the run's seed and held-out pairs as lens-ray tokenizes them (its chat template; an
  over-long text loses prompt tokens from the left, counted, never dropped, so TRL's own length filter drops
  nothing), the LM as a plain transformers folder, and the pick's correctness on every held-out pair;
- train (torch, transformers, trl, peft only): RewardTrainer with TRL's defaults (fp32 on CPU, bf16 on a GPU;
  its learning rate, batch size, epochs, and `disable_dropout`), full fine-tune and LoRA (peft's defaults,
  task SEQ_CLS); held-out accuracy with its standard error, the paired difference from the pick per pair, wall
  seconds and peak memory.

    .venv/bin/python bench/peer_finetune.py --run runs/hh_harmless_dev-smollm2 [--modes full,lora]   # both halves
    .venv/bin/python bench/peer_finetune.py --run RUN --prepare bench/.peer     # here, then on the GPU machine:
    python3 bench/peer_finetune.py --from bench/.peer [--seed 1]                # (carrying bench/.peer)
    .venv/bin/python bench/peer_finetune.py --run RUN --smoke                   # a few pairs, a few steps (a test)

Prints a table and appends it, with the machine, to bench/results.jsonl (or --out).
"""
from __future__ import annotations

import argparse
import json
import math
import os
import platform
import resource
import shutil
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


# ------------------------------------------------------------------ prepare (lens-ray)

def prepare(run_uri: str, folder: str, seed_pairs: int | None, eval_pairs: int | None) -> dict:
    """Write the run's pairs as token ids, the LM as a transformers folder and the pick's per-pair correctness."""
    sys.path.insert(0, str(ROOT))
    import numpy as np

    from lens_ray.data.embed import dequantized_copy, resolve_dtype, resolve_model, tokenize
    from lens_ray.data.finished_run import FinishedRun
    from lens_ray.data.ingest import load_datasets
    from lens_ray.scoring.reward_model import RewardModel

    run = FinishedRun.open(run_uri)
    ds = load_datasets(run.config.data)                              # the run's split, re-ingested
    train, held = ds.seed_pairs[:seed_pairs], ds.eval_pairs[:eval_pairs]
    rm = RewardModel.from_run(run_uri)                               # the pick, scored as every entry point does
    lm, max_length = rm.lm, rm.max_length
    os.makedirs(folder, exist_ok=True)
    out = {"run": run.uri, "pick": rm.head_name, "model": run.config.embed.model, "max_length": max_length}
    for name, pairs in (("train", train), ("eval", held)):
        chosen = tokenize(lm, [p.prompt for p in pairs], [p.chosen for p in pairs], max_length)
        rejected = tokenize(lm, [p.prompt for p in pairs], [p.rejected for p in pairs], max_length)
        out[name] = {"chosen_ids": chosen.ids, "rejected_ids": rejected.ids,
                     "truncated": int(chosen.truncated.sum() + rejected.truncated.sum())}
    r_pos = rm.score([p.prompt for p in held], [p.chosen for p in held])
    r_neg = rm.score([p.prompt for p in held], [p.rejected for p in held])
    out["eval"]["pick_correct"] = (np.where(r_pos > r_neg, 1.0, np.where(r_pos == r_neg, 0.5, 0.0))).tolist()
    model_dir = os.path.join(folder, "model")
    shutil.rmtree(model_dir, ignore_errors=True)
    source = lm.loaded_from
    if source.endswith(".gguf"):                    # a GGUF's first load kept its dequantized copy: that folder
        source = dequantized_copy(resolve_model(out["model"]), resolve_dtype(rm.embed_cfg.dtype))
    shutil.copytree(source, model_dir, ignore=shutil.ignore_patterns("*.gguf", "*.lock"))
    lm.tokenizer.save_pretrained(model_dir)                          # with the pad token lens-ray reads with
    with open(os.path.join(folder, "pairs.json"), "w") as fh:
        json.dump(out, fh)
    return out


# ------------------------------------------------------------------ train (torch, transformers, trl, peft)

def _accuracy(model, tok, pairs: dict, device: str, batch: int = 16) -> list[float]:
    import torch
    correct = []
    model.eval()
    with torch.no_grad():
        for i in range(0, len(pairs["chosen_ids"]), batch):
            rewards = []
            for key in ("chosen_ids", "rejected_ids"):
                rows = pairs[key][i:i + batch]
                width = max(len(r) for r in rows)
                ids = torch.tensor([r + [tok.pad_token_id] * (width - len(r)) for r in rows], device=device)
                mask = torch.tensor([[1] * len(r) + [0] * (width - len(r)) for r in rows], device=device)
                rewards.append(model(input_ids=ids, attention_mask=mask).logits[:, 0].float().cpu())
            correct += torch.where(rewards[0] > rewards[1], 1.0, torch.where(rewards[0] == rewards[1], 0.5, 0.0)
                                   ).tolist()
    return correct


def _mean_se(values: list[float]) -> tuple[float, float]:
    n = len(values)
    mean = sum(values) / n
    var = sum((v - mean) ** 2 for v in values) / (n - 1) if n > 1 else float("nan")
    return mean, math.sqrt(var / n) if n > 1 else float("nan")


def train(prepared: dict, folder: str, mode: str, smoke: bool, epochs: float | None, seed: int = 0) -> dict:
    import torch
    from datasets import Dataset
    from transformers import AutoModelForSequenceClassification, AutoTokenizer
    from trl import RewardConfig, RewardTrainer

    gpu = torch.cuda.is_available()
    device = "cuda" if gpu else "cpu"
    model_dir = os.path.join(folder, "model")
    tok = AutoTokenizer.from_pretrained(model_dir)
    dtype = torch.bfloat16 if gpu else torch.float32                 # TRL's default: bf16 where it runs
    model = AutoModelForSequenceClassification.from_pretrained(model_dir, num_labels=1, dtype=dtype)
    model.config.pad_token_id = tok.pad_token_id
    peft_config = None
    if mode == "lora":
        from peft import LoraConfig
        peft_config = LoraConfig(task_type="SEQ_CLS")
    args = {"output_dir": os.path.join(folder, f"out-{mode}"), "report_to": [], "save_strategy": "no",
            "logging_steps": 10, "max_length": prepared["max_length"], "bf16": gpu, "seed": seed}
    if smoke:
        args.update(max_steps=2, per_device_train_batch_size=2)
    elif epochs is not None:
        args["num_train_epochs"] = epochs
    data = Dataset.from_dict({k: prepared["train"][k] for k in ("chosen_ids", "rejected_ids")})
    if gpu:
        torch.cuda.reset_peak_memory_stats()
    t0 = time.time()
    trainer = RewardTrainer(model=model, args=RewardConfig(**args), train_dataset=data, processing_class=tok,
                            peft_config=peft_config)
    kept = len(trainer.train_dataset)
    trainer.train()
    seconds = time.time() - t0
    correct = _accuracy(trainer.model, tok, prepared["eval"], device)
    acc, se = _mean_se(correct)
    diff, diff_se = _mean_se([c - p for c, p in zip(correct, prepared["eval"]["pick_correct"])])
    peak = (torch.cuda.max_memory_allocated() / 2**30 if gpu else
            resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20)
    return {"mode": mode, "seed": seed, "train_pairs": len(prepared["train"]["chosen_ids"]), "kept_by_trl": kept,
            "truncated_texts": prepared["train"]["truncated"], "eval_pairs": len(correct), "accuracy": acc,
            "accuracy_se": se, "vs_pick": diff, "vs_pick_se": diff_se, "seconds": round(seconds, 1),
            "peak_gib": round(peak, 2), "peak_of": "GPU allocated" if gpu else "process RSS so far",
            "epochs": trainer.args.num_train_epochs, "steps": trainer.state.global_step, "dtype": str(dtype),
            "learning_rate": trainer.args.learning_rate, "batch": trainer.args.per_device_train_batch_size}


def machine() -> str:
    import torch
    where = torch.cuda.get_device_name(0) if torch.cuda.is_available() else platform.processor() or "CPU"
    return f"{where}, {os.cpu_count()} cores, torch {torch.__version__}"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--run", help="a finished lens-ray run (its split, its text, its pick)")
    ap.add_argument("--prepare", metavar="DIR", help="only write the prepared pairs and model to DIR")
    ap.add_argument("--from", dest="source", metavar="DIR", help="train from a prepared DIR (no lens-ray needed)")
    ap.add_argument("--modes", default="full,lora", help="full and/or lora")
    ap.add_argument("--smoke", action="store_true", help="8 seed pairs, 8 held-out pairs, 2 steps")
    ap.add_argument("--epochs", type=float, default=None, help="epochs (default: TRL's)")
    ap.add_argument("--seed", type=int, default=0, help="the fine-tune's seed (its head's init, data order)")
    ap.add_argument("--out", default=str(ROOT / "bench" / "results.jsonl"))
    args = ap.parse_args()
    if not (args.run or args.source):
        ap.error("give --run RUN (and optionally --prepare DIR), or --from DIR")
    modes = [m for m in args.modes.split(",") if m]
    if any(m not in ("full", "lora") for m in modes):
        ap.error(f"--modes: full and/or lora, not {args.modes!r}")
    scratch = None if (args.source or args.prepare) else tempfile.mkdtemp(prefix="lens-ray-peer-")
    folder = args.source or args.prepare or scratch
    try:
        run(args, folder, modes)
    finally:
        if scratch:
            shutil.rmtree(scratch, ignore_errors=True)


def run(args: argparse.Namespace, folder: str, modes: list[str]) -> None:
    if args.run:
        n = 8 if args.smoke else None
        prepared = prepare(args.run, folder, n, n)
        print(f"prepared {len(prepared['train']['chosen_ids'])} seed and {len(prepared['eval']['chosen_ids'])} "
              f"held-out pairs of {prepared['run']} in {folder} ({prepared['train']['truncated']} training texts "
              "cut from the left)", flush=True)
        if args.prepare:
            return
    else:
        with open(os.path.join(folder, "pairs.json")) as fh:
            prepared = json.load(fh)
    rows = [train(prepared, folder, mode, args.smoke, args.epochs, args.seed) for mode in modes]
    pick = _mean_se(prepared["eval"]["pick_correct"])
    print(f"\n{machine()}; lens-ray's pick ({prepared['pick']}): held-out accuracy {pick[0]:.3f} ± {pick[1]:.3f}\n")
    print("| fine-tune | accuracy | vs the pick (paired) | seconds | peak GiB | pairs kept by TRL |\n"
          "|---|---|---|---|---|---|")
    for r in rows:
        print(f"| {r['mode']} | {r['accuracy']:.3f} ± {r['accuracy_se']:.3f} | {r['vs_pick']:+.3f} ± "
              f"{r['vs_pick_se']:.3f} | {r['seconds']} | {r['peak_gib']} ({r['peak_of']}) | {r['kept_by_trl']} of "
              f"{r['train_pairs']} |")
    with open(args.out, "a") as fh:
        fh.write(json.dumps({"bench": "peer_finetune", "machine": machine(), "time": time.strftime("%Y-%m-%d %H:%M"),
                             "run": prepared["run"], "pick": prepared["pick"], "pick_accuracy": pick[0],
                             "smoke": args.smoke, "rows": rows}) + "\n")


if __name__ == "__main__":
    main()
