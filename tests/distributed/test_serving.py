"""The reward server with real HTTP on 127.0.0.1. On the test session's local Ray, built by `app_builder` (the
Ray-native path): OpenRLHF-shaped requests, /score equal to RewardModel.score, batching, every bad-request
class, one client's bad items mixed with others' good ones, slow clients, the token, and the trainers'
callables. Then `lens-ray serve` itself in a process of its own, with --normalize false, --token-env, --replicas 2,
--max-batch-size, --batch-wait-ms and --head: what it answers, that it listens on loopback only, the proxy's
bounds, and SIGTERM: 503 until it closes, then "stopped"."""
import http.client
import json
import os
import random
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pytest
import torch

from lens_ray.scoring.reward_model import RewardModel

TOKEN = "s3cret-test-token"
PROMPTS = ["How do I bake bread?", "Tell me a joke about cats.", "What is 2+2?"]
RESPONSES = ["Mix flour, water and yeast, then bake.", "I can't help with that.", "4"]
BODY_TIMEOUT = 3


@pytest.fixture(scope="module")
def server(local_run, monkeypatch_module):
    from ray import serve

    from lens_ray.distributed.serving import APP, app_builder
    from tests.conftest import _free_port
    _, _, run = local_run
    monkeypatch_module.setenv("LENS_SERVE_TEST_TOKEN", TOKEN)
    port = _free_port()
    serve.start(http_options={"host": "127.0.0.1", "port": port})
    app = app_builder({"run": run.uri, "head": "lens-f4-s0", "max_batch_size": "16", "batch_wait_ms": "50",
                       "token_env": "LENS_SERVE_TEST_TOKEN", "cpus_per_replica": "0.5", "max_items": "8",
                       "max_body_bytes": "4096", "body_timeout_s": str(BODY_TIMEOUT)})
    serve.run(app, name=APP, route_prefix="/", blocking=False)
    url = f"http://127.0.0.1:{port}"
    _wait_healthy(url)
    yield url, RewardModel.from_run(run.uri, "lens-f4-s0"), run, port
    serve.shutdown()


@pytest.fixture(scope="module")
def monkeypatch_module():
    mp = pytest.MonkeyPatch()
    yield mp
    mp.undo()


def _wait_healthy(url: str, timeout: float = 180) -> list[int]:
    """Polls /healthz until 200; returns the statuses seen on the way."""
    seen, deadline = [], time.time() + timeout
    while time.time() < deadline:
        try:
            seen.append(_call(url, "/healthz", None, method="GET")[0])
            if seen[-1] == 200:
                return seen
        except OSError:
            pass
        time.sleep(0.5)
    raise RuntimeError(f"the reward server did not come up (statuses {seen[-5:]})")


def _call(url: str, path: str, body, token: str | None = TOKEN, method: str = "POST", raw: bytes | None = None):
    data = raw if raw is not None else (json.dumps(body).encode() if body is not None else None)
    req = urllib.request.Request(url + path, data=data, method=method, headers={"Content-Type": "application/json"})
    if token:
        req.add_header("Authorization", f"Bearer {token}")
    try:
        with urllib.request.urlopen(req, timeout=90) as resp:
            return resp.status, json.loads(resp.read())
    except urllib.error.HTTPError as err:
        text = err.read()
        try:
            return err.code, json.loads(text)
        except ValueError:                          # Serve's proxy answers in plain text before the app exists
            return err.code, {"raw": text.decode(errors="replace")}


def test_score_equals_the_in_process_model(server):
    url, rm, _, _ = server
    status, body = _call(url, "/score", {"prompts": PROMPTS, "responses": RESPONSES})
    assert status == 200 and body["head"] == "lens-f4-s0"
    assert np.allclose(body["rewards"], rm.score(PROMPTS, RESPONSES), atol=1e-5)
    messages = [[{"role": "user", "content": p}] for p in PROMPTS]          # chat messages work the same
    assert np.allclose(_call(url, "/score", {"prompts": messages, "responses": RESPONSES})[1]["rewards"],
                       body["rewards"], atol=1e-5)


def test_openrlhf_requests_batch_together(server):
    url, rm, _, _ = server
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


