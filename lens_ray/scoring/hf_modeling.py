"""modeling_lens_reward.py of an exported lens-ray reward model (`lens-ray export`) whose head has no standard
architecture (an MLP head, mean pooling, several layers, an encoder): copied as-is into the export folder,
so it imports only torch and transformers.

The folder's model type is `lens_reward`, which transformers does not know: a load without
`trust_remote_code=True` fails with transformers' own error asking for it, never a random head.
`AutoModelForSequenceClassification.from_pretrained(folder, trust_remote_code=True)` builds LensRewardModel: the
base LM (`config.base_config`), the pooling lens-ray embedded with (last non-pad token or mean, chosen layers)
and the trained head. logits[:, 0] is the reward, equal to `RewardModel.score` for the same tokens (standardized
unless exported raw): the chat-templated (prompt, response) tokenized without special tokens (causal LMs),
left-truncated to lens_reward["max_length"] tokens.
"""
from __future__ import annotations

import torch
from torch import nn
from transformers import AutoConfig, AutoModel, PretrainedConfig, PreTrainedModel
from transformers.modeling_outputs import SequenceClassifierOutput


class LensRewardConfig(PretrainedConfig):
    """The base LM's config (a dict with its model_type) and lens-ray's `lens_reward` section."""
    model_type = "lens_reward"

    def __init__(self, base_config: dict | None = None, lens_reward: dict | None = None, **kwargs):
        self.base_config = base_config or {}
        self.lens_reward = lens_reward or {}
        super().__init__(**kwargs)


def _mlp(dims: list[int], dropout: float) -> nn.Sequential:
    layers: list[nn.Module] = []
    for i, (a, b) in enumerate(zip(dims[:-1], dims[1:])):
        layers.append(nn.Linear(a, b))
        if i < len(dims) - 2:
            layers.append(nn.GELU())
            if dropout > 0:
                layers.append(nn.Dropout(dropout))
    return nn.Sequential(*layers)


class _Standardizer(nn.Module):
    def __init__(self, dim: int):
        super().__init__()
        self.register_buffer("mean", torch.zeros(dim))
        self.register_buffer("std", torch.ones(dim))


class _MLPHead(nn.Module):
    def __init__(self, cfg: dict):
        super().__init__()
        self.norm = _Standardizer(cfg["dim"])
        self.net = _mlp([cfg["dim"]] + [cfg["hidden_dim"]] * cfg["depth"] + [1], cfg["dropout"])

    def forward(self, e: torch.Tensor) -> torch.Tensor:
        return self.net((e - self.norm.mean) / self.norm.std).squeeze(-1)


class _LinearHead(nn.Module):
    def __init__(self, cfg: dict):
        super().__init__()
        self.register_buffer("w", torch.zeros(cfg["dim"]))

    def forward(self, e: torch.Tensor) -> torch.Tensor:
        return e @ self.w


class _EnsembleHead(nn.Module):
    """The members' rewards, each standardized by its own training-reward mean and std, averaged; member k reads
    the embedding's layers cfg["layers"][k] (blocks of cfg["width"] dims)."""

    def __init__(self, cfg: dict):
        super().__init__()
        self.members = nn.ModuleList([_head(m) for m in cfg["members"]])
        self.layers, self.width = cfg["layers"], cfg["width"]
        self.register_buffer("mean", torch.zeros(len(self.members)))
        self.register_buffer("std", torch.ones(len(self.members)))

    def forward(self, e: torch.Tensor) -> torch.Tensor:
        x = e.unflatten(-1, (-1, self.width))
        r = torch.stack([m(x[..., idx, :].flatten(-2)) for m, idx in zip(self.members, self.layers)], -1)
        return ((r - self.mean) / self.std).mean(-1)


HEADS = {"linear": _LinearHead, "mlp": _MLPHead, "ensemble": _EnsembleHead}     # kind -> class, as lens-ray's


def _head(cfg: dict) -> nn.Module:
    if cfg.get("kind") not in HEADS:
        raise ValueError(f"lens_reward head: unknown kind {cfg.get('kind')!r} (known: {sorted(HEADS)})")
    return HEADS[cfg["kind"]](cfg)


class LensRewardModel(PreTrainedModel):
    config_class = LensRewardConfig
    base_model_prefix = "model"
    _keep_in_fp32_modules = ["head"]
    # the base LM picks its attention kernel as lens-ray did (SDPA): in bf16, eager attention moves rewards by ~1%
    _supports_sdpa = True
    _supports_flash_attn = True
    _supports_attention_backend = True

    def __init__(self, config: PretrainedConfig):
        super().__init__(config)
        spec = config.lens_reward
        base = AutoConfig.for_model(**config.base_config)
        self.model = AutoModel.from_config(base)
        self.head = _head(spec["head"])
        self.post_init()

    @classmethod
    def from_pretrained(cls, path, *args, **kwargs):
        """As PreTrainedModel's, then the head's tensors again in fp32: transformers casts every module to the
        requested dtype, and a head (its standardizer above all) rounded to bf16 moves rewards by ~1e-2."""
        from safetensors import safe_open
        from transformers.utils import cached_file

        model = super().from_pretrained(path, *args, **kwargs)
        where = ("cache_dir", "subfolder", "revision", "token", "local_files_only")     # find the file as super() did
        file = cached_file(path, "model.safetensors", **{k: kwargs[k] for k in where if k in kwargs})
        with safe_open(file, framework="pt") as fh:                    # the head's keys only, not the LM's
            head = {k[len("head."):]: fh.get_tensor(k) for k in fh.keys() if k.startswith("head.")}
        model.head.float().load_state_dict(head)
        return model

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor | None = None, **kwargs):
        spec = self.config.lens_reward
        mask = attention_mask if attention_mask is not None else torch.ones_like(input_ids)
        layers = spec["layers"]
        out = self.model(input_ids=input_ids, attention_mask=mask, position_ids=(mask.cumsum(-1) - 1).clamp_min(0),
                         output_hidden_states=any(layer != -1 for layer in layers))
        norm = next((getattr(self.model, n) for n in ("norm", "final_layernorm", "ln_f", "final_layer_norm")
                     if isinstance(getattr(self.model, n, None), nn.Module)), None)
        # an inner layer read through the final norm, as lens-ray embeds it (data/embed.py: layer_states)
        states = [out.last_hidden_state if layer == -1 else norm(out.hidden_states[layer]) if norm is not None
                  else out.hidden_states[layer] for layer in layers]
        pooled = torch.stack([self._pool(h, mask) for h in states], 1).float()       # (B, L, H)
        emb = pooled.mean(1) if spec["layer_combine"] == "mean" else pooled.flatten(1)
        reward = self.head.float()(emb)
        scale = spec.get("scale")                      # standardized: the head's training-reward mean and std
        if scale:
            reward = (reward - scale["mean"]) / max(scale["std"], 1e-12)
        return SequenceClassifierOutput(logits=reward[:, None])

    def _pool(self, hidden: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        if self.config.lens_reward["pooling"] == "last":
            pos = torch.arange(mask.shape[1], device=mask.device)
            return hidden[torch.arange(len(hidden), device=hidden.device), (mask * pos).argmax(1)]
        m = mask.unsqueeze(-1).to(hidden.dtype)
        return (hidden * m).sum(1) / m.sum(1).clamp_min(1.0)
