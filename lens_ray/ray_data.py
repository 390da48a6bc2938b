"""Ray Data pipelines: sharded embedding extraction and batch synthesis.

Only distribution lives here: the math is `embed.Embedder` and `augment.Augmenter`.
"""
from __future__ import annotations

import json
import os
import time
import warnings
from dataclasses import dataclass
from typing import Callable

import numpy as np
import pandas as pd
import ray
import torch
from ray.data import ActorPoolStrategy

from lens_ray.arrow_columns import arrow_to_embeddings, embeddings_to_arrow
from lens_ray.augment import Augmenter
from lens_ray.config import EmbedConfig, ResourcesConfig
from lens_ray.embed import Embedder, resolve_dtype
from lens_ray.run_types import Job
from lens_ray.storage import Manifest, Storage
from lens_ray.synth import synth_per_side
from lens_ray.synth_stream import decode_seeded, materialize, seeded_pairs

Log = Callable[[str], None]
# Ray 2.60 takes an actor's max_restarts only as a free remote argument (deprecated for a named one in 2.64)
warnings.filterwarnings("ignore", message="`ray_remote_args` is deprecated", category=DeprecationWarning)


@dataclass
class EmbedItem:
    key: str
    prompt: list[dict[str, str]]
    response: str


@dataclass
class EmbedStats:
    rows: int = 0
    tokens: int = 0
    truncated: int = 0
    response_truncated: int = 0
    seconds: float = 0.0            # wall, from the first batch submitted to the last received
    tokenize_s: float = 0.0         # summed over actors
    forward_s: float = 0.0
    load_s: float = 0.0


def split_frame(df: pd.DataFrame, n_blocks: int) -> list[pd.DataFrame]:
    """Contiguous, non-empty row blocks (Ray Data blocks) of a frame, order kept."""
    bounds = np.linspace(0, len(df), max(1, n_blocks) + 1).astype(int)
    return [df.iloc[a:b] for a, b in zip(bounds[:-1], bounds[1:]) if b > a]


def gpus_per_actor(cfg_value: float | None) -> float:
    if cfg_value is not None:
        return cfg_value
    return 1.0 if ray.cluster_resources().get("GPU", 0) > 0 else 0.0


