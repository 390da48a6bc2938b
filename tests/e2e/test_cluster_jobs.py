"""A Ray cluster as users run one, on loopback: `ray start --head` with Ray's fake multi-node autoscaler
provider (node types and head shape from cluster/aws.yaml), jobs submitted with `ray job submit`.

The head schedules no work (CPU: 0, as in aws.yaml), so every task of a job makes the autoscaler add
a worker node; idle workers go away after the idle timeout. The cluster has its own token (one auth
mode for all its processes) and its own temp dir, by which the fixture stops exactly its processes.
"""
import json
import os
import secrets
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest
import yaml
from ray.autoscaler._private.fake_multi_node.node_provider import FAKE_HEAD_NODE_ID

from lens_ray.store.storage import Storage
from tests.conftest import FAST, _free_port

ROOT = Path(__file__).resolve().parents[2]
RAY = str(Path(sys.executable).parent / "ray")


def fake_config(gcs: str) -> dict:
    """cluster/aws.yaml's head shape and worker types on the fake provider (one machine, small nodes)."""
    aws = yaml.safe_load((ROOT / "cluster" / "aws.yaml").read_text())
    store = 300 * 2**20
    shapes = {"cpu_worker": {"CPU": 2, "object_store_memory": store},
              "gpu_worker": {"CPU": 1, "GPU": 1, "object_store_memory": store}}
    types = {"ray.head.default": {"resources": aws["available_node_types"][aws["head_node_type"]]["resources"],
                                  "node_config": {}, "max_workers": 0}}
    for name, shape in shapes.items():
        t = aws["available_node_types"][name]
        types[name] = {"resources": shape, "node_config": {}, "min_workers": t["min_workers"],
                       "max_workers": min(t["max_workers"], 2)}
    return {"cluster_name": "lens-fake", "max_workers": 4, "idle_timeout_minutes": 0.1, "upscaling_speed": 1.0,
            "provider": {"type": "fake_multinode", "gcs_address": gcs, "use_node_id_as_ip": True,
                         "disable_node_updaters": True, "disable_launch_config_check": True},   # no SSH to fake nodes
            "auth": {"ssh_user": "ubuntu"},
            "available_node_types": types, "head_node_type": "ray.head.default", "file_mounts": {},
            "cluster_synced_files": [], "file_mounts_sync_continuously": False, "initialization_commands": [],
            "setup_commands": [], "head_setup_commands": [], "worker_setup_commands": [],
            "head_start_ray_commands": [], "worker_start_ray_commands": []}


def _stop(temp_dir: str) -> None:
    """SIGKILL every process of this cluster (they all name its temp dir); never `ray stop`, which stops all."""
    for pid in os.listdir("/proc"):
        if not pid.isdigit():
            continue
        try:
            with open(f"/proc/{pid}/cmdline", "rb") as fh:
                if temp_dir.encode() in fh.read():
                    os.kill(int(pid), signal.SIGKILL)
        except (OSError, ProcessLookupError):
            pass


@pytest.fixture(scope="module")
def cluster(s3_server):
    temp_dir = tempfile.mkdtemp(prefix="lr-", dir="/tmp")      # short: Ray's socket paths live under it
    gcs_port, dash_port = _free_port(), _free_port()
    env = {**os.environ, "RAY_AUTH_MODE": "token", "RAY_AUTH_TOKEN": secrets.token_hex(32),
           "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER": "0", "RAY_FAKE_CLUSTER": "1", "AUTOSCALER_UPDATE_INTERVAL_S": "1",
           "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}"}
    config = os.path.join(temp_dir, "autoscaler.json")
    with open(config, "w") as fh:
        json.dump(fake_config(f"127.0.0.1:{gcs_port}"), fh)
    try:
        # every port of its own: another Ray on this machine (the test session's) holds the defaults
        ports = [f"--{flag}={_free_port()}" for flag in ("dashboard-agent-listen-port", "dashboard-agent-grpc-port",
                                                          "runtime-env-agent-port", "metrics-export-port",
                                                          "ray-client-server-port")]
        subprocess.run([RAY, "start", "--head", "--node-ip-address", "127.0.0.1", "--port", str(gcs_port),
                        "--num-cpus", "0", "--autoscaling-config", config, "--temp-dir", temp_dir,
                        "--dashboard-host", "127.0.0.1", "--dashboard-port", str(dash_port), *ports],
                       env={**env, "RAY_OVERRIDE_NODE_ID_FOR_TESTING": FAKE_HEAD_NODE_ID}, check=True,
                       capture_output=True)
        info = {"env": env, "address": f"http://127.0.0.1:{dash_port}", "gcs": f"127.0.0.1:{gcs_port}",
                "temp_dir": temp_dir}
        deadline = time.time() + 120
        while subprocess.run([RAY, "job", "submit", "--address", info["address"], "--", "true"], env=env,
                             capture_output=True).returncode != 0:       # the head's job agent takes a while
            if time.time() > deadline:
                raise RuntimeError("the head's job server did not take jobs within 120 s")
            time.sleep(3)
        yield info
    finally:
        _stop(temp_dir)
        shutil.rmtree(temp_dir, ignore_errors=True)


