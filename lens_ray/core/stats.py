"""Summaries over seeds and folds: mean, spread and paired differences. Pure numpy, no Ray."""
from __future__ import annotations

import math

import numpy as np


def mean_std(values) -> dict | None:
    """{mean, std (ddof=1; 0 for a single value), n} of the values that are not None; None if there are none."""
    vals = [float(v) for v in values if v is not None]
    if not vals:
        return None
    return {"mean": float(np.mean(vals)), "std": float(np.std(vals, ddof=1)) if len(vals) > 1 else 0.0,
            "n": len(vals)}


def standard_error(values) -> float:
    """Standard error of the mean (nan for fewer than two values)."""
    v = np.asarray(list(values), dtype=np.float64)
    return float(v.std(ddof=1) / math.sqrt(len(v))) if len(v) > 1 else float("nan")


def wilson_interval(p: float, n: int, z: float = 1.96) -> tuple[float, float]:
    """The 95% (z = 1.96) Wilson score interval of an accuracy p measured on n pairs: (low, high), in [0, 1]."""
    if n <= 0:
        return 0.0, 1.0
    centre = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / (1 + z * z / n)
    return max(0.0, centre - half), min(1.0, centre + half)


def paired(rows: dict, base: dict, metric: str) -> list[float]:
    """rows, base: key (e.g. seed) -> row; the metric's differences row - base over keys both have a value for."""
    return [r[metric] - base[k][metric] for k, r in rows.items()
            if k in base and r.get(metric) is not None and base[k].get(metric) is not None]
