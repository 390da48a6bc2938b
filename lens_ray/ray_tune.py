"""The Ray Tune search of the synthesis hyperparameters and the method's open choices.

Composes the pure parts (tune_space: the space; tune_objective: the k-fold paired objective;
run_inputs: a finished run's embeddings, never re-embedded) and adds only scheduling (ASHA stops
trials whose first folds are poor), the searcher, storage and resume.

Searcher: Optuna TPE rather than HyperOpt. Its define-by-run space draws a method's own knobs only
for that method; it is maintained; and its journal storage (JSON lines) makes the searcher's state
resumable without pickles.

<out> (a path, file:// or s3://) holds:
  manifest.json         the search's settings; a re-run with other settings is refused
  optuna.journal        the searcher's state, copied after every finished trial
  trials/<id>.json      every finished trial (tune_results.py)
  ray_tune/<name>-<n>/  Tune's experiment folders (attempt n): per-trial TensorBoard events,
                        result.json, progress.csv and checkpoints (the unit rows done so far)
  best.json, report.json, report.html
Re-running with the same name resumes: finished trials are kept (the searcher knows them from
its journal), trials cut off by the kill start over, and the search runs the trials still missing.
"""
from __future__ import annotations

import functools
import json
import os
import tempfile
import time
from dataclasses import asdict
from typing import Callable

import numpy as np
import ray
import torch
from ray import tune
from ray.tune import Checkpoint, FailureConfig, RunConfig, TuneConfig, Tuner
from ray.tune.schedulers import ASHAScheduler
from ray.tune.search import ConcurrencyLimiter
from ray.tune.search.optuna import OptunaSearch

from lens_ray import report_html
from lens_ray.config import ConfigError, LensConfig, config_from_dict
from lens_ray.ray_train import quiet_train_logs
from lens_ray.run_inputs import RunInputs
from lens_ray.stats import mean_std, paired
from lens_ray.storage import Manifest, Storage
from lens_ray.tune_objective import kfold_by_group, paired_unit, score_choice, summarize_units, units
from lens_ray.tune_results import BEST, TRIALS, read_trials
from lens_ray.tune_space import apply_point, default_point, suggest, tuned_overrides

Log = Callable[[str], None]
BUDGET_KEYS = ("num_samples", "test_seeds")    # a re-run may change these; everything else defines the search
UNIT_FIELDS = ("repeat", "fold", "accuracy", "accuracy_original", "delta")


def _trial(point: dict, base: dict, sources: list, threads: int) -> None:
    """One trial: its (repeat, fold) units in turn, a report and a checkpoint after each (ASHA's rungs)."""
    quiet_train_logs()                        # one "checkpoint created" line per unit is noise
    torch.set_num_threads(threads)
    cfg, method, factor, src = apply_point(config_from_dict(base), point)
    pos, neg, groups = sources[src]
    t = cfg.tune
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
        self.log(f"  trial {trial.trial_id} {status}: {_describe(trial.config)}  objective {obj} "
                 f"({len(rows)}/{self.total} units)")


def _describe(point: dict) -> str:
    knobs = ", ".join(f"{k.split('.')[-1]}={_short(v)}" for k, v in point.items() if k not in ("method", "factor"))
    return f"{point['method']} x{point['factor']} [{knobs}]"


def _short(v) -> str:
    return f"{v:.3g}" if isinstance(v, float) else str(v)


@ray.remote
def _test(base: dict, point: dict, method: str, inputs: RunInputs, threads: int) -> list[dict]:
    torch.set_num_threads(threads)
    cfg, _, factor, _ = apply_point(config_from_dict(base), point)
    return score_choice(cfg, method, factor if method != "original" else 1, inputs.seed_pairs, inputs.emb,
                        cfg.tune.test_seeds)


