"""The whole job on the session's local Ray: a tiny real model, real data, local storage and S3 (moto)."""
from pathlib import Path

import numpy as np
import pytest
import torch

from lens_ray.cli import run_main
from lens_ray.config import METHODS
from lens_ray.core.selection import Scored, choose
from lens_ray.data.embed import resolve_model
from lens_ray.scoring.reward_model import RewardModel
from lens_ray.store.artifacts import read_pair_embeddings, read_synthetic
from lens_ray.store.storage import Manifest, Storage, StorageError
from tests.conftest import FAST


def test_report_schema_and_contents(local_run):
    _, report, out = local_run
    stored = out.read_json("report.json")          # a later re-run of the same argv rewrites timings, not figures
    assert stored["results"] == report["results"] and stored["summary"] == report["summary"]
    assert stored["selected"] == report["selected"]
    for key in ("model", "embedding_dim", "seed_pairs", "eval_pairs", "results", "bon_random", "bon_oracle",
                "timings_s", "quarantined"):
        assert key in report
    assert report["embedding_dim"] == 32 and report["seed_pairs"] == 60 and report["eval_pairs"] == 40
    combos = {(r["method"], r["factor"], r["seed"]) for r in report["results"]}
    expected = {(m, 1, s) for m in ("original", "mean_diff") for s in (0, 1)} | \
        {(m, f, s) for m in METHODS[2:] for f in (2, 4) for s in (0, 1)}
    assert combos == expected
    again = _recomputed(out, report["results"])                      # the figures are what the stored heads give
    assert [r["accuracy"] for r in report["results"]] == [m["accuracy"] for m in again]
    assert set(report["timings_s"]) >= {"ingest", "embed", "fit_vae", "synthesize", "train_reward", "evaluate"}
    assert report["embedding"]["truncated"] > 0          # max_length 64 truncates real HH dialogues
    emb = report["embedding"]
    assert 0 < emb["shared_tokens"] < emb["tokens"] and emb["actor_forward_s"] > 0   # pairs read their prompt once
    # the real HH sample holds 9 bad rows: all counted, with their reasons
    assert report["quarantined"] == {"rejected: its dialogue differs from chosen before the last Assistant turn": 5,
                                     "chosen: empty response": 4}
    assert out.exists("report.md") and "| lens | 4x |" in out.read_bytes("report.md").decode()


def _recomputed(out: Storage, rows: list[dict]) -> list[dict]:
    """Result rows' metrics recomputed from what the run stored: their heads, its embedding tables, the data."""
    from lens_ray.core.metrics import head_metrics
    from lens_ray.data.finished_run import FinishedRun
    run = FinishedRun.open(out.uri)
    emb = run.inputs().emb
    return [head_metrics(run.head(r["head"].removeprefix("heads/"))[0], emb) for r in rows]


def test_report_html_holds_the_runs_figures(local_run):
    import base64
    import re
    _, report, out = local_run
    page = out.read_bytes("report.html").decode()
    images = re.findall(r"src='data:image/png;base64,([A-Za-z0-9+/=]+)'", page)
    assert len(images) == 2                       # accuracy vs factor, embedding projection (no BoN here)
    assert all(base64.b64decode(i)[:8] == b"\x89PNG\r\n\x1a\n" for i in images)
    lens4 = next(r for r in report["summary"] if r["method"] == "lens" and r["factor"] == 4)
    assert f"{lens4['accuracy']['mean']:.3f}" in page   # the page carries the run's own numbers


def test_synthetic_sets_have_exact_shapes(local_run):
    _, report, out = local_run
    n_train = 60 - round(60 * 0.15)
    sp, sn = read_synthetic(out, "lens-f4-s0")
    assert sp.shape == (n_train, 1, 32) and sn.shape == sp.shape and np.isfinite(sp).all()
    sp8, _ = read_synthetic(out, "gaussian_sampling-f4-s1")
    assert sp8.shape == (n_train, 1, 32)
    # and they are what the pure Augmenter draws from the stored VAE and the seed's training pairs
    from lens_ray.core.augment import Augmenter
    from lens_ray.core.pairs import seed_splits
    from lens_ray.data.finished_run import FinishedRun
    run = FinishedRun.open(out.uri)
    inputs, cfg = run.inputs(), run.config
    split = seed_splits(inputs.seed_pairs, cfg.data.val_fraction, cfg.seeds, cfg.data.split_seed)[0]
    pos, neg = (torch.from_numpy(inputs.emb.seed_pos[split.train]), torch.from_numpy(inputs.emb.seed_neg[split.train]))
    want = Augmenter.fit("lens", 0, cfg.synth, pos, neg, run.vae(0)).draw(pos, neg, np.arange(len(pos)), 1)
    assert np.allclose(sp, want[0].numpy(), atol=1e-5) and np.allclose(sn, want[1].numpy(), atol=1e-5)
    assert not np.allclose(sp[:, 0], pos.numpy(), atol=1e-3)        # synthetic, not copies of the real pairs


