"""Mutation testing (`make mutants`): does a wrong `lens_ray` fail its tests?

Each mutant changes one thing in one module of a package of `lens_ray` (core, store, scoring, data,
pipelines) and runs the fast tests of that package's test folder (tests/<package>) that execute the mutated
statement against it. The changes (OPERATORS):
- `operator`: an arithmetic, comparison or boolean operator swapped (+ for -, < for <=, and for or ...);
- `negation`: a `not` or a unary minus dropped;
- `constant`: a number moved by one (or doubled);
- `return`: a returned value replaced by None;
- `delete`: a statement with an effect deleted (a call, an augmented assignment, a store into an attribute or
  item, a re-assignment of a name, a raise); a first assignment of a local name is left alone (deleting it only
  raises NameError), and so are `print` and `log.debug/info` lines (what is printed is the CLI tests' job);
- `swap`: two neighbouring positional arguments exchanged in a call of a function or class lens_ray defines
  (a library's calls are left alone: `max(a, b)`, `torch.zeros(n, d)` are commutative or fail at once).
A mutant is killed when a test fails (or hangs past three times those tests' clean time); a survivor is a
change no test notices. The report ends with one line, `mutants: K killed of N (P%)`, after the survivors,
each as file:line and the change; known equivalent mutants (docs/mutants.md) are listed apart and not counted
against the score.

    python tests/mutants.py [--packages core,store] [--modules vae,store/lease] [--operators delete,swap]
                             [--tests tests/core/test_vae.py] [--fast 5] [--jobs 2] [--out bench/mutants.json]

Which tests: one clean run of the packages' test folders first records, per test, the lines of lens_ray it
executes (its fixtures' lines included, whatever their scope). A mutant inside a function runs only the tests
that execute its statement and take at most --fast seconds, fastest first, and stops at the first failure; a
statement no test executes is a survivor without a run; one that only slower tests execute (a Ray cluster, a
server) is not tried and is counted apart ("only slow tests reach it"). A mutant of what runs at import (module
constants, defaults, decorators) runs its module's own test files (`tests_for`), since every test executes
imports before tracing starts. Code that runs in Ray's worker processes is outside the mutant's reach (they
import the module from disk), so its mutants count as reached only by the driver's tests.
Speed: torch, numpy and pytest are imported once; each mutant runs in a forked child that installs the
mutated module before anything imports it, so every importer in that process sees the mutant.
"""
from __future__ import annotations

import argparse
import ast
import atexit
import copy
import dataclasses
import functools
import json
import os
import shutil
import sys
import tempfile
import time
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = ROOT / "lens_ray"
PACKAGES = ("core", "store", "scoring", "data", "pipelines")
OPERATORS = ("operator", "negation", "constant", "return", "delete", "swap")
EQUIVALENT = ROOT / "docs" / "mutants.md"
QUIET_CALLS = {"print", "debug", "info"}      # what is printed: not the math's to test

SWAP = {ast.Add: ast.Sub, ast.Sub: ast.Add, ast.Mult: ast.Div, ast.Div: ast.Mult, ast.FloorDiv: ast.Div,
        ast.Pow: ast.Mult, ast.Mod: ast.FloorDiv, ast.MatMult: ast.Mult,
        ast.Lt: ast.LtE, ast.LtE: ast.Lt, ast.Gt: ast.GtE, ast.GtE: ast.Gt, ast.Eq: ast.NotEq, ast.NotEq: ast.Eq,
        ast.Is: ast.IsNot, ast.IsNot: ast.Is, ast.In: ast.NotIn, ast.NotIn: ast.In,
        ast.And: ast.Or, ast.Or: ast.And}


