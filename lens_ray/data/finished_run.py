"""The one reader of a finished run, for work that re-uses its embeddings and models (the Tune search,
`--from-search`, synthesis at scale, the learning curve, the reward model, batch scoring, export). No Ray.

`FinishedRun.open(uri)` reads the run's report, its typed config and its embedding manifest; `.table(name)`,
`.vae(seed)` and `.head(name)` read verified artifacts (a head must also fit the run's embedding dimension).
`.inputs()` re-ingests the run's data with the run's own settings (cheap, deterministic) to recover what the
embeddings do not hold — the prompts that group seed pairs into folds, the Best-of-N gold scores — and
checks the rows against the content keys the embeddings were stored under, so data that changed since the
run is refused instead of silently misaligned. Nothing is re-embedded.
"""
from __future__ import annotations

import dataclasses
import functools
import math
from dataclasses import dataclass

import numpy as np
import torch

from lens_ray.config import PLAIN_NAME, EmbedConfig, LensConfig, config_from_dict, fingerprint
from lens_ray.core.heads import build_head
from lens_ray.core.pairs import Pair
from lens_ray.core.records import Embedded, Result, bon_draws, table_texts
from lens_ray.core.vae import PreferenceVAE
from lens_ray.data.embed import INNER, model_kind, reads_inner, settings_key
from lens_ray.data.ingest import load_datasets
from lens_ray.store.artifacts import load_model, read_model_doc, read_pair_embeddings
from lens_ray.store.storage import ChecksumError, Manifest, Storage, StorageError


@dataclass
class RunInputs:
    uri: str
    config: LensConfig
    settings: dict                 # the embeddings' settings (model, pooling, max_length[, dtype])
    seed_pairs: list[Pair]
    emb: Embedded                  # the run's stored embeddings (stats empty: nothing was embedded here)

    @property
    def groups(self) -> list[str]:
        return [p.group for p in self.seed_pairs]


