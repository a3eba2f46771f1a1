"""An async client of the Authority's REST API, called through a resilience pipeline.

Retries (decided here, see ``docs/sdk.md``): ``verify`` and ``introspect`` have no effect
and go through ``pipeline`` (retried on transient failures). ``issue``, ``attenuate`` and
``revoke`` create state; a retry after the request may have reached the Authority would mint
a second coupon or a second revocation record, so they go through ``write_pipeline``: the
same timeout, breaker and bulkhead, and **no retry**. The caller decides.

Errors: a problem document becomes the :class:`~coupon.errors.CouponError` of its ``code``.
A transport failure (no answer) becomes a :class:`~coupon.errors.ResilienceError`, which is a
:class:`~coupon.errors.DependencyUnavailable`: ``RetriesExhausted`` (``CPN-RES-004``) after
the attempts allowed, ``DeadlineExceeded`` (``CPN-RES-003``) when time ran out,
``CircuitOpen`` (``CPN-RES-001``) when the breaker refused the call. No raw httpx error leaves.
"""

from __future__ import annotations

import asyncio
import dataclasses
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Any, Literal

import httpx

from coupon import codes
from coupon.errors import CouponError, InternalError, RetriesExhausted, error
from coupon.resilience import DEFAULTS, Pipeline
from coupon.token import SigningKey

from ._auth import DPoPAuth
from ._correlation import propagate_correlation

__all__ = ["AuthorityClient", "CouponSource", "Issued", "RevocationKind"]

RevocationKind = Literal["jti", "lineage", "subject", "tenant", "kid"]
_PROBLEM = "application/problem+json"


@dataclass(frozen=True, slots=True)
class Issued:
    """A coupon the Authority issued, and what it recorded about it."""

    coupon: str
    jti: str
    lineage: str
    expires_at: int
    claims: dict[str, Any]

    @classmethod
    def from_answer(cls, answer: dict[str, Any]) -> Issued:
        """Read the body of a ``201`` from ``/v1/coupons`` or ``/v1/coupons/attenuate``."""
        return cls(
            coupon=str(answer["coupon"]),
            jti=str(answer["jti"]),
            lineage=str(answer["lineage"]),
            expires_at=int(answer["expires_at"]),
            claims=dict(answer["claims"]),
        )


def _raise_for_problem(response: httpx.Response) -> None:
    """Turn a problem document (or any error status) into its typed ``CouponError``."""
    if response.status_code < 400:
        return
    problem: Any = None
    if response.headers.get("content-type", "").startswith(_PROBLEM):
        try:
            problem = response.json()
        except ValueError:
            problem = None
    if isinstance(problem, dict):
        try:
            code = codes.by_code(str(problem.get("code")))
        except KeyError:
            code = None
        if code is not None:
            raise error(code, str(problem.get("detail", "")))
    raise InternalError(codes.INTERNAL, f"HTTP {response.status_code} without a known problem code")


