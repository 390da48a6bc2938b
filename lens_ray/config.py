"""Typed configuration: one `LensConfig` flows from YAML / CLI down to every stage.

Every option the paper leaves **open** (see LENS.md) is a field here, with the default LENS.md names.
`load_config(yaml_path, overrides)` builds it; `LensConfig.to_dict()` is what reports record.
"""
from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass, field
from typing import Any

import yaml


class ConfigError(ValueError):
    """A configuration value that cannot work; the message names the field."""


@dataclass
class DataConfig:
    data: str = "../shared/data/hh_harmless_dev.jsonl.gz"
    eval_data: str | None = None        # preference pairs for accuracy; None: held out from `data`
    bon_data: str | None = None         # scored completions for Best-of-N; None: `data` itself when it is
                                        # scored completions (prompts split), else no BoN
    seed_pairs: int = 1000              # pairs the method may learn from (picked with split_seed)
    eval_pairs: int | None = None       # cap on held-out eval pairs; None: all that remain
    val_fraction: float = 0.15          # of the seed pairs, for early stopping (never eval data)
    split_seed: int = 0
    on_bad_row: str = "quarantine"      # "quarantine" (count and skip) or "error" (raise)
    gold_margin: float = 0.1            # scored completions -> pair when gold(chosen)-gold(rejected) >= margin
    pairs_per_prompt: int = 5           # at most this many pairs drawn per scored prompt
    bon_n: int = 16
    bon_prompt_fraction: float = 0.5    # when data == bon_data: share of prompts kept for BoN
    bon_prompts: int | None = None      # cap on BoN prompts (cost control)


@dataclass
class EmbedConfig:
    model: str = "smollm2"              # alias (smollm2, minilm), local folder, hub id, or path to .gguf
    pooling: str = "auto"               # auto: last token for causal LMs, mean for encoders; or last|mean
    max_length: int = 256               # tokens; longer inputs lose prompt tokens from the left
    batch_size: int = 16
    dtype: str = "auto"                 # auto: bf16 on GPUs and CPUs with native bf16 (AVX512-BF16/AMX), else fp32
    storage_dtype: str = "float32"      # float32 | float16 for the parquet shards
    num_actors: int = 1
    cpus_per_actor: float = 0.5         # fractional, so Ray Data read tasks are never starved
    gpus_per_actor: float | None = None  # None: 1 when the cluster has GPUs, else 0
    torch_threads: int = 0              # 0: cores / actors
    padding_side: str = "right"         # must not change the vector; a test proves it
    cache: bool = True                  # content-addressed cache under <storage>/cache


@dataclass
class VAEConfig:
    latent_dim: int = 16
    hidden_dims: tuple[int, ...] = (64,)  # paper: ~0.5M params at d=4096 -> one hidden layer of ~64
    beta: float = 1.0
    gamma: float = 0.1                  # weight of the divergence term
    recon: str = "mse"                  # mse | cosine
    recon_reduction: str = "sum"        # sum over dims keeps beta=1 the ELBO and z on the prior's scale
    div_bound: str = "clamp"            # clamp: -min(W2, div_max); margin: relu(div_max - W2)
    div_max: float = 5.0
    lr: float = 1e-3
    weight_decay: float = 0.0
    epochs: int = 150
    batch_pairs: int = 128
    num_workers: int = 2
    cpus_per_worker: float = 1.0


@dataclass
class SynthConfig:
    noise_var: float = 0.01             # a variance: eta ~ N(0, noise_var * I) in latent space
    encode: str = "mean"                # mean | sample: which z the noise is added to
    select: str = "prior"               # prior | posterior: density used for top-k
    oversample: int = 4                 # draws per kept sample before top-k
    residual: bool = False              # e + (g(z+eta) - g(z)) instead of g(z+eta)
    dp_noise_var: float = 0.01          # direct perturbation, per standardized embedding dim
    gs_covariance: str = "full"         # gaussian_sampling: full (shrunk) | diag
    gs_shrinkage: float = 0.1
    batch_size: int = 256               # pairs per Ray Data batch
    num_actors: int = 1
    cpus_per_actor: float = 0.5


@dataclass
class RewardConfig:
    hidden_dim: int = 256
    depth: int = 1
    dropout: float = 0.1
    weight_decay: float = 0.01
    lr: float = 1e-3
    max_steps: int = 600                # the same budget for every method
    batch_size: int = 64
    eval_every: int = 25
    patience: int = 6                   # evaluations without improvement before stopping
    synthetic_weight: float = 1.0       # weight of a synthetic pair in the BT loss (originals: 1)
    num_workers: int = 2
    cpus_per_worker: float = 1.0


