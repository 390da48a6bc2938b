"""Typed configuration: one `LensConfig` flows from YAML / CLI down to every stage. No Ray.

Each setting is described once, on its field: `setting(default, help, choices=..., ge=...)`. The CLI flags
(`cli.py` says which command has a flag for which field), `--set section.field=value`, `lens-ray settings` and
validation all read that metadata; nothing else repeats a default or a help text. Every option the paper
leaves **open** (see LENS.md) is a field here, with the default LENS.md names.

What a job computes (`data`, `embed`, `vae`, `synth`, `reward`, `search`, ...) is apart from where it runs
(`resources`): fingerprints, cache keys and manifests never read `resources`, so the same job on a
bigger cluster reuses every finished stage.
"""
from __future__ import annotations

import dataclasses
import hashlib
import json
import math
import re
from dataclasses import dataclass, field
from typing import Any, Iterator

import yaml


class ConfigError(ValueError):
    """A configuration value that cannot work; the message names the field."""


AUGMENTING = ("direct_perturbation", "gaussian_sampling", "lens")   # core.augment.AUGMENTERS' names (checked equal)
METHODS = ("original", "mean_diff", *AUGMENTING)                   # the baselines, then every augmenting method
HEADS = ("mlp", "linear", "paper")
LOSSES = ("bradley_terry", "pointwise")          # what a trained head fits: pairs, or each response alone
PLAIN_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,127}")   # run, head and search names: no path parts


def setting(default: Any, help: str, *, choices: tuple | None = None, ge: float | None = None,
            gt: float | None = None, le: float | None = None, lt: float | None = None, nonempty: bool = False,
            plain_name: bool = False, pattern: str | None = None) -> Any:
    """A config field with its help, choices and bounds (checked on the value, or on each item of a tuple).
    Which command has a flag for it is `cli.FLAGS`'s business; every field is reachable with `--set`."""
    meta = {"help": help, "choices": choices, "ge": ge, "gt": gt, "le": le, "lt": lt, "nonempty": nonempty,
            "plain_name": plain_name, "pattern": pattern}
    return field(default=default, metadata=meta)


@dataclass
class DataConfig:
    data: str = setting("../shared/data/hh_harmless_dev.jsonl.gz",
                        "preference data URI: jsonl/json/parquet[.gz], a saved HF dataset folder, hf://owner/name")
    eval_data: str | None = setting(None, "preference pairs for accuracy; unset: held out from `data`")
    bon_data: str | None = setting(None, "scored completions for Best-of-N; unset: `data` itself when it is scored "
                                   "completions (its prompts are split), else no Best-of-N")
    seed_pairs: int = setting(1000, "pairs the method may learn from (picked with split_seed)", ge=10)
    eval_pairs: int | None = setting(None, "cap on held-out eval pairs; unset: all that remain", ge=1)
    val_fraction: float = setting(0.15, "share of the seed pairs held out for early stopping (never eval data)",
                                  gt=0, lt=1)
    split_seed: int = setting(0, "seed of every data split (seed/eval, validation, folds)", ge=0)
    on_bad_row: str = setting("quarantine", "a bad row is counted and skipped (quarantine) or stops the run (error)",
                              choices=("quarantine", "error"))
    duplicates: str = setting("quarantine", "exact duplicate pairs (same prompt, chosen, rejected): counted and "
                              "skipped (quarantine) or kept and counted (keep)", choices=("quarantine", "keep"))
    gold_margin: float = setting(0.1, "scored completions make a pair when gold(chosen) - gold(rejected) >= margin",
                                 ge=0)
    pairs_per_prompt: int = setting(5, "at most this many pairs drawn per scored prompt", ge=1)
    bon_n: int = setting(16, "responses per Best-of-N prompt", ge=2)
    bon_prompt_fraction: float = setting(0.5, "when data is scored completions: share of its prompts kept for "
                                         "Best-of-N", gt=0, lt=1)
    bon_prompts: int | None = setting(None, "cap on Best-of-N prompts (cost control)", ge=1)


