"""The reward server on the test session's local Ray, with real HTTP on 127.0.0.1: OpenRLHF-shaped requests,
/score equal to RewardModel.score, batching of concurrent single-sample requests, every bad-request class,
the token; and the trainers' callables against it."""
import json
import urllib.error
import urllib.request
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest

from lens_ray.scoring.reward_model import RewardModel

TOKEN = "s3cret-test-token"
PROMPTS = ["How do I bake bread?", "Tell me a joke about cats.", "What is 2+2?"]
RESPONSES = ["Mix flour, water and yeast, then bake.", "I can't help with that.", "4"]


@pytest.fixture(scope="module")
def server(local_run, monkeypatch_module):
    from tests.conftest import _free_port
    from ray import serve

    from lens_ray.config import ServeConfig
    from lens_ray.distributed.serving import APP, build
    _, _, run = local_run
    monkeypatch_module.setenv("LENS_SERVE_TEST_TOKEN", TOKEN)
    port = _free_port()
    serve.start(http_options={"host": "127.0.0.1", "port": port})
    cfg = ServeConfig(head="lens-f4-s0", max_batch_size=16, batch_wait_ms=50, token_env="LENS_SERVE_TEST_TOKEN",
                      cpus_per_replica=0.5, max_items=8, max_body_bytes=4096)
    serve.run(build(run.uri, cfg), name=APP, route_prefix="/", blocking=False)
    url = f"http://127.0.0.1:{port}"
    _wait_healthy(url)
    yield url, RewardModel.from_run(run.uri, "lens-f4-s0"), run
    serve.shutdown()


@pytest.fixture(scope="module")
def monkeypatch_module():
    mp = pytest.MonkeyPatch()
    yield mp
    mp.undo()


def _wait_healthy(url: str, timeout: float = 120) -> None:
    import time
    deadline = time.time() + timeout
    while time.time() < deadline:
        try:
            if _call(url, "/healthz", None, method="GET")[0] == 200:
                return
        except OSError:
            pass
        time.sleep(0.5)
    raise RuntimeError("the reward server did not come up")


def _call(url: str, path: str, body, token: str | None = TOKEN, method: str = "POST", raw: bytes | None = None):
    data = raw if raw is not None else (json.dumps(body).encode() if body is not None else None)
    req = urllib.request.Request(url + path, data=data, method=method, headers={"Content-Type": "application/json"})
    if token:
        req.add_header("Authorization", f"Bearer {token}")
    try:
        with urllib.request.urlopen(req, timeout=60) as resp:
            return resp.status, json.loads(resp.read())
    except urllib.error.HTTPError as err:
        return err.code, json.loads(err.read())


def test_score_equals_the_in_process_model(server):
    url, rm, _ = server
    status, body = _call(url, "/score", {"prompts": PROMPTS, "responses": RESPONSES})
    assert status == 200 and body["head"] == "lens-f4-s0"
    assert np.allclose(body["rewards"], rm.score(PROMPTS, RESPONSES), atol=1e-5)
    messages = [[{"role": "user", "content": p}] for p in PROMPTS]          # chat messages work the same
    assert np.allclose(_call(url, "/score", {"prompts": messages, "responses": RESPONSES})[1]["rewards"],
                       body["rewards"], atol=1e-5)


def test_openrlhf_requests_batch_together(server):
    url, rm, _ = server
    before = _call(url, "/info", None, method="GET")[1]
    requests = [{"query": [p + r], "prompts": [p], "labels": [""]} for p, r in zip(PROMPTS * 8, RESPONSES * 8)]
    with ThreadPoolExecutor(24) as pool:
        replies = list(pool.map(lambda b: _call(url, "/get_reward", b), requests))
    assert all(status == 200 for status, _ in replies)
    got = [body["rewards"][0] for _, body in replies]
    assert np.allclose(got, rm.score(PROMPTS * 8, RESPONSES * 8), atol=1e-5)
    assert all(body["scores"] == body["rewards"] and "extra_logs" in body for _, body in replies)
    after = _call(url, "/info", None, method="GET")[1]
    assert after["requests"] - before["requests"] == 24
    assert after["batches"] - before["batches"] < 24                        # concurrent requests shared passes