def _submit(cluster, job_id: str, entrypoint: list[str], timeout: float = 900) -> subprocess.CompletedProcess:
    """What users type (see README): ray job submit --working-dir . --runtime-env cluster/runtime-env.yaml -- ..."""
    return subprocess.run([RAY, "job", "submit", "--address", cluster["address"], "--submission-id", job_id,
                           "--working-dir", ".", "--runtime-env", "cluster/runtime-env.yaml", "--", *entrypoint],
                          cwd=ROOT, env=cluster["env"], capture_output=True, text=True, timeout=timeout)


def _job(cluster, *args: str) -> str:
    done = subprocess.run([RAY, "job", *args, "--address", cluster["address"]], env=cluster["env"],
                          capture_output=True, text=True, check=True)
    return done.stdout + done.stderr


def _nodes(cluster) -> list[dict]:
    out = subprocess.run([RAY, "list", "nodes", "--address", cluster["gcs"], "--format", "json", "--limit", "100"],
                         env=cluster["env"], capture_output=True, text=True, check=True).stdout
    return json.loads(out)


def test_submitted_full_job_scales_up_workers_and_writes_its_report(cluster, tiny_llama, hh_path, s3_server):
    out = f"s3://{s3_server['bucket']}/cluster-runs"
    done = _submit(cluster, "lens-full-1", [
        "python", "jobs/full.py", "--data", str(hh_path), "--model", tiny_llama, "--seed-pairs", "60",
        "--eval-pairs", "40", "--seeds", "1", "--factors", "4", "--storage", out, "--name", "submitted"] + FAST)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    assert "Job 'lens-full-1' succeeded" in _job(cluster, "status", "lens-full-1")
    logs = _job(cluster, "logs", "lens-full-1")
    assert "joined Ray cluster" in logs and "[embed] done in" in logs and "[train_reward] done in" in logs
    report = Storage(f"{out}/submitted").read_json("report.json")
    assert report["seed_pairs"] == 60 and {r["method"] for r in report["results"]} >= {"original", "lens"}
    workers = [n for n in _nodes(cluster) if not n["is_head_node"]]
    assert workers and all(n["resources_total"].get("CPU") == 2 for n in workers)   # cpu_worker nodes came
    assert not any("GPU" in n["resources_total"] for n in workers)                   # no GPU node for CPU work


def test_gpu_demand_adds_a_gpu_worker_and_idle_workers_go_away(cluster):
    done = _submit(cluster, "lens-gpu-1", ["python", "-c", "import ray; ray.init(); "
                   "print('gpus', ray.get(ray.remote(num_gpus=1)(lambda: ray.get_gpu_ids()).remote()))"], timeout=300)
    assert done.returncode == 0 and "gpus [0]" in _job(cluster, "logs", "lens-gpu-1")
    assert any(n["resources_total"].get("GPU") == 1 for n in _nodes(cluster))
    deadline = time.time() + 180
    while [n for n in _nodes(cluster) if n["state"] == "ALIVE" and not n["is_head_node"]]:
        assert time.time() < deadline, "idle workers were not removed"
        time.sleep(3)
