"""What a job can check before Ray starts, in seconds: the settings (config validation), the data (read
and parsed in full: ingest is cheap), the model (resolvable offline), the output and cache locations
(writable; on S3 this finds a missing bucket or missing credentials). Each failure is a user error whose
message names the file, row, field, model or location. No Ray.
"""
from __future__ import annotations

import os
import uuid

from lens_ray.config import ConfigError, LensConfig
from lens_ray.core.augment import needs_vae
from lens_ray.core.pairs import Datasets
from lens_ray.core.records import plan_cells
from lens_ray.data.embed import ModelLoadError, model_depth, model_positions, reads_inner, resolve_model
from lens_ray.data.hub import hub_unreachable
from lens_ray.data.ingest import load_datasets
from lens_ray.pipelines.selection import seed_gold
from lens_ray.pipelines.tracking import check_mlflow
from lens_ray.store.storage import Storage, StorageError


def check_model(spec: str) -> None:
    """The model loads from what is on this machine (or, when the hub is reachable, from the hub)."""
    src = resolve_model(spec)                      # a missing package or path raises here
    if src.gguf_file:
        with open(os.path.join(src.folder, src.gguf_file), "rb") as fh:
            if fh.read(4) != b"GGUF":
                raise ModelLoadError(f"model {spec!r}: {src.gguf_file} is not a GGUF file")
        return
    if os.path.isdir(src.folder):
        if not os.path.exists(os.path.join(src.folder, "config.json")):
            raise ModelLoadError(f"model {spec!r}: folder {src.folder} has no config.json (not a transformers model)")
        return
    from huggingface_hub import try_to_load_from_cache
    if isinstance(try_to_load_from_cache(spec, "config.json"), str):
        return
    aliases = "smollm2, minilm"
    if why := hub_unreachable():
        offline = "is offline (HF_HUB_OFFLINE)" if "HF_HUB_OFFLINE" in why else f"is not reachable ({why})"
        raise ModelLoadError(f"model {spec!r} is not an alias ({aliases}), a local folder or a .gguf file, and the "
                             f"hub {offline} with no cached copy")
    from huggingface_hub import hf_hub_download
    try:
        hf_hub_download(spec, "config.json", etag_timeout=10)
    except Exception as exc:                       # any hub failure: one line, not five retries' tracebacks
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise ModelLoadError(f"model {spec!r} is not an alias ({aliases}), a local folder or a .gguf file, and the "
                             f"hub does not serve it ({first})") from exc


def check_writable(store: Storage) -> None:
    """Local: the folder, or the nearest folder above it that exists, is a writable folder (nothing is created
    before the checks pass). S3: write and delete a probe object (finds a missing bucket or credentials)."""
    if store.local:
        at = os.path.abspath(store.path())
        while not os.path.exists(at):
            at = os.path.dirname(at)
        if not os.path.isdir(at) or not os.access(at, os.W_OK | os.X_OK):
            why = "a file, not a folder" if not os.path.isdir(at) else "not writable"
            raise StorageError(f"cannot write to {store.uri} ({at}: {why})")
        return
    probe = f".write-probe-{uuid.uuid4().hex[:8]}"
    try:
        store.write_bytes(probe, b"")
        store.delete(probe)
    except (OSError, StorageError) as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        hint = "; does the bucket exist, and are AWS credentials set?" if not store.local else ""
        raise StorageError(f"cannot write to {store.uri} ({first}){hint}") from exc


def check_layers(cfg: LensConfig, ds: Datasets) -> None:
    """The text length and every layer asked for fit the model (read from its config alone), the selection's
    folds have prompts enough, and its objective has what it ranks by."""
    e, sel = cfg.embed, cfg.selection
    positions = model_positions(e.model)
    if positions is not None and e.max_length > positions:
        raise ConfigError(f"embed.max_length: {e.max_length} tokens, but {e.model} reads at most {positions}")
    asked = [("embed.layer", e.layer), ("embed.cache_layers", e.cache_layers)]
    if sel.enabled:
        asked.append(("selection.layers", sel.layers))
    if any(layers and reads_inner(layers) for _, layers in asked):
        depth = model_depth(e.model)
        for name, layers in asked:
            for layer in layers:
                if layer < -(depth + 1):
                    raise ConfigError(f"{name}: layer {layer}, but {e.model} has {depth} blocks (layers -1 to "
                                      f"{-(depth + 1)})")
    prompts = len({p.group for p in ds.seed_pairs})
    if sel.enabled and prompts < sel.folds:
        raise ConfigError(f"selection.folds: {sel.folds} folds of whole prompts, but the seed pairs have only "
                          f"{prompts} prompts")
    if sel.enabled and sel.objective == "bon_gold":
        seed_gold(ds)       # raises if the seed pairs carry no gold


MAX_HEADS = 2000          # heads one run may plan (methods x factors x heads x seeds): past it, a typo, not a study


def check_plan(cfg: LensConfig, log=print) -> None:
    """The plan's size, said before Ray starts, and refused when it is far past any study's."""
    cells = plan_cells(cfg)
    sets = len({c.synthetic_name for c in cells if c.factor > 1})
    vaes = cfg.seeds if any(needs_vae(m) for m in cfg.methods) else 0
    if len(cells) > MAX_HEADS:
        raise ConfigError(f"the plan has {len(cells):,} heads to fit ({len(cfg.methods)} methods x factors "
                          f"{list(cfg.factors)} x heads {list(cfg.reward.heads)} x {cfg.seeds} seeds); at most "
                          f"{MAX_HEADS:,} in one run")
    folds = f", then a {cfg.selection.folds}-fold selection" if cfg.selection.enabled else ""
    log(f"plan: {len(cells)} heads, {sets} synthetic sets, {vaes} VAEs over {cfg.seeds} seeds{folds}")


def preflight(cfg: LensConfig, log=print) -> Datasets:
    """Every check of the main job; returns the ingested data (the pipeline then does not read it again)."""
    cfg.validate()
    check_plan(cfg, log)
    check_model(cfg.embed.model)
    check_mlflow(cfg.tracking.mlflow_uri)
    check_writable(Storage(cfg.out_uri))
    if cfg.embed.cache:
        check_writable(Storage(cfg.cache_uri))
    ds = load_datasets(cfg.data)
    check_layers(cfg, ds)
    log(f"checked: settings, model {cfg.embed.model}, output {Storage(cfg.out_uri).uri}, data "
        f"({len(ds.seed_pairs)} seed pairs, {len(ds.eval_pairs)} eval pairs, {len(ds.bon_prompts)} BoN prompts, "
        f"{sum(ds.quarantine.counts.values())} quarantined)")
    return ds
