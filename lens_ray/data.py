"""Ingest: files and hub sets in several formats -> one canonical pair table. No Ray.

Canonical pair: pair_id, prompt (chat messages [{role, content}, ...]), chosen, rejected (response
strings), group (a hash of the prompt: splits never put one prompt on both sides).
Scored completions (instruction + responses[{output, gold}]) become `ScoredPrompt`s; pairs are drawn
from them by a gold margin, and Best-of-N evaluates on them.

Bad rows raise `DataError` naming the row and field (on_bad_row="error") or are counted in a
`Quarantine` by reason (on_bad_row="quarantine"); none is dropped silently.
"""
from __future__ import annotations

import gzip
import hashlib
import io
import json
import re
from collections import Counter
from dataclasses import dataclass, field
from typing import Any, Iterable

import numpy as np

from lens_ray.storage import Storage, split_uri

Messages = list[dict[str, str]]


class DataError(ValueError):
    """A row that cannot be used; the message names the source row and the field."""


@dataclass
class Quarantine:
    mode: str = "quarantine"
    counts: Counter = field(default_factory=Counter)
    examples: dict[str, str] = field(default_factory=dict)

    def reject(self, row: int, fld: str, reason: str) -> None:
        msg = f"row {row}: field '{fld}': {reason}"
        if self.mode == "error":
            raise DataError(msg)
        key = _INDEX.sub("[]", fld) + f": {reason}"     # counted by reason; the example keeps the index
        self.counts[key] += 1
        self.examples.setdefault(key, msg)


@dataclass
class Pair:
    pair_id: int
    prompt: Messages
    chosen: str
    rejected: str
    source_row: int

    @property
    def group(self) -> str:
        return prompt_key(self.prompt)


@dataclass
class ScoredPrompt:
    prompt_id: int
    prompt: Messages
    outputs: list[str]
    gold: np.ndarray        # (n_responses,)
    source_row: int


def prompt_key(prompt: Messages) -> str:
    return hashlib.sha256(json.dumps(prompt, sort_keys=True).encode()).hexdigest()[:16]


# ---------------------------------------------------------------- reading records

def read_records(uri: str) -> list[dict[str, Any]]:
    """jsonl / json / parquet (optionally .gz), a saved HF dataset folder, or hf://owner/name[:subset][@split]."""
    if uri.startswith("hf://"):
        return _read_hub(uri[len("hf://"):])
    store, path = split_uri(uri)
    if store.isdir(path):
        import datasets
        if store.protocol != "file":
            raise DataError(f"{uri}: a saved HF dataset folder must be local")
        ds = datasets.load_from_disk(store.local_path(path))
        if isinstance(ds, datasets.DatasetDict):
            ds = ds[sorted(ds.keys())[0]] if "train" not in ds else ds["train"]
        return ds.to_list()
    raw = store.read_bytes(path)
    name = uri.lower()
    if name.endswith(".gz"):
        raw, name = gzip.decompress(raw), name[:-3]
    if name.endswith(".parquet"):
        import pyarrow.parquet as pq
        return pq.read_table(io.BytesIO(raw)).to_pylist()
    text = raw.decode("utf-8")
    if name.endswith(".json"):
        obj = json.loads(text)
        if isinstance(obj, dict):
            obj = obj.get("data", obj.get("rows"))
        if not isinstance(obj, list):
            raise DataError(f"{uri}: a .json file must hold a list of rows (or {{'data': [...]}})")
        return obj
    rows = []
    for i, line in enumerate(text.splitlines()):
        if line.strip():
            try:
                rows.append(json.loads(line))
            except json.JSONDecodeError as exc:
                raise DataError(f"{uri}: line {i + 1} is not JSON: {exc.msg}") from exc
    return rows


def _read_hub(spec: str) -> list[dict[str, Any]]:
    import datasets
    spec, _, split = spec.partition("@")
    name, _, subset = spec.partition(":")
    return datasets.load_dataset(name, subset or None, split=split or "train").to_list()


# ---------------------------------------------------------------- formats

_INDEX = re.compile(r"\[\d+\]")
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