def search(cfg: LensConfig, sources: list[RunInputs], out_uri: str, log: Log = print) -> dict:
    """Run (or resume) the search; choose; measure the choice on test data; write the report."""
    out = Storage(out_uri)
    name = open_search(cfg, sources, out)
    done = read_trials(out)
    log(f"lens-ray search '{name}' -> {out.uri}: {cfg.tune.num_samples} trials ({len(done)} done before), "
        f"{cfg.tune.folds}-fold x {cfg.tune.repeats} repeats paired against original, ASHA + Optuna TPE, "
        f"{cfg.resources.tune_max_concurrent} at once, {cfg.resources.tune_cpus_per_trial} CPU each")
    default = default_point(cfg, len(sources))
    t0 = time.time()
    if cfg.tune.num_samples > len(done):
        run_trials(cfg, sources, out, name, done, default, log)
    trials = read_trials(out)
    seconds = time.time() - t0
    before = out.read_json("report.json").get("search_seconds_total", 0.0) if out.exists("report.json") else 0.0
    report = choose_and_test(cfg, sources, trials, default, log)
    report.update({"name": name, "sources": [s.uri for s in sources], "search_seconds_this_attempt": round(seconds, 1),
                   "search_seconds_total": round(before + seconds, 1),
                   "trial_seconds_total": round(sum(tr.get("seconds") or 0 for tr in trials), 1),
                   "settings": cfg.to_dict()["tune"], "trials": trials})
    out.write_bytes("report.html", report_html.render_search(report).encode())
    best = ("point", "overrides", "objective", "objective_se", "beats_original", "holds_on_test", "verdict", "test",
            "trial_id")
    out.write_json(BEST, {k: report[k] for k in best} | {"search": out.uri})
    out.write_json("report.json", report)
    log(report["verdict"])
    log(f"artifacts: {out.uri}  (report.html, report.json, best.json, trials/, ray_tune/ with TensorBoard logs)")
    return report


def open_search(cfg: LensConfig, sources: list[RunInputs], out: Storage) -> str:
    """The search's manifest: what defines it (never its budget or resources); a re-run that would define it
    otherwise is refused. Returns its name."""
    first = sources[0]
    for s in sources[1:]:
        if s.groups != first.groups:
            raise ConfigError(f"{s.uri}: its seed pairs differ from {first.uri}'s; runs searched together must "
                              "share data")
    name = cfg.tune.name or f"{cfg.name}-tune"
    base = cfg.to_dict()
    Manifest.open(out, {"name": name, "sources": [s.uri for s in sources],
                        "tune": {k: v for k, v in base["tune"].items() if k not in BUDGET_KEYS},
                        "base": {k: base[k] for k in ("data", "embed", "vae", "synth", "reward", "factors")}}).save()
    return name


def run_trials(cfg: LensConfig, sources: list[RunInputs], out: Storage, name: str, done: list[dict], default: dict,
               log: Log) -> None:
    """The trials still missing, with Tune: Optuna (its journal resumed from <out>) and ASHA."""
    t, res = cfg.tune, cfg.resources
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
        threads = max(1, int(res.tune_cpus_per_trial))
        trial = tune.with_parameters(_trial, base=cfg.to_dict(), sources=data, threads=threads)
        trainable = tune.with_resources(trial, {"cpu": res.tune_cpus_per_trial})
        store = out.child("ray_tune")
        if store.protocol == "file":
            os.makedirs(store.path(), exist_ok=True)
        tuner = Tuner(trainable, tune_config=TuneConfig(
            search_alg=ConcurrencyLimiter(searcher, max_concurrent=res.tune_max_concurrent), scheduler=scheduler,
            num_samples=t.num_samples - len(done)),
            run_config=RunConfig(name=f"{name}-{len(store.listdir())}", storage_path=store.path(),
                                 storage_filesystem=store.fs, verbose=0,
                                 failure_config=FailureConfig(max_failures=res.train_max_failures),
                                 callbacks=[_Record(out, journal, total, log)]))
        tuner.fit()


def pick(trials: list[dict]) -> dict:
    """The finished trial with the highest objective minus one standard error (noise-aware, not the luckiest)."""
    full = [tr for tr in trials if tr["status"] == "finished" and tr["objective"] is not None]
    if not full:
        raise RuntimeError("no trial finished all its folds; raise tune.num_samples or tune.grace_period")
    return max(full, key=lambda tr: tr["objective"] - (tr["objective_se"] or 0.0))


