import gzip
import json

import numpy as np
import pytest

from lens_ray.config import DataConfig
from lens_ray.core.pairs import DataError, Quarantine, split_by_group
from lens_ray.data.formats import pairs_from_scored, parse_hh_transcript, to_pairs, to_scored
from lens_ray.data.ingest import load_datasets, read_records

HH_ROW = {"chosen": "\n\nHuman: hi\n\nAssistant: hello\n\nHuman: how to bake bread?\n\nAssistant: Mix flour.",
          "rejected": "\n\nHuman: hi\n\nAssistant: hello\n\nHuman: how to bake bread?\n\nAssistant: No."}


def test_parse_hh_transcript():
    prompt, response = parse_hh_transcript(HH_ROW["chosen"])
    assert response == "Mix flour."
    assert prompt == [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "hello"},
                      {"role": "user", "content": "how to bake bread?"}]


def test_formats_to_pairs():
    rows = [HH_ROW,
            {"prompt": "Q?", "chosen": "good", "rejected": "bad"},
            {"prompt": [{"role": "user", "content": "Q2"}],
             "chosen": [{"role": "user", "content": "Q2"}, {"role": "assistant", "content": "yes"}],
             "rejected": [{"role": "user", "content": "Q2"}, {"role": "assistant", "content": "no"}]}]
    q = Quarantine()
    pairs = to_pairs(rows, q)
    assert [(p.chosen, p.rejected) for p in pairs] == [("Mix flour.", "No."), ("good", "bad"), ("yes", "no")]
    assert pairs[1].prompt == [{"role": "user", "content": "Q?"}]
    assert not q.counts


def test_bad_rows_error_names_row_and_field():
    rows = [{"prompt": "Q", "chosen": "a", "rejected": "b"}, {"prompt": "Q", "chosen": "", "rejected": "b"}]
    with pytest.raises(DataError, match=r"row 1: field 'chosen': empty response"):
        to_pairs(rows, Quarantine("error"))


def test_bad_rows_are_counted_not_dropped_silently():
    rows = [{"prompt": "Q", "chosen": "a", "rejected": "a"},
            {"prompt": "Q", "chosen": "", "rejected": "b"},
            {"chosen": "\n\nHuman: x\n\nAssistant: y", "rejected": "\n\nHuman: OTHER\n\nAssistant: z"},
            {"foo": 1},
            {"prompt": "Q", "chosen": "a", "rejected": "b"}]
    q = Quarantine()
    pairs = to_pairs(rows, q)
    assert len(pairs) == 1
    assert sum(q.counts.values()) == 4
    assert q.counts["rejected: identical to chosen"] == 1
    assert any("differs from chosen" in k for k in q.counts)


def test_scored_to_pairs_by_margin():
    rows = [{"instruction": "I", "responses": [{"output": "a", "gold": 0.9}, {"output": "b", "gold": 0.1},
                                                {"output": "c", "gold": 0.85}, {"output": "", "gold": 0.5},
                                                {"output": "d", "gold": None}]}]
    q = Quarantine()
    scored = to_scored(rows, q)
    assert len(scored[0].outputs) == 3 and sum(q.counts.values()) == 2
    assert q.counts["responses[].output: missing or empty"] == 1 and "responses[3]" in str(q.examples)
    pairs = pairs_from_scored(scored, margin=0.5, per_prompt=5, seed=0)
    assert len(pairs) == 1                       # b can pair once; a and c are too close to each other
    assert pairs[0].chosen in ("a", "c") and pairs[0].rejected == "b"


def test_gold_beyond_its_bound_is_quarantined_so_every_figure_stays_finite():
    """Finite but huge gold (1e308 sums to inf in a Best-of-N mean) is quarantined by name; 1e9 itself is kept."""
    rows = [{"instruction": "I", "responses": [{"output": "a", "gold": 1e308}, {"output": "b", "gold": -1e308},
                                                {"output": "c", "gold": 1e9}, {"output": "d", "gold": -2.5}]}]
    q = Quarantine()
    scored = to_scored(rows, q)
    assert scored[0].outputs == ["c", "d"] and np.isfinite(scored[0].gold.sum())
    assert q.counts == {"responses[].gold: beyond ±1e+09": 2} and "responses[0]" in str(q.examples)


def test_split_by_group_never_shares_a_prompt():
    rows = [{"prompt": f"P{i // 3}", "chosen": f"c{i}", "rejected": f"r{i}"} for i in range(30)]
    pairs = to_pairs(rows, Quarantine())
    first, rest, dropped = split_by_group(pairs, 10, np.random.default_rng(0))
    assert len(first) == 10 and len(rest) + dropped + 10 == 30
    assert not {p.group for p in first} & {p.group for p in rest}