@dataclass
class EmbedConfig:
    model: str = setting("smollm2", "embedding LM: smollm2, minilm, a local folder, a .gguf file or a hub id")
    pooling: str = setting("auto", "auto: last non-pad token for causal LMs, mean for encoders",
                           choices=("auto", "last", "mean"))
    max_length: int = setting(256, "tokens; longer inputs lose prompt tokens from the left (counted)", ge=8)
    dtype: str = setting("auto", "compute dtype; auto: bf16 on GPUs and on CPUs with native bf16 (AVX512-BF16/AMX)",
                         choices=("auto", "float32", "bfloat16", "float16"))
    storage_dtype: str = setting("float32", "dtype of the stored embedding shards", choices=("float32", "float16"))
    padding_side: str = setting("right", "padding side; must not change a vector (a test proves it)",
                                choices=("left", "right"))
    layer: tuple[int, ...] = setting((-1,), "hidden-state layer(s) embedded, negative from the end (-1: the last); "
                                     "several are combined by layer_combine", le=-1, ge=-256, nonempty=True)
    layer_combine: str = setting("concat", "how several layers make one embedding", choices=("concat", "mean"))
    cache_layers: tuple[int, ...] = setting((), "more layers taken from the same forward pass into the cache, so "
                                            "a later run or search over them embeds nothing", le=-1, ge=-256)
    cache: bool = setting(True, "content-addressed embedding cache under <storage>/cache")
    share_prefix: bool = setting(True, "causal LMs with last-token pooling: read a prompt once for all its "
                                 "responses in a batch (packed, each response seeing only the prompt and itself); "
                                 "the same vectors to float rounding, checked on each actor's first pack")


@dataclass
class VAEConfig:
    latent_dim: int = setting(16, "latent size of the VAE", ge=1, le=4096)
    hidden_dims: tuple[int, ...] = setting((64,), "hidden widths, encoder side (the decoder mirrors them); paper: "
                                           "~0.5M params at d=4096, one layer of ~64", ge=1, le=65536)
    beta: float = setting(1.0, "weight of the KL term", ge=0)
    gamma: float = setting(0.1, "weight of the Wasserstein divergence term (paper: 0.1)", ge=0)
    recon: str = setting("mse", "reconstruction error", choices=("mse", "cosine"))
    recon_reduction: str = setting("sum", "sum over dims keeps beta=1 the ELBO and z on the prior's scale",
                                   choices=("sum", "mean"))
    div_bound: str = setting("clamp", "bound of the divergence term: clamp -min(W2, div_max) or margin "
                             "relu(div_max - W2)", choices=("clamp", "margin"))
    div_max: float = setting(5.0, "W2 beyond which a pair is not pushed further apart", gt=0)
    lr: float = setting(1e-3, "AdamW learning rate", gt=0, lt=1e38)     # beyond float32, AdamW's step overflows
    weight_decay: float = setting(0.0, "AdamW weight decay", ge=0)
    epochs: int = setting(150, "passes over the seed pairs", ge=1)
    batch_pairs: int = setting(128, "pairs per optimizer step", ge=1)


@dataclass
class SynthConfig:
    noise_var: float = setting(0.01, "a variance: eta ~ N(0, noise_var * I) added in latent space", gt=0)
    encode: str = setting("mean", "which z the noise is added to: the posterior mean or a posterior sample",
                          choices=("mean", "sample"))
    select: str = setting("prior", "density of the top-k selection: prior N(0, I) or the posterior",
                          choices=("prior", "posterior"))
    oversample: int = setting(4, "draws per kept sample before top-k (1: no selection)", ge=1, le=1024)
    residual: bool = setting(False, "e + (g(z+eta) - g(z)) instead of g(z+eta)")
    dp_noise_var: float = setting(0.01, "direct perturbation: noise variance per standardized embedding dim", gt=0)
    gs_covariance: str = setting("full", "Gaussian sampling: full covariance (shrunk) or diagonal",
                                 choices=("full", "diag"))
    gs_shrinkage: float = setting(0.1, "Gaussian sampling: shrinkage of the covariance toward its diagonal",
                                  ge=0, le=1)


