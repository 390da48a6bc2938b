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
