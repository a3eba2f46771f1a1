"""TlsHttpToolsProtocol: uvicorn serving HTTPS puts the ASGI TLS extension in every scope.

A real uvicorn server in the test's event loop, on a real socket, asked by httpx with real
client certificates; the app answers with what its scope carried.
"""

from __future__ import annotations

import asyncio
import json
import ssl
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import httpx
import pytest
import uvicorn
from tests.mtls_pki import Pki, client_context

from coupon.authority._tls import ServerTls
from coupon.cli._app import EnvironmentProblem
from coupon.cli._serve import bind
from coupon.cli._tls_http import TlsHttpToolsProtocol, serve_options, tls_summary
from coupon.settings import Settings


async def echo_scope(scope: dict[str, Any], receive: Any, send: Any) -> None:
    """An ASGI app that answers with its scope's TLS extension and client address."""
    assert scope["type"] == "http"
    tls = scope.get("extensions", {}).get("tls")
    body = json.dumps(
        {
            "tls": None
            if tls is None
            else {**tls, "chain_type": type(tls["client_cert_chain"]).__name__},
            "scheme": scope["scheme"],
        },
        default=list,
    ).encode()
    await send({"type": "http.response.start", "status": 200, "headers": []})
    await send({"type": "http.response.body", "body": body})


@asynccontextmanager
async def serving(context: ssl.SSLContext | None) -> AsyncIterator[str]:
    """uvicorn with the protocol (and ``context``) on a free port; yields the base URL."""
    sock = bind("127.0.0.1", 0)
    config = uvicorn.Config(
        echo_scope,
        http=TlsHttpToolsProtocol,
        ssl_context_factory=(lambda config, default: context) if context is not None else None,
        lifespan="off",
        log_config=None,
        access_log=False,
    )
    server = uvicorn.Server(config)
    task = asyncio.create_task(server.serve(sockets=[sock]))
    while not server.started:
        await asyncio.sleep(0.01)
    scheme = "https" if context is not None else "http"
    try:
        yield f"{scheme}://localhost:{sock.getsockname()[1]}"
    finally:
        server.should_exit = True
        await task
        sock.close()


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Pki:
    return Pki(tmp_path_factory.mktemp("pki"))


def settings_for(pki: Pki, **extra: Any) -> Settings:
    values: dict[str, Any] = {
        "tls_cert": pki.server.cert,
        "tls_key": pki.server.key,
        "tls_client_ca": pki.ca.cert,
        "tls_client_auth": "optional",
    }
    values.update(extra)
    return Settings(**values)


async def get(url: str, verify: ssl.SSLContext | bool = True, *, times: int = 1) -> list[Any]:
    async with httpx.AsyncClient(verify=verify) as client:
        return [(await client.get(url)).json() for _ in range(times)]


@pytest.mark.asyncio
class TestExtension:
    async def test_client_certificate_reaches_the_scope(self, pki: Pki) -> None:
        """Each request on a mutual-TLS connection carries the verified client certificate."""
        async with serving(ServerTls(settings_for(pki)).context) as url:
            answers = await get(url, client_context(pki, "orders"), times=2)
        for answer in answers:  # the second request reuses the connection
            assert answer["scheme"] == "https"
            assert answer["tls"]["client_cert_chain"] == [pki.clients["orders"].pem]
            assert answer["tls"]["chain_type"] == "tuple"
            assert answer["tls"]["tls_version"] == 0x0304

    async def test_no_certificate(self, pki: Pki) -> None:
        """Without a client certificate the extension is there, with an empty chain."""
        async with serving(ServerTls(settings_for(pki)).context) as url:
            (answer,) = await get(url, client_context(pki))
        assert answer["tls"]["client_cert_chain"] == []

    async def test_plain_http_has_no_extension(self) -> None:
        """Over plain HTTP the scope has no TLS extension at all."""
        async with serving(None) as url:
            (answer,) = await get(url)
        assert answer == {"tls": None, "scheme": "http"}


class TestServeOptions:
    def test_plain(self) -> None:
        """No TLS settings: no TLS keywords, uvicorn's defaults."""
        assert serve_options(Settings()) == {}
        assert tls_summary(Settings()) is None

    def test_tls(self, pki: Pki) -> None:
        """With a certificate: a server context; the summary names the client-auth mode."""
        options = serve_options(settings_for(pki))
        assert isinstance(options["tls"], ssl.SSLContext)
        assert tls_summary(settings_for(pki)) == "1.2 and newer; client certificates optional"

    def test_trusted_proxies_take_the_peer_from_the_connection(self, pki: Pki) -> None:
        """With trusted proxies uvicorn must not rewrite the client from X-Forwarded-For."""
        settings = Settings(tls_trusted_proxies=["127.0.0.1/32"], tls_client_ca=pki.ca.cert)
        assert serve_options(settings) == {"forwarded_for": False}

    @pytest.mark.parametrize(
        "extra",
        [
            {"tls_cert": Path("/nonexistent.pem")},
            {"tls_client_ca": None},
            {"tls_trusted_proxies": ["10.0.0.0/8"], "tls_client_ca": Path("/nonexistent.pem")},
        ],
        ids=["missing certificate", "client auth without CAs", "proxies without a CA file"],
    )
    def test_problems_stop_the_start(self, pki: Pki, extra: dict[str, Any]) -> None:
        """A TLS setting that cannot work is an environment problem before the port is taken."""
        with pytest.raises(EnvironmentProblem):
            serve_options(settings_for(pki, **extra))
