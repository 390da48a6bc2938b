"""Artifact formats in storage: embedding tables, synthetic sets, trained models. No Ray.

Every file is written atomically and committed with a checksum; reads verify it, so an uncommitted,
corrupt or truncated file is never read as data. Models are safetensors + a JSON document holding the
module's config, the checksums of both and the fingerprint of what the model was made from: a config is
verified and bounded before any module is built from it, and nothing loaded from storage is unpickled.
"""
from __future__ import annotations

import json
from typing import Callable

import numpy as np
import pyarrow as pa
import torch
from safetensors.torch import load as st_load
from safetensors.torch import save as st_save

from lens_ray.core.heads import build_head
from lens_ray.store.columns import arrow_to_embeddings, embeddings_to_arrow
from lens_ray.store.storage import ChecksumError, Manifest, Storage, StorageError, sha256

SYNTHETIC = "synthetic"
MAX_MODEL_JSON = 1 << 20          # a model's JSON document is small; a larger one is not read


def write_pair_embeddings(manifest: Manifest, name: str, pos: np.ndarray, neg: np.ndarray | None, dtype: str,
                          extra: dict | None = None) -> None:
    """(n, d) [x2] -> <name>.parquet with columns pos [, neg] in row order (no neg: single responses).
    `extra` goes into the manifest entry (e.g. a digest of the rows' content keys)."""
    cols = {"pos": embeddings_to_arrow(pos, dtype)}
    if neg is not None:
        cols["neg"] = embeddings_to_arrow(neg, dtype)
    info = manifest.store.write_parquet(f"{name}.parquet", pa.table(cols))
    manifest.commit(f"{name}.parquet", {**info, **(extra or {})})


def read_pair_embeddings(manifest: Manifest, name: str) -> tuple[np.ndarray, np.ndarray | None] | None:
    table = manifest.read_parquet(f"{name}.parquet")
    if table is None:
        return None
    neg = arrow_to_embeddings(table.column("neg")) if "neg" in table.column_names else None
    return arrow_to_embeddings(table.column("pos")), neg


def synthetic_manifest(run: Storage) -> Manifest:
    return Manifest.open(run.child(SYNTHETIC), {"kind": "synthetic"})


def write_synthetic(run: Storage, name: str, syn_pos: np.ndarray, syn_neg: np.ndarray, key: str = "") -> None:
    """(n, k, d) x2 -> synthetic/<name>.parquet (one row per source pair, k*d floats a side); `key` is the
    fingerprint of what made them, so a re-run with the same settings reuses them."""
    n, k, d = syn_pos.shape
    table = pa.table({"pos": embeddings_to_arrow(syn_pos.reshape(n, k * d)),
                      "neg": embeddings_to_arrow(syn_neg.reshape(n, k * d))},
                     metadata={"k": str(k), "d": str(d)})
    man = synthetic_manifest(run)
    man.commit(f"{name}.parquet", {**man.store.write_parquet(f"{name}.parquet", table), "fingerprint": key})


def read_synthetic(run: Storage, name: str, key: str | None = None) -> tuple[np.ndarray, np.ndarray] | None:
    """The verified synthetic set, or None when missing, corrupt or (given `key`) made from other inputs."""
    man = synthetic_manifest(run)
    info = man.files.get(f"{name}.parquet")
    if info is None or (key is not None and info.get("fingerprint") != key):
        return None
    table = man.read_parquet(f"{name}.parquet")
    if table is None:
        return None
    k, d = int(table.schema.metadata[b"k"]), int(table.schema.metadata[b"d"])
    n = table.num_rows
    return (arrow_to_embeddings(table.column("pos")).reshape(n, k, d),
            arrow_to_embeddings(table.column("neg")).reshape(n, k, d))


def _canonical(obj) -> bytes:
    return json.dumps(obj, sort_keys=True).encode()


