"""``ratelimit_headers``: the draft-ietf-httpapi-ratelimit-headers structured fields."""

from __future__ import annotations

import pytest

from coupon import codes
from coupon.errors import RateLimited
from coupon.ratelimit import Decision, RateLimitConfig, TenantLimits, raise_for, ratelimit_headers


def decision(**kw: object) -> Decision:
    base: dict[str, object] = {
        "allowed": True,
        "soft_exceeded": False,
        "remaining": 7,
        "reset_after": 2.2,
        "retry_after": 0.0,
        "limit": 100,
        "window": 60,
    }
    base.update(kw)
    return Decision(**base)  # type: ignore[arg-type]


def test_allowed() -> None:
    """Policy and remaining quota; no Retry-After."""
    assert ratelimit_headers(decision()) == {
        "RateLimit-Policy": '"tenant";q=100;w=60',
        "RateLimit": '"tenant";r=7;t=3',
    }


def test_refused() -> None:
    """A refusal reports r=0, t and Retry-After from retry_after (rounded up)."""
    headers = ratelimit_headers(decision(allowed=False, remaining=0, retry_after=0.25))
    assert headers["RateLimit"] == '"tenant";r=0;t=1'
    assert headers["Retry-After"] == "1"


def test_policy_name_is_an_sf_string() -> None:
    """Quotes and backslashes are escaped; control characters are refused."""
    assert ratelimit_headers(decision(), policy='a"b\\')["RateLimit"].startswith('"a\\"b\\\\";')
    with pytest.raises(ValueError, match="printable"):
        ratelimit_headers(decision(), policy="a\nb")
    with pytest.raises(ValueError, match="printable"):
        ratelimit_headers(decision(), policy="")


def test_raise_for() -> None:
    """Refusals raise CPN-RATE-003 with retry_after; admissions do nothing."""
    raise_for(decision(soft_exceeded=True))
    with pytest.raises(RateLimited) as info:
        raise_for(decision(allowed=False, retry_after=1.5))
    assert info.value.code is codes.RATE_TENANT
    assert info.value.retry_after == 1.5


@pytest.mark.parametrize(
    "kw",
    [
        {"soft_per_s": 0},
        {"soft_per_s": 20},
        {"hard_per_s": float("inf")},
        {"burst": 0},
        {"burst": True},
        {"window": 0},
        {"hard_per_s": 0.5, "soft_per_s": 0.5, "window": 1},
        {"name": "tenant 42"},
    ],
)
def test_limits_validation(kw: dict[str, object]) -> None:
    """Invalid limits raise ValueError."""
    args: dict[str, object] = {"soft_per_s": 5, "hard_per_s": 10, "burst": 3}
    args.update(kw)
    with pytest.raises(ValueError, match="must"):
        TenantLimits(**args)  # type: ignore[arg-type]


def test_config_lookup_and_validation() -> None:
    """Route override, then tenant override, then default; replicas >= 1."""
    default, gold, route = (TenantLimits(1, 2, 1, name=n) for n in ("d", "gold", "r"))
    config = RateLimitConfig(default, tenants={"t1": gold}, routes={("t1", "mint"): route})
    assert config.limits_for("t1", "mint") is route
    assert config.limits_for("t1") is gold
    assert config.limits_for("t2") is default
    with pytest.raises(ValueError, match="replicas"):
        RateLimitConfig(default, replicas=0)
    assert default.divided(4).burst == 1
