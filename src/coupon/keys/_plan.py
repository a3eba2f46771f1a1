"""Key rotation as pure functions: key records and the time in, a list of operations out.

Nothing here reads a clock, a store or a random source. A plan is a short list of
:class:`NewKey` and :class:`SetState` operations, to be applied in order; the
:class:`~coupon.keys.Keyring` applies them to the store.

Invariants (``docs/keys.md``), kept by every plan and restored by :func:`repair`:

- exactly one ``current`` key (the one that signs) and exactly one ``next`` key;
- a key is published (in the JWKS) before it signs, for at least ``publish_lead`` seconds;
- a key that signed at time ``t`` stays published until ``t + max_ttl + leeway (+ grace)``,
  when every coupon it signed has expired, even allowing for clock skew.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Protocol, TypeVar

from coupon import codes
from coupon.errors import Conflict

if TYPE_CHECKING:
    from coupon.storage.base import KeyState

__all__ = [
    "KeyView",
    "NewKey",
    "Operation",
    "SetState",
    "bootstrap",
    "expire",
    "published",
    "repair",
    "rollback",
    "rotate",
    "rotation_ready_at",
    "signing",
]


class KeyView(Protocol):
    """The fields of a stored key that rotation looks at (``KeyRecord`` has them)."""

    @property
    def kid(self) -> str: ...
    @property
    def state(self) -> KeyState: ...
    @property
    def created_at(self) -> int: ...
    @property
    def activated_at(self) -> int | None: ...
    @property
    def retire_after(self) -> int | None: ...


K = TypeVar("K", bound=KeyView)


@dataclass(frozen=True, slots=True)
class NewKey:
    """Generate a key with ``alg`` and store it in ``state`` (``current`` or ``next``)."""

    alg: str
    state: KeyState
    created_at: int
    activated_at: int | None = None


@dataclass(frozen=True, slots=True)
class SetState:
    """Move the key ``kid`` to ``state`` with these timestamps."""

    kid: str
    state: KeyState
    activated_at: int | None
    retire_after: int | None


Operation = NewKey | SetState


def _of(records: Sequence[K], state: KeyState) -> list[K]:
    return [r for r in records if r.state == state]


def _is_published(record: KeyView, now: int) -> bool:
    if record.state in ("next", "current"):
        return True
    # A coupon with exp <= retire_after - leeway is refused from now >= exp + leeway on.
    return (
        record.state == "retiring" and record.retire_after is not None and now < record.retire_after
    )


def _newest_retiring(records: Sequence[K], now: int) -> K | None:
    # The most recently demoted key that has signed (a next key displaced by a rollback never
    # has) and that verifiers still hold. Rotations within one second tie on retire_after;
    # the later activation, then the later creation, then the kid decide.
    live = [
        r for r in _of(records, "retiring") if r.activated_at is not None and _is_published(r, now)
    ]
    return max(
        live,
        key=lambda r: (r.retire_after or 0, r.activated_at or 0, r.created_at, r.kid),
        default=None,
    )


def _demote(record: KeyView, now: int, keep_for: int) -> SetState:
    # Nothing moves straight to retired: a plan made from a stale read may demote a key that
    # another process has made current meanwhile, so every demoted key stays published.
    return SetState(record.kid, "retiring", record.activated_at, now + keep_for)


def published(records: Sequence[K], now: int) -> list[K]:
    """The keys the JWKS lists at ``now``: current, next, then retiring (newest first).

    A retiring key is listed while ``now < retire_after``.
    """
    order = {"current": 0, "next": 1, "retiring": 2}
    keys = [r for r in records if _is_published(r, now)]
    return sorted(keys, key=lambda r: (order[r.state], -(r.retire_after or 0), r.kid))


def signing(records: Sequence[K]) -> K:
    """The single ``current`` key.

    Raises:
        Conflict: there is no current key, or more than one.
    """
    current = _of(records, "current")
    if len(current) != 1:
        kids = ", ".join(r.kid for r in current) or "none"
        raise Conflict(codes.CONFLICT, f"expected exactly one current key, found: {kids}")
    return current[0]


def _single_next(records: Sequence[K]) -> K:
    nexts = _of(records, "next")
    if len(nexts) != 1:
        kids = ", ".join(r.kid for r in nexts) or "none"
        raise Conflict(codes.CONFLICT, f"expected exactly one next key, found: {kids}")
    return nexts[0]


def bootstrap(now: int, alg: str) -> list[Operation]:
    """The plan for an empty store: a ``current`` key and a ``next`` key.

    The first current key signs without a publication lead: no verifier can hold a coupon
    from this issuer yet, and each fetches the JWKS when it first meets an unknown ``kid``.
    """
    return [NewKey(alg, "current", now, activated_at=now), NewKey(alg, "next", now)]


def rotation_ready_at(records: Sequence[K], *, publish_lead: int) -> int:
    """The first time at which :func:`rotate` accepts (the next key's creation + lead).

    Raises:
        Conflict: there is not exactly one next key.
    """
    return _single_next(records).created_at + publish_lead


def rotate(
    records: Sequence[K],
    now: int,
    *,
    alg: str,
    max_ttl: int,
    leeway: int,
    publish_lead: int = 0,
    grace: int = 0,
) -> list[Operation]:
    """Plan a rotation: next becomes current, current becomes retiring, a new next appears.

    Args:
        records: every stored key.
        now: the time of the rotation (seconds).
        alg: the algorithm of the new next key.
        max_ttl: the longest coupon lifetime.
        leeway: the clock-skew tolerance of verifiers.
        publish_lead: how long the next key must have been published before it may sign:
            the lifetime of verifiers' JWKS caches (plus the keyring reload interval). The
            default 0 is for tests.
        grace: extra seconds the old key stays published, for processes that keep signing
            with it until their next reload (the reload interval).

    Raises:
        Conflict: the key states are not one current and one next key, or the next key was
            published less than ``publish_lead`` seconds ago (the message says when).
    """
    current, nxt = signing(records), _single_next(records)
    ready = nxt.created_at + publish_lead
    if now < ready:
        raise Conflict(
            codes.CONFLICT,
            f"next key {nxt.kid!r} has been published for {max(now - nxt.created_at, 0)}s; "
            f"verifiers may not have it before {publish_lead}s: rotation is possible at {ready}",
        )
    return [
        SetState(nxt.kid, "current", now, None),
        _demote(current, now, max_ttl + leeway + grace),
        NewKey(alg, "next", now),
    ]


def rollback(
    records: Sequence[K], now: int, *, max_ttl: int, leeway: int, grace: int = 0
) -> list[Operation]:
    """Plan the inverse of the last rotation: the newest retiring key signs again.

    The most recently demoted key that verifiers still hold becomes current; the current
    key goes back to ``next`` (it signed, so it carries a ``retire_after`` should a later
    plan demote it); the next key made by the rotation becomes retiring.

    Raises:
        Conflict: no retiring key is still published, or the states are inconsistent.
    """
    current, nxt = signing(records), _single_next(records)
    previous = _newest_retiring(records, now)
    if previous is None:
        raise Conflict(codes.CONFLICT, "no retiring key is still published: nothing to roll back")
    keep_for = max_ttl + leeway + grace
    return [
        SetState(previous.kid, "current", now, None),
        SetState(current.kid, "next", None, now + keep_for),
        _demote(nxt, now, keep_for),
    ]


def expire(records: Sequence[K], now: int) -> list[Operation]:
    """Plan the retirement of every retiring key whose ``retire_after`` has passed."""
    return [
        SetState(r.kid, "retired", r.activated_at, r.retire_after)
        for r in _of(records, "retiring")
        if not _is_published(r, now)
    ]


def repair(
    records: Sequence[K], now: int, *, alg: str, max_ttl: int, leeway: int, grace: int = 0
) -> list[Operation]:
    """Plan what restores one current and one next key; empty when nothing is wrong.

    States break when processes race (two start on an empty store, two rotate at once) or
    crash between the writes of a plan. The choices are deterministic, so processes that
    repair the same records write the same result, and every key they demote stays
    published for ``max_ttl + leeway + grace`` more seconds.
    """
    if not records:
        return bootstrap(now, alg)
    ops: list[Operation] = []
    keep_for = max_ttl + leeway + grace
    current = _of(records, "current")
    nexts = sorted(_of(records, "next"), key=lambda r: (r.created_at, r.kid))
    if len(current) > 1:  # the latest activation wins
        keep = max(current, key=lambda r: (r.activated_at or 0, r.created_at, r.kid))
        ops += [_demote(r, now, keep_for) for r in current if r is not keep]
    elif not current:
        previous = _newest_retiring(records, now)
        if previous is not None:
            ops.append(SetState(previous.kid, "current", now, None))
        elif nexts:  # published, if perhaps not for long: better than never signing again
            ops.append(SetState(nexts[0].kid, "current", now, None))
            nexts = nexts[1:]
        else:
            ops.append(NewKey(alg, "current", now, activated_at=now))
    ops += [_demote(r, now, keep_for) for r in nexts[1:]]  # the oldest next key stays
    if not nexts:
        ops.append(NewKey(alg, "next", now))
    return ops
