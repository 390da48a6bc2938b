"""The main job (`lens-ray run`, `jobs/run.py`), stage by stage: ingest -> embed -> fit VAE -> synthesize ->
train heads -> evaluate -> select (the run's reward model, `pipelines/selection.py`) -> report.

Composes the pure modules with the Ray layer; adds ordering, progress, timings, storage and reuse only.
Each stage stores its results with the fingerprint of what they were made from (`StageKeys`); a re-run
reuses every verified result whose fingerprint matches — also on a cluster of another shape, since no
fingerprint reads `resources` — and computes only the rest.
"""
from __future__ import annotations

import functools
import json
from dataclasses import dataclass, replace
from typing import Callable

import numpy as np
import torch

from lens_ray.config import LensConfig, fingerprint
from lens_ray.core.augment import Augmenter, needs_vae
from lens_ray.core.heads import build_head, mean_diff_head, reward_scale, rewards
from lens_ray.core.metrics import bon_oracle, bon_random, head_metrics, longer_response_accuracy
from lens_ray.core.pairs import Datasets, Split, seed_splits
from lens_ray.core.progress import Log, Stages
from lens_ray.core.records import Cell, Embedded, Result, SeedData, bon_draws, plan_cells, table_texts
from lens_ray.core.selection import Selection
from lens_ray.core.vae import PreferenceVAE
from lens_ray.data.embed import (
    INNER,
    combine_layers,
    layer_settings,
    model_cache_root,
    resolve_dtype,
    resolve_model,
    settings_key,
)
from lens_ray.data.ingest import load_datasets
from lens_ray.pipelines import report as reporting
from lens_ray.pipelines import report_html
from lens_ray.pipelines.selection import layers_of, select_stage, versus_fixed
from lens_ray.pipelines.tracking import log_mlflow, mlflow_uri, write_events
from lens_ray.store.artifacts import (
    read_pair_embeddings,
    read_synthetic,
    reuse_model,
    save_model,
    write_pair_embeddings,
    write_synthetic,
)
from lens_ray.store.embedding_cache import EmbeddingCache
from lens_ray.store.search_results import read_trials
from lens_ray.store.storage import Manifest, Storage, differences


@dataclass
class FittedVAE:
    """A seed's VAE, or why there is none (a fit that diverged)."""
    vae: PreferenceVAE | None
    metrics: dict
    failure: str | None = None


@dataclass
class TrainedHead:
    """A cell's reward model, or why there is none."""
    cell: Cell
    head: torch.nn.Module | None
    metrics: dict
    failure: str | None = None


# ------------------------------------------------------------------ the job

def run(cfg: LensConfig, log: Log = print, ds: Datasets | None = None,
        guard: Callable[[], None] = lambda: None) -> dict:
    """Run every stage; returns the report (also written to <out>/report.json). `ds`: the data, if already
    ingested (the CLI does it before Ray starts, to fail fast); `guard`: raises to stop between stages."""
    cfg.validate()
    out = Storage(cfg.out_uri)
    t = Stages(guard=guard)
    log(f"lens-ray run '{cfg.run_name}' -> {out.uri}")
    log(f"  large files: the run's in {out.uri}; "
        + (f"embeddings cached in {Storage(cfg.cache_uri).uri} (runs on the same texts reuse them); "
           if cfg.embed.cache else "") + f"a GGUF model's converted copy in {model_cache_root()}")
    with t.stage("ingest", log):
        ds = ds or ingest(cfg, log)
    layers = layers_of(cfg, log)
    with t.stage("embed", log):
        emb = embed_stage(cfg, ds, out, log, also_cache=candidate_extras(cfg.embed.layer, layers))
    splits = seed_splits(ds.seed_pairs, cfg.data.val_fraction, cfg.seeds, cfg.data.split_seed)
    seeds = [SeedData.of(s, emb, ds.seed_pairs) for s in splits]
    keys = StageKeys(cfg, splits, emb.dim)
    cells = plan_cells(cfg)
    vaes: dict[int, FittedVAE] = {}
    if any(needs_vae(j.method) for j in cells):
        with t.stage("fit_vae", log):
            vaes = fit_vae_stage(cfg, seeds, keys, out, log)
    failures: dict[Cell, str] = {}
    if any(j.augments for j in cells):
        with t.stage("synthesize", log):
            failures = synthesize_stage(cfg, [j for j in cells if j.augments], seeds, vaes, keys, out, log)
    with t.stage("train_reward", log):
        heads = train_stage(cfg, cells, seeds, keys, failures, out, log)
    with t.stage("evaluate", log):
        results = evaluate_stage(heads, emb)
    selected = None
    if layers:
        def embedded_at(layer: tuple[int, ...]) -> Embedded:
            if layer == tuple(cfg.embed.layer):
                return emb
            folder = f"embeddings-layer{','.join(map(str, layer))}"
            stale_layer_tables(out, folder, embedding_settings(cfg, layer), log)
            # a layer missing from the cache brings every candidate in the same pass
            return embed_stage(cfg, ds, out, log, layer, candidate_extras(layer, layers), folder)
        with t.stage("select", log):
            selected = select_stage(cfg, ds, layers, embedded_at, splits, keys.base, out, log)
            selected.versus = versus_fixed(selected, results)
    report = build_report(cfg, ds, emb, results, vaes, t.seconds, selected)
    write_report(cfg, out, report, seeds, keys, log)
    return report


