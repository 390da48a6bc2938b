"""Content-addressed embedding cache in storage: a (model, pooling, max length, text) is embedded once,
across runs and data sets. No Ray.

Layout: <cache>/<sha of settings>/manifest.json + shard-*.parquet (key: string, embedding: fixed-size
list of float32/float16). A shard counts once committed in the manifest with its checksum; a corrupt
shard is forgotten and its texts embedded again.
"""
from __future__ import annotations

import hashlib
import json
import uuid

import numpy as np
import pyarrow as pa

from lens_ray.storage import Manifest, Storage


def embeddings_to_arrow(emb: np.ndarray, dtype: str = "float32") -> pa.Array:
    """(n, d) -> a fixed-size-list column: the fixed-shape tensor layout parquet stores natively."""
    flat = pa.array(np.ascontiguousarray(emb, dtype=np.dtype(dtype)).reshape(-1))
    return pa.FixedSizeListArray.from_arrays(flat, emb.shape[1])


def arrow_to_embeddings(col: pa.ChunkedArray | pa.Array) -> np.ndarray:
    """A fixed-size-list column -> (n, d) float32."""
    arr = col.combine_chunks() if isinstance(col, pa.ChunkedArray) else col
    d = arr.type.list_size
    return arr.flatten().to_numpy(zero_copy_only=False).astype(np.float32).reshape(-1, d)


class EmbeddingCache:
    def __init__(self, root: Storage, settings: dict):
        self.settings = settings
        digest = hashlib.sha256(json.dumps(settings, sort_keys=True).encode()).hexdigest()[:16]
        self.store = root.child(digest)
        self.manifest = Manifest.open(self.store, settings)
        self.dtype = settings.get("storage_dtype", "float32")

    def lookup(self, keys: list[str]) -> dict[str, np.ndarray]:
        """The cached vectors among `keys` (verified shards only)."""
        wanted, found = set(keys), {}
        for name in list(self.manifest.files):
            table = self.manifest.read_parquet(name)
            if table is None:
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
        if not keys:
            return
        table = pa.table({"key": pa.array(keys), "embedding": embeddings_to_arrow(emb, self.dtype)})
        name = f"shard-{uuid.uuid4().hex[:12]}.parquet"
        info = self.manifest.store.write_parquet(name, table)
        self.manifest.commit(name, info)
