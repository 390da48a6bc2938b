"""The main job's selection stage: its reward model chosen by k-fold on the seed pairs, refitted, stored as
heads/selected (the run's default head), and scored once on the held-out data.

The math is `core.selection`; here: the candidate layers (from the model's depth, all taken from the embed
stage's one forward pass), the units as Ray tasks across the cluster, progress, reuse of a stored pick made
from the same inputs, and the `selected` record of the report.
"""
from __future__ import annotations

import dataclasses
import time
from typing import Callable

import numpy as np
import torch

from lens_ray.config import AUGMENTING, ConfigError, LensConfig, fingerprint
from lens_ray.core.heads import build_head, reward_scale, rewards
from lens_ray.core.metrics import head_metrics
from lens_ray.core.pairs import Datasets, Split
from lens_ray.core.progress import Log
from lens_ray.core.records import Embedded, Result
from lens_ray.core.selection import (
    Candidate,
    Scored,
    Selection,
    candidate_layers,
    choose,
    cost_kinds,
    ensemble_units,
    ensembles,
    finalists,
    fit_seconds,
    fold_scores,
    fold_splits,
    levers,
    planned_seconds,
    refit,
    resolved,
    stage_one,
    stage_two,
    summarize,
)
from lens_ray.core.stats import mean_std, paired, standard_error
from lens_ray.data.embed import INNER, model_depth, reads_inner
from lens_ray.store.artifacts import reuse_model, save_model
from lens_ray.store.storage import Storage, StorageError

NAME = "selected"           # heads/selected: the run's default head
NOTE = ("the pick's k-fold accuracy is optimistic (it won a comparison on the same folds); its held-out "
        "accuracy is the figure to trust")


def layers_of(cfg: LensConfig, log: Log) -> list[tuple[int, ...]]:
    """The candidate layers (each a tuple, as embed.layer): the run's own first, then selection.layers or,
    unset, those spread over the model's depth. Only the run's own where other layers cannot come from the
    cache (embed.cache off) or would change the embedding's size (several layers concatenated)."""
    e = cfg.embed
    if not cfg.selection.enabled:
        return []
    if len(e.layer) > 1 or not e.cache:
        why = "embed.layer combines several layers" if len(e.layer) > 1 else "embed.cache is off"
        log(f"  selection: {why}, so only layer {','.join(map(str, e.layer))} is a candidate")
        return [tuple(e.layer)]
    wanted = cfg.selection.layers or candidate_layers(model_depth(e.model))
    return list(dict.fromkeys([tuple(e.layer)] + [(layer,) for layer in wanted]))


def seed_gold(ds: Datasets) -> tuple[np.ndarray, np.ndarray]:
    """The seed pairs' gold scores (chosen, rejected): (n,) x2; pairs drawn from scored completions have them."""
    missing = sum(p.chosen_gold is None or p.rejected_gold is None for p in ds.seed_pairs)
    if missing:
        raise ConfigError(f"selection.objective=bon_gold: {missing} of {len(ds.seed_pairs)} seed pairs have no gold "
                          "scores; it needs scored completions as `data` (else use selection.objective=accuracy)")
    return (np.array([p.chosen_gold for p in ds.seed_pairs], np.float64),
            np.array([p.rejected_gold for p in ds.seed_pairs], np.float64))


def _kept_unit(units: Storage, name: str) -> dict | None:
    """A unit's committed result (made from the same inputs: its name is their fingerprint), or None when it
    is missing or fails its checksum (then it runs again)."""
    try:
        doc = units.read_checked_json(f"{name}.json")      # a missing one is a StorageError too
    except StorageError:
        return None
    return doc["result"] if isinstance(doc, dict) and isinstance(doc.get("result"), dict) else None


def selection_key(cfg: LensConfig, layers: list[tuple[int, ...]], base_key: str) -> str:
    """What a stored pick was made from. The augmenting methods, factors, VAE and synthesis settings count only
    where augmented candidates are tried (selection.finalists > 0): otherwise a re-run with other synthesis
    settings reuses the pick."""
    augmentation = (tuple(m for m in cfg.methods if m in AUGMENTING), cfg.factors, cfg.vae, cfg.synth) \
        if cfg.selection.finalists else ()
    inner = [INNER] if any(reads_inner(x) for x in layers) else []      # how inner layers were read
    chose = {k: v for k, v in dataclasses.asdict(cfg.selection).items()       # what the pick depends on
             if k != "max_minutes" and OFF.get(k, ...) != v}
    return fingerprint(base_key, chose, [list(x) for x in layers], *augmentation, cfg.reward,
                       cfg.data.val_fraction, cfg.data.split_seed, cfg.seeds, *inner)


# candidates added after picks were stored: off, they leave a stored pick's key as it was
OFF = {"concat_layers": False, "mlp_seeds": 1, "ensembles": ()}


