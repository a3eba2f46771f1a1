"""``LocalVerifier`` against a real Authority: verify in-process, then see a revocation."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator

import pytest
from tests.services.harness import RESOURCE_URI, AuthorityProcess, Holder, Launcher

from coupon.errors import CouponError
from coupon.sdk import AuthorityClient, LocalVerifier
from coupon.token import Request


@pytest.fixture(scope="module")
def embedded(module_launcher: Launcher) -> Iterator[AuthorityProcess]:
    """One embedded Authority shared by this module's tests."""
    proc = module_launcher.start("embedded", name="sdk-push")
    yield proc
    proc.close()


def request_for(holder: Holder, token: str) -> Request:
    return Request(
        audience="orders", resource="orders/123/items", action="read", purpose="billing",
        tenant="tenant-a", method="GET", uri=RESOURCE_URI, dpop=holder.proof(token=token),
    )  # fmt: skip


async def denial_code(local: LocalVerifier, holder: Holder, token: str, within: float) -> str:
    """The code of the first denial of ``token`` within ``within`` seconds, or ``""``."""
    deadline = time.monotonic() + within
    while time.monotonic() < deadline:
        try:
            await local.verify(token, request_for(holder, token))
        except CouponError as exc:
            return exc.code.code
        await asyncio.sleep(0.05)
    return ""


def test_local_verifier_sees_revocation(embedded: AuthorityProcess) -> None:
    """A coupon verifies locally with DPoP; after revocation it is denied within 3 s."""
    authority = embedded
    holder = Holder()

    async def main() -> None:
        async with (
            AuthorityClient(authority.base_url, api_key=authority.admin_key) as client,
            LocalVerifier(
                authority.base_url, api_key=authority.admin_key, poll_interval=0.2
            ) as local,
        ):
            issued = await client.issue(
                subject="alice", audience=["orders"], tenant="tenant-a",
                resource="orders/123/**", actions=["read"], purpose="billing",
                binding_key=holder.key, ttl=120,
            )  # fmt: skip
            verified = await local.verify(issued.coupon, request_for(holder, issued.coupon))
            assert verified.claims.jti == issued.jti

            await client.revoke("jti", issued.jti, "local e2e")
            assert await denial_code(local, holder, issued.coupon, within=3.0) == "CPN-REV-001"

    asyncio.run(main())


def test_pushed_revocation_is_denied_without_pulls(embedded: AuthorityProcess) -> None:
    """With pulls 30 s apart only the stream delivers: heartbeats keep the store fresh past
    max_staleness, and a revocation is denied within 2 s."""
    holder = Holder()

    async def main() -> None:
        async with (
            AuthorityClient(embedded.base_url, api_key=embedded.admin_key) as client,
            LocalVerifier(
                embedded.base_url, api_key=embedded.admin_key, poll_interval=30, max_staleness=3
            ) as local,
        ):
            sync = local.revocations
            assert sync.heartbeat == 1
            issued = await client.issue(
                subject="alice", audience=["orders"], tenant="tenant-a",
                resource="orders/123/**", actions=["read"], purpose="billing",
                binding_key=holder.key, ttl=120,
            )  # fmt: skip
            deadline = time.monotonic() + 5
            while sync.heartbeats < 4:  # ~4 s: past max_staleness since the only pull
                assert time.monotonic() < deadline, "no heartbeats from the server"
                await asyncio.sleep(0.05)
            verified = await local.verify(issued.coupon, request_for(holder, issued.coupon))
            assert verified.claims.jti == issued.jti

            await client.revoke("jti", issued.jti, "push e2e")
            assert await denial_code(local, holder, issued.coupon, within=2.0) == "CPN-REV-001"
            assert sync.pushed >= 1
            assert (sync.pulls, sync.stream_connects) == (1, 1)  # start()'s pull, one stream

    asyncio.run(main())


@pytest.mark.parametrize("heartbeat", ["0.5", "0", "61", "-1", "x", "nan", "inf"])
def test_stream_heartbeat_out_of_range_is_422(embedded: AuthorityProcess, heartbeat: str) -> None:
    """A stream heartbeat outside 1 to 60 seconds, or not a number: 422 CPN-REQ-009."""
    response = embedded.client.get("/v1/revocations/stream", params={"heartbeat": heartbeat})
    assert response.status_code == 422, response.text
    assert response.headers["content-type"].startswith("application/problem+json")
    assert response.json()["code"] == "CPN-REQ-009"