def test_scoring_api_matches_stored_embeddings(local_run, tiny_llama):
    argv, report, out = local_run
    rm = RewardModel.from_run(out.uri, head="lens-f4-s0")
    man = Manifest.open(out.child("embeddings"), {"model": resolve_model(tiny_llama).model_id, "pooling": "auto",
                                                  "max_length": 64, "storage_dtype": "float32"})
    pos, _ = read_pair_embeddings(man, "eval")
    from lens_ray.cli import config_from_args, run_parser
    from lens_ray.data.ingest import load_datasets
    cfg = config_from_args(run_parser().parse_args(argv))
    pairs = load_datasets(cfg.data).eval_pairs[:3]
    rewards = rm.score([p.prompt for p in pairs], [p.chosen for p in pairs], normalize=False)
    expected = rm.head(torch.from_numpy(pos[:3])).detach().numpy()
    assert np.allclose(rewards, expected, atol=1e-4)


def test_scoring_reads_a_prompt_once_for_its_responses_with_the_same_rewards(local_run):
    _, _, out = local_run
    rm = RewardModel.from_run(out.uri, head="original-f1-s0")
    prompt = [{"role": "user", "content": "How do I bake bread at home?"}]
    responses = ["Mix flour, water and yeast.", "No.", "Knead it, then bake it."]   # under the run's 64 tokens
    alone = [rm.score([prompt], [r])[0] for r in responses]            # one text per call: nothing to share
    assert rm.counts["shared_tokens"] == 0 and rm.counts["truncated"] == 0
    together = rm.score([prompt] * 3 + ["Another question?"], responses + ["Yes."])
    assert rm.packing.on is True and rm.counts["shared_tokens"] > 0
    assert np.allclose(together[:3], alone, atol=1e-5) and len(set(np.round(alone, 6))) == 3


def test_rerun_reuses_embeddings_and_refuses_other_settings(local_run):
    argv, report, out = local_run
    again = run_main(argv)
    assert again["embedding"]["texts"] == 0                 # nothing re-embedded
    assert [r["accuracy"] for r in again["results"]] == [r["accuracy"] for r in report["results"]]
    assert again["selected"] == report["selected"]          # the stored pick, not a new selection
    with pytest.raises(StorageError, match="max_length"):
        run_main(argv + ["--set", "embed.max_length=48"])


