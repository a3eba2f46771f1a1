"""The exceptions of Coupon Authority.

Every error that untrusted input can cause is a :class:`CouponError` carrying a stable
:class:`~coupon.codes.ErrorCode`. Misuse by the calling programmer raises ``TypeError`` or
``ValueError`` instead. The tree::

    CouponError
    ├── InvalidCoupon              invalid_token        (401)
    │   ├── MalformedCoupon        the bytes are not a well-formed coupon
    │   ├── InvalidSignature       a signature does not verify
    │   ├── InvalidChain           an offline attenuation chain is broken or widens
    │   └── CouponRevoked          the coupon or its family was revoked
    ├── InsufficientScope          insufficient_scope   (403)
    ├── InvalidProof               invalid_dpop_proof   (401)
    │   ├── NonceRequired          use_dpop_nonce
    │   └── ProofReplayed          the proof's jti was seen before
    ├── DependencyUnavailable      temporarily_unavailable (503): fail closed
    │   ├── StorageError           the database could not answer
│   └── ResilienceError        a resilience pipeline gave up on a dependency (CPN-RES-*)
│       ├── CircuitOpen        the circuit breaker is open or isolated
│       ├── BulkheadFull       every slot and the wait queue are taken
│       ├── DeadlineExceeded   the overall deadline ran out
│       └── RetriesExhausted   no attempt or retry budget left
    ├── InvalidRequest             invalid_request      (400/422): a malformed request
    ├── AuthenticationFailed       (401) the caller of the Authority is not authenticated
    ├── Forbidden                  (403) the caller lacks the role or tenant
    ├── PolicyDenied               (403) the policy refused the request
    ├── RateLimited                (429) load shed; retry after the hinted delay
    ├── NotFound                   (404)
    ├── Conflict                   (409)
    ├── LedgerError                the Ledger: notes, checkpoints, proofs, tiles, entries
    │   ├── MalformedLogData       (400/422) a note, checkpoint, proof, tile or entry does not parse
    │   ├── UntrustedLogData       (403) no trusted key signed it
    │   ├── ProofMismatch          (422) a proof does not lead to the expected hash
    │   └── InconsistentLog        (409) two signed views that cannot both be true: rollback, fork
    ├── GatewayError               the edge could not route or forward a request (CPN-GW-*)
    └── InternalError              (500) a bug: reported without details, logged in full
"""

from __future__ import annotations

from coupon import codes
from coupon.codes import ErrorCode

__all__ = [
    "AuthenticationFailed",
    "BulkheadFull",
    "CircuitOpen",
    "Conflict",
    "CouponError",
    "CouponRevoked",
    "DeadlineExceeded",
    "DependencyUnavailable",
    "Forbidden",
    "GatewayError",
    "InconsistentLog",
    "InsufficientScope",
    "InternalError",
    "InvalidChain",
    "InvalidCoupon",
    "InvalidProof",
    "InvalidRequest",
    "InvalidSignature",
    "LedgerError",
    "MalformedCoupon",
    "MalformedLogData",
    "NonceRequired",
    "NotFound",
    "PolicyDenied",
    "ProofMismatch",
    "ProofReplayed",
    "RateLimited",
    "ResilienceError",
    "RetriesExhausted",
    "StorageError",
    "UntrustedLogData",
    "error",
]


class CouponError(Exception):
    """Root of every error raised on untrusted input.

    Attributes:
        code: the stable error code.
        reason: what exactly was wrong, for the log and for trusted callers.
        step: the verification step that failed, when raised by a verifier.
        timings: microseconds per verification step up to the failure, when raised by one.
    """

    code: ErrorCode
    reason: str
    step: str | None
    timings: dict[str, float] | None

    def __init__(self, code: ErrorCode, reason: str, *, step: str | None = None) -> None:
        super().__init__(f"{code.code}: {reason}")
        self.code = code
        self.reason = reason
        self.step = step
        self.timings = None

    def diagnostics(self) -> str:
        """Return a few lines of text for a human reading a terminal."""
        lines = [f"{self.code.code} ({self.code.title})", f"  reason: {self.reason}"]
        if self.step:
            lines.append(f"  step:   {self.step}")
        lines.append(f"  error:  {self.code.protocol} (HTTP {self.code.status})")
        return "\n".join(lines)


class InvalidCoupon(CouponError):
    """The coupon cannot be accepted (``invalid_token``)."""


class MalformedCoupon(InvalidCoupon):
    """The bytes are not a well-formed coupon."""


class InvalidSignature(InvalidCoupon):
    """A signature does not verify with any trusted key."""


class InvalidChain(InvalidCoupon):
    """An offline attenuation chain is broken, unbound or widens its parent."""


class CouponRevoked(InvalidCoupon):
    """The coupon, its lineage, subject, tenant or signing key was revoked."""


class InsufficientScope(CouponError):
    """The coupon is valid but does not grant the request (``insufficient_scope``)."""


class InvalidProof(CouponError):
    """The proof of possession is missing or invalid (``invalid_dpop_proof``)."""


class NonceRequired(InvalidProof):
    """The server wants a fresh ``DPoP-Nonce`` in the proof (``use_dpop_nonce``)."""


class ProofReplayed(InvalidProof):
    """The DPoP proof's ``jti`` was already used."""


class DependencyUnavailable(CouponError):
    """A dependency the decision needs is unreachable or stale: the answer is a denial."""


