"""The Ledger's admin routes: erasure of a data subject and checkpoint-key rotation.

Both are recorded as audit events of their own, so they land in the log they change. They
join ``ledger_router``; import it from here to get every Ledger route.
"""

from __future__ import annotations

from typing import Any

from fastapi import Request

from coupon import codes
from coupon.authority._audit import AuditEvent
from coupon.authority._auth import require_role
from coupon.authority._service import Context
from coupon.errors import InvalidRequest

from ._routes import Caller, LedgerDep, ledger_router

__all__ = ["erase_subject", "ledger_router", "rotate_key"]


def _context(request: Request) -> Context:
    state = request.scope.get("state", {})
    return Context(trace_id=state.get("trace_id", ""), request_id=state.get("request_id", ""))


@ledger_router.delete("/subjects/{subject}")
async def erase_subject(
    subject: str, ledger: LedgerDep, caller: Caller, request: Request
) -> dict[str, Any]:
    """Erase a data subject (role: admin): their key is destroyed, so the personal data in
    their entries can no longer be read; the entries and every proof stay valid."""
    require_role(caller, "admin")
    if not 0 < len(subject) <= 256:
        raise InvalidRequest(codes.REQUEST_BODY, "subject must be 1 to 256 characters")
    ref = ledger.vault.ref(subject)
    erased = await ledger.vault.erase(ref)
    await request.app.state.authority.audit(
        AuditEvent(
            action="ledger.subject.erase",
            result="ok" if erased else "noop",
            actor=caller.audit(),
            target={"subject_ref": ref},
            service="ledger",
        ),
        _context(request),
    )
    return {"subject_ref": ref, "erased": erased}


@ledger_router.post("/keys/rotate")
async def rotate_key(ledger: LedgerDep, caller: Caller, request: Request) -> dict[str, Any]:
    """Rotate the checkpoint key (role: admin): the old and the new key both sign until the
    overlap ends. The rotation itself is recorded in the log, naming both keys."""
    require_role(caller, "admin")
    new, retiring = await ledger.keys.rotate(overlap_ms=int(ledger.config.key_overlap * 1000))
    await request.app.state.authority.audit(
        AuditEvent(
            action="ledger.key.rotate",
            result="ok",
            actor=caller.audit(),
            target={"new_vkey": new.vkey, "retiring": ",".join(r.vkey for r in retiring)},
            service="ledger",
        ),
        _context(request),
    )
    await ledger.publish(force=True)
    return {
        "new": new.vkey,
        "retiring": [{"vkey": r.vkey, "retire_ms": r.retire_ms} for r in retiring],
    }
