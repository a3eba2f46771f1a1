"""Client certificates as the Authority sees them: identity, mapping, trust, forwarding.

The pure core of mTLS callers (``_mtls.py`` is the adapter): functions over
``cryptography`` certificates, strings and an injected time; no sockets, files or clocks.

- :func:`certificate_identity` names the caller: the SAN URI (``uri:spiffe://...``), else the
  first SAN DNS name (``dns:...``, lower case), else the subject CN (``cn:...``).
- :class:`IdentityMap` gives an identity its roles and tenant; an unlisted identity has none.
- :class:`ClientCertificateValidator` checks a certificate a proxy forwarded: a path to one of
  the client CAs, every certificate valid at ``now``, ``clientAuth`` when the leaf limits its
  uses. (A certificate from the Authority's own handshake was checked by TLS already.)
- :func:`parse_client_cert_field` reads what a proxy forwards: nginx's URL-escaped PEM
  (``$ssl_client_escaped_cert``) or an RFC 9440 byte sequence (``:base64 DER:``).
- :class:`TrustedProxies` says whether a peer address is one whose forwarded field counts.

Untrusted input that is bad raises a ``CouponError`` (``CPN-MTLS-*``), never a raw
``ValueError``; a bad configuration raises ``ValueError`` when it is built.
"""

from __future__ import annotations

import base64
import binascii
import datetime
import ipaddress
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Final
from urllib.parse import unquote

from cryptography import x509
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID
from cryptography.x509.verification import (
    Criticality,
    ExtensionPolicy,
    PolicyBuilder,
    Store,
    VerificationError,
)

from coupon import codes
from coupon._settings_tls import MtlsIdentity, normalise_identity
from coupon.errors import AuthenticationFailed, Forbidden

from ._auth import ROLES

__all__ = [
    "MAX_CHAIN",
    "MAX_FIELD",
    "ClientCertificateValidator",
    "Grant",
    "IdentityMap",
    "TrustedProxies",
    "certificate_identity",
    "load_pem_certificates",
    "parse_client_cert_chain_field",
    "parse_client_cert_field",
]

#: The longest forwarded header value read (a certificate is 1-2 KiB; escaped PEM ~1.5x).
MAX_FIELD: Final = 16 * 1024
#: The most certificates a chain may hold (leaf included).
MAX_CHAIN: Final = 5
_SF_BINARY: Final = re.compile(r":([A-Za-z0-9+/]*={0,2}):")
_OWS: Final = " \t"


def _malformed(reason: str) -> AuthenticationFailed:
    return AuthenticationFailed(codes.MTLS_MALFORMED, reason)


# -- reading certificates ------------------------------------------------------------------------


def load_pem_certificates(pem: str | bytes, *, limit: int = MAX_CHAIN) -> list[x509.Certificate]:
    """The certificates of a PEM document (at least one, at most ``limit``).

    Raises:
        AuthenticationFailed: ``MTLS_MALFORMED`` if it is not ASCII PEM of 1 to ``limit``
            certificates.
    """
    if isinstance(pem, str):
        if not pem.isascii():
            raise _malformed("PEM text is not ASCII")
        pem = pem.encode("ascii")
    if len(pem) > MAX_FIELD * limit:
        raise _malformed(f"PEM is {len(pem)} bytes")
    try:
        certs = x509.load_pem_x509_certificates(pem)
    except ValueError as exc:
        raise _malformed(f"not a PEM certificate: {exc}") from None
    if not 0 < len(certs) <= limit:
        raise _malformed(f"expected 1 to {limit} certificates, found {len(certs)}")
    return certs


def _sf_binary(item: str) -> bytes:
    """The bytes of one RFC 8941 byte sequence (``:base64:``), without parameters."""
    match = _SF_BINARY.fullmatch(item)
    if match is None:
        raise _malformed("not a byte sequence (:base64:)")
    text = match.group(1)
    # RFC 8941 §4.2.7: parsers should not fail when the "=" padding is missing.
    text += "=" * (-len(text) % 4)
    try:
        return base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError):
        raise _malformed("invalid base64 in a byte sequence") from None


def _der(data: bytes) -> x509.Certificate:
    try:
        return x509.load_der_x509_certificate(data)
    except ValueError as exc:
        raise _malformed(f"not a DER certificate: {exc}") from None


