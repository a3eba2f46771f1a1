"""The gateway as one ASGI app: the layers, in the order a request meets them.

1. :class:`~coupon.observability.CorrelationMiddleware` — a server span (parent from the
   client's ``traceparent``), ``X-Request-Id`` kept or made, both sent back.
2. :class:`Edge` — the reserved ``/_coupon/*`` endpoints; then path safety, the route,
   body size and media type, each refused before anything else runs.
3. :class:`~coupon.middleware.CouponMiddleware` — the route's coupon and DPoP proof,
   verified locally with keys and revocations from the Authority. If the Authority cannot be
   reached and nothing is cached, the answer is 503 with ``Retry-After``, never 401.
4. :class:`~coupon.ratelimit.RateLimitMiddleware` — the coupon's tenant, soft and hard.
5. :class:`~coupon.idempotency.IdempotencyMiddleware` — ``POST``/``PATCH`` with a key.
6. :class:`~coupon.gateway.Forwarder` — the upstream, through its resilience pipeline.
"""

from __future__ import annotations

import contextlib
from collections.abc import Awaitable, Callable, Mapping
from typing import Any, Final

import httpx
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest

from coupon import codes
from coupon._asgi import ASGIApp, Receive, Scope, Send, refuse, respond
from coupon.errors import CouponError, DependencyUnavailable, GatewayError, InternalError
from coupon.idempotency import IdempotencyGuard, IdempotencyMiddleware, MemoryIdempotencyStore
from coupon.middleware import CouponDecision, CouponMiddleware
from coupon.observability import (
    CorrelationMiddleware,
    IdempotencyMetrics,
    RateLimitMetrics,
    ResilienceMetrics,
    get_logger,
)
from coupon.ratelimit import RateLimitConfig, RateLimiter, RateLimitMiddleware, TenantLimits
from coupon.resilience import Pipeline
from coupon.sdk import LocalVerifier
from coupon.token import Verified

from ._check import CheckEndpoint
from ._config import GatewayConfig, GatewayRoute
from ._metrics import GatewayMetrics
from ._proxy import Forwarder
from ._routes import (
    GatewayTable,
    check_body_rules,
    check_headers,
    check_path,
    route_of,
    tenant_of,
)

__all__ = ["DEFAULT_LIMITS", "Edge", "Gateway", "build_gateway"]

#: Limits used when the routes file has no ``[limits]`` table: generous, never unlimited.
DEFAULT_LIMITS: Final = TenantLimits(soft_per_s=500, hard_per_s=1000, burst=2000, name="default")
_log = get_logger("coupon.gateway")
Endpoint = Callable[[Scope, Receive, Send], Awaitable[None]]


class Edge:
    """Serves ``/_coupon/*`` and refuses what no route may carry; marks the route in state.

    At most ``max_in_flight`` routed requests run at once; one more is refused at once with
    ``CPN-GW-009`` (503, ``Retry-After``) before any work, so an overload is a bounded rate
    of fast refusals instead of a queue that every request waits in.
    """

    def __init__(
        self,
        app: ASGIApp,
        *,
        table: GatewayTable,
        internal: Mapping[str, Endpoint],
        max_in_flight: int = 512,
        metrics: GatewayMetrics | None = None,
    ) -> None:
        self.app = app
        self.table = table
        self.internal = internal
        self.max_in_flight = max_in_flight
        self.in_flight = 0
        self._metrics = metrics

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        path = str(scope.get("path", "/"))
        if path.startswith("/_coupon/"):
            endpoint = self.internal.get(path)
            if endpoint is None:
                await refuse(scope, send, GatewayError(codes.GATEWAY_NO_ROUTE, "no such endpoint"))
                return
            await endpoint(scope, receive, send)
            return
        if self.in_flight >= self.max_in_flight:
            if self._metrics is not None:
                self._metrics.shed.inc()
            busy = GatewayError(codes.GATEWAY_BUSY, f"{self.in_flight} requests in flight")
            await refuse(scope, send, busy)
            return
        try:
            route = self._admit(scope)
        except CouponError as exc:
            await refuse(scope, send, exc)
            return
        scope.setdefault("state", {})["gateway_route"] = route
        scope["route"] = route  # named in the access metrics
        self.in_flight += 1
        try:
            await self.app(scope, receive, send)
        finally:
            self.in_flight -= 1

    def _admit(self, scope: Scope) -> GatewayRoute:
        check_headers(scope)
        raw = scope.get("raw_path")
        raw_path = raw.decode("latin-1").split("?", 1)[0] if isinstance(raw, bytes) else None
        path = check_path(raw_path if raw_path is not None else str(scope.get("path", "/")))
        method = str(scope.get("method", "GET")).upper()
        route = self.table.match(method, path)
        check_body_rules(scope, route)
        return route


