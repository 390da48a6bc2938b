"""Batch scoring (`jobs/batch_score.py`, `lens-ray batch-score`): every (prompt, response) of a data set scored by a
run's head, embedded on the cluster's embedding actors with the run's cache. Composes ingest, the Ray Data
embedding and the head; adds only output.

- preference pairs -> one row per pair (chosen and rejected rewards) and the accuracy;
- scored completions (or any prompt with several responses) -> one row per response and, per prompt, the
  Best-of-N pick among its first N responses, with its gold score where the data has one.
Output: <out>/rewards.parquet and <out>/summary.json, committed in <out>/manifest.json with checksums after
the scoring finished (a re-run with the same inputs returns the committed result; a killed one re-embeds
nothing that reached the cache).
"""
from __future__ import annotations

import dataclasses
import time

import numpy as np
import pyarrow as pa
import torch

from lens_ray.config import LensConfig
from lens_ray.core.heads import rewards, standardize
from lens_ray.core.pairs import Quarantine
from lens_ray.core.progress import Log
from lens_ray.data.embed import layer_settings, settings_key
from lens_ray.data.finished_run import FinishedRun
from lens_ray.data.formats import detect_format, to_pairs, to_scored
from lens_ray.data.ingest import read_table
from lens_ray.store.storage import Manifest, Storage


def _texts(rows: list, where: list[str], q: Quarantine, best_of: int | None) -> tuple[str, list[tuple], dict]:
    """-> kind (pairs | responses), the (prompt, response) texts in order, and the layout to read them back."""
    first = next((r for r in rows if isinstance(r, dict)), None)
    if first is not None and detect_format(first) == "scored":
        prompts = to_scored(rows, q, where)
        keep = [list(range(len(sp.outputs)))[:best_of] if best_of else list(range(len(sp.outputs)))
                for sp in prompts]
        texts = [(sp.prompt, sp.outputs[j]) for sp, idx in zip(prompts, keep) for j in idx]
        return "responses", texts, {"prompts": prompts, "keep": keep}
    pairs = to_pairs(rows, q, where)
    return "pairs", [(p.prompt, r) for p in pairs for r in (p.chosen, p.rejected)], {"pairs": pairs}


def _vectors(cfg: LensConfig, settings: dict, texts: list[tuple], log: Log) -> np.ndarray:
    """(n, d) embeddings of the texts: the run's cache first, the rest embedded with Ray Data (and cached)."""
    from lens_ray.pipelines.run import embed_texts
    keyed = {settings_key(settings, p, r): (p, r) for p, r in texts}
    vectors, _ = embed_texts(cfg, settings, sorted(keyed), keyed, log, tuple(cfg.embed.layer), ())
    return np.stack([vectors[settings_key(settings, p, r)] for p, r in texts])


def batch_score(cfg: LensConfig, run: FinishedRun, data_uri: str, out_uri: str, best_of: int | None,
                log: Log = print) -> dict:
    head, head_name, meta = run.head(cfg.serve.head)
    e = run.embed_config(meta)                  # the head's own layer (the selection's pick may be another)
    settings = layer_settings(run.embeddings.meta, e.layer, e.layer_combine)
    out = Storage(out_uri)
    normalize = cfg.serve.normalize
    manifest = Manifest.open(out, {"run": run.uri, "head": head_name, "data": data_uri, "best_of": best_of,
                                   "normalize": normalize})
    if "summary.json" in manifest.files and manifest.read_parquet("rewards.parquet") is not None:
        log(f"{out.uri}: already scored with these inputs")
        return out.read_json("summary.json")
    t0, q = time.time(), Quarantine(cfg.data.on_bad_row, source=data_uri)
    rows, where = read_table(data_uri, q)
    kind, texts, layout = _texts(rows, where, q, best_of)
    log(f"scoring {len(texts)} texts ({kind}) of {data_uri} with {run.uri}/heads/{head_name}")
    scores = rewards(head, torch.from_numpy(_vectors(dataclasses.replace(run.config, embed=e), settings, texts, log)))
    if normalize:
        scores = standardize(scores, run.reward_scale(head_name, meta))
    table, summary = (_pairs_result if kind == "pairs" else _bon_result)(scores, layout)
    summary.update({"run": run.uri, "head": head_name, "data": data_uri, "kind": kind, "texts": len(texts),
                    "rewards": "standardized" if normalize else "raw",
                    "quarantined": dict(q.counts), "seconds": round(time.time() - t0, 1)})
    manifest.commit("rewards.parquet", out.write_parquet("rewards.parquet", table))
    out.write_json("summary.json", summary)
    manifest.commit("summary.json", {"written": time.time()})
    log(f"done: {summary}")
    return summary


def _pairs_result(rewards: np.ndarray, layout: dict) -> tuple[pa.Table, dict]:
    pairs = layout["pairs"]
    chosen, rejected = rewards[0::2], rewards[1::2]
    table = pa.table({"row": [p.source_row for p in pairs], "chosen_reward": chosen, "rejected_reward": rejected,
                      "correct": chosen > rejected})
    acc = float(np.mean((chosen > rejected) + 0.5 * (chosen == rejected))) if len(pairs) else None
    return table, {"pairs": len(pairs), "accuracy": acc}


def _bon_result(rewards: np.ndarray, layout: dict) -> tuple[pa.Table, dict]:
    cols: dict[str, list] = {"row": [], "response": [], "reward": [], "gold": [], "picked": []}
    picks, oracle, random_pick, at = [], [], [], 0
    for sp, idx in zip(layout["prompts"], layout["keep"]):
        r = rewards[at:at + len(idx)]
        at += len(idx)
        best = int(np.argmax(r))
        for j, (i, reward) in enumerate(zip(idx, r)):
            cols["row"].append(sp.source_row)
            cols["response"].append(i)
            cols["reward"].append(float(reward))
            cols["gold"].append(float(sp.gold[i]))
            cols["picked"].append(j == best)
        picks.append(float(sp.gold[idx[best]]))
        oracle.append(float(sp.gold[idx].max()))
        random_pick.append(float(sp.gold[idx].mean()))
    summary = {"prompts": len(picks), "bon_gold": float(np.mean(picks)) if picks else None,
               "bon_random": float(np.mean(random_pick)) if picks else None,
               "bon_oracle": float(np.mean(oracle)) if picks else None}
    return pa.table(cols), summary
