import json

import numpy as np
import pyarrow as pa
import pytest

from lens_ray.store.embedding_cache import EmbeddingCache
from lens_ray.store.storage import ChecksumError, Manifest, Storage, StorageError


@pytest.fixture(params=["local", "s3"])
def store(request, tmp_path):
    if request.param == "local":
        return Storage(str(tmp_path / "store"))
    server = request.getfixturevalue("s3_server")
    return Storage(f"s3://{server['bucket']}/t-{tmp_path.name}")


def test_bytes_json_parquet_round_trip(store):
    store.write_bytes("a/b.bin", b"hello")
    assert store.read_bytes("a/b.bin") == b"hello" and store.exists("a/b.bin")
    store.write_json("x.json", {"k": [1, 2]})
    assert store.read_json("x.json") == {"k": [1, 2]}
    info = store.write_parquet("t.parquet", pa.table({"x": [1, 2, 3]}))
    assert info["rows"] == 3
    assert store.read_parquet("t.parquet", info["sha256"]).column("x").to_pylist() == [1, 2, 3]
    assert "t.parquet" in store.listdir("")


def test_corrupt_shard_is_detected(store):
    info = store.write_parquet("t.parquet", pa.table({"x": list(range(100))}))
    data = store.read_bytes("t.parquet")
    store.write_bytes("t.parquet", data[: len(data) // 2])      # truncated
    with pytest.raises(ChecksumError):
        store.read_parquet("t.parquet", info["sha256"])
    man = Manifest.open(store.child("m"), {"v": 1})
    man.commit("t.parquet", man.store.write_parquet("t.parquet", pa.table({"x": [1]})))
    man.store.write_bytes("t.parquet", b"garbage")
    assert man.read_parquet("t.parquet") is None and "t.parquet" not in man.files


def test_manifest_refuses_other_settings(store):
    Manifest.open(store.child("emb"), {"model": "a", "max_length": 256}).commit("f", {"sha256": "x"})
    with pytest.raises(StorageError, match="max_length"):
        Manifest.open(store.child("emb"), {"model": "a", "max_length": 128})


def test_local_write_leaves_no_temp_files(tmp_path):
    store = Storage(str(tmp_path))
    store.write_bytes("f.bin", b"1" * 1000)
    assert store.listdir("") == ["f.bin"]


def test_embedding_cache(store):
    settings = {"model": "m", "pooling": "last", "max_length": 8, "storage_dtype": "float16"}
    cache = EmbeddingCache(store.child("cache"), settings)
    emb = np.random.default_rng(0).standard_normal((3, 5)).astype(np.float32)
    cache.add(["a", "b", "c"], emb)
    again = EmbeddingCache(store.child("cache"), settings)          # a later run
    found = again.lookup(["b", "c", "zzz"])
    assert set(found) == {"b", "c"}
    assert np.allclose(found["b"], emb[1], atol=1e-2)              # float16 storage
    other = EmbeddingCache(store.child("cache"), {**settings, "max_length": 16})
    assert other.lookup(["a"]) == {}                               # other settings: other address


def test_file_uri_and_bad_scheme(tmp_path):
    s = Storage(f"file://{tmp_path}")
    s.write_bytes("z", b"1")
    assert (tmp_path / "z").read_bytes() == b"1"
    with pytest.raises(StorageError, match=r"unsupported scheme 'gs'; use a path or one of file://, s3://"):
        Storage("gs://bucket/x")


def test_a_new_backend_is_one_entry_and_brings_its_lease(tmp_path, monkeypatch):
    """A backend added to BACKENDS is what Storage and Lease use for its scheme: its filesystem, its root, its
    lease file (a lease is never sent to another backend's primitive)."""
    import pyarrow.fs as pafs

    from lens_ray.store import backends
    from lens_ray.store.lease import Lease, LeaseError

    taken = []

    class Recording(backends.LocalLeaseFile):
        def take(self, payload, stale):
            taken.append(self.store.uri)
            return super().take(payload, stale)

    class Sub(backends.Local):                       # a folder under tmp_path, addressed as sub://<name>
        scheme = "sub"

        def filesystem(self):
            return pafs.LocalFileSystem()

        def root(self, uri):
            return str(tmp_path / uri.removeprefix("sub://"))

        def lease_file(self, store):
            return Recording(store)

    monkeypatch.setitem(backends.BACKENDS, "sub", Sub())
    s = Storage("sub://box")
    s.write_json("a.json", {"x": 1})
    assert s.local and json.loads((tmp_path / "box" / "a.json").read_text()) == {"x": 1}
    with Lease(s, what="test").held():
        with pytest.raises(LeaseError, match="in use by test"):
            Lease(Storage("sub://box")).acquire()
    assert taken == [s.uri, s.uri]


def test_embedding_cache_keeps_every_shard_of_concurrent_writers(store):
    """Eight writers add to one cache at once (local and S3): every shard they committed is found."""
    from concurrent.futures import ThreadPoolExecutor
    settings = {"model": "m", "pooling": "last", "max_length": 8, "storage_dtype": "float32"}
    rng = np.random.default_rng(0)
    batches = [([f"w{w}-k{i}" for i in range(3 * j, 3 * j + 3)], rng.standard_normal((3, 4)).astype(np.float32))
               for w in range(8) for j in range(4)]

    def write(batch):
        EmbeddingCache(store.child("shared"), settings).add(*batch)    # each writer its own cache object

    with ThreadPoolExecutor(8) as pool:
        list(pool.map(write, batches))
    found = EmbeddingCache(store.child("shared"), settings).lookup([k for keys, _ in batches for k in keys])
    assert len(found) == 8 * 4 * 3
    assert all(np.array_equal(found[k], v) for keys, vecs in batches for k, v in zip(keys, vecs))


def test_a_corrupt_cache_shard_is_forgotten_and_the_rest_kept(store):
    settings = {"model": "m", "pooling": "last", "max_length": 8, "storage_dtype": "float32"}
    cache = EmbeddingCache(store.child("c2"), settings)
    cache.add(["a"], np.ones((1, 4), np.float32))
    cache.add(["b"], np.zeros((1, 4), np.float32))
    bad = next(n for n in cache.store.listdir() if n.endswith(".parquet"))
    cache.store.write_bytes(bad, b"garbage")
    found = EmbeddingCache(store.child("c2"), settings).lookup(["a", "b"])
    assert len(found) == 1 and len(EmbeddingCache(store.child("c2"), settings).committed()) == 1


def test_a_checked_document_is_refused_when_changed_unchecked_or_garbled(store):
    """A run's report (what commands trust: the model and text settings its heads score with) round-trips with
    its checksum, and a changed value, a missing checksum or a garbled file is one ChecksumError."""
    report = {"config": {"embed": {"model": "smollm2", "max_length": 256}}, "results": []}
    store.write_checked_json("report.json", report)
    assert store.read_checked_json("report.json") == report
    changed = store.read_bytes("report.json").replace(b"256", b"512")
    store.write_bytes("report.json", changed)
    with pytest.raises(ChecksumError, match="does not match its checksum"):
        store.read_checked_json("report.json")
    store.write_bytes("report.json.sha256", __import__("hashlib").sha256(b"[1, 2").hexdigest().encode())
    store.write_bytes("report.json", b"[1, 2")
    with pytest.raises(ChecksumError, match="not JSON"):
        store.read_checked_json("report.json")
    store.write_json("old.json", report)
    with pytest.raises(ChecksumError, match="older lens-ray.*run the job again"):
        store.read_checked_json("old.json")


def test_a_torn_or_foreign_cache_record_is_forgotten_not_a_late_traceback(store):
    """A commit record that is valid JSON but not a record (`[]`), a torn one, and a torn settings.json: the
    cache reads on without them (the record's texts are embedded again), and a later cache on the same folder
    is not poisoned."""
    settings = {"model": "m", "pooling": "last", "max_length": 8}
    cache = EmbeddingCache(store, settings)
    cache.add(["a", "b"], np.ones((2, 4), np.float32))
    cache.add(["c"], np.full((1, 4), 2, np.float32))
    records = sorted(n for n in cache.store.listdir() if n.startswith("shard-") and n.endswith(".json"))
    lost = set(cache.store.read_parquet(records[0][:-len(".json")] + ".parquet").column("key").to_pylist())
    cache.store.write_bytes(records[0], b"[]")
    cache.store.write_bytes("settings.json", b'{"model": "m", "pool')
    again = EmbeddingCache(store, settings)                        # no JSONDecodeError; settings rewritten
    assert again.store.read_json("settings.json") == settings
    found = again.lookup(["a", "b", "c"])
    assert set(found) == {"a", "b", "c"} - lost and records[0] not in again.store.listdir()
    assert set(EmbeddingCache(store, settings).lookup(["a", "b", "c"])) == set(found)


def test_a_torn_manifest_is_made_again_by_a_writer_and_refused_in_one_line_to_a_reader(store):
    m = Manifest.open(store, {"k": 1})
    info = store.write_parquet("x.parquet", pa.table({"x": [1]}))
    m.commit("x.parquet", info)
    assert Manifest.load(store).files == {"x.parquet": info}                    # committed, and read back
    assert Manifest.open(store, {"k": 1}).read_parquet("x.parquet").column("x").to_pylist() == [1]
    store.write_bytes(Manifest.NAME, b'{"meta": {"k": 1}, "fil')
    assert Manifest.open(store, {"k": 1}).files == {}              # its files are made again, none trusted
    with pytest.raises(ChecksumError, match="torn or not a manifest"):
        Manifest.load(store)
    store.write_bytes(Manifest.NAME, b"[]")
    assert Manifest.open(store, {"k": 1}).files == {}
    for bad in ({"meta": [], "files": {}}, {"meta": {"k": 1}, "files": []}):
        store.write_json(Manifest.NAME, bad)
        with pytest.raises(ChecksumError, match="torn or not a manifest"):
            Manifest.load(store)


def test_delete_takes_a_file_or_a_whole_folder(store):
    store.write_bytes("d/a.bin", b"x")
    store.write_bytes("d/e/b.bin", b"y")
    store.write_bytes("f.bin", b"z")
    store.delete("f.bin")
    store.delete("d")
    assert not store.exists("f.bin") and not store.exists("d/a.bin") and not store.exists("d/e/b.bin")


def test_an_s3_endpoint_that_stops_answering_ends_the_call_in_one_line(monkeypatch):
    """A server that accepts connections and never answers (a stalled endpoint): each read and write ends with
    a StorageError that names the object and the attempts made; no call hangs."""
    import socket
    import threading
    hole = socket.socket()
    hole.bind(("127.0.0.1", 0))
    hole.listen(64)
    held = []
    threading.Thread(target=lambda: [held.append(hole.accept()) for _ in iter(int, 1)], daemon=True).start()
    monkeypatch.setenv("AWS_ENDPOINT_URL", f"http://127.0.0.1:{hole.getsockname()[1]}")
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "test")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "test")
    monkeypatch.setenv("AWS_REGION", "us-east-1")
    monkeypatch.setenv("LENS_RAY_S3_TIMEOUT_S", "1")
    monkeypatch.setenv("LENS_RAY_S3_ATTEMPTS", "2")
    store = Storage("s3://stalled/run")
    with pytest.raises(StorageError, match=r"cannot read s3://stalled/run/report.json: .*after 2 attempt\(s\), "
                                           r"each allowed 1 s without progress\)$"):
        store.read_bytes("report.json")
    with pytest.raises(StorageError, match=r"cannot write s3://stalled/run/x.bin: .*after 2 attempt"):
        store.write_bytes("x.bin", b"data")
    assert held                                                     # it did reach the stalled endpoint
    hole.close()
    for timeout, attempts in (("1", "zero"), ("0", "2"), ("1", "0"), ("inf", "2"), ("nan", "2")):
        monkeypatch.setenv("LENS_RAY_S3_TIMEOUT_S", timeout)
        monkeypatch.setenv("LENS_RAY_S3_ATTEMPTS", attempts)
        with pytest.raises(StorageError, match="LENS_RAY_S3_"):
            Storage("s3://stalled/run")
    monkeypatch.setenv("LENS_RAY_S3_ATTEMPTS", "1")
    monkeypatch.setenv("LENS_RAY_S3_TIMEOUT_S", "0.5")
    assert Storage("s3://stalled/run").uri == "s3://stalled/run"                   # the smallest valid bounds


