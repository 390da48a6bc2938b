"""core/selection.py on tensors (no Ray): candidate layers, folds, the units, the one-standard-error pick, the
levers and the refit."""
import math

import numpy as np
import pytest
import torch

from lens_ray.config import LensConfig
from lens_ray.core.fit import NonFiniteError
from lens_ray.core.heads import mean_diff_head, rewards
from lens_ray.core.search import fit_method
from lens_ray.core.selection import (
    Candidate,
    Scored,
    Selection,
    candidate_layers,
    choose,
    finalists,
    fold_scores,
    fold_splits,
    levers,
    paired_gain,
    refit,
    stage_one,
    stage_two,
    summarize,
)


def test_candidate_layers_spread_over_depth():
    assert candidate_layers(30) == (-1, -10, -16)           # SmolLM2: the layer RESULTS measured best is in
    assert candidate_layers(6) == (-1, -3, -4)              # MiniLM
    assert candidate_layers(2) == (-1, -2)                  # duplicates merged, order kept
    assert candidate_layers(12, (0.0, 0.25)) == (-1, -4)


def test_candidates_names_and_stages():
    one = stage_one([(-1,), (-10,)], ("mean_diff", "mlp"))
    assert [c.name for c in one] == ["layer -1 mean_diff", "layer -1 mlp", "layer -10 mean_diff", "layer -10 mlp"]
    two = stage_two([Candidate((-10,), "linear")], ("lens",), (4, 8))
    assert [c.name for c in two] == ["layer -10 linear + lens x4", "layer -10 linear + lens x8"]
    assert two[0].simplicity > Candidate((-10,), "mlp").simplicity > Candidate((-1,), "linear").simplicity
    assert two[1].record() == {"layer": [-10], "head_kind": "linear", "method": "lens", "factor": 8,
                               "loss": "bradley_terry"}
    assert one[0].record() == {"layer": [-1], "head_kind": "mean_diff", "method": "original", "factor": 1,
                               "loss": "bradley_terry"}
    assert all(Candidate.of(c.record()) == c for c in one + two)


def test_each_trained_head_with_each_loss_and_the_default_loss_preferred():
    """selection.losses: a trained head once per loss (mean_diff fits nothing: once); the pointwise candidate is
    named so, stage two keeps its finalist's loss, and within the rule bradley_terry is the simpler."""
    one = stage_one([(-1,)], ("mean_diff", "linear", "mlp"), ("bradley_terry", "pointwise"))
    assert [c.name for c in one] == ["layer -1 mean_diff", "layer -1 linear", "layer -1 linear (pointwise)",
                                     "layer -1 mlp", "layer -1 mlp (pointwise)"]
    two = stage_two([one[2]], ("lens",), (4,))
    assert two[0].name == "layer -1 linear (pointwise) + lens x4" and two[0].loss == "pointwise"
    assert one[1].simplicity < one[2].simplicity < one[3].simplicity      # loss breaks a tie of head, not before
    rows = [Scored(c.name, c, "ok", [acc], acc, 0.01) for c, acc in zip(one[1:3], (0.640, 0.645))]
    assert choose(rows).name == "layer -1 linear"                    # within one se: the default loss
    rows[1].kfold_accuracy = 0.70
    assert choose(rows).name == "layer -1 linear (pointwise)"        # beyond it: the k-fold decides


def _groups(n: int, per: int = 2) -> list[str]:
    return [f"p{i // per}" for i in range(n)]


def test_fold_splits_are_whole_prompts_and_cover_every_row_once():
    groups = _groups(90, per=3)
    splits = fold_splits(groups, 5, 0.2, seed=3)
    held = np.concatenate([s.held for s in splits])
    assert sorted(held.tolist()) == list(range(90))
    for s in splits:
        assert not set(s.train) & set(s.val) and not (set(s.train) | set(s.val)) & set(s.held)
        assert len(s.train) + len(s.val) + len(s.held) == 90
        for part in (s.train, s.val, s.held):             # no prompt is split across parts
            assert not {groups[i] for i in part} & ({groups[i] for i in np.setdiff1d(np.arange(90), part)})
        assert 0.1 < len(s.val) / (len(s.train) + len(s.val)) < 0.3
    again = fold_splits(groups, 5, 0.2, seed=3)
    assert all((a.held == b.held).all() and (a.val == b.val).all() for a, b in zip(splits, again))
    assert any((a.held != b.held).any() for a, b in zip(splits, fold_splits(groups, 5, 0.2, seed=4)))


