"""A small private PKI for mTLS deployments and tests: CAs, server and client certificates.

What ``coupon certs`` runs, and what the tests issue their certificates with. Pure functions
over ``cryptography`` objects and an injected time; files are the CLI's business.

Every certificate gets an ECDSA P-256 key, SHA-256 signatures, a random serial, subject and
authority key identifiers, and starts five minutes before ``now`` (clock skew). CAs may sign
certificates only (``keyCertSign``, ``cRLSign``); leaves are not CAs and carry exactly one
extended key usage, ``serverAuth`` or ``clientAuth``.
"""

from __future__ import annotations

import datetime
import ipaddress
import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Final, Literal

from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.serialization import (
    Encoding,
    NoEncryption,
    PrivateFormat,
    load_pem_private_key,
)
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from coupon.token import x5t_s256

from ._x509 import certificate_identity

__all__ = [
    "Credential",
    "LeafKind",
    "bundle",
    "create_ca",
    "describe",
    "issue_leaf",
    "load_credential",
    "parse_lifetime",
    "renew",
]

LeafKind = Literal["server", "client"]
_SKEW: Final = datetime.timedelta(minutes=5)
_LIFETIME: Final = re.compile(r"(\d{1,6})([mhd])")
_UNITS: Final = {"m": "minutes", "h": "hours", "d": "days"}
_EKU: Final = {"server": ExtendedKeyUsageOID.SERVER_AUTH, "client": ExtendedKeyUsageOID.CLIENT_AUTH}


@dataclass(frozen=True)
class Credential:
    """A certificate, its private key, and the CA certificates above it (not the root)."""

    certificate: x509.Certificate
    key: ec.EllipticCurvePrivateKey
    chain: tuple[x509.Certificate, ...] = field(default=())

    def cert_pem(self) -> bytes:
        """The certificate followed by its intermediates: what a TLS peer sends."""
        return b"".join(c.public_bytes(Encoding.PEM) for c in (self.certificate, *self.chain))

    def key_pem(self) -> bytes:
        """The private key, PKCS#8 PEM, unencrypted (keep the file 0600)."""
        return self.key.private_bytes(Encoding.PEM, PrivateFormat.PKCS8, NoEncryption())


def parse_lifetime(text: str) -> datetime.timedelta:
    """``"90d"``, ``"24h"`` or ``"30m"`` as a duration.

    Raises:
        ValueError: anything else, or zero.
    """
    match = _LIFETIME.fullmatch(text.strip())
    if match is None or int(match.group(1)) == 0:
        raise ValueError(f"a lifetime is a positive number of m, h or d (90d, 24h), not {text!r}")
    return datetime.timedelta(**{_UNITS[match.group(2)]: int(match.group(1))})


def _name(common_name: str | None, organizational_unit: str | None = None) -> x509.Name:
    attributes = []
    if organizational_unit:
        attributes.append(x509.NameAttribute(NameOID.ORGANIZATIONAL_UNIT_NAME, organizational_unit))
    if common_name:
        attributes.append(x509.NameAttribute(NameOID.COMMON_NAME, common_name))
    return x509.Name(attributes)


def _builder(
    subject: x509.Name,
    key: ec.EllipticCurvePrivateKey,
    issuer: Credential | None,
    now: datetime.datetime,
    lifetime: datetime.timedelta,
) -> x509.CertificateBuilder:
    public = key.public_key()
    authority = issuer.key.public_key() if issuer is not None else public
    return (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(issuer.certificate.subject if issuer is not None else subject)
        .public_key(public)
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - _SKEW)
        .not_valid_after(now + lifetime)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(public), critical=False)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(authority), critical=False
        )
    )


def _chain_of(issuer: Credential) -> tuple[x509.Certificate, ...]:
    """What a certificate signed by ``issuer`` is sent with: the issuer unless it is a root."""
    cert = issuer.certificate
    return () if cert.issuer == cert.subject else (cert, *issuer.chain)


