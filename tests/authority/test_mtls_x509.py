"""The pure core of mTLS callers: forwarded fields, identity, mapping, trust, proxies.

Known answers from RFC 9440 Appendix A (tests/vectors/README.md, "RFC 9440"), mutations of
them one field or character at a time, certificates from our own PKI for the rest, and
hypothesis for the parsers (bad input is a CouponError, never another exception).
"""

from __future__ import annotations

import base64
import datetime
import hashlib
import json
import typing
from collections.abc import Callable
from pathlib import Path
from typing import Any
from urllib.parse import quote

import pytest
from cryptography import x509
from cryptography.hazmat.primitives.serialization import Encoding
from hypothesis import given
from hypothesis import strategies as st
from pydantic import ValidationError
from tests.mtls_pki import HOUR, now

from coupon import codes
from coupon._settings_tls import MtlsIdentity, Role, normalise_identity
from coupon.authority._auth import ROLES
from coupon.authority._pki import LeafKind, create_ca, issue_leaf
from coupon.authority._x509 import (
    MAX_FIELD,
    ClientCertificateValidator,
    IdentityMap,
    TrustedProxies,
    certificate_identity,
    load_pem_certificates,
    parse_client_cert_chain_field,
    parse_client_cert_field,
)
from coupon.errors import AuthenticationFailed, CouponError, Forbidden
from coupon.settings import Settings
from coupon.token import x5t_s256

VECTORS: dict[str, Any] = json.loads(
    (Path(__file__).parents[1] / "vectors" / "rfc9440.json").read_text()
)
IN_2020 = datetime.datetime(2020, 6, 1, tzinfo=datetime.UTC)


def pem_cert(name: str) -> x509.Certificate:
    return x509.load_pem_x509_certificate(VECTORS["chain_pem"][name].encode())


def der(cert: x509.Certificate) -> bytes:
    return cert.public_bytes(Encoding.DER)


def code_of(exc: pytest.ExceptionInfo[CouponError]) -> str:
    return exc.value.code.code


def refusal(parse: Callable[[str], object], value: str) -> str | None:
    """The code ``parse`` refuses ``value`` with, or None when it accepts it."""
    try:
        parse(value)
    except CouponError as exc:
        return exc.code.code
    return None


class TestRfc9440:
    def test_client_cert_is_the_leaf(self) -> None:
        """The Client-Cert byte sequence holds exactly the leaf's DER (Figure 2 vs Figure 1)."""
        assert der(parse_client_cert_field(VECTORS["client_cert"])) == der(pem_cert("leaf"))

    def test_chain_field_is_intermediate_then_root(self) -> None:
        """Client-Cert-Chain lists the intermediate, then the root (Figure 3)."""
        chain = parse_client_cert_chain_field(VECTORS["client_cert_chain"])
        assert [der(c) for c in chain] == [der(pem_cert("intermediate")), der(pem_cert("root"))]

    def test_path_validates_inside_the_window(self) -> None:
        """Leaf -> intermediate -> root verifies at a time when all three are valid."""
        chain = parse_client_cert_chain_field(VECTORS["client_cert_chain"])
        validator = ClientCertificateValidator([pem_cert("root")])
        path = validator.validate(pem_cert("leaf"), chain[:1], now=IN_2020)
        assert path[0].subject.rfc4514_string() == VECTORS["leaf"]["subject"]
        assert len(path) == 3

    @pytest.mark.parametrize(
        "when",
        [
            datetime.datetime(2021, 1, 23, 22, 55, 34, tzinfo=datetime.UTC),
            datetime.datetime(2020, 1, 14, 22, 55, 32, tzinfo=datetime.UTC),
        ],
        ids=["a second after not_after", "a second before not_before"],
    )
    def test_outside_the_window_is_untrusted(self, when: datetime.datetime) -> None:
        """The same path is refused one second outside the leaf's validity."""
        validator = ClientCertificateValidator([pem_cert("root")])
        with pytest.raises(AuthenticationFailed) as exc:
            validator.validate(pem_cert("leaf"), [pem_cert("intermediate")], now=when)
        assert code_of(exc) == codes.MTLS_UNTRUSTED.code

    def test_missing_intermediate_is_untrusted(self) -> None:
        """Without the intermediate there is no path to the root."""
        validator = ClientCertificateValidator([pem_cert("root")])
        with pytest.raises(AuthenticationFailed) as exc:
            validator.validate(pem_cert("leaf"), [], now=IN_2020)
        assert code_of(exc) == codes.MTLS_UNTRUSTED.code

    def test_intermediate_as_anchor(self) -> None:
        """An intermediate in the CA bundle is a trust anchor on its own (as in the handshake)."""
        validator = ClientCertificateValidator([pem_cert("intermediate")])
        assert len(validator.validate(pem_cert("leaf"), [], now=IN_2020)) == 2

    def test_identity_is_the_cn(self) -> None:
        """The leaf has only an e-mail SAN, which is no identity: the CN names it."""
        assert certificate_identity(pem_cert("leaf")) == VECTORS["leaf"]["identity"]

    def test_thumbprint(self) -> None:
        """x5t#S256 of the forwarded certificate is base64url(SHA-256(DER)) (RFC 8705 §3.1)."""
        digest = hashlib.sha256(der(pem_cert("leaf"))).digest()
        expected = base64.urlsafe_b64encode(digest).rstrip(b"=").decode()
        assert x5t_s256(der(parse_client_cert_field(VECTORS["client_cert"]))) == expected

    def test_nginx_escaped_pem_is_the_same_certificate(self) -> None:
        """nginx's $ssl_client_escaped_cert (URL-escaped PEM) reads as the same leaf."""
        escaped = quote(VECTORS["chain_pem"]["leaf"], safe="")
        assert der(parse_client_cert_field(escaped)) == der(pem_cert("leaf"))

    def test_unpadded_byte_sequence(self) -> None:
        """RFC 8941 §4.2.7: a byte sequence without "=" padding still parses."""
        value = VECTORS["client_cert"]
        assert value.endswith("=:")
        assert der(parse_client_cert_field(value.rstrip(":").rstrip("=") + ":")) == der(
            pem_cert("leaf")
        )