def ingest(cfg: LensConfig, log: Log) -> Datasets:
    ds = load_datasets(cfg.data)
    log(f"  {len(ds.seed_pairs)} seed pairs, {len(ds.eval_pairs)} eval pairs, {len(ds.bon_prompts)} BoN prompts;"
        f" quarantined {sum(ds.quarantine.counts.values())}")
    return ds


@dataclass
class StageKeys:
    """Fingerprints of what each stored result is made from (never the cluster's shape)."""
    cfg: LensConfig
    splits: list[Split]
    dim: int

    @functools.cached_property
    def base(self) -> str:
        e = self.cfg.embed
        return fingerprint(resolve_model(e.model).model_id, e.pooling, e.max_length, e.dtype, self.cfg.data,
                           [s.train.tolist() for s in self.splits], self.dim)

    def vae(self, seed: int) -> str:
        return fingerprint(self.base, self.cfg.vae, seed)

    def synthetic(self, cell: Cell) -> str:
        made_from = self.vae(cell.seed) if needs_vae(cell.method) else None
        return fingerprint(self.base, self.cfg.synth, cell.synthetic_name, made_from)

    def head(self, cell: Cell) -> str:
        made_from = self.synthetic(cell) if cell.augments else None
        return fingerprint(self.base, self.cfg.reward if cell.trained else None, cell.name, made_from)


# ------------------------------------------------------------------ embedding

def embedding_settings(cfg: LensConfig, layer: tuple[int, ...] | None = None) -> dict:
    """What an embedding depends on (its cache address): model, pooling, max length, storage and compute dtype,
    and its layer(s) (None: the run's, embed.layer)."""
    from lens_ray.distributed.embedding import gpus_per_actor

    e = cfg.embed
    dtype = resolve_dtype(e.dtype, "cuda" if gpus_per_actor(cfg.resources.embed_gpus_per_actor) else "cpu")
    settings = {"model": resolve_model(e.model).model_id, "pooling": e.pooling, "max_length": e.max_length,
                "storage_dtype": e.storage_dtype}
    if dtype != "float32":       # fp32 runs keep the settings (and cache) they always had
        settings["dtype"] = dtype
    return layer_settings(settings, e.layer if layer is None else layer, e.layer_combine)


def stale_layer_tables(out: Storage, folder: str, settings: dict, log: Log) -> None:
    """A candidate layer's tables are the run's copy of cached vectors: made under other settings (an older
    lens-ray read inner layers raw) they are removed, said, and made again, where the run's own `embeddings`
    refuses other settings outright."""
    if not out.exists(f"{folder}/{Manifest.NAME}"):
        return
    stored = Manifest.load(out.child(folder)).meta
    if json.loads(json.dumps(stored)) != json.loads(json.dumps(settings)):
        log(f"  {folder}: made with other settings ({differences(stored, settings)}): made again")
        out.delete(folder)


def candidate_extras(layer: tuple[int, ...], candidates: list[tuple[int, ...]]) -> tuple[int, ...]:
    """The selection's candidate layers an embed pass of `layer` also caches (from the same forward pass)."""
    return tuple(dict.fromkeys(x for c in candidates for x in c if x not in layer))


