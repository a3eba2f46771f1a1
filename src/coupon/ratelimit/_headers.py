"""The ``RateLimit-Policy`` and ``RateLimit`` header fields of a decision (a pure function).

The fields follow draft-ietf-httpapi-ratelimit-headers in its structured-field form::

    RateLimit-Policy: "tenant";q=100;w=60
    RateLimit: "tenant";r=42;t=3

``q`` is the sustained quota per window ``w`` (seconds); ``r`` is how many requests would be
admitted right now and ``t`` the seconds (rounded up) until the quota is fully restored, or,
after a refusal, until the next request will be admitted. A refusal also gets ``Retry-After``.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from ._limiter import Decision

__all__ = ["ratelimit_headers"]


def _sf_string(value: str) -> str:
    """``value`` as an RFC 8941 sf-string."""
    if not value or any(not (0x20 <= ord(c) <= 0x7E) for c in value):
        raise ValueError("a policy name must be non-empty printable ASCII")
    return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'


def ratelimit_headers(decision: Decision, *, policy: str = "tenant") -> dict[str, str]:
    """The header fields to add to the response that ``decision`` was made for.

    Args:
        decision: what :meth:`RateLimiter.check` returned.
        policy: the policy name (an sf-string; printable ASCII).

    Raises:
        ValueError: ``policy`` is empty or not printable ASCII.
    """
    name = _sf_string(policy)
    if decision.allowed:
        remaining, reset = decision.remaining, decision.reset_after
    else:
        remaining, reset = 0, decision.retry_after
    seconds = max(0, math.ceil(reset))
    headers = {
        "RateLimit-Policy": f"{name};q={decision.limit};w={decision.window}",
        "RateLimit": f"{name};r={max(0, remaining)};t={seconds}",
    }
    if not decision.allowed:
        headers["Retry-After"] = str(max(1, seconds))
    return headers