def test_full_job_on_s3_with_best_of_n(ray_cluster, tiny_llama, bon_path, s3_server):
    out_uri = f"s3://{s3_server['bucket']}/runs/bon"
    report = run_main(["--data", str(bon_path), "--model", tiny_llama, "--seed-pairs", "40", "--eval-pairs", "30",
                       "--bon-prompts", "4", "--seeds", "1", "--factors", "4", "--methods", "original,mean_diff,lens",
                       "--storage", f"s3://{s3_server['bucket']}/runs", "--name", "bon",
                       "--cache", f"s3://{s3_server['bucket']}/shared-cache",
                       "--set", "data.pairs_per_prompt=2"] + FAST +
                      ["--set", "selection.enabled=true", "--set", "selection.objective=bon_gold",
                       "--set", "selection.folds=3", "--set", "selection.heads=mean_diff,linear"])
    import boto3
    listing = boto3.client("s3").list_objects_v2(Bucket=s3_server["bucket"], Prefix="runs/bon/")
    keys = {o["Key"] for o in listing["Contents"]}
    assert {"runs/bon/report.json", "runs/bon/heads/lens-f4-s0.safetensors", "runs/bon/vae/seed-0.safetensors",
            "runs/bon/synthetic/lens-f4-s0.parquet", "runs/bon/embeddings/manifest.json"} <= keys
    assert any(k.startswith("runs/bon/ray_train/") for k in keys)   # Ray Train checkpoints went to S3 too
    assert Storage(out_uri).read_json("report.json")["bon_prompts"] == 4
    assert report["bon_n"] == 16 and report["bon_random"] < report["bon_oracle"]
    again = _recomputed(Storage(out_uri), report["results"])        # each Best-of-N figure: its head's pick
    assert [{"accuracy": r["accuracy"], "bon_gold": r["bon_gold"]} for r in report["results"]] == again
    # the reward model chosen by the gold of each held prompt's best-rewarded response, not by accuracy
    sel = report["selected"]
    assert sel["objective"] == "bon_gold"
    assert choose([Scored.of(r) for r in sel["candidates"]], "bon_gold").name == sel["candidate"]
    assert all(len(r["gold_folds"]) == 3 and 0 <= r["kfold_bon_gold"] <= 1 for r in sel["candidates"])
    assert sel["kfold_bon_gold"] == next(r for r in sel["candidates"] if r["candidate"] == sel["candidate"])[
        "kfold_bon_gold"] and sel["bon_gold"] is not None
    one = sel["versus"]["original"]["bon_gold"]                     # one seed: a gain, and no spread to show
    assert one["n"] == 1 and one["se"] is None and one["mean"] == pytest.approx(sel["bon_gold"] - next(
        r["bon_gold"] for r in report["results"] if r["method"] == "original"))
    cached = boto3.client("s3").list_objects_v2(Bucket=s3_server["bucket"], Prefix="shared-cache/embeddings/")
    assert cached.get("KeyCount", 0) > 0                            # --cache: the embeddings went where it said


def test_score_cli(local_run, tmp_path, capsys):
    import json

    from lens_ray.cli import score_main
    _, _, out = local_run
    f = tmp_path / "in.jsonl"
    f.write_text(json.dumps({"prompt": "How do I bake bread?", "response": "Mix flour and water."}) + "\n"
                 + json.dumps({"prompt": "How do I bake bread?", "response": "No."}) + "\n")
    score_main(["--run", out.uri, "--head", "original-f1-s0", "--input", str(f)])
    rows = [json.loads(line) for line in capsys.readouterr().out.splitlines() if line.startswith("{")]
    assert len(rows) == 2 and all(isinstance(r["reward"], float) for r in rows)
    rm = RewardModel.from_run(out.uri, head="original-f1-s0")
    assert np.allclose([r["reward"] for r in rows], rm.score(["How do I bake bread?"] * 2,
                                                             ["Mix flour and water.", "No."]), atol=1e-5)
    f.write_text(json.dumps({"prompt": "x"}) + "\n")
    from lens_ray.cli import main
    with pytest.raises(SystemExit) as exit_info:
        main(["score", "--run", out.uri, "--input", str(f)])
    assert exit_info.value.code == 2 and "row 0: field 'response'" in capsys.readouterr().err


def test_rerun_on_another_cluster_shape_recomputes_nothing(local_run):
    """Resources are not part of any fingerprint: more workers, other CPUs and batch sizes reuse every stage."""
    from lens_ray.cli import config_from_args, run_parser
    from lens_ray.pipelines.run import run
    argv, report, out = local_run
    before = set(out.listdir("ray_train"))
    shape = ["--set", "resources.vae_workers=2", "--set", "resources.reward_workers=2", "--set",
             "resources.embed_actors=2", "--set", "resources.synth_batch_size=7", "--set",
             "resources.embed_batch_size=3"]
    logs: list[str] = []
    again = run(config_from_args(run_parser().parse_args(argv + shape)), log=logs.append)
    assert again["embedding"]["texts"] == 0
    assert "  2 VAEs reused, 0 to fit" in logs
    assert "  12 synthetic sets reused, 0 to synthesize" in logs
    assert "  16 heads reused or closed-form, 0 to train" in logs
    assert set(out.listdir("ray_train")) == before                   # no trainer ran
    assert [r["accuracy"] for r in again["results"]] == [r["accuracy"] for r in report["results"]]


