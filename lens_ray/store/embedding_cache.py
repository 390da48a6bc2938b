"""Content-addressed embedding cache in storage: a (model, pooling, max length, dtype, text) is embedded
once, across runs and data sets. No Ray.

Layout: <cache>/<sha of settings>/settings.json, and per shard shard-<id>.parquet (key: string, embedding:
fixed-size list) with its commit record shard-<id>.json (checksum, rows), written after the shard. Every
writer commits its own records, so any number of jobs can add to one cache at once and none loses
another's shards (there is no shared index to overwrite). A shard counts once its record exists and its
checksum verifies; a corrupt shard is forgotten and its texts embedded again. A manifest.json written by
an older lens-ray is still read.
"""
from __future__ import annotations

import hashlib
import json
import uuid

import numpy as np
import pyarrow as pa

from lens_ray.store.columns import arrow_to_embeddings, embeddings_to_arrow
from lens_ray.store.storage import Storage, StorageError

SETTINGS, LEGACY_MANIFEST = "settings.json", "manifest.json"


class EmbeddingCache:
    def __init__(self, root: Storage, settings: dict):
        self.settings = settings
        digest = hashlib.sha256(json.dumps(settings, sort_keys=True).encode()).hexdigest()[:16]
        self.store = root.child(digest)
        self.dtype = settings.get("storage_dtype", "float32")
        found = {name: self.store.read_record(name) for name in (SETTINGS, LEGACY_MANIFEST)}  # torn: as if none
        for name, stored in found.items():
            stored = stored.get("meta") if stored is not None and name == LEGACY_MANIFEST else stored
            if stored is not None and stored != settings:
                raise StorageError(f"{self.store.uri_of(name)} was written with other settings {stored}")
        if found[SETTINGS] is None:
            # the folder's name is the digest of these settings, so rewriting a torn file loses nothing
            self.store.write_json(SETTINGS, settings)       # concurrent writers write the same bytes

    def committed(self) -> dict[str, dict]:
        """Shard name -> its commit record (sha256, rows), over every writer's records."""
        found = {}
        legacy = self.store.read_record(LEGACY_MANIFEST) or {}
        found.update({k: v for k, v in (legacy.get("files") or {}).items() if _is_record(v)})
        for name in self.store.listdir():
            if name.startswith("shard-") and name.endswith(".json"):
                record = self.store.read_record(name)
                if _is_record(record):
                    found[name[:-len(".json")] + ".parquet"] = record
                else:                                        # torn, or valid JSON but not a record ([]): forgotten,
                    self.store.delete(name)                  # its texts embedded again, never a traceback later
        return found

    def lookup(self, keys: list[str]) -> dict[str, np.ndarray]:
        """The cached vectors among `keys` (verified shards only; a corrupt shard is forgotten)."""
        wanted, found = set(keys), {}
        for name, info in self.committed().items():
            try:
                table = self.store.read_parquet(name, info["sha256"])
            except (StorageError, KeyError):
                self._forget(name)
                continue
            shard_keys = table.column("key").to_pylist()
            if not wanted.intersection(shard_keys):
                continue
            emb = arrow_to_embeddings(table.column("embedding"))
            for k, v in zip(shard_keys, emb):
                if k in wanted:
                    found[k] = v
        return found

    def add(self, keys: list[str], emb: np.ndarray) -> None:
        """Commit vectors (n, d) under their keys: the shard first, then its record."""
        if not keys:
            return
        table = pa.table({"key": pa.array(keys), "embedding": embeddings_to_arrow(emb, self.dtype)})
        name = f"shard-{uuid.uuid4().hex[:12]}"
        info = self.store.write_parquet(f"{name}.parquet", table)
        self.store.write_json(f"{name}.json", info)

    def _forget(self, name: str) -> None:
        record = name[:-len(".parquet")] + ".json"
        if self.store.exists(record):
            self.store.delete(record)


def _is_record(record) -> bool:
    return isinstance(record, dict) and isinstance(record.get("sha256"), str)
