"""core/augment.py on tensors: the training pairs a head learns from, at an exact factor, labels inherited."""
import numpy as np
import pytest
import torch

from lens_ray.config import SynthConfig
from lens_ray.core.augment import AUGMENTERS, Augmenter, Method, PairSet, augmented_set, needs_vae, training_pairs


def _pairs(n=12, d=6, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(n, d, generator=g) + 1, torch.randn(n, d, generator=g) - 1


def test_pairset_defaults_are_the_real_pairs():
    pos, neg = _pairs()
    ps = PairSet(pos, neg)
    assert len(ps) == 12 and np.array_equal(ps.sources(), np.arange(12)) and ps.originals().all()


@pytest.mark.parametrize("factor", [2, 4, 8])
def test_augmented_set_holds_the_originals_and_weights_the_rest(factor):
    pos, neg = _pairs()
    syn_pos, syn_neg = pos[:, None].repeat(1, 2, 1) + 10, neg[:, None].repeat(1, 2, 1) - 10
    ps = augmented_set(pos, neg, syn_pos, syn_neg, factor, seed=0, synthetic_weight=0.25)
    assert len(ps) == 12 * factor and int(ps.originals().sum()) == 12
    assert torch.equal(ps.pos[ps.originals()], pos) and torch.equal(ps.neg[ps.originals()], neg)
    assert torch.equal(ps.weight[ps.originals()], torch.ones(12))
    assert torch.equal(ps.weight[~ps.originals()], torch.full((12 * factor - 12,), 0.25))
    assert sorted(np.bincount(ps.sources()).tolist()) == [factor] * 12          # exactly factor pairs a source
    synthetic = ~ps.originals()
    assert ((ps.pos[synthetic] - ps.neg[synthetic]).mean() > 5)              # chosen stays chosen


def test_training_pairs_per_method():
    pos, neg = _pairs()
    plain = training_pairs("original", 4, pos, neg, 0, SynthConfig(), 0.5)
    assert len(plain) == 12 and plain.weight is None and torch.equal(plain.pos, pos)
    dp = training_pairs("direct_perturbation", 4, pos, neg, 0, SynthConfig(), 0.5)
    assert len(dp) == 48 and float(dp.weight[~dp.originals()].mean()) == 0.5
    aug = Augmenter.fit("direct_perturbation", 0, SynthConfig(), pos, neg)
    syn_pos, syn_neg = aug.draw(pos, neg, np.arange(12), 1)
    assert torch.equal(dp.pos, augmented_set(pos, neg, syn_pos, syn_neg, 4, 0, 0.5).pos)     # one recipe
    with pytest.raises(ValueError, match="lens needs a fitted VAE"):
        training_pairs("lens", 4, pos, neg, 0, SynthConfig(), 1.0)
    with pytest.raises(ValueError, match="does not augment; augmenting methods: direct_perturbation, gaussian"):
        Augmenter.fit("mean_diff", 0, SynthConfig(), pos, neg)


def test_a_new_method_is_one_entry(monkeypatch):
    """An entry of AUGMENTERS is all the fitting path needs: its fit sees the training pairs, its draw the batch."""
    pos, neg = _pairs()
    mirror = Method(lambda synth, p, n, vae: (p - n).mean(0),                      # state: the mean gap (d,)
                    lambda gap, synth, e_pos, e_neg, ids, k, seed: ((e_pos + gap)[:, None].expand(-1, k, -1),
                                                                     (e_neg - gap)[:, None].expand(-1, k, -1)))
    monkeypatch.setitem(AUGMENTERS, "mirror", mirror)
    pairs = training_pairs("mirror", 2, pos, neg, 0, SynthConfig(), 0.5)
    gap, syn = (pos - neg).mean(0), ~pairs.originals()
    src = pairs.sources()[syn.numpy()]
    moved_pos = ~torch.isclose(pairs.pos[syn], pos[src]).all(1)
    moved_neg = ~torch.isclose(pairs.neg[syn], neg[src]).all(1)
    assert len(pairs) == 24 and (moved_pos | moved_neg).all()                      # each synthetic pair is new
    assert torch.allclose(pairs.pos[syn][moved_pos], (pos[src] + gap)[moved_pos])
    assert torch.allclose(pairs.neg[syn][moved_neg], (neg[src] - gap)[moved_neg])
    assert needs_vae("lens") and not needs_vae("mirror") and not needs_vae("original")
    monkeypatch.setitem(AUGMENTERS, "latent_mirror", Method(mirror.fit, mirror.draw, vae=True))
    assert needs_vae("latent_mirror")                                    # the entry says so, not the name


@pytest.mark.parametrize("method", ["lens", "direct_perturbation", "gaussian_sampling"])
def test_synthetic_pairs_keep_their_sides(method):
    """Chosen and rejected far apart along one direction: each method's synthetic chosen embeddings lie on the
    chosen side and its rejected ones on the rejected side, both as drawn and as the streamed pairs give them
    (a swap of the sides anywhere on the way flips this)."""
    from lens_ray.config import VAEConfig
    from lens_ray.core.fit import fit_vae
    from lens_ray.core.synth_stream import materialize
    g = torch.Generator().manual_seed(0)
    w = torch.zeros(6)
    w[0] = 1.0
    base = torch.randn(40, 6, generator=g)
    pos, neg = base + 4 * w, base - 4 * w
    vae = fit_vae(VAEConfig(latent_dim=4, hidden_dims=(32,), epochs=80, batch_pairs=20, beta=0.01), pos, neg, 0)[0] \
        if method == "lens" else None
    aug = Augmenter.fit(method, 0, SynthConfig(), pos, neg, vae)
    syn_pos, syn_neg, _ = aug.synthesize(pos, neg, np.arange(40), 4)
    assert (syn_pos @ w).mean() > 1 and (syn_neg @ w).mean() < -1          # the sides are at +4 and -4
    chosen, rejected = materialize(aug, pos, neg, 0, 200, 2)
    assert ((chosen - rejected) @ w > 0).float().mean() > 0.9
