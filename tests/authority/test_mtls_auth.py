"""MtlsAuthenticator over CallerContext: where the certificate comes from, who it names, and
who may bind a coupon to which certificate.

Real certificates (tests/mtls_pki.py); the contexts are what the ASGI TLS extension and a
proxy's header field give the authenticator.
"""

from __future__ import annotations

import datetime
import json
import time
from pathlib import Path
from urllib.parse import quote

import pytest
from prometheus_client import CollectorRegistry
from tests.mtls_pki import Pki

from coupon import codes
from coupon._settings_tls import MtlsIdentity
from coupon.authority._auth import CallerContext, Principal
from coupon.authority._mtls import (
    MtlsAuthenticator,
    MtlsMetrics,
    authorize_binding,
    mtls_authenticators,
    resolve_binding,
)
from coupon.authority._x509 import ClientCertificateValidator, IdentityMap, TrustedProxies
from coupon.errors import AuthenticationFailed, CouponError, Forbidden, InvalidRequest
from coupon.settings import Settings
from coupon.token import Binding

PROXY = "10.0.0.7"
IDENTITIES = {
    "uri:spiffe://example.org/orders": MtlsIdentity(roles=["issuer"], tenant="acme"),
    "dns:billing.internal": MtlsIdentity(roles=["verifier", "auditor"]),
    "cn:legacy-batch": MtlsIdentity(roles=["admin"]),
}
VECTORS = json.loads((Path(__file__).parents[1] / "vectors" / "rfc9440.json").read_text())


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Pki:
    return Pki(tmp_path_factory.mktemp("pki"))


def authenticator(
    pki: Pki, *, registry: CollectorRegistry | None = None, clock: float | None = None
) -> MtlsAuthenticator:
    validator = ClientCertificateValidator([pki.ca.credential.certificate])
    return MtlsAuthenticator(
        IdentityMap(IDENTITIES),
        proxies=TrustedProxies(["10.0.0.0/24"]),
        client_cas=lambda: validator,
        metrics=MtlsMetrics(registry or CollectorRegistry()),
        clock=time.time if clock is None else lambda: clock,
    )


def connection(pki: Pki, client: str, *, peer: str = "192.0.2.10", **headers: str) -> CallerContext:
    return CallerContext(headers=headers, peer=peer, client_cert_chain=(pki.clients[client].pem,))


def forwarded(pki: Pki, client: str, *, peer: str = PROXY) -> CallerContext:
    return CallerContext(
        headers={"x-client-cert": quote(pki.clients[client].pem, safe="")}, peer=peer
    )


async def refused(auth: MtlsAuthenticator, caller: CallerContext) -> str:
    with pytest.raises(CouponError) as exc:
        await auth.authenticate(caller)
    return exc.value.code.code


@pytest.mark.asyncio
class TestConnectionCertificate:
    async def test_mapped_identity(self, pki: Pki) -> None:
        """A mapped SPIFFE identity becomes mtls:<identity> with its roles, tenant, thumbprint."""
        principal = await authenticator(pki).authenticate(connection(pki, "orders"))
        assert principal == Principal(
            id="mtls:uri:spiffe://example.org/orders",
            roles=frozenset({"issuer"}),
            tenant="acme",
            method="mtls",
            certificate=pki.clients["orders"].thumbprint,
        )

    async def test_dns_and_cn_identities(self, pki: Pki) -> None:
        """DNS names match in lower case; a CN-only certificate maps by cn:."""
        auth = authenticator(pki)
        billing = await auth.authenticate(connection(pki, "billing"))
        legacy = await auth.authenticate(connection(pki, "legacy"))
        assert billing is not None
        assert billing.id == "mtls:dns:billing.internal"
        assert legacy is not None
        assert legacy.roles == {"admin"}

    async def test_no_certificate_is_not_this_scheme(self, pki: Pki) -> None:
        """Without a certificate the authenticator steps aside (other schemes may answer)."""
        assert (
            await authenticator(pki).authenticate(CallerContext(headers={}, peer="1.2.3.4")) is None
        )

    async def test_unmapped_identity_is_forbidden(self, pki: Pki) -> None:
        """A verified certificate whose identity is not listed: CPN-MTLS-004."""
        assert await refused(authenticator(pki), connection(pki, "stranger")) == "CPN-MTLS-004"

    async def test_expired_on_a_long_lived_connection(self, pki: Pki) -> None:
        """A certificate that expired after the handshake (keep-alive, TLS 1.2 resumption)
        stops working: the dates are checked on every request, CPN-MTLS-002."""
        later = pki.clients["orders"].credential.certificate.not_valid_after_utc.timestamp() + 1
        auth = authenticator(pki, clock=later)
        assert await refused(auth, connection(pki, "orders")) == "CPN-MTLS-002"

    async def test_garbage_chain_is_malformed(self) -> None:
        """A chain entry that is not PEM (a broken server) is CPN-MTLS-001, not a crash."""
        auth = MtlsAuthenticator(IdentityMap(IDENTITIES))
        caller = CallerContext(headers={}, client_cert_chain=("not a certificate",))
        assert await refused(auth, caller) == "CPN-MTLS-001"


