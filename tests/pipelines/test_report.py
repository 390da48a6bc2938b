"""Every report renders every combination of methods, heads, sizes and seeds a job accepts, with no number it
cannot stand behind: no spread from one seed, no nan, a note where evaluation pairs are few."""
import itertools
import re

import pytest

from lens_ray.config import AUGMENTING, METHODS, LensConfig
from lens_ray.core.curve import summarize_curve, verdicts
from lens_ray.core.records import Result
from lens_ray.pipelines import report as reporting
from lens_ray.pipelines import report_html
from lens_ray.pipelines.search import compare_on_test, verdict

METHOD_SETS = [("original",), ("mean_diff",), ("lens",), ("original", "lens"), METHODS]
HEAD_SETS = [("linear",), ("mlp", "paper", "linear")]


def _rows(methods, heads, seeds, sizes=(None,), factors=(2, 4)):
    rows = []
    for size, m, s in itertools.product(sizes, methods, range(seeds)):
        for f in (factors if m in AUGMENTING else (1,)):
            for h in (("linear",) if m == "mean_diff" else heads):
                acc = 0.55 + 0.01 * s + 0.002 * f + (0.01 if h == "linear" else 0)
                row = {"method": m, "factor": f, "seed": s, "head_kind": h, "accuracy": acc, "bon_gold": None,
                       "status": "ok"}
                rows.append(row if size is None else {**row, "size": size})
    return rows


def _summary(rows: list[dict]) -> list[dict]:
    """report.json's "summary" of these result rows, as the run writes it."""
    return [s.row() for s in reporting.summarize([Result.of(r) for r in rows])]


def _no_unbacked_numbers(text: str, seeds: int) -> None:
    assert not re.search(r"\bnan\b", text, re.I), text
    if seeds < 2:                                      # a number with a spread needs two values behind it
        assert not re.search(r"\d\s*±\s*\d", text), text


@pytest.mark.parametrize("methods,heads,seeds", list(itertools.product(METHOD_SETS, HEAD_SETS, (1, 3))))
def test_run_report_renders_every_combination(methods, heads, seeds):
    cfg = LensConfig()
    cfg.seeds, cfg.methods, cfg.reward.heads = seeds, methods, heads
    results = _rows(methods, heads, seeds)
    report = {"name": "t", "model": "tiny", "embedding_dim": 8, "seed_pairs": 100, "eval_pairs": 60,
              "bon_prompts": 0, "results": results, "timings_s": {"embed": 1.0}, "quarantined": {},
              "config": cfg.to_dict(), "summary": _summary(results),
              "baselines": {"chance": 0.5, "longer_response": 0.5475, "shorter_response": 0.4525}}
    text = reporting.table(report)
    page = report_html.render(report)
    assert "only 60 evaluation pairs" in text and "only 60 evaluation pairs" in page
    said = ("trivial baselines on the same held-out pairs: chance 0.500, the longer response 0.547, the shorter "
            "0.453")
    assert said in text and said in page
    assert ("one seed" in text) == (seeds == 1)
    assert page.count("<tr>") == len(report["summary"]) + 1          # a real table: header + one row per cell
    _no_unbacked_numbers(text, seeds)


@pytest.mark.parametrize("methods,heads,seeds,sizes", [(m, h, s, z) for m, h, s, z in itertools.product(
    METHOD_SETS, HEAD_SETS, (1, 2), ((50,), (50, 100))) if s == 2 or len(z) == 2])
def test_curve_report_renders_every_combination(methods, heads, seeds, sizes):
    rows = _rows(methods, heads, seeds, sizes)
    summary = summarize_curve(rows)
    curve = {"name": "c", "model": "tiny", "embedding_dim": 8, "seed_pairs": 100, "eval_pairs": 60, "bon_prompts": 0,
             "summary": summary, "verdicts": {"accuracy": verdicts(rows, summary)}}
    page = report_html.render_curve(curve)
    assert "<table>" in page
    verdict_rows = report_html.curve_verdict_rows(curve)[1]
    assert len(verdict_rows) == (len(sizes) if "original" in methods else 0)
    _no_unbacked_numbers(page, seeds)


@pytest.mark.parametrize("seeds", [1, 3])
def test_search_report_renders(seeds):
    rows = {k: [{"seed": s, "accuracy": 0.6 + 0.01 * s + d, "bon_gold": None} for s in range(seeds)]
            for k, d in (("original", 0.0), ("default", 0.01), ("tuned", 0.02))}
    test = compare_on_test(rows)
    point = {"method": "lens", "factor": 4, "vae.beta": 1.0}
    report = {"name": "s", "test": test, "trials": [{"point": point, "status": "finished", "objective": 0.01,
                                                      "objective_se": None, "units": [{}]}],
              "verdict": verdict(point, 1, 0.01, None, False, test, False)}
    page = report_html.render_search(report)
    assert "<table>" in page and "tuned" in page
    _no_unbacked_numbers(page, seeds)


