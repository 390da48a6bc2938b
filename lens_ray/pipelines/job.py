"""What every job does around its stages, and the main job as one call (`lens_ray.run`): the settings' local
locations made absolute, the checks that need no Ray, the output leased to this job (store/lease.py), then
Ray joined or started (distributed/session.py). The CLI and Python callers share it."""
from __future__ import annotations

import contextlib
import copy

from lens_ray.config import LensConfig
from lens_ray.core.progress import Log
from lens_ray.distributed.session import connect
from lens_ray.pipelines.preflight import check_writable, preflight
from lens_ray.store.lease import Lease
from lens_ray.store.storage import Storage, StorageError, absolute


@contextlib.contextmanager
def on_ray(cfg: LensConfig, out: str, what: str, wait: bool = False, log: Log = print):
    """The output folder checked writable and leased to this job, then Ray joined or started; yields the lease."""
    check_writable(Storage(out))
    with Lease(Storage(out), what=what).held(wait=wait, log=log) as lease:
        connect(cfg.ray_address, log=log)
        yield lease


def absolute_locations(cfg: LensConfig) -> LensConfig:
    """cfg with its storage, output and cache as absolute paths where local: the report records where the run and
    its cache are, so later commands find the same ones from any folder."""
    cfg = copy.deepcopy(cfg)
    cfg.storage = absolute(cfg.storage)
    cfg.out, cfg.cache = (absolute(u) if u else u for u in (cfg.out, cfg.cache))
    return cfg


def run_job(cfg: LensConfig, log: Log = print, wait: bool = False) -> dict:
    """The main job (`lens-ray run`, `jobs/run.py`, `lens_ray.run`): checks before Ray starts, then every stage;
    returns the report. wait: wait for another job holding the same output instead of refusing."""
    from lens_ray.pipelines.run import run
    cfg = absolute_locations(cfg)
    ds = preflight(cfg, log=log)                     # before Ray starts: errors in seconds, not minutes
    try:
        with on_ray(cfg, cfg.out_uri, f"run {cfg.run_name}", wait, log) as lease:
            return run(cfg, log=log, ds=ds, guard=lease.ensure_held)
    except StorageError as exc:                      # storage failing mid-run: what it committed is verified, kept
        raise StorageError(f"{exc}; everything committed so far is kept, and the same command resumes from "
                           "it") from exc
