"""Fixtures for the CLI tests: run ``coupon`` in-process; keys, coupons and an HTTP server."""

from __future__ import annotations

import io
import json
import sys
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from threading import Thread
from typing import Any

import pytest
from tests.cli.cli_support import NOW, Cli, Keys, Run, Served, mint_for, write_key

from coupon.cli import main
from coupon.token import Binding, SigningKey, attenuate


@pytest.fixture
def cli(capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch) -> Cli:
    """Run ``coupon ARGS...`` through ``main`` and capture its exit code and output."""

    def run(*args: str, stdin: str | None = None) -> Run:
        if stdin is not None:
            monkeypatch.setattr(sys, "stdin", io.StringIO(stdin))
        capsys.readouterr()
        code = main(list(args))
        out, err = capsys.readouterr()
        return Run(code, out, err)

    return run


@pytest.fixture
def keys(tmp_path: Path) -> Keys:
    """An EdDSA issuer (kid issuer-1), an EdDSA holder and an ES256 delegate."""
    issuer = SigningKey.generate(kid="issuer-1")
    holder = SigningKey.generate()
    delegate = SigningKey.generate("ES256")
    jwks = tmp_path / "jwks.json"
    jwks.write_text(json.dumps({"keys": [issuer.public.jwk()]}))
    return Keys(
        issuer,
        holder,
        delegate,
        write_key(tmp_path / "issuer.jwk", issuer),
        write_key(tmp_path / "holder.jwk", holder),
        write_key(tmp_path / "delegate.jwk", delegate),
        str(jwks),
    )


@pytest.fixture
def coupon(keys: Keys) -> str:
    """A root coupon bound to the holder key."""
    return mint_for(keys)


@pytest.fixture
def chain(keys: Keys, coupon: str) -> str:
    """``coupon`` attenuated to the delegate: orders/123, read, fulfilment.ship, 120 s."""
    return attenuate(
        coupon,
        keys.holder,
        delegate=Binding(jkt=keys.delegate.public.thumbprint),
        subject="svc-b",
        resource="orders/123",
        actions=["read"],
        purpose="fulfilment.ship",
        ttl=120,
        now=NOW,
        jti="link-1",
    )


@pytest.fixture
def http_server() -> Iterator[Served]:
    """Serve ``routes`` on a free loopback port for the duration of a test."""
    routes: dict[str, tuple[int, bytes]] = {}

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            status, body = routes.get(self.path, (404, b"not found"))
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, format: str, *args: Any) -> None:
            """Keep the test output quiet."""

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield Served(f"http://127.0.0.1:{server.server_address[1]}", routes)
    finally:
        server.shutdown()
        server.server_close()
        thread.join()
