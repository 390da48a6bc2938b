"""The `lens-ray` command: one sub-command per job (`lens-ray --help` lists them with their purpose). The Ray
jobs are also `python jobs/<command>.py` (what `ray job submit` runs; `jobs/full.py` is `jobs/run.py`).

Settings: defaults <- a YAML file (`--config`) <- a search's pick (`run --from-search`) <- flags and
`--set section.field=value`, which reaches any field. `FLAGS` says which flag of which command sets which
config field; the field itself holds the help, choices and bounds (config.py). Options that are not
settings (`--from-run`, `--run`, `--out`, `--wait`, ...) are declared once, in `OPTIONS`; `OPTIONS_OF` says which
command takes which. A user error ends as one
line on stderr and exit status 2 (`--debug` shows the traceback); Ctrl-C ends as one line saying what was kept.
"""
from __future__ import annotations

import argparse
import json
import os
import signal
import sys
import threading
from dataclasses import dataclass
from typing import Callable

from lens_ray import __version__
from lens_ray.config import ConfigError, LensConfig, apply_overrides, describe, join_uri, load_config, walk

# flag -> config field, per command (the field's help, choices and bounds describe the flag)
RAY = {"--ray-address": "ray_address"}
FLAGS: dict[str, dict[str, str]] = {
    "run": {"--data": "data.data", "--eval-data": "data.eval_data", "--bon-data": "data.bon_data",
            "--seed-pairs": "data.seed_pairs", "--eval-pairs": "data.eval_pairs", "--bon-prompts": "data.bon_prompts",
            "--model": "embed.model", "--heads": "reward.heads", "--methods": "methods", "--factors": "factors",
            "--seeds": "seeds", "--name": "name", "--storage": "storage", "--out": "out", "--cache": "cache", **RAY},
    "search": {"--name": "search.name", "--num-samples": "search.num_samples", "--folds": "search.folds",
               "--repeats": "search.repeats", "--max-concurrent": "resources.tune_max_concurrent",
               "--cpus-per-trial": "resources.tune_cpus_per_trial", **RAY},
    "synthesize": {"--pairs": "scale.pairs", "--mode": "scale.mode", "--method": "scale.method", "--k": "scale.k",
                   "--seed": "scale.seed", "--shard-pairs": "scale.shard_pairs", "--dtype": "scale.dtype",
                   "--workers": "resources.synth_actors", "--cpus-per-worker": "resources.synth_cpus_per_actor",
                   **RAY},
    "curve": {"--name": "curve.name", "--sizes": "curve.sizes", "--heads": "reward.heads", "--methods": "methods",
              "--factors": "factors", "--seeds": "seeds", **RAY},
    "serve": {"--head": "serve.head", "--host": "serve.host", "--port": "serve.port", "--replicas": "serve.replicas",
              "--max-batch-size": "serve.max_batch_size", "--batch-wait-ms": "serve.batch_wait_ms",
              "--normalize": "serve.normalize", "--token-env": "serve.token_env", **RAY},
    "batch-score": {"--head": "serve.head", "--normalize": "serve.normalize", **RAY},
    "export": {"--head": "serve.head", "--normalize": "serve.normalize"},
    "score": {"--head": "serve.head", "--normalize": "serve.normalize"},
}

