"""The search on the session's local Ray (Ray Tune), from a finished run, results on S3 (moto); resume;
--from-search (and --from-tune, its earlier name)."""
import base64
import re

import numpy as np
import pytest

from lens_ray.cli import run_main, search_main
from lens_ray.config import LensConfig, apply_overrides
from lens_ray.core.search import conclusions
from lens_ray.store.search_results import read_trials
from lens_ray.store.storage import Storage, StorageError

SEARCH = ["--num-samples", "3", "--folds", "2", "--repeats", "1", "--name", "tt",
          "--set", "search.test_seeds=2", "--set", "search.grace_period=1", "--set", "resources.tune_max_concurrent=2",
          "--set", "resources.tune_cpus_per_trial=0.5"]


def _keys(s3, prefix):
    import boto3
    pages = boto3.client("s3").get_paginator("list_objects_v2").paginate(Bucket=s3["bucket"], Prefix=prefix)
    return [o["Key"] for page in pages for o in page.get("Contents", [])]


def _copy(s3, src: str, dst: str) -> None:
    """Copy every object under one prefix to another (a search's output, for a test that changes it)."""
    import boto3
    client = boto3.client("s3")
    for key in _keys(s3, src):
        client.copy_object(Bucket=s3["bucket"], Key=dst + key[len(src):],
                           CopySource={"Bucket": s3["bucket"], "Key": key})


@pytest.fixture(scope="module")
def search(local_run, s3_server):
    _, _, run = local_run
    out = f"s3://{s3_server['bucket']}/tune/tt"
    report = search_main(["--from-run", run.uri, "--out", out] + SEARCH)
    return run, out, report


def test_search_measures_trials_on_folds_and_chooses(search):
    run, out, report = search
    trials = read_trials(Storage(out))
    assert len(trials) == 3 and report["trials"] == trials
    assert trials[0]["point"] == report["default_point"] or report["default_point"] in [t["point"] for t in trials]
    for t in trials:
        assert t["status"] in ("finished", "stopped_early")
        assert len(t["units"]) == (2 if t["status"] == "finished" else 1)
        assert t["objective"] == pytest.approx(np.mean([u["delta"] for u in t["units"]]))
        for u in t["units"]:
            assert u["delta"] == pytest.approx(u["accuracy"] - u["accuracy_original"])
    finished = [t for t in trials if t["status"] == "finished"]
    best = max(finished, key=lambda t: t["objective"] - (t["objective_se"] or 0.0))
    assert report["point"] == best["point"] and report["objective"] == best["objective"]
    assert set(report["test"]) >= {"original", "default", "tuned"}
    assert len(report["test_rows"]["tuned"]) == 2                      # test_seeds
    gain = report["test"]["tuned"]["accuracy_vs_original"]                # the rule's hand cases: test_search
    assert (report["beats_original"], report["holds_on_test"]) == conclusions(report["objective"],
                                                                              report["objective_se"], gain)
    assert Storage(out).read_json("best.json")["point"] == report["point"]


def test_search_writes_tensorboard_logs_and_checkpoints_to_s3(search, s3_server):
    _, _, report = search
    keys = _keys(s3_server, "tune/tt/")
    for t in report["trials"]:
        trial_files = [k for k in keys if f"_{t['trial_id']}_" in k]
        assert any("events.out.tfevents" in k for k in trial_files), t["trial_id"]
        assert any("/checkpoint_" in k and k.endswith("units.json") for k in trial_files)
    assert {"tune/tt/optuna.journal", "tune/tt/best.json", "tune/tt/report.html", "tune/tt/manifest.json"} <= set(keys)


def test_search_report_shows_the_landscape_and_the_verdict(search):
    _, out, report = search
    page = Storage(out).read_bytes("report.html").decode()
    images = re.findall(r"src='data:image/png;base64,([A-Za-z0-9+/=]+)'", page)
    assert len(images) == 1 and base64.b64decode(images[0])[:4] == b"\x89PNG"
    assert "Tuning landscape" in page and f"{report['objective']:+.4f}" in page
    assert f"{report['test']['tuned']['accuracy']['mean']:.4f}" in page


