"""The wire formats a reward model speaks, checked in full: OpenRLHF's remote reward protocol and lens-ray's own
/score. Pure Python, no Ray, no web framework: the server (`distributed/serving.py`), the in-process callables
(`integrations.py`) and their tests share these.

- OpenRLHF (`--reward.remote_url`): {"query": [str], "prompts": [str], "labels": [str]} -> {"rewards": [float],
  "scores": [float], "extra_logs": {...}} (OpenRLHF takes "rewards" for the advantage, "scores" for dynamic
  filtering and logs; both are the reward here, as OpenRLHF's own reward server answers). Each query is the
  decoded prompt tokens (their start cut when the prompt was too long) followed by the decoded response, its
  end-of-turn token included; lists may be empty (the share of a later reward URL). A prompt rendered with
  the reward model's chat template is read back to its messages (`ChatTemplate.recover`), so the text is
  templated once, as `lens-ray score` templates it; an HH-RLHF-style prompt ("\\n\\nHuman: ...\\n\\nAssistant:")
  becomes the messages ingest makes of it; any other string is one user turn (`conversation`).
- /score: {"prompts": [str | chat messages], "responses": [str]} -> {"rewards": [float], "head", "model"}.

Every request is validated completely before any of it reaches the model: a JSON object no deeper than
`MAX_DEPTH`, the types, the counts, the sizes, and every text encodable as UTF-8 (a lone surrogate is not).
Every problem is a `BadRequest` naming the field (and item) and an HTTP status: 400 for a body that is not
JSON or nested too deeply, 413 for one too large, 422 for JSON of the wrong shape or content.
"""
from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any, Callable

from lens_ray.data.formats import parse_hh_transcript

Prompt = str | list[dict[str, str]]
MAX_DEPTH = 8                     # the deepest valid request: {"prompts": [[{"role": ...}]]} is 4 levels


class BadRequest(ValueError):
    def __init__(self, status: int, field: str, message: str):
        super().__init__(f"{field}: {message}")
        self.status, self.field, self.message = status, field, message

    def body(self) -> dict:
        return {"error": self.message, "field": self.field}


@dataclass
class Limits:
    max_body_bytes: int = 8 << 20        # a request body over this is refused (413)
    max_items: int = 1024                # texts per request
    max_text_chars: int = 100_000        # characters per prompt or response


@dataclass
class Items:
    """What to score: prompts (a string or chat messages) and responses, index-aligned."""
    prompts: list[Prompt]
    responses: list[str]


def messages(prompt: Prompt) -> list[dict[str, str]]:
    """A prompt as chat messages: a string is one user turn."""
    return [{"role": "user", "content": prompt}] if isinstance(prompt, str) else prompt


def parse_json(body: bytes, limits: Limits) -> dict:
    if len(body) > limits.max_body_bytes:
        raise BadRequest(413, "body", f"{len(body)} bytes, more than the limit of {limits.max_body_bytes}")
    try:
        obj = json.loads(body)
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise BadRequest(400, "body", f"not valid JSON ({exc})") from exc
    except RecursionError as exc:
        raise BadRequest(400, "body", f"JSON nested more than {MAX_DEPTH} levels deep") from exc
    if not isinstance(obj, dict):
        raise BadRequest(422, "body", "must be a JSON object")
    _depth(obj)
    return obj


def _depth(obj: Any) -> None:
    """Refuse JSON nested deeper than MAX_DEPTH (iteratively: no recursion on a client's input)."""
    stack = [(obj, 1)]
    while stack:
        value, depth = stack.pop()
        if depth > MAX_DEPTH:
            raise BadRequest(400, "body", f"JSON nested more than {MAX_DEPTH} levels deep")
        children = value.values() if isinstance(value, dict) else value if isinstance(value, list) else ()
        stack.extend((c, depth + 1) for c in children if isinstance(c, (dict, list)))


def _text(value: Any, where: str, limits: Limits) -> str:
    if not isinstance(value, str):
        raise BadRequest(422, where, f"not a string ({type(value).__name__})")
    if len(value) > limits.max_text_chars:
        raise BadRequest(422, where, f"{len(value)} characters, more than the limit of {limits.max_text_chars}")
    try:
        value.encode("utf-8")
    except UnicodeEncodeError as exc:
        raise BadRequest(422, where, f"not encodable text ({exc.reason} at character {exc.start})") from exc
    return value


def _list(obj: dict, name: str, limits: Limits, required: bool = True, allow_empty: bool = False) -> list | None:
    value = obj.get(name)
    if value is None and not required:
        return None
    if not isinstance(value, list):
        raise BadRequest(422, name, "missing or not a list")
    if not value and not allow_empty:
        raise BadRequest(422, name, "empty list")
    if len(value) > limits.max_items:
        raise BadRequest(422, name, f"{len(value)} items, more than the limit of {limits.max_items}")
    return value


