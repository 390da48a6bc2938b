import numpy as np
import pytest

from lens_ray.core.metrics import (
    best_of_n_gold,
    bon_oracle,
    bon_random,
    draw_bon,
    grouped_best_gold,
    head_accuracy,
    head_metrics,
    preference_accuracy,
)


def test_accuracy_counts_ties_half():
    assert preference_accuracy([2, 1, 1], [1, 2, 1]) == pytest.approx(0.5)
    assert preference_accuracy([3, 3], [1, 1]) == 1.0
    with pytest.raises(ValueError):
        preference_accuracy([], [])


def test_best_of_n():
    gold = np.array([[0.1, 0.9, 0.5], [0.3, 0.2, 0.8]])
    scores = np.array([[0.0, 1.0, 0.5], [5.0, 0.0, 1.0]])
    assert best_of_n_gold(scores, gold) == pytest.approx((0.9 + 0.3) / 2)
    assert bon_oracle(gold) == pytest.approx((0.9 + 0.8) / 2)
    assert bon_random(gold) == pytest.approx(gold.mean())


def test_grouped_best_gold_picks_per_prompt_among_unequal_counts():
    scores = [0.2, 0.9, 0.1, 0.5, 0.5, 3.0]
    gold = [0.1, 0.7, 0.9, 0.4, 0.6, 0.2]
    groups = ["a", "a", "a", "b", "b", "c"]
    # a: the 0.9-scored response (gold 0.7); b: a tie, the first (0.4); c: its only response (0.2)
    assert grouped_best_gold(scores, gold, groups) == pytest.approx((0.7 + 0.4 + 0.2) / 3)
    assert grouped_best_gold([1, 0], [0.3, 0.8], ["x", "y"]) == pytest.approx(0.55)
    with pytest.raises(ValueError, match="equal, non-empty"):
        grouped_best_gold([1.0], [0.5, 0.2], ["a", "a"])


def test_draw_bon_fixed_seed():
    a = draw_bon([20, 30], 16, seed=0)
    b = draw_bon([20, 30], 16, seed=0)
    assert all(np.array_equal(x, y) for x, y in zip(a, b))
    assert all(len(set(x)) == 16 for x in a)
    with pytest.raises(ValueError, match="prompt 1"):
        draw_bon([20, 3], 16, seed=0)


def test_draw_bon_takes_every_response_when_there_are_exactly_n():
    assert np.array_equal(draw_bon([16], 16, seed=0)[0], np.arange(16))
    with pytest.raises(ValueError, match="fewer than N=16"):
        draw_bon([15], 16, seed=0)


def test_head_metrics_on_eval_pairs_and_best_of_n():
    from types import SimpleNamespace

    import torch

    from lens_ray.core.heads import LinearScorer
    head = LinearScorer(torch.tensor([1.0, -1.0]))
    eval_pos = np.array([[2.0, 0.0], [0.0, 2.0], [1.0, 1.0]], np.float32)     # rewards 2, -2, 0
    eval_neg = np.array([[0.0, 0.0], [0.0, 0.0], [1.0, 1.0]], np.float32)     # rewards 0, 0, 0
    assert head_accuracy(head, torch.tensor(eval_pos), torch.tensor(eval_neg)) == pytest.approx(0.5)
    bon = np.array([[[0.0, 1.0], [3.0, 0.0]], [[-1.0, 0.0], [0.0, 2.0]]], np.float32)   # (Q=2, N=2, d)
    gold = np.array([[0.1, 0.9], [0.7, 0.3]])
    tables = SimpleNamespace(eval_pos=eval_pos, eval_neg=eval_neg, bon=bon, bon_gold=gold)
    # prompt 0: rewards -1, 3 -> gold 0.9; prompt 1: rewards -1, -2 -> gold 0.7
    assert head_metrics(head, tables) == pytest.approx({"accuracy": 0.5, "bon_gold": 0.8})
    assert head_metrics(head, SimpleNamespace(eval_pos=eval_pos, eval_neg=eval_neg, bon=None, bon_gold=None)) == {
        "accuracy": 0.5, "bon_gold": None}


def test_the_longer_response_baseline_by_hand():
    from lens_ray.core.metrics import longer_response_accuracy
    # longer chosen, shorter chosen, a tie, longer chosen: (1 + 0 + 0.5 + 1) / 4
    assert longer_response_accuracy(["abcd", "a", "ab", "xyz"], ["ab", "abc", "cd", ""]) == 0.625
