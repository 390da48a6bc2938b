import torch

from lens_ray.config import SynthConfig
from lens_ray.core.augment import Augmenter
from lens_ray.core.synth import slot_combos
from lens_ray.core.synth_stream import decode_seeded, materialize, seeded_pairs
from lens_ray.core.vae import PreferenceVAE


def _aug(d=8, n=10):
    torch.manual_seed(0)
    pos, neg = torch.randn(n, d), torch.randn(n, d)
    vae = PreferenceVAE(d, 2, (4,))
    vae.norm.fit(torch.cat([pos, neg]))
    return Augmenter.fit("lens", 0, SynthConfig(), pos, neg, vae.eval()), pos, neg


def test_seeded_pairs_layout():
    ids = seeded_pairs(0, 20, n_src=3, k=2)
    assert len(slot_combos(2)) == 8 and len(ids["unit"]) == 20
    assert ids["unit"].tolist()[:9] == [0] * 8 + [1]
    assert (ids["source"] == ids["unit"] % 3).all()
    assert not ((ids["a"] == 0) & (ids["b"] == 0)).any()          # synthetic pairs only


def test_materialize_is_range_invariant_and_equals_seeded_decode():
    aug, pos, neg = _aug()
    whole_p, whole_n = materialize(aug, pos, neg, 0, 100, k=2)
    a_p, _ = materialize(aug, pos, neg, 0, 37, k=2)
    b_p, b_n = materialize(aug, pos, neg, 37, 100, k=2)
    assert whole_p.shape == (100, 8)
    assert torch.allclose(torch.cat([a_p, b_p]), whole_p, atol=1e-6) and torch.allclose(b_n, whole_n[37:], atol=1e-6)
    ids = seeded_pairs(0, 100, len(pos), 2)
    sp, sn = decode_seeded(aug, pos, neg, ids["unit"][::-1], ids["a"][::-1], ids["b"][::-1], 2)   # any order
    assert torch.allclose(sp.flip(0), whole_p, atol=1e-6) and torch.allclose(sn.flip(0), whole_n, atol=1e-6)


def test_slot_zero_is_the_real_embedding():
    aug, pos, neg = _aug()
    ids = seeded_pairs(0, 8, len(pos), 2)          # unit 0, source 0
    sp, sn = decode_seeded(aug, pos, neg, ids["unit"], ids["a"], ids["b"], 2)
    for row, (a, b) in enumerate(zip(ids["a"], ids["b"])):
        assert torch.equal(sp[row], pos[0]) == (a == 0)
        assert torch.equal(sn[row], neg[0]) == (b == 0)


def test_units_past_the_sources_wrap_around_them():
    """Unit u synthesizes from source u mod n: its real slot (a == 0 or b == 0) is that source's embedding."""
    aug, pos, neg = _aug()
    n = len(pos)
    ids = seeded_pairs(0, 8 * (n + 2), n, 2)
    assert ids["unit"].max() >= n + 1
    sp, sn = decode_seeded(aug, pos, neg, ids["unit"], ids["a"], ids["b"], 2)
    for row, (u, a, b) in enumerate(zip(ids["unit"], ids["a"], ids["b"])):
        if a == 0:
            assert torch.equal(sp[row], pos[u % n])
        if b == 0:
            assert torch.equal(sn[row], neg[u % n])
