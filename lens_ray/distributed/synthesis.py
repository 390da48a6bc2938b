"""Ray Data: synthesis over an actor pool, for a run's synthetic sets and for millions of pairs at scale, and
a committed pair set read back as a dataset (for the streaming head).

Only distribution lives here: the math is `core.augment.Augmenter` and `core.synth_stream`. Each actor holds the
augmenters and source embeddings once; rows carry ids only.
"""
from __future__ import annotations

import time

import numpy as np
import pandas as pd
import pyarrow as pa
import ray
import torch
from ray.data import ActorPoolStrategy

from lens_ray.config import ResourcesConfig, ScaleConfig
from lens_ray.core.augment import Augmenter
from lens_ray.core.progress import Log, Progress
from lens_ray.core.records import Cell
from lens_ray.core.synth import synth_per_side
from lens_ray.core.synth_stream import decode_seeded, materialize, seeded_pairs
from lens_ray.distributed.embedding import actor_pool, split_frame
from lens_ray.store.columns import arrow_to_embeddings, embeddings_to_arrow
from lens_ray.store.storage import Manifest, Storage


class SynthesizeBatch:
    """Ray Data callable: rows (cell, pair_id) -> one row per synthetic embedding.

    Each actor holds every cell's Augmenter and the seeds' training embeddings once, so rows carry
    ids only. Output: cell, pair_id, side (0 chosen, 1 rejected), slot (1..k), embedding (d,).
    """

    def __init__(self, cells: list[tuple[Augmenter, int]], train: dict[int, tuple[np.ndarray, np.ndarray]]):
        torch.set_num_threads(1)
        self.cells = cells            # cell index -> (augmenter, factor)
        self.train = train          # seed -> (pos, neg) (n, d)

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        out: dict[str, list] = {"cell": [], "pair_id": [], "side": [], "slot": [], "embedding": []}
        for cell in np.unique(batch["cell"]):
            aug, factor = self.cells[int(cell)]
            ids = batch["pair_id"][batch["cell"] == cell]
            pos, neg = self.train[aug.seed]
            syn_pos, syn_neg, _ = aug.synthesize(torch.from_numpy(pos[ids]), torch.from_numpy(neg[ids]), ids, factor)
            k = syn_pos.shape[1]
            for side, syn in ((0, syn_pos), (1, syn_neg)):
                out["cell"].append(np.full(len(ids) * k, cell))
                out["pair_id"].append(np.repeat(ids, k))
                out["side"].append(np.full(len(ids) * k, side))
                out["slot"].append(np.tile(np.arange(1, k + 1), len(ids)))
                out["embedding"].append(syn.reshape(-1, syn.shape[-1]).numpy())
        return {k: np.concatenate(v) for k, v in out.items()}


