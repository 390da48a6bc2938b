import numpy as np
import pytest
import torch

from lens_ray.data.embed import (
    Embedder,
    ModelLoadError,
    embed_ids,
    length_batches,
    load_model,
    pad,
    pool,
    resolve_model,
    text_key,
    tokenize,
)

PROMPTS = [[{"role": "user", "content": "How do I bake bread?"}],
           [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "hello"},
            {"role": "user", "content": "Tell me a long story about a cat who can't sleep at night."}],
           [{"role": "user", "content": "x"}]]
RESPONSES = ["Mix flour, water and yeast, then bake.", "Once upon a time there was a cat.", "I can't help with that."]


def test_pool_on_tensors():
    h = torch.arange(2 * 3 * 2, dtype=torch.float32).reshape(2, 3, 2)
    mask = torch.tensor([[1, 1, 0], [0, 1, 1]])
    assert torch.equal(pool(h, mask, "last"), torch.stack([h[0, 1], h[1, 2]]))
    assert torch.allclose(pool(h, mask, "mean"), torch.stack([h[0, :2].mean(0), h[1, 1:].mean(0)]))


def test_pad_sides():
    ids, mask = pad([[1, 2, 3], [4]], pad_id=0, side="left")
    assert ids.tolist() == [[1, 2, 3], [0, 0, 4]] and mask.tolist() == [[1, 1, 1], [0, 0, 1]]
    ids, mask = pad([[1, 2, 3], [4]], pad_id=0, side="right")
    assert ids.tolist() == [[1, 2, 3], [4, 0, 0]]


def test_pooled_vector_ignores_padding_side_and_batch(tiny_llama):
    lm = load_model(tiny_llama, "float32")
    assert lm.kind == "causal" and lm.dim == 32
    tk = tokenize(lm, PROMPTS, RESPONSES, max_length=512)
    assert len({len(x) for x in tk.ids}) == 3                          # really ragged
    alone = np.stack([embed_ids(lm, [ids], "auto") for ids in tk.ids])[:, 0]
    right = embed_ids(lm, tk.ids, "auto", "right")
    left = embed_ids(lm, tk.ids, "auto", "left")
    mixed = embed_ids(lm, [tk.ids[2], tk.ids[0]], "auto", "left")
    assert np.allclose(right, alone, atol=1e-5)
    assert np.allclose(left, alone, atol=1e-5)
    assert np.allclose(mixed, alone[[2, 0]], atol=1e-5)
    assert not np.allclose(alone[0], alone[1], atol=1e-3)


def test_length_batches_group_similar_lengths_within_budgets():
    lengths = [5, 300, 7, 120, 6, 5000, 118, 8]
    batches = length_batches(lengths, max_items=3, max_tokens=400)
    assert sorted(i for b in batches for i in b) == list(range(len(lengths)))           # each row once
    assert [lengths[b[0]] for b in batches] == sorted(lengths[b[0]] for b in batches)  # shortest first
    for b in batches:
        assert len(b) <= 3 and (len(b) == 1 or len(b) * max(lengths[i] for i in b) <= 400)
    assert [5] in batches                                       # the over-budget row alone
    assert length_batches([], 8, 4096) == []
    with pytest.raises(ValueError, match="max_items >= 1"):
        length_batches(lengths, max_items=0, max_tokens=400)          # not one silent batch of everything


def test_left_truncation_keeps_the_response(tiny_llama):
    lm = load_model(tiny_llama, "float32")
    full = tokenize(lm, PROMPTS, RESPONSES, max_length=10_000)
    short = tokenize(lm, PROMPTS, RESPONSES, max_length=40)
    for f, s, t in zip(full.ids, short.ids, short.truncated):
        assert len(s) == min(len(f), 40) and s == f[-len(s):]       # the end survives
        assert t == (len(f) > 40)
    assert short.truncated.sum() >= 1


