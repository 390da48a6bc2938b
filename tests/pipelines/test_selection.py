"""The main job's selection stage on the shared run (tiny real model, real HH data, local Ray): the candidates,
the pick by the rule, its figures recomputed from what the run stored, and the pick as the run's reward model."""
import numpy as np
import pytest
import torch

from lens_ray.core.heads import rewards
from lens_ray.core.metrics import head_metrics
from lens_ray.core.selection import Candidate, Scored, choose, fold_scores, fold_splits
from lens_ray.data.embed import layer_settings
from lens_ray.data.finished_run import FinishedRun
from lens_ray.scoring.reward_model import RewardModel
from lens_ray.store.artifacts import read_pair_embeddings
from lens_ray.store.storage import Manifest


def _tables(run: FinishedRun, layer: list[int]) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """seed and eval tables of the run at one of its candidate layers (several: concatenated)."""
    if len(layer) > 1:
        parts = [_tables(run, [x]) for x in layer]
        return tuple(np.concatenate([p[i] for p in parts], 1) for i in range(4))
    folder = "embeddings" if layer == [-1] else f"embeddings-layer{','.join(map(str, layer))}"
    man = Manifest.load(run.store.child(folder))
    assert man.meta == layer_settings(run.embeddings.meta, tuple(layer), "concat")
    return (*read_pair_embeddings(man, "seed"), *read_pair_embeddings(man, "eval"))


def _rewrite_head(path, doc: dict) -> None:
    """A head document changed on purpose (a run built at another layer), with its meta checksum made anew."""
    import json

    from lens_ray.store.artifacts import _canonical
    from lens_ray.store.storage import sha256
    path.write_text(json.dumps({**doc, "meta_sha256": sha256(_canonical(doc["meta"]))}))


def _one_layer_pick(copy) -> dict:
    """A copy of the run whose pick is its seed-0 mean_diff head (linear, one layer: the pick itself may be
    several layers or an ensemble): its document, to change and rewrite."""
    import json
    import shutil
    for ext in ("json", "safetensors"):
        shutil.copy(copy / "heads" / f"mean_diff-f1-s0.{ext}", copy / "heads" / f"selected.{ext}")
    doc = json.loads((copy / "heads" / "selected.json").read_text())
    doc["meta"]["inner"] = "final_norm"
    return doc


def _batch_scored(run, pairs, tmp_path) -> np.ndarray:
    """`lens-ray batch-score` on the run's default head: the chosen responses' rewards of these pairs."""
    import json

    import pyarrow.parquet as pq

    from lens_ray.cli import batch_score_main
    data = tmp_path / "pairs.jsonl"
    data.write_text("\n".join(json.dumps({"prompt": p.prompt, "chosen": p.chosen, "rejected": p.rejected})
                              for p in pairs))
    batch_score_main(["--run", str(run), "--data", str(data), "--out", str(tmp_path / "scored")])
    return pq.read_table(tmp_path / "scored" / "rewards.parquet").column("chosen_reward").to_numpy()


def test_every_candidate_is_measured_and_the_pick_follows_the_rule(local_run):
    _, report, out = local_run
    sel = report["selected"]
    names = [r["candidate"] for r in sel["candidates"]]
    stage_one = [f"layer {layer} {head}" for layer in ("-1", "-2", "-1,-2")
                 for head in ("mean_diff", "linear", "linear (pointwise)", "mlp", "mlp (pointwise)")]
    # the tiny model's 2 blocks: layers -1 and -2, and both concatenated; selection.losses: both; mlp_seeds 2
    assert names[:15] == stage_one
    assert names[15:21] == [f"layer {layer} mlp x2 seeds{loss}" for layer in ("-1", "-2", "-1,-2")
                            for loss in ("", " (pointwise)")]
    stage_two = names[21:27]
    assert len(stage_two) == 1 * 3 * 2                       # 1 finalist x 3 augmenting methods x factors 2, 4
    assert {n.split(" + ")[1] for n in stage_two} == {f"{m} x{f}" for m in ("direct_perturbation",
                                                                            "gaussian_sampling", "lens")
                                                      for f in (2, 4)}
    assert all(" mean_diff" not in n for n in stage_two)
    assert names[27:] == ["top-2 ensemble", "top-3 ensemble"]                 # selection.ensembles=2,3
    assert all(len(r["folds"]) == 3 for r in sel["candidates"] if r["status"] == "ok")
    assert choose([Scored.of(r) for r in sel["candidates"]]).name == sel["candidate"]
    assert sel["folds"] == 3 and sel["head"] == "heads/selected" and sel["bon_gold"] is None
    assert "optimistic" in sel["note"] and report["timings_s"]["select"] > 0


