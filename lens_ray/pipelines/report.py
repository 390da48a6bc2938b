"""Report: aggregate results across seeds, print a table, write report.json and report.md. No Ray."""
from __future__ import annotations

from collections import defaultdict

from lens_ray.core.stats import mean_std, paired
from lens_ray.store.storage import Storage

ORDER = ("mean_diff", "original", "direct_perturbation", "gaussian_sampling", "lens")


def summarize(results: list[dict]) -> list[dict]:
    """Per (method, factor, head kind): accuracy and BoN gold, mean and std over seeds, and the gain over
    `original` on the same head kind, paired by seed (same validation split, same budget)."""
    by_key: dict[tuple[str, int, str], dict[int, dict]] = defaultdict(dict)
    for r in results:
        by_key[(r["method"], r["factor"], r.get("head_kind", "mlp"))][r["seed"]] = r
    rank = {m: i for i, m in enumerate(ORDER)}
    out = []
    for (method, factor, head), seeds in sorted(by_key.items(),
                                                key=lambda kv: (rank.get(kv[0][0], 99), kv[0][2], kv[0][1])):
        base = by_key.get(("original", 1, head)) or by_key.get(("original", 1, "mlp"), {})
        row = {"method": method, "factor": factor, "head_kind": head,
               "failed": sum(r.get("status") == "failed" for r in seeds.values())}
        for metric in ("accuracy", "bon_gold"):
            row[metric] = mean_std(r[metric] for r in seeds.values())
            row[f"{metric}_vs_original"] = mean_std(paired(seeds, base, metric)) if method != "original" else None
        out.append(row)
    return out


def _fmt(cell: dict | None, scale: float = 1.0, signed: bool = False) -> str:
    if cell is None:
        return "-"
    sign = "+" if signed and cell["mean"] >= 0 else ""
    return f"{sign}{cell['mean'] * scale:.3f} ± {cell['std'] * scale:.3f}"


def table(report: dict) -> str:
    """A markdown table of the summary (mean ± std over seeds)."""
    data = report.get("data", {})
    dupes = ""
    if data.get("duplicate_pairs"):
        dupes = f"; {data['duplicate_pairs']} duplicate pairs " + ("left out" if data["duplicates"] == "quarantine"
                                                                   else "kept")
    lines = [f"model {report['model']} (d={report['embedding_dim']}), {report['seed_pairs']} seed pairs "
             f"({data.get('seed_prompts', '?')} prompts), {report['eval_pairs']} eval pairs "
             f"({data.get('eval_prompts', '?')} prompts), {report.get('bon_prompts') or 0} BoN prompts" + dupes,
             "",
             "| method | factor | head | accuracy | vs original | BoN gold | vs original |",
             "|---|---|---|---|---|---|---|"]
    for r in report["summary"]:
        lines.append(f"| {r['method']} | {r['factor']}x | {r.get('head_kind', 'mlp')} | {_fmt(r['accuracy'])} | "
                     f"{_fmt(r['accuracy_vs_original'], signed=True)} | {_fmt(r['bon_gold'])} | "
                     f"{_fmt(r['bon_gold_vs_original'], signed=True)} |")
    if report.get("bon_random") is not None:
        lines.append(f"\nBest-of-{report['bon_n']}: random pick {report['bon_random']:.3f}, oracle pick "
                     f"{report['bon_oracle']:.3f}")
    lines.append("timings (s): " + ", ".join(f"{k} {v:.0f}" for k, v in report["timings_s"].items()))
    if report.get("quarantined"):
        lines.append("quarantined: " + ", ".join(f"{k} x{v}" for k, v in report["quarantined"].items()))
    failed = [r for r in report["results"] if r.get("status") == "failed"]
    if failed:
        lines.append(f"FAILED (no metrics, left out of the table above): {len(failed)} of {len(report['results'])} "
                     "models: " + "; ".join(sorted({r["reason"] for r in failed})))
    return "\n".join(lines)


def write(out: Storage, report: dict) -> None:
    out.write_json("report.json", report)
    out.write_bytes("report.md", (table(report) + "\n").encode())