@dataclass
class Mutant:
    module: str          # package/module, e.g. core/vae
    line: int
    col: int
    change: str          # what was changed, in words
    source: str          # the mutated module's source
    lines: range | None  # the enclosing statement's lines inside a function; None: it runs at import
    end: int | None = None   # the node's end column, named only where nested nodes share a start ("4 * n * n")

    @property
    def key(self) -> str:
        at = f"{self.col}-{self.end}" if self.end is not None else f"{self.col}"
        return f"{self.module}.py:{self.line}:{at}: {self.change}"


def _skip(node: ast.AST, parents: list[ast.AST]) -> bool:
    """Not worth a mutant: docstrings, messages, annotations, defaults of dataclass fields that tests pin."""
    return any(isinstance(p, (ast.JoinedStr, ast.Raise, ast.Assert)) for p in parents) or \
        any(isinstance(p, ast.arg) or (isinstance(p, ast.AnnAssign) and node is p.annotation) for p in parents)


def _mutations(tree: ast.Module, operators=OPERATORS):
    """(node, replacement node, description) for every mutation point, in source order."""
    def walk(node, parents):
        for name, value in ast.iter_fields(node):
            items = value if isinstance(value, list) else [value]
            for i, child in enumerate(items):
                if isinstance(child, ast.AST):
                    path = (name, i if isinstance(value, list) else None)
                    yield from visit(child, parents + [node], path)
    def visit(node, parents, path):
        if not _skip(node, parents):
            yield from _variants(node, parents, path, operators)
        yield from walk(node, parents)
    yield from walk(tree, [])


def _variants(node, parents, path, operators=OPERATORS):
    """(node, replacement, description) of each mutation of one node, for the operators asked for."""
    if isinstance(node, (ast.BinOp, ast.BoolOp)) and type(node.op) in SWAP:
        if "operator" in operators:
            new = copy.deepcopy(node)
            new.op = SWAP[type(node.op)]()
            yield node, new, f"{type(node.op).__name__} -> {type(new.op).__name__}"
    elif isinstance(node, ast.Compare) and len(node.ops) == 1 and type(node.ops[0]) in SWAP:
        if "operator" in operators:
            new = copy.deepcopy(node)
            new.ops = [SWAP[type(node.ops[0])]()]
            yield node, new, f"{type(node.ops[0]).__name__} -> {type(new.ops[0]).__name__}"
    elif isinstance(node, ast.UnaryOp) and isinstance(node.op, (ast.Not, ast.USub)):
        if "negation" in operators:
            yield node, copy.deepcopy(node.operand), f"drop {type(node.op).__name__}"
    elif isinstance(node, ast.Constant) and type(node.value) in (int, float) and not isinstance(node.value, bool):
        if isinstance(parents[-1], ast.Subscript) or (isinstance(parents[-1], ast.UnaryOp)):
            return
        value = node.value
        new_value = (value + 1 if value in (0, -1) else value - 1) if isinstance(value, int) else value * 2 or 1.0
        if "constant" in operators:
            yield node, ast.Constant(new_value), f"{value!r} -> {new_value!r}"
    elif isinstance(node, ast.Return) and node.value is not None and not isinstance(node.value, ast.Constant):
        if "return" in operators:
            yield node, ast.Return(ast.Constant(None)), "return None"
    if "delete" in operators and isinstance(node, ast.stmt) and _deletable(node, parents):
        yield node, ast.Pass(), "delete statement"
    if "swap" in operators and isinstance(node, ast.Call) and _callee(node) in _own_names():
        for i in range(len(node.args) - 1):
            a, b = node.args[i], node.args[i + 1]
            if isinstance(a, ast.Starred) or isinstance(b, ast.Starred) or ast.dump(a) == ast.dump(b):
                continue
            new = copy.deepcopy(node)
            new.args[i], new.args[i + 1] = new.args[i + 1], new.args[i]
            yield node, new, f"swap arguments {i + 1} and {i + 2}"


def _callee(call: ast.Call) -> str | None:
    return getattr(call.func, "id", None) or getattr(call.func, "attr", None)