@dataclass
class RewardConfig:
    heads: tuple[str, ...] = setting(("mlp",), "reward heads each method is trained with: mlp (early-stopped "
                                     "MLP), linear (Bradley-Terry weights fitted to convergence, design chosen by "
                                     "k-fold) and/or paper (the LENS paper's kind of head: the MLP without "
                                     "dropout, weight decay or early stopping, paper_epochs over whatever set it is "
                                     "given, its final weights)", choices=HEADS, nonempty=True)
    loss: str = setting("bradley_terry", "what a trained head (linear, mlp) fits: bradley_terry, the pairwise "
                        "log-likelihood of chosen over rejected; or pointwise, each response classified on its own "
                        "(chosen 1, rejected 0), as Sun et al. (ICLR 2025) found better on frozen embeddings",
                        choices=LOSSES)
    hidden_dim: int = setting(256, "MLP head: hidden width", ge=1, le=65536)
    depth: int = setting(1, "MLP head: hidden layers", ge=1, le=16)
    dropout: float = setting(0.1, "MLP head: dropout", ge=0, lt=1)
    weight_decay: float = setting(0.01, "MLP head: AdamW weight decay", ge=0)
    lr: float = setting(1e-3, "MLP head: AdamW learning rate", gt=0, lt=1e38)
    max_steps: int = setting(600, "MLP head: optimizer steps, the same budget for every method", ge=1)
    batch_size: int = setting(64, "MLP head: pairs per step", ge=1)
    eval_every: int = setting(25, "MLP head: steps between validation checks", ge=1)
    patience: int = setting(6, "MLP head: validation checks without improvement before stopping", ge=1)
    paper_epochs: int = setting(20, "paper head: epochs over its training set (an augmented set is larger, so it "
                                "gets more steps: as the paper's comparison does)", ge=1, le=10000)
    synthetic_weight: float = setting(1.0, "weight of a synthetic pair in the Bradley-Terry loss (originals: 1)",
                                      gt=0, le=10)
    linear_norms: tuple[str, ...] = setting(("none", "diag", "whiten"), "linear head: input normalizations the "
                                            "k-fold chooses from", choices=("none", "diag", "whiten"), nonempty=True)
    linear_l2: tuple[float, ...] = setting((1e-4, 1e-3, 1e-2, 1e-1, 1.0, 10.0), "linear head: L2 strengths the "
                                           "k-fold chooses from (on unit-mean-square differences)", gt=0,
                                           nonempty=True)
    linear_shrink: tuple[float, ...] = setting((0.0, 0.25, 0.5, 0.75, 1.0), "linear head: shrinkage toward the "
                                               "class-mean direction the k-fold chooses from (1: mean_diff)",
                                               ge=0, le=1, nonempty=True)
    linear_folds: int = setting(5, "linear head: folds (whole prompts) of the design choice", ge=2)
    whiten_shrinkage: float = setting(0.1, "linear head: shrinkage of the covariance toward its scaled identity "
                                      "before whitening", gt=0, le=1)


@dataclass
class SelectionConfig:
    """The main job's choice of its reward model: layer x head x augmentation by k-fold on the seed pairs."""
    enabled: bool = setting(True, "choose the run's reward model by k-fold on the seed pairs (never eval or "
                            "Best-of-N data); it becomes the default head (heads/selected)")
    layers: tuple[int, ...] = setting((), "candidate layers, negative from the end; empty: the last and those 30% "
                                      "and 50% of the way down (SmolLM2: -1, -10, -16), all from one forward pass",
                                      le=-1, ge=-256)
    heads: tuple[str, ...] = setting(("mean_diff", "linear", "mlp"), "candidate heads, simplest first",
                                     choices=("mean_diff", "linear", "mlp"), nonempty=True)
    losses: tuple[str, ...] = setting(("bradley_terry",), "losses each trained candidate head is fitted with "
                                      "(reward.loss); with both, the k-fold decides (bradley_terry preferred within "
                                      "one standard error)", choices=LOSSES, nonempty=True)
    concat_layers: bool = setting(False, "also try each head on the candidate layers concatenated (one embedding "
                                  "of layers x d dims, from the same forward pass)")
    mlp_seeds: int = setting(1, "MLP candidates also as a seed ensemble of this many fits (their standardized rewards "
                             "averaged); 1: none", ge=1, le=16)
    ensembles: tuple[int, ...] = setting((), "top-k ensembles tried, each k: the mean standardized reward of the k "
                                         "best other candidates (in the k-fold ranked on the other folds only)",
                                         ge=2, le=16)
    max_minutes: float = setting(10.0, "refuse, with the estimate, a candidate set whose k-fold fits would take "
                                 "longer than this (one fit of each kind is timed on the data first); 0: no limit",
                                 ge=0)
    folds: int = setting(5, "k-fold over the seed pairs, whole prompts per fold", ge=2, le=50)
    objective: str = setting("accuracy", "what the folds rank candidates by: accuracy on the held fold's pairs, or "
                             "bon_gold: the mean gold score of each held prompt's highest-rewarded response among "
                             "its seed pairs' responses (needs scored completions as data)",
                             choices=("accuracy", "bon_gold"))
    finalists: int = setting(0, "best (layer, trained head) candidates that go on to be tried with each "
                             "augmenting method at each factor; 0: none. Off by default: on both development sets "
                             "no augmented candidate was picked, and with a linear finalist they cost most of the "
                             "stage (docs/RESULTS.md)", ge=0)


