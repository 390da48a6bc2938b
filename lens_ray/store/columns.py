"""Embeddings as Arrow columns: the fixed-size-list layout parquet stores natively. No Ray."""
from __future__ import annotations

import numpy as np
import pyarrow as pa


def embeddings_to_arrow(emb: np.ndarray, dtype: str = "float32") -> pa.Array:
    """(n, d) -> a fixed-size-list column."""
    flat = pa.array(np.ascontiguousarray(emb, dtype=np.dtype(dtype)).reshape(-1))
    return pa.FixedSizeListArray.from_arrays(flat, emb.shape[1])


def arrow_to_embeddings(col: pa.ChunkedArray | pa.Array) -> np.ndarray:
    """A fixed-size-list column -> (n, d) float32."""
    arr = col.combine_chunks() if isinstance(col, pa.ChunkedArray) else col
    d = arr.type.list_size
    return arr.flatten().to_numpy(zero_copy_only=False).astype(np.float32).reshape(-1, d)
