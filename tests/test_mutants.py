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
    m = Mutant("stats", 21, 0, "Gt -> GtE", "", range(20, 22))
    covered = {"a": {("stats", 21)}, "b": {("stats", 5)}, "c": {("stats", 20), ("vae", 21)}, "d": {("vae", 21)}}
    assert chosen_tests(m, covered, {"a": 2.0, "b": 0.1, "c": 0.5, "d": 0.1}) == ["c", "a"]
    assert chosen_tests(Mutant("stats", 9, 0, "", "", range(9, 10)), covered, {}) == []


def test_every_mutant_of_a_module_compiles_and_differs():
    source = (ROOT / "lens_ray" / "core" / "stats.py").read_text()
    found = mutants("stats")
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
    assert (report["killed"], report["mutants"]) == (k, n) and n == len(mutants("stats")) - len(report["equivalent"])
    assert k + len(report["survivors"]) == n and k > 0
    assert all(s.startswith("core/stats.py:") for s in report["survivors"])
    for s in report["survivors"]:                                # each survivor is listed by the run
        assert f"SURVIVED    {s}" in done.stdout