def test_embedder_batch(tiny_llama):
    import json
    emb = Embedder(tiny_llama, max_length=64, dtype="float32")
    out = emb({"prompt_json": np.array([json.dumps(p) for p in PROMPTS]), "response": np.array(RESPONSES),
               "key": np.array(["a", "b", "c"])})
    assert out["embedding"].shape == (3, 1, 32) and out["embedding"].dtype == np.float32
    assert out["truncated"].dtype == bool and (out["n_tokens"] <= 64).all()
    assert list(out["key"]) == ["a", "b", "c"]                                     # rows keep their keys
    lm = load_model(tiny_llama, "float32")                                         # the same vectors, one by one
    for i, (p, r) in enumerate(zip(PROMPTS, RESPONSES)):
        ids = tokenize(lm, [p], [r], 64).ids
        assert out["n_tokens"][i] == len(ids[0])
        assert np.allclose(out["embedding"][i, 0], embed_ids(lm, ids, "auto")[0], atol=1e-5)
    assert not np.allclose(out["embedding"][0], out["embedding"][1])


def test_minilm_mean_pooling_real_model():
    pytest.importorskip("transformers")
    lm = load_model("minilm", "float32")
    assert lm.kind == "encoder" and lm.dim == 384
    tk = tokenize(lm, PROMPTS, RESPONSES, max_length=128)
    a = embed_ids(lm, tk.ids, "auto", "right")
    b = embed_ids(lm, tk.ids, "auto", "left")
    assert np.allclose(a, b, atol=1e-4)
    same = embed_ids(lm, tokenize(lm, PROMPTS[:1], ["Mix flour and water, then bake it."], 128).ids, "auto")
    other = embed_ids(lm, tokenize(lm, PROMPTS[:1], ["The stock market fell today."], 128).ids, "auto")
    cos = lambda x, y: float(x[0] @ y[0] / np.linalg.norm(x[0]) / np.linalg.norm(y[0]))  # noqa: E731
    assert cos(a[:1], same) > cos(a[:1], other)                      # real semantics, not noise


def test_resolve_model_and_keys(tiny_llama):
    src = resolve_model(tiny_llama)
    assert src.gguf_file is None and src.model_id.startswith("local:")
    assert resolve_model("smollm2").gguf_file.endswith(".gguf")
    with pytest.raises(ModelLoadError):
        resolve_model("./no/such/folder")
    k = text_key("m", "last", 8, PROMPTS[0], "r")
    assert k == text_key("m", "last", 8, PROMPTS[0], "r") and k != text_key("m", "last", 9, PROMPTS[0], "r")


def test_bf16_embeddings_close_to_fp32(tiny_llama):
    """bf16 (the CPU default where it is native) moves vectors by rounding only, whatever the padding."""
    fp32, bf16 = load_model(tiny_llama, "float32"), load_model(tiny_llama, "bfloat16")
    assert {p.dtype for p in bf16.model.parameters()} == {torch.bfloat16}        # the model really computes in bf16
    ids = tokenize(fp32, PROMPTS, RESPONSES, 512).ids
    a = embed_ids(fp32, ids, "auto")
    for side in ("right", "left"):
        b = embed_ids(bf16, ids, "auto", side)
        assert b.dtype == np.float32
        cos = (a * b).sum(1) / np.linalg.norm(a, axis=1) / np.linalg.norm(b, axis=1)
        assert (cos > 0.99).all() and not np.array_equal(a, b)              # rounded, not the same numbers


def test_resolve_dtype():
    from lens_ray.data.embed import cpu_has_native_bf16, resolve_dtype
    assert resolve_dtype("float32") == "float32" and resolve_dtype("auto", "cuda") == "bfloat16"
    assert resolve_dtype("bfloat16", "cpu") == "bfloat16" and resolve_dtype("float16", "cuda") == "float16"
    with open("/proc/cpuinfo") as fh:                                           # this machine's own answer
        flags = fh.read()
    native = "avx512_bf16" in flags or "amx_bf16" in flags
    assert cpu_has_native_bf16() == native
    assert resolve_dtype("auto", "cpu") == ("bfloat16" if native else "float32")