def test_openrlhf_traffic_as_its_client_sends_it(server):
    """OpenRLHF's client (openrlhf/utils/agent.py) shards a sample's one query over its reward URLs, so a later
    URL gets empty lists: 200 with empty lists. It decodes the prompt's tokens (their start cut when the prompt
    is too long) and the response's, its end-of-turn token included: the reward is that of the full prompt."""
    url, rm, _, _ = server
    status, body = _call(url, "/get_reward", {"query": [], "prompts": [], "labels": []})
    assert status == 200 and body == {"rewards": [], "scores": [], "extra_logs": {}}
    tok = rm.lm.tokenizer
    prompt = tok.apply_chat_template([{"role": "user", "content": "Tell me a joke about cats, please. " * 3}],
                                     tokenize=False, add_generation_prompt=True)
    response = "A cat walks into a bar."
    ids = tok(prompt, add_special_tokens=False)["input_ids"]
    action = tok(response + tok.eos_token, add_special_tokens=False)["input_ids"]
    want = float(rm.score([[{"role": "user", "content": "Tell me a joke about cats, please. " * 3}]], [response])[0])
    for keep in (len(ids), len(ids) - 7, 5):                 # whole, cut by 7 tokens, only the last 5 kept
        query = tok.decode(ids[-keep:] + action, skip_special_tokens=False)
        status, body = _call(url, "/get_reward", {"query": [query], "prompts": [prompt], "labels": [None]})
        assert status == 200 and body["rewards"][0] == pytest.approx(want, abs=1e-4), (keep, body)
        assert body["scores"] == body["rewards"]


def test_every_entry_point_gives_one_pair_the_same_reward(server, tmp_path, capsys, monkeypatch):
    """The same (prompt, response) through `lens-ray score`, /score, /get_reward with a plain, an HH-style and a
    chat-templated prompt (as OpenRLHF renders it), OpenRLHF's reward_func in process, verl's compute_score, the
    TRL callable with strings, messages and a hand-templated prompt, and the export: one standardized reward."""
    from lens_ray.cli import score_main
    from lens_ray.scoring import integrations
    from lens_ray.scoring.export import export, exported_logits
    from lens_ray.scoring.integrations import compute_score, trl_reward
    url, rm, run, _ = server
    monkeypatch.setenv("LENS_RAY_REWARD_URL", url)
    monkeypatch.setenv("LENS_RAY_REWARD_TOKEN", TOKEN)
    monkeypatch.setenv("LENS_RAY_RUN", run.uri)
    monkeypatch.setattr(integrations, "_MODEL", rm)
    prompt, response = "How do I bake bread?", "Mix flour, water and yeast."
    want = float(rm.score([prompt], [response])[0])
    score_main(["--run", run.uri, "--head", "lens-f4-s0", "--prompt", prompt, "--response", response])
    cli = float(capsys.readouterr().out.strip())
    score_main(["--run", run.uri, "--head", "lens-f4-s0", "--prompt", prompt, "--response", response,
                "--normalize", "false"])
    assert float(capsys.readouterr().out.strip()) == pytest.approx(float(rm.score([prompt], [response],
                                                                                  normalize=False)[0]), abs=1e-4)
    rendered = rm.lm.tokenizer.apply_chat_template([{"role": "user", "content": prompt}], tokenize=False,
                                                   add_generation_prompt=True)
    via = {
        "score": _call(url, "/score", {"prompts": [prompt], "responses": [response]})[1]["rewards"][0],
        "get_reward plain": _call(url, "/get_reward", {"query": [prompt + response], "prompts": [prompt]})[1],
        "get_reward HH": _call(url, "/get_reward", {"query": [f"\n\nHuman: {prompt}\n\nAssistant: {response}"],
                                                    "prompts": [f"\n\nHuman: {prompt}\n\nAssistant:"]})[1],
        "get_reward templated": _call(url, "/get_reward", {"query": [rendered + response + "<|im_end|>"],
                                                           "prompts": [rendered]})[1],
        "trl": trl_reward(run.uri, head="lens-f4-s0", model=rm)([prompt], [response])[0],
        "trl messages": trl_reward(run.uri, model=rm)([[{"role": "user", "content": prompt}]],
                                                      [[{"role": "assistant", "content": response}]])[0],
        "trl templated": trl_reward(run.uri, model=rm)([rendered], [response])[0],
        "openrlhf in process": float(integrations.openrlhf_reward_func([rendered + response + "<|im_end|>"],
                                                                       [rendered], [None])["rewards"][0]),
        "verl": compute_score("hh", response, None, {"prompt": prompt}),
    }
    via = {k: v["rewards"][0] if isinstance(v, dict) else v for k, v in via.items()}
    folder, _ = export(rm, str(tmp_path / "export"))
    from transformers import AutoModelForSequenceClassification, AutoTokenizer
    model = AutoModelForSequenceClassification.from_pretrained(folder, trust_remote_code=True, dtype=torch.float32)
    via["export"] = float(exported_logits(model, AutoTokenizer.from_pretrained(folder), [prompt], [response])[0])
    assert cli == pytest.approx(want, abs=1e-4)
    assert all(v == pytest.approx(want, abs=1e-4) for v in via.values()), (want, via)
    # a prompt that is neither rendered nor HH is one user turn, verbatim: not the same text, not the same reward
    odd = _call(url, "/get_reward", {"query": ["<|im_start|>user\n" + prompt + response],
                                     "prompts": ["<|im_start|>user\n" + prompt]})[1]["rewards"][0]
    assert odd != pytest.approx(want, abs=1e-4)