@dataclass
class SearchConfig:
    """The search of the synthesis settings (`lens-ray search`, on Ray Tune): what it spans, how it measures, what it
    may spend. Read from the section `tune` too, its earlier name."""
    name: str | None = setting(None, "search name; unset: <run name>-tune; the same name resumes", plain_name=True)
    num_samples: int = setting(24, "trials", ge=1, le=10_000)
    folds: int = setting(4, "k-fold over the seed pairs (whole prompts per fold)", ge=2, le=50)
    repeats: int = setting(2, "seeds per fold: each trial fits folds * repeats paired heads", ge=1, le=20)
    grace_period: int | None = setting(None, "units a trial runs before ASHA may stop it; unset: one pass over "
                                       "the folds", ge=1)
    reduction_factor: float = setting(2.0, "ASHA keeps the top 1/reduction_factor at each rung", gt=1)
    methods: tuple[str, ...] = setting(("lens", "direct_perturbation", "gaussian_sampling"),
                                       "augmenting methods the search spans", choices=AUGMENTING, nonempty=True)
    factors: tuple[int, ...] = setting((2, 4, 8), "augmentation factors the search spans", ge=2, le=64, nonempty=True)
    heads: tuple[str, ...] = setting(("mlp", "linear"), "reward heads the search spans", choices=HEADS, nonempty=True)
    open_choices: bool = setting(True, "also span the choices the paper leaves open (VAE shape, residual, ...)")
    searcher_seed: int = setting(0, "seed of the Optuna sampler", ge=0)
    test_seeds: int = setting(5, "seeds for the chosen configuration's test accuracy", ge=1, le=100)


@dataclass
class CurveConfig:
    """`lens-ray curve`: every method x head at several seed-pair counts, from a finished run's embeddings."""
    name: str | None = setting(None, "curve name; unset: <run name>-curve; the same name resumes", plain_name=True)
    sizes: tuple[str, ...] = setting(("50", "100", "250", "500", "1000", "all"), "seed-pair counts (nested subsets "
                                     "by whole prompts); all: every seed pair", pattern=r"all|[1-9][0-9]*",
                                     nonempty=True)


@dataclass
class ServeConfig:
    """`lens-ray serve`: a trained head as a reward server on Ray Serve (and the batch scorer's head)."""
    head: str | None = setting(None, "head under <run>/heads; unset: the run's pick (heads/selected), or in a run "
                                    "without one the best validation accuracy", plain_name=True)
    host: str = setting("127.0.0.1", "address the HTTP proxy listens on (0.0.0.0 exposes it: set a token)")
    port: int = setting(8000, "HTTP port", ge=1, le=65535)
    replicas: int = setting(1, "server replicas (each loads the LM once)", ge=1)
    cpus_per_replica: float = setting(1.0, "CPUs per replica", gt=0)
    max_batch_size: int = setting(32, "requests batched into one forward pass", ge=1, le=4096)
    batch_wait_ms: float = setting(10.0, "how long a batch waits to fill", ge=0, le=10000)
    normalize: bool = setting(True, "standardized rewards: mean 0 and std 1 over the head's training responses "
                              "(statistics stored with the head); false: the head's raw rewards (a mean_diff "
                              "direction's are in the hundreds)")
    token_env: str | None = setting(None, "name of an environment variable holding a bearer token clients must "
                                    "send (Authorization: Bearer ...); unset: no token")
    max_body_bytes: int = setting(8 << 20, "largest request body accepted", ge=1024)
    max_items: int = setting(1024, "most texts in one request", ge=1)
    max_text_chars: int = setting(100_000, "most characters in one prompt or response", ge=1)
    body_timeout_s: float = setting(10.0, "a request whose body has not arrived in full in this time gets a 408",
                                    gt=0, le=3600)
    max_waiting_bodies: int = setting(256, "requests a replica lets wait on their bodies at once (slow clients); "
                                      "beyond, a 503 at once: they never hold the batch queue", ge=1)
    header_timeout_s: float = setting(10.0, "a connection that has not sent a request's headers in full this long "
                                      "after connecting (or after its last response) is closed: partial headers "
                                      "or an HTTP/0.9 line never hold the proxy (lens_ray/distributed/"
                                      "proxy_guard.py)", gt=0, le=3600)
    max_connections: int = setting(1000, "open connections the HTTP proxy holds; beyond, a new one gets a 503 and "
                                         "is closed at once", ge=1, le=1_000_000)