def embed_stage(cfg: LensConfig, ds: Datasets, out: Storage, log: Log, layer: tuple[int, ...] | None = None,
                also_cache: tuple[int, ...] = (), folder: str = "embeddings") -> Embedded:
    """Every table's rows as content keys; a stored table is reused only when its keys match exactly, the
    rest comes from the cache or is embedded. `layer`: the tables' layer(s) (None: embed.layer); `also_cache`:
    more layers cached from the same forward pass (with embed.cache_layers); `folder`: where the run keeps them."""
    layer = tuple(cfg.embed.layer if layer is None else layer)
    settings = embedding_settings(cfg, layer)
    run_manifest = Manifest.open(out.child(folder), settings)   # refuses other settings, clearly
    draws, bon_gold = bon_draws(cfg, ds)
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
    needed = sorted({k for name, keys in wanted.items() if name not in done for k in keys})
    if needed:
        parts = ", ".join(f"{len(set(keys)):,} from the {name} {'completions' if name == 'bon' else 'pairs'}"
                          for name, keys in wanted.items() if name not in done)
        cap = "" if cfg.data.eval_pairs or cfg.data.eval_data else \
            " (eval pairs default to all the data the seed pairs do not use: data.eval_pairs caps them)"
        log(f"  texts to read: {parts}{cap}")
    vectors, stats = embed_texts(cfg, settings, needed, texts, log, layer, also_cache)
    for name, keys in wanted.items():
        if name not in done:
            flat = np.stack([vectors[k] for k in keys])
            pos, neg = (flat, None) if name == "bon" else (flat[0::2], flat[1::2])
            write_pair_embeddings(run_manifest, name, pos, neg, cfg.embed.storage_dtype, {"keys": digests[name]})
            done[name] = (pos, neg)
    bon = done["bon"][0].reshape(len(draws), cfg.data.bon_n, -1) if draws else None
    return Embedded(*done["seed"], *done["eval"], bon, bon_gold, stats)


def embed_texts(cfg: LensConfig, settings: dict, needed: list[str], texts: dict[str, tuple], log: Log,
                layer: tuple[int, ...], also_cache: tuple[int, ...]) -> tuple[dict[str, np.ndarray], dict]:
    """Content keys -> vectors of `layer`: from the cache where it has them, else embedded with Ray Data (and
    cached, with the layers of also_cache and embed.cache_layers from the same pass)."""
    from lens_ray.distributed.embedding import EmbedItem, embed_items

    stats = {"texts": len(needed), "cached": 0, "embedded": 0, "truncated": 0, "response_truncated": 0,
             "tokens": 0, "shared_tokens": 0, "tokens_per_s": None, "actor_load_s": 0.0, "actor_forward_s": 0.0}
    if not needed:
        return {}, stats
    root = Storage(cfg.cache_uri).child("embeddings")
    cache = EmbeddingCache(root, settings) if cfg.embed.cache else None
    vectors = cache.lookup(needed) if cache else {}
    stats["cached"] = len(vectors)
    todo = [EmbedItem(k, *texts[k]) for k in needed if k not in vectors]
    log(f"  {len(needed)} distinct texts: {len(vectors)} cached, {len(todo)} to embed with {cfg.embed.model}")
    if todo:
        e = cfg.embed
        layers = tuple(dict.fromkeys(layer + e.cache_layers + also_cache))   # the table's layers first, then extra
        primary = [layers.index(x) for x in layer]
        per_layer = {j: layer_settings(settings, (x,), e.layer_combine) for j, x in enumerate(layers)}
        per_layer = {j: EmbeddingCache(root, s) for j, s in per_layer.items() if s != settings and e.cache}

        def on_chunk(keys: list[str], vecs: np.ndarray) -> None:    # committed as batches arrive: a killed
            if cache:                                                # run keeps what it embedded
                cache.add(keys, combine_layers(vecs[:, primary], e.layer_combine))
            for j, layer_cache in per_layer.items():
                layer_cache.add([settings_key(layer_cache.settings, *texts[k]) for k in keys], vecs[:, j])
        fresh, st = embed_items(todo, e, cfg.resources, log, on_chunk=on_chunk, layers=layers)
        vectors.update({k: combine_layers(v[primary], e.layer_combine) for k, v in fresh.items()})
        stats.update(embedded=st.rows, truncated=st.truncated, response_truncated=st.response_truncated,
                     tokens=st.tokens, shared_tokens=st.shared_tokens,
                     tokens_per_s=round(st.tokens / max(st.seconds, 1e-9), 1),
                     actor_load_s=round(st.load_s, 1), actor_forward_s=round(st.forward_s, 1))
        log(f"  actors' time, summed: model load {st.load_s:.0f} s, forward passes {st.forward_s:.0f} s "
            f"(stage wall {st.seconds:.0f} s)")
        if st.shared_tokens:
            log(f"  {st.shared_tokens} of {st.tokens} tokens were a prompt read once for several of its responses")
        if st.truncated:
            log(f"  {st.truncated} texts were longer than {cfg.embed.max_length} tokens and lost prompt tokens "
                f"from the left ({st.response_truncated} of them lost response tokens too)")
    bad = [k for k in needed if not np.isfinite(vectors[k]).all()]
    if bad:
        raise FloatingPointError(f"{len(bad)} embeddings hold non-finite values (first: {texts[bad[0]][1][:60]!r}); "
                                 f"the model {cfg.embed.model} overflows in dtype {settings.get('dtype', 'float32')}"
                                 " - try --set embed.dtype=float32")
    return vectors, stats


