"""Legacy JWT issuers for tests: keys the test generates, tokens PyJWT signs, a JWKS server.

The legacy issuer is what the Authority integrates, not what it tests, so its tokens come from
PyJWT with keys made here. The JWKS is served over real HTTP from a thread on 127.0.0.1.
"""

from __future__ import annotations

import json
import secrets
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import jwt
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from jwt.algorithms import ECAlgorithm, RSAAlgorithm

__all__ = ["HS_SECRET", "JwksServer", "LegacyKey", "claims", "jwks_server", "sign"]

HS_SECRET = "legacy-shared-secret-" + "x" * 32


@dataclass(frozen=True)
class LegacyKey:
    """A private key of the legacy issuer and its public JWK (with ``kid``)."""

    alg: str
    private: Any
    jwk: dict[str, Any]

    @classmethod
    def generate(cls, alg: str, kid: str | None = None) -> LegacyKey:
        """A fresh RS256 (2048-bit RSA) or ES256 (P-256) key."""
        kid = kid or secrets.token_hex(4)
        if alg == "RS256":
            private: Any = rsa.generate_private_key(public_exponent=65537, key_size=2048)
            jwk = RSAAlgorithm.to_jwk(private.public_key(), as_dict=True)
        elif alg == "ES256":
            private = ec.generate_private_key(ec.SECP256R1())
            jwk = ECAlgorithm.to_jwk(private.public_key(), as_dict=True)
        else:
            raise ValueError(alg)
        return cls(alg, private, {**jwk, "kid": kid, "use": "sig"})

    def sign(self, payload: dict[str, Any], *, kid: str | None = "") -> str:
        """The payload signed by this key (header ``kid`` = the JWK's unless given)."""
        headers = {} if kid is None else {"kid": kid or self.jwk["kid"]}
        return jwt.encode(payload, self.private, algorithm=self.alg, headers=headers)


def claims(
    *,
    iss: str = "https://legacy.example",
    sub: str = "alice",
    aud: str | list[str] = "orders",
    scope: str | list[str] | None = "orders:read",
    ttl: int = 300,
    now: int | None = None,
    **extra: Any,
) -> dict[str, Any]:
    """A legacy access token's claims."""
    issued = int(time.time()) if now is None else now
    payload: dict[str, Any] = {
        "iss": iss,
        "sub": sub,
        "aud": aud,
        "iat": issued,
        "exp": issued + ttl,
    }
    if scope is not None:
        payload["scope"] = scope
    payload.update(extra)
    return payload


def sign(payload: dict[str, Any], secret: str = HS_SECRET) -> str:
    """An HS256 token with the shared secret."""
    return jwt.encode(payload, secret.encode(), algorithm="HS256")


@dataclass
class JwksServer:
    """A JWKS document over HTTP; ``fail`` makes it answer 500."""

    keys: list[dict[str, Any]] = field(default_factory=list)
    fail: bool = False
    requests: int = 0
    url: str = ""


@contextmanager
def jwks_server(*keys: LegacyKey) -> Iterator[JwksServer]:
    """Serve ``keys`` at ``http://127.0.0.1:<port>/jwks.json`` until the block ends."""
    state = JwksServer(keys=[k.jwk for k in keys])

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            state.requests += 1
            if state.fail or self.path != "/jwks.json":
                self.send_response(500 if state.fail else 404)
                self.send_header("Content-Length", "0")
                self.end_headers()
                return
            body = json.dumps({"keys": state.keys}).encode()
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, format: str, *args: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    state.url = f"http://127.0.0.1:{server.server_address[1]}/jwks.json"
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield state
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)
