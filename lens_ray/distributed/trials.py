"""Ray Tune: the search's trials and the learning curve's tasks across the cluster, and Ray tasks for the
search's test rows. Only scheduling, storage, resume and fault handling live here: what a trial computes is
`core.search` (the k-fold paired units) and `core.curve` (one (size, seed) task).

Both use one Tune setup (`_tune`): CPUs per trial, at most `resources.tune_max_concurrent` at once, Tune's
folders under <out>/ray_tune/<name>-<attempt> (TensorBoard events, result.json, checkpoints), a restarted
trial (FailureConfig) goes on from its last checkpoint.
"""
from __future__ import annotations

import functools
import json
import os
import tempfile
import time
from typing import Any, Callable

import ray
import torch
from ray import tune
from ray.tune import Checkpoint, FailureConfig, RunConfig, TuneConfig, Tuner
from ray.tune.schedulers import ASHAScheduler
from ray.tune.search import ConcurrencyLimiter
from ray.tune.search.optuna import OptunaSearch

from lens_ray.config import LensConfig, ResourcesConfig, config_from_dict
from lens_ray.core.curve import task_rows
from lens_ray.core.pairs import kfold_by_group
from lens_ray.core.progress import Log
from lens_ray.core.search import apply_point, describe_point, paired_unit, suggest, summarize_units, units
from lens_ray.data.finished_run import RunInputs
from lens_ray.distributed.training import quiet_train_logs
from lens_ray.store.search_results import TRIALS
from lens_ray.store.storage import Storage

UNIT_FIELDS = ("repeat", "fold", "accuracy", "accuracy_original", "delta")


def _threads(res: ResourcesConfig) -> int:
    return max(1, int(res.tune_cpus_per_trial))


def _tune(trial: Callable, res: ResourcesConfig, store: Storage, name: str, tune_config: TuneConfig,
          param_space: dict | None = None, callbacks: list | None = None) -> tune.ResultGrid:
    """The one Tune setup of a search or a curve: `trial` (already holding its parameters) on
    resources.tune_cpus_per_trial CPUs, its folders in a new attempt folder under `store`."""
    store.make_folder()
    tuner = Tuner(tune.with_resources(trial, {"cpu": res.tune_cpus_per_trial}), param_space=param_space,
                  tune_config=tune_config,
                  run_config=RunConfig(name=f"{name}-{len(store.listdir())}", storage_path=store.path(),
                                       storage_filesystem=store.fs, verbose=0, callbacks=callbacks,
                                       failure_config=FailureConfig(max_failures=res.train_max_failures)))
    return tuner.fit()


# ------------------------------------------------------------------ the search

def _search_trial(point: dict, base: dict, sources: list, threads: int) -> None:
    """One trial: its (repeat, fold) units in turn, a report and a checkpoint after each (ASHA's rungs)."""
    quiet_train_logs()                        # one "checkpoint created" line per unit is noise
    torch.set_num_threads(threads)
    cfg, method, factor, src = apply_point(config_from_dict(base), point)
    pos, neg, groups = sources[src]
    t = cfg.search
    folds = kfold_by_group(groups, t.folds, seed=cfg.data.split_seed)
    rows: list[dict] = []
    ckpt = tune.get_checkpoint()
    if ckpt is not None:                      # a restarted trial (FailureConfig) goes on from its last unit
        with ckpt.as_directory() as d, open(os.path.join(d, "units.json")) as fh:
            rows = json.load(fh)
    for repeat, fold in units(t.folds, t.repeats)[len(rows):]:
        rows.append(paired_unit(cfg, method, factor, pos, neg, groups, folds, repeat, fold))
        metrics = summarize_units(rows)
        if metrics["objective_se"] != metrics["objective_se"]:      # nan after one unit: no spread yet
            metrics["objective_se"] = None
        metrics.update({f"unit_{k}": v for k, v in rows[-1].items()})
        with tempfile.TemporaryDirectory() as d:
            with open(os.path.join(d, "units.json"), "w") as fh:
                json.dump(rows, fh)
            tune.report(metrics, checkpoint=Checkpoint.from_directory(d))


class _Record(tune.Callback):
    """Driver side: every finished trial to <out>/trials/<id>.json, and the searcher's journal to <out>."""

    def __init__(self, out: Storage, journal: str, total_units: int, log: Log):
        self.out, self.journal, self.total, self.log = out, journal, total_units, log
        self.units: dict[str, list[dict]] = {}

    def on_trial_result(self, iteration, trials, trial, result, **info):
        self.units.setdefault(trial.trial_id, []).append({k: result.get(f"unit_{k}") for k in UNIT_FIELDS})

    def on_trial_complete(self, iteration, trials, trial, **info):
        self._write(trial, None)

    def on_trial_error(self, iteration, trials, trial, **info):
        self._write(trial, "error")

    def _write(self, trial, status: str | None) -> None:
        res = trial.last_result or {}
        rows = self.units.get(trial.trial_id, [])
        status = status or ("finished" if len(rows) >= self.total else "stopped_early")
        doc = {"trial_id": trial.trial_id, "point": trial.config, "status": status, "units": rows,
               **{k: res.get(k) for k in ("objective", "objective_se", "accuracy", "accuracy_original")},
               "seconds": res.get("time_total_s")}
        self.out.write_json(f"{TRIALS}/{trial.trial_id}.json", doc)
        with open(self.journal, "rb") as fh:
            self.out.write_bytes("optuna.journal", fh.read())
        se = f" ± {doc['objective_se']:.4f}" if doc["objective_se"] is not None else ""
        obj = f"{doc['objective']:+.4f}{se}" if doc["objective"] is not None else "n/a"
        self.log(f"  trial {trial.trial_id} {status}: {describe_point(trial.config)}  objective {obj} "
                 f"({len(rows)}/{self.total} units)")


