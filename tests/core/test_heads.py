import math

import numpy as np
import pytest
import torch

from lens_ray.core.heads import (
    LinearScorer,
    RewardHead,
    bradley_terry_loss,
    build_head,
    mean_diff_direction,
    mean_diff_head,
    rewards,
)


def test_head_shapes_and_rebuild():
    head = RewardHead(12, hidden_dim=8, depth=2, dropout=0.1)
    assert head(torch.randn(5, 12)).shape == (5,)
    again = build_head(head.config())
    again.load_state_dict(head.state_dict())
    head.eval(), again.eval()
    e = torch.randn(3, 12)
    assert torch.equal(head(e), again(e))


def test_bradley_terry_values():
    z = torch.zeros(4)
    assert math.isclose(float(bradley_terry_loss(z, z)), math.log(2), rel_tol=1e-6)
    # right order -> small loss, wrong order -> large
    assert bradley_terry_loss(torch.tensor([5.0]), torch.tensor([0.0])) < 0.01
    assert bradley_terry_loss(torch.tensor([0.0]), torch.tensor([5.0])) > 4.9


def test_bradley_terry_weights():
    good, bad = torch.tensor([5.0, 0.0]), torch.tensor([0.0, 5.0])
    only_first = bradley_terry_loss(good, bad, torch.tensor([1.0, 0.0]))
    assert math.isclose(float(only_first), float(bradley_terry_loss(good[:1], bad[:1])), rel_tol=1e-6)


def test_mean_diff_scorer():
    pos = torch.tensor([[1.0, 0.0], [3.0, 0.0]])
    neg = torch.tensor([[0.0, 1.0], [0.0, 3.0]])
    w = mean_diff_direction(pos, neg)
    assert torch.equal(w, torch.tensor([2.0, -2.0]))
    s = LinearScorer(w)
    assert (s(pos) > s(neg)).all()
    assert isinstance(build_head(s.config()), LinearScorer)


def test_head_defaults_and_any_leading_shape():
    head = RewardHead(12)
    assert head.config() == {"kind": "mlp", "dim": 12, "hidden_dim": 256, "depth": 1, "dropout": 0.1}
    assert head(torch.randn(2, 3, 12)).shape == (2, 3)              # (..., d) -> (...)
    assert head(torch.randn(12)).shape == ()


def test_linear_scorer_and_mean_diff_head_values():
    pos = torch.tensor([[1.0, 0.0], [3.0, 0.0]])
    neg = torch.tensor([[0.0, 1.0], [0.0, 3.0]])
    head = mean_diff_head(pos, neg)
    assert torch.equal(head.w, torch.tensor([2.0, -2.0]))
    assert torch.equal(head(pos), torch.tensor([2.0, 6.0])) and torch.equal(head(neg), torch.tensor([-2.0, -6.0]))


def test_rewards_in_batches_in_eval_mode():
    torch.manual_seed(0)
    head = RewardHead(6, hidden_dim=8, dropout=0.5).train()         # dropout on: rewards must switch it off
    e = torch.randn(10, 6)
    got = rewards(head, e, batch=4)                                 # batches of 4, 4 and 2
    whole = head.eval()(e).detach().numpy()
    # batches of other shapes may round differently in the last ulp (an Intel Xeon does): a tolerance far below
    # what dropout left on (x2 on half the units), a lost or reordered batch would move
    assert got.shape == (10,) and np.allclose(got, whole, rtol=1e-5, atol=1e-6)
    assert not np.allclose(got[:4], whole[4:8], rtol=1e-5, atol=1e-6)  # the tolerance tells rows apart
    assert not head.training
    assert rewards(head, e[:0]).shape == (0,)


def test_weighted_bradley_terry_divides_by_the_weights_sum():
    good, bad = torch.tensor([1.0, 0.0]), torch.tensor([0.0, 1.0])
    first = float(bradley_terry_loss(good[:1], bad[:1]))
    assert math.isclose(float(bradley_terry_loss(good, bad, torch.tensor([2.0, 0.0]))), first, rel_tol=1e-6)
    both = float(bradley_terry_loss(good, bad))
    assert math.isclose(float(bradley_terry_loss(good, bad, torch.tensor([3.0, 3.0]))), both, rel_tol=1e-6)


