"""report.html: a self-contained page (PNG plots inlined) users look at rather than read. No Ray.

Figures: accuracy (and Best-of-N gold) against augmentation factor per method, mean ± std over seeds;
a 2-D PCA projection of real vs LENS-synthetic chosen / rejected embeddings; and, for a search (or a
run made `--from-search`), the tuning landscape: objective ± its standard error against the noise
variance and gamma, one point per trial.
"""
from __future__ import annotations

import base64
import html
import io
import shlex

import numpy as np

from lens_ray.core.records import Summary
from lens_ray.core.stats import mean_std, wilson_interval
from lens_ray.pipelines.report import (
    ORDER,
    cell,
    estimate,
    selection_lines,
    selection_of,
    selection_rows,
    summary_of,
    summary_rows,
    table,
)

COLORS = {"mean_diff": "#7f7f7f", "original": "#000000", "direct_perturbation": "#1f77b4",
          "gaussian_sampling": "#2ca02c", "lens": "#d62728"}


def _png(fig) -> str:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=110, bbox_inches="tight")
    import matplotlib.pyplot as plt
    plt.close(fig)
    return base64.b64encode(buf.getvalue()).decode()


def metric_vs_factor(summary: list[Summary], metric: str, title: str, baselines: dict | None = None,
                     pick: tuple[str, float, float, float] | None = None) -> str | None:
    """The metric of every method against the augmentation factor; baselines: {name: value} drawn dotted;
    pick: (label, value, low, high), the run's chosen reward model with its interval, drawn as a band."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    rows = [r for r in summary if getattr(r, metric)]
    if not rows:
        return None
    fig, ax = plt.subplots(figsize=(6, 3.6))
    factors = sorted({r.factor for r in rows})
    kinds = sorted({r.head_kind for r in rows if r.method != "mean_diff"})
    lines = sorted({(r.method, r.head_kind) for r in rows},
                   key=lambda mh: (ORDER.index(mh[0]) if mh[0] in ORDER else 99, mh[1]))
    for method, head in lines:
        label = method if len(kinds) < 2 or method == "mean_diff" else f"{method} ({head})"
        style = "--" if method == "mean_diff" or head == "linear" else "-"
        pts = sorted((r.factor, getattr(r, metric)["mean"], getattr(r, metric)["std"]) for r in rows
                     if r.method == method and r.head_kind == head)
        if len(pts) == 1 and pts[0][0] == 1:       # factor-1 methods: a band across the plot
            _, m, s = pts[0]
            ax.axhline(m, color=COLORS.get(method, "k"), ls=style, lw=1, label=label)
            ax.axhspan(m - s, m + s, color=COLORS.get(method, "k"), alpha=0.08)
        else:
            x, m, s = zip(*pts)
            ax.errorbar(x, m, yerr=s, marker="o", capsize=3, color=COLORS.get(method), ls=style, label=label)
    if pick:
        label, value, low, high = pick
        ax.axhline(value, color="#9467bd", lw=2, label=label)
        ax.axhspan(low, high, color="#9467bd", alpha=0.12)
    for name, value in (baselines or {}).items():        # what is trivial: chance, the longer response
        ax.axhline(value, color="0.5", ls=":", lw=1)
        ax.annotate(name.replace("_", " "), (ax.get_xlim()[0], value), fontsize=6, color="0.4", va="bottom")
    ax.set_xticks(factors)
    ax.set_xlabel("augmentation factor")
    ax.set_ylabel(metric.replace("_", " "))
    ax.set_title(title)
    ax.legend(fontsize=7)
    return _png(fig)


def projection(real_pos: np.ndarray, real_neg: np.ndarray, syn_pos: np.ndarray, syn_neg: np.ndarray,
               limit: int = 400) -> str:
    """PCA (fitted on the real embeddings) of real and synthetic chosen / rejected: (n, d) / (n, k, d)."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    real = np.concatenate([real_pos[:limit], real_neg[:limit]])
    mean = real.mean(0)
    _, _, vt = np.linalg.svd(real - mean, full_matrices=False)

    def proj(e: np.ndarray) -> np.ndarray:
        return (e.reshape(-1, e.shape[-1]) - mean) @ vt[:2].T
    fig, ax = plt.subplots(figsize=(5.5, 4.5))
    for data, label, color, marker in ((syn_pos[:limit], "synthetic chosen", "#ff9896", "x"),
                                       (syn_neg[:limit], "synthetic rejected", "#aec7e8", "x"),
                                       (real_pos[:limit], "real chosen", "#d62728", "o"),
                                       (real_neg[:limit], "real rejected", "#1f77b4", "o")):
        p = proj(data)
        ax.scatter(p[:, 0], p[:, 1], s=6, c=color, marker=marker, label=label, alpha=0.6)
    ax.set_title("real vs LENS-synthetic embeddings (PCA of real)")
    ax.set_xlabel("first principal component")
    ax.set_ylabel("second principal component")
    ax.legend(fontsize=7, markerscale=2)
    return _png(fig)


