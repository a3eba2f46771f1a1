"""Helpers for the Ledger tests: signed events from a test emitter, and a Ledger to run."""

from __future__ import annotations

import base64
import os
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from coupon.authority._audit import AuditEvent, AuditSigner, StoreAuditSink
from coupon.keys import MasterKey
from coupon.ledger_service import Ledger, LedgerConfig, Submission

EMITTER = AuditSigner.from_seed(b"\x07" * 32)
_SINK = StoreAuditSink(store=None, signer=EMITTER)  # type: ignore[arg-type]  # prepare() only


def emitter_setting() -> str:
    """The ``COUPON_LEDGER_EMITTERS`` entry that trusts :data:`EMITTER`."""
    return f"{EMITTER.kid} {EMITTER.public_b64}"


def event(
    n: int, *, action: str = "test.event", subject: str | None = None, **target: Any
) -> Submission:
    """A signed audit event from the test emitter."""
    record = _SINK.prepare(
        AuditEvent(
            action=action,
            result="ok",
            actor={"id": "svc:test"},
            target={"n": n, **target},
            reason=f"event {n}",
            service="test",
            subject=subject,
            personal=None
            if subject is None
            else {"subject": subject, "email": f"{subject}@example"},
        )
    )
    return Submission(record.event, record.signature, record.kid, record.personal)


def wire(sub: Submission) -> dict[str, Any]:
    """The JSON form of a submission for ``POST /v1/ledger/entries``."""
    return {
        "event": sub.event.decode(),
        "signature": base64.urlsafe_b64encode(sub.signature).rstrip(b"=").decode(),
        "kid": sub.kid,
        "personal": None if sub.personal is None else sub.personal.decode(),
    }


@asynccontextmanager
async def running_ledger(
    url: str, *, master: MasterKey | None = None, **config: Any
) -> AsyncIterator[Ledger]:
    """A started Ledger on ``url`` that trusts the test emitter; stopped at the end."""
    ledger = await Ledger.start(
        LedgerConfig(database_url=url, origin="test.example/ledger", **config),
        master or MasterKey(os.urandom(32)),
    )
    ledger.emitters[EMITTER.kid] = EMITTER.public_key
    try:
        yield ledger
    finally:
        await ledger.stop()