def _mutations() -> list[tuple[str, str]]:
    value: str = VECTORS["client_cert"]
    body = value[1:-1]
    return [
        ("no leading colon", body + ":"),
        ("no trailing colon", ":" + body),
        ("a parameter", value + ";a=1"),
        ("a list of two", value + ", " + value),
        ("a character outside base64", ":" + body[:10] + "*" + body[11:] + ":"),
        ("truncated", ":" + body[:-40] + ":"),
        ("empty", "::"),
        ("too large", ":" + "A" * MAX_FIELD + ":"),
        ("escaped PEM, not ASCII", quote("é-----BEGIN CERTIFICATE-----")),
        ("PEM of two certificates", quote(VECTORS["chain_pem"]["leaf"] * 2)),
        ("a bare token", "hello"),
    ]


class TestForwardedFieldMutations:
    @pytest.mark.parametrize(("what", "value"), _mutations(), ids=[m[0] for m in _mutations()])
    def test_malformed(self, what: str, value: str) -> None:
        """Each mutation of the RFC 9440 field is CPN-MTLS-001."""
        with pytest.raises(AuthenticationFailed) as exc:
            parse_client_cert_field(value)
        assert code_of(exc) == codes.MTLS_MALFORMED.code

    def test_flipped_signature_bit_parses_but_fails_the_path(self) -> None:
        """A bit flipped inside the signature still parses, and no longer verifies."""
        raw = bytearray(der(pem_cert("leaf")))
        raw[-5] ^= 0x01
        field = ":" + base64.b64encode(bytes(raw)).decode() + ":"
        forged = parse_client_cert_field(field)
        validator = ClientCertificateValidator([pem_cert("root")])
        with pytest.raises(AuthenticationFailed) as exc:
            validator.validate(forged, [pem_cert("intermediate")], now=IN_2020)
        assert code_of(exc) == codes.MTLS_UNTRUSTED.code

    @pytest.mark.parametrize("value", ["", ":A:, ", ", ".join([VECTORS["client_cert"]] * 5)])
    def test_bad_chain_fields(self, value: str) -> None:
        """An empty chain item, or more than four, is CPN-MTLS-001."""
        with pytest.raises(AuthenticationFailed) as exc:
            parse_client_cert_chain_field(value)
        assert code_of(exc) == codes.MTLS_MALFORMED.code

    @given(st.text(max_size=300))
    def test_any_text_is_a_certificate_or_a_coupon_error(self, value: str) -> None:
        """Arbitrary field values never raise anything but CouponError."""
        assert refusal(parse_client_cert_field, value) in (None, codes.MTLS_MALFORMED.code)

    @given(st.binary(max_size=300))
    def test_any_bytes_in_a_byte_sequence(self, data: bytes) -> None:
        """Arbitrary DER in a well-formed byte sequence is a certificate or CPN-MTLS-001."""
        field = ":" + base64.b64encode(data).decode() + ":"
        assert refusal(parse_client_cert_field, field) in (None, codes.MTLS_MALFORMED.code)
        assert refusal(parse_client_cert_chain_field, field) in (None, codes.MTLS_MALFORMED.code)

    def test_pem_loader_limits(self) -> None:
        """load_pem_certificates refuses non-ASCII and more certificates than the limit."""
        with pytest.raises(AuthenticationFailed):
            load_pem_certificates("é")
        with pytest.raises(AuthenticationFailed):
            load_pem_certificates(VECTORS["chain_pem"]["leaf"] * 2, limit=1)


