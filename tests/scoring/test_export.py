"""The Hugging Face export as its consumers load it: a linear head on the last layer is the LM's own
LlamaForSequenceClassification, loaded without custom code (TRL's, RewardBench's, vLLM's load), equal to
RewardModel.score up to its stated offset under right and left padding; any other head is model type
lens_reward, which fails without trust_remote_code (never a random head) and equals RewardModel.score with it.
Offline, on the tiny Llama run and on heads built here."""
import numpy as np
import pytest
import torch

from lens_ray.config import EmbedConfig
from lens_ray.core.heads import LinearScorer, RewardHead
from lens_ray.scoring.export import check_target, export, exported_logits
from lens_ray.scoring.reward_model import RewardModel

PROMPTS = ["How do I bake bread?", "Tell me a joke about cats. " * 30, "What is 2+2?"]
RESPONSES = ["Mix flour, water and yeast, then bake.", "I can't help with that.", "4"]
# 16 texts: the same prompts with other responses, short and long, so order and correlation mean something
MANY_P = [p for p in PROMPTS for _ in range(6)][:16]
MANY_R = [f"{r} {'and more ' * i}".strip() for i, r in enumerate(RESPONSES * 6)][:16]


def _load(folder, trust: bool = False):
    from transformers import AutoModelForSequenceClassification, AutoTokenizer
    model = AutoModelForSequenceClassification.from_pretrained(folder, trust_remote_code=trust,
                                                               dtype=torch.float32).eval()
    return model, AutoTokenizer.from_pretrained(folder)


def _built(tiny_llama, head, layer=(-1,), scale=(0.3, 2.0)) -> RewardModel:
    from lens_ray.data.embed import load_model
    head.eval()
    cfg = EmbedConfig(model=tiny_llama, layer=layer, max_length=64, dtype="float32")
    return RewardModel(load_model(tiny_llama, "float32"), head, cfg, "built", "run",
                       {"mean": scale[0], "std": scale[1]})


def test_a_last_layer_linear_head_is_a_standard_classifier(tiny_llama, tmp_path):
    torch.manual_seed(0)
    rm = _built(tiny_llama, LinearScorer(torch.randn(32)))
    folder, form = export(rm, str(tmp_path / "hf"))
    model, tok = _load(folder)                                     # no trust_remote_code: the standard class
    assert form == "standard" and type(model).__name__ == "LlamaForSequenceClassification"
    want = rm.score(MANY_P, MANY_R)
    offset = model.config.lens_reward["offset"]
    assert offset == pytest.approx(0.3 / 2.0)
    for side in ("right", "left"):                                 # the classifier finds the last non-pad token
        got = exported_logits(model, tok, MANY_P, MANY_R, side).numpy() - offset
        assert np.corrcoef(got, want)[0, 1] >= 0.999 and (np.argsort(got) == np.argsort(want)).all()
        assert np.allclose(got, want, atol=1e-4), (side, got, want)
    # as TRL calls it (conversational data): the tokenizer's chat template, right padding, no special tokens
    from lens_ray.scoring.protocols import messages
    texts = [tok.apply_chat_template(messages(p) + [{"role": "assistant", "content": r}], tokenize=False)
             for p, r in zip(PROMPTS, RESPONSES)]
    enc = tok(texts, padding=True, padding_side="right", add_special_tokens=False, return_tensors="pt",
              truncation=True)
    with torch.no_grad():
        trl = model(**enc).logits[:, 0].numpy() - offset
    assert np.allclose(trl, rm.score(PROMPTS, RESPONSES), atol=1e-4)
    # as RewardBench scores a sequence classifier: a text-classification pipeline, raw logits, padded batches
    from transformers import pipeline
    pipe = pipeline("text-classification", model=model, tokenizer=tok, device="cpu")
    bench = pipe(texts, batch_size=3, truncation=True, padding=True, max_length=64, function_to_apply="none",
                 return_token_type_ids=False)
    assert np.allclose([b["score"] - offset for b in bench], rm.score(PROMPTS, RESPONSES), atol=1e-4)
    # a raw export: the head's own reward, no offset
    raw, _ = export(rm, str(tmp_path / "raw"), normalize=False)
    model, tok = _load(raw)
    assert model.config.lens_reward["offset"] == 0.0
    assert np.allclose(exported_logits(model, tok, PROMPTS, RESPONSES).numpy(),
                       rm.score(PROMPTS, RESPONSES, normalize=False), atol=1e-4)


def test_an_inner_layer_linear_head_is_the_classifier_of_the_cut_lm(tiny_llama, tmp_path):
    """Layer -2 of the 2-layer tiny Llama, read through the final norm: a 1-layer LlamaForSequenceClassification."""
    torch.manual_seed(0)
    rm = _built(tiny_llama, LinearScorer(torch.randn(32)), layer=(-2,))
    folder, form = export(rm, str(tmp_path / "hf"))
    model, tok = _load(folder)
    assert form == "standard" and model.config.num_hidden_layers == 1 and len(model.model.layers) == 1
    got = exported_logits(model, tok, MANY_P, MANY_R).numpy() - model.config.lens_reward["offset"]
    assert np.allclose(got, rm.score(MANY_P, MANY_R), atol=1e-4)
    top = _built(tiny_llama, LinearScorer(rm.head.w), layer=(-1,))    # the same head on the last layer differs
    assert not np.allclose(top.score(MANY_P, MANY_R), rm.score(MANY_P, MANY_R), atol=1e-2)


