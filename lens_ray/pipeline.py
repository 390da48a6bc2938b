"""The LENS job, stage by stage: ingest -> embed -> fit VAE -> synthesize -> train heads -> evaluate -> report.

Composes the pure modules with the Ray layer; adds ordering, progress, timings and storage only.
"""
from __future__ import annotations

import contextlib
import hashlib
import json
import time
from dataclasses import asdict, dataclass, field
from typing import Callable

import numpy as np
import torch

from lens_ray import report as reporting
from lens_ray import report_html
from lens_ray.artifacts import read_pair_embeddings, save_model, write_pair_embeddings, write_synthetic
from lens_ray.augment import AUGMENTING, Augmenter
from lens_ray.config import LensConfig
from lens_ray.data import Datasets, Pair, load_datasets, split_by_group
from lens_ray.embed import resolve_dtype, resolve_model, settings_key
from lens_ray.embed_cache import EmbeddingCache
from lens_ray.evaluate import best_of_n_gold, bon_oracle, bon_random, draw_bon, preference_accuracy
from lens_ray.fit import score
from lens_ray.models.reward import LinearScorer, build_head, mean_diff_direction
from lens_ray.models.vae import PreferenceVAE
from lens_ray.storage import Manifest, Storage
from lens_ray.tune_results import read_trials

Log = Callable[[str], None]


@dataclass
class Timings:
    seconds: dict[str, float] = field(default_factory=dict)

    @contextlib.contextmanager
    def stage(self, name: str, log: Log):
        log(f"[{name}] ...")
        t0 = time.time()
        yield
        self.seconds[name] = round(self.seconds.get(name, 0.0) + time.time() - t0, 2)
        log(f"[{name}] done in {self.seconds[name]:.1f}s")


@dataclass
class Split:
    """One seed's view of the seed pairs: training rows and validation rows (for early stopping)."""
    seed: int
    train: np.ndarray      # indices into the seed pairs
    val: np.ndarray


def seed_splits(pairs: list[Pair], val_fraction: float, seeds: int, split_seed: int) -> list[Split]:
    """Per seed, a validation part of the seed pairs by whole prompts (a different part per seed)."""
    out = []
    n_val = max(1, int(round(len(pairs) * val_fraction)))
    for s in range(seeds):
        val, train, _ = split_by_group(pairs, n_val, seed=split_seed * 7919 + 1000 + s)
        out.append(Split(s, np.array([p.pair_id for p in train]), np.array([p.pair_id for p in val])))
    return out


def fingerprint(*parts) -> str:
    return hashlib.sha256(json.dumps(parts, sort_keys=True, default=str).encode()).hexdigest()[:10]


# ------------------------------------------------------------------ embedding

def bon_draws(cfg: LensConfig, ds: Datasets) -> tuple[list[np.ndarray], np.ndarray | None]:
    """The N responses drawn per BoN prompt (fixed by split_seed) and their gold scores (Q, N)."""
    draws = draw_bon([len(sp.outputs) for sp in ds.bon_prompts], cfg.data.bon_n, seed=cfg.data.split_seed)
    return draws, (np.stack([sp.gold[d] for sp, d in zip(ds.bon_prompts, draws)]) if ds.bon_prompts else None)


def table_texts(ds: Datasets, draws: list[np.ndarray]) -> dict[str, list[tuple]]:
    """Each embedding table's (prompt, response) texts in row order: seed and eval pairs as chosen, rejected
    per pair; then the drawn Best-of-N responses, if any. Their content keys are what a stored table must match."""
    tables = {name: [(p.prompt, r) for p in pairs for r in (p.chosen, p.rejected)]
              for name, pairs in (("seed", ds.seed_pairs), ("eval", ds.eval_pairs))}
    if draws:
        tables["bon"] = [(sp.prompt, sp.outputs[j]) for sp, d in zip(ds.bon_prompts, draws) for j in d]
    return tables


@dataclass
class Embedded:
    seed_pos: np.ndarray   # (n_seed, d)
    seed_neg: np.ndarray
    eval_pos: np.ndarray   # (n_eval, d)
    eval_neg: np.ndarray
    bon: np.ndarray | None   # (Q, N, d)
    bon_gold: np.ndarray | None  # (Q, N)
    stats: dict