def test_build_head_bounds_depth_and_dropout():
    cfg = {"kind": "mlp", "dim": 4, "hidden_dim": 2, "depth": 16, "dropout": 0.0}
    assert build_head(cfg).depth == 16                              # the deepest allowed
    for bad in ({"depth": 0}, {"depth": 17}, {"dropout": 1.0}, {"dropout": -0.1}, {"depth": 1.5}):
        with pytest.raises(ValueError, match="out of bounds"):
            build_head({**cfg, **bad})
    with pytest.raises(ValueError, match="unknown kind"):
        build_head({**cfg, "kind": "tree"})


def test_pointwise_loss_by_hand():
    """Each response classified alone: -(log sigmoid(r+) + log sigmoid(-r-)) / 2, weighted like the pairwise loss."""
    from lens_ray.core.heads import LOSS, pointwise_loss
    r_pos, r_neg = torch.tensor([2.0, -1.0]), torch.tensor([0.5, 0.0])
    by_hand = [-(math.log(1 / (1 + math.exp(-p))) + math.log(1 / (1 + math.exp(n)))) / 2
               for p, n in zip(r_pos.tolist(), r_neg.tolist())]
    assert math.isclose(float(pointwise_loss(r_pos, r_neg)), sum(by_hand) / 2, rel_tol=1e-6)
    assert math.isclose(float(pointwise_loss(r_pos, r_neg, torch.tensor([1.0, 0.0]))), by_hand[0], rel_tol=1e-6)
    # unlike the pairwise loss it sees each reward's level: shifting both rewards changes it
    assert float(pointwise_loss(r_pos + 3, r_neg + 3)) != float(pointwise_loss(r_pos, r_neg))
    assert LOSS["pointwise"] is pointwise_loss and LOSS["bradley_terry"] is bradley_terry_loss


def test_ensemble_averages_its_members_standardized_rewards_on_their_own_layers():
    """EnsembleHead: member k reads its layers' blocks of the concatenated embedding (in its own order), its
    reward standardized by its own mean and std; the ensemble is their mean. Rebuilt from its config."""
    from lens_ray.core.heads import EnsembleHead
    torch.manual_seed(0)
    width = 3
    a, b = LinearScorer(torch.randn(width)), RewardHead(2 * width, hidden_dim=4)
    head = EnsembleHead([a, b], [[1], [2, 0]], width, [{"mean": 1.0, "std": 2.0}, {"mean": -0.5, "std": 0.0}])
    e = torch.randn(5, 3 * width)
    blocks = e.unflatten(-1, (3, width))
    b.eval()
    want = ((a(blocks[:, 1]) - 1.0) / 2.0 + (b(torch.cat([blocks[:, 2], blocks[:, 0]], -1)) + 0.5) / 1e-12) / 2
    assert torch.allclose(head(e), want) and head.dim == 9
    assert head(e.reshape(1, 5, 9)).shape == (1, 5)                      # any leading shape
    again = build_head(head.config())
    again.load_state_dict(head.state_dict())
    head.eval(), again.eval()
    assert torch.equal(head(e), again(e))
    assert again.config() == {"kind": "ensemble", "dim": 9, "width": 3, "layers": [[1], [2, 0]],
                              "members": [a.config(), b.config()]}


def test_build_head_refuses_an_ensemble_that_does_not_fit_together():
    ok = {"kind": "ensemble", "width": 4, "layers": [[0], [0, 1]],
          "members": [{"kind": "linear", "dim": 4}, {"kind": "linear", "dim": 8}]}
    assert len(build_head(ok).members) == 2
    nested = {**ok, "members": [ok, {"kind": "linear", "dim": 8}]}
    for bad in ({"width": 0}, {"width": True}, {"layers": [[0]]}, {"layers": [[0], []]}, {"layers": [[0], [0, -1]]},
                {"members": [], "layers": []}, {"members": "linear"}, nested):
        with pytest.raises(ValueError, match="out of bounds"):
            build_head({**ok, **bad})
    with pytest.raises(ValueError, match="reads 2 layers of 4 but has dim 4"):
        build_head({**ok, "members": [{"kind": "linear", "dim": 4}, {"kind": "linear", "dim": 4}]})
    with pytest.raises(ValueError, match="unknown kind"):
        build_head({**ok, "members": [{"kind": "tree"}, {"kind": "linear", "dim": 8}]})