# ------------------------------------------------------------------ VAE, synthesis, heads

def fit_vae_stage(cfg: LensConfig, seeds: list[SeedData], keys: StageKeys, out: Storage,
                  log: Log) -> dict[int, FittedVAE]:
    """One VAE per seed: reused from <out>/vae when made from the same inputs, else fitted with Ray Train."""
    from lens_ray.distributed.training import train_vaes

    store, fitted = out.child("vae"), {}
    for sd in seeds:
        stored = reuse_model(store, f"seed-{sd.seed}", keys.vae(sd.seed), PreferenceVAE.from_config)
        if stored:
            fitted[sd.seed] = FittedVAE(stored[0], stored[1]["metrics"])
    todo = [sd for sd in seeds if sd.seed not in fitted]
    log(f"  {len(fitted)} VAEs reused, {len(todo)} to fit")
    if todo:
        states, meta = train_vaes(cfg.vae, todo, f"vae-{fingerprint([keys.vae(sd.seed) for sd in todo])}",
                                out.child("ray_train"), cfg.resources)
        for sd in todo:
            m = meta[f"seed-{sd.seed}"]
            if m.get("failed"):
                fitted[sd.seed] = FittedVAE(None, {}, m["failed"])
                log(f"  {m['failed']}: its LENS rows are marked failed")
                continue
            vae = PreferenceVAE.from_config(m["config"])
            vae.load_state_dict(states[f"seed-{sd.seed}"])
            fitted[sd.seed] = FittedVAE(vae.eval(), m["metrics"])
            save_model(store, f"seed-{sd.seed}", vae.state_dict(), vae.config(),
                       {"fingerprint": keys.vae(sd.seed), "metrics": m["metrics"]})
    for seed, f in sorted(fitted.items()):
        if f.vae is not None:
            log(f"  VAE seed {seed}: relative recon error train {f.metrics['rel_recon_train']:.3f}, "
                f"val {f.metrics['rel_recon_val']:.3f}, mean W2 {f.metrics['w2']:.2f}")
    return fitted


def synthesize_stage(cfg: LensConfig, cells: list[Cell], seeds: list[SeedData], vaes: dict[int, FittedVAE],
                     keys: StageKeys, out: Storage, log: Log) -> dict[Cell, str]:
    """Every augmenting cell's synthetic set in one Ray Data pass, stored under <out>/synthetic (reused when
    made from the same inputs). Returns the cells that failed, with the reason (no VAE, non-finite values)."""
    from lens_ray.distributed.synthesis import synthesize_sets

    failures = {j: vaes[j.seed].failure for j in cells if needs_vae(j.method) and vaes[j.seed].failure}
    sets = list({j.synthetic_name: j for j in cells if j not in failures}.values())     # one per set, any head
    todo = [j for j in sets if read_synthetic(out, j.synthetic_name, keys.synthetic(j)) is None]
    log(f"  {len(sets) - len(todo)} synthetic sets reused, {len(todo)} to synthesize")
    if not todo:
        return failures
    by_seed = {sd.seed: sd for sd in seeds}
    augmenters = {j: Augmenter.fit(j.method, j.seed, cfg.synth, torch.from_numpy(by_seed[j.seed].train_pos),
                                   torch.from_numpy(by_seed[j.seed].train_neg),
                                   vaes[j.seed].vae if needs_vae(j.method) else None) for j in todo}
    train = {sd.seed: (sd.train_pos, sd.train_neg) for sd in seeds}
    for cell, (sp, sn) in synthesize_sets(augmenters, train, cfg.resources, log).items():
        if not (np.isfinite(sp).all() and np.isfinite(sn).all()):
            why = f"synthesis of {cell.synthetic_name} gave non-finite embeddings"
            failures.update({j: why for j in cells if j.synthetic_name == cell.synthetic_name})
            log(f"  {why}: its rows are marked failed")
            continue
        write_synthetic(out, cell.synthetic_name, sp, sn, keys.synthetic(cell))
    return failures


