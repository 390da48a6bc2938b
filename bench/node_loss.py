"""A node lost mid-stage, on a real two-node Ray cluster on this machine (loopback only): `ray start --head`
(1 CPU) and a second `ray start --address ...` (2 CPUs), each with its own temp dir and ports; `jobs/run.py`
submitted with `ray job submit`; the worker node's raylet SIGKILLed while the heads train, and again (a fresh
worker node) while texts embed. Each disturbed job is compared with an undisturbed one of the same settings.

    .venv/bin/python bench/node_loss.py [--data ../shared/data/hh_harmless_dev.jsonl.gz]

The jobs use a tiny random Llama (a real tokenizer) so that minutes measure the fault handling, not the model.
Resources leave room for the job on the head alone after the loss (workers and actors of half a CPU).
Prints what happened and appends it, with the machine, to bench/results.jsonl.
"""
from __future__ import annotations

import argparse
import json
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
RAY = str(Path(sys.executable).parent / "ray")
SETTINGS = ["--seed-pairs", "60", "--eval-pairs", "40", "--seeds", "2", "--factors", "4",
            "--methods", "original,mean_diff,lens", "--set", "vae.epochs=30", "--set", "reward.max_steps=200",
            "--set", "reward.eval_every=20", "--set", "embed.max_length=64", "--set", "embed.dtype=float32",
            "--set", "resources.reward_workers=2", "--set", "resources.reward_cpus_per_worker=0.5",
            "--set", "resources.vae_workers=2", "--set", "resources.vae_cpus_per_worker=0.5",
            "--set", "resources.embed_batch_size=4"]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def ports() -> list[str]:
    return [f"--{flag}={free_port()}" for flag in ("dashboard-agent-listen-port", "dashboard-agent-grpc-port",
                                                    "runtime-env-agent-port", "metrics-export-port",
                                                    "node-manager-port", "object-manager-port")]


def kill_tree(temp_dir: str, only: str | None = None) -> list[int]:
    """SIGKILL the processes that name this temp dir (only those whose command holds `only`, if given)."""
    killed = []
    for pid in (p for p in os.listdir("/proc") if p.isdigit()):
        try:
            cmd = open(f"/proc/{pid}/cmdline", "rb").read()
        except OSError:
            continue
        if temp_dir.encode() in cmd and (only is None or only.encode() in cmd):
            try:
                os.kill(int(pid), signal.SIGKILL)
                killed.append(int(pid))
            except ProcessLookupError:
                pass
    return killed


class Cluster:
    def __init__(self):
        self.head_dir = tempfile.mkdtemp(prefix="lrh-", dir="/tmp")
        self.gcs, self.dash = free_port(), free_port()
        self.env = {**os.environ, "RAY_AUTH_MODE": "token", "RAY_AUTH_TOKEN": secrets.token_hex(32),
                    "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER": "1", "HF_HUB_OFFLINE": "1",   # 1: two nodes on 127.0.0.1
                    "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}"}
        subprocess.run([RAY, "start", "--head", "--node-ip-address", "127.0.0.1", "--port", str(self.gcs),
                        "--num-cpus", "1", "--temp-dir", self.head_dir, "--dashboard-host", "127.0.0.1",
                        "--dashboard-port", str(self.dash), "--ray-client-server-port", str(free_port()), *ports()],
                       env=self.env, check=True, capture_output=True)
        self.worker_dir = ""
        self.address = f"http://127.0.0.1:{self.dash}"

    def add_worker(self) -> None:
        self.worker_dir = tempfile.mkdtemp(prefix="lrw-", dir="/tmp")
        subprocess.run([RAY, "start", "--address", f"127.0.0.1:{self.gcs}", "--node-ip-address", "127.0.0.1",
                        "--num-cpus", "2", "--temp-dir", self.worker_dir, *ports()], env=self.env, check=True,
                       capture_output=True, text=True)

    def lose_worker(self) -> list[int]:
        return kill_tree(self.worker_dir, only="raylet")

    def submit(self, job_id: str, args: list[str]) -> subprocess.Popen:
        return subprocess.Popen([RAY, "job", "submit", "--address", self.address, "--submission-id", job_id,
                                 "--working-dir", ".", "--runtime-env", "cluster/runtime-env.yaml", "--",
                                 "python", "jobs/run.py", *args], cwd=ROOT, env=self.env, stdout=subprocess.PIPE,
                                stderr=subprocess.STDOUT, text=True)

    def logs(self, job_id: str) -> str:
        done = subprocess.run([RAY, "job", "logs", job_id, "--address", self.address], env=self.env,
                              capture_output=True, text=True)
        return done.stdout

    def stop(self) -> None:
        for d in (self.worker_dir, self.head_dir):
            if d:
                kill_tree(d)
                shutil.rmtree(d, ignore_errors=True)