def leaf(**names: Any) -> x509.Certificate:
    ca = create_ca("Identity CA", now=now())
    return issue_leaf(ca, "client", now=now(), lifetime=HOUR, **names).certificate


class TestIdentity:
    def test_uri_first(self) -> None:
        """A SAN URI wins over DNS names and the CN."""
        cert = leaf(uris=["spiffe://example.org/a"], dns=["a.example"], common_name="a")
        assert certificate_identity(cert) == "uri:spiffe://example.org/a"

    def test_then_first_dns_name_lower_case(self) -> None:
        """Without a URI, the first DNS name, in lower case."""
        cert = leaf(dns=["A.Example", "b.example"], common_name="a")
        assert certificate_identity(cert) == "dns:a.example"

    def test_then_common_name(self) -> None:
        """Without SAN names, the subject CN."""
        assert certificate_identity(leaf(common_name="batch job")) == "cn:batch job"

    def test_ip_names_are_not_identities(self) -> None:
        """An IP address SAN alone names nobody; the CN does."""
        assert certificate_identity(leaf(ips=["10.0.0.1"], common_name="n")) == "cn:n"

    def test_two_uris_are_ambiguous(self) -> None:
        """Two URIs (SPIFFE allows one): CPN-MTLS-003."""
        cert = leaf(uris=["spiffe://example.org/a", "spiffe://example.org/b"])
        with pytest.raises(AuthenticationFailed) as exc:
            certificate_identity(cert)
        assert code_of(exc) == codes.MTLS_NO_IDENTITY.code

    def test_nothing_usable(self) -> None:
        """Only an IP address and no CN: CPN-MTLS-003."""
        with pytest.raises(AuthenticationFailed) as exc:
            certificate_identity(leaf(ips=["10.0.0.1"]))
        assert code_of(exc) == codes.MTLS_NO_IDENTITY.code

    def test_control_characters_are_refused(self) -> None:
        """A CN with a control character is no identity (it could forge log lines)."""
        with pytest.raises(AuthenticationFailed) as exc:
            certificate_identity(leaf(common_name="a\nb"))
        assert code_of(exc) == codes.MTLS_NO_IDENTITY.code

    @given(
        uri=st.booleans(),
        dns=st.lists(st.from_regex(r"[a-z]{1,8}\.example", fullmatch=True), max_size=2),
        cn=st.one_of(st.none(), st.from_regex(r"[a-z]{1,8}", fullmatch=True)),
    )
    def test_order_invariant(self, uri: bool, dns: list[str], cn: str | None) -> None:
        """Whatever names a certificate has, the identity follows URI, DNS, CN."""
        uris = ["spiffe://example.org/x"] if uri else []
        if not (uris or dns or cn):
            return
        got = certificate_identity(leaf(uris=uris, dns=dns, common_name=cn))
        expected = "uri:" + uris[0] if uris else f"dns:{dns[0]}" if dns else f"cn:{cn}"
        assert got == expected