def train_stage(cfg: LensConfig, cells: list[Cell], seeds: list[SeedData], keys: StageKeys,
                failures: dict[Cell, str], out: Storage, log: Log) -> list[TrainedHead]:
    """Every cell's head: reused from <out>/heads when made from the same inputs, mean_diff in closed form,
    linear heads as Ray tasks, MLP heads in one Ray Train (DDP) run. Every head is stored as it is known."""
    from lens_ray.distributed.training import train_linear_heads, train_mlp_heads

    store, heads = out.child("heads"), {j: TrainedHead(j, None, {}, why) for j, why in failures.items()}
    by_seed = {sd.seed: sd for sd in seeds}
    for cell in (j for j in cells if j not in heads):
        stored = reuse_model(store, cell.name, keys.head(cell), build_head)
        if stored:
            heads[cell] = TrainedHead(cell, stored[0], stored[1]["metrics"])
        elif not cell.trained:
            sd = by_seed[cell.seed]
            head = mean_diff_head(torch.from_numpy(sd.train_pos), torch.from_numpy(sd.train_neg))
            heads[cell] = _store(store, keys, TrainedHead(cell, head, {}), sd)
    todo = [j for j in cells if j not in heads]
    log(f"  {len(cells) - len(todo) - len(failures)} heads reused or closed-form, {len(todo)} to train")

    def done(cell: Cell, state: dict, meta: dict) -> None:
        if meta.get("failed"):
            heads[cell] = TrainedHead(cell, None, meta["metrics"], f"head {cell.name}: {meta['failed']}")
            log(f"  {heads[cell].failure}: its row is marked failed")
            return
        head = build_head(meta["config"])
        head.load_state_dict(state)
        heads[cell] = _store(store, keys, TrainedHead(cell, head.eval(), meta["metrics"]), by_seed[cell.seed])

    def seeds_of(js: list[Cell]) -> list[SeedData]:
        return [by_seed[s] for s in sorted({j.seed for j in js})]
    linear, mlp = [j for j in todo if j.head == "linear"], [j for j in todo if j.head != "linear"]
    if linear:
        finished = iter(range(1, len(linear) + 1))

        def linear_done(cell: Cell, state: dict, meta: dict) -> None:
            done(cell, state, meta)
            if not meta.get("failed"):
                log(f"  head {cell.name}: validation accuracy {meta['metrics']['val_acc']:.3f} "
                    f"({next(finished)}/{len(linear)} linear)")
        train_linear_heads(cfg.reward, linear, seeds_of(linear), out.uri, cfg.resources, on_done=linear_done)
    if mlp:                                        # each MLP head's line comes from the trainer as it finishes
        states, meta = train_mlp_heads(cfg.reward, mlp, seeds_of(mlp), out.uri,
                                       f"heads-{fingerprint([keys.head(j) for j in mlp])}", out.child("ray_train"),
                                       cfg.resources)
        for cell in mlp:
            done(cell, states[cell.name], meta[cell.name])
    return [heads[j] for j in cells]


def _store(store: Storage, keys: StageKeys, th: TrainedHead, sd: SeedData) -> TrainedHead:
    """Save a head with what made it and the mean and std of its rewards on its seed's real training
    responses (what a server's --normalize standardizes with)."""
    r = rewards(th.head, torch.from_numpy(np.concatenate([sd.train_pos, sd.train_neg])))
    save_model(store, th.cell.name, th.head.state_dict(), th.head.config(),
               {"fingerprint": keys.head(th.cell), "metrics": th.metrics, "reward_norm": reward_scale(r),
                "inner": INNER})
    return th


