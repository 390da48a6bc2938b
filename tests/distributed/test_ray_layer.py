"""The Ray layer adds distribution only: its results equal the pure functions', and trainers resume."""
import json
import os

import numpy as np
import pyarrow as pa
import pytest
import ray
import torch

from lens_ray.config import EmbedConfig, ResourcesConfig, RewardConfig, SynthConfig, VAEConfig
from lens_ray.core.augment import Augmenter
from lens_ray.core.fit import fit_vae
from lens_ray.core.metrics import head_accuracy
from lens_ray.core.records import Cell, SeedData
from lens_ray.core.synth_stream import decode_seeded, materialize
from lens_ray.core.vae import PreferenceVAE
from lens_ray.data.embed import Embedder
from lens_ray.distributed.embedding import EmbedItem, embed_items, embed_thread_count
from lens_ray.distributed.synthesis import pairs_dataset, synthesize_at_scale, synthesize_sets
from lens_ray.distributed.training import train_head_streaming, train_mlp_heads, train_vaes
from lens_ray.store.storage import Storage, StorageError

PROMPT = [{"role": "user", "content": "How do I bake bread?"}]
SHARDS = ["part-000000000000-000000000300.parquet", "part-000000000300-000000000600.parquet",
          "part-000000000600-000000000900.parquet", "part-000000000900-000000001000.parquet"]


def test_embed_items_equals_direct_embedder(ray_cluster, tiny_llama):
    items = [EmbedItem(f"k{i}", PROMPT, "word " * (i % 7 + 1) + str(i)) for i in range(40)]
    cfg = EmbedConfig(model=tiny_llama, max_length=32, dtype="float32")
    res = ResourcesConfig(embed_batch_size=8, embed_actors=2, embed_cpus_per_actor=0.5)
    found, stats = embed_items(items, cfg, res, log=lambda m: None)
    assert stats.rows == 40 and set(found) == {i.key for i in items}
    direct = Embedder(tiny_llama, max_length=32, dtype="float32")
    batch = {"prompt_json": np.array([json.dumps(PROMPT)] * 3), "response": np.array([i.response for i in items[:3]]),
             "key": np.array(["a", "b", "c"])}
    ref = direct(batch)["embedding"]
    assert np.allclose(np.stack([found[f"k{i}"] for i in range(3)]), ref, atol=1e-5)


def test_embed_items_packs_a_prompts_responses_without_changing_a_vector(ray_cluster, tiny_llama):
    """embed.share_prefix: the actors read each prompt once for its responses (counted), same vectors."""
    prompts = [[{"role": "user", "content": f"Question {i}: " + "why is the sky blue? " * (i % 3 + 1)}]
               for i in range(6)]
    items = [EmbedItem(f"k{i}-{j}", p, "answer " * (j + 1)) for i, p in enumerate(prompts) for j in range(3)]
    res = ResourcesConfig(embed_batch_size=9, embed_actors=1, embed_cpus_per_actor=0.5)
    out = {}
    for share in (True, False):
        cfg = EmbedConfig(model=tiny_llama, max_length=128, dtype="float32", share_prefix=share)
        out[share] = embed_items(items, cfg, res, log=lambda m: None)
    (packed, st), (alone, st_off) = out[True], out[False]
    assert st.tokens == st_off.tokens and st_off.shared_tokens == 0
    assert st.shared_tokens > 0.3 * st.tokens                  # 2 of each prompt's 3 rows reuse its tokens
    assert all(np.allclose(packed[k], alone[k], atol=1e-5) for k in alone)


def test_batch_order_keeps_a_prompts_rows_together_when_packing():
    import pandas as pd

    from lens_ray.distributed.embedding import batch_order
    df = pd.DataFrame({"prompt_json": ["a", "bbbbbb", "a", "bbbbbb", "c"],
                       "response": ["xxxxxxx", "y", "z", "yy", "w"], "key": list("01234")})
    # longest first: the blocks left when actors run out of work are the shortest
    assert list(batch_order(df, grouped=False).key) == ["0", "3", "1", "2", "4"]        # by each text's length
    assert list(batch_order(df, grouped=True).key) == ["0", "2", "1", "3", "4"]          # by each prompt's pack


def test_rows_are_grouped_by_prompt_only_where_the_actors_pack(tiny_llama):
    from lens_ray.config import EmbedConfig
    from lens_ray.data.embed import model_kind
    from lens_ray.distributed.embedding import shares_prefix
    assert (model_kind("smollm2"), model_kind("minilm"), model_kind(tiny_llama)) == ("causal", "encoder", "causal")
    assert shares_prefix(EmbedConfig(model=tiny_llama)) and shares_prefix(EmbedConfig(model="smollm2"))
    assert not shares_prefix(EmbedConfig(model="minilm"))                       # an encoder reads texts whole
    assert not shares_prefix(EmbedConfig(model=tiny_llama, pooling="mean"))     # a mean reads the prompt too
    assert not shares_prefix(EmbedConfig(model=tiny_llama, share_prefix=False))


