"""Every report renders every combination of methods, heads, sizes and seeds a job accepts, with no number it
cannot stand behind: no spread from one seed, no nan, a note where evaluation pairs are few."""
import itertools
import re

import pytest

from lens_ray.config import AUGMENTING, METHODS, LensConfig
from lens_ray.core.curve import summarize_curve, verdicts
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
              "config": cfg.to_dict(), "summary": reporting.summarize(results)}
    text = reporting.table(report)
    page = report_html.render(report)
    assert "only 60 evaluation pairs" in text and "only 60 evaluation pairs" in page
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