@dataclass
class TuneConfig:
    """The Ray Tune search (`jobs/tune.py`): what it spans, how it measures, what it may spend."""
    name: str | None = None             # None: <run name>-tune; a re-run with the same name resumes
    num_samples: int = 24               # trials
    max_concurrent: int = 2             # trials at once
    cpus_per_trial: float = 1.0
    folds: int = 4                      # k-fold over the seed pairs (whole prompts per fold)
    repeats: int = 2                    # seeds per fold: each trial fits folds * repeats paired heads
    grace_period: int | None = None     # units a trial runs before ASHA may stop it; None: one pass over the folds
    reduction_factor: float = 2.0       # ASHA: keep the top 1/reduction_factor at each rung
    methods: tuple[str, ...] = ("lens", "direct_perturbation", "gaussian_sampling")
    factors: tuple[int, ...] = (2, 4, 8)
    open_choices: bool = True           # also span the choices the paper leaves open (VAE shape, residual, ...)
    searcher_seed: int = 0
    test_seeds: int = 5                 # seeds for the chosen configuration's test accuracy


METHODS = ("original", "mean_diff", "direct_perturbation", "gaussian_sampling", "lens")


@dataclass
class LensConfig:
    name: str = "lens-hh"
    storage: str = "runs"               # root for artifacts: path, file:// or s3://bucket/prefix
    out: str | None = None              # None: <storage>/<name>
    cache: str | None = None            # None: <storage>/cache
    methods: tuple[str, ...] = METHODS
    factors: tuple[int, ...] = (4, 8)
    seeds: int = 5
    ray_address: str | None = None      # None: RAY_ADDRESS (set by `ray job submit`), else a local Ray
    from_tune: str | None = None        # a search's output URI whose chosen settings this run uses
    data: DataConfig = field(default_factory=DataConfig)
    embed: EmbedConfig = field(default_factory=EmbedConfig)
    vae: VAEConfig = field(default_factory=VAEConfig)
    synth: SynthConfig = field(default_factory=SynthConfig)
    reward: RewardConfig = field(default_factory=RewardConfig)
    tune: TuneConfig = field(default_factory=TuneConfig)

    @property
    def out_uri(self) -> str:
        return self.out or join_uri(self.storage, self.name)

    @property
    def cache_uri(self) -> str:
        return self.cache or join_uri(self.storage, "cache")

    def validate(self) -> "LensConfig":
        bad = [m for m in self.methods if m not in METHODS]
        if bad:
            raise ConfigError(f"methods: unknown {bad}; choose from {list(METHODS)}")
        if any(f < 1 for f in self.factors):
            raise ConfigError(f"factors: each must be >= 1, got {list(self.factors)}")
        if self.seeds < 1:
            raise ConfigError(f"seeds: must be >= 1, got {self.seeds}")
        if self.data.on_bad_row not in ("quarantine", "error"):
            raise ConfigError(f"data.on_bad_row: quarantine or error, got {self.data.on_bad_row!r}")
        if not 0 < self.data.val_fraction < 1:
            raise ConfigError(f"data.val_fraction: must lie in (0, 1), got {self.data.val_fraction}")
        if self.data.seed_pairs < 10:
            raise ConfigError(f"data.seed_pairs: need at least 10, got {self.data.seed_pairs}")
        if self.embed.pooling not in ("auto", "last", "mean"):
            raise ConfigError(f"embed.pooling: auto|last|mean, got {self.embed.pooling!r}")
        if self.embed.padding_side not in ("left", "right"):
            raise ConfigError(f"embed.padding_side: left|right, got {self.embed.padding_side!r}")
        if self.embed.storage_dtype not in ("float32", "float16"):
            raise ConfigError(f"embed.storage_dtype: float32|float16, got {self.embed.storage_dtype!r}")
        if self.vae.div_bound not in ("clamp", "margin"):
            raise ConfigError(f"vae.div_bound: clamp|margin, got {self.vae.div_bound!r}")
        if self.vae.recon not in ("mse", "cosine") or self.vae.recon_reduction not in ("sum", "mean"):
            raise ConfigError("vae.recon: mse|cosine and vae.recon_reduction: sum|mean")
        if self.synth.noise_var < 0:
            raise ConfigError(f"synth.noise_var: a variance, must be >= 0, got {self.synth.noise_var}")
        if self.synth.select not in ("prior", "posterior") or self.synth.encode not in ("mean", "sample"):
            raise ConfigError("synth.select: prior|posterior and synth.encode: mean|sample")
        if self.synth.gs_covariance not in ("full", "diag"):
            raise ConfigError(f"synth.gs_covariance: full|diag, got {self.synth.gs_covariance!r}")
        t = self.tune
        bad = [m for m in t.methods if m not in METHODS or m in ("original", "mean_diff")]
        if bad or not t.methods:
            raise ConfigError(f"tune.methods: augmenting methods only (lens, direct_perturbation, gaussian_sampling), "
                              f"got {list(t.methods)}")
        if t.folds < 2 or t.repeats < 1 or t.num_samples < 1 or t.max_concurrent < 1 or t.test_seeds < 1:
            raise ConfigError("tune: folds >= 2, repeats >= 1, num_samples >= 1, max_concurrent >= 1, test_seeds >= 1")
        if (t.grace_period is not None and t.grace_period < 1) or t.reduction_factor <= 1 or t.cpus_per_trial <= 0:
            raise ConfigError("tune: grace_period >= 1 (or unset), reduction_factor > 1, cpus_per_trial > 0")
        if any(f < 1 for f in t.factors) or not t.factors:
            raise ConfigError(f"tune.factors: each must be >= 1, got {list(t.factors)}")
        return self

    def to_dict(self) -> dict[str, Any]:
        return json.loads(json.dumps(dataclasses.asdict(self)))


