"""One entry point for every augmentation method: a batch of source pairs in, synthetic embeddings
and exactly F pairs per source out. Pure, no Ray; `ray_data.py` runs it over Ray Data batches.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from lens_ray.baselines import ClassGaussian, direct_perturbation, gaussian_sampling
from lens_ray.config import AUGMENTING, SynthConfig
from lens_ray.models.vae import PreferenceVAE
from lens_ray.synth import combinatorial_pairs, lens_synthesize, synth_per_side


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