def choose_and_test(cfg: LensConfig, sources: list[RunInputs], trials: list[dict], default: dict, log: Log) -> dict:
    """The pick by k-fold objective; then test accuracy, paired by seed, of original, the run's default LENS
    point and the pick (the only time the search looks at test data)."""
    best = pick(trials)
    obj, se = best["objective"], best["objective_se"] or 0.0
    src_index = int(best["point"].get("source", 0))
    log(f"testing original, default and tuned on the held-out test data ({cfg.tune.test_seeds} seeds) ...")
    rows = test_rows(cfg, sources, best["point"], default)
    test = compare_on_test(rows)
    gain = test["tuned"]["accuracy_vs_original"]
    held = gain["mean"] > 2 * gain["std"] / np.sqrt(cfg.tune.test_seeds)
    beats = obj - 2 * se > 0
    return {"point": best["point"], "trial_id": best["trial_id"], "objective": obj, "objective_se": se,
            "beats_original": beats, "holds_on_test": bool(held), "default_point": default,
            "verdict": verdict(best["point"], sum(tr["status"] == "finished" for tr in trials), obj, se, beats, test,
                               held),
            "overrides": tuned_overrides(best["point"], sources[src_index].config.to_dict()["embed"]),
            "test": test, "test_rows": rows}


def test_rows(cfg: LensConfig, sources: list[RunInputs], point: dict, default: dict) -> dict[str, list[dict]]:
    """Per-seed test rows of original, the default LENS point and the pick; the pick is also paired with an
    original that has its head budget and its embeddings ("original_matched") whenever those differ."""
    src_index = int(point.get("source", 0))
    stored = [ray.put(s) for s in sources]       # once each, not once per test row
    jobs = {"original": (default, "original", stored[0]), "default": (default, "lens", stored[0]),
            "tuned": (point, point["method"], stored[src_index])}

    def head(p: dict) -> dict:                   # original has no synthetic pairs: their weight does not count
        return {k: v for k, v in asdict(apply_point(cfg, p)[0].reward).items() if k != "synthetic_weight"}
    if head(point) != head(default) or src_index != 0:
        jobs["original_matched"] = (point, "original", stored[src_index])
    res = cfg.resources
    refs = {k: _test.options(num_cpus=res.tune_cpus_per_trial).remote(cfg.to_dict(), p, m, inputs,
                                                                      max(1, int(res.tune_cpus_per_trial)))
            for k, (p, m, inputs) in jobs.items()}
    return {k: ray.get(r) for k, r in refs.items()}


def compare_on_test(rows: dict[str, list[dict]]) -> dict[str, dict]:
    """Mean ± std over seeds of each row set, and the default's and the pick's gains over their original."""
    test = {k: {m: mean_std(r[m] for r in v) for m in ("accuracy", "bon_gold") if v[0][m] is not None}
            for k, v in rows.items()}
    matched = "original_matched" if "original_matched" in rows else "original"
    for k, ref in (("default", "original"), ("tuned", matched)):
        for metric in ("accuracy", "bon_gold"):
            if rows[k][0][metric] is not None:
                by_seed, base = dict(enumerate(rows[k])), dict(enumerate(rows[ref]))
                test[k][f"{metric}_vs_original"] = mean_std(paired(by_seed, base, metric))
    return test


def verdict(point: dict, finished: int, obj: float, se: float, beats: bool, test: dict, held: bool) -> str:
    """The search's conclusion in words, from the figures it is made of."""
    text = (f"Pick of {finished} finished trials (highest objective - 1 se): {_describe(point)}, k-fold "
            f"objective {obj:+.4f} ± {se:.4f} (accuracy gain over original on the same folds). ")
    text += ("It beats the original pairs by more than twice the objective's standard error (before accounting "
             "for picking the best of many; the test rows below are the check)." if beats else
             "NOTHING beat the original pairs beyond the objective's noise (gain < 2 standard errors): on this data "
             "latent synthesis did not pay off.")
    text += " Test accuracy (mean over seeds): " + ", ".join(
        f"{k} {v['accuracy']['mean']:.3f}" + (f" ({v['accuracy_vs_original']['mean']:+.3f} vs original)"
                                               if "accuracy_vs_original" in v else "") for k, v in test.items()) + ". "
    return text + ("The tuned gain holds on test data." if held else
                   "On test data the tuned configuration does not beat original beyond seed noise.")
