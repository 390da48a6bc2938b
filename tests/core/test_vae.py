import math

import pytest
import torch

from lens_ray.core.vae import (
    MAX_PARAMS,
    MAX_WIDTH,
    PreferenceVAE,
    bounded_divergence,
    bounded_sizes,
    kl_to_standard_normal,
    lens_vae_loss,
    log_normal_density,
    reconstruction,
    relative_reconstruction_error,
    w2_diag_gaussians,
)


def test_shapes_and_what_flows_through():
    torch.manual_seed(0)
    vae = PreferenceVAE(dim=24, latent_dim=4, hidden_dims=(8,))
    e = torch.randn(5, 24) * 3 + 1
    vae.norm.fit(torch.randn(100, 24) * 3 + 1)
    x_hat, mu, logvar = vae(e)
    assert x_hat.shape == (5, 24) and mu.shape == (5, 4) and logvar.shape == (5, 4)
    assert vae.decode(mu).shape == (5, 24)
    assert not torch.allclose(mu[0], mu[1])                             # each input has its own posterior
    mean_x, mu2, _ = vae(e, sample=False)
    assert torch.equal(mu2, mu) and torch.allclose(mean_x, vae.decode_std(mu))        # no noise: decode the mean
    assert not torch.allclose(x_hat, mean_x)                              # sampling draws around the mean
    assert torch.allclose(vae.decode(mu), vae.norm.inverse(mean_x))      # back in embedding space
    assert torch.allclose(mu2, vae.encoder(vae.norm(e))[:, :4])          # the encoder sees standardized input


def test_standardizer_round_trip():
    vae = PreferenceVAE(dim=6, latent_dim=2, hidden_dims=(4,))
    e = torch.randn(50, 6) * torch.tensor([1, 10, 100, 0.1, 1, 5.0]) + 3
    vae.norm.fit(e)
    x = vae.norm(e)
    assert torch.allclose(x.mean(0), torch.zeros(6), atol=1e-4)
    assert torch.allclose(vae.norm.inverse(x), e, atol=1e-3)


def test_kl_zero_at_prior_and_positive_elsewhere():
    assert torch.allclose(kl_to_standard_normal(torch.zeros(3, 4), torch.zeros(3, 4)), torch.zeros(3))
    mu = torch.tensor([[1.0, 0.0]])
    # KL(N(mu, I) || N(0, I)) = ||mu||^2 / 2
    assert math.isclose(float(kl_to_standard_normal(mu, torch.zeros(1, 2))), 0.5, rel_tol=1e-6)


def test_w2_closed_form():
    mu_a, mu_b = torch.tensor([[0.0, 0.0]]), torch.tensor([[3.0, 4.0]])
    same = torch.zeros(1, 2)
    # equal covariances: W2 = ||mu_a - mu_b||
    assert math.isclose(float(w2_diag_gaussians(mu_a, same, mu_b, same)), 5.0, rel_tol=1e-6)
    # equal means: W2^2 = sum (sigma_a - sigma_b)^2 ; sigma = exp(logvar / 2)
    lv_a, lv_b = torch.log(torch.tensor([[1.0, 4.0]])), torch.log(torch.tensor([[9.0, 4.0]]))
    assert math.isclose(float(w2_diag_gaussians(mu_a, lv_a, mu_a, lv_b)), 2.0, rel_tol=1e-6)
    # symmetric, and differentiable at 0
    mu = torch.zeros(1, 2, requires_grad=True)
    w = w2_diag_gaussians(mu, same, mu_a, same)
    w.sum().backward()
    assert torch.isfinite(mu.grad).all()


def test_kl_sums_over_the_latent_dim_only():
    g = torch.Generator().manual_seed(0)
    mu, logvar = torch.randn(2, 3, 4, generator=g), torch.randn(2, 3, 4, generator=g)
    kl = kl_to_standard_normal(mu, logvar)
    assert kl.shape == (2, 3)
    assert torch.allclose(kl, 0.5 * (mu ** 2 + logvar.exp() - 1 - logvar).sum(-1))


def test_w2_of_shifted_means_and_of_a_batch_over_leading_dims():
    mu_a, mu_b, same = torch.tensor([[1.0, -1.0]]), torch.tensor([[4.0, 3.0]]), torch.zeros(1, 2)
    assert math.isclose(float(w2_diag_gaussians(mu_a, same, mu_b, same)), 5.0, rel_tol=1e-6)   # the difference
    g = torch.Generator().manual_seed(0)
    a, la, b, lb = (torch.randn(2, 3, 4, generator=g) for _ in range(4))      # (..., k): a (2, 3) batch
    w = w2_diag_gaussians(a, la, b, lb)
    assert w.shape == (2, 3)
    want = ((a - b).pow(2).sum(-1) + ((0.5 * la).exp() - (0.5 * lb).exp()).pow(2).sum(-1)).sqrt()
    assert torch.allclose(w, want, atol=1e-5)


