"""A finished run's inputs, for work that re-uses its embeddings (the Tune search, `--from-tune`). No Ray.

The run's data is re-ingested with the run's own settings (cheap, deterministic) to recover what the
embeddings do not hold: the prompts that group seed pairs into folds, and the Best-of-N gold scores.
The re-ingested rows are checked against the content keys the embeddings were stored under, so data
that changed since the run is refused instead of silently misaligned. Nothing is re-embedded.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from lens_ray.artifacts import read_pair_embeddings
from lens_ray.config import LensConfig, config_from_dict
from lens_ray.data import Pair, load_datasets
from lens_ray.embed import settings_key
from lens_ray.pipeline import bon_draws, fingerprint, pair_digest
from lens_ray.storage import Manifest, Storage, StorageError


@dataclass
class RunInputs:
    uri: str
    config: LensConfig
    settings: dict                 # the embeddings' settings (model, pooling, max_length[, dtype])
    seed_pairs: list[Pair]
    seed_pos: np.ndarray           # (n_seed, d)
    seed_neg: np.ndarray
    eval_pos: np.ndarray           # (n_eval, d)
    eval_neg: np.ndarray
    bon: np.ndarray | None         # (Q, N, d)
    bon_gold: np.ndarray | None    # (Q, N)

    @property
    def groups(self) -> list[str]:
        return [p.group for p in self.seed_pairs]


def load_run_inputs(uri: str) -> RunInputs:
    store = Storage(uri)
    if not store.exists("report.json"):
        raise StorageError(f"{uri}: no report.json; is it a finished lens-ray run?")
    cfg = config_from_dict(store.read_json("report.json")["config"])
    ds = load_datasets(cfg.data)
    manifest = Manifest.load(store.child("embeddings"))
    tables = {}
    for name, pairs in (("seed", ds.seed_pairs), ("eval", ds.eval_pairs)):
        stored = manifest.files.get(f"{name}.parquet", {}).get("keys")
        if stored is None:
            raise StorageError(f"{uri}/embeddings/{name}.parquet: written by an older lens-ray without content keys; "
                               "re-run the pipeline on it (cached embeddings are reused)")
        if stored != pair_digest(manifest.meta, pairs):
            raise StorageError(f"{uri}/embeddings/{name}.parquet: does not hold the {name} pairs that {cfg.data.data} "
                               "gives today under the run's settings (the data changed?); re-run the pipeline")
        tables[name] = read_pair_embeddings(manifest, name)
        if tables[name] is None:
            raise StorageError(f"{uri}/embeddings/{name}.parquet: missing or corrupt; re-run the pipeline")
    draws, bon_gold = bon_draws(cfg, ds)
    bon = None
    if bon_gold is not None:
        keys = [settings_key(manifest.meta, sp.prompt, sp.outputs[j]) for sp, d in zip(ds.bon_prompts, draws) for j in d]
        stored = read_pair_embeddings(manifest, "bon")
        if manifest.files.get("bon.parquet", {}).get("keys") != fingerprint(keys) or stored is None:
            raise StorageError(f"{uri}/embeddings/bon.parquet: missing, corrupt or not the Best-of-N responses the "
                               "data gives today; re-run the pipeline")
        bon = stored[0].reshape(*bon_gold.shape, -1)
    return RunInputs(uri, cfg, manifest.meta, ds.seed_pairs, *tables["seed"], *tables["eval"], bon, bon_gold)