class StorageError(DependencyUnavailable):
    """The database failed or could not be reached."""


class ResilienceError(DependencyUnavailable):
    """A resilience pipeline (:mod:`coupon.resilience`) gave up on a dependency.

    Attributes:
        pipeline: the name of the pipeline that gave up ("" when raised outside one).
        attempts: how many attempts were made before giving up.
        retry_after: a hint, in seconds, of when trying again may help (``None``: no hint).
    """

    pipeline: str
    attempts: int
    retry_after: float | None

    def __init__(
        self,
        code: ErrorCode,
        reason: str,
        *,
        step: str | None = None,
        pipeline: str = "",
        attempts: int = 0,
        retry_after: float | None = None,
    ) -> None:
        super().__init__(code, reason, step=step)
        self.pipeline = pipeline
        self.attempts = attempts
        self.retry_after = retry_after

    def diagnostics(self) -> str:
        lines = [super().diagnostics()]
        if self.pipeline:
            lines.append(f"  pipeline: {self.pipeline}")
        return "\n".join(lines)


class CircuitOpen(ResilienceError):
    """The circuit breaker is open (or isolated by an operator): the call was not made."""


class BulkheadFull(ResilienceError):
    """Every concurrent slot and every place in the wait queue is taken."""


class DeadlineExceeded(ResilienceError):
    """The overall deadline ran out, or a wait it asked for would outlive it."""


class RetriesExhausted(ResilienceError):
    """A transient failure persisted after the allowed attempts, or the retry budget is spent."""


class InvalidRequest(CouponError):
    """A request to mint or attenuate a coupon is invalid (``invalid_request``)."""


class AuthenticationFailed(CouponError):
    """The caller of the Authority presented no or invalid credentials."""


class Forbidden(CouponError):
    """The authenticated caller may not do this."""


class PolicyDenied(CouponError):
    """The policy in force refused the request."""


class RateLimited(CouponError):
    """Too many requests; ``retry_after`` says when to try again (seconds)."""

    retry_after: float = 1.0


class NotFound(CouponError):
    """The named thing does not exist."""


class Conflict(CouponError):
    """The request conflicts with the current state."""


class LedgerError(CouponError):
    """The Ledger refused or could not check a note, checkpoint, proof, tile or entry."""


class MalformedLogData(LedgerError):
    """A signed note, checkpoint, proof, tile or log entry does not parse."""


class UntrustedLogData(LedgerError):
    """No trusted key signed the note, or an entry's signature does not verify."""


class ProofMismatch(LedgerError):
    """A Merkle proof does not lead to the expected hash.

    Attributes:
        expected: the hash the proof had to reach (a root, usually from a checkpoint).
        calculated: the hash the proof led to (empty when the proof could not be evaluated).
    """

    expected: bytes
    calculated: bytes

    def __init__(
        self,
        code: ErrorCode,
        reason: str,
        *,
        step: str | None = None,
        expected: bytes = b"",
        calculated: bytes = b"",
    ) -> None:
        super().__init__(code, reason, step=step)
        self.expected = expected
        self.calculated = calculated

    def diagnostics(self) -> str:
        lines = [super().diagnostics()]
        if self.expected or self.calculated:
            lines.append(f"  expected:   {self.expected.hex()}")
            lines.append(f"  calculated: {self.calculated.hex()}")
        return "\n".join(lines)


class InconsistentLog(LedgerError):
    """Two views of a log, both signed by it, cannot both be true (a rollback or a fork).

    Attributes:
        evidence: what proves it: both checkpoints and the proof that failed, as text.
    """

    evidence: dict[str, str]

    def __init__(
        self,
        code: ErrorCode,
        reason: str,
        *,
        step: str | None = None,
        evidence: dict[str, str] | None = None,
    ) -> None:
        super().__init__(code, reason, step=step)
        self.evidence = dict(evidence or {})

    def diagnostics(self) -> str:
        lines = [super().diagnostics()]
        for name, text in self.evidence.items():
            lines.append(f"  {name}:")
            lines.extend(f"    {line}" for line in text.splitlines())
        return "\n".join(lines)


class GatewayError(CouponError):
    """The edge gateway could not route a request, or could not get an answer upstream."""


class InternalError(CouponError):
    """Something that should never happen did; the details go to the log only."""


_KINDS: dict[str, type[CouponError]] = {
    cls.__name__: cls
    for cls in (
        InvalidCoupon,
        MalformedCoupon,
        InvalidSignature,
        InvalidChain,
        CouponRevoked,
        InsufficientScope,
        InvalidProof,
        NonceRequired,
        ProofReplayed,
        DependencyUnavailable,
        StorageError,
        ResilienceError,
        CircuitOpen,
        BulkheadFull,
        DeadlineExceeded,
        RetriesExhausted,
        InvalidRequest,
        AuthenticationFailed,
        Forbidden,
        PolicyDenied,
        RateLimited,
        NotFound,
        Conflict,
        LedgerError,
        MalformedLogData,
        UntrustedLogData,
        ProofMismatch,
        InconsistentLog,
        GatewayError,
        InternalError,
    )
}


def error(code: ErrorCode, reason: str, *, step: str | None = None) -> CouponError:
    """Build the exception class that ``code`` belongs to."""
    return _KINDS[code.kind](code, reason, step=step)


# Every code must name a class above; checked once at import, cheap.
assert all(c.kind in _KINDS for c in codes.ALL.values())