def test_reconstruction_over_leading_dims():
    g = torch.Generator().manual_seed(0)
    x, y = torch.randn(2, 3, 4, generator=g), torch.randn(2, 3, 4, generator=g)
    per = reconstruction(x, y, "cosine", "mean")
    assert per.shape == (2, 3)
    assert torch.allclose(per, 1 - (x * y).sum(-1) / (x.norm(dim=-1) * y.norm(dim=-1)), atol=1e-6)
    assert torch.allclose(reconstruction(x, y, "cosine", "sum"), 4 * per)
    assert torch.allclose(reconstruction(x, y, "mse", "sum"), (x - y).pow(2).sum(-1))           # (2, 3) too
    assert torch.allclose(reconstruction(x, y, "mse", "mean"), (x - y).pow(2).mean(-1))


def test_divergence_is_bounded():
    w2 = torch.tensor([0.5, 3.0, 50.0], requires_grad=True)
    d = bounded_divergence(w2, "clamp", div_max=5.0)
    assert torch.allclose(d, torch.tensor([-0.5, -3.0, -5.0]))
    d.sum().backward()
    assert w2.grad.tolist() == [-1.0, -1.0, 0.0]       # no push beyond the bound
    m = bounded_divergence(torch.tensor([0.5, 50.0]), "margin", 5.0)
    assert torch.allclose(m, torch.tensor([4.5, 0.0]))


def test_reconstruction_reductions():
    x, y = torch.zeros(2, 4), torch.ones(2, 4)
    assert torch.allclose(reconstruction(x, y, "mse", "sum"), torch.tensor([4.0, 4.0]))
    assert torch.allclose(reconstruction(x, y, "mse", "mean"), torch.tensor([1.0, 1.0]))


def test_log_normal_density_matches_torch():
    x, mu, lv = torch.randn(3, 4), torch.randn(3, 4), torch.randn(3, 4)
    ref = torch.distributions.Normal(mu, (0.5 * lv).exp()).log_prob(x).sum(-1)
    assert torch.allclose(log_normal_density(x, mu, lv), ref, atol=1e-5)
    ref0 = torch.distributions.Normal(0.0, 1.0).log_prob(x).sum(-1)
    assert torch.allclose(log_normal_density(x), ref0, atol=1e-5)


def _train(gamma: float, steps: int = 300) -> float:
    torch.manual_seed(0)
    pos, neg = torch.randn(64, 16), torch.randn(64, 16)
    neg = pos + 0.5 * neg           # pairs close together: the divergence term must push them apart
    vae = PreferenceVAE(16, 4, (16,))
    vae.norm.fit(torch.cat([pos, neg]))
    opt = torch.optim.Adam(vae.parameters(), lr=3e-3)
    for _ in range(steps):
        loss = lens_vae_loss(vae, pos, neg, beta=1.0, gamma=gamma, div_max=5.0)
        opt.zero_grad()
        loss.total.backward()
        opt.step()
    vae.eval()
    with torch.no_grad():
        return float(lens_vae_loss(vae, pos, neg, gamma=gamma).w2)


def test_divergence_term_separates_pairs():
    assert _train(gamma=5.0) > 1.5 * _train(gamma=0.0)


def test_relative_reconstruction_error_is_one_for_mean_decoder():
    vae = PreferenceVAE(8, 2, (4,))
    e = torch.randn(100, 8)
    vae.norm.fit(e)
    for p in vae.decoder.parameters():
        torch.nn.init.zeros_(p)        # decoder outputs 0 = the standardized mean
    assert abs(relative_reconstruction_error(vae, e) - 1.0) < 0.05


def test_mlp_puts_gelu_and_dropout_between_layers_only():
    from lens_ray.core.vae import mlp
    kinds = [type(m).__name__ for m in mlp([4, 8, 8, 2], dropout=0.1)]
    assert kinds == ["Linear", "GELU", "Dropout", "Linear", "GELU", "Dropout", "Linear"]
    assert [type(m).__name__ for m in mlp([4, 2])] == ["Linear"]