def embed_stage(cfg: LensConfig, ds: Datasets, out: Storage, log: Log) -> Embedded:
    from lens_ray.ray_data import EmbedItem, embed_items, gpus_per_actor

    e = cfg.embed
    model_id = resolve_model(e.model).model_id
    dtype = resolve_dtype(e.dtype, "cuda" if gpus_per_actor(e.gpus_per_actor) else "cpu")
    settings = {"model": model_id, "pooling": e.pooling, "max_length": e.max_length, "storage_dtype": e.storage_dtype}
    if dtype != "float32":       # fp32 runs keep the settings (and cache) they always had
        settings["dtype"] = dtype
    run_manifest = Manifest.open(out.child("embeddings"), settings)   # refuses other settings, clearly
    draws, bon_gold = bon_draws(cfg, ds)
    # every table's rows as content keys: a stored table is reused only when its keys match exactly
    wanted: dict[str, list[str]] = {}
    texts: dict[str, tuple] = {}
    for name, rows in table_texts(ds, draws).items():
        wanted[name] = [settings_key(settings, prompt, response) for prompt, response in rows]
        texts.update(zip(wanted[name], rows))
    digests = {name: fingerprint(keys) for name, keys in wanted.items()}
    done = {}
    for name in wanted:
        info = run_manifest.files.get(f"{name}.parquet")
        if info and info.get("keys") == digests[name]:
            stored = read_pair_embeddings(run_manifest, name)
            if stored is not None:
                done[name] = stored
    needed = {k for name, keys in wanted.items() if name not in done for k in keys}
    stats = {"texts": len(needed), "cached": 0, "embedded": 0, "truncated": 0, "response_truncated": 0,
             "tokens": 0, "tokens_per_s": None}
    vectors: dict[str, np.ndarray] = {}
    if needed:
        cache = EmbeddingCache(Storage(cfg.cache_uri).child("embeddings"), settings) if e.cache else None
        if cache:
            vectors = cache.lookup(sorted(needed))
        stats["cached"] = len(vectors)
        todo = [EmbedItem(k, *texts[k]) for k in sorted(needed) if k not in vectors]
        log(f"  {len(needed)} distinct texts: {len(vectors)} cached, {len(todo)} to embed with {e.model}")
        if todo:
            # commit to the cache as batches arrive: a killed run keeps what it embedded
            on_chunk = (lambda ks, vs: cache.add(ks, vs)) if cache else None
            fresh, st = embed_items(todo, e, log, on_chunk=on_chunk)
            vectors.update(fresh)
            stats.update(embedded=st.rows, truncated=st.truncated, response_truncated=st.response_truncated,
                         tokens=st.tokens, tokens_per_s=round(st.tokens / max(st.seconds, 1e-9), 1))
            if st.truncated:
                log(f"  {st.truncated} texts were longer than {e.max_length} tokens and lost prompt tokens from "
                    f"the left ({st.response_truncated} of them lost response tokens too)")
    for name, keys in wanted.items():
        if name in done:
            continue
        flat = np.stack([vectors[k] for k in keys])
        pos, neg = (flat, None) if name == "bon" else (flat[0::2], flat[1::2])
        write_pair_embeddings(run_manifest, name, pos, neg, e.storage_dtype, {"keys": digests[name]})
        done[name] = (pos, neg)
    bon = done["bon"][0].reshape(len(draws), cfg.data.bon_n, -1) if draws else None
    return Embedded(*done["seed"], *done["eval"], bon, bon_gold, stats)


# ------------------------------------------------------------------ the job

