"""Helpers for the gRPC tests: a throw-away certificate authority, and calls that never raise.

:class:`TestCa` makes a CA and the server and client certificates signed by it with the
project's PKI core (``coupon.authority._pki``, the one ``coupon certs`` uses), written as PEM
files. :func:`call` runs one unary call with the
generated stub and returns an :class:`Outcome`, the answer or the error's status and detail.
"""

from __future__ import annotations

import datetime
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import grpc
from cryptography import x509
from cryptography.hazmat.primitives import serialization

from coupon.authority._pki import create_ca, issue_leaf
from coupon.grpc_api import ErrorDetail, read_error_detail

__all__ = ["Issued", "Outcome", "TestCa", "call"]


def _now() -> datetime.datetime:
    return datetime.datetime.now(datetime.UTC)


@dataclass(frozen=True)
class Issued:
    """A certificate and its key, as PEM files and bytes."""

    cert: x509.Certificate
    cert_pem: bytes
    key_pem: bytes
    cert_path: Path
    key_path: Path

    @property
    def der(self) -> bytes:
        """The certificate's DER encoding (what ``x5t#S256`` hashes)."""
        return self.cert.public_bytes(serialization.Encoding.DER)


class TestCa:
    """A certificate authority for one test (``coupon certs``' own PKI core), writing its
    files into ``directory``."""

    __test__ = False  # a helper, not a test class

    def __init__(self, directory: Path, name: str = "Test CA") -> None:
        self.directory = directory
        directory.mkdir(parents=True, exist_ok=True)
        self.credential = create_ca(name, now=_now(), lifetime=datetime.timedelta(days=1))
        self.cert = self.credential.certificate
        self.cert_pem = self.credential.cert_pem()
        self.cert_path = directory / f"{name.replace(' ', '-').lower()}.pem"
        self.cert_path.write_bytes(self.cert_pem)

    def issue(
        self,
        cn: str,
        *,
        server: bool = False,
        uris: Sequence[str] = (),
        filename: str | None = None,
    ) -> Issued:
        """A leaf certificate: a server's (for 127.0.0.1 and localhost) or a client's."""
        leaf = issue_leaf(
            self.credential,
            "server" if server else "client",
            now=_now(),
            lifetime=datetime.timedelta(hours=2),
            common_name=cn,
            dns=["localhost"] if server else (),
            ips=["127.0.0.1"] if server else (),
            uris=uris,
        )
        stem = filename or cn
        cert_path = self.directory / f"{stem}.crt"
        key_path = self.directory / f"{stem}.key"
        cert_pem, key_pem = leaf.cert_pem(), leaf.key_pem()
        cert_path.write_bytes(cert_pem)
        key_path.write_bytes(key_pem)
        return Issued(leaf.certificate, cert_pem, key_pem, cert_path, key_path)

    def channel_credentials(self, client: Issued | None = None) -> grpc.ChannelCredentials:
        """Credentials that trust this CA, presenting ``client`` when given."""
        if client is None:
            return grpc.ssl_channel_credentials(root_certificates=self.cert_pem)
        return grpc.ssl_channel_credentials(
            root_certificates=self.cert_pem,
            private_key=client.key_pem,
            certificate_chain=client.cert_pem,
        )


@dataclass
class Outcome:
    """One unary call's result: the answer, or the status and detail of the error."""

    status: grpc.StatusCode
    answer: Any = None
    detail: ErrorDetail | None = None
    details: str = ""
    trailing: dict[str, str | bytes] = field(default_factory=dict)

    @property
    def code(self) -> str | None:
        """The stable error code of a failed call (None for a success)."""
        return self.detail.code if self.detail is not None else None


def call(
    method: grpc.UnaryUnaryMultiCallable[Any, Any],
    request: Any,
    metadata: Sequence[tuple[str, str]] = (),
    *,
    timeout: float = 10.0,
) -> Outcome:
    """Run ``stub.Method`` once; never raises for a gRPC error."""
    try:
        answer, rpc = method.with_call(request, metadata=tuple(metadata), timeout=timeout)
    except grpc.RpcError as exc:
        error: Any = exc  # a grpc.Call as well as an RpcError
        trailing = tuple(error.trailing_metadata() or ())
        return Outcome(
            status=error.code(),
            detail=read_error_detail(trailing),
            details=error.details() or "",
            trailing=dict(trailing),
        )
    return Outcome(
        status=grpc.StatusCode.OK, answer=answer, trailing=dict(rpc.trailing_metadata() or ())
    )
