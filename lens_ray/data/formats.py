"""Row formats -> canonical pairs and scored prompts. Pure Python: no Ray, no storage.

- explicit: prompt / chosen / rejected (strings, or chat-message lists whose last turn is the assistant's);
- hh: HH-RLHF transcripts (`chosen` / `rejected`, split at the last Assistant turn);
- scored: `instruction` + `responses[{output, gold}]`; pairs are drawn by a gold margin, and Best-of-N
  evaluates on them.
A bad row is rejected through the `Quarantine` (counted, or a `DataError` naming the row and field).
"""
from __future__ import annotations

import re
from typing import Any, Iterable

import numpy as np

from lens_ray.core import rng
from lens_ray.core.pairs import Messages, Pair, Quarantine, ScoredPrompt, renumber
from lens_ray.core.rng import keyed_rng

# gold scores are rewards, ratings or win rates: beyond this they are a unit error or garbage, and sums of
# millions of them (the k-fold's Best-of-N means) would overflow to inf
MAX_GOLD = 1e9
_TURN = re.compile(r"\n\n(Human|Assistant):")


def parse_hh_transcript(text: str) -> tuple[Messages, str]:
    """'\\n\\nHuman: .. \\n\\nAssistant: ..' -> (messages before the last Assistant turn, its text)."""
    cut = text.rfind("\n\nAssistant:")
    if cut < 0:
        raise ValueError("no '\\n\\nAssistant:' turn")
    head, response = text[:cut], text[cut + len("\n\nAssistant:"):].strip()
    parts = _TURN.split(head)
    messages: Messages = []
    for role, content in zip(parts[1::2], parts[2::2]):
        messages.append({"role": "user" if role == "Human" else "assistant", "content": content.strip()})
    if not messages:
        if head.strip():
            messages = [{"role": "user", "content": head.strip()}]
        else:
            raise ValueError("empty prompt before the last Assistant turn")
    return messages, response


def _as_prompt(value: Any) -> Messages:
    if isinstance(value, str):
        if not value.strip():
            raise ValueError("empty")
        return [{"role": "user", "content": value}]
    if isinstance(value, list) and value and all(isinstance(m, dict) and {"role", "content"} <= set(m) for m in value):
        return [{"role": str(m["role"]), "content": str(m["content"])} for m in value]
    raise ValueError("neither a string nor a list of {role, content} messages")


def _as_response(value: Any) -> tuple[Messages | None, str]:
    """A response string, or a conversation whose last message is the assistant's response."""
    if isinstance(value, str):
        return None, value.strip()
    if isinstance(value, list) and value and isinstance(value[-1], dict) and value[-1].get("role") == "assistant":
        return (_as_prompt(value[:-1]) if len(value) > 1 else None), str(value[-1].get("content", "")).strip()
    raise ValueError("neither a string nor a message list ending with an assistant turn")


def detect_format(row: dict[str, Any]) -> str:
    if "instruction" in row and "responses" in row:
        return "scored"
    if "chosen" in row and "rejected" in row:
        return "explicit" if "prompt" in row else "hh"
    return "unknown"


def to_pairs(rows: Iterable[Any], quarantine: Quarantine, where: list[str] | None = None) -> list[Pair]:
    """Explicit prompt/chosen/rejected rows or HH transcripts -> pairs (scored rows: see `to_scored`).
    where: each row's label in messages ("line 12"); default "row i"."""
    pairs: list[Pair] = []
    for i, row in enumerate(rows):
        try:
            prompt, chosen, rejected = _pair_of(row)
        except _Bad as bad:
            quarantine.reject(where[i] if where else i, bad.field, bad.reason)
            continue
        pairs.append(Pair(len(pairs), prompt, chosen, rejected, i))
    return pairs


def _pair_of(row: Any) -> tuple[Messages, str, str]:
    if not isinstance(row, dict):
        raise _Bad("*", "row is not an object")
    fmt = detect_format(row)
    if fmt == "hh":
        for fld in ("chosen", "rejected"):
            if not isinstance(row[fld], str):
                raise _Bad(fld, "not a transcript string")
        prompt, chosen = _parsed("chosen", parse_hh_transcript, row["chosen"])
        prompt_r, rejected = _parsed("rejected", parse_hh_transcript, row["rejected"])
        if prompt_r != prompt:
            raise _Bad("rejected", "its dialogue differs from chosen before the last Assistant turn")
    elif fmt == "explicit":
        prompt = _parsed("prompt", _as_prompt, row["prompt"])
        chosen = _parsed("chosen", _as_response, row["chosen"])[1]
        rejected = _parsed("rejected", _as_response, row["rejected"])[1]
    else:
        raise _Bad("*", "unknown format: expected prompt/chosen/rejected, HH chosen/rejected transcripts, or "
                        "instruction/responses")
    if not chosen:
        raise _Bad("chosen", "empty response")
    if not rejected:
        raise _Bad("rejected", "empty response")
    if chosen == rejected:
        raise _Bad("rejected", "identical to chosen")
    return prompt, chosen, rejected


