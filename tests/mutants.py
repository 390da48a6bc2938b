"""Mutation testing of the math (`make mutants`): does a wrong `lens_ray/core` fail its tests?

Each mutant changes one thing in one module of `lens_ray/core` - an arithmetic or comparison operator, a
boolean operator, a negation, a numeric constant, a returned value - and runs the fast tests (tests/core) that
execute the mutated statement against it. A mutant is killed when a test fails (or hangs past three times
those tests' clean time); a survivor is a change no test notices. The report ends with one line,
`mutants: K killed of N (P%)`, after the survivors, each as file:line and the change; known equivalent
mutants (docs/mutants.md) are listed apart and not counted against the score.

    python tests/mutants.py [--modules vae,synth] [--tests tests/core/test_vae.py] [--jobs 2]
                             [--out bench/mutants.json]

Which tests: one clean run of tests/core first records, per test, the lines of lens_ray/core it executes
(its fixtures' lines included, whatever their scope). A mutant inside a function runs only the tests that
execute its statement, fastest first, and stops at the first failure; a statement no test executes is a
survivor without a run. A mutant of what runs at import (module constants, defaults, decorators) runs its
module's own test files (`tests_for`), since every test executes imports before tracing starts.
Speed: torch, numpy and pytest are imported once; each mutant runs in a forked child that installs the
mutated module before anything imports it, so every importer sees the mutant.
"""
from __future__ import annotations

import argparse
import ast
import atexit
import copy
import json
import os
import shutil
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import pytest

ROOT = Path(__file__).resolve().parents[1]
CORE = ROOT / "lens_ray" / "core"
TESTS = ROOT / "tests" / "core"
EQUIVALENT = ROOT / "docs" / "mutants.md"

SWAP = {ast.Add: ast.Sub, ast.Sub: ast.Add, ast.Mult: ast.Div, ast.Div: ast.Mult, ast.FloorDiv: ast.Div,
        ast.Pow: ast.Mult, ast.Mod: ast.FloorDiv, ast.MatMult: ast.Mult,
        ast.Lt: ast.LtE, ast.LtE: ast.Lt, ast.Gt: ast.GtE, ast.GtE: ast.Gt, ast.Eq: ast.NotEq, ast.NotEq: ast.Eq,
        ast.Is: ast.IsNot, ast.IsNot: ast.Is, ast.In: ast.NotIn, ast.NotIn: ast.In,
        ast.And: ast.Or, ast.Or: ast.And}


@dataclass
class Mutant:
    module: str          # e.g. vae
    line: int
    col: int
    change: str          # what was changed, in words
    source: str          # the mutated module's source
    lines: range | None  # the enclosing statement's lines inside a function; None: it runs at import

    @property
    def key(self) -> str:
        return f"core/{self.module}.py:{self.line}:{self.col}: {self.change}"


def _skip(node: ast.AST, parents: list[ast.AST]) -> bool:
    """Not worth a mutant: docstrings, messages, annotations, defaults of dataclass fields that tests pin."""
    return any(isinstance(p, (ast.JoinedStr, ast.Raise, ast.Assert)) for p in parents) or \
        any(isinstance(p, ast.arg) or (isinstance(p, ast.AnnAssign) and node is p.annotation) for p in parents)


def _mutations(tree: ast.Module):
    """(path to a node, replacement node, description) for every mutation point, in source order."""
    def walk(node, parents):
        for name, value in ast.iter_fields(node):
            items = value if isinstance(value, list) else [value]
            for i, child in enumerate(items):
                if isinstance(child, ast.AST):
                    path = (name, i if isinstance(value, list) else None)
                    yield from visit(child, parents + [node], path)
    def visit(node, parents, path):
        if not _skip(node, parents):
            yield from _variants(node, parents, path)
        yield from walk(node, parents)
    yield from walk(tree, [])


