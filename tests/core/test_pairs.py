"""core/pairs.py: prompts keep their rows together in every split; bad rows are counted or named."""
import numpy as np
import pytest

from lens_ray.core.pairs import (
    DataError,
    Pair,
    Quarantine,
    group_rows,
    inner_split,
    kfold_by_group,
    prompt_fingerprints,
    prompt_key,
    renumber,
    seed_splits,
    split_by_group,
)


def _pairs(n: int, per_prompt: int = 3) -> list[Pair]:
    return [Pair(i, [{"role": "user", "content": f"q{i // per_prompt}"}], "a", "b", i) for i in range(n)]


def test_group_rows_in_first_seen_order():
    assert group_rows(["b", "a", "b", "c", "a"]) == {"b": [0, 2], "a": [1, 4], "c": [3]}
    assert prompt_key([{"role": "user", "content": "x"}]) != prompt_key([{"role": "user", "content": "y"}])


def test_split_by_group_cuts_exactly_and_counts_what_it_drops():
    pairs = _pairs(30)
    first, rest, dropped = split_by_group(pairs, 10, np.random.default_rng(0))
    assert len(first) == 10 and len(first) + len(rest) + dropped == 30
    assert dropped == 2 and not prompt_fingerprints(first) & prompt_fingerprints(rest)


def test_seed_splits_differ_per_seed_and_keep_prompts_whole():
    pairs = _pairs(60)
    splits = seed_splits(pairs, 0.2, 3, split_seed=0)
    assert [s.seed for s in splits] == [0, 1, 2]
    for s in splits:
        assert len(s.val) == 12 and sorted(np.concatenate([s.train, s.val]).tolist()) == list(range(60))
        assert not {pairs[i].group for i in s.train} & {pairs[i].group for i in s.val}
    assert splits[0].val.tolist() != splits[1].val.tolist()
    assert seed_splits(pairs, 0.2, 3, split_seed=0)[1].val.tolist() == splits[1].val.tolist()


def test_renumber_and_quarantine():
    again = renumber(_pairs(6)[3:])
    assert [p.pair_id for p in again] == [0, 1, 2] and [p.source_row for p in again] == [3, 4, 5]
    q = Quarantine(source="f.jsonl")
    q.reject(3, "responses[2].gold", "missing")
    q.reject("line 9", "responses[5].gold", "missing")
    assert q.counts == {"responses[].gold: missing": 2}
    assert q.summary() == "2 x 'responses[].gold: missing' (e.g. f.jsonl: row 3: field 'responses[2].gold': missing)"
    with pytest.raises(DataError, match="f.jsonl: line 9: field 'chosen': empty"):
        Quarantine("error", source="f.jsonl").reject("line 9", "chosen", "empty")


def test_prompt_keys_are_16_hex_digits_of_the_messages():
    from lens_ray.core.pairs import prompt_key
    key = prompt_key([{"role": "user", "content": "hi"}])
    assert len(key) == 16 and int(key, 16) >= 0                       # stored in fingerprints: never changes
    assert key == prompt_key([{"content": "hi", "role": "user"}]) != prompt_key([{"role": "user", "content": "ho"}])


def test_quarantine_summary_names_the_three_commonest_reasons():
    from lens_ray.core.pairs import Quarantine
    q = Quarantine()
    for reason, n in (("a", 4), ("b", 3), ("c", 2), ("d", 1)):
        for i in range(n):
            q.reject(f"line {i}", "chosen", reason)
    text = q.summary()
    assert text.startswith("4 x 'chosen: a'") and "3 x 'chosen: b'" in text and "2 x 'chosen: c'" in text
    assert "chosen: d" not in text


def test_a_small_set_still_keeps_one_validation_pair():
    split = seed_splits(_pairs(4, per_prompt=1), 0.1, 1, split_seed=0)[0]     # 0.4 pairs rounds to none
    assert len(split.val) == 1 and len(split.train) == 3


def test_k_prompts_make_k_folds_and_the_largest_prompts_are_dealt_first():
    assert sorted(len(f) for f in kfold_by_group(["a", "b", "c"], 3, seed=0)) == [1, 1, 1]
    # one prompt of 3 rows and three of 1: largest first balances 3 | 3 (smallest first would give 2 | 4)
    folds = kfold_by_group(["a", "a", "a", "b", "c", "d"], 2, seed=0)
    assert sorted(len(f) for f in folds) == [3, 3] and sorted(np.concatenate(folds).tolist()) == list(range(6))


def test_inner_split_takes_just_enough_prompts_and_never_none():
    groups = [f"q{i}" for i in range(20)]
    tr, va = inner_split(groups, np.arange(20), 0.25, np.random.default_rng(0))
    assert len(va) == 5 and len(tr) == 15                          # 5 one-row prompts, not one more
    tr, va = inner_split(groups, np.arange(5), 0.05, np.random.default_rng(0))
    assert len(va) == 1 and len(tr) == 4                           # 0.25 rows rounds to none: one all the same