class Folds:
    """The select stage's k-fold work on one run: each candidate's tables (several layers concatenated from the
    single layers'), its (layer, fold) units as Ray tasks (each committed as it ends, so a re-run keeps it), and
    the plan each stage is timed with and refused by (selection.max_minutes)."""

    def __init__(self, cfg: LensConfig, ds: Datasets, layers: list[tuple[int, ...]],
                 embedded_at: Callable[[tuple[int, ...]], Embedded], key: str, out: Storage, log: Log):
        sc = cfg.selection
        self.cfg, self.key, self.log = cfg, key, log
        self.groups = [p.group for p in ds.seed_pairs]
        self.splits = fold_splits(self.groups, sc.folds, cfg.data.val_fraction, cfg.data.split_seed)
        self.gold = seed_gold(ds) if sc.objective == "bon_gold" else None
        self.tables = {layer: embedded_at(layer) for layer in layers}
        self.store = out.child("selection")
        self.units: list[dict] = [{} for _ in self.splits]     # every candidate's fold results, fold by fold
        self.timed: dict[tuple, float] = {}                    # one fit of each kind of candidate, seconds
        self.named: dict[tuple, str] = {}                      # the candidate each kind was timed on
        self.began = time.monotonic()

    def table(self, layer: tuple[int, ...]) -> Embedded:
        """A candidate's tables: one layer's, or several layers' concatenated."""
        if layer not in self.tables:
            self.tables[layer] = Embedded.concat([self.tables[(x,)] for x in layer])
        return self.tables[layer]

    def score(self, cands: list[Candidate], stage: str) -> list[Scored]:
        """Run the candidates' units not kept from an earlier try; -> their summarized rows."""
        from lens_ray.distributed.trials import remote_calls, task_slots
        sc, n = self.cfg.selection, self.cfg.selection.folds
        by_layer = {layer: [c for c in cands if c.layer == layer] for layer in dict.fromkeys(c.layer for c in cands)}
        names = {(layer, f): "unit-" + fingerprint(self.key, list(layer), f, sorted(c.name for c in cs))
                 for layer, cs in by_layer.items() for f in range(n)}
        kept = {k: r for k, r in ((k, _kept_unit(self.store, name)) for k, name in names.items()) if r is not None}
        calls = {(layer, f): (fold_scores, self.cfg, cs, self.table(layer).seed_pos, self.table(layer).seed_neg,
                              self.groups, self.splits[f], f, self.gold, bool(sc.ensembles))
                 for layer, cs in by_layer.items() for f in range(n) if (layer, f) not in kept}
        again = f"; {len(kept)} kept from an earlier try" if kept else ""
        self.log(f"  selection {stage}: {len(cands)} candidates x {n} folds ({len(calls)} tasks{again}) ...")
        if sc.max_minutes and calls:
            self.check_plan([c for layer, _ in calls for c in by_layer[layer]],
                            min(len(calls), task_slots(self.cfg.resources)))
        done = iter(range(1, len(calls) + 1))

        def commit(k, result) -> None:
            self.store.write_checked_json(f"{names[k]}.json", {"result": result})
            self.log(f"    layer {','.join(map(str, k[0]))} fold {k[1] + 1}/{n} done ({next(done)}/{len(calls)})")
        results = {**kept, **(remote_calls(calls, self.cfg.resources, on_done=commit) if calls else {})}
        for (_, f), r in results.items():
            self.units[f].update(r)
        return summarize(cands, self.units)

    def check_plan(self, todo: list[Candidate], slots: int) -> None:
        """Time one fit of each kind not yet timed; refuse a stage whose fits would end past selection.max_minutes."""
        from lens_ray.distributed.trials import remote_calls
        kinds = {k: c for k, c in cost_kinds(todo).items() if k not in self.timed}
        self.named.update({k: c.name for k, c in kinds.items()})
        self.timed.update(remote_calls({k: (fit_seconds, self.cfg, c, self.table(c.layer).seed_pos,
                                            self.table(c.layer).seed_neg, self.groups, self.splits[0])
                                        for k, c in kinds.items()}, self.cfg.resources) if kinds else {})
        planned = planned_seconds(todo, self.timed, slots)
        limit = self.cfg.selection.max_minutes
        self.log(f"    planned: about {_minutes(planned)} ({slots} task(s) at a time; one fit of each kind timed)")
        if time.monotonic() - self.began + planned > 60 * limit:
            each = ", ".join(f"{self.named[k]} {t:.1f} s" for k, t in self.timed.items())
            raise ConfigError(f"selection: its fits would take about {_minutes(planned)} more ({len(todo)} candidate "
                              f"folds, {slots} at a time; one fit: {each}), past selection.max_minutes={limit:g}; "
                              "try fewer candidates (selection.mlp_seeds, concat_layers, losses, layers, finalists) "
                              "or raise selection.max_minutes (0: no limit)")


