"""``LocalVerifier`` against a real Authority: verify in-process, then see a revocation."""

from __future__ import annotations

import asyncio
import time

from tests.services.harness import RESOURCE_URI, Holder, Launcher

from coupon.errors import CouponError
from coupon.sdk import AuthorityClient, LocalVerifier
from coupon.token import Request


def test_local_verifier_sees_revocation(launcher: Launcher) -> None:
    """A coupon verifies locally with DPoP; after revocation it is denied within 3 s."""
    authority = launcher.start("embedded")
    holder = Holder()

    def request(token: str) -> Request:
        return Request(
            audience="orders", resource="orders/123/items", action="read", purpose="billing",
            tenant="tenant-a", method="GET", uri=RESOURCE_URI, dpop=holder.proof(token=token),
        )  # fmt: skip

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
            verified = await local.verify(issued.coupon, request(issued.coupon))
            assert verified.claims.jti == issued.jti

            await client.revoke("jti", issued.jti, "local e2e")
            deadline = time.monotonic() + 3.0
            code = None
            while time.monotonic() < deadline:
                try:
                    await local.verify(issued.coupon, request(issued.coupon))
                except CouponError as exc:
                    code = exc.code.code
                    break
                await asyncio.sleep(0.1)
            assert code == "CPN-REV-001"

    asyncio.run(main())