def create_ca(
    common_name: str,
    *,
    now: datetime.datetime,
    lifetime: datetime.timedelta = datetime.timedelta(days=365),
    parent: Credential | None = None,
    key: ec.EllipticCurvePrivateKey | None = None,
) -> Credential:
    """A root CA, or an intermediate signed by ``parent`` (which may not sign further CAs)."""
    key = key or ec.generate_private_key(ec.SECP256R1())
    path_length = 1 if parent is None else 0
    builder = (
        _builder(_name(common_name), key, parent, now, lifetime)
        .add_extension(x509.BasicConstraints(ca=True, path_length=path_length), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=False,
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
    )
    signer = parent.key if parent is not None else key
    chain = _chain_of(parent) if parent is not None else ()
    return Credential(builder.sign(signer, hashes.SHA256()), key, chain)


def issue_leaf(
    ca: Credential,
    kind: LeafKind,
    *,
    now: datetime.datetime,
    lifetime: datetime.timedelta,
    common_name: str | None = None,
    organizational_unit: str | None = None,
    dns: Sequence[str] = (),
    ips: Sequence[str] = (),
    uris: Sequence[str] = (),
    key: ec.EllipticCurvePrivateKey | None = None,
) -> Credential:
    """A server or client certificate signed by ``ca``.

    Raises:
        ValueError: no name at all (no CN, DNS, IP or URI), or an IP that does not parse.
    """
    names: list[x509.GeneralName] = [x509.UniformResourceIdentifier(u) for u in uris]
    names += [x509.DNSName(d) for d in dns]
    names += [x509.IPAddress(ipaddress.ip_address(a)) for a in ips]
    if not names and not common_name:
        raise ValueError("a certificate needs a name: a CN, DNS name, IP address or URI")
    key = key or ec.generate_private_key(ec.SECP256R1())
    subject = _name(common_name, organizational_unit)
    builder = (
        _builder(subject, key, ca, now, lifetime)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=False,
                crl_sign=False,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(x509.ExtendedKeyUsage([_EKU[kind]]), critical=False)
    )
    if names:
        # RFC 5280 §4.2.1.6: critical when the subject is empty, else not.
        builder = builder.add_extension(
            x509.SubjectAlternativeName(names), critical=len(subject) == 0
        )
    return Credential(builder.sign(ca.key, hashes.SHA256()), key, _chain_of(ca))


def _kind(cert: x509.Certificate) -> LeafKind:
    try:
        usages = cert.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
    except x509.ExtensionNotFound:
        raise ValueError("the certificate has no extended key usage to renew") from None
    if ExtendedKeyUsageOID.SERVER_AUTH in usages:
        return "server"
    if ExtendedKeyUsageOID.CLIENT_AUTH in usages:
        return "client"
    raise ValueError("the certificate is neither a server nor a client certificate")


def renew(
    old: x509.Certificate,
    ca: Credential,
    *,
    now: datetime.datetime,
    lifetime: datetime.timedelta | None = None,
) -> Credential:
    """A fresh certificate with ``old``'s names and usage, a new key, signed by ``ca``.

    The lifetime is ``old``'s unless given. The identity the Authority reads stays the same,
    so ``mtls_identities`` needs no change; the ``x5t#S256`` changes (coupons bound to the old
    certificate stop working with the new one: get new ones).

    Raises:
        ValueError: ``old`` is a CA, or has no server or client usage.
    """
    try:
        constraints = old.extensions.get_extension_for_class(x509.BasicConstraints).value
    except x509.ExtensionNotFound:
        constraints = None
    if constraints is not None and constraints.ca:
        raise ValueError("renew leaves only; a new CA is `coupon certs ca` and a bundle")
    try:
        san = old.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    except x509.ExtensionNotFound:
        san = x509.SubjectAlternativeName([])
    common = old.subject.get_attributes_for_oid(NameOID.COMMON_NAME)
    units = old.subject.get_attributes_for_oid(NameOID.ORGANIZATIONAL_UNIT_NAME)
    return issue_leaf(
        ca,
        _kind(old),
        now=now,
        lifetime=lifetime or (old.not_valid_after_utc - old.not_valid_before_utc - _SKEW),
        common_name=str(common[0].value) if common else None,
        organizational_unit=str(units[0].value) if units else None,
        dns=san.get_values_for_type(x509.DNSName),
        ips=[str(a) for a in san.get_values_for_type(x509.IPAddress)],
        uris=san.get_values_for_type(x509.UniformResourceIdentifier),
    )


def load_credential(cert_pem: bytes, key_pem: bytes) -> Credential:
    """A credential from its files (certificate first, then any intermediates).

    Raises:
        ValueError: not PEM, not an EC P-256 key, or the key does not match the certificate.
    """
    certs = x509.load_pem_x509_certificates(cert_pem)
    key = load_pem_private_key(key_pem, password=None)
    if not isinstance(key, ec.EllipticCurvePrivateKey):
        raise ValueError("expected an EC private key (as coupon certs writes)")
    if key.public_key() != certs[0].public_key():
        raise ValueError("the private key does not belong to the certificate")
    return Credential(certs[0], key, tuple(certs[1:]))


def bundle(
    pems: Sequence[bytes], *, now: datetime.datetime
) -> tuple[bytes, list[x509.Certificate]]:
    """One CA bundle from several files: duplicates once, expired certificates left out.

    Returns:
        The bundle's PEM and the expired certificates that were left out.

    Raises:
        ValueError: a file is not PEM certificates, or nothing valid is left.
    """
    seen: set[bytes] = set()
    kept: list[x509.Certificate] = []
    expired: list[x509.Certificate] = []
    for pem in pems:
        for cert in x509.load_pem_x509_certificates(pem):
            der = cert.public_bytes(Encoding.DER)
            if der in seen:
                continue
            seen.add(der)
            (kept if cert.not_valid_after_utc > now else expired).append(cert)
    if not kept:
        raise ValueError("no certificate in the bundle is still valid")
    return b"".join(c.public_bytes(Encoding.PEM) for c in kept), expired


def describe(cert: x509.Certificate, *, now: datetime.datetime) -> dict[str, Any]:
    """What an operator checks: names, identity, thumbprint, validity."""
    try:
        san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
        names = [f"{type(n).__name__}:{n.value}" for n in san]
    except x509.ExtensionNotFound:
        names = []
    try:
        ca = cert.extensions.get_extension_for_class(x509.BasicConstraints).value.ca
    except x509.ExtensionNotFound:
        ca = False
    identity: str | None
    try:
        identity = None if ca else certificate_identity(cert)
    except Exception:  # a certificate that names nobody is still worth describing
        identity = None
    return {
        "subject": cert.subject.rfc4514_string(),
        "issuer": cert.issuer.rfc4514_string(),
        "serial": format(cert.serial_number, "x"),
        "ca": ca,
        "names": names,
        "identity": identity,
        "x5t#S256": x5t_s256(cert.public_bytes(Encoding.DER)),
        "not_before": cert.not_valid_before_utc.isoformat(),
        "not_after": cert.not_valid_after_utc.isoformat(),
        "expires_in_seconds": int((cert.not_valid_after_utc - now).total_seconds()),
    }
