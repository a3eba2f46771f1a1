"""The transient / unknown / permanent table and Retry-After parsing."""

from __future__ import annotations

import pytest

from coupon import codes
from coupon.errors import CircuitOpen, NotFound, RateLimited, StorageError
from coupon.resilience import (
    StatusFault,
    Verdict,
    classify,
    classify_status,
    parse_retry_after,
    retry_after_of,
)

NOW = 1_445_412_480.0  # Wed, 21 Oct 2015 07:28:00 GMT


class _Response:
    def __init__(self, status_code: int, headers: dict[str, str]) -> None:
        self.status_code = status_code
        self.headers = headers


class HTTPStatusError(Exception):
    """Shaped like httpx.HTTPStatusError: the status is on ``response``."""

    def __init__(self, status_code: int, headers: dict[str, str] | None = None) -> None:
        super().__init__(status_code)
        self.response = _Response(status_code, headers or {})


class TestClassifyStatus:
    @pytest.mark.parametrize("status", [408, 429, 502, 503, 504])
    def test_transient(self, status: int) -> None:
        """The transient codes of appendix D are transient."""
        assert classify_status(status) is Verdict.TRANSIENT

    @pytest.mark.parametrize("status", [500, 501, 599])
    def test_unknown(self, status: int) -> None:
        """A 500 (or another 5xx) may have had an effect: unknown."""
        assert classify_status(status) is Verdict.UNKNOWN

    @pytest.mark.parametrize("status", [400, 401, 403, 404, 405, 409, 410, 415, 422, 200, 302])
    def test_permanent(self, status: int) -> None:
        """The permanent codes of appendix D (and anything else) are never retried."""
        assert classify_status(status) is Verdict.PERMANENT


class TestClassify:
    @pytest.mark.parametrize(
        ("exc", "verdict"),
        [
            (TimeoutError(), Verdict.TRANSIENT),
            (ConnectionResetError(), Verdict.TRANSIENT),
            (ConnectionRefusedError(), Verdict.TRANSIENT),
            (StatusFault(503), Verdict.TRANSIENT),
            (StatusFault(500), Verdict.UNKNOWN),
            (StatusFault(404), Verdict.PERMANENT),
            (HTTPStatusError(429), Verdict.TRANSIENT),
            (HTTPStatusError(422), Verdict.PERMANENT),
            (StorageError(codes.UNAVAILABLE_STORAGE, "down"), Verdict.TRANSIENT),
            (NotFound(codes.NOT_FOUND, "gone"), Verdict.PERMANENT),
            (CircuitOpen(codes.RES_CIRCUIT_OPEN, "open"), Verdict.PERMANENT),
            (ValueError("a bug"), Verdict.PERMANENT),
        ],
    )
    def test_table(self, exc: BaseException, verdict: Verdict) -> None:
        """Each kind of failure gets the verdict of appendix D."""
        assert classify(exc) is verdict

    def test_httpx_transport_errors(self) -> None:
        """httpx's timeout and network errors are transient, found by duck typing."""
        import httpx

        request = httpx.Request("GET", "https://example.test/")
        assert classify(httpx.ReadTimeout("slow", request=request)) is Verdict.TRANSIENT
        assert classify(httpx.ConnectError("refused", request=request)) is Verdict.TRANSIENT
        assert classify(httpx.UnsupportedProtocol("ftp", request=request)) is Verdict.PERMANENT

    def test_httpx_status_error(self) -> None:
        """An httpx.HTTPStatusError is classified by its response's status."""
        import httpx

        request = httpx.Request("GET", "https://example.test/")
        response = httpx.Response(503, request=request, headers={"Retry-After": "7"})
        exc = httpx.HTTPStatusError("unavailable", request=request, response=response)
        assert classify(exc) is Verdict.TRANSIENT
        assert retry_after_of(exc, now=NOW) == 7.0


class TestRetryAfter:
    def test_seconds(self) -> None:
        """delay-seconds is read as seconds."""
        assert parse_retry_after("120", now=NOW) == 120.0

    def test_http_date(self) -> None:
        """An HTTP-date becomes the delay from now."""
        assert parse_retry_after("Wed, 21 Oct 2015 07:28:30 GMT", now=NOW) == 30.0

    def test_date_in_the_past(self) -> None:
        """A date already past means no wait."""
        assert parse_retry_after("Wed, 21 Oct 2015 07:00:00 GMT", now=NOW) == 0.0

    @pytest.mark.parametrize("value", ["soon", "-5", "1.5", "", "Wed, 21 Oct 2015 07:28:00 -0000"])
    def test_garbage(self, value: str) -> None:
        """A value that is neither form is ignored."""
        assert parse_retry_after(value, now=NOW) is None

    def test_from_headers(self) -> None:
        """The header is read from ``exc.headers``."""
        assert retry_after_of(StatusFault(429, {"Retry-After": "3"}), now=NOW) == 3.0

    def test_from_attribute(self) -> None:
        """A ``retry_after`` attribute (RateLimited) is read as seconds."""
        assert retry_after_of(RateLimited(codes.RATE_COUPON, "slow"), now=NOW) == 1.0

    def test_absent(self) -> None:
        """No hint, no delay."""
        assert retry_after_of(StatusFault(503), now=NOW) is None


def test_aiohttp_transport_errors_are_transient() -> None:
    import aiohttp

    from coupon.resilience import Verdict, classify

    refused = aiohttp.ClientConnectorError(
        aiohttp.client_reqrep.ConnectionKey("h", 1, False, True, None, None, None),
        ConnectionRefusedError(111, "refused"),
    )
    assert classify(refused) is Verdict.TRANSIENT
    assert classify(aiohttp.ServerDisconnectedError()) is Verdict.TRANSIENT
    assert classify(aiohttp.ClientPayloadError("cut short")) is Verdict.TRANSIENT
    assert classify(aiohttp.InvalidURL("x")) is Verdict.PERMANENT
