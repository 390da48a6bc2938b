"""The linear Bradley-Terry head: r(e) = u . e + b, fitted to convergence (L-BFGS), its design chosen by
k-fold over the training pairs. Pure torch, no Ray.

The design has three parts, each chosen by held-out accuracy on whole prompts (never on eval data):
- the input normalization T the weights are fitted in: none, diag (each dimension standardized) or whiten
  (the covariance, shrunk toward its scaled identity, to the power -1/2). LLM hidden states have a few
  huge dimensions and many small noisy ones; which geometry the L2 penalty should see is an empirical
  question, so it is measured, not assumed;
- the L2 strength lam on the weights in T-space (the differences are first scaled to unit mean square per
  dimension, so lam means the same under every T);
- a shrinkage s toward the class-mean direction: u = (1 - s) w_hat + s m_hat, unit vectors in embedding
  space, m = mean(e+ - e-) (the zero-training `mean_diff` scorer is s = 1).
The chosen design is refitted on all training pairs; a one-dimensional Bradley-Terry fit sets the scale of
u . e, so rewards are calibrated log-odds, not just a ranking.

Shapes: n pairs, d dims, F folds.
"""
from __future__ import annotations

import itertools
from dataclasses import dataclass, field

import numpy as np
import torch
from scipy.optimize import minimize
from scipy.special import expit

from lens_ray.config import RewardConfig
from lens_ray.core.heads import LinearScorer
from lens_ray.core.pairs import group_rows
from lens_ray.core.rng import FOLDS, keyed_rng


@dataclass(frozen=True)
class Design:
    norm: str          # none | diag | whiten
    l2: float
    shrink: float


@dataclass
class LinearFit:
    head: LinearScorer
    design: Design
    cv_accuracy: float                          # held-out accuracy of the chosen design, mean over folds
    grid: list[dict] = field(default_factory=list)   # every design's held-out accuracy


def transform(emb: torch.Tensor, norm: str, whiten_shrinkage: float) -> torch.Tensor:
    """The (d, d) map P of a normalization, fitted on embeddings (m, d): features are e @ P."""
    d = emb.shape[1]
    if norm == "none":
        return torch.eye(d, dtype=emb.dtype)
    if norm == "diag":
        return torch.diag(1.0 / emb.std(0).clamp_min(1e-6))
    cov = torch.cov(emb.T)
    cov = (1 - whiten_shrinkage) * cov + whiten_shrinkage * cov.diagonal().mean() * torch.eye(d, dtype=emb.dtype)
    vals, vecs = torch.linalg.eigh(cov)
    return vecs @ torch.diag(vals.clamp_min(1e-10).rsqrt()) @ vecs.T


def fit_weights(x: torch.Tensor, weight: torch.Tensor, l2: float, start: torch.Tensor | None = None,
                tolerance: float = 1e-6) -> torch.Tensor:
    """argmin_w sum_i weight_i softplus(-x_i . w) / sum weight + l2/2 |w|^2 for differences x (n, d) -> w (d,).
    Strictly convex (l2 > 0): L-BFGS (scipy's, with its line search) reaches the optimum, to a largest gradient
    entry of `tolerance` (the unit-mean-square x keep gradients on one scale). scipy rather than torch.optim:
    a fit is a few hundred steps on a (d,) vector, where torch's per-step overhead cost 3.6x the time.
    Non-finite x -> a non-finite w (the caller records a failed fit)."""
    if not bool(torch.isfinite(x).all() and torch.isfinite(weight).all()):
        return torch.full((x.shape[1],), float("nan"), dtype=x.dtype)
    xs = x.detach().double().numpy()
    wt = (weight / weight.sum()).detach().double().numpy()

    def loss_grad(w: np.ndarray) -> tuple[float, np.ndarray]:
        z = xs @ w
        loss = float(wt @ np.logaddexp(0.0, -z)) + 0.5 * l2 * float(w @ w)
        return loss, l2 * w - xs.T @ (wt * expit(-z))        # d softplus(-z) / dz = -sigmoid(-z)
    w0 = np.zeros(xs.shape[1]) if start is None else start.detach().double().numpy()
    res = minimize(loss_grad, w0, jac=True, method="L-BFGS-B",
                   options={"maxiter": 1000, "maxfun": 1250, "gtol": tolerance, "ftol": 1e-15, "maxcor": 20})
    return torch.from_numpy(res.x).to(x.dtype)


def _unit(v: torch.Tensor) -> torch.Tensor:
    return v / v.norm().clamp_min(1e-12)


def features(pos: torch.Tensor, neg: torch.Tensor, weight: torch.Tensor, p: torch.Tensor,
             loss: str) -> tuple[torch.Tensor, torch.Tensor]:
    """What `fit_weights` fits, in T-space (p: (d, d)), scaled to unit mean square so that l2 means the same for
    every T: bradley_terry, the differences e+ - e- (n, d) with their weights; pointwise, each response centred,
    a constant column for the bias, signed by its label (+ chosen, - rejected): (2n, d + 1), weights twice."""
    if loss == "bradley_terry":
        x = (pos - neg) @ p
        return x / x.pow(2).mean().sqrt().clamp_min(1e-12), weight
    e = torch.cat([pos, neg]) @ p
    e = e - e.mean(0)
    e = e / e.pow(2).mean().sqrt().clamp_min(1e-12)
    sign = torch.cat([torch.ones(len(pos)), -torch.ones(len(neg))]).to(e.dtype)
    return sign[:, None] * torch.cat([e, torch.ones(len(e), 1, dtype=e.dtype)], 1), torch.cat([weight, weight])


