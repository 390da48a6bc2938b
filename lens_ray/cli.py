"""The `lens-ray` command: run (the main job; also `python jobs/full.py`), tune (the search; also
`python jobs/tune.py`), synthesize (pairs at scale; also `python jobs/synthesize.py`), curve (the learning
curve; also `python jobs/curve.py`), score, settings.

Flags come from the config fields (`config.setting(..., cli=...)`), with the field's own help; defaults
<- a YAML file (`--config`) <- flags and `--set section.field=value`, which reaches any field.
A user error ends as one line on stderr and exit status 2 (`--debug` shows the traceback).
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from typing import Callable

from lens_ray.config import ConfigError, LensConfig, apply_overrides, describe, join_uri, load_config, walk


def _flag(f, command: str) -> str | None:
    cli = f.metadata.get("cli") or ()
    if isinstance(cli, dict):
        return cli.get(command)
    return "--" + f.name.replace("_", "-") if command in cli else None


def parser(command: str, description: str, prog: str | None = None) -> argparse.ArgumentParser:
    """A command's parser: its setting flags (from the config fields), --config, --set and --debug."""
    p = argparse.ArgumentParser(prog=prog or f"lens-ray {command}", description=description)
    p.add_argument("--config", help="YAML file with the sections of lens_ray/config.py (lens-ray settings lists them)")
    for path, f, value in walk(LensConfig()):
        flag = _flag(f, command)
        if flag:
            switch = {"nargs": "?", "const": "true"} if str(f.type).startswith("bool") else {}   # --flag alone: on
            p.add_argument(flag, dest=path, default=None, metavar=flag[2:].upper().replace("-", "_"),
                           help=f"{describe(f)} (--set {path}; default {value!r})", **switch)
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                   help="any config field, e.g. --set vae.beta=0.5 --set synth.noise_var=0.05")
    p.add_argument("--debug", action="store_true", help="show tracebacks of errors")
    return p


def overrides(args: argparse.Namespace, command: str) -> dict:
    """The flags given and every --set, as dotted overrides."""
    out = {path: vars(args)[path] for path, f, _ in walk(LensConfig()) if _flag(f, command) and
           vars(args).get(path) is not None}
    for item in args.set:
        key, sep, value = item.partition("=")
        if not sep:
            raise ConfigError(f"--set {item!r}: expected KEY=VALUE")
        out[key.strip()] = value.strip()
    return out


# ------------------------------------------------------------------ run

def run_parser(prog: str = "lens-ray run") -> argparse.ArgumentParser:
    p = parser("run", "LENS: embed, fit a VAE, synthesize pairs, train and compare reward models, on Ray.", prog)
    p.add_argument("--from-tune", metavar="SEARCH_URI",
                   help="use the settings a search (jobs/tune.py) chose; flags and --set still override them")
    p.add_argument("--wait", action="store_true", help="if another job holds the output folder, wait for it")
    return p


def config_from_args(args: argparse.Namespace) -> LensConfig:
    """defaults <- YAML <- a search's chosen settings (--from-tune) <- flags and --set."""
    cfg = load_config(args.config)
    if getattr(args, "from_tune", None):
        from lens_ray.store.search_results import apply_tuned, read_best
        apply_tuned(cfg, read_best(args.from_tune))
        cfg.from_tune = args.from_tune
    return apply_overrides(cfg, overrides(args, "run"))


def run_main(argv: list[str] | None = None, prog: str = "lens-ray run") -> dict:
    args = run_parser(prog).parse_args(argv)
    cfg = config_from_args(args)
    from lens_ray.pipelines.preflight import preflight
    from lens_ray.store.lease import Lease
    from lens_ray.store.storage import Storage
    ds = preflight(cfg, log=_print)                 # before Ray starts: errors in seconds, not minutes
    with Lease(Storage(cfg.out_uri), what=f"run {cfg.name}").held(wait=args.wait, log=_print) as lease:
        from lens_ray.distributed.session import connect
        from lens_ray.pipelines.run import run
        connect(cfg.ray_address)
        return run(cfg, log=_print, ds=ds, guard=lease.ensure_held)


# ------------------------------------------------------------------ tune

def tune_parser(prog: str = "lens-ray tune") -> argparse.ArgumentParser:
    p = parser("tune", "Ray Tune search of the synthesis hyperparameters on a finished run's embeddings (never "
               "re-embeds), k-fold paired against original.", prog)
    p.add_argument("--from-run", action="append", required=True, metavar="RUN_URI",
                   help="a finished run; give several (same data, e.g. other pooling) to search over them too")
    p.add_argument("--out", help="output URI (default: <parent of the first run>/<name>)")
    p.add_argument("--wait", action="store_true", help="if another job holds the output folder, wait for it")
    return p


