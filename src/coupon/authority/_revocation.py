"""The revocation view: every revocation this process knows of, and how fresh that knowledge is.

Each Authority process (and, later, each SDK verifier) keeps one :class:`RevocationView` and
feeds it from the revocation feed (see :mod:`coupon.authority._sync`). The view answers the
token core's :class:`~coupon.token.RevocationChecker` question on the verify hot path with a
handful of dictionary lookups, and fails closed when it has not been confirmed current for
longer than ``max_staleness``.

Records are applied idempotently. Revocations only ever add denials, so a record is enforced
as soon as it arrives, even past a gap in ``seq``; the gap only holds back :attr:`cursor`,
the highest ``seq`` below which nothing is missing, which is where the next pull starts.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable
from typing import Final

from coupon import codes
from coupon.errors import DependencyUnavailable
from coupon.storage.base import RevocationRecord
from coupon.token import MemoryRevocations, RevocationFacts

__all__ = ["KINDS", "RevocationView"]

KINDS: Final = frozenset({"jti", "lineage", "subject", "tenant", "kid"})


class RevocationView:
    """The in-memory revocation state of one process; a ``RevocationChecker``.

    Args:
        max_staleness: seconds after the last confirmation (:meth:`mark_fresh`) beyond which
            :meth:`revoked` raises instead of answering. A view never confirmed is stale.

    Exactly like :class:`coupon.token.MemoryRevocations`: subject and tenant revocations hit
    coupons issued at or before the revocation (``issued_at <= revoked_at``); a key revocation
    hits every coupon the key signed, whatever its ``iat`` claims.
    """

    def __init__(self, *, max_staleness: float) -> None:
        if not max_staleness > 0:
            raise ValueError("max_staleness must be positive")
        self.max_staleness = max_staleness
        self._table = MemoryRevocations()  # the matching rules live in the token core
        self._cursor = 0
        self._above: set[int] = set()  # seqs applied above the cursor (there is a gap below)
        self._highest = 0
        self._fresh_at: float | None = None
        self._latest_revoked_at: int | None = None
        self._listeners: list[Callable[[], None]] = []

    # -- the feed --------------------------------------------------------------------------------

    @property
    def cursor(self) -> int:
        """The highest ``seq`` such that every record up to it has been applied (or skipped)."""
        return self._cursor

    @property
    def highest(self) -> int:
        """The highest ``seq`` applied so far (above :attr:`cursor` when there is a gap)."""
        return self._highest

    @property
    def has_gap(self) -> bool:
        """True when a record past :attr:`cursor` + 1 arrived before the ones between."""
        return bool(self._above)

    @property
    def fresh_at(self) -> float | None:
        """When the view was last confirmed complete, or None if never."""
        return self._fresh_at

    @property
    def latest_revoked_at(self) -> int | None:
        """``revoked_at`` of the newest revocation applied (for the freshness metric)."""
        return self._latest_revoked_at

    def apply(self, records: Iterable[RevocationRecord]) -> int:
        """Apply stored revocations; return how many ``seq`` values were new.

        Applying a record twice changes nothing. Records may arrive in any order; each is
        enforced at once, and :attr:`cursor` advances over every contiguous ``seq``.

        Raises:
            ValueError: a record has no ``seq`` (it was never stored) or an unknown kind.
        """
        new = 0
        for record in sorted(records, key=lambda r: r.seq):
            if record.seq <= 0:
                raise ValueError("only stored revocations (seq > 0) can be applied")
            self._enforce(record)
            if record.seq > self._cursor and record.seq not in self._above:
                new += 1
                self._above.add(record.seq)
                self._highest = max(self._highest, record.seq)
        if new:
            self._advance()
            self._notify()
        return new

    def known(self, seq: int) -> bool:
        """True if record ``seq`` has been applied (or skipped as a gap that never filled)."""
        return seq <= self._cursor or seq in self._above

    def gaps(self) -> list[tuple[int, int]]:
        """The missing ``seq`` ranges between :attr:`cursor` and :attr:`highest`, inclusive."""
        result = []
        low = self._cursor + 1
        for seq in sorted(self._above):
            if seq > low:
                result.append((low, seq - 1))
            low = seq + 1
        return result

    def skip(self, through: int) -> None:
        """Declare every ``seq`` up to ``through`` settled (a gap that will never fill).

        A record from a skipped range that turns up later is still enforced by :meth:`apply`.
        """
        if through > self._cursor:
            self._cursor = through
            self._above = {seq for seq in self._above if seq > through}
            self._highest = max(self._highest, through)
            self._advance()
            self._notify()

    def mark_fresh(self, at: float) -> None:
        """Record that at time ``at`` the view held every revocation stored by then."""
        if self._fresh_at is None or at > self._fresh_at:
            self._fresh_at = at

    def staleness(self, now: float) -> float:
        """Seconds since the view was last confirmed current (``inf`` if never)."""
        if self._fresh_at is None:
            return math.inf
        return max(0.0, now - self._fresh_at)

    def add_listener(self, listener: Callable[[], None]) -> None:
        """Call ``listener()`` whenever :attr:`cursor` or the applied set changes."""
        self._listeners.append(listener)

    def remove_listener(self, listener: Callable[[], None]) -> None:
        """Stop calling ``listener``."""
        self._listeners.remove(listener)

    # -- the hot path ----------------------------------------------------------------------------

    def revoked(self, facts: RevocationFacts, *, now: float) -> str | None:
        """Return why the coupon is revoked, or None if it stands.

        A known revocation is reported even by a stale view (the answer is a denial either
        way, and the precise one is more useful).

        Raises:
            DependencyUnavailable: ``CPN-DEP-001`` when no revocation applies and the view was
                not confirmed current within ``max_staleness`` (fail closed).
        """
        reason = self._table.revoked(facts, now=now)
        if reason is not None:
            return reason
        fresh_at = self._fresh_at
        if fresh_at is None:
            raise DependencyUnavailable(
                codes.UNAVAILABLE_REVOCATION, "revocation state not yet synchronised"
            )
        age = now - fresh_at
        if age > self.max_staleness:
            raise DependencyUnavailable(
                codes.UNAVAILABLE_REVOCATION,
                f"revocation state is {age:.1f}s old (bound {self.max_staleness:g}s)",
            )
        return None

    # -- internals -------------------------------------------------------------------------------

    def _enforce(self, record: RevocationRecord) -> None:
        self._table.add(
            record.kind, record.value, reason=record.reason, revoked_at=record.revoked_at
        )
        latest = self._latest_revoked_at
        if latest is None or record.revoked_at > latest:
            self._latest_revoked_at = record.revoked_at

    def _advance(self) -> None:
        above = self._above
        cursor = self._cursor
        while cursor + 1 in above:
            cursor += 1
            above.discard(cursor)
        self._cursor = cursor

    def _notify(self) -> None:
        for listener in list(self._listeners):
            listener()
