"""The latent baselines of the LENS paper. Pure numpy/torch, no Ray.

Both produce k synthetic embeddings per side per source pair, (B, k, d), with the same per-pair
seeding as LENS, so they go through the same exact-factor pairing (`synth.combinatorial_pairs`).
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch

from lens_ray.core.rng import NOISE, pair_normals


@torch.no_grad()
def direct_perturbation(e_pos: torch.Tensor, e_neg: torch.Tensor, pair_ids: np.ndarray, k: int,
                        std: torch.Tensor, noise_var: float, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """e + sqrt(noise_var) * std * eps, eps ~ N(0, I): (B, d) x2 -> (B, k, d) x2.

    std (d,) is the per-dimension spread of the training embeddings, so noise_var is relative to
    each dimension's scale (LLM hidden states have outlier dimensions orders of magnitude larger).
    """
    b, d = e_pos.shape
    eps = torch.from_numpy(pair_normals(seed, NOISE, pair_ids, (2, k, d))).to(e_pos)
    scale = math.sqrt(noise_var) * std
    return e_pos[:, None] + scale * eps[:, 0], e_neg[:, None] + scale * eps[:, 1]


@dataclass
class ClassGaussian:
    """N(mean, cov) fitted to one class; cov is full with shrinkage toward its diagonal, or diagonal."""
    mean: torch.Tensor       # (d,)
    chol: torch.Tensor       # (d, d) lower Cholesky factor of cov

    @classmethod
    def fit(cls, e: torch.Tensor, covariance: str = "full", shrinkage: float = 0.1) -> "ClassGaussian":
        e = e.double()
        mean = e.mean(0)
        x = e - mean
        var = x.pow(2).mean(0).clamp_min(1e-10)
        if covariance == "diag":
            cov = torch.diag(var)
        else:
            cov = (1 - shrinkage) * (x.T @ x) / max(len(e) - 1, 1) + shrinkage * torch.diag(var)
        cov = cov + 1e-6 * var.mean() * torch.eye(len(mean), dtype=cov.dtype)
        return cls(mean.float(), torch.linalg.cholesky(cov).float())

    def transform(self, eps: torch.Tensor) -> torch.Tensor:
        """Standard normals (..., d) -> samples (..., d)."""
        return self.mean + eps @ self.chol.T


@torch.no_grad()
def gaussian_sampling(pos: ClassGaussian, neg: ClassGaussian, pair_ids: np.ndarray, k: int,
                      seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """New embeddings drawn from the chosen / rejected class Gaussians: -> (B, k, d) x2.

    The draws ignore the source pair's own embeddings (as the paper's baseline does); they only
    take its slot in the within-prompt pairing.
    """
    d = pos.mean.shape[0]
    eps = torch.from_numpy(pair_normals(seed, NOISE, pair_ids, (2, k, d)))
    return pos.transform(eps[:, 0]), neg.transform(eps[:, 1])
