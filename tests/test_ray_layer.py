"""The Ray layer adds distribution only: its results equal the pure functions', and trainers resume."""
import numpy as np
import pytest
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
    cfg = EmbedConfig(model=tiny_llama, batch_size=8, max_length=32, num_actors=2, cpus_per_actor=0.5, dtype="float32")
    found, stats = embed_items(items, cfg, log=lambda m: None)
    assert stats.rows == 40 and set(found) == {i.key for i in items}
    direct = Embedder(tiny_llama, max_length=32, dtype="float32")
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


def test_synthesis_at_scale_exactly_once_and_resumes(ray_cluster, tmp_path):
    from lens_ray.artifacts import read_pair_embeddings
    from lens_ray.ray_data import synthesize_at_scale
    from lens_ray.synth_stream import decode_seeded, materialize
    import pyarrow as pa
    from lens_ray.fit import fit_vae
    torch.manual_seed(0)
    w = torch.ones(8)
    pos, neg = torch.randn(20, 8) + w, torch.randn(20, 8) - w
    vae, _ = fit_vae(VAEConfig(latent_dim=2, hidden_dims=(16,), epochs=100), pos, neg, seed=0)
    aug = Augmenter.fit("lens", 0, SynthConfig(), pos, neg, vae.eval())
    mat = Storage(str(tmp_path / "mat"))
    man = synthesize_at_scale(aug, pos.numpy(), neg.numpy(), 2, "materialized", mat, 1000, {"t": 1},
                              shard_pairs=300, workers=2, cpus_per_worker=0.5, log=lambda m: None)
    assert sorted(man.files) == ["part-000000000000-000000000300.parquet", "part-000000000300-000000000600.parquet",
                                 "part-000000000600-000000000900.parquet", "part-000000000900-000000001000.parquet"]
    got = [read_pair_embeddings(man, n[:-len(".parquet")]) for n in sorted(man.files)]
    p = np.concatenate([g[0] for g in got])
    ref_p, ref_n = materialize(aug, pos, neg, 0, 1000, 2)
    assert p.shape == (1000, 8) and np.allclose(p, ref_p.numpy(), atol=1e-6)
    # a kill after one shard was written but before its commit: the re-run writes that shard only
    from lens_ray.storage import Manifest
    doc = mat.read_json("manifest.json")
    lost = "part-000000000300-000000000600.parquet"
    del doc["files"][lost]
    mat.write_json("manifest.json", doc)
    logs = []
    man2 = synthesize_at_scale(aug, pos.numpy(), neg.numpy(), 2, "materialized", mat, 1000, {"t": 1},
                               shard_pairs=300, workers=1, cpus_per_worker=0.5, log=logs.append)
    assert "1 of 4 shards" in logs[0] and sum(f["rows"] for f in man2.files.values()) == 1000
    with_other = pytest.raises(Exception, match="other settings")
    with with_other:
        synthesize_at_scale(aug, pos.numpy(), neg.numpy(), 2, "materialized", mat, 2000, {"t": 2}, log=logs.append)
    # seeded mode: a few bytes a pair, decoding to the same embeddings
    sd = synthesize_at_scale(aug, pos.numpy(), neg.numpy(), 2, "seeded", Storage(str(tmp_path / "seed")), 1000,
                             {"t": 1}, shard_pairs=500, workers=1, cpus_per_worker=0.5, log=lambda m: None)
    tables = [sd.read_parquet(n) for n in sorted(sd.files)]
    t = pa.concat_tables(tables)
    assert t.num_rows == 1000 and sum(f["bytes"] for f in sd.files.values()) < 1000 * 30
    dp, dn = decode_seeded(aug, pos, neg, t["unit"].to_numpy(), t["a"].to_numpy(), t["b"].to_numpy(), 2)
    assert torch.allclose(dp, ref_p, atol=1e-6) and torch.allclose(dn, ref_n, atol=1e-6)

    # stream both sets into a head with 2 DDP workers; synthetic pairs alone must rank the real ones
    from lens_ray.fit import score_accuracy
    from lens_ray.ray_data import pairs_dataset
    from lens_ray.ray_train import fit_head_streaming
    # workers leave CPU for the dataset's reads and decoders (2 CPUs in all here)
    rcfg = RewardConfig(hidden_dim=8, batch_size=32, num_workers=2, cpus_per_worker=0.5, dropout=0.0)
    stats = torch.cat([pos, neg])
    for name, manifest in (("mat", man2), ("seeded", sd)):
        ds = pairs_dataset(manifest, aug, pos.numpy(), neg.numpy(), 2)
        head, metrics = fit_head_streaming(rcfg, ds, 8, stats.mean(0).numpy(), stats.std(0).numpy(), f"stream-{name}",
                                           Storage(str(tmp_path / "train")), epochs=2)
        assert 400 <= metrics["pairs"] <= 1200            # rank 0's share of 2 epochs over 1,000 pairs
        assert score_accuracy(head, pos, neg) > 0.8
    # a checkpoint per epoch: the same run name asked for one more epoch trains only that epoch
    ds = pairs_dataset(man2)
    args = (rcfg, ds, 8, stats.mean(0).numpy(), stats.std(0).numpy(), "stream-resume", Storage(str(tmp_path / "train")))
    _, first = fit_head_streaming(*args, epochs=1)
    head, second = fit_head_streaming(*args, epochs=2)
    assert first["epoch"] == 1 and second["epoch"] == 2
    assert second["pairs"] <= 600                       # one epoch's share of rank 0, not two
    assert score_accuracy(head, pos, neg) > 0.8
