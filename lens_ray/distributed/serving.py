"""A run's reward model as a server on Ray Serve: OpenRLHF's POST /get_reward, POST /score, GET /healthz and
GET /info. The Ray layer for serving: routing, batching, replicas, auth and isolation around `RewardModel`.

    lens-ray serve --run runs/hh_harmless_dev-smollm2 [--head NAME] [--port 8000] [--replicas 2] [--normalize false]
    serve run lens_ray.distributed.serving:app_builder run=runs/hh_harmless_dev-smollm2 normalize=false

One client cannot fail another's request:
- every request is validated in full (`scoring/protocols.py`: types, sizes, nesting depth, text encodable)
  before any of it joins the shared `@serve.batch` queue; a bad one gets a 4xx JSON error naming the field;
- a batch in which an item still fails is scored again item by item, so only the failing item's request fails;
- a body is read with a timeout (408), and at most `serve.max_waiting_bodies` requests wait on their bodies at
  once (503 beyond), so slow clients hold neither the batch queue nor the replica's request slots for long;
- in front, Serve's proxy closes a connection whose headers are not complete within `serve.header_timeout_s`,
  holds at most `serve.max_connections`, and answers 503 rather than 404 while no model is deployed (starting,
  shutting down): `proxy_guard.py`, on the local Ray `lens-ray serve` starts (a cluster sets its variables).
Each replica loads the LM once, in the background: /healthz answers 503 {"status": "loading"} at once until it
is ready, and scoring requests get that 503 too. On a local Ray every port a replica opens is on the node's
address (127.0.0.1), including Serve's inter-deployment gRPC server. A token, when set, is compared by its
SHA-256 (the token itself never enters Serve's config).
"""
from __future__ import annotations

import asyncio
import hashlib
import hmac
import logging
import os
import socket
import threading
import time
from dataclasses import asdict, dataclass

import numpy as np
import ray
from ray import serve
from starlette.requests import Request
from starlette.responses import JSONResponse

from lens_ray.config import ConfigError, LensConfig, ServeConfig, apply_overrides, load_config
from lens_ray.core.progress import Log
from lens_ray.data.finished_run import FinishedRun
from lens_ray.distributed import proxy_guard
from lens_ray.distributed.session import connect
from lens_ray.scoring.protocols import PROTOCOLS, BadRequest, Limits, Protocol, parse_json
from lens_ray.scoring.reward_model import RewardModel
from lens_ray.store.storage import StorageError

APP = "lens-ray-reward"


@dataclass
class ItemFailed:
    """A batch item the model could not score; only its own request fails."""
    reason: str


def _bind_replica_ports_to_node() -> None:
    """Serve's replica opens its inter-deployment gRPC server on [::] (every interface); bind it to this node's
    address instead, which is 127.0.0.1 on a local Ray. Runs in the replica before Serve starts that server."""
    from ray.serve._private import replica
    if getattr(replica, "_lens_ray_bound", False):
        return
    plain, node = replica.add_port_to_grpc_server, ray.util.get_node_ip_address()
    replica.add_port_to_grpc_server = lambda server, address: plain(server, address.replace("[::]", node, 1))
    replica._lens_ray_bound = True


ACCESS = logging.getLogger("ray.serve")       # a replica's log file (Ray's log folder), with the request's id


class Metrics:
    """The server's own Prometheus metrics, through Ray's metrics agent (each node's metrics export port, beside
    Ray Serve's): requests by route and status, their latency, the items of each forward pass."""

    def __init__(self):
        from ray.serve.metrics import Counter, Histogram
        self.requests = Counter("lens_ray_requests", "requests answered, by route and HTTP status",
                                tag_keys=("route", "status"))
        self.latency = Histogram("lens_ray_request_seconds", "time to answer a request, by route",
                                 boundaries=[0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30],
                                 tag_keys=("route",))
        self.batch_items = Histogram("lens_ray_batch_items", "items scored in one forward pass",
                                     boundaries=[1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024, 4096])

    def observe(self, route: str, status: int, seconds: float) -> None:
        self.requests.inc(tags={"route": route, "status": str(status)})
        self.latency.observe(seconds, tags={"route": route})

    def batch(self, items: int) -> None:
        self.batch_items.observe(items)


