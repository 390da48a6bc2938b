import numpy as np
import pytest
import torch

from lens_ray.config import SynthConfig
from lens_ray.core.rng import NOISE, pair_normals
from lens_ray.core.synth import combinatorial_pairs, gather_pairs, lens_synthesize, perturb_and_select, synth_per_side
from lens_ray.core.vae import PreferenceVAE


@pytest.mark.parametrize("factor,k", [(1, 0), (2, 1), (4, 1), (5, 2), (8, 2), (9, 2), (10, 3), (16, 3)])
def test_synth_per_side(factor, k):
    assert synth_per_side(factor) == k
    assert (k + 1) ** 2 >= factor


@pytest.mark.parametrize("factor", [1, 2, 4, 8, 9, 16])
def test_combinatorial_pairs_exact_factor(factor):
    ids = np.arange(10, 17)
    k = synth_per_side(factor)
    pairs = combinatorial_pairs(ids, k, factor, seed=3)
    assert pairs.shape == (len(ids) * factor, 3)          # exactly factor x the originals
    per = pairs.reshape(len(ids), factor, 3)
    assert (per[:, 0] == np.stack([np.arange(len(ids)), np.zeros(len(ids)), np.zeros(len(ids))], 1)).all()
    for i in range(len(ids)):
        combos = {tuple(r[1:]) for r in per[i]}
        assert len(combos) == factor                      # no pair repeated within a prompt
        assert all(0 <= a <= k and 0 <= b <= k for a, b in combos)
        assert (per[i, :, 0] == i).all()                  # pairing stays within the source prompt


def test_pairs_deterministic_and_batch_invariant():
    ids = np.arange(20)
    whole = combinatorial_pairs(ids, 2, 8, seed=1)
    again = combinatorial_pairs(ids, 2, 8, seed=1)
    assert np.array_equal(whole, again)
    half = combinatorial_pairs(ids[10:], 2, 8, seed=1)
    assert np.array_equal(whole[80:, 1:], half[:, 1:])
    assert not np.array_equal(whole, combinatorial_pairs(ids, 2, 8, seed=2))


def _vae(d=12):
    torch.manual_seed(0)
    vae = PreferenceVAE(d, 4, (8,))
    vae.norm.fit(torch.randn(100, d))
    return vae.eval()


def test_lens_shapes_determinism_and_batch_invariance():
    vae, d = _vae(), 12
    pos, neg = torch.randn(6, d), torch.randn(6, d)
    ids = np.arange(100, 106)
    noise = SynthConfig(noise_var=0.01)
    sp, sn = lens_synthesize(vae, pos, neg, ids, 2, noise, seed=7)
    assert sp.shape == (6, 2, d) and sn.shape == (6, 2, d)
    sp2, _ = lens_synthesize(vae, pos, neg, ids, 2, noise, seed=7)
    assert torch.equal(sp, sp2)
    sp_tail, sn_tail = lens_synthesize(vae, pos[3:], neg[3:], ids[3:], 2, noise, seed=7)
    assert torch.allclose(sp[3:], sp_tail, atol=1e-6) and torch.allclose(sn[3:], sn_tail, atol=1e-6)
    sp3, _ = lens_synthesize(vae, pos, neg, ids, 2, noise, seed=8)
    assert not torch.allclose(sp, sp3)


def test_labels_are_inherited():
    """With zero noise, a synthetic chosen embedding is the decoding of the chosen one's own latent mean."""
    vae, d = _vae(), 12
    pos, neg = torch.randn(4, d), torch.randn(4, d)
    sp, sn = lens_synthesize(vae, pos, neg, np.arange(4), 1, SynthConfig(noise_var=0.0), seed=0)
    with torch.no_grad():
        assert torch.allclose(sp[:, 0], vae.decode(vae.encode(pos)[0]), atol=1e-5)
        assert torch.allclose(sn[:, 0], vae.decode(vae.encode(neg)[0]), atol=1e-5)
        assert not torch.allclose(sp[:, 0], vae.decode(vae.encode(neg)[0]), atol=1e-3)


