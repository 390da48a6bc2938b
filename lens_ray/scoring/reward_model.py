"""Use a trained reward model: (prompt, response) texts -> rewards, end to end. No Ray.

    rm = RewardModel.from_run("runs/lens-hh")            # the head with the best validation accuracy
    rm.score(["How do I bake bread?"], ["Mix flour, water, yeast ..."])   # -> np.ndarray (n,)

A prompt is a string (one user turn) or a list of chat messages. Texts are embedded exactly as the run
embedded them (its model, chat template, pooling, layers and left truncation at max_length); the head is
verified and bounded before the LM loads.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import torch

from lens_ray.config import PLAIN_NAME
from lens_ray.core.records import Cell
from lens_ray.data.embed import LoadedModel, combine_layers, embed_layers, length_batches, load_model, tokenize
from lens_ray.store.artifacts import load_head, read_model_doc
from lens_ray.store.storage import Storage, StorageError

Prompt = str | list[dict[str, str]]


def messages(prompt: Prompt) -> list[dict[str, str]]:
    return [{"role": "user", "content": prompt}] if isinstance(prompt, str) else prompt


def pick_head(report: dict, run_uri: str) -> str:
    """The head with the best validation accuracy among the run's results that are not failed."""
    scored = [r for r in report["results"] if r.get("val_accuracy") is not None and r.get("status", "ok") == "ok"]
    if not scored:
        raise StorageError(f"{run_uri}: no trained head with a validation accuracy; name one with head=")
    best = max(scored, key=lambda r: r["val_accuracy"])
    return Cell(best["method"], best["factor"], best["seed"], best.get("head_kind", "mlp")).name


@dataclass
class RewardModel:
    lm: LoadedModel
    head: torch.nn.Module
    embed_cfg: dict                  # the run's embed settings (pooling, max_length, layer, layer_combine)
    head_name: str
    run_uri: str = ""
    reward_norm: dict | None = None  # mean and std of the head's rewards on its training responses
    counts: dict = field(default_factory=lambda: {"texts": 0, "truncated": 0})

    @classmethod
    def from_run(cls, run_uri: str, head: str | None = None, model: str | None = None) -> "RewardModel":
        """head: a name under <run>/heads (e.g. lens-f8-s0); None picks the best validation accuracy."""
        store = Storage(run_uri)
        if not store.exists("report.json"):
            raise StorageError(f"{run_uri}: no report.json; is it a finished lens-ray run?")
        report = store.read_json("report.json")
        head = head or pick_head(report, run_uri)
        if not PLAIN_NAME.fullmatch(head):
            raise StorageError(f"head {head!r} is not a plain name (see {run_uri}/heads)")
        heads = store.child("heads")
        trained = load_head(heads, head)                         # verified and bounded before the LM loads
        norm = read_model_doc(heads, head).get("meta", {}).get("reward_norm")
        embed_cfg = report["config"]["embed"]
        lm = load_model(model or embed_cfg["model"], embed_cfg["dtype"])
        return cls(lm, trained, embed_cfg, head, store.uri, norm)

    @property
    def max_length(self) -> int:
        return int(self.embed_cfg["max_length"])

    @torch.no_grad()
    def embed(self, prompts: list[Prompt], responses: list[str], batch_size: int = 8,
              max_tokens: int = 4096) -> np.ndarray:
        """(n,) texts -> embeddings (n, d) as the run made them; counts texts and left truncations.
        Forward passes take texts of similar length together: at most batch_size texts and max_tokens padded
        tokens each (4,096 was this CPU's best in bench/embed_throughput.py)."""
        if len(prompts) != len(responses):
            raise ValueError(f"{len(prompts)} prompts but {len(responses)} responses")
        if not prompts:
            return np.zeros((0, self.head.dim), np.float32)
        layers = tuple(self.embed_cfg.get("layer", (-1,)))
        tk = tokenize(self.lm, [messages(p) for p in prompts], responses, self.max_length)
        self.counts["texts"] += len(tk.ids)
        self.counts["truncated"] += int(tk.truncated.sum())
        out = None
        for rows in length_batches([len(x) for x in tk.ids], batch_size, max_tokens):
            vecs = embed_layers(self.lm, [tk.ids[i] for i in rows], self.embed_cfg["pooling"], layers=layers)
            vecs = combine_layers(vecs, self.embed_cfg.get("layer_combine", "concat"))
            out = np.empty((len(tk.ids), vecs.shape[1]), np.float32) if out is None else out
            out[rows] = vecs
        return out

    @torch.no_grad()
    def score(self, prompts: list[Prompt], responses: list[str], batch_size: int = 8,
              normalize: bool = False) -> np.ndarray:
        """(n,) rewards; normalize: standardized with the head's training-reward mean and std."""
        emb = self.embed(prompts, responses, batch_size)
        rewards = self.head(torch.from_numpy(emb)).numpy() if len(emb) else np.zeros(0, np.float32)
        return self.normalized(rewards) if normalize else rewards

    def normalized(self, rewards: np.ndarray) -> np.ndarray:
        if not self.reward_norm:
            raise StorageError(f"head {self.head_name}: no stored reward statistics to normalize with (a head "
                               "trained by an older lens-ray); re-run the pipeline")
        return (rewards - self.reward_norm["mean"]) / max(self.reward_norm["std"], 1e-12)
