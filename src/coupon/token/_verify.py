"""The verifier: one fail-closed pipeline from bytes to a decision.

Steps, in order (each denial names its step and a stable code)::

    parse      size cap, chain split, strict base64url/JSON, header rules, claim types
    signature  root signed by a trusted key found by kid; the key decides the algorithm
    chain      each offline link signed by the key its parent binds, names it, narrows it
    time       lifetime bounds, then nbf/exp/iat against the injected clock with leeway
    audience   the verifier's audience is in aud; the root issuer is trusted
    scope      requested resource, action, purpose and tenant are granted
    binding    DPoP proof for cnf.jkt (RFC 9449), client certificate for cnf.x5t#S256
    replay     the DPoP proof's jti is used once
    revocation jti / lineage / subject / tenant / key not revoked

The first three steps depend only on the token bytes and the key set, so their result is
cached: a repeat presentation costs a dictionary lookup plus the cheap checks.
"""

from __future__ import annotations

import contextlib
import hmac
import time
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from typing import Final, Protocol

from coupon import codes
from coupon.codes import ErrorCode
from coupon.errors import (
    CouponError,
    CouponRevoked,
    DependencyUnavailable,
    InsufficientScope,
    InvalidChain,
    InvalidCoupon,
    InvalidProof,
    InvalidSignature,
    ProofReplayed,
)

from ._chain import Link, check_links, parse_chain
from ._claims import Claims
from ._dpop import DpopProof, NonceChecker, verify_dpop_proof
from ._keys import KeySet
from ._mint import DEFAULT_MAX_DEPTH
from ._scope import parse_purpose, parse_resource, purpose_covers
from ._stores import MemoryReplayStore, ReplayStore, RevocationChecker, RevocationFacts

__all__ = ["AsyncReplayStore", "Decision", "Request", "Verified", "Verifier"]

DEFAULT_MAX_SIZE: Final = 8192
DEFAULT_MAX_TTL: Final = 3600
DEFAULT_LEEWAY: Final = 30


@dataclass(frozen=True, slots=True)
class Request:
    """What the relying service asks: who it is, what is being done, and the proof.

    Args:
        audience: this service's audience identifier (required: fail closed).
        resource: the concrete resource acted on (``orders/123``), if the route names one.
        action: the action performed (``read``).
        purpose: the purpose the caller declared, checked against the coupon's.
        tenant: the tenant the request is for.
        method, uri: the HTTP method and full URI, for the DPoP proof.
        dpop: the ``DPoP`` header value.
        certificate: ``x5t#S256`` of the client certificate presented over mTLS.
    """

    audience: str
    resource: str | None = None
    action: str | None = None
    purpose: str | None = None
    tenant: str | None = None
    method: str | None = None
    uri: str | None = None
    dpop: str | None = None
    certificate: str | None = None


@dataclass(frozen=True, slots=True)
class Verified:
    """A verified coupon: the leaf's claims, the whole chain and how long each step took."""

    claims: Claims
    chain: tuple[Claims, ...]
    kid: str
    proof: DpopProof | None
    timings: dict[str, float]
    cached: bool


@dataclass(frozen=True, slots=True)
class Decision:
    """The outcome of :meth:`Verifier.decide`: allowed, or the error that denied it."""

    allowed: bool
    verified: Verified | None
    error: CouponError | None
    timings: dict[str, float] = field(default_factory=dict)


class AsyncReplayStore(Protocol):
    """A replay store shared between processes (e.g. Redis ``SET NX``)."""

    async def first_use(self, key: str, *, expires_at: float, now: float) -> bool:
        """Record ``key``; False if it was already recorded and not yet expired."""
        ...


class _Run:
    """Times the steps of one verification and names the step a denial came from."""

    __slots__ = ("_name", "_start", "_t0", "timings")

    def __init__(self, timings: dict[str, float]) -> None:
        self.timings = timings
        self._name = "parse"
        self._start = self._t0 = time.perf_counter_ns()

    def step(self, name: str) -> None:
        # Steps that share a timer entry (time, audience, scope) are cheap; the cost of a
        # step is charged to the entry of the step that was running.
        now = time.perf_counter_ns()
        if self._t0 != now:
            self.timings[self._name] = self.timings.get(self._name, 0.0) + (now - self._t0) / 1000
        self._name = name
        self._t0 = now

    def failed(self, exc: CouponError) -> CouponError:
        if exc.step is None:
            exc.step = self._name
        self._close()
        exc.timings = self.timings
        return exc

    def done(self, verified: Verified) -> Verified:
        self._close()
        return verified

    def _close(self) -> None:
        self.step("")
        self.timings.pop("", None)
        self.timings["total"] = (time.perf_counter_ns() - self._start) / 1000


