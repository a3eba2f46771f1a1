"""The Authority's HTTP routes: thin, they parse, call :class:`Authority` and shape answers."""

from __future__ import annotations

import time
from typing import Annotated, Any
from urllib.parse import parse_qs

from fastapi import APIRouter, Depends, Header, Query, Request, Response, Security
from fastapi.responses import JSONResponse, PlainTextResponse, StreamingResponse
from fastapi.security import APIKeyHeader, HTTPAuthorizationCredentials, HTTPBearer
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from coupon import codes
from coupon.errors import CouponError, InvalidProof, InvalidRequest

from ._auth import CallerContext, Principal, authenticate, require_role
from ._inputs import delegate_input, issue_input
from ._legacy_routes import legacy_decision
from ._models import (
    AttenuateRequest,
    CouponResponse,
    IssueRequest,
    RevocationModel,
    RevocationsPage,
    RevokeRequest,
    RevokeResponse,
    VerifyRequest,
    VerifyResponse,
)
from ._service import Authority, Context, Issued, VerifyInput
from ._sse import sse_stream

__all__ = ["router"]

router = APIRouter()


# Dependencies are coroutines: FastAPI runs a plain function in a worker thread, a hop that
# costs more than the function does.
async def _authority(request: Request) -> Authority:
    authority: Authority = request.app.state.authority
    return authority


async def _ctx(request: Request) -> Context:
    state = request.scope.get("state", {})
    return Context(trace_id=state.get("trace_id", ""), request_id=state.get("request_id", ""))


_API_KEY_SCHEME = APIKeyHeader(
    name="X-API-Key", auto_error=False, description="A service credential: cpk_<id>_<secret>."
)
_BEARER_SCHEME = HTTPBearer(
    bearerFormat="JWT",
    auto_error=False,
    description="An OpenID Connect ID or access token of a configured provider (docs/oidc.md).",
)


async def _caller(
    request: Request,
    _key: Annotated[str | None, Security(_API_KEY_SCHEME)] = None,
    _bearer: Annotated[HTTPAuthorizationCredentials | None, Security(_BEARER_SCHEME)] = None,
) -> Principal:
    # The schemes above only document the credentials in the OpenAPI document; the authenticators
    # (a plug-in list) read the headers themselves.
    authority: Authority = request.app.state.authority
    caller = CallerContext.from_scope(request.scope, request.headers)
    return await authenticate(authority.rt.authenticators, caller)


AuthorityDep = Annotated[Authority, Depends(_authority)]
Caller = Annotated[Principal, Depends(_caller)]
Ctx = Annotated[Context, Depends(_ctx)]


def _coupon_response(issued: Issued, ctx: Context) -> CouponResponse:
    c = issued.claims
    return CouponResponse(
        coupon=issued.token,
        token_type="DPoP" if c.cnf.jkt else "mTLS",
        jti=c.jti,
        lineage=c.lin,
        kid=issued.kid,
        issued_at=c.iat,
        expires_at=c.exp,
        expires_in=max(0, c.exp - int(time.time())),
        policy_version=c.pol,
        claims=c.to_dict(),
        trace_id=ctx.trace_id,
    )


# -- coupons -------------------------------------------------------------------------------------


@router.post("/v1/coupons", response_model=CouponResponse, status_code=201, tags=["coupons"])
async def issue(
    body: IssueRequest, authority: AuthorityDep, caller: Caller, ctx: Ctx
) -> CouponResponse:
    """Issue a root coupon (roles: issuer, admin). The policy decides and caps the TTL."""
    issued = await authority.issue(
        caller,
        issue_input(body, caller),
        ctx,
    )
    return _coupon_response(issued, ctx)


@router.post(
    "/v1/coupons/attenuate", response_model=CouponResponse, status_code=201, tags=["coupons"]
)
async def attenuate(
    body: AttenuateRequest,
    request: Request,
    authority: AuthorityDep,
    ctx: Ctx,
    authorization: Annotated[str | None, Header(description="DPoP <parent coupon>")] = None,
    dpop: Annotated[str | None, Header(description="DPoP proof for this request")] = None,
) -> CouponResponse:
    """Issue a sub-coupon to the holder of the parent, who proves possession with DPoP."""
    if authorization is None or not authorization.startswith("DPoP "):
        raise InvalidProof(codes.POP_MISSING, "send the parent as Authorization: DPoP <coupon>")
    issued = await authority.attenuate(
        authorization[5:].strip(),
        dpop,
        authority.rt.settings.base_url + "/v1/coupons/attenuate",
        delegate_input(body),
        ctx,
    )
    return _coupon_response(issued, ctx)


