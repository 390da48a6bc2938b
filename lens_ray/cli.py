"""`lens-ray run ...` (the main job; also `python jobs/full.py ...`), `lens-ray tune ...` (the search; also
`python jobs/tune.py ...`) and `lens-ray score ...`.

Flags override the YAML file, which overrides the defaults in config.py; `--set a.b=v` reaches any field.
"""
from __future__ import annotations

import argparse
import json
import sys

from lens_ray.config import LensConfig, apply_overrides, join_uri, load_config

# flag -> dotted config field
RUN_FLAGS = {
    "data": "data.data", "eval_data": "data.eval_data", "bon_data": "data.bon_data", "model": "embed.model",
    "seed_pairs": "data.seed_pairs", "eval_pairs": "data.eval_pairs", "bon_prompts": "data.bon_prompts",
    "factors": "factors", "seeds": "seeds", "methods": "methods", "storage": "storage", "out": "out",
    "name": "name", "cache": "cache", "ray_address": "ray_address",
}
TUNE_FLAGS = {
    "num_samples": "tune.num_samples", "name": "tune.name", "max_concurrent": "tune.max_concurrent",
    "cpus_per_trial": "tune.cpus_per_trial", "folds": "tune.folds", "repeats": "tune.repeats",
    "ray_address": "ray_address",
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
    p.add_argument("--from-tune", metavar="SEARCH_URI",
                   help="use the settings a search (jobs/tune.py) chose; flags and --set still override them")
    _add_set(p)
    return p


def _add_set(p: argparse.ArgumentParser) -> None:
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                   help="any config field, e.g. --set vae.beta=0.5 --set synth.noise_var=0.05")


def _overrides(args: argparse.Namespace, flags: dict[str, str]) -> dict:
    overrides = {dotted: getattr(args, flag) for flag, dotted in flags.items()}
    for item in args.set:
        key, sep, value = item.partition("=")
        if not sep:
            raise SystemExit(f"--set {item!r}: expected KEY=VALUE")
        overrides[key.strip()] = value.strip()
    return overrides


def config_from_args(args: argparse.Namespace) -> LensConfig:
    """defaults <- YAML <- a search's chosen settings (--from-tune) <- flags and --set."""
    cfg = load_config(args.config)
    if getattr(args, "from_tune", None):
        from lens_ray.tune_results import apply_tuned, read_best
        apply_tuned(cfg, read_best(args.from_tune))
        cfg.from_tune = args.from_tune
    return apply_overrides(cfg, _overrides(args, RUN_FLAGS))


def run_main(argv: list[str] | None = None, prog: str = "lens-ray run") -> dict:
    args = run_parser(prog).parse_args(argv)
    cfg = config_from_args(args)
    from lens_ray.pipeline import run
    from lens_ray.ray_session import connect
    connect(cfg.ray_address)
    return run(cfg, log=lambda m: print(m, flush=True))


def tune_parser(prog: str = "lens-ray tune") -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog=prog, description="Ray Tune search of the synthesis hyperparameters on a "
                                "finished run's embeddings (never re-embeds), k-fold paired against original.")
    p.add_argument("--from-run", action="append", required=True, metavar="RUN_URI",
                   help="a finished run; give several (same data, e.g. other pooling) to search over them too")
    p.add_argument("--config", help="YAML whose `tune` section (and any other) overrides the run's settings")
    p.add_argument("--num-samples", type=int, help="trials")
    p.add_argument("--name", help="search name (default <run name>-tune); the same name resumes")
    p.add_argument("--out", help="output URI (default: <parent of the first run>/<name>)")
    p.add_argument("--max-concurrent", type=int)
    p.add_argument("--cpus-per-trial", type=float)
    p.add_argument("--folds", type=int)
    p.add_argument("--repeats", type=int)
    p.add_argument("--ray-address")
    _add_set(p)
    return p


def tune_main(argv: list[str] | None = None, prog: str = "lens-ray tune") -> dict:
    args = tune_parser(prog).parse_args(argv)
    from lens_ray.run_inputs import load_run_inputs
    log = lambda m: print(m, flush=True)  # noqa: E731
    sources = [load_run_inputs(uri) for uri in args.from_run]
    for s in sources:
        log(f"run {s.uri}: {len(s.seed_pairs)} seed pairs, embeddings {s.settings}")
    base = sources[0].config
    base.ray_address = None              # where the run ran says nothing about where the search runs
    cfg = load_config(args.config, _overrides(args, TUNE_FLAGS), base=base)
    name = cfg.tune.name or f"{cfg.name}-tune"
    out = args.out or join_uri(sources[0].uri.rsplit("/", 1)[0], name)
    from lens_ray.ray_session import connect
    from lens_ray.ray_tune import search
    connect(cfg.ray_address)
    return search(cfg, sources, out, log=log)


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
    commands = {"run": run_main, "tune": tune_main, "score": score_main}
    if not argv or argv[0] not in commands:
        raise SystemExit("usage: lens-ray {run,tune,score} [options]   (lens-ray run --help)")
    commands[argv[0]](argv[1:])


if __name__ == "__main__":
    main()