@serve.deployment(logging_config={"enable_access_log": False})      # its own, naming the route: __call__
class RewardServer:
    def __init__(self, run: str, cfg: dict, token_sha256: str | None):
        _bind_replica_ports_to_node()
        sc = ServeConfig(**cfg)
        self.sc, self.run, self.token_sha256 = sc, run, token_sha256
        self.limits = Limits(sc.max_body_bytes, sc.max_items, sc.max_text_chars)
        self._score_batch.set_max_batch_size(sc.max_batch_size)
        self._score_batch.set_batch_wait_timeout_s(sc.batch_wait_ms / 1000)
        self.stats = {"requests": 0, "items": 0, "errors": 0, "batches": 0, "largest_batch": 0, "item_retries": 0,
                      "timeouts": 0, "started": time.time()}
        self.waiting_bodies = 0
        self.metrics = Metrics()
        self.rm: RewardModel | None = None
        self.template = None
        self.load_error: str | None = None
        threading.Thread(target=self._load, daemon=True).start()      # /healthz answers while the LM loads

    def _load(self) -> None:
        try:
            rm = RewardModel.from_run(self.run, self.sc.head)
            if self.sc.normalize:
                rm.scale                                            # a head without statistics fails here
            self.template = rm.chat_template
            self.rm = rm
        except Exception as exc:                                   # shown by /healthz, /info and every request
            self.load_error = f"{type(exc).__name__}: {exc}"

    async def __call__(self, request: Request) -> JSONResponse:
        """One access-log line and the metrics per request, by route (Serve's own name only the prefix, "/")."""
        started = time.perf_counter()
        path = request.url.path.rstrip("/") or "/"
        response = await self._route(request, path)
        seconds = time.perf_counter() - started
        route = path if path in proxy_guard.ROUTES else "other"           # a bounded label set, whatever clients send
        shown = path[:200].encode("unicode_escape").decode()          # a client's %0A cannot forge a log line
        ACCESS.info("%s %s %d %.1fms", request.method, shown, response.status_code, 1000 * seconds)
        self.metrics.observe(route, response.status_code, seconds)
        return response

    async def _route(self, request: Request, path: str) -> JSONResponse:
        if path == "/healthz":
            return self._health()
        if self.token_sha256 and not self._authorized(request):
            return JSONResponse({"error": "missing or wrong bearer token", "field": "Authorization"}, 401)
        if (request.method, path) == ("GET", "/info"):
            return self.info()
        protocol = next((p for p in PROTOCOLS.values() if p.route == path and request.method == "POST"), None)
        if protocol is None:
            known = ", ".join(f"POST {p.route}" for p in PROTOCOLS.values()) + ", GET /info, GET /healthz"
            return JSONResponse({"error": f"no route {request.method} {path}; routes: {known}", "field": "path"}, 404)
        try:
            if self.rm is None:
                return self._health()
            return await self._answer(protocol, request)
        except BadRequest as bad:
            self.stats["errors"] += 1
            return JSONResponse(bad.body(), bad.status)

    def _health(self) -> JSONResponse:
        if self.rm is not None:
            return JSONResponse({"status": "ok"})
        if self.load_error:
            return JSONResponse({"status": "failed", "error": self.load_error}, 500)
        return JSONResponse({"status": "loading", "error": "the reward model is still loading; retry shortly"}, 503)

    def _authorized(self, request: Request) -> bool:
        scheme, _, token = request.headers.get("authorization", "").partition(" ")
        digest = hashlib.sha256(token.encode()).hexdigest()
        return scheme.lower() == "bearer" and hmac.compare_digest(digest, self.token_sha256)

    async def _body(self, request: Request) -> dict:
        """The request's JSON, read within body_timeout_s, by at most max_waiting_bodies requests at once."""
        declared = request.headers.get("content-length", "")
        if declared.isdigit() and int(declared) > self.limits.max_body_bytes:
            raise BadRequest(413, "body", f"{declared} bytes, more than the limit of {self.limits.max_body_bytes}")
        if self.waiting_bodies >= self.sc.max_waiting_bodies:
            raise BadRequest(503, "body", f"{self.waiting_bodies} requests are still sending their bodies; retry")
        self.waiting_bodies += 1
        try:
            body = await asyncio.wait_for(request.body(), self.sc.body_timeout_s)
        except asyncio.TimeoutError as exc:
            self.stats["timeouts"] += 1
            raise BadRequest(408, "body", f"not received in full within {self.sc.body_timeout_s:g}s") from exc
        finally:
            self.waiting_bodies -= 1
        return parse_json(body, self.limits)

    def info(self) -> JSONResponse:
        rm = self.rm
        model = {} if rm is None else {
            "run": rm.run_uri, "head": rm.head_name, "model": rm.lm.model_id, "embedding_dim": int(rm.head.dim),
            "reward_norm": rm.reward_norm, "max_length": rm.max_length, "truncated": rm.counts["truncated"],
            "texts": rm.counts["texts"], "chat_template_recovery": self.template is not None}
        return JSONResponse({"status": "ok" if rm else ("failed" if self.load_error else "loading"),
                             "normalize": self.sc.normalize, **model, **self.stats,
                             "waiting_bodies": self.waiting_bodies})

    async def _answer(self, protocol: Protocol, request: Request) -> JSONResponse:
        items = protocol.parse(await self._body(request), self.limits, self.template)
        rewards = await self._rewards(items, protocol.items)
        return JSONResponse(protocol.reply(rewards, {"head": self.rm.head_name, "model": self.rm.lm.model_id}))

    async def _rewards(self, items, field: str) -> list[float]:
        self.stats["requests"] += 1
        self.stats["items"] += len(items.responses)
        out = await asyncio.gather(*(self._score_batch((p, r)) for p, r in zip(items.prompts, items.responses)))
        for i, r in enumerate(out):
            if isinstance(r, ItemFailed):
                raise BadRequest(422, f"{field}[{i}]", f"could not be scored ({r.reason})")
        return list(out)

    @serve.batch(max_batch_size=32, batch_wait_timeout_s=0.01)
    async def _score_batch(self, pairs: list[tuple]) -> list[float | ItemFailed]:
        """Every queued item of every request in one forward pass; if that fails, item by item."""
        self.metrics.batch(len(pairs))
        self.stats["batches"] += 1
        self.stats["largest_batch"] = max(self.stats["largest_batch"], len(pairs))
        try:
            return self._score(pairs)
        except Exception:
            self.stats["item_retries"] += len(pairs)
        out: list[float | ItemFailed] = []
        for pair in pairs:
            try:
                out += self._score([pair])
            except Exception as exc:
                out.append(ItemFailed(f"{type(exc).__name__}: {str(exc)[:200]}"))
        return out

    def _score(self, pairs: list[tuple]) -> list[float]:
        rewards = self.rm.score([p for p, _ in pairs], [r for _, r in pairs], batch_size=len(pairs),
                                normalize=self.sc.normalize)
        if not np.isfinite(rewards).all():
            raise FloatingPointError("a non-finite reward")
        return [float(r) for r in rewards]


