"""pipelines/tracking.py: a run's figures as TensorBoard event files, read back with TensorBoard's own reader,
on local storage and on S3 (moto), and as an MLflow run, read back with MLflow's client (its file store); and the
shared run's own event files and MLflow run hold its report's figures."""
import os
import re
import tempfile
from pathlib import Path

import pytest
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from lens_ray.core.selection import Candidate, Scored, Selection
from lens_ray.pipelines.tracking import FOLDER, check_mlflow, log_mlflow, mlflow_uri, scalars, write_events
from lens_ray.store.storage import Storage


def _read(store: Storage) -> dict[str, list[tuple[int, float]]]:
    """Every scalar of the event files under store/tensorboard, as TensorBoard reads them."""
    folder = store.child(FOLDER)
    with tempfile.TemporaryDirectory() as tmp:
        for name in folder.listdir():
            with open(os.path.join(tmp, name), "wb") as fh:
                fh.write(folder.read_bytes(name))
        acc = EventAccumulator(tmp)
        acc.Reload()
        return {tag: [(e.step, e.value) for e in acc.Scalars(tag)] for tag in acc.Tags()["scalars"]}


REPORT = {
    "summary": [{"method": "original", "factor": 1, "head_kind": "mlp", "accuracy": {"mean": 0.6, "std": 0.01, "n": 2},
                 "bon_gold": None},
                {"method": "lens", "factor": 4, "head_kind": "mlp", "accuracy": {"mean": 0.59, "std": 0.0, "n": 2},
                 "bon_gold": {"mean": 0.41, "std": 0.0, "n": 2}},
                {"method": "lens", "factor": 8, "head_kind": "mlp", "accuracy": {"mean": 0.57, "std": 0.0, "n": 2},
                 "bon_gold": None}],
    "results": [{"method": "lens", "factor": 4, "head_kind": "mlp", "seed": s, "accuracy": 0.59 + s / 100}
                for s in range(2)] + [{"method": "lens", "factor": 8, "head_kind": "mlp", "seed": 0,
                                       "accuracy": None}],
    "selected": Selection("layer -1 linear", Candidate((-1,), "linear"), 5, 0.64, 0.01,
                          candidates=[Scored("layer -1 linear", Candidate((-1,), "linear"), "ok", [0.64], 0.64, None)],
                          seeds=[{"seed": 0, "accuracy": 0.61, "bon_gold": None}, {"seed": 1, "accuracy": 0.62}]
                          ).record(),
    "baselines": {"chance": 0.5, "longer_response": 0.46},
    "vae": {"seed-0": {"rel_recon_val": 0.33, "module": "PreferenceVAE", "workers": 1}},
    "timings_s": {"embed": 12.5},
}


@pytest.fixture(params=["local", "s3"])
def store(request, tmp_path):
    if request.param == "local":
        return Storage(str(tmp_path / "run"))
    return Storage(f"s3://{request.getfixturevalue('s3_server')['bucket']}/tb-{tmp_path.name}")


def test_every_figure_is_a_scalar_and_a_rerun_replaces_the_file(store):
    write_events(REPORT, store)
    seen = _read(store)
    assert seen["accuracy/original-mlp"] == [(1, pytest.approx(0.6))]
    assert seen["accuracy/lens-mlp"] == [(4, pytest.approx(0.59)), (8, pytest.approx(0.57))]    # step: factor
    assert seen["bon_gold/lens-mlp"] == [(4, pytest.approx(0.41))]
    assert seen["seeds/accuracy/lens-f4-mlp"] == [(0, pytest.approx(0.59)), (1, pytest.approx(0.60))]
    assert "seeds/accuracy/lens-f8-mlp" not in seen                                            # None: no figure
    assert seen["selection/kfold_accuracy/layer_-1_linear"] == [(0, pytest.approx(0.64))]
    assert seen["selection/pick/accuracy"] == [(0, pytest.approx(0.61)), (1, pytest.approx(0.62))]
    assert seen["baselines/chance"] == [(0, 0.5)] and seen["vae/rel_recon_val"] == [(0, pytest.approx(0.33))]
    assert seen["timings_s/embed"] == [(0, 12.5)] and "vae/workers" not in seen
    assert len(seen) == len({tag for tag, _, _ in scalars(REPORT)})
    write_events({**REPORT, "timings_s": {"embed": 3.0}}, store)                  # the same run written again
    assert len(store.child(FOLDER).listdir()) == 1 and _read(store)["timings_s/embed"] == [(0, 3.0)]


