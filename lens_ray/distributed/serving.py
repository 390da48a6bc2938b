"""A trained head as a reward server on Ray Serve: OpenRLHF's POST /get_reward, POST /score, GET /healthz and
GET /info. The Ray layer for serving: it adds routing, batching, replicas and auth around `RewardModel`.

    lens-ray serve --run runs/lens-hh [--head NAME] [--port 8000] [--replicas 2] [--normalize] [--token-env TOKEN]
    serve run lens_ray.distributed.serving:app_builder run=runs/lens-hh normalize=true

Each replica loads the LM once. RLHF clients send one sample per request, many at once: every item of every
request goes through one `@serve.batch` queue, so concurrent requests share a forward pass. Requests are
checked (reward_protocols.py) before they reach the model: a bad one gets a 4xx JSON error naming the field,
and nothing a client sends reaches the replica's process state. A token, when set, is compared by its
SHA-256 (the token itself never enters Serve's config).
"""
from __future__ import annotations

import asyncio
import hashlib
import hmac
import os
import socket
import time

from ray import serve
from starlette.requests import Request
from starlette.responses import JSONResponse

from lens_ray.config import ConfigError, LensConfig, ServeConfig, apply_overrides, load_config
from lens_ray.core.progress import Log
from lens_ray.data.finished_run import FinishedRun
from lens_ray.distributed.session import connect
from lens_ray.scoring.protocols import BadRequest, Limits, openrlhf_items, openrlhf_reply, parse_json, score_items
from lens_ray.scoring.reward_model import RewardModel

APP = "lens-ray-reward"


@serve.deployment
class RewardServer:
    def __init__(self, run: str, cfg: dict, token_sha256: str | None):
        sc = ServeConfig(**cfg)
        self.rm = RewardModel.from_run(run, sc.head)
        self.normalize, self.token_sha256 = sc.normalize, token_sha256
        if sc.normalize:
            self.rm.normalized(self.rm.head(self.rm.embed(["x"], ["y"]))[:0].detach().numpy())   # fails early
        self.limits = Limits(sc.max_body_bytes, sc.max_items)
        self._score_one.set_max_batch_size(sc.max_batch_size)
        self._score_one.set_batch_wait_timeout_s(sc.batch_wait_ms / 1000)
        self.stats = {"requests": 0, "items": 0, "errors": 0, "batches": 0, "started": time.time()}

    async def __call__(self, request: Request) -> JSONResponse:
        path = request.url.path.rstrip("/") or "/"
        if path == "/healthz":
            return JSONResponse({"status": "ok"})
        if self.token_sha256 and not self._authorized(request):
            return JSONResponse({"error": "missing or wrong bearer token", "field": "Authorization"}, 401)
        routes = {("GET", "/info"): self.info, ("POST", "/get_reward"): self.get_reward,
                  ("POST", "/score"): self.score}
        handler = routes.get((request.method, path))
        if handler is None:
            known = ", ".join(f"{m} {p}" for m, p in routes) + ", GET /healthz"
            return JSONResponse({"error": f"no route {request.method} {path}; routes: {known}", "field": "path"}, 404)
        try:
            return await handler(request)
        except BadRequest as bad:
            self.stats["errors"] += 1
            return JSONResponse(bad.body(), bad.status)

    def _authorized(self, request: Request) -> bool:
        scheme, _, token = request.headers.get("authorization", "").partition(" ")
        digest = hashlib.sha256(token.encode()).hexdigest()
        return scheme.lower() == "bearer" and hmac.compare_digest(digest, self.token_sha256)

    async def info(self, request: Request) -> JSONResponse:
        rm = self.rm
        return JSONResponse({"run": rm.run_uri, "head": rm.head_name, "model": rm.lm.model_id,
                             "embedding_dim": int(rm.head.dim), "normalize": self.normalize,
                             "reward_norm": rm.reward_norm, "max_length": rm.max_length, **self.stats,
                             "truncated": rm.counts["truncated"], "texts": rm.counts["texts"]})

    async def get_reward(self, request: Request) -> JSONResponse:
        items = openrlhf_items(parse_json(await request.body(), self.limits), self.limits)
        return JSONResponse(openrlhf_reply(await self._rewards(items)))

    async def score(self, request: Request) -> JSONResponse:
        items = score_items(parse_json(await request.body(), self.limits), self.limits)
        return JSONResponse({"rewards": await self._rewards(items), "head": self.rm.head_name,
                             "model": self.rm.lm.model_id})

    async def _rewards(self, items) -> list[float]:
        self.stats["requests"] += 1
        self.stats["items"] += len(items.responses)
        return list(await asyncio.gather(*(self._score_one((p, r)) for p, r in zip(items.prompts, items.responses))))

    @serve.batch(max_batch_size=32, batch_wait_timeout_s=0.01)
    async def _score_one(self, pairs: list[tuple]) -> list[float]:
        """Every queued item of every request, in one forward pass."""
        self.stats["batches"] += 1
        prompts, responses = [p for p, _ in pairs], [r for _, r in pairs]
        rewards = self.rm.score(prompts, responses, batch_size=len(pairs), normalize=self.normalize)
        return [float(r) for r in rewards]