def build(run: str, sc: ServeConfig):
    """The Serve application of a run's reward model, with sc's replicas, CPUs, batching and limits."""
    token_sha256 = None
    if sc.token_env:
        token = os.environ.get(sc.token_env)
        if not token:
            raise ConfigError(f"serve.token_env: the environment variable {sc.token_env} is not set or empty")
        token_sha256 = hashlib.sha256(token.encode()).hexdigest()
    # request slots: the slow bodies it lets wait, and room for the batch queue beside them
    slots = sc.max_waiting_bodies + 4 * sc.max_batch_size
    return RewardServer.options(num_replicas=sc.replicas, max_ongoing_requests=slots,
                                max_queued_requests=4 * slots,
                                ray_actor_options={"num_cpus": sc.cpus_per_replica}).bind(run, asdict(sc),
                                                                                         token_sha256)


def check(run: str, sc: ServeConfig) -> None:
    """What a server can check before Ray starts: the run and its head (present, verified, of the run's
    dimension), and the head's reward statistics when normalize is asked for."""
    finished = FinishedRun.open(run)
    _, name, meta = finished.head(sc.head)
    if sc.normalize:
        try:
            finished.reward_scale(name, meta)
        except StorageError as exc:
            raise ConfigError(f"serve.normalize: {exc}") from exc


def app_builder(args: dict[str, str]):
    """`serve run lens_ray.distributed.serving:app_builder run=URI [head=...] [normalize=true] ...`:
    every key but `run` is a field of the `serve` config section."""
    args = dict(args)
    if "run" not in args:
        raise ConfigError("app_builder: give run=URI (a finished lens-ray run)")
    run = args.pop("run")
    cfg = apply_overrides(load_config(None), {f"serve.{k}": v for k, v in args.items()})
    check(run, cfg.serve)
    return build(run, cfg.serve)


def serve_run(run: str, cfg: LensConfig, log: Log = print, until: threading.Event | None = None) -> None:
    """`lens-ray serve`: check what can be checked before Ray starts (the run and its head, the token, the port),
    then start Serve's proxy on cfg.serve.host:port and the application, and serve until Ctrl-C (or `until`)."""
    sc = cfg.serve
    check(run, sc)
    app = build(run, sc)                               # a missing token variable fails here
    if not (cfg.ray_address or os.environ.get("RAY_ADDRESS")):
        check_port_free(sc.host, sc.port)              # a local Ray's proxy listens on this machine
        # the local Ray's processes (Serve's proxy among them) start with this environment: the proxy's bounds
        os.environ.update(proxy_guard.environment(sc.header_timeout_s, sc.max_connections))
    connect(cfg.ray_address)
    serve.start(http_options={"host": sc.host, "port": sc.port})
    serve.run(app, name=APP, route_prefix="/", blocking=False)
    url = f"http://{sc.host}:{sc.port}"
    log(f"serving {run} at {url}: POST /get_reward (OpenRLHF: --reward.remote_url {url}/get_reward), "
        "POST /score, GET /healthz (503 while the model loads), GET /info; Ctrl-C stops it")
    until = until or threading.Event()
    try:
        while not until.wait(1.0):
            pass
    except KeyboardInterrupt:
        pass
    serve.delete(APP)
    log("stopped")


def check_port_free(host: str, port: int) -> None:
    """The proxy's port is free on host (else a ConfigError naming it, not a replica's traceback later)."""
    with socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET, socket.SOCK_STREAM) as sock:
        try:
            sock.bind((host, port))
        except OSError as exc:
            raise ConfigError(f"serve.port: cannot listen on {host}:{port} ({exc.strerror}); is another server "
                              "running there? choose another with --port") from exc