def test_a_local_write_that_fails_midway_leaves_nothing_and_names_the_path(tmp_path):
    """A disk that fills mid-write (here: a file-size limit, as a full disk fails a write): one StorageError
    naming the file and the cause, no temporary file and no target left for a re-run to trust."""
    import subprocess
    import sys
    code = ("import resource, signal, sys\n"
            "signal.signal(signal.SIGXFSZ, signal.SIG_IGN)\n"
            "resource.setrlimit(resource.RLIMIT_FSIZE, (4096, 4096))\n"
            "from lens_ray.store.storage import Storage, StorageError\n"
            "try:\n"
            f"    Storage({str(tmp_path / 'out')!r}).write_bytes('heads/h.safetensors', b'x' * 100_000)\n"
            "except StorageError as exc:\n"
            "    print(exc)\n")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.startswith(f"cannot write {tmp_path / 'out'}/heads/h.safetensors (100,000 bytes): ")
    assert "File too large" in done.stdout and len(done.stdout.splitlines()) == 1
    assert list((tmp_path / "out" / "heads").iterdir()) == []


def test_a_cache_written_by_an_older_lens_ray_is_still_read(store):
    """The cache's old layout (one manifest.json with the settings and every shard's record) is read as before:
    its shards count, a record in it that is not a record does not, and other settings are refused."""
    settings = {"model": "m", "pooling": "last", "max_length": 8}
    cache = EmbeddingCache(store, settings)
    cache.add(["a", "b"], np.ones((2, 4), np.float32))
    folder = cache.store
    records = {n[:-len(".json")] + ".parquet": folder.read_json(n) for n in folder.listdir()
               if n.startswith("shard-") and n.endswith(".json")}
    for n in list(folder.listdir()):
        if n.endswith(".json"):
            folder.delete(n)
    folder.write_json("manifest.json", {"meta": settings, "files": {**records, "shard-x.parquet": []}})
    assert set(EmbeddingCache(store, settings).lookup(["a", "b"])) == {"a", "b"}
    folder.write_json("manifest.json", {"meta": {**settings, "max_length": 16}, "files": records})
    with pytest.raises(StorageError, match="written with other settings"):
        EmbeddingCache(store, settings)


