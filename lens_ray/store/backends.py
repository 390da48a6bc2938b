"""Storage backends: one table, `BACKENDS`, from a URI's scheme to how lens-ray reaches that storage (a pyarrow
filesystem, its root path) and how it leases a folder there (the backend's one atomic primitive). No Ray.

- file (a path, or file://): atomic writes by rename; a lease file read and written under an exclusive `flock`.
- s3 (s3://bucket/prefix): pyarrow's S3FileSystem; the lease object taken with conditional writes
  (`If-None-Match: *` to create, `If-Match: <etag>` to refresh or take over), so of two racing jobs one gets it.
A new backend is one `Backend` subclass and one entry in `BACKENDS`; an unknown scheme fails at once, naming the
known ones, never falls back to another backend. Endpoint and region come from AWS_ENDPOINT_URL and AWS_REGION /
AWS_DEFAULT_REGION, credentials from the usual AWS chain; none are ever logged.
"""
from __future__ import annotations

import contextlib
import fcntl
import functools
import json
import os
import time
from typing import TYPE_CHECKING, Any, Callable

import pyarrow.fs as pafs

if TYPE_CHECKING:
    from lens_ray.store.storage import Storage

LEASE = "lease.json"                         # the lease document's name in a leased folder
Stale = Callable[[dict], bool]               # the lease's holder document -> may it be taken over?


class StorageError(IOError):
    pass


def s3_limits() -> tuple[float, int]:
    """(seconds one S3 request may stall, attempts per call): an endpoint that stops answering ends a call in
    about their product, never hangs a run. LENS_RAY_S3_TIMEOUT_S and LENS_RAY_S3_ATTEMPTS change them."""
    try:
        timeout = float(os.environ.get("LENS_RAY_S3_TIMEOUT_S", "20"))
        attempts = int(os.environ.get("LENS_RAY_S3_ATTEMPTS", "3"))
    except ValueError as exc:
        raise StorageError(f"LENS_RAY_S3_TIMEOUT_S / LENS_RAY_S3_ATTEMPTS: not a number ({exc})") from exc
    if not (0 < timeout < float("inf") and attempts >= 1):          # nan and inf would remove the bound
        raise StorageError("LENS_RAY_S3_TIMEOUT_S must be a finite number > 0 and LENS_RAY_S3_ATTEMPTS >= 1")
    return timeout, attempts


def s3_endpoint() -> str | None:
    return os.environ.get("AWS_ENDPOINT_URL_S3") or os.environ.get("AWS_ENDPOINT_URL")


class LeaseFile:
    """A folder's lease document on one backend. `take` writes `payload` if there is no lease or `stale(doc)`
    says its holder's may be taken over, and returns None; else the holder's document. `refresh` rewrites it while
    it is still this holder's (False: another job took it over); `release` deletes it if still this holder's."""

    def take(self, payload: bytes, stale: Stale) -> dict | None:
        raise NotImplementedError

    def refresh(self, payload: bytes) -> bool:
        raise NotImplementedError

    def release(self) -> None:
        raise NotImplementedError


class Backend:
    """How lens-ray reaches one kind of storage. `local`: its paths are this machine's (free space, flock, a
    saved HF dataset folder, Ray's storage_path as a plain folder)."""
    scheme = ""
    local = False

    def filesystem(self) -> pafs.FileSystem:
        raise NotImplementedError

    def root(self, uri: str) -> str:
        """The URI's path on `filesystem()`."""
        raise NotImplementedError

    def lease_file(self, store: "Storage") -> LeaseFile:
        raise NotImplementedError

    def attempts_note(self) -> str:
        """What a failed call's one line adds about retries ('' when the backend does not retry)."""
        return ""


# ------------------------------------------------------------------------------------------------- local

