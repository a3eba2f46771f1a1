"""Request and response bodies of the session API (they make its OpenAPI document)."""

from __future__ import annotations

from pydantic import BaseModel, Field, model_validator

from ._models import CouponResponse, Text, _Strict

__all__ = [
    "LogoutRequest",
    "LogoutResponse",
    "RefreshRequest",
    "SessionResponse",
    "SessionStartRequest",
]

_REFRESH = r"^cpr_[A-Za-z0-9_-]{43}$"
_SESSION = r"^ses_[A-Za-z0-9_-]{32}$"


class SessionStartRequest(_Strict):
    """Start a session for a user on one device: its coupons bind the device's DPoP key."""

    subject: Text = Field(min_length=1, max_length=256, description="The user (sub).")
    tenant: Text = Field(min_length=1, max_length=256)
    audience: list[Text] = Field(min_length=1, max_length=16)
    resource: Text = Field(min_length=1, max_length=1024, description="Resource pattern.")
    actions: list[Text] = Field(min_length=1, max_length=32)
    purpose: Text = Field(min_length=1, max_length=512)
    jkt: str = Field(
        pattern=r"^[A-Za-z0-9_-]{43}$", description="RFC 7638 thumbprint of the device key."
    )


class RefreshRequest(_Strict):
    """Rotate: send the current refresh token with a DPoP proof by the device key."""

    refresh_token: str = Field(pattern=_REFRESH, description="The refresh token (spent now).")


class LogoutRequest(_Strict):
    """End a session: the user (a refresh token + DPoP proof) or a service (session id +
    X-API-Key with the issuer role)."""

    refresh_token: str | None = Field(None, pattern=_REFRESH)
    session_id: str | None = Field(None, pattern=_SESSION)

    @model_validator(mode="after")
    def _exactly_one(self) -> LogoutRequest:
        if (self.refresh_token is None) == (self.session_id is None):
            raise ValueError("send exactly one of refresh_token and session_id")
        return self


class SessionResponse(BaseModel):
    """An access coupon and the refresh token that gets the next one (use it once)."""

    session_id: str = Field(description="Also the lineage of every coupon of the session.")
    access: CouponResponse
    refresh_token: str = Field(description="Opaque; stored hashed; spent by its next use.")
    generation: int = Field(description="How many times the session was refreshed.")
    session_expires_at: int = Field(description="Absolute end of the session.")
    refresh_expires_at: int = Field(description="The refresh token lapses if unused by then.")


class LogoutResponse(BaseModel):
    """The session is revoked (``revoked``: by this call; false: it already was)."""

    session_id: str
    revoked: bool