def synthesize_sets(cells: dict[Cell, Augmenter], train: dict[int, tuple[np.ndarray, np.ndarray]],
                    res: ResourcesConfig, log: Log = print) -> dict[Cell, tuple[np.ndarray, np.ndarray]]:
    """All cells in one Ray Data pass -> cell -> (syn_pos, syn_neg), each (n_pairs, k, d), pair-ordered.
    train: seed -> the seed's training (pos, neg), (n, d) each."""
    order = list(cells)
    rows = pd.DataFrame([(i, pid) for i, cell in enumerate(order) for pid in range(len(train[cell.seed][0]))],
                        columns=["cell", "pair_id"])
    n_blocks = max(2 * res.synth_actors, len(rows) // res.synth_batch_size + 1)
    ds = ray.data.from_pandas(split_frame(rows, n_blocks))
    out = ds.map_batches(SynthesizeBatch, fn_constructor_kwargs={"cells": [(cells[j], j.factor) for j in order],
                                                                 "train": train},
                         batch_size=res.synth_batch_size, batch_format="numpy", num_cpus=res.synth_cpus_per_actor,
                         **actor_pool(res.synth_actors, res))
    parts: dict[int, list[dict[str, np.ndarray]]] = {i: [] for i in range(len(order))}
    for batch in out.iter_batches(batch_size=4096, batch_format="numpy"):
        for i in np.unique(batch["cell"]):
            sel = batch["cell"] == i
            parts[int(i)].append({k: batch[k][sel] for k in ("pair_id", "side", "slot", "embedding")})
    result = {}
    for i, cell in enumerate(order):
        n, d = train[cell.seed][0].shape
        k = synth_per_side(cell.factor)
        syn = np.zeros((2, n, k, d), dtype=np.float32)
        seen = np.zeros((2, n, k), dtype=bool)
        for p in parts[i]:
            syn[p["side"], p["pair_id"], p["slot"] - 1] = p["embedding"]
            seen[p["side"], p["pair_id"], p["slot"] - 1] = True
        if not seen.all():
            raise RuntimeError(f"synthesis of {cell.name}: {int((~seen).sum())} embeddings missing")
        result[cell] = (syn[0], syn[1])
    log(f"  synthesized {len(rows)} source pairs across {len(cells)} cells")
    return result


# ------------------------------------------------------------------ synthesis at scale

def shard_name(start: int, stop: int) -> str:
    return f"part-{start:012d}-{stop:012d}.parquet"


def _write_shard(store: Storage, start: int, stop: int, table: pa.Table) -> dict:
    info = store.write_parquet(shard_name(start, stop), table)
    return {"name": shard_name(start, stop), **{k: info[k] for k in ("rows", "sha256", "bytes")}}


def _rows(written: list[dict]) -> dict[str, np.ndarray]:
    return {k: np.asarray([w[k] for w in written]) for k in ("name", "rows", "sha256", "bytes")}


class WriteSynthShards:
    """Ray Data callable: shard starts -> each shard's materialized pairs written to storage (atomically,
    checksummed) -> one manifest row per shard. Memory is bounded by the shard size, not by the total."""

    def __init__(self, aug: Augmenter, src_pos: np.ndarray, src_neg: np.ndarray, k: int, out_uri: str,
                 total: int, shard_pairs: int, dtype: str):
        torch.set_num_threads(1)
        self.aug, self.k, self.total, self.shard_pairs, self.dtype = aug, k, total, shard_pairs, dtype
        self.src_pos, self.src_neg = torch.tensor(src_pos), torch.tensor(src_neg)
        self.store = Storage(out_uri)

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        written = []
        for start in (int(s) for s in batch["start"]):
            stop = min(start + self.shard_pairs, self.total)
            pos, neg = materialize(self.aug, self.src_pos, self.src_neg, start, stop, self.k)
            table = pa.table({"pos": embeddings_to_arrow(pos.numpy(), self.dtype),
                              "neg": embeddings_to_arrow(neg.numpy(), self.dtype)})
            written.append(_write_shard(self.store, start, stop, table))
        return _rows(written)


def _write_seeded_shards(batch: dict[str, np.ndarray], out_uri: str, total: int, shard_pairs: int, n_src: int,
                         k: int) -> dict[str, np.ndarray]:
    """Ray Data task: shard starts -> each shard's pair ids (no model: a seeded pair is four integers)."""
    store = Storage(out_uri)
    written = []
    for start in (int(s) for s in batch["start"]):
        stop = min(start + shard_pairs, total)
        written.append(_write_shard(store, start, stop, pa.table(seeded_pairs(start, stop, n_src, k))))
    return _rows(written)


def synthesize_at_scale(aug: Augmenter, src_pos: np.ndarray, src_neg: np.ndarray, k: int, mode: str, out: Storage,
                        total: int, meta: dict, res: ResourcesConfig, shard_pairs: int = ScaleConfig.shard_pairs,
                        dtype: str = ScaleConfig.dtype, log: Log = print) -> Manifest:
    """`total` synthetic pairs into <out>/manifest.json + part-*.parquet. Shards already committed are kept:
    a re-run after a kill writes only the missing ones, so every pair is there exactly once.

    Materialized shards are decoded by an actor pool holding the augmenter once; seeded shards are pair ids
    only, written by plain tasks (no model to ship, no actor to start). Shard records are committed to the
    manifest in groups (every second at most), each after its shard was written in full."""
    manifest = Manifest.open(out, {**meta, "mode": mode, "pairs": total, "k": k})   # readers rely on these
    starts = [s for s in range(0, total, shard_pairs)
              if shard_name(s, min(s + shard_pairs, total)) not in manifest.files]
    log(f"  {len(starts)} of {-(-total // shard_pairs)} shards to write ({mode}, {res.synth_actors} worker(s))")
    if not starts:
        return manifest
    if mode == "materialized":
        ds = ray.data.from_items([{"start": s} for s in starts], override_num_blocks=len(starts))
        out_rows = ds.map_batches(
            WriteSynthShards,
            fn_constructor_kwargs=dict(aug=aug, src_pos=src_pos, src_neg=src_neg, k=k, out_uri=out.uri,
                                       total=total, shard_pairs=shard_pairs, dtype=dtype),
            batch_size=1, batch_format="numpy", num_cpus=res.synth_cpus_per_actor, **actor_pool(res.synth_actors, res))
    else:
        blocks = max(1, min(len(starts), 4 * res.synth_actors))
        ds = ray.data.from_items([{"start": s} for s in starts], override_num_blocks=blocks)
        out_rows = ds.map_batches(
            _write_seeded_shards, fn_kwargs=dict(out_uri=out.uri, total=total, shard_pairs=shard_pairs,
                                                 n_src=len(src_pos), k=k),
            batch_size=None, batch_format="numpy", num_cpus=res.synth_cpus_per_actor, concurrency=res.synth_actors)
    progress = Progress(total - sum(f["rows"] for f in manifest.files.values()), "pairs written", log)
    pending, last = {}, time.time()
    for row in out_rows.iter_rows():
        pending[str(row["name"])] = {k: (int(row[k]) if k != "sha256" else str(row[k])) for k in ("rows", "sha256",
                                                                                                   "bytes")}
        progress.add(int(row["rows"]), unit="pairs")
        if time.time() - last > 1.0:
            manifest.commit_many(pending)
            pending, last = {}, time.time()
    manifest.commit_many(pending)
    return manifest


class DecodeSeeded:
    """Ray Data callable: seeded pair ids -> {pos, neg} (n, d), decoded on the fly."""

    def __init__(self, aug: Augmenter, src_pos: np.ndarray, src_neg: np.ndarray, k: int):
        torch.set_num_threads(1)
        self.aug, self.k = aug, k
        self.src_pos, self.src_neg = torch.tensor(src_pos), torch.tensor(src_neg)

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        pos, neg = decode_seeded(self.aug, self.src_pos, self.src_neg, batch["unit"], batch["a"], batch["b"], self.k)
        return {"pos": pos.numpy(), "neg": neg.numpy()}


def _read_shards(batch: dict[str, np.ndarray], uri: str, sha: dict[str, str]) -> dict[str, np.ndarray]:
    """Shard names -> their rows, each shard verified against its manifest checksum."""
    store = Storage(uri)
    tables = [store.read_parquet(str(n), sha[str(n)]) for n in batch["name"]]
    if "pos" in tables[0].column_names:
        return {c: np.concatenate([arrow_to_embeddings(t.column(c)) for t in tables]) for c in ("pos", "neg")}
    return {c: np.concatenate([t.column(c).to_numpy() for t in tables]) for c in tables[0].column_names}


def pairs_dataset(manifest: Manifest, aug: Augmenter | None = None, src_pos: np.ndarray | None = None,
                  src_neg: np.ndarray | None = None, k: int | None = None, decoders: int = 1,
                  cpus_per_decoder: float = 0.25, cpus_per_read: float = 0.25):
    """A committed pair set (materialized or seeded) as a Ray Dataset of {pos, neg} batches.

    Reads and decoders ask for fractional CPUs: trainer workers usually hold the whole CPUs, and a
    read task waiting for a full free CPU would starve the training loop forever.
    """
    names = sorted(manifest.files)
    sha = {n: manifest.files[n]["sha256"] for n in names}
    # one read task per committed shard (not read_parquet: its file-listing step wants a whole CPU)
    ds = ray.data.from_items([{"name": n} for n in names], override_num_blocks=len(names)).map_batches(
        _read_shards, fn_kwargs={"uri": manifest.store.uri, "sha": sha}, batch_size=1, batch_format="numpy",
        num_cpus=cpus_per_read)
    if manifest.meta.get("mode") == "seeded":
        return ds.map_batches(DecodeSeeded, fn_constructor_kwargs=dict(aug=aug, src_pos=src_pos, src_neg=src_neg, k=k),
                              batch_format="numpy", compute=ActorPoolStrategy(size=decoders),
                              num_cpus=cpus_per_decoder)
    return ds