def test_the_picks_figures_are_what_its_folds_and_stored_head_give(local_run):
    _, report, out = local_run
    sel = report["selected"]
    run = FinishedRun.open(out.uri)
    inputs = run.inputs()
    seed_pos, seed_neg, eval_pos, eval_neg = _tables(run, sel["layer"])
    cand = Candidate.of(sel)
    splits = fold_splits(inputs.groups, 3, run.config.data.val_fraction, run.config.data.split_seed)
    folds = [fold_scores(run.config, [cand], seed_pos, seed_neg, inputs.groups, s, f)[cand.name]["accuracy"]
             for f, s in enumerate(splits)]
    assert folds == pytest.approx(next(r for r in sel["candidates"] if r["candidate"] == cand.name)["folds"])
    assert sel["kfold_accuracy"] == pytest.approx(np.mean(folds))
    head, name, meta = run.head()
    assert name == "selected" and meta["embed_layer"] == sel["layer"]
    emb = inputs.emb
    emb.eval_pos, emb.eval_neg = eval_pos, eval_neg
    assert head_metrics(head, emb)["accuracy"] == pytest.approx(sel["accuracy"])
    # refitted on each seed's split (the stored head is seed 0's), paired by seed with the per-method table
    assert [r["seed"] for r in sel["seeds"]] == [0, 1] and sel["seeds"][0]["accuracy"] == sel["accuracy"]
    for method, head_kind in (("original", "mlp"), ("mean_diff", None)):
        fixed = {r["seed"]: r["accuracy"] for r in report["results"] if r["method"] == method and r["factor"] == 1
                 and head_kind in (None, r["head_kind"])}
        gains = [r["accuracy"] - fixed[r["seed"]] for r in sel["seeds"]]
        assert sel["versus"][method]["accuracy"]["mean"] == pytest.approx(np.mean(gains))
        assert sel["versus"][method]["accuracy"]["n"] == 2 and sel["versus"][method]["bon_gold"] is None
    text = out.read_bytes("report.md").decode()
    assert "the pick refitted on each of 2 seeds' splits: held-out accuracy" in text
    assert "the pick's gain, paired by seed: accuracy " in text
    head_lever = sel["levers"]["head"]                        # both sides named: the pick may be neither of them
    assert head_lever["versus"] == f"layer {','.join(map(str, sel['layer']))} mean_diff"
    assert f"({head_lever['candidate']} vs {head_lever['versus']})" in text


def test_the_pick_is_the_runs_reward_model_at_its_own_layer(local_run, tiny_llama):
    argv, report, out = local_run
    sel = report["selected"]
    rm = RewardModel.from_run(out.uri)                       # no head named: the pick
    assert rm.head_name == "selected" and rm.embed_cfg.layer == tuple(sel["layer"])
    run = FinishedRun.open(out.uri)
    pairs = run.inputs().seed_pairs[:3]
    seed_pos = _tables(run, sel["layer"])[0]
    got = rm.score([p.prompt for p in pairs], [p.chosen for p in pairs], normalize=False)
    assert np.allclose(got, rewards(rm.head, torch.from_numpy(seed_pos[:3])), atol=1e-4)
    text = out.read_bytes("report.md").decode()
    assert text.index("reward model (heads/selected)") < text.index("every method, measured on the held-out")
    assert f"| **{sel['candidate']}** |" in text
    page = out.read_bytes("report.html").decode()
    assert page.index("<h2>The run's reward model") < page.index("<h2>Every method on the held-out data")
    assert f"<td>{sel['candidate']} (the pick)</td>" in page


