"""The Ray layer adds distribution only: its results equal the pure functions', and trainers resume."""
import numpy as np
import torch

from lens_ray.augment import Augmenter
from lens_ray.config import EmbedConfig, RewardConfig, SynthConfig, VAEConfig
from lens_ray.embed import Embedder
from lens_ray.models.vae import PreferenceVAE
from lens_ray.ray_data import EmbedItem, embed_items, synthesize_jobs
from lens_ray.ray_train import HeadJob, fit_heads, fit_vaes
from lens_ray.storage import Storage

PROMPT = [{"role": "user", "content": "How do I bake bread?"}]


def test_embed_items_equals_direct_embedder(ray_cluster, tiny_llama):
    import json
    items = [EmbedItem(f"k{i}", PROMPT, "word " * (i % 7 + 1) + str(i)) for i in range(40)]
    cfg = EmbedConfig(model=tiny_llama, batch_size=8, max_length=32, num_actors=2, cpus_per_actor=0.5)
    found, stats = embed_items(items, cfg, log=lambda m: None)
    assert stats.rows == 40 and set(found) == {i.key for i in items}
    direct = Embedder(tiny_llama, max_length=32)
    ref = direct({"prompt_json": np.array([json.dumps(PROMPT)] * 3), "response": np.array([i.response for i in items[:3]]),
                  "key": np.array(["a", "b", "c"])})["embedding"]
    assert np.allclose(np.stack([found[f"k{i}"] for i in range(3)]), ref, atol=1e-5)


def test_synthesize_jobs_equals_pure_augmenter(ray_cluster):
    torch.manual_seed(0)
    pos, neg = torch.randn(50, 8), torch.randn(50, 8)
    vae = PreferenceVAE(8, 2, (4,))
    vae.norm.fit(torch.cat([pos, neg]))
    jobs = {0: (Augmenter.fit("lens", 0, SynthConfig(), pos, neg, vae.eval()), 8),
            1: (Augmenter.fit("gaussian_sampling", 0, SynthConfig(), pos, neg), 4)}
    out = synthesize_jobs(jobs, {0: (pos.numpy(), neg.numpy())}, SynthConfig(batch_size=7), log=lambda m: None)
    for job, (aug, factor) in jobs.items():
        sp, sn, _ = aug.synthesize(pos, neg, np.arange(50), factor)
        assert out[job][0].shape == tuple(sp.shape)
        assert np.allclose(out[job][0], sp.numpy(), atol=1e-5) and np.allclose(out[job][1], sn.numpy(), atol=1e-5)


def test_trainers_fit_with_ddp_and_resume(ray_cluster, tmp_path):
    rng = np.random.default_rng(0)
    w = rng.standard_normal(8).astype(np.float32)
    pos = rng.standard_normal((120, 8)).astype(np.float32) + w
    neg = rng.standard_normal((120, 8)).astype(np.float32) - w
    data = {0: (pos[:100], neg[:100], pos[100:], neg[100:]), 1: (pos[20:], neg[20:], pos[:20], neg[:20])}
    store = Storage(str(tmp_path / "train"))
    cfg = VAEConfig(latent_dim=2, hidden_dims=(8,), epochs=3, num_workers=2)
    states, meta = fit_vaes(cfg, data, "vae-test", store)
    assert set(states) == {"seed-0", "seed-1"} and "rel_recon_val" in meta["seed-0"]["metrics"]
    again, _ = fit_vaes(cfg, data, "vae-test", store)                # same run name: resumes, refits nothing
    assert all(torch.equal(states["seed-0"][k], again["seed-0"][k]) for k in states["seed-0"])
    rcfg = RewardConfig(hidden_dim=8, max_steps=40, eval_every=10, num_workers=2)
    hs, hm = fit_heads(rcfg, [HeadJob("original-f1-s0", "original", 1, 0, None)], data, store.uri, "heads-test", store)
    assert hm["original-f1-s0"]["metrics"]["val_acc"] > 0.8