def embed_actor_count(res: ResourcesConfig, gpus: float) -> int:
    """resources.embed_actors, or (0) one actor per GPU, or one single-threaded actor per CPU (at most 8):
    1-thread actors share no synchronization, so a preempted thread stalls only its own actor."""
    if res.embed_actors:
        return res.embed_actors
    have = ray.cluster_resources()
    if gpus:
        return max(1, int(have.get("GPU", 0) // gpus))
    return max(1, min(8, int(have.get("CPU", 1))))


def actor_pool(size: int, res: ResourcesConfig) -> dict:
    """map_batches arguments of an actor pool whose dead actors are restarted at most res.actor_max_restarts
    times (then the dataset fails, naming the actor's error)."""
    return {"compute": ActorPoolStrategy(size=size), "max_restarts": res.actor_max_restarts}


def embed_items(items: list[EmbedItem], cfg: EmbedConfig, res: ResourcesConfig, log: Log = print,
                on_chunk: Callable[[list[str], np.ndarray], None] | None = None, chunk: int = 256,
                layers: tuple[int, ...] = (-1,)) -> tuple[dict[str, np.ndarray], EmbedStats]:
    """Embed items with an actor pool -> key -> (L, H) pooled states of `layers`; batches hold texts of
    similar length (sorted by size).

    `on_chunk(keys, vectors (n, L, H))` receives the results every `chunk` rows as they stream in (e.g. to
    commit them to the cache, so a killed run keeps what it embedded)."""
    stats = EmbedStats()
    if not items:
        return {}, stats
    t0 = time.time()
    df = pd.DataFrame({"key": [i.key for i in items],
                       "prompt_json": [json.dumps(i.prompt, ensure_ascii=False) for i in items],
                       "response": [i.response for i in items]})
    # length-sorted batching: consecutive rows have similar length, so little padding per batch
    df = df.assign(_len=df.prompt_json.str.len() + df.response.str.len()).sort_values("_len", kind="stable")
    df = df.drop(columns="_len").reset_index(drop=True)
    gpus = gpus_per_actor(res.embed_gpus_per_actor)
    actors = embed_actor_count(res, gpus)
    n_blocks = max(2 * actors, min(64, len(df) // (res.embed_batch_size * 4) + 1))
    ds = ray.data.from_pandas(split_frame(df, n_blocks))
    # Ray caps OMP threads at an actor's CPU share (1 for 0.5); on CPU give each actor its share of cores
    threads = res.embed_threads or (1 if gpus else max(1, (os.cpu_count() or 1) // actors))
    out = ds.map_batches(
        Embedder,
        fn_constructor_kwargs=dict(model=cfg.model, pooling=cfg.pooling, max_length=cfg.max_length,
                                   dtype=resolve_dtype(cfg.dtype, "cuda" if gpus else "cpu"),
                                   padding_side=cfg.padding_side, torch_threads=threads, layers=layers),
        batch_size=res.embed_batch_size, batch_format="numpy", num_cpus=res.embed_cpus_per_actor, num_gpus=gpus,
        **actor_pool(actors, res))
    found: dict[str, np.ndarray] = {}
    pending: list[str] = []
    next_report = 0.1
    for batch in out.iter_batches(batch_size=res.embed_batch_size, batch_format="numpy"):
        for k, v in zip(batch["key"], batch["embedding"]):
            found[str(k)] = np.asarray(v, dtype=np.float32)
            pending.append(str(k))
        if on_chunk and len(pending) >= chunk:
            on_chunk(pending, np.stack([found[k] for k in pending]))
            pending = []
        stats.tokens += int(batch["n_tokens"].sum())
        stats.truncated += int(batch["truncated"].sum())
        stats.response_truncated += int(batch["response_truncated"].sum())
        stats.tokenize_s, stats.forward_s, stats.load_s = (a + float(b) for a, b in zip(
            (stats.tokenize_s, stats.forward_s, stats.load_s), batch["seconds"].sum(0)))
        if len(found) / len(items) >= next_report:
            rate = stats.tokens / max(time.time() - t0, 1e-9)
            log(f"  embedded {len(found)}/{len(items)} texts ({rate:.0f} tokens/s)")
            next_report += 0.1
    if on_chunk and pending:
        on_chunk(pending, np.stack([found[k] for k in pending]))
    missing = [i.key for i in items if i.key not in found]
    if missing:
        raise RuntimeError(f"embedding lost {len(missing)} rows (first key {missing[0]})")
    stats.rows, stats.seconds = len(found), time.time() - t0
    return found, stats


class SynthesizeBatch:
    """Ray Data callable: rows (job, pair_id) -> one row per synthetic embedding.

    Each actor holds every job's Augmenter and the seeds' training embeddings once, so rows carry
    ids only. Output: job, pair_id, side (0 chosen, 1 rejected), slot (1..k), embedding (d,).
    """

    def __init__(self, jobs: list[tuple[Augmenter, int]], train: dict[int, tuple[np.ndarray, np.ndarray]]):
        torch.set_num_threads(1)
        self.jobs = jobs            # job index -> (augmenter, factor)
        self.train = train          # seed -> (pos, neg) (n, d)

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        out: dict[str, list] = {"job": [], "pair_id": [], "side": [], "slot": [], "embedding": []}
        for job in np.unique(batch["job"]):
            aug, factor = self.jobs[int(job)]
            ids = batch["pair_id"][batch["job"] == job]
            pos, neg = self.train[aug.seed]
            syn_pos, syn_neg, _ = aug.synthesize(torch.from_numpy(pos[ids]), torch.from_numpy(neg[ids]), ids, factor)
            k = syn_pos.shape[1]
            for side, syn in ((0, syn_pos), (1, syn_neg)):
                out["job"].append(np.full(len(ids) * k, job))
                out["pair_id"].append(np.repeat(ids, k))
                out["side"].append(np.full(len(ids) * k, side))
                out["slot"].append(np.tile(np.arange(1, k + 1), len(ids)))
                out["embedding"].append(syn.reshape(-1, syn.shape[-1]).numpy())
        return {k: np.concatenate(v) for k, v in out.items()}


def synthesize_jobs(jobs: dict[Job, Augmenter], train: dict[int, tuple[np.ndarray, np.ndarray]],
                    res: ResourcesConfig, log: Log = print) -> dict[Job, tuple[np.ndarray, np.ndarray]]:
    """All jobs in one Ray Data pass -> job -> (syn_pos, syn_neg), each (n_pairs, k, d), pair-ordered.
    train: seed -> the seed's training (pos, neg), (n, d) each."""
    order = list(jobs)
    rows = pd.DataFrame([(i, pid) for i, job in enumerate(order) for pid in range(len(train[job.seed][0]))],
                        columns=["job", "pair_id"])
    n_blocks = max(2 * res.synth_actors, len(rows) // res.synth_batch_size + 1)
    ds = ray.data.from_pandas(split_frame(rows, n_blocks))
    out = ds.map_batches(SynthesizeBatch, fn_constructor_kwargs={"jobs": [(jobs[j], j.factor) for j in order],
                                                                 "train": train},
                         batch_size=res.synth_batch_size, batch_format="numpy", num_cpus=res.synth_cpus_per_actor,
                         **actor_pool(res.synth_actors, res))
    parts: dict[int, list[dict[str, np.ndarray]]] = {i: [] for i in range(len(order))}
    for batch in out.iter_batches(batch_size=4096, batch_format="numpy"):
        for i in np.unique(batch["job"]):
            sel = batch["job"] == i
            parts[int(i)].append({k: batch[k][sel] for k in ("pair_id", "side", "slot", "embedding")})
    result = {}
    for i, job in enumerate(order):
        n, d = train[job.seed][0].shape
        k = synth_per_side(job.factor)
        syn = np.zeros((2, n, k, d), dtype=np.float32)
        seen = np.zeros((2, n, k), dtype=bool)
        for p in parts[i]:
            syn[p["side"], p["pair_id"], p["slot"] - 1] = p["embedding"]
            seen[p["side"], p["pair_id"], p["slot"] - 1] = True
        if not seen.all():
            raise RuntimeError(f"synthesis of {job.name}: {int((~seen).sum())} embeddings missing")
        result[job] = (syn[0], syn[1])
    log(f"  synthesized {len(rows)} source pairs across {len(jobs)} jobs")
    return result


# ------------------------------------------------------------------ synthesis at scale

def shard_name(start: int, stop: int) -> str:
    return f"part-{start:012d}-{stop:012d}.parquet"


class WriteSynthShards:
    """Ray Data callable: shard starts -> each shard's pairs written to storage (atomically, checksummed)
    -> one manifest row per shard. Memory is bounded by the shard size, not by the total."""

    def __init__(self, aug: Augmenter, src_pos: np.ndarray, src_neg: np.ndarray, k: int, mode: str, out_uri: str,
                 total: int, shard_pairs: int, dtype: str):
        torch.set_num_threads(1)
        self.aug, self.k, self.mode, self.total, self.shard_pairs, self.dtype = aug, k, mode, total, shard_pairs, dtype
        self.src_pos, self.src_neg = torch.tensor(src_pos), torch.tensor(src_neg)
        self.store = Storage(out_uri)

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        import pyarrow as pa
        rows: dict[str, list] = {"name": [], "rows": [], "sha256": [], "bytes": []}
        for start in batch["start"]:
            start = int(start)
            stop = min(start + self.shard_pairs, self.total)
            if self.mode == "materialized":
                pos, neg = materialize(self.aug, self.src_pos, self.src_neg, start, stop, self.k)
                table = pa.table({"pos": embeddings_to_arrow(pos.numpy(), self.dtype),
                                  "neg": embeddings_to_arrow(neg.numpy(), self.dtype)})
            else:
                table = pa.table(seeded_pairs(start, stop, len(self.src_pos), self.k))
            info = self.store.write_parquet(shard_name(start, stop), table)
            for key in rows:
                rows[key].append(shard_name(start, stop) if key == "name" else info[key])
        return {k: np.asarray(v) for k, v in rows.items()}


def synthesize_at_scale(aug: Augmenter, src_pos: np.ndarray, src_neg: np.ndarray, k: int, mode: str, out: Storage,
                        total: int, meta: dict, res: ResourcesConfig, shard_pairs: int = 16384,
                        dtype: str = "float32", log: Log = print) -> Manifest:
    """`total` synthetic pairs into <out>/manifest.json + part-*.parquet. Shards already committed are kept:
    a re-run after a kill writes only the missing ones, so every pair is there exactly once."""
    manifest = Manifest.open(out, {**meta, "mode": mode, "pairs": total, "k": k})   # readers rely on these
    starts = [s for s in range(0, total, shard_pairs)
              if shard_name(s, min(s + shard_pairs, total)) not in manifest.files]
    log(f"  {len(starts)} of {-(-total // shard_pairs)} shards to write ({mode}, {res.synth_actors} worker(s))")
    if not starts:
        return manifest
    ds = ray.data.from_items([{"start": s} for s in starts], override_num_blocks=len(starts))
    out_rows = ds.map_batches(
        WriteSynthShards,
        fn_constructor_kwargs=dict(aug=aug, src_pos=src_pos, src_neg=src_neg, k=k, mode=mode, out_uri=out.uri,
                                   total=total, shard_pairs=shard_pairs, dtype=dtype),
        batch_size=1, batch_format="numpy", num_cpus=res.synth_cpus_per_actor, **actor_pool(res.synth_actors, res))
    done, t0 = 0, time.time()
    for row in out_rows.iter_rows():
        manifest.commit(str(row["name"]), {"rows": int(row["rows"]), "sha256": str(row["sha256"]),
                                           "bytes": int(row["bytes"])})
        done += int(row["rows"])
        if done // max(1, total // 10) != (done - int(row["rows"])) // max(1, total // 10):
            log(f"  {done:,} pairs written ({done / (time.time() - t0):,.0f} pairs/s)")
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