def tune_main(argv: list[str] | None = None, prog: str = "lens-ray tune") -> dict:
    args = tune_parser(prog).parse_args(argv)
    from lens_ray.data.finished_run import load_run_inputs
    sources = [load_run_inputs(uri) for uri in args.from_run]
    for s in sources:
        _print(f"run {s.uri}: {len(s.seed_pairs)} seed pairs, embeddings {s.settings}")
    base = sources[0].config
    base.ray_address = None              # where the run ran says nothing about where the search runs
    cfg = load_config(args.config, overrides(args, "tune"), base=base)
    name = cfg.tune.name or f"{cfg.name}-tune"
    out = args.out or join_uri(sources[0].uri.rsplit("/", 1)[0], name)
    from lens_ray.distributed.session import connect
    from lens_ray.pipelines.search import search
    with _leased(out, f"search {name}", args.wait):
        connect(cfg.ray_address)
        return search(cfg, sources, out, log=_print)


# ------------------------------------------------------------------ synthesize

def synthesize_main(argv: list[str] | None = None, prog: str = "lens-ray synthesize"):
    p = parser("synthesize", "N synthetic pairs (up to millions) from a finished run's VAE and embeddings, "
               "streamed to storage with Ray Data; a re-run after a kill writes only the missing shards.", prog)
    p.add_argument("--from-run", required=True, metavar="RUN_URI", help="a finished run's output URI")
    p.add_argument("--out", required=True, help="output URI of the pair set")
    p.add_argument("--wait", action="store_true", help="if another job holds the output folder, wait for it")
    args = p.parse_args(argv)
    from lens_ray.data.finished_run import FinishedRun
    run = FinishedRun.open(args.from_run)
    run.config.ray_address = None
    cfg = load_config(args.config, overrides(args, "synthesize"), base=run.config)   # the run's synth settings
    from lens_ray.distributed.session import connect
    from lens_ray.pipelines.synthesize import synthesize_pairs
    with _leased(args.out, "synthesis", args.wait):
        connect(cfg.ray_address)
        return synthesize_pairs(cfg, run, args.out, log=_print)


def _leased(uri: str, what: str, wait: bool):
    """The output folder checked writable, then leased to this job (see lease.py)."""
    from lens_ray.pipelines.preflight import check_writable
    from lens_ray.store.lease import Lease
    from lens_ray.store.storage import Storage
    check_writable(Storage(uri))
    return Lease(Storage(uri), what=what).held(wait=wait, log=_print)


# ------------------------------------------------------------------ curve

def curve_main(argv: list[str] | None = None, prog: str = "lens-ray curve") -> dict:
    p = parser("curve", "Learning curve: every method x head at several seed-pair counts (nested subsets by whole "
               "prompts), from a finished run's embeddings (never re-embeds), one held-out evaluation.", prog)
    p.add_argument("--from-run", required=True, metavar="RUN_URI", help="a finished run")
    p.add_argument("--out", help="output URI (default: <parent of the run>/<name>)")
    p.add_argument("--wait", action="store_true", help="if another job holds the output folder, wait for it")
    args = p.parse_args(argv)
    from lens_ray.data.finished_run import load_run_inputs
    source = load_run_inputs(args.from_run)
    source.config.ray_address = None
    cfg = load_config(args.config, overrides(args, "curve"), base=source.config)
    name = cfg.curve.name or f"{cfg.name}-curve"
    out = args.out or join_uri(source.uri.rsplit("/", 1)[0], name)
    from lens_ray.distributed.session import connect
    from lens_ray.pipelines.curve import run_curve
    with _leased(out, f"curve {name}", args.wait):
        connect(cfg.ray_address)
        return run_curve(cfg, source, out, log=_print)


# ------------------------------------------------------------------ serve

def serve_main(argv: list[str] | None = None, prog: str = "lens-ray serve") -> None:
    p = parser("serve", "Serve a trained head on Ray Serve: POST /get_reward (OpenRLHF), POST /score, GET /healthz, "
               "GET /info. Runs until interrupted.", prog)
    p.add_argument("--run", required=True, metavar="RUN_URI", help="a finished run")
    args = p.parse_args(argv)
    cfg = load_config(args.config, overrides(args, "serve"))
    from ray import serve

    from lens_ray.distributed.serving import APP, build
    from lens_ray.distributed.session import connect
    app = build(args.run, cfg.serve)                       # a missing token variable fails before Ray starts
    connect(cfg.ray_address)
    serve.start(http_options={"host": cfg.serve.host, "port": cfg.serve.port})
    serve.run(app, name=APP, route_prefix="/", blocking=False)
    url = f"http://{cfg.serve.host}:{cfg.serve.port}"
    _print(f"serving {args.run} at {url}: POST /get_reward (OpenRLHF: --reward.remote_url {url}/get_reward), "
           "POST /score, GET /healthz, GET /info; Ctrl-C stops it")
    try:
        while True:
            time.sleep(3600)
    except KeyboardInterrupt:
        serve.shutdown()


# ------------------------------------------------------------------ batch scoring, export