def test_several_layers_come_from_one_pass_and_ignore_padding(tiny_llama):
    from lens_ray.data.embed import combine_layers, embed_layers, layer_settings, settings_key
    lm = load_model(tiny_llama, "float32")
    ids = tokenize(lm, PROMPTS, RESPONSES, 512).ids
    both = embed_layers(lm, ids, "auto", "right", (-1, -2))
    assert both.shape == (3, 2, 32)
    assert np.allclose(both[:, 0], embed_ids(lm, ids, "auto"), atol=1e-6)              # -1 is the default
    alone = np.stack([embed_layers(lm, [x], "auto", "left", (-2,))[0, 0] for x in ids])
    assert np.allclose(both[:, 1], alone, atol=1e-5) and not np.allclose(both[:, 0], both[:, 1], atol=1e-3)
    assert combine_layers(both, "concat").shape == (3, 64) and combine_layers(both, "mean").shape == (3, 32)
    base = {"model": "m", "pooling": "auto", "max_length": 8, "storage_dtype": "float32"}
    assert layer_settings(base, (-1,), "concat") == base                                # old keys still match
    key = lambda s: settings_key(s, PROMPTS[0], "r")  # noqa: E731
    assert len({key(base), key(layer_settings(base, (-2,), "concat")),
                key(layer_settings(base, (-1, -2), "concat")), key(layer_settings(base, (-1, -2), "mean"))}) == 4


# ---------------------------------------------------------------- a prompt read once for its responses

SHARED = [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "hello"},
          {"role": "user", "content": "Tell me a long story about a cat who can't sleep at night."}]
ANSWERS = ["Once upon a time there was a cat.", "No.", "The cat counted sheep until dawn, then slept all day long."]


def test_shared_packs_group_rows_by_prompt_and_keep_each_row_once():
    from lens_ray.data.embed import MIN_SHARED, shared_packs
    p = list(range(100, 100 + MIN_SHARED + 2))                     # a prompt of 10 tokens
    ids = [p + [1, 2], [7] * 5, p + [3], p[:4] + [9] * 9, p + [4, 5, 6], p + [8]]
    groups = ["a", "b", "a", "c", "a", "a"]
    packs, alone = shared_packs(ids, groups, max_tokens=100)
    assert [pk.rows for pk in packs] == [[0, 2, 4, 5]] and alone == [1, 3]    # "b", "c": one row each
    assert packs[0].prefix == p and packs[0].suffixes == [[1, 2], [3], [4, 5, 6], [8]]
    assert len(packs[0]) == len(p) + 7
    # the cap splits a group into packs of two or more rows, and a row left over goes alone
    packs, alone = shared_packs(ids, groups, max_tokens=len(p) + 3)
    assert [pk.rows for pk in packs] == [[0, 2]] and alone == [1, 3, 4, 5]
    # each row keeps its last token out of the prefix; fewer than MIN_SHARED shared tokens: no pack
    packs, alone = shared_packs([p, p + [1]], ["a", "a"], 100)
    assert packs[0].prefix == p[:-1] and packs[0].suffixes == [[p[-1]], [p[-1], 1]]
    packs, alone = shared_packs([p[:MIN_SHARED - 1] + [1], p[:MIN_SHARED - 1] + [2]], ["a", "a"], 100)
    assert packs == [] and alone == [0, 1]
    # same prompt text but different tokens at the start (left truncation): nothing shared
    packs, alone = shared_packs([[1] + p, [2] + p], ["a", "a"], 100)
    assert packs == [] and alone == [0, 1]


def test_pack_inputs_mask_and_positions():
    from lens_ray.data.embed import Pack, pack_inputs
    ids, pos, mask, last = pack_inputs([Pack([3, 5], [10, 11], [[20, 21], [30]]), Pack([0, 1], [40], [[50], [60]])],
                                       pad_id=0)
    assert ids.tolist() == [[10, 11, 20, 21, 30], [40, 50, 60, 0, 0]]
    assert pos.tolist() == [[0, 1, 2, 3, 2], [0, 1, 1, 0, 0]]          # each row continues the prompt
    assert last == [(3, 0, 3), (5, 0, 4), (0, 1, 1), (1, 1, 2)]
    m = mask[0, 0].int().tolist()
    assert m[4] == [1, 1, 0, 0, 1]                                      # row 5 sees the prompt and itself only
    assert m[3] == [1, 1, 1, 1, 0] and m[1] == [1, 1, 0, 0, 0]          # causal within the prompt and a row
    assert mask[1, 0].int().tolist()[3] == [0, 0, 0, 1, 0]              # a pad sees itself: finite, never read


