"""Augmentation: every method's synthetic embeddings through one entry point (`Augmenter`), and the training
pairs a head learns from (`PairSet`: the real pairs, or real plus synthetic at an exact factor). Pure, no Ray;
`distributed/synthesis.py` runs the Augmenter over Ray Data batches.

Shapes: B = source pairs in a batch, k = synthetic embeddings per side, d = embedding dim, P = training pairs.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable

import numpy as np
import torch

from lens_ray.config import AUGMENTING, SynthConfig
from lens_ray.core.baselines import ClassGaussian, direct_perturbation, gaussian_sampling
from lens_ray.core.synth import combinatorial_pairs, gather_pairs, lens_synthesize, synth_per_side
from lens_ray.core.vae import PreferenceVAE


@dataclass(frozen=True)
class Method:
    """One augmenting method. `fit(synth, train_pos, train_neg, vae)` -> its state, fitted on a seed's training
    pairs (n, d) x2 (never validation or eval); `draw(state, synth, e_pos, e_neg, pair_ids, k, seed)` -> k
    synthetic embeddings per side of each source pair, (B, d) x2 -> (B, k, d) x2, labels inherited and drawn from
    generators keyed by (seed, pair id). `vae`: the method needs the seed's fitted VAE."""
    fit: Callable[[SynthConfig, torch.Tensor, torch.Tensor, PreferenceVAE | None], Any]
    draw: Callable[..., tuple[torch.Tensor, torch.Tensor]]
    vae: bool = False


def _fit_lens(synth, train_pos, train_neg, vae):
    if vae is None:
        raise ValueError("lens needs a fitted VAE")
    return vae


def _draw_lens(vae, synth, e_pos, e_neg, pair_ids, k, seed):
    return lens_synthesize(vae, e_pos, e_neg, pair_ids, k, synth, seed)


def _fit_spread(synth, train_pos, train_neg, vae):
    return torch.cat([train_pos, train_neg]).std(0).clamp_min(1e-6)              # (d,)


def _draw_perturbed(std, synth, e_pos, e_neg, pair_ids, k, seed):
    return direct_perturbation(e_pos, e_neg, pair_ids, k, std, synth.dp_noise_var, seed)


def _fit_gaussians(synth, train_pos, train_neg, vae):
    return tuple(ClassGaussian.fit(e, synth.gs_covariance, synth.gs_shrinkage) for e in (train_pos, train_neg))


def _draw_gaussians(gaussians, synth, e_pos, e_neg, pair_ids, k, seed):
    return gaussian_sampling(*gaussians, pair_ids, k, seed)


# Every augmenting method: the one table fitting, synthesis at scale, the search and the selection read. A new
# method is one entry here and its name in config.AUGMENTING (the settings' choices), checked equal below.
AUGMENTERS: dict[str, Method] = {
    "direct_perturbation": Method(_fit_spread, _draw_perturbed),
    "gaussian_sampling": Method(_fit_gaussians, _draw_gaussians),
    "lens": Method(_fit_lens, _draw_lens, vae=True),
}
if tuple(AUGMENTERS) != AUGMENTING:
    raise ImportError(f"core.augment.AUGMENTERS {tuple(AUGMENTERS)} and config.AUGMENTING {AUGMENTING} differ")


def needs_vae(method: str) -> bool:
    """Whether `method` (any of config.METHODS) synthesizes from the seed's VAE."""
    return method in AUGMENTERS and AUGMENTERS[method].vae


@dataclass
class Augmenter:
    """What one (method, seed) needs to synthesize: its state, fitted on the seed's training pairs."""
    method: str
    seed: int
    synth: SynthConfig
    state: Any = None

    @classmethod
    def fit(cls, method: str, seed: int, synth: SynthConfig, train_pos: torch.Tensor, train_neg: torch.Tensor,
            vae: PreferenceVAE | None = None) -> "Augmenter":
        """train_pos, train_neg: (n, d) training embeddings of the seed (never validation or eval)."""
        if method not in AUGMENTERS:
            raise ValueError(f"{method!r} does not augment; augmenting methods: {', '.join(AUGMENTERS)}")
        return cls(method, seed, synth, AUGMENTERS[method].fit(synth, train_pos, train_neg, vae))

    def synthesize(self, e_pos: torch.Tensor, e_neg: torch.Tensor, pair_ids: np.ndarray,
                   factor: int) -> tuple[torch.Tensor, torch.Tensor, np.ndarray]:
        """(B, d) x2, (B,) ids -> synthetic (B, k, d) x2 and (B * factor, 3) pairs (see synth.py)."""
        k = synth_per_side(factor)
        syn_pos, syn_neg = self.draw(e_pos, e_neg, pair_ids, k)
        return syn_pos, syn_neg, combinatorial_pairs(pair_ids, k, factor, self.seed)

    def draw(self, e_pos: torch.Tensor, e_neg: torch.Tensor, pair_ids: np.ndarray,
             k: int) -> tuple[torch.Tensor, torch.Tensor]:
        """(B, d) x2, (B,) ids -> k synthetic embeddings per side (B, k, d) x2, labels inherited."""
        return AUGMENTERS[self.method].draw(self.state, self.synth, e_pos, e_neg, pair_ids, k, self.seed)


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