@pytest.mark.parametrize("body,raw,status,field", [
    (None, b"{not json", 400, "body"),
    ({"prompts": ["a"]}, None, 422, "query"),
    ({"query": ["a", 3], "prompts": ["a", "b"]}, None, 422, "query[1]"),
    ({"query": ["ab", "cd"], "prompts": ["a"]}, None, 422, "prompts"),
    ({"query": ["xy"], "prompts": ["a"]}, None, 422, "query[0]"),
    ({"query": ["a"] * 9, "prompts": ["a"] * 9}, None, 422, "query"),
    (None, b'{"query": ["' + b"a" * 5000 + b'"]}', 413, "body"),
    ([1, 2], None, 422, "body"),
    (None, b'{"query": ["a\\ud800b"], "prompts": ["a"]}', 422, "query[0]"),       # a lone surrogate
    (None, b'{"query": ' + b"[" * 1200 + b"]" * 1200 + b"}", 400, "body"),         # nested past any recursion
    (None, b'{"query": [[[[[[[[["a"]]]]]]]]]}', 400, "body"),                          # nested past MAX_DEPTH
])
def test_bad_openrlhf_requests_name_the_field(server, body, raw, status, field):
    url, _, _, _ = server
    got_status, got = _call(url, "/get_reward", body, raw=raw)
    assert got_status == status and got["field"] == field and got["error"], got


@pytest.mark.parametrize("body,field", [
    ({"prompts": ["a", "b"], "responses": ["x"]}, "responses"),
    ({"prompts": [{"role": "user"}], "responses": ["x"]}, "prompts[0]"),
    ({"prompts": [[{"role": "user"}]], "responses": ["x"]}, "prompts[0][0].content"),
    ({"prompts": "a", "responses": ["x"]}, "prompts"),
    ({"prompts": [[{"role": "user", "content": "\udc00"}]], "responses": ["x"]}, "prompts[0][0].content"),
])
def test_bad_score_requests_name_the_field(server, body, field):
    url, _, _, _ = server
    status, got = _call(url, "/score", body)
    assert status == 422 and got["field"] == field


def test_bad_items_fail_only_their_own_requests(server):
    """Random bad items - malformed, unencodable, or valid JSON the model's chat template refuses (found only
    when scored: the batch is retried item by item) - sent at once with good ones: every good one gets the
    reward it gets alone; every bad one gets a 4xx naming its field."""
    url, rm, _, _ = server
    rng = random.Random(0)
    bad = [({"prompts": [[{"role": "tool", "content": "x"}]], "responses": ["y"]}, 422, "responses[0]"),
           ({"prompts": ["a\ud800"], "responses": ["y"]}, 422, "prompts[0]"),
           ({"prompts": [7], "responses": ["y"]}, 422, "prompts[0]"),
           ({"prompts": ["a"], "responses": [None]}, 422, "responses[0]")]
    good = [({"prompts": [p], "responses": [r]}, float(rm.score([p], [r])[0])) for p, r in zip(PROMPTS, RESPONSES)]
    jobs = [("good", *rng.choice(good)) if rng.random() < 0.6 else ("bad", *rng.choice(bad)) for _ in range(48)]
    with ThreadPoolExecutor(32) as pool:
        got = list(pool.map(lambda j: _call(url, "/score", j[1]), jobs))
    retries = _call(url, "/info", None, method="GET")[1]["item_retries"]
    for (kind, body, *want), (status, reply) in zip(jobs, got):
        if kind == "good":
            assert status == 200 and reply["rewards"][0] == pytest.approx(want[0], abs=1e-5), reply
        else:
            assert (status, reply["field"]) == (want[0], want[1]), reply
    assert retries > 0                              # a refused role reached a batch and was isolated there


