"""`make mutants` (tests/mutants.py): which statement a mutant is in, which tests it runs, and a real run."""
import ast
import json
import re
import subprocess
import sys
from pathlib import Path

from tests.mutants import Mutant, _statements, chosen_tests, mutants

ROOT = Path(__file__).resolve().parents[1]

SOURCE = '''\
LIMIT = 3


def f(x, y=2):
    z = x + 1
    if x > LIMIT:
        return [
            z * y,
        ]
    return z
'''


def _nodes(tree, kind):
    return [n for n in ast.walk(tree) if isinstance(n, kind)]


def test_a_mutant_in_a_body_knows_its_statement_and_one_at_import_does_not():
    tree = ast.parse(SOURCE)
    where = _statements(tree)
    consts = {n.value: n for n in _nodes(tree, ast.Constant)}
    assert where[id(consts[1])] == range(5, 6)                  # z = x + 1
    assert id(consts[3]) not in where                            # LIMIT = 3 runs at import
    assert id(consts[2]) not in where                            # a default runs at import too
    mult = _nodes(tree, ast.BinOp)[1]
    assert isinstance(mult.op, ast.Mult) and where[id(mult)] == range(7, 10)   # its statement spans three lines
    compare = _nodes(tree, ast.Compare)[0]
    assert where[id(compare)] == range(6, 10)                    # an if's test: the whole if


def test_a_mutant_runs_only_the_tests_that_execute_its_statement_fastest_first():
    m = Mutant("core/stats", 21, 0, "Gt -> GtE", "", range(20, 22))
    covered = {"a": {("core/stats", 21)}, "b": {("core/stats", 5)}, "c": {("core/stats", 20), ("core/vae", 21)},
               "d": {("core/vae", 21)}, "e": {("store/stats", 21)}}
    assert chosen_tests(m, covered, {"a": 2.0, "b": 0.1, "c": 0.5, "d": 0.1, "e": 0.1}) == ["c", "a"]
    assert chosen_tests(Mutant("core/stats", 9, 0, "", "", range(9, 10)), covered, {}) == []


def test_every_mutant_of_a_module_compiles_and_differs():
    source = (ROOT / "lens_ray" / "core" / "stats.py").read_text()
    found = mutants("core/stats")
    assert len(found) > 10 and all(m.source != ast.unparse(ast.parse(source)) for m in found)
    assert all(m.lines is None or m.line in m.lines for m in found)


def test_a_run_on_one_module_reports_its_score_and_survivors(tmp_path):
    out = tmp_path / "m.json"
    done = subprocess.run([sys.executable, "tests/mutants.py", "--modules", "stats", "--tests",
                           "tests/core/test_stats.py", "--jobs", "2", "--out", str(out)],
                          cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]
    last = done.stdout.strip().splitlines()[-1]
    k, n = map(int, re.fullmatch(r"mutants: (\d+) killed of (\d+) \([\d.]+%\)", last).groups())
    report = json.loads(out.read_text())
    assert (report["killed"], report["mutants"]) == (k, n)
    assert n == len(mutants("core/stats")) - len(report["equivalent"])
    assert k + len(report["survivors"]) == n and k > 0
    assert all(s.startswith("core/stats.py:") for s in report["survivors"])
    for s in report["survivors"]:                                # each survivor is listed by the run
        assert f"SURVIVED    {s}" in done.stdout


DELETIONS = '''\
def g(xs, w):
    """A docstring."""
    total = 0
    print("starting")
    out = []
    for x in xs:
        total += x
        out.append(x)
    w.best = total
    total = max(total, 1)
    if total < 0:
        raise ValueError("negative")
    return fit_head(total, w), max(total, w)
'''


def test_delete_and_swap_mutate_effects_and_own_calls_only():
    """Statement deletion takes calls, augmented and attribute stores, re-assignments and raises, not a first
    assignment (a NameError), a docstring or a print; swaps touch calls of lens_ray's own functions only."""
    from tests.mutants import _mutations
    found = [(node.lineno, change) for node, _, change in _mutations(ast.parse(DELETIONS), ("delete", "swap"))]
    assert found == [(7, "delete statement"), (8, "delete statement"), (9, "delete statement"),
                     (10, "delete statement"), (12, "delete statement"), (13, "swap arguments 1 and 2")]
    assert [c for _, _, c in _mutations(ast.parse(DELETIONS), ("constant",))] == ["0 -> 1", "1 -> 0", "0 -> 1"]


def test_a_run_past_the_math_package_with_the_new_operators(tmp_path):
    """A package other than core, only the new operators: the run mutates that package's module, runs its
    tests, and names its survivors by package/module."""
    out = tmp_path / "m.json"
    done = subprocess.run([sys.executable, "tests/mutants.py", "--modules", "scoring/protocols", "--operators",
                           "delete,swap", "--tests", "tests/scoring/test_protocols.py", "--fast", "30", "--jobs",
                           "2", "--out", str(out)], cwd=ROOT, capture_output=True, text=True, timeout=900)
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]
    report = json.loads(out.read_text())
    made = mutants("scoring/protocols", ("delete", "swap"))
    assert report["operators"] == ["delete", "swap"] and report["fast_s"] == 30
    assert len(made) > 10 and all(re.fullmatch(r"delete statement|swap arguments (\d+) and \d+", m.change)
                                  for m in made)
    assert report["mutants"] + len(report["equivalent"]) + len(report["only_slow_tests_reach"]) == len(made)
    assert report["killed"] > 0 and report["killed"] + len(report["survivors"]) == report["mutants"]
    assert all(s.startswith("scoring/protocols.py:") for s in report["survivors"])
    for s in report["survivors"]:
        assert f"SURVIVED    {s}" in done.stdout
    listed = subprocess.run([sys.executable, "tests/mutants.py", "--list-survivors", str(out)], cwd=ROOT,
                            capture_output=True, text=True, timeout=120)
    assert listed.returncode == 0 and f"### scoring/protocols.py ({len(report['survivors'])})" in listed.stdout
    assert all(f"`{s.split(':', 1)[1]}`" in listed.stdout for s in report["survivors"])
