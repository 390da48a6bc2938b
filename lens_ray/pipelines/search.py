"""The search (`lens-ray search`, `jobs/search.py`): the synthesis hyperparameters and the method's open choices.

Composes the math (`core.search`: the space and the k-fold paired objective), a finished run's embeddings
(`data.finished_run`, never re-embedded) and the Ray layer (`distributed.trials`: Tune with ASHA and the
searcher, resume); adds the choice, the test of the chosen points, and the report.

Searcher: Optuna TPE rather than HyperOpt. Its define-by-run space draws a method's own knobs only
for that method; it is maintained; and its journal storage (JSON lines) makes the searcher's state
resumable without pickles.

<out> (a path, file:// or s3://) holds:
  manifest.json         the search's settings; a re-run with other settings is refused
  optuna.journal        the searcher's state, copied after every finished trial
  trials/<id>.json      every finished trial (store/search_results.py)
  ray_tune/<name>-<n>/  Tune's experiment folders (attempt n): per-trial TensorBoard events,
                        result.json, progress.csv and checkpoints (the unit rows done so far)
  best.json, report.json, report.html
Re-running with the same name resumes: finished trials are kept (the searcher knows them from
its journal), trials cut off by the kill start over, and the search runs the trials still missing.
"""
from __future__ import annotations

import time
from dataclasses import asdict

from lens_ray.config import ConfigError, LensConfig
from lens_ray.core.progress import Log
from lens_ray.core.search import (
    apply_point,
    conclusions,
    default_point,
    describe_point,
    score_point,
    tuned_overrides,
)
from lens_ray.core.stats import mean_std, paired
from lens_ray.data.finished_run import RunInputs
from lens_ray.distributed.trials import remote_calls, search_trials
from lens_ray.pipelines import report_html
from lens_ray.pipelines.report import estimate
from lens_ray.store.search_results import BEST, read_trials
from lens_ray.store.storage import Manifest, Storage

BUDGET_KEYS = ("num_samples", "test_seeds")    # a re-run may change these; everything else defines the search


def search(cfg: LensConfig, sources: list[RunInputs], out_uri: str, log: Log = print) -> dict:
    """Run (or resume) the search; choose; measure the choice on test data; write the report."""
    out = Storage(out_uri)
    open_search(cfg, sources, out).save()
    name = cfg.search_name
    done = read_trials(out)
    log(f"lens-ray search '{name}' -> {out.uri}: {cfg.search.num_samples} trials ({len(done)} done before), "
        f"{cfg.search.folds}-fold x {cfg.search.repeats} repeats paired against original, ASHA + Optuna TPE, "
        f"{cfg.resources.tune_max_concurrent} at once, {cfg.resources.tune_cpus_per_trial} CPU each")
    default = default_point(cfg, len(sources))
    t0 = time.time()
    if cfg.search.num_samples > len(done):
        search_trials(cfg, sources, out, name, done, default, log)
    trials = read_trials(out)
    seconds = time.time() - t0
    before = out.read_json("report.json").get("search_seconds_total", 0.0) if out.exists("report.json") else 0.0
    report = choose_and_test(cfg, sources, trials, default, log)
    report.update({"name": name, "sources": [s.uri for s in sources], "search_seconds_this_attempt": round(seconds, 1),
                   "search_seconds_total": round(before + seconds, 1),
                   "trial_seconds_total": round(sum(tr.get("seconds") or 0 for tr in trials), 1),
                   "settings": cfg.to_dict()["search"], "trials": trials})
    best = ("point", "overrides", "objective", "objective_se", "beats_original", "holds_on_test", "verdict", "test",
            "trial_id")
    out.write_json("report.json", report)                   # the data first: a report never loses results
    out.write_json(BEST, {k: report[k] for k in best} | {"search": out.uri})
    out.write_bytes("report.html", report_html.render_search(report).encode())
    log(report["verdict"])
    log(f"artifacts: {out.uri}  (report.html, report.json, best.json, trials/, ray_tune/ with TensorBoard logs)")
    return report


