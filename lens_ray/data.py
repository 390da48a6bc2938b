"""Ingest: files and hub sets in several formats -> one canonical pair table. No Ray.

Canonical pair: pair_id, prompt (chat messages [{role, content}, ...]), chosen, rejected (response
strings), group (a hash of the prompt: splits never put one prompt on both sides).
Scored completions (instruction + responses[{output, gold}]) become `ScoredPrompt`s; pairs are drawn
from them by a gold margin, and Best-of-N evaluates on them.

Bad rows raise `DataError` naming the file, the row (or line) and the field (on_bad_row="error") or are
counted in a `Quarantine` by reason (on_bad_row="quarantine"); none is dropped silently. Exact duplicate
pairs are counted too (quarantined, or kept and counted: data.duplicates).
"""
from __future__ import annotations

import gzip
import hashlib
import io
import json
import re
import zlib
from collections import Counter
from dataclasses import dataclass, field
from typing import Any, Iterable

import numpy as np

from lens_ray import rng
from lens_ray.rng import keyed_rng
from lens_ray.storage import Storage, split_uri

Messages = list[dict[str, str]]


class DataError(ValueError):
    """A row that cannot be used; the message names the source row and the field."""


@dataclass
class Quarantine:
    mode: str = "quarantine"
    counts: Counter = field(default_factory=Counter)
    examples: dict[str, str] = field(default_factory=dict)
    source: str = ""                    # the file being read, named in errors and examples

    def reject(self, where: int | str, fld: str, reason: str, detail: str = "") -> None:
        """where: a row index or a label such as "line 12"; counted by (field, reason), the example keeps the
        row, the file and the detail."""
        where = f"row {where}" if isinstance(where, int) else where
        msg = f"{self.source + ': ' if self.source else ''}{where}: field '{fld}': {reason}{detail}"
        if self.mode == "error":
            raise DataError(msg)
        key = _INDEX.sub("[]", fld) + f": {reason}"
        self.counts[key] += 1
        self.examples.setdefault(key, msg)

    def summary(self, most: int = 3) -> str:
        """The commonest reasons, with an example each, for an error message."""
        common = self.counts.most_common(most)
        return "; ".join(f"{n} x '{key}' (e.g. {self.examples.get(key, key)})" for key, n in common)


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

def read_records(uri: str, quarantine: Quarantine | None = None) -> list[Any]:
    """The records of a file or hub set (see `read_table`); a bad line raises unless a quarantine counts it."""
    return read_table(uri, quarantine or Quarantine("error"))[0]


def read_table(uri: str, q: Quarantine) -> tuple[list[Any], list[str]]:
    """jsonl / json / parquet (optionally .gz), a saved HF dataset folder, or hf://owner/name[:subset][@split]
    -> (records, where each came from: "line N" of a jsonl file, else "row N"). A jsonl line that is not
    UTF-8 or not JSON is quarantined; a file that cannot be read at all is a DataError naming it."""
    if uri.startswith("hf://"):
        rows = _read_hub(uri[len("hf://"):])
        return rows, [f"row {i}" for i in range(len(rows))]
    store, path = split_uri(uri)
    if store.isdir(path):
        rows = _read_saved_dataset(uri, store, path)
        return rows, [f"row {i}" for i in range(len(rows))]
    raw, name = store.read_bytes(path), uri.lower()
    if name.endswith(".gz"):
        try:
            raw, name = gzip.decompress(raw), name[:-3]
        except (OSError, EOFError, zlib.error) as exc:
            raise DataError(f"{uri}: not a readable gzip file ({exc})") from exc
    if name.endswith((".csv", ".tsv", ".txt", ".xlsx")):
        raise DataError(f"{uri}: {name.rsplit('.', 1)[1]} is not a supported format; give jsonl, json or parquet "
                        "rows with prompt/chosen/rejected (or instruction/responses)")
    if name.endswith(".parquet"):
        import pyarrow as pa
        import pyarrow.parquet as pq
        try:
            rows = pq.read_table(io.BytesIO(raw)).to_pylist()
        except (pa.ArrowException, OSError) as exc:
            raise DataError(f"{uri}: not a readable parquet file ({str(exc).splitlines()[0]})") from exc
        return rows, [f"row {i}" for i in range(len(rows))]
    if name.endswith(".json"):
        return _read_json(uri, raw)
    return _read_jsonl(uri, raw, q)


