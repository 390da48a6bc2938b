"""A lens-ray reward model in the shapes RLHF trainers take it. No Ray; neither TRL, verl nor OpenRLHF is a
dependency: each function takes exactly what that trainer passes.

- TRL (GRPOTrainer, RLOOTrainer, online DPO: `reward_funcs=[trl_reward("runs/hh_harmless_dev-smollm2")]`): prompts and
  completions as strings, or as conversational message lists.
- verl (custom_reward_function): `compute_score(data_source, solution_str, ground_truth, extra_info)` and
  `compute_score_batch(...)` ask a running `lens-ray serve` (LENS_RAY_REWARD_URL, optional bearer token in
  LENS_RAY_REWARD_TOKEN); the prompt comes in extra_info["prompt"].
- OpenRLHF (`--reward.remote_url /path/to/lens_ray/scoring/openrlhf_reward.py`): `reward_func(queries, prompts,
  labels)` in process, the run from LENS_RAY_RUN (and LENS_RAY_HEAD; LENS_RAY_NORMALIZE=0 for raw rewards).

Every one gives standardized rewards (mean 0, std 1 over the head's training responses) unless asked for raw.
"""
from __future__ import annotations

import json
import os
import urllib.request
from typing import Any, Callable

from lens_ray.config import ServeConfig
from lens_ray.scoring.protocols import PROTOCOLS, Limits, conversation
from lens_ray.scoring.reward_model import RewardModel


def _text(item: Any) -> str:
    """A completion as TRL passes it: a string, or messages whose last assistant turn is the response."""
    if isinstance(item, str):
        return item
    if isinstance(item, list) and item and isinstance(item[-1], dict):
        return str(item[-1].get("content", ""))
    raise TypeError(f"a completion must be a string or a list of messages, got {type(item).__name__}")


def trl_reward(run: str, head: str | None = None, normalize: bool = ServeConfig.normalize,
               model: RewardModel | None = None) -> Callable[..., list[float]]:
    """f(prompts, completions, **kwargs) -> one float per completion, for TRL's `reward_funcs`; standardized
    rewards unless normalize=False. A prompt string rendered with the reward model's chat template (a plain-text
    dataset templated by hand) or in HH-RLHF's form is read back to its messages (`protocols.conversation`), so
    every form TRL passes scores as the messages form does."""
    rm = model or RewardModel.from_run(run, head)

    def lens_ray_reward(prompts: list, completions: list, **kwargs) -> list[float]:
        if len(prompts) != len(completions):
            raise ValueError(f"{len(prompts)} prompts but {len(completions)} completions")
        pairs = [conversation(p, _text(c), rm.chat_template) if isinstance(p, str) else (p, _text(c))
                 for p, c in zip(prompts, completions)]
        return [float(r) for r in rm.score([p for p, _ in pairs], [c for _, c in pairs], normalize=normalize)]
    lens_ray_reward.__name__ = f"lens_ray_{rm.head_name}"      # TRL logs each reward function by its name
    return lens_ray_reward


def _post(path: str, body: dict, url: str | None = None, timeout: float = 60.0) -> dict:
    base = (url or os.environ.get("LENS_RAY_REWARD_URL") or "http://127.0.0.1:8000").rstrip("/")
    headers = {"Content-Type": "application/json"}
    if os.environ.get("LENS_RAY_REWARD_TOKEN"):
        headers["Authorization"] = f"Bearer {os.environ['LENS_RAY_REWARD_TOKEN']}"
    req = urllib.request.Request(base + path, data=json.dumps(body).encode(), headers=headers, method="POST")
    with urllib.request.urlopen(req, timeout=timeout) as resp:
        return json.loads(resp.read())


def _prompt_of(extra_info: dict | None) -> str:
    if not extra_info or not isinstance(extra_info.get("prompt", extra_info.get("question")), (str, list)):
        raise ValueError("verl: extra_info must carry the prompt (extra_info['prompt'])")
    return extra_info.get("prompt", extra_info.get("question"))


def compute_score(data_source: str, solution_str: str, ground_truth: Any = None, extra_info: dict | None = None,
                  **kwargs) -> float:
    """verl's per-sample reward: the served head's reward for (extra_info['prompt'], solution_str)."""
    return float(_post("/score", {"prompts": [_prompt_of(extra_info)], "responses": [solution_str]},
                       kwargs.get("url"))["rewards"][0])


def compute_score_batch(data_sources: list, solution_strs: list[str], ground_truths: list | None = None,
                        extra_infos: list | None = None, **kwargs) -> list[float]:
    """verl's batched reward: one request for the whole batch."""
    prompts = [_prompt_of(e) for e in (extra_infos or [None] * len(solution_strs))]
    return [float(r) for r in _post("/score", {"prompts": prompts, "responses": list(solution_strs)},
                                    kwargs.get("url"))["rewards"]]


_MODEL: RewardModel | None = None


def openrlhf_reward_func(queries: list[str], prompts: list[str], labels: list[str] | None = None, **kwargs) -> dict:
    """OpenRLHF's reward_func, in process: each query is its prompt followed by the response."""
    import torch
    global _MODEL
    if _MODEL is None:
        if not os.environ.get("LENS_RAY_RUN"):
            raise RuntimeError("set LENS_RAY_RUN to a finished lens-ray run (and LENS_RAY_HEAD to pick a head)")
        _MODEL = RewardModel.from_run(os.environ["LENS_RAY_RUN"], os.environ.get("LENS_RAY_HEAD") or None)
    body = {"query": list(queries), "prompts": list(prompts)} | ({"labels": list(labels)} if labels else {})
    openrlhf = PROTOCOLS["openrlhf"]
    items = openrlhf.parse(body, Limits(max_items=1 << 30), _MODEL.chat_template)
    rewards = _MODEL.score(items.prompts, items.responses, normalize=os.environ.get("LENS_RAY_NORMALIZE") != "0")
    reply = openrlhf.reply([float(r) for r in rewards], None)
    return {**reply, "rewards": torch.tensor(reply["rewards"]), "scores": torch.tensor(reply["scores"])}