def test_diverged_heads_are_failed_rows_without_metrics(ray_cluster, tiny_llama, hh_path, tmp_path):
    report = run_main(["--data", str(hh_path), "--model", tiny_llama, "--seed-pairs", "40", "--eval-pairs", "20",
                       "--seeds", "1", "--methods", "original,mean_diff", "--storage", str(tmp_path), "--name", "nan",
                       "--set", "reward.lr=1e30"] + FAST)
    rows = {r["method"]: r for r in report["results"]}
    assert rows["original"]["status"] == "failed" and "non-finite" in rows["original"]["reason"]
    assert rows["original"]["accuracy"] is None and rows["original"]["head"] is None
    assert rows["mean_diff"]["status"] == "ok" and rows["mean_diff"]["accuracy"] is not None
    summary = {r["method"]: r for r in report["summary"]}
    assert summary["original"]["failed"] == 1 and summary["original"]["accuracy"] is None
    assert "FAILED" in Storage(str(tmp_path / "nan")).read_bytes("report.md").decode()
    assert not Storage(str(tmp_path / "nan")).exists("heads/original-f1-s0.json")     # nothing a scorer could load


def test_a_run_with_every_data_flag_a_yaml_config_and_the_open_choices(ray_cluster, tiny_llama, hh_path, bon_path,
                                                                        tmp_path):
    """--config (a YAML with sections), --eval-data, --bon-data, --heads mlp,linear (linear heads as Ray tasks),
    and the settings embed.layer, embed.cache_layers, synth.encode, vae.recon, vae.div_bound through a run."""
    import gzip
    import json

    from lens_ray.data.embed import layer_settings, settings_key
    from lens_ray.data.finished_run import FinishedRun
    from lens_ray.store.embedding_cache import EmbeddingCache
    rows = [json.loads(line) for line in gzip.open(hh_path, "rt")]
    (tmp_path / "eval.jsonl").write_text("\n".join(json.dumps(r) for r in rows[-30:]))
    (tmp_path / "cfg.yaml").write_text(
        "embed: {layer: [-2], cache_layers: [-1], max_length: 64, dtype: float32}\n"
        "synth: {encode: sample}\nvae: {recon: cosine, div_bound: margin, epochs: 5}\n"
        "reward: {heads: [mlp, linear], max_steps: 30, eval_every: 10}\n"
        "data: {bon_prompts: 3}\nselection: {folds: 2, heads: [mean_diff]}\n")
    report = run_main(["--config", str(tmp_path / "cfg.yaml"), "--data", str(hh_path), "--eval-data",
                       str(tmp_path / "eval.jsonl"), "--bon-data", str(bon_path), "--model", tiny_llama,
                       "--seed-pairs", "40", "--seeds", "1", "--factors", "2", "--methods", "original,mean_diff,lens",
                       "--storage", str(tmp_path), "--name", "every"])
    cfg = report["config"]
    assert cfg["embed"]["layer"] == [-2] and cfg["embed"]["cache_layers"] == [-1]
    assert (cfg["synth"]["encode"], cfg["vae"]["recon"], cfg["vae"]["div_bound"]) == ("sample", "cosine", "margin")
    assert report["eval_pairs"] <= 30 and report["bon_prompts"] == 3 and report["bon_n"] == 16
    assert report["selected"]["folds"] == 2 and {r["head_kind"] for r in report["selected"]["candidates"]} == {
        "mean_diff"}
    kinds = {(r["method"], r["head_kind"]) for r in report["results"]}
    assert kinds == {("original", "mlp"), ("original", "linear"), ("lens", "mlp"), ("lens", "linear"),
                     ("mean_diff", "linear")}
    assert all(r["status"] == "ok" for r in report["results"])
    out = Storage(str(tmp_path / "every"))
    linear = out.child("heads").read_json("lens-f2-s0-linear.json")
    assert linear["config"]["kind"] == "linear" and linear["meta"]["metrics"]["design"]["norm"] in ("none", "diag",
                                                                                                  "whiten")
    assert [r["accuracy"] for r in report["results"]] == [m["accuracy"] for m in _recomputed(out, report["results"])]
    run = FinishedRun.open(out.uri)
    assert run.embeddings.meta["layer"] == [-2]                      # the run embedded the layer it was told
    inputs = run.inputs()
    texts = [(p.prompt, r) for p in inputs.seed_pairs for r in (p.chosen, p.rejected)]
    extra = EmbeddingCache(Storage(str(tmp_path / "cache")).child("embeddings"),
                           layer_settings(run.embeddings.meta, (-1,), "concat"))
    keys = {settings_key(extra.settings, p, r) for p, r in texts}
    assert set(extra.lookup(sorted(keys))) == keys                   # the extra layer came from the same pass
    cached = extra.lookup(sorted(keys))
    first = inputs.seed_pairs[0]
    last_layer = cached[settings_key(extra.settings, first.prompt, first.chosen)]
    assert last_layer.shape == inputs.emb.seed_pos[0].shape
    assert not np.allclose(last_layer, inputs.emb.seed_pos[0])       # the same text, another layer: other vector


