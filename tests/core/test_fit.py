import dataclasses

import numpy as np
import pytest
import torch

from lens_ray.config import RewardConfig, VAEConfig
from lens_ray.core.augment import PairSet
from lens_ray.core.fit import Workers, fit_head, fit_reward_head, fit_vae
from lens_ray.core.metrics import head_accuracy
from lens_ray.core.rng import BATCHES, keyed_rng


def _pairs(n, d=16, seed=0, signal=1.0):
    g = torch.Generator().manual_seed(seed)
    w = torch.ones(d) / d ** 0.5
    pos, neg = torch.randn(n, d, generator=g), torch.randn(n, d, generator=g)
    pos, neg = pos + signal * w, neg - signal * w
    return pos, neg


def test_fit_head_learns_and_stops_early():
    pos, neg = _pairs(400)
    vpos, vneg = _pairs(100, seed=1)
    cfg = RewardConfig(hidden_dim=16, max_steps=400, eval_every=10, patience=3, batch_size=32)
    fit = fit_head(cfg, PairSet(pos, neg), PairSet(vpos, vneg), seed=0, norm_pos=pos, norm_neg=neg)
    tpos, tneg = _pairs(500, seed=2)
    assert head_accuracy(fit.head, tpos, tneg) > 0.8
    assert fit.best_val_acc == max(h["val_acc"] for h in fit.history)
    assert fit.steps < cfg.max_steps                                   # it stopped early ...
    after_best = [h for h in fit.history if h["step"] > fit.best_step]
    assert len(after_best) == cfg.patience and all(h["val_acc"] <= fit.best_val_acc for h in after_best)  # ... so
    assert fit.steps == fit.best_step + cfg.patience * cfg.eval_every  # patience checks after its best, no more


def test_fit_head_is_deterministic():
    pos, neg = _pairs(100)
    cfg = RewardConfig(hidden_dim=8, max_steps=30, eval_every=10)
    a = fit_head(cfg, PairSet(pos, neg), PairSet(pos[:20], neg[:20]), 3, pos, neg)
    b = fit_head(cfg, PairSet(pos, neg), PairSet(pos[:20], neg[:20]), 3, pos, neg)
    assert all(torch.equal(a.head.state_dict()[k], b.head.state_dict()[k]) for k in a.head.state_dict())


def test_synthetic_weight_controls_extra_pairs():
    pos, neg = _pairs(64, signal=2.0)
    cfg = RewardConfig(hidden_dim=8, max_steps=200, eval_every=200, batch_size=128, dropout=0.0)
    # the extra pairs are label-flipped copies: weight 0 ignores them, weight 1 cancels the signal
    def fit_with(weight):
        both = PairSet(torch.cat([pos, neg]), torch.cat([neg, pos]),
                       torch.cat([torch.ones(64), torch.full((64,), weight)]))
        return head_accuracy(fit_head(cfg, both, PairSet(pos, neg), 0, pos, neg).head, pos, neg)
    assert fit_with(0.0) > 0.9
    assert fit_with(1.0) < fit_with(0.0) - 0.1


def test_fit_vae_reconstructs_low_rank_data():
    g = torch.Generator().manual_seed(0)
    basis = torch.randn(4, 32, generator=g)
    pos = torch.randn(300, 4, generator=g) @ basis
    neg = torch.randn(300, 4, generator=g) @ basis
    vae, metrics = fit_vae(VAEConfig(latent_dim=8, hidden_dims=(64,), epochs=60, beta=0.1), pos, neg, seed=0)
    assert metrics["rel_recon_train"] < 0.5          # a mean-only decoder would score 1.0
    assert metrics["workers"] == 1 and metrics["module"] == "PreferenceVAE"      # alone: no wrapper, one worker


