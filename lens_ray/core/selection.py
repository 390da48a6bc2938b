"""The main job's choice of its reward model, on the seed pairs only: candidates, k-fold units, the pick. No Ray.

A *candidate* is (layer, head, method, factor, loss): head mean_diff | linear | mlp, method `original` (no
augmentation) or an augmenting method at a factor, loss what a trained head fits (bradley_terry, or pointwise:
each response on its own). Its layer may be several layers concatenated (selection.concat_layers); an MLP may be
a seed ensemble (selection.mlp_seeds); and a `top-k ensemble` (selection.ensembles) averages the standardized
rewards of the k best other candidates, ranked in each fold on the other folds only, so its k-fold figure pays
for choosing its members as any candidate's does. Stage 1 scores every layer x head on the original pairs;
stage 2 tries each augmenting method at each factor on the best `finalists` (layer, trained head) of stage 1.
One *unit* is (one layer's candidates, fold f): fit on the other folds less an inner validation part (whole
prompts; the MLP early-stops on it), score on fold f. Every candidate sees the same folds, so two candidates'
differences are paired by fold.

The pick: the highest mean k-fold objective (`selection.objective`: accuracy on the held fold's pairs, or,
for scored completions, the Best-of-N gold of the held fold's prompts among their pairs' responses); then,
among the candidates within one standard error of it, the simplest (no augmentation before augmentation;
mean_diff before linear before mlp): noise does not buy complexity. The pick's k-fold estimate is optimistic
(it won a comparison), so the run reports its held-out figures beside it; nothing here reads eval or Best-of-N data.

Shapes: n = seed pairs, d = one layer's embedding dim.
"""
from __future__ import annotations

import copy
import math
import time
from dataclasses import dataclass, field

import numpy as np
import torch

from lens_ray.config import LensConfig, RewardConfig, SelectionConfig
from lens_ray.core.augment import needs_vae
from lens_ray.core.fit import NonFiniteError, fit_vae
from lens_ray.core.heads import EnsembleHead, reward_scale, rewards, standardize
from lens_ray.core.metrics import grouped_best_gold, preference_accuracy
from lens_ray.core.pairs import inner_split, kfold_by_group
from lens_ray.core.records import stored_fields
from lens_ray.core.rng import SELECTION, keyed_rng
from lens_ray.core.search import fit_method
from lens_ray.core.stats import standard_error

SIMPLER = {"mean_diff": 0, "linear": 1, "mlp": 2, "ensemble": 3}     # the order the one-standard-error rule prefers
LAYER_FRACTIONS = (0.0, 0.3, 0.5)       # HH x SmolLM2 in bf16: -10 best; MiniLM on Best-of-N: -3 (RESULTS)


def candidate_layers(depth: int, fractions: tuple[float, ...] = LAYER_FRACTIONS) -> tuple[int, ...]:
    """Layers -1 - round(f * depth) of a model with `depth` blocks (hidden_states has depth + 1 entries):
    SmolLM2 (30) -> (-1, -10, -16), MiniLM (6) -> (-1, -3, -4)."""
    return tuple(dict.fromkeys(-1 - round(f * depth) for f in fractions))


def simplicity(method: str, head: str, loss: str = RewardConfig.loss, layers: int = 1,
               seeds: int = 1) -> tuple[bool, int, bool, bool, bool]:
    """What the one-standard-error rule prefers, smallest first: no augmentation, then the simpler head, then one
    layer, then one seed, then the default loss."""
    return method != "original", SIMPLER[head], layers > 1, seeds > 1, loss != "bradley_terry"


