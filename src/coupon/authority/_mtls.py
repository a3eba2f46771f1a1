"""mTLS callers of the Authority: an authenticator, and who may bind a certificate.

Where the caller's certificate comes from (``docs/mtls.md``):

1. From a peer in ``tls_trusted_proxies``: only the field the proxy forwards
   (``tls_client_cert_header``, plus RFC 9440 ``Client-Cert-Chain`` for intermediates). It is
   checked again here: a path to ``tls_client_ca``, valid now, allowed for client auth. The
   proxy's own connection certificate never names a caller: a proxy that forwards no field
   speaks for a caller without a certificate.
2. From any other peer: the certificate of the connection itself (the ASGI TLS extension),
   which the handshake verified. A forwarded field from such a peer is ignored (logged and
   counted): it is a forgery or a misrouted request, and believing it would let anyone be
   anyone.
3. Neither: not this scheme (``None``), so other credentials (an API key) may still work.

The certificate's identity (:func:`~._x509.certificate_identity`) must be listed in
``mtls_identities``, which gives its roles and tenant; the principal is ``mtls:<identity>``
and carries the certificate's ``x5t#S256`` so the caller can ask for coupons bound to it.
"""

from __future__ import annotations

import datetime
import hmac
import time
from collections.abc import Callable
from typing import Final

from cryptography import x509
from cryptography.hazmat.primitives.serialization import Encoding
from prometheus_client import CollectorRegistry, Counter

from coupon import codes
from coupon.errors import AuthenticationFailed, CouponError, Forbidden, InvalidRequest
from coupon.observability import get_logger, tracer_provider
from coupon.settings import Settings
from coupon.token import Binding, x5t_s256

from ._auth import Authenticator, CallerContext, Principal
from ._tls import ClientCaFile
from ._x509 import (
    ClientCertificateValidator,
    IdentityMap,
    TrustedProxies,
    certificate_identity,
    load_pem_certificates,
    parse_client_cert_chain_field,
    parse_client_cert_field,
)

__all__ = [
    "CHAIN_HEADER",
    "SELF",
    "MtlsAuthenticator",
    "MtlsMetrics",
    "authorize_binding",
    "mtls_authenticators",
    "resolve_binding",
]

#: ``binding: {"x5t#S256": "self"}`` asks for a coupon bound to the caller's own certificate.
SELF: Final = "self"
#: RFC 9440's field for the intermediates of a forwarded certificate.
CHAIN_HEADER: Final = "client-cert-chain"
_PARSED_MAX: Final = 256
_log = get_logger("coupon.authority.mtls")
_TRACER = tracer_provider().get_tracer("coupon.authority")


class MtlsMetrics:
    """The counters of mTLS authentication, on the Authority's registry."""

    def __init__(self, registry: CollectorRegistry) -> None:
        self.authentications = Counter(
            "coupon_mtls_authentications_total",
            "mTLS caller authentications by certificate source (connection or forwarded) and "
            "outcome (ok or the error code).",
            ["source", "result"],
            registry=registry,
        )
        self.forwarded_ignored = Counter(
            "coupon_mtls_forwarded_ignored_total",
            "Forwarded client certificate fields ignored: the peer is not a trusted proxy.",
            registry=registry,
        )


