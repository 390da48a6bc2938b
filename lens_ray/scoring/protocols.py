"""The wire formats a reward model speaks, checked: OpenRLHF's remote reward protocol and lens-ray's own
/score. Pure Python, no Ray, no web framework: the server (`serve.py`) and its tests share these.

- OpenRLHF (`--reward.remote_url`): {"query": [str], "prompts": [str], "labels": [str]} -> {"rewards": [float],
  "scores": [float], "extra_logs": {...}}. Each query is the prompt followed by the response, in the policy's
  chat template; the response is the query after its prompt.
- /score: {"prompts": [str | chat messages], "responses": [str]} -> {"rewards": [float], "head", "model"}.
Every problem is a `BadRequest` naming the field (and item) and an HTTP status: 400 for a body that is not
JSON or too large, 422 for JSON of the wrong shape.
"""
from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

Prompt = str | list[dict[str, str]]


class BadRequest(ValueError):
    def __init__(self, status: int, field: str, message: str):
        super().__init__(f"{field}: {message}")
        self.status, self.field, self.message = status, field, message

    def body(self) -> dict:
        return {"error": self.message, "field": self.field}


@dataclass
class Limits:
    max_body_bytes: int = 8 << 20        # a request body over this is refused (400)
    max_items: int = 1024                # texts per request


@dataclass
class Items:
    """What to score: prompts (a string or chat messages) and responses, index-aligned."""
    prompts: list[Prompt]
    responses: list[str]


def parse_json(body: bytes, limits: Limits) -> dict:
    if len(body) > limits.max_body_bytes:
        raise BadRequest(413, "body", f"{len(body)} bytes, more than the limit of {limits.max_body_bytes}")
    try:
        obj = json.loads(body)
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise BadRequest(400, "body", f"not valid JSON ({exc})") from exc
    if not isinstance(obj, dict):
        raise BadRequest(422, "body", "must be a JSON object")
    return obj


def _strings(obj: dict, name: str, limits: Limits, required: bool = True) -> list[str] | None:
    value = obj.get(name)
    if value is None and not required:
        return None
    if not isinstance(value, list):
        raise BadRequest(422, name, "missing or not a list of strings")
    if not value:
        raise BadRequest(422, name, "empty list")
    if len(value) > limits.max_items:
        raise BadRequest(422, name, f"{len(value)} items, more than the limit of {limits.max_items}")
    for i, v in enumerate(value):
        if not isinstance(v, str):
            raise BadRequest(422, f"{name}[{i}]", f"not a string ({type(v).__name__})")
    return value


def _prompt(value: Any, where: str) -> Prompt:
    if isinstance(value, str):
        return value
    if isinstance(value, list) and value and all(isinstance(m, dict) and isinstance(m.get("role"), str)
                                                 and isinstance(m.get("content"), str) for m in value):
        return [{"role": m["role"], "content": m["content"]} for m in value]
    raise BadRequest(422, where, "neither a string nor a list of {role, content} messages")


def openrlhf_items(obj: dict, limits: Limits) -> Items:
    """OpenRLHF's request -> (prompt, response) per query; a query that does not start with its prompt is
    refused naming the item."""
    queries = _strings(obj, "query", limits)
    prompts = _strings(obj, "prompts", limits)
    labels = _strings(obj, "labels", limits, required=False)
    for name, other in (("prompts", prompts), ("labels", labels)):
        if other is not None and len(other) != len(queries):
            raise BadRequest(422, name, f"{len(other)} items but query has {len(queries)}")
    responses = []
    for i, (q, p) in enumerate(zip(queries, prompts)):
        if not q.startswith(p):
            raise BadRequest(422, f"query[{i}]", f"does not start with prompts[{i}]")
        responses.append(q[len(p):])
    return Items(list(prompts), responses)


def score_items(obj: dict, limits: Limits) -> Items:
    raw = obj.get("prompts")
    if not isinstance(raw, list) or not raw:
        raise BadRequest(422, "prompts", "missing, not a list, or empty")
    if len(raw) > limits.max_items:
        raise BadRequest(422, "prompts", f"{len(raw)} items, more than the limit of {limits.max_items}")
    prompts = [_prompt(p, f"prompts[{i}]") for i, p in enumerate(raw)]
    responses = _strings(obj, "responses", limits)
    if len(responses) != len(prompts):
        raise BadRequest(422, "responses", f"{len(responses)} items but prompts has {len(prompts)}")
    return Items(prompts, responses)


def openrlhf_reply(rewards: list[float], extra: dict | None = None) -> dict:
    """OpenRLHF reads "rewards" (used for the advantage) and "scores" (logged); both are the reward here."""
    return {"rewards": rewards, "scores": rewards, "extra_logs": extra or {}}