@dataclass
class ScaleConfig:
    """`lens-ray synthesize`: N synthetic pairs from a finished run, streamed to storage."""
    pairs: int = setting(1_000_000, "pairs to write", ge=1)
    mode: str = setting("materialized", "materialized: the embeddings; seeded: 14 bytes a pair, decoded when read",
                        choices=("materialized", "seeded"))
    method: str = setting("lens", "augmenting method", choices=AUGMENTING)
    k: int = setting(2, "synthetic embeddings per side per unit: (k+1)^2-1 pairs a unit", ge=1, le=64)
    seed: int = setting(0, "which of the run's seeds (its VAE) and the RNG seed", ge=0)
    shard_pairs: int = setting(16384, "pairs per stored shard", ge=1)
    dtype: str = setting("float32", "dtype of materialized embeddings", choices=("float32", "float16"))


@dataclass
class ResourcesConfig:
    """Where and how wide the job runs. No fingerprint, cache key or manifest reads this section."""
    embed_actors: int = setting(0, "embedding actors (model replicas); 0: one per GPU on a GPU cluster, else one "
                                "single-threaded actor per CPU (at most 8), which measured fastest on CPUs", ge=0)
    embed_cpus_per_actor: float = setting(0.5, "CPUs per embedding actor; fractional, so read tasks never starve",
                                          gt=0)
    embed_gpus_per_actor: float | None = setting(None, "GPUs per embedding actor; unset: 1 when the cluster has "
                                                 "GPUs, else 0", ge=0)
    embed_batch_size: int = setting(16, "texts per embedding batch", ge=1)
    embed_threads: int = setting(0, "torch threads per embedding actor; 0: 1 on a GPU, else the cluster's "
                                "CPUs / actors", ge=0)
    vae_workers: int = setting(1, "Ray Train workers for the VAEs; more than one fits each with DDP. 1: a VAE is "
                               "small (one 64-wide layer, ~1,000 pairs) and one worker on the node's cores fitted "
                               "`make run`'s five 1.5x faster than DDP over two on 2 cores (docs/RESULTS.md)", ge=1)
    vae_cpus_per_worker: float = setting(1.0, "CPUs per VAE worker", gt=0)
    reward_workers: int = setting(1, "Ray Train workers for the MLP heads; more than one trains each with DDP. 1: "
                                  "one worker trained `make run`'s 35 heads 2x faster than DDP over two on 2 cores "
                                  "(docs/RESULTS.md); DDP pays where a head streams millions of pairs", ge=1)
    reward_cpus_per_worker: float = setting(1.0, "CPUs per reward-head worker", gt=0)
    synth_actors: int = setting(1, "synthesis actors", ge=1)
    synth_cpus_per_actor: float = setting(0.5, "CPUs per synthesis actor", gt=0)
    synth_batch_size: int = setting(256, "source pairs per synthesis batch", ge=1)
    tune_max_concurrent: int = setting(2, "trials at once", ge=1)
    tune_cpus_per_trial: float = setting(1.0, "CPUs per trial", gt=0)
    train_max_failures: int = setting(3, "Ray Train: worker-group failures a stage survives (each resumes from "
                                      "its last checkpoint)", ge=0)
    actor_max_restarts: int = setting(3, "Ray Data: restarts of a dead embedding or synthesis actor", ge=0)


@dataclass
class TrackingConfig:
    """Where a run's figures go besides its report: TensorBoard event files always (<run>/tensorboard), MLflow
    where set. No fingerprint, cache key or manifest reads this section."""
    mlflow_uri: str | None = setting(None, "MLflow tracking URI (a server's http(s)://..., databricks, ...) the run "
                                     "logs its settings, figures and report to; unset: MLFLOW_TRACKING_URI when "
                                     "set, else none (needs mlflow-skinny: pip install 'lens-ray[mlflow]')")
    mlflow_experiment: str = setting("lens-ray", "MLflow experiment the run is logged under")


