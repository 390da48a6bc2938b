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
    from tests.test_config import BOMB
    (tmp / "bomb.yaml").write_text(BOMB)
    return {"csv": str(tmp / "data.csv"), "gz": str(tmp / "broken.jsonl.gz"), "unknown": str(tmp / "unknown.jsonl"),
            "same": str(tmp / "same.jsonl"), "latin1": str(tmp / "latin1.json"), "good": str(tmp / "good.jsonl"),
            "nomodel": str(tmp / "nomodel"), "bomb": str(tmp / "bomb.yaml")}


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
    "a layer the model lacks": (["--data", "{good}", "--set", "selection.layers=-1,-99"],
                                "selection.layers: layer -99, but smollm2 has 30 blocks (layers -1 to -31)"),
    "text longer than the model reads": (["--data", "{good}", "--model", "minilm", "--set", "embed.max_length=1024"],
                                         "embed.max_length: 1024 tokens, but minilm reads at most 512"),
    "hub data offline": (["--data", "hf://someone/thing@train"], "the Hugging Face hub is not reachable"),
    "hf:// alone": (["--data", "hf://"], "give hf://owner/name"),
    "a YAML alias bomb": (["--data", "{good}", "--config", "{bomb}"], "expands to more than 100,000 values"),
    "a million seeds": (["--data", "{good}", "--seeds", "1000000"], "seeds: must be <= 100"),
    "more folds than prompts": (["--data", "{good}", "--set", "selection.folds=11"],
                                "selection.folds: 11 folds of whole prompts, but the seed pairs have only 10 prompts"),
    "gold objective without gold": (["--data", "{good}", "--set", "selection.objective=bon_gold"],
                                    "selection.objective=bon_gold: 10 of 10 seed pairs have no gold scores"),
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


# ---------------------------------------------------------------- the other commands, refused early and short

def _cli(*args: str, timeout: float = 120) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if k != "RAY_ADDRESS"}
    return subprocess.run([sys.executable, "-m", "lens_ray.cli", *args], capture_output=True, text=True, env=env,
                          timeout=timeout)


def _one_line(done: subprocess.CompletedProcess, expected: str) -> None:
    lines = [line for line in done.stderr.splitlines() if line.strip()]
    assert done.returncode == 2 and len(lines) == 1 and expected in lines[0], (done.returncode, done.stderr[-2000:])
    assert "local Ray" not in done.stdout and "Traceback" not in done.stderr


def test_later_commands_refuse_bad_inputs_before_ray(local_run, tmp_path):
    _, report, run = local_run
    n = report["seed_pairs"]
    (tmp_path / "other").mkdir()
    (tmp_path / "other" / "notes.txt").write_text("mine")
    (tmp_path / "a-file").write_text("x")
    (tmp_path / "empty.jsonl").write_text("")
    synth = ["synthesize", "--from-run", run.uri]
    cases = [
        (synth + ["--pairs", "10000000000", "--mode", "materialized", "--out", str(tmp_path / "big")],
         "scale.pairs: 10,000,000,000 materialized pairs need about"),
        (synth + ["--pairs", "10000000000", "--mode", "seeded", "--out", str(tmp_path / "big")],   # no room, or --yes
         "about 130.4 GiB in 610,352 shards of 16,384 pairs (14 bytes a pair)"),
        (synth + ["--pairs", "100", "--out", run.uri], "a finished run's folder"),
        (synth + ["--pairs", "100", "--out", str(tmp_path / "other")], "a folder holding other files"),
        (["curve", "--from-run", run.uri, "--sizes", "20,100000"], f"100000 more than the run's {n} seed pairs"),
        (["curve", "--from-run", run.uri, "--sizes", "20,20"], "curve.sizes: each size once"),
        (["batch-score", "--run", str(tmp_path / "nope"), "--data", str(tmp_path / "empty.jsonl"), "--out",
          str(tmp_path / "scored")], "no report.json"),
        (["export", "--run", run.uri, "--out", str(tmp_path / "a-file")], "a file, not a folder"),
        (["export", "--run", run.uri, "--out", str(tmp_path / "other")], "a folder holding other files"),
        (["score", "--run", run.uri, "--prompt", "a", "--response", "b", "--input", str(tmp_path / "empty.jsonl")],
         "not both"),
        (["score", "--run", run.uri, "--head", "lens-f4-s0/../x", "--prompt", "a", "--response", "b"],
         "is not a plain name"),
    ]
    for args, expected in cases:
        _one_line(_cli(*args), expected)


def test_score_says_which_head_and_counts_an_empty_input(local_run, tmp_path):
    _, _, run = local_run
    (tmp_path / "empty.jsonl").write_text("\n")
    done = _cli("score", "--run", run.uri, "--head", "original-f1-s0", "--input", str(tmp_path / "empty.jsonl"))
    assert done.returncode == 0 and done.stdout == ""
    assert f"scoring 0 row(s) with head original-f1-s0 of {run.uri}" in done.stderr