def check_sources(sources: list[RunInputs]) -> None:
    """Runs searched together must share their seed pairs (the folds are drawn from them)."""
    first = sources[0]
    for s in sources[1:]:
        if s.groups != first.groups:
            raise ConfigError(f"{s.uri}: its seed pairs differ from {first.uri}'s; runs searched together must "
                              "share data")


def open_search(cfg: LensConfig, sources: list[RunInputs], out: Storage) -> Manifest:
    """The search's manifest, not yet saved: what defines it (never its budget or resources). A re-run that
    would define it otherwise is refused, naming the settings that differ (the CLI checks this before Ray)."""
    check_sources(sources)
    base = cfg.to_dict()
    return Manifest.open(out, {"name": cfg.search_name, "sources": [s.uri for s in sources],
                               # "tune": the section's earlier name, so a search begun before the rename resumes
                               "tune": {k: v for k, v in base["search"].items() if k not in BUDGET_KEYS},
                               "base": {k: base[k] for k in ("data", "embed", "vae", "synth", "reward", "factors")}})


def pick(trials: list[dict]) -> dict:
    """The finished trial with the highest objective minus one standard error (noise-aware, not the luckiest)."""
    full = [tr for tr in trials if tr["status"] == "finished" and tr["objective"] is not None]
    if not full:
        raise RuntimeError("no trial finished all its folds; raise search.num_samples or search.grace_period")
    return max(full, key=lambda tr: tr["objective"] - (tr["objective_se"] or 0.0))


def choose_and_test(cfg: LensConfig, sources: list[RunInputs], trials: list[dict], default: dict, log: Log) -> dict:
    """The pick by k-fold objective; then test accuracy, paired by seed, of original, the run's default LENS
    point and the pick (the only time the search looks at test data)."""
    best = pick(trials)
    obj, se = best["objective"], best["objective_se"]           # se None: one unit, no spread to stand behind
    src_index = int(best["point"].get("source", 0))
    log(f"testing original, default and tuned on the held-out test data ({cfg.search.test_seeds} seeds) ...")
    rows = test_rows(cfg, sources, best["point"], default)
    test = compare_on_test(rows)
    beats, held = conclusions(obj, se, test["tuned"]["accuracy_vs_original"])
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
    rows = {"original": (default, "original", sources[0]), "default": (default, "lens", sources[0]),
            "tuned": (point, point["method"], sources[src_index])}

    def head(p: dict) -> dict:                   # original has no synthetic pairs: their weight does not count
        return {k: v for k, v in asdict(apply_point(cfg, p)[0].reward).items() if k != "synthetic_weight"}
    if head(point) != head(default) or src_index != 0:
        rows["original_matched"] = (point, "original", sources[src_index])
    return remote_calls({k: (score_point, cfg, p, m, src.seed_pairs, src.emb) for k, (p, m, src) in rows.items()},
                        cfg.resources)


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
    text = (f"Pick of {finished} finished trials (highest objective - 1 se): {describe_point(point)}, k-fold "
            f"objective {estimate(obj, se, 2, signed=True, digits=4)} (accuracy gain over original on the same "
            "folds). ")
    text += ("It beats the original pairs by more than twice the objective's standard error (before accounting "
             "for picking the best of many; the test rows below are the check)." if beats else
             "No trial beat the original pairs beyond the objective's noise (gain < 2 standard errors).")
    text += " Test accuracy (mean over seeds): " + ", ".join(
        f"{k} {v['accuracy']['mean']:.3f}" + (f" ({v['accuracy_vs_original']['mean']:+.3f} vs original)"
                                               if "accuracy_vs_original" in v else "") for k, v in test.items()) + ". "
    return text + CONCLUSION[beats, bool(held)]


# what the k-fold said (beats) and what test data said (held), in one sentence that never contradicts either
CONCLUSION = {
    (True, True): "The tuned gain holds on test data.",
    (True, False): "On test data the tuned configuration does not beat original beyond seed noise: the k-fold "
                   "gain does not hold.",
    (False, True): "On test data the pick is ahead of original beyond seed noise, which the k-fold did not "
                   "predict: one draw, not a gain to stand behind.",
    (False, False): "On test data it does not beat original beyond seed noise either: on this data latent "
                    "synthesis did not pay off.",
}