def build(run: str, sc: ServeConfig):
    """The Serve application of a run's head, with sc's replicas, CPUs and batching."""
    token_sha256 = None
    if sc.token_env:
        token = os.environ.get(sc.token_env)
        if not token:
            raise ConfigError(f"serve.token_env: the environment variable {sc.token_env} is not set or empty")
        token_sha256 = hashlib.sha256(token.encode()).hexdigest()
    from dataclasses import asdict
    return RewardServer.options(num_replicas=sc.replicas, max_ongoing_requests=max(64, 4 * sc.max_batch_size),
                                ray_actor_options={"num_cpus": sc.cpus_per_replica}).bind(run, asdict(sc),
                                                                                         token_sha256)


def app_builder(args: dict[str, str]):
    """`serve run lens_ray.distributed.serving:app_builder run=URI [head=...] [normalize=true] ...`:
    every key but `run` is a field of the `serve` config section."""
    args = dict(args)
    if "run" not in args:
        raise ConfigError("app_builder: give run=URI (a finished lens-ray run)")
    run = args.pop("run")
    cfg = apply_overrides(load_config(None), {f"serve.{k}": v for k, v in args.items()})
    return build(run, cfg.serve)


def serve_run(run: str, cfg: LensConfig, log: Log = print) -> None:
    """`lens-ray serve`: check what can be checked before Ray starts (the run and its head, the token, the port),
    then start Serve's proxy on cfg.serve.host:port and the application, and serve until Ctrl-C."""
    sc = cfg.serve
    FinishedRun.open(run).head(sc.head)                # a missing run or head, or a foreign one, fails here
    app = build(run, sc)                               # a missing token variable fails here
    check_port_free(sc.host, sc.port)
    connect(cfg.ray_address)
    serve.start(http_options={"host": sc.host, "port": sc.port})
    serve.run(app, name=APP, route_prefix="/", blocking=False)
    url = f"http://{sc.host}:{sc.port}"
    log(f"serving {run} at {url}: POST /get_reward (OpenRLHF: --reward.remote_url {url}/get_reward), "
        "POST /score, GET /healthz, GET /info; Ctrl-C stops it")
    try:
        while True:
            time.sleep(3600)
    except KeyboardInterrupt:
        serve.shutdown()
        log("stopped")


def check_port_free(host: str, port: int) -> None:
    """The proxy's port is free on host (else a ConfigError naming it, not a replica's traceback later)."""
    with socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET, socket.SOCK_STREAM) as sock:
        try:
            sock.bind((host, port))
        except OSError as exc:
            raise ConfigError(f"serve.port: cannot listen on {host}:{port} ({exc.strerror}); is another server "
                              "running there? choose another with --port") from exc
