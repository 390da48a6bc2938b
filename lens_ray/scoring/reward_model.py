"""The reward-model API: (prompt, response) texts -> rewards, end to end. No Ray.

    rm = RewardModel.from_run("runs/hh_harmless_dev-smollm2")            # the run's default head
    rm.score(["How do I bake bread?"], ["Mix flour, water, yeast ..."])   # -> np.ndarray (n,), standardized

A prompt is a string (one user turn) or a list of chat messages. Texts are embedded exactly as the run
embedded them (its model, chat template, pooling, layers and left truncation at max_length: the run's typed
`EmbedConfig`); the head is verified and bounded before the LM loads.
"""
from __future__ import annotations

import functools
import json
from dataclasses import dataclass, field

import numpy as np
import torch

from lens_ray.config import EmbedConfig, ServeConfig
from lens_ray.core.heads import standardize
from lens_ray.data.embed import LoadedModel, Packing, combine_layers, embed_rows, load_model, tokenize
from lens_ray.data.finished_run import FinishedRun, checked_scale
from lens_ray.scoring.protocols import ChatTemplate, Prompt, messages


@dataclass
class RewardModel:
    lm: LoadedModel
    head: torch.nn.Module
    embed_cfg: EmbedConfig           # the run's embedding settings
    head_name: str
    run_uri: str = ""
    reward_norm: dict | None = None  # mean and std of the head's rewards on its training responses
    counts: dict = field(default_factory=lambda: {"texts": 0, "truncated": 0, "shared_tokens": 0})

    @functools.cached_property
    def packing(self) -> Packing:
        """Responses to one prompt read it once (the run's `embed.share_prefix`), as the run embedded them."""
        return Packing(self.lm, self.embed_cfg.pooling, self.embed_cfg.share_prefix)

    @classmethod
    def from_run(cls, run_uri: str, head: str | None = None, model: str | None = None) -> "RewardModel":
        """head: a name under <run>/heads (e.g. lens-f8-s0); None: the run's default head."""
        run = FinishedRun.open(run_uri)
        trained, name, meta = run.head(head)                      # verified and bounded before the LM loads
        e = run.embed_config(meta)
        return cls(load_model(model or e.model, e.dtype), trained, e, name, run.uri, meta.get("reward_norm"))

    @functools.cached_property
    def chat_template(self) -> ChatTemplate | None:
        """The LM's chat template read backwards (for prompts that arrive already rendered); None for encoders
        and templates that cannot be read back."""
        return ChatTemplate.learn(self.lm.tokenizer) if self.lm.kind == "causal" else None

    @property
    def max_length(self) -> int:
        return self.embed_cfg.max_length

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
        e = self.embed_cfg
        chats = [messages(p) for p in prompts]
        tk = tokenize(self.lm, chats, responses, e.max_length)
        self.counts["texts"] += len(tk.ids)
        self.counts["truncated"] += int(tk.truncated.sum())
        def plain(rows: list[int]) -> np.ndarray:
            return embed_rows(self.lm, tk.ids, rows, e.pooling, e.layer, (batch_size, max_tokens))
        groups = [json.dumps(c, sort_keys=True) for c in chats]      # a prompt's responses: read it once
        vecs, shared = self.packing.embed(tk.ids, groups, plain, e.layer, 2 * e.max_length, (batch_size, max_tokens))
        self.counts["shared_tokens"] += int(shared.sum())
        return combine_layers(vecs, e.layer_combine)
    @torch.no_grad()
    def score(self, prompts: list[Prompt], responses: list[str], batch_size: int = 8,
              normalize: bool = ServeConfig.normalize) -> np.ndarray:
        """(n,) rewards, standardized (`core.heads.standardize`: mean 0, std 1 over the head's training
        responses); normalize=False: the head's raw rewards."""
        emb = self.embed(prompts, responses, batch_size)
        rewards = self.head(torch.from_numpy(emb)).numpy() if len(emb) else np.zeros(0, np.float32)
        return self.normalized(rewards) if normalize else rewards

    @property
    def scale(self) -> dict:
        """The head's reward statistics (mean, std), checked; a head without them cannot standardize."""
        return checked_scale(self.head_name, self.reward_norm)

    def normalized(self, rewards: np.ndarray) -> np.ndarray:
        return standardize(rewards, self.scale)