@pytest.mark.parametrize("stored", [True, False], ids=["stored-then-500", "500-not-stored"])
@pytest.mark.parametrize("size", [1_000, 12_000_000], ids=["small", "multipart"])
def test_s3_500s_on_the_completing_request_are_retried_then_verified(s3_server, monkeypatch, stored, size):
    """A 5xx on the request that makes an object exist (a PUT, or the POST completing a multipart upload),
    through a real endpoint in front of moto: when the object was in fact stored the write stands (read back,
    same bytes); when it was not, the whole upload is tried again and a lasting failure is one StorageError."""
    from tests.store.faulty_s3 import Faulty
    faulty = Faulty(s3_server["endpoint"], forward_failed=stored)
    monkeypatch.setenv("AWS_ENDPOINT_URL", faulty.endpoint)
    monkeypatch.setenv("LENS_RAY_S3_ATTEMPTS", "2")
    monkeypatch.setenv("LENS_RAY_S3_TIMEOUT_S", "5")
    try:
        store = Storage(f"s3://{s3_server['bucket']}/faulty-{stored}-{size}")
        data = np.random.default_rng(0).bytes(size)
        if stored:
            store.write_bytes("x.bin", data)
            assert store.read_bytes("x.bin") == data
        else:
            with pytest.raises(StorageError, match=r"cannot write s3://lens-test/faulty-False-\d+/x.bin: .*after 2"):
                store.write_bytes("x.bin", data)
            assert not store.exists("x.bin")
            faulty.failing = False                      # the endpoint recovers: the same write now goes through
            store.write_bytes("x.bin", data)
            assert store.read_bytes("x.bin") == data
        injected = [s for s in faulty.seen if s[2]]
        assert len(injected) >= 2                       # every attempt at completing it was answered 500
    finally:
        faulty.close()


def test_json_written_is_strict_with_no_nan_or_infinity(store):
    """A figure that is not finite is written as null (JSON has no NaN or Infinity; other readers refuse them)."""
    import json
    doc = {"acc": 0.61, "se": float("nan"), "rows": [{"gold": float("inf")}, {"gold": -float("inf")}], "n": 3}
    store.write_json("r.json", doc)
    store.write_checked_json("c.json", doc)
    for name in ("r.json", "c.json"):
        text = store.read_bytes(name).decode()
        assert "NaN" not in text and "Infinity" not in text
        strict = json.loads(text, parse_constant=lambda c: pytest.fail(f"non-strict constant {c}"))
        assert strict == {"acc": 0.61, "se": None, "rows": [{"gold": None}, {"gold": None}], "n": 3}
    assert store.read_checked_json("c.json")["se"] is None
