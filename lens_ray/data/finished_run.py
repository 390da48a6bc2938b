"""The one reader of a finished run, for work that re-uses its embeddings and models (the Tune search,
`--from-tune`, synthesis at scale, the learning curve, scoring). No Ray.

`FinishedRun.open(uri)` reads the run's config and embedding manifest; `.table(name)` and `.vae(seed)` read
verified artifacts. `.inputs()` re-ingests the run's data with the run's own settings (cheap, deterministic)
to recover what the embeddings do not hold — the prompts that group seed pairs into folds, the Best-of-N
gold scores — and checks the rows against the content keys the embeddings were stored under, so data that
changed since the run is refused instead of silently misaligned. Nothing is re-embedded.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from lens_ray.config import LensConfig, config_from_dict, fingerprint
from lens_ray.core.pairs import Pair
from lens_ray.core.records import Embedded, bon_draws, table_texts
from lens_ray.core.vae import PreferenceVAE
from lens_ray.data.embed import settings_key
from lens_ray.data.ingest import load_datasets
from lens_ray.store.artifacts import load_vae, read_pair_embeddings
from lens_ray.store.storage import Manifest, Storage, StorageError


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


@dataclass
class FinishedRun:
    uri: str
    store: Storage
    config: LensConfig
    embeddings: Manifest

    @classmethod
    def open(cls, uri: str) -> "FinishedRun":
        store = Storage(uri)
        if not store.exists("report.json"):
            raise StorageError(f"{uri}: no report.json; is it a finished lens-ray run?")
        cfg = config_from_dict(store.read_json("report.json")["config"])
        return cls(store.uri, store, cfg, Manifest.load(store.child("embeddings")))

    def table(self, name: str) -> tuple[np.ndarray, np.ndarray | None]:
        """A stored embedding table (seed, eval, bon), verified against its checksum."""
        pair = read_pair_embeddings(self.embeddings, name)
        if pair is None:
            raise StorageError(f"{self.uri}/embeddings/{name}.parquet: missing or corrupt; re-run the pipeline "
                               "(cached embeddings are reused)")
        return pair

    def vae(self, seed: int) -> PreferenceVAE | None:
        """The run's VAE for `seed`, or None if the run fitted none (no lens method)."""
        vaes = self.store.child("vae")
        return load_vae(vaes, f"seed-{seed}") if vaes.exists(f"seed-{seed}.json") else None

    def inputs(self) -> RunInputs:
        """The run's data, re-ingested and checked against its embeddings' content keys, with the embeddings."""
        cfg = self.config
        ds = load_datasets(cfg.data)
        draws, bon_gold = bon_draws(cfg, ds)
        tables = {}
        for name, rows in table_texts(ds, draws).items():
            stored = self.embeddings.files.get(f"{name}.parquet", {}).get("keys")
            if stored is None:
                raise StorageError(f"{self.uri}/embeddings/{name}.parquet: missing, or written by an older lens-ray "
                                   "without content keys; re-run the pipeline on it (cached embeddings are reused)")
            keys = [settings_key(self.embeddings.meta, prompt, response) for prompt, response in rows]
            if stored != fingerprint(keys):
                raise StorageError(f"{self.uri}/embeddings/{name}.parquet: does not hold the {name} texts that "
                                   f"{cfg.data.data} gives today under the run's settings (the data changed?); "
                                   "re-run the pipeline")
            tables[name] = self.table(name)
        bon = tables["bon"][0].reshape(*bon_gold.shape, -1) if "bon" in tables else None
        return RunInputs(self.uri, cfg, self.embeddings.meta, ds.seed_pairs,
                         Embedded(*tables["seed"], *tables["eval"], bon, bon_gold))


def load_run_inputs(uri: str) -> RunInputs:
    return FinishedRun.open(uri).inputs()
