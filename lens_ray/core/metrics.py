"""Metrics: preference accuracy and Best-of-N gold reward, of rewards and of a head on a run's tables. No Ray.

Shapes: P = eval pairs, Q = BoN prompts, N = responses drawn per prompt, d = embedding dim.
"""
from __future__ import annotations

import numpy as np
import torch

from lens_ray.core.heads import rewards
from lens_ray.core.rng import BON_DRAWS, keyed_rng


def preference_accuracy(r_pos: np.ndarray, r_neg: np.ndarray) -> float:
    """(P,) x2 -> share of pairs ranked right; a tie counts half (a constant scorer gets 0.5)."""
    r_pos, r_neg = np.asarray(r_pos, np.float64), np.asarray(r_neg, np.float64)
    if r_pos.shape != r_neg.shape or r_pos.size == 0:
        raise ValueError(f"need two equal, non-empty score arrays, got {r_pos.shape} and {r_neg.shape}")
    return float(np.mean((r_pos > r_neg) + 0.5 * (r_pos == r_neg)))


def longer_response_accuracy(chosen: list[str], rejected: list[str]) -> float:
    """The trivial baseline a reward model must beat: prefer the longer response (characters); a tie counts half.
    On HH harmless it alone is near 0.55, so an accuracy reads against it, not only against chance (0.5)."""
    return preference_accuracy(np.array([len(c) for c in chosen], np.float64),
                               np.array([len(r) for r in rejected], np.float64))


def draw_bon(num_responses: list[int], n: int, seed: int) -> list[np.ndarray]:
    """For each prompt, n response indices drawn without replacement with a fixed seed.

    Prompts with fewer than n responses must be filtered out before; this raises instead.
    """
    gen = keyed_rng(seed, BON_DRAWS)
    out = []
    for q, count in enumerate(num_responses):
        if count < n:
            raise ValueError(f"BoN prompt {q}: {count} responses, fewer than N={n}")
        out.append(np.sort(gen.choice(count, size=n, replace=False)))
    return out


def best_of_n_gold(scores: np.ndarray, gold: np.ndarray) -> float:
    """scores, gold: (Q, N) -> mean gold of the highest-scored response per prompt.

    Ties go to the first index, so a constant scorer picks response 0 (a fixed, random draw).
    """
    scores, gold = np.asarray(scores), np.asarray(gold)
    pick = scores.argmax(1)
    return float(gold[np.arange(len(gold)), pick].mean())


def grouped_best_gold(scores: np.ndarray, gold: np.ndarray, groups: list[str]) -> float:
    """scores, gold: (R,) responses of several prompts, groups: (R,) their prompts -> mean over prompts of the
    gold of each prompt's highest-scored response (Best-of-N where prompts have unequal N; ties: the first)."""
    scores, gold = np.asarray(scores), np.asarray(gold)
    if not (len(scores) == len(gold) == len(groups)) or not len(scores):
        raise ValueError(f"need equal, non-empty scores, gold and groups, got {len(scores)}, {len(gold)}, "
                         f"{len(groups)}")
    picks: dict[str, tuple[float, float]] = {}
    for s, g, key in zip(scores, gold, groups):
        if key not in picks or s > picks[key][0]:
            picks[key] = (s, g)
    return float(np.mean([g for _, g in picks.values()]))


def bon_random(gold: np.ndarray) -> float:
    """Expected gold of a uniformly random pick among the N: (Q, N) -> scalar."""
    return float(np.asarray(gold).mean())


def bon_oracle(gold: np.ndarray) -> float:
    """Gold of the best of the N: (Q, N) -> scalar."""
    return float(np.asarray(gold).max(1).mean())


def head_accuracy(head: torch.nn.Module, pos: torch.Tensor, neg: torch.Tensor) -> float:
    """A head's preference accuracy on pairs (P, d) x2."""
    return preference_accuracy(rewards(head, pos), rewards(head, neg))


def head_metrics(head: torch.nn.Module, tables) -> dict:
    """A head on a run's evaluation tables (`records.Embedded`: eval pairs (P, d) x2, Best-of-N (Q, N, d)) ->
    {"accuracy", "bon_gold"} (bon_gold None without a Best-of-N set). Arrays from Ray's object store are
    read-only: they are copied into tensors."""
    out = {"accuracy": head_accuracy(head, torch.tensor(tables.eval_pos), torch.tensor(tables.eval_neg)),
           "bon_gold": None}
    if tables.bon is not None:
        flat = torch.tensor(tables.bon.reshape(-1, tables.bon.shape[-1]))
        out["bon_gold"] = best_of_n_gold(rewards(head, flat).reshape(tables.bon.shape[:2]), tables.bon_gold)
    return out
