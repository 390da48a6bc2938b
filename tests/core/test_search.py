"""core/search.py on tensors and a real Optuna study (no Ray): what each method draws, the default point,
overrides; folds by prompt, pairing against original, the objective's noise."""
import math

import numpy as np
import optuna
import pytest
import torch

from lens_ray.config import ConfigError, LensConfig, SearchConfig
from lens_ray.core.pairs import Pair, inner_split, kfold_by_group
from lens_ray.core.records import Embedded
from lens_ray.core.search import (
    apply_point,
    conclusions,
    default_point,
    describe_point,
    paired_unit,
    score_choice,
    score_point,
    suggest,
    summarize_units,
    tuned_overrides,
    units,
)
from lens_ray.store.search_results import apply_tuned

optuna.logging.set_verbosity(optuna.logging.WARNING)


def _points(tcfg: SearchConfig, n: int, sources: int = 1, enqueue: dict | None = None,
            base: LensConfig | None = None) -> list[dict]:
    study = optuna.create_study(direction="maximize", sampler=optuna.samplers.RandomSampler(seed=0))
    if enqueue:
        study.enqueue_trial(enqueue)
    out = []
    for _ in range(n):
        trial = study.ask()
        suggest(trial, tcfg, sources, base or LensConfig())
        out.append(dict(trial.params))
        study.tell(trial, 0.0)
    return out


def test_each_method_draws_only_its_own_knobs():
    points = _points(SearchConfig(), 60)
    assert {p["method"] for p in points} == {"lens", "direct_perturbation", "gaussian_sampling"}
    for p in points:
        lens_knobs = {k for k in p
                      if k.startswith("vae.") or k in ("synth.noise_var", "synth.select", "synth.residual")}
        assert bool(lens_knobs) == (p["method"] == "lens")
        assert ("synth.dp_noise_var" in p) == (p["method"] == "direct_perturbation")
        assert ("synth.gs_shrinkage" in p) == (p["method"] == "gaussian_sampling")
        assert p["factor"] in (2, 4, 8) and 0.1 <= p["reward.synthetic_weight"] <= 1.0
        assert "source" not in p


def test_open_choices_and_sources_widen_the_space():
    narrow = _points(SearchConfig(open_choices=False, methods=("lens",)), 10)
    assert all("vae.hidden_dims" not in p and "reward.max_steps" not in p for p in narrow)
    wide = _points(SearchConfig(methods=("lens",)), 20, sources=2)
    assert {p["source"] for p in wide} == {0, 1} and {p["synth.residual"] for p in wide} == {False, True}


def test_every_point_makes_a_valid_config():
    base = LensConfig()
    for p in _points(SearchConfig(), 40):
        cfg, method, factor, _ = apply_point(base, p)
        assert method == p["method"] and factor == p["factor"]
        if method == "lens":
            assert cfg.vae.hidden_dims == tuple(int(h) for h in p["vae.hidden_dims"].split(","))
            assert cfg.synth.noise_var == p["synth.noise_var"] and cfg.vae.gamma == p["vae.gamma"]
    assert base == LensConfig()                                # the base is never changed


def test_default_point_is_the_runs_own_lens_settings_and_can_be_enqueued():
    base = LensConfig()
    base.reward.max_steps = 100                                 # not one of the search's usual choices
    base.factors = (8,)
    point = default_point(base, 1)
    assert point["factor"] == 8 and point["reward.max_steps"] == 100
    first = _points(base.search, 1, enqueue=point, base=base)[0]
    assert first == point
    cfg, method, factor, source = apply_point(base, point)
    assert (method, factor, source) == ("lens", 8, 0) and cfg == base   # measuring the default changes nothing
    base.search.heads, base.reward.heads = ("mlp", "linear"), ("linear",)
    assert default_point(base, 1)["reward.heads"] == "linear"           # the run's own head, where searched
    base.reward.heads = ("paper",)
    assert default_point(base, 1)["reward.heads"] == "mlp"              # else the search's first
    assert default_point(base, 2)["source"] == 0                        # of several sources, the run's own


