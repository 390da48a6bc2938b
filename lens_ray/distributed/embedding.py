"""Ray Data: embedding extraction sharded over an actor pool (one model replica per actor).

Only distribution lives here: the math is `data.embed.Embedder`. Texts are sorted by length so a batch holds
texts of similar length (little padding); results stream back and are committed as they arrive.
"""
from __future__ import annotations

import json
import time
import warnings
from dataclasses import dataclass
from typing import Callable

import numpy as np
import pandas as pd
import ray
from ray.data import ActorPoolStrategy

from lens_ray.config import EmbedConfig, ResourcesConfig
from lens_ray.core.progress import Log, Progress
from lens_ray.data.embed import Embedder, model_kind, resolve_dtype, resolve_pooling

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
    tokens: int = 0                 # tokens of the texts
    shared_tokens: int = 0          # of them, prompt tokens read once for several responses (not recomputed)
    truncated: int = 0
    response_truncated: int = 0
    seconds: float = 0.0            # wall, from the first batch submitted to the last received
    tokenize_s: float = 0.0         # summed over actors
    forward_s: float = 0.0
    load_s: float = 0.0


def split_frame(df: pd.DataFrame, n_blocks: int, keep_together: str | None = None) -> list[pd.DataFrame]:
    """Contiguous, non-empty row blocks (Ray Data blocks) of a frame, order kept; with keep_together (a column),
    a block never starts inside a run of rows with the same value there (a prompt's packed rows)."""
    bounds = np.linspace(0, len(df), max(1, n_blocks) + 1).astype(int)
    if keep_together:
        col = df[keep_together].to_numpy()
        for j in range(1, len(bounds) - 1):
            bounds[j] = max(bounds[j], bounds[j - 1])
            while 0 < bounds[j] < len(df) and col[bounds[j]] == col[bounds[j] - 1]:
                bounds[j] += 1
    return [df.iloc[a:b] for a, b in zip(bounds[:-1], bounds[1:]) if b > a]


def shares_prefix(cfg: EmbedConfig) -> bool:
    """Whether the actors pack a prompt's responses (so its rows should arrive together): causal LMs (or a
    model whose kind is not known before it loads) with last-token pooling."""
    kind = model_kind(cfg.model)
    return cfg.share_prefix and kind != "encoder" and resolve_pooling(cfg.pooling, kind or "causal") == "last"


def batch_order(df: pd.DataFrame, grouped: bool) -> pd.DataFrame:
    """Rows {"prompt_json", "response", ...} sorted by length, longest first, so a batch holds texts of similar
    length (little padding) and the blocks left when actors run out of work one by one are the shortest (the
    longest last kept one actor busy up to a minute while the other idled); grouped (a prompt's responses are
    packed): a prompt's rows together, by their packed length."""
    length = df.prompt_json.str.len() + df.response.str.len()
    if grouped:
        length = df.groupby("prompt_json").response.transform(lambda r: r.str.len().sum()) + df.prompt_json.str.len()
    df = df.assign(_len=length).sort_values(["_len", "prompt_json"], ascending=[False, True], kind="stable")
    return df.drop(columns="_len").reset_index(drop=True)


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


def embed_thread_count(res: ResourcesConfig, actors: int, gpus: float) -> int:
    """resources.embed_threads, or (0) one on a GPU, else the cluster's CPUs (Ray's count, not the driver's
    cores: on a cluster the driver's node is not the actors') shared among the actors."""
    if res.embed_threads:
        return res.embed_threads
    if gpus:
        return 1
    return max(1, int(ray.cluster_resources().get("CPU", 1)) // max(1, actors))


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
    grouped = shares_prefix(cfg)
    df = batch_order(df, grouped)
    gpus = gpus_per_actor(res.embed_gpus_per_actor)
    actors = embed_actor_count(res, gpus)
    n_blocks = max(2 * actors, min(64, len(df) // (res.embed_batch_size * 4) + 1))
    ds = ray.data.from_pandas(split_frame(df, n_blocks, "prompt_json" if grouped else None))
    # Ray caps OMP threads at an actor's CPU share (1 for 0.5); on CPU give each actor its share of cores
    threads = embed_thread_count(res, actors, gpus)
    out = ds.map_batches(
        Embedder,
        fn_constructor_kwargs=dict(model=cfg.model, pooling=cfg.pooling, max_length=cfg.max_length,
                                   dtype=resolve_dtype(cfg.dtype, "cuda" if gpus else "cpu"),
                                   padding_side=cfg.padding_side, torch_threads=threads, layers=layers,
                                   share_prefix=cfg.share_prefix),
        batch_size=res.embed_batch_size, batch_format="numpy", num_cpus=res.embed_cpus_per_actor, num_gpus=gpus,
        **actor_pool(actors, res))
    found: dict[str, np.ndarray] = {}
    pending: list[str] = []
    chars = {i.key: len(i.response) + len(json.dumps(i.prompt, ensure_ascii=False)) for i in items}
    log(f"  embedding {len(items):,} texts ({sum(chars.values()):,} characters) on {actors} actor(s) x {threads} "
        "thread(s), longest first; the first line comes once the model has loaded")
    progress = Progress(len(items), "texts embedded", log, work=sum(chars.values()))
    for batch in out.iter_batches(batch_size=res.embed_batch_size, batch_format="numpy"):
        for k, v in zip(batch["key"], batch["embedding"]):
            found[str(k)] = np.asarray(v, dtype=np.float32)
            pending.append(str(k))
        if on_chunk and len(pending) >= chunk:
            on_chunk(pending, np.stack([found[k] for k in pending]))
            pending = []
        stats.tokens += int(batch["n_tokens"].sum())
        stats.shared_tokens += int(batch["n_shared"].sum())
        stats.truncated += int(batch["truncated"].sum())
        stats.response_truncated += int(batch["response_truncated"].sum())
        stats.tokenize_s, stats.forward_s, stats.load_s = (a + float(b) for a, b in zip(
            (stats.tokenize_s, stats.forward_s, stats.load_s), batch["seconds"].sum(0)))
        progress.add(len(batch["key"]), rate_of=int(batch["n_tokens"].sum()), unit="tokens",
                     work=sum(chars[str(k)] for k in batch["key"]))
    if on_chunk and pending:
        on_chunk(pending, np.stack([found[k] for k in pending]))
    missing = [i.key for i in items if i.key not in found]
    if missing:
        raise RuntimeError(f"embedding lost {len(missing)} rows (first key {missing[0]})")
    stats.rows, stats.seconds = len(found), time.time() - t0
    return found, stats

