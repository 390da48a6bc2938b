"""The reward server's own limits under load, on a server of tight settings (real HTTP on 127.0.0.1, the test
session's local Ray): at most `serve.max_waiting_bodies` requests wait on their bodies (one more gets 503, and
the slot is free again once they finish), and no forward pass holds more than `serve.max_batch_size` items,
however many requests arrive at once."""
import socket
import time
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest

from lens_ray.scoring.reward_model import RewardModel
from tests.distributed.test_serving import PROMPTS, RESPONSES, _call, _wait_healthy

WAITING, BATCH = 3, 2


@pytest.fixture(scope="module")
def tight(local_run):
    from ray import serve

    from lens_ray.distributed.serving import APP, app_builder
    from tests.conftest import _free_port
    _, _, run = local_run
    port = _free_port()
    serve.start(http_options={"host": "127.0.0.1", "port": port})
    app = app_builder({"run": run.uri, "head": "lens-f4-s0", "max_waiting_bodies": str(WAITING),
                       "max_batch_size": str(BATCH), "batch_wait_ms": "200", "body_timeout_s": "60",
                       "cpus_per_replica": "0.5", "max_items": "8"})
    serve.run(app, name=APP, route_prefix="/", blocking=False)
    url = f"http://127.0.0.1:{port}"
    _wait_healthy(url)
    yield url, RewardModel.from_run(run.uri, "lens-f4-s0"), port
    serve.shutdown()


def _info(url: str) -> dict:
    return _call(url, "/info", None, token=None, method="GET")[1]


def test_one_request_past_the_waiting_bodies_gets_503_and_the_slots_come_back(tight):
    url, rm, port = tight
    head = (b"POST /score HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
            b"Content-Length: 1000\r\n\r\n")
    slow = []
    try:
        for _ in range(WAITING):                     # each sends its headers and part of its body, then waits
            s = socket.create_connection(("127.0.0.1", port), timeout=60)
            s.sendall(head + b'{"prompts": ["')
            slow.append(s)
        deadline = time.time() + 60
        while _info(url)["waiting_bodies"] < WAITING and time.time() < deadline:
            time.sleep(0.2)
        assert _info(url)["waiting_bodies"] == WAITING
        status, body = _call(url, "/score", {"prompts": PROMPTS[:1], "responses": RESPONSES[:1]}, token=None)
        assert (status, body["field"]) == (503, "body") and "still sending their bodies" in body["error"]
    finally:
        for s in slow:
            s.close()
    deadline = time.time() + 90                      # a closed connection frees its slot (at the latest, its timeout)
    while _info(url)["waiting_bodies"] and time.time() < deadline:
        time.sleep(0.2)
    status, body = _call(url, "/score", {"prompts": PROMPTS[:1], "responses": RESPONSES[:1]}, token=None)
    assert status == 200 and body["rewards"][0] == pytest.approx(float(rm.score(PROMPTS[:1], RESPONSES[:1])[0]),
                                                                 abs=1e-5)


def test_no_pass_holds_more_than_max_batch_size_items(tight):
    url, rm, _ = tight
    before = _info(url)
    requests = [{"prompts": [p], "responses": [r]} for p, r in zip(PROMPTS * 4, RESPONSES * 4)]
    requests.append({"prompts": PROMPTS * 2, "responses": RESPONSES * 2})           # one request of 6 items
    with ThreadPoolExecutor(WAITING) as pool:                   # no more at once than may send bodies
        replies = list(pool.map(lambda b: _call(url, "/score", b, token=None), requests))
    assert [status for status, _ in replies] == [200] * len(requests), replies
    assert np.allclose([r for _, body in replies[:-1] for r in body["rewards"]], rm.score(PROMPTS * 4, RESPONSES * 4),
                       atol=1e-5)
    assert np.allclose(replies[-1][1]["rewards"], rm.score(PROMPTS * 2, RESPONSES * 2), atol=1e-5)
    after = _info(url)
    assert after["largest_batch"] == BATCH                       # batched, and never past the limit
    assert after["batches"] - before["batches"] >= 18 // BATCH   # 18 items in passes of at most 2