@functools.cache
def _own_names() -> frozenset[str]:
    """The names of the functions, methods and classes lens_ray defines (whose call sites `swap` mutates)."""
    return frozenset(n.name for path in PACKAGE.rglob("*.py") for n in ast.walk(ast.parse(path.read_text()))
                     if isinstance(n, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef))
                     and not n.name.startswith("__"))


def _deletable(node: ast.stmt, parents: list[ast.AST]) -> bool:
    """A statement inside a function whose deletion changes behaviour, not only raises NameError: a call, an
    augmented assignment, a store into an attribute or item, a name assigned before, a raise; not a
    docstring, nor a print or log.debug/info line."""
    function = next((p for p in reversed(parents) if isinstance(p, (ast.FunctionDef, ast.AsyncFunctionDef))), None)
    if function is None:
        return False
    if isinstance(node, (ast.AugAssign, ast.Raise, ast.Delete)):
        return True
    if isinstance(node, ast.Expr):
        call = node.value
        if not isinstance(call, (ast.Call, ast.Await)):
            return False                                     # a docstring or a bare name
        call = call.value if isinstance(call, ast.Await) else call
        return not isinstance(call, ast.Call) or _callee(call) not in QUIET_CALLS
    if isinstance(node, (ast.Assign, ast.AnnAssign)) and node.value is not None:
        targets = node.targets if isinstance(node, ast.Assign) else [node.target]
        known = {a.arg for a in ast.walk(function.args) if isinstance(a, ast.arg)} | {
            n.id for n in ast.walk(function) if isinstance(n, ast.Name) and isinstance(n.ctx, ast.Store)
            and (n.lineno, n.col_offset) < (node.lineno, node.col_offset)}
        names = [n for t in targets for n in ast.walk(t) if isinstance(n, ast.Name) and isinstance(n.ctx, ast.Store)]
        return all(n.id in known for n in names)
    return False


def mutants(module: str, operators=OPERATORS) -> list[Mutant]:
    """Every compiling mutant of one module (package/module, e.g. core/vae) for the operators asked for."""
    path = PACKAGE / f"{module}.py"
    source = path.read_text()
    tree = ast.parse(source)
    out = []
    points = list(_mutations(tree, operators))
    where = _statements(tree)
    for i in range(len(points)):
        mutated = ast.parse(source)                           # a fresh tree; walk it in the same order
        target, new, change = list(_mutations(mutated, operators))[i]
        lines = where.get(id(points[i][0]))
        _replace(mutated, target, new)
        try:
            text = ast.unparse(mutated)
            compile(text, str(path), "exec")
        except (SyntaxError, ValueError):
            continue
        out.append(Mutant(module, target.lineno, target.col_offset, change, text, lines))
        out[-1].end = target.end_col_offset                   # kept below only where two keys would be one
    twins = Counter(dataclasses.replace(m, end=None).key for m in out)
    for m in out:
        if twins[dataclasses.replace(m, end=None).key] == 1:
            m.end = None
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


# modules whose tests live beside other modules' (the code they serve is tested there)
SHARED = {"core/rng": ["core/test_synth.py", "core/test_search.py"],
          "core/augment": ["core/test_baselines.py", "core/test_augment.py"],
          "core/pairs": ["core/test_search.py", "core/test_pairs.py"], "core/records": ["core/test_records.py"],
          "core/progress": ["core/test_progress.py"], "store/columns": ["store/test_artifacts.py"],
          "store/embedding_cache": ["store/test_artifacts.py"], "store/search_results": ["store/test_artifacts.py"],
          "scoring/hf_modeling": ["scoring/test_export.py"], "data/formats": ["data/test_ingest.py"],
          "pipelines/report_html": ["pipelines/test_report.py"]}


def tests_for(module: str) -> list[str]:
    """The test files of a module (package/module): its own, and those SHARED names."""
    package, name = module.split("/")
    own = ROOT / "tests" / package / f"test_{name}.py"
    named = [ROOT / "tests" / t for t in SHARED.get(module, [])]
    return [str(p) for p in ([own] if own.exists() else []) + named if p.exists()] or [str(ROOT / "tests" / package)]