def _read_json(uri: str, raw: bytes) -> tuple[list[Any], list[str]]:
    try:
        obj = json.loads(raw.decode("utf-8"))
    except UnicodeDecodeError as exc:
        line = raw[:exc.start].count(b"\n") + 1
        raise DataError(f"{uri}: line {line}: not UTF-8 text") from exc
    except json.JSONDecodeError as exc:
        raise DataError(f"{uri}: line {exc.lineno}: not JSON ({exc.msg})") from exc
    if isinstance(obj, dict):
        obj = obj.get("data", obj.get("rows"))
    if not isinstance(obj, list):
        raise DataError(f"{uri}: a .json file must hold a list of rows (or {{'data': [...]}})")
    return obj, [f"row {i}" for i in range(len(obj))]


def _read_jsonl(uri: str, raw: bytes, q: Quarantine) -> tuple[list[Any], list[str]]:
    rows, where, q.source = [], [], uri
    for i, line in enumerate(raw.split(b"\n")):
        if not line.strip():
            continue
        try:
            rows.append(json.loads(line.decode("utf-8")))
            where.append(f"line {i + 1}")
        except UnicodeDecodeError:
            q.reject(f"line {i + 1}", "*", "not UTF-8 text")
        except json.JSONDecodeError as exc:
            q.reject(f"line {i + 1}", "*", "not JSON", f" ({exc.msg})")
    return rows, where


def _read_saved_dataset(uri: str, store: Storage, path: str) -> list[Any]:
    import datasets
    if store.protocol != "file":
        raise DataError(f"{uri}: a saved HF dataset folder must be local")
    try:
        ds = datasets.load_from_disk(store.local_path(path))
    except (FileNotFoundError, ValueError) as exc:
        raise DataError(f"{uri}: a folder, but not a saved HF dataset ({exc})") from exc
    if isinstance(ds, datasets.DatasetDict):
        ds = ds[sorted(ds.keys())[0]] if "train" not in ds else ds["train"]
    return ds.to_list()


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
                    pairs.append(Pair(len(pairs), sp.prompt, sp.outputs[hi], sp.outputs[lo], sp.source_row))
                    used |= {a, b}
                    made += 1
                    break
    return pairs


# ---------------------------------------------------------------- splits

def group_rows(keys: list[str]) -> dict[str, list[int]]:
    """Row indices by key (a prompt's hash), keys in first-seen order: rows of one prompt move together."""
    members: dict[str, list[int]] = {}
    for i, key in enumerate(keys):
        members.setdefault(key, []).append(i)
    return members


def split_by_group(pairs: list[Pair], n_first: int,
                   gen: np.random.Generator) -> tuple[list[Pair], list[Pair], int]:
    """Shuffle prompt groups with `gen`; the first takes whole groups until it holds n_first pairs.

    Returns (first, rest, dropped): the last group taken is cut to reach n_first exactly, and its
    leftover pairs are dropped from both sides (counted) so that no prompt is on both sides.
    """
    groups = list(group_rows([p.group for p in pairs]).values())
    first: list[Pair] = []
    rest: list[Pair] = []
    dropped = 0
    for g in gen.permutation(len(groups)):
        members = [pairs[i] for i in groups[g]]
        if len(first) < n_first:
            take = n_first - len(first)
            first += members[:take]
            dropped += max(0, len(members) - take)
        else:
            rest += members
    return first, rest, dropped


@dataclass
class Split:
    """One seed's view of the seed pairs: training rows and validation rows (for early stopping)."""
    seed: int
    train: np.ndarray      # indices into the seed pairs
    val: np.ndarray


def seed_splits(pairs: list[Pair], val_fraction: float, seeds: int, split_seed: int) -> list[Split]:
    """Per seed, a validation part of the seed pairs by whole prompts (a different part per seed)."""
    out = []
    n_val = max(1, int(round(len(pairs) * val_fraction)))
    for s in range(seeds):
        val, train, _ = split_by_group(pairs, n_val, keyed_rng(split_seed, rng.VAL_SPLIT, s))
        out.append(Split(s, np.array([p.pair_id for p in train]), np.array([p.pair_id for p in val])))
    return out


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