# options that are not settings, declared once
OPTIONS: dict[str, dict] = {
    "--from-run": {"metavar": "RUN_URI", "required": True, "help": "a finished run (its output URI)"},
    "--run": {"metavar": "RUN_URI", "required": True, "help": "a finished run (its output URI)"},
    "--out": {"metavar": "URI", "help": "output URI"},
    "--wait": {"action": "store_true", "help": "if another job holds the output folder, wait for it"},
    "--overwrite": {"action": "store_true", "help": "write into an output folder that holds other files"},
    "--yes": {"action": "store_true", "help": "write an output larger than 50 GiB (its estimate is printed first)"},
    "--from-search": {"metavar": "SEARCH_URI", "aliases": ("--from-tune",), "help": "use the settings a search "
                      "(lens-ray search) chose; flags and --set still override them (--from-tune: its earlier name)"},
    "--data": {"required": True, "help": "data URI, any format the pipeline ingests"},
    "--best-of": {"type": int, "metavar": "N", "help": "Best-of-N over each prompt's first N responses"},
    "--prompt": {"help": "a prompt (one user turn)"},
    "--response": {"help": "the response to score"},
    "--input": {"metavar": "FILE", "help": "jsonl with prompt and response fields; prints one JSON line per row"},
}
# which of them each command takes, with its own wording where it differs
OPTIONS_OF: dict[str, dict[str, dict]] = {
    "run": {"--from-search": {}, "--wait": {}},
    "search": {"--from-run": {"action": "append", "help": "a finished run; give several (same data, e.g. other "
                            "pooling) to search over them too"},
             "--out": {"help": "output URI (default: <parent of the first run>/<name>)"}, "--wait": {}},
    "synthesize": {"--from-run": {}, "--out": {"required": True, "help": "output URI of the pair set"},
                   "--wait": {}, "--overwrite": {}, "--yes": {}},
    "curve": {"--from-run": {}, "--out": {"help": "output URI (default: <parent of the run>/<name>)"}, "--wait": {}},
    "serve": {"--run": {}},
    "batch-score": {"--run": {}, "--data": {}, "--out": {"required": True, "help": "output URI (rewards.parquet, "
                                                         "summary.json)"}, "--best-of": {}, "--wait": {}},
    "export": {"--run": {}, "--out": {"required": True, "metavar": "DIR", "help": "a local folder: new, empty, or an "
                                      "earlier export (replaced)"}, "--overwrite": {}},
    "score": {"--run": {}, "--prompt": {}, "--response": {}, "--input": {}},
}


def parser(command: str, prog: str | None = None) -> argparse.ArgumentParser:
    """A command's parser: its setting flags (FLAGS), its other options (OPTIONS_OF), --config, --set, --debug."""
    p = argparse.ArgumentParser(prog=prog or f"lens-ray {command}", description=COMMANDS[command].purpose)
    if command == "settings":
        return p
    p.add_argument("--config", help="YAML file with the sections of lens_ray/config.py (lens-ray settings lists them)")
    fields = {path: (f, value) for path, f, value in walk(LensConfig())}
    for flag, path in FLAGS.get(command, {}).items():
        f, value = fields[path]
        switch = {"nargs": "?", "const": "true"} if str(f.type).startswith("bool") else {}   # --flag alone: on
        p.add_argument(flag, dest=path, default=None, metavar=flag[2:].upper().replace("-", "_"),
                       help=f"{describe(f)} (--set {path}; default {value!r})", **switch)
    for flag, override in OPTIONS_OF.get(command, {}).items():
        spec = {**OPTIONS[flag], **override}
        p.add_argument(flag, *spec.pop("aliases", ()), **spec)
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                   help="any config field, e.g. --set vae.beta=0.5 --set synth.noise_var=0.05")
    p.add_argument("--debug", action="store_true", help="show tracebacks of errors")
    return p


def overrides(args: argparse.Namespace, command: str) -> dict:
    """The flags given and every --set, as dotted overrides."""
    given = vars(args)
    out = {path: given[path] for path in FLAGS.get(command, {}).values() if given.get(path) is not None}
    for item in args.set:
        key, sep, value = item.partition("=")
        if not sep:
            raise ConfigError(f"--set {item!r}: expected KEY=VALUE")
        out[key.strip()] = value.strip()
    return out


def _settings(args: argparse.Namespace, command: str, base: LensConfig | None = None) -> LensConfig:
    """base (default: the defaults) <- YAML <- flags and --set; `ray_address` of a run read back says nothing
    about where this command runs."""
    if base is not None:
        base.ray_address = None
    return load_config(args.config, overrides(args, command), base=base)


def _on_ray(cfg: LensConfig, out: str, what: str, wait: bool):
    from lens_ray.pipelines.job import on_ray
    return on_ray(cfg, out, what, wait, log=_print)


# ------------------------------------------------------------------ the jobs

def run_parser(prog: str = "lens-ray run") -> argparse.ArgumentParser:
    return parser("run", prog)