def test_a_candidate_layers_tables_made_under_other_settings_are_made_again(tmp_path):
    """An older run's raw inner-layer tables: removed and said (they are the run's copy of cached vectors),
    where the same settings keep them."""
    from lens_ray.pipelines.run import stale_layer_tables
    out = Storage(str(tmp_path / "run"))
    old = {"model": "m", "layer": [-2]}
    man = Manifest.open(out.child("embeddings-layer-2"), old)
    man.commit("seed.parquet", out.child("embeddings-layer-2").write_parquet("seed.parquet", _table()))
    said = []
    stale_layer_tables(out, "embeddings-layer-2", old, said.append)
    assert said == [] and out.exists("embeddings-layer-2/seed.parquet")
    stale_layer_tables(out, "embeddings-layer-2", {**old, "inner": "final_norm"}, said.append)
    assert not out.exists("embeddings-layer-2") and "inner" in said[0] and "made again" in said[0]
    stale_layer_tables(out, "embeddings-layer-2", old, said.append)           # nothing there: nothing to do
    assert len(said) == 1


def _table():
    import pyarrow as pa
    return pa.table({"x": [1, 2]})


def _keys(cfg) -> dict[str, str]:
    """Every address a stored result is found by, for one config: the embedding cache's, the stage keys of a
    VAE, of LENS's and direct perturbation's synthetic sets, of an original, a mean_diff and a LENS head, and
    the stored pick's."""
    from lens_ray.config import fingerprint
    from lens_ray.core.pairs import Split
    from lens_ray.core.records import Cell
    from lens_ray.pipelines.run import StageKeys, embedding_settings
    from lens_ray.pipelines.selection import selection_key
    splits = [Split(0, np.arange(8), np.arange(8, 10))]
    k = StageKeys(cfg, splits, 16)
    lens, dp = Cell("lens", 4, 0), Cell("direct_perturbation", 4, 0)
    out = {"embedding": fingerprint(embedding_settings(cfg)), "base": k.base, "vae": k.vae(0),
           "synthetic lens": k.synthetic(lens), "synthetic dp": k.synthetic(dp),
           "head original": k.head(Cell("original", 1, 0)), "head mean_diff": k.head(Cell("mean_diff", 1, 0)),
           "head lens": k.head(lens), "head dp": k.head(dp), "pick": selection_key(cfg, [(-1,), (-2,)], k.base)}
    assert len(set(out.values())) == len(out)                         # ten different things, ten addresses
    return out


EVERYTHING = {"embedding", "base", "vae", "synthetic lens", "synthetic dp", "head original", "head mean_diff",
              "head lens", "head dp", "pick"}
BELOW_EMBEDDING = EVERYTHING - {"embedding"}


@pytest.mark.parametrize("setting,value,changed", [
    ("embed.max_length", 128, EVERYTHING),
    ("embed.pooling", "mean", EVERYTHING),
    ("embed.storage_dtype", "float16", {"embedding"}),                 # stored rounding: its own cache entries
    ("data.split_seed", 7, BELOW_EMBEDDING),
    ("vae.beta", 0.5, {"vae", "synthetic lens", "head lens"}),         # direct perturbation uses no VAE
    ("vae.latent_dim", 8, {"vae", "synthetic lens", "head lens"}),
    ("synth.noise_var", 0.05, {"synthetic lens", "synthetic dp", "head lens", "head dp"}),
    ("synth.dp_noise_var", 0.05, {"synthetic lens", "synthetic dp", "head lens", "head dp"}),
    ("reward.lr", 0.01, {"head original", "head lens", "head dp", "pick"}),   # mean_diff is closed-form
    ("reward.max_steps", 10, {"head original", "head lens", "head dp", "pick"}),
    ("selection.folds", 3, {"pick"}),
    ("selection.heads", "linear,mlp", {"pick"}),
    ("selection.objective", "bon_gold", {"pick"}),
    ("seeds", 3, {"pick"}),                                            # the pick is refitted on every seed
    ("resources.embed_actors", 2, set()),
    ("resources.embed_batch_size", 4, set()),
    ("resources.vae_workers", 2, set()),
    ("resources.reward_workers", 2, set()),
    ("resources.embed_threads", 1, set()),
])
def test_each_setting_changes_exactly_the_keys_of_what_it_makes(ray_cluster, setting, value, changed):
    """Each setting alone: exactly the addresses of what it makes change (a VAE setting refits the VAE and what
    LENS made from it, nothing else; how the work is placed changes nothing)."""
    from lens_ray.config import LensConfig, apply_overrides
    base = LensConfig()
    before, after = _keys(base), _keys(apply_overrides(LensConfig(), {setting: value}))
    assert {k for k in before if before[k] != after[k]} == changed