def test_slow_clients_cannot_hold_the_server(server):
    """200 connections that send headers and part of a body, held open: a good request is still answered, and
    each slow one is answered 408 once its body is overdue (its request slot freed)."""
    url, rm, _, port = server
    head = (f"POST /score HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
            f"Authorization: Bearer {TOKEN}\r\nContent-Length: 1000\r\n\r\n").encode()
    slow = []
    try:
        for _ in range(200):
            s = socket.create_connection(("127.0.0.1", port), timeout=60)
            s.sendall(head + b'{"prompts": ["')
            slow.append(s)
        status, body = _call(url, "/score", {"prompts": PROMPTS[:1], "responses": RESPONSES[:1]})
        assert status == 200 and body["rewards"][0] == pytest.approx(float(rm.score(PROMPTS[:1], RESPONSES[:1])[0]),
                                                                     abs=1e-5)
        answers = [s.recv(200).split(b"\r\n", 1)[0] for s in slow[:20]]
        assert all(a.startswith(b"HTTP/1.1 408") for a in answers), answers[:3]
    finally:
        for s in slow:
            s.close()
    assert _call(url, "/info", None, method="GET")[1]["timeouts"] >= 20


def test_token_routes_and_survival(server):
    url, _, _, _ = server
    assert _call(url, "/score", {"prompts": ["a"], "responses": ["b"]}, token=None)[0] == 401
    assert _call(url, "/score", {"prompts": ["a"], "responses": ["b"]}, token="wrong")[0] == 401
    assert _call(url, "/healthz", None, token=None, method="GET")[0] == 200          # health needs no token
    status, body = _call(url, "/nope", {})
    assert status == 404 and body["error"].endswith("routes: POST /get_reward, POST /score, GET /info, GET /healthz")
    assert _call(url, "/info", {})[0] == 404 and _call(url, "/score", None, method="GET")[0] == 404   # wrong method
    long = "word " * 600                                # over max_length (64 tokens), under the body limit
    status, body = _call(url, "/score", {"prompts": [long], "responses": ["fine"]})
    info = _call(url, "/info", None, method="GET")[1]
    assert status == 200 and np.isfinite(body["rewards"][0]) and info["truncated"] >= 1
    assert info["head"] == "lens-f4-s0" and info["embedding_dim"] == 32 and info["normalize"] is True
    assert info["chat_template_recovery"] is True


def test_trl_callable_takes_strings_and_conversations(server):
    from lens_ray.scoring.integrations import trl_reward
    _, rm, run, _ = server
    f = trl_reward(run.uri, head="lens-f4-s0")
    plain = f(prompts=PROMPTS, completions=RESPONSES, completion_ids=None)
    chat = f(prompts=[[{"role": "user", "content": p}] for p in PROMPTS],
             completions=[[{"role": "assistant", "content": r}] for r in RESPONSES])
    assert np.allclose(plain, rm.score(PROMPTS, RESPONSES), atol=1e-5) and np.allclose(chat, plain, atol=1e-5)
    assert f.__name__ == "lens_ray_lens-f4-s0"
    # a plain-text dataset templated by hand, and HH-RLHF's form: read back to the same conversation
    rendered = [rm.lm.tokenizer.apply_chat_template([{"role": "user", "content": p}], tokenize=False,
                                                    add_generation_prompt=True) for p in PROMPTS]
    assert np.allclose(f(prompts=rendered, completions=RESPONSES), plain, atol=1e-5)
    hh = [f"\n\nHuman: {p}\n\nAssistant:" for p in PROMPTS]
    assert np.allclose(f(prompts=hh, completions=[" " + r for r in RESPONSES]), plain, atol=1e-5)
    raw = trl_reward(run.uri, head="lens-f4-s0", normalize=False)(prompts=PROMPTS, completions=RESPONSES)
    assert np.allclose(raw, rm.score(PROMPTS, RESPONSES, normalize=False), atol=1e-5)
    assert np.std(plain) != pytest.approx(np.std(raw), rel=1e-3)