def test_a_head_at_another_layer_is_scored_at_it_by_every_entry_point(local_run, hh_path, tmp_path):
    """A copy of the run whose pick is declared at layer -2: RewardModel, batch scoring and the Hugging Face
    export all embed at -2 (what the run stored there), not at the run's layer -1."""
    import shutil

    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    from lens_ray.scoring.export import export, exported_logits
    _, _, out = local_run
    copy = tmp_path / "run"
    shutil.copytree(out.path(), copy)
    doc = _one_layer_pick(copy)
    doc["meta"]["embed_layer"] = [-2]
    _rewrite_head(copy / "heads" / "selected.json", doc)
    run = FinishedRun.open(str(copy))
    rm = RewardModel.from_run(str(copy))
    assert rm.embed_cfg.layer == (-2,)
    pairs = run.inputs().seed_pairs[:3]
    want = rewards(rm.head, torch.from_numpy(_tables(run, [-2])[0][:3]))
    other = rewards(rm.head, torch.from_numpy(_tables(run, [-1])[0][:3]))
    assert not np.allclose(want, other, atol=1e-3)                        # the layers do differ
    want = rm.normalized(want)                                            # every entry point: standardized
    assert np.allclose(rm.score([p.prompt for p in pairs], [p.chosen for p in pairs]), want, atol=1e-4)
    assert np.allclose(_batch_scored(copy, pairs, tmp_path), want, atol=1e-4)
    folder, form = export(rm, str(tmp_path / "hf"))
    assert form == "standard"                                             # at layer -2: the 1-layer classifier
    model = AutoModelForSequenceClassification.from_pretrained(folder, dtype=torch.float32).eval()
    assert model.config.num_hidden_layers == 1                            # the tiny Llama cut after its first
    logits = exported_logits(model, AutoTokenizer.from_pretrained(folder), [p.prompt for p in pairs],
                             [p.chosen for p in pairs]).numpy() - model.config.lens_reward["offset"]
    assert np.allclose(logits, want, atol=1e-4)


