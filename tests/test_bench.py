"""The GPU benchmark cannot rot: its --smoke mode runs the same code paths on CPU with a tiny config."""
import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_gpu_bench_smoke_runs_every_stage(tmp_path):
    out = tmp_path / "results.jsonl"
    done = subprocess.run([sys.executable, str(ROOT / "bench" / "gpu.py"), "--smoke", "--out", str(out)],
                          capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    rows = [json.loads(line) for line in out.read_text().splitlines()]
    embed, maths = (next(r for r in rows if r["stage"] == s) for s in ("embed", "math"))
    assert embed["machine"] and embed["tokens"] > 0 and len(embed["rows"]) == 2
    assert embed["best"]["tokens_per_s"] == max(r["tokens_per_s"] for r in embed["rows"]) > 0
    assert embed["layers_pooled"] == [-1, -2, -3]
    assert embed["packed"]["agrees"] is True and embed["packed"]["shared_tokens"] > 0    # pairs read their prompt once
    assert embed["packed"]["tokens_per_s"] > 0 and embed["packed"]["gain"] > 0
    assert set(maths["seconds"]) == {"vae_fit", "lens_synthesis", "mlp_head", "linear_head"}
    assert maths["train_pairs"] == 100 * 8
