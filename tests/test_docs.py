"""The README and the guides stay true: every command they show parses with that command's own parser and
settings (flags that exist, values that validate), every module and path they name exists, and the cheap
commands run."""
import importlib
import re
import shlex
import subprocess
import sys
from pathlib import Path

import pytest

from lens_ray.cli import COMMANDS, FLAGS, overrides, parser
from lens_ray.config import LensConfig, ServeConfig, load_config, walk

ROOT = Path(__file__).resolve().parents[1]
DOCS = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
JOBS = {"run": "run", "full": "run", "search": "search", "tune": "search", "synthesize": "synthesize",
        "curve": "curve", "batch_score": "batch-score", "score": "batch-score"}


def _blocks(path: Path, lang: str) -> list[str]:
    return re.findall(rf"```{lang}\n(.*?)```", path.read_text(), re.S)


def _commands() -> list[tuple[str, str]]:
    """(where, command line) of every shell command in the docs' bash blocks, continuations joined."""
    out = []
    for path in DOCS:
        for block in _blocks(path, "bash"):
            for line in block.replace("\\\n", " ").splitlines():
                line = re.sub(r"\s#\s.*$", "", line).strip()
                if line:
                    out.append((path.name, line))
    return out


def _argv(line: str) -> list[str]:
    return [w for w in shlex.split(re.sub(r"[\[\]]", " ", line.replace("$PWD", "/tmp"))) if w != "..."]


def _lens_ray(words: list[str]) -> tuple[str, list[str]] | None:
    """The lens-ray command and its arguments a line runs, or None."""
    if "--" in words:                                     # ray job submit ... -- python jobs/x.py
        words = words[words.index("--") + 1:]
    for i, w in enumerate(words):
        if w.endswith("lens-ray") and i + 1 < len(words):
            return words[i + 1], words[i + 2:]
        m = re.fullmatch(r"jobs/(\w+)\.py", w)
        if m:
            return JOBS[m.group(1)], words[i + 1:]
    return None


CASES = [(where, line) for where, line in _commands() if _lens_ray(_argv(line))]


def test_the_docs_show_every_job():
    shown = {_lens_ray(_argv(line))[0] for _, line in CASES}
    assert set(COMMANDS) - {"settings"} <= shown, f"commands no guide shows: {set(COMMANDS) - shown}"


@pytest.mark.parametrize("where,line", CASES, ids=[f"{w}:{line[:60]}" for w, line in CASES])
def test_each_command_parses_with_its_own_parser(where, line):
    command, args = _lens_ray(_argv(line))
    assert command in COMMANDS, f"{where}: unknown command {command!r} in {line!r}"
    if "--help" in args:
        return
    parsed = parser(command).parse_args(args)
    if command != "settings":
        load_config(None, overrides(parsed, command))    # every flag and --set names a field and validates


def test_serve_run_lines_name_the_app_and_serve_settings():
    lines = [line for _, line in _commands() if line.startswith("serve run ")]
    assert lines
    for line in lines:
        words = shlex.split(line)
        module, _, attr = words[2].partition(":")
        assert callable(getattr(importlib.import_module(module), attr))
        fields = set(ServeConfig.__dataclass_fields__)
        assert {w.split("=")[0] for w in words[3:]} - {"run"} <= fields, line


def test_python_snippets_import():
    for path in DOCS:
        for block in _blocks(path, "python"):
            for module, names in re.findall(r"^from (lens_ray[\w.]*) import ([\w, ]+)", block, re.M):
                mod = importlib.import_module(module)
                for name in names.split(","):
                    assert hasattr(mod, name.strip()), f"{path.name}: {module}.{name.strip()}"


def test_named_files_exist():
    missing = []
    for path in DOCS:
        text = path.read_text()
        for name in re.findall(r"(?<![\w/.-])((?:lens_ray|tests|bench|jobs|cluster)/[\w/.-]+\.(?:py|yaml))", text):
            if not (ROOT / name).exists():
                missing.append(f"{path.name}: {name}")
    assert not missing, missing


def test_every_flag_of_the_flag_table_is_a_setting():
    fields = {path for path, _, _ in walk(LensConfig())}
    assert {path for flags in FLAGS.values() for path in flags.values()} <= fields


def test_the_cheap_commands_run():
    lens_ray = [sys.executable, "-m", "lens_ray.cli"]
    top = subprocess.run(lens_ray + ["--help"], capture_output=True, text=True, timeout=60)
    assert top.returncode == 0 and all(f"  {c} " in top.stdout for c in COMMANDS), top.stdout + top.stderr
    settings = subprocess.run(lens_ray + ["settings"], capture_output=True, text=True, timeout=60)
    assert settings.returncode == 0 and "vae.gamma = 0.1" in settings.stdout
    for command in COMMANDS:
        done = subprocess.run(lens_ray + [command, "--help"], capture_output=True, text=True, timeout=60)
        assert done.returncode == 0 and f"lens-ray {command}" in done.stdout, done.stderr