class TestIdentityMap:
    def test_lookup(self) -> None:
        """A listed identity gets its roles and tenant; DNS names ignore case."""
        grants = IdentityMap(
            {
                "uri:spiffe://example.org/a": MtlsIdentity(roles=["issuer"], tenant="acme"),
                "dns:B.Example": MtlsIdentity(roles=["auditor", "verifier"]),
            }
        )
        assert grants.lookup("uri:spiffe://example.org/a").roles == {"issuer"}
        assert grants.lookup("uri:spiffe://example.org/a").tenant == "acme"
        assert grants.lookup("dns:b.example").tenant is None
        assert len(grants) == 2

    def test_unlisted_is_forbidden(self) -> None:
        """An identity that is not listed is refused: CPN-MTLS-004 (403)."""
        with pytest.raises(Forbidden) as exc:
            IdentityMap({}).lookup("uri:spiffe://example.org/a")
        assert code_of(exc) == codes.MTLS_UNMAPPED.code

    def test_case_duplicates_are_a_configuration_error(self) -> None:
        """Two DNS entries that differ in case only cannot both be meant."""
        entry = MtlsIdentity(roles=["issuer"])
        with pytest.raises(ValueError, match="twice"):
            IdentityMap({"dns:a.example": entry, "dns:A.example": entry})

    def test_uri_and_cn_are_exact(self) -> None:
        """URIs and CNs are compared exactly."""
        grants = IdentityMap({"cn:Batch": MtlsIdentity(roles=["issuer"])})
        with pytest.raises(Forbidden):
            grants.lookup("cn:batch")

    def test_roles_literal_is_the_authoritys(self) -> None:
        """The settings' role names are exactly the Authority's roles."""
        assert set(typing.get_args(Role)) == ROLES

    @pytest.mark.parametrize(
        "identity", ["spiffe://x", "uri:", "cn: padded", "dns:a\tb", "email:a@b", "x" * 10]
    )
    def test_malformed_identities(self, identity: str) -> None:
        """Identities are uri:/dns:/cn: with a clean value, or a ValueError."""
        with pytest.raises(ValueError, match="an mTLS identity is"):
            normalise_identity(identity)

    def test_settings_refuse_bad_entries(self) -> None:
        """Settings refuse unknown roles, empty role lists and malformed identities."""
        bad: dict[str, Any]
        for bad in (
            {"uri:spiffe://x/a": {"roles": ["root"]}},
            {"uri:spiffe://x/a": {"roles": []}},
            {"spiffe://x/a": {"roles": ["issuer"]}},
            {"cn:a": {"roles": ["issuer"], "tenant": "a\x00"}},
        ):
            with pytest.raises(ValidationError):
                Settings(mtls_identities=bad)


class TestValidator:
    def test_own_pki(self) -> None:
        """A client certificate of the CA verifies; the path is leaf then CA."""
        ca = create_ca("CA", now=now())
        client = issue_leaf(ca, "client", now=now(), lifetime=HOUR, common_name="c")
        path = ClientCertificateValidator([ca.certificate]).validate(client.certificate, now=now())
        assert [der(c) for c in path] == [der(client.certificate), der(ca.certificate)]

    @pytest.mark.parametrize("case", ["server usage", "other CA", "expired", "not yet valid"])
    def test_refusals(self, case: str) -> None:
        """Server-only usage, another CA, and both ends of the validity: CPN-MTLS-002."""
        ca, other = create_ca("CA", now=now()), create_ca("Other", now=now())
        start = {"expired": now() - 3 * HOUR, "not yet valid": now() + 3 * HOUR}.get(case, now())
        issuer = other if case == "other CA" else ca
        kind: LeafKind = "server" if case == "server usage" else "client"
        cert = issue_leaf(issuer, kind, now=start, lifetime=HOUR, common_name="c").certificate
        with pytest.raises(AuthenticationFailed) as exc:
            ClientCertificateValidator([ca.certificate]).validate(cert, now=now())
        assert code_of(exc) == codes.MTLS_UNTRUSTED.code

    def test_needs_a_root(self) -> None:
        """An empty CA list is a configuration error."""
        with pytest.raises(ValueError, match="at least one"):
            ClientCertificateValidator([])


class TestTrustedProxies:
    @pytest.mark.parametrize(
        ("peer", "trusted"),
        [
            ("10.1.2.3", True),
            ("10.2.0.1", False),
            ("::1", True),
            ("::ffff:10.1.0.9", True),
            ("2001:db8::1", False),
            ("not-an-address", False),
            (None, False),
            ("", False),
        ],
    )
    def test_membership(self, peer: str | None, trusted: bool) -> None:
        """IPv4, IPv6 and IPv4-mapped IPv6 peers match their networks; anything else does not."""
        proxies = TrustedProxies(["10.1.0.0/16", "::1/128"])
        assert proxies.trusts(peer) is trusted

    def test_empty_trusts_nobody(self) -> None:
        """Without networks nobody is trusted, loopback included."""
        assert not TrustedProxies([]).trusts("127.0.0.1")
        assert not TrustedProxies([])

    def test_settings_refuse_host_bits(self) -> None:
        """A CIDR with host bits set is ambiguous and refused when the settings load."""
        with pytest.raises(ValidationError):
            Settings(tls_trusted_proxies=["10.1.2.3/16"])