# ------------------------------------------------------------------ evaluation and report

def evaluate_stage(heads: list[TrainedHead], emb: Embedded) -> list[Result]:
    """One result per cell: accuracy on the eval pairs and Best-of-N gold; a failed cell's carries its reason
    and no metric."""
    out = []
    for th in sorted(heads, key=lambda h: h.cell.name):
        j = th.cell
        row = Result(j.method, j.factor, j.seed, j.head)
        if th.failure:
            out.append(replace(row, status="failed", reason=th.failure))
            continue
        out.append(replace(row, **head_metrics(th.head, emb), val_accuracy=th.metrics.get("val_acc"),
                           head=f"heads/{j.name}"))
    return out


def baselines(ds: Datasets) -> dict[str, float]:
    """What is trivial on the held-out pairs, for an accuracy to be read against: chance, and a length-only
    scorer either way (ties count half both ways, so the two sum to 1)."""
    longer = longer_response_accuracy([p.chosen for p in ds.eval_pairs], [p.rejected for p in ds.eval_pairs])
    return {"chance": 0.5, "longer_response": longer, "shorter_response": 1.0 - longer}


def build_report(cfg: LensConfig, ds: Datasets, emb: Embedded, results: list[Result], vaes: dict[int, FittedVAE],
                 timings: dict[str, float], selected: Selection | None = None) -> dict:
    report = {
        "name": cfg.run_name, "model": cfg.embed.model, "model_id": resolve_model(cfg.embed.model).model_id,
        "embedding_dim": emb.dim, "seed_pairs": len(ds.seed_pairs), "eval_pairs": len(ds.eval_pairs),
        "bon_prompts": len(ds.bon_prompts), "bon_n": cfg.data.bon_n if ds.bon_prompts else None,
        "selected": selected.record() if selected else None,
        "results": [r.row() for r in results],
        "bon_random": bon_random(emb.bon_gold) if emb.bon_gold is not None else None,
        "bon_oracle": bon_oracle(emb.bon_gold) if emb.bon_gold is not None else None,
        "baselines": baselines(ds),
        "timings_s": timings,
        "quarantined": dict(ds.quarantine.counts),
        "data": {"seed_pairs": len(ds.seed_pairs), "seed_prompts": ds.notes["seed_prompts"],
                 "eval_pairs": len(ds.eval_pairs), "eval_prompts": ds.notes["eval_prompts"],
                 "duplicate_pairs": ds.notes["duplicate_pairs"], "duplicates": cfg.data.duplicates},
        "data_notes": ds.notes,
        "embedding": emb.stats,
        "vae": {f"seed-{s}": v.metrics for s, v in sorted(vaes.items()) if v.vae is not None},
        "config": cfg.to_dict(),
    }
    report["summary"] = [s.row() for s in reporting.summarize(results)]
    return report


def write_report(cfg: LensConfig, out: Storage, report: dict, seeds: list[SeedData], keys: StageKeys,
                 log: Log) -> None:
    """report.json / .md, then report.html with the projection of the largest LENS set of seed 0."""
    reporting.write(out, report)
    proj = None
    lens = [j for j in plan_cells(cfg) if j.method == "lens" and j.seed == 0]
    syn = read_synthetic(out, max(lens, key=lambda j: j.factor).synthetic_name) if lens else None
    if syn is not None:
        proj = report_html.projection(seeds[0].train_pos, seeds[0].train_neg, *syn)
    trials = read_trials(Storage(cfg.from_search)) if cfg.from_search else None
    out.write_bytes("report.html", report_html.render(report, proj, trials, out.uri).encode())
    write_events(report, out)
    if uri := mlflow_uri(cfg.tracking.mlflow_uri):
        run_id = log_mlflow(report, out, uri, cfg.tracking.mlflow_experiment)
        log(f"MLflow: run {run_id} in experiment '{cfg.tracking.mlflow_experiment}' at {uri}")
    log(reporting.table(report))
    made = [f"{d}/" for d in ("heads", "embeddings", "vae", "synthetic", "ray_train", "tensorboard") if out.isdir(d)]
    log(f"artifacts: {out.uri}  ({', '.join(['report.html', 'report.json', 'report.md'] + made)})")
