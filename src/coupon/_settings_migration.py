"""Settings of the dual-auth migration: legacy JWT issuers and what their scopes grant.

Kept beside :mod:`coupon.settings`, which embeds them (``legacy_issuers``). A legacy issuer is
given in the TOML config file (``[[legacy_issuers]]``) or as JSON in
``COUPON_LEGACY_ISSUERS``; see ``docs/migration.md``.
"""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, SecretStr, model_validator

__all__ = ["LegacyAlgorithm", "LegacyGrant", "LegacyIssuer"]

#: The only algorithms a legacy issuer may use. ``none`` and every other name are refused.
LegacyAlgorithm = Literal["HS256", "RS256", "ES256"]


class LegacyGrant(BaseModel):
    """What one legacy scope (or permission) grants, in coupon terms."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    resource: str = Field(min_length=1, max_length=1024, description="Resource pattern.")
    actions: list[str] = Field(min_length=1, max_length=32)
    purpose: str | None = Field(
        None, min_length=1, max_length=512, description="Purpose granted (unset: any)."
    )


class LegacyIssuer(BaseModel):
    """One legacy JWT issuer the Authority accepts during the migration.

    HS256 takes a shared ``secret``; RS256 and ES256 take a ``jwks_url``. An issuer is either
    symmetric or asymmetric, never both: a public key must never be usable as an HMAC secret
    (the classic algorithm-confusion attack).
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    issuer: str = Field(min_length=1, max_length=512, description="The JWT's iss, exactly.")
    algorithms: list[LegacyAlgorithm] = Field(min_length=1, description="alg allowlist.")
    secret: SecretStr | None = Field(None, description="HS256 shared secret (32+ bytes).")
    jwks_url: str | None = Field(None, description="JWKS URL for RS256/ES256.")
    audiences: dict[str, str] = Field(
        default_factory=dict,
        description="Coupon audience -> the aud value its legacy tokens carry (default: the "
        "same name).",
    )
    scope_claim: str = Field("scope", description="Claim with the scopes (string or list).")
    scopes: dict[str, LegacyGrant] = Field(
        default_factory=dict, description="Scope -> what it grants; unknown scopes grant nothing."
    )
    tenant: str = Field("legacy", min_length=1, max_length=256, description="Tenant of tokens.")
    tenant_claim: str | None = Field(None, description="Claim naming the tenant, if any.")
    leeway: int = Field(30, ge=0, le=300, description="Clock skew tolerated (s).")
    max_lifetime: int = Field(86_400, gt=0, description="Longest exp - iat accepted (s).")
    jwks_cache_seconds: float = Field(300.0, gt=0, description="How long fetched keys are kept.")
    jwks_max_stale: float = Field(
        3600.0, ge=0, description="Keep using cached keys this long while the JWKS URL fails."
    )

    @model_validator(mode="after")
    def _one_kind(self) -> LegacyIssuer:
        symmetric = {"HS256"} & set(self.algorithms)
        asymmetric = {"RS256", "ES256"} & set(self.algorithms)
        if symmetric and asymmetric:
            raise ValueError("an issuer is either HS256 or RS256/ES256, never both")
        if symmetric:
            if self.secret is None or self.jwks_url is not None:
                raise ValueError("HS256 needs a secret and no jwks_url")
            if len(self.secret.get_secret_value().encode()) < 32:
                raise ValueError("an HS256 secret has at least 32 bytes")
        elif self.jwks_url is None or self.secret is not None:
            raise ValueError("RS256/ES256 need a jwks_url and no secret")
        elif not self.jwks_url.startswith(("https://", "http://")):
            raise ValueError("jwks_url must be an http(s) URL")
        return self
