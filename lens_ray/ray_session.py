"""Join the Ray cluster named by --ray-address or RAY_ADDRESS (what `ray job submit` sets for its driver),
else start a local Ray for this job. No guessing: a job never joins some other local cluster by accident."""
from __future__ import annotations

import os

import ray


def connect(address: str | None = None, log=print, dashboard: bool = True) -> None:
    """A local Ray also serves the dashboard on 127.0.0.1 (to watch the job; Ray Train's state queries need it)."""
    if ray.is_initialized():
        return
    os.environ.setdefault("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "0")
    from ray.data import DataContext
    DataContext.get_current().enable_progress_bars = False   # the job logs its own progress per stage
    address = address or os.environ.get("RAY_ADDRESS")
    if address:
        ray.init(address=address, log_to_driver=True)
        log(f"joined Ray cluster at {address}")
    else:
        ctx = ray.init(include_dashboard=dashboard, dashboard_host="127.0.0.1", log_to_driver=True)
        log(f"started a local Ray ({int(ray.cluster_resources().get('CPU', 0))} CPUs)"
            + (f"; dashboard: http://{ctx.dashboard_url}" if dashboard and ctx.dashboard_url else ""))