def test_verl_compute_score_asks_the_server(server, monkeypatch):
    from lens_ray.scoring.integrations import compute_score, compute_score_batch
    url, rm, _, _ = server
    monkeypatch.setenv("LENS_RAY_REWARD_URL", url)
    monkeypatch.setenv("LENS_RAY_REWARD_TOKEN", TOKEN)
    want = rm.score(PROMPTS, RESPONSES)
    one = compute_score("hh", RESPONSES[0], ground_truth=None, extra_info={"prompt": PROMPTS[0]})
    batch = compute_score_batch(["hh"] * 3, RESPONSES, [None] * 3, [{"prompt": p} for p in PROMPTS])
    assert one == pytest.approx(float(want[0]), abs=1e-5) and np.allclose(batch, want, atol=1e-5)


def test_openrlhf_reward_func_in_process(server, monkeypatch):
    import lens_ray.scoring.integrations as integrations
    _, rm, run, _ = server
    monkeypatch.setenv("LENS_RAY_RUN", run.uri)
    monkeypatch.setenv("LENS_RAY_HEAD", "lens-f4-s0")
    monkeypatch.setattr(integrations, "_MODEL", None)
    from lens_ray.scoring.openrlhf_reward import reward_func
    out = reward_func([p + r for p, r in zip(PROMPTS, RESPONSES)], PROMPTS, ["", "", ""])
    assert np.allclose(out["rewards"].numpy(), rm.score(PROMPTS, RESPONSES), atol=1e-5)
    assert out["rewards"].shape == (3,) and "extra_logs" in out


# ---------------------------------------------------------------- `lens-ray serve`, a process of its own

def _training_reward_stats(run, head_name: str) -> tuple[float, float]:
    """Mean and std of a head's rewards on its seed's real training responses, computed here, apart from the
    pipeline: the run's embeddings and the seed's split, re-derived."""
    from lens_ray.core.heads import rewards
    from lens_ray.core.pairs import seed_splits
    from lens_ray.data.finished_run import FinishedRun
    fr = FinishedRun.open(run.uri)
    inputs, head = fr.inputs(), fr.head(head_name)[0]
    seed = int(head_name.split("-s")[-1].split("-")[0])
    cfg = fr.config
    split = seed_splits(inputs.seed_pairs, cfg.data.val_fraction, cfg.seeds, cfg.data.split_seed)[seed]
    train = np.concatenate([inputs.emb.seed_pos[split.train], inputs.emb.seed_neg[split.train]])
    r = rewards(head, torch.from_numpy(train))
    return float(r.mean()), float(r.std())


def _listening(root: int) -> set[tuple[str, str, int]]:
    """(address, process name, pid) of every listening socket of a process and its descendants."""
    import psutil
    tree = {root} | {c.pid for c in psutil.Process(root).children(recursive=True)}
    return {(c.laddr.ip, psutil.Process(c.pid).name(), c.pid) for c in psutil.net_connections("inet")
            if c.status == "LISTEN" and c.pid in tree}