@dataclass
class FinishedRun:
    uri: str
    store: Storage
    config: LensConfig
    report: dict

    @classmethod
    def open(cls, uri: str) -> "FinishedRun":
        store = Storage(uri)
        if not store.exists("report.json"):
            raise StorageError(f"{uri}: no report.json; is it a finished lens-ray run?")
        report = store.read_checked_json("report.json")
        if not isinstance(report, dict) or not isinstance(report.get("config"), dict):
            raise ChecksumError(f"{store.uri_of('report.json')}: not a lens-ray run's report")
        cfg = config_from_dict(report["config"])
        return cls(store.uri, store, cfg, report)

    @property
    def dim(self) -> int:
        """The dimension of the run's embeddings (a head must have it)."""
        return int(self.report["embedding_dim"])

    @functools.cached_property
    def embeddings(self) -> Manifest:
        """The manifest of the run's embedding tables: their settings (`.meta`) and checksums."""
        return Manifest.load(self.store.child("embeddings"))

    def default_head(self) -> str:
        """The head the run's reward model uses unless one is named: the selection stage's pick (heads/selected)
        or, in a run without one, the best validation accuracy among the heads that did not fail."""
        if self.report.get("selected"):
            return "selected"
        scored = [r for r in map(Result.of, self.report["results"]) if r.val_accuracy is not None and r.ok]
        if not scored:
            raise StorageError(f"{self.uri}: no trained head with a validation accuracy; name one with --head")
        return max(scored, key=lambda r: r.val_accuracy).cell.name

    def head(self, name: str | None = None) -> tuple[torch.nn.Module, str, dict]:
        """(head, its name, its meta) for `name` under <run>/heads (None: `default_head()`), verified and bounded,
        and of the run's embedding dimension."""
        name = name or self.default_head()
        if not PLAIN_NAME.fullmatch(name):
            raise StorageError(f"head {name!r} is not a plain name (see {self.uri}/heads)")
        heads = self.store.child("heads")
        if read_model_doc(heads, name) is None:
            known = sorted(n[:-len(".json")] for n in heads.listdir() if n.endswith(".json"))
            raise StorageError(f"{self.uri}: no head {name!r}; heads: {', '.join(known) or 'none'}")
        head, meta = load_model(heads, name, build_head)
        self._check_inner(name, meta)
        dim = self._dim_at(self.embed_config(meta))
        if dim is not None and head.dim != dim:
            raise ChecksumError(f"{heads.uri_of(name)}.json: a head of dimension {head.dim}, but the run's embeddings "
                                f"at its layers have dimension {dim}: not this run's head")
        return head, name, meta

    def _dim_at(self, e: EmbedConfig) -> int | None:
        """The run's embedding dimension at these layers: one layer's width, times the layers where concatenated."""
        dim, run = self.report.get("embedding_dim"), self.config.embed
        if dim is None:
            return None
        width = dim // len(run.layer) if run.layer_combine == "concat" else dim
        return width * len(e.layer) if e.layer_combine == "concat" else width

    def _check_inner(self, name: str, meta: dict) -> None:
        """A head at an inner layer of a causal LM fitted before inner layers were read through the model's
        final norm (`layer_states`) would be scored on other features than its own: refused, never rescored."""
        layers = self.embed_config(meta).layer
        if meta.get("inner") == INNER or not reads_inner(layers) or model_kind(self.config.embed.model) == "encoder":
            return
        raise StorageError(f"{self.uri}/heads/{name}: fitted on layer {list(layers)}'s raw states by an older "
                           "lens-ray; inner layers are now read through the model's final norm: re-run the "
                           "pipeline (only those layers are embedded again)")

    def reward_scale(self, name: str, meta: dict) -> dict:
        """A head's stored reward statistics (its meta), checked: what standardized rewards divide by."""
        return checked_scale(name, meta.get("reward_norm"))

    def embed_config(self, meta: dict) -> EmbedConfig:
        """The embedding settings a head (its stored meta) scores with: the run's, at the head's own layer(s) when
        it has them (the selection's pick may be other layers of the same forward pass, concatenated)."""
        e = self.config.embed
        if not meta.get("embed_layer"):
            return e
        return dataclasses.replace(e, layer=tuple(meta["embed_layer"]),
                                   layer_combine=meta.get("layer_combine", e.layer_combine))

    def table(self, name: str) -> tuple[np.ndarray, np.ndarray | None]:
        """A stored embedding table (seed, eval, bon), verified against its checksum."""
        pair = read_pair_embeddings(self.embeddings, name)
        if pair is None:
            raise StorageError(f"{self.uri}/embeddings/{name}.parquet: missing or corrupt; re-run the pipeline "
                               "(cached embeddings are reused)")
        return pair

    def vae(self, seed: int) -> PreferenceVAE | None:
        """The run's VAE for `seed`, or None if the run fitted none (no lens method)."""
        vaes = self.store.child("vae")
        if not vaes.exists(f"seed-{seed}.json"):
            return None
        return load_model(vaes, f"seed-{seed}", PreferenceVAE.from_config)[0]

    def inputs(self) -> RunInputs:
        """The run's data, re-ingested and checked against its embeddings' content keys, with the embeddings."""
        cfg = self.config
        ds = load_datasets(cfg.data)
        draws, bon_gold = bon_draws(cfg, ds)
        tables = {}
        for name, rows in table_texts(ds, draws).items():
            stored = self.embeddings.files.get(f"{name}.parquet", {}).get("keys")
            if stored is None:
                raise StorageError(f"{self.uri}/embeddings/{name}.parquet: missing, or written by an older lens-ray "
                                   "without content keys; re-run the pipeline on it (cached embeddings are reused)")
            keys = [settings_key(self.embeddings.meta, prompt, response) for prompt, response in rows]
            if stored != fingerprint(keys):
                raise StorageError(f"{self.uri}/embeddings/{name}.parquet: does not hold the {name} texts that "
                                   f"{cfg.data.data} gives today under the run's settings (the data changed?); "
                                   "re-run the pipeline")
            tables[name] = self.table(name)
        bon = tables["bon"][0].reshape(*bon_gold.shape, -1) if "bon" in tables else None
        return RunInputs(self.uri, cfg, self.embeddings.meta, ds.seed_pairs,
                         Embedded(*tables["seed"], *tables["eval"], bon, bon_gold))


def load_run_inputs(uri: str) -> RunInputs:
    return FinishedRun.open(uri).inputs()


def checked_scale(head: str, norm: dict | None) -> dict:
    """A head's reward statistics {mean, std} as finite numbers (std > 0), or a StorageError saying why not."""
    if not norm:
        raise StorageError(f"head {head}: no stored reward statistics to standardize with (a head trained by an "
                           "older lens-ray); re-run the pipeline, or ask for raw rewards (--normalize false)")
    ok = isinstance(norm, dict) and all(isinstance(norm.get(k), (int, float)) and not isinstance(norm[k], bool)
                                        and math.isfinite(norm[k]) for k in ("mean", "std"))
    if not ok or norm["std"] < 0:
        raise StorageError(f"head {head}: stored reward statistics {str(norm)[:200]} are not a finite mean and std")
    if norm["std"] == 0:
        raise StorageError(f"head {head}: its rewards on its training responses are all equal (std 0), so they "
                           "cannot be standardized; ask for raw rewards (--normalize false)")
    return {"mean": float(norm["mean"]), "std": float(norm["std"])}
