"""Errors as gRPC statuses: the one mapping table, and the ``grpc-status-details-bin`` trailer.

A :class:`~coupon.errors.CouponError` becomes the gRPC status of its HTTP status (the table
below, docs/grpc.md) with a :class:`Status` in the trailing metadata whose ``details`` hold
one :class:`ErrorDetail`: the same code, title and reason a REST problem document carries.
``Status`` is wire-compatible with ``google.rpc.Status``.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Final

import grpc

from coupon.codes import ErrorCode
from coupon.errors import CouponError, RateLimited

from ._gen.authority_pb2 import ErrorDetail, Status

__all__ = [
    "DETAILS_KEY",
    "HTTP_TO_GRPC",
    "error_detail",
    "grpc_status",
    "read_error_detail",
    "status_details",
]

#: The trailing metadata key of the serialized :class:`Status` (the gRPC convention).
DETAILS_KEY: Final = "grpc-status-details-bin"
_DETAIL_TYPE: Final = f"type.googleapis.com/{ErrorDetail.DESCRIPTOR.full_name}"

_S = grpc.StatusCode
#: The gRPC status of each HTTP status our error codes use.
HTTP_TO_GRPC: Final[dict[int, grpc.StatusCode]] = {
    400: _S.INVALID_ARGUMENT,
    401: _S.UNAUTHENTICATED,
    403: _S.PERMISSION_DENIED,
    404: _S.NOT_FOUND,
    405: _S.UNIMPLEMENTED,
    409: _S.FAILED_PRECONDITION,
    410: _S.NOT_FOUND,
    413: _S.RESOURCE_EXHAUSTED,
    415: _S.INVALID_ARGUMENT,
    422: _S.INVALID_ARGUMENT,
    429: _S.RESOURCE_EXHAUSTED,
    500: _S.INTERNAL,
    502: _S.UNAVAILABLE,
    503: _S.UNAVAILABLE,
    504: _S.DEADLINE_EXCEEDED,
}


def grpc_status(code: ErrorCode) -> grpc.StatusCode:
    """The gRPC status for ``code``: by its HTTP status, never ``OK``.

    A status missing from :data:`HTTP_TO_GRPC` maps to ``FAILED_PRECONDITION`` (4xx) or
    ``INTERNAL`` (anything else), so a new code can never answer ``OK`` or ``UNKNOWN``.
    """
    mapped = HTTP_TO_GRPC.get(code.status)
    if mapped is not None:
        return mapped
    return _S.FAILED_PRECONDITION if 400 <= code.status < 500 else _S.INTERNAL


def error_detail(
    exc: CouponError, *, request_id: str, trace_id: str, dpop_nonce: str | None = None
) -> ErrorDetail:
    """The :class:`ErrorDetail` of ``exc``: what a REST problem document says, and hints.

    ``dpop_nonce`` is a fresh nonce to send with ``use_dpop_nonce`` (RFC 9449 §8).
    """
    detail = ErrorDetail(
        code=exc.code.code,
        title=exc.code.title,
        reason=exc.reason,
        request_id=request_id,
        trace_id=trace_id,
        http_status=exc.code.status,
        protocol_error=exc.code.protocol,
    )
    if exc.step is not None:
        detail.step = exc.step
    if isinstance(exc, RateLimited):
        detail.retry_after = max(1, round(exc.retry_after))
    elif exc.code.status == 503:
        detail.retry_after = 1
    if dpop_nonce:
        detail.dpop_nonce = dpop_nonce
    return detail


def status_details(status: grpc.StatusCode, message: str, detail: ErrorDetail) -> bytes:
    """The serialized :class:`Status` for the ``grpc-status-details-bin`` trailer."""
    packed = Status(code=status.value[0], message=message)
    packed.details.add().Pack(detail)
    return packed.SerializeToString()


def read_error_detail(
    trailing_metadata: Sequence[tuple[str, str | bytes]] | None,
) -> ErrorDetail | None:
    """The :class:`ErrorDetail` a failed call carries (client side), or None.

    Pass ``rpc_error.trailing_metadata()``. None when the trailer is absent (an error raised
    by gRPC itself, such as ``UNAVAILABLE`` for an unreachable server) or holds no detail.
    """
    for key, value in trailing_metadata or ():
        if key != DETAILS_KEY or not isinstance(value, bytes):
            continue
        status = Status()
        try:
            status.ParseFromString(value)
        except Exception:  # a malformed trailer from a server we do not control
            return None
        for item in status.details:
            if item.type_url == _DETAIL_TYPE:
                detail = ErrorDetail()
                if item.Unpack(detail):
                    return detail
    return None