@router.post("/v1/coupons/verify", response_model=VerifyResponse, tags=["coupons"])
async def verify(body: VerifyRequest, authority: AuthorityDep, caller: Caller, ctx: Ctx) -> Any:
    """Verify a coupon for one request (roles: verifier, issuer, admin).

    A denial is an answer, not an error: ``allow`` is false and ``code``/``reason`` say why.
    With ``legacy_token`` instead of ``coupon`` (dual-auth migration, docs/migration.md) the
    decision is the legacy JWT's, in coupon terms, flagged ``"legacy": true``.
    """
    if body.legacy_token is not None:
        return await legacy_decision(authority, caller, body, ctx)
    assert body.coupon is not None  # the model requires exactly one of the two
    spec = body.request()
    try:
        verified = await authority.verify(caller, VerifyInput(body.coupon, spec), ctx)
    except CouponError as exc:
        if exc.code.status in (429, 503) or exc.code.code.startswith(("CPN-AUTH", "CPN-REQ")):
            raise
        return JSONResponse(
            {
                "allow": False,
                "code": exc.code.code,
                "title": exc.code.title,
                "reason": exc.reason,
                "step": exc.step,
                "trace_id": ctx.trace_id,
                "timings_us": exc.timings or {},
            }
        )
    return JSONResponse(
        {
            "allow": True,
            "claims": verified.claims.to_dict(),
            "chain": [c.to_dict() for c in verified.chain],
            "kid": verified.kid,
            "trace_id": ctx.trace_id,
            "timings_us": verified.timings,
        }
    )


@router.post(
    "/v1/coupons/introspect",
    tags=["coupons"],
    openapi_extra={
        "requestBody": {
            "content": {
                "application/x-www-form-urlencoded": {
                    "schema": {
                        "type": "object",
                        "properties": {"token": {"type": "string"}},
                        "required": ["token"],
                    }
                }
            }
        }
    },
)
async def introspect(request: Request, authority: AuthorityDep, caller: Caller) -> dict[str, Any]:
    """RFC 7662 token introspection (form ``token=...``; roles: verifier, issuer, auditor)."""
    raw = await request.body()
    if len(raw) > 32_768:
        raise InvalidRequest(codes.REQUEST_BODY, "body too large")
    try:
        form = parse_qs(raw.decode("ascii"), keep_blank_values=True, max_num_fields=8)
    except (UnicodeDecodeError, ValueError):
        raise InvalidRequest(codes.REQUEST_BODY, "body is not a form") from None
    tokens = form.get("token", [])
    if len(tokens) != 1:
        raise InvalidRequest(codes.REQUEST_BODY, "send exactly one token= field")
    if not tokens[0]:
        return {"active": False}
    return await authority.introspect(caller, tokens[0])


# -- revocations ---------------------------------------------------------------------------------


def _revocation_model(record: Any) -> RevocationModel:
    return RevocationModel(
        seq=record.seq,
        kind=record.kind,
        value=record.value,
        reason=record.reason,
        actor=record.actor,
        revoked_at=record.revoked_at,
    )


@router.post(
    "/v1/revocations", response_model=RevokeResponse, status_code=201, tags=["revocations"]
)
async def revoke(
    body: RevokeRequest, authority: AuthorityDep, caller: Caller, ctx: Ctx
) -> RevokeResponse:
    """Revoke by jti, lineage, subject, tenant or kid; answered once durably committed."""
    stored = await authority.revoke(caller, body.kind, body.value, body.reason, ctx)
    return RevokeResponse(
        revocations=[_revocation_model(r) for r in stored], cursor=max(r.seq for r in stored)
    )


@router.get("/v1/revocations", response_model=RevocationsPage, tags=["revocations"])
async def revocations(
    authority: AuthorityDep,
    caller: Caller,
    after: Annotated[int, Query(ge=0, le=2**62)] = 0,
    limit: Annotated[int, Query(ge=1, le=1000)] = 1000,
) -> RevocationsPage:
    """The pull feed: revocations after the cursor ``after``, oldest first."""
    require_role(caller, "verifier", "issuer", "auditor")
    records = await authority.rt.store.revocations_after(after, limit=limit)
    cursor = records[-1].seq if records else after
    return RevocationsPage(revocations=[_revocation_model(r) for r in records], cursor=cursor)