@dataclass(frozen=True, slots=True)
class _Checked:
    links: tuple[Link, ...]
    claims: tuple[Claims, ...]
    kid: str
    facts: RevocationFacts


class Verifier:
    """Verifies coupons against a trusted :class:`KeySet`.

    Args:
        keys: the issuer keys trusted for root coupons.
        issuers: when given, the root ``iss`` must be one of these.
        max_ttl: the longest lifetime (``exp - iat``) accepted, in seconds.
        leeway: clock-skew tolerance in seconds for ``nbf``/``exp``/``iat`` and DPoP ``iat``.
        max_size: the longest token accepted, in characters.
        max_depth: the deepest delegation accepted.
        replay: where DPoP ``jti`` values are remembered (in-memory by default).
        revocations: the revocation source; None means no revocation step.
        nonces: a DPoP server-nonce checker, when the service issues nonces.
        dpop_algorithms: algorithms accepted for DPoP proofs.
        dpop_max_age: how old a DPoP proof may be, in seconds.
        cache_size: how many verified token signatures to remember.
    """

    def __init__(
        self,
        keys: KeySet,
        *,
        issuers: Iterable[str] | None = None,
        max_ttl: int = DEFAULT_MAX_TTL,
        leeway: int = DEFAULT_LEEWAY,
        max_size: int = DEFAULT_MAX_SIZE,
        max_depth: int = DEFAULT_MAX_DEPTH,
        replay: ReplayStore | None = None,
        revocations: RevocationChecker | None = None,
        nonces: NonceChecker | None = None,
        dpop_algorithms: frozenset[str] = frozenset({"EdDSA", "ES256"}),
        dpop_max_age: int = 60,
        cache_size: int = 10_000,
    ) -> None:
        self._keys = keys
        self._issuers = frozenset(issuers) if issuers is not None else None
        self._max_ttl = max_ttl
        self._leeway = leeway
        self._max_size = max_size
        self._max_depth = max_depth
        self._replay = replay if replay is not None else MemoryReplayStore()
        self._revocations = revocations
        self._nonces = nonces
        self._dpop_algorithms = dpop_algorithms
        self._dpop_max_age = dpop_max_age
        self._cache: dict[str, _Checked] = {}
        self._cache_size = cache_size

    @property
    def keys(self) -> KeySet:
        """The trusted keys. Fixed for the verifier's life: the signature cache relies on it,
        so a key change means a new :class:`Verifier`."""
        return self._keys

    # -- public API -----------------------------------------------------------------------------

    def verify(self, token: str, request: Request, *, now: float | None = None) -> Verified:
        """Verify ``token`` for ``request`` at ``now`` (the clock when left out).

        Returns:
            The verified claims and step timings.

        Raises:
            CouponError: a subclass with the stable code of the first failing step.
        """
        moment = time.time() if now is None else now
        run = _Run({})
        try:
            verified, checked = self._stateless(run, token, request, moment)
            if verified.proof is not None:
                run.step("replay")
                key, expires = self._replay_key(verified.proof)
                with _adapter_failure(codes.UNAVAILABLE_REPLAY):
                    first = self._replay.first_use(key, expires_at=expires, now=moment)
                _require_first_use(first, verified.proof)
            self._check_revocation(run, checked.facts, moment)
        except CouponError as exc:
            raise run.failed(exc) from None
        return run.done(verified)

    async def verify_async(
        self,
        token: str,
        request: Request,
        *,
        replay: AsyncReplayStore,
        now: float | None = None,
    ) -> Verified:
        """:meth:`verify` with a shared asynchronous replay store (e.g. Redis)."""
        moment = time.time() if now is None else now
        run = _Run({})
        try:
            verified, checked = self._stateless(run, token, request, moment)
            if verified.proof is not None:
                run.step("replay")
                key, expires = self._replay_key(verified.proof)
                with _adapter_failure(codes.UNAVAILABLE_REPLAY):
                    first = await replay.first_use(key, expires_at=expires, now=moment)
                _require_first_use(first, verified.proof)
            self._check_revocation(run, checked.facts, moment)
        except CouponError as exc:
            raise run.failed(exc) from None
        return run.done(verified)

    def introspect(self, token: str, *, now: float | None = None) -> Verified:
        """Check what a token *is* without a request: signature, chain, time and revocation.

        For RFC 7662 introspection: no audience, scope, binding or replay step, since the
        caller asks about the token, not about a use of it.
        """
        moment = time.time() if now is None else now
        run = _Run({})
        try:
            checked = self._checked(run, token)
            run.step("time")
            self._check_time(checked.claims, moment)
            self._check_revocation(run, checked.facts, moment)
        except CouponError as exc:
            raise run.failed(exc) from None
        chain = checked.claims
        return run.done(Verified(chain[-1], chain, checked.kid, None, run.timings, False))

    def cached_claims(self, token: str) -> Claims | None:
        """The leaf claims of ``token`` if this verifier already checked its signatures.

        Only parse, signature and chain are behind this answer: time, scope, binding and
        revocation are not. Useful to key rate limits without parsing twice.
        """
        checked = self._cache.get(token)
        return checked.claims[-1] if checked is not None else None

    def decide(self, token: str, request: Request, *, now: float | None = None) -> Decision:
        """Like :meth:`verify`, but return the denial with the timings instead of raising."""
        try:
            verified = self.verify(token, request, now=now)
        except CouponError as exc:
            return Decision(False, None, exc, exc.timings or {})
        return Decision(True, verified, None, verified.timings)

    # -- the pipeline ---------------------------------------------------------------------------

    def _stateless(
        self, run: _Run, token: str, request: Request, now: float
    ) -> tuple[Verified, _Checked]:
        """Every step that needs no shared state: parse through binding."""
        cached = token in self._cache
        checked = self._checked(run, token)
        chain = checked.claims
        leaf = chain[-1]
        run.step("time")
        self._check_time(chain, now)
        run.step("audience")
        self._check_audience(chain[0], leaf, request)
        run.step("scope")
        self._check_scope(leaf, request)
        run.step("binding")
        proof = self._check_binding(token, leaf, request, now)
        return Verified(leaf, chain, checked.kid, proof, run.timings, cached), checked

    def _checked(self, run: _Run, token: str) -> _Checked:
        """Parse, signature and chain: from the cache when these bytes were checked before."""
        checked = self._cache.get(token)
        if checked is not None:
            run.step("cache")
            return checked
        run.step("parse")
        links = parse_chain(token, max_size=self._max_size, max_depth=self._max_depth)
        run.step("signature")
        kid = self._check_root(links[0])
        run.step("chain")
        check_links(links, max_depth=self._max_depth)
        chain = tuple(link.claims for link in links)
        checked = _Checked(tuple(links), chain, kid, _facts(chain, kid))
        self._remember(token, checked)
        return checked

    def _replay_key(self, proof: DpopProof) -> tuple[str, float]:
        return f"{proof.jkt}:{proof.jti}", proof.iat + self._dpop_max_age + self._leeway

    def _check_revocation(self, run: _Run, facts: RevocationFacts, now: float) -> None:
        if self._revocations is None:
            return
        run.step("revocation")
        with _adapter_failure(codes.UNAVAILABLE_REVOCATION):
            reason = self._revocations.revoked(facts, now=now)
        if reason is not None:
            raise CouponRevoked(codes.REVOKED, reason)

    def _remember(self, token: str, checked: _Checked) -> None:
        cache = self._cache
        if len(cache) >= self._cache_size:
            # FIFO eviction: cheap, and a verified entry never becomes wrong, only old.
            del cache[next(iter(cache))]
        cache[token] = checked

    def _check_root(self, root: Link) -> str:
        kid: str = root.header["kid"]
        key = self._keys.get(kid)
        if key is None:
            raise InvalidCoupon(codes.HEADER_KID, f"no trusted key with kid {kid!r}")
        if root.header["alg"] != key.alg:
            raise InvalidCoupon(
                codes.HEADER_ALG_KEY, f"header alg {root.header['alg']} but key {kid} is {key.alg}"
            )
        if not key.verify(root.jws.signature, root.jws.signing_input):
            raise InvalidSignature(codes.SIGNATURE, f"signature does not verify with key {kid}")
        if root.claims.dep > self._max_depth:
            raise InvalidChain(
                codes.CHAIN_DEPTH, f"depth {root.claims.dep} exceeds {self._max_depth}"
            )
        return kid

    def _check_time(self, chain: tuple[Claims, ...], now: float) -> None:
        leeway = self._leeway
        for c in chain:
            if not c.iat <= c.nbf < c.exp:
                raise InvalidCoupon(codes.TIME_ORDER, f"iat {c.iat}, nbf {c.nbf}, exp {c.exp}")
            if c.exp - c.iat > self._max_ttl:
                raise InvalidCoupon(
                    codes.TIME_TTL, f"lifetime {c.exp - c.iat}s exceeds {self._max_ttl}s"
                )
            if now >= c.exp + leeway:
                raise InvalidCoupon(codes.TIME_EXPIRED, f"expired at {c.exp}, now {int(now)}")
            if c.iat > now + leeway:
                raise InvalidCoupon(codes.TIME_ISSUED_FUTURE, f"issued at {c.iat}, now {int(now)}")
            if now < c.nbf - leeway:
                raise InvalidCoupon(codes.TIME_NOT_YET, f"valid from {c.nbf}, now {int(now)}")

    def _check_audience(self, root: Claims, leaf: Claims, request: Request) -> None:
        if request.audience not in leaf.aud:
            raise InvalidCoupon(
                codes.AUDIENCE, f"audience {request.audience!r} not in {list(leaf.aud)}"
            )
        if self._issuers is not None and root.iss not in self._issuers:
            raise InvalidCoupon(codes.ISSUER, f"issuer {root.iss!r} is not trusted")

    @staticmethod
    def _check_scope(leaf: Claims, request: Request) -> None:
        if request.tenant is not None and request.tenant != leaf.tid:
            raise InsufficientScope(
                codes.SCOPE_TENANT, f"tenant {request.tenant!r} is not {leaf.tid!r}"
            )
        if request.resource is not None and not leaf.res.matches(parse_resource(request.resource)):
            raise InsufficientScope(
                codes.SCOPE_RESOURCE, f"resource {request.resource!r} not granted by {leaf.res}"
            )
        if request.action is not None and request.action not in leaf.act:
            raise InsufficientScope(
                codes.SCOPE_ACTION, f"action {request.action!r} not in {sorted(leaf.act)}"
            )
        if request.purpose is not None and not purpose_covers(
            leaf.pur, parse_purpose(request.purpose)
        ):
            raise InsufficientScope(
                codes.SCOPE_PURPOSE, f"purpose {request.purpose!r} not within {leaf.pur!r}"
            )

    def _check_binding(
        self, token: str, leaf: Claims, request: Request, now: float
    ) -> DpopProof | None:
        if leaf.cnf.x5t_s256 is not None:
            presented = request.certificate
            if presented is None or not hmac.compare_digest(
                presented.encode(), leaf.cnf.x5t_s256.encode()
            ):
                raise InvalidProof(
                    codes.POP_CERT_BINDING, "no client certificate, or not the bound one"
                )
            return None
        if request.dpop is None:
            raise InvalidProof(
                codes.POP_MISSING, "this coupon is bound to a key: a DPoP proof is required"
            )
        if request.method is None or request.uri is None:
            raise TypeError("a DPoP proof needs request.method and request.uri")
        try:
            proof = self._verify_proof(token, request, now)
        except CouponError as exc:
            exc.step = "binding"  # the DPoP check's own sub-step stays in the reason
            raise
        if proof.jkt != leaf.cnf.jkt:
            raise InvalidProof(codes.POP_KEY_BINDING, "the DPoP proof is signed by another key")
        return proof

    def _verify_proof(self, token: str, request: Request, now: float) -> DpopProof:
        assert request.dpop is not None
        assert request.method is not None
        assert request.uri is not None
        return verify_dpop_proof(
            request.dpop,
            method=request.method,
            uri=request.uri,
            now=now,
            access_token=token,
            nonces=self._nonces,
            algorithms=self._dpop_algorithms,
            max_age=self._dpop_max_age,
            leeway=self._leeway,
        )


def _facts(chain: tuple[Claims, ...], kid: str) -> RevocationFacts:
    """What a revocation can name about a chain; fixed per token, so computed once."""
    return RevocationFacts(
        jtis=tuple(c.jti for c in chain),
        lineage=chain[0].lin,
        subjects=tuple(dict.fromkeys(c.sub for c in chain)),
        tenant=chain[0].tid,
        kid=kid,
        issued_at=chain[0].iat,
    )


@contextlib.contextmanager
def _adapter_failure(code: ErrorCode) -> Iterator[None]:
    """A store adapter's own failure (not a ``CouponError``) is a denial, never an allow."""
    try:
        yield
    except CouponError:
        raise
    except Exception as exc:
        raise DependencyUnavailable(code, f"check failed: {type(exc).__name__}") from exc


def _require_first_use(first: bool, proof: DpopProof) -> None:
    if not first:
        raise ProofReplayed(codes.REPLAY, f"DPoP proof {proof.jti} was already used")