def to_pairs(rows: Iterable[dict[str, Any]], quarantine: Quarantine) -> list[Pair]:
    """Explicit prompt/chosen/rejected rows or HH transcripts -> pairs (scored rows: see `to_scored`)."""
    pairs: list[Pair] = []
    for i, row in enumerate(rows):
        if not isinstance(row, dict):
            quarantine.reject(i, "*", "row is not an object")
            continue
        fmt = detect_format(row)
        try:
            if fmt == "hh":
                for fld in ("chosen", "rejected"):
                    if not isinstance(row[fld], str):
                        raise _Bad(fld, "not a transcript string")
                try:
                    prompt, chosen = parse_hh_transcript(row["chosen"])
                except ValueError as exc:
                    raise _Bad("chosen", str(exc)) from exc
                try:
                    prompt_r, rejected = parse_hh_transcript(row["rejected"])
                except ValueError as exc:
                    raise _Bad("rejected", str(exc)) from exc
                if prompt_r != prompt:
                    raise _Bad("rejected", "its dialogue differs from chosen before the last Assistant turn")
            elif fmt == "explicit":
                try:
                    prompt = _as_prompt(row["prompt"])
                except ValueError as exc:
                    raise _Bad("prompt", str(exc)) from exc
                responses = []
                for fld in ("chosen", "rejected"):
                    try:
                        responses.append(_as_response(row[fld])[1])
                    except ValueError as exc:
                        raise _Bad(fld, str(exc)) from exc
                chosen, rejected = responses
            else:
                raise _Bad("*", "unknown format: expected prompt/chosen/rejected, HH chosen/rejected "
                                "transcripts, or instruction/responses")
            if not chosen:
                raise _Bad("chosen", "empty response")
            if not rejected:
                raise _Bad("rejected", "empty response")
            if chosen == rejected:
                raise _Bad("rejected", "identical to chosen")
        except _Bad as bad:
            quarantine.reject(i, bad.field, bad.reason)
            continue
        pairs.append(Pair(len(pairs), prompt, chosen, rejected, i))
    return pairs


def to_scored(rows: Iterable[dict[str, Any]], quarantine: Quarantine) -> list[ScoredPrompt]:
    """instruction + responses[{output, gold}] rows -> scored prompts; bad responses are quarantined one by one."""
    out: list[ScoredPrompt] = []
    for i, row in enumerate(rows):
        if not isinstance(row, dict) or detect_format(row) != "scored":
            quarantine.reject(i, "*", "not an instruction/responses row")
            continue
        try:
            prompt = _as_prompt(row["instruction"])
        except ValueError as exc:
            quarantine.reject(i, "instruction", str(exc))
            continue
        outputs, gold = [], []
        for j, resp in enumerate(row["responses"] or []):
            g = resp.get("gold") if isinstance(resp, dict) else None
            text = resp.get("output") if isinstance(resp, dict) else None
            if not isinstance(text, str) or not text.strip():
                quarantine.reject(i, f"responses[{j}].output", "missing or empty")
            elif not isinstance(g, (int, float)) or not np.isfinite(g):
                quarantine.reject(i, f"responses[{j}].gold", "missing or not a finite number")
            else:
                outputs.append(text.strip())
                gold.append(float(g))
        if len(outputs) < 2:
            quarantine.reject(i, "responses", "fewer than 2 usable responses")
            continue
        out.append(ScoredPrompt(len(out), prompt, outputs, np.asarray(gold), i))
    return out


class _Bad(Exception):
    def __init__(self, fld: str, reason: str):
        super().__init__(f"{fld}: {reason}")
        self.field, self.reason = fld, reason


def pairs_from_scored(prompts: list[ScoredPrompt], margin: float, per_prompt: int, seed: int) -> list[Pair]:
    """Up to `per_prompt` pairs per prompt with gold(chosen) - gold(rejected) >= margin, no response reused."""
    rng = np.random.default_rng(seed)
    pairs: list[Pair] = []
    for sp in prompts:
        order = rng.permutation(len(sp.outputs))
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
                    pairs.append(Pair(len(pairs), sp.prompt, sp.outputs[hi], sp.outputs[lo], sp.source_row))
                    used |= {a, b}
                    made += 1
                    break
    return pairs


# ---------------------------------------------------------------- splits

