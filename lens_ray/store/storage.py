"""Storage: one layer for every artifact, over any backend of `backends.BACKENDS` (a local path or file://,
s3://bucket/prefix). No Ray.

- Writes are atomic: a local file is written beside its target and renamed into place; an S3 object
  becomes visible only when its upload completes. A killed writer leaves no half-file to trust.
- Parquet shards carry a sha256 in their directory's manifest; reads verify it, so a corrupt or
  truncated shard is detected and recomputed, never read as data.
"""
from __future__ import annotations

import hashlib
import io
import json
import math
import os
import posixpath
import uuid
from dataclasses import dataclass
from typing import Any

import pyarrow as pa
import pyarrow.fs as pafs
import pyarrow.parquet as pq

from lens_ray.store.backends import Backend, StorageError, backend_of, s3_limits


class ChecksumError(StorageError):
    pass


def absolute(uri: str) -> str:
    """A local path (or file://) as an absolute path, so a run's report names the same folder from anywhere;
    s3:// and other schemes as they are."""
    if uri.startswith("file://"):
        uri = uri[len("file://"):]
    return uri if "://" in uri else os.path.abspath(os.path.expanduser(uri))


def sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def finite(obj: Any) -> Any:
    """obj with every NaN or infinite float as None: JSON has no such numbers, and a figure that is not finite is
    not a figure (a spread of one seed, say)."""
    if isinstance(obj, float):
        return obj if math.isfinite(obj) else None
    if isinstance(obj, dict):
        return {k: finite(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [finite(v) for v in obj]
    return obj


def strict_json(obj: Any) -> bytes:
    """Indented, key-sorted, strict JSON (RFC 8259: no NaN or Infinity, which other readers refuse)."""
    return json.dumps(finite(obj), indent=2, sort_keys=True, allow_nan=False).encode()


class Storage:
    """A folder of artifacts at `uri`; every method takes a path relative to it ('' is the folder)."""

    def __init__(self, uri: str):
        self.backend: Backend = backend_of(uri)
        self.fs, self.root = self.backend.filesystem(), self.backend.root(uri)
        # local URIs become absolute: Ray workers run in other working directories
        self.uri = self.root if self.local else uri.rstrip("/")

    @property
    def local(self) -> bool:
        return self.backend.local

    def child(self, rel: str) -> "Storage":
        return Storage(self.uri_of(rel))

    def path(self, rel: str = "") -> str:
        return posixpath.join(self.root, rel) if rel else self.root

    def uri_of(self, rel: str = "") -> str:
        return f"{self.uri}/{rel}" if rel else self.uri

    def local_path(self, rel: str = "") -> str:
        if not self.local:
            raise StorageError(f"{self.uri_of(rel)} is not local")
        return self.path(rel)

    # ---- queries
    def exists(self, rel: str = "") -> bool:
        return self.fs.get_file_info(self.path(rel)).type != pafs.FileType.NotFound

    def isdir(self, rel: str = "") -> bool:
        return self.fs.get_file_info(self.path(rel)).type == pafs.FileType.Directory

    def listdir(self, rel: str = "") -> list[str]:
        if not self.exists(rel):
            return []
        sel = pafs.FileSelector(self.path(rel), allow_not_found=True)
        return sorted(posixpath.basename(i.path) for i in self.fs.get_file_info(sel))

    # ---- bytes
    def read_bytes(self, rel: str = "") -> bytes:
        try:
            with self.fs.open_input_stream(self.path(rel), compression=None) as fh:   # bytes as stored
                return fh.read()
        except (FileNotFoundError, OSError) as exc:
            raise StorageError(f"cannot read {self.uri_of(rel)}: {exc}{self._attempts()}") from exc

    def write_bytes(self, rel: str, data: bytes) -> None:
        """Atomic: readers see the old file, or the whole new one."""
        target = self.path(rel)
        parent = posixpath.dirname(target)
        if self.local:
            tmp = f"{target}.tmp-{uuid.uuid4().hex[:8]}"
            try:
                self.fs.create_dir(parent, recursive=True)
                with self.fs.open_output_stream(tmp, compression=None) as fh:
                    fh.write(data)
                os.replace(tmp, target)
            except OSError as exc:                    # a full disk, say: nothing half-written is left behind
                if os.path.exists(tmp):
                    os.remove(tmp)
                raise StorageError(f"cannot write {self.uri_of(rel)} ({len(data):,} bytes): "
                                   f"{exc.strerror or exc}") from exc
        else:
            self._put(rel, data)

    def _put(self, rel: str, data: bytes) -> None:
        """An S3 upload, verified when it fails: a 5xx on the request that completes an upload can come after
        the object was stored (the SDK's own retry of it then fails too), so the object is read back; if it
        holds these bytes the write stands, else the whole upload is tried again, up to the attempts bound."""
        _, attempts = s3_limits()
        for attempt in range(1, attempts + 1):
            try:
                with self.fs.open_output_stream(self.path(rel), compression=None) as fh:   # visible once whole
                    fh.write(data)
                return
            except OSError as exc:
                if self._holds(rel, data):
                    return
                if attempt == attempts:
                    raise StorageError(f"cannot write {self.uri_of(rel)}: {exc}{self._attempts()}") from exc

    def _holds(self, rel: str, data: bytes) -> bool:
        try:
            return self.read_bytes(rel) == data
        except StorageError:
            return False

    def _attempts(self) -> str:
        return self.backend.attempts_note()

    def make_folder(self) -> None:
        """Create the folder where folders exist (locally); object storage has none to create."""
        if self.local:
            os.makedirs(self.root, exist_ok=True)

    def delete(self, rel: str) -> None:
        info = self.fs.get_file_info(self.path(rel))
        if info.type == pafs.FileType.Directory:
            self.fs.delete_dir(self.path(rel))
        elif info.type == pafs.FileType.File:
            self.fs.delete_file(self.path(rel))

    # ---- json
    def read_json(self, rel: str) -> Any:
        return json.loads(self.read_bytes(rel))

    def read_record(self, rel: str) -> dict | None:
        """A JSON object this code wrote (a manifest, a commit record, a cache's settings); None when it is
        missing, torn (not JSON) or not an object: the caller treats that as not written, never as a traceback."""
        try:
            doc = json.loads(self.read_bytes(rel))        # a missing one is a StorageError too: one round trip
        except (ValueError, StorageError):
            return None
        return doc if isinstance(doc, dict) else None

    def write_json(self, rel: str, obj: Any) -> None:
        self.write_bytes(rel, strict_json(obj))

    def write_checked_json(self, rel: str, obj: Any) -> None:
        """JSON and beside it `<rel>.sha256`, the checksum of its bytes: for a document later commands trust
        (a run's report: its config says which model and text settings its heads score with)."""
        data = strict_json(obj)
        self.write_bytes(rel, data)
        self.write_bytes(f"{rel}.sha256", sha256(data).encode())

    def read_checked_json(self, rel: str) -> Any:
        """A `write_checked_json` document, verified against its checksum; a changed, checksum-less or garbled
        one is a ChecksumError in one line."""
        data = self.read_bytes(rel)
        if not self.exists(f"{rel}.sha256"):
            raise ChecksumError(f"{self.uri_of(rel)}: written by an older lens-ray without a checksum beside it; "
                                "run the job again to rewrite it")
        if self.read_bytes(f"{rel}.sha256").decode(errors="replace").strip() != sha256(data):
            raise ChecksumError(f"{self.uri_of(rel)}: does not match its checksum ({rel}.sha256): changed after it "
                                "was written")
        try:
            return json.loads(data)
        except ValueError as exc:
            raise ChecksumError(f"{self.uri_of(rel)}: not JSON") from exc

    # ---- parquet
    def write_parquet(self, rel: str, table: pa.Table) -> dict[str, Any]:
        """Atomic parquet write; returns {sha256, rows, bytes} for a manifest."""
        buf = io.BytesIO()
        pq.write_table(table, buf)
        data = buf.getvalue()
        self.write_bytes(rel, data)
        return {"sha256": sha256(data), "rows": table.num_rows, "bytes": len(data)}

    def read_parquet(self, rel: str, expect_sha256: str | None = None) -> pa.Table:
        data = self.read_bytes(rel)
        if expect_sha256 is not None and sha256(data) != expect_sha256:
            raise ChecksumError(f"{self.uri_of(rel)}: checksum mismatch (corrupt or truncated)")
        return pq.read_table(io.BytesIO(data))


def split_uri(uri: str) -> tuple[Storage, str]:
    """A URI of a single file or folder -> (Storage at it, '')."""
    return Storage(uri), ""


def differences(stored: dict, requested: dict, most: int = 6) -> str:
    """'a.b: 1 -> 2; c: x -> y' for the leaves that differ between two nested settings documents."""
    def leaves(obj, prefix=""):
        if isinstance(obj, dict):
            for k, v in obj.items():
                yield from leaves(v, f"{prefix}{k}.")
        else:
            yield prefix.rstrip("."), obj
    old, new = dict(leaves(stored)), dict(leaves(json.loads(json.dumps(requested))))

    def short(v) -> str:
        text = json.dumps(v)
        return text if len(text) <= 40 else text[:37] + "..."
    diff = [f"{k}: {short(old.get(k))} -> {short(new.get(k))}" for k in sorted(set(old) | set(new))
            if old.get(k) != new.get(k)]
    return "; ".join(diff[:most]) + (f"; and {len(diff) - most} more" if len(diff) > most else "")


@dataclass
class Manifest:
    """manifest.json in a folder: settings (`meta`) and committed files with checksums.

    A file counts only once committed here, after it was written in full.
    """
    store: Storage
    meta: dict[str, Any]
    files: dict[str, dict[str, Any]]

    NAME = "manifest.json"

    @classmethod
    def open(cls, store: Storage, meta: dict[str, Any]) -> "Manifest":
        """Open (or start) the manifest; refuse one written under other settings. A torn manifest counts as
        none: its files are made again (each is verified against the manifest's checksum, so none is trusted)."""
        doc = cls._read(store)
        if doc is not None:
            stored = json.loads(json.dumps(doc.get("meta", {})))
            if stored != json.loads(json.dumps(meta)):          # compared as stored: tuples are lists there
                raise StorageError(f"{store.uri}: made with other settings ({differences(stored, meta)}); use "
                                   "another output location, or the settings it was made with")
            return cls(store, meta, doc.get("files", {}))
        return cls(store, meta, {})

    @classmethod
    def _read(cls, store: Storage) -> dict | None:
        """The manifest document, or None when it is missing, torn or not a manifest (meta and files mappings)."""
        doc = store.read_record(cls.NAME)
        ok = doc is not None and isinstance(doc.get("meta", {}), dict) and isinstance(doc.get("files", {}), dict)
        return doc if ok else None

    @classmethod
    def load(cls, store: Storage) -> "Manifest":
        """Read an existing manifest with whatever settings it holds (for readers of a finished run)."""
        doc = cls._read(store)
        if doc is None:
            raise ChecksumError(f"{store.uri_of(cls.NAME)}: missing, torn or not a manifest; run the job again to "
                                "make its tables again")
        return cls(store, doc.get("meta", {}), doc.get("files", {}))

    def commit(self, name: str, info: dict[str, Any]) -> None:
        self.commit_many({name: info})

    def commit_many(self, infos: dict[str, dict[str, Any]]) -> None:
        """Record files written in full (one manifest write for all of them)."""
        if infos:
            self.files.update(infos)
            self.save()

    def save(self) -> None:
        self.store.write_json(self.NAME, {"meta": self.meta, "files": self.files})

    def read_parquet(self, name: str) -> pa.Table | None:
        """The committed shard, verified; None (and forgotten) when missing or corrupt."""
        info = self.files.get(name)
        if info is None:
            return None
        try:
            return self.store.read_parquet(name, info["sha256"])
        except StorageError:
            del self.files[name]
            return None
