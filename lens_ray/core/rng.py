"""Randomness keyed by (seed, stream, id...): a draw never depends on how work is batched or sharded. No Ray.

Each purpose has its own stream, so adding draws for one purpose never shifts another's.
"""
from __future__ import annotations

import numpy as np

# streams: one per purpose (their numbers are part of every stored result's identity; never reuse one)
(NOISE, PAIRING, SEED_EVAL, VAL_SPLIT, FOLDS, INNER_SPLIT, SCORED_SPLIT, SCORED_PAIRS, BON_DRAWS, SUBSETS,
 BATCHES, SELECTION) = range(1, 13)


def keyed_rng(seed: int, stream: int, *ids: int) -> np.random.Generator:
    """The generator of (seed, stream, ids...)."""
    return np.random.default_rng([int(seed), int(stream), *(int(i) for i in ids)])


def pair_normals(seed: int, stream: int, pair_ids: np.ndarray, shape: tuple[int, ...]) -> np.ndarray:
    """Standard normals (B, *shape), float32, row i from pair_ids[i]'s own generator."""
    return np.stack([keyed_rng(seed, stream, p).standard_normal(shape, dtype=np.float32) for p in pair_ids])
