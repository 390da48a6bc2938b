"""Report: aggregate results across seeds, write them as text (console, report.md) and report.json. No Ray.

A spread is shown only where there are at least two values behind it; results on few evaluation pairs or
one seed say so in words.
"""
from __future__ import annotations

import math
from collections import defaultdict

from lens_ray.core.records import Result, Summary
from lens_ray.core.selection import Scored, Selection
from lens_ray.core.stats import mean_std, paired, wilson_interval
from lens_ray.store.storage import Storage

ORDER = ("mean_diff", "original", "direct_perturbation", "gaussian_sampling", "lens")
FEW_EVAL_PAIRS = 400              # below, the standard error of an accuracy is over 2.4 points


def summarize(results: list[Result]) -> list[Summary]:
    """Per (method, factor, head kind): accuracy and BoN gold, mean and std over seeds, and the gain over
    `original` on the same head kind, paired by seed (same validation split, same budget)."""
    by_key: dict[tuple[str, int, str], dict[int, dict]] = defaultdict(dict)
    for r in results:
        by_key[(r.method, r.factor, r.head_kind)][r.seed] = r.row()
    rank = {m: i for i, m in enumerate(ORDER)}
    out = []
    for (method, factor, head), seeds in sorted(by_key.items(),
                                                key=lambda kv: (rank.get(kv[0][0], 99), kv[0][2], kv[0][1])):
        base = by_key.get(("original", 1, head)) or by_key.get(("original", 1, "mlp"), {})
        figures = {}
        for metric in ("accuracy", "bon_gold"):
            figures[metric] = mean_std(r[metric] for r in seeds.values())
            figures[f"{metric}_vs_original"] = mean_std(paired(seeds, base, metric)) if method != "original" else None
        out.append(Summary(method, factor, head, sum(r["status"] == "failed" for r in seeds.values()), **figures))
    return out


def estimate(mean: float | None, spread: float | None = None, n: int = 1, signed: bool = False,
             digits: int = 3) -> str:
    """'0.593 ± 0.006', or '0.593' alone where there is no spread to stand behind (fewer than two values, or a
    spread that is not a number); '-' for no value."""
    if mean is None:
        return "-"
    text = f"{mean:+.{digits}f}" if signed else f"{mean:.{digits}f}"
    if n >= 2 and spread is not None and math.isfinite(spread):
        text += f" ± {spread:.{digits}f}"
    return text


def cell(c: dict | None, signed: bool = False, spread: str = "std", digits: int = 3) -> str:
    """A summary cell {mean, std[, se], n} as `estimate` writes it."""
    return "-" if c is None else estimate(c["mean"], c.get(spread), c.get("n", 1), signed, digits)


def summary_rows(report: dict) -> tuple[list[str], list[list[str]]]:
    """The per-method table of a run: header and rows (mean ± std over seeds; gains paired by seed)."""
    header = ["method", "factor", "head", "accuracy", "vs original", "BoN gold", "vs original"]
    rows = [[r.method, f"{r.factor}x", r.head_kind, cell(r.accuracy), cell(r.accuracy_vs_original, signed=True),
             cell(r.bon_gold), cell(r.bon_gold_vs_original, signed=True)] for r in summary_of(report)]
    return header, rows


def selection_of(report: dict) -> Selection | None:
    """A report's selection record, typed (a report of any lens-ray version); None for a run without one."""
    return Selection.of(report["selected"]) if report.get("selected") else None


def selection_rows(selected: Selection) -> tuple[list[str], list[list[str]]]:
    """The selection's k-fold table: every candidate, best first by the objective (mean ± standard error over
    folds); a Best-of-N gold column where the folds measured it."""
    gold = any(r.gold_folds is not None for r in selected.candidates)
    objective = selected.objective
    header = ["candidate", "k-fold accuracy", *(["k-fold Best-of-N gold"] if gold else []), "folds"]
    ranked = sorted(selected.candidates, key=lambda r: -(r.mean(objective) if r.mean(objective) is not None else -1))

    def fig(r: Scored, objective: str) -> str:
        return "failed" if not r.ok else estimate(r.mean(objective), r.se(objective), len(r.folds))
    rows = [[("**" + r.name + "**") if r.name == selected.candidate else r.name,
             fig(r, "accuracy"), *([fig(r, "bon_gold")] if gold else []), str(len(r.folds))] for r in ranked]
    return header, rows


def summary_of(report: dict) -> list[Summary]:
    """A report's per-method table, typed (a report of any lens-ray version)."""
    return [Summary.of(r) for r in report.get("summary") or []]


def default_row(report: dict, method: str, head: str) -> Summary | None:
    """The per-method table's row of (method, head) at factor 1, if the run has it."""
    return next((r for r in summary_of(report) if r.method == method and r.factor == 1
                 and (r.head_kind == head or method == "mean_diff")), None)


