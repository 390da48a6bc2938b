"""Batch scoring with Ray Data on the session's local Ray: preference pairs -> rewards and accuracy; the
developers' scored completions -> per-response rewards and the Best-of-N pick with its gold score."""
import gzip
import json

import numpy as np
import pyarrow.parquet as pq
import pytest

from lens_ray.cli import batch_score_main
from lens_ray.scoring.reward_model import RewardModel
from lens_ray.store.storage import Storage


def test_best_of_n_on_scored_completions(local_run, bon_path, tmp_path):
    _, _, run = local_run
    rows = [json.loads(line) for line in gzip.open(bon_path, "rt").read().splitlines()[:6]]
    data = tmp_path / "bon.jsonl"
    data.write_text("\n".join(json.dumps(r) for r in rows))
    summary = batch_score_main(["--run", run.uri, "--data", str(data), "--out", str(tmp_path / "scored"),
                                "--best-of", "4", "--head", "original-f1-s0"])
    table = pq.read_table(tmp_path / "scored" / "rewards.parquet").to_pylist()
    assert summary["prompts"] == 6 and len(table) == 24 and summary["kind"] == "responses"
    picked = [r["gold"] for r in table if r["picked"]]
    assert len(picked) == 6 and summary["bon_gold"] == pytest.approx(np.mean(picked))
    assert summary["bon_random"] <= summary["bon_oracle"] and summary["bon_gold"] <= summary["bon_oracle"]
    rm = RewardModel.from_run(run.uri, "original-f1-s0")
    first = rows[0]
    outputs = [r["output"].strip() for r in first["responses"][:4]]
    want = rm.score([first["instruction"]] * 4, outputs)
    mine = [r for r in table if r["row"] == 0]
    assert np.allclose([r["reward"] for r in mine], want, atol=1e-4)
    assert [r["picked"] for r in mine] == list(np.arange(4) == np.argmax(want))
    again = batch_score_main(["--run", run.uri, "--data", str(data), "--out", str(tmp_path / "scored"),
                              "--best-of", "4", "--head", "original-f1-s0"])
    assert again == summary                                            # committed: returned, not recomputed
    raw = batch_score_main(["--run", run.uri, "--data", str(data), "--out", str(tmp_path / "raw"),
                            "--best-of", "4", "--head", "original-f1-s0", "--normalize", "false"])
    raw_rows = [r for r in pq.read_table(tmp_path / "raw" / "rewards.parquet").to_pylist() if r["row"] == 0]
    assert raw["rewards"] == "raw" and summary["rewards"] == "standardized"
    assert np.allclose([r["reward"] for r in raw_rows], rm.score([first["instruction"]] * 4, outputs,
                                                                 normalize=False), atol=1e-4)
    assert raw["bon_gold"] == summary["bon_gold"]                      # one order, two scales


def test_pairs_give_rewards_and_accuracy(local_run, hh_path, tmp_path):
    _, report, run = local_run
    rows = [json.loads(line) for line in gzip.open(hh_path, "rt").read().splitlines()[:20]]
    data = tmp_path / "pairs.jsonl"
    data.write_text("\n".join(json.dumps(r) for r in rows))
    summary = batch_score_main(["--run", run.uri, "--data", str(data), "--out", str(tmp_path / "pairs")])
    table = pq.read_table(tmp_path / "pairs" / "rewards.parquet")
    assert summary["kind"] == "pairs" and summary["pairs"] == table.num_rows <= 20
    assert summary["accuracy"] == pytest.approx(np.mean(table["correct"].to_numpy()))
    assert Storage(str(tmp_path / "pairs")).read_json("manifest.json")["files"]["rewards.parquet"]["sha256"]


def test_wait_takes_the_output_once_its_holder_lets_go(local_run, hh_path, tmp_path, capsys):
    """`--wait`: another job holds the output folder; without --wait the command is refused naming the holder,
    with it the command says it waits, and runs once the holder releases."""
    import threading

    from lens_ray.store.lease import Lease, LeaseError
    _, _, run = local_run
    rows = [json.loads(line) for line in gzip.open(hh_path, "rt").read().splitlines()[:4]]
    data = tmp_path / "pairs.jsonl"
    data.write_text("\n".join(json.dumps(r) for r in rows))
    out = tmp_path / "held"
    holder = Lease(Storage(str(out)), what="another batch-score")
    holder.acquire()
    args = ["--run", run.uri, "--data", str(data), "--out", str(out)]
    with pytest.raises(LeaseError, match="another batch-score"):
        batch_score_main(args)
    threading.Timer(2.0, holder.release).start()
    summary = batch_score_main(args + ["--wait"])
    assert "waiting: " in capsys.readouterr().out and summary["pairs"] > 0
