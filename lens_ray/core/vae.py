"""PreferenceVAE and the LENS loss terms. Pure torch, no Ray.

Shapes: B = batch of pairs, d = embedding dim, k = latent dim.
The VAE works on raw embeddings: it standardizes inputs with buffers fitted on training data and
de-standardizes its outputs, so every caller stays in the LLM's embedding space.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from lens_ray.config import VAEConfig


def mlp(dims: list[int], dropout: float = 0.0) -> nn.Sequential:
    """Linear layers with GELU between them (none after the last)."""
    layers: list[nn.Module] = []
    for i, (a, b) in enumerate(zip(dims[:-1], dims[1:])):
        layers.append(nn.Linear(a, b))
        if i < len(dims) - 2:
            layers.append(nn.GELU())
            if dropout > 0:
                layers.append(nn.Dropout(dropout))
    return nn.Sequential(*layers)


class Standardizer(nn.Module):
    """Per-dimension (e - mean) / std with buffers, so it saves and loads with the model."""

    def __init__(self, dim: int):
        super().__init__()
        self.register_buffer("mean", torch.zeros(dim))
        self.register_buffer("std", torch.ones(dim))

    @torch.no_grad()
    def fit(self, e: torch.Tensor) -> "Standardizer":  # e: (n, d)
        self.mean.copy_(e.mean(0))
        self.std.copy_(e.std(0).clamp_min(1e-6))
        return self

    def forward(self, e: torch.Tensor) -> torch.Tensor:
        return (e - self.mean) / self.std

    def inverse(self, x: torch.Tensor) -> torch.Tensor:
        return x * self.std + self.mean


class PreferenceVAE(nn.Module):
    """e (d) -> q(z|e) = N(mu, diag(exp(logvar))) (k) -> e_hat (d)."""

    def __init__(self, dim: int, latent_dim: int = VAEConfig.latent_dim,
                 hidden_dims: tuple[int, ...] = VAEConfig.hidden_dims):
        super().__init__()
        self.dim, self.latent_dim, self.hidden_dims = dim, latent_dim, tuple(hidden_dims)
        self.norm = Standardizer(dim)
        self.encoder = mlp([dim, *hidden_dims, 2 * latent_dim])
        self.decoder = mlp([latent_dim, *reversed(hidden_dims), dim])

    def encode(self, e: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """e: (..., d) -> mu, logvar: (..., k)."""
        mu, logvar = self.encoder(self.norm(e)).chunk(2, dim=-1)
        return mu, logvar.clamp(-12.0, 8.0)

    def decode_std(self, z: torch.Tensor) -> torch.Tensor:
        """z: (..., k) -> standardized reconstruction (..., d)."""
        return self.decoder(z)

    def decode(self, z: torch.Tensor) -> torch.Tensor:
        """z: (..., k) -> e_hat in embedding space (..., d)."""
        return self.norm.inverse(self.decoder(z))

    def forward(self, e: torch.Tensor, sample: bool = True):
        """e: (..., d) -> (x_hat standardized (..., d), mu, logvar (..., k))."""
        mu, logvar = self.encode(e)
        z = mu + torch.randn_like(mu) * (0.5 * logvar).exp() if sample else mu
        return self.decode_std(z), mu, logvar

    def config(self) -> dict:
        return {"dim": self.dim, "latent_dim": self.latent_dim, "hidden_dims": list(self.hidden_dims)}

    @classmethod
    def from_config(cls, config: dict) -> "PreferenceVAE":
        """A VAE from a stored `config()`, its sizes bounded before anything is allocated."""
        dims = [config.get("dim"), config.get("latent_dim"), *(config.get("hidden_dims") or [])]
        bounded_sizes("VAE config", dims, max_layers=10)
        return cls(config["dim"], config["latent_dim"], tuple(config["hidden_dims"]))


MAX_WIDTH, MAX_PARAMS = 1 << 17, 1 << 27


def bounded_sizes(what: str, sizes: list, max_layers: int) -> None:
    """Layer sizes read from storage: positive ints, not too wide, not too many parameters in all."""
    if len(sizes) > max_layers + 2 or not all(isinstance(s, int) and not isinstance(s, bool)
                                              and 1 <= s <= MAX_WIDTH for s in sizes):
        raise ValueError(f"{what}: sizes {sizes} out of bounds (1..{MAX_WIDTH}, at most {max_layers} layers)")
    if sum(a * b for a, b in zip(sizes[:-1], sizes[1:])) > MAX_PARAMS:
        raise ValueError(f"{what}: sizes {sizes} give more than {MAX_PARAMS} parameters")


def kl_to_standard_normal(mu: torch.Tensor, logvar: torch.Tensor) -> torch.Tensor:
    """KL(N(mu, exp(logvar)) || N(0, I)), summed over the latent dim: (..., k) -> (...)."""
    return 0.5 * (mu.pow(2) + logvar.exp() - 1.0 - logvar).sum(-1)


def reconstruction(x: torch.Tensor, x_hat: torch.Tensor, kind: str = "mse", reduction: str = "sum") -> torch.Tensor:
    """Per-embedding reconstruction error in standardized space: (..., d) x2 -> (...).

    mse/sum is the unit-variance Gaussian log-likelihood up to constants, which makes beta=1 the
    ELBO; mse/mean divides it by d. cosine is 1 - cos(x, x_hat) (times d under "sum").
    """
    if kind == "mse":
        err = (x - x_hat).pow(2)
        return err.sum(-1) if reduction == "sum" else err.mean(-1)
    if kind == "cosine":
        err = 1.0 - F.cosine_similarity(x, x_hat, dim=-1)
        return err * x.shape[-1] if reduction == "sum" else err
    raise ValueError(f"unknown reconstruction {kind!r}")


def w2_diag_gaussians(mu_a, logvar_a, mu_b, logvar_b, eps: float = 1e-8) -> torch.Tensor:
    """2-Wasserstein distance between diagonal Gaussians: (..., k) x4 -> (...).

    W2^2 = ||mu_a - mu_b||^2 + ||sigma_a - sigma_b||^2; eps keeps the sqrt differentiable at 0.
    """
    sa, sb = (0.5 * logvar_a).exp(), (0.5 * logvar_b).exp()
    w2_sq = (mu_a - mu_b).pow(2).sum(-1) + (sa - sb).pow(2).sum(-1)
    return (w2_sq + eps).sqrt()


def bounded_divergence(w2: torch.Tensor, bound: str = VAEConfig.div_bound,
                       div_max: float = VAEConfig.div_max) -> torch.Tensor:
    """The LENS divergence term per pair, bounded below: (B,) -> (B,).

    -W2 is unbounded below, so minimizing it would push pairs apart forever. clamp: -min(W2, max),
    no gradient once a pair is max apart. margin: relu(max - W2), zero once a pair is max apart.
    Both have the same gradient inside the bound; they differ only by a constant.
    """
    if bound == "clamp":
        return -w2.clamp(max=div_max)
    if bound == "margin":
        return F.relu(div_max - w2)
    raise ValueError(f"unknown divergence bound {bound!r}")


@dataclass
class VAELoss:
    total: torch.Tensor
    recon: torch.Tensor
    kl: torch.Tensor
    div: torch.Tensor
    w2: torch.Tensor


def lens_vae_loss(vae: PreferenceVAE, e_pos: torch.Tensor, e_neg: torch.Tensor, beta: float = VAEConfig.beta,
                  gamma: float = VAEConfig.gamma, recon: str = VAEConfig.recon,
                  reduction: str = VAEConfig.recon_reduction, div_bound: str = VAEConfig.div_bound,
                  div_max: float = VAEConfig.div_max, forward: nn.Module | None = None) -> VAELoss:
    """L = mean_i [L_vae(e_i+) + L_vae(e_i-)] + gamma * mean_i bounded(-W2(q(z|e_i+), q(z|e_i-))).

    e_pos, e_neg: (B, d) chosen / rejected embeddings of the same B pairs. `forward` is the module
    that runs the pass (a DDP wrapper of `vae` under data parallelism; `vae` itself by default).
    """
    e = torch.cat([e_pos, e_neg], 0)                       # (2B, d): one forward pass for both
    x_hat, mu, logvar = (forward or vae)(e)
    x = vae.norm(e)
    rec = reconstruction(x, x_hat, recon, reduction)       # (2B,)
    kl = kl_to_standard_normal(mu, logvar)                  # (2B,)
    b = e_pos.shape[0]
    w2 = w2_diag_gaussians(mu[:b], logvar[:b], mu[b:], logvar[b:])  # (B,)
    div = bounded_divergence(w2, div_bound, div_max)
    per_pair = (rec[:b] + rec[b:]) + beta * (kl[:b] + kl[b:])
    total = per_pair.mean() + gamma * div.mean()
    return VAELoss(total, rec.mean(), kl.mean(), div.mean(), w2.mean())


@torch.no_grad()
def relative_reconstruction_error(vae: PreferenceVAE, e: torch.Tensor) -> float:
    """||x - g(mu(x))||^2 / ||x - mean||^2 in standardized space: 0 is perfect, 1 is the mean."""
    x = vae.norm(e)
    mu, _ = vae.encode(e)
    x_hat = vae.decode_std(mu)
    denom = (x - x.mean(0)).pow(2).sum().clamp_min(1e-12)
    return float((x - x_hat).pow(2).sum() / denom)


def log_normal_density(x: torch.Tensor, mu: torch.Tensor | float = 0.0,
                       logvar: torch.Tensor | float = 0.0) -> torch.Tensor:
    """log N(x; mu, diag(exp(logvar))) summed over the last dim: (..., k) -> (...)."""
    logvar = torch.as_tensor(logvar, dtype=x.dtype, device=x.device)
    return (-0.5 * ((x - mu).pow(2) / logvar.exp() + logvar + math.log(2 * math.pi))).sum(-1)