@dataclass(frozen=True)
class Candidate:
    layer: tuple[int, ...]      # the embedding's layer(s), as embed.layer (several: concatenated)
    head: str                   # mean_diff | linear | mlp | ensemble
    method: str = "original"    # original, or the augmenting method
    factor: int = 1
    loss: str = "bradley_terry"  # what a trained head fits (reward.loss); mean_diff fits nothing
    mlp_seeds: int = 1          # an MLP fitted with this many seeds, their standardized rewards averaged
    top: int = 0                # head ensemble: the mean of the `top` best other candidates' standardized rewards
    members: tuple["Candidate", ...] = field(default=(), compare=False)   # an ensemble's, once chosen

    @property
    def name(self) -> str:
        if self.head == "ensemble":
            return f"top-{self.top} ensemble"
        aug = "" if self.method == "original" else f" + {self.method} x{self.factor}"
        loss = "" if self.loss == "bradley_terry" else f" ({self.loss})"
        seeds = "" if self.mlp_seeds == 1 else f" x{self.mlp_seeds} seeds"
        return f"layer {','.join(map(str, self.layer))} {self.head}{seeds}{loss}{aug}"

    @property
    def simplicity(self) -> tuple[bool, int, bool, bool, bool]:
        return simplicity(self.method, self.head, self.loss, len(self.layer), self.mlp_seeds)

    @classmethod
    def of(cls, row: dict) -> "Candidate":
        """The candidate a result row (or the selection record) describes."""
        return cls(tuple(row["layer"]), row["head_kind"], row.get("method", "original"), row.get("factor", 1),
                   row.get("loss", "bradley_terry"), row.get("mlp_seeds", 1), row.get("top", 0),
                   tuple(cls.of(m) for m in row.get("members", ())))

    def record(self) -> dict:
        extra: dict = {"mlp_seeds": self.mlp_seeds} if self.mlp_seeds != 1 else {}
        if self.top:
            extra["top"] = self.top
        if self.members:
            extra["members"] = [m.record() for m in self.members]
        return {"layer": list(self.layer), "head_kind": self.head, "method": self.method, "factor": self.factor,
                "loss": self.loss, **extra}


@dataclass
class Scored:
    """One candidate's row of the k-fold table (report.json's selected.candidates): its held-fold accuracies in fold
    order, their mean and standard error, the same of Best-of-N gold where every fold measured it (None: not
    measured); failed if any fold's fit diverged (never picked). `of` reads a stored row, `row` writes one."""
    name: str                            # the candidate's name (stored as "candidate")
    candidate: Candidate
    status: str                          # ok | failed
    folds: list                          # accuracy per held fold (None where a fit diverged)
    kfold_accuracy: float | None
    kfold_se: float | None
    gold_folds: list | None = None
    kfold_bon_gold: float | None = None
    kfold_bon_gold_se: float | None = None

    @property
    def ok(self) -> bool:
        return self.status == "ok"

    def mean(self, objective: str) -> float | None:
        return getattr(self, OBJECTIVES[objective][1])

    def se(self, objective: str) -> float | None:
        return getattr(self, OBJECTIVES[objective][2])

    def fold_values(self, objective: str) -> list:
        return getattr(self, OBJECTIVES[objective][0]) or []

    @classmethod
    def of(cls, row: dict) -> "Scored":
        return cls(row["candidate"], Candidate.of(row), **stored_fields(cls, row, ("name", "candidate")))

    def row(self) -> dict:
        out = {"candidate": self.name, **self.candidate.record(), "status": self.status, "folds": self.folds,
               "kfold_accuracy": self.kfold_accuracy, "kfold_se": self.kfold_se}
        if self.gold_folds is not None:
            out.update(gold_folds=self.gold_folds, kfold_bon_gold=self.kfold_bon_gold,
                       kfold_bon_gold_se=self.kfold_bon_gold_se)
        return out


