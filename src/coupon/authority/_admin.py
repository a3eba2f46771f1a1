"""Admin and auditor routes: keys, policy bundles, credentials, the audit trail.

Every change here is recorded as a signed audit event with the acting caller.
"""

from __future__ import annotations

import hashlib
import time
from typing import Annotated, Any

from fastapi import APIRouter, Body, Query
from pydantic import BaseModel, ConfigDict, Field

from coupon import codes
from coupon.errors import Conflict, InvalidRequest, NotFound
from coupon.policy import BUILTIN_VERSION, verify_envelope
from coupon.storage.base import PolicyRecord
from coupon.token.hazmat import b64url_encode

from ._audit import AuditEvent
from ._auth import ROLES, Principal, new_api_key, require_role
from ._routes import AuthorityDep, Caller, Ctx
from ._service import Authority, Context

__all__ = ["admin_router"]

admin_router = APIRouter(tags=["admin"])


class ApiKeyRequest(BaseModel):
    """A new service credential."""

    model_config = ConfigDict(extra="forbid")
    name: str = Field(min_length=1, max_length=128, pattern=r"^[A-Za-z0-9._:-]+$")
    roles: list[str] = Field(min_length=1, max_length=4)
    tenant: str | None = Field(None, min_length=1, max_length=256)


class PolicyEnvelope(BaseModel):
    """A signed policy bundle as produced by ``coupon policy sign``."""

    model_config = ConfigDict(extra="forbid")
    bundle: str = Field(min_length=1, max_length=2_000_000)
    signature: str = Field(min_length=1, max_length=200)
    signer: str = Field(min_length=1, max_length=200)


@admin_router.get("/v1/admin/keys")
async def list_keys(authority: AuthorityDep, caller: Caller) -> dict[str, Any]:
    """The signing keys and their states (next, current, retiring, retired)."""
    require_role(caller, "admin")
    return {"keys": authority.rt.keyring.describe()}


async def _key_change(
    authority: Authority, caller: Principal, ctx: Context, action: str
) -> dict[str, Any]:
    require_role(caller, "admin")
    keyring = authority.rt.keyring
    event = await (
        keyring.rotate(caller.id) if action == "key.rotate" else keyring.rollback(caller.id)
    )
    details = {
        "previous_kid": event.previous_kid,
        "signing_kid": event.signing_kid,
        "next_kid": event.next_kid,
    }
    await authority.audit(
        AuditEvent(action=action, result="ok", actor=caller.audit(), target=details), ctx
    )
    return {**details, "keys": keyring.describe()}


@admin_router.post("/v1/admin/keys/rotate")
async def rotate_keys(authority: AuthorityDep, caller: Caller, ctx: Ctx) -> dict[str, Any]:
    """Planned rotation: next becomes current, current keeps being published until its
    coupons have expired, a fresh next key is published."""
    return await _key_change(authority, caller, ctx, "key.rotate")


@admin_router.post("/v1/admin/keys/rollback")
async def rollback_keys(authority: AuthorityDep, caller: Caller, ctx: Ctx) -> dict[str, Any]:
    """Undo the last rotation while the previous key is still published."""
    return await _key_change(authority, caller, ctx, "key.rollback")


def _policy_row(record: PolicyRecord) -> dict[str, Any]:
    return {
        "version": record.version,
        "signer": record.signer,
        "uploaded_by": record.uploaded_by,
        "uploaded_at": record.uploaded_at,
        "digest": b64url_encode(hashlib.sha256(record.bundle).digest()),
    }


@admin_router.post("/v1/admin/policies", status_code=201)
async def upload_policy(
    envelope: Annotated[PolicyEnvelope, Body()],
    authority: AuthorityDep,
    caller: Caller,
    ctx: Ctx,
    activate: Annotated[bool, Query(description="Activate it at once.")] = False,
) -> dict[str, Any]:
    """Upload a signed bundle: signature, compilation and a probe evaluation must pass."""
    require_role(caller, "admin")
    rt = authority.rt
    bundle = verify_envelope(envelope.model_dump(), rt.trusted_policy_keys)
    existing = await rt.store.get_policy(bundle.version)
    if existing is not None and existing.bundle != bundle.raw:
        raise Conflict(
            codes.CONFLICT, f"policy version {bundle.version!r} exists with other content"
        )
    rt.engine.load(bundle)
    await rt.engine.check(bundle.version, deadline_ms=max(rt.settings.policy_deadline_ms, 200))
    record = PolicyRecord(
        version=bundle.version,
        bundle=bundle.raw,
        signature=bundle.signature,
        signer=bundle.signer,
        uploaded_by=caller.id,
        uploaded_at=int(time.time()),
    )
    if existing is None:
        await rt.store.add_policy(record)
    await authority.audit(
        AuditEvent(
            action="policy.upload",
            result="ok",
            actor=caller.audit(),
            target={"version": bundle.version, "digest": bundle.digest, "signer": bundle.signer},
            policy_version=bundle.version,
        ),
        ctx,
    )
    if activate:
        await _activate(authority, caller, ctx, bundle.version)
    return {**_policy_row(record), "active": rt.policy_version}