def test_a_head_of_another_dimension_is_refused_naming_both(local_run, tmp_path):
    import shutil

    from lens_ray.core.heads import RewardHead
    from lens_ray.store.artifacts import save_model
    from lens_ray.store.storage import Storage
    _, report, run = local_run
    copy = tmp_path / "run"
    shutil.copytree(run.path(), copy)
    head = RewardHead(report["embedding_dim"] + 1, 8)                  # self-consistent files, another dimension
    save_model(Storage(str(copy)).child("heads"), "foreign", head.state_dict(), head.config())
    _one_line(_cli("score", "--run", str(copy), "--head", "foreign", "--prompt", "a", "--response", "b"),
              f"a head of dimension {report['embedding_dim'] + 1}, but the run's embeddings at its layers have "
              f"dimension {report['embedding_dim']}")


@pytest.mark.parametrize("stop", ["SIGINT", "SIGTERM"])
def test_ctrl_c_or_sigterm_ends_in_one_line_saying_what_was_kept(local_run, tmp_path, stop):
    """Ctrl-C (SIGINT to the job's process group) or SIGTERM to the job's process (what a scheduler sends):
    no traceback and no stack dump (Ray's core worker installs one for SIGTERM), one line, 130 or 143."""
    import signal
    import time
    _, _, run = local_run
    env = {k: v for k, v in os.environ.items() if k != "RAY_ADDRESS"}
    proc = subprocess.Popen([sys.executable, str(ROOT / "jobs" / "synthesize.py"), "--from-run", run.uri, "--pairs",
                             "3000000", "--shard-pairs", "20000", "--out", str(tmp_path / "pairs")], env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True)
    deadline = time.time() + 180
    seen = ""
    while time.time() < deadline and "shards to write" not in seen:
        seen += proc.stdout.readline()
    if stop == "SIGINT":
        os.killpg(proc.pid, signal.SIGINT)
    else:
        os.kill(proc.pid, signal.SIGTERM)
    out, err = proc.communicate(timeout=120)
    assert "shards to write" in seen, seen + out + err
    assert proc.returncode == {"SIGINT": 130, "SIGTERM": 143}[stop], (proc.returncode, err[-2000:])
    assert "Traceback" not in err and "KeyboardInterrupt" not in err and "SIGTERM received" not in err, err[-2000:]
    why = {"SIGINT": "interrupted", "SIGTERM": "terminated"}[stop]
    assert f"{why}; everything committed so far is kept, and the same command resumes" in err


def test_debug_shows_the_traceback_a_user_error_otherwise_hides(tmp_path):
    """The same user error: one line without --debug, the traceback with it; neither starts Ray."""
    args = ["run", "--data", str(tmp_path / "missing.jsonl"), "--storage", str(tmp_path / "runs")]
    plain = _cli(*args)
    _one_line(plain, "missing.jsonl")
    debug = _cli(*args, "--debug")
    assert debug.returncode != 0 and "Traceback" in debug.stderr and "missing.jsonl" in debug.stderr
    assert not (tmp_path / "runs").exists()                           # nothing created before the checks pass


@pytest.mark.parametrize("job,command", [("run", "run"), ("full", "run"), ("search", "search"), ("tune", "search"),
                                         ("curve", "curve"),
                                         ("synthesize", "synthesize"), ("batch_score", "batch-score"),
                                         ("score", "batch-score")])
def test_every_job_script_is_its_command(job, command):
    """Each `jobs/*.py` (what `ray job submit` runs) parses as its lens-ray command: the same flags, the same help."""
    done = subprocess.run([sys.executable, str(ROOT / "jobs" / f"{job}.py"), "--help"], capture_output=True,
                          text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-2000:]
    from lens_ray.cli import parser
    flags = {a for action in parser(command)._actions for a in action.option_strings}
    assert all(flag in done.stdout for flag in flags if flag.startswith("--")), (job, done.stdout[:2000])


def test_version_names_lens_ray_and_what_it_runs_on():
    done = _cli("--version")
    assert done.returncode == 0 and done.stdout.startswith("lens-ray 0.1.0 (ray "), done.stdout + done.stderr
    assert "torch " in done.stdout and "python 3." in done.stdout
    assert _cli("-V").stdout == done.stdout


def test_local_uris_are_recorded_absolute(tmp_path, monkeypatch):
    """A run started in one folder names its storage, output and cache absolutely (report.json keeps them), so
    commands run from another folder find the same run and cache; S3 URIs stay as given."""
    from lens_ray.cli import config_from_args, run_parser
    from lens_ray.pipelines.job import absolute_locations
    monkeypatch.chdir(tmp_path)
    cfg = absolute_locations(config_from_args(run_parser("t").parse_args(
        ["--data", "d.jsonl", "--storage", "runs", "--set", "cache=shared/cache", "--set", "out=~/elsewhere"])))
    assert (cfg.storage, cfg.cache) == (str(tmp_path / "runs"), str(tmp_path / "shared" / "cache"))
    assert cfg.out == os.path.join(os.path.expanduser("~"), "elsewhere") and cfg.out_uri == cfg.out
    s3 = absolute_locations(config_from_args(run_parser("t").parse_args(["--data", "d.jsonl", "--storage",
                                                                         "s3://bucket/runs"])))
    assert s3.storage == "s3://bucket/runs" and s3.cache_uri == "s3://bucket/runs/cache"