@dataclass
class Selection:
    """The select stage's record of its pick: report.json's "selected" and heads/selected's meta. `of` reads every
    stored form (records before objectives were chosen ranked by accuracy), `record` writes one."""
    candidate: str                       # the pick's name, as its table row names it
    pick: Candidate
    folds: int
    kfold_accuracy: float | None         # over the folds; optimistic: it won on them
    kfold_se: float | None
    accuracy: float | None = None        # held out, of the stored refit (seed 0)
    bon_gold: float | None = None
    kfold_bon_gold: float | None = None
    kfold_bon_gold_se: float | None = None
    objective: str = "accuracy"
    head: str = "heads/selected"
    seeds: list[dict] = field(default_factory=list)        # {seed, accuracy, bon_gold} of the pick refitted per seed
    rule: str = ""
    note: str = ""
    levers: dict = field(default_factory=dict)             # layer | head | augmentation -> paired gain or None
    candidates: list[Scored] = field(default_factory=list)   # every candidate's k-fold row (`summarize`)
    versus: dict | None = None                             # against the fixed choices, paired by seed (the run's)

    @classmethod
    def of(cls, doc: dict) -> "Selection":
        return cls(pick=Candidate.of(doc), candidates=[Scored.of(r) for r in doc.get("candidates") or []],
                   **stored_fields(cls, doc, ("pick", "candidates")))

    def record(self) -> dict:
        out = {"candidate": self.candidate, **self.pick.record()}
        out.update({f: getattr(self, f) for f in self.__dataclass_fields__ if f not in ("candidate", "pick")})
        out["candidates"] = [c.row() for c in self.candidates]
        return out if self.versus is not None else {k: v for k, v in out.items() if k != "versus"}


@dataclass
class FoldSplit:
    train: np.ndarray     # row indices fitted on
    val: np.ndarray       # row indices the MLP early-stops on
    held: np.ndarray      # the fold scored


def fold_splits(groups: list[str], folds: int, val_fraction: float, seed: int) -> list[FoldSplit]:
    """k folds of whole prompts; each fold's rest split again (whole prompts) into training and validation."""
    parts = kfold_by_group(groups, folds, seed)
    out = []
    for f, held in enumerate(parts):
        rest = np.sort(np.concatenate([parts[j] for j in range(folds) if j != f]))
        train, val = inner_split(groups, rest, val_fraction, keyed_rng(seed, SELECTION, f))
        out.append(FoldSplit(train, val, held))
    return out


def stage_one(layers: list[tuple[int, ...]], heads: tuple[str, ...], losses: tuple[str, ...] = SelectionConfig.losses,
              mlp_seeds: int = SelectionConfig.mlp_seeds) -> list[Candidate]:
    """Every layer x head, each trained head with each loss (mean_diff fits nothing: once); with mlp_seeds > 1,
    each MLP also as a seed ensemble."""
    out = [Candidate(layer, head, loss=loss) for layer in layers for head in heads
           for loss in (("bradley_terry",) if head == "mean_diff" else losses)]
    return out + [Candidate(c.layer, c.head, loss=c.loss, mlp_seeds=mlp_seeds) for c in out
                  if c.head == "mlp" and mlp_seeds > 1]


def ensembles(tops: tuple[int, ...]) -> list[Candidate]:
    return [Candidate((), "ensemble", top=k) for k in tops]


def stage_two(finalists: list[Candidate], methods: tuple[str, ...], factors: tuple[int, ...]) -> list[Candidate]:
    return [Candidate(c.layer, c.head, m, f, c.loss, c.mlp_seeds) for c in finalists for m in methods for f in factors]


def fold_scores(cfg: LensConfig, candidates: list[Candidate], pos: np.ndarray, neg: np.ndarray,
                groups: list[str], split: FoldSplit, fold: int, gold: tuple[np.ndarray, np.ndarray] | None = None,
                keep_rewards: bool = False) -> dict[str, dict | None]:
    """Fit each candidate of one layer (pos, neg: (n, d) that layer's seed embeddings) on the fold's training
    part and score it on the held fold: {candidate name: {"accuracy", "bon_gold"}, or None if its fit
    diverged}. gold: (n,) x2, the chosen and rejected responses' gold scores, or None: then bon_gold is None;
    else it is the mean gold of each held prompt's highest-rewarded response among its pairs' responses.
    keep_rewards: each also gives "rewards", its held chosen and rejected rewards (h,) x2 standardized by its
    training responses' rewards (what the top-k ensembles average). LENS's VAE is fitted once per fold and shared
    by its candidates."""
    t = lambda idx: (torch.from_numpy(pos[idx]), torch.from_numpy(neg[idx]))  # noqa: E731
    train, val, held = t(split.train), t(split.val), t(split.held)
    train_groups = [groups[i] for i in split.train]
    seed = 7919 * (fold + 1)
    vae, out = None, {}
    for c in candidates:
        try:
            if needs_vae(c.method) and vae is None:
                vae = fit_vae(cfg.vae, *train, seed)[0]
            model = _fitted(cfg, c, train, val, seed, train_groups, vae if needs_vae(c.method) else None)
            r_pos, r_neg = rewards(model, held[0]), rewards(model, held[1])
            out[c.name] = held_scores(r_pos, r_neg, split, groups, gold)
            if keep_rewards:
                scale = reward_scale(rewards(model, torch.cat(train)))
                out[c.name]["rewards"] = [standardize(r, scale).tolist() for r in (r_pos, r_neg)]
        except NonFiniteError:
            out[c.name] = None
    return out


