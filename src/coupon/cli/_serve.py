"""Serving an ASGI app from the CLI: a bound socket, uvicorn on uvloop and httptools."""

from __future__ import annotations

import asyncio
import socket
import ssl
from collections.abc import Callable
from typing import Any

__all__ = ["bind", "serve"]


def bind(host: str, port: int) -> socket.socket:
    """A listening TCP socket on ``host:port`` (port 0 picks a free one)."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    # Accepted sockets inherit TCP_NODELAY; without it a response written as head then body
    # waits ~40 ms for the client's delayed ACK (see docs/benchmarks-authority.md).
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    sock.bind((host, port))
    return sock


def serve(
    app: Any,
    sock: socket.socket,
    *,
    on_exit: Callable[[], None] | None = None,
    proxy: bool = False,
    tls: ssl.SSLContext | None = None,
    forwarded_for: bool | None = None,
) -> None:
    """Serve ``app`` on ``sock`` until SIGINT or SIGTERM.

    ``on_exit`` runs in the event loop as soon as a signal arrives, before uvicorn waits for
    open responses: the place to end long-lived streams. A ``proxy`` passes the upstream's
    ``Date`` and ``Server`` on instead of adding uvicorn's own, and takes the client address
    from the connection, never from a client's ``X-Forwarded-For``. ``forwarded_for=False``
    does the latter alone (default: not for a proxy, as uvicorn does from loopback).

    With ``tls`` (e.g. ``coupon.authority._tls.ServerTls(settings).context``) it serves HTTPS
    and every request's scope carries the ASGI TLS extension, client certificate included.
    """
    import uvicorn
    import uvloop

    from ._tls_http import TlsHttpToolsProtocol

    loop: asyncio.AbstractEventLoop | None = None

    class Server(uvicorn.Server):
        def handle_exit(self, sig: int, frame: Any) -> None:
            if on_exit is not None and loop is not None:
                loop.call_soon_threadsafe(on_exit)
            super().handle_exit(sig, frame)

    server = Server(
        uvicorn.Config(
            app,
            log_config=None,
            access_log=False,
            http=TlsHttpToolsProtocol if tls is not None else "httptools",
            ssl_context_factory=(lambda config, default: tls) if tls is not None else None,
            lifespan="on",
            timeout_graceful_shutdown=10,
            server_header=not proxy,
            date_header=not proxy,
            proxy_headers=not proxy if forwarded_for is None else forwarded_for,
        )
    )

    async def main() -> None:
        nonlocal loop
        loop = asyncio.get_running_loop()
        await server.serve(sockets=[sock])

    # uvloop and httptools (C) instead of asyncio's loop and h11: the HTTP stack, not the
    # verification, is most of a request's cost (docs/benchmarks-authority.md).
    uvloop.run(main())
