"""pipelines/tensorboard.py: a run's figures as TensorBoard event files, read back with TensorBoard's own reader,
on local storage and on S3 (moto); and the shared run's own event files hold its report's figures."""
import os
import tempfile

import pytest
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from lens_ray.pipelines.tensorboard import FOLDER, scalars, write_events
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
    "selected": {"candidates": [{"candidate": "layer -1 linear", "kfold_accuracy": 0.64}],
                 "seeds": [{"seed": 0, "accuracy": 0.61, "bon_gold": None}, {"seed": 1, "accuracy": 0.62}]},
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
    assert {f"selection/kfold_accuracy/{c['candidate'].replace(' ', '_')}" for c in report["selected"]["candidates"]
            if c.get("kfold_accuracy") is not None} <= set(seen)