def _variants(node, parents, path):
    if isinstance(node, (ast.BinOp, ast.BoolOp)) and type(node.op) in SWAP:
        new = copy.deepcopy(node)
        new.op = SWAP[type(node.op)]()
        yield node, new, f"{type(node.op).__name__} -> {type(new.op).__name__}"
    elif isinstance(node, ast.Compare) and len(node.ops) == 1 and type(node.ops[0]) in SWAP:
        new = copy.deepcopy(node)
        new.ops = [SWAP[type(node.ops[0])]()]
        yield node, new, f"{type(node.ops[0]).__name__} -> {type(new.ops[0]).__name__}"
    elif isinstance(node, ast.UnaryOp) and isinstance(node.op, (ast.Not, ast.USub)):
        yield node, copy.deepcopy(node.operand), f"drop {type(node.op).__name__}"
    elif isinstance(node, ast.Constant) and type(node.value) in (int, float) and not isinstance(node.value, bool):
        if isinstance(parents[-1], ast.Subscript) or (isinstance(parents[-1], ast.UnaryOp)):
            return
        value = node.value
        new_value = (value + 1 if value in (0, -1) else value - 1) if isinstance(value, int) else value * 2 or 1.0
        yield node, ast.Constant(new_value), f"{value!r} -> {new_value!r}"
    elif isinstance(node, ast.Return) and node.value is not None and not isinstance(node.value, ast.Constant):
        yield node, ast.Return(ast.Constant(None)), "return None"


def mutants(module: str) -> list[Mutant]:
    path = CORE / f"{module}.py"
    source = path.read_text()
    tree = ast.parse(source)
    out = []
    points = list(_mutations(tree))
    where = _statements(tree)
    for i in range(len(points)):
        mutated = ast.parse(source)                           # a fresh tree; walk it in the same order
        target, new, change = list(_mutations(mutated))[i]
        lines = where.get(id(points[i][0]))
        _replace(mutated, target, new)
        try:
            text = ast.unparse(mutated)
            compile(text, str(path), "exec")
        except (SyntaxError, ValueError):
            continue
        out.append(Mutant(module, target.lineno, target.col_offset, change, text, lines))
    return out


def _statements(tree: ast.Module) -> dict[int, range]:
    """id(node) -> the lines of its innermost enclosing statement, for nodes that run when a function body runs
    (not in a def's header: defaults and decorators run at import; nor at module or class level)."""
    out: dict[int, range] = {}

    def walk(node, stmt, in_body):
        for name, value in ast.iter_fields(node):
            for child in value if isinstance(value, list) else [value]:
                if not isinstance(child, ast.AST):
                    continue
                if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                    body = name == "body"                      # its header (defaults, decorators) runs at import
                elif isinstance(node, ast.ClassDef):
                    body = False                               # a class body runs at import
                else:
                    body = in_body or (isinstance(node, ast.Lambda) and name == "body")
                inner = child if isinstance(child, ast.stmt) else stmt
                if body and inner is not None:
                    out[id(child)] = range(inner.lineno, inner.end_lineno + 1)
                walk(child, inner, body)
    walk(tree, None, False)
    return out


def _replace(tree: ast.AST, target: ast.AST, new: ast.AST) -> None:
    for parent in ast.walk(tree):
        for name, value in ast.iter_fields(parent):
            if value is target:
                setattr(parent, name, ast.copy_location(new, target))
                return
            if isinstance(value, list) and any(v is target for v in value):
                value[[i for i, v in enumerate(value) if v is target][0]] = ast.copy_location(new, target)
                return


# modules whose tests live beside other modules' (the math they serve is tested there)
SHARED = {"rng": ["core/test_synth.py", "core/test_search.py"],
          "augment": ["core/test_baselines.py", "core/test_augment.py"], "pairs": ["core/test_search.py",
          "core/test_pairs.py"], "records": ["core/test_records.py"], "progress": ["core/test_progress.py"]}


def tests_for(module: str) -> list[str]:
    own = TESTS / f"test_{module}.py"
    named = [ROOT / "tests" / t for t in SHARED.get(module, [])]
    return [str(p) for p in ([own] if own.exists() else []) + named if p.exists()] or [str(TESTS)]