@dataclass
class LensConfig:
    name: str | None = setting(None, "run name (a plain name: letters, digits, . _ -); unset: <data file's stem>-"
                               "<model>, e.g. hh_harmless_dev-smollm2", plain_name=True)
    storage: str = setting("runs", "artifact root: path, file:// or s3://bucket/prefix")
    out: str | None = setting(None, "this run's output URI; unset: <storage>/<name>")
    cache: str | None = setting(None, "embedding cache URI; unset: <storage>/cache")
    methods: tuple[str, ...] = setting(METHODS, "methods compared", choices=METHODS, nonempty=True)
    factors: tuple[int, ...] = setting((4, 8), "augmentation factors (pairs per original pair)", ge=2, le=64,
                                       nonempty=True)
    seeds: int = setting(5, "seeds per method (validation split, initialization, synthesis noise)", ge=1, le=100)
    ray_address: str | None = setting(None, "Ray cluster to join; unset: RAY_ADDRESS (set by `ray job submit`), "
                                      "else a local Ray")
    from_search: str | None = setting(None, "a search's output URI whose chosen settings this run used")
    data: DataConfig = field(default_factory=DataConfig)
    embed: EmbedConfig = field(default_factory=EmbedConfig)
    vae: VAEConfig = field(default_factory=VAEConfig)
    synth: SynthConfig = field(default_factory=SynthConfig)
    reward: RewardConfig = field(default_factory=RewardConfig)
    selection: SelectionConfig = field(default_factory=SelectionConfig)
    search: SearchConfig = field(default_factory=SearchConfig)
    curve: CurveConfig = field(default_factory=CurveConfig)
    scale: ScaleConfig = field(default_factory=ScaleConfig)
    serve: ServeConfig = field(default_factory=ServeConfig)
    resources: ResourcesConfig = field(default_factory=ResourcesConfig)
    tracking: TrackingConfig = field(default_factory=TrackingConfig)

    @property
    def run_name(self) -> str:
        """The name, or one made of the data and the model: what a run of this config is called by default."""
        if self.name:
            return self.name
        stem = re.sub(r"(\.(gz|jsonl|json|parquet))+$", "", self.data.data.rstrip("/").rsplit("/", 1)[-1])
        model = self.embed.model.rstrip("/").rsplit("/", 1)[-1].removesuffix(".gguf")
        return re.sub(r"[^A-Za-z0-9._-]+", "_", f"{stem}-{model}").strip("._-")[:128] or "run"

    @property
    def search_name(self) -> str:
        return self.search.name or f"{self.run_name}-tune"          # -tune: the folder's earlier name, kept

    @property
    def curve_name(self) -> str:
        return self.curve.name or f"{self.run_name}-curve"

    @property
    def out_uri(self) -> str:
        return self.out or join_uri(self.storage, self.run_name)

    @property
    def cache_uri(self) -> str:
        return self.cache or join_uri(self.storage, "cache")

    def validate(self) -> "LensConfig":
        """Every field against its own choices and bounds (finite numbers only), then the cross-field rules."""
        for path, f, value in walk(self):
            _check(path, f, value)
        once = (("methods", "method", self.methods), ("factors", "factor", self.factors),
                ("curve.sizes", "size", self.curve.sizes), ("reward.heads", "head", self.reward.heads),
                ("selection.layers", "layer", self.selection.layers),
                ("selection.heads", "head", self.selection.heads),
                ("selection.ensembles", "k", self.selection.ensembles))
        for path, word, values in once:
            if len(set(values)) != len(values):
                raise ConfigError(f"{path}: each {word} once, got {list(values)}")
        sc = self.selection
        if len(self.embed.layer) > 1 and (sc.concat_layers or sc.ensembles):
            what = "selection.concat_layers" if sc.concat_layers else "selection.ensembles"
            raise ConfigError(f"{what} combines the candidate layers itself: it needs one embed.layer, got "
                              f"{list(self.embed.layer)}")
        return self

    def to_dict(self) -> dict[str, Any]:
        return json.loads(json.dumps(dataclasses.asdict(self)))


# ---------------------------------------------------------------- walking and checking fields

def walk(obj: Any, prefix: str = "") -> Iterator[tuple[str, dataclasses.Field, Any]]:
    """(dotted path, field, value) of every leaf setting under obj."""
    for f in dataclasses.fields(obj):
        value = getattr(obj, f.name)
        if dataclasses.is_dataclass(value):
            yield from walk(value, f"{prefix}{f.name}.")
        else:
            yield f"{prefix}{f.name}", f, value


