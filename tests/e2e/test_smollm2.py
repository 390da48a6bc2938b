"""SmolLM2-135M-Instruct (the packaged GGUF) through the whole job on a small slice of real HH data."""
import numpy as np
import torch

from lens_ray.cli import run_main
from lens_ray.data.embed import resolve_model
from lens_ray.store.artifacts import read_pair_embeddings
from lens_ray.store.storage import Manifest, Storage


def test_gguf_dequantized_copy_is_read_again_and_embeds_identically(capfd, caplog):
    """The first load of a GGUF model keeps a plain safetensors copy per dtype; later loads read it, and the
    vectors are the same, bit for bit. It writes the session's own copy (LENS_RAY_MODEL_CACHE, set before Ray
    starts), so the whole-job test below, which runs after it, loads in seconds instead of de-quantizing again."""
    import os
    import shutil

    from lens_ray.data.embed import dequantized_copy, embed_ids, load_model, resolve_dtype, tokenize
    dtype = resolve_dtype("auto", "cpu")                           # the dtype the job below embeds in
    copy = dequantized_copy(resolve_model("smollm2"), dtype)
    shutil.rmtree(copy, ignore_errors=True)                        # a copy from an earlier test is not the first load
    prompts = [[{"role": "user", "content": "How do I bake bread?"}]] * 2
    responses = ["Mix flour, water and yeast.", "I can't help with that."]
    first = load_model("smollm2", dtype)
    assert os.path.exists(os.path.join(copy, "model.safetensors"))
    assert first.loaded_from.endswith(".gguf")                     # the first load de-quantized the GGUF file
    assert "with its weights packed" not in capfd.readouterr().err  # transformers' float32 advice: not for us
    again = load_model("smollm2", dtype)
    assert again.loaded_from == copy                               # the second read the plain copy
    a = embed_ids(first, tokenize(first, prompts, responses, 128).ids, "auto")
    b = embed_ids(again, tokenize(again, prompts, responses, 128).ids, "auto")
    assert np.array_equal(a, b) and a.shape == (2, 576)
    # the copy holds the tied embedding under its own name: a sequence classifier finds every weight but score
    from transformers import AutoModelForSequenceClassification
    _, info = AutoModelForSequenceClassification.from_pretrained(copy, output_loading_info=True)
    assert info["missing_keys"] and set(info["missing_keys"]) == {"score.weight"}, info
    # a copy that is not what was written is made again, never trusted: low bits flipped (embeddings a few
    # percent off), then the weights cut short
    from lens_ray.data.embed import copy_intact
    weights = os.path.join(copy, "model.safetensors")
    assert copy_intact(copy)
    for damage in ("flip", "truncate"):
        data = bytearray(open(weights, "rb").read())
        if damage == "flip":
            data[len(data) // 2: len(data) // 2 + 4096: 2] = bytes(b ^ 1 for b in data[len(data) // 2:
                                                                                  len(data) // 2 + 4096: 2])
        else:
            del data[len(data) // 3:]
        open(weights, "wb").write(bytes(data))
        assert not copy_intact(copy)
        rebuilt = load_model("smollm2", dtype)
        assert rebuilt.loaded_from.endswith(".gguf") and copy_intact(copy), damage      # converted again
        assert "does not match its digest" in caplog.text
        caplog.clear()
        c = embed_ids(rebuilt, tokenize(rebuilt, prompts, responses, 128).ids, "auto")
        assert np.array_equal(a, c), damage


def test_actors_starting_together_convert_the_gguf_once(tmp_path):
    """Two processes loading the GGUF at once, as a cold run's embedding actors do: one de-quantizes it and
    writes the copy, the other waits for that copy and reads it (without the lock both de-quantize)."""
    import json
    import os
    import subprocess
    import sys
    code = ("import json; from lens_ray.data.embed import load_model; "
            "print(json.dumps(load_model('smollm2', 'float32').loaded_from))")
    env = {**os.environ, "LENS_RAY_MODEL_CACHE": str(tmp_path / "models")}
    procs = [subprocess.Popen([sys.executable, "-c", code], env=env, stdout=subprocess.PIPE, text=True)
             for _ in range(2)]
    outs = [p.communicate(timeout=600)[0] for p in procs]
    assert [p.returncode for p in procs] == [0, 0]
    # ordered by kind, not by path: where the package lives (/check/..., /work/...) must not decide the order
    sources = sorted((json.loads(o.strip().splitlines()[-1]) for o in outs), key=lambda s: s.endswith(".gguf"))
    assert [s.endswith(".gguf") for s in sources] == [False, True], sources
    assert sources[0].startswith(str(tmp_path / "models"))              # the other read the plain copy


def test_smollm2_on_real_hh(ray_cluster, hh_path, tmp_path):
    report = run_main(["--data", str(hh_path), "--model", "smollm2", "--seed-pairs", "24", "--eval-pairs", "12",
                       "--seeds", "1", "--factors", "4", "--methods", "original,mean_diff,lens",
                       "--storage", str(tmp_path), "--name", "smol",
                       "--set", "embed.max_length=128", "--set", "vae.epochs=20", "--set", "reward.max_steps=50"])
    assert report["embedding_dim"] == 576 and report["model_id"].endswith(".gguf")
    assert report["embedding"]["embedded"] == 72 and report["embedding"]["truncated"] > 0
    assert {r["method"] for r in report["results"]} == {"original", "mean_diff", "lens"}
    man = Manifest.load(Storage(str(tmp_path / "smol")).child("embeddings"))
    assert man.meta["model"] == resolve_model("smollm2").model_id and man.meta["max_length"] == 128
    pos, neg = read_pair_embeddings(man, "seed")
    assert pos.shape == (24, 576) and np.isfinite(pos).all()
    # real hidden states: distinct per text, and chosen differs from rejected in every pair
    assert np.linalg.matrix_rank(pos) > 12
    assert (np.abs(pos - neg).max(1) > 1e-3).all()
    assert 0.0 < report["vae"]["seed-0"]["rel_recon_train"] < 1.5
    # its head exported as a Hugging Face model: the Auto class loads it, and scores as RewardModel does
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    from lens_ray.scoring.export import export, exported_logits
    from lens_ray.scoring.reward_model import RewardModel
    rm = RewardModel.from_run(str(tmp_path / "smol"), "lens-f4-s0")
    folder, form = export(rm, str(tmp_path / "hf"))
    dtype = next(rm.lm.model.parameters()).dtype            # as the run embedded: bf16 where the CPU has it
    model = AutoModelForSequenceClassification.from_pretrained(folder, trust_remote_code=True, dtype=dtype)
    prompts, responses = ["How do I bake bread?", "Say something rude."], ["Mix flour and water.", "No."]
    got = exported_logits(model.eval(), AutoTokenizer.from_pretrained(folder), prompts, responses).numpy()
    assert form == "lens" and np.allclose(got, rm.score(prompts, responses), atol=1e-3)
    # its mean_diff head (the last layer, last token) is SmolLM2's own LlamaForSequenceClassification, loaded
    # with no custom code. In fp32 it gives RewardModel.score's order over 16 texts, correlation >= 0.999; in bf16
    # (the run's dtype here) the classifier's bf16 logits round at 2^-8 of their size, and the agreement is that
    # of any bf16 reward model (docs/RESULTS.md measures it on the make-run pick)
    import dataclasses

    from lens_ray.data.embed import load_model
    md = RewardModel.from_run(str(tmp_path / "smol"), "mean_diff-f1-s0")
    md32 = RewardModel(load_model("smollm2", "float32"), md.head, dataclasses.replace(md.embed_cfg, dtype="float32"),
                       md.head_name, md.run_uri, md.reward_norm)
    texts = [("How do I bake bread?", r) for r in ("Mix flour and water.", "No.", "Bake it at 220C for 30 minutes.",
                                                  "I won't help.", "Flour, yeast, salt, water; knead, rise, bake.",
                                                  "Buy some.", "Ask a baker.", "Sourdough takes days.")]
    texts += [("Say something rude.", r) for r in ("No.", "You smell.", "I'd rather be kind.", "Go away.",
                                                   "Rudeness helps no one.", "Fine: meh.", "Whatever.", "Hi.")]
    p, r = [t[0] for t in texts], [t[1] for t in texts]
    for rm_, dtype_, corr in ((md32, torch.float32, 0.999), (md, dtype, 0.99)):
        folder, form = export(rm_, str(tmp_path / f"std-{dtype_}"))
        model = AutoModelForSequenceClassification.from_pretrained(folder, dtype=dtype_).eval()
        assert form == "standard" and type(model).__name__ == "LlamaForSequenceClassification"
        got = exported_logits(model, AutoTokenizer.from_pretrained(folder), p, r).numpy()
        want = rm_.score(p, r) + model.config.lens_reward["offset"]
        assert np.corrcoef(got, want)[0, 1] >= corr, (dtype_, got, want)
        if dtype_ == torch.float32:
            assert (np.argsort(got) == np.argsort(want)).all() and np.allclose(got, want, atol=1e-3)
