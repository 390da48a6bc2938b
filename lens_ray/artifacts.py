"""Artifact formats in storage: embedding tables, synthetic sets, trained models. No Ray.

Every file is written atomically and committed in its folder's manifest with a checksum; reads go
through the manifest, so an uncommitted, corrupt or truncated file is never read as data.
Models are safetensors + JSON config: nothing loaded from storage is unpickled.
"""
from __future__ import annotations

import numpy as np
import pyarrow as pa
import torch
from safetensors.torch import load as st_load
from safetensors.torch import save as st_save

from lens_ray.embed_cache import arrow_to_embeddings, embeddings_to_arrow
from lens_ray.models.reward import build_head
from lens_ray.models.vae import PreferenceVAE
from lens_ray.storage import Manifest, Storage, StorageError, sha256

SYNTHETIC = "synthetic"


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


def write_synthetic(store: Storage, name: str, syn_pos: np.ndarray, syn_neg: np.ndarray) -> None:
    """(n, k, d) x2 -> synthetic/<name>.parquet (one row per source pair, k*d floats a side)."""
    n, k, d = syn_pos.shape
    table = pa.table({"pos": embeddings_to_arrow(syn_pos.reshape(n, k * d)),
                      "neg": embeddings_to_arrow(syn_neg.reshape(n, k * d))},
                     metadata={"k": str(k), "d": str(d)})
    man = Manifest.open(store.child(SYNTHETIC), {"kind": "synthetic"})
    man.commit(f"{name}.parquet", man.store.write_parquet(f"{name}.parquet", table))


def read_synthetic(store: Storage, name: str) -> tuple[np.ndarray, np.ndarray]:
    man = Manifest.open(store.child(SYNTHETIC), {"kind": "synthetic"})
    table = man.read_parquet(f"{name}.parquet")
    if table is None:
        raise StorageError(f"{store.uri_of(SYNTHETIC)}/{name}.parquet: missing or corrupt")
    k, d = int(table.schema.metadata[b"k"]), int(table.schema.metadata[b"d"])
    n = table.num_rows
    return (arrow_to_embeddings(table.column("pos")).reshape(n, k, d),
            arrow_to_embeddings(table.column("neg")).reshape(n, k, d))


def save_model(store: Storage, name: str, state: dict[str, torch.Tensor], config: dict) -> None:
    """<name>.safetensors + <name>.json (config, and the weights' checksum)."""
    blob = st_save({k: v.contiguous() for k, v in state.items()})
    store.write_bytes(f"{name}.safetensors", blob)
    store.write_json(f"{name}.json", {"config": config, "sha256": sha256(blob)})


def load_model_state(store: Storage, name: str) -> tuple[dict[str, torch.Tensor], dict]:
    doc = store.read_json(f"{name}.json")
    blob = store.read_bytes(f"{name}.safetensors")
    if sha256(blob) != doc["sha256"]:
        raise StorageError(f"{store.uri_of(name)}.safetensors: checksum mismatch")
    return st_load(blob), doc["config"]


def load_head(store: Storage, name: str) -> torch.nn.Module:
    state, config = load_model_state(store, name)
    head = build_head(config)
    head.load_state_dict(state)
    return head.eval()


def load_vae(store: Storage, name: str) -> PreferenceVAE:
    state, config = load_model_state(store, name)
    vae = PreferenceVAE(config["dim"], config["latent_dim"], tuple(config["hidden_dims"]))
    vae.load_state_dict(state)
    return vae.eval()


def load_run_sources(run_uri: str, seed: int = 0) -> tuple[dict, np.ndarray, np.ndarray, PreferenceVAE | None]:
    """A finished run -> (its config, seed-pair embeddings (n, d) x2, its VAE for `seed` if it fit one)."""
    store = Storage(run_uri)
    if not store.exists("report.json"):
        raise StorageError(f"{run_uri}: no report.json; is it a finished lens-ray run?")
    config = store.read_json("report.json")["config"]
    pair = read_pair_embeddings(Manifest.load(store.child("embeddings")), "seed")
    if pair is None:
        raise StorageError(f"{run_uri}/embeddings/seed.parquet: missing or corrupt")
    vae = load_vae(store.child("vae"), f"seed-{seed}") if store.exists(f"vae/seed-{seed}.json") else None
    return config, pair[0], pair[1], vae