def test_packed_rows_get_the_vectors_they_get_alone(tiny_llama):
    from lens_ray.data.embed import embed_layers, embed_packs, shared_packs
    lm = load_model(tiny_llama, "float32")
    prompts = [SHARED] * 3 + [PROMPTS[0]] * 2 + [PROMPTS[2]]
    responses = ANSWERS + RESPONSES[:1] + ["Buy it."] + RESPONSES[2:]
    ids = tokenize(lm, prompts, responses, 512).ids
    packs, alone = shared_packs(ids, [str(p) for p in prompts], 1024)
    assert [pk.rows for pk in packs] == [[0, 1, 2], [3, 4]] and alone == [5]
    alone_vecs = np.stack([embed_layers(lm, [x], "auto", "right", (-1, -2))[0] for x in ids])
    packed = embed_packs(lm, packs, (-1, -2))
    assert sorted(packed) == [0, 1, 2, 3, 4]
    for row, vec in packed.items():
        assert vec.shape == (2, 32) and np.allclose(vec, alone_vecs[row], atol=1e-5)
    assert not np.allclose(packed[0], packed[1], atol=1e-3)             # each row its own vector


@pytest.mark.parametrize("share", [True, False])
def test_embedder_share_prefix_changes_work_not_vectors(tiny_llama, share):
    import json
    emb = Embedder(tiny_llama, max_length=256, dtype="float32", layers=(-1, -2), share_prefix=share)
    prompts = [SHARED] * 3 + PROMPTS[:1]
    out = emb({"prompt_json": np.array([json.dumps(p) for p in prompts]),
               "response": np.array(ANSWERS + RESPONSES[:1]), "key": np.array(list("abcd"))})
    lm = load_model(tiny_llama, "float32")
    from lens_ray.data.embed import embed_layers
    for i, (p, r) in enumerate(zip(prompts, ANSWERS + RESPONSES[:1])):
        ids = tokenize(lm, [p], [r], 256).ids
        assert len(ids[0]) < 256 and np.allclose(out["embedding"][i],
                                                 embed_layers(lm, ids, "auto", "right", (-1, -2))[0], atol=1e-5)
    prompt_tokens = len(tokenize(lm, [SHARED], [""], 256).ids[0])
    if share:                                     # rows 2 and 3 did not recompute the shared prompt
        assert emb.packing.on is True and out["n_shared"][0] == 0 and out["n_shared"][3] == 0
        assert (out["n_shared"][1:3] >= prompt_tokens - 8).all() and out["n_shared"][1] == out["n_shared"][2]
    else:
        assert emb.packing.on is False and not out["n_shared"].any()


def test_a_model_that_packing_would_change_embeds_each_text_alone(tiny_llama, capsys):
    """The first pack is checked against the rows alone; a model that fails it (here: position ids ignored, as
    ALiBi models do) packs nothing, says so once, and its vectors stay right."""
    import json
    emb = Embedder(tiny_llama, max_length=256, dtype="float32")
    forward = emb.lm.model.forward
    emb.lm.model.forward = lambda **kw: forward(**{**kw, "position_ids": None})
    batch = {"prompt_json": np.array([json.dumps(SHARED)] * 3), "response": np.array(ANSWERS),
             "key": np.array(list("abc"))}
    out = emb(batch)
    assert emb.packing.on is False and not out["n_shared"].any()
    assert "each text is embedded alone" in capsys.readouterr().out
    emb.lm.model.forward = forward
    again = emb(batch)                                             # decided once per actor
    assert not again["n_shared"].any() and np.allclose(again["embedding"], out["embedding"], atol=1e-5)
