"""The linear Bradley-Terry head on tensors: converged weights, a design chosen by k-fold on whole prompts,
shrinkage toward the class-mean direction, calibrated scale."""
import numpy as np
import pytest
import torch

from lens_ray.config import RewardConfig
from lens_ray.core.augment import PairSet, augmented_set
from lens_ray.core.fit import fit_reward_head
from lens_ray.core.heads import mean_diff_direction
from lens_ray.core.linear_head import (
    _accuracy,
    calibrate,
    directions,
    fit_linear_head,
    fit_weights,
    fold_of_rows,
    transform,
)
from lens_ray.core.metrics import head_accuracy


def _pairs(n: int, d: int, seed: int, noise_dims: float = 0.0, draws: int | None = None):
    """chosen - rejected = a fixed direction (from `seed`) + noise; optional huge-variance nuisance dimensions
    (shared). `draws` seeds the pairs apart from the direction: fresh pairs of the same preference."""
    w = torch.randn(d, generator=torch.Generator().manual_seed(seed))
    g = torch.Generator().manual_seed(seed if draws is None else 10_000 + draws)
    if draws is None:
        torch.randn(d, generator=g)                                 # the same stream as before for training pairs
    base = torch.randn(n, d, generator=g)
    pos, neg = base + 0.15 * w + 0.8 * torch.randn(n, d, generator=g), base - 0.15 * w
    if noise_dims:
        pos[:, :4] += noise_dims * torch.randn(n, 4, generator=g)
    return pos, neg


def test_fit_weights_reaches_the_optimum():
    x = torch.randn(200, 5, dtype=torch.float64) + 0.5
    w = fit_weights(x, torch.ones(200, dtype=torch.float64), l2=0.1, tolerance=1e-9).requires_grad_(True)
    loss = torch.nn.functional.softplus(-(x @ w)).mean() + 0.05 * w.pow(2).sum()
    loss.backward()
    assert w.grad.abs().max() < 1e-6                             # a stationary point of a convex objective
    # started at the optimum, a loose tolerance stops at once; from zero it would stop ~1e-2 short of it
    warm = fit_weights(x, torch.ones(200, dtype=torch.float64), l2=0.1, start=w.detach(), tolerance=1e-2)
    assert torch.allclose(warm, w.detach(), atol=1e-8)


def test_fit_weights_on_non_finite_differences_is_non_finite():
    x = torch.randn(50, 4, dtype=torch.float64)
    x[7, 2] = float("nan")
    w = fit_weights(x, torch.ones(50, dtype=torch.float64), l2=0.1)
    assert w.shape == (4,) and bool(torch.isnan(w).all())          # the head's fit is then recorded as failed


def test_whitening_makes_the_covariance_identity():
    e = torch.randn(500, 6, dtype=torch.float64) @ torch.randn(6, 6, dtype=torch.float64)
    p = transform(e, "whiten", whiten_shrinkage=1e-9)
    assert torch.allclose(torch.cov((e @ p).T), torch.eye(6, dtype=torch.float64), atol=1e-3)
    diag = e @ transform(e, "diag", whiten_shrinkage=0.0)          # each feature to unit spread, not rotated
    assert torch.allclose(diag.std(0), torch.ones(6, dtype=torch.float64))
    assert torch.allclose(diag, e / e.std(0))
    assert torch.equal(transform(e, "none", 0.0), torch.eye(6, dtype=torch.float64))


def test_linear_head_learns_and_records_its_design():
    pos, neg = _pairs(300, 16, 0)
    cfg = RewardConfig(heads=("linear",))
    groups = [f"p{i // 2}" for i in range(300)]
    fit = fit_reward_head(cfg, "linear", PairSet(pos, neg), PairSet(pos[:40], neg[:40]), 0, groups, pos, neg)
    tpos, tneg = _pairs(500, 16, 0, draws=1)                         # held-out: same direction, other pairs
    assert not torch.equal(tpos[:300], pos)
    assert fit.failure is None and head_accuracy(fit.head, tpos, tneg) > 0.8
    design = fit.history[0]
    assert design["norm"] in cfg.linear_norms and design["l2"] in cfg.linear_l2 and 0 <= design["cv_accuracy"] <= 1
    again = fit_reward_head(cfg, "linear", PairSet(pos, neg), PairSet(pos[:40], neg[:40]), 0, groups, pos, neg)
    assert torch.equal(fit.head.w, again.head.w)                  # deterministic