def held_scores(r_pos: np.ndarray, r_neg: np.ndarray, split: FoldSplit, groups: list[str],
                gold: tuple[np.ndarray, np.ndarray] | None) -> dict:
    """Rewards of the held fold's pairs (h,) x2 -> {"accuracy", "bon_gold" (None without gold)}."""
    held_groups = [groups[i] for i in split.held] * 2
    return {"accuracy": preference_accuracy(r_pos, r_neg), "bon_gold": None if gold is None else
            grouped_best_gold(np.concatenate([r_pos, r_neg]),
                              np.concatenate([gold[0][split.held], gold[1][split.held]]), held_groups)}


def _fitted(cfg: LensConfig, c: Candidate, train: tuple[torch.Tensor, torch.Tensor],
            val: tuple[torch.Tensor, torch.Tensor], seed: int, groups: list[str], vae=None) -> torch.nn.Module:
    """Candidate c fitted on training pairs (m, d) x2, an MLP early-stopping on val; with mlp_seeds > 1 that many
    fits (seed, seed + 104,729, ...), their ensemble scaled on the training responses."""
    models = [fit_method(_with_head(cfg, c.head, c.loss), "mean_diff" if c.head == "mean_diff" else c.method,
                         c.factor, *train, *val, seed + 104_729 * s, groups, vae) for s in range(c.mlp_seeds)]
    return models[0] if c.mlp_seeds == 1 else seed_ensemble(models, torch.cat(train).numpy())


def seed_ensemble(models: list[torch.nn.Module], train: np.ndarray) -> EnsembleHead:
    """Heads of one layer (d) -> their mean standardized reward, each scaled on the training responses (m, d)."""
    x = torch.from_numpy(train)
    return EnsembleHead(models, [[0]] * len(models), train.shape[1], [reward_scale(rewards(m, x)) for m in models])


def ensemble_units(tops: tuple[int, ...], rows: list[Scored], units: list[dict[str, dict | None]],
                   splits: list[FoldSplit], groups: list[str], gold: tuple[np.ndarray, np.ndarray] | None = None,
                   objective: str = SelectionConfig.objective) -> list[dict[str, dict | None]]:
    """Each fold's score of each top-k ensemble: in fold f the candidates (rows: summarized, ok, with "rewards"
    in every unit; never ensembles) are ranked by their mean objective over the other folds, and the k best's
    standardized held rewards averaged. -> one {"top-k ensemble": {"accuracy", "bon_gold"}} per fold."""
    ok = [r for r in rows if r.ok and r.candidate.head != "ensemble"
          and all(u.get(r.name) and "rewards" in u[r.name] for u in units)]
    out = []
    for f, (unit, split) in enumerate(zip(units, splits)):
        ranked = sorted(ok, key=lambda r: -np.mean([v for j, v in enumerate(r.fold_values(objective)) if j != f]))
        scores = {}
        for c in ensembles(tops):
            top = ranked[:c.top]
            if len(top) < c.top:
                scores[c.name] = None
                continue
            pos, neg = (np.mean([unit[r.name]["rewards"][i] for r in top], 0) for i in (0, 1))
            scores[c.name] = held_scores(pos, neg, split, groups, gold)
        out.append(scores)
    return out


def members(rows: list[Scored], k: int, objective: str = SelectionConfig.objective) -> tuple[Candidate, ...]:
    """A top-k ensemble's members once chosen: the k best candidates (not ensembles) by mean k-fold objective."""
    ok = [r for r in rows if r.ok and r.candidate.head != "ensemble"]
    return tuple(r.candidate for r in sorted(ok, key=lambda r: -r.mean(objective))[:k])


