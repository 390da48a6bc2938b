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


def test_peer_finetune_smoke_prepares_trains_and_pairs_with_the_pick(local_run, tmp_path):
    """bench/peer_finetune.py on the tiny Llama run: the run's pairs as lens-ray tokenizes them (none dropped by
    TRL), a full and a LoRA fine-tune of two steps, held-out accuracy paired with the run's pick; then the
    training half alone from a prepared folder, as the GPU machine runs it."""
    _, _, run = local_run
    out = tmp_path / "results.jsonl"
    script = str(ROOT / "bench" / "peer_finetune.py")
    done = subprocess.run([sys.executable, script, "--run", run.uri, "--smoke", "--out", str(out)],
                          capture_output=True, text=True, timeout=900)
    assert done.returncode == 0, done.stderr[-3000:]
    row = json.loads(out.read_text().splitlines()[-1])
    assert row["smoke"] and {r["mode"] for r in row["rows"]} == {"full", "lora"}
    for r in row["rows"]:
        assert r["train_pairs"] == r["kept_by_trl"] == 8 and r["eval_pairs"] == 8 and r["steps"] == 2
        assert 0 <= r["accuracy"] <= 1 and abs(r["vs_pick"] - (r["accuracy"] - row["pick_accuracy"])) < 1e-9
        assert r["dtype"] == "torch.float32"                            # TRL's default on a CPU
    prepared = tmp_path / "prepared"
    done = subprocess.run([sys.executable, script, "--run", run.uri, "--smoke", "--prepare", str(prepared)],
                          capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    assert (prepared / "pairs.json").exists() and (prepared / "model" / "config.json").exists()
    done = subprocess.run([sys.executable, script, "--from", str(prepared), "--smoke", "--modes", "lora",
                           "--seed", "1", "--out", str(out)], capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    assert [(r["mode"], r["seed"]) for r in json.loads(out.read_text().splitlines()[-1])["rows"]] == [("lora", 1)]