def test_an_ensemble_on_several_layers_is_scored_at_them_by_every_entry_point(local_run, hh_path, tmp_path):
    """A copy of the run whose pick is the top-3 ensemble of its candidates (layers -1, -2 and both
    concatenated, as the select stage resolves and refits it): RewardModel, batch scoring and the Hugging Face
    export (the lens form, trust_remote_code) all embed both layers, concatenated, and give the ensemble's
    standardized reward; the stored head is refused at a dimension that is not the run's at those layers."""
    import json
    import shutil

    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    from lens_ray.core.heads import reward_scale
    from lens_ray.core.selection import refit, resolved
    from lens_ray.scoring.export import export, exported_logits
    from lens_ray.store.artifacts import save_model
    from lens_ray.store.storage import ChecksumError, Storage
    _, report, out = local_run
    copy = tmp_path / "run"
    shutil.copytree(out.path(), copy)
    run = FinishedRun.open(str(copy))
    rows = [Scored.of(r) for r in report["selected"]["candidates"] if r["head_kind"] != "ensemble"]
    top = Candidate.of(next(r for r in report["selected"]["candidates"] if r["candidate"] == "top-3 ensemble"))
    pick = resolved(top, rows)
    assert len(pick.members) == 3 and set(pick.layer) == {-1, -2}
    tables = {x: _tables(run, [x]) for x in (-1, -2)}
    seed_pos, seed_neg, eval_pos, eval_neg = (np.concatenate([tables[x][i] for x in pick.layer], 1) for i in range(4))
    inputs = run.inputs()
    sp = inputs.seed_pairs
    head = refit(run.config, pick, seed_pos, seed_neg, inputs.groups, np.arange(len(sp) - 10),
                 np.arange(len(sp) - 10, len(sp)), 0)
    norm = reward_scale(rewards(head, torch.from_numpy(np.concatenate([seed_pos, seed_neg]))))
    heads = Storage(str(copy / "heads"))
    meta = {"embed_layer": list(pick.layer), "layer_combine": "concat", "reward_norm": norm, "inner": "final_norm"}
    save_model(heads, "selected", head.state_dict(), head.config(), meta)
    rm = RewardModel.from_run(str(copy))
    assert rm.embed_cfg.layer == pick.layer and rm.embed_cfg.layer_combine == "concat"
    pairs = sp[:3]
    want = rm.normalized(rewards(rm.head, torch.from_numpy(seed_pos[:3])))
    assert np.allclose(rm.score([p.prompt for p in pairs], [p.chosen for p in pairs]), want, atol=1e-4)
    assert np.allclose(_batch_scored(copy, pairs, tmp_path), want, atol=1e-4)
    folder, form = export(rm, str(tmp_path / "hf"))
    assert form == "lens" and json.load(open(f"{folder}/config.json"))["lens_reward"]["head"]["kind"] == "ensemble"
    model = AutoModelForSequenceClassification.from_pretrained(folder, trust_remote_code=True,
                                                               dtype=torch.float32).eval()
    logits = exported_logits(model, AutoTokenizer.from_pretrained(folder), [p.prompt for p in pairs],
                             [p.chosen for p in pairs]).numpy()
    assert np.allclose(logits, want, atol=1e-4)
    meta["embed_layer"] = [pick.layer[0]]                                # one layer's width: not this head's
    save_model(heads, "selected", head.state_dict(), head.config(), meta)
    with pytest.raises(ChecksumError, match="at its layers have dimension"):
        FinishedRun.open(str(copy)).head()


def test_a_stored_pick_is_reused_across_synthesis_settings_unless_augmentation_is_a_candidate():
    from lens_ray.config import LensConfig
    from lens_ray.pipelines.selection import selection_key
    layers = [(-1,), (-2,)]

    def key(finalists: int, **changes) -> str:
        cfg = LensConfig()
        cfg.selection.finalists = finalists
        for section, (field, value) in changes.items():
            setattr(getattr(cfg, section), field, value)
        return selection_key(cfg, layers, "data")
    assert key(0, synth=("noise_var", 0.5)) == key(0) and key(0, vae=("beta", 0.5)) == key(0)
    assert key(1, synth=("noise_var", 0.5)) != key(1) != key(0)
    assert key(0, reward=("hidden_dim", 8)) != key(0) and selection_key(LensConfig(), layers[:1], "data") != key(0)


def test_a_head_fitted_on_raw_inner_states_is_refused(local_run, tmp_path):
    """A pick at an inner layer stored by a lens-ray that read inner layers raw (no `inner` mark in its meta):
    every reader refuses it in one line, rather than scoring it on the final-normed states it was not fitted on."""
    import shutil

    from lens_ray.store.storage import StorageError
    _, _, out = local_run
    copy = tmp_path / "run"
    shutil.copytree(out.path(), copy)
    doc = _one_layer_pick(copy)
    doc["meta"]["embed_layer"] = [-2]
    doc["meta"].pop("inner", None)
    _rewrite_head(copy / "heads" / "selected.json", doc)
    with pytest.raises(StorageError, match="raw states by an older lens-ray"):
        FinishedRun.open(str(copy)).head()
    doc["meta"]["embed_layer"] = [-1]                        # the last layer was always read after the norm
    _rewrite_head(copy / "heads" / "selected.json", doc)
    assert FinishedRun.open(str(copy)).head()[1] == "selected"


