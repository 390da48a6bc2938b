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


def test_a_local_ray_does_not_outlive_a_driver_killed_with_sigkill(tmp_path):
    """A job's driver killed with SIGKILL: every process of the local Ray it started (the agents the raylet
    starts included, which Ray alone leaves running) ends within a minute."""
    import signal
    import time

    import psutil
    env = {k: v for k, v in os.environ.items() if k not in ("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "RAY_ADDRESS")}
    code = "from lens_ray.distributed.session import connect; import time; connect(); print('up', flush=True); " \
           "time.sleep(600)"
    driver = subprocess.Popen([sys.executable, "-c", code], env=env, stdout=subprocess.PIPE, text=True)
    procs = []
    try:
        lines = [driver.stdout.readline().strip() for _ in range(2)]      # "started a local Ray ...", "up"
        assert lines[1] == "up", lines
        time.sleep(3)                                       # the raylet's agents are up by now
        procs = [p for p in psutil.Process(driver.pid).children(recursive=True)]
        names = " ".join(p.name() + " " + " ".join(p.cmdline()) for p in procs if p.is_running())
        assert "raylet" in names and "DashboardAgent" in names and "RuntimeEnvAgent" in names, names
        os.kill(driver.pid, signal.SIGKILL)
        driver.wait(timeout=30)
        _, left = psutil.wait_procs(procs, timeout=60)
        assert not left, [(p.pid, p.name()) for p in left]
    finally:
        if driver.poll() is None:
            driver.kill()
        for p in procs:                                     # never leave them on this machine, even on failure
            if p.is_running():
                p.kill()
