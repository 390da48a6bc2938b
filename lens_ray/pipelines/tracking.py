"""A run's figures for experiment trackers, written from the report once it is complete (so they hold exactly
its figures). No Ray.

- TensorBoard: event files in `<run>/tensorboard/` (local or S3), always; `tensorboard --logdir runs` compares
  runs.
- MLflow, where `tracking.mlflow_uri` (or MLFLOW_TRACKING_URI) names a tracking server: one MLflow run per
  lens-ray run, its settings as params (dotted names), the same scalars as metrics, and report.json, .md and
  .html as artifacts.

Scalars (tag: value at step):
    accuracy/<method>-<head>, bon_gold/<method>-<head>     mean over seeds, at step = augmentation factor
    seeds/accuracy/<method>-f<factor>-<head>                each seed's figure, at step = seed
    selection/kfold_accuracy/<candidate>                    the select stage's k-fold means (step 0; spaces
                                                            in a name become _)
    selection/pick/accuracy, selection/pick/bon_gold        the pick's held-out figures, at step = seed
    baselines/<name>, vae/<measure>, timings_s/<stage>      chance and length baselines; VAE fits (step = seed)
"""
from __future__ import annotations

import os
import re
import tempfile

from lens_ray.config import ConfigError
from lens_ray.core.records import Result
from lens_ray.pipelines.report import selection_of, summary_of
from lens_ray.store.storage import Storage

FOLDER = "tensorboard"


def scalars(report: dict) -> list[tuple[str, float, int]]:
    """(tag, value, step) of every figure of the report that TensorBoard shows; nothing that is None."""
    out: list[tuple[str, float, int]] = []
    for row in summary_of(report):
        for metric in ("accuracy", "bon_gold"):
            if getattr(row, metric):
                out.append((f"{metric}/{row.method}-{row.head_kind}", getattr(row, metric)["mean"], row.factor))
    for r in map(Result.of, report.get("results", [])):
        if r.accuracy is not None:
            out.append((f"seeds/accuracy/{r.method}-f{r.factor}-{r.head_kind}", r.accuracy, r.seed))
    sel = selection_of(report)
    for c in sel.candidates if sel else []:
        if c.kfold_accuracy is not None:
            out.append((f"selection/kfold_accuracy/{c.name}", c.kfold_accuracy, 0))
    for r in sel.seeds if sel else []:
        out += [(f"selection/pick/{m}", r[m], int(r["seed"])) for m in ("accuracy", "bon_gold")
                if r.get(m) is not None]
    out += [(f"baselines/{k}", v, 0) for k, v in (report.get("baselines") or {}).items() if v is not None]
    for key, metrics in (report.get("vae") or {}).items():
        seed = int(key.rsplit("-", 1)[1])
        out += [(f"vae/{k}", v, seed) for k, v in metrics.items() if isinstance(v, float)]
    out += [(f"timings_s/{k}", v, 0) for k, v in (report.get("timings_s") or {}).items()]
    # TensorBoard's tags hold letters, digits and ._-/ only ("layer -1 linear" -> "layer_-1_linear")
    return [(re.sub(r"[^\w./-]", "_", tag), float(value), step) for tag, value, step in out]


def write_events(report: dict, out: Storage) -> str:
    """The report's scalars as one event file under <out>/tensorboard/ (made anew: a re-run replaces it);
    returns its folder's URI."""
    from tensorboardX import SummaryWriter
    with tempfile.TemporaryDirectory() as tmp:
        writer = SummaryWriter(tmp)
        for tag, value, step in scalars(report):
            writer.add_scalar(tag, value, step)
        writer.close()
        target = out.child(FOLDER)
        for name in target.listdir():            # the previous try's events: one file per run
            target.delete(name)
        for name in os.listdir(tmp):
            with open(os.path.join(tmp, name), "rb") as fh:
                target.write_bytes(name, fh.read())
    return target.uri


def mlflow_uri(configured: str | None) -> str | None:
    """The tracking URI to log to: the setting, else MLFLOW_TRACKING_URI, else None (no MLflow)."""
    return configured or os.environ.get("MLFLOW_TRACKING_URI") or None


def check_mlflow(configured: str | None) -> None:
    """Before Ray starts: MLflow asked for but not installed is one line."""
    if mlflow_uri(configured):
        try:
            import mlflow  # noqa: F401
        except ImportError as exc:
            raise ConfigError("tracking.mlflow_uri: MLflow is asked for but not installed; pip install "
                              "'lens-ray[mlflow]' (mlflow-skinny), or unset it") from exc


def params(settings: dict, prefix: str = "") -> dict[str, str]:
    """Nested settings as MLflow params: dotted names, values as text (MLflow keeps at most 6,000 characters)."""
    out: dict[str, str] = {}
    for key, value in settings.items():
        if isinstance(value, dict):
            out.update(params(value, f"{prefix}{key}."))
        else:
            out[f"{prefix}{key}"] = str(value)[:6000]
    return out


def log_mlflow(report: dict, out: Storage, uri: str, experiment: str) -> str:
    """One MLflow run for this lens-ray run (named as it), its params, metrics and report files; returns its id."""
    import time

    from mlflow import MlflowClient
    from mlflow.entities import Metric, Param
    client = MlflowClient(uri)
    found = client.get_experiment_by_name(experiment)
    experiment_id = found.experiment_id if found else client.create_experiment(experiment)
    run = client.create_run(experiment_id, run_name=report.get("name"), tags={"lens_ray.run": out.uri})
    run_id, now = run.info.run_id, int(time.time() * 1000)
    try:
        items = [Param(k, v) for k, v in params(report["config"]).items()]
        for i in range(0, len(items), 100):                  # MLflow's limit per batch
            client.log_batch(run_id, params=items[i:i + 100])
        metrics = [Metric(tag, value, now, step) for tag, value, step in scalars(report)]
        for i in range(0, len(metrics), 1000):
            client.log_batch(run_id, metrics=metrics[i:i + 1000])
        with tempfile.TemporaryDirectory() as tmp:
            for name in ("report.json", "report.md", "report.html"):
                if out.exists(name):
                    with open(os.path.join(tmp, name), "wb") as fh:
                        fh.write(out.read_bytes(name))
            client.log_artifacts(run_id, tmp)
    except Exception:
        client.set_terminated(run_id, "FAILED")
        raise
    client.set_terminated(run_id)
    return run_id
