"""Arbitrary requests at the gateway: always an answer, never a 5xx, never an unchecked pass."""

from __future__ import annotations

import asyncio
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from tests.gateway.world import World

from coupon._asgi import Message

_PATH_CHARS = st.sampled_from(
    ["/", "a", "1", ".", "..", "%", "%2F", "%2e", "%00", "%5C", "\\", "orders", "public", " ",
     "_coupon", "check", "?", "%ZZ", "\u00e9", "%C3%A9", "{", "}", "//", "refunds"]
)  # fmt: skip
_HEADER_NAMES = st.sampled_from(
    [b"content-length", b"content-type", b"transfer-encoding", b"authorization", b"dpop",
     b"idempotency-key", b"x-request-id", b"traceparent", b"connection", b"x-original-uri",
     b"x-original-method", b"host", b"x-coupon-tenant"]
)  # fmt: skip
_HEADER_VALUES = st.one_of(
    st.binary(max_size=40),
    st.sampled_from([b"12", b"-1", b"1e3", b"DPoP x.y.z", b"Bearer a", b"application/json"]),
)
_METHODS = st.sampled_from(["GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS", "BREW"])


async def _call(world: World, scope: dict[str, Any], body: bytes) -> int:
    sent: list[Message] = []
    given_body = False

    async def receive() -> Message:
        nonlocal given_body
        if not given_body:
            given_body = True
            return {"type": "http.request", "body": body, "more_body": False}
        await asyncio.sleep(3600)
        raise AssertionError("unreachable")

    async def send(message: Message) -> None:
        sent.append(message)

    await world.gateway(scope, receive, send)
    starts = [m for m in sent if m["type"] == "http.response.start"]
    assert len(starts) == 1
    return int(starts[0]["status"])


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    method=_METHODS,
    raw=st.one_of(
        st.lists(_PATH_CHARS, max_size=8).map(lambda parts: "/" + "".join(parts)),
        st.tuples(
            st.sampled_from(["/orders/", "/public/", "/api/v1/", "/_coupon/"]),
            st.lists(_PATH_CHARS, max_size=4).map("".join),
            st.sampled_from(["", "/refunds", "?a=1", "/x"]),
        ).map("".join),
    ),
    headers=st.lists(st.tuples(_HEADER_NAMES, _HEADER_VALUES), max_size=6),
    body=st.binary(max_size=100),
)
def test_any_request_gets_a_clear_answer(
    method: str, raw: str, headers: list[tuple[bytes, bytes]], body: bytes
) -> None:
    async def main() -> None:
        async with World() as world:
            raw_path = raw.encode("utf-8")
            path, _, query = raw.partition("?")
            scope = {
                "type": "http",
                "asgi": {"version": "3.0"},
                "http_version": "1.1",
                "method": method,
                "scheme": "http",
                "path": path,
                "raw_path": raw_path,
                "query_string": query.encode("utf-8"),
                "root_path": "",
                "headers": [(b"host", b"edge.test"), *headers],
                "client": ("127.0.0.1", 5000),
                "server": ("edge.test", 80),
            }
            status = await _call(world, scope, body)
            assert status < 500, (method, raw, headers, status)
            protected = path.startswith("/orders")
            if protected and status < 300:
                # Nothing reaches a protected route without a verified coupon; the fuzzer
                # holds none, so a success there would be a bypass.
                raise AssertionError(f"unverified pass: {method} {raw} {headers}")

    asyncio.run(main())