def test_a_selection_stopped_midway_keeps_the_units_it_finished(local_run, tmp_path, capsys):
    """Each (layer, fold) unit's result is committed as it ends: a re-run after a kill (here: the pick not yet
    stored, two units lost) runs only the lost units and picks the same, with the same k-fold figures."""
    import re
    import shutil
    from pathlib import Path

    from lens_ray.cli import run_main
    argv, report, out = local_run
    root = tmp_path / "runs"
    shutil.copytree(Path(out.path()).parent, root)                  # the run and its embedding cache
    units = sorted((root / "t" / "selection").glob("unit-*.json"))
    assert len(units) >= report["selected"]["folds"]
    for f in (root / "t" / "heads").glob("selected.*"):
        f.unlink()                                                  # killed before the pick was stored
    for u in units[:2]:
        u.unlink()
    capsys.readouterr()
    again = run_main([a if a != str(Path(out.path()).parent) else str(root) for a in argv])
    said = capsys.readouterr().out
    stages = re.findall(r"selection .*?\((\d+) tasks(?:; (\d+) kept from an earlier try)?\)", said)
    assert sum(int(t) for t, _ in stages) == 2 and sum(int(k or 0) for _, k in stages) == len(units) - 2, said
    for k in ("candidate", "kfold_accuracy", "kfold_se"):
        assert again["selected"][k] == report["selected"][k]


def test_the_report_says_how_to_use_the_pick_and_its_interval(local_run):
    """report.html names the three commands on this run, and the pick's held-out accuracy has its 95% interval on
    the held-out pairs (in the text and as a band in the accuracy plot, beside chance)."""
    import html

    from lens_ray.core.stats import wilson_interval
    from lens_ray.pipelines.report import selection_lines
    _, report, out = local_run
    page = html.unescape(out.read_bytes("report.html").decode())
    for command in ("score", "serve", "export"):
        assert f"lens-ray {command} --run {out.uri}" in page
    sel = report["selected"]
    low, high = wilson_interval(sel["accuracy"], report["eval_pairs"])
    n = report["eval_pairs"]
    said = f"held-out accuracy {sel['accuracy']:.3f} (95% interval {low:.3f}-{high:.3f} on {n} pairs)"
    assert said in selection_lines(report)[0] and said in page
    assert low <= sel["accuracy"] <= high


def test_a_candidate_set_that_would_run_past_its_budget_is_refused_with_the_estimate(local_run, tmp_path, capsys):
    """selection.max_minutes: one fit of each kind is timed on the data, the stage's fits estimated from them, and a
    stage past the budget is refused in one line that gives the estimate and what to change, before its fits run
    (no unit committed, no pick stored). The shared run's own stages said their plan."""
    import shutil
    from pathlib import Path

    from lens_ray.cli import main
    argv, report, out = local_run
    console = (Path(out.path()).parent / "console.log").read_text()
    assert "    planned: about " in console and "one fit of each kind timed" in console
    root = tmp_path / "runs"
    shutil.copytree(Path(out.path()).parent, root)
    for f in [*(root / "t" / "heads").glob("selected.*"), *(root / "t" / "selection").glob("unit-*.json")]:
        f.unlink()
    capsys.readouterr()
    with pytest.raises(SystemExit) as exit_info:
        main(["run", *[a if a != str(Path(out.path()).parent) else str(root) for a in argv],
              "--set", "selection.max_minutes=0.0001"])
    err = capsys.readouterr().err.strip()
    assert exit_info.value.code == 2 and len(err.splitlines()) == 1, err
    assert "selection: its fits would take about " in err and "past selection.max_minutes=0.0001" in err
    assert "one fit: layer -1 mean_diff " in err and "layer -1,-2 linear " in err
    assert not list((root / "t" / "selection").glob("unit-*.json"))
    assert not (root / "t" / "heads" / "selected.json").exists()