@pytest.mark.asyncio
class TestForwardedCertificate:
    async def test_from_a_trusted_proxy(self, pki: Pki) -> None:
        """A trusted proxy's X-Client-Cert (nginx escaped PEM) names the caller."""
        principal = await authenticator(pki).authenticate(forwarded(pki, "orders"))
        assert principal is not None
        assert principal.id == "mtls:uri:spiffe://example.org/orders"
        assert principal.certificate == pki.clients["orders"].thumbprint

    async def test_forgery_from_elsewhere_has_no_effect(self, pki: Pki) -> None:
        """From an untrusted peer the field is ignored and counted; nothing authenticates."""
        registry = CollectorRegistry()
        auth = authenticator(pki, registry=registry)
        assert await auth.authenticate(forwarded(pki, "legacy", peer="192.0.2.66")) is None
        assert registry.get_sample_value("coupon_mtls_forwarded_ignored_total") == 1

    async def test_forgery_beside_an_own_certificate(self, pki: Pki) -> None:
        """An untrusted peer with its own certificate stays itself, whatever it forwards."""
        caller = connection(pki, "orders", **{"x-client-cert": quote(pki.clients["legacy"].pem)})
        principal = await authenticator(pki).authenticate(caller)
        assert principal is not None
        assert principal.roles == {"issuer"}

    async def test_proxy_own_certificate_never_names_a_caller(self, pki: Pki) -> None:
        """A trusted proxy that forwards nothing speaks for a caller without a certificate."""
        caller = connection(pki, "legacy", peer=PROXY)
        assert await authenticator(pki).authenticate(caller) is None

    @pytest.mark.parametrize(
        ("client", "code"),
        [("expired", "CPN-MTLS-002"), ("rogue", "CPN-MTLS-002"), ("server_only", "CPN-MTLS-002")],
    )
    async def test_checked_again(self, pki: Pki, client: str, code: str) -> None:
        """What a proxy forwards is checked against the client CAs and the clock."""
        assert await refused(authenticator(pki), forwarded(pki, client)) == code

    async def test_malformed_field(self, pki: Pki) -> None:
        """A field that is no certificate is CPN-MTLS-001 and counted."""
        registry = CollectorRegistry()
        caller = CallerContext(headers={"x-client-cert": ":not base64!:"}, peer=PROXY)
        assert await refused(authenticator(pki, registry=registry), caller) == "CPN-MTLS-001"
        labels = {"source": "forwarded", "result": "CPN-MTLS-001"}
        assert registry.get_sample_value("coupon_mtls_authentications_total", labels) == 1

    async def test_rfc9440_fields_with_chain(self) -> None:
        """RFC 9440 Client-Cert plus Client-Cert-Chain authenticate at a time in 2020."""
        from cryptography import x509

        root = x509.load_pem_x509_certificate(VECTORS["chain_pem"]["root"].encode())
        validator = ClientCertificateValidator([root])
        auth = MtlsAuthenticator(
            IdentityMap({"cn:BC": MtlsIdentity(roles=["verifier"])}),
            proxies=TrustedProxies(["10.0.0.0/24"]),
            client_cas=lambda: validator,
            clock=lambda: datetime.datetime(2020, 6, 1, tzinfo=datetime.UTC).timestamp(),
        )
        headers = {
            "x-client-cert": VECTORS["client_cert"],
            "client-cert-chain": VECTORS["client_cert_chain"],
        }
        principal = await auth.authenticate(CallerContext(headers=headers, peer=PROXY))
        assert principal is not None
        assert principal.id == "mtls:cn:BC"

    async def test_ipv4_mapped_proxy_address(self, pki: Pki) -> None:
        """A dual-stack server's ::ffff:10.0.0.7 is the trusted 10.0.0.7."""
        caller = forwarded(pki, "orders", peer="::ffff:10.0.0.7")
        assert await authenticator(pki).authenticate(caller) is not None


