"""The synthesis-at-scale job (`lens-ray synthesize`): N pairs from a finished run's embeddings and VAE,
streamed to storage by `ray_data.synthesize_at_scale`. Composes the pieces; adds only progress and output."""
from __future__ import annotations

import time

import torch

from lens_ray.config import ConfigError, LensConfig
from lens_ray.core.augment import Augmenter
from lens_ray.core.progress import Log
from lens_ray.data.finished_run import FinishedRun
from lens_ray.store.storage import Manifest, Storage


def synthesize_pairs(cfg: LensConfig, run: FinishedRun, out_uri: str, log: Log = print) -> Manifest:
    """cfg.scale says how many pairs, which method and mode; cfg.synth (the run's own) how to draw them."""
    sc = cfg.scale
    pos, neg = run.table("seed")
    vae = run.vae(sc.seed) if sc.method == "lens" else None
    if sc.method == "lens" and vae is None:
        raise ConfigError(f"{run.uri} has no VAE for seed {sc.seed}; run it with the lens method")
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