NOISE_KNOB = {"lens": "synth.noise_var", "direct_perturbation": "synth.dp_noise_var"}


def landscape(trials: list[dict]) -> str | None:
    """Objective ± se of each trial against its noise variance (LENS latent, direct perturbation per dim)
    and against gamma (LENS). Filled: all folds done; hollow: stopped early by ASHA."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    rows = [t for t in trials if t.get("objective") is not None]
    if not rows:
        return None
    fig, axes = plt.subplots(1, 2, figsize=(9, 3.6), sharey=True)
    panels = ((axes[0], lambda t: t["point"].get(NOISE_KNOB.get(t["point"]["method"], "")), "noise variance"),
              (axes[1], lambda t: t["point"].get("vae.gamma"), "gamma (LENS)"))
    for ax, x_of, label in panels:
        for method in sorted({t["point"]["method"] for t in rows}):
            for finished in (True, False):
                pts = [(x_of(t), t["objective"], t.get("objective_se") or 0.0) for t in rows
                       if t["point"]["method"] == method and (t["status"] == "finished") == finished
                       and x_of(t) is not None]
                if pts:
                    x, y, e = zip(*pts)
                    ax.errorbar(x, y, yerr=e, fmt="o", capsize=2, color=COLORS.get(method),
                                mfc=COLORS.get(method) if finished else "none",
                                label=f"{method}{'' if finished else ' (stopped early)'}")
        ax.axhline(0, color="k", lw=1)
        ax.set_xscale("log")
        ax.set_xlabel(label)
    axes[0].set_ylabel("k-fold gain over original")
    axes[0].legend(fontsize=7)
    fig.suptitle("tuning landscape (0 = the original pairs alone)")
    return _png(fig)


def _page(title: str, parts: list[str], figs: list[tuple[str, str | None]]) -> str:
    for name, png in figs:
        if png:
            parts.append(f"<h2>{name}</h2><img alt='{name}' src='data:image/png;base64,{png}'>")
    return (f"<!doctype html><html><head><meta charset='utf-8'><title>{html.escape(title)}</title>"
            "<style>body{font-family:sans-serif;max-width:1000px;margin:2em auto}table{border-collapse:collapse;"
            "margin:1em 0;font-size:90%}td,th{border:1px solid #ccc;padding:3px 8px;text-align:right}"
            "td:first-child,th:first-child{text-align:left}th{background:#f0f0f0}.note{color:#a33}</style>"
            "</head><body>" + "\n".join(parts) + "</body></html>")


def _table(header: list[str], rows: list[list[str]]) -> str:
    """An HTML table, every cell escaped."""
    head = "".join(f"<th>{html.escape(str(h))}</th>" for h in header)
    body = "".join("<tr>" + "".join(f"<td>{html.escape(str(c))}</td>" for c in r) + "</tr>" for r in rows)
    return f"<table><tr>{head}</tr>{body}</table>"


def _p(text: str, cls: str = "") -> str:
    return f"<p{f' class={cls!r}' if cls else ''}>{html.escape(text)}</p>"


def chosen_band(report: dict) -> tuple[str, float, float, float] | None:
    """The pick's held-out accuracy (its mean over seeds where refitted on several) and 95% interval."""
    sel = selection_of(report)
    if not sel or sel.accuracy is None:
        return None
    over = mean_std(r["accuracy"] for r in sel.seeds) or {"mean": sel.accuracy}
    low, high = wilson_interval(over["mean"], report["eval_pairs"])
    return f"the pick: {sel.candidate} (95% interval)", over["mean"], low, high


