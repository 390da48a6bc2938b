"""Mutation testing of the math (`make mutants`): does a wrong `lens_ray/core` fail its tests?

Each mutant changes one thing in one module of `lens_ray/core` - an arithmetic or comparison operator, a
boolean operator, a negation, a numeric constant, a returned value - and runs that module's fast tests
(tests/core/test_<module>.py, else all of tests/core) against it. A mutant is killed when a test fails (or
hangs past three times the suite's clean time); a survivor is a change no test notices. The report ends with
one line, `mutants: K killed of N (P%)`, after the survivors, each as file:line and the change; known
equivalent mutants (docs/mutants.md) are listed apart and not counted against the score.

    python tests/mutants.py [--modules vae,synth] [--jobs 2] [--out bench/mutants.json]

Speed: torch, numpy and pytest are imported once; each mutant runs in a forked child that installs the
mutated module before anything imports it, so every importer sees the mutant.
"""
from __future__ import annotations

import argparse
import ast
import copy
import json
import os
import sys
import time
from dataclasses import dataclass
from pathlib import Path

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
    for i in range(len(points)):
        mutated = ast.parse(source)                           # a fresh tree; walk it in the same order
        target, new, change = list(_mutations(mutated))[i]
        _replace(mutated, target, new)
        try:
            text = ast.unparse(mutated)
            compile(text, str(path), "exec")
        except (SyntaxError, ValueError):
            continue
        out.append(Mutant(module, target.lineno, target.col_offset, change, text))
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


def _run(tests: list[str], mutant: Mutant | None) -> int:
    """In a forked child: install the mutant (if any), run the tests; the child's exit status."""
    pid = os.fork()
    if pid == 0:
        try:
            devnull = os.open(os.devnull, os.O_WRONLY)
            os.dup2(devnull, 1)
            os.dup2(devnull, 2)
            if mutant is not None:
                import types

                import lens_ray.core  # noqa: F401  (the package, so the module can join it)
                name = f"lens_ray.core.{mutant.module}"
                mod = types.ModuleType(name)
                mod.__file__ = str(CORE / f"{mutant.module}.py")
                sys.modules[name] = mod
                exec(compile(mutant.source, mod.__file__, "exec"), mod.__dict__)
            import pytest
            code = pytest.main(["-x", "-q", "-p", "no:cacheprovider", "-p", "no:randomly", *tests])
        except BaseException:
            code = 99
        os._exit(int(code))
    return pid


def _progress(results: dict[str, bool], total: int, t0: float, key: str) -> None:
    """A survivor as soon as it is known; a count every 50 mutants (a full run takes most of an hour)."""
    if not results[key]:
        print(f"  survived: {key}", flush=True)
    if len(results) % 50 == 0:
        print(f"  {len(results)}/{total} done, {sum(not v for v in results.values())} survived so far, "
              f"{time.time() - t0:.0f} s", flush=True)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--modules", help="comma-separated modules of lens_ray/core (default: all)")
    ap.add_argument("--jobs", type=int, default=os.cpu_count() or 1)
    ap.add_argument("--out", default=str(ROOT / "bench" / "mutants.json"))
    args = ap.parse_args()
    sys.path.insert(0, str(ROOT))
    import numpy  # noqa: F401  (imported once, shared by every forked child)
    import pytest  # noqa: F401
    import torch  # noqa: F401
    os.environ.setdefault("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "0")
    modules = args.modules.split(",") if args.modules else sorted(p.stem for p in CORE.glob("*.py")
                                                                  if p.stem != "__init__")
    equivalent = EQUIVALENT.read_text() if EQUIVALENT.exists() else ""
    todo, clean = [], {}
    for module in modules:
        tests = tests_for(module)
        key = " ".join(tests)
        if key not in clean:
            t0 = time.time()
            _, status = os.waitpid(_run(tests, None), 0)
            if os.waitstatus_to_exitcode(status) != 0:
                raise SystemExit(f"the tests of {module} fail without a mutant; fix them first")
            clean[key] = time.time() - t0
        todo += [(m, tests, 3 * clean[key] + 10) for m in mutants(module)]
    print(f"{len(todo)} mutants of {len(modules)} modules; {args.jobs} at once", flush=True)
    results, running, t0 = {}, {}, time.time()
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
        print(("equivalent  " if k in known else "SURVIVED    ") + k)
    pct = 100.0 * killed / max(1, len(counted))
    Path(args.out).write_text(json.dumps({"time": time.strftime("%Y-%m-%d %H:%M"), "modules": modules,
                                          "mutants": len(counted), "killed": killed, "equivalent": known,
                                          "survivors": [k for k in survivors if k not in known],
                                          "seconds": round(time.time() - t0, 1)}, indent=1))
    print(f"mutants: {killed} killed of {len(counted)} ({pct:.1f}%)")


if __name__ == "__main__":
    main()