@admin_router.get("/v1/admin/policies")
async def list_policies(authority: AuthorityDep, caller: Caller) -> dict[str, Any]:
    """Uploaded versions, the active one and the activation history."""
    require_role(caller, "admin", "auditor")
    rt = authority.rt
    history = await rt.store.policy_history()
    return {
        "active": rt.policy_version,
        "builtin": BUILTIN_VERSION,
        "policies": [_policy_row(r) for r in await rt.store.list_policies()],
        "history": [
            {"seq": h.seq, "version": h.version, "actor": h.actor, "activated_at": h.activated_at}
            for h in history
        ],
    }


async def _activate(
    authority: Authority, caller: Principal, ctx: Context, version: str
) -> dict[str, Any]:
    rt = authority.rt
    if version != BUILTIN_VERSION and await rt.store.get_policy(version) is None:
        raise NotFound(codes.NOT_FOUND, f"no policy version {version!r}")
    previous = rt.policy_version
    await rt.store.activate_policy(version, actor=caller.id, at=int(time.time()))
    await rt.reload_policy()
    await authority.audit(
        AuditEvent(
            action="policy.activate",
            result="ok",
            actor=caller.audit(),
            target={"version": version, "previous": previous},
            policy_version=version,
        ),
        ctx,
    )
    return {"active": rt.policy_version, "previous": previous}


@admin_router.post("/v1/admin/policies/{version}/activate")
async def activate_policy(
    version: str, authority: AuthorityDep, caller: Caller, ctx: Ctx
) -> dict[str, Any]:
    """Make ``version`` the policy in force (every process picks it up within a reload)."""
    require_role(caller, "admin")
    return await _activate(authority, caller, ctx, version)


@admin_router.post("/v1/admin/policies/rollback")
async def rollback_policy(authority: AuthorityDep, caller: Caller, ctx: Ctx) -> dict[str, Any]:
    """Re-activate the version that was in force before the current one."""
    require_role(caller, "admin")
    history = await authority.rt.store.policy_history()
    current = authority.rt.policy_version
    earlier = [h.version for h in history if h.version != current]
    if not history:
        raise Conflict(codes.CONFLICT, "no earlier policy to roll back to")
    target = earlier[-1] if earlier else BUILTIN_VERSION
    return await _activate(authority, caller, ctx, target)


@admin_router.post("/v1/admin/api-keys", status_code=201)
async def create_api_key(
    body: ApiKeyRequest, authority: AuthorityDep, caller: Caller, ctx: Ctx
) -> dict[str, Any]:
    """Create a service credential; the key is shown once, only its hash is stored."""
    require_role(caller, "admin")
    unknown = set(body.roles) - ROLES
    if unknown:
        raise InvalidRequest(codes.REQUEST_BODY, f"unknown roles {sorted(unknown)}")
    credential, record = new_api_key(body.name, body.roles, tenant=body.tenant)
    await authority.rt.store.add_api_key(record)
    await authority.audit(
        AuditEvent(
            action="apikey.create",
            result="ok",
            actor=caller.audit(),
            target={
                "key_id": record.key_id,
                "name": body.name,
                "roles": sorted(body.roles),
                "tenant": body.tenant,
            },
        ),
        ctx,
    )
    return {"api_key": credential, "key_id": record.key_id, "roles": record.roles}


@admin_router.get("/v1/audit/events", tags=["audit"])
async def audit_events(
    authority: AuthorityDep,
    caller: Caller,
    after: Annotated[int, Query(ge=0, le=2**62)] = 0,
    limit: Annotated[int, Query(ge=1, le=1000)] = 100,
) -> dict[str, Any]:
    """Signed audit events after ``after`` (roles: auditor, admin)."""
    require_role(caller, "auditor")
    records = await authority.rt.store.audit_after(after, limit=limit)
    return {
        "events": [
            {
                "seq": r.seq,
                "event": r.event.decode(),
                "signature": b64url_encode(r.signature),
                "kid": r.kid,
            }
            for r in records
        ],
        "cursor": records[-1].seq if records else after,
    }


@admin_router.get("/v1/audit/key", tags=["audit"])
async def audit_key(authority: AuthorityDep) -> dict[str, str]:
    """The Ed25519 key audit events are signed with (over ``coupon-audit-v1\\n`` + event)."""
    signer = authority.rt.audit_signer
    return {"kid": signer.kid, "kty": "OKP", "crv": "Ed25519", "x": signer.public_b64}
