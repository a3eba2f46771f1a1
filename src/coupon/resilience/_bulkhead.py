"""A bulkhead: at most ``max_concurrent`` calls at once, ``max_queue`` waiting in FIFO order.

A call that finds every slot and every queue place taken is rejected at once with
:class:`~coupon.errors.BulkheadFull`, which is never retried.
"""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager

from coupon import codes
from coupon.errors import BulkheadFull

from ._events import BulkheadOccupancy, BulkheadRejected
from ._policy import BulkheadPolicy

__all__ = ["Bulkhead"]


class Bulkhead:
    """Limits the concurrent calls to one dependency.

    Args:
        policy: the limits.
        name: the pipeline's name, for errors and events.
        emit: called with :class:`BulkheadOccupancy` and :class:`BulkheadRejected` events.
    """

    def __init__(
        self,
        policy: BulkheadPolicy,
        *,
        name: str = "",
        emit: Callable[[BulkheadOccupancy | BulkheadRejected], None] | None = None,
    ) -> None:
        self.policy = policy
        self.name = name
        self._emit = emit
        self._in_use = 0
        self._waiters: deque[asyncio.Future[None]] = deque()

    @property
    def in_use(self) -> int:
        """Slots taken."""
        return self._in_use

    @property
    def queued(self) -> int:
        """Calls waiting for a slot."""
        return sum(1 for w in self._waiters if not w.done())

    @asynccontextmanager
    async def slot(self) -> AsyncIterator[None]:
        """Hold a slot for the body of an ``async with``; raise ``BulkheadFull`` if none."""
        await self.acquire()
        try:
            yield
        finally:
            self.release()

    async def acquire(self) -> None:
        """Take a slot, waiting in the queue if needed; raise ``BulkheadFull`` if it is full."""
        if self._in_use < self.policy.max_concurrent and not self.queued:
            self._in_use += 1
            self._report()
            return
        if self.queued >= self.policy.max_queue:
            if self._emit is not None:
                self._emit(BulkheadRejected(self.name, self._in_use, self.queued))
            raise BulkheadFull(
                codes.RES_BULKHEAD_FULL,
                f"{self._in_use} calls running and {self.queued} waiting",
                pipeline=self.name,
            )
        waiter = asyncio.get_running_loop().create_future()
        self._waiters.append(waiter)
        self._report()
        try:
            await waiter
        except asyncio.CancelledError:
            if waiter.done() and not waiter.cancelled():
                self.release()  # the slot was handed over just before the cancellation
            elif waiter in self._waiters:
                self._waiters.remove(waiter)
                self._report()
            raise

    def release(self) -> None:
        """Give a slot back, handing it to the first waiter if there is one."""
        while self._waiters:
            waiter = self._waiters.popleft()
            if not waiter.done():
                waiter.set_result(None)  # the slot passes on: in_use is unchanged
                self._report()
                return
        self._in_use -= 1
        self._report()

    def _report(self) -> None:
        if self._emit is not None:
            self._emit(BulkheadOccupancy(self.name, self._in_use, self.queued))
