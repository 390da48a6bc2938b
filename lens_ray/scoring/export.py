"""`lens-ray export`: a run's head and its LM as a Hugging Face folder that
`AutoModelForSequenceClassification.from_pretrained(folder, trust_remote_code=True)` loads. No Ray.

The folder holds config.json (the base LM's config with `auto_map` and a `lens_reward` section: pooling,
layers, head, max length), modeling_lens_reward.py (hf_modeling.py), the tokenizer with its chat template
(left truncation at the run's max length), and model.safetensors: the base LM's weights (a GGUF source is
written dequantized, in the run's compute dtype) and the head's, in fp32.
"""
from __future__ import annotations

import copy
import os
import shutil

import torch
from safetensors.torch import save_file

from lens_ray.config import ConfigError
from lens_ray.data.embed import plain_config, resolve_pooling
from lens_ray.scoring.protocols import messages
from lens_ray.scoring.reward_model import RewardModel

MODELING = "modeling_lens_reward.py"


def check_target(out_dir: str, overwrite: bool = False) -> None:
    """The export folder may be new, empty or an earlier export; anything else only with overwrite."""
    if os.path.exists(out_dir) and not os.path.isdir(out_dir):
        raise ConfigError(f"--out {out_dir}: a file, not a folder")
    if os.path.isdir(out_dir) and os.listdir(out_dir) and not overwrite \
            and not os.path.exists(os.path.join(out_dir, MODELING)):
        raise ConfigError(f"--out {out_dir}: a folder holding other files (not a lens-ray export); give an empty "
                          "folder, or --overwrite to write into it")


def export(rm: RewardModel, out_dir: str) -> str:
    """Write the folder; returns its path. The base weights go in the dtype the run embedded with."""
    os.makedirs(out_dir, exist_ok=True)
    lm, e = rm.lm, rm.embed_cfg
    config = plain_config(lm.model.config)
    config.architectures = ["LensRewardModel"]
    config.auto_map = {"AutoModelForSequenceClassification": f"{MODELING[:-3]}.LensRewardModel"}
    config.num_labels = 1
    config.lens_reward = {"pooling": resolve_pooling(e.pooling, lm.kind), "layers": list(e.layer),
                          "layer_combine": e.layer_combine, "head": rm.head.config(),
                          "max_length": rm.max_length, "causal": lm.kind == "causal",
                          "add_special_tokens": lm.kind != "causal", "run": rm.run_uri, "head_name": rm.head_name,
                          "reward_norm": rm.reward_norm}
    dtype = next(lm.model.parameters()).dtype
    config.dtype = str(dtype).removeprefix("torch.")
    config.save_pretrained(out_dir)
    weights = {f"model.{k}": v.detach().to(dtype).contiguous() for k, v in lm.model.state_dict().items()}
    weights.update({f"head.{k}": v.detach().float().contiguous() for k, v in rm.head.state_dict().items()})
    save_file(weights, os.path.join(out_dir, "model.safetensors"), metadata={"format": "pt"})
    tok = copy.deepcopy(lm.tokenizer)
    tok.truncation_side, tok.model_max_length = "left", rm.max_length
    tok.save_pretrained(out_dir)
    shutil.copyfile(os.path.join(os.path.dirname(__file__), "hf_modeling.py"), os.path.join(out_dir, MODELING))
    return out_dir


def exported_logits(model: torch.nn.Module, tokenizer, prompts: list, responses: list[str]) -> torch.Tensor:
    """Rewards from an exported model, tokenized as lens-ray tokenizes (chat template, left truncation)."""
    spec = model.config.lens_reward
    texts = []
    for p, r in zip(prompts, responses):
        msgs = messages(p) + [{"role": "assistant", "content": r}]
        if spec["causal"] and getattr(tokenizer, "chat_template", None):
            texts.append(tokenizer.apply_chat_template(msgs, tokenize=False))
        else:
            texts.append("\n".join(f"{m['role']}: {m['content']}" for m in msgs))
    tokenizer.truncation_side = "left"                 # as lens-ray truncates: the prompt loses its start
    tokenizer.padding_side = "right"                   # and pads
    enc = tokenizer(texts, add_special_tokens=spec["add_special_tokens"], truncation=True,
                    max_length=spec["max_length"], padding=True, return_tensors="pt")
    with torch.no_grad():
        return model(**enc).logits[:, 0]
