import numpy as np
import torch

from lens_ray.config import SynthConfig
from lens_ray.core.augment import Augmenter
from lens_ray.core.baselines import ClassGaussian, direct_perturbation, gaussian_sampling


def test_direct_perturbation_scale():
    pos = torch.zeros(400, 3)
    std = torch.tensor([1.0, 10.0, 0.1])
    sp, sn = direct_perturbation(pos, pos + 1, np.arange(400), 2, std, noise_var=0.04, seed=0)
    assert sp.shape == (400, 2, 3)
    measured = sp.reshape(-1, 3).std(0)
    assert torch.allclose(measured, 0.2 * std, rtol=0.1)
    noise_sd = 0.2 * std                                          # sqrt(noise_var) per standardized dim
    se = noise_sd / np.sqrt(800)                                  # of the mean of 400 pairs x 2 draws
    assert ((sn.reshape(-1, 3).mean(0) - 1).abs() < 4 * se).all()  # centred on the rejected embedding itself
    assert not torch.equal(sn[:, 0], sn[:, 1])                    # the two draws of a pair differ


def test_gaussian_sampling_matches_class_moments():
    torch.manual_seed(0)
    a = torch.randn(2000, 2) @ torch.tensor([[2.0, 0.0], [1.0, 0.5]]) + torch.tensor([5.0, -1.0])
    g = ClassGaussian.fit(a, "full", shrinkage=0.0)
    sp, _ = gaussian_sampling(g, g, np.arange(2000), 1, seed=1)
    s = sp[:, 0]
    assert torch.allclose(s.mean(0), a.mean(0), atol=0.15)
    assert torch.allclose(torch.cov(s.T), torch.cov(a.T), rtol=0.15, atol=0.1)
    diag = ClassGaussian.fit(a, "diag")
    assert torch.count_nonzero(diag.chol - torch.diag(torch.diagonal(diag.chol))) == 0


def test_augmenter_exact_factor_for_every_method():
    torch.manual_seed(0)
    pos, neg = torch.randn(30, 8), torch.randn(30, 8)
    from lens_ray.core.vae import PreferenceVAE
    vae = PreferenceVAE(8, 2, (4,))
    vae.norm.fit(torch.cat([pos, neg]))
    for method in ("lens", "direct_perturbation", "gaussian_sampling"):
        aug = Augmenter.fit(method, 0, SynthConfig(), pos, neg, vae.eval())
        sp, sn, pairs = aug.synthesize(pos[:5], neg[:5], np.arange(5), factor=8)
        assert sp.shape == (5, 2, 8) and sn.shape == (5, 2, 8)
        assert len(pairs) == 40
        assert torch.isfinite(sp).all() and sp.abs().sum() > 0                     # not zeros
        for side, real in ((sp, pos[:5]), (sn, neg[:5])):                          # not copies of the real pairs
            assert not torch.allclose(side[:, 0], real) and not torch.allclose(side[:, 0], side[:, 1])
        again = aug.synthesize(pos[:5], neg[:5], np.arange(5), factor=8)           # a pure function of the ids
        assert torch.equal(again[0], sp) and np.array_equal(again[2], pairs)
        one = aug.synthesize(pos[2:3], neg[2:3], np.arange(2, 3), factor=8)        # batching changes no draw
        assert torch.allclose(one[0][0], sp[2])


def test_both_baselines_are_exactly_their_formulas_on_the_keyed_normals():
    """Exact, not in distribution: e + sqrt(v) std eps (eps[:, 0] chosen, [:, 1] rejected) and mean + eps L^T,
    L L^T = (1 - s) sample cov + s diag(var) + 1e-6 mean(var) I."""
    from lens_ray.core.rng import NOISE, pair_normals
    g = np.random.default_rng(3)
    pos, neg = (torch.from_numpy(g.standard_normal((5, 4)).astype(np.float32)) for _ in range(2))
    std, ids = torch.tensor([1.0, 2.0, 0.5, 3.0]), np.array([7, 8, 9, 10, 11])
    sp, sn = direct_perturbation(pos, neg, ids, 3, std, noise_var=0.09, seed=4)
    eps = torch.from_numpy(pair_normals(4, NOISE, ids, (2, 3, 4)))
    assert torch.allclose(sp, pos[:, None] + 0.3 * std * eps[:, 0], atol=1e-6)
    assert torch.allclose(sn, neg[:, None] + 0.3 * std * eps[:, 1], atol=1e-6)
    x = g.standard_normal((50, 4)) * np.array([1.0, 2.0, 0.5, 3.0]) + np.array([1.0, -2.0, 0.0, 4.0])
    for shrink in (0.0, 0.3):
        c = ClassGaussian.fit(torch.from_numpy(x), "full", shrinkage=shrink)
        var = ((x - x.mean(0)) ** 2).mean(0)
        want = (1 - shrink) * np.cov(x.T) + shrink * np.diag(var) + 1e-6 * var.mean() * np.eye(4)
        assert np.allclose((c.chol @ c.chol.T).double().numpy(), want, rtol=1e-5, atol=1e-6)
        assert np.allclose(c.mean.numpy(), x.mean(0), atol=1e-6)
    d = ClassGaussian.fit(torch.from_numpy(x), "diag")
    assert np.allclose(torch.diagonal(d.chol).double().numpy() ** 2, var * (1 + 1e-6 * var.mean() / var), rtol=1e-5)
    other = ClassGaussian.fit(torch.from_numpy(x + 1.0), "full", shrinkage=0.3)
    gp, gn = gaussian_sampling(c, other, ids, 2, seed=5)
    eps = torch.from_numpy(pair_normals(5, NOISE, ids, (2, 2, 4)))
    assert torch.allclose(gp, c.mean + eps[:, 0] @ c.chol.T, atol=1e-5)
    assert torch.allclose(gn, other.mean + eps[:, 1] @ other.chol.T, atol=1e-5)


def test_a_class_of_one_embedding_still_gives_a_gaussian():
    one = torch.tensor([[1.0, 2.0, 3.0]])
    c = ClassGaussian.fit(one, "full", shrinkage=0.1)
    assert torch.isfinite(c.chol).all() and torch.allclose(c.mean, one[0])
