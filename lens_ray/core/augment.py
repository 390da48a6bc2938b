"""Augmentation: every method's synthetic embeddings through one entry point (`Augmenter`), and the training
pairs a head learns from (`PairSet`: the real pairs, or real plus synthetic at an exact factor). Pure, no Ray;
`distributed/synthesis.py` runs the Augmenter over Ray Data batches.

Shapes: B = source pairs in a batch, k = synthetic embeddings per side, d = embedding dim, P = training pairs.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from lens_ray.config import AUGMENTING, SynthConfig
from lens_ray.core.baselines import ClassGaussian, direct_perturbation, gaussian_sampling
from lens_ray.core.synth import combinatorial_pairs, gather_pairs, lens_synthesize, synth_per_side
from lens_ray.core.vae import PreferenceVAE


@dataclass
class Augmenter:
    """What one (method, seed) needs to synthesize; fitted on the seed's training pairs."""
    method: str
    seed: int
    synth: SynthConfig
    vae: PreferenceVAE | None = None             # lens
    std: torch.Tensor | None = None              # direct_perturbation: (d,)
    gauss_pos: ClassGaussian | None = None       # gaussian_sampling
    gauss_neg: ClassGaussian | None = None

    @classmethod
    def fit(cls, method: str, seed: int, synth: SynthConfig, train_pos: torch.Tensor, train_neg: torch.Tensor,
            vae: PreferenceVAE | None = None) -> "Augmenter":
        """train_pos, train_neg: (n, d) training embeddings of the seed (never validation or eval)."""
        if method == "lens":
            if vae is None:
                raise ValueError("lens needs a fitted VAE")
            return cls(method, seed, synth, vae=vae)
        if method == "direct_perturbation":
            return cls(method, seed, synth, std=torch.cat([train_pos, train_neg]).std(0).clamp_min(1e-6))
        if method == "gaussian_sampling":
            pos, neg = (ClassGaussian.fit(e, synth.gs_covariance, synth.gs_shrinkage) for e in (train_pos, train_neg))
            return cls(method, seed, synth, gauss_pos=pos, gauss_neg=neg)
        raise ValueError(f"{method!r} does not augment; augmenting methods: {AUGMENTING}")

    def synthesize(self, e_pos: torch.Tensor, e_neg: torch.Tensor, pair_ids: np.ndarray,
                   factor: int) -> tuple[torch.Tensor, torch.Tensor, np.ndarray]:
        """(B, d) x2, (B,) ids -> synthetic (B, k, d) x2 and (B * factor, 3) pairs (see synth.py)."""
        k = synth_per_side(factor)
        syn_pos, syn_neg = self.draw(e_pos, e_neg, pair_ids, k)
        return syn_pos, syn_neg, combinatorial_pairs(pair_ids, k, factor, self.seed)

    def draw(self, e_pos: torch.Tensor, e_neg: torch.Tensor, pair_ids: np.ndarray,
             k: int) -> tuple[torch.Tensor, torch.Tensor]:
        """(B, d) x2, (B,) ids -> k synthetic embeddings per side (B, k, d) x2, labels inherited."""
        if self.method == "lens":
            return lens_synthesize(self.vae, e_pos, e_neg, pair_ids, k, self.synth, self.seed)
        if self.method == "direct_perturbation":
            return direct_perturbation(e_pos, e_neg, pair_ids, k, self.std, self.synth.dp_noise_var, self.seed)
        return gaussian_sampling(self.gauss_pos, self.gauss_neg, pair_ids, k, self.seed)


@dataclass
class PairSet:
    """Training pairs as embeddings: chosen, rejected (P, d); weight (P,) per pair in the BT loss; source (P,)
    the real pair each comes from and original (P,) whether it is that real pair (default: all are)."""
    pos: torch.Tensor
    neg: torch.Tensor
    weight: torch.Tensor | None = None
    source: np.ndarray | None = None
    original: torch.Tensor | None = None

    def __len__(self) -> int:
        return len(self.pos)

    def sources(self) -> np.ndarray:
        return self.source if self.source is not None else np.arange(len(self))

    def originals(self) -> torch.Tensor:
        return self.original if self.original is not None else torch.ones(len(self), dtype=torch.bool)


def augmented_set(pos: torch.Tensor, neg: torch.Tensor, syn_pos: torch.Tensor, syn_neg: torch.Tensor,
                  factor: int, seed: int, synthetic_weight: float) -> PairSet:
    """Real pairs (n, d) x2 and their synthetic embeddings (n, k, d) x2 -> the n * factor training pairs
    (originals included, see synth.combinatorial_pairs), synthetic ones weighted `synthetic_weight`."""
    pairs = combinatorial_pairs(np.arange(len(pos)), synth_per_side(factor), factor, seed)
    p, n, is_orig = gather_pairs(pos, neg, syn_pos, syn_neg, pairs)
    return PairSet(p, n, torch.where(is_orig, torch.tensor(1.0), torch.tensor(synthetic_weight)), pairs[:, 0], is_orig)


def training_pairs(method: str, factor: int, pos: torch.Tensor, neg: torch.Tensor, seed: int, synth: SynthConfig,
                   synthetic_weight: float, vae: PreferenceVAE | None = None) -> PairSet:
    """The pairs a head of `method` trains on, from the training pairs (n, d) x2: the real ones for `original`,
    else the real ones plus `method`'s synthetic ones at exactly `factor` (n * factor pairs)."""
    if method == "original":
        return PairSet(pos, neg)
    aug = Augmenter.fit(method, seed, synth, pos, neg, vae)
    syn_pos, syn_neg = aug.draw(pos, neg, np.arange(len(pos)), synth_per_side(factor))
    return augmented_set(pos, neg, syn_pos, syn_neg, factor, seed, synthetic_weight)