def tiny_llama(folder: str) -> str:
    """The tests' tiny random Llama with a trained byte-level BPE tokenizer (tests/conftest.py)."""
    sys.path.insert(0, str(ROOT))
    from tests.conftest import build_tiny_llama
    return build_tiny_llama(Path(folder) / "tiny-llama")


def job(cluster: Cluster, job_id: str, args: list[str], lose_at: str | None) -> dict:
    """Submit, optionally lose the worker node when the job's log shows `lose_at`; wait; what happened."""
    t0, proc, lost = time.time(), cluster.submit(job_id, args), None
    while proc.poll() is None:
        if lose_at and lost is None and lose_at in cluster.logs(job_id):
            lost = {"after_s": round(time.time() - t0, 1), "killed": cluster.lose_worker()}
        time.sleep(1.0)
    out = proc.stdout.read()
    return {"job": job_id, "returncode": proc.returncode, "seconds": round(time.time() - t0, 1), "lost": lost,
            "succeeded": f"Job '{job_id}' succeeded" in out, "tail": out[-600:]}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--data", default=str(ROOT.parent / "shared" / "data" / "hh_harmless_dev.jsonl.gz"))
    args = ap.parse_args()
    work = tempfile.mkdtemp(prefix="lens-node-loss-")
    model = tiny_llama(work)
    cluster, rows = Cluster(), []
    try:
        for stage, marker in (("train_reward", "[train_reward] ..."), ("embed", "[embed] ...")):
            cluster.add_worker()
            time.sleep(5)
            base = ["--data", args.data, "--model", model, "--storage", os.path.join(work, stage)] + SETTINGS
            runs = {}
            for name, lose_at in (("calm", None), ("lost", marker)):
                cache = os.path.join(work, stage, f"cache-{name}")      # a cold cache: the embedding really runs
                runs[name] = job(cluster, f"{name}-{stage}", base + ["--name", name, "--cache", cache], lose_at)
            calm, hit = runs["calm"], runs["lost"]
            paths = [os.path.join(work, stage, n, "report.json") for n in ("calm", "lost")]
            reports = [json.load(open(p)) if os.path.exists(p) else None for p in paths]
            same = bool(reports[0] and reports[1] and [r["accuracy"] for r in reports[0]["results"]] ==
                        [r["accuracy"] for r in reports[1]["results"]])
            rows.append({"lost_during": stage, "undisturbed_s": calm["seconds"], "disturbed_s": hit["seconds"],
                         "node_lost_after_s": (hit["lost"] or {}).get("after_s"), "succeeded": hit["succeeded"],
                         "same_results": same, "tail": hit["tail"] if not hit["succeeded"] else ""})
            print(json.dumps(rows[-1]), flush=True)
    finally:
        cluster.stop()
        shutil.rmtree(work, ignore_errors=True)
    sys.path.insert(0, str(ROOT / "bench"))
    from embed_throughput import machine
    with open(ROOT / "bench" / "results.jsonl", "a") as fh:
        fh.write(json.dumps({"bench": "node_loss", "machine": machine(), "time": time.strftime("%Y-%m-%d %H:%M"),
                             "rows": rows}) + "\n")


if __name__ == "__main__":
    main()
