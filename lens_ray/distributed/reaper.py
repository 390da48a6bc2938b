"""A local Ray that lens-ray starts does not outlive its driver. Ray ties its GCS, raylet and dashboard to the
driver's life, but the agents the raylet starts (the dashboard agent, the runtime-env agent: ~200 MB) outlive a
driver killed with SIGKILL. A watcher process, started with the cluster in a session of its own, follows the
cluster's processes and their descendants while the driver lives; once the driver is gone (and Ray's own
shutdown has had `GRACE_S`), it ends whatever of them is left: SIGTERM, then SIGKILL.

    python -m lens_ray.distributed.reaper DRIVER_PID ROOT_PID [ROOT_PID ...]
"""
from __future__ import annotations

import subprocess
import sys
import time

import psutil

GRACE_S, POLL_S = 5.0, 1.0


def start(driver_pid: int, roots: list[int]) -> subprocess.Popen:
    """The watcher of the cluster whose processes are `roots` (and their descendants), for `driver_pid`."""
    return subprocess.Popen([sys.executable, "-m", "lens_ray.distributed.reaper", str(driver_pid),
                             *map(str, roots)], stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL, start_new_session=True)   # a Ctrl-C to the job spares it


def tree(roots: list[psutil.Process]) -> dict[tuple[int, float], psutil.Process]:
    """roots and their descendants now, by (pid, creation time): a pid the system reuses is another key."""
    out = {}
    for proc in roots:
        try:
            for p in [proc, *proc.children(recursive=True)]:
                out[(p.pid, p.create_time())] = p
        except psutil.Error:                     # gone since: what it started was seen while it lived
            continue
    return out


def end(procs: list[psutil.Process], wait_s: float = 5.0) -> None:
    """SIGTERM each process still alive (the same process: psutil checks its creation time), then SIGKILL."""
    alive = [p for p in procs if p.is_running()]
    for p in alive:
        try:
            p.terminate()
        except psutil.Error:
            pass
    _, left = psutil.wait_procs(alive, timeout=wait_s)
    for p in left:
        try:
            p.kill()
        except psutil.Error:
            pass


def lives(proc: psutil.Process) -> bool:
    try:
        return proc.is_running() and proc.status() != psutil.STATUS_ZOMBIE
    except psutil.Error:
        return False


def watch(driver_pid: int, root_pids: list[int]) -> None:
    roots = []
    for pid in root_pids:
        try:
            roots.append(psutil.Process(pid))
        except psutil.Error:
            pass
    try:
        driver = psutil.Process(driver_pid)
    except psutil.Error:
        driver = None
    seen: dict = {}
    while driver is not None and lives(driver):
        seen.update(tree(roots))
        time.sleep(POLL_S)
    time.sleep(GRACE_S)                          # Ray's own shutdown first, when the driver ended normally
    end(list(seen.values()))


if __name__ == "__main__":
    watch(int(sys.argv[1]), [int(a) for a in sys.argv[2:]])