def parse_client_cert_field(value: str) -> x509.Certificate:
    """The client certificate in a proxy's header field.

    Accepts an RFC 9440 ``Client-Cert`` value (a byte sequence of the DER certificate) or
    nginx's ``$ssl_client_escaped_cert`` (the PEM certificate, URL-escaped).

    Raises:
        AuthenticationFailed: ``MTLS_MALFORMED`` for anything else, or a value over
            :data:`MAX_FIELD` characters.
    """
    if len(value) > MAX_FIELD:
        raise _malformed(f"forwarded certificate field is {len(value)} characters")
    value = value.strip(_OWS)
    if value.startswith(":"):
        return _der(_sf_binary(value))
    try:
        pem = unquote(value, encoding="ascii", errors="strict")
    except UnicodeDecodeError:
        raise _malformed("escaped PEM is not ASCII") from None
    return load_pem_certificates(pem, limit=1)[0]


def parse_client_cert_chain_field(value: str) -> list[x509.Certificate]:
    """The intermediates in an RFC 9440 ``Client-Cert-Chain`` field (a list of byte sequences).

    Raises:
        AuthenticationFailed: ``MTLS_MALFORMED`` if it is not a list of 1 to
            ``MAX_CHAIN - 1`` DER certificates.
    """
    if len(value) > MAX_FIELD * (MAX_CHAIN - 1):
        raise _malformed(f"forwarded chain field is {len(value)} characters")
    items = [item.strip(_OWS) for item in value.split(",")]
    if not 0 < len(items) < MAX_CHAIN:
        raise _malformed(f"expected 1 to {MAX_CHAIN - 1} chain certificates")
    return [_der(_sf_binary(item)) for item in items]


# -- identity ------------------------------------------------------------------------------------


def _no_identity(reason: str) -> AuthenticationFailed:
    return AuthenticationFailed(codes.MTLS_NO_IDENTITY, reason)


def _checked(identity: str) -> str:
    try:
        return normalise_identity(identity)
    except ValueError:
        raise _no_identity(f"unusable identity {identity[:80]!r}") from None


def certificate_identity(cert: x509.Certificate) -> str:
    """The caller a certificate names: ``uri:<SAN URI>``, ``dns:<SAN DNS>`` or ``cn:<CN>``.

    The SAN URI comes first (a SPIFFE ID; exactly one is allowed), then the first SAN DNS name
    (lower case), then the subject's one common name.

    Raises:
        AuthenticationFailed: ``MTLS_NO_IDENTITY`` if none of them is there (or several URIs
            or CNs make it ambiguous); ``MTLS_MALFORMED`` if the extensions do not parse.
    """
    try:
        san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    except x509.ExtensionNotFound:
        san = None
    except (ValueError, x509.DuplicateExtension, x509.UnsupportedGeneralNameType) as exc:
        raise _malformed(f"certificate extensions do not parse: {exc}") from None
    if san is not None:
        uris = san.get_values_for_type(x509.UniformResourceIdentifier)
        if len(uris) > 1:
            raise _no_identity(f"{len(uris)} URI names: which one is the caller is ambiguous")
        if uris:
            return _checked(f"uri:{uris[0]}")
        names = san.get_values_for_type(x509.DNSName)
        if names:
            return _checked(f"dns:{names[0]}")
    try:
        common = cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)
    except ValueError as exc:  # pragma: no cover - the subject parsed with the certificate
        raise _malformed(f"subject does not parse: {exc}") from None
    if len(common) != 1 or not isinstance(common[0].value, str):
        raise _no_identity("no SAN URI or DNS name and not exactly one subject CN")
    return _checked(f"cn:{common[0].value}")


@dataclass(frozen=True, slots=True)
class Grant:
    """What a mapped identity may do."""

    roles: frozenset[str]
    tenant: str | None