def config_from_args(args: argparse.Namespace) -> LensConfig:
    """defaults <- YAML <- a search's chosen settings (--from-search) <- flags and --set."""
    cfg = load_config(args.config)
    if getattr(args, "from_search", None):
        from lens_ray.store.search_results import apply_tuned, read_best
        apply_tuned(cfg, read_best(args.from_search))
        cfg.from_search = args.from_search
    return apply_overrides(cfg, overrides(args, "run"))


def run_main(argv: list[str] | None = None, prog: str = "lens-ray run") -> dict:
    args = run_parser(prog).parse_args(argv)
    from lens_ray.pipelines.job import run_job
    return run_job(config_from_args(args), log=_print, wait=args.wait)


def search_main(argv: list[str] | None = None, prog: str = "lens-ray search") -> dict:
    args = parser("search", prog).parse_args(argv)
    from lens_ray.data.finished_run import load_run_inputs
    from lens_ray.pipelines.search import open_search, search
    from lens_ray.store.storage import Storage
    sources = [load_run_inputs(uri) for uri in args.from_run]
    for s in sources:
        _print(f"run {s.uri}: {len(s.seed_pairs)} seed pairs, embeddings {s.settings}")
    cfg = _settings(args, "search", sources[0].config)
    name = cfg.search_name
    out = args.out or join_uri(sources[0].uri.rsplit("/", 1)[0], name)
    open_search(cfg, sources, Storage(out))           # other data or other settings: refused before Ray starts
    with _on_ray(cfg, out, f"search {name}", args.wait):
        return search(cfg, sources, out, log=_print)


def synthesize_main(argv: list[str] | None = None, prog: str = "lens-ray synthesize"):
    args = parser("synthesize", prog).parse_args(argv)
    from lens_ray.data.finished_run import FinishedRun
    from lens_ray.pipelines.synthesize import plan, synthesize_pairs
    run = FinishedRun.open(args.from_run)
    cfg = _settings(args, "synthesize", run.config)                  # the run's own synth settings
    plan(cfg, run, args.out, args.yes, args.overwrite, log=_print)     # what it will write, checked before Ray
    with _on_ray(cfg, args.out, "synthesis", args.wait):
        return synthesize_pairs(cfg, run, args.out, log=_print)


def curve_main(argv: list[str] | None = None, prog: str = "lens-ray curve") -> dict:
    args = parser("curve", prog).parse_args(argv)
    from lens_ray.data.finished_run import load_run_inputs
    from lens_ray.pipelines.curve import check_sizes, run_curve
    source = load_run_inputs(args.from_run)
    cfg = _settings(args, "curve", source.config)
    check_sizes(cfg, len(source.seed_pairs))
    name = cfg.curve_name
    out = args.out or join_uri(source.uri.rsplit("/", 1)[0], name)
    with _on_ray(cfg, out, f"curve {name}", args.wait):
        return run_curve(cfg, source, out, log=_print)


def serve_main(argv: list[str] | None = None, prog: str = "lens-ray serve") -> None:
    args = parser("serve", prog).parse_args(argv)
    cfg = _settings(args, "serve")
    from lens_ray.distributed.serving import serve_run
    serve_run(args.run, cfg, log=_print)


def batch_score_main(argv: list[str] | None = None, prog: str = "lens-ray batch-score") -> dict:
    args = parser("batch-score", prog).parse_args(argv)
    if args.best_of is not None and args.best_of < 1:
        raise ConfigError(f"--best-of: must be >= 1, got {args.best_of}")
    cfg = _settings(args, "batch-score")
    from lens_ray.data.finished_run import FinishedRun
    from lens_ray.pipelines.batch_score import batch_score
    run = FinishedRun.open(args.run)
    run.head(cfg.serve.head)                          # a missing or foreign head fails here, before Ray starts
    with _on_ray(cfg, args.out, "batch scoring", args.wait):
        return batch_score(cfg, run, args.data, args.out, args.best_of, log=_print)