def search_trials(cfg: LensConfig, sources: list[RunInputs], out: Storage, name: str, done: list[dict],
                  default: dict, log: Log) -> None:
    """The search's trials still missing: Optuna TPE (its journal resumed from <out>) proposes, ASHA stops
    trials whose first folds are poor; each finished trial is recorded in <out>/trials/."""
    t, res = cfg.search, cfg.resources
    total = t.folds * t.repeats
    with tempfile.TemporaryDirectory() as tmp:
        journal = os.path.join(tmp, "optuna.journal")
        if out.exists("optuna.journal"):
            with open(journal, "wb") as fh:
                fh.write(out.read_bytes("optuna.journal"))
        from optuna.storages.journal import JournalFileBackend, JournalStorage
        enqueue = "lens" in t.methods and not any(d["point"] == default for d in done)
        searcher = OptunaSearch(
            space=functools.partial(suggest, tcfg=t, sources=len(sources), base=cfg), metric="objective", mode="max",
            points_to_evaluate=[default] if enqueue else None,
            storage=JournalStorage(JournalFileBackend(journal)), study_name=name, seed=t.searcher_seed + len(done))
        scheduler = ASHAScheduler(time_attr="training_iteration", metric="objective", mode="max", max_t=total,
                                  grace_period=min(t.grace_period or t.folds, total),
                                  reduction_factor=t.reduction_factor)
        data = [(s.emb.seed_pos, s.emb.seed_neg, s.groups) for s in sources]
        trial = tune.with_parameters(_search_trial, base=cfg.to_dict(), sources=data, threads=_threads(res))
        _tune(trial, res, out.child("ray_tune"), name,
              TuneConfig(search_alg=ConcurrencyLimiter(searcher, max_concurrent=res.tune_max_concurrent),
                         scheduler=scheduler, num_samples=t.num_samples - len(done)),
              callbacks=[_Record(out, journal, total, log)])


@ray.remote
def _call(fn: Callable, threads: int, *args) -> Any:
    torch.set_num_threads(threads)
    return fn(*args)


def task_slots(res: ResourcesConfig) -> int:
    """How many of remote_calls' tasks the cluster runs at once now (its CPUs / CPUs per task, at least 1)."""
    return max(1, int(ray.cluster_resources().get("CPU", 1) // res.tune_cpus_per_trial))


def remote_calls(calls: dict[str, tuple], res: ResourcesConfig,
                 on_done: Callable[[str, Any], None] | None = None) -> dict[str, Any]:
    """{key: (fn, *args)} run as Ray tasks of resources.tune_cpus_per_trial CPUs each, all at once -> {key: result}.
    Large arguments are put in the object store once, not once per call; on_done(key, result) as each ends."""
    stored: dict[int, ray.ObjectRef] = {}

    def put(a):
        if isinstance(a, (int, float, str)) or a is None:
            return a
        if id(a) not in stored:                  # setdefault would put it again on every call
            stored[id(a)] = ray.put(a)
        return stored[id(a)]
    task = _call.options(num_cpus=res.tune_cpus_per_trial)
    refs = {k: task.remote(fn, _threads(res), *(put(a) for a in args)) for k, (fn, *args) in calls.items()}
    keys, out, pending = {r: k for k, r in refs.items()}, {}, list(refs.values())
    while pending:
        ready, pending = ray.wait(pending, num_returns=1)
        out[keys[ready[0]]] = ray.get(ready[0])
        if on_done:
            on_done(keys[ready[0]], out[keys[ready[0]]])
    return {k: out[k] for k in refs}


# ------------------------------------------------------------------ the learning curve

def _curve_trial(config: dict, base: dict, emb, groups: list[str], out_uri: str, folder: str, threads: int) -> None:
    quiet_train_logs()
    torch.set_num_threads(threads)
    label, seed = config["task"]
    t0 = time.time()
    rows = task_rows(config_from_dict(base), emb, groups, label, seed)
    Storage(out_uri).write_json(f"{folder}/{label}-s{seed}.json", rows)
    ok = [r["accuracy"] for r in rows if r["status"] == "ok"]
    tune.report({"rows": len(rows), "failed": len(rows) - len(ok), "seconds": time.time() - t0,
                 "best_accuracy": max(ok) if ok else None})


def curve_trials(cfg: LensConfig, source: RunInputs, out: Storage, folder: str, name: str,
                 todo: list[tuple[str, int]], log: Log) -> None:
    """The curve's missing (size label, seed) tasks as Tune trials; each writes its rows to
    <out>/<folder>/<size>-s<seed>.json when it finishes."""
    res = cfg.resources
    trial = tune.with_parameters(_curve_trial, base=cfg.to_dict(), emb=source.emb, groups=source.groups,
                                 out_uri=out.uri, folder=folder, threads=_threads(res))
    results = _tune(trial, res, out.child("ray_tune"), name, TuneConfig(max_concurrent_trials=res.tune_max_concurrent),
                    param_space={"task": tune.grid_search(todo)})
    for r in results:
        if r.error:
            log(f"  task {r.config.get('task')} failed: {str(r.error).splitlines()[0]}")