def select_stage(cfg: LensConfig, ds: Datasets, layers: list[tuple[int, ...]],
                 embedded_at: Callable[[tuple[int, ...]], Embedded], splits: list[Split], base_key: str,
                 out: Storage, log: Log) -> Selection:
    """Choose, refit and store the run's reward model; returns its record (the report's `selected`). `embedded_at`
    gives a layer's tables; `splits`: the run's per-seed splits. The pick is refitted once per seed (the MLP
    early-stops on that seed's val part, as the per-method table's heads do, so the two pair by seed); seed
    0's refit is stored as heads/selected."""
    from lens_ray.distributed.trials import remote_calls

    sc, store = cfg.selection, out.child("heads")
    methods = tuple(m for m in cfg.methods if m in AUGMENTING)
    key = selection_key(cfg, layers, base_key)
    stored = reuse_model(store, NAME, key, build_head)
    if stored and "selected" in stored[1]:
        reused = Selection.of(stored[1]["selected"])
        log(f"  reused the stored pick: {reused.candidate}")
        return reused
    work = Folds(cfg, ds, layers, embedded_at, key, out, log)
    concat = [tuple(x[0] for x in layers)] if sc.concat_layers and len(layers) > 1 else []
    rows = work.score(stage_one(layers + concat, sc.heads, sc.losses, sc.mlp_seeds),
                      "1 (layer x head, original pairs)")
    best = finalists(rows, sc.finalists, sc.objective)
    if best and methods:
        rows += work.score(stage_two(best, methods, cfg.factors), f"2 (augmentation on the best {len(best)})")
    if sc.ensembles:
        rows += summarize(ensembles(sc.ensembles), ensemble_units(sc.ensembles, rows, work.units, work.splits,
                                                                  work.groups, work.gold, sc.objective))
    pick = choose(rows, sc.objective)
    cand = resolved(pick.candidate, rows, sc.objective)
    se = pick.se(sc.objective)
    log(f"  pick: {cand.name}, k-fold {sc.objective} {pick.mean(sc.objective):.3f}"
        + (f" ± {se:.3f}" if se is not None else "")
        + (f" ({'; '.join(m.name for m in cand.members)})" if cand.members else "") + "; refitting on the seed pairs")
    emb = work.table(cand.layer)
    heads = remote_calls({sp.seed: (refit, cfg, cand, emb.seed_pos, emb.seed_neg, work.groups, sp.train, sp.val,
                                    sp.seed) for sp in splits}, cfg.resources)
    per_seed = [{"seed": seed, **head_metrics(h, emb)} for seed, h in sorted(heads.items())]
    head, held = heads[splits[0].seed], {k: per_seed[0][k] for k in ("accuracy", "bon_gold")}
    record = Selection(
        cand.name, cand, sc.folds, pick.kfold_accuracy, pick.kfold_se, **held,
        kfold_bon_gold=pick.kfold_bon_gold, kfold_bon_gold_se=pick.kfold_bon_gold_se,
        objective=sc.objective, head=f"heads/{NAME}", seeds=per_seed,
        rule=f"highest mean k-fold {sc.objective}, then the simplest candidate within one standard error of it (no "
             "augmentation, then mean_diff, linear, mlp, ensemble, then one layer, one seed, the bradley_terry loss)",
        note=NOTE, levers=levers(rows, pick, tuple(cfg.embed.layer), sc.objective), candidates=rows)
    r = rewards(head, torch.from_numpy(np.concatenate([emb.seed_pos, emb.seed_neg])))
    save_model(store, NAME, head.state_dict(), head.config(),
               {"fingerprint": key, "metrics": held, "embed_layer": list(cand.layer), "selected": record.record(),
                "reward_norm": reward_scale(r), "inner": INNER,
                **({"layer_combine": "concat"} if len(cand.layer) > 1 else {})})
    return record


def versus_fixed(selected: Selection, results: list[Result]) -> dict[str, dict]:
    """The pick's held-out figures against the per-method table's fixed choices at the run's layer, paired by
    seed: {"original" (the original pairs' MLP) | "mean_diff": {metric: {mean, se, n} or None}}."""
    mine = {r["seed"]: r for r in selected.seeds}
    out = {}
    for method, head in (("original", "mlp"), ("mean_diff", None)):
        base = {r.seed: r.row() for r in results if r.method == method and r.factor == 1 and r.ok
                and (head is None or r.head_kind == head)}
        if base:
            gains = {m: paired(mine, base, m) for m in ("accuracy", "bon_gold")}
            out[method] = {m: {**mean_std(g), "se": standard_error(g) if len(g) > 1 else None} if g else None
                           for m, g in gains.items()}      # se None, not NaN, from one seed: report.json stays JSON
    return out


def _minutes(seconds: float) -> str:
    return f"{seconds:.0f} s" if seconds < 90 else f"{seconds / 60:.0f} min"