@pytest.mark.parametrize("body,raw,status,field", [
    (None, b"{not json", 400, "body"),
    ({"prompts": ["a"]}, None, 422, "query"),
    ({"query": ["a", 3], "prompts": ["a", "b"]}, None, 422, "query[1]"),
    ({"query": ["ab", "cd"], "prompts": ["a"]}, None, 422, "prompts"),
    ({"query": [], "prompts": []}, None, 422, "query"),
    ({"query": ["xy"], "prompts": ["a"]}, None, 422, "query[0]"),
    ({"query": ["a"] * 9, "prompts": ["a"] * 9}, None, 422, "query"),
    (None, b'{"query": ["' + b"a" * 5000 + b'"]}', 413, "body"),
    ([1, 2], None, 422, "body"),
])
def test_bad_openrlhf_requests_name_the_field(server, body, raw, status, field):
    url, _, _ = server
    got_status, got = _call(url, "/get_reward", body, raw=raw)
    assert got_status == status and got["field"] == field and got["error"]


@pytest.mark.parametrize("body,field", [
    ({"prompts": ["a", "b"], "responses": ["x"]}, "responses"),
    ({"prompts": [{"role": "user"}], "responses": ["x"]}, "prompts[0]"),
    ({"prompts": "a", "responses": ["x"]}, "prompts"),
])
def test_bad_score_requests_name_the_field(server, body, field):
    url, _, _ = server
    status, got = _call(url, "/score", body)
    assert status == 422 and got["field"] == field


def test_token_routes_and_survival(server):
    url, _, _ = server
    assert _call(url, "/score", {"prompts": ["a"], "responses": ["b"]}, token=None)[0] == 401
    assert _call(url, "/score", {"prompts": ["a"], "responses": ["b"]}, token="wrong")[0] == 401
    assert _call(url, "/healthz", None, token=None, method="GET")[0] == 200          # health needs no token
    assert _call(url, "/nope", {})[0] == 404
    long = "word " * 600                                # over max_length (64 tokens), under the body limit
    status, body = _call(url, "/score", {"prompts": [long], "responses": ["fine"]})
    info = _call(url, "/info", None, method="GET")[1]
    assert status == 200 and np.isfinite(body["rewards"][0]) and info["truncated"] >= 1
    assert info["head"] == "lens-f4-s0" and info["embedding_dim"] == 32 and info["normalize"] is False


def test_trl_callable_takes_strings_and_conversations(server):
    from lens_ray.scoring.integrations import trl_reward
    _, rm, run = server
    f = trl_reward(run.uri, head="lens-f4-s0")
    plain = f(prompts=PROMPTS, completions=RESPONSES, completion_ids=None)
    chat = f(prompts=[[{"role": "user", "content": p}] for p in PROMPTS],
             completions=[[{"role": "assistant", "content": r}] for r in RESPONSES])
    assert np.allclose(plain, rm.score(PROMPTS, RESPONSES), atol=1e-5) and np.allclose(chat, plain, atol=1e-5)
    assert f.__name__ == "lens_ray_lens-f4-s0"


def test_verl_compute_score_asks_the_server(server, monkeypatch):
    from lens_ray.scoring.integrations import compute_score, compute_score_batch
    url, rm, _ = server
    monkeypatch.setenv("LENS_RAY_REWARD_URL", url)
    monkeypatch.setenv("LENS_RAY_REWARD_TOKEN", TOKEN)
    want = rm.score(PROMPTS, RESPONSES)
    one = compute_score("hh", RESPONSES[0], ground_truth=None, extra_info={"prompt": PROMPTS[0]})
    batch = compute_score_batch(["hh"] * 3, RESPONSES, [None] * 3, [{"prompt": p} for p in PROMPTS])
    assert one == pytest.approx(float(want[0]), abs=1e-5) and np.allclose(batch, want, atol=1e-5)


def test_openrlhf_reward_func_in_process(server, monkeypatch):
    import lens_ray.scoring.integrations as integrations
    _, rm, run = server
    monkeypatch.setenv("LENS_RAY_RUN", run.uri)
    monkeypatch.setenv("LENS_RAY_HEAD", "lens-f4-s0")
    monkeypatch.setattr(integrations, "_MODEL", None)
    from lens_ray.scoring.openrlhf_reward import reward_func
    out = reward_func([p + r for p, r in zip(PROMPTS, RESPONSES)], PROMPTS, ["", "", ""])
    assert np.allclose(out["rewards"].numpy(), rm.score(PROMPTS, RESPONSES), atol=1e-5)
    assert out["rewards"].shape == (3,) and "extra_logs" in out


def test_normalized_rewards_use_the_heads_training_statistics(server):
    _, rm, _ = server
    raw = rm.score(PROMPTS, RESPONSES)
    norm = rm.score(PROMPTS, RESPONSES, normalize=True)
    assert rm.reward_norm["std"] > 0
    assert np.allclose(norm, (raw - rm.reward_norm["mean"]) / rm.reward_norm["std"], atol=1e-6)