def _check(path: str, f: dataclasses.Field, value: Any) -> None:
    m = f.metadata
    if value is None:
        return
    items = value if isinstance(value, tuple) else (value,)
    if m.get("nonempty") and not items:
        raise ConfigError(f"{path}: needs at least one value")
    for v in items:
        if m.get("choices") and v not in m["choices"]:
            raise ConfigError(f"{path}: {_short(v)} is not one of {list(m['choices'])}")
        if isinstance(v, float) and not math.isfinite(v):
            raise ConfigError(f"{path}: must be a finite number, got {v}")
        if isinstance(v, (int, float)) and not isinstance(v, bool):
            for key, ok, word in (("ge", v.__ge__, ">="), ("gt", v.__gt__, ">"), ("le", v.__le__, "<="),
                                  ("lt", v.__lt__, "<")):
                if m.get(key) is not None and not ok(m[key]):
                    raise ConfigError(f"{path}: must be {word} {m[key]}, got {v}")
        if m.get("pattern") and not (isinstance(v, str) and re.fullmatch(m["pattern"], v)):
            raise ConfigError(f"{path}: {_short(v)} does not match {m['pattern']}")
        if m.get("plain_name") and not (isinstance(v, str) and PLAIN_NAME.fullmatch(v) and v not in (".", "..")):
            raise ConfigError(f"{path}: {_short(v)} is not a plain name (letters, digits, '.', '_', '-'; no '/')")


def describe(f: dataclasses.Field) -> str:
    """The field's help with its choices and bounds, for --help and `lens-ray settings`."""
    m, extra = f.metadata, []
    if m.get("choices"):
        extra.append("one of " + ", ".join(str(c) for c in m["choices"]))
    for key, word in (("ge", ">="), ("gt", ">"), ("le", "<="), ("lt", "<")):
        if m.get(key) is not None:
            extra.append(f"{word} {m[key]}")
    return m.get("help", "") + (f" [{'; '.join(extra)}]" if extra else "")


def join_uri(base: str, *parts: str) -> str:
    return "/".join([base.rstrip("/")] + [p.strip("/") for p in parts])


def fingerprint(*parts: Any) -> str:
    """A short content hash of JSON-able parts (dataclasses included): what a stored result was made from."""
    def plain(x):
        return dataclasses.asdict(x) if dataclasses.is_dataclass(x) else str(x)
    return hashlib.sha256(json.dumps(parts, sort_keys=True, default=plain).encode()).hexdigest()[:10]


# ---------------------------------------------------------------- building a config

# settings that moved to `resources`: a finished run's stored config still reads
LEGACY = {"embed.num_actors": "resources.embed_actors", "embed.cpus_per_actor": "resources.embed_cpus_per_actor",
          "embed.gpus_per_actor": "resources.embed_gpus_per_actor", "embed.batch_size": "resources.embed_batch_size",
          "embed.torch_threads": "resources.embed_threads", "vae.num_workers": "resources.vae_workers",
          "vae.cpus_per_worker": "resources.vae_cpus_per_worker", "reward.num_workers": "resources.reward_workers",
          "reward.cpus_per_worker": "resources.reward_cpus_per_worker",
          "synth.batch_size": "resources.synth_batch_size",
          "synth.num_actors": "resources.synth_actors", "synth.cpus_per_actor": "resources.synth_cpus_per_actor",
          "tune.max_concurrent": "resources.tune_max_concurrent",
          "tune.cpus_per_trial": "resources.tune_cpus_per_trial", "from_tune": "from_search"}
RENAMED = {"tune": "search"}      # sections read at their new name (a stored config, an old YAML, an old --set)


def _coerce(tp: Any, value: Any, where: str) -> Any:
    """Cast a YAML/CLI value to the field's declared type (strings from the CLI included)."""
    tp = str(tp)
    if value is None or (isinstance(value, str) and value.lower() in ("none", "null") and "None" in tp):
        return None
    try:
        if tp.startswith("tuple"):
            items = value.split(",") if isinstance(value, str) else list(value)
            inner = int if "int" in tp else float if "float" in tp else str
            if any(isinstance(v, (bool, list, dict)) for v in items):
                raise TypeError(value)
            return tuple(inner(str(v).strip()) for v in items if str(v).strip())
        if tp.startswith("bool"):
            if isinstance(value, str):
                if value.lower() not in ("true", "false", "1", "0", "yes", "no"):
                    raise ValueError(value)
                return value.lower() in ("true", "1", "yes")
            if not isinstance(value, (bool, int)):
                raise TypeError(value)
            return bool(value)
        if isinstance(value, (bool, list, dict)):
            raise TypeError(value)                       # YAML `seeds: true` is not a number
        if tp.startswith("int"):
            if isinstance(value, float) and not value.is_integer():
                raise ValueError(value)
            return int(value)
        if tp.startswith("float"):
            return float(value)
        if tp.startswith("str"):
            if isinstance(value, (int, float)) and not isinstance(value, bool):
                return str(value)
            if not isinstance(value, str):
                raise TypeError(value)
        return value
    except (TypeError, ValueError) as exc:
        raise ConfigError(f"{where}: cannot read {_short(value)} as {tp}") from exc


