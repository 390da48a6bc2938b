"""The synthesis-at-scale job (`lens-ray synthesize`): N pairs from a finished run's embeddings and VAE,
streamed to storage by `distributed.synthesis.synthesize_at_scale`. Composes the pieces; adds the plan checked
before Ray starts (what it will write, and whether it can), progress and output."""
from __future__ import annotations

import math
import os
import shutil
import time

import torch

from lens_ray.config import ConfigError, LensConfig
from lens_ray.core.augment import Augmenter, needs_vae
from lens_ray.core.progress import Log
from lens_ray.data.finished_run import FinishedRun
from lens_ray.store.storage import Manifest, Storage

SEEDED_BYTES = 14                 # a seeded pair: unit (int64) + source (int32) + two slots (uint8), bytes a pair
ASK_ABOVE = 50 << 30              # an output larger than this is written only with --yes


def plan(cfg: LensConfig, run: FinishedRun, out_uri: str, yes: bool = False, overwrite: bool = False,
         log: Log = print) -> int:
    """Before Ray starts: the output's estimated size, refused when it cannot fit the target's free space
    (where that can be known) or, above ASK_ABOVE, without `yes`; and a target that holds something else (a
    run, other files) refused unless `overwrite`. Returns the estimated bytes."""
    sc = cfg.scale
    per_pair = 2 * run.dim * (4 if sc.dtype == "float32" else 2) if sc.mode == "materialized" else SEEDED_BYTES
    estimate, shards = sc.pairs * per_pair, math.ceil(sc.pairs / sc.shard_pairs)
    store = Storage(out_uri)
    entries = [e for e in store.listdir() if e != "lease.json"] if store.isdir() else []
    if store.exists() and not store.isdir():
        raise ConfigError(f"--out {out_uri}: a file, not a folder")
    if entries and not overwrite:
        if "report.json" in entries:
            raise ConfigError(f"--out {out_uri}: a finished run's folder; give the pair set a folder of its own")
        meta = store.read_json(Manifest.NAME).get("meta", {}) if Manifest.NAME in entries else {}
        if not {"from_run", "mode", "pairs"} <= set(meta):
            raise ConfigError(f"--out {out_uri}: a folder holding other files; give a new or empty folder, the "
                              "folder of this pair set (it resumes), or --overwrite")
    free = _free_bytes(store)
    size = (f"about {estimate / 2**30:,.1f} GiB in {shards:,} shards of {sc.shard_pairs:,} pairs ({per_pair} "
            "bytes a pair)")
    if free is not None and estimate > free:
        raise ConfigError(f"scale.pairs: {sc.pairs:,} {sc.mode} pairs need {size}, but {out_uri} has "
                          f"{free / 2**30:,.1f} GiB free")
    if estimate > ASK_ABOVE and not yes:
        raise ConfigError(f"scale.pairs: {sc.pairs:,} {sc.mode} pairs would write {size}; give --yes to write them "
                          "(or fewer --pairs, or --mode seeded)")
    log(f"plan: {sc.pairs:,} {sc.mode} pairs, {size}")
    return estimate


def _free_bytes(store: Storage) -> int | None:
    """Free bytes where a local folder will be written (its nearest existing parent); None on object storage."""
    if not store.local:
        return None
    path = store.path()
    while not os.path.exists(path) and os.path.dirname(path) != path:
        path = os.path.dirname(path)
    return shutil.disk_usage(path).free


def synthesize_pairs(cfg: LensConfig, run: FinishedRun, out_uri: str, log: Log = print) -> Manifest:
    """cfg.scale says how many pairs, which method and mode; cfg.synth (the run's own) how to draw them."""
    sc = cfg.scale
    pos, neg = run.table("seed")
    vae = run.vae(sc.seed) if needs_vae(sc.method) else None
    if needs_vae(sc.method) and vae is None:
        raise ConfigError(f"{run.uri} has no VAE for seed {sc.seed}; run it with the {sc.method} method")
    aug = Augmenter.fit(sc.method, sc.seed, cfg.synth, torch.from_numpy(pos), torch.from_numpy(neg), vae)
    meta = {"from_run": run.uri, "method": sc.method, "mode": sc.mode, "pairs": sc.pairs, "k": sc.k, "seed": sc.seed,
            "dim": int(pos.shape[1]), "sources": int(len(pos)),
            "dtype": sc.dtype if sc.mode == "materialized" else None, "synth": cfg.to_dict()["synth"]}
    from lens_ray.distributed.synthesis import synthesize_at_scale
    t0 = time.time()
    log(f"synthesizing {sc.pairs:,} {sc.method} pairs from {len(pos)} source pairs (d={pos.shape[1]}) -> {out_uri}")
    man = synthesize_at_scale(aug, pos, neg, sc.k, sc.mode, Storage(out_uri), sc.pairs, meta, cfg.resources,
                              sc.shard_pairs, sc.dtype, log=log)
    rows = sum(f["rows"] for f in man.files.values())
    size = sum(f["bytes"] for f in man.files.values())
    secs = time.time() - t0
    log(f"done: {rows:,} pairs in {len(man.files)} shards, {size / 2**20:,.1f} MiB ({size / max(rows, 1):.1f} "
        f"bytes/pair), {secs:.1f}s ({rows / secs:,.0f} pairs/s) -> {man.store.uri}")
    return man