def test_tuned_overrides_reach_a_run_config():
    point = {"method": "direct_perturbation", "factor": 2, "synth.dp_noise_var": 0.05, "reward.max_steps": 1200,
             "reward.synthetic_weight": 0.3}
    embed = {"model": "minilm", "pooling": "mean", "max_length": 128, "dtype": "auto", "padding_side": "left"}
    best = {"point": point, "overrides": tuned_overrides(point, embed)}
    cfg = apply_tuned(LensConfig(), best)
    assert cfg.synth.dp_noise_var == 0.05 and cfg.reward.max_steps == 1200 and cfg.reward.synthetic_weight == 0.3
    assert cfg.embed.model == "minilm" and cfg.embed.pooling == "mean" and cfg.embed.max_length == 128
    assert cfg.factors == (2, 4, 8) and cfg.embed.padding_side == LensConfig().embed.padding_side
    with pytest.raises(ConfigError, match="synth.nope"):
        apply_tuned(LensConfig(), {"point": point, "overrides": {"synth.nope": 1}})


def _groups(n_prompts: int, rng: np.random.Generator) -> list[str]:
    return [f"p{i}" for i in range(n_prompts) for _ in range(int(rng.integers(1, 4)))]


def test_kfold_keeps_prompts_whole_and_balances_folds():
    groups = _groups(120, np.random.default_rng(0))
    folds = kfold_by_group(groups, 4, seed=3)
    assert sorted(np.concatenate(folds).tolist()) == list(range(len(groups)))      # a partition
    owner = {}
    for f, idx in enumerate(folds):
        for i in idx:
            assert owner.setdefault(groups[i], f) == f                               # a prompt in one fold
    sizes = [len(f) for f in folds]
    assert max(sizes) - min(sizes) <= 3                                              # at most one group apart
    assert [f.tolist() for f in kfold_by_group(groups, 4, seed=3)] == [f.tolist() for f in folds]
    assert [f.tolist() for f in kfold_by_group(groups, 4, seed=4)] != [f.tolist() for f in folds]
    with pytest.raises(ValueError, match="3 distinct prompts cannot make 4 folds"):
        kfold_by_group(["a", "b", "c"], 4, seed=0)


def test_inner_split_is_by_prompt_and_disjoint():
    groups = _groups(80, np.random.default_rng(1))
    idx = np.arange(0, len(groups), 2)
    tr, va = inner_split(groups, idx, 0.2, np.random.default_rng(0))
    assert set(tr) | set(va) == set(idx) and not set(tr) & set(va)
    assert not {groups[i] for i in tr} & {groups[i] for i in va}
    assert abs(len(va) - 0.2 * len(idx)) <= 3


def test_units_are_repeat_major():
    assert units(3, 2) == [(0, 0), (0, 1), (0, 2), (1, 0), (1, 1), (1, 2)]


def test_summary_is_mean_and_standard_error_of_paired_deltas():
    rows = [{"accuracy": a, "accuracy_original": o, "delta": a - o} for a, o in ((0.7, 0.6), (0.6, 0.6), (0.65, 0.7))]
    s = summarize_units(rows)
    d = np.array([0.1, 0.0, -0.05])
    assert s["objective"] == pytest.approx(d.mean())
    assert s["objective_se"] == pytest.approx(d.std(ddof=1) / math.sqrt(3))
    assert s["units"] == 3 and s["accuracy_original"] == pytest.approx(19 / 30)
    assert math.isnan(summarize_units(rows[:1])["objective_se"])