class _Coverage:
    """A pytest plugin: per test, the (module, line) pairs of lens_ray/core it executes; per fixture, what its
    setup executes (a module-scoped fixture runs in its first test's setup only, yet every user relies on it)."""

    def __init__(self):
        self.stack: list[set] = []
        self.tests: dict[str, set] = {}
        self.fixtures: dict[str, set] = {}
        self.uses: dict[str, list[str]] = {}
        self.seconds: dict[str, float] = {}
        prefix = str(CORE) + os.sep

        def local(frame, event, arg):
            if event == "line" and self.stack:
                self.stack[-1].add((frame.f_code.co_filename[len(prefix):-3], frame.f_lineno))
            return local

        def trace(frame, event, arg):
            return local if frame.f_code.co_filename.startswith(prefix) else None
        self.trace = trace

    def _push(self):
        self.stack.append(set())

    def _pop(self) -> set:
        got = self.stack.pop()
        if self.stack:
            self.stack[-1] |= got
        return got

    @pytest.hookimpl(wrapper=True)
    def pytest_fixture_setup(self, fixturedef, request):
        self._push()
        try:
            yield
        finally:
            self.fixtures.setdefault(fixturedef.argname, set()).update(self._pop())

    @pytest.hookimpl(wrapper=True)
    def pytest_runtest_protocol(self, item, nextitem):
        self._push()
        t0 = time.time()
        try:
            yield
        finally:
            self.seconds[item.nodeid] = time.time() - t0
            self.tests[item.nodeid] = self._pop()
            self.uses[item.nodeid] = list(item.fixturenames)

    def covered(self) -> dict[str, list]:
        return {t: sorted(lines.union(*(self.fixtures.get(f, set()) for f in self.uses[t])))
                for t, lines in self.tests.items()}


def coverage(paths: list[str]) -> tuple[dict[str, set], dict[str, float]]:
    """One clean run of the tests (paths) in a forked child: {test id: {(module, line)}}, {test id: seconds}."""
    import tempfile

    with tempfile.NamedTemporaryFile(suffix=".json") as out:
        def work() -> int:
            import threading
            cov = _Coverage()
            sys.settrace(cov.trace)
            threading.settrace(cov.trace)
            code = pytest.main(["-q", "-p", "no:cacheprovider", "-p", "no:randomly", *paths], plugins=[cov])
            sys.settrace(None)
            Path(out.name).write_text(json.dumps({"code": int(code), "covered": cov.covered(),
                                                  "seconds": cov.seconds}))
            return 0
        pid = _fork_quiet(work)
        _, status = os.waitpid(pid, 0)
        data = json.loads(Path(out.name).read_text() or "{}")
    if os.waitstatus_to_exitcode(status) != 0 or data.get("code") != 0:
        raise SystemExit(f"{' '.join(paths)} fail without a mutant (or could not be traced); fix them first")
    return {t: {tuple(x) for x in v} for t, v in data["covered"].items()}, data["seconds"]


def chosen_tests(m: Mutant, covered: dict[str, set], seconds: dict[str, float]) -> list[str]:
    """The tests that execute a mutant's statement, fastest first (none: no test runs it)."""
    hit = [t for t, lines in covered.items() if any((m.module, n) in lines for n in m.lines)]
    return sorted(hit, key=seconds.__getitem__)


def _fork_quiet(work: Callable[[], int]) -> int:
    """work() in a forked child with its output silenced -> the child's pid; its exit status is work's value
    (99 if it raised)."""
    pid = os.fork()
    if pid == 0:
        try:
            devnull = os.open(os.devnull, os.O_WRONLY)
            os.dup2(devnull, 1)
            os.dup2(devnull, 2)
            code = work()
        except BaseException:
            code = 99
        os._exit(int(code))
    return pid


def _run(tests: list[str], mutant: Mutant) -> int:
    """In a forked child: install the mutant, run the tests -> the child's pid."""
    def work() -> int:
        import types

        import lens_ray.core  # noqa: F401  (the package, so the module can join it)
        name = f"lens_ray.core.{mutant.module}"
        mod = types.ModuleType(name)
        mod.__file__ = str(CORE / f"{mutant.module}.py")
        sys.modules[name] = mod
        exec(compile(mutant.source, mod.__file__, "exec"), mod.__dict__)
        return pytest.main(["-x", "-q", "-p", "no:cacheprovider", "-p", "no:randomly", *tests])
    return _fork_quiet(work)


