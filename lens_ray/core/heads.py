"""Reward heads r(e) on embeddings, their Bradley-Terry loss, and the rewards they give. Pure torch, no Ray.

A new kind of head goes here: an `nn.Module` (..., d) -> (...) with a `config()` that `build_head` rebuilds
from, bounded, when a stored head is loaded. `linear_head.py` fits the linear head's weights.

Shapes: B = batch of pairs, n = embeddings, d = embedding dim.
"""
from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from lens_ray.config import RewardConfig
from lens_ray.core.vae import Standardizer, bounded_sizes, mlp


class RewardHead(nn.Module):
    """r(e): (..., d) -> (...). An MLP on standardized embeddings."""

    def __init__(self, dim: int, hidden_dim: int = RewardConfig.hidden_dim, depth: int = RewardConfig.depth,
                 dropout: float = RewardConfig.dropout):
        super().__init__()
        self.dim, self.hidden_dim, self.depth, self.dropout = dim, hidden_dim, depth, dropout
        self.norm = Standardizer(dim)
        self.net = mlp([dim] + [hidden_dim] * depth + [1], dropout=dropout)

    def forward(self, e: torch.Tensor) -> torch.Tensor:
        return self.net(self.norm(e)).squeeze(-1)

    def config(self) -> dict:
        return {"kind": "mlp", "dim": self.dim, "hidden_dim": self.hidden_dim, "depth": self.depth,
                "dropout": self.dropout}


class LinearScorer(nn.Module):
    """r(e) = w . e: the zero-training `mean_diff` scorer (w = mean(chosen) - mean(rejected)) and the fitted
    linear Bradley-Terry head (linear_head.py)."""

    def __init__(self, w: torch.Tensor):  # w: (d,)
        super().__init__()
        self.register_buffer("w", w.clone())
        self.dim = w.shape[0]

    def forward(self, e: torch.Tensor) -> torch.Tensor:
        return e @ self.w

    def config(self) -> dict:
        return {"kind": "linear", "dim": self.dim}


class EnsembleHead(nn.Module):
    """r(e) = mean over members k of (r_k(e's layers `layers[k]`) - mean_k) / std_k: the members' rewards, each
    standardized by its own training-reward statistics (`reward_scale`), averaged.

    e: (..., L * width), L layers' embeddings of `width` dims each, concatenated (embed.layer_combine=concat);
    member k reads the layers `layers[k]` (indices into the L, in its own order), concatenated: (..., len * width).
    """

    def __init__(self, members: list[nn.Module], layers: list[list[int]], width: int, scales: list[dict]):
        super().__init__()
        if not (len(members) == len(layers) == len(scales) >= 1):
            raise ValueError(f"ensemble: {len(members)} members, {len(layers)} layer lists, {len(scales)} scales")
        self.members = nn.ModuleList(members)
        self.layers, self.width = [list(x) for x in layers], width
        self.dim = width * (1 + max(i for x in self.layers for i in x))
        self.register_buffer("mean", torch.tensor([s["mean"] for s in scales], dtype=torch.float32))
        self.register_buffer("std", torch.tensor([max(s["std"], 1e-12) for s in scales], dtype=torch.float32))

    def forward(self, e: torch.Tensor) -> torch.Tensor:
        x = e.unflatten(-1, (-1, self.width))                                        # (..., L, width)
        r = torch.stack([m(x[..., idx, :].flatten(-2)) for m, idx in zip(self.members, self.layers)], -1)
        return ((r - self.mean) / self.std).mean(-1)                                 # (..., K) -> (...)

    def config(self) -> dict:
        return {"kind": "ensemble", "dim": self.dim, "width": self.width, "layers": self.layers,
                "members": [m.config() for m in self.members]}


def mean_diff_direction(e_pos: torch.Tensor, e_neg: torch.Tensor) -> torch.Tensor:
    """(n, d) x2 -> (d,): the mean chosen minus the mean rejected embedding."""
    return e_pos.mean(0) - e_neg.mean(0)


def mean_diff_head(e_pos: torch.Tensor, e_neg: torch.Tensor) -> LinearScorer:
    """The zero-training head of training pairs (n, d) x2: r(e) = (mean chosen - mean rejected) . e."""
    return LinearScorer(mean_diff_direction(e_pos, e_neg))


