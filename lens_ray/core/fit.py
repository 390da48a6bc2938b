"""Single-process training loops for the VAE and the reward head: the math of a fit, with hooks for
the data-parallel layer (`ray_train.py`) to shard batches and average gradients. No Ray import.

`Workers` holds the hooks: `shard` picks a worker's part of each global batch; `wrap` turns the model
into the module that runs the training forward pass (DistributedDataParallel under Ray Train, which
averages gradients; the identity in one process); `any` tells every worker whether any of them saw a
non-finite loss, so they stop together. Every worker draws the same global permutation from the same
seed, so workers agree on the batches and on early-stopping decisions without talking.
"""
from __future__ import annotations

import copy
import dataclasses
import math
from dataclasses import dataclass, field
from typing import Callable

import numpy as np
import torch
from torch import nn

from lens_ray.config import HEADS, RewardConfig, VAEConfig
from lens_ray.core.augment import PairSet
from lens_ray.core.heads import LOSS, RewardHead
from lens_ray.core.linear_head import fit_linear_head
from lens_ray.core.metrics import head_accuracy
from lens_ray.core.rng import BATCHES, keyed_rng
from lens_ray.core.vae import PreferenceVAE, lens_vae_loss, relative_reconstruction_error

Shard = Callable[[np.ndarray], np.ndarray]
Wrap = Callable[[nn.Module], nn.Module]


class NonFiniteError(FloatingPointError):
    """A fit whose loss or weights stopped being finite numbers; the message says where."""


def finite_or_raise(what: str, *tensors: torch.Tensor) -> None:
    for t in tensors:
        if not bool(torch.isfinite(t).all()):
            raise NonFiniteError(f"{what}: non-finite values")


def _same(x):
    return x


@dataclass
class Workers:
    """How a fit is spread over workers: by default one process (no sharding, no wrapper)."""
    shard: Shard = _same
    wrap: Wrap = _same
    any: Callable[[bool], bool] = _same
    size: int = 1                   # how many workers share each global batch (recorded with the fit)


ALONE = Workers()