def test_fit_vae_trains_on_every_pair_each_epoch_and_logs_five_times():
    pos, neg = _pairs(2 * 16 + 1)                      # two full batches and a batch of one pair
    seen: list[int] = []

    class Counting(torch.nn.Module):                   # the forward the loss runs through, as a DDP wrapper is
        def __init__(self, vae):
            super().__init__()
            self.vae = vae

        def forward(self, e):
            seen.append(len(e) // 2)                   # pairs in this batch (chosen and rejected stacked)
            return self.vae(e)

    logged: list[dict] = []
    cfg = VAEConfig(latent_dim=4, hidden_dims=(8,), epochs=10, batch_pairs=16)
    fit_vae(cfg, pos, neg, seed=0, workers=Workers(wrap=Counting), log=logged.append)
    assert seen == [16, 16, 1] * 10                    # every pair, every epoch, the last one too
    assert [e["epoch"] for e in logged] == [2, 4, 6, 8, 10]
    for epochs, want in ((12, [2, 4, 6, 8, 10, 12]), (15, [3, 6, 9, 12, 15]), (3, [1, 2, 3])):  # < 5: each
        logged.clear()
        fit_vae(dataclasses.replace(cfg, epochs=epochs), pos, neg, seed=0, log=logged.append)
        assert [e["epoch"] for e in logged] == want, epochs


def test_fit_head_sees_every_pair_once_an_epoch_in_a_fresh_order():
    pos, neg = _pairs(40)
    batches: list[list[int]] = []

    def record(idx):
        batches.append([int(i) for i in idx])
        return idx
    cfg = RewardConfig(hidden_dim=8, max_steps=12, eval_every=4, batch_size=16, patience=10)
    fit = fit_head(cfg, PairSet(pos, neg), PairSet(pos[:10], neg[:10]), 5, pos, neg, Workers(shard=record))
    assert fit.steps == 12 and len(batches) == 12 and [h["step"] for h in fit.history] == [4, 8, 12]
    epochs = [sum(batches[i:i + 3], []) for i in range(0, 12, 3)]      # 40 pairs in batches of 16: 3 a epoch
    assert all(sorted(e) == list(range(40)) for e in epochs)
    assert epochs[0] == keyed_rng(5, BATCHES).permutation(40).tolist()  # the first order is the first draw
    assert len({tuple(e) for e in epochs}) == 4                         # and each epoch is reshuffled
    batches.clear()
    fit_head(dataclasses.replace(cfg, batch_size=64), PairSet(pos, neg), PairSet(pos[:10], neg[:10]), 5, pos, neg,
             Workers(shard=record))
    assert len({tuple(b) for b in batches}) == 12                       # one batch an epoch: a new order each


def test_a_diverging_head_is_marked_failed_never_a_result():
    pos, neg = _pairs(100)
    cfg = RewardConfig(hidden_dim=8, max_steps=50, eval_every=10, lr=1e30)
    fit = fit_head(cfg, PairSet(pos, neg), PairSet(pos[:20], neg[:20]), 0, pos, neg)
    assert fit.failure is not None and "non-finite" in fit.failure
    assert fit.failure == f"non-finite loss at step {fit.steps}" and len(fit.history) <= fit.steps // 10
    assert fit.best_step == 0                                           # no step of it is a result
    assert isinstance(fit.head, torch.nn.Module) and not fit.head.training and fit.best_val_acc != fit.best_val_acc


def test_a_tie_with_the_best_is_no_improvement():
    """Early stopping counts an evaluation that only equals the best as a bad one, and keeps the first best."""
    pos, neg = _pairs(100, signal=5.0)
    vpos, vneg = _pairs(10, seed=1, signal=5.0)
    cfg = RewardConfig(hidden_dim=8, max_steps=200, eval_every=5, patience=3)
    fit = fit_head(cfg, PairSet(pos, neg), PairSet(vpos, vneg), 0, pos, neg)
    firsts = [h["step"] for h in fit.history if h["val_acc"] == fit.best_val_acc]
    assert len(firsts) > 1                                              # the best is reached, then tied
    assert fit.best_step == firsts[0] and fit.steps == fit.best_step + cfg.patience * cfg.eval_every


def test_a_head_whose_weights_turn_non_finite_is_failed(monkeypatch):
    real = torch.optim.AdamW.step

    def step(self, *args, **kwargs):                                    # a step that leaves NaN in the weights
        out = real(self, *args, **kwargs)
        with torch.no_grad():
            self.param_groups[0]["params"][0].fill_(float("nan"))
        return out
    monkeypatch.setattr(torch.optim.AdamW, "step", step)
    pos, neg = _pairs(50)
    fit = fit_head(RewardConfig(hidden_dim=8, max_steps=1, eval_every=1), PairSet(pos, neg),
                   PairSet(pos[:10], neg[:10]), 0, pos, neg)
    assert fit.failure == "non-finite weights" and (fit.best_step, fit.steps) == (1, 1)
    assert isinstance(fit.head, torch.nn.Module) and fit.best_val_acc != fit.best_val_acc          # NaN: no figure


def test_a_diverging_vae_raises_naming_the_epoch():
    import pytest

    from lens_ray.core.fit import NonFiniteError
    pos, neg = _pairs(64)
    with pytest.raises(NonFiniteError, match="epoch"):
        fit_vae(VAEConfig(latent_dim=2, hidden_dims=(8,), epochs=20, lr=1e30), pos, neg, seed=0)


def test_the_paper_head_trains_epochs_over_its_set_and_keeps_its_last_weights():
    """The LENS paper's kind of head: no dropout, no weight decay, a fixed number of epochs over whatever set it
    is given (a larger set: more steps), no early stopping, its final weights."""
    from lens_ray.core.fit import fit_reward_head, paper_config
    pos, neg = _pairs(200)
    cfg = RewardConfig(hidden_dim=8, batch_size=32, paper_epochs=3, eval_every=5, patience=1, dropout=0.3)
    small = fit_reward_head(cfg, "paper", PairSet(pos, neg), PairSet(pos[:20], neg[:20]), 0, [], pos, neg)
    assert small.steps == 3 * 7 and small.best_step == small.steps              # 200 pairs / 32: 7 steps an epoch
    big = fit_reward_head(cfg, "paper", PairSet(torch.cat([pos] * 4), torch.cat([neg] * 4)),
                          PairSet(pos[:20], neg[:20]), 0, [], pos, neg)
    assert big.steps == 3 * 25                                                 # 4x the pairs: 4x the steps
    assert small.head.dropout == 0.0 and not any(isinstance(m, torch.nn.Dropout) for m in small.head.modules())
    pc = paper_config(cfg, 200)
    assert (pc.weight_decay, pc.max_steps, pc.dropout) == (0.0, 21, 0.0) and pc.patience > pc.max_steps
    assert small.best_val_acc == small.history[-1]["val_acc"] and small.history[-1]["step"] == 21   # the last


def test_fit_reward_head_of_each_kind():
    pos, neg = _pairs(120, signal=2.0)
    vpos, vneg = _pairs(40, seed=1, signal=2.0)
    groups = [f"p{i // 2}" for i in range(120)]
    cfg = RewardConfig(hidden_dim=8, max_steps=40, eval_every=10, paper_epochs=2, batch_size=32)
    train, val = PairSet(pos, neg), PairSet(vpos, vneg)
    mlp = fit_reward_head(cfg, "mlp", train, val, 0, groups, pos, neg)
    same = fit_head(cfg, train, val, 0, pos, neg)
    assert mlp.failure is None and (mlp.steps, mlp.best_step) == (same.steps, same.best_step)
    assert all(torch.equal(a, b) for a, b in zip(mlp.head.state_dict().values(), same.head.state_dict().values()))
    paper = fit_reward_head(cfg, "paper", train, val, 0, groups, pos, neg)
    assert paper.failure is None and paper.steps == 2 * 4                   # 2 epochs of ceil(120 / 32) steps
    lin = fit_reward_head(cfg, "linear", train, val, 0, groups, pos, neg)
    assert lin.failure is None and (lin.best_step, lin.steps) == (0, 0)
    assert lin.best_val_acc == head_accuracy(lin.head, vpos, vneg) > 0.8
    assert set(lin.history[0]) == {"norm", "l2", "shrink", "cv_accuracy"}
    # the pairs' weights count: label-flipped copies at weight 0 leave the direction as it was
    flipped = PairSet(torch.cat([pos, neg]), torch.cat([neg, pos]), torch.cat([torch.ones(120), torch.zeros(120)]),
                      np.concatenate([np.arange(120)] * 2),
                      torch.cat([torch.ones(120, dtype=torch.bool), torch.zeros(120, dtype=torch.bool)]))
    assert head_accuracy(fit_reward_head(cfg, "linear", flipped, val, 0, groups, pos, neg).head, vpos, vneg) > 0.8
    with pytest.raises(ValueError, match="reward head kind 'tree': not one of mlp, linear, paper"):
        fit_reward_head(cfg, "tree", train, val, 0, groups, pos, neg)          # never fitted as linear


def test_a_linear_head_with_non_finite_weights_is_failed(monkeypatch):
    # the guard behind the linear fit: its inputs are standardized, so no real set reaches it; a fit that
    # returned a NaN weight must still come back failed, never as a result
    import lens_ray.core.fit as fit_module
    from lens_ray.core.heads import LinearScorer
    from lens_ray.core.linear_head import LinearFit
    pos, neg = _pairs(20)
    monkeypatch.setattr(fit_module, "fit_linear_head", lambda *a, **k: LinearFit(
        LinearScorer(torch.full((16,), float("nan"))), None, float("nan")))
    broken = fit_reward_head(RewardConfig(), "linear", PairSet(pos, neg), PairSet(pos, neg), 0,
                             [str(i) for i in range(20)], pos, neg)
    assert broken.failure == "non-finite weights" and (broken.best_step, broken.steps) == (0, 0)
    assert isinstance(broken.head, torch.nn.Module) and broken.best_val_acc != broken.best_val_acc


def test_fit_head_steps_are_the_replayed_adamw_steps():
    """Three steps of fit_head against the same steps written out here: the head built and standardized
    alike, each batch of the keyed order, gradients zeroed before each backward, AdamW. A loop that never zeroes
    its gradients (or skips a step, or standardizes otherwise) ends elsewhere."""
    from lens_ray.core.heads import RewardHead, bradley_terry_loss
    pos, neg = _pairs(40, d=6)
    cfg = RewardConfig(hidden_dim=5, dropout=0.0, max_steps=3, eval_every=100, batch_size=16, lr=0.05,
                       weight_decay=0.01)
    fit = fit_head(cfg, PairSet(pos, neg), PairSet(pos[:8], neg[:8]), 4, pos, neg, keep="last")
    torch.manual_seed(4)
    head = RewardHead(6, 5, 1, 0.0)
    mean, std = torch.cat([pos, neg]).mean(0), torch.cat([pos, neg]).std(0)
    head.norm.mean.copy_(mean)
    head.norm.std.copy_(std)
    opt = torch.optim.AdamW(head.parameters(), lr=0.05, weight_decay=0.01)
    order = keyed_rng(4, BATCHES).permutation(40)
    for step in range(3):                                       # 40 pairs, batches of 16: 16, 16, 8
        idx = order[step * 16:(step + 1) * 16]
        opt.zero_grad()
        bradley_terry_loss(head(pos[idx]), head(neg[idx])).backward()
        opt.step()
    # the output bias cancels in r+ - r-: its gradient is 0 up to rounding, which Adam's step normalizes into
    # noise, so it is left out; every weight that the loss reaches is compared
    got = fit.head.state_dict()
    for k, v in head.state_dict().items():
        if k != "net.2.bias":
            assert torch.allclose(got[k], v, atol=1e-5), k
    assert fit.steps == 3 and not torch.allclose(got["net.0.weight"], RewardHead(6, 5, 1, 0.0).net[0].weight)


def test_the_returned_head_has_its_reported_best_accuracy():
    """Noisy labels and a large step make validation accuracy rise and fall: the head returned is the one
    that scored the reported best, not the last."""
    pos, neg = _pairs(200, d=8, signal=0.3)
    vpos, vneg = _pairs(60, d=8, seed=1, signal=0.3)
    cfg = RewardConfig(hidden_dim=32, dropout=0.0, max_steps=200, eval_every=5, patience=40, lr=0.05,
                       batch_size=8)
    fit = fit_head(cfg, PairSet(pos, neg), PairSet(vpos, vneg), 0, pos, neg)
    accs = [h["val_acc"] for h in fit.history]
    assert accs[-1] < max(accs)                                 # the last check was not the best: a real test
    assert head_accuracy(fit.head, vpos, vneg) == fit.best_val_acc == max(accs)


def test_fit_vae_standardizes_with_its_training_embeddings():
    pos, neg = _pairs(64, d=6)
    pos = pos * 3 + 5                                           # far from the standardizer's defaults (0, 1)
    vae, _ = fit_vae(VAEConfig(latent_dim=2, hidden_dims=(8,), epochs=1), pos, neg, seed=0)
    both = torch.cat([pos, neg])
    assert torch.allclose(vae.norm.mean, both.mean(0)) and torch.allclose(vae.norm.std, both.std(0))


def test_fits_do_not_depend_on_the_global_rng_and_return_eval_mode_modules():
    """fit_vae seeds its own initialization (a caller's earlier draws change nothing), and both fits hand back
    modules in eval mode (dropout off when they score)."""
    gen = torch.Generator().manual_seed(0)
    pos, neg = torch.randn(40, 6, generator=gen), torch.randn(40, 6, generator=gen)
    cfg = VAEConfig(latent_dim=2, hidden_dims=(8,), epochs=2, batch_pairs=16)
    torch.manual_seed(123)
    a, _ = fit_vae(cfg, pos, neg, seed=3)
    torch.manual_seed(999)
    torch.randn(17)
    b, _ = fit_vae(cfg, pos, neg, seed=3)
    assert all(torch.equal(v, b.state_dict()[k]) for k, v in a.state_dict().items())
    assert not a.training
    head = fit_head(RewardConfig(hidden_dim=8, max_steps=8, eval_every=4, dropout=0.5), PairSet(pos, neg),
                    PairSet(pos[:10], neg[:10]), 0, pos, neg).head
    assert not head.training


def test_an_mlp_fitted_pointwise_learns_and_differs_from_the_pairwise_fit():
    """reward.loss=pointwise: the MLP classifies each response (chosen 1, rejected 0); it learns the preference,
    and with the same seed and batches it is another head than the Bradley-Terry fit."""
    pos, neg = _pairs(400)
    vpos, vneg = _pairs(100, seed=1)
    cfg = RewardConfig(hidden_dim=16, max_steps=200, eval_every=20, batch_size=32, loss="pointwise")
    fit = fit_head(cfg, PairSet(pos, neg), PairSet(vpos, vneg), seed=0, norm_pos=pos, norm_neg=neg)
    tpos, tneg = _pairs(500, seed=2)
    assert fit.failure is None and head_accuracy(fit.head, tpos, tneg) > 0.8
    pairwise = fit_head(dataclasses.replace(cfg, loss="bradley_terry"), PairSet(pos, neg), PairSet(vpos, vneg),
                        seed=0, norm_pos=pos, norm_neg=neg)
    r = fit.head(tpos[:5]).detach()
    assert not torch.allclose(r, pairwise.head(tpos[:5]).detach())
