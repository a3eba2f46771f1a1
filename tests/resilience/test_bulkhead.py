"""The bulkhead: concurrency limit, FIFO queue, immediate rejection."""

from __future__ import annotations

import asyncio

import pytest

from coupon.errors import BulkheadFull
from coupon.resilience import (
    Bulkhead,
    BulkheadOccupancy,
    BulkheadPolicy,
    BulkheadRejected,
)


class TestBulkhead:
    @pytest.mark.asyncio
    async def test_queue_then_reject(self) -> None:
        """Past the slots calls queue; past the queue they are rejected at once."""
        events: list[object] = []
        bulkhead = Bulkhead(
            BulkheadPolicy(max_concurrent=1, max_queue=1), name="dep", emit=events.append
        )
        await bulkhead.acquire()
        waiting = asyncio.ensure_future(bulkhead.acquire())
        await asyncio.sleep(0)
        assert (bulkhead.in_use, bulkhead.queued) == (1, 1)
        with pytest.raises(BulkheadFull) as info:
            await bulkhead.acquire()
        assert info.value.code.code == "CPN-RES-002"
        assert BulkheadRejected("dep", 1, 1) in events
        bulkhead.release()
        await waiting
        assert (bulkhead.in_use, bulkhead.queued) == (1, 0)
        bulkhead.release()
        assert events[-1] == BulkheadOccupancy("dep", 0, 0)

    @pytest.mark.asyncio
    async def test_no_queue(self) -> None:
        """With no queue a busy bulkhead rejects."""
        bulkhead = Bulkhead(BulkheadPolicy(max_concurrent=1, max_queue=0))
        async with bulkhead.slot():
            with pytest.raises(BulkheadFull):
                await bulkhead.acquire()
        assert bulkhead.in_use == 0

    @pytest.mark.asyncio
    async def test_cancelled_waiter_leaves_queue(self) -> None:
        """A waiter cancelled in the queue frees its place."""
        bulkhead = Bulkhead(BulkheadPolicy(max_concurrent=1, max_queue=1))
        await bulkhead.acquire()
        waiting = asyncio.ensure_future(bulkhead.acquire())
        await asyncio.sleep(0)
        waiting.cancel()
        with pytest.raises(asyncio.CancelledError):
            await waiting
        assert bulkhead.queued == 0
        bulkhead.release()
        assert bulkhead.in_use == 0

    @pytest.mark.asyncio
    async def test_cancelled_after_handover(self) -> None:
        """A waiter cancelled just after it was handed a slot gives the slot back."""
        bulkhead = Bulkhead(BulkheadPolicy(max_concurrent=1, max_queue=1))
        await bulkhead.acquire()
        waiting = asyncio.ensure_future(bulkhead.acquire())
        await asyncio.sleep(0)
        bulkhead.release()  # hands the slot to the waiter
        waiting.cancel()
        with pytest.raises(asyncio.CancelledError):
            await waiting
        assert (bulkhead.in_use, bulkhead.queued) == (0, 0)
