"""The proxy guard's middleware on its own (no Ray, no server): Serve's plain-text 404 for lens-ray's routes
becomes a 503 JSON the client can retry; lens-ray's own JSON 404 and every other path pass unchanged. Its
connection bounds run in Serve's proxy: tests/distributed/test_serving.py drives them over real sockets."""
import asyncio
import json

import pytest

from lens_ray.distributed.proxy_guard import CALLBACK, NoAppYet, environment


def _through(path: str, status: int, ctype: bytes, body: bytes) -> tuple[int, dict, bytes]:
    async def app(scope, receive, send):                # what Serve's proxy answers behind the middleware
        await send({"type": "http.response.start", "status": status, "headers": [(b"content-type", ctype)]})
        await send({"type": "http.response.body", "body": body[:5], "more_body": True})
        await send({"type": "http.response.body", "body": body[5:]})

    sent = []

    async def send(message):
        sent.append(message)

    asyncio.run(NoAppYet(app)({"type": "http", "path": path}, None, send))
    return sent[0]["status"], dict(sent[0]["headers"]), b"".join(m.get("body", b"") for m in sent[1:])


@pytest.mark.parametrize("path", ["/score", "/get_reward/", "/info", "/healthz"])
def test_serves_own_404_for_a_lens_ray_route_becomes_a_503(path):
    status, headers, body = _through(path, 404, b"text/plain; charset=utf-8",
                                     f"Path '{path}' not found. Ping http://.../-/routes".encode())
    assert status == 503 and headers[b"retry-after"] == b"1"
    doc = json.loads(body)
    assert doc["field"] == "path" and "retry" in doc["error"]
    assert int(headers[b"content-length"]) == len(body)


@pytest.mark.parametrize("path,status,ctype", [("/score", 404, b"application/json"),    # lens-ray's wrong method
                                               ("/elsewhere", 404, b"text/plain"),      # not lens-ray's route
                                               ("/score", 200, b"application/json")])
def test_other_answers_pass_unchanged(path, status, ctype):
    body = b'{"error": "no route GET /score", "field": "path"}'
    assert _through(path, status, ctype, body) == (status, {b"content-type": ctype}, body)


def test_environment_names_the_callback_and_the_bounds():
    env = environment(2.5, 12)
    assert env["RAY_SERVE_HTTP_PROXY_CALLBACK_IMPORT_PATH"] == CALLBACK
    assert float(env["LENS_RAY_SERVE_HEADER_TIMEOUT_S"]) == 2.5 and env["LENS_RAY_SERVE_MAX_CONNECTIONS"] == "12"
    from ray._common.utils import import_attr
    assert callable(import_attr(CALLBACK))                               # Serve's proxy imports it by this path
