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

from lens_ray.pipelines.report import ORDER, table

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
    kinds = sorted({r.get("head_kind", "mlp") for r in rows if r["method"] != "mean_diff"})
    lines = sorted({(r["method"], r.get("head_kind", "mlp")) for r in rows},
                   key=lambda mh: (ORDER.index(mh[0]) if mh[0] in ORDER else 99, mh[1]))
    for method, head in lines:
        label = method if len(kinds) < 2 or method == "mean_diff" else f"{method} ({head})"
        style = "--" if method == "mean_diff" or head == "linear" else "-"
        pts = sorted((r["factor"], r[metric]["mean"], r[metric]["std"]) for r in rows
                     if r["method"] == method and r.get("head_kind", "mlp") == head)
        if len(pts) == 1 and pts[0][0] == 1:       # factor-1 methods: a band across the plot
            _, m, s = pts[0]
            ax.axhline(m, color=COLORS.get(method, "k"), ls=style, lw=1, label=label)
            ax.axhspan(m - s, m + s, color=COLORS.get(method, "k"), alpha=0.08)
        else:
            x, m, s = zip(*pts)
            ax.errorbar(x, m, yerr=s, marker="o", capsize=3, color=COLORS.get(method), ls=style, label=label)
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


def render_curve(curve: dict) -> str:
    """The learning curve's page: figures, the verdict per size, and the summary table."""
    s = curve["summary"]
    figs = [("Accuracy against seed pairs", curve_figure(s, "accuracy", gain=False)),
            ("Gain over original (same head, paired by seed)", curve_figure(s, "accuracy", gain=True)),
            ("Best-of-N gold against seed pairs", curve_figure(s, "bon_gold", gain=False)),
            ("Best-of-N gain over original", curve_figure(s, "bon_gold", gain=True))]
    text = [f"{'pairs':>6} {'best head':>9} {'original':>8} {'vs mean_diff':>14} {'best augmentation':>22} gain ± se"]
    for v in curve["verdicts"].get("accuracy", []):
        text.append(f"{v['size']:>6} {v['best_head']:>9} {v['original']:>8.3f} "
                    f"{v['over_mean_diff']:>+8.3f} ± {v['over_mean_diff_se']:.3f} {v['best_augmentation']:>22} "
                    f"{v['gain']:+.3f} ± {v['gain_se']:.3f}{'  beyond noise' if v['augmentation_pays'] else ''}")
    table = [f"{'pairs':>6} {'method':>20} {'factor':>6} {'head':>6} {'accuracy':>15} {'vs original':>16} failed"]
    for r in s:
        acc = f"{r['accuracy']['mean']:.3f} ± {r['accuracy']['std']:.3f}" if r["accuracy"] else "-"
        vs = r["accuracy_vs_original"]
        gain_text = f"{vs['mean']:+.3f} ± {vs['se']:.3f}" if vs else "-"
        table.append(f"{r['size']:>6} {r['method']:>20} {r['factor']:>6} {r['head_kind']:>6} {acc:>15} "
                     f"{gain_text:>16} {r['failed']}")
    parts = [f"<h1>lens-ray learning curve: {html.escape(curve['name'])}</h1>",
             f"<p>{html.escape(str(curve['model']))} (d={curve['embedding_dim']}), {curve['seed_pairs']} seed pairs, "
             f"{curve['eval_pairs']} eval pairs (the same for every size), {curve['bon_prompts']} Best-of-N prompts. "
             "Gains are paired by seed against original on the same head and subset; 'beyond noise' means more "
             "than twice the standard error, and the best augmentation is the best of several on these test "
             "figures, so its gain is optimistic.</p>",
             f"<h2>Verdict per size (accuracy)</h2><pre>{html.escape(chr(10).join(text))}</pre>",
             f"<h2>Every cell (mean ± std over seeds; gain ± standard error)</h2>"
             f"<pre>{html.escape(chr(10).join(table))}</pre>"]
    return _page("lens-ray learning curve", parts, figs)
