"""The stable error codes of Coupon Authority (``SVC-CAT-NNN``).

Callers rely on the codes; the wording of titles and reasons may change.
Every code is listed on ``docs/errors.md`` (a test keeps the page and this table in step).

Each code names the exception class that carries it (``kind``), the HTTP status a
service answers with, and the protocol error name used in a ``WWW-Authenticate``
challenge (RFC 6750 / RFC 9449).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Final

__all__ = ["ALL", "ErrorCode", "by_code"]


@dataclass(frozen=True, slots=True)
class ErrorCode:
    """One stable error code."""

    code: str
    title: str
    kind: str
    status: int
    protocol: str


ALL: Final[dict[str, ErrorCode]] = {}


def _c(code: str, title: str, kind: str, status: int, protocol: str) -> ErrorCode:
    if code in ALL:  # pragma: no cover - guards the table itself
        raise RuntimeError(f"duplicate error code {code}")
    entry = ErrorCode(code, title, kind, status, protocol)
    ALL[code] = entry
    return entry


def by_code(code: str) -> ErrorCode:
    """Return the entry for ``code``; raise ``KeyError`` if it is unknown."""
    return ALL[code]


_TOKEN = "invalid_token"
_SCOPE = "insufficient_scope"
_PROOF = "invalid_dpop_proof"
_REQ = "invalid_request"

# --- token structure (strict parse) ------------------------------------------------------------
TOKEN_TOO_LARGE = _c("CPN-TOK-001", "token exceeds the size limit", "MalformedCoupon", 401, _TOKEN)
TOKEN_MALFORMED = _c("CPN-TOK-002", "not a compact JWS", "MalformedCoupon", 401, _TOKEN)
TOKEN_BASE64 = _c("CPN-TOK-003", "invalid base64url", "MalformedCoupon", 401, _TOKEN)
TOKEN_JSON = _c("CPN-TOK-004", "invalid JSON", "MalformedCoupon", 401, _TOKEN)
TOKEN_DUPLICATE_KEY = _c("CPN-TOK-005", "duplicate JSON member", "MalformedCoupon", 401, _TOKEN)
TOKEN_CLAIM = _c("CPN-TOK-006", "missing or malformed claim", "MalformedCoupon", 401, _TOKEN)
TOKEN_VERSION = _c("CPN-TOK-007", "unsupported coupon version", "MalformedCoupon", 401, _TOKEN)

# --- protected header --------------------------------------------------------------------------
HEADER_TYP = _c("CPN-HDR-001", "wrong typ", "InvalidCoupon", 401, _TOKEN)
HEADER_ALG = _c("CPN-HDR-002", "algorithm not allowed", "InvalidCoupon", 401, _TOKEN)
HEADER_CRIT = _c("CPN-HDR-003", "unknown critical header", "InvalidCoupon", 401, _TOKEN)
HEADER_KID = _c("CPN-HDR-004", "unknown or malformed kid", "InvalidCoupon", 401, _TOKEN)
HEADER_ALG_KEY = _c("CPN-HDR-005", "alg does not match the key", "InvalidCoupon", 401, _TOKEN)
HEADER_FIELD = _c("CPN-HDR-006", "header member not allowed", "InvalidCoupon", 401, _TOKEN)

# --- signature ---------------------------------------------------------------------------------
SIGNATURE = _c("CPN-SIG-001", "signature does not verify", "InvalidSignature", 401, _TOKEN)

# --- time --------------------------------------------------------------------------------------
TIME_EXPIRED = _c("CPN-TIME-001", "coupon has expired", "InvalidCoupon", 401, _TOKEN)
TIME_NOT_YET = _c("CPN-TIME-002", "coupon not yet valid", "InvalidCoupon", 401, _TOKEN)
TIME_ISSUED_FUTURE = _c("CPN-TIME-003", "issued in the future", "InvalidCoupon", 401, _TOKEN)
TIME_TTL = _c("CPN-TIME-004", "lifetime exceeds the maximum TTL", "InvalidCoupon", 401, _TOKEN)
TIME_ORDER = _c("CPN-TIME-005", "iat, nbf and exp out of order", "InvalidCoupon", 401, _TOKEN)

# --- audience and issuer -----------------------------------------------------------------------
AUDIENCE = _c("CPN-AUD-001", "audience mismatch", "InvalidCoupon", 401, _TOKEN)
ISSUER = _c("CPN-AUD-002", "issuer not trusted", "InvalidCoupon", 401, _TOKEN)

# --- requested scope ---------------------------------------------------------------------------
SCOPE_RESOURCE = _c("CPN-SCOPE-001", "resource not granted", "InsufficientScope", 403, _SCOPE)
SCOPE_ACTION = _c("CPN-SCOPE-002", "action not granted", "InsufficientScope", 403, _SCOPE)
SCOPE_PURPOSE = _c("CPN-SCOPE-003", "purpose not granted", "InsufficientScope", 403, _SCOPE)
SCOPE_TENANT = _c("CPN-SCOPE-004", "tenant mismatch", "InsufficientScope", 403, _SCOPE)

# --- key binding / proof of possession ---------------------------------------------------------
POP_MISSING = _c("CPN-POP-001", "proof of possession required", "InvalidProof", 401, _PROOF)
POP_MALFORMED = _c("CPN-POP-002", "malformed DPoP proof", "InvalidProof", 401, _PROOF)
POP_TYP = _c("CPN-POP-003", "DPoP proof has wrong typ", "InvalidProof", 401, _PROOF)
POP_ALG = _c("CPN-POP-004", "DPoP algorithm not allowed", "InvalidProof", 401, _PROOF)
POP_JWK = _c("CPN-POP-005", "DPoP jwk missing, private or unusable", "InvalidProof", 401, _PROOF)
POP_SIGNATURE = _c("CPN-POP-006", "DPoP signature does not verify", "InvalidProof", 401, _PROOF)
POP_HTM = _c("CPN-POP-007", "DPoP htm mismatch", "InvalidProof", 401, _PROOF)
POP_HTU = _c("CPN-POP-008", "DPoP htu mismatch", "InvalidProof", 401, _PROOF)
POP_IAT = _c("CPN-POP-009", "DPoP iat outside the window", "InvalidProof", 401, _PROOF)
POP_ATH = _c("CPN-POP-010", "DPoP ath mismatch", "InvalidProof", 401, _PROOF)
POP_NONCE = _c(
    "CPN-POP-011", "DPoP nonce required or stale", "NonceRequired", 401, "use_dpop_nonce"
)
POP_KEY_BINDING = _c("CPN-POP-012", "proof key is not the bound key", "InvalidProof", 401, _PROOF)
POP_CERT_BINDING = _c("CPN-POP-013", "client certificate not bound", "InvalidProof", 401, _TOKEN)
POP_CLAIM = _c("CPN-POP-014", "DPoP claim missing or malformed", "InvalidProof", 401, _PROOF)

# --- replay and revocation ---------------------------------------------------------------------
REPLAY = _c("CPN-RPL-001", "DPoP proof replayed", "ProofReplayed", 401, _PROOF)
REVOKED = _c("CPN-REV-001", "coupon revoked", "CouponRevoked", 401, _TOKEN)

# --- offline attenuation chains ----------------------------------------------------------------
CHAIN_LINK = _c(
    "CPN-CHAIN-001", "chain link not signed by the bound key", "InvalidChain", 401, _TOKEN
)
CHAIN_PARENT = _c(
    "CPN-CHAIN-002", "chain link does not name its parent", "InvalidChain", 401, _TOKEN
)
CHAIN_WIDENS = _c("CPN-CHAIN-003", "sub-coupon widens its parent", "InvalidChain", 401, _TOKEN)
CHAIN_DEPTH = _c("CPN-CHAIN-004", "delegation depth exceeded", "InvalidChain", 401, _TOKEN)
CHAIN_BINDING = _c(
    "CPN-CHAIN-005", "parent is not bound to a DPoP key", "InvalidChain", 401, _TOKEN
)

# --- availability (fail closed) ----------------------------------------------------------------
UNAVAILABLE_REVOCATION = _c(
    "CPN-DEP-001",
    "revocation status unavailable",
    "DependencyUnavailable",
    503,
    "temporarily_unavailable",
)
UNAVAILABLE_REPLAY = _c(
    "CPN-DEP-002",
    "replay store unavailable",
    "DependencyUnavailable",
    503,
    "temporarily_unavailable",
)

# --- requests (mint, attenuate, key import) ----------------------------------------------------
REQUEST_RESOURCE = _c("CPN-REQ-001", "invalid resource pattern", "InvalidRequest", 400, _REQ)
REQUEST_ACTION = _c("CPN-REQ-002", "invalid action", "InvalidRequest", 400, _REQ)
REQUEST_PURPOSE = _c("CPN-REQ-003", "invalid purpose", "InvalidRequest", 400, _REQ)
REQUEST_CLAIM = _c("CPN-REQ-004", "invalid claim value", "InvalidRequest", 400, _REQ)
REQUEST_KEY = _c("CPN-REQ-005", "invalid or unsupported key", "InvalidRequest", 400, _REQ)
REQUEST_WIDENS = _c(
    "CPN-REQ-006", "requested sub-coupon widens its parent", "InvalidRequest", 400, _REQ
)
REQUEST_URI = _c("CPN-REQ-007", "invalid HTTP method or URI", "InvalidRequest", 400, _REQ)

# --- callers of the Authority ------------------------------------------------------------------
AUTH_MISSING = _c("CPN-AUTH-001", "authentication required", "AuthenticationFailed", 401, _TOKEN)
AUTH_INVALID = _c("CPN-AUTH-002", "invalid credentials", "AuthenticationFailed", 401, _TOKEN)
AUTH_FORBIDDEN = _c("CPN-AUTH-003", "caller lacks the role", "Forbidden", 403, _SCOPE)
AUTH_TENANT = _c("CPN-AUTH-004", "caller may not act for this tenant", "Forbidden", 403, _SCOPE)

# --- OpenID Connect callers of the Authority (Authorization: Bearer <JWT>) ----------------------
_OIDC = "AuthenticationFailed"
OIDC_MALFORMED = _c("CPN-OIDC-001", "malformed bearer token", _OIDC, 401, _TOKEN)
OIDC_ISSUER = _c("CPN-OIDC-002", "token issuer not configured", _OIDC, 401, _TOKEN)
OIDC_ALG = _c("CPN-OIDC-003", "token algorithm not allowed", _OIDC, 401, _TOKEN)
OIDC_KID = _c("CPN-OIDC-004", "token signing key unknown", _OIDC, 401, _TOKEN)
OIDC_SIGNATURE = _c("CPN-OIDC-005", "token signature does not verify", _OIDC, 401, _TOKEN)
OIDC_EXPIRED = _c("CPN-OIDC-006", "token has expired", _OIDC, 401, _TOKEN)
OIDC_NOT_YET = _c("CPN-OIDC-007", "token not yet valid", _OIDC, 401, _TOKEN)
OIDC_TOO_OLD = _c("CPN-OIDC-008", "token older than the maximum age", _OIDC, 401, _TOKEN)
OIDC_AUDIENCE = _c("CPN-OIDC-009", "token audience mismatch", _OIDC, 401, _TOKEN)
OIDC_CLAIM = _c("CPN-OIDC-010", "token claim missing or malformed", _OIDC, 401, _TOKEN)
OIDC_TYPE = _c("CPN-OIDC-011", "token type not accepted", _OIDC, 401, _TOKEN)
OIDC_SUBJECT = _c(
    "CPN-OIDC-012", "caller may only issue for its own subject", "Forbidden", 403, _SCOPE
)
OIDC_UNAVAILABLE = _c(
    "CPN-OIDC-013",
    "identity provider unavailable",
    "DependencyUnavailable",
    503,
    "temporarily_unavailable",
)
OIDC_METADATA = _c(
    "CPN-OIDC-014",
    "identity provider metadata invalid",
    "DependencyUnavailable",
    503,
    "temporarily_unavailable",
)

# --- policy ------------------------------------------------------------------------------------
POLICY_DENIED = _c("CPN-POL-001", "denied by policy", "PolicyDenied", 403, "access_denied")
POLICY_FAILED = _c(
    "CPN-POL-002",
    "policy evaluation failed",
    "DependencyUnavailable",
    503,
    "temporarily_unavailable",
)
POLICY_SIGNATURE = _c("CPN-POL-003", "policy bundle signature invalid", "InvalidRequest", 400, _REQ)
POLICY_INVALID = _c("CPN-POL-004", "policy bundle invalid", "InvalidRequest", 400, _REQ)

# --- load shedding -----------------------------------------------------------------------------
RATE_COUPON = _c(
    "CPN-RATE-001", "too many requests for this coupon", "RateLimited", 429, "slow_down"
)
RATE_SUBJECT = _c(
    "CPN-RATE-002", "too many requests for this subject", "RateLimited", 429, "slow_down"
)
RATE_TENANT = _c("CPN-RATE-003", "tenant rate limit exceeded", "RateLimited", 429, "slow_down")

# --- idempotency keys (IETF draft-ietf-httpapi-idempotency-key-header) -------------------------
IDEM_KEY = _c("CPN-IDEM-001", "malformed Idempotency-Key", "InvalidRequest", 400, _REQ)
IDEM_REUSED = _c(
    "CPN-IDEM-002", "Idempotency-Key reused for another request", "InvalidRequest", 422, _REQ
)
IDEM_IN_FLIGHT = _c(
    "CPN-IDEM-003", "a request with this Idempotency-Key is in flight", "Conflict", 409, _REQ
)

# --- resources and bodies ----------------------------------------------------------------------
NOT_FOUND = _c("CPN-REQ-008", "not found", "NotFound", 404, _REQ)
REQUEST_BODY = _c("CPN-REQ-009", "malformed request body", "InvalidRequest", 422, _REQ)
CONFLICT = _c("CPN-REQ-010", "conflicts with the current state", "Conflict", 409, _REQ)

# --- engines -----------------------------------------------------------------------------------
UNAVAILABLE_STORAGE = _c(
    "CPN-DEP-003", "storage unavailable", "StorageError", 503, "temporarily_unavailable"
)
UNAVAILABLE_SIGNER = _c(
    "CPN-DEP-004",
    "signing key unavailable",
    "DependencyUnavailable",
    503,
    "temporarily_unavailable",
)

# --- the Ledger: notes, checkpoints, proofs, tiles, entries -------------------------------------
_NOTE = "MalformedLogData"
LOG_NOTE = _c("CPN-LOG-001", "malformed signed note", _NOTE, 400, _REQ)
LOG_CHECKPOINT = _c("CPN-LOG-002", "malformed checkpoint", _NOTE, 400, _REQ)
LOG_PROOF_FORMAT = _c("CPN-LOG-003", "malformed proof", _NOTE, 400, _REQ)
LOG_TILE = _c("CPN-LOG-004", "malformed tile or tile path", _NOTE, 400, _REQ)
LOG_ENTRY = _c("CPN-LOG-005", "malformed log entry", _NOTE, 422, _REQ)
LOG_UNTRUSTED = _c("CPN-LOG-006", "no trusted signature", "UntrustedLogData", 403, "access_denied")
LOG_ORIGIN = _c("CPN-LOG-007", "unknown log origin", "NotFound", 404, _REQ)
LOG_PROOF = _c("CPN-LOG-008", "proof does not verify", "ProofMismatch", 422, _REQ)
LOG_ROLLBACK = _c("CPN-LOG-009", "log rolled back", "InconsistentLog", 409, _REQ)
LOG_FORK = _c("CPN-LOG-010", "log forked", "InconsistentLog", 409, _REQ)
LOG_RANGE = _c("CPN-LOG-011", "index or tree size out of range", "InvalidRequest", 400, _REQ)
LOG_ERASED = _c("CPN-LOG-012", "personal data erased", "NotFound", 410, _REQ)
LOG_WITNESS_SIZE = _c("CPN-LOG-013", "old size does not match the witness", "Conflict", 409, _REQ)
UNAVAILABLE_LEDGER = _c(
    "CPN-DEP-005", "ledger unavailable", "DependencyUnavailable", 503, "temporarily_unavailable"
)

# --- resilience pipelines (coupon.resilience) ---------------------------------------------------
_UNAVAILABLE = "temporarily_unavailable"
RES_CIRCUIT_OPEN = _c("CPN-RES-001", "circuit open", "CircuitOpen", 503, _UNAVAILABLE)
RES_BULKHEAD_FULL = _c("CPN-RES-002", "bulkhead full", "BulkheadFull", 503, _UNAVAILABLE)
RES_DEADLINE = _c("CPN-RES-003", "deadline exceeded", "DeadlineExceeded", 503, _UNAVAILABLE)
RES_RETRIES = _c("CPN-RES-004", "retries exhausted", "RetriesExhausted", 503, _UNAVAILABLE)
RES_BUDGET = _c("CPN-RES-005", "retry budget exhausted", "RetriesExhausted", 503, _UNAVAILABLE)

# --- the edge gateway (coupon.gateway) -----------------------------------------------------------
_GW = "GatewayError"
GATEWAY_NO_ROUTE = _c("CPN-GW-001", "no route", _GW, 404, _REQ)
GATEWAY_METHOD = _c("CPN-GW-002", "method not allowed", _GW, 405, _REQ)
GATEWAY_BODY_SIZE = _c("CPN-GW-003", "request body too large", _GW, 413, _REQ)
GATEWAY_MEDIA = _c("CPN-GW-004", "unsupported media type", _GW, 415, _REQ)
GATEWAY_UPSTREAM = _c("CPN-GW-005", "upstream unreachable", _GW, 502, _UNAVAILABLE)
GATEWAY_TIMEOUT = _c("CPN-GW-006", "upstream timed out", _GW, 504, _UNAVAILABLE)
GATEWAY_PATH = _c("CPN-GW-007", "ambiguous request path", _GW, 400, _REQ)
GATEWAY_HEADER = _c("CPN-GW-008", "malformed header field", _GW, 400, _REQ)
GATEWAY_BUSY = _c("CPN-GW-009", "gateway at capacity", _GW, 503, _UNAVAILABLE)

# --- legacy bearer JWTs during the dual-auth migration (docs/migration.md) ----------------------
LEGACY_OFF = _c(
    "CPN-LEG-001", "legacy tokens are off for this audience", "InvalidCoupon", 401, _TOKEN
)
LEGACY_MALFORMED = _c("CPN-LEG-002", "malformed legacy token", "MalformedCoupon", 401, _TOKEN)
LEGACY_ISSUER = _c("CPN-LEG-003", "legacy issuer not configured", "InvalidCoupon", 401, _TOKEN)
LEGACY_ALG = _c("CPN-LEG-004", "legacy algorithm not allowed", "InvalidCoupon", 401, _TOKEN)
LEGACY_SIGNATURE = _c(
    "CPN-LEG-005", "legacy signature or key does not verify", "InvalidSignature", 401, _TOKEN
)
LEGACY_TIME = _c(
    "CPN-LEG-006", "legacy token expired or not yet valid", "InvalidCoupon", 401, _TOKEN
)
LEGACY_AUDIENCE = _c("CPN-LEG-007", "legacy audience mismatch", "InvalidCoupon", 401, _TOKEN)
LEGACY_SCOPE = _c(
    "CPN-LEG-008", "legacy scopes do not grant the request", "InsufficientScope", 403, _SCOPE
)
LEGACY_KEYS = _c(
    "CPN-LEG-009",
    "legacy issuer keys unavailable",
    "DependencyUnavailable",
    503,
    "temporarily_unavailable",
)

# --- end-user sessions with refresh-token rotation (docs/sessions.md) ---------------------------
_GRANT = "invalid_grant"
SESSION_TOKEN = _c("CPN-SESS-001", "unknown refresh token", "AuthenticationFailed", 401, _GRANT)
SESSION_REUSED = _c(
    "CPN-SESS-002", "refresh token reused: session revoked", "AuthenticationFailed", 401, _GRANT
)
SESSION_REVOKED = _c("CPN-SESS-003", "session revoked", "AuthenticationFailed", 401, _GRANT)
SESSION_EXPIRED = _c("CPN-SESS-004", "session expired", "AuthenticationFailed", 401, _GRANT)
SESSION_DEVICE = _c(
    "CPN-SESS-005", "proof key is not the session's device key", "InvalidProof", 401, _PROOF
)

# --- mTLS callers of the Authority and certificate-bound coupons (docs/mtls.md) -----------------
_MTLS = "AuthenticationFailed"
MTLS_MALFORMED = _c("CPN-MTLS-001", "malformed client certificate", _MTLS, 401, _TOKEN)
MTLS_UNTRUSTED = _c("CPN-MTLS-002", "client certificate not trusted", _MTLS, 401, _TOKEN)
MTLS_NO_IDENTITY = _c("CPN-MTLS-003", "no identity in the client certificate", _MTLS, 401, _TOKEN)
MTLS_UNMAPPED = _c("CPN-MTLS-004", "certificate identity not mapped", "Forbidden", 403, _SCOPE)
MTLS_BINDING = _c(
    "CPN-MTLS-005", "binding another certificate needs admin", "Forbidden", 403, _SCOPE
)
MTLS_NO_CERTIFICATE = _c(
    "CPN-MTLS-006", "no caller certificate to bind", "InvalidRequest", 400, _REQ
)

# --- internal ----------------------------------------------------------------------------------
INTERNAL = _c("CPN-INT-001", "internal error", "InternalError", 500, "server_error")