def usage(run_uri: str) -> str:
    """How to use the run's reward model: the three commands, on this run."""
    run = shlex.quote(run_uri)
    name = html.escape(run_uri.rstrip("/").rsplit("/", 1)[-1])
    lines = [f'lens-ray score --run {run} --prompt "How do I bake bread?" --response "Mix flour and water."',
             f"lens-ray serve --run {run}     # POST /get_reward (OpenRLHF), POST /score",
             f"lens-ray export --run {run} --out exported/{name}   # AutoModelForSequenceClassification"]
    return ("<h2>Use it</h2><p>The run's reward model (<code>heads/selected</code>), from this folder:</p><pre>"
            + "\n".join(html.escape(line) for line in lines) + "</pre>")


def render(report: dict, projection_png: str | None = None, trials: list[dict] | None = None,
           run_uri: str | None = None) -> str:
    summary = summary_of(report)
    figs = [("Preference accuracy", metric_vs_factor(summary, "accuracy", "accuracy on eval pairs",
                                                     report.get("baselines"), chosen_band(report))),
            ("Best-of-N gold", metric_vs_factor(summary, "bon_gold",
                                                f"Best-of-{report.get('bon_n')} mean gold of the pick")),
            ("Tuning landscape", landscape(trials) if trials else None),
            ("Embeddings", projection_png)]
    chosen = [line for line in selection_lines(report) if line and not line.startswith("|")]
    text = table(report).split("\n")
    intro = [line for line in text if line and not line.startswith("|") and line not in chosen
             and not line.startswith("every method")]
    parts = [f"<h1>lens-ray report: {html.escape(str(report.get('name') or report['config']['name']))}</h1>",
             _p(intro[0])]
    if report.get("selected"):
        header, rows = selection_rows(selection_of(report))
        rows = [[c[2:-2] + " (the pick)" if c.startswith("**") else c for c in r] for r in rows]
        parts += ["<h2>The run's reward model (chosen by k-fold on the seed pairs)</h2>",
                  *[_p(line.strip(), "note" if line.strip().startswith("note") else "") for line in chosen],
                  "<h3>Every candidate (k-fold accuracy ± standard error over folds)</h3>", _table(header, rows)]
        if run_uri:
            parts.append(usage(run_uri))
    parts += ["<h2>Every method on the held-out data (mean ± std over seeds; gains paired by seed)</h2>",
              _table(*summary_rows(report))]
    parts += [_p(line, "note" if line.startswith(("note", "FAILED")) else "") for line in intro[1:]]
    return _page("lens-ray report", parts, figs)


def trials_table(trials: list[dict]) -> tuple[list[str], list[list[str]]]:
    rows = []
    for t in sorted(trials, key=lambda t: -(t.get("objective") if t.get("objective") is not None else -9)):
        knobs = ", ".join(f"{k}={v:.3g}" if isinstance(v, float) else f"{k}={v}" for k, v in t["point"].items())
        rows.append([estimate(t.get("objective"), t.get("objective_se"), len(t.get("units", [])), signed=True,
                              digits=4), str(len(t.get("units", []))), t["status"], knobs])
    return ["k-fold objective ± se", "units", "status", "point"], rows


def render_search(report: dict) -> str:
    test = [[k] + [cell(row.get(m), signed="vs" in m, digits=4) for m in ("accuracy", "accuracy_vs_original",
                                                                           "bon_gold",
                                                                   "bon_gold_vs_original")]
            for k, row in report["test"].items()]
    parts = [f"<h1>lens-ray search: {html.escape(report['name'])}</h1>",
             f"<p><b>{html.escape(report['verdict'])}</b></p>",
             "<h2>Test data (only the chosen configurations; mean ± std over seeds)</h2>",
             _table(["", "accuracy", "vs original", "BoN gold", "vs original"], test),
             "<h2>Trials (k-fold objective: accuracy gain over original on the same folds)</h2>",
             _table(*trials_table(report["trials"]))]
    return _page("lens-ray search", parts, [("Tuning landscape", landscape(report["trials"]))])


FACTOR_STYLE = {2: ":", 4: "-.", 8: "--"}