def _strings(obj: dict, name: str, limits: Limits, required: bool = True,
             allow_empty: bool = False) -> list[str] | None:
    value = _list(obj, name, limits, required, allow_empty)
    return None if value is None else [_text(v, f"{name}[{i}]", limits) for i, v in enumerate(value)]


def _prompt(value: Any, where: str, limits: Limits) -> Prompt:
    if isinstance(value, str):
        return _text(value, where, limits)
    if isinstance(value, list) and value and all(isinstance(m, dict) for m in value):
        return [{"role": _text(m.get("role"), f"{where}[{j}].role", limits),
                 "content": _text(m.get("content"), f"{where}[{j}].content", limits)} for j, m in enumerate(value)]
    raise BadRequest(422, where, "neither a string nor a non-empty list of {role, content} messages")


def openrlhf_items(obj: dict, limits: Limits, template: "ChatTemplate | None" = None) -> Items:
    """OpenRLHF's request -> (prompt, response) per query. Its client decodes the (possibly left-truncated) prompt
    tokens and the response tokens back to one text, so a query need not start with its prompt: the response is
    what follows the longest end of the prompt that the query starts with (`prompt_overlap`), and the full prompt
    is scored with it. Empty lists (the shard a second reward URL gets of a one-sample batch) are valid."""
    queries = _strings(obj, "query", limits, allow_empty=True)
    prompts = _strings(obj, "prompts", limits, allow_empty=True)
    labels = _list(obj, "labels", limits, required=False, allow_empty=True)
    for name, other in (("prompts", prompts), ("labels", labels)):
        if other is not None and len(other) != len(queries):
            raise BadRequest(422, name, f"{len(other)} items but query has {len(queries)}")
    out = Items([], [])
    for i, (q, p) in enumerate(zip(queries, prompts)):
        shared = prompt_overlap(p, q)
        if shared == 0 and p:
            raise BadRequest(422, f"query[{i}]", f"shares no text with the end of prompts[{i}]: the response "
                             "cannot be told from the prompt")
        prompt, response = conversation(p, q[shared:], template)
        out.prompts.append(prompt)
        out.responses.append(response)
    return out


def prompt_overlap(prompt: str, query: str) -> int:
    """Length of the longest end of `prompt` that `query` starts with: the whole prompt when the query starts
    with it, less when the client cut the prompt's start to fit its context. Linear time (the KMP prefix
    function of query + sentinel + prompt), so a long prompt cannot make it quadratic."""
    s = query[:len(prompt)] + "\x00" + prompt            # \x00: a character no text carries (checked below)
    if "\x00" in prompt or "\x00" in query[:len(prompt)]:
        return len(prompt) if query.startswith(prompt) else 0
    fail = [0] * len(s)
    for i in range(1, len(s)):
        k = fail[i - 1]
        while k and s[i] != s[k]:
            k = fail[k - 1]
        fail[i] = k + (s[i] == s[k])
    return fail[-1]


def conversation(prompt: str, response: str, template: "ChatTemplate | None") -> tuple[Prompt, str]:
    """A prompt string as a consumer sends it -> (the messages lens-ray embeds, the response). A prompt rendered
    with the reward model's chat template (as OpenRLHF and TRL's plain-text datasets send it) becomes its messages
    again and the response loses the template's turn end; an HH-RLHF-style prompt ("\\n\\nHuman: ...
    \\n\\nAssistant:") becomes the messages ingest makes of it; any other string is one user turn."""
    if template:                                         # a response decoded with its end-of-turn token
        response = template.response(response)
    recovered = template.recover(prompt) if template else None
    if recovered:
        return recovered, response
    hh = hh_prompt(prompt)
    return (hh, response.strip()) if hh else (prompt, response)


HH_ASSISTANT = "\n\nAssistant:"


def hh_prompt(text: str) -> list[dict[str, str]] | None:
    """An HH-RLHF-style prompt ("\\n\\nHuman: ...\\n\\nAssistant:") as the messages ingest makes of it, or None."""
    if not (text.startswith(("\n\nHuman:", "Human:")) and text.endswith(HH_ASSISTANT)):
        return None
    try:
        return parse_hh_transcript(text if text.startswith("\n\n") else "\n\n" + text)[0]
    except ValueError:
        return None


def score_items(obj: dict, limits: Limits, template: "ChatTemplate | None" = None) -> Items:
    """/score's request -> its (prompt, response) items. Prompts come as messages or plain strings, never rendered
    with a template, so `template` is not read (it is every protocol's parser's parameter)."""
    raw = _list(obj, "prompts", limits)
    prompts = [_prompt(p, f"prompts[{i}]", limits) for i, p in enumerate(raw)]
    responses = _strings(obj, "responses", limits)
    if len(responses) != len(prompts):
        raise BadRequest(422, "responses", f"{len(responses)} items but prompts has {len(prompts)}")
    return Items(prompts, responses)


