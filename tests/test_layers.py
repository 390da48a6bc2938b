"""The layering of ARCHITECTURE.md as checks: the math imports no Ray, storage or network client, and no
module imports a layer above its own."""
import ast
import json
import subprocess
import sys
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[1] / "lens_ray"
# lower layers first; a module may import its own layer and the ones before it
LAYERS = ["config", "core", "store", "data", "scoring", "distributed", "pipelines", "cli"]


def _layer(module: str) -> int | None:
    parts = module.split(".")
    if parts[0] != "lens_ray":
        return None
    return LAYERS.index(parts[1]) if len(parts) > 1 and parts[1] in LAYERS else None


def _imports(path: Path) -> set[str]:
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.module:
            found.add(node.module)
            found |= {f"{node.module}.{a.name}" for a in node.names}
        elif isinstance(node, ast.Import):
            found |= {a.name for a in node.names}
    return found


def _modules() -> list[tuple[str, Path]]:
    out = []
    for path in sorted(PACKAGE.rglob("*.py")):
        rel = path.relative_to(PACKAGE.parent).with_suffix("")
        out.append((".".join(p for p in rel.parts if p != "__init__"), path))
    return out


def test_every_module_sits_in_a_layer():
    loose = [m for m, _ in _modules() if m != "lens_ray" and _layer(m) is None]
    assert not loose, f"modules outside the layers {LAYERS}: {loose}"


def test_no_import_runs_upward():
    upward = []
    for module, path in _modules():
        own = _layer(module)
        if own is None:
            continue
        for imported in _imports(path):
            theirs = _layer(imported)
            if theirs is not None and theirs > own:
                upward.append(f"{module} -> {imported} ({LAYERS[own]} imports {LAYERS[theirs]})")
    assert not upward, "imports that run upward:\n" + "\n".join(sorted(set(upward)))


def test_the_math_imports_no_ray_storage_or_network():
    core = [m for m, _ in _modules() if m.startswith("lens_ray.core")]
    forbidden = ["ray", "s3fs", "boto3", "botocore", "pyarrow.fs", "aiohttp", "lens_ray.store", "lens_ray.data",
                 "lens_ray.scoring", "lens_ray.distributed", "lens_ray.pipelines"]
    code = (f"import importlib, json, sys\nfor m in {core!r}: importlib.import_module(m)\n"
            f"print(json.dumps([m for m in {forbidden!r} if m in sys.modules]))")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-2000:]
    assert json.loads(done.stdout.strip().splitlines()[-1]) == [], "the math pulled in: " + done.stdout


def test_the_layering_check_catches_an_upward_import(tmp_path):
    bad = tmp_path / "bad.py"
    bad.write_text("def f():\n    from lens_ray.distributed.session import connect\n")
    assert any(_layer(m) == LAYERS.index("distributed") for m in _imports(bad))
    assert _layer("lens_ray.core.vae") < _layer("lens_ray.distributed.session")