def test_kfold_grid_covers_every_design_and_mean_diff_is_its_corner():
    pos, neg = _pairs(120, 8, 1)
    cfg = RewardConfig(linear_norms=("none",), linear_l2=(1.0,), linear_shrink=(1.0,))
    fit = fit_linear_head(cfg, pos, neg, torch.ones(120), np.arange(120), torch.ones(120, dtype=torch.bool),
                          [f"p{i}" for i in range(120)], seed=0)
    md = mean_diff_direction(pos, neg)
    assert torch.allclose(fit.head.w / fit.head.w.norm(), md / md.norm(), atol=1e-5)   # shrink 1 = mean_diff
    full = fit_linear_head(RewardConfig(), pos, neg, torch.ones(120), np.arange(120),
                           torch.ones(120, dtype=torch.bool), [f"p{i}" for i in range(120)], seed=0)
    assert len(full.grid) == 3 * 6 * 5 and full.cv_accuracy == max(r["accuracy"] for r in full.grid)


def test_calibrated_scale_is_the_bradley_terry_optimum():
    pos, neg = _pairs(200, 8, 2)
    fit = fit_linear_head(RewardConfig(linear_norms=("none",), linear_l2=(1e-3,), linear_shrink=(0.0,)), pos, neg,
                          torch.ones(200), np.arange(200), torch.ones(200, dtype=torch.bool),
                          [f"p{i}" for i in range(200)], seed=0)
    z = ((pos - neg) @ fit.head.w).double()

    def nll(scale):
        return torch.nn.functional.softplus(-scale * z).mean()
    assert nll(1.0) <= min(nll(0.9), nll(1.1)) + 1e-9


@pytest.mark.parametrize("factor", [2, 4])
def test_synthetic_pairs_stay_beside_their_source_in_the_folds(factor):
    """An augmented set: folds are over real pairs; a synthetic copy of a held-out pair is never trained on.
    Synthetic pairs that are exact copies of their source would otherwise leak; the fit must not see them."""
    pos, neg = _pairs(100, 8, 3)
    syn_pos, syn_neg = pos[:, None].repeat(1, 1, 1), neg[:, None].repeat(1, 1, 1)   # copies, k = 1
    train = augmented_set(pos, neg, syn_pos, syn_neg, factor, 0, 1.0)
    groups = [f"p{i}" for i in range(100)]
    fit = fit_linear_head(RewardConfig(), train.pos, train.neg, train.weight, train.sources(), train.originals(),
                          groups, seed=0)
    plain = fit_linear_head(RewardConfig(), pos, neg, torch.ones(100), np.arange(100),
                            torch.ones(100, dtype=torch.bool), groups, seed=0)
    assert abs(fit.cv_accuracy - plain.cv_accuracy) < 0.05       # copies add no held-out accuracy


def test_directions_are_unit_from_the_fit_to_the_mean_difference():
    pos, neg = (t.double() for t in _pairs(300, 8, seed=3))
    weight = torch.linspace(0.5, 1.5, 300, dtype=torch.float64)
    out = directions(pos, neg, weight, "none", [1e-3], [0.0, 0.5, 1.0], 0.0)
    assert all(torch.isclose(u.norm(), torch.tensor(1.0, dtype=torch.float64)) for u in out.values())
    mean_dir = (weight[:, None] * (pos - neg)).sum(0)
    assert torch.allclose(out[(1e-3, 1.0)], mean_dir / mean_dir.norm())      # shrink 1: the weighted mean_diff
    # shrink 0: the Bradley-Terry optimum on the differences (unit mean square), back in embedding space
    x = pos - neg
    assert _accuracy(out[(1e-3, 0.0)], pos, neg) > 0.7                        # a sum of the two: about 0.5
    w = fit_weights(x / x.pow(2).mean().sqrt(), weight, 1e-3)
    assert torch.allclose(out[(1e-3, 0.0)], w / w.norm(), atol=1e-6)
    # l2 means the same at every scale of the embeddings
    scaled = directions(10 * pos, 10 * neg, weight, "none", [1e-3], [0.0], 0.0)
    assert torch.allclose(scaled[(1e-3, 0.0)], out[(1e-3, 0.0)], atol=1e-5)


def test_accuracy_of_a_direction_counts_ties_half():
    pos = torch.tensor([[2.0, 0.0], [0.0, 1.0], [1.0, 5.0]])
    neg = torch.tensor([[1.0, 0.0], [0.0, 3.0], [1.0, 5.0]])
    assert _accuracy(torch.tensor([1.0, 0.0]), pos, neg) == pytest.approx((1 + 0.5 + 0.5) / 3)
    assert _accuracy(torch.tensor([0.0, 1.0]), pos, neg) == pytest.approx((0.5 + 0 + 0.5) / 3)


