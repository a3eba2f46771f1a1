"""``PurposeBound``: calls present a sub-coupon good for their purpose and nothing wider."""

from __future__ import annotations

import httpx
import pytest

from coupon import codes
from coupon.errors import CouponError, InvalidRequest
from coupon.sdk import DPoPAuth, PurposeBound
from coupon.token import Binding, KeySet, Request, SigningKey, Verifier, mint

NOW = 1_800_000_000
URL = "https://orders.example/orders/123/refunds"


class Clock:
    def __init__(self) -> None:
        self.now = float(NOW)

    def __call__(self) -> float:
        return self.now


def _world() -> tuple[SigningKey, SigningKey, str, Verifier]:
    issuer, holder = SigningKey.generate(kid="i1"), SigningKey.generate()
    coupon = mint(
        issuer,
        issuer="https://authority.example",
        subject="svc-billing",
        audience="orders",
        tenant="acme",
        resource="orders/**",
        actions=["read", "refund"],
        purpose="billing",
        binding=Binding(jkt=holder.public.thumbprint),
        now=NOW,
        ttl=3600,
    )
    return issuer, holder, coupon, Verifier(KeySet([issuer.public]))


def _verify(
    verifier: Verifier, auth: DPoPAuth, *, resource: str, action: str, purpose: str
) -> None:
    signed = next(auth.auth_flow(httpx.Request("POST", URL)))
    token = signed.headers["authorization"].removeprefix("DPoP ")
    verifier.verify(
        token,
        Request(
            audience="orders",
            resource=resource,
            action=action,
            purpose=purpose,
            method="POST",
            uri=URL,
            dpop=signed.headers["dpop"],
        ),
        now=NOW,
    )


def test_narrowed_coupon_serves_its_purpose_only() -> None:
    _, holder, coupon, verifier = _world()
    clock = Clock()
    bound = PurposeBound(
        holder, coupon, purpose="billing.refund", resource="orders/123", actions=["refund"],
        clock=clock,
    )  # fmt: skip
    auth = DPoPAuth(holder, bound, clock=clock)
    _verify(verifier, auth, resource="orders/123", action="refund", purpose="billing.refund")
    refusals = [
        {"resource": "orders/124", "action": "refund", "purpose": "billing.refund"},
        {"resource": "orders/123", "action": "read", "purpose": "billing.refund"},
        {"resource": "orders/123", "action": "refund", "purpose": "billing"},
    ]
    for wider in refusals:
        with pytest.raises(CouponError) as caught:
            _verify(verifier, auth, **wider)
        assert caught.value.code.status == 403, wider
    # The broad coupon itself would have allowed each of those.
    assert bound() != coupon


def test_cached_until_the_parent_changes_or_nears_expiry() -> None:
    issuer, holder, coupon, _ = _world()
    clock = Clock()
    current = [coupon]
    bound = PurposeBound(
        holder, lambda: current[0], purpose="billing", ttl=120, refresh_before=30, clock=clock
    )
    first = bound()
    assert bound() == first
    assert bound.minted == 1
    clock.now += 89  # 31 s left
    assert bound() == first
    clock.now += 2  # 29 s left: mint again
    assert bound() != first
    assert bound.minted == 2
    current[0] = mint(
        issuer, issuer="https://authority.example", subject="svc-billing", audience="orders",
        tenant="acme", resource="orders/**", actions=["read"], purpose="billing",
        binding=Binding(jkt=holder.public.thumbprint), now=int(clock.now), ttl=3600,
    )  # fmt: skip
    bound()
    assert bound.minted == 3


def test_a_wider_purpose_is_refused_when_minting() -> None:
    _, holder, coupon, _ = _world()
    with pytest.raises(InvalidRequest) as caught:
        PurposeBound(holder, coupon, purpose="marketing", clock=Clock())()
    assert caught.value.code is codes.REQUEST_WIDENS


def test_only_the_bound_key_can_narrow() -> None:
    _, _, coupon, _ = _world()
    with pytest.raises(InvalidRequest) as caught:
        PurposeBound(SigningKey.generate(), coupon, purpose="billing", clock=Clock())()
    assert caught.value.code is codes.REQUEST_KEY


def test_ttl_must_exceed_refresh_before() -> None:
    _, holder, coupon, _ = _world()
    with pytest.raises(ValueError, match="ttl"):
        PurposeBound(holder, coupon, purpose="billing", ttl=10, refresh_before=30)
