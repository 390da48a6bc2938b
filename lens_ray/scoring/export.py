"""`lens-ray export`: a run's head and its LM as a Hugging Face folder that
`AutoModelForSequenceClassification.from_pretrained(folder)` loads as its consumers load it. No Ray.

Two forms, chosen by the head (`standard_class`):
- **standard**: a linear or mean_diff head on one layer of a causal LM, pooled at the last non-pad token, is
  exactly the LM's own `*ForSequenceClassification` (Llama, Qwen2, Mistral, ...), cut after that layer, with
  `score.weight` = the head: that class applies the LM's final norm and reads the last non-pad token, which is
  the embedding lens-ray takes (the last layer's normed `last_hidden_state`; an inner layer's state read
  through the same norm, `data/embed.py: layer_states`). TRL, RewardBench, vLLM (`--runner pooling`), SGLang, TGI,
  OpenRLHF and verl load it with no custom code. Its classifier has no bias, so the standardized reward's
  centre cannot be folded in: its logits are `RewardModel.score`'s standardized reward plus
  `lens_reward["offset"]` (mean / std; 0 for a raw export), the same order and scale.
- **lens**: any other head (MLP, mean pooling, several layers, encoders) as model type `lens_reward`
  with modeling_lens_reward.py (hf_modeling.py): a load without `trust_remote_code=True` fails with
  transformers' error asking for it, never a randomly initialised head. Its logits equal `RewardModel.score`.

Both hold config.json (with a `lens_reward` section: form, pooling, layers, head, max length, reward scale), the
tokenizer with its chat template (left truncation at the run's max length), and model.safetensors with every
weight a loader needs (a tied embedding under its own name), the LM in the run's compute dtype.
"""
from __future__ import annotations

import copy
import json
import os
import shutil

import torch
from safetensors.torch import save_file

from lens_ray.config import ConfigError, EmbedConfig, ServeConfig
from lens_ray.data.embed import final_norm, format_text, plain_config, resolve_pooling
from lens_ray.scoring.protocols import messages
from lens_ray.scoring.reward_model import RewardModel

MODELING = "modeling_lens_reward.py"
MARK = "lens_reward"                       # the config section every lens-ray export carries


def check_target(out_dir: str, overwrite: bool = False) -> None:
    """The export folder may be new, empty or an earlier export; anything else only with overwrite."""
    if os.path.exists(out_dir) and not os.path.isdir(out_dir):
        raise ConfigError(f"--out {out_dir}: a file, not a folder")
    if os.path.isdir(out_dir) and os.listdir(out_dir) and not overwrite and not _is_export(out_dir):
        raise ConfigError(f"--out {out_dir}: a folder holding other files (not a lens-ray export); give an empty "
                          "folder, or --overwrite to write into it")


def _is_export(out_dir: str) -> bool:
    try:
        with open(os.path.join(out_dir, "config.json"), encoding="utf-8") as fh:
            return MARK in json.load(fh)
    except (OSError, ValueError):
        return os.path.exists(os.path.join(out_dir, MODELING))


def standard_class(rm: RewardModel) -> str | None:
    """The transformers class the head is exactly, or None: a linear head (fitted or mean_diff) on one layer of
    a causal LM, last-token pooled, whose model type has a sequence classifier. An inner layer's state is read
    through the final norm (`layer_states`), so the head is that classifier on the LM cut after that layer."""
    from transformers.models.auto.modeling_auto import MODEL_FOR_SEQUENCE_CLASSIFICATION_MAPPING_NAMES as CLASSES
    e, lm = rm.embed_cfg, rm.lm
    if lm.kind != "causal" or len(e.layer) != 1 or resolve_pooling(e.pooling, lm.kind) != "last":
        return None
    if rm.head.config()["kind"] != "linear" or _kept_layers(rm) is None:
        return None
    return CLASSES.get(lm.model.config.model_type)


def _kept_layers(rm: RewardModel) -> int | None:
    """How many decoder layers the classifier keeps: hidden state k (negative) is the output of layer n + k,
    0-based, of n; None where that cannot be a standard model (no final norm, or no layer left)."""
    n = getattr(rm.lm.model.config, "num_hidden_layers", None)
    layer = rm.embed_cfg.layer[0]
    if layer == -1:
        return n
    if n is None or final_norm(rm.lm.model) is None or not 1 <= n + 1 + layer < n:
        return None
    return n + 1 + layer


def export(rm: RewardModel, out_dir: str, normalize: bool = ServeConfig.normalize) -> tuple[str, str]:
    """Write the folder; returns (its path, its form: "standard" or "lens"). normalize: the logits are the
    standardized reward (the standard form: plus its offset); else the head's raw reward."""
    cls = standard_class(rm)
    scale = rm.scale if normalize else None
    os.makedirs(out_dir, exist_ok=True)
    for stale in (MODELING, "model.safetensors"):          # an earlier export of the other form
        if os.path.exists(os.path.join(out_dir, stale)):
            os.remove(os.path.join(out_dir, stale))
    spec = _spec(rm, "standard" if cls else "lens", scale)
    dtype = next(rm.lm.model.parameters()).dtype
    tok = copy.deepcopy(rm.lm.tokenizer)
    tok.truncation_side, tok.model_max_length = "left", rm.max_length
    if cls:
        config = _standard(rm, cls, spec, scale, tok, dtype, out_dir)
    else:
        config = _lens(rm, spec, scale, dtype, out_dir)
    config.dtype = str(dtype).removeprefix("torch.")
    config.save_pretrained(out_dir)
    tok.save_pretrained(out_dir)
    return out_dir, spec["form"]