def test_read_formats(tmp_path):
    rows = [{"prompt": f"Q{i}", "chosen": "a", "rejected": "b"} for i in range(3)]
    (tmp_path / "a.jsonl").write_text("\n".join(json.dumps(r) for r in rows))
    with gzip.open(tmp_path / "b.jsonl.gz", "wt") as fh:
        fh.write("\n".join(json.dumps(r) for r in rows))
    (tmp_path / "c.json").write_text(json.dumps(rows))
    import pyarrow as pa
    import pyarrow.parquet as pq
    pq.write_table(pa.Table.from_pylist(rows), tmp_path / "d.parquet")
    import datasets
    datasets.Dataset.from_list(rows).save_to_disk(str(tmp_path / "hf"))
    for name in ("a.jsonl", "b.jsonl.gz", "c.json", "d.parquet", "hf"):
        assert read_records(str(tmp_path / name)) == rows, name
    (tmp_path / "bad.jsonl").write_text('{"prompt": 1}\nnot json\n')
    with pytest.raises(DataError, match="line 2"):
        read_records(str(tmp_path / "bad.jsonl"))


def test_load_datasets_on_real_hh(hh_path):
    ds = load_datasets(DataConfig(data=str(hh_path), seed_pairs=1000))
    assert len(ds.seed_pairs) == 1000
    assert len(ds.seed_pairs) + len(ds.eval_pairs) + sum(ds.quarantine.counts.values()) \
        + ds.notes["pairs_dropped_group_overlap"] == 1800
    assert not {p.group for p in ds.seed_pairs} & {p.group for p in ds.eval_pairs}
    again = load_datasets(DataConfig(data=str(hh_path), seed_pairs=1000))
    assert [p.chosen for p in again.seed_pairs] == [p.chosen for p in ds.seed_pairs]   # fixed seed


def test_load_datasets_on_real_bon(bon_path):
    ds = load_datasets(DataConfig(data=str(bon_path), seed_pairs=300, pairs_per_prompt=3))
    assert len(ds.bon_prompts) == 200                   # half the prompts kept for Best-of-N
    bon_texts = {sp.prompt[0]["content"] for sp in ds.bon_prompts}
    assert not bon_texts & {p.prompt[0]["content"] for p in ds.seed_pairs + ds.eval_pairs}
    # each pair keeps its responses' gold scores (the selection's bon_gold objective ranks by them)
    assert all(p.chosen_gold - p.rejected_gold >= 0.1 - 1e-12 for p in ds.seed_pairs + ds.eval_pairs)


def test_a_bad_line_is_quarantined_not_the_whole_file(tmp_path):
    rows = [{"prompt": f"Q{i}", "chosen": "a", "rejected": "b"} for i in range(12)]
    path = tmp_path / "cut.jsonl"
    path.write_bytes(("\n".join(json.dumps(r) for r in rows) + '\n{"prompt": "Q12", "cho').encode() + b"\n\xff\xfe\n")
    ds = load_datasets(DataConfig(data=str(path), seed_pairs=10))
    assert len(ds.seed_pairs) + len(ds.eval_pairs) == 12
    assert ds.quarantine.counts == {"*: not JSON": 1, "*: not UTF-8 text": 1}
    assert "cut.jsonl: line 13" in ds.quarantine.examples["*: not JSON"]
    with pytest.raises(DataError, match=r"cut.jsonl: line 13: field '\*': not JSON"):
        load_datasets(DataConfig(data=str(path), seed_pairs=10, on_bad_row="error"))


def test_scored_row_whose_responses_is_not_a_list_is_quarantined():
    q = Quarantine()
    rows = [{"instruction": "I", "responses": "a string"},
            {"instruction": "J", "responses": [{"output": "a", "gold": 1.0}, {"output": "b", "gold": True}]}]
    assert to_scored(rows, q) == []
    assert q.counts == {"responses: not a list of {output, gold}": 1, "responses[].gold: missing or not a finite "
                        "number": 1, "responses: fewer than 2 usable responses": 1}


def test_exact_duplicates_are_counted_and_left_out_or_kept(tmp_path):
    rows = [{"prompt": f"Q{i}", "chosen": "a", "rejected": "b"} for i in range(20)] * 10
    path = tmp_path / "dup.jsonl"
    path.write_text("\n".join(json.dumps(r) for r in rows))
    ds = load_datasets(DataConfig(data=str(path), seed_pairs=12))
    assert len(ds.seed_pairs) == 12 and len(ds.eval_pairs) == 8                 # 20 distinct, not 200
    assert ds.quarantine.counts == {"duplicate pair (same prompt, chosen and rejected)": 180}
    assert ds.notes["duplicate_pairs"] == 180 and ds.notes["seed_prompts"] == 12
    kept = load_datasets(DataConfig(data=str(path), seed_pairs=12, duplicates="keep"))
    assert kept.notes["duplicate_pairs"] == 180 and not kept.quarantine.counts
    assert kept.notes["seed_prompts"] <= 12 and len(kept.seed_pairs) == 12      # whole prompts, copies together