@torch.no_grad()
def rewards(head: nn.Module, e: torch.Tensor, batch: int = 4096) -> np.ndarray:
    """A head's rewards (n,) of embeddings (n, d), in eval mode."""
    head.eval()
    return torch.cat([head(e[i:i + batch]) for i in range(0, len(e), batch)]).numpy() if len(e) else np.zeros(0)


def reward_scale(r: np.ndarray) -> dict:
    """The statistics a head's rewards are standardized with: mean and std of its rewards (n,) on its training
    responses (chosen and rejected alike), stored with the head."""
    return {"mean": float(np.mean(r)), "std": float(np.std(r))}


def standardize(r: np.ndarray, scale: dict) -> np.ndarray:
    """Rewards (n,) on one scale for every head: (r - mean) / std with `reward_scale`'s statistics, so the
    training responses' rewards have mean 0 and std 1 (a constant head's std is floored, not divided by)."""
    return (r - scale["mean"]) / max(scale["std"], 1e-12)


def bradley_terry_loss(r_pos: torch.Tensor, r_neg: torch.Tensor,
                       weight: torch.Tensor | None = None) -> torch.Tensor:
    """-E[w * log sigmoid(r+ - r-)] / E[w]: (B,) x2 [+ (B,)] -> scalar."""
    nll = -F.logsigmoid(r_pos - r_neg)
    if weight is None:
        return nll.mean()
    return (nll * weight).sum() / weight.sum().clamp_min(1e-12)


def pointwise_loss(r_pos: torch.Tensor, r_neg: torch.Tensor, weight: torch.Tensor | None = None) -> torch.Tensor:
    """Each response classified on its own, chosen 1 and rejected 0 (Sun et al., ICLR 2025):
    -E[w * (log sigmoid(r+) + log sigmoid(-r-)) / 2] / E[w]: (B,) x2 [+ (B,)] -> scalar."""
    nll = -(F.logsigmoid(r_pos) + F.logsigmoid(-r_neg)) / 2
    if weight is None:
        return nll.mean()
    return (nll * weight).sum() / weight.sum().clamp_min(1e-12)


LOSS = {"bradley_terry": bradley_terry_loss, "pointwise": pointwise_loss}


def build_head(config: dict) -> nn.Module:
    """Rebuild a head from its saved `config()` (weights loaded separately); sizes read from storage are
    bounded before anything is allocated."""
    kind = config.get("kind")
    if kind == "ensemble":
        return _build_ensemble(config)
    if kind == "linear":
        bounded_sizes("head config", [config.get("dim"), 1], max_layers=0)
        return LinearScorer(torch.zeros(config["dim"]))
    if kind != "mlp":
        raise ValueError(f"head config: unknown kind {kind!r}")
    depth, dropout = config.get("depth"), config.get("dropout")
    if not (isinstance(depth, int) and 1 <= depth <= 16 and isinstance(dropout, (int, float)) and 0 <= dropout < 1):
        raise ValueError(f"head config: depth {depth!r} or dropout {dropout!r} out of bounds")
    bounded_sizes("head config", [config.get("dim")] + [config.get("hidden_dim")] * depth + [1], max_layers=16)
    return RewardHead(config["dim"], config["hidden_dim"], depth, float(dropout))


MAX_MEMBERS = 64


def _build_ensemble(config: dict) -> EnsembleHead:
    """An ensemble's members (none an ensemble itself), each checked to read `width` x its layers' dims."""
    members, layers, width = config.get("members"), config.get("layers"), config.get("width")
    if not (isinstance(members, list) and isinstance(layers, list) and 1 <= len(members) == len(layers) <= MAX_MEMBERS
            and isinstance(width, int) and not isinstance(width, bool) and width >= 1
            and all(isinstance(x, list) and x and all(isinstance(i, int) and 0 <= i < 256 for i in x) for x in layers)
            and all(isinstance(m, dict) and m.get("kind") != "ensemble" for m in members)):
        raise ValueError("head config: an ensemble's members, layers or width out of bounds")
    built = [build_head(m) for m in members]
    for m, x in zip(built, layers):
        if m.dim != width * len(x):
            raise ValueError(f"head config: an ensemble member reads {len(x)} layers of {width} but has dim {m.dim}")
    return EnsembleHead(built, layers, width, [{"mean": 0.0, "std": 1.0}] * len(built))