class _Answered:
    """Turns a :class:`CouponError` from the layers below into its problem answer."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        started = False

        async def tracking(message: Any) -> None:
            nonlocal started
            if message["type"] == "http.response.start":
                started = True
            await send(message)

        route = route_of(scope)
        if route.requirement is not None and not isinstance(scope["state"].get("coupon"), Verified):
            # Defence in depth: the coupon layer must have run for a protected route.
            _log.error("gateway_unverified_protected_route", route=route.path)
            await refuse(scope, send, InternalError(codes.INTERNAL, "not verified"))
            return
        try:
            await self.app(scope, receive, tracking)
        except CouponError as exc:
            if started:
                raise
            _log.info("gateway_refused", code=exc.code.code, reason=exc.reason)
            await refuse(scope, send, exc)


class Gateway:
    """The whole gateway; owns the HTTP client and the verifier's background sync."""

    def __init__(
        self,
        app: ASGIApp,
        *,
        verifier: LocalVerifier,
        client: httpx.AsyncClient,
        closers: list[Callable[[], Awaitable[None]]],
        forwarder: Forwarder,
        limiter: RateLimiter,
    ) -> None:
        self.app = app
        self.verifier = verifier
        self.client = client
        self.forwarder = forwarder
        self.limiter = limiter
        self._closers = closers

    async def start(self) -> None:
        """Fetch the Authority's keys and start following its revocations."""
        await self.verifier.start()

    async def stop(self) -> None:
        """Stop the sync and close every connection."""
        await self.verifier.stop()
        for close in self._closers:
            with contextlib.suppress(Exception):
                await close()
        await self.client.aclose()

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "lifespan":
            await self._lifespan(receive, send)
            return
        await self.app(scope, receive, send)

    async def _lifespan(self, receive: Receive, send: Send) -> None:
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                await self.start()
                await send({"type": "lifespan.startup.complete"})
            elif message["type"] == "lifespan.shutdown":
                await self.stop()
                await send({"type": "lifespan.shutdown.complete"})
                return