def test_lens_ray_serve_with_every_flag(local_run, tmp_path):
    from tests.conftest import _free_port
    _, _, run = local_run
    head = "lens-f4-s1"
    mean, std = _training_reward_stats(run, head)
    port = _free_port()
    from lens_ray.distributed.proxy_guard import environment
    env = {k: v for k, v in os.environ.items() if k not in ("RAY_ADDRESS", "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER",
                                                            *environment(1, 1))}    # the command sets its own
    env["SERVE_TEST_TOKEN"] = TOKEN
    cmd = [sys.executable, "-m", "lens_ray.cli", "serve", "--run", run.uri, "--head", head, "--port", str(port),
           "--host", "127.0.0.1",
           "--normalize", "false", "--token-env", "SERVE_TEST_TOKEN", "--replicas", "2", "--max-batch-size", "8",
           "--batch-wait-ms", "20", "--set", "serve.cpus_per_replica=0.25", "--set", "serve.header_timeout_s=2",
           "--set", f"serve.max_connections={MOST}"]
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            start_new_session=True)
    try:
        url = f"http://127.0.0.1:{port}"
        statuses = _wait_healthy(url, timeout=240)
        deadline, status = time.time() + 180, 503
        while status == 503 and time.time() < deadline:                 # a replica may still load (503 at once)
            status, body = _call(url, "/score", {"prompts": PROMPTS, "responses": RESPONSES})
            time.sleep(0.5 if status == 503 else 0)
        listening = _listening(proc.pid)
        replicas = len({pid for _, name, pid in listening if "ServeReplica" in name})
        info = {}
        while info.get("status") != "ok" and time.time() < deadline:      # the replica that answers has loaded
            info = _call(url, "/info", None, method="GET")[1]
        held = _held_connections(port)
        during = []
        hammer = ThreadPoolExecutor(1).submit(_until_refused, url, during)
        time.sleep(1)
    finally:
        os.kill(proc.pid, signal.SIGTERM)                   # what a scheduler sends; Ctrl-C takes the same path
        out = proc.communicate(timeout=120)[0]
    hammer.result(timeout=60)
    assert proc.returncode == 0 and "Traceback" not in out, out[-3000:]
    assert held["partial headers"] < 10 and held["HTTP/0.9"] < 10, held         # closed at serve.header_timeout_s
    assert held["one past the bound"].startswith(b"HTTP/1.1 503"), held          # serve.max_connections
    assert 200 in during and 404 not in during and set(during) <= {200, 503}, during   # 503 while it shuts down
    assert "serving " in out and "stopped" in out, out[-3000:]
    assert statuses[-1] == 200 and set(statuses) <= {200, 503}, statuses        # 503, never 404, while it starts
    assert {ip for ip, _, _ in listening} <= {"127.0.0.1", "::ffff:127.0.0.1", "::1"}, listening
    assert replicas == 2, listening                  # each replica's own gRPC port, on loopback
    stored = info["reward_norm"]
    assert stored["mean"] == pytest.approx(mean, abs=1e-4) and stored["std"] == pytest.approx(std, rel=1e-4)
    raw = RewardModel.from_run(run.uri, head).score(PROMPTS, RESPONSES, normalize=False)
    assert status == 200 and np.allclose(body["rewards"], raw, atol=1e-4)          # --normalize false: raw
    assert not np.allclose(raw, (raw - mean) / std, atol=1e-2)                     # which differs from standardized
    assert info["normalize"] is False and info["head"] == head


MOST = 12


def _held_connections(port: int) -> dict:
    """How long the proxy holds a connection that sends part of its headers, and one that sends an HTTP/0.9
    line (seconds until it closes them); what a connection past serve.max_connections is answered."""
    def closed_after(data: bytes) -> float:
        with socket.create_connection(("127.0.0.1", port), timeout=60) as s:
            t0 = time.time()
            s.sendall(data)
            while s.recv(4096):
                pass
            return time.time() - t0
    held = {"partial headers": closed_after(b"POST /score HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Ty"),
            "HTTP/0.9": closed_after(b"GET /healthz\r\n")}
    idle = [socket.create_connection(("127.0.0.1", port), timeout=60) for _ in range(MOST)]
    time.sleep(0.3)
    with socket.create_connection(("127.0.0.1", port), timeout=60) as extra:
        held["one past the bound"] = extra.recv(4096)
    for s in idle:
        s.close()
    time.sleep(0.3)
    return held


def _until_refused(url: str, statuses: list[int]) -> None:
    """POST /score in a loop, recording each status, until the server no longer accepts connections. A response
    cut off as the proxy process exits (its headers sent, its body not: IncompleteRead) is the connection ending
    too, not a status."""
    refused = 0
    while refused < 3:
        try:
            statuses.append(_call(url, "/score", {"prompts": PROMPTS[:1], "responses": RESPONSES[:1]})[0])
            refused = 0
        except (OSError, http.client.HTTPException):
            refused += 1
            time.sleep(0.2)