def batch_score_main(argv: list[str] | None = None, prog: str = "lens-ray batch-score") -> dict:
    p = parser("batch-score", "Score every (prompt, response) of a data set with a run's head on the cluster's "
               "embedding actors: pairs -> rewards and accuracy; scored completions -> rewards and the Best-of-N "
               "pick per prompt with its gold score.", prog)
    p.add_argument("--run", required=True, metavar="RUN_URI", help="a finished run")
    p.add_argument("--data", required=True, help="data URI, any format the pipeline ingests")
    p.add_argument("--out", required=True, help="output URI (rewards.parquet, summary.json)")
    p.add_argument("--best-of", type=int, metavar="N", help="Best-of-N over each prompt's first N responses")
    p.add_argument("--wait", action="store_true", help="if another job holds the output folder, wait for it")
    args = p.parse_args(argv)
    if args.best_of is not None and args.best_of < 1:
        raise ConfigError(f"--best-of: must be >= 1, got {args.best_of}")
    cfg = load_config(args.config, overrides(args, "batch-score"))
    from lens_ray.distributed.session import connect
    from lens_ray.pipelines.batch_score import batch_score
    with _leased(args.out, "batch scoring", args.wait):
        connect(cfg.ray_address)
        return batch_score(cfg, args.run, args.data, args.out, args.best_of, log=_print)


def export_main(argv: list[str] | None = None, prog: str = "lens-ray export") -> str:
    p = parser("export", "Write a run's head and its LM as a Hugging Face folder that "
               "AutoModelForSequenceClassification.from_pretrained(DIR, trust_remote_code=True) loads.", prog)
    p.add_argument("--run", required=True, metavar="RUN_URI", help="a finished run")
    p.add_argument("--out", required=True, metavar="DIR", help="a local folder")
    args = p.parse_args(argv)
    cfg = load_config(args.config, overrides(args, "export"))
    from lens_ray.scoring.export import export
    from lens_ray.scoring.reward_model import RewardModel
    folder = export(RewardModel.from_run(args.run, cfg.serve.head), args.out)
    _print(f"exported to {folder}: AutoModelForSequenceClassification.from_pretrained({folder!r}, "
           "trust_remote_code=True)")
    return folder


# ------------------------------------------------------------------ score, settings

def score_main(argv: list[str] | None = None, prog: str = "lens-ray score") -> None:
    p = argparse.ArgumentParser(prog=prog, description="Score (prompt, response) texts with a trained head.")
    p.add_argument("--run", required=True, help="a finished run's output URI")
    p.add_argument("--head", help="head name under <run>/heads (default: best validation accuracy)")
    p.add_argument("--prompt")
    p.add_argument("--response")
    p.add_argument("--input", help="jsonl with prompt and response fields; prints one JSON line per row")
    p.add_argument("--debug", action="store_true", help="show tracebacks of errors")
    args = p.parse_args(argv)
    from lens_ray.scoring.reward_model import RewardModel
    if args.input is None and (args.prompt is None or args.response is None):
        raise ConfigError("give --prompt and --response, or --input FILE")
    rows = _score_rows(args.input) if args.input else None
    rm = RewardModel.from_run(args.run, args.head)
    if rows is None:
        print(f"{float(rm.score([args.prompt], [args.response])[0]):.4f}")
        return
    rewards = rm.score([r["prompt"] for r in rows], [r["response"] for r in rows])
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
    """Every setting: its dotted name (for --set and YAML), default and description."""
    argparse.ArgumentParser(prog=prog, description=settings_main.__doc__).parse_args(argv)
    for path, f, value in walk(LensConfig()):
        print(f"{path} = {value!r}\n    {describe(f)}")


# ------------------------------------------------------------------ entry

COMMANDS: dict[str, Callable] = {"run": run_main, "tune": tune_main, "synthesize": synthesize_main,
                                 "curve": curve_main, "serve": serve_main, "batch-score": batch_score_main,
                                 "export": export_main, "score": score_main, "settings": settings_main}


def user_errors() -> tuple[type[Exception], ...]:
    """Errors that a user's input causes and one line explains (anything else is a bug: a traceback)."""
    from lens_ray.core.pairs import DataError
    from lens_ray.data.embed import ModelLoadError
    from lens_ray.store.storage import StorageError
    return ConfigError, DataError, ModelLoadError, StorageError, FileNotFoundError, PermissionError, FloatingPointError


def main(argv: list[str] | None = None, prog: str | None = None) -> None:
    """`lens-ray COMMAND ...`, or a job script's entry (prog names the script; argv starts with the command)."""
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] not in COMMANDS:
        raise SystemExit(f"usage: lens-ray {{{','.join(COMMANDS)}}} [options]   (lens-ray run --help)")
    command, rest = argv[0], argv[1:]
    try:
        COMMANDS[command](rest, prog=prog or f"lens-ray {command}")
    except user_errors() as exc:
        if "--debug" in rest:
            raise
        print(f"{prog or 'lens-ray ' + command}: error: {exc}", file=sys.stderr, flush=True)
        raise SystemExit(2) from None


def _print(message: str) -> None:
    print(message, flush=True)


if __name__ == "__main__":
    main()
