import numpy as np
import pyarrow as pa
import pytest

from lens_ray.embed_cache import EmbeddingCache
from lens_ray.storage import ChecksumError, Manifest, Storage, StorageError


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
    with pytest.raises(StorageError, match="unsupported scheme"):
        Storage("gs://bucket/x")
