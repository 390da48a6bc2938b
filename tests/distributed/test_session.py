"""What listens: a local Ray started the way jobs start it binds every server to 127.0.0.1 - GCS, raylets,
workers, agents, the dashboard, and the torch rendezvous store of a DDP fit."""
import json
import os
import subprocess
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent


def test_local_ray_and_ddp_listen_on_loopback_only(tmp_path):
    env = {k: v for k, v in os.environ.items() if k not in ("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "RAY_ADDRESS")}
    done = subprocess.run([sys.executable, str(HERE / "listening_probe.py"), str(tmp_path / "store")], env=env,
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    seen = json.loads(done.stdout.strip().splitlines()[-1])
    names = {name for _, name in seen}
    assert {"gcs_server", "raylet"} <= names and any("RayTrainWorker" in n for n in names)   # the probe saw them
    assert {ip for ip, _ in seen} <= {"127.0.0.1", "::ffff:127.0.0.1", "::1"}, seen
