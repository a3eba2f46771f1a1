"""Real certificates for the mTLS tests: a CA, a stranger CA, a server and client certificates.

Issued with :mod:`coupon.authority._pki` (what ``coupon certs`` runs) and written as files,
so the same material serves a ``coupon up`` subprocess, nginx and in-process TLS servers.
"""

from __future__ import annotations

import datetime
import ssl
from dataclasses import dataclass, field
from pathlib import Path
from typing import Final

from cryptography.hazmat.primitives.serialization import Encoding

from coupon.authority._pki import Credential, create_ca, issue_leaf
from coupon.token import x5t_s256

__all__ = ["HOUR", "Pki", "Written", "client_context", "now"]

HOUR: Final = datetime.timedelta(hours=1)


def now() -> datetime.datetime:
    """The current time, aware."""
    return datetime.datetime.now(datetime.UTC)


@dataclass(frozen=True)
class Written:
    """A credential and the files it was written to."""

    credential: Credential
    cert: Path
    key: Path

    @property
    def pem(self) -> str:
        """The certificate alone, PEM."""
        return self.credential.certificate.public_bytes(Encoding.PEM).decode()

    @property
    def thumbprint(self) -> str:
        """Its ``x5t#S256``."""
        return x5t_s256(self.credential.certificate.public_bytes(Encoding.DER))


@dataclass
class Pki:
    """A directory of test certificates.

    Clients of the trusted CA: ``orders`` (SPIFFE URI), ``billing`` (DNS name), ``legacy``
    (CN only), ``stranger`` (a URI nobody mapped), ``expired`` (ended an hour ago) and
    ``server_only`` (a server certificate presented as a client one). ``rogue`` is a client of
    another CA.
    """

    root: Path
    ca: Written = field(init=False)
    other_ca: Written = field(init=False)
    server: Written = field(init=False)
    clients: dict[str, Written] = field(init=False, default_factory=dict)

    def __post_init__(self) -> None:
        self.root.mkdir(parents=True, exist_ok=True)
        t = now()
        self.ca = self.write("ca", create_ca("Test mTLS CA", now=t))
        self.other_ca = self.write("other-ca", create_ca("Stranger CA", now=t))
        ca, other = self.ca.credential, self.other_ca.credential
        self.server = self.write(
            "server",
            issue_leaf(ca, "server", now=t, lifetime=HOUR, dns=["localhost"], ips=["127.0.0.1"]),
        )
        leaves = {
            "orders": issue_leaf(
                ca, "client", now=t, lifetime=HOUR, uris=["spiffe://example.org/orders"]
            ),
            "billing": issue_leaf(
                ca, "client", now=t, lifetime=HOUR, dns=["Billing.Internal"], common_name="x"
            ),
            "legacy": issue_leaf(ca, "client", now=t, lifetime=HOUR, common_name="legacy-batch"),
            "stranger": issue_leaf(
                ca, "client", now=t, lifetime=HOUR, uris=["spiffe://example.org/stranger"]
            ),
            "expired": issue_leaf(
                ca, "client", now=t - 3 * HOUR, lifetime=HOUR, uris=["spiffe://example.org/orders"]
            ),
            "server_only": issue_leaf(ca, "server", now=t, lifetime=HOUR, dns=["orders.internal"]),
            "rogue": issue_leaf(
                other, "client", now=t, lifetime=HOUR, uris=["spiffe://example.org/orders"]
            ),
        }
        for name, credential in leaves.items():
            self.clients[name] = self.write(name, credential)

    def write(self, name: str, credential: Credential) -> Written:
        """Write ``name.pem`` and ``name.key``."""
        cert, key = self.root / f"{name}.pem", self.root / f"{name}.key"
        cert.write_bytes(credential.cert_pem())
        key.write_bytes(credential.key_pem())
        key.chmod(0o600)
        return Written(credential, cert, key)


def client_context(pki: Pki, client: str | None = None) -> ssl.SSLContext:
    """A client context trusting the test CA, presenting ``client``'s certificate if named."""
    ctx = ssl.create_default_context(cafile=str(pki.ca.cert))
    if client is not None:
        written = pki.clients[client]
        ctx.load_cert_chain(written.cert, written.key)
    return ctx
