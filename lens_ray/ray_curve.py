"""Ray Tune for the learning curve: one trial per (size, seed) task, across the cluster.

Composes the pure task (`curve.task_rows`) with scheduling, storage and resume only. Each finished task
writes its rows to <out>/cells/<size>-s<seed>.json (atomic); a re-run with the same name runs only the
tasks without a readable cells file, so a killed curve resumes. Another curve definition on the same
output is refused (manifest.json); resources never enter it.

<out> holds: manifest.json, cells/, curve.json (rows, summary, verdicts), report.html, ray_tune/ (Tune's
folders: per-trial result.json and TensorBoard events).
"""
from __future__ import annotations

import os
import time
from typing import Callable

import torch
from ray import tune
from ray.tune import RunConfig, TuneConfig, Tuner

from lens_ray import report_html
from lens_ray.config import LensConfig, config_from_dict
from lens_ray.curve import summarize_curve, task_rows, verdicts
from lens_ray.ray_train import quiet_train_logs
from lens_ray.run_inputs import RunInputs
from lens_ray.storage import Manifest, Storage, StorageError

Log = Callable[[str], None]
CELLS = "cells"


def _task_name(label: str, seed: int) -> str:
    return f"{label}-s{seed}"


def _trial(config: dict, base: dict, emb, groups: list[str], out_uri: str, threads: int) -> None:
    quiet_train_logs()
    torch.set_num_threads(threads)
    label, seed = config["task"]
    t0 = time.time()
    rows = task_rows(config_from_dict(base), emb, groups, label, seed)
    Storage(out_uri).write_json(f"{CELLS}/{_task_name(label, seed)}.json", rows)
    ok = [r["accuracy"] for r in rows if r["status"] == "ok"]
    tune.report({"rows": len(rows), "failed": len(rows) - len(ok), "seconds": time.time() - t0,
                 "best_accuracy": max(ok) if ok else None})


def read_cells(out: Storage) -> dict[str, list[dict]]:
    """Task name -> its rows, for every readable cells file."""
    found = {}
    for name in out.listdir(CELLS):
        if name.endswith(".json"):
            try:
                found[name[:-len(".json")]] = out.read_json(f"{CELLS}/{name}")
            except (StorageError, ValueError):
                continue                                     # unreadable: the task runs again
    return found


def run_curve(cfg: LensConfig, source: RunInputs, out_uri: str, log: Log = print) -> dict:
    """Run (or resume) every task of the curve; write curve.json and report.html; return the curve."""
    out = Storage(out_uri)
    name = cfg.curve.name or f"{cfg.name}-curve"
    base = cfg.to_dict()
    Manifest.open(out, {"name": name, "source": source.uri, "curve": base["curve"], "seeds": cfg.seeds,
                        **{k: base[k] for k in ("methods", "factors", "data", "embed", "vae", "synth", "reward")}}
                  ).save()
    tasks = [(label, seed) for label in cfg.curve.sizes for seed in range(cfg.seeds)]
    done = read_cells(out)
    todo = [t for t in tasks if _task_name(*t) not in done]
    res = cfg.resources
    log(f"lens-ray curve '{name}' -> {out.uri}: sizes {', '.join(cfg.curve.sizes)} x {cfg.seeds} seeds = "
        f"{len(tasks)} tasks ({len(tasks) - len(todo)} done before); methods {', '.join(cfg.methods)}; heads "
        f"{', '.join(cfg.reward.heads)}; {res.tune_max_concurrent} at once, {res.tune_cpus_per_trial} CPU each")
    t0 = time.time()
    if todo:
        run_tasks(cfg, source, out, name, todo, log)
    cells = read_cells(out)
    missing = [_task_name(*t) for t in tasks if _task_name(*t) not in cells]
    if missing:
        raise RuntimeError(f"curve tasks {missing} produced no rows (see the trials under {out.uri}/ray_tune)")
    rows = [r for t in tasks for r in cells[_task_name(*t)]]
    summary = summarize_curve(rows)
    curve = {"name": name, "source": source.uri, "model": cfg.embed.model, "embedding_dim": source.emb.dim,
             "seed_pairs": len(source.seed_pairs), "eval_pairs": int(len(source.emb.eval_pos)),
             "bon_prompts": 0 if source.emb.bon is None else int(source.emb.bon.shape[0]),
             "sizes": cfg.curve.sizes, "rows": rows, "summary": summary,
             "verdicts": {m: verdicts(rows, summary, m) for m in ("accuracy", "bon_gold")
                          if any(r[m] is not None for r in rows)},
             "seconds_this_attempt": round(time.time() - t0, 1), "config": base}
    out.write_bytes("report.html", report_html.render_curve(curve).encode())
    out.write_json("curve.json", curve)
    for v in curve["verdicts"]["accuracy"]:
        log(f"  {v['size']:>5} pairs: best head {v['best_head']} {v['original']:.3f}; over mean_diff "
            f"{v['over_mean_diff']:+.3f}; best augmentation {v['best_augmentation']} {v['gain']:+.3f} ± "
            f"{v['gain_se']:.3f}" + (" (beyond noise)" if v["augmentation_pays"] else ""))
    log(f"artifacts: {out.uri}  (curve.json, report.html, cells/, ray_tune/)")
    return curve


def run_tasks(cfg: LensConfig, source: RunInputs, out: Storage, name: str, todo: list[tuple[str, int]],
              log: Log) -> None:
    """The missing tasks as Tune trials, at most resources.tune_max_concurrent at once."""
    res = cfg.resources
    trial = tune.with_parameters(_trial, base=cfg.to_dict(), emb=source.emb, groups=source.groups, out_uri=out.uri,
                                 threads=max(1, int(res.tune_cpus_per_trial)))
    store = out.child("ray_tune")
    if store.protocol == "file":
        os.makedirs(store.path(), exist_ok=True)
    tuner = Tuner(tune.with_resources(trial, {"cpu": res.tune_cpus_per_trial}),
                  param_space={"task": tune.grid_search(todo)},
                  tune_config=TuneConfig(max_concurrent_trials=res.tune_max_concurrent),
                  run_config=RunConfig(name=f"{name}-{len(store.listdir())}", storage_path=store.path(),
                                       storage_filesystem=store.fs, verbose=0,
                                       failure_config=tune.FailureConfig(max_failures=res.train_max_failures)))
    results = tuner.fit()
    for r in results:
        if r.error:
            log(f"  task {r.config.get('task')} failed: {str(r.error).splitlines()[0]}")