def _changed_copy(run, tmp_path, rel: str, change) -> str:
    """A copy of a finished run with one stored JSON document changed by hand (change: its dict, in place)."""
    import shutil
    copy = tmp_path / "changed"
    shutil.copytree(run.local_path(), copy)
    doc = json.loads((copy / rel).read_text())
    change(doc)
    (copy / rel).write_text(json.dumps(doc, indent=2, sort_keys=True))
    return str(copy)


@pytest.mark.parametrize("case", ["missing run", "missing head", "port in use", "changed report",
                                  "changed head layer"])
def test_serve_refuses_early_with_one_line(local_run, tmp_path, case):
    _, _, run = local_run
    taken = socket.socket()
    taken.bind(("127.0.0.1", 0))
    taken.listen(1)
    if case == "changed report":                    # the model's text settings, which every head scores with
        changed = _changed_copy(run, tmp_path, "report.json",
                                lambda doc: doc["config"]["embed"].update(max_length=doc["config"]["embed"]
                                                                          ["max_length"] // 2))
    elif case == "changed head layer":              # the issue's own example: the layer a head reads
        changed = _changed_copy(run, tmp_path, "heads/selected.json",
                                lambda doc: doc["meta"].update(embed_layer=[v - 1 for v in
                                                                            doc["meta"]["embed_layer"]]))
    args = {"missing run": ["--run", str(tmp_path / "nope")],
            "missing head": ["--run", run.uri, "--head", "nope-f1-s0"],
            "port in use": ["--run", run.uri, "--port", str(taken.getsockname()[1])],
            "changed report": ["--run", changed] if case == "changed report" else [],
            "changed head layer": ["--run", changed] if case == "changed head layer" else []}[case]
    env = {k: v for k, v in os.environ.items() if k != "RAY_ADDRESS"}
    done = subprocess.run([sys.executable, "-m", "lens_ray.cli", "serve", *args], capture_output=True, text=True,
                          env=env, timeout=120)
    taken.close()
    lines = [line for line in done.stderr.splitlines() if line.strip()]
    assert done.returncode == 2 and len(lines) == 1, done.stderr[-2000:]
    assert {"missing run": "no report.json", "missing head": "no head 'nope-f1-s0'",
            "port in use": "cannot listen on", "changed report": "report.json: does not match its checksum",
            "changed head layer": "selected.json: its metadata does not match its checksum"}[case] in lines[0]
    assert "local Ray" not in done.stdout


def test_access_log_and_metrics_name_the_route(server):
    """Each request is one line in the replica's log (in Ray's log folder) that names its route, and counted in
    Prometheus metrics on the node's metrics export port by route and status, with its latency."""
    import re

    import ray
    url = server[0]
    assert _call(url, "/score", {"prompts": PROMPTS[:1], "responses": RESPONSES[:1]})[0] == 200
    assert _call(url, "/score", {"prompts": 1, "responses": RESPONSES[:1]})[0] == 422
    node = ray._private.worker._global_node
    logs = Path(node.get_session_dir_path()) / "logs" / "serve"
    metrics, lines, deadline = "", [], time.time() + 90
    pattern = r'(?:ray_)?lens_ray_requests_total\{[^}]*route="/score"[^}]*status="(\d+)"[^}]*\} (\d+)'
    while time.time() < deadline:
        lines = [line for f in logs.glob("replica_lens-ray-reward_RewardServer_*.log")
                 for line in f.read_text(errors="replace").splitlines()]
        with urllib.request.urlopen(f"http://127.0.0.1:{node.metrics_export_port}/metrics", timeout=30) as resp:
            metrics = resp.read().decode()
        counted = {status: int(n) for status, n in re.findall(pattern, metrics)}
        if counted.get("200", 0) >= 1 and counted.get("422", 0) >= 1:
            break
        time.sleep(2)
    assert counted.get("200", 0) >= 1 and counted.get("422", 0) >= 1, metrics[-3000:]
    assert re.search(r'lens_ray_request_seconds_count\{[^}]*route="/score"', metrics), metrics[-3000:]
    assert re.search(r"lens_ray_batch_items_count", metrics), metrics[-3000:]
    assert any(re.search(r"POST /score 200 [\d.]+ms", line) for line in lines), lines[-20:]
    assert any(re.search(r"POST /score 422 [\d.]+ms", line) for line in lines), lines[-20:]
    assert not any(re.search(r" -- POST / \d{3} ", line) for line in lines), lines[-20:]   # Serve's own: no route