def _spec(rm: RewardModel, form: str, scale: dict | None) -> dict:
    lm, e = rm.lm, rm.embed_cfg
    return {"form": form, "pooling": resolve_pooling(e.pooling, lm.kind), "layers": list(e.layer),
            "layer_combine": e.layer_combine, "head": rm.head.config(), "max_length": rm.max_length,
            "causal": lm.kind == "causal", "add_special_tokens": lm.kind != "causal", "run": rm.run_uri,
            "head_name": rm.head_name, "reward_norm": rm.reward_norm, "scale": scale,
            "offset": scale["mean"] / max(scale["std"], 1e-12) if scale and form == "standard" else 0.0}


def _standard(rm: RewardModel, cls: str, spec: dict, scale: dict | None, tok, dtype, out_dir: str):
    """The LM's own sequence classifier: its weights under `model.`, the head (divided by std) as `score`."""
    config = plain_config(rm.lm.model.config)
    config.architectures, config.num_labels = [cls], 1
    config.pad_token_id = _pad_id(rm, tok)
    setattr(config, MARK, spec)
    n, keep = config.num_hidden_layers, _kept_layers(rm)
    if keep < n:                                      # an inner layer: the LM cut after it
        for attr, value in list(vars(config).items()):
            if isinstance(value, list) and len(value) == n:       # per-layer settings (layer_types, ...)
                setattr(config, attr, value[:keep])
        config.num_hidden_layers = keep
    w = rm.head.w.detach().double() / (max(scale["std"], 1e-12) if scale else 1.0)
    weights = {f"model.{k}": v.detach().to(dtype).contiguous() for k, v in rm.lm.model.state_dict().items()
               if not (k.startswith("layers.") and int(k.split(".")[1]) >= keep)}
    # the score layer in the LM's dtype, as the class builds it: its product is what every loader computes
    weights["score.weight"] = w.to(dtype)[None, :].contiguous()
    save_file(weights, os.path.join(out_dir, "model.safetensors"), metadata={"format": "pt"})
    return config


def _pad_id(rm: RewardModel, tok) -> int:
    """A pad id the classifier can tell from the text: it pools at the rightmost token that is not the pad id,
    so the pad must never be the last token lens-ray's texts end with (the chat template's last token)."""
    text = format_text(tok, True, messages("Hi"), "Hello")
    ids = tok(text, add_special_tokens=False)["input_ids"]
    candidates = [tok.pad_token_id, tok.unk_token_id, tok.eos_token_id, tok.bos_token_id, *tok.all_special_ids]
    for pad in candidates:
        if pad is not None and pad != ids[-1]:
            tok.pad_token = tok.convert_ids_to_tokens(pad)
            return int(pad)
    raise ConfigError("export: no special token can serve as the classifier's pad id (each ends the chat template)")


def _lens(rm: RewardModel, spec: dict, scale: dict | None, dtype, out_dir: str):
    """Model type lens_reward with its modeling file: the base LM's config nested, the head in fp32."""
    from lens_ray.scoring.hf_modeling import LensRewardConfig
    base = plain_config(rm.lm.model.config).to_dict()
    config = LensRewardConfig(base_config=base, lens_reward=spec, num_labels=1,
                              pad_token_id=rm.lm.tokenizer.pad_token_id)
    config.architectures = ["LensRewardModel"]
    config.auto_map = {"AutoConfig": f"{MODELING[:-3]}.LensRewardConfig",
                       "AutoModelForSequenceClassification": f"{MODELING[:-3]}.LensRewardModel"}
    weights = {f"model.{k}": v.detach().to(dtype).contiguous() for k, v in rm.lm.model.state_dict().items()}
    weights.update({f"head.{k}": v.detach().float().contiguous() for k, v in rm.head.state_dict().items()})
    save_file(weights, os.path.join(out_dir, "model.safetensors"), metadata={"format": "pt"})
    shutil.copyfile(os.path.join(os.path.dirname(__file__), "hf_modeling.py"), os.path.join(out_dir, MODELING))
    return config


def exported_logits(model: torch.nn.Module, tokenizer, prompts: list, responses: list[str],
                    padding_side: str = EmbedConfig.padding_side) -> torch.Tensor:
    """Rewards from an exported model, tokenized as lens-ray tokenizes (chat template, left truncation)."""
    spec = getattr(model.config, MARK)
    texts = [format_text(tokenizer, spec["causal"], messages(p), r) for p, r in zip(prompts, responses)]
    tokenizer.truncation_side = "left"                 # as lens-ray truncates: the prompt loses its start
    tokenizer.padding_side = padding_side
    enc = tokenizer(texts, add_special_tokens=spec["add_special_tokens"], truncation=True,
                    max_length=spec["max_length"], padding=True, return_tensors="pt")
    with torch.no_grad():
        return model(**enc).logits[:, 0].float()