def curve_figure(summary: list[dict], metric: str, gain: bool) -> str | None:
    """metric (or its gain over original on the same head) against seed pairs, log axis, one panel per head:
    original, mean_diff, and each augmenting method at each factor (colour: method, line style: factor)."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    key = f"{metric}_vs_original" if gain else metric
    rows = [r for r in summary if r.get(key)]
    if not rows:
        return None
    heads = sorted({r["head_kind"] for r in rows if r["method"] != "mean_diff"}) or ["linear"]
    fig, axes = plt.subplots(1, len(heads), figsize=(5.2 * len(heads), 3.8), sharey=True, squeeze=False)
    for ax, head in zip(axes[0], heads):
        # mean_diff's gain is paired with the linear original: shown in the linear panel only
        mine = [r for r in rows if r["head_kind"] == head or (r["method"] == "mean_diff" and not gain)]
        lines = sorted({(r["method"], r["factor"]) for r in mine},
                       key=lambda mf: (ORDER.index(mf[0]) if mf[0] in ORDER else 99, mf[1]))
        for method, factor in lines:
            pts = sorted((r["size"], r[key]["mean"], r[key]["std"]) for r in mine
                         if r["method"] == method and r["factor"] == factor)
            x, m, s = zip(*pts)
            ax.errorbar(x, m, yerr=s, marker="o", ms=3, capsize=2, color=COLORS.get(method, "k"),
                        ls=FACTOR_STYLE.get(factor, "-"), label=method + (f" x{factor}" if factor > 1 else ""))
        if gain:
            ax.axhline(0, color="k", lw=1)
        ax.set_xscale("log")
        sizes = sorted({r["size"] for r in rows})
        ax.set_xticks(sizes, [str(s) for s in sizes])
        ax.minorticks_off()
        ax.set_xlabel("seed pairs")
        ax.set_title(f"{head} head")
    axes[0][0].set_ylabel(("gain over original in " if gain else "") + metric.replace("_", " "))
    axes[0][-1].legend(fontsize=6, ncol=2)
    return _png(fig)


def curve_verdict_rows(curve: dict) -> tuple[list[str], list[list[str]]]:
    header = ["pairs", "best head", "original", "vs mean_diff", "best augmentation", "gain ± se", "beyond noise"]
    rows = [[str(v["size"]), v["best_head"], estimate(v["original"]),
             estimate(v["over_mean_diff"], v["over_mean_diff_se"], 2, signed=True), v["best_augmentation"] or "-",
             estimate(v["gain"], v["gain_se"], 2, signed=True), "yes" if v["augmentation_pays"] else "no"]
            for v in curve["verdicts"].get("accuracy", [])]
    return header, rows


def render_curve(curve: dict) -> str:
    """The learning curve's page: figures, the verdict per size, and the summary table."""
    s = curve["summary"]
    figs = [("Accuracy against seed pairs", curve_figure(s, "accuracy", gain=False)),
            ("Gain over original (same head, paired by seed)", curve_figure(s, "accuracy", gain=True)),
            ("Best-of-N gold against seed pairs", curve_figure(s, "bon_gold", gain=False)),
            ("Best-of-N gain over original", curve_figure(s, "bon_gold", gain=True))]
    cells = [[str(r["size"]), r["method"], str(r["factor"]), r["head_kind"], cell(r["accuracy"]),
              cell(r["accuracy_vs_original"], signed=True, spread="se"), cell(r["bon_gold"]),
              cell(r["bon_gold_vs_original"], signed=True, spread="se"), str(r["failed"])] for r in s]
    parts = [f"<h1>lens-ray learning curve: {html.escape(curve['name'])}</h1>",
             _p(f"{curve['model']} (d={curve['embedding_dim']}), {curve['seed_pairs']} seed pairs, "
                f"{curve['eval_pairs']} eval pairs (the same for every size), {curve['bon_prompts']} Best-of-N "
                "prompts. Gains are paired by seed against original on the same head and subset; 'beyond noise' "
                "means more than twice the standard error, and the best augmentation is the best of several on "
                "these test figures, so its gain is optimistic."),
             "<h2>Verdict per size (accuracy)</h2>", _table(*curve_verdict_rows(curve)),
             "<h2>Every cell (mean ± std over seeds; gain ± standard error)</h2>",
             _table(["pairs", "method", "factor", "head", "accuracy", "vs original", "BoN gold", "vs original",
                     "failed"], cells)]
    return _page("lens-ray learning curve", parts, figs)
