"""OpenID Connect callers: ``Authorization: Bearer <ID or access token>`` from configured providers.

:class:`OidcAuthenticator` is one scheme of the authenticator list (see ``_auth.py``). It
recognises the ``Bearer`` scheme, picks the provider the token's ``iss`` names (only
configured ones; others are refused without any fetch), gets the signing key from that
provider's cached JWKS (``_oidc_keys.py``) and applies the pure checks of ``_oidc_core.py``.
The caller becomes ``Principal(id="oidc:<issuer host>:<sub>", method="oidc")`` with the roles
and tenant mapped from its claims. See ``docs/oidc.md`` and ADR 0011.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING

import httpx
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

from coupon import __version__, codes
from coupon.errors import AuthenticationFailed, CouponError
from coupon.observability import get_logger, tracer_provider

from ._auth import CallerContext, Principal
from ._oidc_core import (
    ProviderPolicy,
    check_algorithm,
    check_claims,
    parse_bearer,
    verify_signature,
)
from ._oidc_keys import FetchEvent, ProviderKeys

if TYPE_CHECKING:
    from coupon._settings_oidc import OidcProvider
    from coupon.settings import Settings

__all__ = ["OidcAuthenticator", "OidcMetrics", "policy_from_settings"]

_log = get_logger("coupon.authority.oidc")
_TRACER = tracer_provider().get_tracer("coupon.authority")
_BUCKETS = (0.0002, 0.0005, 0.001, 0.002, 0.005, 0.01, 0.05, 0.25, 1.0, 5.0)


class OidcMetrics:
    """The OIDC metrics, on the app's registry."""

    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        r = registry or CollectorRegistry()
        self.authentications = Counter(
            "coupon_oidc_authentications_total",
            "OIDC bearer tokens by provider (- for an unknown issuer), result and code.",
            ["issuer", "result", "code"],
            registry=r,
        )
        self.seconds = Histogram(
            "coupon_oidc_authentication_seconds",
            "Time to authenticate an OIDC bearer token (including any key fetch).",
            ["result"],
            buckets=_BUCKETS,
            registry=r,
        )
        self.fetches = Counter(
            "coupon_oidc_fetches_total",
            "Discovery and JWKS fetches by provider, document and result.",
            ["issuer", "document", "result"],
            registry=r,
        )
        self.keys = Gauge(
            "coupon_oidc_keys", "Signing keys cached per provider.", ["issuer"], registry=r
        )

    def fetched(self, event: FetchEvent) -> None:
        """Count one fetch (the ``on_fetch`` hook of :class:`ProviderKeys`)."""
        self.fetches.labels(event.issuer, event.document, event.result).inc()
        if event.document == "jwks" and event.result == "ok":
            self.keys.labels(event.issuer).set(event.keys)


def policy_from_settings(provider: OidcProvider, settings: Settings) -> ProviderPolicy:
    """The checks for one configured provider."""
    return ProviderPolicy(
        issuer=provider.issuer,
        audience=provider.audience,
        algorithms=frozenset(provider.algorithms),
        authorized_parties=frozenset(provider.authorized_parties),
        roles_claim=provider.roles_claim,
        role_map={value: frozenset(roles) for value, roles in provider.role_map.items()},
        tenant_claim=provider.tenant_claim,
        leeway=settings.oidc_leeway,
        max_age=settings.oidc_max_token_age,
    )


class _Provider:
    def __init__(self, policy: ProviderPolicy, keys: ProviderKeys) -> None:
        self.policy = policy
        self.keys = keys


