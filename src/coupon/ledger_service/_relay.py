"""The outbox relay: the Authority's audit events, committed with the changes they record,
are carried into the log.

At least once, and the log makes it exactly once: an event's emitter key and id are unique
in the log, so an event relayed twice (a crash between the append and the mark) is
recognised and only marked.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Sequence
from typing import Protocol

from coupon.errors import CouponError
from coupon.observability import get_logger, tracer_provider
from coupon.storage.base import AuditRecord

from ._entries import Submission
from ._service import Ledger

__all__ = ["AuditOutbox", "AuditRelay"]

_log = get_logger("coupon.ledger.relay")
_TRACER = tracer_provider().get_tracer("coupon.ledger")


class AuditOutbox(Protocol):
    async def audit_pending(self, *, limit: int) -> list[AuditRecord]: ...
    async def mark_audit(self, placed: Sequence[tuple[int, int]]) -> None: ...


class AuditRelay:
    """Moves pending audit events into the log; wakes on :meth:`notify` or every ``poll``."""

    def __init__(
        self, outbox: AuditOutbox, ledger: Ledger, *, poll: float = 0.5, batch: int = 1000
    ):
        self._outbox = outbox
        self._ledger = ledger
        self._poll = poll
        self._batch = batch
        self._wake = asyncio.Event()
        self._task: asyncio.Task[None] | None = None

    def notify(self) -> None:
        """An event was stored: relay it now rather than at the next poll."""
        self._wake.set()

    def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name="coupon-ledger-relay")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await asyncio.wait_for(self._task, 3.0)

    async def relay_once(self) -> int:
        """Relay one batch of pending events; returns how many were placed."""
        pending = await self._outbox.audit_pending(limit=self._batch)
        self._ledger.metrics.relay_lag.set(len(pending))
        if not pending:
            return 0
        with _TRACER.start_as_current_span("coupon.ledger.relay") as span:
            span.set_attribute("coupon.ledger.batch", len(pending))
            return await self._place(pending)

    async def _place(self, pending: Sequence[AuditRecord]) -> int:
        receipts = await asyncio.gather(
            *(
                self._ledger.append(
                    Submission(r.event, r.signature, r.kid, r.personal), verify=False
                )
                for r in pending
            )
        )
        await self._outbox.mark_audit(
            [(r.seq, receipt.index) for r, receipt in zip(pending, receipts, strict=True)]
        )
        return len(pending)

    async def _run(self) -> None:
        while True:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), self._poll)
            self._wake.clear()
            try:
                while await self.relay_once() >= self._batch:
                    pass
            except CouponError as exc:
                _log.warning("relay_failed", code=exc.code.code, reason=exc.reason)
            except Exception as exc:  # keep relaying; the events wait in the outbox
                _log.error("relay_error", error=repr(exc))