class MtlsAuthenticator:
    """Authenticates callers by their client certificate (see the module docstring).

    Args:
        identities: which certificate identities are callers, with their roles and tenant.
        proxies: peers whose forwarded certificate field is believed.
        header: the field those proxies forward the certificate in.
        client_cas: the validator for forwarded certificates (reloaded CA bundle); required
            when ``proxies`` is not empty.
        metrics: counters (optional).
        clock: seconds since the epoch, the time forwarded certificates must be valid at.
    """

    def __init__(
        self,
        identities: IdentityMap,
        *,
        proxies: TrustedProxies | None = None,
        header: str = "X-Client-Cert",
        client_cas: Callable[[], ClientCertificateValidator] | None = None,
        metrics: MtlsMetrics | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._identities = identities
        self._proxies = proxies or TrustedProxies(())
        if self._proxies and client_cas is None:
            raise ValueError("trusted proxies need the client CAs to check what they forward")
        self._header = header.lower()
        self._client_cas = client_cas
        self._metrics = metrics
        self._clock = clock
        # Connection certificates by their PEM: one parse per connection, not per request.
        self._parsed: dict[str, x509.Certificate] = {}

    async def authenticate(self, caller: CallerContext) -> Principal | None:
        """The caller named by its certificate; None when there is no certificate to read."""
        source = "forwarded" if self._proxies.trusts(caller.peer) else "connection"
        with _TRACER.start_as_current_span("coupon.mtls.authenticate") as span:
            span.set_attribute("coupon.mtls.source", source)
            try:
                cert = self._forwarded(caller) if source == "forwarded" else self._own(caller)
                if cert is None:
                    return None
                identity = certificate_identity(cert)
                grant = self._identities.lookup(identity)
            except CouponError as exc:
                span.set_attribute("coupon.code", exc.code.code)
                self._count(source, exc.code.code)
                _log.warning(
                    "mtls_refused",
                    source=source,
                    peer=caller.peer,
                    code=exc.code.code,
                    reason=exc.reason,
                )
                raise
            span.set_attribute("coupon.mtls.identity", identity)
        self._count(source, "ok")
        return Principal(
            id=f"mtls:{identity}",
            roles=grant.roles,
            tenant=grant.tenant,
            method="mtls",
            certificate=x5t_s256(cert.public_bytes(Encoding.DER)),
        )

    def _count(self, source: str, result: str) -> None:
        if self._metrics is not None:
            self._metrics.authentications.labels(source, result).inc()

    def _own(self, caller: CallerContext) -> x509.Certificate | None:
        if caller.headers.get(self._header) is not None:
            # Not from a trusted proxy: a forgery, or a proxy missing from the list.
            if self._metrics is not None:
                self._metrics.forwarded_ignored.inc()
            _log.warning("mtls_forwarded_ignored", peer=caller.peer, header=self._header)
        if not caller.client_cert_chain:
            return None
        pem = caller.client_cert_chain[0]
        leaf = self._parsed.get(pem)
        if leaf is None:
            leaf = load_pem_certificates(pem, limit=1)[0]
            if len(self._parsed) >= _PARSED_MAX:
                del self._parsed[next(iter(self._parsed))]
            self._parsed[pem] = leaf
        # The handshake checked the dates, but a keep-alive connection (or a resumed TLS 1.2
        # session) outlives that moment: a certificate stops working when it expires.
        now = datetime.datetime.fromtimestamp(self._clock(), datetime.UTC)
        if not leaf.not_valid_before_utc <= now <= leaf.not_valid_after_utc:
            raise AuthenticationFailed(
                codes.MTLS_UNTRUSTED,
                f"client certificate valid {leaf.not_valid_before_utc.isoformat()} to "
                f"{leaf.not_valid_after_utc.isoformat()}, not now",
            )
        return leaf

    def _forwarded(self, caller: CallerContext) -> x509.Certificate | None:
        field = caller.headers.get(self._header)
        if not field:
            return None
        leaf = parse_client_cert_field(field)
        chain = caller.headers.get(CHAIN_HEADER)
        intermediates = parse_client_cert_chain_field(chain) if chain else []
        assert self._client_cas is not None  # checked in __init__
        now = datetime.datetime.fromtimestamp(self._clock(), datetime.UTC)
        self._client_cas().validate(leaf, intermediates, now=now)
        return leaf


def mtls_authenticators(settings: Settings, *, registry: CollectorRegistry) -> list[Authenticator]:
    """The mTLS authenticator ``settings`` call for (client auth, gRPC client CA or trusted
    proxies), or none.

    Raises:
        ValueError: trusted proxies without ``tls_client_ca``, or a bad identity list.
        OSError: the client CA file cannot be read.
    """
    s = settings
    # The gRPC port's own client CA (docs/grpc.md) also brings verified connection certificates.
    if s.tls_client_auth == "none" and not s.tls_trusted_proxies and s.grpc_tls_client_ca is None:
        return []
    client_cas: Callable[[], ClientCertificateValidator] | None = None
    if s.tls_trusted_proxies:
        if s.tls_client_ca is None:
            raise ValueError("COUPON_TLS_TRUSTED_PROXIES needs COUPON_TLS_CLIENT_CA")
        client_cas = ClientCaFile(s.tls_client_ca, interval=s.tls_reload_interval).validator
    authenticator = MtlsAuthenticator(
        IdentityMap(s.mtls_identities),
        proxies=TrustedProxies(s.tls_trusted_proxies),
        header=s.tls_client_cert_header,
        client_cas=client_cas,
        metrics=MtlsMetrics(registry),
    )
    return [authenticator]


def resolve_binding(caller: Principal | None, *, jkt: str | None, x5t_s256: str | None) -> Binding:
    """The binding a request names, where ``x5t#S256: "self"`` is the caller's certificate.

    Raises:
        InvalidRequest: ``MTLS_NO_CERTIFICATE`` for ``"self"`` from a caller that did not
            authenticate with a certificate (or no authenticated caller at all).
    """
    if x5t_s256 == SELF:
        if caller is None or caller.certificate is None:
            raise InvalidRequest(
                codes.MTLS_NO_CERTIFICATE,
                '"x5t#S256": "self" needs a caller authenticated by its client certificate',
            )
        return Binding(x5t_s256=caller.certificate)
    return Binding(jkt=jkt) if jkt is not None else Binding(x5t_s256=x5t_s256)


def authorize_binding(caller: Principal, binding: Binding) -> None:
    """A certificate binding names the caller's own certificate, or the caller is an admin.

    Raises:
        Forbidden: ``MTLS_BINDING`` otherwise.
    """
    wanted = binding.x5t_s256
    if wanted is None or "admin" in caller.roles:
        return
    own = caller.certificate
    if own is not None and hmac.compare_digest(own.encode(), wanted.encode()):
        return
    raise Forbidden(
        codes.MTLS_BINDING,
        "a coupon may be bound to the caller's own certificate only (another needs admin)",
    )
