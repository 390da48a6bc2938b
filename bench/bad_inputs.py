"""Bad inputs as a new user hits them: each class of mistake, the error a user sees, and the time to it
(`jobs/full.py` as a process, wall seconds from start to exit).

    .venv/bin/python bench/bad_inputs.py [--data ../shared/data/hh_harmless_dev.jsonl.gz]

Prints a markdown table and appends the figures to bench/results.jsonl (with the machine).
"""
from __future__ import annotations

import argparse
import gzip
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def cases(tmp: Path, data: str) -> dict[str, list[str]]:
    (tmp / "data.csv").write_text("prompt,chosen,rejected\nq,a,b\n")
    (tmp / "broken.jsonl.gz").write_bytes(gzip.compress(b'{"prompt": "q"}\n' * 50)[:-20])
    (tmp / "unknown.jsonl").write_text("\n".join(json.dumps({"question": f"q{i}", "answer": "a"}) for i in range(30)))
    (tmp / "latin1.json").write_bytes(b'[{"prompt": "a", "chosen": "b", "rejected": "c"},\n{"prompt": "caf\xe9"}]')
    (tmp / "nomodel").mkdir(exist_ok=True)
    return {
        "a size of zero in the VAE": ["--set", "vae.latent_dim=0"],
        "no method": ["--methods", ""],
        "a factor of 1": ["--factors", "1"],
        "a NaN noise variance": ["--set", "synth.noise_var=nan"],
        "a zero step budget": ["--set", "reward.max_steps=0"],
        "a name that leaves the run folder": ["--name", "../../x"],
        "a misspelt setting": ["--set", "vae.betta=1"],
        "a missing data file": ["--data", str(tmp / "nope.jsonl")],
        "a CSV file": ["--data", str(tmp / "data.csv")],
        "a corrupt gzip": ["--data", str(tmp / "broken.jsonl.gz")],
        "rows of an unknown format": ["--data", str(tmp / "unknown.jsonl")],
        "a non-UTF-8 byte": ["--data", str(tmp / "latin1.json")],
        "an unknown model": ["--model", "no-such-org/no-such-model"],
        "a model folder without config.json": ["--model", str(tmp / "nomodel")],
        "a missing bucket (no S3 endpoint here)": ["--storage", "s3://no-such-bucket/runs"],
        "more seed pairs than the data has": ["--seed-pairs", "100000"],
        # the hostile cases of issue 29
        "a YAML alias bomb (363 bytes)": ["--config", str(_bomb(tmp))],
        "a million seeds": ["--seeds", "1000000"],
        "a text length past the model's positions": ["--model", "minilm", "--set", "embed.max_length=1024"],
        "hub data while offline": ["--data", "hf://someone/thing@train"],
        "hf:// alone": ["--data", "hf://"],
        "an S3 endpoint that accepts and never answers": ["--storage", "s3://stalled/runs"],
    }


def _bomb(tmp: Path) -> Path:
    """A YAML of nested aliases: a few hundred bytes that expand to 9^8 values."""
    lines = ['a: &a ["x", "x", "x", "x", "x", "x", "x", "x", "x"]']
    for prev, name in zip("abcdefg", "bcdefgh"):
        lines.append(f"{name}: &{name} [" + ", ".join([f"*{prev}"] * 9) + "]")
    (tmp / "bomb.yaml").write_text("\n".join(lines + ["seeds: *h"]) + "\n")
    return tmp / "bomb.yaml"


def _stalled_endpoint() -> str:
    """An S3 endpoint on loopback that accepts connections and never answers."""
    import socket
    import threading
    hole = socket.socket()
    hole.bind(("127.0.0.1", 0))
    hole.listen(64)
    held = []
    threading.Thread(target=lambda: [held.append(hole.accept()) for _ in iter(int, 1)], daemon=True).start()
    return f"http://127.0.0.1:{hole.getsockname()[1]}"


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--data", default=str(ROOT.parent / "shared" / "data" / "hh_harmless_dev.jsonl.gz"))
    args = ap.parse_args()
    rows = []
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "AWS_EC2_METADATA_DISABLED": "true"}
    stalled = {**env, "AWS_ENDPOINT_URL": _stalled_endpoint(), "AWS_ACCESS_KEY_ID": "x", "AWS_SECRET_ACCESS_KEY": "y",
               "AWS_REGION": "us-east-1"}
    with tempfile.TemporaryDirectory() as tmp:
        for name, argv in cases(Path(tmp), args.data).items():
            if "--data" not in argv:
                argv = ["--data", args.data] + argv
            t0 = time.time()
            done = subprocess.run([sys.executable, str(ROOT / "jobs" / "full.py"), "--storage", f"{tmp}/runs", *argv],
                                  capture_output=True, text=True, env=stalled if "stalled" in " ".join(argv)
                                  else env, timeout=600)
            lines = [x for x in done.stderr.splitlines() if x.strip()]
            rows.append({"case": name, "exit": done.returncode, "seconds": round(time.time() - t0, 1),
                         "stderr_lines": len(lines), "message": lines[-1] if lines else "",
                         "ray_started": "local Ray" in done.stdout})
            print(json.dumps(rows[-1]), flush=True)
    print("\n| bad input | exit | s to error | what the user sees |\n|---|---|---|---|")
    for r in rows:
        print(f"| {r['case']} | {r['exit']} | {r['seconds']} | `{r['message'][:160]}` |")
    sys.path.insert(0, str(ROOT / "bench"))
    from embed_throughput import machine
    with open(ROOT / "bench" / "results.jsonl", "a") as fh:
        fh.write(json.dumps({"bench": "bad_inputs", "machine": machine(), "time": time.strftime("%Y-%m-%d %H:%M"),
                             "rows": rows}) + "\n")


if __name__ == "__main__":
    main()
