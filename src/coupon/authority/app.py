"""The Authority as an ASGI app: ``create_app(settings)``; the runtime starts in the lifespan."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager

from fastapi import FastAPI

from coupon import __version__
from coupon.observability import CorrelationMiddleware
from coupon.settings import Settings

from ._admin import admin_router
from ._problems import handlers
from ._routes import router
from ._runtime import Runtime
from ._service import Authority

__all__ = ["create_app"]


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
        if on_ready is not None:
            on_ready(rt.admin_credential)
        try:
            yield
        finally:
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

    def observe(route: str, method: str, status: int, seconds: float) -> None:
        authority = getattr(app.state, "authority", None)
        if authority is not None:
            authority.rt.metrics.request_seconds.labels(route, method, str(status)).observe(seconds)

    app.add_middleware(CorrelationMiddleware, on_response=observe)
    return app