def _separable(n: int, d: int = 8, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    g = np.random.default_rng(seed)
    direction = np.zeros(d, np.float32)
    direction[0] = 1.0
    base = g.standard_normal((n, d)).astype(np.float32)
    return base + 0.8 * direction, base - 0.8 * direction


def test_fold_scores_fit_every_candidate_of_a_layer():
    pos, neg = _separable(80)
    groups = _groups(80)
    cfg = LensConfig()
    cfg.vae.epochs, cfg.vae.latent_dim, cfg.reward.max_steps, cfg.reward.eval_every = 3, 4, 40, 10
    split = fold_splits(groups, 4, 0.2, seed=0)[1]
    cands = stage_one([(-1,)], ("mean_diff", "linear", "mlp")) + \
        stage_two([Candidate((-1,), "linear")], ("lens", "direct_perturbation"), (2,))
    scores = fold_scores(cfg, cands, pos, neg, groups, split, 1)
    assert list(scores) == [c.name for c in cands] and all(s["bon_gold"] is None for s in scores.values())
    accs = {n: s["accuracy"] for n, s in scores.items()}
    held = (torch.from_numpy(pos[split.held]), torch.from_numpy(neg[split.held]))
    md = mean_diff_head(torch.from_numpy(pos[split.train]), torch.from_numpy(neg[split.train]))
    expected = float(np.mean(rewards(md, held[0]) > rewards(md, held[1])))
    assert accs["layer -1 mean_diff"] == pytest.approx(expected)           # fitted on the training part only
    assert all(a > 0.8 for a in accs.values())                              # a direction every head can find
    assert scores == fold_scores(cfg, cands, pos, neg, groups, split, 1)     # seeded: the same again


def test_each_candidate_gets_its_own_head_kind_and_a_fold_fits_one_vae(monkeypatch):
    """A linear candidate is fitted as a linear head and an MLP one as an MLP; LENS's VAE is fitted once per
    fold and handed to its candidates (fitting one per candidate gives the same numbers at many times the cost),
    and no other method fits one."""
    import lens_ray.core.search as search
    import lens_ray.core.selection as selection
    calls, vaes = [], []
    real_method, real_vae = selection.fit_method, selection.fit_vae

    def method(cfg, name, factor, *args):
        calls.append((cfg.reward.heads[0], name, factor, args[-1] is not None))
        return real_method(cfg, name, factor, *args)

    def vae(*args):
        vaes.append(1)
        return real_vae(*args)

    def no_vae(*args):
        raise AssertionError("fit_method fitted a VAE of its own")
    monkeypatch.setattr(selection, "fit_method", method)
    monkeypatch.setattr(selection, "fit_vae", vae)
    monkeypatch.setattr(search, "fit_vae", no_vae)
    pos, neg = _separable(40)
    cfg = LensConfig()
    cfg.vae.epochs, cfg.vae.latent_dim, cfg.reward.max_steps, cfg.reward.eval_every = 2, 4, 10, 10
    cands = stage_one([(-1,)], ("linear", "mlp")) + \
        stage_two([Candidate((-1,), "mlp")], ("lens", "direct_perturbation"), (2, 4))
    fold_scores(cfg, cands, pos, neg, _groups(40), fold_splits(_groups(40), 4, 0.2, seed=0)[0], 0)
    assert calls == [("linear", "original", 1, False), ("mlp", "original", 1, False), ("mlp", "lens", 2, True),
                     ("mlp", "lens", 4, True), ("mlp", "direct_perturbation", 2, False),
                     ("mlp", "direct_perturbation", 4, False)]
    assert len(vaes) == 1


def test_a_diverging_fit_is_none_not_an_error():
    pos, neg = _separable(40)
    cfg = LensConfig()
    cfg.reward.lr, cfg.reward.max_steps, cfg.reward.eval_every = 1e30, 20, 10
    split = fold_splits(_groups(40), 4, 0.2, seed=0)[0]
    accs = fold_scores(cfg, stage_one([(-1,)], ("mean_diff", "mlp")), pos * 1e30, neg, _groups(40), split, 0)
    assert accs["layer -1 mlp"] is None and accs["layer -1 mean_diff"] is not None


def _row(name_layer: int, head: str, folds: list[float | None], method: str = "original", factor: int = 1,
         gold: list[float] | None = None) -> Scored:
    c = Candidate((name_layer,), head, method, factor)
    golds = gold or [None] * len(folds)
    return summarize([c], [{c.name: None if a is None else {"accuracy": a, "bon_gold": g}}
                           for a, g in zip(folds, golds)])[0]


def test_summarize_mean_se_and_failures():
    row = _row(-1, "mlp", [0.6, 0.7, 0.8])
    assert row.status == "ok" and row.kfold_accuracy == pytest.approx(0.7)
    assert row.kfold_se == pytest.approx(0.1 / math.sqrt(3))
    assert _row(-1, "mlp", [0.6, None, 0.8]).status == "failed"
    assert "kfold_bon_gold" not in row.row()                                     # no gold measured, no column
    c = Candidate((-1,), "mlp")
    assert summarize([c], [{c.name: {"accuracy": 0.5, "bon_gold": None}}, {}])[0].status == "failed"  # a fold
    gold = _row(-1, "mlp", [0.6, 0.7], gold=[0.3, 0.5])
    assert gold.gold_folds == [0.3, 0.5] and gold.kfold_bon_gold == pytest.approx(0.4)
    assert gold.kfold_bon_gold_se == pytest.approx(0.1) and gold.kfold_accuracy == pytest.approx(0.65)


def test_choose_prefers_the_simpler_within_one_standard_error():
    mlp = _row(-1, "mlp", [0.70, 0.74, 0.72, 0.66])          # best mean 0.705, se ~0.017
    linear = _row(-1, "linear", [0.69, 0.72, 0.70, 0.67])    # 0.695: within one se
    md = _row(-1, "mean_diff", [0.60, 0.62, 0.61, 0.59])     # far below
    assert choose([mlp, linear, md]).name == "layer -1 linear"
    aug = _row(-1, "linear", [0.70, 0.74, 0.72, 0.67], "lens", 4)      # best mean, by less than one se
    assert choose([mlp, linear, md, aug]).name == "layer -1 linear"     # no augmentation first
    clear = _row(-10, "mlp", [0.80, 0.81, 0.80, 0.82])
    assert choose([mlp, linear, md, aug, clear]).name == "layer -10 mlp"  # a clear winner wins
    failed = _row(-16, "mean_diff", [0.99, None, 0.99, 0.99])
    assert choose([linear, failed]).name == "layer -1 linear"             # a failed one never
    with pytest.raises(NonFiniteError):
        choose([failed])


def test_finalists_are_the_best_trained_heads_on_original_pairs():
    rows = [_row(-1, "mlp", [0.6, 0.6]), _row(-10, "linear", [0.7, 0.7]), _row(-10, "mean_diff", [0.9, 0.9]),
            _row(-10, "mlp", [0.65, 0.65]), _row(-1, "mlp", [0.99, 0.99], "lens", 2)]
    assert finalists(rows, 2) == [Candidate((-10,), "linear"), Candidate((-10,), "mlp")]
    assert finalists(rows, 0) == []


def test_paired_gain_and_levers():
    a, b = _row(-10, "mlp", [0.7, 0.8, 0.75]), _row(-1, "mlp", [0.6, 0.7, 0.7])
    g = paired_gain(a, b)
    assert g["mean"] == pytest.approx(0.0833333) and g["versus"] == "layer -1 mlp"
    assert g["se"] == pytest.approx(np.std([0.1, 0.1, 0.05], ddof=1) / math.sqrt(3))
    md = _row(-10, "mean_diff", [0.6, 0.6, 0.6])
    aug = _row(-10, "mlp", [0.72, 0.85, 0.8], "lens", 4)
    out = levers([a, b, md, aug], aug, (-1,))
    assert out["layer"]["mean"] == pytest.approx(g["mean"])
    assert out["head"]["mean"] == pytest.approx(0.15) and out["head"]["versus"] == "layer -10 mean_diff"
    assert out["head"]["candidate"] == "layer -10 mlp"
    assert out["augmentation"]["mean"] == pytest.approx(0.04) and out["augmentation"]["versus"] == "layer -10 mlp"
    plain = levers([a, b, md], a, (-10,))
    assert plain["layer"] is None and plain["augmentation"] is None      # the run's layer, no augmentation


def test_refit_mean_diff_and_linear_use_every_seed_pair_the_mlp_keeps_val():
    pos, neg = _separable(60)
    train, val = np.arange(0, 50), np.arange(50, 60)
    cfg = LensConfig()
    head = refit(cfg, Candidate((-1,), "mean_diff"), pos, neg, _groups(60), train, val, 0)
    want = mean_diff_head(torch.from_numpy(pos), torch.from_numpy(neg))
    e = torch.from_numpy(pos[:5])
    assert np.allclose(rewards(head, e), rewards(want, e))
    cfg.reward.max_steps, cfg.reward.eval_every = 30, 10
    mlp = refit(cfg, Candidate((-1,), "mlp"), pos, neg, _groups(60), train, val, 0)
    assert mlp.config()["dim"] == 8
    cfg.reward.heads = ("mlp",)
    t = lambda idx: (torch.from_numpy(pos[idx]), torch.from_numpy(neg[idx]))  # noqa: E731
    alone = fit_method(cfg, "original", 1, *t(train), *t(val), 0, [_groups(60)[i] for i in train])
    assert np.array_equal(rewards(mlp, e), rewards(alone, e))           # fitted on train only, val kept apart


def test_the_one_standard_error_bar_is_inclusive_and_no_spread_means_no_tolerance():
    mlp, md = _row(-1, "mlp", [0.75, 0.75]), _row(-1, "mean_diff", [0.5, 0.5])
    mlp.kfold_se = 0.25                                              # exactly one se above mean_diff
    assert choose([mlp, md]).name == "layer -1 mean_diff"
    for se in (None, float("nan")):                                     # one fold: no spread, no tolerance
        mlp.kfold_se = se
        assert choose([mlp, md]).name == "layer -1 mlp"
    # of equally simple candidates within one se, the higher estimate
    a, b = _row(-1, "linear", [0.70, 0.72, 0.74]), _row(-10, "linear", [0.71, 0.73, 0.75])
    assert choose([a, b]).name == "layer -10 linear" and choose([b, a]).name == "layer -10 linear"


def test_no_gain_is_paired_with_a_failed_candidate_nor_a_layer_lever_at_the_runs_own_layer():
    ok, failed = _row(-1, "mlp", [0.7, 0.8]), _row(-10, "mlp", [0.6, None])
    assert paired_gain(ok, failed) is None and paired_gain(failed, ok) is None
    at_run = _row(-1, "linear", [0.7, 0.8])
    assert levers([ok, at_run], at_run, (-1,))["layer"] is None
    assert levers([ok, at_run], at_run, (-1,))["head"] is None                # no mean_diff to compare with


def test_mean_diff_is_the_simplest_of_all():
    md = _row(-1, "mean_diff", [0.705, 0.725, 0.685, 0.705])
    linear = _row(-1, "linear", [0.71, 0.73, 0.69, 0.71])        # higher, by less than one se
    assert choose([linear, md]).name == "layer -1 mean_diff"
    assert choose([linear, _row(-1, "mlp", [0.715, 0.735, 0.695, 0.715])]).name == "layer -1 linear"


def test_the_gold_objective_ranks_by_best_of_n_gold_on_the_held_prompts():
    pos, neg = _separable(80)
    groups = _groups(80, per=4)
    g = np.random.default_rng(1)
    gold_neg = g.uniform(0, 0.5, 80)
    gold_pos = gold_neg + g.uniform(0.1, 0.5, 80)
    cfg = LensConfig()
    split = fold_splits(groups, 4, 0.2, seed=0)[2]
    cands = stage_one([(-1,)], ("mean_diff",))
    got = fold_scores(cfg, cands, pos, neg, groups, split, 2, (gold_pos, gold_neg))["layer -1 mean_diff"]
    md = mean_diff_head(torch.from_numpy(pos[split.train]), torch.from_numpy(neg[split.train]))
    r = np.concatenate([rewards(md, torch.from_numpy(x[split.held])) for x in (pos, neg)])
    gold = np.concatenate([gold_pos[split.held], gold_neg[split.held]])
    keys = [groups[i] for i in split.held] * 2
    want = np.mean([gold[[i for i, k in enumerate(keys) if k == q]][np.argmax(r[[i for i, k in enumerate(keys)
                                                                                   if k == q]])]
                    for q in dict.fromkeys(keys)])
    assert got["bon_gold"] == pytest.approx(want)
    # the objective decides: by accuracy mlp leads, by gold linear does by more than one se
    mlp = _row(-1, "mlp", [0.80, 0.82, 0.81], gold=[0.40, 0.41, 0.40])
    linear = _row(-1, "linear", [0.70, 0.71, 0.72], gold=[0.50, 0.52, 0.51])
    assert choose([mlp, linear]).name == "layer -1 mlp"
    assert choose([mlp, linear], "bon_gold").name == "layer -1 linear"
    assert finalists([mlp, linear], 1, "bon_gold") == [Candidate((-1,), "linear")]
    assert paired_gain(linear, mlp, "bon_gold")["mean"] == pytest.approx(0.1066667)
    with pytest.raises(ValueError, match="no k-fold bon_gold"):
        choose([_row(-1, "mlp", [0.8, 0.8])], "bon_gold")


def test_a_candidates_config_is_a_copy():
    """Each candidate fits with its own head kind on a copy: the run's config is never changed by it."""
    from lens_ray.core.selection import _with_head
    cfg = LensConfig()
    heads = cfg.reward.heads
    assert _with_head(cfg, "linear").reward.heads == ("linear",) and cfg.reward.heads == heads


def test_concatenated_layers_seed_ensembles_and_top_k_ensembles_as_candidates():
    """selection.concat_layers / mlp_seeds / ensembles: their names, records and place in the simplicity order
    (a head first, then one layer, then one seed; an ensemble of candidates is the least simple)."""
    from lens_ray.core.selection import ensembles
    one = stage_one([(-1,), (-2,), (-1, -2)], ("mean_diff", "linear", "mlp"), mlp_seeds=3)
    names = [c.name for c in one]
    assert names[6:9] == ["layer -1,-2 mean_diff", "layer -1,-2 linear", "layer -1,-2 mlp"]
    assert names[9:] == ["layer -1 mlp x3 seeds", "layer -2 mlp x3 seeds", "layer -1,-2 mlp x3 seeds"]
    tops = ensembles((2, 5))
    assert [c.name for c in tops] == ["top-2 ensemble", "top-5 ensemble"]
    order = [Candidate((-1,), "linear"), Candidate((-1, -2), "linear"), Candidate((-1,), "mlp"),
             Candidate((-1,), "mlp", mlp_seeds=3), Candidate((-1, -2), "mlp"), tops[0]]
    assert sorted(order, key=lambda c: c.simplicity) == order
    assert one[-1].record() == {"layer": [-1, -2], "head_kind": "mlp", "method": "original", "factor": 1,
                                "loss": "bradley_terry", "mlp_seeds": 3}
    assert tops[1].record()["top"] == 5 and "mlp_seeds" not in tops[1].record()
    assert all(Candidate.of(c.record()) == c for c in one + tops)
    assert stage_one([(-1,)], ("mean_diff", "linear"), mlp_seeds=3) == stage_one([(-1,)], ("mean_diff", "linear"))


def _layered(n: int = 90, width: int = 4) -> tuple[np.ndarray, np.ndarray]:
    """Two layers of `width`, concatenated: the preference shows on layer 0's first coordinate only."""
    pos, neg = _separable(n, width)
    g = np.random.default_rng(5)
    noise = g.standard_normal((2, n, width)).astype(np.float32)
    return np.concatenate([pos, noise[0]], 1), np.concatenate([neg, noise[1]], 1)


def test_fold_scores_keep_standardized_rewards_and_a_seed_ensemble_averages_seeds():
    from lens_ray.core.heads import reward_scale, standardize
    from lens_ray.core.selection import seed_ensemble
    pos, neg = _separable(80)
    groups = _groups(80)
    cfg = LensConfig()
    cfg.reward.max_steps, cfg.reward.eval_every = 40, 10
    split = fold_splits(groups, 4, 0.2, seed=0)[1]
    cands = [Candidate((-1,), "mean_diff"), Candidate((-1,), "mlp"), Candidate((-1,), "mlp", mlp_seeds=2)]
    got = fold_scores(cfg, cands, pos, neg, groups, split, 1, keep_rewards=True)
    assert "rewards" not in fold_scores(cfg, cands[:1], pos, neg, groups, split, 1)["layer -1 mean_diff"]
    md = mean_diff_head(torch.from_numpy(pos[split.train]), torch.from_numpy(neg[split.train]))
    scale = reward_scale(rewards(md, torch.from_numpy(np.concatenate([pos[split.train], neg[split.train]]))))
    for i, x in enumerate((pos, neg)):
        want = standardize(rewards(md, torch.from_numpy(x[split.held])), scale)
        assert np.allclose(got["layer -1 mean_diff"]["rewards"][i], want, atol=1e-5)
    # the seed ensemble: seed 0's MLP (the plain candidate's) and one more, each standardized, averaged
    cfg.reward.heads = ("mlp",)
    t = lambda idx: (torch.from_numpy(pos[idx]), torch.from_numpy(neg[idx]))  # noqa: E731
    fits = [fit_method(cfg, "original", 1, *t(split.train), *t(split.val), 7919 * 2 + 104_729 * s,
                       [groups[i] for i in split.train]) for s in range(2)]
    both = seed_ensemble(fits, np.concatenate([pos[split.train], neg[split.train]]))
    r = [rewards(both, torch.from_numpy(x[split.held])) for x in (pos, neg)]
    assert got["layer -1 mlp x2 seeds"]["accuracy"] == pytest.approx(float(np.mean(r[0] > r[1])))
    plain = rewards(fits[0], torch.from_numpy(pos[split.held]))
    assert got["layer -1 mlp"]["accuracy"] == pytest.approx(
        float(np.mean(plain > rewards(fits[0], torch.from_numpy(neg[split.held])))))
    assert not np.allclose(r[0], standardize(plain, reward_scale(rewards(fits[0], torch.from_numpy(
        np.concatenate([pos[split.train], neg[split.train]]))))), atol=1e-3)    # the second seed counts


def test_a_top_k_ensemble_ranks_its_members_on_the_other_folds_only():
    """In fold f the top k are ranked by their mean over the other folds: a candidate that is best only on
    fold f is not a member there. The ensemble's held rewards are the members' standardized rewards averaged."""
    from lens_ray.core.selection import ensemble_units
    groups = _groups(12)
    splits = [FoldSplitFor(groups, held) for held in (np.arange(0, 4), np.arange(4, 8), np.arange(8, 12))]
    a, b, c = Candidate((-1,), "linear"), Candidate((-1,), "mlp"), Candidate((-2,), "linear")
    held_r = {   # candidate -> per fold: (pos rewards, neg rewards) of the fold's 4 held pairs
        a.name: [([1, 1, 1, 1], [0, 0, 0, 0])] * 3,                     # right everywhere
        b.name: [([1, 1, 0, 0], [0, 0, 1, 1]), ([1, 1, 1, 0], [0, 0, 0, 1]), ([1, 1, 1, 1], [0, 0, 0, 0])],
        c.name: [([0, 0, 0, 0], [1, 1, 1, 1]), ([0, 1, 0, 0], [1, 0, 1, 1]), ([3, 3, 3, 3], [0, 0, 0, 0])]}
    units = [{n: {"accuracy": float(np.mean(np.array(v[f][0]) > np.array(v[f][1]))), "bon_gold": None,
                  "rewards": [list(map(float, v[f][0])), list(map(float, v[f][1]))]} for n, v in held_r.items()}
             for f in range(3)]
    rows = summarize([a, b, c], units)
    got = ensemble_units((2,), rows, units, splits, groups)
    # fold 3: c is best there but ranked on folds 1-2 (0.0, 0.25) it is last; the members are a and b
    assert got[2]["top-2 ensemble"]["accuracy"] == pytest.approx(1.0)
    # fold 1: ranked on folds 2-3, a (1.0) and b (0.875) again; their mean: (1, 1, 0.5, 0.5) vs (0, 0, .5, .5)
    assert got[0]["top-2 ensemble"]["accuracy"] == pytest.approx(0.5 + 0.5 * 0.5)   # ties count half
    assert got[1]["top-2 ensemble"]["accuracy"] == pytest.approx(0.875)     # (1, 1, 1, .5) vs (0, 0, 0, .5)
    assert ensemble_units((4,), rows, units, splits, groups)[0]["top-4 ensemble"] is None    # too few candidates
    rows[2].status = "failed"                                         # a failed candidate is never a member
    assert ensemble_units((3,), rows, units, splits, groups)[0]["top-3 ensemble"] is None


def FoldSplitFor(groups: list[str], held: np.ndarray):
    from lens_ray.core.selection import FoldSplit
    rest = np.setdiff1d(np.arange(len(groups)), held)
    return FoldSplit(rest[:-2], rest[-2:], held)


def test_an_ensemble_pick_is_refitted_on_its_members_layers():
    """resolved: the k best by k-fold, on the union of their layers; refit fits each member on its part of the
    concatenated tables and scales it on the seed pairs' responses; the stored config rebuilds it."""
    from lens_ray.core.heads import build_head, reward_scale, standardize
    from lens_ray.core.selection import resolved
    pos, neg = _layered(60)
    rows = [_row(-2, "linear", [0.7, 0.7]), _row(-1, "mean_diff", [0.9, 0.8]), _row(-1, "mlp", [0.5, 0.5])]
    cat = Candidate((-1, -2), "linear")
    rows.append(summarize([cat], [{cat.name: {"accuracy": 0.8, "bon_gold": None}}] * 2)[0])
    top = summarize([Candidate((), "ensemble", top=3)],
                    [{"top-3 ensemble": {"accuracy": 0.9, "bon_gold": None}}] * 2)[0].candidate
    pick = resolved(top, rows)
    assert [m.name for m in pick.members] == ["layer -1 mean_diff", "layer -1,-2 linear", "layer -2 linear"]
    assert pick.layer == (-1, -2) and pick.name == top.name and resolved(cat, rows) is cat
    assert Candidate.of(pick.record()).members == pick.members
    train, val = np.arange(0, 50), np.arange(50, 60)
    cfg = LensConfig()
    head = refit(cfg, pick, pos, neg, _groups(60), train, val, 0)
    assert head.config()["layers"] == [[0], [0, 1], [1]] and head.width == 4
    e = torch.from_numpy(pos[:7])
    both = torch.from_numpy(np.concatenate([pos, neg]))
    parts = [refit(cfg, Candidate((-1,), "mean_diff"), pos[:, :4], neg[:, :4], _groups(60), train, val, 0),
             refit(cfg, cat, pos, neg, _groups(60), train, val, 0),
             refit(cfg, Candidate((-2,), "linear"), pos[:, 4:], neg[:, 4:], _groups(60), train, val, 0)]
    cut = (slice(0, 4), slice(0, 8), slice(4, 8))
    want = np.mean([standardize(rewards(p, e[:, s]), reward_scale(rewards(p, both[:, s])))
                    for p, s in zip(parts, cut)], 0)
    assert np.allclose(rewards(head, e), want, atol=1e-5)
    again = build_head(head.config())
    again.load_state_dict(head.state_dict())
    assert np.allclose(rewards(again, e), want, atol=1e-5)


def test_an_ensemble_is_picked_only_beyond_one_standard_error():
    linear = _row(-1, "linear", [0.70, 0.72, 0.74])
    top = summarize([Candidate((), "ensemble", top=2)],
                    [{"top-2 ensemble": {"accuracy": a, "bon_gold": None}} for a in (0.71, 0.73, 0.75)])[0]
    assert choose([top, linear]).name == "layer -1 linear"
    top = summarize([Candidate((), "ensemble", top=2)],
                    [{"top-2 ensemble": {"accuracy": a, "bon_gold": None}} for a in (0.80, 0.82, 0.84)])[0]
    assert choose([top, linear]).name == "top-2 ensemble"


def test_the_selection_record_reads_every_stored_form_and_writes_the_same_keys():
    """A record from before objectives and losses were chosen reads with their defaults; a record written and read
    back is the same record, and `versus` (the run's) appears only once it is set."""
    old = {"candidate": "layer -1 mlp", "layer": [-1], "head_kind": "mlp", "method": "original", "factor": 1,
           "folds": 5, "kfold_accuracy": 0.61, "kfold_se": 0.01, "accuracy": 0.6, "bon_gold": None,
           "head": "heads/selected", "seeds": [{"seed": 0, "accuracy": 0.6, "bon_gold": None}], "rule": "r",
           "note": "n", "levers": {"layer": None}, "candidates": []}
    sel = Selection.of(old)
    assert sel.objective == "accuracy" and sel.pick == Candidate((-1,), "mlp") and sel.versus is None
    assert sel.record() == {**old, "loss": "bradley_terry", "kfold_bon_gold": None, "kfold_bon_gold_se": None,
                            "objective": "accuracy"}
    sel.versus = {"original": None}
    assert Selection.of(sel.record()) == sel and sel.record()["versus"] == {"original": None}
    ensemble = Candidate((), "ensemble", top=2, members=(Candidate((-1,), "linear"), Candidate((-4,), "mlp")))
    again = Selection.of(Selection("top-2 ensemble", ensemble, 5, 0.7, None).record())
    assert again.pick.members == ensemble.members and again.pick.top == 2
