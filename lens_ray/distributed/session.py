"""Join the Ray cluster named by --ray-address or RAY_ADDRESS (what `ray job submit` sets for its driver),
else start a local Ray for this job. No guessing: a job never joins some other local cluster by accident.

A local Ray listens on 127.0.0.1 only: Ray binds its servers (GCS, raylet, workers, agents) to the node's
IP, and takes the loopback address as the node IP when clusters are disabled for this process tree
(RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER=0). The dashboard is served on 127.0.0.1 too.
"""
from __future__ import annotations

import logging
import os
import signal
import threading

import ray

from lens_ray.distributed import reaper

# Ray's own INFO lines (a local instance started, Train's worker groups, process groups) stay in Ray's log
# folder; the console keeps lens-ray's progress, what workers print, and Ray's warnings and errors.
QUIET = {"logging_level": logging.WARNING, "logging_config": ray.LoggingConfig(log_level="WARNING")}


def quiet_console() -> None:
    """This process's console: Ray Data's INFO lines (each dataset's start, plan and end) to its log file only,
    and none of its progress bars (the job logs its own progress per stage), nor the warning that says so."""
    from ray.data import DataContext
    from ray.util.debug import log_once
    DataContext.get_current().enable_progress_bars = False
    log_once("ray_data_progress_manager_disabled")            # marks the once-only warning as said
    for handler in logging.getLogger("ray.data").handlers:
        if isinstance(handler, logging.StreamHandler) and not isinstance(handler, logging.FileHandler):  # console
            handler.setLevel(logging.WARNING)


def connect(address: str | None = None, log=print, dashboard: bool = True) -> None:
    """A local Ray also serves the dashboard on 127.0.0.1 (to watch the job; Ray Train's state queries need it)."""
    if ray.is_initialized():
        return
    quiet_console()
    address = address or os.environ.get("RAY_ADDRESS")
    on_term = signal.getsignal(signal.SIGTERM)
    try:
        _init(address, dashboard, log)
    finally:
        if threading.current_thread() is threading.main_thread() and on_term is not None:
            signal.signal(signal.SIGTERM, on_term)    # Ray's core worker replaces it with a stack dump and abort


def _init(address: str | None, dashboard: bool, log) -> None:
    if address:
        ray.init(address=address, log_to_driver=True, **QUIET)
        log(f"joined Ray cluster at {address}")
        return
    # loopback only: read by this process (already imported) and by every Ray process it starts (from the env)
    os.environ["RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER"] = "0"
    from ray._private import ray_constants
    ray_constants.ENABLE_RAY_CLUSTER = False
    ctx = ray.init(include_dashboard=dashboard, dashboard_host="127.0.0.1", log_to_driver=True, **QUIET)
    node = ray._private.worker._global_node                  # the processes this driver started, as Ray records them
    reaper.start(os.getpid(), [info.process.pid for infos in node.all_processes.values() for info in infos])
    log(f"started a local Ray ({int(ray.cluster_resources().get('CPU', 0))} CPUs) on 127.0.0.1"
        + (f"; dashboard: http://{ctx.dashboard_url}" if dashboard and ctx.dashboard_url else ""))
