"""Bounds on the connections Ray Serve's HTTP proxy holds, and 503 (not 404) for lens-ray's routes while no
reward model is deployed. Runs inside the proxy process: Serve calls `install` there when
RAY_SERVE_HTTP_PROXY_CALLBACK_IMPORT_PATH names it (`environment()` gives the variables; a local Ray that
lens-ray starts carries them to every process, a cluster sets them on its nodes).

Serve's proxy is uvicorn, which bounds neither how long a client may take to send a request's headers nor how
many connections are open: a client that sends part of its headers (or an HTTP/0.9 line, or nothing) holds a
connection forever, and enough of them exhaust the proxy's file descriptors. Here each connection must complete
a request's headers within `serve.header_timeout_s` of connecting, or of its first byte after a response, else
it is closed; past `serve.max_connections` open connections a new one gets a 503 and is closed at once.
Idle keep-alive connections stay uvicorn's (Serve's keep-alive timeout).
"""
from __future__ import annotations

import json
import os

from starlette.middleware import Middleware

from lens_ray.scoring.protocols import PROTOCOLS

CALLBACK = "lens_ray.distributed.proxy_guard:install"
HEADER_TIMEOUT, MAX_CONNECTIONS = "LENS_RAY_SERVE_HEADER_TIMEOUT_S", "LENS_RAY_SERVE_MAX_CONNECTIONS"
# lens-ray's routes: Serve's own 404 for them (no app deployed yet) becomes a 503
ROUTES = (*(p.route for p in PROTOCOLS.values()), "/info", "/healthz")
BUSY = (b"HTTP/1.1 503 Service Unavailable\r\nContent-Type: application/json\r\nConnection: close\r\n"
        b"Retry-After: 1\r\nContent-Length: %d\r\n\r\n%s")


def environment(header_timeout_s: float, max_connections: int) -> dict[str, str]:
    """The variables that make Serve's proxy run this guard with these bounds."""
    return {"RAY_SERVE_HTTP_PROXY_CALLBACK_IMPORT_PATH": CALLBACK, HEADER_TIMEOUT: repr(float(header_timeout_s)),
            MAX_CONNECTIONS: str(int(max_connections))}


def install() -> list[Middleware]:
    """Serve's proxy callback: bound uvicorn's connections in this process; the middleware that answers 503."""
    timeout = float(os.environ.get(HEADER_TIMEOUT, "10"))
    most = int(os.environ.get(MAX_CONNECTIONS, "1000"))
    from uvicorn.protocols.http import h11_impl, httptools_impl
    for cls in (h11_impl.H11Protocol, httptools_impl.HttpToolsProtocol):
        bound(cls, timeout, most)
    return [Middleware(NoAppYet)]


def bound(cls, timeout: float, most: int) -> None:
    """Patch a uvicorn HTTP protocol class: a header deadline per connection, and at most `most` connections."""
    if getattr(cls, "_lens_ray_bound", False):
        return
    made, received, complete = cls.connection_made, cls.data_received, cls.on_response_complete

    def arm(proto) -> None:
        if getattr(proto, "_lens_timer", None) is None:
            proto._lens_timer = proto.loop.call_later(timeout, expire, proto, proto.cycle)

    def expire(proto, cycle) -> None:
        proto._lens_timer = None
        if proto.transport.is_closing():
            return
        if proto.cycle is cycle:                 # no request's headers completed in time: slow or partial
            proto.transport.close()
        elif getattr(proto, "_lens_partial", False) and proto.cycle.response_complete:
            arm(proto)                           # a request began after one that completed within the bound

    def connection_made(self, transport) -> None:
        made(self, transport)
        if len(self.connections) > most:         # this one included
            body = json.dumps({"error": f"the server has {most} connections open; retry",
                               "field": "connection"}).encode()
            transport.write(BUSY % (len(body), body))
            transport.close()
            return
        arm(self)

    def data_received(self, data: bytes) -> None:
        if self.cycle is None or self.cycle.response_complete:     # bytes of a new request's headers
            self._lens_partial = True
            arm(self)
        received(self, data)

    def on_response_complete(self) -> None:
        self._lens_partial = False
        complete(self)

    cls.connection_made, cls.data_received, cls.on_response_complete = (connection_made, data_received,
                                                                         on_response_complete)
    cls._lens_ray_bound = True


class NoAppYet:
    """ASGI middleware: Serve answers 404 "Path ... not found" for a route no application holds, which is what
    a client of lens-ray's routes meets while `lens-ray serve` starts or shuts down; it gets a 503 (retry)
    instead. lens-ray's own 404s (a wrong method) are JSON and pass unchanged."""

    def __init__(self, app):
        self.app = app

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http" or (scope["path"].rstrip("/") or "/") not in ROUTES:
            return await self.app(scope, receive, send)
        rewrite = False

        async def guarded(message):
            nonlocal rewrite
            if message["type"] == "http.response.start":
                ctype = dict(message.get("headers", [])).get(b"content-type", b"")
                rewrite = message["status"] == 404 and not ctype.startswith(b"application/json")
                if not rewrite:
                    return await send(message)
                body = json.dumps({"error": "no reward model is served here at the moment (starting or "
                                            "shutting down); retry", "field": "path"}).encode()
                await send({"type": "http.response.start", "status": 503,
                            "headers": [(b"content-type", b"application/json"), (b"retry-after", b"1"),
                                        (b"content-length", str(len(body)).encode())]})
                return await send({"type": "http.response.body", "body": body})
            if not rewrite:
                await send(message)

        await self.app(scope, receive, guarded)
