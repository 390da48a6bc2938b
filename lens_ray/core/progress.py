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
    """A line each time `done` crosses another tenth of `total`, and at least every `every_s` seconds between, with
    the rate since the start and, before the end, an estimate of the time left:
    `  <done>/<total> <what> (<rate> <unit>/s, about <t> left)`. The estimate scales the time so far by the work
    left, where `work` weighs the items (characters of text, say, when items differ in cost); else by count."""

    def __init__(self, total: int, what: str, log: Log, steps: int = 10, every_s: float | None = 60.0,
                 work: float | None = None):
        self.total, self.what, self.log, self.steps, self.every_s = max(1, total), what, log, steps, every_s
        self.done, self.amount, self.t0, self._shown = 0, 0.0, time.time(), 0
        self.work_total, self.work_done = float(work if work is not None else self.total), 0.0
        self._last = self.t0

    def add(self, n: int, rate_of: float | None = None, unit: str = "", work: float | None = None) -> None:
        """n more done; rate_of: the amount whose rate is shown (default: n itself, in `what`); work: their
        weight for the estimate (default: n)."""
        self.done += n
        self.amount += n if rate_of is None else rate_of
        self.work_done += n if work is None else work
        step, now = self.done * self.steps // self.total, time.time()
        if step > self._shown or (self.every_s is not None and now - self._last >= self.every_s):
            self._shown, self._last = max(step, self._shown), now
            elapsed = max(now - self.t0, 1e-9)
            left = "" if self.done >= self.total or self.work_done <= 0 else \
                f", about {duration(elapsed * (self.work_total - self.work_done) / self.work_done)} left"
            self.log(f"  {self.done:,}/{self.total:,} {self.what} ({self.amount / elapsed:,.0f} "
                     f"{unit or self.what}/s{left})")


def duration(seconds: float) -> str:
    """A time left as a user reads it: "40 s", "7 min", "2.5 h"."""
    if seconds < 90:
        return f"{max(seconds, 0):.0f} s"
    if seconds < 90 * 60:
        return f"{seconds / 60:.0f} min"
    return f"{seconds / 3600:.1f} h"