def export_main(argv: list[str] | None = None, prog: str = "lens-ray export") -> str:
    args = parser("export", prog).parse_args(argv)
    cfg = _settings(args, "export")
    from lens_ray.scoring.export import check_target, export
    from lens_ray.scoring.reward_model import RewardModel
    check_target(args.out, args.overwrite)
    folder, form = export(RewardModel.from_run(args.run, cfg.serve.head), args.out, cfg.serve.normalize)
    if form == "standard":
        _print(f"exported to {folder} as a standard sequence classifier: "
               f"AutoModelForSequenceClassification.from_pretrained({folder!r}) (no custom code; vLLM, TRL, "
               "RewardBench, OpenRLHF and verl load it as it is)")
    else:
        _print(f"exported to {folder} as model type lens_reward (this head has no standard architecture): "
               f"AutoModelForSequenceClassification.from_pretrained({folder!r}, trust_remote_code=True)")
    return folder


# ------------------------------------------------------------------ in this process: score, settings

def score_main(argv: list[str] | None = None, prog: str = "lens-ray score") -> None:
    args = parser("score", prog).parse_args(argv)
    texts = args.prompt is not None or args.response is not None
    if args.input is not None and texts:
        raise ConfigError("give --prompt and --response, or --input FILE, not both")
    if args.input is None and (args.prompt is None or args.response is None):
        raise ConfigError("give --prompt and --response, or --input FILE")
    cfg = _settings(args, "score")
    rows = _score_rows(args.input) if args.input else [{"prompt": args.prompt, "response": args.response}]
    from lens_ray.scoring.reward_model import RewardModel
    rm = RewardModel.from_run(args.run, cfg.serve.head)
    print(f"scoring {len(rows)} row(s) with head {rm.head_name} of {rm.run_uri}", file=sys.stderr, flush=True)
    if not rows:
        return
    rewards = rm.score([r["prompt"] for r in rows], [r["response"] for r in rows], normalize=cfg.serve.normalize)
    if args.input is None:
        print(f"{float(rewards[0]):.4f}")
        return
    for row, r in zip(rows, rewards):
        print(json.dumps({**row, "reward": float(r)}))


def _score_rows(path: str) -> list[dict]:
    from lens_ray.core.pairs import DataError
    try:
        with open(path, encoding="utf-8") as fh:
            lines = [line for line in fh if line.strip()]
    except (OSError, UnicodeDecodeError) as exc:
        raise DataError(f"{path}: cannot read ({exc})") from exc
    rows = []
    for i, line in enumerate(lines):
        try:
            row = json.loads(line)
        except json.JSONDecodeError as exc:
            raise DataError(f"{path}: row {i}: not JSON ({exc.msg})") from exc
        for fld in ("prompt", "response"):
            if not isinstance(row, dict) or not isinstance(row.get(fld), (str, list)):
                raise DataError(f"{path}: row {i}: field '{fld}' missing or not text")
        rows.append(row)
    return rows


def settings_main(argv: list[str] | None = None, prog: str = "lens-ray settings") -> None:
    parser("settings", prog).parse_args(argv)
    for path, f, value in walk(LensConfig()):
        print(f"{path} = {value!r}\n    {describe(f)}")


# ------------------------------------------------------------------ entry

@dataclass(frozen=True)
class Command:
    purpose: str
    main: Callable


ALIASES = {"tune": "search"}      # earlier names of commands, still accepted (jobs/tune.py)
COMMANDS: dict[str, Command] = {
    "run": Command("LENS end to end: embed, fit a VAE, synthesize pairs, train and compare reward models, on Ray.",
                   run_main),
    "search": Command("Search of the synthesis settings on Ray Tune, on a finished run's embeddings (never "
                      "re-embeds), k-fold paired against original.", search_main),
    "synthesize": Command("N synthetic pairs (up to millions) from a finished run's VAE and embeddings, streamed to "
                          "storage with Ray Data; a re-run after a kill writes only the missing shards.",
                          synthesize_main),
    "curve": Command("Learning curve: every method x head at several seed-pair counts (nested subsets by whole "
                     "prompts), from a finished run's embeddings, one held-out evaluation.", curve_main),
    "serve": Command("Serve a run's reward model on Ray Serve until interrupted: POST /get_reward (OpenRLHF), "
                     "POST /score, GET /healthz, GET /info.", serve_main),
    "batch-score": Command("Score every (prompt, response) of a data set with a run's head on the cluster: pairs -> "
                           "rewards and accuracy; scored completions -> rewards and the Best-of-N pick.",
                           batch_score_main),
    "export": Command("Write a run's reward model as a Hugging Face folder (AutoModelForSequenceClassification, "
                      "trust_remote_code=True).", export_main),
    "score": Command("Score (prompt, response) texts with a run's reward model, in this process.", score_main),
    "settings": Command("Every setting: its dotted name (for --set and YAML), default and description.",
                        settings_main),
}