def run(cfg: LensConfig, log: Log = print) -> dict:
    """Run every stage; returns the report (also written to <out>/report.json)."""
    from lens_ray.ray_data import synthesize_jobs
    from lens_ray.ray_train import HeadJob, fit_heads, fit_vaes

    cfg.validate()
    out = Storage(cfg.out_uri)
    t = Timings()
    log(f"lens-ray run '{cfg.name}' -> {out.uri}")

    with t.stage("ingest", log):
        ds = load_datasets(cfg.data)
        log(f"  {len(ds.seed_pairs)} seed pairs, {len(ds.eval_pairs)} eval pairs, {len(ds.bon_prompts)} BoN prompts;"
            f" quarantined {sum(ds.quarantine.counts.values())}")
    with t.stage("embed", log):
        emb = embed_stage(cfg, ds, out, log)
    d = emb.seed_pos.shape[1]
    splits = seed_splits(ds.seed_pairs, cfg.data.val_fraction, cfg.seeds, cfg.data.split_seed)
    data = {s.seed: (emb.seed_pos[s.train], emb.seed_neg[s.train], emb.seed_pos[s.val], emb.seed_neg[s.val])
            for s in splits}
    base_fp = fingerprint(cfg.embed.model, cfg.data, [s.train.tolist() for s in splits], d)
    train_store = out.child("ray_train")
    vae_meta: dict = {}
    vaes: dict[int, PreferenceVAE] = {}

    if "lens" in cfg.methods:
        with t.stage("fit_vae", log):
            states, vae_meta = fit_vaes(cfg.vae, data, f"vae-{fingerprint(base_fp, cfg.vae)}", train_store)
            for s in splits:
                m = vae_meta[f"seed-{s.seed}"]
                vae = PreferenceVAE(**{**m["config"], "hidden_dims": tuple(m["config"]["hidden_dims"])})
                vae.load_state_dict(states[f"seed-{s.seed}"])
                vaes[s.seed] = vae.eval()
                save_model(out.child("vae"), f"seed-{s.seed}", vae.state_dict(), vae.config())
                log(f"  VAE seed {s.seed}: relative recon error train {m['metrics']['rel_recon_train']:.3f}, "
                    f"val {m['metrics']['rel_recon_val']:.3f}, mean W2 {m['metrics']['w2']:.2f}")

    head_jobs = [HeadJob(f"original-f1-s{s.seed}", "original", 1, s.seed, None)
                 for s in splits if "original" in cfg.methods]
    aug_jobs: dict[int, tuple[Augmenter, int]] = {}
    aug_names: dict[int, str] = {}
    for method in (m for m in cfg.methods if m in AUGMENTING):
        for f in cfg.factors:
            for s in splits:
                tr_pos, tr_neg = torch.from_numpy(data[s.seed][0]), torch.from_numpy(data[s.seed][1])
                job = len(aug_jobs)
                aug_jobs[job] = (Augmenter.fit(method, s.seed, cfg.synth, tr_pos, tr_neg, vaes.get(s.seed)), f)
                aug_names[job] = f"{method}-f{f}-s{s.seed}"
                head_jobs.append(HeadJob(aug_names[job], method, f, s.seed, aug_names[job]))
    if aug_jobs:
        with t.stage("synthesize", log):
            train_only = {s.seed: data[s.seed][:2] for s in splits}
            synthesized = synthesize_jobs(aug_jobs, train_only, cfg.synth, log)
            for job, (sp, sn) in synthesized.items():
                write_synthetic(out, aug_names[job], sp, sn)

    heads: dict[str, torch.nn.Module] = {}
    head_meta: dict[str, dict] = {}
    if head_jobs:
        with t.stage("train_reward", log):
            states, head_meta = fit_heads(cfg.reward, head_jobs, data, out.uri,
                                          f"heads-{fingerprint(base_fp, cfg.reward, cfg.synth, cfg.vae, [asdict(j) for j in head_jobs])}",
                                          train_store)
            for name, m in head_meta.items():
                head = build_head(m["config"])
                head.load_state_dict(states[name])
                heads[name] = head.eval()
    if "mean_diff" in cfg.methods:
        for s in splits:
            w = mean_diff_direction(torch.from_numpy(data[s.seed][0]), torch.from_numpy(data[s.seed][1]))
            name = f"mean_diff-f1-s{s.seed}"
            heads[name] = LinearScorer(w)
            head_meta[name] = {"config": heads[name].config(),
                               "job": {"method": "mean_diff", "factor": 1, "seed": s.seed}, "metrics": {}}

    with t.stage("evaluate", log):
        results = []
        eval_pos, eval_neg = torch.from_numpy(emb.eval_pos), torch.from_numpy(emb.eval_neg)
        bon = torch.from_numpy(emb.bon.reshape(-1, d)) if emb.bon is not None else None
        for name, head in sorted(heads.items()):
            job = head_meta[name]["job"]
            save_model(out.child("heads"), name, head.state_dict(), head.config())
            row = {"method": job["method"], "factor": job["factor"], "seed": job["seed"],
                   "accuracy": preference_accuracy(score(head, eval_pos), score(head, eval_neg)),
                   "bon_gold": None, "val_accuracy": head_meta[name]["metrics"].get("val_acc"),
                   "head": f"heads/{name}"}
            if bon is not None:
                row["bon_gold"] = best_of_n_gold(score(head, bon).reshape(emb.bon.shape[:2]), emb.bon_gold)
            results.append(row)

    report = {
        "model": cfg.embed.model, "model_id": resolve_model(cfg.embed.model).model_id,
        "embedding_dim": d, "seed_pairs": len(ds.seed_pairs), "eval_pairs": len(ds.eval_pairs),
        "bon_prompts": len(ds.bon_prompts), "bon_n": cfg.data.bon_n if ds.bon_prompts else None,
        "results": results,
        "bon_random": bon_random(emb.bon_gold) if emb.bon_gold is not None else None,
        "bon_oracle": bon_oracle(emb.bon_gold) if emb.bon_gold is not None else None,
        "timings_s": t.seconds,
        "quarantined": dict(ds.quarantine.counts),
        "data_notes": ds.notes,
        "embedding": emb.stats,
        "vae": {k: v["metrics"] for k, v in vae_meta.items()},
        "config": cfg.to_dict(),
    }
    report["summary"] = reporting.summarize(results)
    reporting.write(out, report)
    proj = None
    lens_jobs = [j for j in aug_names.values() if j.startswith("lens-") and j.endswith("-s0")]
    if lens_jobs:
        name = max(lens_jobs, key=lambda j: int(j.split("-f")[1].split("-")[0]))
        sp, sn = synthesized[next(k for k, v in aug_names.items() if v == name)]
        proj = report_html.projection(data[0][0], data[0][1], sp, sn)
    trials = read_trials(Storage(cfg.from_tune)) if cfg.from_tune else None
    out.write_bytes("report.html", report_html.render(report, proj, trials).encode())
    log(reporting.table(report))
    log(f"artifacts: {out.uri}  (report.html, report.json, report.md, heads/, vae/, embeddings/, synthetic/)")
    return report