def test_split_frame_keeps_a_prompts_rows_in_one_block():
    import pandas as pd

    from lens_ray.distributed.embedding import split_frame
    df = pd.DataFrame({"prompt_json": list("aabbbcccd"), "key": range(9)})
    assert [len(b) for b in split_frame(df, 3)] == [3, 3, 3]                     # even blocks cut prompts
    blocks = split_frame(df, 3, keep_together="prompt_json")
    assert [list(b.prompt_json) for b in blocks] == [list("aabbb"), list("ccc"), ["d"]]
    assert [len(b) for b in split_frame(df.iloc[:3], 3, keep_together="prompt_json")] == [2, 1]   # none empty


def test_synthesize_sets_equals_pure_augmenter(ray_cluster):
    torch.manual_seed(0)
    pos, neg = torch.randn(50, 8), torch.randn(50, 8)
    vae = PreferenceVAE(8, 2, (4,))
    vae.norm.fit(torch.cat([pos, neg]))
    cells = {Cell("lens", 8, 0): Augmenter.fit("lens", 0, SynthConfig(), pos, neg, vae.eval()),
            Cell("gaussian_sampling", 4, 0): Augmenter.fit("gaussian_sampling", 0, SynthConfig(), pos, neg)}
    out = synthesize_sets(cells, {0: (pos.numpy(), neg.numpy())}, ResourcesConfig(synth_batch_size=7),
                          log=lambda m: None)
    for cell, aug in cells.items():
        sp, sn, _ = aug.synthesize(pos, neg, np.arange(50), cell.factor)
        assert out[cell][0].shape == tuple(sp.shape)
        assert np.allclose(out[cell][0], sp.numpy(), atol=1e-5) and np.allclose(out[cell][1], sn.numpy(), atol=1e-5)


def _seeds() -> list[SeedData]:
    rng = np.random.default_rng(0)
    w = rng.standard_normal(8).astype(np.float32)
    pos = rng.standard_normal((120, 8)).astype(np.float32) + w
    neg = rng.standard_normal((120, 8)).astype(np.float32) - w
    return [SeedData(0, pos[:100], neg[:100], pos[100:], neg[100:]),
            SeedData(1, pos[20:], neg[20:], pos[:20], neg[:20])]