def _separable(n: int, d: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """chosen = rejected + a fixed direction: learnable preference data, (n, d) x2."""
    g = torch.Generator().manual_seed(seed)
    neg = torch.randn(n, d, generator=g)
    w = torch.randn(d, generator=g)
    return (neg + 0.5 * w / w.norm() + 0.3 * torch.randn(n, d, generator=g)).numpy(), neg.numpy()


def _small_cfg() -> LensConfig:
    cfg = LensConfig()
    cfg.reward.max_steps, cfg.reward.eval_every, cfg.reward.hidden_dim = 60, 20, 32
    cfg.vae.epochs, cfg.vae.latent_dim = 5, 4
    return cfg


def test_original_against_itself_pairs_to_exactly_zero():
    """The pairing is real: the same method on the same fold and seed gives the same head."""
    pos, neg = _separable(90, 12, 0)
    groups = [f"p{i // 2}" for i in range(90)]
    folds = kfold_by_group(groups, 3, seed=0)
    row = paired_unit(_small_cfg(), "original", 1, pos, neg, groups, folds, repeat=0, fold=1)
    assert row["delta"] == 0.0 and row["accuracy"] == row["accuracy_original"] > 0.6


@pytest.mark.parametrize("method", ["lens", "direct_perturbation", "gaussian_sampling"])
def test_augmenting_methods_give_a_paired_delta(method):
    pos, neg = _separable(90, 12, 1)
    groups = [f"p{i}" for i in range(90)]
    folds = kfold_by_group(groups, 3, seed=0)
    row = paired_unit(_small_cfg(), method, 4, pos, neg, groups, folds, repeat=1, fold=2)
    assert row["delta"] == pytest.approx(row["accuracy"] - row["accuracy_original"])
    assert (row["repeat"], row["fold"]) == (1, 2)
    assert row["accuracy"] > 0.7 and row["accuracy_original"] > 0.7          # both heads learned the direction
    alone = paired_unit(_small_cfg(), "original", 1, pos, neg, groups, folds, repeat=1, fold=2)
    assert row["accuracy_original"] == alone["accuracy_original"]            # the same original, whatever it pairs


def test_test_choice_scores_each_seed_on_the_test_data():
    pos, neg = _separable(120, 12, 2)
    pairs = [Pair(i, [{"role": "user", "content": f"q{i}"}], "a", "b", i) for i in range(80)]
    bon = np.random.default_rng(0).standard_normal((5, 4, 12)).astype(np.float32)
    gold = np.random.default_rng(1).random((5, 4))
    emb = Embedded(pos[:80], neg[:80], pos[80:], neg[80:], bon, gold)
    rows = score_choice(_small_cfg(), "lens", 2, pairs, emb, seeds=2)
    assert [r["seed"] for r in rows] == [0, 1]
    assert all(r["accuracy"] > 0.6 and gold.max(1).mean() >= r["bon_gold"] >= gold.min(1).mean() for r in rows)
    # a point's test rows: its settings and seeds; `original` at factor 1 whatever the point's factor
    cfg = _small_cfg()
    cfg.search.test_seeds = 1
    point = {"method": "direct_perturbation", "factor": 4, "synth.dp_noise_var": 0.05}
    assert score_point(cfg, point, "original", pairs, emb) == score_choice(cfg, "original", 1, pairs, emb, seeds=1)
    tuned, _, _, _ = apply_point(cfg, point)
    assert score_point(cfg, point, "direct_perturbation", pairs, emb) == \
        score_choice(tuned, "direct_perturbation", 4, pairs, emb, seeds=1)


def test_a_point_in_one_line():
    point = {"method": "lens", "factor": 4, "vae.beta": 0.5, "vae.gamma": 0.123456, "vae.latent_dim": 16}
    assert describe_point(point) == "lens x4 [beta=0.5, gamma=0.123, latent_dim=16]"


def test_the_space_is_the_documented_one():
    """docs/search-and-curves.md's table of knobs and values is what `suggest` draws, for every method."""
    import re
    from pathlib import Path
    doc = (Path(__file__).resolve().parents[2] / "docs" / "search-and-curves.md").read_text()
    table = {m[0]: m[2] for m in re.findall(r"\| `([\w.]+)` \| ([^|]+) \| ([^|]+) \|", doc)}
    drawn = {}
    for method in ("lens", "direct_perturbation", "gaussian_sampling"):
        study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=0))
        trial = study.ask()
        suggest(trial, SearchConfig(methods=(method,)), 1, LensConfig())
        drawn.update(trial.distributions)
    shown = {}
    for name, d in drawn.items():
        if isinstance(d, optuna.distributions.FloatDistribution):
            shown[name] = f"{d.low} to {d.high}" + (", log" if d.log else "")
        else:
            shown[name] = ("; " if name == "vae.hidden_dims" else ", ").join(str(c) for c in d.choices)
    assert {k: v.strip() for k, v in table.items()} == {k: v for k, v in shown.items()
                                                        if k not in ("method", "factor", "reward.heads")}


@pytest.mark.parametrize("objective,se,gain,want", [
    (0.020, 0.009, {"mean": 0.040, "std": 0.040, "n": 5}, (True, True)),     # 0.020 - 0.018 > 0; 0.040 > 0.0358
    (0.020, 0.011, {"mean": 0.030, "std": 0.040, "n": 5}, (False, False)),   # 0.020 - 0.022 < 0; 0.030 < 0.0358
    (0.020, None, {"mean": 0.100, "std": 0.000, "n": 1}, (False, False)),    # one unit, one seed: no spread
    (-0.05, 0.001, {"mean": -0.040, "std": 0.001, "n": 5}, (False, False)),  # a loss is never a gain
    (0.020, 0.009, {"mean": 0.010, "std": 0.004, "n": 4}, (True, True)),     # 2 * 0.004 / 2 = 0.004 < 0.010
])
def test_conclusions_by_hand(objective, se, gain, want):
    assert conclusions(objective, se, gain) == want
