"""`lens-ray run ...` (the main job; also `python jobs/full.py ...`) and `lens-ray score ...`.

Flags override the YAML file, which overrides the defaults in config.py; `--set a.b=v` reaches any field.
"""
from __future__ import annotations

import argparse
import json
import sys

from lens_ray.config import LensConfig, load_config

# flag -> dotted config field
RUN_FLAGS = {
    "data": "data.data", "eval_data": "data.eval_data", "bon_data": "data.bon_data", "model": "embed.model",
    "seed_pairs": "data.seed_pairs", "eval_pairs": "data.eval_pairs", "bon_prompts": "data.bon_prompts",
    "factors": "factors", "seeds": "seeds", "methods": "methods", "storage": "storage", "out": "out",
    "name": "name", "cache": "cache", "ray_address": "ray_address",
}


def run_parser(prog: str = "lens-ray run") -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog=prog, description="LENS: embed, fit a VAE, synthesize pairs, train and "
                                "compare reward models, on Ray.")
    p.add_argument("--config", help="YAML file with the same sections as lens_ray/config.py")
    p.add_argument("--data", help="preference data URI (jsonl/json/parquet[.gz], HF folder, hf://owner/name)")
    p.add_argument("--eval-data", help="pairs for accuracy (default: held out from --data)")
    p.add_argument("--bon-data", help="scored completions for Best-of-N (may equal --data: prompts are split)")
    p.add_argument("--model", help="embedding LM: smollm2, minilm, a folder, a .gguf file or a hub id")
    p.add_argument("--seed-pairs", type=int)
    p.add_argument("--eval-pairs", type=int, help="cap on held-out eval pairs")
    p.add_argument("--bon-prompts", type=int, help="cap on Best-of-N prompts")
    p.add_argument("--factors", help="augmentation factors, e.g. 4,8")
    p.add_argument("--seeds", type=int)
    p.add_argument("--methods", help="comma list of " + ",".join(LensConfig().methods))
    p.add_argument("--storage", help="artifact root: path, file:// or s3://bucket/prefix")
    p.add_argument("--out", help="this run's output URI (default <storage>/<name>)")
    p.add_argument("--name", help="run name")
    p.add_argument("--cache", help="embedding cache URI (default <storage>/cache)")
    p.add_argument("--ray-address")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                   help="any config field, e.g. --set vae.beta=0.5 --set synth.noise_var=0.05")
    return p


def config_from_args(args: argparse.Namespace) -> LensConfig:
    overrides = {dotted: getattr(args, flag) for flag, dotted in RUN_FLAGS.items()}
    for item in args.set:
        key, sep, value = item.partition("=")
        if not sep:
            raise SystemExit(f"--set {item!r}: expected KEY=VALUE")
        overrides[key.strip()] = value.strip()
    return load_config(args.config, overrides)


def run_main(argv: list[str] | None = None, prog: str = "lens-ray run") -> dict:
    args = run_parser(prog).parse_args(argv)
    cfg = config_from_args(args)
    from lens_ray.pipeline import run
    from lens_ray.ray_session import connect
    connect(cfg.ray_address)
    return run(cfg, log=lambda m: print(m, flush=True))


def score_main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(prog="lens-ray score", description="Score (prompt, response) texts with a trained head.")
    p.add_argument("--run", required=True, help="a finished run's output URI")
    p.add_argument("--head", help="head name under <run>/heads (default: best validation accuracy)")
    p.add_argument("--prompt")
    p.add_argument("--response")
    p.add_argument("--input", help="jsonl with prompt and response fields; prints one JSON line per row")
    args = p.parse_args(argv)
    from lens_ray.score import RewardModel
    rm = RewardModel.from_run(args.run, args.head)
    if args.input:
        with open(args.input) as fh:
            rows = [json.loads(line) for line in fh if line.strip()]
        for i, row in enumerate(rows):
            for fld in ("prompt", "response"):
                if not isinstance(row.get(fld), (str, list)):
                    raise SystemExit(f"{args.input}: row {i}: field '{fld}' missing or not text")
        rewards = rm.score([r["prompt"] for r in rows], [r["response"] for r in rows])
        for row, r in zip(rows, rewards):
            print(json.dumps({**row, "reward": float(r)}))
    elif args.prompt is not None and args.response is not None:
        print(f"{float(rm.score([args.prompt], [args.response])[0]):.4f}")
    else:
        raise SystemExit("give --prompt and --response, or --input FILE")


def main(argv: list[str] | None = None) -> None:
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] not in ("run", "score"):
        raise SystemExit("usage: lens-ray {run,score} [options]   (lens-ray run --help)")
    if argv[0] == "run":
        run_main(argv[1:])
    else:
        score_main(argv[1:])


if __name__ == "__main__":
    main()
