"""A finished run's inputs, for work that re-uses its embeddings (the Tune search, `--from-tune`). No Ray.

The run's data is re-ingested with the run's own settings (cheap, deterministic) to recover what the
embeddings do not hold: the prompts that group seed pairs into folds, and the Best-of-N gold scores.
The re-ingested rows are checked against the content keys the embeddings were stored under, so data
that changed since the run is refused instead of silently misaligned. Nothing is re-embedded.
"""
from __future__ import annotations

from dataclasses import dataclass

from lens_ray.artifacts import read_pair_embeddings
from lens_ray.config import LensConfig, config_from_dict
from lens_ray.data import Pair, load_datasets
from lens_ray.embed import settings_key
from lens_ray.pipeline import Embedded, bon_draws, fingerprint, table_texts
from lens_ray.storage import Manifest, Storage, StorageError


@dataclass
class RunInputs:
    uri: str
    config: LensConfig
    settings: dict                 # the embeddings' settings (model, pooling, max_length[, dtype])
    seed_pairs: list[Pair]
    emb: Embedded                  # the run's stored embeddings (stats empty: nothing was embedded here)

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
    draws, bon_gold = bon_draws(cfg, ds)
    tables = {}
    for name, rows in table_texts(ds, draws).items():
        stored = manifest.files.get(f"{name}.parquet", {}).get("keys")
        if stored is None:
            raise StorageError(f"{uri}/embeddings/{name}.parquet: missing, or written by an older lens-ray without "
                               "content keys; re-run the pipeline on it (cached embeddings are reused)")
        if stored != fingerprint([settings_key(manifest.meta, prompt, response) for prompt, response in rows]):
            raise StorageError(f"{uri}/embeddings/{name}.parquet: does not hold the {name} texts that {cfg.data.data} "
                               "gives today under the run's settings (the data changed?); re-run the pipeline")
        tables[name] = read_pair_embeddings(manifest, name)
        if tables[name] is None:
            raise StorageError(f"{uri}/embeddings/{name}.parquet: corrupt; re-run the pipeline")
    bon = tables["bon"][0].reshape(*bon_gold.shape, -1) if "bon" in tables else None
    return RunInputs(uri, cfg, manifest.meta, ds.seed_pairs,
                     Embedded(*tables["seed"], *tables["eval"], bon, bon_gold, stats={}))