@router.get("/v1/revocations/stream", tags=["revocations"], response_class=StreamingResponse)
async def revocation_stream(
    authority: AuthorityDep,
    caller: Caller,
    after: Annotated[int, Query(ge=0, le=2**62)] = 0,
    heartbeat: Annotated[
        float,
        Query(ge=1, le=60, allow_inf_nan=False, description="Seconds of quiet per heartbeat."),
    ] = 15.0,
    last_event_id: Annotated[str | None, Header()] = None,
) -> StreamingResponse:
    """Server-sent events: the backlog after ``after`` (or ``Last-Event-ID``), then live.

    ``heartbeat`` (seconds, 1 to 60, default 15): after this long without an event the server
    sends a ``: heartbeat`` comment and pulls its store again, so a lost publish still arrives.
    A heartbeat thus tells the client it was sent every revocation committed before the quiet
    interval began (give or take the server's own pull and delivery latency); a client that
    must stay fresh within N seconds asks for N/3 or less.
    """
    require_role(caller, "verifier", "issuer", "auditor")
    start = after
    # Only plain ASCII digits: str.isdigit() also accepts "²", which int() refuses.
    if (
        last_event_id
        and last_event_id.isascii()
        and last_event_id.isdigit()
        and len(last_event_id) < 19
    ):
        start = max(start, int(last_event_id))
    body = sse_stream(
        authority.rt.store,
        authority.rt.bus,
        after=start,
        heartbeat=heartbeat,
        closing=authority.rt.closing,
    )
    return StreamingResponse(
        body, media_type="text/event-stream", headers={"Cache-Control": "no-store"}
    )


# -- keys, time, health --------------------------------------------------------------------------


@router.get("/.well-known/jwks.json", tags=["keys"])
async def jwks(authority: AuthorityDep, response: Response) -> dict[str, Any]:
    """The published coupon-signing keys: next, current and retiring."""
    response.headers["Cache-Control"] = "public, max-age=60"
    return authority.rt.keyring.jwks()


@router.get("/v1/time", tags=["time"])
async def server_time(authority: AuthorityDep, response: Response) -> dict[str, Any]:
    """The authorised time source, with a fresh DPoP nonce that carries this time."""
    now = time.time()
    nonce = authority.rt.nonces.issue(now)
    response.headers["DPoP-Nonce"] = nonce
    response.headers["Cache-Control"] = "no-store"
    s = authority.rt.settings
    return {
        "time": int(now),
        "time_ms": int(now * 1000),
        "leeway": s.leeway,
        "max_ttl": s.max_ttl,
        "dpop_max_age": s.dpop_max_age,
        "nonce": nonce,
    }


@router.get("/healthz", tags=["health"])
async def healthz() -> dict[str, str]:
    """Alive."""
    return {"status": "ok"}


@router.get("/readyz", tags=["health"])
async def readyz(authority: AuthorityDep, request: Request) -> JSONResponse:
    """Ready when the database, the signing key, the revocation view, Redis (when used) and
    the Ledger (its database and a fresh checkpoint) are."""
    rt = authority.rt
    checks: dict[str, str] = {}
    try:
        await rt.store.ping()
        checks["database"] = "ok"
    except CouponError as exc:
        checks["database"] = exc.reason
    try:
        _ = rt.keyring.signer
        checks["signing_key"] = "ok"
    except CouponError as exc:
        checks["signing_key"] = exc.reason
    staleness = rt.view.staleness(time.time())
    checks["revocations"] = (
        "ok" if staleness <= rt.settings.revocation_max_staleness else f"stale {staleness:.1f}s"
    )
    if rt.redis is not None:
        try:
            await rt.redis.ping()
            checks["redis"] = "ok"
        except Exception as exc:
            checks["redis"] = type(exc).__name__
    ledger = getattr(request.app.state, "ledger", None)
    if ledger is not None:
        checks["ledger"] = await ledger.readiness()
    ready = all(v == "ok" for v in checks.values())
    return JSONResponse(
        {"status": "ready" if ready else "not ready", "checks": checks},
        status_code=200 if ready else 503,
    )


@router.get("/metrics", tags=["health"], response_class=PlainTextResponse)
async def metrics(authority: AuthorityDep) -> Response:
    """Prometheus metrics."""
    authority.rt.refresh_gauges()
    return Response(generate_latest(authority.rt.metrics.registry), media_type=CONTENT_TYPE_LATEST)
