"""report.html: a self-contained page (PNG plots inlined) users look at rather than read. No Ray.

Figures: accuracy (and Best-of-N gold) against augmentation factor per method, mean ± std over seeds;
a 2-D PCA projection of real vs LENS-synthetic chosen / rejected embeddings; and, for a search (or a
run made `--from-tune`), the tuning landscape: objective ± its standard error against the noise
variance and gamma, one point per trial.
"""
from __future__ import annotations

import base64
import html
import io

import numpy as np

from lens_ray.report import ORDER, table

COLORS = {"mean_diff": "#7f7f7f", "original": "#000000", "direct_perturbation": "#1f77b4",
          "gaussian_sampling": "#2ca02c", "lens": "#d62728"}


def _png(fig) -> str:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=110, bbox_inches="tight")
    import matplotlib.pyplot as plt
    plt.close(fig)
    return base64.b64encode(buf.getvalue()).decode()


def metric_vs_factor(summary: list[dict], metric: str, title: str) -> str | None:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    rows = [r for r in summary if r.get(metric)]
    if not rows:
        return None
    fig, ax = plt.subplots(figsize=(6, 3.6))
    factors = sorted({r["factor"] for r in rows})
    for method in sorted({r["method"] for r in rows}, key=lambda m: ORDER.index(m) if m in ORDER else 99):
        pts = sorted((r["factor"], r[metric]["mean"], r[metric]["std"]) for r in rows if r["method"] == method)
        if len(pts) == 1 and pts[0][0] == 1:       # factor-1 methods: a band across the plot
            _, m, s = pts[0]
            ax.axhline(m, color=COLORS.get(method, "k"), ls="--" if method == "mean_diff" else "-", lw=1, label=method)
            ax.axhspan(m - s, m + s, color=COLORS.get(method, "k"), alpha=0.08)
        else:
            x, m, s = zip(*pts)
            ax.errorbar(x, m, yerr=s, marker="o", capsize=3, color=COLORS.get(method), label=method)
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
            "<style>body{font-family:sans-serif;max-width:900px;margin:2em auto}pre{background:#f6f6f6;padding:1em}"
            "</style></head><body>" + "\n".join(parts) + "</body></html>")


def render(report: dict, projection_png: str | None = None, trials: list[dict] | None = None) -> str:
    figs = [("Preference accuracy", metric_vs_factor(report["summary"], "accuracy", "accuracy on eval pairs")),
            ("Best-of-N gold", metric_vs_factor(report["summary"], "bon_gold",
                                                f"Best-of-{report.get('bon_n')} mean gold of the pick")),
            ("Tuning landscape", landscape(trials) if trials else None),
            ("Embeddings", projection_png)]
    parts = [f"<h1>lens-ray report: {html.escape(str(report['config']['name']))}</h1>",
             f"<pre>{html.escape(table(report))}</pre>"]
    return _page("lens-ray report", parts, figs)


def trials_table(trials: list[dict]) -> str:
    lines = [f"{'objective':>9} {'± se':>7} {'units':>5}  {'status':<13} point"]
    for t in sorted(trials, key=lambda t: -(t.get("objective") if t.get("objective") is not None else -9)):
        obj = f"{t['objective']:+.4f}" if t.get("objective") is not None else "n/a"
        se = f"{t['objective_se']:.4f}" if t.get("objective_se") is not None else "-"
        knobs = ", ".join(f"{k}={v:.3g}" if isinstance(v, float) else f"{k}={v}" for k, v in t["point"].items())
        lines.append(f"{obj:>9} {se:>7} {len(t.get('units', [])):>5}  {t['status']:<13} {knobs}")
    return "\n".join(lines)


def render_search(report: dict) -> str:
    test = "\n".join(f"{k:<20} " + "  ".join(f"{m} {v['mean']:.4f} ± {v['std']:.4f}" for m, v in row.items())
                     for k, row in report["test"].items())
    parts = [f"<h1>lens-ray search: {html.escape(report['name'])}</h1>",
             f"<p><b>{html.escape(report['verdict'])}</b></p>",
             f"<h2>Test data (only the chosen configurations)</h2><pre>{html.escape(test)}</pre>",
             f"<h2>Trials (k-fold objective: accuracy gain over original on the same folds)</h2>"
             f"<pre>{html.escape(trials_table(report['trials']))}</pre>"]
    return _page("lens-ray search", parts, [("Tuning landscape", landscape(report["trials"]))])