def _short(value: Any) -> str:
    """A value as an error message shows it: a few items and characters, never a whole huge one."""
    import reprlib
    r = reprlib.Repr()
    r.maxlevel, r.maxlist, r.maxtuple, r.maxdict, r.maxstring, r.maxother = 3, 6, 6, 6, 60, 60
    text = r.repr(value)
    return text if len(text) <= 120 else text[:117] + "..."


MAX_YAML_VALUES = 100_000   # scalars and collections a config file may hold once its aliases are expanded


def _expanded_size(value: Any, limit: int = MAX_YAML_VALUES) -> int:
    """How many values `value` holds with every shared reference (a YAML alias) counted again, stopping past
    limit: a few hundred bytes of nested aliases expand to billions."""
    count, stack = 0, [value]
    while stack and count <= limit:
        item = stack.pop()
        count += 1
        if isinstance(item, dict):
            stack.extend(item.keys())
            stack.extend(item.values())
        elif isinstance(item, (list, tuple)):
            stack.extend(item)
    return count


def _fill(obj: Any, values: dict[str, Any], where: str) -> None:
    known = {f.name: f for f in dataclasses.fields(obj)}
    for key, value in values.items():
        if key not in known:
            raise ConfigError(f"{where}{_short(key)[1:-1] if isinstance(key, str) else _short(key)}: unknown option; "
                              f"known: {sorted(known)}")
        current = getattr(obj, key)
        if dataclasses.is_dataclass(current):
            if not isinstance(value, dict):
                raise ConfigError(f"{where}{key}: expected a mapping")
            _fill(current, value, f"{where}{key}.")
        else:
            setattr(obj, key, _coerce(known[key].type, value, f"{where}{key}"))


def _nest(dotted: dict[str, Any]) -> dict[str, Any]:
    nested: dict[str, Any] = {}
    for key, value in dotted.items():
        node = nested
        section, dot, rest = key.partition(".")
        key = LEGACY.get(key) or (f"{RENAMED[section]}.{rest}" if dot and section in RENAMED else key)
        *heads, last = key.split(".")
        for h in heads:
            node = node.setdefault(h, {})
        node[last] = value
    return nested


def _flatten(values: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    out: dict[str, Any] = {}
    for k, v in values.items():
        if isinstance(v, dict) and (k in {f.name for f in dataclasses.fields(LensConfig)} or k in RENAMED):
            out.update(_flatten(v, f"{prefix}{k}."))
        else:
            out[f"{prefix}{k}"] = v
    return out


def config_from_dict(values: dict[str, Any]) -> LensConfig:
    """A stored `LensConfig.to_dict()` (e.g. a report's) -> LensConfig; sections it lacks keep defaults,
    settings that have moved since (LEGACY) are read at their new place."""
    cfg = LensConfig()
    _fill(cfg, _nest(_flatten(values)), "")
    return cfg.validate()


def apply_overrides(cfg: LensConfig, overrides: dict[str, Any] | None) -> LensConfig:
    """Dotted overrides (``{"vae.beta": 0.5}``; None values skipped) onto cfg, validated."""
    _fill(cfg, _nest({k: v for k, v in (overrides or {}).items() if v is not None}), "")
    return cfg.validate()


def load_config(yaml_path: str | None = None, overrides: dict[str, Any] | None = None,
                base: LensConfig | None = None) -> LensConfig:
    """base (default: the defaults) <- YAML file <- overrides (dotted keys such as ``"vae.beta"``)."""
    cfg = base or LensConfig()
    if yaml_path:
        try:
            with open(yaml_path) as fh:
                loaded = yaml.safe_load(fh) or {}
        except OSError as exc:
            raise ConfigError(f"{yaml_path}: cannot read the config file ({exc.strerror})") from exc
        except yaml.YAMLError as exc:
            raise ConfigError(f"{yaml_path}: not valid YAML ({str(exc).splitlines()[0]})") from exc
        if not isinstance(loaded, dict):
            raise ConfigError(f"{yaml_path}: expected a mapping at the top level")
        if _expanded_size(loaded) > MAX_YAML_VALUES:
            raise ConfigError(f"{yaml_path}: expands to more than {MAX_YAML_VALUES:,} values (nested YAML "
                              "aliases?); a config file is a few dozen settings")
        _fill(cfg, _nest(_flatten(loaded)), "")
    return apply_overrides(cfg, overrides)