class LocalLeaseFile(LeaseFile):
    def __init__(self, store: "Storage"):
        self.store, self.holder = store, None

    @contextlib.contextmanager
    def _locked(self):
        os.makedirs(self.store.path(), exist_ok=True)
        with open(self.store.path("lease.lock"), "a") as fh:
            fcntl.flock(fh, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(fh, fcntl.LOCK_UN)

    def _read(self) -> dict | None:
        try:
            with open(self.store.path(LEASE)) as fh:
                return json.load(fh)
        except (FileNotFoundError, ValueError):
            return None

    def _ours(self, doc: dict | None) -> bool:
        return bool(doc) and doc.get("holder") == self.holder

    def take(self, payload: bytes, stale: Stale) -> dict | None:
        with self._locked():
            doc = self._read()
            if doc is not None and not stale(doc):
                return doc
            self.store.write_bytes(LEASE, payload)
            self.holder = json.loads(payload)["holder"]
        return None

    def refresh(self, payload: bytes) -> bool:
        with self._locked():
            if not self._ours(self._read()):
                return False
            self.store.write_bytes(LEASE, payload)
        return True

    def release(self) -> None:
        with self._locked():
            if self._ours(self._read()):
                os.remove(self.store.path(LEASE))


class Local(Backend):
    scheme, local = "file", True

    def filesystem(self) -> pafs.FileSystem:
        return pafs.LocalFileSystem()

    def root(self, uri: str) -> str:
        return os.path.abspath(uri.removeprefix("file://"))

    def lease_file(self, store: "Storage") -> LeaseFile:
        return LocalLeaseFile(store)


# ------------------------------------------------------------------------------------------------- S3

class S3LeaseFile(LeaseFile):
    """Conditional writes against the object's ETag: the only atomic primitive S3 has."""

    def __init__(self, store: "Storage"):
        bucket, _, prefix = store.uri.removeprefix("s3://").partition("/")
        self.bucket, self.key, self.uri, self.etag = bucket, f"{prefix}/{LEASE}" if prefix else LEASE, store.uri, None

    @functools.cached_property
    def client(self):
        import boto3
        return boto3.client("s3", endpoint_url=s3_endpoint())

    def _put(self, payload: bytes, **condition: Any) -> None:
        self.etag = self.client.put_object(Bucket=self.bucket, Key=self.key, Body=payload, **condition)["ETag"]

    def take(self, payload: bytes, stale: Stale) -> dict | None:
        from botocore.exceptions import ClientError
        try:
            self._put(payload, IfNoneMatch="*")
            return None
        except ClientError as exc:
            if exc.response["Error"]["Code"] not in ("PreconditionFailed", "ConditionalRequestConflict"):
                raise StorageError(f"{self.uri}: cannot take the lease ({exc})") from exc
        try:
            got = self.client.get_object(Bucket=self.bucket, Key=self.key)
        except ClientError:
            return {"holder": "a job that just released it", "heartbeat": time.time()}   # gone: retry
        doc, etag = json.loads(got["Body"].read()), got["ETag"]
        if not stale(doc):
            return doc
        try:                                   # take over the stale lease, unless someone else just did
            self._put(payload, IfMatch=etag)
            return None
        except ClientError:
            return doc

    def refresh(self, payload: bytes) -> bool:
        from botocore.exceptions import BotoCoreError, ClientError
        try:
            self._put(payload, IfMatch=self.etag)
            return True
        except ClientError as exc:
            if exc.response["Error"]["Code"] in ("PreconditionFailed", "NoSuchKey", "404"):
                return False
            raise StorageError(str(exc)) from exc
        except BotoCoreError as exc:
            raise StorageError(str(exc)) from exc

    def release(self) -> None:
        from botocore.exceptions import ClientError
        with contextlib.suppress(ClientError):
            self.client.delete_object(Bucket=self.bucket, Key=self.key, IfMatch=self.etag)


class S3(Backend):
    scheme = "s3"

    def filesystem(self) -> pafs.FileSystem:
        timeout, attempts = s3_limits()
        # a stalled connection or transfer (no byte for `timeout` seconds) fails the attempt; 5xx and timeouts are
        # retried by the SDK, with backoff, up to `attempts` in all
        kwargs: dict[str, Any] = {"connect_timeout": min(timeout, 10.0), "request_timeout": timeout,
                                  "retry_strategy": pafs.AwsStandardS3RetryStrategy(max_attempts=attempts)}
        endpoint = s3_endpoint()
        if endpoint:
            scheme, _, host = endpoint.partition("://")
            kwargs.update(endpoint_override=host or scheme, scheme=scheme if host else "https")
        region = os.environ.get("AWS_REGION") or os.environ.get("AWS_DEFAULT_REGION")
        if region:
            kwargs["region"] = region
        return pafs.S3FileSystem(**kwargs)

    def root(self, uri: str) -> str:
        return uri.removeprefix("s3://").rstrip("/")

    def lease_file(self, store: "Storage") -> LeaseFile:
        return S3LeaseFile(store)

    def attempts_note(self) -> str:
        timeout, attempts = s3_limits()
        return f" (after {attempts} attempt(s), each allowed {timeout:g} s without progress)"


BACKENDS: dict[str, Backend] = {b.scheme: b for b in (Local(), S3())}


def backend_of(uri: str) -> Backend:
    """The backend of a URI: its scheme's entry; a path without a scheme is local."""
    scheme, sep, _ = uri.partition("://")
    if not sep:
        return BACKENDS["file"]
    if scheme not in BACKENDS:
        raise StorageError(f"{uri}: unsupported scheme {scheme!r}; use a path or one of "
                           f"{', '.join(f'{s}://' for s in BACKENDS)}")
    return BACKENDS[scheme]
