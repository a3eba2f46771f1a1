"""uvicorn's httptools protocol, plus the ASGI TLS extension in every request's scope.

uvicorn terminates TLS but does not tell the app about it: no client certificate reaches the
scope. This subclass reads the connection's TLS state once, when the connection is made
(after the handshake, so the client certificate is known and verified), and adds it to each
request on that connection as ``scope["extensions"]["tls"]`` (see
:func:`coupon.authority._tls.asgi_tls_extension`). Everything else is uvicorn's.
"""

from __future__ import annotations

import asyncio
import ssl
from typing import Any

from prometheus_client import CollectorRegistry
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

from coupon.authority._mtls import mtls_authenticators
from coupon.authority._tls import ServerTls, asgi_tls_extension
from coupon.settings import Settings

from ._app import EnvironmentProblem

__all__ = ["TlsHttpToolsProtocol", "serve_options", "tls_summary"]


class TlsHttpToolsProtocol(HttpToolsProtocol):
    """``HttpToolsProtocol`` that fills in the ASGI TLS extension (pass it as ``http=``)."""

    _tls: dict[str, Any] | None = None

    def connection_made(  # type: ignore[override]
        self, transport: asyncio.Transport
    ) -> None:
        super().connection_made(transport)
        ssl_object = transport.get_extra_info("ssl_object")
        self._tls = asgi_tls_extension(ssl_object) if ssl_object is not None else None

    def on_message_begin(self) -> None:
        super().on_message_begin()
        if self._tls is not None:
            # A copy per request: one app cannot change what the next request sees.
            tls: dict[object, object] = dict(self._tls.items())
            tls["client_cert_chain"] = tuple(self._tls["client_cert_chain"])
            self.scope["extensions"] = {"tls": tls}


def serve_options(settings: Settings) -> dict[str, Any]:
    """The TLS keywords of :func:`coupon.cli._serve.serve` for ``settings`` (none without TLS).

    With trusted proxies the client address is the connection's own, never uvicorn's reading
    of ``X-Forwarded-For``: believing a forwarded certificate rests on who is connected.

    Raises:
        EnvironmentProblem: a certificate, key or CA file cannot be used.
    """
    options: dict[str, Any] = {}
    if settings.tls_trusted_proxies:
        options["forwarded_for"] = False
    try:  # what the Authority checks when it starts, checked before the port is taken
        mtls_authenticators(settings, registry=CollectorRegistry())
    except (OSError, ValueError) as exc:
        raise EnvironmentProblem(f"cannot authenticate mTLS callers: {exc}") from exc
    if settings.tls_cert is None and settings.tls_client_auth == "none":
        return options
    try:
        options["tls"] = ServerTls(settings).context
    except (OSError, ssl.SSLError, ValueError) as exc:
        raise EnvironmentProblem(f"cannot serve TLS: {exc}") from exc
    return options


def tls_summary(settings: Settings) -> str | None:
    """One line for the start-up announcement, or None without TLS."""
    if settings.tls_cert is None:
        return None
    asked = {"none": "not asked for", "optional": "optional", "required": "required"}
    line = f"{settings.tls_min_version} and newer; client certificates "
    line += asked[settings.tls_client_auth]
    if settings.tls_trusted_proxies:
        line += f"; forwarded by {', '.join(settings.tls_trusted_proxies)}"
    return line
