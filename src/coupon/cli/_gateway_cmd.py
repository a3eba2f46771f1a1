"""``coupon gateway``: run the edge reverse proxy from a routes file."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Annotated

import typer

from ._app import EPILOG, EnvironmentProblem, app
from ._serve import bind, serve

__all__ = ["gateway"]


@app.command(epilog=EPILOG, short_help="Run the edge gateway from a routes file.")
def gateway(
    config: Annotated[Path, typer.Option("--config", help="The routes file (TOML).")],
    host: Annotated[str, typer.Option(help="Address to listen on.")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="TCP port; 0 picks a free one.")] = 8080,
    api_key_file: Annotated[
        Path | None,
        typer.Option(
            "--api-key-file",
            help="A file holding the Authority API key (role verifier); else the environment "
            "variable the routes file names (COUPON_GATEWAY_API_KEY by default).",
        ),
    ] = None,
    check: Annotated[
        bool, typer.Option("--check", help="Validate the routes file, print the routes, exit.")
    ] = False,
    log_level: Annotated[str, typer.Option(help="Log level.")] = "info",
) -> None:
    """Run the gateway: route requests to upstreams, checking coupons on the way.

    Each route of the routes file names its upstream and what a coupon must grant
    (resource, action, purpose); requests are validated (path, body size, media type), the
    coupon and its DPoP proof are verified locally with the Authority's keys and revocation
    feed, the tenant's soft and hard limits apply, a POST with an Idempotency-Key runs once,
    and the upstream is called through its resilience pipeline. With Redis configured the
    limits, idempotency keys and DPoP replay cache are shared by every gateway replica.

    GET /_coupon/check serves nginx's auth_request (see deploy/nginx/); /_coupon/healthz,
    /_coupon/readyz and /_coupon/metrics are for operators. See docs/gateway.md.
    """
    from coupon.gateway import build_gateway, load_config
    from coupon.observability import configure_logging

    try:
        parsed = load_config(config)
    except OSError as exc:
        raise EnvironmentProblem(f"cannot read {config}: {exc.strerror}") from None
    except ValueError as exc:
        typer.echo(f"FAIL: {config}: {exc}", err=True)
        raise typer.Exit(2) from None
    if check:
        for route in parsed.routes:
            need = route.requirement
            what = "public" if need is None else f"{need.action} {need.resource}"
            methods = ",".join(sorted(route.methods))
            typer.echo(f"{methods:<12} {route.path:<40} -> {route.upstream:<12} {what}")
        typer.echo(f"OK: {len(parsed.routes)} routes, {len(parsed.upstreams)} upstreams", err=True)
        return
    if api_key_file is not None:
        try:
            api_key = api_key_file.read_text(encoding="utf-8").strip()
        except OSError as exc:
            raise EnvironmentProblem(f"cannot read {api_key_file}: {exc.strerror}") from None
    else:
        api_key = os.environ.get(parsed.api_key_env, "").strip()
    if not api_key:
        raise EnvironmentProblem(
            f"no Authority API key: set {parsed.api_key_env} or pass --api-key-file"
        )
    configure_logging(level=log_level.upper(), json=True)
    sock = bind(host, port)
    bound = sock.getsockname()[1]
    built = build_gateway(parsed, api_key=api_key)
    typer.echo(
        f"Coupon gateway is up on http://{host}:{bound}  "
        f"({len(parsed.routes)} routes; Authority {parsed.authority})",
        err=True,
    )
    serve(built, sock, proxy=True)
