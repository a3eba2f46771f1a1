"""Certificate-bound coupons (RFC 8705 §3): the ``x5t#S256`` confirmation method.

A coupon bound to a client certificate carries ``cnf: {"x5t#S256": <thumbprint>}``; a request
proves possession by presenting that certificate in the mutual-TLS handshake. The TLS layer
has already checked the certificate; here we only compare thumbprints.
"""

from __future__ import annotations

import hashlib
import hmac
from typing import Final

from cryptography import x509
from cryptography.hazmat.primitives.serialization import Encoding

from coupon import codes
from coupon.errors import InvalidProof, InvalidRequest

from .hazmat import b64url_encode

__all__ = ["check_certificate_binding", "x5t_s256", "x5t_s256_from_pem"]

#: A PEM certificate larger than this is refused before parsing (real ones are a few KiB).
MAX_PEM_SIZE: Final = 64 * 1024


def x5t_s256(cert_der: bytes) -> str:
    """The ``x5t#S256`` of a DER certificate: base64url(SHA-256(DER)).

    .. versionadded:: 0.1
    """
    if not isinstance(cert_der, bytes):
        raise TypeError("a DER certificate is bytes")
    return b64url_encode(hashlib.sha256(cert_der).digest())


def x5t_s256_from_pem(pem: bytes | str) -> str:
    """The ``x5t#S256`` of the one certificate in a PEM document.

    Raises:
        InvalidRequest: ``REQUEST_KEY`` if the input is too large, not ASCII, or not exactly
            one parseable X.509 certificate.

    .. versionadded:: 0.1
    """
    if isinstance(pem, str):
        if not pem.isascii():
            raise InvalidRequest(codes.REQUEST_KEY, "PEM text is not ASCII")
        pem = pem.encode("ascii")
    if len(pem) > MAX_PEM_SIZE:
        raise InvalidRequest(codes.REQUEST_KEY, f"PEM is {len(pem)} bytes, limit {MAX_PEM_SIZE}")
    try:
        certs = x509.load_pem_x509_certificates(pem)
    except ValueError as exc:
        raise InvalidRequest(codes.REQUEST_KEY, f"not a PEM certificate: {exc}") from None
    # A chain would make "the" certificate ambiguous: the caller picks the leaf.
    if len(certs) != 1:
        raise InvalidRequest(codes.REQUEST_KEY, f"expected one certificate, found {len(certs)}")
    return x5t_s256(certs[0].public_bytes(Encoding.DER))


def check_certificate_binding(expected: str, cert_der: bytes | None) -> None:
    """Check that the client certificate is the one the coupon is bound to.

    Args:
        expected: the coupon's ``cnf["x5t#S256"]``.
        cert_der: the DER certificate the client presented over mTLS, or None.

    Raises:
        InvalidProof: ``POP_CERT_BINDING`` if no certificate was presented or it differs.

    .. versionadded:: 0.1
    """
    if not isinstance(expected, str):
        raise TypeError("expected is the x5t#S256 string")
    if not cert_der:
        raise InvalidProof(codes.POP_CERT_BINDING, "no client certificate was presented")
    presented = x5t_s256(cert_der)
    # Bytes, not str: compare_digest refuses non-ASCII str, and expected came from a token.
    if not hmac.compare_digest(expected.encode(), presented.encode()):
        raise InvalidProof(
            codes.POP_CERT_BINDING,
            f"client certificate x5t#S256 {presented} is not the bound {expected[:64]!r}",
        )
