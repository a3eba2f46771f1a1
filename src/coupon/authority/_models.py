"""The Authority's REST request and response bodies (they make the OpenAPI document)."""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, StringConstraints, model_validator

from coupon import codes
from coupon.errors import InvalidRequest
from coupon.token import Request

__all__ = [
    "AttenuateRequest",
    "BindingModel",
    "CouponResponse",
    "IssueRequest",
    "RevocationModel",
    "RevocationsPage",
    "RevokeRequest",
    "RevokeResponse",
    "VerifyRequest",
    "VerifyResponse",
]

# Control characters have no business in names, and PostgreSQL refuses NUL in text columns:
# they are a 422 here, never a storage error later.
Text = Annotated[str, StringConstraints(pattern=r"^[^\x00-\x1f\x7f]*$")]


class _Strict(BaseModel):
    # strict: JSON true is not the integer 1, "5" is not 5.
    model_config = ConfigDict(extra="forbid", frozen=True, strict=True)


class BindingModel(_Strict):
    """The key the coupon binds (RFC 7800 ``cnf``): exactly one member."""

    jkt: str | None = Field(None, pattern=r"^[A-Za-z0-9_-]{43}$", description="DPoP key thumbprint")
    x5t_s256: str | None = Field(
        None,
        alias="x5t#S256",
        pattern=r"^([A-Za-z0-9_-]{43}|self)$",
        description='Client certificate SHA-256 thumbprint (RFC 8705); "self": the certificate '
        "the caller authenticated with over mTLS (docs/mtls.md)",
    )
    model_config = ConfigDict(extra="forbid", frozen=True, strict=True, populate_by_name=True)

    @model_validator(mode="after")
    def _exactly_one(self) -> BindingModel:
        if (self.jkt is None) == (self.x5t_s256 is None):
            raise ValueError("binding needs exactly one of jkt and x5t#S256")
        return self


class IssueRequest(_Strict):
    """Ask the Authority for a root coupon."""

    subject: Text = Field(min_length=1, max_length=256, description="The holder (sub).")
    audience: list[Text] = Field(min_length=1, max_length=16)
    tenant: Text = Field(min_length=1, max_length=256)
    resource: Text = Field(min_length=1, max_length=1024, description="Resource pattern.")
    actions: list[Text] = Field(min_length=1, max_length=32)
    purpose: Text = Field(min_length=1, max_length=512)
    ttl: int | None = Field(None, ge=1, le=86_400, description="Seconds; capped by policy.")
    binding: BindingModel


class AttenuateRequest(_Strict):
    """Ask for a sub-coupon of the coupon in ``Authorization: DPoP``; left-out scope is kept."""

    subject: Text = Field(min_length=1, max_length=256, description="The delegate (sub).")
    audience: list[Text] | None = Field(None, min_length=1, max_length=16)
    resource: Text | None = Field(None, min_length=1, max_length=1024)
    actions: list[Text] | None = Field(None, min_length=1, max_length=32)
    purpose: Text | None = Field(None, min_length=1, max_length=512)
    ttl: int | None = Field(None, ge=1, le=86_400)
    binding: BindingModel


class CouponResponse(BaseModel):
    """An issued coupon and what the Authority recorded about it."""

    coupon: str
    token_type: Literal["DPoP", "mTLS"]
    jti: str
    lineage: str
    kid: str
    issued_at: int
    expires_at: int
    expires_in: int
    policy_version: str | None
    claims: dict[str, Any]
    trace_id: str


class VerifyRequest(_Strict):
    """Verify a coupon (or offline chain) for one request; or, during the dual-auth migration,
    a legacy bearer JWT (``legacy_token`` instead of ``coupon``, see docs/migration.md)."""

    coupon: Text | None = Field(None, min_length=1, max_length=16_384)
    legacy_token: Text | None = Field(
        None,
        min_length=1,
        max_length=8192,
        description="A legacy bearer JWT instead of a coupon: accepted only for audiences "
        "whose legacy mode is migrating; a bearer token, so dpop/htm/htu are not used.",
    )
    audience: Text = Field(min_length=1, max_length=256)
    resource: Text | None = Field(None, max_length=1024)
    action: Text | None = Field(None, max_length=64)
    purpose: Text | None = Field(None, max_length=512)
    tenant: Text | None = Field(None, max_length=256)
    dpop: Text | None = Field(None, max_length=8192, description="The DPoP proof header value.")
    htm: Text | None = Field(None, max_length=16, description="HTTP method the proof is for.")
    htu: Text | None = Field(None, max_length=4096, description="HTTP URI the proof is for.")
    certificate_thumbprint: Text | None = Field(
        None, pattern=r"^[A-Za-z0-9_-]{43}$", description="x5t#S256 of the client certificate."
    )

    @model_validator(mode="after")
    def _one_token(self) -> VerifyRequest:
        if (self.coupon is None) == (self.legacy_token is None):
            raise ValueError("send exactly one of coupon and legacy_token")
        return self

    def request(self) -> Request:
        """The request the coupon is verified for (REST and gRPC alike).

        Raises:
            InvalidRequest: ``CPN-REQ-007`` for a DPoP proof without ``htm`` and ``htu``.
        """
        if self.dpop is not None and (self.htm is None or self.htu is None):
            raise InvalidRequest(codes.REQUEST_URI, "a DPoP proof needs htm and htu")
        return Request(
            audience=self.audience,
            resource=self.resource,
            action=self.action,
            purpose=self.purpose,
            tenant=self.tenant,
            method=self.htm,
            uri=self.htu,
            dpop=self.dpop,
            certificate=self.certificate_thumbprint,
        )


class VerifyResponse(BaseModel):
    """The decision: allow, or the stable code and reason of the denial."""

    allow: bool
    legacy: bool = Field(
        False, description="True when the token was a legacy JWT (claims are coupon-equivalent)."
    )
    code: str | None = None
    title: str | None = None
    reason: str | None = None
    step: str | None = None
    claims: dict[str, Any] | None = None
    chain: list[dict[str, Any]] | None = None
    kid: str | None = None
    trace_id: str
    timings_us: dict[str, float]


class RevokeRequest(_Strict):
    """Revoke by jti, lineage (the whole family), subject, tenant or signing key id."""

    kind: Literal["jti", "lineage", "subject", "tenant", "kid"]
    value: Text = Field(min_length=1, max_length=256)
    reason: Text = Field(min_length=1, max_length=512)


class RevocationModel(BaseModel):
    """One durable revocation in the feed."""

    seq: int
    kind: str
    value: str
    reason: str
    actor: str
    revoked_at: int


class RevokeResponse(BaseModel):
    """What was revoked (a jti revocation also covers coupons issued below it)."""

    revocations: list[RevocationModel]
    cursor: int


class RevocationsPage(BaseModel):
    """A page of the pull feed; pass ``cursor`` as ``after`` next time."""

    revocations: list[RevocationModel]
    cursor: int