class _Coverage:
    """A pytest plugin: per test, the (package/module, line) pairs of lens_ray it executes; per fixture, what its
    setup executes (a module-scoped fixture runs in its first test's setup only, yet every user relies on it)."""

    def __init__(self):
        self.stack: list[set] = []
        self.tests: dict[str, set] = {}
        self.fixtures: dict[str, set] = {}
        self.uses: dict[str, list[str]] = {}
        self.seconds: dict[str, float] = {}
        self.fixture_seconds: dict[str, float] = {}
        prefix = str(PACKAGE) + os.sep

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
        t0 = time.time()
        try:
            yield
        finally:
            self.fixtures.setdefault(fixturedef.argname, set()).update(self._pop())
            spent = self.fixture_seconds.get(fixturedef.argname, 0.0)
            self.fixture_seconds[fixturedef.argname] = max(spent, time.time() - t0)

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

    def cost(self) -> dict[str, float]:
        """Per test, what running it alone takes: its own time and the setup of every fixture it uses (a shared
        fixture is set up once per session in the clean run, but again in each mutant's process)."""
        return {t: self.seconds[t] + sum(self.fixture_seconds.get(f, 0.0) for f in self.uses[t])
                for t in self.tests}


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
                                                  "seconds": cov.cost()}))
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
        import importlib
        import types
        package, module = mutant.module.split("/")
        importlib.import_module(f"lens_ray.{package}")   # the package (it imports none of its modules), to join
        name = f"lens_ray.{package}.{module}"
        mod = types.ModuleType(name)
        mod.__file__ = str(PACKAGE / f"{mutant.module}.py")
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


def _modules(args) -> list[str]:
    """package/module names from --modules (a bare name is core's) or every module of --packages."""
    if args.modules:
        modules = [m if "/" in m else f"core/{m}" for m in args.modules.split(",")]
    else:
        modules = [f"{pkg}/{p.stem}" for pkg in args.packages.split(",")
                   for p in sorted((PACKAGE / pkg).glob("*.py")) if p.stem != "__init__"]
    unknown = [m for m in modules if not (PACKAGE / f"{m}.py").exists()]
    if unknown:
        raise SystemExit(f"--modules/--packages: {', '.join(unknown)} not in lens_ray")
    return modules


