"""The Authority as an ASGI app: ``create_app(settings)``; the runtime starts in the lifespan."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager

from fastapi import FastAPI

from coupon import __version__
from coupon.ledger_service import AuditRelay, Ledger, LedgerConfig, emitter_keys, witnessing
from coupon.ledger_service._admin_routes import ledger_router
from coupon.observability import CorrelationMiddleware, LedgerMetrics
from coupon.settings import Settings

from ._admin import admin_router
from ._problems import handlers
from ._routes import router
from ._runtime import Runtime
from ._service import Authority
from ._session_routes import session_router

__all__ = ["create_app"]


async def _start_ledger(rt: Runtime) -> Ledger:
    """The Ledger beside the Authority: same master key, same metrics registry; it trusts the
    Authority's audit key as an emitter."""
    s = rt.settings
    assert rt.master is not None
    ledger = await Ledger.start(
        LedgerConfig(
            database_url=s.ledger_url,
            origin=s.ledger_origin_line,
            batch_size=s.ledger_batch_size,
            batch_wait=s.ledger_batch_wait_ms / 1000,
            checkpoint_interval=s.ledger_checkpoint_interval,
            checkpoint_max_age=s.ledger_checkpoint_max_age,
            key_overlap=s.ledger_key_overlap,
            subject_retention_days=s.ledger_subject_retention_days,
            origin_explicit=bool(s.ledger_origin),
        ),
        rt.master,
        metrics=LedgerMetrics(rt.metrics.registry),
        hsm=rt.hsm,  # COUPON_KEY_BACKEND=pkcs11: checkpoint keys in the same token
    )
    ledger.emitters[rt.audit_signer.kid] = rt.audit_signer.public_key
    ledger.emitters.update(emitter_keys(s.ledger_emitters))
    if s.ledger_witnesses:
        ledger.witnesses.append(witnessing(ledger, s.ledger_witnesses))
    return ledger


def create_app(
    settings: Settings | None = None,
    *,
    runtime: Runtime | None = None,
    on_ready: Callable[[str | None], None] | None = None,
) -> FastAPI:
    """Build the Authority app; it connects to its engines when the server starts it.

    ``on_ready`` is called with the first admin credential (None when it was created before
    and is not kept locally) once everything is up.
    """
    config = settings or Settings()

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        rt = runtime or await Runtime.start(config)
        app.state.authority = Authority(rt)
        app.state.ledger = None
        app.state.grpc = None
        relay: AuditRelay | None = None
        try:
            if rt.settings.ledger_enabled and rt.master is not None:
                app.state.ledger = await _start_ledger(rt)
                relay = AuditRelay(rt.store, app.state.ledger)
                rt.audit_sink.on_stored.append(relay.notify)
                relay.start()
            if rt.settings.grpc_port is not None:
                from coupon.grpc_api import GrpcServer  # gRPC loads only when it serves

                app.state.grpc = await GrpcServer.start(app.state.authority)
            if on_ready is not None:
                on_ready(rt.admin_credential)
            yield
        finally:
            if app.state.grpc is not None:
                await app.state.grpc.stop()
            if relay is not None:
                await relay.stop()
            if app.state.ledger is not None:
                await app.state.ledger.stop()
            if runtime is None:
                await rt.stop()

    app = FastAPI(
        title="Coupon Authority",
        version=__version__,
        summary="Issue, attenuate, verify, introspect and revoke coupons.",
        lifespan=lifespan,
        exception_handlers=handlers(),
        openapi_url="/v1/openapi.json",
        docs_url="/v1/docs",
        redoc_url=None,
    )
    app.include_router(router)
    app.include_router(admin_router)
    app.include_router(ledger_router)
    app.include_router(session_router)

    def observe(route: str, method: str, status: int, seconds: float) -> None:
        authority = getattr(app.state, "authority", None)
        if authority is not None:
            authority.rt.metrics.request_seconds.labels(route, method, str(status)).observe(seconds)

    app.add_middleware(CorrelationMiddleware, on_response=observe)
    return app
