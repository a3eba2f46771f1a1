"""Arbitrary requests at the gateway: always an answer, never a 5xx, never an unchecked pass."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Iterator
from typing import Any

import pytest
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


@pytest.fixture(scope="module")
def running_world() -> Iterator[tuple[World, asyncio.AbstractEventLoop]]:
    """One gateway for every example, in an event loop of its own thread."""
    loop = asyncio.new_event_loop()
    thread = threading.Thread(target=loop.run_forever, daemon=True)
    thread.start()
    world = World()
    asyncio.run_coroutine_threadsafe(world.__aenter__(), loop).result(30)
    yield world, loop
    asyncio.run_coroutine_threadsafe(world.__aexit__(None, None, None), loop).result(30)
    loop.call_soon_threadsafe(loop.stop)
    thread.join(10)
    loop.close()


@settings(
    max_examples=300,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
)
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
    running_world: tuple[World, asyncio.AbstractEventLoop],
    method: str,
    raw: str,
    headers: list[tuple[bytes, bytes]],
    body: bytes,
) -> None:
    world, loop = running_world
    path, _, query = raw.partition("?")
    scope = {
        "type": "http",
        "asgi": {"version": "3.0"},
        "http_version": "1.1",
        "method": method,
        "scheme": "http",
        "path": path,
        "raw_path": raw.encode("utf-8"),
        "query_string": query.encode("utf-8"),
        "root_path": "",
        "headers": [(b"host", b"edge.test"), *headers],
        "client": ("127.0.0.1", 5000),
        "server": ("edge.test", 80),
    }
    status = asyncio.run_coroutine_threadsafe(_call(world, scope, body), loop).result(30)
    assert status < 500, (method, raw, headers, status)
    if path.startswith("/orders") and status < 300:
        # Nothing reaches a protected route without a verified coupon; the fuzzer holds
        # none, so a success there would be a bypass.
        raise AssertionError(f"unverified pass: {method} {raw} {headers}")
