"""The Hugging Face export: loaded through the Auto class with trust_remote_code, its logits equal
RewardModel.score, offline, for an MLP head and a linear head of the tiny Llama run."""
import numpy as np
import pytest
import torch

from lens_ray.scoring.export import export, exported_logits
from lens_ray.scoring.reward_model import RewardModel

PROMPTS = ["How do I bake bread?", "Tell me a joke about cats. " * 30, "What is 2+2?"]
RESPONSES = ["Mix flour, water and yeast, then bake.", "I can't help with that.", "4"]


@pytest.mark.parametrize("head", ["lens-f4-s0", "mean_diff-f1-s1"])
def test_export_loads_with_the_auto_class_and_scores_alike(local_run, tmp_path, head):
    from transformers import AutoModelForSequenceClassification, AutoTokenizer
    _, _, run = local_run
    rm = RewardModel.from_run(run.uri, head)
    folder = export(rm, str(tmp_path / "hf"))
    model = AutoModelForSequenceClassification.from_pretrained(folder, trust_remote_code=True,
                                                               dtype=torch.float32).eval()
    tok = AutoTokenizer.from_pretrained(folder)
    got = exported_logits(model, tok, PROMPTS, RESPONSES).numpy()
    want = rm.score(PROMPTS, RESPONSES)
    assert np.allclose(got, want, atol=1e-4), (got, want)                 # long prompt: left-truncated alike
    assert model.config.lens_reward["head_name"] == head and type(model).__name__ == "LensRewardModel"


def test_export_command_writes_a_folder_that_loads(local_run, tmp_path, capsys):
    """`lens-ray export` end to end: the run's default head (none named), then an earlier export replaced."""
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    from lens_ray.cli import main
    from lens_ray.data.finished_run import FinishedRun
    _, _, run = local_run
    out = tmp_path / "exported"
    main(["export", "--run", run.uri, "--out", str(out)])
    assert "from_pretrained(" in capsys.readouterr().out
    default = FinishedRun.open(run.uri).default_head()
    model = AutoModelForSequenceClassification.from_pretrained(str(out), trust_remote_code=True,
                                                               dtype=torch.float32).eval()
    assert model.config.lens_reward["head_name"] == default
    got = exported_logits(model, AutoTokenizer.from_pretrained(str(out)), PROMPTS, RESPONSES).numpy()
    assert np.allclose(got, RewardModel.from_run(run.uri).score(PROMPTS, RESPONSES), atol=1e-4)
    main(["export", "--run", run.uri, "--head", "original-f1-s0", "--out", str(out)])   # an export: replaced
    again = AutoModelForSequenceClassification.from_pretrained(str(out), trust_remote_code=True)
    assert again.config.lens_reward["head_name"] == "original-f1-s0"