def load_datasets(cfg) -> Datasets:
    """DataConfig -> seed pairs, eval pairs (no prompt shared with the seed pairs) and BoN prompts."""
    q = Quarantine(cfg.on_bad_row)
    notes: dict[str, int] = {}
    pairs, bon_prompts, n_rows = _source_pairs(cfg, q, notes)
    if len(pairs) < cfg.seed_pairs:
        why = f"; quarantined: {q.summary()}" if q.counts else ""
        raise DataError(f"{cfg.data}: {len(pairs)} usable pairs from {n_rows} rows, fewer than "
                        f"seed_pairs={cfg.seed_pairs}{why}")
    seed, rest, dropped = split_by_group(pairs, cfg.seed_pairs, keyed_rng(cfg.split_seed, rng.SEED_EVAL))
    notes["pairs_dropped_group_overlap"] = dropped
    eval_pairs = _eval_pairs(cfg, seed, rest, q, notes)
    bon_prompts = _bon_prompts(cfg, bon_prompts, q)
    notes["seed_prompts"] = len(prompt_fingerprints(seed))
    notes["eval_prompts"] = len(prompt_fingerprints(eval_pairs))
    return Datasets(renumber(seed), renumber(eval_pairs), bon_prompts, q, notes)


def _source_pairs(cfg, q: Quarantine, notes: dict) -> tuple[list[Pair], list[ScoredPrompt], int]:
    """The pairs of `data` (and, for scored completions used for both, the prompts kept for Best-of-N)."""
    rows, where = read_table(cfg.data, q)
    q.source = cfg.data
    bon_prompts: list[ScoredPrompt] = []
    first = next((r for r in rows if isinstance(r, dict)), None)
    if first is not None and detect_format(first) == "scored":
        scored = to_scored(rows, q, where)
        if cfg.bon_data is None or cfg.bon_data == cfg.data:
            # one scored set for both: pairs from some prompts, Best-of-N on the others
            order = keyed_rng(cfg.split_seed, rng.SCORED_SPLIT).permutation(len(scored))
            n_bon = int(round(len(scored) * cfg.bon_prompt_fraction))
            bon_prompts = [scored[i] for i in sorted(order[:n_bon])]
            scored = [scored[i] for i in sorted(order[n_bon:])]
        pairs = pairs_from_scored(scored, cfg.gold_margin, cfg.pairs_per_prompt, cfg.split_seed)
    else:
        pairs = to_pairs(rows, q, where)
    notes["pairs_read"] = len(pairs)
    pairs, notes["duplicate_pairs"] = drop_duplicates(pairs, cfg.duplicates, q)
    return pairs, bon_prompts, len(rows)


def _eval_pairs(cfg, seed: list[Pair], rest: list[Pair], q: Quarantine, notes: dict) -> list[Pair]:
    if cfg.eval_data:
        rows, where = read_table(cfg.eval_data, q)
        q.source = cfg.eval_data
        eval_pairs, dupes = drop_duplicates(to_pairs(rows, q, where), cfg.duplicates, q)
        notes["duplicate_pairs"] += dupes
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
        raise DataError(f"{cfg.eval_data or cfg.data}: no pairs left for evaluation; lower seed_pairs or give "
                        "eval_data")
    return eval_pairs


def _bon_prompts(cfg, bon_prompts: list[ScoredPrompt], q: Quarantine) -> list[ScoredPrompt]:
    if cfg.bon_data and cfg.bon_data != cfg.data and not bon_prompts:
        rows, where = read_table(cfg.bon_data, q)
        q.source = cfg.bon_data
        bon_prompts = to_scored(rows, q, where)
    if not bon_prompts:
        return []
    for sp in bon_prompts:
        if len(sp.outputs) < cfg.bon_n:
            q.reject(sp.source_row, "responses", f"fewer than N={cfg.bon_n} usable responses for Best-of-N")
    bon_prompts = [sp for sp in bon_prompts if len(sp.outputs) >= cfg.bon_n]
    return bon_prompts[: cfg.bon_prompts] if cfg.bon_prompts is not None else bon_prompts
