"""What a Tune search leaves in storage, for its readers (`--from-search`, report.html). No Ray.

  <search>/trials/<trial_id>.json   one per finished trial: point, objective ± se, unit rows, status
  <search>/best.json                the chosen point, the overrides a run needs, its test accuracy
"""
from __future__ import annotations

from typing import Any

from lens_ray.config import LensConfig, apply_overrides
from lens_ray.store.storage import Storage, StorageError

TRIALS, BEST = "trials", "best.json"


def read_trials(search: Storage) -> list[dict]:
    if not search.isdir(TRIALS):
        return []
    return [search.read_json(f"{TRIALS}/{name}") for name in sorted(search.listdir(TRIALS)) if name.endswith(".json")]


def read_best(search_uri: str) -> dict:
    store = Storage(search_uri)
    if not store.exists(BEST):
        raise StorageError(f"{search_uri}: no {BEST}; is it a finished lens-ray search (jobs/search.py)?")
    return store.read_json(BEST)


def apply_tuned(cfg: LensConfig, best: dict[str, Any]) -> LensConfig:
    """A run's config with the search's chosen settings: every tuned knob, the embeddings it was measured on,
    and its augmentation factor added to the run's factors (all methods still run, for comparison)."""
    apply_overrides(cfg, best["overrides"])
    cfg.factors = tuple(sorted(set(cfg.factors) | {int(best["point"]["factor"])}))
    return cfg.validate()