def test_eval_data_that_shares_a_prompt_with_the_seed_pairs_is_left_out_and_counted(tmp_path):
    """The leakage filter: an eval_data pair whose prompt (in any format) is among the seed pairs' prompts is
    not evaluated on, and the count says so; pairs with other prompts all stay."""
    seed_rows = [{"prompt": f"Q{i}", "chosen": "a", "rejected": "b"} for i in range(12)]
    (tmp_path / "train.jsonl").write_text("\n".join(json.dumps(r) for r in seed_rows))
    # Q0..Q5 again: plain, as chat messages, and as an HH transcript; Q100..Q104 new
    shared = [{"prompt": "Q0", "chosen": "x", "rejected": "y"},
              {"prompt": [{"role": "user", "content": "Q1"}], "chosen": "x", "rejected": "y"},
              {"chosen": "\n\nHuman: Q2\n\nAssistant: x", "rejected": "\n\nHuman: Q2\n\nAssistant: y"}]
    fresh = [{"prompt": f"Q{100 + i}", "chosen": "x", "rejected": "y"} for i in range(5)]
    (tmp_path / "eval.jsonl").write_text("\n".join(json.dumps(r) for r in shared + fresh))
    ds = load_datasets(DataConfig(data=str(tmp_path / "train.jsonl"), eval_data=str(tmp_path / "eval.jsonl"),
                                  seed_pairs=12))
    assert ds.notes["eval_pairs_dropped_prompt_in_seed"] == 3
    assert sorted(p.prompt[0]["content"] for p in ds.eval_pairs) == [f"Q{100 + i}" for i in range(5)]
    assert not {p.group for p in ds.seed_pairs} & {p.group for p in ds.eval_pairs}
    clean = load_datasets(DataConfig(data=str(tmp_path / "train.jsonl"), eval_data=str(tmp_path / "eval.jsonl"),
                                     seed_pairs=12, eval_pairs=2))
    assert len(clean.eval_pairs) == 2 and all(p.prompt[0]["content"].startswith("Q10") for p in clean.eval_pairs)


def test_hub_data_that_cannot_be_had_is_one_line_at_once(monkeypatch):
    """hf:// alone, the hub offline, and a hub that refuses connections: a DataError naming the spec and the
    cause, from one short probe (no client retries, no traceback)."""
    from lens_ray.data.hub import hub_unreachable
    with pytest.raises(DataError, match=r"hf://: give hf://owner/name\[/dir\]\[:subset\]\[@split\]"):
        read_records("hf://")
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    hub_unreachable.cache_clear()
    with pytest.raises(DataError, match=r"hf://Anthropic/hh-rlhf@test: the Hugging Face hub is not reachable from "
                                        r"here \(HF_HUB_OFFLINE is set\); download the data and give its path"):
        read_records("hf://Anthropic/hh-rlhf@test")
    with pytest.raises(DataError, match=r"hf://Anthropic/hh-rlhf/harmless-base@test: the Hugging Face hub is not "
                                        r"reachable"):             # a folder of the repository: what make run reads
        read_records("hf://Anthropic/hh-rlhf/harmless-base@test")
    import socket
    closed = socket.socket()
    closed.bind(("127.0.0.1", 0))
    port = closed.getsockname()[1]
    closed.close()                                               # nothing listens there: refused at once
    monkeypatch.delenv("HF_HUB_OFFLINE")
    monkeypatch.delenv("HF_DATASETS_OFFLINE", raising=False)
    monkeypatch.setenv("HF_ENDPOINT", f"http://127.0.0.1:{port}")
    hub_unreachable.cache_clear()
    try:
        with pytest.raises(DataError, match=rf"not reachable from here \(cannot connect to 127.0.0.1:{port}"):
            read_records("hf://owner/name:subset")
    finally:
        hub_unreachable.cache_clear()


def test_missing_data_says_what_to_pass(tmp_path):
    """A data path that is not there (a fresh clone without ../shared/data): one line naming it and how to give
    data, before anything reads further."""
    with pytest.raises(DataError, match=r"nope.jsonl: no such file or folder; give your preference data with "
                                        r"--data \(make run: DATA=...\)"):
        read_records(str(tmp_path / "nope.jsonl"))
