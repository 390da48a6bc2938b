"""The learning curve (`lens-ray curve`, `jobs/curve.py`): every method x head at several seed-pair counts,
from a finished run's embeddings (never re-embedding), one held-out evaluation.

Composes the pure task (`core.curve.task_rows`) with the Ray layer (`distributed.trials.curve_trials`: one
Tune trial per (size, seed) task across the cluster). Each finished task writes its rows to
<out>/tasks/<size>-s<seed>.json (atomic); a re-run with the same name runs only the tasks without a readable
file, so a killed curve resumes (a curve written before this layout kept them in cells/, still read).
Another curve definition on the same output is refused (manifest.json); resources never enter it.

<out> holds: manifest.json, tasks/, curve.json (rows, summary, verdicts), report.html, ray_tune/ (Tune's
folders: per-trial result.json and TensorBoard events).
"""
from __future__ import annotations

import time

from lens_ray.config import ConfigError, LensConfig
from lens_ray.core.curve import summarize_curve, verdicts
from lens_ray.core.progress import Log
from lens_ray.data.finished_run import RunInputs
from lens_ray.distributed.trials import curve_trials
from lens_ray.pipelines import report_html
from lens_ray.store.storage import Manifest, Storage, StorageError

TASKS, LEGACY_TASKS = "tasks", "cells"


def _task_name(label: str, seed: int) -> str:
    return f"{label}-s{seed}"


def read_tasks(out: Storage) -> dict[str, list[dict]]:
    """Task name -> its rows, for every readable task file."""
    found = {}
    for folder in (LEGACY_TASKS, TASKS):
        for name in out.listdir(folder):
            if name.endswith(".json"):
                try:
                    found[name[:-len(".json")]] = out.read_json(f"{folder}/{name}")
                except (StorageError, ValueError):
                    continue                                     # unreadable: the task runs again
    return found


def check_sizes(cfg: LensConfig, n: int) -> None:
    """Before Ray starts: every size fits the run's n seed pairs, and none is given twice ('all' is n)."""
    too_big = [s for s in cfg.curve.sizes if s != "all" and int(s) > n]
    if too_big:
        raise ConfigError(f"curve.sizes: {', '.join(too_big)} more than the run's {n} seed pairs; give sizes up to "
                          f"{n}, or 'all'")
    if "all" in cfg.curve.sizes and str(n) in cfg.curve.sizes:
        raise ConfigError(f"curve.sizes: 'all' and {n} are the same size (the run has {n} seed pairs)")


def run_curve(cfg: LensConfig, source: RunInputs, out_uri: str, log: Log = print) -> dict:
    """Run (or resume) every task of the curve; write curve.json and report.html; return the curve."""
    out = Storage(out_uri)
    name = cfg.curve_name
    base = cfg.to_dict()
    Manifest.open(out, {"name": name, "source": source.uri, "curve": base["curve"], "seeds": cfg.seeds,
                        **{k: base[k] for k in ("methods", "factors", "data", "embed", "vae", "synth", "reward")}}
                  ).save()
    tasks = [(label, seed) for label in cfg.curve.sizes for seed in range(cfg.seeds)]
    done = read_tasks(out)
    todo = [t for t in tasks if _task_name(*t) not in done]
    res = cfg.resources
    log(f"lens-ray curve '{name}' -> {out.uri}: sizes {', '.join(cfg.curve.sizes)} x {cfg.seeds} seeds = "
        f"{len(tasks)} tasks ({len(tasks) - len(todo)} done before); methods {', '.join(cfg.methods)}; heads "
        f"{', '.join(cfg.reward.heads)}; {res.tune_max_concurrent} at once, {res.tune_cpus_per_trial} CPU each")
    t0 = time.time()
    if todo:
        curve_trials(cfg, source, out, TASKS, name, todo, log)
    finished = read_tasks(out)
    missing = [_task_name(*t) for t in tasks if _task_name(*t) not in finished]
    if missing:
        raise RuntimeError(f"curve tasks {missing} produced no rows (see the trials under {out.uri}/ray_tune)")
    rows = [r for t in tasks for r in finished[_task_name(*t)]]
    summary = summarize_curve(rows)
    curve = {"name": name, "source": source.uri, "model": cfg.embed.model, "embedding_dim": source.emb.dim,
             "seed_pairs": len(source.seed_pairs), "eval_pairs": int(len(source.emb.eval_pos)),
             "bon_prompts": 0 if source.emb.bon is None else int(source.emb.bon.shape[0]),
             "sizes": cfg.curve.sizes, "rows": rows, "summary": summary,
             "verdicts": {m: verdicts(rows, summary, m) for m in ("accuracy", "bon_gold")
                          if any(r[m] is not None for r in rows)},
             "seconds_this_attempt": round(time.time() - t0, 1), "config": base}
    out.write_json("curve.json", curve)                    # the data first: a report never loses results
    out.write_bytes("report.html", report_html.render_curve(curve).encode())
    for row in report_html.curve_verdict_rows(curve)[1]:
        log(f"  {row[0]:>5} pairs: best head {row[1]} {row[2]}; over mean_diff {row[3]}; best augmentation "
            f"{row[4]} {row[5]}" + (" (beyond noise)" if row[6] == "yes" else ""))
    log(f"artifacts: {out.uri}  (curve.json, report.html, tasks/, ray_tune/)")
    return curve


