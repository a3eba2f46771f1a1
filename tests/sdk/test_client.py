"""``AuthorityClient`` over MockTransport: answers, typed errors, which calls are retried;
``CouponSource``: refresh before ``exp``, single flight."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Iterator
from typing import Any

import httpx
import pytest

from coupon import codes
from coupon.errors import (
    CircuitOpen,
    CouponRevoked,
    DependencyUnavailable,
    Forbidden,
    InternalError,
    RetriesExhausted,
    StorageError,
)
from coupon.resilience import DEFAULTS, set_testing
from coupon.sdk import AuthorityClient, CouponSource, Issued
from coupon.token import SigningKey, verify_dpop_proof

BASE = "http://authority.test"
Handler = Callable[[httpx.Request], httpx.Response]


@pytest.fixture(autouse=True)
def no_backoff_sleep() -> Iterator[None]:
    """Backoff is computed but not slept (stamina-style testing mode)."""
    set_testing(True)
    yield
    set_testing(False)


def problem(code: codes.ErrorCode, detail: str = "no") -> httpx.Response:
    body = {"type": "about:blank", "title": code.title, "status": code.status}
    body.update({"detail": detail, "code": code.code})
    return httpx.Response(
        code.status, json=body, headers={"content-type": "application/problem+json"}
    )


def coupon_answer(coupon: str = "a.b.c", exp: int = 2_000_000_000) -> dict[str, Any]:
    return {
        "coupon": coupon,
        "token_type": "DPoP",
        "jti": "j1",
        "lineage": "l1",
        "kid": "k",
        "issued_at": 1,
        "expires_at": exp,
        "expires_in": 60,
        "policy_version": None,
        "claims": {"sub": "alice"},
        "trace_id": "t",
    }


def run(handler: Handler, call: Callable[[AuthorityClient], Any]) -> Any:
    async def main() -> Any:
        async with httpx.AsyncClient(transport=httpx.MockTransport(handler)) as http:
            client = AuthorityClient(BASE, api_key="cpk_x", client=http)
            return await call(client)

    return asyncio.run(main())


def counting(*responses: httpx.Response | Exception) -> tuple[Handler, list[httpx.Request]]:
    seen: list[httpx.Request] = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        answer = responses[min(len(seen), len(responses)) - 1]
        if isinstance(answer, Exception):
            raise answer
        return answer

    return handler, seen


ISSUE: dict[str, Any] = {
    "subject": "alice",
    "audience": ["orders"],
    "tenant": "t",
    "resource": "orders/**",
    "actions": ["read"],
    "purpose": "billing",
}


class TestCalls:
    def test_issue_sends_the_key_and_reads_the_answer(self) -> None:
        """``issue`` posts the body with ``X-API-Key`` and returns :class:`Issued`."""
        handler, seen = counting(httpx.Response(201, json=coupon_answer()))
        key = SigningKey.generate()
        issued = run(handler, lambda c: c.issue(**ISSUE, binding_key=key, ttl=60))
        assert issued == Issued("a.b.c", "j1", "l1", 2_000_000_000, {"sub": "alice"})
        (request,) = seen
        assert request.headers["X-API-Key"] == "cpk_x"
        assert b'"jkt":"' + key.public.thumbprint.encode() + b'"' in request.content.replace(
            b" ", b""
        )

    def test_attenuate_proves_the_parent_key(self) -> None:
        """``attenuate`` sends the parent as ``DPoP`` with a proof for its URL, no API key."""
        holder = SigningKey.generate()
        proofs: list[str] = []

        def handler(request: httpx.Request) -> httpx.Response:
            assert "X-API-Key" not in request.headers
            assert request.headers["Authorization"] == "DPoP p.q.r"
            proof = verify_dpop_proof(
                request.headers["DPoP"],
                method="POST",
                uri=f"{BASE}/v1/coupons/attenuate",
                now=time.time(),
                access_token="p.q.r",
            )
            proofs.append(proof.jkt)
            return httpx.Response(201, json=coupon_answer("child"))

        issued = run(
            handler,
            lambda c: c.attenuate("p.q.r", holder, subject="bob", binding_key="x" * 43),
        )
        assert issued.coupon == "child"
        assert proofs == [holder.public.thumbprint]

    def test_verify_revoke_introspect(self) -> None:
        """A decision, a cursor and an introspection answer come back as sent."""

        def handler(request: httpx.Request) -> httpx.Response:
            if request.url.path == "/v1/coupons/verify":
                return httpx.Response(200, json={"allow": False, "code": "CPN-REV-001"})
            if request.url.path == "/v1/revocations":
                return httpx.Response(201, json={"revocations": [], "cursor": 7})
            assert request.content == b"token=a.b.c"
            return httpx.Response(200, json={"active": False})

        async def calls(c: AuthorityClient) -> tuple[Any, ...]:
            return (
                await c.verify("a.b.c", audience="orders"),
                await c.revoke("jti", "j1", "lost"),
                await c.introspect("a.b.c"),
            )

        decision, cursor, active = run(handler, calls)
        assert decision == {"allow": False, "code": "CPN-REV-001"}
        assert cursor == 7
        assert active == {"active": False}


class TestErrors:
    def test_problem_becomes_the_typed_error(self) -> None:
        """A problem document raises the ``CouponError`` of its code, with the same code."""
        handler, _ = counting(problem(codes.AUTH_FORBIDDEN, "not an issuer"))
        with pytest.raises(Forbidden) as caught:
            run(handler, lambda c: c.issue(**ISSUE, binding_key="x" * 43))
        assert caught.value.code is codes.AUTH_FORBIDDEN
        assert caught.value.reason == "not an issuer"

    def test_unknown_code_is_internal(self) -> None:
        """A problem with a code this SDK does not know is an ``InternalError``."""
        response = httpx.Response(
            500, json={"code": "CPN-NEW-999"}, headers={"content-type": "application/problem+json"}
        )
        handler, _ = counting(response)
        with pytest.raises(InternalError):
            run(handler, lambda c: c.introspect("a.b.c"))

    def test_transport_error_is_a_dependency_error(self) -> None:
        """No answer at all: a ``DependencyUnavailable`` (``RetriesExhausted``), not httpx's."""
        handler, seen = counting(httpx.ConnectError("refused"))
        with pytest.raises(RetriesExhausted) as caught:
            run(handler, lambda c: c.verify("a.b.c", audience="orders"))
        assert isinstance(caught.value, DependencyUnavailable)
        assert caught.value.code is codes.RES_RETRIES
        assert len(seen) == 2  # sync-microservice: one retry

    def test_open_circuit_is_typed(self) -> None:
        """Once the breaker opens, calls fail fast with ``CircuitOpen``, nothing sent."""
        handler, seen = counting(httpx.ConnectError("refused"))

        async def calls(c: AuthorityClient) -> BaseException:
            for _ in range(DEFAULTS["sync-microservice"].breaker.min_throughput):  # type: ignore[union-attr]
                with pytest.raises(RetriesExhausted):
                    await c.verify("a.b.c", audience="orders")
            sent = len(seen)
            with pytest.raises(CircuitOpen) as caught:
                await c.verify("a.b.c", audience="orders")
            assert len(seen) == sent
            return caught.value

        assert run(handler, calls).code is codes.RES_CIRCUIT_OPEN