def _progress(results: dict[str, bool], total: int, t0: float, key: str) -> None:
    """A survivor as soon as it is known; a count every 50 mutants (a full run takes about half an hour on 2 cores)."""
    if not results[key]:
        print(f"  survived: {key}", flush=True)
    if len(results) % 50 == 0:
        print(f"  {len(results)}/{total} done, {sum(not v for v in results.values())} survived so far, "
              f"{time.time() - t0:.0f} s", flush=True)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--modules", help="comma-separated modules of lens_ray/core (default: all)")
    ap.add_argument("--tests", help="comma-separated test files or folders to run against the mutants "
                    "(default: tests/core)")
    ap.add_argument("--jobs", type=int, default=os.cpu_count() or 1)
    ap.add_argument("--out", default=str(ROOT / "bench" / "mutants.json"))
    args = ap.parse_args()
    sys.path.insert(0, str(ROOT))
    import numpy  # noqa: F401  (imported once, shared by every forked child)
    import pytest  # noqa: F401
    import torch  # noqa: F401
    os.environ.setdefault("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "0")
    # one model cache for every forked test run: conftest would make one per child, and a forked child ends
    # without running atexit, so none of those would be removed
    if "LENS_RAY_MODEL_CACHE" not in os.environ:
        os.environ["LENS_RAY_MODEL_CACHE"] = cache = tempfile.mkdtemp(prefix="lens-ray-models-")
        atexit.register(shutil.rmtree, cache, ignore_errors=True)
    modules = args.modules.split(",") if args.modules else sorted(p.stem for p in CORE.glob("*.py")
                                                                  if p.stem != "__init__")
    unknown = [m for m in modules if not (CORE / f"{m}.py").exists()]
    if unknown:
        raise SystemExit(f"--modules: {', '.join(unknown)} not in lens_ray/core")
    os.chdir(ROOT)                                   # test ids are relative to the project's root
    equivalent = EQUIVALENT.read_text() if EQUIVALENT.exists() else ""
    t0 = time.time()
    paths = args.tests.split(",") if args.tests else [str(TESTS.relative_to(ROOT))]
    covered, seconds = coverage(paths)
    print(f"{','.join(paths)} traced: {len(covered)} tests, {time.time() - t0:.0f} s", flush=True)
    todo, clean, results, unrun = [], {}, {}, []
    for module in modules:
        for m in mutants(module):
            if m.lines is None:                          # runs at import: the module's own test files
                tests = paths if args.tests else tests_for(module)
                key = " ".join(tests)
                if key not in clean:                     # the traced time of the tests in those files or folders
                    clean[key] = sum(v for t, v in seconds.items() if any(
                        (ROOT / t.split("::")[0]).is_relative_to(ROOT / p) for p in tests)) + 5
                todo.append((m, tests, 3 * clean[key] + 10))
            elif tests := chosen_tests(m, covered, seconds):
                todo.append((m, tests, 3 * sum(seconds[t] for t in tests) + 15))
            else:
                results[m.key] = False                   # no test executes it: a survivor without a run
                unrun.append(m.key)
    print(f"{len(todo) + len(unrun)} mutants of {len(modules)} modules ({len(unrun)} in code no test runs); "
          f"{args.jobs} at once", flush=True)
    running, t0 = {}, time.time()
    while todo or running:
        while todo and len(running) < args.jobs:
            m, tests, limit = todo.pop(0)
            running[_run(tests, m)] = (m, time.time() + limit)
        for pid, (m, deadline) in list(running.items()):
            done, status = os.waitpid(pid, os.WNOHANG)
            if done:
                results[m.key] = os.waitstatus_to_exitcode(status) != 0
                del running[pid]
                _progress(results, len(results) + len(todo) + len(running), t0, m.key)
            elif time.time() > deadline:
                os.kill(pid, 9)
                os.waitpid(pid, 0)
                results[m.key] = True                        # hung: killed
                del running[pid]
        time.sleep(0.05)
    survivors = sorted(k for k, killed in results.items() if not killed)
    known = [k for k in survivors if k in equivalent]
    counted = {k: v for k, v in results.items() if k not in known}
    killed = sum(counted.values())
    for k in survivors:
        print(("equivalent  " if k in known else "SURVIVED    ") + k + ("  (no test runs it)" if k in unrun else ""))
    pct = 100.0 * killed / max(1, len(counted))
    Path(args.out).write_text(json.dumps({"time": time.strftime("%Y-%m-%d %H:%M"), "modules": modules,
                                          "mutants": len(counted), "killed": killed, "equivalent": known,
                                          "survivors": [k for k in survivors if k not in known],
                                          "not_run_by_any_test": [k for k in unrun if k not in known],
                                          "seconds": round(time.time() - t0, 1)}, indent=1))
    print(f"mutants: {killed} killed of {len(counted)} ({pct:.1f}%)")


if __name__ == "__main__":
    main()
