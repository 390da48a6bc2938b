import math

import torch

from lens_ray.core.heads import LinearScorer, RewardHead, bradley_terry_loss, build_head, mean_diff_direction


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
