"""A run's figures as TensorBoard event files, in `<run>/tensorboard/` (local or S3): point `tensorboard --logdir`
at a folder of runs to compare them. Written from the report once it is complete, so they hold exactly its
figures. No Ray.

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

from lens_ray.store.storage import Storage

FOLDER = "tensorboard"


def scalars(report: dict) -> list[tuple[str, float, int]]:
    """(tag, value, step) of every figure of the report that TensorBoard shows; nothing that is None."""
    out: list[tuple[str, float, int]] = []
    for row in report.get("summary", []):
        name = f"{row['method']}-{row.get('head_kind', 'mlp')}"
        for metric in ("accuracy", "bon_gold"):
            if row.get(metric):
                out.append((f"{metric}/{name}", row[metric]["mean"], int(row["factor"])))
    for r in report.get("results", []):
        if r.get("accuracy") is not None:
            out.append((f"seeds/accuracy/{r['method']}-f{r['factor']}-{r.get('head_kind', 'mlp')}", r["accuracy"],
                        int(r["seed"])))
    sel = report.get("selected") or {}
    for c in sel.get("candidates", []):
        if c.get("kfold_accuracy") is not None:
            out.append((f"selection/kfold_accuracy/{c['candidate']}", c["kfold_accuracy"], 0))
    for r in sel.get("seeds") or []:
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
