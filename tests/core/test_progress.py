"""core/progress.py: stage timings and progress lines, as a user reads them."""
import pytest

from lens_ray.core.progress import Progress, Stages


class Clock:
    """time.time that moves only when told to."""
    def __init__(self):
        self.now = 1000.0

    def __call__(self):
        return self.now


def test_stages_time_each_stage_and_check_the_guard(monkeypatch):
    clock, lines, checks = Clock(), [], []
    monkeypatch.setattr("lens_ray.core.progress.time.time", clock)
    stages = Stages(guard=lambda: checks.append(1))
    with stages.stage("embed", lines.append):
        clock.now += 1.234
    with stages.stage("embed", lines.append):                       # re-entered: summed
        clock.now += 2.0
    assert lines == ["[embed] ...", "[embed] done in 1.2s", "[embed] ...", "[embed] done in 3.2s"]
    assert stages.seconds == {"embed": 3.23} and len(checks) == 2

    def stop():
        raise RuntimeError("lease lost")
    with pytest.raises(RuntimeError, match="lease lost"):
        with Stages(guard=stop).stage("fit", lines.append):
            pass


def test_progress_says_each_tenth_once(monkeypatch):
    clock, lines = Clock(), []
    monkeypatch.setattr("lens_ray.core.progress.time.time", clock)
    p = Progress(100, "texts", lines.append)
    for _ in range(100):
        clock.now += 0.5
        p.add(1)
    assert len(lines) == 10 and lines[0] == "  10/100 texts (2 texts/s, about 45 s left)"
    assert lines[-1] == "  100/100 texts (2 texts/s)"                  # done: no time left to estimate
    q = Progress(1000, "pairs", (seen := []).append, steps=4)
    clock.now += 3
    q.add(600, rate_of=6000, unit="tokens")                          # a jump over two steps: one line
    assert seen == ["  600/1,000 pairs (2,000 tokens/s, about 2 s left)"]
    clock.now += 1
    q.add(400, rate_of=0, unit="tokens")
    assert seen[-1] == "  1,000/1,000 pairs (1,500 tokens/s)" and q.done == 1000
    empty = Progress(0, "rows", (none := []).append)                  # nothing to do: no division by zero
    empty.add(0)
    assert none == []


def test_progress_speaks_every_minute_and_weighs_the_work_left(monkeypatch):
    """Long items first (the embedding's order): a line at least every `every_s` even between tenths, and the
    time left scaled by the work (characters) left, not by the count."""
    clock, lines = Clock(), []
    monkeypatch.setattr("lens_ray.core.progress.time.time", clock)
    p = Progress(100, "texts", lines.append, every_s=60, work=1000)
    clock.now += 61
    p.add(1, work=500)                                  # 1 of 100 texts, but half the characters: no tenth yet
    assert lines == ["  1/100 texts (0 texts/s, about 61 s left)"]
    clock.now += 30
    p.add(1, work=5)                                    # within the minute, no new tenth: silent
    assert len(lines) == 1
    from lens_ray.core.progress import duration
    assert [duration(s) for s in (0.4, 89, 600, 5400, 9000)] == ["0 s", "89 s", "10 min", "1.5 h", "2.5 h"]
