"""Errors as RFC 9457 ``application/problem+json``: the one handler table.

Starlette finds the handler through the exception's MRO, so every :class:`CouponError` lands
in :func:`coupon_error`; validation errors, unknown routes and bugs get problems too.
"""

from __future__ import annotations

from typing import Any

from fastapi import Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from coupon import codes
from coupon.codes import ErrorCode
from coupon.errors import CouponError, RateLimited
from coupon.observability import get_logger

__all__ = ["PROBLEM_JSON", "handlers", "problem"]

PROBLEM_JSON = "application/problem+json"
_log = get_logger("coupon.authority.problems")


def problem(
    request: Request, code: ErrorCode, detail: str, *, headers: dict[str, str] | None = None
) -> JSONResponse:
    """A problem document for ``code`` with the request's trace and request ids."""
    state = request.scope.get("state", {})
    body: dict[str, Any] = {
        "type": f"https://coupon-authority.dev/errors/{code.code}",
        "title": code.title,
        "status": code.status,
        "detail": detail,
        "code": code.code,
        "instance": request.url.path,
        "trace_id": state.get("trace_id", ""),
        "request_id": state.get("request_id", ""),
    }
    return JSONResponse(body, status_code=code.status, media_type=PROBLEM_JSON, headers=headers)


async def coupon_error(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, CouponError)
    headers: dict[str, str] = {}
    if isinstance(exc, RateLimited):
        headers["Retry-After"] = str(max(1, round(exc.retry_after)))
    elif exc.code.status == 503:
        headers["Retry-After"] = "1"
    elif exc.code.status == 401:
        if exc.code.code.startswith("CPN-AUTH"):
            headers["WWW-Authenticate"] = 'ApiKey realm="coupon-authority"'
        elif exc.code.code.startswith("CPN-OIDC"):  # RFC 6750 §3
            headers["WWW-Authenticate"] = (
                f'Bearer realm="coupon-authority", error="{exc.code.protocol}"'
            )
        else:
            headers["WWW-Authenticate"] = f'DPoP error="{exc.code.protocol}", algs="EdDSA ES256"'
    nonce = getattr(exc, "dpop_nonce", None)
    if nonce:
        headers["DPoP-Nonce"] = nonce
    _log.info("request_denied", code=exc.code.code, reason=exc.reason, path=request.url.path)
    return problem(request, exc.code, exc.reason, headers=headers)


async def validation_error(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, RequestValidationError)
    first = exc.errors()[0] if exc.errors() else {}
    where = ".".join(str(p) for p in first.get("loc", ()))
    return problem(request, codes.REQUEST_BODY, f"{where}: {first.get('msg', 'invalid')}"[:300])


async def http_error(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, StarletteHTTPException)
    if exc.status_code == 404:
        return problem(request, codes.NOT_FOUND, "no such resource")
    if exc.status_code == 405:
        return problem(request, codes.REQUEST_BODY, "method not allowed")
    return problem(request, codes.REQUEST_BODY, str(exc.detail)[:300])


async def internal_error(request: Request, exc: Exception) -> JSONResponse:
    _log.error("internal_error", path=request.url.path, error=repr(exc), exc_info=exc)
    return problem(request, codes.INTERNAL, "internal error; see the log with this request id")


def handlers() -> dict[Any, Any]:
    """The exception handler table for the app."""
    return {
        CouponError: coupon_error,
        RequestValidationError: validation_error,
        StarletteHTTPException: http_error,
        Exception: internal_error,
    }