class IdentityMap:
    """Certificate identity -> roles and tenant, from ``mtls_identities``.

    Raises:
        ValueError: an identity is malformed, two identities are the same once normalised
            (``dns:`` names ignore case), or a role is unknown.
    """

    def __init__(self, entries: Mapping[str, MtlsIdentity]) -> None:
        self._grants: dict[str, Grant] = {}
        for written, entry in entries.items():
            identity = normalise_identity(written)
            if identity in self._grants:
                raise ValueError(f"mtls_identities lists {identity!r} twice")
            roles = frozenset(entry.roles)
            if not roles or roles - ROLES:
                raise ValueError(f"{written!r}: roles must be some of {sorted(ROLES)}")
            self._grants[identity] = Grant(roles, entry.tenant)

    def __len__(self) -> int:
        return len(self._grants)

    def lookup(self, identity: str) -> Grant:
        """The grant of ``identity``.

        Raises:
            Forbidden: ``MTLS_UNMAPPED`` if the identity is not listed.
        """
        grant = self._grants.get(identity)
        if grant is None:
            raise Forbidden(
                codes.MTLS_UNMAPPED, f"certificate identity {identity!r} is not in mtls_identities"
            )
        return grant


# -- trust ---------------------------------------------------------------------------------------


def _client_eku(policy: object, cert: x509.Certificate, eku: x509.ExtendedKeyUsage | None) -> None:
    # Like OpenSSL's "sslclient" purpose: a leaf that limits its uses must allow clientAuth.
    if eku is not None and ExtendedKeyUsageOID.CLIENT_AUTH not in eku:
        raise ValueError("extended key usage does not include clientAuth")


def _signing_ku(policy: object, cert: x509.Certificate, ku: x509.KeyUsage | None) -> None:
    if ku is not None and not ku.digital_signature:
        raise ValueError("key usage does not include digitalSignature")


class ClientCertificateValidator:
    """Checks a forwarded client certificate against the client CAs at a given time.

    CA certificates are held to the Web PKI profile (basic constraints, key usage); the leaf
    only to what a TLS server asks of a client certificate (OpenSSL's ``sslclient`` purpose):
    ``clientAuth`` if it has an extended key usage, ``digitalSignature`` if it has a key usage.

    Raises:
        ValueError: ``roots`` is empty.
    """

    def __init__(self, roots: Sequence[x509.Certificate], *, max_depth: int = MAX_CHAIN) -> None:
        if not roots:
            raise ValueError("at least one client CA certificate is needed")
        self._store = Store(list(roots))
        self._depth = max_depth
        self._ee = (
            ExtensionPolicy.permit_all()
            .may_be_present(x509.ExtendedKeyUsage, Criticality.AGNOSTIC, _client_eku)
            .may_be_present(x509.KeyUsage, Criticality.AGNOSTIC, _signing_ku)
        )

    def validate(
        self,
        leaf: x509.Certificate,
        intermediates: Sequence[x509.Certificate] = (),
        *,
        now: datetime.datetime,
    ) -> list[x509.Certificate]:
        """The verified chain, leaf first, ending at a client CA.

        Raises:
            AuthenticationFailed: ``MTLS_UNTRUSTED`` if no valid path exists at ``now``.
        """
        verifier = (
            PolicyBuilder()
            .store(self._store)
            .time(now)
            .max_chain_depth(self._depth)
            .extension_policies(ca_policy=ExtensionPolicy.webpki_defaults_ca(), ee_policy=self._ee)
            .build_client_verifier()
        )
        try:
            verified = verifier.verify(leaf, list(intermediates))
        except (VerificationError, ValueError) as exc:
            raise AuthenticationFailed(
                codes.MTLS_UNTRUSTED, f"client certificate not trusted: {exc}"
            ) from None
        return list(verified.chain)


class TrustedProxies:
    """The networks whose forwarded client certificate field is believed.

    Raises:
        ValueError: an entry is not a CIDR.
    """

    def __init__(self, networks: Iterable[str]) -> None:
        self._networks = tuple(ipaddress.ip_network(n, strict=True) for n in networks)

    def __bool__(self) -> bool:
        return bool(self._networks)

    def trusts(self, peer: str | None) -> bool:
        """Whether ``peer`` (an IP address, as the server saw the connection) is trusted."""
        if not peer or not self._networks:
            return False
        try:
            address = ipaddress.ip_address(peer)
        except ValueError:
            return False  # a Unix socket path or a name: not an address we can vouch for
        if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
            address = address.ipv4_mapped
        return any(address.version == n.version and address in n for n in self._networks)
