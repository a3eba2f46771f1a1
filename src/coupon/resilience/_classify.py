"""Transient, unknown or permanent: which failures are worth another attempt (seed 003 app. D).

The table:

* **transient** — timeouts, connection errors, HTTP 408, 429, 502, 503 and 504: retried;
* **unknown** — HTTP 500 and other 5xx: the request may have had an effect, so it is retried
  at most once per call;
* **permanent** — HTTP 400, 401, 403, 404, 405, 409, 410, 415, 422 (and any other status
  below 500), every :class:`~coupon.errors.ResilienceError` (an open circuit, a full
  bulkhead, a spent deadline) and every exception we do not recognise (a bug is not fixed by
  trying again): never retried.

HTTP client exceptions are recognised by duck typing, so this module imports no client: an
exception with a ``status_code`` attribute, or a ``response`` with one (like
``httpx.HTTPStatusError``), is classified by that status, and httpx's and aiohttp's
transport errors by their class names.
"""

from __future__ import annotations

import enum
import math
from email.utils import parsedate_to_datetime
from typing import Any

from coupon.errors import CouponError, ResilienceError

__all__ = [
    "PERMANENT_STATUS",
    "TRANSIENT_STATUS",
    "Verdict",
    "classify",
    "classify_status",
    "parse_retry_after",
    "retry_after_of",
    "status_of",
]

TRANSIENT_STATUS = frozenset({408, 429, 502, 503, 504})
PERMANENT_STATUS = frozenset({400, 401, 403, 404, 405, 409, 410, 415, 422})
# httpx.TimeoutException, NetworkError (ConnectError, ReadError...) and RemoteProtocolError;
# aiohttp's ClientConnectionError (refused, reset, server disconnected) and ClientPayloadError.
_TRANSIENT_NAMES = frozenset(
    {
        "httpx.TimeoutException",
        "httpx.NetworkError",
        "httpx.RemoteProtocolError",
        "aiohttp.ClientConnectionError",
        "aiohttp.ClientPayloadError",
    }
)


class Verdict(enum.Enum):
    """How a failure is classified."""

    TRANSIENT = "transient"
    UNKNOWN = "unknown"
    PERMANENT = "permanent"


def classify_status(status: int) -> Verdict:
    """Classify an HTTP status code.

    Args:
        status: the response status.

    Returns:
        ``TRANSIENT`` for 408/429/502/503/504, ``UNKNOWN`` for other 5xx (500 included),
        ``PERMANENT`` for everything else.
    """
    if status in TRANSIENT_STATUS:
        return Verdict.TRANSIENT
    if 500 <= status <= 599:
        return Verdict.UNKNOWN
    return Verdict.PERMANENT


def status_of(exc: BaseException) -> int | None:
    """Return the HTTP status an exception carries, if any.

    Looks at ``exc.status_code``, then ``exc.response.status_code`` (httpx's
    ``HTTPStatusError``), then a :class:`~coupon.errors.CouponError`'s ``code.status``.
    """
    status = getattr(exc, "status_code", None)
    if isinstance(status, int) and not isinstance(status, bool):
        return status
    response = getattr(exc, "response", None)
    status = getattr(response, "status_code", None)
    if isinstance(status, int) and not isinstance(status, bool):
        return status
    if isinstance(exc, CouponError):
        return exc.code.status
    return None


def classify(exc: BaseException) -> Verdict:
    """Classify an exception raised by a call to a dependency.

    Args:
        exc: the exception.

    Returns:
        The :class:`Verdict` of the table in this module's docstring.
    """
    if isinstance(exc, ResilienceError):
        return Verdict.PERMANENT
    if isinstance(exc, TimeoutError | ConnectionError):
        return Verdict.TRANSIENT
    names = {f"{cls.__module__.split('.')[0]}.{cls.__name__}" for cls in type(exc).__mro__}
    if names & _TRANSIENT_NAMES:
        return Verdict.TRANSIENT
    status = status_of(exc)
    if status is not None:
        return classify_status(status)
    return Verdict.PERMANENT


def parse_retry_after(value: str, *, now: float) -> float | None:
    """Parse a ``Retry-After`` header value into a delay in seconds (RFC 9110 §10.2.3).

    Args:
        value: delay-seconds (``"120"``) or an HTTP-date (``"Wed, 21 Oct 2015 07:28:00 GMT"``).
        now: the current wall-clock time (POSIX seconds), to turn a date into a delay.

    Returns:
        The delay (never negative), or ``None`` when the value is neither form.
    """
    text = value.strip()
    if text.isdigit():
        return float(int(text))
    try:
        when = parsedate_to_datetime(text)
    except (TypeError, ValueError, IndexError):
        return None
    if when.tzinfo is None:  # RFC 9110 dates are GMT; "-0000" parses naive
        return None
    return max(0.0, when.timestamp() - now)


def retry_after_of(exc: BaseException, *, now: float) -> float | None:
    """Return the delay the failure asks for, from ``retry_after`` or a ``Retry-After`` header.

    Args:
        exc: the exception; read are ``exc.retry_after`` (seconds, like
            :class:`~coupon.errors.RateLimited`), then the ``Retry-After`` header of
            ``exc.headers`` or ``exc.response.headers``.
        now: the current wall-clock time (POSIX seconds).
    """
    hint = getattr(exc, "retry_after", None)
    if isinstance(hint, int | float) and not isinstance(hint, bool) and math.isfinite(hint):
        return max(0.0, float(hint))
    for holder in (exc, getattr(exc, "response", None)):
        headers: Any = getattr(holder, "headers", None)
        if headers is not None and hasattr(headers, "get"):
            value = headers.get("Retry-After") or headers.get("retry-after")
            if isinstance(value, str):
                return parse_retry_after(value, now=now)
    return None