def openrlhf_reply(rewards: list[float], model: dict[str, str] | None = None) -> dict:
    """OpenRLHF reads "rewards" (used for the advantage) and "scores" (logged); both are the reward here."""
    return {"rewards": rewards, "scores": rewards, "extra_logs": {}}


def score_reply(rewards: list[float], model: dict[str, str] | None = None) -> dict:
    """/score's answer: the rewards and what scored them ({"head", "model"})."""
    return {"rewards": rewards, **(model or {})}


@dataclass(frozen=True)
class Protocol:
    """One wire protocol: a POST to `route` whose JSON body `parse` checks into Items (a BadRequest naming the
    field otherwise; `template` reads back chat-templated prompts), answered with `reply(rewards, model)`;
    `items` is the request's field an item's failure is reported under."""
    route: str
    items: str
    parse: Callable[[dict, Limits, "ChatTemplate | None"], Items]
    reply: Callable[[list[float], "dict[str, str] | None"], dict]


# Every protocol the reward server speaks (and its routes); a new one is one entry. The in-process callables of
# integrations.py use the same entries.
PROTOCOLS: dict[str, Protocol] = {
    "openrlhf": Protocol("/get_reward", "query", openrlhf_items, openrlhf_reply),
    "score": Protocol("/score", "responses", score_items, score_reply),
}


# ---------------------------------------------------------------- chat templates, read back

_MARK = "\x00lens-ray\x00"


@dataclass
class ChatTemplate:
    """A tokenizer's chat template, read backwards: a prompt rendered with it becomes its messages again.

    Each role's turn opens with a prefix and closes with `end`, learned by rendering one marked message per
    role; `lead` is what the template writes before the first turn (a BOS token), `generation` what it adds to
    ask for the assistant's turn. A read-back counts only when rendering the messages it found gives the text
    back exactly, so a template this cannot read (or a plain string that happens to look like one) is left as
    one user turn, never guessed."""
    turns: dict[str, str]
    end: str
    lead: str
    generation: str
    render: Callable[[list[dict[str, str]], bool], str] = field(repr=False, compare=False)

    @classmethod
    def learn(cls, tokenizer) -> "ChatTemplate | None":
        """None for a tokenizer without a chat template, or one whose turns cannot be told apart this way."""
        if not getattr(tokenizer, "chat_template", None):
            return None

        def render(msgs: list[dict[str, str]], generation: bool) -> str:
            return tokenizer.apply_chat_template(msgs, tokenize=False, add_generation_prompt=generation)
        try:
            rendered = {role: render([{"role": role, "content": _MARK}], False).split(_MARK)
                        for role in ("system", "user", "assistant")}
            asked = render([{"role": "user", "content": _MARK}], True)
        except Exception:                        # a template that refuses a lone role: prompts stay plain strings
            return None
        if any(len(parts) != 2 for parts in rendered.values()) or len({a for _, a in rendered.values()}) != 1:
            return None
        end = rendered["user"][1]
        turns = {role: before.rsplit(end, 1)[-1] for role, (before, _) in rendered.items()}
        system_like = turns["user"].replace("user", "system")
        lead = turns["system"][:-len(system_like)] if turns["system"].endswith(system_like) else ""
        turns["system"] = turns["system"][len(lead):]
        user_only = render([{"role": "user", "content": _MARK}], False)
        generation = asked[len(user_only):] if asked.startswith(user_only) else ""
        if not end or not all(turns.values()):
            return None
        return cls(turns, end, lead, generation, render)

    def recover(self, text: str) -> list[dict[str, str]] | None:
        """The messages of a prompt rendered with this template (ending before the assistant's turn), or None."""
        pos = len(self.lead) if text.startswith(self.lead) else 0
        found: list[dict[str, str]] = []
        while pos < len(text) and text[pos:] != self.generation:
            role = next((r for r, prefix in self.turns.items() if text.startswith(prefix, pos)), None)
            stop = text.find(self.end, pos + len(self.turns[role])) if role else -1
            if stop < 0:
                return None
            found.append({"role": role, "content": text[pos + len(self.turns[role]):stop]})
            pos = stop + len(self.end)
        if not found or found[-1]["role"] == "assistant":
            return None
        try:
            same = text in (self.render(found, True), self.render(found, False))
        except Exception:
            return None
        return found if same else None

    def response(self, text: str) -> str:
        """A generated response with the template's turn end (and what trails it) removed."""
        end = self.end.strip()
        stripped = text.rstrip()
        return stripped[: -len(end)] if end and stripped.endswith(end) else text