class TestRetries:
    def test_verify_retries_a_503(self) -> None:
        """A read is retried on a transient answer and succeeds on the second attempt."""
        handler, seen = counting(
            problem(codes.UNAVAILABLE_STORAGE), httpx.Response(200, json={"allow": True})
        )
        assert run(handler, lambda c: c.verify("a.b.c", audience="o")) == {"allow": True}
        assert len(seen) == 2

    def test_persistent_503_keeps_the_server_code(self) -> None:
        """After the retries, the Authority's own 503 code is raised, not a generic one."""
        handler, seen = counting(problem(codes.UNAVAILABLE_STORAGE))
        with pytest.raises(StorageError) as caught:
            run(handler, lambda c: c.introspect("a.b.c"))
        assert caught.value.code is codes.UNAVAILABLE_STORAGE
        assert len(seen) == 2

    def test_permanent_answer_is_not_retried(self) -> None:
        """A 401/403/4xx answer is final: one request."""
        handler, seen = counting(problem(codes.REVOKED))
        with pytest.raises(CouponRevoked):
            run(handler, lambda c: c.verify("a.b.c", audience="o"))
        assert len(seen) == 1

    @pytest.mark.parametrize(
        "failure",
        [httpx.ConnectError("refused"), httpx.ReadTimeout("slow")],
        ids=["connect", "read-timeout"],
    )
    def test_writes_are_never_retried(self, failure: Exception) -> None:
        """issue, attenuate and revoke: one request, then a typed dependency error."""
        for call in (
            lambda c: c.issue(**ISSUE, binding_key="x" * 43),
            lambda c: c.attenuate(
                "p.q.r", SigningKey.generate(), subject="b", binding_key="x" * 43
            ),
            lambda c: c.revoke("jti", "j", "r"),
        ):
            handler, seen = counting(failure)
            with pytest.raises(RetriesExhausted) as caught:
                run(handler, call)
            assert caught.value.attempts == 1
            assert len(seen) == 1

    def test_write_503_is_not_retried(self) -> None:
        """Even a 503 answer to ``revoke`` is raised as it is, after one request."""
        handler, seen = counting(problem(codes.UNAVAILABLE_STORAGE))
        with pytest.raises(StorageError):
            run(handler, lambda c: c.revoke("jti", "j", "r"))
        assert len(seen) == 1


class TestCouponSource:
    def test_refreshes_near_exp_single_flight(self) -> None:
        """Fresh: no call. Near ``exp``: one refresh shared by concurrent callers."""
        now = [1000.0]
        calls: list[int] = []

        async def refresh() -> Issued:
            calls.append(1)
            await asyncio.sleep(0.01)
            return Issued(f"c{len(calls)}", "j", "l", int(now[0]) + 300, {})

        async def main() -> list[str]:
            source = CouponSource(
                refresh, initial=Issued("c0", "j", "l", 1100, {}), refresh_before=30,
                clock=lambda: now[0],
            )  # fmt: skip
            first = await source.get()
            now[0] = 1075.0  # 25 s left < 30 s
            rest = await asyncio.gather(*(source.get() for _ in range(10)))
            assert source.current() == "c1"
            return [first, *rest]

        got = asyncio.run(main())
        assert got == ["c0"] + ["c1"] * 10
        assert calls == [1]

    def test_first_get_fetches(self) -> None:
        """Without an initial coupon, ``current`` refuses and ``get`` fetches."""

        async def refresh() -> Issued:
            return Issued("c", "j", "l", 2_000_000_000, {})

        source = CouponSource(refresh)
        with pytest.raises(RuntimeError):
            source.current()
        assert asyncio.run(source.get()) == "c"
        with pytest.raises(ValueError, match="refresh_before"):
            CouponSource(refresh, refresh_before=-1)