def test_encode_clamps_logvar_and_forward_samples_mu_plus_sigma_eps():
    from lens_ray.core.vae import PreferenceVAE, Standardizer
    norm = Standardizer(6)
    assert norm.fit(torch.randn(20, 6)) is norm
    vae = PreferenceVAE(6, 2, (8,))
    last = vae.encoder[-1]
    with torch.no_grad():
        last.weight.zero_()
        last.bias.copy_(torch.tensor([0.5, -0.5, 100.0, -100.0]))      # mu (0.5, -0.5), logvar far out
    e = torch.randn(3, 6)
    mu, logvar = vae.encode(e)
    assert torch.equal(logvar, torch.tensor([[8.0, -12.0]] * 3)) and torch.equal(mu, torch.tensor([[0.5, -0.5]] * 3))
    torch.manual_seed(4)
    x_hat, _, _ = vae(e)
    torch.manual_seed(4)
    z = mu + torch.randn_like(mu) * torch.exp(0.5 * logvar)
    assert torch.allclose(x_hat, vae.decode_std(z))
    assert torch.allclose(vae(e, sample=False)[0], vae.decode_std(mu))


def test_sizes_read_from_storage_are_bounded_exactly():
    """A stored config's sizes: positive ints up to MAX_WIDTH, at most max_layers + 2 of them, and at most
    MAX_PARAMS weights between consecutive layers - each bound allowed exactly, refused one past it."""
    bounded_sizes("x", [1, MAX_WIDTH], max_layers=0)
    bounded_sizes("x", [MAX_WIDTH, MAX_PARAMS // MAX_WIDTH], max_layers=0)           # exactly MAX_PARAMS
    bounded_sizes("x", [4] * 5, max_layers=3)
    for sizes, layers in (([0, 4], 1), ([MAX_WIDTH + 1, 1], 1), ([4] * 6, 3), ([4, True], 1), ([4, 2.0], 1),
                          ([MAX_WIDTH, MAX_PARAMS // MAX_WIDTH + 1], 0), ([1, MAX_WIDTH, 1025], 1)):
        with pytest.raises(ValueError, match="^x: sizes"):
            bounded_sizes("x", sizes, max_layers=layers)


def test_encode_over_leading_dims_and_a_stored_config_round_trip():
    torch.manual_seed(0)
    vae = PreferenceVAE(6, 2, (8, 4)).eval()
    vae.norm.fit(torch.randn(50, 6))
    e = torch.randn(2, 3, 6)
    mu, logvar = vae.encode(e)                                      # (..., d) -> (..., k)
    flat_mu, flat_lv = vae.encode(e.reshape(6, 6))
    assert mu.shape == logvar.shape == (2, 3, 2)
    assert torch.allclose(mu.reshape(6, 2), flat_mu) and torch.allclose(logvar.reshape(6, 2), flat_lv)
    again = PreferenceVAE.from_config(vae.config())
    assert again.config() == {"dim": 6, "latent_dim": 2, "hidden_dims": [8, 4]}
    PreferenceVAE.from_config({"dim": 6, "latent_dim": 2, "hidden_dims": [4] * 10})        # 10 hidden layers
    for bad in ({"dim": 6, "latent_dim": 2, "hidden_dims": [4] * 11}, {"dim": 6, "latent_dim": 2, "hidden_dims": [0]},
                {"dim": 6, "latent_dim": 2, "hidden_dims": ["8"]}):
        with pytest.raises(ValueError, match="^VAE config: sizes"):
            PreferenceVAE.from_config(bad)


def test_lens_vae_loss_is_its_terms_computed_by_hand():
    """The loss of a fixed VAE on 4 pairs against each term written out (beta and gamma apart, the clamp
    reached for some pairs): which tensor goes where (mu or logvar, chosen or rejected) matters."""
    torch.manual_seed(0)
    vae = PreferenceVAE(6, 3, (8,)).eval()
    vae.norm.fit(torch.randn(50, 6) * 2 + 1)
    pos, neg = torch.randn(4, 6) * 3, torch.randn(4, 6)
    beta, gamma, cap = 0.7, 0.3, 0.9
    torch.manual_seed(5)
    got = lens_vae_loss(vae, pos, neg, beta, gamma, "mse", "sum", "clamp", cap)
    torch.manual_seed(5)                                         # the same draw of z
    e = torch.cat([pos, neg])
    x_hat, mu, lv = vae(e)
    rec = ((vae.norm(e) - x_hat) ** 2).sum(1)
    kl = 0.5 * (mu ** 2 + lv.exp() - 1 - lv).sum(1)
    w2 = (((mu[:4] - mu[4:]) ** 2).sum(1) + ((lv[:4].mul(0.5).exp() - lv[4:].mul(0.5).exp()) ** 2).sum(1)
          + 1e-8).sqrt()
    assert (w2 > cap).any() and (w2 < cap).any()
    total = (rec[:4] + rec[4:] + beta * (kl[:4] + kl[4:])).mean() + gamma * (-w2.clamp(max=cap)).mean()
    assert torch.allclose(got.total, total, rtol=1e-5) and torch.allclose(got.kl, kl.mean(), rtol=1e-5)
    assert torch.allclose(got.w2, w2.mean(), rtol=1e-5) and torch.allclose(got.recon, rec.mean(), rtol=1e-5)