def split_by_group(pairs: list[Pair], n_first: int, seed: int) -> tuple[list[Pair], list[Pair], int]:
    """Shuffle prompt groups with `seed`; the first takes whole groups until it holds n_first pairs.

    Returns (first, rest, dropped): the last group taken is cut to reach n_first exactly, and its
    leftover pairs are dropped from both sides (counted) so that no prompt is on both sides.
    """
    groups: dict[str, list[Pair]] = {}
    for p in pairs:
        groups.setdefault(p.group, []).append(p)
    keys = list(groups)
    rng = np.random.default_rng(seed)
    first: list[Pair] = []
    rest: list[Pair] = []
    dropped = 0
    for g in (keys[i] for i in rng.permutation(len(keys))):
        members = groups[g]
        if len(first) < n_first:
            take = n_first - len(first)
            first += members[:take]
            dropped += max(0, len(members) - take)
        else:
            rest += members
    return first, rest, dropped


def renumber(pairs: list[Pair]) -> list[Pair]:
    return [Pair(i, p.prompt, p.chosen, p.rejected, p.source_row) for i, p in enumerate(pairs)]


def prompt_fingerprints(pairs: list[Pair]) -> set[str]:
    return {p.group for p in pairs}


@dataclass
class Datasets:
    """Everything a run evaluates on, after validation and splitting."""
    seed_pairs: list[Pair]
    eval_pairs: list[Pair]
    bon_prompts: list[ScoredPrompt]
    quarantine: Quarantine
    notes: dict[str, int] = field(default_factory=dict)


def load_datasets(cfg, storage: Storage | None = None) -> Datasets:
    """DataConfig -> seed pairs, eval pairs (no prompt shared with the seed pairs) and BoN prompts."""
    q = Quarantine(cfg.on_bad_row)
    notes: dict[str, int] = {}
    rows = read_records(cfg.data)
    bon_prompts: list[ScoredPrompt] = []
    if rows and detect_format(rows[0]) == "scored":
        scored = to_scored(rows, q)
        if cfg.bon_data is None or cfg.bon_data == cfg.data:
            # one scored set for both: pairs from some prompts, Best-of-N on the others
            order = np.random.default_rng(cfg.split_seed).permutation(len(scored))
            n_bon = int(round(len(scored) * cfg.bon_prompt_fraction))
            bon_prompts = [scored[i] for i in sorted(order[:n_bon])]
            scored = [scored[i] for i in sorted(order[n_bon:])]
        pairs = pairs_from_scored(scored, cfg.gold_margin, cfg.pairs_per_prompt, cfg.split_seed)
    else:
        pairs = to_pairs(rows, q)
    notes["pairs_read"] = len(pairs)
    if len(pairs) < cfg.seed_pairs:
        raise DataError(f"{cfg.data}: {len(pairs)} usable pairs, fewer than seed_pairs={cfg.seed_pairs}")
    seed, rest, dropped = split_by_group(pairs, cfg.seed_pairs, cfg.split_seed)
    notes["pairs_dropped_group_overlap"] = dropped
    if cfg.eval_data:
        eval_pairs = to_pairs(read_records(cfg.eval_data), q)
        seen = prompt_fingerprints(seed)
        overlap = [p for p in eval_pairs if p.group in seen]
        if overlap:
            notes["eval_pairs_dropped_prompt_in_seed"] = len(overlap)
            eval_pairs = [p for p in eval_pairs if p.group not in seen]
    else:
        eval_pairs = rest
    if cfg.eval_pairs is not None:
        eval_pairs = eval_pairs[: cfg.eval_pairs]
    if not eval_pairs:
        raise DataError(f"{cfg.data}: no pairs left for evaluation; lower seed_pairs or give eval_data")
    if cfg.bon_data and cfg.bon_data != cfg.data and not bon_prompts:
        bon_prompts = to_scored(read_records(cfg.bon_data), q)
    if bon_prompts:
        short = [sp for sp in bon_prompts if len(sp.outputs) < cfg.bon_n]
        for sp in short:
            q.reject(sp.source_row, "responses", f"fewer than N={cfg.bon_n} usable responses for Best-of-N")
        bon_prompts = [sp for sp in bon_prompts if len(sp.outputs) >= cfg.bon_n]
        if cfg.bon_prompts is not None:
            bon_prompts = bon_prompts[: cfg.bon_prompts]
    return Datasets(renumber(seed), renumber(eval_pairs), bon_prompts, q, notes)
