"""An in-process gateway between a stand-in Authority and an upstream whose faults we control.

The stand-in Authority serves what the gateway reads from a real one — the JWKS of a real
signing key and the revocation feed — so the coupons are real coupons and every check the
gateway makes is the real check. The upstream is served by uvicorn on a loopback port (the
gateway forwards over real HTTP); it counts its calls and can be told to be slow, to fail
with a status, or to answer normally. End-to-end runs against a real ``coupon up`` live in
``tests/services``.
"""

from __future__ import annotations

import asyncio
import copy
import socket
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import httpx
import uvicorn
from prometheus_client import CollectorRegistry
from starlette.applications import Starlette
from starlette.requests import Request as StarletteRequest
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from coupon.gateway import Gateway, build_gateway, parse_config
from coupon.sdk import DPoPAuth
from coupon.token import Binding, KeySet, SigningKey, mint

AUDIENCE = "orders"
EDGE = "http://edge.test"
ISSUER = "https://authority.test"


def routes_file(**pipeline: Any) -> dict[str, Any]:
    """The routes file of the tests, as parsed TOML; ``pipeline`` overrides the upstream's."""
    policy: dict[str, Any] = {"extends": "sync-microservice", **pipeline}
    return {
        "gateway": {
            "audience": AUDIENCE,
            "authority": "http://authority.test",
            "max_staleness": 30,
        },
        "upstreams": {"orders": {"url": "http://orders.test", "pipeline": policy}},
        "routes": [
            {
                "path": "/orders/{order_id}",
                "methods": ["GET", "PUT"],
                "upstream": "orders",
                "resource": "orders/{order_id}",
                "action": "read",
            },
            {
                "path": "/orders/{order_id}/refunds",
                "methods": ["POST"],
                "upstream": "orders",
                "resource": "orders/{order_id}",
                "action": "refund",
                "purpose": "billing",
                "max_body": 64,
            },
            {
                "path": "/public/{rest:path}",
                "methods": ["GET"],
                "upstream": "orders",
                "public": True,
            },
            {
                "path": "/api/v1/{rest:path}",
                "methods": ["GET"],
                "upstream": "orders",
                "public": True,
                "strip_prefix": "/api/v1",
            },
        ],
        "limits": {"default": {"soft_per_s": 50, "hard_per_s": 100, "burst": 100}},
    }


@dataclass
class Upstream:
    """The service behind the gateway: records what it received; misbehaves on demand."""

    calls: int = 0
    delay: float = 0.0
    status: int | None = None
    seen: list[dict[str, Any]] = field(default_factory=list)

    def app(self) -> Starlette:
        async def any_route(request: StarletteRequest) -> Response:
            self.calls += 1
            self.seen.append(
                {
                    "method": request.method,
                    "path": request.url.path,
                    "raw_path": request.scope.get("raw_path", b"").decode("latin-1"),
                    "query": request.url.query,
                    "headers": dict(request.headers),
                    "body": await request.body(),
                }
            )
            if self.delay:
                await asyncio.sleep(self.delay)
            if self.status is not None:
                return JSONResponse({"upstream": "failing"}, status_code=self.status)
            return JSONResponse(
                {"n": self.calls, "path": request.url.path},
                headers={"x-upstream": "orders", "connection": "x-secret", "x-secret": "1"},
            )

        return Starlette(
            routes=[Route("/{path:path}", any_route, methods=["GET", "PUT", "POST", "DELETE"])]
        )


class Authority:
    """Serves the JWKS of a real signing key and a revocation feed, nothing else."""

    def __init__(self) -> None:
        self.key = SigningKey.generate(kid="edge-test-1")
        self.revoked: list[dict[str, Any]] = []
        self.up = True

    def app(self) -> Starlette:
        async def jwks(request: StarletteRequest) -> Response:
            if not self.up:
                return JSONResponse({}, status_code=503)
            return JSONResponse(KeySet([self.key.public]).to_jwks())

        async def feed(request: StarletteRequest) -> Response:
            if not self.up:
                return JSONResponse({}, status_code=503)
            after = int(request.query_params.get("after", "0"))
            page = [r for r in self.revoked if r["seq"] > after]
            return JSONResponse({"revocations": page, "cursor": len(self.revoked)})

        return Starlette(
            routes=[
                Route("/.well-known/jwks.json", jwks),
                Route("/v1/revocations", feed),
            ]
        )


def closed_port() -> int:
    """A loopback port nothing listens on (bound, then released)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
    return port


class Served:
    """An ASGI app served by uvicorn on a free loopback port, in the running event loop."""

    def __init__(self, app: Any) -> None:
        self._sock = socket.socket()
        self._sock.bind(("127.0.0.1", 0))
        self.url = f"http://127.0.0.1:{self._sock.getsockname()[1]}"
        config = uvicorn.Config(app, lifespan="off", log_level="warning", access_log=False)
        self._server = uvicorn.Server(config)
        self._task: asyncio.Task[None] | None = None

    async def start(self) -> None:
        self._task = asyncio.create_task(self._server.serve(sockets=[self._sock]))
        while not self._server.started:
            await asyncio.sleep(0.005)

    async def stop(self) -> None:
        self._server.should_exit = True
        if self._task is not None:
            await self._task
        self._sock.close()


class Hosts(httpx.AsyncBaseTransport):
    """Routes each request to the in-process app serving its host; unknown hosts refuse."""

    def __init__(self, apps: Mapping[str, Any]) -> None:
        self._transports = {h: httpx.ASGITransport(app=a) for h, a in apps.items()}

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        transport = self._transports.get(request.url.host)
        if transport is None:
            raise httpx.ConnectError(f"no route to {request.url.host}", request=request)
        return await transport.handle_async_request(request)


class World:
    """The gateway, its stand-in Authority and upstream, and a coupon holder."""

    def __init__(
        self,
        config: dict[str, Any] | None = None,
        *,
        authority: Authority | None = None,
        holder: SigningKey | None = None,
    ) -> None:
        self.authority = authority or Authority()
        self.upstream = Upstream()
        self.holder = holder or SigningKey.generate()
        self.registry = CollectorRegistry()
        self._config = copy.deepcopy(config or routes_file())
        self._served = Served(self.upstream.app())
        for spec in self._config["upstreams"].values():
            if spec["url"] == "http://orders.test":
                spec["url"] = self._served.url
        self.gateway: Gateway = build_gateway(
            parse_config(self._config),
            api_key="verifier-key",
            registry=self.registry,
            transport=Hosts({"authority.test": self.authority.app()}),
        )

    def coupon(
        self,
        *,
        resource: str = "orders/1",
        actions: tuple[str, ...] = ("read", "refund"),
        tenant: str = "acme",
    ) -> str:
        return mint(
            self.authority.key,
            issuer=ISSUER,
            subject="alice",
            audience=AUDIENCE,
            tenant=tenant,
            resource=resource,
            actions=actions,
            purpose="billing",
            binding=Binding(jkt=self.holder.public.thumbprint),
            now=int(time.time()),
            ttl=300,
        )

    def auth(self, coupon: str | None = None) -> DPoPAuth:
        return DPoPAuth(self.holder, coupon or self.coupon())

    async def __aenter__(self) -> World:
        await self._served.start()
        await self.gateway.start()
        self.client = httpx.AsyncClient(
            transport=httpx.ASGITransport(app=self.gateway), base_url=EDGE
        )
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.client.aclose()
        await self.gateway.stop()
        await self._served.stop()

    def metric(self, name: str, labels: Mapping[str, str] | None = None) -> float:
        value = self.registry.get_sample_value(name, dict(labels or {}))
        return 0.0 if value is None else value
