"""How long work tells its user where it is: the log callable every stage takes, stage timings, and progress
lines at each tenth of a long loop. Pure Python, no Ray.
"""
from __future__ import annotations

import contextlib
import time
from dataclasses import dataclass, field
from typing import Callable

Log = Callable[[str], None]


@dataclass
class Stages:
    """Seconds per named stage (summed over re-entries), logged as each starts and ends."""
    seconds: dict[str, float] = field(default_factory=dict)
    guard: Callable[[], None] = lambda: None       # checked after every stage (e.g. the output's lease)

    @contextlib.contextmanager
    def stage(self, name: str, log: Log):
        log(f"[{name}] ...")
        t0 = time.time()
        yield
        self.guard()
        self.seconds[name] = round(self.seconds.get(name, 0.0) + time.time() - t0, 2)
        log(f"[{name}] done in {self.seconds[name]:.1f}s")


class Progress:
    """A line each time `done` crosses another tenth of `total`, with the rate since the start:
    `  <done>/<total> <what> (<rate> <unit>/s)`."""

    def __init__(self, total: int, what: str, log: Log, steps: int = 10):
        self.total, self.what, self.log, self.steps = max(1, total), what, log, steps
        self.done, self.amount, self.t0, self._shown = 0, 0.0, time.time(), 0

    def add(self, n: int, rate_of: float | None = None, unit: str = "") -> None:
        """n more done; rate_of: the amount whose rate is shown (default: n itself, in `what`)."""
        self.done += n
        self.amount += n if rate_of is None else rate_of
        step = self.done * self.steps // self.total
        if step > self._shown:
            self._shown = step
            rate = self.amount / max(time.time() - self.t0, 1e-9)
            self.log(f"  {self.done:,}/{self.total:,} {self.what} ({rate:,.0f} {unit or self.what}/s)")
