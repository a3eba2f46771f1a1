"""Pure ASGI plumbing shared by the middlewares: the callable types, RFC 9457 problem
answers in the Authority's shape, and whole responses sent in two messages."""

from __future__ import annotations

import json
import math
from collections.abc import Awaitable, Callable, Iterable, MutableMapping
from typing import Any, Final

from coupon.errors import CouponError

__all__ = [
    "PROBLEM_JSON",
    "ASGIApp",
    "Message",
    "Receive",
    "Scope",
    "Send",
    "problem",
    "read_body",
    "refuse",
    "respond",
]

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]

PROBLEM_JSON: Final = "application/problem+json"


def problem(
    scope: Scope, exc: CouponError, *, headers: Iterable[tuple[bytes, bytes]] = ()
) -> tuple[int, list[tuple[bytes, bytes]], bytes]:
    """An RFC 9457 problem for ``exc``: the same members as the Authority's handler table.

    ``Retry-After`` comes from ``headers``, else from the error's ``retry_after`` hint
    (seconds, rounded up to at least 1), else ``1`` for a 503.
    """
    state = scope.get("state") or {}
    code = exc.code
    body = json.dumps(
        {
            "type": f"https://coupon-authority.dev/errors/{code.code}",
            "title": code.title,
            "status": code.status,
            "detail": exc.reason,
            "code": code.code,
            "instance": scope.get("path", ""),
            "trace_id": state.get("trace_id", ""),
            "request_id": state.get("request_id", ""),
        },
        separators=(",", ":"),
    ).encode()
    out = [
        (b"content-type", PROBLEM_JSON.encode()),
        (b"content-length", str(len(body)).encode()),
        (b"cache-control", b"no-store"),
        *headers,
    ]
    if not any(name == b"retry-after" for name, _ in out):
        hint = getattr(exc, "retry_after", None)
        if isinstance(hint, int | float) and hint > 0:
            out.append((b"retry-after", str(max(1, math.ceil(hint))).encode()))
        elif code.status == 503:
            out.append((b"retry-after", b"1"))
    return code.status, out, body


async def respond(send: Send, status: int, headers: list[tuple[bytes, bytes]], body: bytes) -> None:
    """Send a whole response: its start, then its one body message."""
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body, "more_body": False})


async def refuse(scope: Scope, send: Send, exc: CouponError) -> None:
    """Answer ``exc`` as its problem (see :func:`problem`)."""
    await respond(send, *problem(scope, exc))


async def read_body(
    receive: Receive, limit: int, too_large: Callable[[], CouponError]
) -> bytes | None:
    """The whole request body, or ``None`` when the client left before sending it.

    Raises:
        CouponError: ``too_large()`` as soon as more than ``limit`` bytes arrived.
    """
    chunks: list[bytes] = []
    size = 0
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            return None
        chunk = message.get("body", b"")
        size += len(chunk)
        if size > limit:
            raise too_large()
        chunks.append(chunk)
        if not message.get("more_body", False):
            return b"".join(chunks)