def save_model(store: Storage, name: str, state: dict[str, torch.Tensor], config: dict,
               meta: dict | None = None) -> None:
    """<name>.safetensors + <name>.json: config, meta (fingerprint, metrics, the layer it reads, its reward
    statistics), a checksum of each, and the weights' checksum. The weights go first: a document exists only for
    weights written in full."""
    blob = st_save({k: v.contiguous() for k, v in state.items()})
    store.write_bytes(f"{name}.safetensors", blob)
    meta = meta or {}                # its checksum is of its JSON text, as it reads back (tuples as lists)
    store.write_json(f"{name}.json", {"config": config, "config_sha256": sha256(_canonical(config)),
                                      "meta": meta, "meta_sha256": sha256(_canonical(meta)), "sha256": sha256(blob)})


def read_model_doc(store: Storage, name: str) -> dict | None:
    """The model's JSON document, verified (size, shape, the checksums of its config and its meta); None when
    there is none. A document without a meta checksum (written before lens-ray kept one) is refused too: what a
    command reads from meta (the layer a head reads, its reward statistics) changes what it returns."""
    if not store.exists(f"{name}.json"):
        return None
    raw = store.read_bytes(f"{name}.json")
    if len(raw) > MAX_MODEL_JSON:
        raise ChecksumError(f"{store.uri_of(name)}.json: {len(raw)} bytes, not a model document")
    try:
        doc = json.loads(raw)
        ok = isinstance(doc, dict) and isinstance(doc.get("config"), dict) and isinstance(doc.get("sha256"), str) \
            and isinstance(doc.get("meta", {}), dict)
    except ValueError:
        ok = False
    if not ok or doc.get("config_sha256") != sha256(_canonical(doc["config"])):
        raise ChecksumError(f"{store.uri_of(name)}.json: corrupt or tampered model document")
    if "meta_sha256" not in doc:
        raise ChecksumError(f"{store.uri_of(name)}.json: written by an older lens-ray without a checksum of its "
                            "metadata; run the job again to rewrite it")
    if doc["meta_sha256"] != sha256(_canonical(doc.get("meta", {}))):
        raise ChecksumError(f"{store.uri_of(name)}.json: its metadata does not match its checksum (changed "
                            "after it was written)")
    return doc


def load_model_state(store: Storage, name: str) -> tuple[dict[str, torch.Tensor], dict, dict]:
    """-> (state, config, meta), every checksum verified."""
    doc = read_model_doc(store, name)
    if doc is None:
        raise StorageError(f"{store.uri_of(name)}.json: no such model")
    blob = store.read_bytes(f"{name}.safetensors")
    if sha256(blob) != doc["sha256"]:
        raise ChecksumError(f"{store.uri_of(name)}.safetensors: checksum mismatch")
    return st_load(blob), doc["config"], doc.get("meta", {})


def load_model(store: Storage, name: str, build: Callable[[dict], torch.nn.Module]) -> tuple[torch.nn.Module, dict]:
    """(module in eval mode, meta) of a stored model: its document verified, its config bounded by `build` before
    a module is built from it, its weights' checksum verified and their shapes matched to the module."""
    doc = read_model_doc(store, name)
    if doc is None:
        raise StorageError(f"{store.uri_of(name)}.json: no such model")
    try:
        module = build(doc["config"])
    except (KeyError, TypeError, ValueError) as exc:
        raise ChecksumError(f"{store.uri_of(name)}.json: {exc}") from exc
    state, _, meta = load_model_state(store, name)
    try:
        module.load_state_dict(state)
    except RuntimeError as exc:                 # weights that do not fit the config: not this model's files
        first = str(exc).strip().splitlines()[0]
        raise ChecksumError(f"{store.uri_of(name)}.safetensors: weights do not fit its config ({first})") from exc
    return module.eval(), meta


def load_head(store: Storage, name: str) -> torch.nn.Module:
    return load_model(store, name, build_head)[0]


def reuse_model(store: Storage, name: str, key: str,
                build: Callable[[dict], torch.nn.Module]) -> tuple[torch.nn.Module, dict] | None:
    """`load_model` of a stored model made from the inputs `key` names; None when it must be (re)computed:
    missing, made from other inputs, or failing any check."""
    try:
        doc = read_model_doc(store, name)
        if doc is None or doc.get("meta", {}).get("fingerprint") != key:
            return None
        return load_model(store, name, build)
    except StorageError:
        return None