def test_rerun_with_the_same_name_resumes_and_refuses_other_settings(search, s3_server):
    run, first, report = search
    out = f"s3://{s3_server['bucket']}/tune/tt-resumed"            # a copy: the other tests read the first search
    _copy(s3_server, "tune/tt/", "tune/tt-resumed/")
    before = {t["trial_id"]: t for t in report["trials"]}
    again = search_main(["--from-run", run.uri, "--out", out] + SEARCH[2:] + ["--num-samples", "4"])
    after = {t["trial_id"]: t for t in again["trials"]}
    assert len(after) == 4 and all(after[k] == v for k, v in before.items())   # finished trials kept as they were
    import tempfile

    import optuna
    from optuna.storages.journal import JournalFileBackend, JournalStorage
    with tempfile.NamedTemporaryFile(suffix=".journal") as fh:
        fh.write(Storage(out).read_bytes("optuna.journal"))
        fh.flush()
        study = optuna.load_study(study_name="tt", storage=JournalStorage(JournalFileBackend(fh.name)))
        assert len(study.trials) == 4                                      # the searcher knew the first three
    assert Storage(out).listdir("ray_tune") == ["tt-0", "tt-1"]
    with pytest.raises(StorageError, match=r"other settings \(tune.folds: \d -> 3\)"):
        search_main(["--from-run", run.uri, "--out", out] + SEARCH + ["--folds", "3"])


def test_full_run_from_tune_uses_the_chosen_settings(search, local_run):
    argv, _, _ = local_run
    _, out, _ = search
    best = Storage(out).read_json("best.json")
    i = argv.index("--factors")
    argv = argv[:i] + argv[i + 2:]                      # a --factors flag would replace the pick's factor
    tuned = run_main(argv + ["--from-search", out, "--name", "t-tuned", "--seeds", "1",
                             "--set", "selection.enabled=false"])      # the selection is tested on local_run
    cfg = tuned["config"]
    assert cfg["from_search"] == out
    flags = dict(a.split("=", 1) for a in argv[argv.index("--set") + 1::2] if "=" in a)   # --set wins over the pick
    expect = apply_overrides(LensConfig(), {**best["overrides"], **flags}).to_dict()       # parsed as the CLI parses
    for key in best["overrides"]:
        section, field = key.split(".")
        assert cfg[section][field] == expect[section][field], key
    assert best["point"]["factor"] in cfg["factors"] and set(cfg["factors"]) >= {4, 8}  # the defaults and the pick's
    assert tuned["embedding"]["embedded"] == 0                 # the cache held every text: nothing re-embedded
    page = Storage(argv[argv.index("--storage") + 1]).child("t-tuned").read_bytes("report.html").decode()
    assert "Tuning landscape" in page and len(re.findall(r"data:image/png;base64", page)) == 3


def test_search_spans_several_runs_embeddings(local_run, s3_server):
    """Two runs on the same data (last-token vs mean pooling): the search draws which embeddings to use,
    and a pick's overrides carry its run's embedding settings."""
    argv, _, run = local_run
    from lens_ray.cli import config_from_args, run_parser
    storage = argv[argv.index("--storage") + 1]
    run_main(argv + ["--name", "t-mean", "--set", "embed.pooling=mean", "--methods", "original", "--seeds", "1",
                    "--set", "selection.enabled=false"])
    out = f"s3://{s3_server['bucket']}/tune/two"
    report = search_main(["--from-run", run.uri, "--from-run", f"{storage}/t-mean", "--out", out, "--name", "two",
                        "--num-samples", "4", "--folds", "2", "--repeats", "1", "--set", "search.test_seeds=2",
                        "--set", "search.methods=direct_perturbation", "--set", "resources.tune_cpus_per_trial=0.5"])
    sources = {t["point"]["source"] for t in report["trials"]}
    assert sources <= {0, 1} and all("source" in t["point"] for t in report["trials"])
    pooling = {0: "auto", 1: "mean"}[report["point"]["source"]]
    assert report["overrides"]["embed.pooling"] == pooling
    assert config_from_args(run_parser().parse_args(argv + ["--from-tune", out])).embed.pooling == pooling
    if report["point"]["source"] == 1:
        assert "original_matched" in report["test"]


def test_the_searchs_event_files_open_with_tensorboard(search, s3_server, tmp_path):
    """TensorBoard (installed by `make`) reads every trial's event file, with the objective of each unit."""
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
    _, out, report = search
    keys = [k for k in _keys(s3_server, "tune/tt/ray_tune/") if "events.out.tfevents" in k]
    assert keys, "no TensorBoard event files under ray_tune/"
    store = Storage(f"s3://{s3_server['bucket']}")
    objectives = []
    for i, key in enumerate(keys):
        local = tmp_path / str(i) / key.rsplit("/", 1)[-1]
        local.parent.mkdir()
        local.write_bytes(store.read_bytes(key))
        events = EventAccumulator(str(local.parent))
        events.Reload()
        tags = events.Tags()["scalars"]
        assert "ray/tune/objective" in tags, tags
        objectives.append(events.Scalars("ray/tune/objective")[-1].value)
    finished = [t["objective"] for t in report["trials"] if t["status"] == "finished"]
    assert all(any(abs(o - f) < 1e-6 for o in objectives) for f in finished)      # the same figures as trials/