def test_inner_layers_are_read_through_the_final_norm(tiny_llama):
    """What lens-ray embeds at layer -2 is the final norm of the first layer's output, at the last token."""
    from transformers import AutoModel

    from lens_ray.data.embed import embed_layers, load_model
    lm = load_model(tiny_llama, "float32")
    ids = [[5, 6, 7, 8, 9], [10, 11, 12]]
    got = embed_layers(lm, ids, "auto", layers=(-2, -1))
    base = AutoModel.from_pretrained(tiny_llama, dtype=torch.float32).eval()
    with torch.no_grad():
        for row, seq in enumerate(ids):
            out = base(input_ids=torch.tensor([seq]), output_hidden_states=True)
            assert np.allclose(got[row, 0], base.norm(out.hidden_states[1])[0, -1].numpy(), atol=1e-5)
            assert np.allclose(got[row, 1], out.last_hidden_state[0, -1].numpy(), atol=1e-5)


@pytest.mark.parametrize("case", ["mlp head", "two layers"])
def test_other_heads_refuse_a_load_without_custom_code(tiny_llama, tmp_path, case):
    torch.manual_seed(0)
    rm = _built(tiny_llama, RewardHead(32, 8) if case == "mlp head" else LinearScorer(torch.randn(64)),
                layer=(-1,) if case == "mlp head" else (-2, -1))
    folder, form = export(rm, str(tmp_path / "hf"))
    assert form == "lens"
    with pytest.raises(ValueError, match="trust_remote_code=True"):
        _load(folder)
    model, tok = _load(folder, trust=True)
    assert type(model).__name__ == "LensRewardModel"
    got, want = exported_logits(model, tok, PROMPTS, RESPONSES).numpy(), rm.score(PROMPTS, RESPONSES)
    assert np.allclose(got, want, atol=1e-4), (got, want)
    assert abs(np.mean(rm.score(PROMPTS, RESPONSES, normalize=False)) - np.mean(want)) > 1e-3   # scaled, visibly


def test_an_export_replaces_an_earlier_one_of_the_other_form(tiny_llama, tmp_path):
    torch.manual_seed(0)
    out = str(tmp_path / "hf")
    export(_built(tiny_llama, RewardHead(32, 8)), out)
    check_target(out)                                              # an earlier export: may be replaced
    _, form = export(_built(tiny_llama, LinearScorer(torch.randn(32))), out)
    model, _ = _load(out)
    assert form == "standard" and type(model).__name__ == "LlamaForSequenceClassification"
    (tmp_path / "other").mkdir()
    (tmp_path / "other" / "notes.txt").write_text("mine")
    from lens_ray.config import ConfigError
    with pytest.raises(ConfigError, match="not a lens-ray export"):
        check_target(str(tmp_path / "other"))
    check_target(str(tmp_path / "other"), overwrite=True)                  # --overwrite: written into it


@pytest.mark.parametrize("head", ["lens-f4-s0", "mean_diff-f1-s1"])
def test_export_of_a_run_loads_and_scores_alike(local_run, tmp_path, head):
    _, _, run = local_run
    rm = RewardModel.from_run(run.uri, head)
    folder, form = export(rm, str(tmp_path / "hf"))
    assert form == ("lens" if head.startswith("lens") else "standard")
    model, tok = _load(folder, trust=form == "lens")
    got = exported_logits(model, tok, PROMPTS, RESPONSES).numpy() - model.config.lens_reward["offset"]
    want = rm.score(PROMPTS, RESPONSES)
    assert np.allclose(got, want, atol=1e-4), (got, want)                 # long prompt: left-truncated alike
    assert model.config.lens_reward["head_name"] == head


def test_export_command_writes_a_folder_that_loads(local_run, tmp_path, capsys):
    """`lens-ray export` end to end: the run's default head (none named), then an earlier export replaced by
    a raw one (--normalize false)."""
    from lens_ray.cli import main
    from lens_ray.data.finished_run import FinishedRun
    _, _, run = local_run
    out = tmp_path / "exported"
    main(["export", "--run", run.uri, "--out", str(out)])
    printed = capsys.readouterr().out
    assert "from_pretrained(" in printed
    default = FinishedRun.open(run.uri).default_head()
    model, tok = _load(str(out), trust=True)
    assert model.config.lens_reward["head_name"] == default
    assert ("trust_remote_code=True" in printed) == (model.config.lens_reward["form"] == "lens")
    got = exported_logits(model, tok, PROMPTS, RESPONSES).numpy() - model.config.lens_reward["offset"]
    assert np.allclose(got, RewardModel.from_run(run.uri).score(PROMPTS, RESPONSES), atol=1e-4)
    (out / "notes.txt").write_text("a file of the user's beside the export")
    main(["export", "--run", run.uri, "--head", "original-f1-s0", "--out", str(out), "--normalize", "false"])
    again, tok = _load(str(out), trust=True)
    assert again.config.lens_reward["head_name"] == "original-f1-s0" and again.config.lens_reward["scale"] is None
    raw = RewardModel.from_run(run.uri, "original-f1-s0").score(PROMPTS, RESPONSES, normalize=False)
    assert np.allclose(exported_logits(again, tok, PROMPTS, RESPONSES).numpy(), raw, atol=1e-4)
    other = tmp_path / "mine"
    other.mkdir()
    (other / "notes.txt").write_text("mine")
    with pytest.raises(SystemExit):
        main(["export", "--run", run.uri, "--out", str(other)])            # refused: not an export
    main(["export", "--run", run.uri, "--out", str(other), "--overwrite"])
    assert (other / "notes.txt").exists() and (other / "config.json").exists()
