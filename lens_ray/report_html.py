"""report.html: a self-contained page (PNG plots inlined) users look at rather than read. No Ray.

Figures: accuracy (and Best-of-N gold) against augmentation factor per method, mean ± std over seeds;
a 2-D PCA projection of real vs LENS-synthetic chosen / rejected embeddings.
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
    proj = lambda e: (e.reshape(-1, e.shape[-1]) - mean) @ vt[:2].T  # noqa: E731
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


def render(report: dict, projection_png: str | None = None) -> str:
    figs = [("Preference accuracy", metric_vs_factor(report["summary"], "accuracy", "accuracy on eval pairs")),
            ("Best-of-N gold", metric_vs_factor(report["summary"], "bon_gold",
                                                f"Best-of-{report.get('bon_n')} mean gold of the pick")),
            ("Embeddings", projection_png)]
    parts = [f"<h1>lens-ray report: {html.escape(str(report['config']['name']))}</h1>",
             f"<pre>{html.escape(table(report))}</pre>"]
    for title, png in figs:
        if png:
            parts.append(f"<h2>{title}</h2><img alt='{title}' src='data:image/png;base64,{png}'>")
    return ("<!doctype html><html><head><meta charset='utf-8'><title>lens-ray report</title>"
            "<style>body{font-family:sans-serif;max-width:900px;margin:2em auto}pre{background:#f6f6f6;padding:1em}"
            "</style></head><body>" + "\n".join(parts) + "</body></html>")
