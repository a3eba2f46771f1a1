"""The session API: start (a service), refresh and logout (the user's device, with DPoP)."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Header, Request, Response

from ._auth import CallerContext, authenticate
from ._routes import AuthorityDep, Caller, Ctx, _coupon_response
from ._service import Issued
from ._session_models import (
    LogoutRequest,
    LogoutResponse,
    RefreshRequest,
    SessionResponse,
    SessionStartRequest,
)
from ._sessions import SessionStart, SessionTokens

__all__ = ["session_router"]

session_router = APIRouter(tags=["sessions"])

DPoPHeader = Annotated[
    str | None, Header(alias="DPoP", description="DPoP proof by the device key (POST, this URL).")
]


def _answer(tokens: SessionTokens, response: Response, ctx: Ctx) -> SessionResponse:
    response.headers["Cache-Control"] = "no-store"  # RFC 6749 §5.1: tokens are not cached
    signed, session = tokens.access, tokens.session
    return SessionResponse(
        session_id=session.session_id,
        access=_coupon_response(Issued(signed.token, signed.claims, signed.kid), ctx),
        refresh_token=tokens.refresh_token,
        generation=session.generation,
        session_expires_at=session.expires_at,
        refresh_expires_at=tokens.idle_expires_at,
    )


@session_router.post("/v1/sessions", response_model=SessionResponse, status_code=201)
async def start_session(
    body: SessionStartRequest,
    authority: AuthorityDep,
    caller: Caller,
    ctx: Ctx,
    response: Response,
) -> SessionResponse:
    """Start a user's session on one device (roles: issuer, admin).

    Answers an access coupon bound to ``jkt`` and a refresh token. A user has at most
    ``COUPON_SESSION_MAX_PER_USER`` live sessions (default 3): starting one more revokes the
    oldest, coupons and all.
    """
    tokens = await authority.sessions.start(
        caller,
        SessionStart(
            subject=body.subject,
            tenant=body.tenant,
            audience=tuple(body.audience),
            resource=body.resource,
            actions=tuple(body.actions),
            purpose=body.purpose,
            jkt=body.jkt,
        ),
        ctx,
    )
    return _answer(tokens, response, ctx)


@session_router.post("/v1/sessions/refresh", response_model=SessionResponse)
async def refresh_session(
    body: RefreshRequest,
    authority: AuthorityDep,
    ctx: Ctx,
    response: Response,
    dpop: DPoPHeader = None,
) -> SessionResponse:
    """Rotate the refresh token: it is spent, a new one and a new access coupon come back.

    No API key: the refresh token and a DPoP proof by the session's device key are the
    credentials. Presenting a spent refresh token again revokes the whole session
    (``CPN-SESS-002``); so does losing a race of two refreshes with the same token.
    """
    htu = authority.rt.settings.base_url + "/v1/sessions/refresh"
    tokens = await authority.sessions.refresh(body.refresh_token, dpop, htu, ctx)
    return _answer(tokens, response, ctx)


@session_router.post("/v1/sessions/logout", response_model=LogoutResponse)
async def logout(
    body: LogoutRequest,
    request: Request,
    authority: AuthorityDep,
    ctx: Ctx,
    dpop: DPoPHeader = None,
) -> LogoutResponse:
    """End a session and revoke its coupons: the user sends a refresh token of the session
    with a DPoP proof by its device key, or a service (issuer) sends ``session_id`` with its
    X-API-Key. Idempotent: ``revoked`` says whether this call did it."""
    if body.session_id is not None:
        caller = await authenticate(
            authority.rt.authenticators, CallerContext.from_scope(request.scope, request.headers)
        )
        revoked = await authority.sessions.end(caller, body.session_id, ctx)
        return LogoutResponse(session_id=body.session_id, revoked=revoked)
    assert body.refresh_token is not None
    htu = authority.rt.settings.base_url + "/v1/sessions/logout"
    session_id, revoked = await authority.sessions.logout(body.refresh_token, dpop, htu, ctx)
    return LogoutResponse(session_id=session_id, revoked=revoked)
