"""Helpers for the gRPC tests: a throw-away certificate authority, and calls that never raise.

:class:`TestCa` makes a CA and the server and client certificates signed by it with
``cryptography`` (ECDSA P-256), written as PEM files. :func:`call` runs one unary call with the
generated stub and returns an :class:`Outcome`, the answer or the error's status and detail.
"""

from __future__ import annotations

import datetime
import ipaddress
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import grpc
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from coupon.grpc_api import ErrorDetail, read_error_detail

__all__ = ["Issued", "Outcome", "TestCa", "call"]

_Key = ec.EllipticCurvePrivateKey


def _name(cn: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn)])


def _pem_key(key: _Key) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )


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
    """A certificate authority for one test, writing its files into ``directory``."""

    __test__ = False  # not a test class, whatever pytest thinks of the name

    def __init__(self, directory: Path, name: str = "Test CA") -> None:
        self.directory = directory
        directory.mkdir(parents=True, exist_ok=True)
        self.key = ec.generate_private_key(ec.SECP256R1())
        now = datetime.datetime.now(datetime.UTC)
        self.cert = (
            x509.CertificateBuilder()
            .subject_name(_name(name))
            .issuer_name(_name(name))
            .public_key(self.key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(minutes=5))
            .not_valid_after(now + datetime.timedelta(days=1))
            .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
            .add_extension(
                x509.KeyUsage(
                    digital_signature=True,
                    content_commitment=False,
                    key_encipherment=False,
                    data_encipherment=False,
                    key_agreement=False,
                    key_cert_sign=True,
                    crl_sign=True,
                    encipher_only=False,
                    decipher_only=False,
                ),
                critical=True,
            )
            .sign(self.key, hashes.SHA256())
        )
        self.cert_pem = self.cert.public_bytes(serialization.Encoding.PEM)
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
        key = ec.generate_private_key(ec.SECP256R1())
        now = datetime.datetime.now(datetime.UTC)
        names: list[x509.GeneralName] = [x509.UniformResourceIdentifier(u) for u in uris]
        if server:
            names += [
                x509.IPAddress(ipaddress.ip_address("127.0.0.1")),
                x509.DNSName("localhost"),
            ]
        usage = ExtendedKeyUsageOID.SERVER_AUTH if server else ExtendedKeyUsageOID.CLIENT_AUTH
        builder = (
            x509.CertificateBuilder()
            .subject_name(_name(cn))
            .issuer_name(self.cert.subject)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(minutes=5))
            .not_valid_after(now + datetime.timedelta(hours=2))
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(x509.ExtendedKeyUsage([usage]), critical=False)
        )
        if names:
            builder = builder.add_extension(x509.SubjectAlternativeName(names), critical=False)
        cert = builder.sign(self.key, hashes.SHA256())
        stem = filename or cn
        cert_path = self.directory / f"{stem}.crt"
        key_path = self.directory / f"{stem}.key"
        cert_pem = cert.public_bytes(serialization.Encoding.PEM)
        key_pem = _pem_key(key)
        cert_path.write_bytes(cert_pem)
        key_path.write_bytes(key_pem)
        return Issued(cert, cert_pem, key_pem, cert_path, key_path)

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