class AuthorityClient:
    """Talks to one Authority.

    Args:
        base_url: e.g. ``https://authority.example``; the paths ``/v1/...`` are appended.
        api_key: the caller's ``X-API-Key`` (``cpk_<id>_<secret>``).
        client: an ``httpx.AsyncClient`` to use (and not close); one is made otherwise.
        pipeline: for the calls without effect (verify, introspect); retried.
        write_pipeline: for issue, attenuate and revoke; by default ``pipeline``'s policy
            with retry turned off.
        timeout: httpx's timeout for the client made here.
    """

    def __init__(
        self,
        base_url: str,
        *,
        api_key: str,
        client: httpx.AsyncClient | None = None,
        pipeline: Pipeline | None = None,
        write_pipeline: Pipeline | None = None,
        timeout: float = 10.0,
    ) -> None:
        self.base_url = base_url.rstrip("/")
        self._api_key = api_key
        self._owned = client is None
        self._http = (
            client
            if client is not None
            else httpx.AsyncClient(
                timeout=timeout, event_hooks={"request": [propagate_correlation]}
            )
        )
        self.pipeline = (
            pipeline if pipeline is not None else Pipeline(DEFAULTS["sync-microservice"])
        )
        if write_pipeline is None:
            policy = dataclasses.replace(
                self.pipeline.policy, name=f"{self.pipeline.name}-write", retry=None
            )
            write_pipeline = Pipeline(policy, hooks=self.pipeline.hooks)
        self.write_pipeline = write_pipeline

    async def aclose(self) -> None:
        """Close the httpx client if this object made it."""
        if self._owned:
            await self._http.aclose()

    async def __aenter__(self) -> AuthorityClient:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()

    # -- plumbing ----------------------------------------------------------------------------

    async def _send(
        self,
        pipeline: Pipeline,
        path: str,
        *,
        json: Any = None,
        data: dict[str, str] | None = None,
        auth: httpx.Auth | None = None,
    ) -> Any:
        headers = {} if auth is not None else {"X-API-Key": self._api_key}

        async def attempt() -> Any:
            response = await self._http.post(
                self.base_url + path,
                json=json,
                data=data,
                headers=headers,
                auth=auth if auth is not None else httpx.USE_CLIENT_DEFAULT,
            )
            _raise_for_problem(response)
            return response.json()

        try:
            return await pipeline.call(attempt)
        except RetriesExhausted as exc:
            # The Authority answered each time (a 503 problem): its own code says more.
            if isinstance(exc.__cause__, CouponError):
                raise exc.__cause__ from exc
            raise
        except (httpx.HTTPError, TimeoutError, OSError) as exc:
            # Only reached without retry (write_pipeline) or on a failure that is not
            # transient: no answer came, so it is the same verdict the pipeline gives.
            raise RetriesExhausted(
                codes.RES_RETRIES,
                f"no answer from the Authority ({type(exc).__name__}); not retried",
                pipeline=pipeline.name,
                attempts=1,
            ) from exc
        except ValueError as exc:  # a 2xx whose body is not JSON
            raise InternalError(codes.INTERNAL, "the Authority's answer is not JSON") from exc

    # -- calls -------------------------------------------------------------------------------

    async def issue(
        self,
        *,
        subject: str,
        audience: Sequence[str],
        tenant: str,
        resource: str,
        actions: Sequence[str],
        purpose: str,
        binding_key: SigningKey | str,
        ttl: int | None = None,
    ) -> Issued:
        """Issue a root coupon bound to ``binding_key`` (a key or its RFC 7638 thumbprint)."""
        body: dict[str, Any] = {
            "subject": subject,
            "audience": list(audience),
            "tenant": tenant,
            "resource": resource,
            "actions": list(actions),
            "purpose": purpose,
            "binding": {"jkt": _jkt(binding_key)},
        }
        if ttl is not None:
            body["ttl"] = ttl
        return Issued.from_answer(await self._send(self.write_pipeline, "/v1/coupons", json=body))

    async def attenuate(
        self,
        parent: str,
        holder: SigningKey,
        *,
        subject: str,
        binding_key: SigningKey | str,
        resource: str | None = None,
        actions: Sequence[str] | None = None,
        purpose: str | None = None,
        ttl: int | None = None,
    ) -> Issued:
        """Ask for a sub-coupon of ``parent``, proving possession of ``holder`` with DPoP."""
        body: dict[str, Any] = {"subject": subject, "binding": {"jkt": _jkt(binding_key)}}
        for name, value in (("resource", resource), ("purpose", purpose), ("ttl", ttl)):
            if value is not None:
                body[name] = value
        if actions is not None:
            body["actions"] = list(actions)
        answer = await self._send(
            self.write_pipeline,
            "/v1/coupons/attenuate",
            json=body,
            auth=DPoPAuth(holder, parent),
        )
        return Issued.from_answer(answer)

    async def verify(
        self,
        coupon: str,
        *,
        audience: str,
        resource: str | None = None,
        action: str | None = None,
        purpose: str | None = None,
        tenant: str | None = None,
        dpop: str | None = None,
        htm: str | None = None,
        htu: str | None = None,
    ) -> dict[str, Any]:
        """The Authority's decision; a denial is ``{"allow": False, "code": ...}``, not raised."""
        fields = {
            "resource": resource,
            "action": action,
            "purpose": purpose,
            "tenant": tenant,
            "dpop": dpop,
            "htm": htm,
            "htu": htu,
        }
        body = {"coupon": coupon, "audience": audience}
        body.update({k: v for k, v in fields.items() if v is not None})
        answer: dict[str, Any] = await self._send(self.pipeline, "/v1/coupons/verify", json=body)
        return answer

    async def revoke(self, kind: RevocationKind, value: str, reason: str) -> int:
        """Revoke; returns the revocation feed's cursor once the Authority committed it."""
        answer = await self._send(
            self.write_pipeline,
            "/v1/revocations",
            json={"kind": kind, "value": value, "reason": reason},
        )
        return int(answer["cursor"])

    async def introspect(self, token: str) -> dict[str, Any]:
        """RFC 7662 introspection: ``{"active": False}`` or the coupon's claims."""
        answer: dict[str, Any] = await self._send(
            self.pipeline, "/v1/coupons/introspect", data={"token": token}
        )
        return answer


def _jkt(key: SigningKey | str) -> str:
    return key if isinstance(key, str) else key.public.thumbprint


class CouponSource:
    """The current coupon, re-issued shortly before it expires.

    Args:
        refresh: fetches a new coupon (e.g. ``lambda: client.issue(...)``).
        initial: a coupon already held; without one the first :meth:`get` fetches.
        refresh_before: refresh when fewer than this many seconds are left before ``exp``.
        clock: POSIX seconds.

    Concurrent callers of :meth:`get` share one refresh (single flight): the first takes the
    lock and fetches, the others wait and find the new coupon.
    """

    def __init__(
        self,
        refresh: Callable[[], Awaitable[Issued]],
        *,
        initial: Issued | None = None,
        refresh_before: float = 30.0,
        clock: Callable[[], float] = time.time,
    ) -> None:
        if refresh_before < 0:
            raise ValueError("refresh_before cannot be negative")
        self._refresh = refresh
        self._issued = initial
        self._refresh_before = refresh_before
        self._clock = clock
        self._lock = asyncio.Lock()

    def _fresh(self) -> Issued | None:
        issued = self._issued
        if issued is None or self._clock() >= issued.expires_at - self._refresh_before:
            return None
        return issued

    async def get(self) -> str:
        """The current coupon, refreshed first when it is close to ``exp``."""
        issued = self._fresh()
        if issued is not None:
            return issued.coupon
        async with self._lock:
            issued = self._fresh()
            if issued is None:
                issued = await self._refresh()
                self._issued = issued
        return issued.coupon

    def current(self) -> str:
        """The coupon held now, without refreshing (a coupon source for :class:`DPoPAuth`).

        Raises:
            RuntimeError: before the first :meth:`get` when no ``initial`` coupon was given.
        """
        if self._issued is None:
            raise RuntimeError("no coupon yet: await get() first")
        return self._issued.coupon