def resolved(pick: Candidate, rows: list[Scored], objective: str = SelectionConfig.objective) -> Candidate:
    """The pick as it is refitted: a top-k ensemble with its members, on the union of their layers (in the
    members' order; each candidate layer is one, several are concatenated candidates); any other as it is."""
    if pick.head != "ensemble":
        return pick
    chosen = members(rows, pick.top, objective)
    union = tuple(dict.fromkeys(x for m in chosen for x in m.layer))
    return Candidate(union, "ensemble", top=pick.top, members=chosen)


def cost_kinds(candidates: list[Candidate]) -> dict[tuple, Candidate]:
    """One plain candidate per (head, loss, number of layers): what a fit of each costs, the rest scale from."""
    out: dict[tuple, Candidate] = {}
    for c in candidates:
        if c.head != "ensemble":
            out.setdefault(_kind(c), Candidate(c.layer, c.head, loss=c.loss))
    return out


def _kind(c: Candidate) -> tuple:
    return c.head, c.loss, len(c.layer)


def fit_seconds(cfg: LensConfig, c: Candidate, pos: np.ndarray, neg: np.ndarray, groups: list[str],
                split: FoldSplit) -> float:
    """Seconds one fold's fit and scoring of candidate c takes (what the select stage's plan is timed with)."""
    t0 = time.perf_counter()
    fold_scores(cfg, [c], pos, neg, groups, split, 0)
    return time.perf_counter() - t0


def planned_seconds(candidates: list[Candidate], seconds: dict[tuple, float], slots: int) -> float:
    """Fits of these candidates (one per unit they are in) in seconds, `slots` at a time: each one's timed
    kind, times its seeds, times (1 + factor) for an augmented one (its head fits on that many times the pairs;
    a rough bound); ensembles of other candidates' rewards cost nothing."""
    total = sum(seconds[_kind(c)] * c.mlp_seeds * (1 if c.method == "original" else 1 + c.factor)
                for c in candidates if c.head != "ensemble")
    return total / max(1, slots)


def _with_head(cfg: LensConfig, head: str, loss: str = RewardConfig.loss) -> LensConfig:
    cfg = copy.deepcopy(cfg)
    if head != "mean_diff":
        cfg.reward.heads, cfg.reward.loss = (head,), loss
    return cfg


OBJECTIVES = {"accuracy": ("folds", "kfold_accuracy", "kfold_se"),      # a row's fold values, mean, se
              "bon_gold": ("gold_folds", "kfold_bon_gold", "kfold_bon_gold_se")}


def summarize(candidates: list[Candidate], units: list[dict[str, dict | None]]) -> list[Scored]:
    """Per candidate: its fold accuracies (in fold order), mean and standard error, and the same of its
    held-out Best-of-N gold where the units have it; `failed` if any fold's fit diverged (never picked)."""
    rows = []
    for c in candidates:
        scores = [u[c.name] for u in units if c.name in u]
        failed = len(scores) < len(units) or any(s is None for s in scores)
        figures: dict = {}
        for metric, (folds, mean, se) in OBJECTIVES.items():
            vals = [s and s[metric] for s in scores]
            if metric == "accuracy" or (vals and all(v is not None for v in vals)):
                figures.update({folds: vals, mean: None if failed else float(np.mean(vals)),
                                se: None if failed else standard_error(vals)})
        rows.append(Scored(c.name, c, "failed" if failed else "ok", **figures))
    return rows


def finalists(rows: list[Scored], n: int, objective: str = SelectionConfig.objective) -> list[Candidate]:
    """The n best (layer, trained head) candidates on the original pairs, by mean k-fold objective."""
    trained = [r for r in rows if r.ok and r.candidate.method == "original" and r.candidate.head != "mean_diff"]
    best = sorted(trained, key=lambda r: -r.mean(objective))[:n]
    return [r.candidate for r in best]


