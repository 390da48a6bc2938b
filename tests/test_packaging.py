"""What installs lens-ray: pyproject states bounds only (so it installs beside RewardBench, TRL or OpenRLHF, which
pin their own), and requirements-lock.txt pins every one of them at the version CI tests."""
import re
import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def _name(requirement: str) -> str:
    return re.split(r"[\[<>=!~; ]", requirement, maxsplit=1)[0].lower().replace("_", "-")


def test_pyproject_bounds_and_the_lock_pins():
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    needs = project["dependencies"] + project["optional-dependencies"]["test"]
    exact = [r for r in project["dependencies"] if "==" in r]
    assert not exact, f"exact pins in the dependencies: {exact} (pin in requirements-lock.txt instead)"
    lock = {}
    for line in (ROOT / "requirements-lock.txt").read_text().splitlines():
        if line.strip() and not line.startswith("#"):
            name, _, version = line.partition("==")
            lock[name.lower().replace("_", "-")] = version
    missing = [r for r in needs if _name(r) not in lock]
    assert not missing, f"not in requirements-lock.txt: {missing}"
    assert "s3fs" not in lock and lock["torch"] == "2.13.0"        # the CPU wheel's version, no local label
    assert "requirements-lock.txt" in (ROOT / "Makefile").read_text()


def test_make_run_reads_the_sample_beside_the_checkout_or_else_the_hub():
    """A fresh clone without ../shared/data takes HH-RLHF harmless-base from the hub (and lets the hub be
    reached); with the sample there, the sample, offline."""
    import subprocess
    root = Path(__file__).resolve().parents[1]
    dry = lambda *a: subprocess.run(["make", "-n", "--no-print-directory", "run", *a], cwd=root,  # noqa: E731
                                    capture_output=True, text=True, timeout=60).stdout
    assert "jobs/run.py --data hf://Anthropic/hh-rlhf/harmless-base@test" in dry("SAMPLE=/nonexistent.jsonl.gz")
    sample = root.parent / "shared" / "data" / "hh_harmless_dev.jsonl.gz"
    if sample.exists():
        assert "jobs/run.py --data ../shared/data/hh_harmless_dev.jsonl.gz" in dry()
    assert "jobs/run.py --data mine.jsonl" in dry("DATA=mine.jsonl")
    # the hub may be reached by `make run` on hf:// data only; every other target (make test) stays offline
    db = lambda *a: subprocess.run(["make", "-p", "-n", "run", *a], cwd=root, capture_output=True,  # noqa: E731
                                   text=True, timeout=60).stdout
    assert "run: HF_HUB_OFFLINE := 0" in db("SAMPLE=/nonexistent.jsonl.gz")
    assert "run: HF_HUB_OFFLINE := 1" in db("DATA=mine.jsonl") and "\nHF_HUB_OFFLINE := 1" in db()
