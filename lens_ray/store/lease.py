"""One job at a time per output folder: a lease (<folder>/lease.json) taken before a job writes, refreshed
while it runs, released when it ends. No Ray.

How the lease document is taken atomically is the storage backend's (`backends.LeaseFile`: a flock locally,
conditional writes on S3); this module is what every backend shares: the holder, staleness, the heartbeat.
A lease is stale when its holder stopped refreshing it for `ttl_s`, or when the holder was a process on
this host that no longer runs (a killed job): then the next job takes it over. A job that finds a live
lease is refused with the holder's id, or waits for it (`wait=True`).
"""
from __future__ import annotations

import contextlib
import json
import os
import socket
import threading
import time
import uuid

from lens_ray.core.progress import Log
from lens_ray.store.storage import Storage, StorageError


class LeaseError(StorageError):
    """The output folder is leased by another job."""


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


class Lease:
    def __init__(self, store: Storage, ttl_s: float = 120.0, what: str = "job"):
        self.store, self.ttl_s, self.what = store, ttl_s, what
        self.doc = {"holder": f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}",
                    "host": socket.gethostname(), "pid": os.getpid(), "what": what, "started": time.time()}
        self.file = store.backend.lease_file(store)
        self._taken = False
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self.lost: str | None = None

    # ---- public
    @contextlib.contextmanager
    def held(self, wait: bool = False, log: Log = print, poll_s: float = 5.0):
        self.acquire(wait, log, poll_s)
        try:
            yield self
        finally:
            self.release()

    def acquire(self, wait: bool = False, log: Log = print, poll_s: float = 5.0) -> None:
        announced = False
        while True:
            holder = self._try_take()
            if holder is None:
                break
            age = time.time() - holder.get("heartbeat", 0)
            msg = (f"{self.store.uri} is in use by {holder.get('what', 'a job')} {holder.get('holder')} (last seen "
                   f"{age:.0f}s ago; its lease expires {holder.get('ttl_s', self.ttl_s):.0f}s after its last "
                   "heartbeat)")
            if not wait:
                raise LeaseError(msg + "; wait for it with --wait, or use another --name / --out")
            if not announced:
                log(f"waiting: {msg}")
                announced = True
            time.sleep(poll_s)
        self._thread = threading.Thread(target=self._beat, daemon=True)
        self._thread.start()

    def ensure_held(self) -> None:
        """Raise if the lease was lost (another job took it over while this one looked dead)."""
        if self.lost:
            raise LeaseError(f"{self.store.uri}: lease lost ({self.lost}); this job's output may be mixed with "
                             "another's, so it stops here")

    def release(self) -> None:
        self._stop.set()
        if self._thread:
            self._thread.join(timeout=5)
        if self._taken and not self.lost:
            self.file.release()
        self._taken = False

    # ---- what every backend shares
    def _stale(self, doc: dict) -> bool:
        if time.time() - doc.get("heartbeat", 0) > doc.get("ttl_s", self.ttl_s):     # the holder's own ttl
            return True
        return doc.get("host") == socket.gethostname() and not _alive(int(doc.get("pid", -1)))

    def _payload(self) -> bytes:
        return json.dumps({**self.doc, "heartbeat": time.time(), "ttl_s": self.ttl_s}).encode()

    def _try_take(self) -> dict | None:
        """Take the lease if it is free or stale; else return its holder's document."""
        holder = self.file.take(self._payload(), self._stale)
        self._taken = holder is None
        return holder

    def _beat(self) -> None:
        last_ok = time.time()
        while not self._stop.wait(self.ttl_s / 4):
            try:
                if not self.file.refresh(self._payload()):
                    self.lost = "another job took over the lease"
                    return
                last_ok = time.time()
            except (OSError, StorageError, ValueError) as exc:    # transient: try again on the next beat
                if time.time() - last_ok > self.ttl_s:
                    self.lost = f"could not refresh it for {self.ttl_s:.0f}s ({exc})"
                    return
