"""SqlStore.exclusive: one holder at a time across connections (and so across processes)."""

from __future__ import annotations

import asyncio

import pytest
from tests.authority.conftest import open_store

from coupon.storage.sql import SqlStore


class TestExclusive:
    @pytest.mark.asyncio
    async def test_second_holder_waits_for_the_first(
        self, postgres_store: SqlStore, postgres_url: str
    ) -> None:
        """On PostgreSQL a second store (another process's pool) enters only after release."""
        order: list[str] = []
        async with open_store(postgres_url) as other:
            async with postgres_store.exclusive(4242):
                order.append("first in")
                waiter = asyncio.create_task(_enter(other, order))
                await asyncio.sleep(0.3)
                assert not waiter.done(), "the second holder got in while the lock was held"
                order.append("first out")
            await asyncio.wait_for(waiter, 5)
        assert order == ["first in", "first out", "second in"]


async def _enter(store: SqlStore, order: list[str]) -> None:
    async with store.exclusive(4242):
        order.append("second in")