def _row(method, factor, head, seed, acc, gold):
    return {"method": method, "factor": factor, "head_kind": head, "seed": seed, "accuracy": acc, "bon_gold": gold}


def test_summary_gains_are_the_hand_computed_ones():
    """Gains against `original` on the same head kind, paired by seed, with their sign: figures worked out by
    hand, chosen so that the MLP's baseline, a flipped sign or unpaired means would each give other numbers."""
    results = [_row("original", 1, "mlp", 0, 0.60, 0.50), _row("original", 1, "mlp", 1, 0.62, 0.60),
               _row("original", 1, "linear", 0, 0.50, 0.40), _row("original", 1, "linear", 1, 0.52, 0.44),
               _row("lens", 4, "mlp", 0, 0.63, 0.55), _row("lens", 4, "mlp", 1, 0.61, 0.58),
               _row("lens", 4, "linear", 0, 0.60, 0.41), _row("lens", 4, "linear", 1, 0.70, 0.50)]
    summary = {(r["method"], r["head_kind"]): r for r in _summary(results)}
    lens_mlp, lens_linear = summary[("lens", "mlp")], summary[("lens", "linear")]
    # lens on the MLP: seed 0 +0.03, seed 1 -0.01 -> mean +0.01, std (ddof 1) 0.02 * sqrt(2) / 2 * 2 = 0.028284
    assert lens_mlp["accuracy_vs_original"]["mean"] == pytest.approx(0.01)
    assert lens_mlp["accuracy_vs_original"]["std"] == pytest.approx(0.0282843, abs=1e-6)
    # lens on the linear head, against the linear head's original: +0.10, +0.18 (the MLP's would give 0.00, +0.08)
    assert lens_linear["accuracy_vs_original"]["mean"] == pytest.approx(0.14)
    assert lens_linear["accuracy_vs_original"]["std"] == pytest.approx(0.0565685, abs=1e-6)
    assert lens_linear["bon_gold_vs_original"]["mean"] == pytest.approx(0.035)      # +0.01, +0.06
    assert summary[("original", "linear")]["accuracy_vs_original"] is None
    assert summary[("original", "linear")]["accuracy"]["mean"] == pytest.approx(0.51)
    header, rows = reporting.summary_rows({"summary": _summary(results)})
    assert header[3:] == ["accuracy", "vs original", "BoN gold", "vs original"]
    cells = {(r[0], r[2]): r[3:] for r in rows}
    assert cells[("lens", "linear")] == ["0.650 ± 0.071", "+0.140 ± 0.057", "0.455 ± 0.064", "+0.035 ± 0.035"]
    assert cells[("lens", "mlp")][:2] == ["0.620 ± 0.014", "+0.010 ± 0.028"]
    assert cells[("original", "mlp")][1] == "-"


@pytest.mark.parametrize("beats,held", [(True, True), (True, False), (False, True), (False, False)])
def test_the_search_verdict_never_contradicts_its_k_fold_or_its_test(beats, held):
    """Each of the four outcomes has its own conclusion: a k-fold that found nothing is never followed by
    "the tuned gain holds", and a test that does not hold never by a claim of a gain."""
    rows = {k: [{"seed": s, "accuracy": 0.6 + d, "bon_gold": None} for s in range(2)]
            for k, d in (("original", 0.0), ("default", 0.0), ("tuned", 0.02))}
    text = verdict({"method": "lens", "factor": 4}, 8, 0.01, 0.004, beats, compare_on_test(rows), held)
    assert ("It beats the original pairs" in text) == beats
    assert ("No trial beat" in text) == (not beats)
    assert ("The tuned gain holds" in text) == (beats and held)
    assert ("did not pay off" in text) == (not beats and not held)
    assert ("does not hold" in text) == (beats and not held)
    assert ("not a gain to stand behind" in text) == (not beats and held)


def test_an_ensemble_pick_names_its_members():
    from lens_ray.core.selection import Candidate, Selection
    from lens_ray.pipelines.report import selection_lines
    members = (Candidate((-1,), "linear"), Candidate((-1, -2), "mlp", mlp_seeds=3))
    sel = Selection("top-2 ensemble", Candidate((), "ensemble", top=2, members=members), 5, 0.7, 0.01, 0.69,
                    note="n").record()
    lines = selection_lines({"selected": sel, "eval_pairs": 100, "config": {"embed": {"layer": [-1]}},
                             "results": [], "summary": []})
    assert lines[0].startswith("reward model (heads/selected): top-2 ensemble, by k-fold accuracy")
    assert lines[1] == "  its members, each standardized, averaged: layer -1 linear; layer -1,-2 mlp x3 seeds"
