"""A user's mistake ends in one or two readable lines and exit status 2, before Ray starts (jobs/full.py run as
users run it, in a subprocess)."""
import gzip
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def _files(tmp: Path) -> dict[str, str]:
    good = [{"prompt": f"Q{i}", "chosen": "yes", "rejected": "no"} for i in range(40)]
    (tmp / "data.csv").write_text("prompt,chosen,rejected\nq,a,b\n")
    (tmp / "broken.jsonl.gz").write_bytes(gzip.compress(b'{"prompt": "q"}\n' * 50)[:-20])
    (tmp / "unknown.jsonl").write_text("\n".join(json.dumps({"question": f"q{i}", "answer": "a"}) for i in range(30)))
    (tmp / "same.jsonl").write_text("\n".join(json.dumps({"prompt": f"q{i}", "chosen": "a", "rejected": "a"})
                                              for i in range(30)))
    (tmp / "latin1.json").write_bytes(json.dumps(good[:3]).encode()[:-1] + b',\n{"prompt": "caf\xe9"}]')
    (tmp / "good.jsonl").write_text("\n".join(json.dumps(r) for r in good))
    (tmp / "nomodel").mkdir()
    return {"csv": str(tmp / "data.csv"), "gz": str(tmp / "broken.jsonl.gz"), "unknown": str(tmp / "unknown.jsonl"),
            "same": str(tmp / "same.jsonl"), "latin1": str(tmp / "latin1.json"), "good": str(tmp / "good.jsonl"),
            "nomodel": str(tmp / "nomodel")}


CASES = {
    "latent size zero": (["--set", "vae.latent_dim=0"], "vae.latent_dim: must be >= 1"),
    "no method": (["--methods", ""], "methods: needs at least one value"),
    "factor one": (["--factors", "1"], "factors: must be >= 2"),
    "NaN noise": (["--set", "synth.noise_var=nan"], "synth.noise_var: must be a finite number"),
    "traversing name": (["--name", "../../x"], "is not a plain name"),
    "unknown setting": (["--set", "vae.betta=1"], "vae.betta: unknown option"),
    "missing file": (["--data", "{tmp}/nope.jsonl"], "nope.jsonl"),
    "CSV": (["--data", "{csv}"], "csv is not a supported format"),
    "corrupt gzip": (["--data", "{gz}"], "not a readable gzip file"),
    "unknown format": (["--data", "{unknown}"], "0 usable pairs from 30 rows"),
    "identical responses": (["--data", "{same}"], "30 x 'rejected: identical to chosen'"),
    "not UTF-8": (["--data", "{latin1}"], "line 2: not UTF-8"),
    "unknown model": (["--data", "{good}", "--model", "no-such-org/no-such-model"], "hub is offline"),
    "model folder without config": (["--data", "{good}", "--model", "{nomodel}"], "has no config.json"),
    "missing bucket": (["--data", "{good}", "--storage", "s3://no-such-bucket/runs"], "does the bucket exist"),
}


@pytest.mark.parametrize("case", list(CASES))
def test_user_error_is_one_line_before_ray(case, tmp_path, s3_server):
    args, expected = CASES[case]
    files = {**_files(tmp_path), "tmp": str(tmp_path)}
    argv = [a.format(**files) for a in args]
    if "--data" not in argv:
        argv = ["--data", files["good"]] + argv
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    done = subprocess.run([sys.executable, str(ROOT / "jobs" / "full.py"), "--seed-pairs", "10",
                           "--storage", str(tmp_path / "runs"), *argv], capture_output=True, text=True, env=env,
                          timeout=120)
    lines = [line for line in done.stderr.splitlines() if line.strip()]
    assert done.returncode == 2, done.stdout[-2000:] + done.stderr[-2000:]
    assert 1 <= len(lines) <= 2 and expected in done.stderr, done.stderr
    assert "Traceback" not in done.stderr and "local Ray" not in done.stdout