def test_calibrate_finds_the_scale_in_closed_form():
    u = torch.tensor([1.0, 0.0], dtype=torch.float64)
    pos = torch.tensor([[4.0, 0.0]] * 3 + [[0.0, 0.0]], dtype=torch.float64)
    neg = torch.tensor([[0.0, 0.0]] * 3 + [[4.0, 0.0]], dtype=torch.float64)
    # three pairs right and one wrong by margin 4: 3 sigmoid(-4a) = sigmoid(4a), so a = ln(3) / 4 (below one)
    assert calibrate(u, pos, neg, torch.ones(4, dtype=torch.float64)) == pytest.approx(np.log(3) / 4, rel=1e-4)
    # the wrong pair weighing as much as the three right: no direction to trust, scale 0
    balanced = torch.tensor([1.0, 1.0, 1.0, 3.0], dtype=torch.float64)
    assert calibrate(u, pos, neg, balanced) == pytest.approx(0, abs=1e-6)
    assert calibrate(u, neg, pos, torch.ones(4, dtype=torch.float64)) == 0.0     # mostly wrong: never negative


def test_folds_hold_whole_prompts_in_equal_shares():
    groups = [f"p{i // 3}" for i in range(60)]                 # 20 prompts of 3 pairs
    fold = fold_of_rows(groups, 4, seed=1)
    for g in set(groups):
        assert len({fold[i] for i, x in enumerate(groups) if x == g}) == 1
    assert sorted(np.bincount(fold).tolist()) == [15, 15, 15, 15]        # 5 prompts a fold
    assert not np.array_equal(fold, fold_of_rows(groups, 4, seed=2))


def test_the_design_is_scored_on_held_out_prompts_not_its_training_pairs():
    """Pure noise with more dimensions than pairs: a weak penalty separates its training pairs perfectly, yet
    the k-fold accuracy, measured on the held fold, stays near a coin's."""
    g = torch.Generator().manual_seed(3)
    pos, neg = torch.randn(60, 100, generator=g), torch.randn(60, 100, generator=g)
    cfg = RewardConfig(linear_norms=("none",), linear_l2=(1e-4,), linear_shrink=(0.0,))
    fit = fit_linear_head(cfg, pos, neg, torch.ones(60), np.arange(60), torch.ones(60, dtype=torch.bool),
                          [str(i) for i in range(60)], seed=0)
    assert _accuracy(fit.head.w.double(), pos.double(), neg.double()) == 1.0            # in-sample
    assert fit.cv_accuracy < 0.75


def test_pointwise_features_are_signed_centred_responses_with_a_bias():
    """loss=pointwise: each response on its own, centred, scaled to unit mean square, a constant column for the
    bias, signed + for chosen and - for rejected (so fit_weights' softplus(-x.w) is logistic regression)."""
    from lens_ray.core.linear_head import features
    pos, neg = _pairs(30, 5, 2)
    pos, neg = pos.double(), neg.double()
    weight = torch.rand(30, dtype=torch.float64)
    p = transform(torch.cat([pos, neg]), "diag", 0.0)
    x, wt = features(pos, neg, weight, p, "pointwise")
    e = torch.cat([pos, neg]) @ p
    e = (e - e.mean(0)) / (e - e.mean(0)).pow(2).mean().sqrt()
    assert x.shape == (60, 6) and torch.allclose(x[:30, :5], e[:30]) and torch.allclose(x[30:, :5], -e[30:])
    assert torch.equal(x[:30, 5], torch.ones(30, dtype=torch.float64)) and torch.equal(x[30:, 5], -torch.ones(30,
                                                                                       dtype=torch.float64))
    assert torch.equal(wt, torch.cat([weight, weight]))
    bt, same = features(pos, neg, weight, p, "bradley_terry")
    assert bt.shape == (30, 5) and torch.equal(same, weight)


def test_a_pointwise_linear_head_learns_the_preference():
    pos, neg = _pairs(300, 16, 0)
    cfg = RewardConfig(heads=("linear",), loss="pointwise")
    groups = [f"p{i // 2}" for i in range(300)]
    fit = fit_reward_head(cfg, "linear", PairSet(pos, neg), PairSet(pos[:40], neg[:40]), 0, groups, pos, neg)
    tpos, tneg = _pairs(500, 16, 0, draws=1)
    assert fit.failure is None and head_accuracy(fit.head, tpos, tneg) > 0.8
    pairwise = fit_reward_head(RewardConfig(heads=("linear",)), "linear", PairSet(pos, neg),
                               PairSet(pos[:40], neg[:40]), 0, groups, pos, neg)
    assert not torch.allclose(fit.head.w, pairwise.head.w)          # another objective, another head
