"""Use a trained reward model: (prompt, response) texts -> rewards, end to end. No Ray.

    rm = RewardModel.from_run("runs/lens-hh")            # the head with the best validation accuracy
    rm.score(["How do I bake bread?"], ["Mix flour, water, yeast ..."])   # -> np.ndarray (n,)
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from lens_ray.artifacts import load_head
from lens_ray.config import PLAIN_NAME
from lens_ray.embed import LoadedModel, embed_ids, load_model, tokenize
from lens_ray.run_types import Job
from lens_ray.storage import Storage, StorageError


@dataclass
class RewardModel:
    lm: LoadedModel
    head: torch.nn.Module
    pooling: str
    max_length: int
    head_name: str

    @classmethod
    def from_run(cls, run_uri: str, head: str | None = None, model: str | None = None) -> "RewardModel":
        """head: a name under <run>/heads (e.g. lens-f8-s0); None picks the best validation accuracy."""
        store = Storage(run_uri)
        if not store.exists("report.json"):
            raise StorageError(f"{run_uri}: no report.json; is it a finished lens-ray run?")
        report = store.read_json("report.json")
        if head is None:
            scored = [r for r in report["results"]
                      if r.get("val_accuracy") is not None and r.get("status", "ok") == "ok"]
            if not scored:
                raise StorageError(f"{run_uri}: no trained head with a validation accuracy; name one with head=")
            best = max(scored, key=lambda r: r["val_accuracy"])
            head = Job(best["method"], best["factor"], best["seed"]).name
        if not PLAIN_NAME.fullmatch(head):
            raise StorageError(f"head {head!r} is not a plain name (see {run_uri}/heads)")
        trained = load_head(store.child("heads"), head)          # verified and bounded before the LM loads
        embed_cfg = report["config"]["embed"]
        lm = load_model(model or embed_cfg["model"], embed_cfg["dtype"])
        return cls(lm, trained, embed_cfg["pooling"], embed_cfg["max_length"], head)

    @torch.no_grad()
    def score(self, prompts: list[str | list[dict]], responses: list[str], batch_size: int = 8) -> np.ndarray:
        if len(prompts) != len(responses):
            raise ValueError(f"{len(prompts)} prompts but {len(responses)} responses")
        msgs = [[{"role": "user", "content": p}] if isinstance(p, str) else p for p in prompts]
        out = []
        for i in range(0, len(msgs), batch_size):
            tk = tokenize(self.lm, msgs[i:i + batch_size], responses[i:i + batch_size], self.max_length)
            emb = torch.from_numpy(embed_ids(self.lm, tk.ids, self.pooling))
            out.append(self.head(emb).numpy())
        return np.concatenate(out) if out else np.zeros(0)