def usage() -> str:
    width = max(map(len, COMMANDS))
    return ("usage: lens-ray COMMAND [options]   (lens-ray COMMAND --help for its options; lens-ray --version)\n\n"
            "commands:\n"
            + "\n".join(f"  {name:<{width}}  {c.purpose}" for name, c in COMMANDS.items())
            + "\n\nearlier names, still accepted: " + ", ".join(f"{a} ({c})" for a, c in ALIASES.items()))


def user_errors() -> tuple[type[Exception], ...]:
    """Errors that a user's input causes and one line explains (anything else is a bug: a traceback)."""
    from lens_ray.core.pairs import DataError
    from lens_ray.data.embed import ModelLoadError
    from lens_ray.store.storage import StorageError
    return ConfigError, DataError, ModelLoadError, StorageError, FileNotFoundError, PermissionError, FloatingPointError


def main(argv: list[str] | None = None, prog: str | None = None) -> None:
    """`lens-ray COMMAND ...`, or a job script's entry (prog names the script; argv starts with the command)."""
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] in ("-h", "--help"):
        print(usage())
        raise SystemExit(0 if argv else 2)
    if argv[0] in ("-V", "--version"):
        print(version())
        raise SystemExit(0)
    command, rest = ALIASES.get(argv[0], argv[0]), argv[1:]
    if command not in COMMANDS:
        print(f"lens-ray: unknown command {argv[0]!r}\n{usage()}", file=sys.stderr)
        raise SystemExit(2)
    prog = prog or f"lens-ray {command}"
    if threading.current_thread() is threading.main_thread():
        signal.signal(signal.SIGTERM, _terminated)    # what a scheduler or `kill` sends: ends as Ctrl-C does
    try:
        COMMANDS[command].main(rest, prog=prog)
    except SystemExit:
        raise
    except KeyboardInterrupt as stop:
        why, code = ("terminated", 143) if isinstance(stop, Terminated) else ("interrupted", 130)
        print(f"{prog}: {why}; everything committed so far is kept, and the same command resumes from it",
              file=sys.stderr, flush=True)
        raise SystemExit(code) from None
    except user_errors() as exc:
        if "--debug" in rest:
            raise
        print(f"{prog}: error: {exc}", file=sys.stderr, flush=True)
        raise SystemExit(2) from None


class Terminated(KeyboardInterrupt):
    """SIGTERM, raised where the main thread is, so every command stops as on Ctrl-C (a server says "stopped")."""


def _terminated(signum, frame) -> None:
    raise Terminated()


def version() -> str:
    """lens-ray's version and the versions of what it runs on (what a bug report needs)."""
    import platform
    from importlib.metadata import PackageNotFoundError
    from importlib.metadata import version as installed
    parts = []
    for name in ("ray", "torch", "transformers"):
        try:
            parts.append(f"{name} {installed(name)}")
        except PackageNotFoundError:
            parts.append(f"{name} not installed")
    return f"lens-ray {__version__} ({', '.join(parts)}, python {platform.python_version()})"


def job(command: str, script: str) -> None:
    """A `jobs/<name>.py` entry: `lens-ray <command>` with the script's arguments, named after the script."""
    main([command, *sys.argv[1:]], prog=f"jobs/{os.path.basename(script)}")


def _print(message: str) -> None:
    print(message, flush=True)


if __name__ == "__main__":
    main()
