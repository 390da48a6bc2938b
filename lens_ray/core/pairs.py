"""Preference pairs, the rows they came from, and how they are split. Pure Python and numpy: no Ray, no storage.

A pair: pair_id, prompt (chat messages [{role, content}, ...]), chosen, rejected (response strings), group
(a hash of the prompt). Every split moves whole prompts: one prompt is never on both sides of a split (seed /
eval, train / validation, folds, subsets). A bad row is a `DataError` naming its source row and field, or
is counted in a `Quarantine` by reason: none is dropped silently.
"""
from __future__ import annotations

import hashlib
import json
import re
from collections import Counter
from dataclasses import dataclass, field, replace

import numpy as np

from lens_ray.core import rng
from lens_ray.core.rng import FOLDS, keyed_rng

Messages = list[dict[str, str]]
_INDEX = re.compile(r"\[\d+\]")        # "responses[3].gold" counts as "responses[].gold"


class DataError(ValueError):
    """A row that cannot be used; the message names the source row and the field."""


@dataclass
class Quarantine:
    mode: str = "quarantine"
    counts: Counter = field(default_factory=Counter)
    examples: dict[str, str] = field(default_factory=dict)
    source: str = ""                    # the file being read, named in errors and examples

    def reject(self, where: int | str, fld: str, reason: str, detail: str = "") -> None:
        """where: a row index or a label such as "line 12"; counted by (field, reason), the example keeps the
        row, the file and the detail."""
        where = f"row {where}" if isinstance(where, int) else where
        msg = f"{self.source + ': ' if self.source else ''}{where}: field '{fld}': {reason}{detail}"
        if self.mode == "error":
            raise DataError(msg)
        key = _INDEX.sub("[]", fld) + f": {reason}"
        self.counts[key] += 1
        self.examples.setdefault(key, msg)

    def summary(self, most: int = 3) -> str:
        """The commonest reasons, with an example each, for an error message."""
        common = self.counts.most_common(most)
        return "; ".join(f"{n} x '{key}' (e.g. {self.examples.get(key, key)})" for key, n in common)


@dataclass
class Pair:
    pair_id: int
    prompt: Messages
    chosen: str
    rejected: str
    source_row: int
    chosen_gold: float | None = None      # gold scores, where the pair was drawn from scored completions
    rejected_gold: float | None = None

    @property
    def group(self) -> str:
        return prompt_key(self.prompt)


@dataclass
class ScoredPrompt:
    prompt_id: int
    prompt: Messages
    outputs: list[str]
    gold: np.ndarray        # (n_responses,)
    source_row: int


def prompt_key(prompt: Messages) -> str:
    return hashlib.sha256(json.dumps(prompt, sort_keys=True).encode()).hexdigest()[:16]



# ---------------------------------------------------------------- splits

def group_rows(keys: list[str]) -> dict[str, list[int]]:
    """Row indices by key (a prompt's hash), keys in first-seen order: rows of one prompt move together."""
    members: dict[str, list[int]] = {}
    for i, key in enumerate(keys):
        members.setdefault(key, []).append(i)
    return members


def split_by_group(pairs: list[Pair], n_first: int,
                   gen: np.random.Generator) -> tuple[list[Pair], list[Pair], int]:
    """Shuffle prompt groups with `gen`; the first takes whole groups until it holds n_first pairs.

    Returns (first, rest, dropped): the last group taken is cut to reach n_first exactly, and its
    leftover pairs are dropped from both sides (counted) so that no prompt is on both sides.
    """
    groups = list(group_rows([p.group for p in pairs]).values())
    first: list[Pair] = []
    rest: list[Pair] = []
    dropped = 0
    for g in gen.permutation(len(groups)):
        members = [pairs[i] for i in groups[g]]
        if len(first) < n_first:
            take = n_first - len(first)
            first += members[:take]
            dropped += max(0, len(members) - take)
        else:
            rest += members
    return first, rest, dropped


@dataclass
class Split:
    """One seed's view of the seed pairs: training rows and validation rows (for early stopping)."""
    seed: int
    train: np.ndarray      # indices into the seed pairs
    val: np.ndarray


def seed_splits(pairs: list[Pair], val_fraction: float, seeds: int, split_seed: int) -> list[Split]:
    """Per seed, a validation part of the seed pairs by whole prompts (a different part per seed)."""
    out = []
    n_val = max(1, int(round(len(pairs) * val_fraction)))
    for s in range(seeds):
        val, train, _ = split_by_group(pairs, n_val, keyed_rng(split_seed, rng.VAL_SPLIT, s))
        out.append(Split(s, np.array([p.pair_id for p in train]), np.array([p.pair_id for p in val])))
    return out


def renumber(pairs: list[Pair]) -> list[Pair]:
    return [replace(p, pair_id=i) for i, p in enumerate(pairs)]


def prompt_fingerprints(pairs: list[Pair]) -> set[str]:
    return {p.group for p in pairs}


def kfold_by_group(groups: list[str], k: int, seed: int) -> list[np.ndarray]:
    """Row indices of k folds: each prompt's rows in one fold, sizes balanced (largest groups first)."""
    members = group_rows(groups)
    if len(members) < k:
        raise ValueError(f"{len(members)} distinct prompts cannot make {k} folds")
    keys = list(members)
    shuffled = [keys[i] for i in keyed_rng(seed, FOLDS).permutation(len(keys))]
    folds: list[list[int]] = [[] for _ in range(k)]
    for g in sorted(shuffled, key=lambda g: -len(members[g])):     # stable: random order among equal sizes
        min(folds, key=len).extend(members[g])
    return [np.sort(np.array(f, dtype=np.int64)) for f in folds]


def inner_split(groups: list[str], idx: np.ndarray, val_fraction: float,
                gen: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """idx -> (train, val) by whole prompts, val holding about val_fraction of the rows."""
    local = group_rows([groups[i] for i in idx])
    members = {g: [int(idx[j]) for j in rows] for g, rows in local.items()}
    keys = list(members)
    want, val = max(1, int(round(len(idx) * val_fraction))), []
    for j in gen.permutation(len(keys)):
        if len(val) >= want:
            break
        val += members[keys[j]]
    val_set = set(val)
    return np.array([i for i in idx if int(i) not in val_set], dtype=np.int64), np.sort(np.array(val, dtype=np.int64))


@dataclass
class Datasets:
    """Everything a run evaluates on, after validation and splitting."""
    seed_pairs: list[Pair]
    eval_pairs: list[Pair]
    bon_prompts: list[ScoredPrompt]
    quarantine: Quarantine
    notes: dict[str, int] = field(default_factory=dict)

