"""The SDK against a real Authority process: issue, attenuate with DPoP, verify, revoke."""

from __future__ import annotations

import asyncio

import pytest
from tests.services.harness import RESOURCE_URI, Holder, Launcher

from coupon.errors import InvalidProof
from coupon.sdk import AuthorityClient


def test_issue_attenuate_verify_revoke(launcher: Launcher) -> None:
    """A DPoP-bound coupon is attenuated by its holder; the child verifies until revoked."""
    authority = launcher.start("embedded")
    parent_holder, child_holder = Holder(), Holder()

    async def main() -> None:
        async with AuthorityClient(authority.base_url, api_key=authority.admin_key) as client:
            parent = await client.issue(
                subject="alice", audience=["orders"], tenant="tenant-a",
                resource="orders/123/**", actions=["read"], purpose="billing",
                binding_key=parent_holder.key, ttl=120,
            )  # fmt: skip
            child = await client.attenuate(
                parent.coupon, parent_holder.key, subject="bob",
                binding_key=child_holder.key, resource="orders/123/items",
            )  # fmt: skip
            assert child.lineage == parent.lineage
            assert child.claims["cnf"] == {"jkt": child_holder.jkt}

            def ask() -> dict[str, str]:
                return {
                    "audience": "orders", "resource": "orders/123/items", "action": "read",
                    "purpose": "billing", "htm": "GET", "htu": RESOURCE_URI,
                    "dpop": child_holder.proof(token=child.coupon),
                }  # fmt: skip

            allowed = await client.verify(child.coupon, **ask())
            assert allowed["allow"] is True, allowed
            assert (await client.introspect(child.coupon))["active"] is True

            cursor = await client.revoke("jti", child.jti, "sdk e2e")
            assert cursor >= 1
            denied = await client.verify(child.coupon, **ask())
            assert denied["allow"] is False
            assert denied["code"] == "CPN-REV-001"

            # The wrong key cannot attenuate: a typed error with the Authority's code.
            with pytest.raises(InvalidProof, match=r".") as caught:
                await client.attenuate(
                    parent.coupon, child_holder.key, subject="eve", binding_key=child_holder.key
                )
            assert caught.value.code.code.startswith("CPN-POP-")

    asyncio.run(main())
