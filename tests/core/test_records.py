"""core/records.py: the names cells store under, the cells a config plans, one seed's data, the tables' texts."""
import numpy as np

from lens_ray.config import LensConfig, load_config
from lens_ray.core.pairs import Datasets, Pair, Quarantine, ScoredPrompt, Split
from lens_ray.core.records import Cell, Embedded, Result, SeedData, Summary, bon_draws, plan_cells, table_texts


def test_cell_names_and_kinds():
    assert Cell("lens", 8, 2).name == "lens-f8-s2" and Cell("lens", 8, 2, "linear").name == "lens-f8-s2-linear"
    assert Cell("mean_diff", 1, 0, "linear").name == "mean_diff-f1-s0"
    assert Cell("lens", 8, 2, "linear").synthetic_name == Cell("lens", 8, 2).synthetic_name == "lens-f8-s2"
    assert Cell("lens", 4, 0).augments and not Cell("original", 1, 0).augments
    assert Cell("original", 1, 0).trained and not Cell("mean_diff", 1, 0, "linear").trained


def test_results_and_summaries_read_every_stored_form_and_write_report_json_rows():
    """A row written before heads had kinds (or a status) reads as an MLP that succeeded; rows write back as the run
    writes them: an ok row has no reason key, a failed one has its reason and no metric."""
    old = Result.of({"method": "lens", "factor": 4, "seed": 1, "accuracy": 0.61, "bon_gold": None,
                     "val_accuracy": 0.6, "head": "heads/lens-f4-s1"})
    assert old.head_kind == "mlp" and old.ok and old.cell.name == "lens-f4-s1"
    assert old.row() == {"method": "lens", "factor": 4, "seed": 1, "head_kind": "mlp", "status": "ok",
                         "accuracy": 0.61, "bon_gold": None, "val_accuracy": 0.6, "head": "heads/lens-f4-s1"}
    failed = Result("lens", 4, 0, "linear", status="failed", reason="VAE: non-finite loss")
    assert Result.of(failed.row()) == failed and failed.row()["reason"] == "VAE: non-finite loss"
    assert not failed.ok and failed.row()["accuracy"] is None and failed.row()["head"] is None
    s = Summary.of({"method": "original", "factor": 1, "failed": 0, "accuracy": {"mean": 0.6, "std": 0.0, "n": 1}})
    assert s.head_kind == "mlp" and s.accuracy_vs_original is None and Summary.of(s.row()) == s


def test_plan_covers_every_method_factor_head_and_seed():
    cfg = load_config(None, {"methods": "original,mean_diff,lens", "factors": "2,4", "seeds": 2,
                             "reward.heads": "mlp,linear"})
    cells = plan_cells(cfg)
    assert len(cells) == len(set(cells)) == 2 * 2 + 1 * 2 + 2 * 2 * 2
    assert {c.head for c in cells if c.method == "mean_diff"} == {"linear"}
    assert {c.factor for c in cells if c.method == "lens"} == {2, 4}
    assert {c.factor for c in cells if not c.augments} == {1}
    assert [c.method for c in cells][:4] == ["original"] * 4          # the config's method order
    assert len(plan_cells(LensConfig())) == 5 * 1 + 5 + 3 * 2 * 5


def test_seed_data_takes_its_split_and_prompts():
    emb = Embedded(np.arange(10.0)[:, None], -np.arange(10.0)[:, None], np.zeros((2, 1)), np.zeros((2, 1)),
                   None, None)
    pairs = [Pair(i, [{"role": "user", "content": f"q{i // 2}"}], "a", "b", i) for i in range(10)]
    sd = SeedData.of(Split(3, np.array([0, 2, 4]), np.array([7])), emb, pairs)
    assert sd.seed == 3 and sd.train_pos[:, 0].tolist() == [0, 2, 4] and sd.val_neg[:, 0].tolist() == [-7]
    assert sd.train_groups == [pairs[i].group for i in (0, 2, 4)] and emb.dim == 1


def test_table_texts_and_bon_draws_follow_the_data():
    prompt = [{"role": "user", "content": "q"}]
    ds = Datasets([Pair(0, prompt, "c0", "r0", 0)], [Pair(0, prompt, "c1", "r1", 1)],
                  [ScoredPrompt(0, prompt, [f"o{i}" for i in range(20)], np.arange(20) / 20, 0)], Quarantine())
    cfg = load_config(None, {"data.bon_n": 4})
    draws, gold = bon_draws(cfg, ds)
    assert len(draws) == 1 and len(set(draws[0])) == 4 and np.allclose(gold[0], draws[0] / 20)
    tables = table_texts(ds, draws)
    assert tables["seed"] == [(prompt, "c0"), (prompt, "r0")] and tables["eval"] == [(prompt, "c1"), (prompt, "r1")]
    assert tables["bon"] == [(prompt, f"o{j}") for j in draws[0]]
    assert "bon" not in table_texts(ds, [])