def test_the_shared_run_leaves_its_figures_for_tensorboard(local_run):
    _, report, out = local_run
    seen = _read(out)
    for row in report["summary"]:
        tag = f"accuracy/{row['method']}-{row['head_kind']}"
        assert (row["factor"], pytest.approx(row["accuracy"]["mean"])) in seen[tag]
    tags = {"selection/kfold_accuracy/" + re.sub(r"[^\w./-]", "_", c["candidate"])     # "(pointwise)" -> "_pointwise_"
            for c in report["selected"]["candidates"] if c.get("kfold_accuracy") is not None}
    assert tags <= set(seen) and any("_pointwise_" in t for t in tags)


def _mlflow_run(uri: str, name: str):
    from mlflow import MlflowClient
    client = MlflowClient(uri)
    runs = client.search_runs([client.get_experiment_by_name("lens-ray").experiment_id],
                              filter_string=f"attributes.run_name = '{name}'")
    assert len(runs) >= 1, runs
    return client, runs[0]


def test_mlflow_gets_the_settings_the_figures_and_the_report(tmp_path, monkeypatch):
    monkeypatch.setenv("MLFLOW_ALLOW_FILE_STORE", "true")
    uri = f"file://{tmp_path / 'mlruns'}"
    out = Storage(str(tmp_path / "run"))
    out.write_bytes("report.json", b"{}")
    out.write_bytes("report.html", b"<html></html>")
    report = {**REPORT, "name": "mine", "config": {"seeds": 2, "vae": {"beta": 1.0}, "methods": ["lens"]}}
    run_id = log_mlflow(report, out, uri, "lens-ray")
    client, run = _mlflow_run(uri, "mine")
    assert run.info.run_id == run_id and run.info.status == "FINISHED"
    assert run.data.params == {"seeds": "2", "vae.beta": "1.0", "methods": "['lens']"}
    history = client.get_metric_history(run_id, "accuracy/lens-mlp")
    assert sorted((m.step, m.value) for m in history) == [(4, pytest.approx(0.59)), (8, pytest.approx(0.57))]
    assert {f.path for f in client.list_artifacts(run_id)} == {"report.json", "report.html"}
    assert run.data.tags["lens_ray.run"] == out.uri


def test_mlflow_is_asked_for_by_the_setting_or_the_environment(monkeypatch):
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    assert mlflow_uri(None) is None and mlflow_uri("http://mlflow:5000") == "http://mlflow:5000"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "http://from-env:5000")
    assert mlflow_uri(None) == "http://from-env:5000" and mlflow_uri("http://set:1") == "http://set:1"
    import sys
    monkeypatch.setitem(sys.modules, "mlflow", None)                   # as if it were not installed
    from lens_ray.config import ConfigError
    with pytest.raises(ConfigError, match=r"tracking.mlflow_uri: MLflow is asked for but not installed; pip "
                                          r"install 'lens-ray\[mlflow\]'"):
        check_mlflow(None)
    monkeypatch.delenv("MLFLOW_TRACKING_URI")
    check_mlflow(None)                                                  # not asked for: nothing to check


def test_the_shared_run_is_an_mlflow_run(local_run):
    _, report, out = local_run
    uri = f"file://{Path(out.uri).parent / 'mlruns'}"
    client, run = _mlflow_run(uri, report["name"])
    assert run.data.params["seeds"] == str(report["config"]["seeds"])
    assert run.data.params["tracking.mlflow_uri"] == uri
    row = report["summary"][0]
    values = {(m.step, round(m.value, 5)) for m in client.get_metric_history(
        run.info.run_id, f"accuracy/{row['method']}-{row['head_kind']}")}
    assert (row["factor"], round(row["accuracy"]["mean"], 5)) in values