def fit_vae(cfg: VAEConfig, train_pos: torch.Tensor, train_neg: torch.Tensor, seed: int,
            workers: Workers = ALONE, log: Callable[[dict], None] | None = None) -> tuple[PreferenceVAE, dict]:
    """Fit a PreferenceVAE on training pairs (n, d) x2; returns the model and its fit metrics.
    Raises NonFiniteError when the loss or the weights stop being finite."""
    torch.manual_seed(seed)
    vae = PreferenceVAE(train_pos.shape[1], cfg.latent_dim, cfg.hidden_dims)
    vae.norm.fit(torch.cat([train_pos, train_neg]))
    net = workers.wrap(vae)
    opt = torch.optim.AdamW(vae.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    rng = keyed_rng(seed, BATCHES)
    n = len(train_pos)
    for epoch in range(cfg.epochs):
        vae.train()
        order = rng.permutation(n)
        for start in range(0, n, cfg.batch_pairs):
            idx = workers.shard(order[start:start + cfg.batch_pairs])
            if len(idx) == 0:
                continue
            loss = lens_vae_loss(vae, train_pos[idx], train_neg[idx], cfg.beta, cfg.gamma, cfg.recon,
                                 cfg.recon_reduction, cfg.div_bound, cfg.div_max, forward=net)
            if workers.any(not bool(torch.isfinite(loss.total))):
                raise NonFiniteError(f"non-finite VAE loss at epoch {epoch + 1}")
            opt.zero_grad(set_to_none=True)
            loss.total.backward()
            opt.step()
        if log and (epoch + 1) % max(1, cfg.epochs // 5) == 0:
            log({"epoch": epoch + 1, "loss": loss.total.item(), "recon": loss.recon.item(),
                 "kl": loss.kl.item(), "w2": loss.w2.item()})
    vae.eval()
    finite_or_raise("VAE weights after training", *vae.state_dict().values())
    with torch.no_grad():
        final = lens_vae_loss(vae, train_pos, train_neg, cfg.beta, cfg.gamma, cfg.recon, cfg.recon_reduction,
                              cfg.div_bound, cfg.div_max)
    metrics = {"loss": float(final.total), "kl": float(final.kl), "w2": float(final.w2),
               "rel_recon_train": relative_reconstruction_error(vae, torch.cat([train_pos, train_neg])),
               "workers": workers.size, "module": type(net).__name__}
    return vae, metrics


@dataclass
class HeadFit:
    head: RewardHead
    best_val_acc: float
    best_step: int
    steps: int
    history: list[dict] = field(default_factory=list)
    failure: str | None = None      # why the fit is no result (non-finite loss or weights); None: it is one


def paper_config(cfg: RewardConfig, pairs: int) -> RewardConfig:
    """The LENS paper's kind of head as an MLP fit: no dropout, no weight decay, paper_epochs over the `pairs`
    it is given (its step budget grows with the set), no early stopping (`patience` never runs out)."""
    steps = cfg.paper_epochs * max(1, math.ceil(pairs / cfg.batch_size))
    return dataclasses.replace(cfg, dropout=0.0, weight_decay=0.0, max_steps=steps, patience=steps + 1)


def fit_head(cfg: RewardConfig, train: PairSet, val: PairSet, seed: int, norm_pos: torch.Tensor,
             norm_neg: torch.Tensor, workers: Workers = ALONE, keep: str = "best") -> HeadFit:
    """A RewardHead fitted with cfg.loss (Bradley-Terry, or pointwise) on a fixed step budget, early-stopping
    on `val`.

    The head standardizes with statistics of the seed's real training embeddings (norm_pos,
    norm_neg), identical across methods, so synthetic data cannot shift the input scale.
    Returns the head at its best validation accuracy (ties: the earlier step), or with keep="last" its final
    weights (validation is then only recorded). A non-finite loss or weight stops the fit and marks it failed
    (`HeadFit.failure`): it is never a result.
    """
    torch.manual_seed(seed)
    head = RewardHead(train.pos.shape[1], cfg.hidden_dim, cfg.depth, cfg.dropout)
    head.norm.fit(torch.cat([norm_pos, norm_neg]))
    net = workers.wrap(head)
    opt = torch.optim.AdamW(head.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    rng = keyed_rng(seed, BATCHES)
    n = len(train)
    steps_per_epoch = max(1, math.ceil(n / cfg.batch_size))
    best = (-1.0, 0, copy.deepcopy(head.state_dict()))
    history, bad_evals, order, step = [], 0, rng.permutation(n), 0
    while step < cfg.max_steps:
        pos_in_epoch = step % steps_per_epoch
        if pos_in_epoch == 0 and step > 0:
            order = rng.permutation(n)
        idx = workers.shard(order[pos_in_epoch * cfg.batch_size:(pos_in_epoch + 1) * cfg.batch_size])
        head.train()
        w = None if train.weight is None else train.weight[idx]
        r = net(torch.cat([train.pos[idx], train.neg[idx]]))   # one forward pass, as DDP wants
        loss = LOSS[cfg.loss](r[:len(idx)], r[len(idx):], w)
        if workers.any(not bool(torch.isfinite(loss))):
            return HeadFit(head.eval(), float("nan"), 0, step + 1, history, f"non-finite loss at step {step + 1}")
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        step += 1
        if step % cfg.eval_every == 0 or step == cfg.max_steps:
            acc = head_accuracy(head, val.pos, val.neg)
            history.append({"step": step, "loss": loss.item(), "val_acc": acc})
            if acc > best[0]:
                best, bad_evals = (acc, step, copy.deepcopy(head.state_dict())), 0
            else:
                bad_evals += 1
                if bad_evals >= cfg.patience:
                    break
    if keep == "best":
        head.load_state_dict(best[2])
    else:
        best = (history[-1]["val_acc"] if history else float("nan"), step, None)
    head.eval()
    if not all(bool(torch.isfinite(v).all()) for v in head.state_dict().values()):
        return HeadFit(head, float("nan"), best[1], step, history, "non-finite weights")
    return HeadFit(head, best[0], best[1], step, history)


def fit_reward_head(cfg: RewardConfig, kind: str, train: PairSet, val: PairSet, seed: int, groups: list[str],
                    norm_pos: torch.Tensor, norm_neg: torch.Tensor, workers: Workers = ALONE) -> HeadFit:
    """A head of `kind`: mlp (fit_head), paper (fit_head as the LENS paper trains its head: `paper_config`,
    final weights) or linear (fit_linear_head, its design chosen by k-fold over the training pairs by prompt,
    `groups` the prompt of each real training pair)."""
    if kind not in HEADS:
        raise ValueError(f"reward head kind {kind!r}: not one of {', '.join(HEADS)}")
    if kind == "mlp":
        return fit_head(cfg, train, val, seed, norm_pos, norm_neg, workers)
    if kind == "paper":
        return fit_head(paper_config(cfg, len(train)), train, val, seed, norm_pos, norm_neg, workers, keep="last")
    weight = train.weight if train.weight is not None else torch.ones(len(train))
    fit = fit_linear_head(cfg, train.pos, train.neg, weight, train.sources(), train.originals(), groups, seed)
    if not bool(torch.isfinite(fit.head.w).all()):
        return HeadFit(fit.head, float("nan"), 0, 0, failure="non-finite weights")
    val_acc = head_accuracy(fit.head, val.pos, val.neg)
    design = {"norm": fit.design.norm, "l2": fit.design.l2, "shrink": fit.design.shrink,
              "cv_accuracy": fit.cv_accuracy}
    return HeadFit(fit.head, val_acc, 0, 0, history=[design])
