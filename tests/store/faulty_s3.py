"""A faulty S3 endpoint for tests: it forwards each request to a real one (moto's server) and answers 500 to
the requests that make an object exist, after forwarding them (the object is stored; the client is told it
failed) or instead of forwarding them (nothing is stored)."""
from __future__ import annotations

import http.client
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import urlsplit

ERROR = (b'<?xml version="1.0" encoding="UTF-8"?><Error><Code>InternalError</Code>'
         b'<Message>injected by the test</Message></Error>')
# the SDK's streaming framing, undone here so the upstream gets a plain body
STREAMING = ("content-encoding", "x-amz-decoded-content-length", "x-amz-trailer", "transfer-encoding", "expect",
             "content-length")


def completes(method: str, query: str) -> bool:
    """The request that makes an object exist: a single PUT, or the POST that completes a multipart upload."""
    return (method == "PUT" and "partNumber" not in query) or (method == "POST" and "uploadId" in query)


def _chunks(read_line, read) -> bytes:
    """A chunked body (HTTP's or the SDK's aws-chunked framing): the data, trailers dropped."""
    out = b""
    while True:
        size = int(read_line().split(b";")[0].strip() or b"0", 16)
        if not size:
            while read_line().strip():
                pass
            return out
        out += read(size)
        read_line()


class Faulty:
    def __init__(self, upstream: str, forward_failed: bool):
        self.upstream, self.forward_failed = urlsplit(upstream).netloc, forward_failed
        self.failing = True
        self.seen: list[tuple[str, str, bool]] = []          # (method, query, answered with an injected 500)
        outer = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args):
                pass

            def _body(self) -> bytes:
                if self.headers.get("Transfer-Encoding", "").lower() == "chunked":
                    body = _chunks(self.rfile.readline, self.rfile.read)
                else:
                    body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                if "aws-chunked" in self.headers.get("Content-Encoding", ""):
                    import io
                    buf = io.BytesIO(body)
                    body = _chunks(buf.readline, buf.read)
                return body

            def _any(self) -> None:
                body = self._body()
                query = urlsplit(self.path).query
                inject = outer.failing and completes(self.command, query)
                outer.seen.append((self.command, query, inject))
                if inject and not outer.forward_failed:
                    return self._send(500, [("Content-Type", "application/xml")], ERROR)
                headers = {k: v for k, v in self.headers.items() if k.lower() not in STREAMING}
                headers.update({"Content-Length": str(len(body)), "x-amz-content-sha256": "UNSIGNED-PAYLOAD"})
                conn = http.client.HTTPConnection(outer.upstream, timeout=30)
                conn.request(self.command, self.path, body=body, headers=headers)
                resp = conn.getresponse()
                data = resp.read()
                conn.close()
                if inject:
                    return self._send(500, [("Content-Type", "application/xml")], ERROR)
                self._send(resp.status, [(k, v) for k, v in resp.getheaders()
                                         if k.lower() not in ("transfer-encoding", "connection")
                                         and (k.lower() != "content-length" or self.command == "HEAD")],
                           data)

            def _send(self, status: int, headers: list, data: bytes) -> None:
                self.send_response(status)
                for k, v in headers:
                    if k.lower() != "content-length":
                        self.send_header(k, v)
                size = dict((k.lower(), v) for k, v in headers).get("content-length", len(data))
                self.send_header("Content-Length", str(size))          # a HEAD's is the object's size
                self.end_headers()
                if self.command != "HEAD":
                    self.wfile.write(data)

            do_GET = do_PUT = do_POST = do_HEAD = do_DELETE = _any

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.endpoint = f"http://127.0.0.1:{self.server.server_address[1]}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()
