"""The two stateful steps of verification, as small interfaces with in-memory defaults.

Replay: a DPoP proof's ``jti`` may be used once. Revocation: the Authority may take a coupon
back by ``jti``, lineage, subject, tenant or signing key. Services plug in shared stores
(Redis, the Authority's feed); these in-memory versions serve one process.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Protocol, runtime_checkable

from coupon import codes
from coupon.errors import DependencyUnavailable

__all__ = [
    "MemoryReplayStore",
    "MemoryRevocations",
    "ReplayStore",
    "RevocationChecker",
    "RevocationFacts",
]


@runtime_checkable
class ReplayStore(Protocol):
    """Remembers one-time identifiers until they expire."""

    def first_use(self, key: str, *, expires_at: float, now: float) -> bool:
        """Record ``key``; return False if it was already recorded and not yet expired.

        Raises:
            DependencyUnavailable: when the store cannot answer (the caller denies).
        """
        ...


class MemoryReplayStore:
    """A bounded in-process replay store.

    When full of unexpired entries it refuses new ones (``CPN-DEP-002``) rather than forget
    old ones: forgetting would let a replay through.
    """

    def __init__(self, *, capacity: int = 100_000) -> None:
        self._capacity = capacity
        self._seen: dict[str, float] = {}

    def first_use(self, key: str, *, expires_at: float, now: float) -> bool:
        seen = self._seen
        previous = seen.get(key)
        # A proof is acceptable up to and including its expiry second, so it stays
        # remembered through that second too.
        if previous is not None and previous >= now:
            return False
        if len(seen) >= self._capacity:
            self._purge(now)
            if len(seen) >= self._capacity:
                raise DependencyUnavailable(codes.UNAVAILABLE_REPLAY, "replay store is full")
        seen[key] = expires_at
        return True

    def _purge(self, now: float) -> None:
        for key in [k for k, exp in self._seen.items() if exp < now]:
            del self._seen[key]

    def __len__(self) -> int:
        return len(self._seen)


@dataclass(frozen=True, slots=True)
class RevocationFacts:
    """What a revocation can name about a presented coupon (every link of a chain)."""

    jtis: tuple[str, ...]
    lineage: str
    subjects: tuple[str, ...]
    tenant: str
    kid: str
    issued_at: int


@runtime_checkable
class RevocationChecker(Protocol):
    """Answers whether a coupon was revoked."""

    def revoked(self, facts: RevocationFacts, *, now: float) -> str | None:
        """Return the revocation reason, or None if the coupon stands.

        Raises:
            DependencyUnavailable: when the revocation state is unknown or too stale.
        """
        ...


@dataclass
class MemoryRevocations:
    """Revocations held in this process.

    Subject and tenant revocations apply to coupons issued at or before the moment of
    revocation, so a fresh coupon issued afterwards is not caught by an old revocation. A key
    revocation applies to every coupon the key signed: a forger chooses ``iat`` too.
    """

    jtis: dict[str, str] = field(default_factory=dict)
    lineages: dict[str, str] = field(default_factory=dict)
    subjects: dict[str, tuple[int, str]] = field(default_factory=dict)
    tenants: dict[str, tuple[int, str]] = field(default_factory=dict)
    kids: dict[str, tuple[int, str]] = field(default_factory=dict)

    def add(self, kind: str, value: str, *, reason: str, revoked_at: int) -> None:
        """Record one revocation; a later revocation of a subject, tenant or key covers more.

        Raises:
            ValueError: ``kind`` is not one of jti, lineage, subject, tenant, kid.
        """
        if kind == "jti":
            self.jtis.setdefault(value, reason)
        elif kind == "lineage":
            self.lineages.setdefault(value, reason)
        elif kind in ("subject", "tenant", "kid"):
            table = {"subject": self.subjects, "tenant": self.tenants, "kid": self.kids}[kind]
            previous = table.get(value)
            if previous is None or revoked_at > previous[0]:
                table[value] = (revoked_at, reason)
        else:
            raise ValueError(f"unknown revocation kind {kind!r}")

    def revoked(self, facts: RevocationFacts, *, now: float) -> str | None:
        for jti in facts.jtis:
            if jti in self.jtis:
                return f"jti {jti} revoked: {self.jtis[jti]}"
        if facts.lineage in self.lineages:
            return f"lineage {facts.lineage} revoked: {self.lineages[facts.lineage]}"
        for subject in facts.subjects:
            hit = self.subjects.get(subject)
            if hit is not None and facts.issued_at <= hit[0]:
                return f"subject {subject} revoked: {hit[1]}"
        hit = self.tenants.get(facts.tenant)
        if hit is not None and facts.issued_at <= hit[0]:
            return f"tenant {facts.tenant} revoked: {hit[1]}"
        # A revoked key is revoked for every coupon it signed, whatever their iat says:
        # whoever stole the key writes iat too.
        key_hit = self.kids.get(facts.kid)
        if key_hit is not None:
            return f"key {facts.kid} revoked: {key_hit[1]}"
        return None
