"""The records a run passes between its stages, shared by the pipeline, the search and the readers of a
finished run: a cell, one seed's data, the embedding tables and the texts behind them. No Ray.

Shapes: n = seed pairs, m = eval pairs, Q = Best-of-N prompts, N = responses per BoN prompt, d = dim.
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field

import numpy as np

from lens_ray.config import AUGMENTING, LensConfig
from lens_ray.core.metrics import draw_bon
from lens_ray.core.pairs import Datasets, Pair, Split


@dataclass(frozen=True)
class Cell:
    """One reward model of a run: a method at a factor for a seed (factor 1 for methods that do not augment),
    trained as a head of one kind (mean_diff: linear, closed form)."""
    method: str
    factor: int
    seed: int
    head: str = "mlp"

    @property
    def name(self) -> str:
        """The head's name in storage (heads/<name>.safetensors), e.g. lens-f8-s2 (MLP), lens-f8-s2-linear."""
        suffix = "" if self.head == "mlp" or self.method == "mean_diff" else f"-{self.head}"
        return f"{self.method}-f{self.factor}-s{self.seed}{suffix}"

    @property
    def synthetic_name(self) -> str:
        """Its synthetic set in storage (synthetic/<name>.parquet): one per (method, factor, seed), whatever the
        head, so every head of a cell trains on the same pairs."""
        return f"{self.method}-f{self.factor}-s{self.seed}"

    @property
    def augments(self) -> bool:
        return self.method in AUGMENTING

    @property
    def trained(self) -> bool:
        """A head fitted by gradient steps (mean_diff is closed-form)."""
        return self.method != "mean_diff"


def stored_fields(cls: type, doc: dict, skip: tuple[str, ...] = ()) -> dict:
    """The values of a stored document (a report.json row or record) that are fields of the dataclass `cls`, less
    `skip`: what its `of` builds it from. A field the document lacks keeps its default (the older form's value);
    a key that is no field (a newer or retired one) is not read."""
    return {f.name: doc[f.name] for f in dataclasses.fields(cls) if f.name in doc and f.name not in skip}


@dataclass
class Result:
    """One cell's evaluation, a row of report.json's "results": accuracy on the eval pairs, Best-of-N gold (None
    without a Best-of-N set), the validation accuracy its fit stopped at; a failed cell has a reason and no
    metric. `of` reads every stored form (rows written before heads had kinds are MLPs), `row` writes one."""
    method: str
    factor: int
    seed: int
    head_kind: str = "mlp"
    status: str = "ok"                   # ok | failed
    accuracy: float | None = None
    bon_gold: float | None = None
    val_accuracy: float | None = None
    head: str | None = None              # heads/<name> in the run, None for a failed cell
    reason: str | None = None            # why it failed

    @classmethod
    def of(cls, row: dict) -> "Result":
        return cls(**stored_fields(cls, row))

    def row(self) -> dict:
        out = dataclasses.asdict(self)
        return out if self.reason is not None else {k: v for k, v in out.items() if k != "reason"}

    @property
    def cell(self) -> Cell:
        return Cell(self.method, self.factor, self.seed, self.head_kind)

    @property
    def ok(self) -> bool:
        return self.status == "ok"


@dataclass
class Summary:
    """Per (method, factor, head kind) over seeds, a row of report.json's "summary": accuracy and Best-of-N gold
    as {mean, std, n} (None without values) and their gains over `original` on the same head kind, paired by
    seed (None for original itself); `failed` cells are left out of the figures."""
    method: str
    factor: int
    head_kind: str = "mlp"
    failed: int = 0
    accuracy: dict | None = None
    bon_gold: dict | None = None
    accuracy_vs_original: dict | None = None
    bon_gold_vs_original: dict | None = None

    @classmethod
    def of(cls, row: dict) -> "Summary":
        return cls(**stored_fields(cls, row))

    def row(self) -> dict:
        return dataclasses.asdict(self)


def plan_cells(cfg: LensConfig) -> list[Cell]:
    """Every (method, factor, seed, head) the config asks for, in the config's method order."""
    def heads(m: str) -> tuple[str, ...]:
        return ("linear",) if m == "mean_diff" else cfg.reward.heads
    return [Cell(m, f, s, h) for m in cfg.methods for f in (cfg.factors if m in AUGMENTING else (1,))
            for h in heads(m) for s in range(cfg.seeds)]


@dataclass
class Embedded:
    """A run's embedding tables."""
    seed_pos: np.ndarray          # (n, d) chosen
    seed_neg: np.ndarray          # (n, d) rejected
    eval_pos: np.ndarray          # (m, d)
    eval_neg: np.ndarray          # (m, d)
    bon: np.ndarray | None        # (Q, N, d)
    bon_gold: np.ndarray | None   # (Q, N)
    stats: dict = field(default_factory=dict)

    @property
    def dim(self) -> int:
        return int(self.seed_pos.shape[1])

    @classmethod
    def concat(cls, parts: list["Embedded"]) -> "Embedded":
        """Several layers' tables -> one (..., sum of d) in their order, as embed.layer_combine=concat embeds."""
        cat = lambda xs: None if xs[0] is None else np.concatenate(xs, -1)  # noqa: E731
        return cls(*(cat([getattr(p, f) for p in parts]) for f in ("seed_pos", "seed_neg", "eval_pos", "eval_neg",
                                                                  "bon")), parts[0].bon_gold, dict(parts[0].stats))


@dataclass
class SeedData:
    """One seed's training and validation embeddings (validation: early stopping only, never eval data)."""
    seed: int
    train_pos: np.ndarray         # (n_train, d)
    train_neg: np.ndarray
    val_pos: np.ndarray           # (n_val, d)
    val_neg: np.ndarray
    train_groups: list[str] | None = None   # (n_train,) each training pair's prompt (the linear head's folds)

    @classmethod
    def of(cls, split: Split, emb: Embedded, pairs: list[Pair]) -> "SeedData":
        return cls(split.seed, emb.seed_pos[split.train], emb.seed_neg[split.train], emb.seed_pos[split.val],
                   emb.seed_neg[split.val], [pairs[i].group for i in split.train])


def bon_draws(cfg: LensConfig, ds: Datasets) -> tuple[list[np.ndarray], np.ndarray | None]:
    """The N responses drawn per BoN prompt (fixed by split_seed) and their gold scores (Q, N)."""
    draws = draw_bon([len(sp.outputs) for sp in ds.bon_prompts], cfg.data.bon_n, seed=cfg.data.split_seed)
    return draws, (np.stack([sp.gold[d] for sp, d in zip(ds.bon_prompts, draws)]) if ds.bon_prompts else None)


def table_texts(ds: Datasets, draws: list[np.ndarray]) -> dict[str, list[tuple]]:
    """Each embedding table's (prompt, response) texts in row order: seed and eval pairs as chosen, rejected
    per pair; then the drawn Best-of-N responses, if any. Their content keys are what a stored table must match."""
    tables = {name: [(p.prompt, r) for p in pairs for r in (p.chosen, p.rejected)]
              for name, pairs in (("seed", ds.seed_pairs), ("eval", ds.eval_pairs))}
    if draws:
        tables["bon"] = [(sp.prompt, sp.outputs[j]) for sp, d in zip(ds.bon_prompts, draws) for j in d]
    return tables