def test_embedding_threads_are_the_clusters_cpus_shared_by_the_actors(ray_cluster, monkeypatch):
    monkeypatch.setattr(os, "cpu_count", lambda: 64)    # the driver's own cores decide nothing
    cpus = int(ray.cluster_resources()["CPU"])
    assert [embed_thread_count(ResourcesConfig(), n, 0) for n in (1, 2)] == [cpus, max(1, cpus // 2)]
    assert embed_thread_count(ResourcesConfig(), 1, 1.0) == 1                          # a GPU actor: one
    assert embed_thread_count(ResourcesConfig(embed_threads=3), 2, 0) == 3            # the setting wins


def _node_cpus() -> int:
    """The CPUs Ray counts on the one node of the test cluster (what a Train worker's threads are cut from)."""
    [node] = [n for n in ray.nodes() if n["Alive"]]
    return int(node["Resources"]["CPU"])


def test_vae_trainer_fits_with_ddp_and_resumes(ray_cluster, tmp_path):
    store = Storage(str(tmp_path / "train"))
    cfg, res = VAEConfig(latent_dim=2, hidden_dims=(8,), epochs=3), ResourcesConfig(vae_workers=2)
    states, meta = train_vaes(cfg, _seeds(), "vae-test", store, res)
    assert set(states) == {"seed-0", "seed-1"} and "rel_recon_val" in meta["seed-0"]["metrics"]
    m = meta["seed-0"]["metrics"]
    assert m["workers"] == 2 and m["module"] == "DistributedDataParallel"   # two workers shared each batch
    assert m["threads"] == max(1, _node_cpus() // 2)                      # the node's cores, shared by its two
    other = [SeedData(sd.seed, sd.train_pos + 5, sd.train_neg - 5, sd.val_pos, sd.val_neg) for sd in _seeds()]
    again, _ = train_vaes(cfg, other, "vae-test", store, res)             # same run name: resumes, refits nothing
    assert all(torch.equal(states["seed-0"][k], again["seed-0"][k]) for k in states["seed-0"])   # other data,
    fresh, _ = train_vaes(cfg, other, "vae-other", store, res)            # the same weights: read from the checkpoint
    assert not all(torch.equal(states["seed-0"][k], fresh["seed-0"][k]) for k in states["seed-0"])


def test_head_trainer_fits_with_ddp(ray_cluster, tmp_path, monkeypatch):
    monkeypatch.setattr(os, "cpu_count", lambda: 64)    # a driver on a bigger machine than the workers' node
    store = Storage(str(tmp_path / "train"))
    rcfg = RewardConfig(hidden_dim=8, max_steps=40, eval_every=10)
    _, meta = train_mlp_heads(rcfg, [Cell("original", 1, 0)], _seeds()[:1], store.uri, "heads-test", store,
                        ResourcesConfig(reward_workers=2))
    m = meta["original-f1-s0"]
    assert m["metrics"]["val_acc"] > 0.8 and not m["failed"] and m["metrics"]["workers"] == 2
    assert m["metrics"]["threads"] == max(1, _node_cpus() // 2)         # not the driver's 64 / 2


@pytest.fixture(scope="module")
def lens_source():
    """A fitted LENS augmenter on 20 separable source pairs (8-d)."""
    torch.manual_seed(0)
    w = torch.ones(8)
    pos, neg = torch.randn(20, 8) + w, torch.randn(20, 8) - w
    vae, _ = fit_vae(VAEConfig(latent_dim=2, hidden_dims=(16,), epochs=100), pos, neg, seed=0)
    return Augmenter.fit("lens", 0, SynthConfig(), pos, neg, vae.eval()), pos, neg


def _at_scale(lens_source, store, mode, total=1000, shard_pairs=300, workers=2, meta=None, log=lambda m: None):
    aug, pos, neg = lens_source
    res = ResourcesConfig(synth_actors=workers, synth_cpus_per_actor=0.5)
    return synthesize_at_scale(aug, pos.numpy(), neg.numpy(), 2, mode, store, total, meta or {"t": 1}, res,
                               shard_pairs=shard_pairs, log=log)


def test_synthesis_at_scale_writes_every_pair_once(ray_cluster, lens_source, tmp_path):
    from lens_ray.store.artifacts import read_pair_embeddings
    aug, pos, neg = lens_source
    man = _at_scale(lens_source, Storage(str(tmp_path / "mat")), "materialized")
    assert sorted(man.files) == SHARDS
    got = [read_pair_embeddings(man, n[:-len(".parquet")]) for n in sorted(man.files)]
    ref_p, _ = materialize(aug, pos, neg, 0, 1000, 2)
    p = np.concatenate([g[0] for g in got])
    assert p.shape == (1000, 8) and np.allclose(p, ref_p.numpy(), atol=1e-6)


def test_synthesis_at_scale_rerun_writes_only_missing_shards(ray_cluster, lens_source, tmp_path):
    mat = Storage(str(tmp_path / "mat"))
    _at_scale(lens_source, mat, "materialized")
    doc = mat.read_json("manifest.json")
    del doc["files"][SHARDS[1]]            # a kill after the shard was written but before its commit
    mat.write_json("manifest.json", doc)
    logs = []
    man = _at_scale(lens_source, mat, "materialized", workers=1, log=logs.append)
    assert "1 of 4 shards" in logs[0] and sum(f["rows"] for f in man.files.values()) == 1000
    with pytest.raises(StorageError, match="other settings"):
        _at_scale(lens_source, mat, "materialized", total=2000, meta={"t": 2})


def test_seeded_pairs_decode_to_the_materialized_ones(ray_cluster, lens_source, tmp_path):
    aug, pos, neg = lens_source
    sd = _at_scale(lens_source, Storage(str(tmp_path / "seed")), "seeded", shard_pairs=500, workers=1)
    t = pa.concat_tables([sd.read_parquet(n) for n in sorted(sd.files)])
    assert t.num_rows == 1000 and sum(f["bytes"] for f in sd.files.values()) < 1000 * 30
    dp, dn = decode_seeded(aug, pos, neg, t["unit"].to_numpy(), t["a"].to_numpy(), t["b"].to_numpy(), 2)
    ref_p, ref_n = materialize(aug, pos, neg, 0, 1000, 2)
    assert torch.allclose(dp, ref_p, atol=1e-6) and torch.allclose(dn, ref_n, atol=1e-6)


@pytest.mark.parametrize("mode", ["materialized", "seeded"])
def test_streaming_head_learns_from_synthetic_pairs_alone(ray_cluster, lens_source, tmp_path, mode):
    """Both pair sets stream into a head with 2 DDP workers; synthetic pairs alone must rank the real ones."""
    aug, pos, neg = lens_source
    man = _at_scale(lens_source, Storage(str(tmp_path / mode)), mode, workers=1)
    # workers leave CPU for the dataset's reads and decoders (2 CPUs in all here)
    rcfg = RewardConfig(hidden_dim=8, batch_size=32, dropout=0.0)
    res = ResourcesConfig(reward_workers=2, reward_cpus_per_worker=0.5)
    stats = torch.cat([pos, neg])
    ds = pairs_dataset(man, aug, pos.numpy(), neg.numpy(), 2)
    head, metrics = train_head_streaming(rcfg, ds, 8, stats.mean(0).numpy(), stats.std(0).numpy(), f"stream-{mode}",
                                       Storage(str(tmp_path / "train")), res, epochs=2)
    assert 400 <= metrics["pairs"] <= 1200            # rank 0's share of 2 epochs over 1,000 pairs
    assert head_accuracy(head, pos, neg) > 0.8


def test_streaming_head_resumes_per_epoch(ray_cluster, lens_source, tmp_path):
    """A checkpoint per epoch: the same run name asked for one more epoch trains only that epoch."""
    aug, pos, neg = lens_source
    man = _at_scale(lens_source, Storage(str(tmp_path / "mat")), "materialized", workers=1)
    stats = torch.cat([pos, neg])
    args = (RewardConfig(hidden_dim=8, batch_size=32, dropout=0.0), pairs_dataset(man), 8, stats.mean(0).numpy(),
            stats.std(0).numpy(), "stream-resume", Storage(str(tmp_path / "train")),
            ResourcesConfig(reward_workers=2, reward_cpus_per_worker=0.5))
    _, first = train_head_streaming(*args, epochs=1)
    head, second = train_head_streaming(*args, epochs=2)
    assert first["epoch"] == 1 and second["epoch"] == 2
    assert second["pairs"] <= 600                       # one epoch's share of rank 0, not two
    assert head_accuracy(head, pos, neg) > 0.8


def _ddp_head_loop(config: dict) -> None:
    """A Ray Train worker: fit_head with the DDP hooks lens-ray gives its loops, recording every row its shard
    hands it and its final weights, in a file of its own."""
    import json as _json

    import ray.train

    from lens_ray.core.augment import PairSet
    from lens_ray.core.fit import fit_head
    from lens_ray.distributed.training import _workers
    g = torch.Generator().manual_seed(0)
    pos, neg = torch.randn(64, 6, generator=g) + 0.3, torch.randn(64, 6, generator=g) - 0.3
    workers, seen = _workers(), []
    plain = workers.shard

    def shard(idx):
        mine = plain(idx)
        seen.append([int(i) for i in mine])
        return mine
    workers.shard = shard
    cfg = RewardConfig(hidden_dim=8, max_steps=6, eval_every=100, batch_size=16, dropout=0.0)
    fit = fit_head(cfg, PairSet(pos, neg), PairSet(pos[:8], neg[:8]), 1, pos, neg, workers, keep="last")
    rank = ray.train.get_context().get_world_rank()
    with open(os.path.join(config["out"], f"rank-{rank}.json"), "w") as fh:
        _json.dump({"seen": seen, "size": workers.size,
                    "weights": {k: v.tolist() for k, v in fit.head.state_dict().items()}}, fh)


def test_a_ddp_fits_ranks_see_disjoint_shards_and_end_with_equal_weights(ray_cluster, tmp_path):
    import sys

    from ray import cloudpickle
    from ray.train import RunConfig, ScalingConfig
    from ray.train.torch import TorchTrainer

    from lens_ray.distributed.training import LoopbackTorchConfig
    cloudpickle.register_pickle_by_value(sys.modules[__name__])     # the loop travels with the trainer
    TorchTrainer(_ddp_head_loop, train_loop_config={"out": str(tmp_path)}, torch_config=LoopbackTorchConfig(),
                 scaling_config=ScalingConfig(num_workers=2, resources_per_worker={"CPU": 0.5}),
                 run_config=RunConfig(name="ddp-shards", storage_path=str(tmp_path / "train"))).fit()
    ranks = [json.loads((tmp_path / f"rank-{r}.json").read_text()) for r in (0, 1)]
    assert all(r["size"] == 2 for r in ranks) and len(ranks[0]["seen"]) == len(ranks[1]["seen"]) == 6
    for step, (a, b) in enumerate(zip(ranks[0]["seen"], ranks[1]["seen"])):
        assert a and b and not set(a) & set(b), step                         # disjoint halves of one batch
        assert len(a) + len(b) == 16                                        # together, the whole batch
    for k, v in ranks[0]["weights"].items():                                # DDP kept them in step
        assert np.allclose(v, ranks[1]["weights"][k], atol=1e-6), k