class TestBindingRules:
    def caller(self, *, roles: set[str], certificate: str | None) -> Principal:
        return Principal("c", frozenset(roles), None, "mtls", certificate=certificate)

    def test_self_is_the_callers_certificate(self) -> None:
        """ "x5t#S256": "self" resolves to the thumbprint the caller authenticated with."""
        caller = self.caller(roles={"issuer"}, certificate="A" * 43)
        assert resolve_binding(caller, jkt=None, x5t_s256="self") == Binding(x5t_s256="A" * 43)

    @pytest.mark.parametrize("certificate", [None, "missing caller"])
    def test_self_without_a_certificate(self, certificate: str | None) -> None:
        """ "self" from a caller without a certificate (or no caller) is CPN-MTLS-006."""
        caller = None if certificate else self.caller(roles={"issuer"}, certificate=None)
        with pytest.raises(InvalidRequest) as exc:
            resolve_binding(caller, jkt=None, x5t_s256="self")
        assert exc.value.code is codes.MTLS_NO_CERTIFICATE

    def test_plain_bindings_pass_through(self) -> None:
        """jkt and explicit thumbprints are taken as given."""
        assert resolve_binding(None, jkt="J" * 43, x5t_s256=None) == Binding(jkt="J" * 43)
        assert resolve_binding(None, jkt=None, x5t_s256="X" * 43) == Binding(x5t_s256="X" * 43)

    def test_own_certificate_allowed(self) -> None:
        """An issuer may bind its own certificate."""
        authorize_binding(
            self.caller(roles={"issuer"}, certificate="A" * 43), Binding(x5t_s256="A" * 43)
        )

    @pytest.mark.parametrize("certificate", ["B" * 43, None])
    def test_another_certificate_needs_admin(self, certificate: str | None) -> None:
        """Another certificate (or any, for a caller without one) needs admin: CPN-MTLS-005."""
        with pytest.raises(Forbidden) as exc:
            authorize_binding(
                self.caller(roles={"issuer"}, certificate=certificate), Binding(x5t_s256="A" * 43)
            )
        assert exc.value.code is codes.MTLS_BINDING
        authorize_binding(
            self.caller(roles={"admin"}, certificate=certificate), Binding(x5t_s256="A" * 43)
        )

    def test_key_bindings_are_not_concerned(self) -> None:
        """DPoP key bindings are not this rule's business."""
        authorize_binding(self.caller(roles={"issuer"}, certificate=None), Binding(jkt="J" * 43))


class TestFromSettings:
    def test_nothing_configured(self) -> None:
        """Without client auth or trusted proxies there is no mTLS authenticator."""
        assert mtls_authenticators(Settings(), registry=CollectorRegistry()) == []

    def test_client_auth(self, pki: Pki) -> None:
        """Client auth alone gives one authenticator (no CA file read: the handshake checks)."""
        settings = Settings(
            tls_cert=pki.server.cert, tls_client_ca=pki.ca.cert, tls_client_auth="optional"
        )
        assert len(mtls_authenticators(settings, registry=CollectorRegistry())) == 1

    def test_proxies_need_the_client_ca(self) -> None:
        """Trusted proxies without COUPON_TLS_CLIENT_CA cannot check what they forward."""
        with pytest.raises(ValueError, match="CLIENT_CA"):
            mtls_authenticators(
                Settings(tls_trusted_proxies=["10.0.0.0/8"]), registry=CollectorRegistry()
            )

    def test_proxies_with_ca(self, pki: Pki) -> None:
        """Proxies and a CA file: the authenticator believes what the proxy forwards."""
        settings = Settings(tls_trusted_proxies=["10.0.0.0/8"], tls_client_ca=pki.ca.cert)
        assert len(mtls_authenticators(settings, registry=CollectorRegistry())) == 1

    def test_refusal_is_authentication_failed(self) -> None:
        """The 401 codes are AuthenticationFailed, the 403 ones Forbidden (the handler table)."""
        assert codes.MTLS_UNTRUSTED.kind == AuthenticationFailed.__name__
        assert codes.MTLS_UNMAPPED.kind == Forbidden.__name__