def build_gateway(
    config: GatewayConfig,
    *,
    api_key: str,
    registry: CollectorRegistry | None = None,
    transport: httpx.AsyncBaseTransport | None = None,
) -> Gateway:
    """Assemble the gateway for ``config``.

    Args:
        config: the validated routes file.
        api_key: the Authority API key (role verifier) that reads the revocation feed.
        registry: where the metrics go (a fresh registry by default).
        transport: the transport toward the Authority (tests serve it in process).
    """
    registry = registry if registry is not None else CollectorRegistry()
    closers: list[Callable[[], Awaitable[None]]] = []
    client = httpx.AsyncClient(  # keys and revocations only; upstreams go through aiohttp
        transport=transport,
        timeout=httpx.Timeout(10.0, connect=2.0),
        follow_redirects=False,
        trust_env=False,
    )
    replay: Any = None  # the verifier's own in-process cache
    redis_gcra = None
    idem_store: Any = MemoryIdempotencyStore()
    if config.redis_url is not None:
        from coupon.authority._replay import RedisReplayStore
        from coupon.idempotency import RedisIdempotencyStore
        from coupon.ratelimit import RedisGcra, redis_client

        shared = redis_client(config.redis_url)
        redis_gcra = RedisGcra(shared, prefix=config.redis_prefix)
        idem_store = RedisIdempotencyStore.from_url(config.redis_url, prefix=config.redis_prefix)
        closers += [shared.aclose, idem_store.close]
        if config.replay == "shared":
            replay = RedisReplayStore.from_url(
                config.redis_url, prefix=config.redis_prefix + "dpop:"
            )
            closers.append(replay.close)
    verifier = LocalVerifier(
        config.authority,
        api_key=api_key,
        issuers=config.issuers,
        client=client,
        max_staleness=config.max_staleness,
        replay=replay,
    )
    metrics = GatewayMetrics(registry)
    resilience = ResilienceMetrics(registry)
    pipelines = {
        name: Pipeline(up.pipeline, hooks=[resilience]) for name, up in config.upstreams.items()
    }
    forwarder = Forwarder(config.upstreams, pipelines=pipelines)
    closers.append(forwarder.close)
    limits = config.limits or RateLimitConfig(DEFAULT_LIMITS)
    limiter = RateLimiter(limits, redis=redis_gcra, hooks=[RateLimitMetrics(registry)])
    guard = IdempotencyGuard(idem_store, hooks=[IdempotencyMetrics(registry)])

    def idempotency_tenant(scope: Scope) -> str | None:
        return tenant_of(scope) if route_of(scope).idempotency else None

    protected = [
        (method, route.path, route.requirement)
        for route in config.routes
        if route.requirement is not None
        for method in sorted(route.methods)
    ]
    inner: ASGIApp = IdempotencyMiddleware(
        _Answered(forwarder), guard=guard, tenant_of=idempotency_tenant
    )
    inner = RateLimitMiddleware(
        inner, limiter=limiter, tenant_of=tenant_of, key_of=lambda s: route_of(s).rate_key
    )

    def decided(decision: CouponDecision) -> None:
        metrics.decision(decision)

    coupon_layer = CouponMiddleware(
        inner,
        verifier=verifier,
        audience=config.audience,
        routes=protected,
        on_decision=decided,
        public_url=config.public_url,
    )
    table = GatewayTable(config.routes)
    internal: dict[str, Endpoint] = {
        "/_coupon/healthz": _healthz,
        "/_coupon/readyz": _readyz(verifier),
        "/_coupon/metrics": _metrics_endpoint(registry),
    }
    if config.check_endpoint:
        internal["/_coupon/check"] = CheckEndpoint(
            table=table,
            verifier=verifier,
            audience=config.audience,
            protected=protected,
            limiter=limiter,
            public_url=config.public_url,
            on_decision=decided,
            allowed=config.check_from,
        )
    edge = Edge(
        coupon_layer,
        table=table,
        internal=internal,
        max_in_flight=config.max_in_flight,
        metrics=metrics,
    )
    metrics.in_flight.set_function(lambda: edge.in_flight)
    app = CorrelationMiddleware(edge, on_response=metrics.response)
    return Gateway(
        app, verifier=verifier, client=client, closers=closers, forwarder=forwarder, limiter=limiter
    )


async def _healthz(scope: Scope, receive: Receive, send: Send) -> None:
    await respond(send, 200, [(b"content-type", b"text/plain")], b"ok\n")


def _readyz(verifier: LocalVerifier) -> Endpoint:
    async def readyz(scope: Scope, receive: Receive, send: Send) -> None:
        store = verifier.revocations.store
        try:
            await verifier.keys.keyset()
            if store.staleness() > store.max_staleness:
                raise DependencyUnavailable(
                    codes.UNAVAILABLE_REVOCATION, "revocation state is not current"
                )
        except CouponError as exc:
            await refuse(scope, send, exc)
            return
        await respond(send, 200, [(b"content-type", b"text/plain")], b"ready\n")

    return readyz


def _metrics_endpoint(registry: CollectorRegistry) -> Endpoint:
    async def metrics(scope: Scope, receive: Receive, send: Send) -> None:
        body = generate_latest(registry)
        await respond(send, 200, [(b"content-type", CONTENT_TYPE_LATEST.encode())], body)

    return metrics
