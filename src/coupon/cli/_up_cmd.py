"""``coupon up``: run the Authority on the embedded default (or on PostgreSQL and Redis)."""

from __future__ import annotations

import faulthandler
import gc
import os
import signal
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer

from coupon.settings import Settings

from ._app import EPILOG, app
from ._serve import bind, serve

if TYPE_CHECKING:
    from fastapi import FastAPI

    from coupon.grpc_api import GrpcServer

__all__ = ["up"]


def _settings_help() -> str:
    lines = ["Settings (environment variables; also keys of the --config TOML file):", "", "\b"]
    for name, field in Settings.model_fields.items():
        default = field.default if field.default_factory is None else "[]"
        if field.default_factory is dict:
            default = "{}"
        if name in ("master_key", "admin_api_key"):
            default = "unset"
        lines.append(f"  COUPON_{name.upper():<34} {field.description or ''} [{default}]")
    return "\n".join(lines) + "\n\n" + EPILOG


def _announce(
    settings: Settings, credential: str | None, port: int, *, grpc: GrpcServer | None = None
) -> None:
    from ._tls_http import tls_summary

    scheme = "https" if settings.tls_cert is not None else "http"
    base = settings.public_url.rstrip("/") or f"{scheme}://{settings.host}:{port}"
    mode = "PostgreSQL" if settings.database_url else f"SQLite in {settings.data_dir}"
    fanout = "Redis" if settings.redis_url else "in-process"
    lines = [
        f"Coupon Authority is up on {base}  (state: {mode}; fan-out: {fanout})",
        f"  API         {base}/v1/docs   (OpenAPI: {base}/v1/openapi.json)",
        f"  JWKS        {base}/.well-known/jwks.json",
        f"  time        {base}/v1/time",
        f"  health      {base}/healthz  {base}/readyz  {base}/metrics",
    ]
    if (tls := tls_summary(settings)) is not None:
        lines.append(f"  TLS         {tls}")
    if settings.ledger_enabled:
        lines.append(f"  ledger      {base}/v1/ledger/checkpoint  (key: {base}/v1/ledger/key)")
    for provider in settings.oidc_provider_list:
        lines.append(f"  OIDC        {provider.issuer}  (audience {provider.audience})")
    if grpc is not None:
        host = f"[{settings.host}]" if ":" in settings.host else settings.host
        lines.append(
            f"  gRPC        {host}:{grpc.port}  (coupon.v1.CouponAuthority, {grpc.security}; "
            f"DPoP htu {grpc.attenuate_htu})"
        )
    if credential:
        lines.append(f"  admin key   {credential}")
        if not settings.database_url:
            lines.append(f"              (kept in {settings.data_dir / 'admin.key'}, mode 0600)")
    lines.append("Press Ctrl-C to stop.")
    typer.echo("\n".join(lines))


@app.command(epilog=_settings_help(), short_help="Run the Authority (embedded default).")
def up(
    host: Annotated[str | None, typer.Option(help="Address to listen on [127.0.0.1].")] = None,
    port: Annotated[int | None, typer.Option(help="TCP port; 0 picks a free one [8700].")] = None,
    data_dir: Annotated[
        Path | None, typer.Option("--data-dir", help="Where embedded state lives [var].")
    ] = None,
    config: Annotated[
        Path | None, typer.Option("--config", help="A TOML file of settings (as COUPON_CONFIG).")
    ] = None,
) -> None:
    """Run the Coupon Authority.

    With no settings it runs on the embedded default: SQLite files under the data directory,
    in-process revocation fan-out, replay store and caches. Set COUPON_DATABASE_URL and
    COUPON_REDIS_URL to run on PostgreSQL and Redis; several processes then act as one.
    Set COUPON_GRPC_PORT to serve the same API over gRPC too (coupon.v1.CouponAuthority).
    A second start on the same data directory keeps every key, coupon record and revocation.
    Stops cleanly on Ctrl-C and SIGTERM.
    """
    from coupon.authority.app import create_app
    from coupon.observability import configure_logging

    if config is not None:
        os.environ["COUPON_CONFIG"] = str(config)
    overrides: dict[str, Any] = {
        k: v for k, v in {"host": host, "port": port, "data_dir": data_dir}.items() if v is not None
    }
    settings = Settings(**overrides)
    configure_logging(level=settings.log_level, json=settings.log_json)
    # `kill -USR1 <pid>` prints every thread's stack to stderr: for a stuck process in production.
    faulthandler.register(signal.SIGUSR1, all_threads=True)
    from ._tls_http import serve_options

    tls_options = serve_options(settings)  # before binding: a bad certificate stops it here
    sock = bind(settings.host, settings.port)
    actual_port = sock.getsockname()[1]
    if settings.port == 0:
        settings = settings.model_copy(update={"port": actual_port})
    app: FastAPI  # built below; ready() runs once it serves

    def ready(credential: str | None) -> None:
        # Everything built at start-up lives as long as the process: move it out of the
        # collector's sight, so full collections stop pausing requests for ~80 ms.
        gc.collect()
        gc.freeze()
        _announce(settings, credential, actual_port, grpc=getattr(app.state, "grpc", None))

    app = create_app(settings, on_ready=ready)

    def closing() -> None:
        # Tell long-lived streams first: uvicorn waits for open responses to finish
        # before it runs the app's shutdown.
        authority = getattr(app.state, "authority", None)
        if authority is not None:
            authority.rt.closing.set()

    serve(app, sock, on_exit=closing, **tls_options)