def directions(pos: torch.Tensor, neg: torch.Tensor, weight: torch.Tensor, norm: str, l2s: list[float],
               shrinks: list[float], whiten_shrinkage: float,
               loss: str = RewardConfig.loss) -> dict[tuple[float, float], torch.Tensor]:
    """Unit scoring directions in embedding space (d,) for each (l2, shrink), fitted on pairs (n, d) x2 with
    `loss` (a pointwise fit's bias is dropped: it does not change which response scores higher)."""
    p = transform(torch.cat([pos, neg]), norm, whiten_shrinkage)
    x, wt = features(pos, neg, weight, p, loss)
    mean_dir = _unit((weight[:, None] * (pos - neg)).sum(0))
    out, w = {}, None
    for l2 in sorted(l2s, reverse=True):                      # strong to weak: each fit starts from the last
        w = fit_weights(x, wt, l2, w)
        w_dir = _unit(p @ w[:p.shape[1]])                      # back to embedding space
        for s in shrinks:
            out[(l2, s)] = _unit((1 - s) * w_dir + s * mean_dir)
    return out


def _accuracy(u: torch.Tensor, pos: torch.Tensor, neg: torch.Tensor) -> float:
    margin = (pos - neg) @ u
    return float(((margin > 0).double() + 0.5 * (margin == 0).double()).mean())


def calibrate(u: torch.Tensor, pos: torch.Tensor, neg: torch.Tensor, weight: torch.Tensor) -> float:
    """The Bradley-Terry scale a >= 0 of r = a u . e on the training pairs (a few Newton steps in 1-D)."""
    z, a = (pos - neg) @ u, torch.zeros((), dtype=u.dtype)
    for _ in range(50):
        p = torch.sigmoid(-a * z)
        grad = -(weight * z * p).sum() / weight.sum() + 1e-6 * a
        hess = (weight * z * z * p * (1 - p)).sum() / weight.sum() + 1e-6
        a = (a - grad / hess).clamp_min(0.0)
        if grad.abs() < 1e-10:
            break
    return float(a)


def fold_of_rows(groups: list[str], folds: int, seed: int) -> np.ndarray:
    """The fold (0..folds-1) of each real pair, whole prompts per fold, prompts dealt round-robin in a seeded
    order (so folds hold equal numbers of prompts, one apart)."""
    members = list(group_rows(groups).values())
    order = keyed_rng(seed, FOLDS).permutation(len(members))
    out = np.empty(len(groups), dtype=np.int64)
    for rank, g in enumerate(order):
        out[members[g]] = rank % folds
    return out


def fit_linear_head(cfg: RewardConfig, pos: torch.Tensor, neg: torch.Tensor, weight: torch.Tensor,
                    source: np.ndarray, original: torch.Tensor, groups: list[str], seed: int) -> LinearFit:
    """pos, neg (n, d), weight (n,): training pairs; source (n,): the real pair each comes from; original (n,):
    whether it is that real pair; groups[j]: the prompt of real pair j. Folds keep whole prompts and every
    synthetic pair beside its source; held-out folds are scored on their original pairs only."""
    pos, neg, weight = pos.double(), neg.double(), weight.double()
    fold = fold_of_rows(groups, cfg.linear_folds, seed)[source]
    grid: dict[Design, list[float]] = {}
    for f, norm in itertools.product(range(cfg.linear_folds), cfg.linear_norms):
        tr, va = torch.from_numpy(fold != f), torch.from_numpy((fold == f)) & original
        if not va.any():
            continue
        dirs = directions(pos[tr], neg[tr], weight[tr], norm, list(cfg.linear_l2), list(cfg.linear_shrink),
                          cfg.whiten_shrinkage, cfg.loss)
        for (l2, s), u in dirs.items():
            grid.setdefault(Design(norm, l2, s), []).append(_accuracy(u, pos[va], neg[va]))
    scored = {d: float(np.mean(a)) for d, a in grid.items()}
    # best held-out accuracy; ties go to the simpler design (stronger penalty, more shrinkage)
    best = max(scored, key=lambda d: (round(scored[d], 12), d.l2, d.shrink))
    u = directions(pos, neg, weight, best.norm, [best.l2], [best.shrink], cfg.whiten_shrinkage,
                   cfg.loss)[(best.l2, best.shrink)]
    a = calibrate(u, pos, neg, weight)
    table = [{"norm": d.norm, "l2": d.l2, "shrink": d.shrink, "accuracy": acc} for d, acc in scored.items()]
    return LinearFit(LinearScorer((a * u).float()), best, scored[best], table)
