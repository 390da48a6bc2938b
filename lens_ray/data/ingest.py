"""Ingest: files and hub sets in every format -> the data a run uses (`Datasets`). Reads through the store.

`read_table` reads jsonl / json / parquet (optionally .gz), a saved HF dataset folder or
hf://owner/name[/dir][:subset][@split]; `load_datasets` turns a `DataConfig` into seed pairs, evaluation pairs
(no prompt shared with the seed pairs) and Best-of-N prompts, each bad row counted or refused.
"""
from __future__ import annotations

import gzip
import io
import json
import re
import zlib
from typing import Any

from lens_ray.core import rng
from lens_ray.core.pairs import (
    DataError,
    Datasets,
    Pair,
    Quarantine,
    ScoredPrompt,
    prompt_fingerprints,
    renumber,
    split_by_group,
)
from lens_ray.core.rng import keyed_rng
from lens_ray.data.formats import detect_format, drop_duplicates, pairs_from_scored, to_pairs, to_scored
from lens_ray.store.storage import Storage, split_uri


def read_records(uri: str, quarantine: Quarantine | None = None) -> list[Any]:
    """The records of a file or hub set (see `read_table`); a bad line raises unless a quarantine counts it."""
    return read_table(uri, quarantine or Quarantine("error"))[0]


def read_table(uri: str, q: Quarantine) -> tuple[list[Any], list[str]]:
    """jsonl / json / parquet (optionally .gz), a saved HF dataset folder, or hf://owner/name[/dir][:subset][@split]
    -> (records, where each came from: "line N" of a jsonl file, else "row N"). A jsonl line that is not
    UTF-8 or not JSON is quarantined; a file that cannot be read at all is a DataError naming it."""
    if uri.startswith("hf://"):
        rows = _read_hub(uri[len("hf://"):])
        return rows, [f"row {i}" for i in range(len(rows))]
    store, path = split_uri(uri)
    if not store.exists(path):
        raise DataError(f"{uri}: no such file or folder; give your preference data with --data (make run: "
                        "DATA=...): jsonl, json or parquet, a saved dataset folder, or hf://owner/name[/dir][@split]")
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
    if not store.local:
        raise DataError(f"{uri}: a saved HF dataset folder must be local")
    try:
        ds = datasets.load_from_disk(store.local_path(path))
    except (FileNotFoundError, ValueError) as exc:
        raise DataError(f"{uri}: a folder, but not a saved HF dataset ({exc})") from exc
    if isinstance(ds, datasets.DatasetDict):
        ds = ds[sorted(ds.keys())[0]] if "train" not in ds else ds["train"]
    return ds.to_list()


def _read_hub(spec: str) -> list[dict[str, Any]]:
    """hf://owner/name[/dir][:subset][@split] -> its rows (dir: a folder of the data set's repository, as
    HH-RLHF's harmless-base); a malformed spec, an unreachable hub or a hub failure is a DataError in one line."""
    repo, _, split = spec.partition("@")
    where, _, subset = repo.partition(":")
    if not re.fullmatch(r"[\w.-]+/[\w.-]+(/[\w.-]+)*", where):
        raise DataError(f"hf://{spec}: give hf://owner/name[/dir][:subset][@split], e.g. "
                        "hf://Anthropic/hh-rlhf/harmless-base@test")
    owner, name, *folder = where.split("/")
    from lens_ray.data.hub import hub_unreachable
    if why := hub_unreachable():
        raise DataError(f"hf://{spec}: the Hugging Face hub is not reachable from here ({why}); download the "
                        "data and give its path")
    import datasets
    try:
        return datasets.load_dataset(f"{owner}/{name}", subset or None, data_dir="/".join(folder) or None,
                                     split=split or "train").to_list()
    except Exception as exc:                          # any hub or dataset failure: one line, not its traceback
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise DataError(f"hf://{spec}: cannot load it from the hub ({first[:300]})") from exc


# ---------------------------------------------------------------- the run's data

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
