"""Stored models are inputs too: verified and bounded before any module is built from them."""
import json

import pytest
import torch

from lens_ray.core.heads import RewardHead, build_head
from lens_ray.store.artifacts import _canonical, load_head, load_model, reuse_model, save_model
from lens_ray.store.storage import ChecksumError, Storage, StorageError, sha256


def _saved(tmp_path) -> Storage:
    store = Storage(str(tmp_path / "heads"))
    torch.manual_seed(0)
    head = RewardHead(8, 16)
    head.norm.fit(torch.randn(20, 8) * 3 + 2)
    save_model(store, "h", head.state_dict(), head.config(), {"fingerprint": "abc"})
    return store


def test_round_trip_and_reuse_by_fingerprint(tmp_path):
    store = _saved(tmp_path)
    torch.manual_seed(0)
    saved = RewardHead(8, 16)
    saved.norm.fit(torch.randn(20, 8) * 3 + 2)
    loaded = load_head(store, "h")
    assert isinstance(loaded, RewardHead) and not loaded.training
    assert loaded.state_dict().keys() == saved.state_dict().keys()
    assert all(torch.equal(loaded.state_dict()[k], v) for k, v in saved.state_dict().items())   # the same weights
    reused, meta = reuse_model(store, "h", "abc", build_head)
    assert all(torch.equal(reused.state_dict()[k], v) for k, v in saved.state_dict().items())
    assert meta == {"fingerprint": "abc"}
    e = torch.randn(4, 8)
    assert torch.equal(reused(e), saved.eval()(e))
    assert reuse_model(store, "h", "other", build_head) is None


def test_tampered_config_is_refused_before_anything_is_allocated(tmp_path):
    store = _saved(tmp_path)
    doc = store.read_json("h.json")
    doc["config"]["hidden_dim"] = 10**9                              # a huge allocation, if it were built
    store.write_json("h.json", doc)
    with pytest.raises(ChecksumError, match="tampered"):             # its checksum no longer matches
        load_head(store, "h")
    doc["config_sha256"] = sha256(_canonical(doc["config"]))         # a tamperer who fixes the checksum too
    store.write_json("h.json", doc)
    with pytest.raises(ChecksumError, match="out of bounds"):
        load_head(store, "h")
    assert reuse_model(store, "h", "abc", build_head) is None                    # reuse never raises, it recomputes


def test_flipped_weights_are_refused(tmp_path):
    store = _saved(tmp_path)
    blob = bytearray(store.read_bytes("h.safetensors"))
    blob[-8:] = b"\xff" * 8
    store.write_bytes("h.safetensors", bytes(blob))
    with pytest.raises(ChecksumError, match="checksum mismatch"):
        load_head(store, "h")
    assert reuse_model(store, "h", "abc", build_head) is None                    # recomputed, never trusted


def test_garbage_document_is_refused(tmp_path):
    store = _saved(tmp_path)
    store.write_bytes("h.json", b"{not json")
    with pytest.raises(ChecksumError):
        load_head(store, "h")
    store.write_bytes("h.json", json.dumps({"config": {"kind": "mlp"}}).encode())
    with pytest.raises(ChecksumError):
        load_head(store, "h")


def test_head_is_checked_before_the_language_model_loads(tmp_path):
    """RewardModel.from_run verifies the head first: a bad head fails in milliseconds, not after an LM load."""
    from lens_ray.scoring.reward_model import RewardModel
    run = Storage(str(tmp_path / "run"))
    run.write_checked_json("report.json", {"results": [], "config": {"embed": {
        "model": "./no/such/model", "dtype": "auto", "pooling": "auto", "max_length": 8}}})
    head = RewardHead(8, 16)
    save_model(run.child("heads"), "h", head.state_dict(), head.config())
    run.child("heads").write_bytes("h.safetensors", b"garbage")
    with pytest.raises(ChecksumError):
        RewardModel.from_run(run.uri, head="h")
    with pytest.raises(StorageError, match="not a plain name"):
        RewardModel.from_run(run.uri, head="../h")


def test_changed_or_unchecked_metadata_is_refused(tmp_path):
    """What a command reads from a head's metadata (the layer it reads, its reward statistics) is as verified as
    its weights: a changed value, a changed checksum-less document, and one written before metadata had a
    checksum are each refused in one line, and reuse recomputes them."""
    st = Storage(str(tmp_path / "heads"))
    head = RewardHead(8, 16)
    save_model(st, "h", head.state_dict(), head.config(),
               {"fingerprint": "abc", "embed_layer": (-3,), "reward_norm": {"mean": 0.5, "std": 2.0}})
    doc = st.read_json("h.json")
    assert doc["meta"]["embed_layer"] == [-3] and load_model(st, "h", build_head)[1]["embed_layer"] == [-3]
    for change in ({"embed_layer": [-4]}, {"reward_norm": {"mean": 0.5, "std": 1.0}}):
        st.write_json("h.json", {**doc, "meta": {**doc["meta"], **change}})
        with pytest.raises(ChecksumError, match="metadata does not match its checksum"):
            load_head(st, "h")
        assert reuse_model(st, "h", "abc", build_head) is None
    st.write_json("h.json", {k: v for k, v in doc.items() if k != "meta_sha256"})
    with pytest.raises(ChecksumError, match="older lens-ray.*run the job again"):
        load_head(st, "h")
    st.write_json("h.json", doc)                                     # the document as written loads again
    assert load_model(st, "h", build_head)[1]["reward_norm"] == {"mean": 0.5, "std": 2.0}