def selection_lines(report: dict) -> list[str]:
    """What the run chose as its reward model and what it is worth, then the k-fold table and its levers."""
    sel = selection_of(report)
    if not sel:
        return []
    bon = f", Best-of-N gold {sel.bon_gold:.3f}" if sel.bon_gold is not None else ""
    kgold = (f", k-fold Best-of-N gold {estimate(sel.kfold_bon_gold, sel.kfold_bon_gold_se, sel.folds)}"
             if sel.kfold_bon_gold is not None else "")
    lines = [f"reward model (heads/selected): {sel.candidate}, by k-fold {sel.objective}; "
             f"k-fold accuracy on the seed pairs {estimate(sel.kfold_accuracy, sel.kfold_se, sel.folds)}"
             f"{kgold}; held-out accuracy {sel.accuracy:.3f}{ci(sel.accuracy, report['eval_pairs'])}{bon} "
             "(its stored refit, seed 0)"]
    if sel.pick.members:
        lines.append("  its members, each standardized, averaged: " + "; ".join(m.name for m in sel.pick.members))
    seeds = sel.seeds
    if len(seeds) > 1:
        over = {m: mean_std(r[m] for r in seeds) for m in ("accuracy", "bon_gold")}
        lines.append(f"  the pick refitted on each of {len(seeds)} seeds' splits: held-out accuracy "
                     f"{cell(over['accuracy'])}" + (f", Best-of-N gold {cell(over['bon_gold'])}" if over["bon_gold"]
                                                    else ""))
    layer = ",".join(map(str, report["config"]["embed"]["layer"]))
    for label, method in ((f"the fixed default (layer {layer}, original, MLP)", "original"),
                          (f"mean_diff (layer {layer})", "mean_diff")):
        row = default_row(report, method, "mlp")
        if row and row.accuracy:
            gain = (sel.versus or {}).get(method) or {}
            paired_by_seed = "; ".join(f"{name} {cell(gain[m], signed=True, spread='se')}"
                                       for m, name in (("accuracy", "accuracy"), ("bon_gold", "gold")) if gain.get(m))
            lines.append(f"  beside {label}: held-out accuracy {cell(row.accuracy)} over seeds"
                         + (f"; the pick's gain, paired by seed: {paired_by_seed}" if paired_by_seed else ""))
    worth = [f"{k} {estimate(v['mean'], v['se'], sel.folds, signed=True)} "
             f"({v.get('candidate', 'the pick')} vs {v['versus']})" for k, v in sel.levers.items() if v]
    if worth:
        lines.append("  what each lever is worth at the pick, k-fold, paired by fold: " + "; ".join(worth))
    lines += [f"  note: {sel.note}", "", *markdown(*selection_rows(sel)), ""]
    return lines


def ci(accuracy: float, n: int) -> str:
    """An accuracy's 95% interval on n held-out pairs (Wilson), as the report prints it."""
    low, high = wilson_interval(accuracy, n)
    return f" (95% interval {low:.3f}-{high:.3f} on {n} pairs)"


def markdown(header: list[str], rows: list[list[str]]) -> list[str]:
    return ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)] + ["| " + " | ".join(r) + " |" for r in rows]


def notes(report: dict) -> list[str]:
    """What the figures cannot say, in words: few evaluation pairs, a single seed."""
    out, m = [], report["eval_pairs"]
    if m < FEW_EVAL_PAIRS:
        out.append(f"note: only {m} evaluation pairs; one pair is {100 / m:.1f} accuracy points and the standard "
                   f"error of an accuracy near 0.6 is {100 * math.sqrt(0.24 / m):.1f} points, so smaller differences "
                   "are noise")
    if report["config"]["seeds"] < 2:
        out.append("note: one seed; no spread is shown, and a difference between methods may be that seed's luck")
    return out


def table(report: dict) -> str:
    """The run in text (console and report.md): data, the per-method table, notes, timings, failures."""
    data = report.get("data", {})
    dupes = ""
    if data.get("duplicate_pairs"):
        dupes = f"; {data['duplicate_pairs']} duplicate pairs " + ("left out" if data["duplicates"] == "quarantine"
                                                                   else "kept")
    lines = [f"model {report['model']} (d={report['embedding_dim']}), {report['seed_pairs']} seed pairs "
             f"({data.get('seed_prompts', '?')} prompts), {report['eval_pairs']} eval pairs "
             f"({data.get('eval_prompts', '?')} prompts), {report.get('bon_prompts') or 0} BoN prompts" + dupes,
             "", *selection_lines(report), "every method, measured on the held-out data (the fair comparison):",
             *markdown(*summary_rows(report))]
    if report.get("baselines"):
        b = report["baselines"]
        lines.append(f"trivial baselines on the same held-out pairs: chance {b['chance']:.3f}, the longer response "
                     f"{b['longer_response']:.3f}, the shorter {b['shorter_response']:.3f}")
    if report.get("bon_random") is not None:
        lines.append(f"\nBest-of-{report['bon_n']}: random pick {report['bon_random']:.3f}, oracle pick "
                     f"{report['bon_oracle']:.3f}")
    lines += notes(report)
    lines.append("timings (s): " + ", ".join(f"{k} {v:.0f}" for k, v in report["timings_s"].items()))
    if report.get("quarantined"):
        lines.append("quarantined: " + ", ".join(f"{k} x{v}" for k, v in report["quarantined"].items()))
    failed = [r for r in map(Result.of, report["results"]) if not r.ok]
    if failed:
        lines.append(f"FAILED (no metrics, left out of the table above): {len(failed)} of {len(report['results'])} "
                     "models: " + "; ".join(sorted({str(r.reason) for r in failed})))
    return "\n".join(lines)


def write(out: Storage, report: dict) -> None:
    out.write_checked_json("report.json", report)          # commands that use the run trust its config
    out.write_bytes("report.md", (table(report) + "\n").encode())
