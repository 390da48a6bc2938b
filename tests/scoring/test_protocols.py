"""The wire formats on their own, no server and no model: OpenRLHF's request as its current client sends it
(empty shards, prompts cut from the left and decoded again), the overlap that finds the response, and the
forms a prompt string arrives in."""
import pytest

from lens_ray.scoring.protocols import BadRequest, ChatTemplate, Limits, conversation, openrlhf_items, prompt_overlap


class _Tok:
    """ChatML rendering, as SmolLM2's tokenizer renders it."""
    chat_template = "chatml"

    def apply_chat_template(self, msgs, tokenize=False, add_generation_prompt=False):
        text = "".join(f"<|im_start|>{m['role']}\n{m['content']}<|im_end|>\n" for m in msgs)
        return text + ("<|im_start|>assistant\n" if add_generation_prompt else "")


TEMPLATE = ChatTemplate.learn(_Tok())


@pytest.mark.parametrize("prompt,query,want", [
    ("abc", "abcXYZ", 3),            # the query starts with the prompt
    ("abc", "bcXYZ", 2),             # the prompt's start cut
    ("abc", "cXYZ", 1),
    ("abc", "XYZ", 0),               # nothing shared
    ("aaaa", "aaXaaaa", 2),          # the longest end that the query starts with, not a later match
    ("", "XYZ", 0),
    ("a\x00b", "a\x00bX", 3),        # the sentinel character inside the text: an exact prefix still counts
    ("a\x00b", "\x00bX", 0),
])
def test_prompt_overlap(prompt, query, want):
    assert prompt_overlap(prompt, query) == want


def test_prompt_overlap_is_linear_on_repetitive_text():
    prompt = "a" * 50_000 + "b"
    assert prompt_overlap(prompt, "a" * 50_000 + "bX") == len(prompt)
    assert prompt_overlap(prompt, "a" * 49_999 + "c") == 0


def test_openrlhf_items_read_cut_and_decoded_queries():
    prompt = TEMPLATE.render([{"role": "user", "content": "Tell me a joke."}], True)
    cut = prompt[9:]                                                       # the client cut the prompt's start
    items = openrlhf_items({"query": [prompt + "Knock knock.<|im_end|>", cut + "Why?"],
                            "prompts": [prompt, prompt], "labels": [None, "x"]}, Limits(), TEMPLATE)
    assert items.prompts == [[{"role": "user", "content": "Tell me a joke."}]] * 2
    assert items.responses == ["Knock knock.", "Why?"]                    # the end-of-turn token removed


def test_openrlhf_items_accept_empty_shards_and_refuse_what_cannot_be_split():
    assert openrlhf_items({"query": [], "prompts": [], "labels": []}, Limits(), TEMPLATE).prompts == []
    with pytest.raises(BadRequest) as bad:
        openrlhf_items({"query": ["xyz"], "prompts": ["abc"]}, Limits(), TEMPLATE)
    assert bad.value.field == "query[0]" and "shares no text" in bad.value.message
    with pytest.raises(BadRequest) as bad:
        openrlhf_items({"query": ["a"], "prompts": []}, Limits(), TEMPLATE)
    assert bad.value.field == "prompts"


def test_conversation_reads_each_form_a_prompt_string_comes_in():
    msgs = [{"role": "user", "content": "Hi"}]
    rendered = TEMPLATE.render(msgs, True)
    assert conversation(rendered, "Hello<|im_end|>\n", TEMPLATE) == (msgs, "Hello")
    assert conversation("\n\nHuman: Hi\n\nAssistant:", " Hello", TEMPLATE) == (msgs, "Hello")
    assert conversation("Hi", "Hello", TEMPLATE) == ("Hi", "Hello")             # plain: one user turn
    assert conversation("Hi", "Hello", None) == ("Hi", "Hello")


def test_every_protocol_is_one_entry_with_a_route_a_parser_and_a_reply():
    """The server's routes, the proxy's and the in-process callables read PROTOCOLS: each entry parses its own
    request shape and answers in its consumer's shape; routes are distinct."""
    from lens_ray.scoring.protocols import PROTOCOLS
    assert len({p.route for p in PROTOCOLS.values()}) == len(PROTOCOLS)
    requests = {"openrlhf": {"query": ["Hi there"], "prompts": ["Hi "]},
                "score": {"prompts": [[{"role": "user", "content": "Hi"}]], "responses": ["there"]}}
    assert set(requests) == set(PROTOCOLS)
    model = {"head": "h", "model": "m"}
    for name, protocol in PROTOCOLS.items():
        items = protocol.parse(requests[name], Limits(), None)
        assert len(items.prompts) == len(items.responses) == 1 and items.responses[0] == "there"
        with pytest.raises(BadRequest) as bad:
            protocol.parse({}, Limits(), None)
        assert bad.value.status == 422
    assert PROTOCOLS["openrlhf"].reply([0.5], model) == {"rewards": [0.5], "scores": [0.5], "extra_logs": {}}
    assert PROTOCOLS["score"].reply([0.5], model) == {"rewards": [0.5], "head": "h", "model": "m"}
