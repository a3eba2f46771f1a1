"""Certificate binding (RFC 8705 §3): x5t#S256 and the binding check."""

from __future__ import annotations

import base64
import datetime
import hashlib

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.serialization import Encoding
from cryptography.x509.oid import NameOID

from coupon import codes
from coupon.errors import InvalidProof, InvalidRequest
from coupon.token._mtls import (
    MAX_PEM_SIZE,
    check_certificate_binding,
    x5t_s256,
    x5t_s256_from_pem,
)


def make_certificate(name: str) -> x509.Certificate:
    """A throwaway self-signed certificate; only its bytes matter here."""
    key = ec.generate_private_key(ec.SECP256R1())
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)])
    start = datetime.datetime(2024, 1, 1, tzinfo=datetime.UTC)
    return (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(start)
        .not_valid_after(start + datetime.timedelta(days=1))
        .sign(key, hashes.SHA256())
    )


@pytest.fixture(scope="module")
def cert() -> x509.Certificate:
    return make_certificate("client-a")


@pytest.fixture(scope="module")
def other_cert() -> x509.Certificate:
    return make_certificate("client-b")


class TestX5tS256:
    def test_is_base64url_sha256_of_der(self, cert: x509.Certificate) -> None:
        """x5t#S256 is the unpadded base64url SHA-256 of the DER bytes."""
        der = cert.public_bytes(Encoding.DER)
        digest = hashlib.sha256(der).digest()
        assert x5t_s256(der) == base64.urlsafe_b64encode(digest).rstrip(b"=").decode()
        assert len(x5t_s256(der)) == 43

    def test_text_is_misuse(self) -> None:
        """A str is not a DER certificate: a programming error."""
        with pytest.raises(TypeError):
            x5t_s256("MIIB...")  # type: ignore[arg-type]


class TestX5tS256FromPem:
    def test_matches_der(self, cert: x509.Certificate) -> None:
        """The PEM thumbprint is the thumbprint of the certificate's DER form."""
        pem = cert.public_bytes(Encoding.PEM)
        expected = x5t_s256(cert.public_bytes(Encoding.DER))
        assert x5t_s256_from_pem(pem) == expected
        assert x5t_s256_from_pem(pem.decode()) == expected

    @pytest.mark.parametrize(
        "pem",
        [
            b"",
            "",
            b"not a certificate",
            b"-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n",
            "-----BEGIN CERTIFICATE-----\nÄÖÜ\n-----END CERTIFICATE-----\n",
            b"\x00" * (MAX_PEM_SIZE + 1),
        ],
    )
    def test_garbage(self, pem: bytes | str) -> None:
        """Empty, truncated, non-ASCII or oversized input is a REQUEST_KEY error."""
        with pytest.raises(InvalidRequest) as info:
            x5t_s256_from_pem(pem)
        assert info.value.code is codes.REQUEST_KEY

    def test_chain_is_ambiguous(self, cert: x509.Certificate, other_cert: x509.Certificate) -> None:
        """Two certificates in one PEM are refused: which one is bound would be a guess."""
        pem = cert.public_bytes(Encoding.PEM) + other_cert.public_bytes(Encoding.PEM)
        with pytest.raises(InvalidRequest, match="one certificate"):
            x5t_s256_from_pem(pem)


class TestCheckCertificateBinding:
    def test_bound_certificate_passes(self, cert: x509.Certificate) -> None:
        """The certificate the coupon names passes."""
        der = cert.public_bytes(Encoding.DER)
        check_certificate_binding(x5t_s256(der), der)

    @pytest.mark.parametrize("presented", [None, b""])
    def test_no_certificate(self, cert: x509.Certificate, presented: bytes | None) -> None:
        """No client certificate means no proof of possession."""
        expected = x5t_s256(cert.public_bytes(Encoding.DER))
        with pytest.raises(InvalidProof) as info:
            check_certificate_binding(expected, presented)
        assert info.value.code is codes.POP_CERT_BINDING

    def test_other_certificate(self, cert: x509.Certificate, other_cert: x509.Certificate) -> None:
        """Another certificate is refused, and the reason carries both thumbprints."""
        expected = x5t_s256(cert.public_bytes(Encoding.DER))
        other = other_cert.public_bytes(Encoding.DER)
        with pytest.raises(InvalidProof) as info:
            check_certificate_binding(expected, other)
        assert info.value.code is codes.POP_CERT_BINDING
        assert expected in info.value.reason
        assert x5t_s256(other) in info.value.reason

    def test_one_bit_changed(self, cert: x509.Certificate) -> None:
        """A certificate differing in one bit does not match."""
        der = bytearray(cert.public_bytes(Encoding.DER))
        expected = x5t_s256(bytes(der))
        der[-1] ^= 1
        with pytest.raises(InvalidProof):
            check_certificate_binding(expected, bytes(der))

    @pytest.mark.parametrize("expected", ["", "tö-kén", "x" * 1000])
    def test_untrusted_expected_value(self, cert: x509.Certificate, expected: str) -> None:
        """A malformed bound value (even non-ASCII) is a mismatch, never a TypeError."""
        with pytest.raises(InvalidProof):
            check_certificate_binding(expected, cert.public_bytes(Encoding.DER))

    def test_expected_must_be_text(self, cert: x509.Certificate) -> None:
        """Passing the thumbprint as bytes is a programming error."""
        with pytest.raises(TypeError):
            check_certificate_binding(b"abc", cert.public_bytes(Encoding.DER))  # type: ignore[arg-type]