def test_the_compute_dtype_is_part_of_the_embedding_address(ray_cluster):
    from lens_ray.config import LensConfig, apply_overrides
    from lens_ray.pipelines.run import embedding_settings
    fp32 = embedding_settings(apply_overrides(LensConfig(), {"embed.dtype": "float32"}))
    bf16 = embedding_settings(apply_overrides(LensConfig(), {"embed.dtype": "bfloat16"}))
    assert "dtype" not in fp32 and bf16["dtype"] == "bfloat16"        # fp32 keeps the address it always had
    assert _keys(apply_overrides(LensConfig(), {"embed.dtype": "float32"}))["embedding"] != \
        _keys(apply_overrides(LensConfig(), {"embed.dtype": "bfloat16"}))["embedding"]


def test_a_rerun_with_another_vae_setting_refits_the_vaes_and_says_so(local_run, tmp_path, capsys):
    """A copy of the finished run, re-run with vae.beta changed: both VAEs are fitted again (said), LENS's sets
    and heads follow, and what does not use the VAE is reused."""
    import shutil
    argv, report, out = local_run
    shutil.copytree(out.path(), tmp_path / "t")
    at = argv.index("--storage")
    again = run_main(argv[:at + 1] + [str(tmp_path)] + argv[at + 2:] + ["--set", "vae.beta=0.5"])
    said = capsys.readouterr().out
    assert "0 VAEs reused, 2 to fit" in said, said[-3000:]
    # LENS's 4 sets (2 factors x 2 seeds) and heads follow the VAEs; the 8 other augmented sets are reused
    assert "8 synthetic sets reused, 4 to synthesize" in said and "12 heads reused or closed-form, 4 to train" in said
    assert again["embedding"]["texts"] == 0                             # the embeddings are reused
    before = {(r["method"], r["factor"], r["seed"]): r["accuracy"] for r in report["results"]}
    after = {(r["method"], r["factor"], r["seed"]): r["accuracy"] for r in again["results"]}
    assert all(after[k] == before[k] for k in before if k[0] != "lens")


def test_the_report_reads_against_the_trivial_baselines(local_run):
    """Chance and the longer response on the run's own held-out pairs, in report.json and its text."""
    from lens_ray.core.metrics import longer_response_accuracy
    from lens_ray.data.finished_run import FinishedRun
    from lens_ray.data.ingest import load_datasets
    _, report, out = local_run
    ds = load_datasets(FinishedRun.open(out.uri).config.data)
    want = longer_response_accuracy([p.chosen for p in ds.eval_pairs], [p.rejected for p in ds.eval_pairs])
    assert report["baselines"] == {"chance": 0.5, "longer_response": want, "shorter_response": 1.0 - want}
    assert f"the longer response {want:.3f}, the shorter {1 - want:.3f}" in out.read_bytes("report.md").decode()


def test_the_console_says_what_it_embeds_why_and_how_far_it_is(local_run):
    """Before the first text is embedded the run says how many texts, from which tables, on how many actors;
    then progress with a rate, the last line at all of them."""
    import re
    _, report, out = local_run
    console = (Path(out.uri).parent / "console.log").read_text()
    n = report["embedding"]["embedded"]
    assert n > 0                                                    # a cold cache: this run embedded them
    assert re.search(r"texts to read: [\d,]+ from the seed pairs, [\d,]+ from the eval pairs", console), console
    assert re.search(rf"embedding {n:,} texts \([\d,]+ characters\) on \d+ actor\(s\)", console), console
    assert re.search(rf"  {n:,}/{n:,} texts embedded \([\d,]+ tokens/s\)\n", console), console
    assert f"large files: the run's in {out.uri}; embeddings cached in {Path(out.uri).parent / 'cache'}" in console
