"""Helpers shared by the CLI tests: a fixed clock, key files, coupons and a certificate."""

from __future__ import annotations

import datetime
import json
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from coupon.token import Binding, SigningKey, mint

#: A fixed clock for every test: 2027-01-15T08:00:00Z.
NOW = 1_800_000_000
AUD = "orders-api"
URL = "https://api.example/orders/123"


@dataclass(frozen=True)
class Run:
    """What one ``coupon`` invocation returned and printed."""

    code: int
    out: str
    err: str

    def json(self) -> Any:
        """Stdout parsed as JSON."""
        return json.loads(self.out)


Cli = Callable[..., Run]


@dataclass(frozen=True)
class Keys:
    """Three keys on disk: the issuer's (with a JWKS), the holder's and a delegate's."""

    issuer: SigningKey
    holder: SigningKey
    delegate: SigningKey
    issuer_file: str
    holder_file: str
    delegate_file: str
    jwks_file: str


def write_key(path: Path, key: SigningKey) -> str:
    """Write ``key`` as a private JWK file and return its path."""
    path.write_text(json.dumps(key.private_jwk()))
    return str(path)


def mint_for(keys: Keys, **overrides: Any) -> str:
    """A root coupon from ``keys.issuer`` bound to ``keys.holder``, minted at ``NOW``."""
    fields: dict[str, Any] = {
        "issuer": "https://authority.example",
        "subject": "svc-a",
        "audience": AUD,
        "tenant": "acme",
        "resource": "orders/**",
        "actions": ["read", "write"],
        "purpose": "fulfilment",
        "binding": Binding(jkt=keys.holder.public.thumbprint),
        "now": NOW,
        "jti": "root-1",
        "policy": "v7",
    }
    fields.update(overrides)
    return mint(keys.issuer, **fields)


def make_certificate(path: Path) -> str:
    """Write a self-signed client certificate (PEM) and return its path."""
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "svc-a")])
    start = datetime.datetime(2026, 1, 1, tzinfo=datetime.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(1)
        .not_valid_before(start)
        .not_valid_after(start + datetime.timedelta(days=365))
        .sign(key, hashes.SHA256())
    )
    path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    return str(path)


@dataclass
class Served:
    """A tiny HTTP server on 127.0.0.1: ``routes`` maps a path to (status, body)."""

    base: str
    routes: dict[str, tuple[int, bytes]]