def join_uri(base: str, *parts: str) -> str:
    return "/".join([base.rstrip("/")] + [p.strip("/") for p in parts])


def _coerce(tp: Any, value: Any, where: str) -> Any:
    """Cast a YAML/CLI value to the field's declared type (strings from the CLI included)."""
    tp = str(tp)
    if value is None:
        return None
    try:
        if tp.startswith("tuple"):
            items = value.split(",") if isinstance(value, str) else list(value)
            inner = int if "int" in tp else str
            return tuple(inner(str(v).strip()) for v in items if str(v).strip())
        if tp.startswith("bool"):
            if isinstance(value, str):
                if value.lower() not in ("true", "false", "1", "0", "yes", "no"):
                    raise ValueError(value)
                return value.lower() in ("true", "1", "yes")
            return bool(value)
        if tp.startswith("int"):
            return int(value)
        if tp.startswith("float"):
            return float(value)
        if tp.startswith("str") and isinstance(value, (int, float)):
            return str(value)
        return value
    except (TypeError, ValueError) as exc:
        raise ConfigError(f"{where}: cannot read {value!r} as {tp}") from exc


def _fill(obj: Any, values: dict[str, Any], where: str) -> None:
    known = {f.name: f for f in dataclasses.fields(obj)}
    for key, value in values.items():
        if key not in known:
            raise ConfigError(f"{where}{key}: unknown option; known: {sorted(known)}")
        current = getattr(obj, key)
        if dataclasses.is_dataclass(current):
            if not isinstance(value, dict):
                raise ConfigError(f"{where}{key}: expected a mapping")
            _fill(current, value, f"{where}{key}.")
        else:
            setattr(obj, key, _coerce(known[key].type, value, f"{where}{key}"))


def config_from_dict(values: dict[str, Any]) -> LensConfig:
    """A stored `LensConfig.to_dict()` (e.g. a report's) -> LensConfig; sections it lacks keep defaults."""
    cfg = LensConfig()
    _fill(cfg, values, "")
    return cfg.validate()


def apply_overrides(cfg: LensConfig, overrides: dict[str, Any] | None) -> LensConfig:
    """Dotted overrides (``{"vae.beta": 0.5}``; None values skipped) onto cfg, validated."""
    nested: dict[str, Any] = {}
    for dotted, value in (overrides or {}).items():
        if value is None:
            continue
        node = nested
        *heads, last = dotted.split(".")
        for h in heads:
            node = node.setdefault(h, {})
        node[last] = value
    _fill(cfg, nested, "")
    return cfg.validate()


def load_config(yaml_path: str | None = None, overrides: dict[str, Any] | None = None,
                base: LensConfig | None = None) -> LensConfig:
    """base (default: the defaults) <- YAML file <- overrides (dotted keys such as ``"vae.beta"``)."""
    cfg = base or LensConfig()
    if yaml_path:
        with open(yaml_path) as fh:
            loaded = yaml.safe_load(fh) or {}
        if not isinstance(loaded, dict):
            raise ConfigError(f"{yaml_path}: expected a mapping at the top level")
        _fill(cfg, loaded, "")
    return apply_overrides(cfg, overrides)