def survivors_markdown(reports: list[str]) -> str:
    """Every survivor of the given runs (their --out JSON files), by module, each with its source line as the
    module reads now (a line since changed shows what is there now)."""
    lines = []
    for path in reports:
        doc = json.loads(Path(path).read_text())
        unrun, slow = set(doc.get("not_run_by_any_test", [])), doc.get("only_slow_tests_reach", [])
        lines += [f"## {Path(path).name}: {', '.join(doc['operators'])} over {len(doc['modules'])} modules",
                  "", f"{doc['killed']} killed of {doc['mutants']}; {len(doc['survivors'])} survivors, "
                  f"{len(unrun)} of them in code no traced test runs; {len(slow)} not tried (only slow tests reach "
                  "them).", ""]
        by_module: dict[str, list[str]] = {}
        for key in doc["survivors"] + [f"{k} (not tried)" for k in slow]:
            by_module.setdefault(key.split(":")[0], []).append(key)
        for module, keys in sorted(by_module.items()):
            source = (PACKAGE / module).read_text().splitlines() if (PACKAGE / module).exists() else []
            lines += [f"### {module} ({len(keys)})", ""]
            for key in keys:
                n = int(key.split(":")[1])
                code = source[n - 1].strip() if 0 < n <= len(source) else ""
                mark = " *(no test runs it)*" if key in unrun else ""
                lines.append(f"- `{key.split(':', 1)[1]}`{mark}: `{code[:100]}`")
            lines.append("")
    return "\n".join(lines)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--packages", default="core,store,scoring,data,pipelines",
                    help=f"comma-separated packages of lens_ray (default: all of {', '.join(PACKAGES)})")
    ap.add_argument("--modules", help="comma-separated modules, e.g. vae,store/lease (a bare name is core's); "
                    "default: every module of --packages")
    ap.add_argument("--operators", default=",".join(OPERATORS), help="comma-separated kinds of change "
                    f"(default: all of {', '.join(OPERATORS)})")
    ap.add_argument("--tests", help="comma-separated test files or folders to trace and run against the mutants "
                    "(default: tests/<package> of each package mutated)")
    ap.add_argument("--fast", type=float, default=5.0, help="run only tests whose clean run took at most this "
                    "many seconds; a mutant only slower tests reach is counted apart, not tried (default: 5)")
    ap.add_argument("--jobs", type=int, default=os.cpu_count() or 1)
    ap.add_argument("--out", default=str(ROOT / "bench" / "mutants.json"))
    ap.add_argument("--list-survivors", nargs="+", metavar="JSON", help="print every survivor of these runs' --out "
                    "files as markdown, by module, and exit")
    args = ap.parse_args()
    if args.list_survivors:
        print(survivors_markdown(args.list_survivors))
        return
    operators = args.operators.split(",")
    if bad := [o for o in operators if o not in OPERATORS]:
        raise SystemExit(f"--operators: {', '.join(bad)} unknown; choose from {', '.join(OPERATORS)}")
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
    modules = _modules(args)
    os.chdir(ROOT)                                   # test ids are relative to the project's root
    equivalent = EQUIVALENT.read_text() if EQUIVALENT.exists() else ""
    t0 = time.time()
    paths = args.tests.split(",") if args.tests else sorted({f"tests/{m.split('/')[0]}" for m in modules})
    covered, seconds = coverage(paths)
    fast = {t for t, v in seconds.items() if v <= args.fast}
    print(f"{','.join(paths)} traced: {len(covered)} tests ({len(fast)} within {args.fast:g} s), "
          f"{time.time() - t0:.0f} s", flush=True)
    todo, results, unrun, slow = [], {}, [], []
    for module in modules:
        for m in mutants(module, operators):
            if m.lines is None:                          # runs at import: the fast tests of its own files
                files = paths if args.tests else tests_for(module)
                tests = sorted((t for t in fast if any((ROOT / t.split("::")[0]).is_relative_to(ROOT / f)
                                                      for f in files)), key=seconds.__getitem__)
            else:
                tests = [t for t in chosen_tests(m, covered, seconds) if t in fast]
            if tests:
                todo.append((m, tests, 3 * sum(seconds[t] for t in tests) + 15))
            elif m.lines is not None and not chosen_tests(m, covered, seconds):
                results[m.key] = False                   # no test executes it: a survivor without a run
                unrun.append(m.key)
            else:
                slow.append(m.key)                       # only tests slower than --fast reach it: not tried
    print(f"{len(todo) + len(unrun) + len(slow)} mutants of {len(modules)} modules ({len(unrun)} in code no "
          f"test runs, {len(slow)} only slow tests reach, not tried); {args.jobs} at once", flush=True)
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
                                          "operators": operators, "fast_s": args.fast,
                                          "mutants": len(counted), "killed": killed, "equivalent": known,
                                          "survivors": [k for k in survivors if k not in known],
                                          "not_run_by_any_test": [k for k in unrun if k not in known],
                                          "only_slow_tests_reach": slow,
                                          "seconds": round(time.time() - t0, 1)}, indent=1))
    if slow:
        print(f"{len(slow)} mutants only tests slower than {args.fast:g} s reach were not tried (in {args.out})")
    print(f"mutants: {killed} killed of {len(counted)} ({pct:.1f}%)")


if __name__ == "__main__":
    main()