def choose(rows: list[Scored], objective: str = SelectionConfig.objective) -> Scored:
    """The best mean of the objective, then the simplest candidate within one standard error of it (its row)."""
    ok = [r for r in rows if r.ok]
    if not ok:
        raise NonFiniteError("every candidate's fit diverged in some fold; no reward model to choose")
    if not ok[0].fold_values(objective):
        raise ValueError(f"objective {objective}: the candidates have no k-fold {objective}")
    best = max(ok, key=lambda r: r.mean(objective))
    se = best.se(objective)
    bar = best.mean(objective) - (0.0 if se is None or math.isnan(se) else se)      # no spread: the best alone
    near = [r for r in ok if r.mean(objective) >= bar]
    return min(near, key=lambda r: (*r.candidate.simplicity, -r.mean(objective)))


def paired_gain(a: Scored, b: Scored, objective: str = SelectionConfig.objective) -> dict | None:
    """Mean and standard error over folds of a's objective minus b's (the same folds: paired); both named, since
    a lever's `candidate` need not be the pick (the head lever compares the best trained head with mean_diff)."""
    if not (a.ok and b.ok):
        return None
    d = np.array(a.fold_values(objective)) - np.array(b.fold_values(objective))
    se = standard_error(d)
    return {"mean": float(d.mean()), "se": None if math.isnan(se) else se, "candidate": a.name,
            "versus": b.name}


def levers(rows: list[Scored], pick: Scored, run_layer: tuple[int, ...],
           objective: str = SelectionConfig.objective) -> dict[str, dict | None]:
    """What each lever is worth at the pick, paired by fold: the layer (the pick's head on the original pairs
    at its layer vs at the run's layer), the head (the best trained head vs mean_diff at the pick's layer)
    and the augmentation (the pick vs its own head and layer without augmentation)."""
    find = {r.candidate: r for r in rows}
    layer, loss, head = pick.candidate.layer, pick.candidate.loss, pick.candidate.head
    plain = find.get(Candidate(layer, head, loss=loss))
    at_run = find.get(Candidate(tuple(run_layer), head, loss=loss))
    trained = [r for r in rows if r.candidate.layer == layer and r.candidate.method == "original"
               and r.candidate.head != "mean_diff" and r.ok]
    md = find.get(Candidate(layer, "mean_diff"))
    best_trained = max(trained, key=lambda r: r.mean(objective)) if trained else None
    gain = lambda a, b: paired_gain(a, b, objective)  # noqa: E731
    return {"layer": gain(plain, at_run) if plain and at_run and layer != tuple(run_layer) else None,
            "head": gain(best_trained, md) if best_trained and md else None,
            "augmentation": gain(pick, plain) if plain and pick.candidate.method != "original" else None}


def refit(cfg: LensConfig, pick: Candidate, pos: np.ndarray, neg: np.ndarray, groups: list[str],
          train: np.ndarray, val: np.ndarray, seed: int) -> torch.nn.Module:
    """The pick fitted on the seed pairs (pos, neg: (n, d) at its layer(s), concatenated), mean_diff and linear
    on all of them, the MLP on `train` with `val` to early-stop; an augmenting pick synthesizes from what it is
    fitted on. An ensemble (resolved: with its members) fits each member on its layers' part of pos and neg and
    scales it on the seed pairs' responses."""
    if pick.head == "ensemble":
        width = pos.shape[1] // len(pick.layer)
        index = [[pick.layer.index(x) for x in m.layer] for m in pick.members]
        part = lambda a, idx: a.reshape(len(a), -1, width)[:, idx].reshape(len(a), -1)  # noqa: E731
        heads = [refit(cfg, m, part(pos, idx), part(neg, idx), groups, train, val, seed)
                 for m, idx in zip(pick.members, index)]
        scales = [reward_scale(rewards(h, torch.from_numpy(np.concatenate([part(pos, idx), part(neg, idx)]))))
                  for h, idx in zip(heads, index)]
        return EnsembleHead(heads, index, width, scales)
    fit_on = train if pick.head == "mlp" else np.sort(np.concatenate([train, val]))
    t = lambda idx: (torch.from_numpy(pos[idx]), torch.from_numpy(neg[idx]))  # noqa: E731
    return _fitted(cfg, pick, t(fit_on), t(val), seed, [groups[i] for i in fit_on])
