"""One job at a time per output folder: a lease (<folder>/lease.json) taken before a job writes, refreshed
while it runs, released when it ends. No Ray.

- Local storage: the lease file is read and written under an exclusive `flock` of <folder>/lease.lock.
- S3: conditional writes, the only atomic primitive S3 has: created with `If-None-Match: *`, refreshed and
  taken over with `If-Match: <etag>`, so of two jobs racing for a lease exactly one gets it.
A lease is stale when its holder stopped refreshing it for `ttl_s`, or when the holder was a process on
this host that no longer runs (a killed job): then the next job takes it over. A job that finds a live
lease is refused with the holder's id, or waits for it (`wait=True`).
"""
from __future__ import annotations

import contextlib
import fcntl
import json
import os
import socket
import threading
import time
import uuid

from lens_ray.core.progress import Log
from lens_ray.store.storage import Storage, StorageError

NAME = "lease.json"


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
        self._token: str | None = None
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
        if self._token is not None and not self.lost:
            self._delete_if_ours()
        self._token = None

    # ---- the protocol
    def _stale(self, doc: dict) -> bool:
        if time.time() - doc.get("heartbeat", 0) > doc.get("ttl_s", self.ttl_s):     # the holder's own ttl
            return True
        return doc.get("host") == socket.gethostname() and not _alive(int(doc.get("pid", -1)))

    def _payload(self) -> bytes:
        return json.dumps({**self.doc, "heartbeat": time.time(), "ttl_s": self.ttl_s}).encode()

    def _try_take(self) -> dict | None:
        """Take the lease if it is free or stale; else return its holder's document."""
        if self.store.protocol == "file":
            return self._take_local()
        return self._take_s3()

    def _beat(self) -> None:
        last_ok = time.time()
        while not self._stop.wait(self.ttl_s / 4):
            try:
                if not self._refresh():
                    self.lost = "another job took over the lease"
                    return
                last_ok = time.time()
            except (OSError, StorageError, ValueError) as exc:    # transient: try again on the next beat
                if time.time() - last_ok > self.ttl_s:
                    self.lost = f"could not refresh it for {self.ttl_s:.0f}s ({exc})"
                    return

    # ---- local: flock around read-modify-write
    @contextlib.contextmanager
    def _locked(self):
        os.makedirs(self.store.path(), exist_ok=True)
        with open(self.store.path("lease.lock"), "a") as fh:
            fcntl.flock(fh, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(fh, fcntl.LOCK_UN)

    def _read_local(self) -> dict | None:
        try:
            with open(self.store.path(NAME)) as fh:
                return json.load(fh)
        except (FileNotFoundError, ValueError):
            return None

    def _take_local(self) -> dict | None:
        with self._locked():
            doc = self._read_local()
            if doc is not None and not self._stale(doc):
                return doc
            self.store.write_bytes(NAME, self._payload())
            self._token = self.doc["holder"]
        return None

    def _refresh(self) -> bool:
        if self.store.protocol != "file":
            return self._refresh_s3()
        with self._locked():
            doc = self._read_local()
            if not doc or doc.get("holder") != self.doc["holder"]:
                return False
            self.store.write_bytes(NAME, self._payload())
        return True

    def _delete_if_ours(self) -> None:
        if self.store.protocol != "file":
            return self._delete_s3()
        with self._locked():
            doc = self._read_local()
            if doc and doc.get("holder") == self.doc["holder"]:
                os.remove(self.store.path(NAME))

    # ---- S3: conditional writes
    def _s3(self):
        import boto3
        endpoint = os.environ.get("AWS_ENDPOINT_URL_S3") or os.environ.get("AWS_ENDPOINT_URL")
        bucket, _, prefix = self.store.uri[len("s3://"):].partition("/")
        return boto3.client("s3", endpoint_url=endpoint), bucket, f"{prefix}/{NAME}" if prefix else NAME

    def _take_s3(self) -> dict | None:
        from botocore.exceptions import ClientError
        client, bucket, key = self._s3()
        try:
            self._token = client.put_object(Bucket=bucket, Key=key, Body=self._payload(), IfNoneMatch="*")["ETag"]
            return None
        except ClientError as exc:
            if exc.response["Error"]["Code"] not in ("PreconditionFailed", "ConditionalRequestConflict"):
                raise StorageError(f"{self.store.uri}: cannot take the lease ({exc})") from exc
        try:
            got = client.get_object(Bucket=bucket, Key=key)
        except ClientError:
            return {"holder": "a job that just released it", "heartbeat": time.time()}   # gone: retry
        doc, etag = json.loads(got["Body"].read()), got["ETag"]
        if not self._stale(doc):
            return doc
        try:                                   # take over the stale lease, unless someone else just did
            self._token = client.put_object(Bucket=bucket, Key=key, Body=self._payload(), IfMatch=etag)["ETag"]
            return None
        except ClientError:
            return doc

    def _refresh_s3(self) -> bool:
        from botocore.exceptions import BotoCoreError, ClientError
        client, bucket, key = self._s3()
        try:
            self._token = client.put_object(Bucket=bucket, Key=key, Body=self._payload(), IfMatch=self._token)["ETag"]
            return True
        except ClientError as exc:
            if exc.response["Error"]["Code"] in ("PreconditionFailed", "NoSuchKey", "404"):
                return False
            raise StorageError(str(exc)) from exc
        except BotoCoreError as exc:
            raise StorageError(str(exc)) from exc

    def _delete_s3(self) -> None:
        from botocore.exceptions import ClientError
        client, bucket, key = self._s3()
        with contextlib.suppress(ClientError):
            client.delete_object(Bucket=bucket, Key=key, IfMatch=self._token)