def test_residual_mode_is_centered_on_the_original():
    vae, d = _vae(), 12
    pos, neg = torch.randn(4, d), torch.randn(4, d)
    sp, sn = lens_synthesize(vae, pos, neg, np.arange(4), 1, SynthConfig(noise_var=0.0, residual=True), seed=0)
    assert torch.allclose(sp[:, 0], pos, atol=1e-5) and torch.allclose(sn[:, 0], neg, atol=1e-5)


def test_topk_keeps_the_most_likely_draws():
    torch.manual_seed(0)
    mu, logvar = torch.full((3, 4), 2.0), torch.zeros(3, 4)
    eps = torch.randn(3, 41, 4)
    noise = SynthConfig(noise_var=1.0, oversample=10)
    kept, z = perturb_and_select(mu, logvar, eps, 4, noise)
    assert kept.shape == (3, 4, 4) and torch.equal(z, mu)
    cand = mu[:, None] + eps[:, :40]
    # prior: the 4 kept are the 4 candidates nearest the origin
    nearest = cand.norm(dim=-1).sort(dim=1).values[:, :4]
    assert torch.allclose(kept.norm(dim=-1).sort(dim=1).values, nearest)
    # posterior: the 4 nearest the posterior mean
    posterior = SynthConfig(noise_var=1.0, oversample=10, select="posterior")
    kept_post, _ = perturb_and_select(mu, logvar, eps, 4, posterior)
    nearest_mu = (cand - mu[:, None]).norm(dim=-1).sort(dim=1).values[:, :4]
    assert torch.allclose((kept_post - mu[:, None]).norm(dim=-1).sort(dim=1).values, nearest_mu)


def test_gather_pairs():
    pos, neg = torch.zeros(2, 3), torch.ones(2, 3)
    sp, sn = torch.full((2, 1, 3), 2.0), torch.full((2, 1, 3), 3.0)
    pairs = combinatorial_pairs(np.arange(2), 1, 4, seed=0)
    p, n, orig = gather_pairs(pos, neg, sp, sn, pairs)
    assert p.shape == (8, 3) and orig.sum() == 2
    assert set(p[:, 0].tolist()) == {0.0, 2.0} and set(n[:, 0].tolist()) == {1.0, 3.0}


def test_a_factor_below_one_is_refused():
    with pytest.raises(ValueError, match="factor must be >= 1"):
        synth_per_side(0)


def test_sample_encoding_perturbs_a_posterior_draw():
    mu, logvar = torch.full((2, 3), 1.0), torch.full((2, 3), float(np.log(4.0)))   # sigma 2
    eps = torch.randn(2, 2, 3, generator=torch.Generator().manual_seed(0))            # m = 1 draw + the sample
    kept, z = perturb_and_select(mu, logvar, eps, 1, SynthConfig(noise_var=0.0, oversample=1, encode="sample"))
    assert torch.allclose(z, mu + 2.0 * eps[:, 1]) and torch.allclose(kept[:, 0], z)


def test_lens_draws_are_each_pairs_own_normals_and_none_for_k_zero():
    """Each pair's draws are its own generator's (2 sides, m + 1, latent) normals: the output is the decoding
    of perturb_and_select over exactly those, whatever else is in the batch."""
    vae, d = _vae(), 12
    pos, neg = torch.randn(3, d), torch.randn(3, d)
    ids, cfg = np.array([5, 9, 11]), SynthConfig(noise_var=0.5, oversample=1)
    sp, sn = lens_synthesize(vae, pos, neg, ids, 2, cfg, seed=7)
    eps = torch.from_numpy(pair_normals(7, NOISE, ids, (2, 3, 4)))
    with torch.no_grad():
        for side, (e, got) in enumerate(((pos, sp), (neg, sn))):
            kept, _ = perturb_and_select(*vae.encode(e), eps[:, side], 2, cfg)
            assert torch.allclose(got, vae.decode(kept), atol=1e-6)
    none_p, none_n = lens_synthesize(vae, pos, neg, ids, 0, cfg, seed=7)
    assert none_p.shape == none_n.shape == (3, 0, d)
