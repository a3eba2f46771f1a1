"""One typed settings model for every Coupon Authority process.

Values come, highest priority first, from: keyword arguments, ``COUPON_*`` environment
variables, the TOML file named by ``COUPON_CONFIG`` (or ``--config``), and the defaults below.
The defaults are the embedded mode: SQLite files under ``data_dir`` and in-process fan-out.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Literal

from pydantic import Field, SecretStr, field_validator, model_validator
from pydantic_settings import (
    BaseSettings,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
    TomlConfigSettingsSource,
)

from coupon._settings_migration import LegacyIssuer
from coupon._settings_oidc import (
    DEFAULT_OIDC_ALGORITHMS,
    OidcAlgorithm,
    OidcProvider,
    OidcRole,
    provider_list,
)
from coupon._settings_tls import Identity, MtlsIdentity, ProxyNetwork

__all__ = ["Settings"]


class Settings(BaseSettings):
    """Coupon Authority settings (environment prefix ``COUPON_``)."""

    model_config = SettingsConfigDict(env_prefix="COUPON_", extra="forbid", frozen=True)

    # -- serving ---------------------------------------------------------------------------------
    host: str = Field("127.0.0.1", description="Address to listen on.")
    port: int = Field(8700, ge=0, le=65535, description="TCP port (0 picks a free one).")
    data_dir: Path = Field(Path("var"), description="Where embedded state lives.")
    issuer: str = Field("", description="The iss of issued coupons; defaults to the public URL.")
    public_url: str = Field("", description="Base URL clients use; default http(s)://host:port.")

    # -- TLS (docs/mtls.md) ----------------------------------------------------------------------
    tls_cert: Path | None = Field(
        None, description="PEM certificate chain to serve HTTPS with; unset: plain HTTP."
    )
    tls_key: Path | None = Field(None, description="PEM private key of tls_cert (mode 0600).")
    tls_client_ca: Path | None = Field(
        None, description="PEM CA certificates that sign the certificates of mTLS callers."
    )
    tls_client_auth: Literal["none", "optional", "required"] = Field(
        "none",
        description="Client certificates: none, optional (other credentials still work) or "
        "required (no handshake without one).",
    )
    tls_min_version: Literal["1.2", "1.3"] = Field("1.2", description="Oldest TLS version.")
    tls_reload_interval: float = Field(
        5.0, ge=0, description="Re-read changed certificate, key and CA files every N s (0: never)."
    )
    tls_trusted_proxies: list[ProxyNetwork] = Field(
        default_factory=list,
        description="CIDRs of TLS-terminating proxies whose forwarded client certificate "
        "(tls_client_cert_header) is believed; from others it is ignored.",
    )
    tls_client_cert_header: str = Field(
        "X-Client-Cert",
        pattern=r"^[A-Za-z0-9-]{1,64}$",
        description="Header a trusted proxy forwards the client certificate in: URL-escaped PEM "
        "(nginx $ssl_client_escaped_cert) or RFC 9440 :base64 DER:.",
    )
    mtls_identities: dict[Identity, MtlsIdentity] = Field(
        default_factory=dict,
        description='Certificate identity (uri:..., dns:..., cn:...) -> {"roles": [...], '
        '"tenant": ...}; unlisted identities are refused.',
    )

    # -- engines ---------------------------------------------------------------------------------
    database_url: str = Field(
        "", description="SQLAlchemy URL; empty means SQLite at data_dir/authority.db."
    )
    redis_url: str = Field("", description="Redis URL for fan-out and replay; empty = in-process.")
    redis_prefix: str = Field(
        "coupon:", pattern=r"^[A-Za-z0-9:_.-]{1,64}$", description="Prefix of every Redis key."
    )

    # -- secrets ---------------------------------------------------------------------------------
    master_key: SecretStr | None = Field(
        None, description="base64url 32-byte key sealing private keys; else data_dir/master.key."
    )
    admin_api_key: SecretStr | None = Field(
        None, description="Bootstrap admin API key; generated on first start when unset."
    )

    # -- coupons ---------------------------------------------------------------------------------
    key_algorithm: str = Field(
        "EdDSA", pattern="^(EdDSA|ES256)$", description="Algorithm of new signing keys."
    )
    max_ttl: int = Field(3600, gt=0, description="Longest coupon lifetime in seconds.")
    default_ttl: int = Field(300, gt=0, description="Lifetime when a request names none.")
    leeway: int = Field(30, ge=0, le=300, description="Clock-skew tolerance in seconds.")
    max_depth: int = Field(4, ge=0, le=16, description="Deepest delegation accepted.")
    key_rotation_interval: int = Field(
        0, ge=0, description="Rotate the signing key every N seconds (0 = only on request)."
    )
    key_reload_interval: float = Field(
        5.0, gt=0, description="Seconds between key and policy reloads from the database."
    )

    # -- keys: PKCS#11 (docs/hsm.md) -------------------------------------------------------------
    key_backend: str = Field(
        "sealed",
        pattern="^(sealed|pkcs11)$",
        description="Where private signing keys live: sealed (in the database, under the "
        "master key) or pkcs11 (generated and kept in an HSM token; also the Ledger's key).",
    )
    pkcs11_module: str = Field(
        "/usr/lib/softhsm/libsofthsm2.so", description="The PKCS#11 module (shared library)."
    )
    pkcs11_token_label: str = Field(
        "coupon", min_length=1, max_length=32, description="The label of the HSM token to use."
    )
    pkcs11_pin: SecretStr | None = Field(
        None, description="The token's user PIN (required with key_backend=pkcs11)."
    )
    pkcs11_probe_interval: float = Field(
        5.0,
        gt=0,
        le=300,
        description="Seconds between HSM health probes; reconnect backoff caps at this.",
    )

    # -- policy ----------------------------------------------------------------------------------
    policy_deadline_ms: int = Field(250, gt=0, description="Per-evaluation deadline; fails closed.")
    policy_trusted_keys: list[str] = Field(
        default_factory=list, description="Ed25519 public keys (base64url) that sign bundles."
    )

    # -- revocation and replay -------------------------------------------------------------------
    revocation_poll_interval: float = Field(
        1.0, gt=0, description="Seconds between revocation pulls (the push fallback)."
    )
    revocation_max_staleness: float = Field(
        10.0, gt=0, description="Deny everything when the revocation view is older than this."
    )
    dpop_max_age: int = Field(60, gt=0, description="How old a DPoP proof may be (s).")
    dpop_nonce_required: bool = Field(
        False, description="Require Authority-issued DPoP nonces (GET /v1/time)."
    )
    dpop_nonce_lifetime: int = Field(300, gt=0, description="How long a nonce is good (s).")
    replay_limit_per_coupon: int = Field(
        200, gt=0, description="Verifications per coupon per second before shedding load."
    )
    storm_guard_shared: bool = Field(
        False,
        description="Count storm limits in Redis across processes (one more round trip per "
        "verify) instead of per process.",
    )
    replay_limit_per_subject: int = Field(
        1000, gt=0, description="Verifications per subject per second before shedding load."
    )

    # -- dual-auth migration and end-user sessions (docs/migration.md, docs/sessions.md) ----------
    legacy_issuers: list[LegacyIssuer] = Field(
        default_factory=list, description="Legacy JWT issuers accepted during the migration."
    )
    legacy_audiences: dict[str, Literal["migrating", "off"]] = Field(
        default_factory=dict,
        description='Audience -> "migrating" (legacy JWTs accepted) or "off"; unlisted = off.',
    )
    session_max_per_user: int = Field(
        3, ge=1, le=100, description="Active sessions per user; a new one evicts the oldest."
    )
    session_access_ttl: int = Field(300, gt=0, description="Lifetime of session coupons (s).")
    session_idle_timeout: int = Field(
        7 * 86_400, gt=0, description="A session unused this long expires (s)."
    )
    session_lifetime: int = Field(
        30 * 86_400, gt=0, description="A session expires this long after it started (s)."
    )

    # -- the Ledger --------------------------------------------------------------------------------
    ledger_enabled: bool = Field(True, description="Run the Ledger (audit log) in this process.")
    ledger_database_url: str = Field(
        "",
        description="SQLAlchemy URL of the Ledger; empty: COUPON_DATABASE_URL when set, else "
        "SQLite at data_dir/ledger.db.",
    )
    ledger_origin: str = Field(
        "",
        pattern=r"^[^\s+]{0,256}$",
        description="The log's origin line and key name; empty: the public URL without its "
        "scheme + /v1/ledger.",
    )
    ledger_batch_size: int = Field(1024, ge=1, le=10_000, description="Entries per commit.")
    ledger_batch_wait_ms: float = Field(
        0.0,
        ge=0,
        le=1000,
        description="How long a commit waits for more entries (ms); 0: none (what arrives "
        "during a commit forms the next batch).",
    )
    ledger_checkpoint_interval: float = Field(
        0.25, gt=0, le=60, description="Seconds between checkpoints while the log grows."
    )
    ledger_checkpoint_max_age: float = Field(
        60.0, gt=0, description="Re-sign the checkpoint this often when idle (s, freshness)."
    )
    ledger_key_overlap: float = Field(
        86_400.0, ge=0, description="Seconds old and new checkpoint keys both sign."
    )
    ledger_witnesses: list[str] = Field(
        default_factory=list,
        description='Witnesses to ask for cosignatures: "<vkey> <url>" (C2SP tlog-witness).',
    )
    ledger_emitters: list[str] = Field(
        default_factory=list,
        description='Other services whose signed events the log takes: "<kid> <base64url '
        "Ed25519 public key>\" (the Authority's own key is always trusted).",
    )
    ledger_subject_retention_days: int = Field(
        0, ge=0, description="Erase a subject's key when unused this long (0: keep)."
    )

    # -- gRPC (docs/grpc.md) -----------------------------------------------------------------------
    grpc_port: int | None = Field(
        None, ge=0, le=65535, description="gRPC port (0 picks a free one); unset: no gRPC server."
    )
    grpc_public_url: str = Field(
        "", description="Base of the DPoP htu over gRPC; defaults to https://host:grpc_port."
    )
    grpc_tls_cert: Path | None = Field(
        None, description="PEM certificate chain of the gRPC server; unset: plaintext."
    )
    grpc_tls_key: Path | None = Field(None, description="PEM private key of grpc_tls_cert.")
    grpc_tls_client_ca: Path | None = Field(
        None, description="PEM CA certificates of gRPC clients: mTLS, client certificate required."
    )

    # -- OpenID Connect callers (docs/oidc.md) -----------------------------------------------------
    oidc_issuer: str = Field(
        "", description="OpenID Connect issuer whose tokens authenticate callers; empty: off."
    )
    oidc_audience: str = Field(
        "", description="The aud those tokens must contain (the Authority's client id there)."
    )
    oidc_authorized_parties: tuple[str, ...] = Field(
        (), description="Allowed azp values (JSON list); empty: only the audience."
    )
    oidc_algorithms: tuple[OidcAlgorithm, ...] = Field(
        DEFAULT_OIDC_ALGORITHMS, min_length=1, description="Allowed algorithms (asymmetric only)."
    )
    oidc_roles_claim: str = Field(
        "roles", description="Claim or dotted path (realm_access.roles) with roles or groups."
    )
    oidc_role_map: dict[str, tuple[OidcRole, ...]] = Field(
        default_factory=dict,
        description='JSON: claim value -> roles, e.g. {"coupon-admins": ["admin"]}; else none.',
    )
    oidc_tenant_claim: str = Field(
        "", description="Claim or dotted path naming the tenant (then required); empty: none."
    )
    oidc_providers: list[OidcProvider] = Field(
        default_factory=list,
        description="More providers: JSON objects with issuer, audience and the keys above.",
    )
    oidc_leeway: int = Field(60, ge=0, le=300, description="Clock skew on exp, nbf, iat (s).")
    oidc_max_token_age: int = Field(
        3600, gt=0, le=604_800, description="Refuse tokens issued longer ago than this (s)."
    )
    oidc_jwks_max_age: int = Field(
        3600, ge=60, le=86_400, description="Longest a provider's keys are cached (s)."
    )
    oidc_jwks_refresh_interval: float = Field(
        10.0, gt=0, le=3600, description="Least time between refetches for an unknown kid (s)."
    )
    oidc_http_timeout: float = Field(
        5.0, gt=0, le=60, description="Timeout of discovery and JWKS requests (s)."
    )

    # -- observability ---------------------------------------------------------------------------
    log_level: str = Field("INFO", description="DEBUG, INFO, WARNING or ERROR.")
    log_json: bool = Field(True, description="JSON log lines (false: console format).")

    @field_validator("data_dir")
    @classmethod
    def _expand(cls, value: Path) -> Path:
        return value.expanduser()

    @model_validator(mode="after")
    def _oidc(self) -> Settings:
        _ = self.oidc_provider_list  # the flat OIDC settings are checked as a provider
        return self

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        sources: list[PydanticBaseSettingsSource] = [init_settings, env_settings]
        config = os.environ.get("COUPON_CONFIG")
        if config:
            sources.append(TomlConfigSettingsSource(settings_cls, toml_file=Path(config)))
        return tuple(sources)

    # -- derived ---------------------------------------------------------------------------------

    @property
    def sqlalchemy_url(self) -> str:
        """The database URL, defaulting to the embedded SQLite file."""
        if self.database_url:
            return self.database_url
        return f"sqlite+aiosqlite:///{self.data_dir / 'authority.db'}"

    @property
    def ledger_url(self) -> str:
        """The Ledger's database URL (see ``ledger_database_url``)."""
        if self.ledger_database_url:
            return self.ledger_database_url
        if self.database_url:
            return self.database_url
        return f"sqlite+aiosqlite:///{self.data_dir / 'ledger.db'}"

    @property
    def ledger_origin_line(self) -> str:
        """The log's origin (``host:port/v1/ledger`` by default)."""
        if self.ledger_origin:
            return self.ledger_origin
        return self.base_url.split("://", 1)[-1] + "/v1/ledger"

    @property
    def base_url(self) -> str:
        """The public base URL."""
        scheme = "https" if self.tls_cert is not None else "http"
        return self.public_url.rstrip("/") or f"{scheme}://{self.host}:{self.port}"

    @property
    def issuer_id(self) -> str:
        """The ``iss`` written into coupons."""
        return self.issuer or self.base_url

    @property
    def oidc_provider_list(self) -> tuple[OidcProvider, ...]:
        """Every OpenID Connect provider: the flat ``oidc_*`` one first, then ``oidc_providers``."""
        return provider_list(
            issuer=self.oidc_issuer,
            audience=self.oidc_audience,
            authorized_parties=self.oidc_authorized_parties,
            algorithms=self.oidc_algorithms,
            roles_claim=self.oidc_roles_claim,
            role_map=self.oidc_role_map,
            tenant_claim=self.oidc_tenant_claim,
            more=self.oidc_providers,
        )