def _parsed(fld: str, parse, value):
    try:
        return parse(value)
    except ValueError as exc:
        raise _Bad(fld, str(exc)) from exc


def to_scored(rows: Iterable[Any], quarantine: Quarantine, where: list[str] | None = None) -> list[ScoredPrompt]:
    """instruction + responses[{output, gold}] rows -> scored prompts; bad responses are quarantined one by one."""
    out: list[ScoredPrompt] = []
    for i, row in enumerate(rows):
        at = where[i] if where else i
        if not isinstance(row, dict) or detect_format(row) != "scored":
            quarantine.reject(at, "*", "not an instruction/responses row")
            continue
        try:
            prompt = _as_prompt(row["instruction"])
        except ValueError as exc:
            quarantine.reject(at, "instruction", str(exc))
            continue
        if not isinstance(row["responses"], list):
            quarantine.reject(at, "responses", "not a list of {output, gold}")
            continue
        outputs, gold = [], []
        for j, resp in enumerate(row["responses"]):
            g = resp.get("gold") if isinstance(resp, dict) else None
            text = resp.get("output") if isinstance(resp, dict) else None
            if not isinstance(text, str) or not text.strip():
                quarantine.reject(at, f"responses[{j}].output", "missing or empty")
            elif not isinstance(g, (int, float)) or isinstance(g, bool) or not np.isfinite(g):
                quarantine.reject(at, f"responses[{j}].gold", "missing or not a finite number")
            elif abs(g) > MAX_GOLD:
                quarantine.reject(at, f"responses[{j}].gold", f"beyond ±{MAX_GOLD:.0e}")
            else:
                outputs.append(text.strip())
                gold.append(float(g))
        if len(outputs) < 2:
            quarantine.reject(at, "responses", "fewer than 2 usable responses")
            continue
        out.append(ScoredPrompt(len(out), prompt, outputs, np.asarray(gold), i))
    return out


def drop_duplicates(pairs: list[Pair], mode: str, q: Quarantine) -> tuple[list[Pair], int]:
    """Exact duplicate pairs (same prompt, chosen, rejected) after the first: counted in the quarantine and
    left out (mode "quarantine"), or kept (mode "keep"). Returns (pairs, duplicates found)."""
    seen: set[tuple] = set()
    out, dupes = [], 0
    for p in pairs:
        key = (p.group, p.chosen, p.rejected)
        if key in seen:
            dupes += 1
            if mode == "quarantine":
                q.counts["duplicate pair (same prompt, chosen and rejected)"] += 1
                continue
        seen.add(key)
        out.append(p)
    return renumber(out), dupes


class _Bad(Exception):
    def __init__(self, fld: str, reason: str):
        super().__init__(f"{fld}: {reason}")
        self.field, self.reason = fld, reason


def pairs_from_scored(prompts: list[ScoredPrompt], margin: float, per_prompt: int, seed: int) -> list[Pair]:
    """Up to `per_prompt` pairs per prompt with gold(chosen) - gold(rejected) >= margin, no response reused."""
    gen = keyed_rng(seed, rng.SCORED_PAIRS)
    pairs: list[Pair] = []
    for sp in prompts:
        order = gen.permutation(len(sp.outputs))
        used: set[int] = set()
        made = 0
        for a in order:
            if made >= per_prompt:
                break
            if a in used:
                continue
            for b in order:
                if b != a and b not in used and abs(sp.gold[a] - sp.gold[b]) >= margin:
                    hi, lo = (a, b) if sp.gold[a] > sp.gold[b] else (b, a)
                    pairs.append(Pair(len(pairs), sp.prompt, sp.outputs[hi], sp.outputs[lo], sp.source_row,
                                      float(sp.gold[hi]), float(sp.gold[lo])))
                    used |= {a, b}
                    made += 1
                    break
    return pairs