class OidcAuthenticator:
    """Authenticates ``Authorization: Bearer`` tokens of the configured OpenID providers.

    Args:
        policies: one per provider (issuers are unique).
        client: the HTTP client for discovery and JWKS (closed by :meth:`aclose` when this
            object made it).
        jwks_max_age: upper bound on caching keys (s).
        refresh_interval: least time between unknown-kid refetches, and between retries of a
            failed fetch (s).
        timeout: of each HTTP request when this object makes the client (s).
        registry: where the metrics go (a private one when None).
        clock: wall-clock time for ``exp``/``nbf``/``iat``.
        monotonic: the cache's clock.
    """

    def __init__(
        self,
        policies: Sequence[ProviderPolicy],
        *,
        client: httpx.AsyncClient | None = None,
        jwks_max_age: float = 3600.0,
        refresh_interval: float = 10.0,
        timeout: float = 5.0,
        registry: CollectorRegistry | None = None,
        clock: Callable[[], float] = time.time,
        monotonic: Callable[[], float] = time.monotonic,
    ) -> None:
        if not policies:
            raise ValueError("at least one OIDC provider is needed")
        self._owns_client = client is None
        self._client = client or httpx.AsyncClient(
            timeout=httpx.Timeout(timeout),
            follow_redirects=False,
            headers={"User-Agent": f"coupon-authority/{__version__}"},
        )
        self.metrics = OidcMetrics(registry)
        self._clock = clock
        self._providers: dict[str, _Provider] = {}
        for policy in policies:
            keys = ProviderKeys(
                policy.issuer,
                client=self._client,
                max_age=jwks_max_age,
                refresh_interval=refresh_interval,
                clock=monotonic,
                on_fetch=self.metrics.fetched,
            )
            self._providers[policy.issuer] = _Provider(policy, keys)
        self._tasks: list[asyncio.Task[None]] = []

    @classmethod
    def from_settings(
        cls, settings: Settings, *, registry: CollectorRegistry | None = None
    ) -> OidcAuthenticator:
        """The authenticator for ``settings.oidc_provider_list`` (which must not be empty)."""
        return cls(
            [policy_from_settings(p, settings) for p in settings.oidc_provider_list],
            jwks_max_age=settings.oidc_jwks_max_age,
            refresh_interval=settings.oidc_jwks_refresh_interval,
            timeout=settings.oidc_http_timeout,
            registry=registry,
        )

    @property
    def issuers(self) -> list[str]:
        """The configured issuers, in order."""
        return list(self._providers)

    def keys(self, issuer: str) -> ProviderKeys:
        """The key cache of one provider."""
        return self._providers[issuer].keys

    # -- lifecycle -------------------------------------------------------------------------------

    def start(self) -> None:
        """Fetch every provider's discovery and keys in the background (failures are logged;
        tokens are then answered 503 until a fetch succeeds)."""
        for provider in self._providers.values():
            self._tasks.append(
                asyncio.get_running_loop().create_task(
                    provider.keys.warm(), name="coupon-oidc-warm"
                )
            )

    async def aclose(self) -> None:
        """Stop background fetches and close the HTTP client."""
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
        self._tasks.clear()
        for provider in self._providers.values():
            await provider.keys.close()
        if self._owns_client:
            await self._client.aclose()

    # -- the scheme ------------------------------------------------------------------------------

    async def authenticate(self, caller: CallerContext) -> Principal | None:
        """A principal for a valid bearer token; None when the request is not ``Bearer``.

        Raises:
            AuthenticationFailed: ``CPN-OIDC-001`` … ``-011``: the token is refused.
            DependencyUnavailable: ``CPN-OIDC-013``/``-014``: its provider cannot be checked.
        """
        header = caller.headers.get("authorization")
        if header is None:
            return None
        scheme, _, credentials = header.strip().partition(" ")
        if scheme.lower() != "bearer":
            return None
        started = time.perf_counter()
        issuer = "-"
        with _TRACER.start_as_current_span("coupon.oidc.authenticate") as span:
            try:
                token = parse_bearer(credentials.strip())
                provider = self._providers.get(token.issuer)
                if provider is None:
                    raise AuthenticationFailed(
                        codes.OIDC_ISSUER, f"issuer {token.issuer[:100]!r} is not configured"
                    )
                issuer = provider.policy.issuer
                span.set_attribute("coupon.oidc.issuer", issuer)
                check_algorithm(token.alg, provider.policy.algorithms)
                key = await provider.keys.key_for(token.kid, token.alg)
                verify_signature(token, key)
                principal = check_claims(token.claims, provider.policy, now=self._clock())
            except CouponError as exc:
                self._count(issuer, "deny", exc.code.code, started)
                span.set_attribute("coupon.result", "deny")
                span.set_attribute("coupon.code", exc.code.code)
                _log.info("oidc_refused", issuer=issuer, code=exc.code.code, reason=exc.reason)
                raise
            span.set_attribute("coupon.result", "allow")
            span.set_attribute("coupon.principal", principal.id)
        self._count(issuer, "allow", "", started)
        _log.debug(
            "oidc_authenticated",
            issuer=issuer,
            principal=principal.id,
            roles=sorted(principal.roles),
            tenant=principal.tenant,
        )
        return principal

    def _count(self, issuer: str, result: str, code: str, started: float) -> None:
        self.metrics.authentications.labels(issuer, result, code).inc()
        self.metrics.seconds.labels(result).observe(time.perf_counter() - started)
