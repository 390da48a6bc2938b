"""Synthesis at scale: pair j of N as a pure function of (augmenter, sources, k, j). No Ray.

A *unit* is one draw of k synthetic embeddings per side from one source pair; it makes
P = (k+1)^2 - 1 synthetic pairs (every within-prompt combination but the original). Pair j belongs
to unit u = j // P, combination c = j % P, and unit u draws from source pair u % n_src with the
per-pair generator of id u, so any range of pairs can be produced anywhere, in any batching.

- materialized: the pair's embeddings, (n, d) x2.
- seeded: only (unit, source, a, b) ints per pair, 14 bytes; `decode_seeded` rebuilds the embeddings
  on the fly (e.g. while the reward model trains).
"""
from __future__ import annotations

import numpy as np
import torch

from lens_ray.core.augment import Augmenter
from lens_ray.core.synth import gather_pairs, slot_combos


def seeded_pairs(start: int, stop: int, n_src: int, k: int) -> dict[str, np.ndarray]:
    """Pairs [start, stop) as ids: unit (int64), source (int32), a, b (int8)."""
    j = np.arange(start, stop, dtype=np.int64)
    cmb = slot_combos(k).astype(np.int8)
    unit = j // len(cmb)
    ab = cmb[j % len(cmb)]
    return {"unit": unit, "source": (unit % n_src).astype(np.int32), "a": ab[:, 0], "b": ab[:, 1]}


def decode_seeded(aug: Augmenter, src_pos: torch.Tensor, src_neg: torch.Tensor, unit: np.ndarray, a: np.ndarray,
                  b: np.ndarray, k: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Seeded pairs -> chosen, rejected (n, d). Each distinct unit is decoded once."""
    units, inverse = np.unique(unit, return_inverse=True)
    src = units % len(src_pos)
    # synthesize with the unit id as the pair id: its own generator, whatever the batch
    syn_pos, syn_neg = aug.draw(src_pos[src], src_neg[src], units, k)
    pos, neg, _ = gather_pairs(src_pos[src], src_neg[src], syn_pos, syn_neg, np.stack([inverse, a, b], 1))
    return pos, neg


def materialize(aug: Augmenter, src_pos: torch.Tensor, src_neg: torch.Tensor, start: int, stop: int,
                k: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Pairs [start, stop) -> chosen, rejected (stop - start, d)."""
    ids = seeded_pairs(start, stop, len(src_pos), k)
    return decode_seeded(aug, src_pos, src_neg, ids["unit"], ids["a"], ids["b"], k)
