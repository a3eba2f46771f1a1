"""Rotation plans (``coupon.keys._plan``): unit cases and properties over random histories."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Sequence

import pytest
from hypothesis import given
from hypothesis import strategies as st

from coupon.errors import Conflict
from coupon.keys import (
    NewKey,
    Operation,
    SetState,
    bootstrap,
    expire,
    published,
    repair,
    rollback,
    rotate,
    rotation_ready_at,
    signing,
)
from coupon.storage.base import KeyRecord

MAX_TTL, LEEWAY = 3600, 30
KEEP = MAX_TTL + LEEWAY
T0 = 1_700_000_000


class Keys:
    """A store in a list: applies operations the way the Keyring does, kids k1, k2, ..."""

    def __init__(self) -> None:
        self.records: list[KeyRecord] = []
        self.made = 0

    def apply(self, ops: Sequence[Operation]) -> None:
        for op in ops:
            self.apply_one(op)

    def apply_one(self, op: Operation) -> None:
        if isinstance(op, NewKey):
            self.made += 1
            self.records.append(
                KeyRecord(
                    kid=f"k{self.made}",
                    alg=op.alg,
                    state=op.state,
                    public_jwk={},
                    sealed_private=None,
                    created_at=op.created_at,
                    activated_at=op.activated_at,
                )
            )
            return
        self.records = [
            dataclasses.replace(
                r, state=op.state, activated_at=op.activated_at, retire_after=op.retire_after
            )
            if r.kid == op.kid
            else r
            for r in self.records
        ]

    def kid(self, state: str) -> list[str]:
        return [r.kid for r in self.records if r.state == state]

    def get(self, kid: str) -> KeyRecord:
        return next(r for r in self.records if r.kid == kid)


def booted(now: int = T0) -> Keys:
    keys = Keys()
    keys.apply(bootstrap(now, "EdDSA"))
    return keys


def do_rotate(keys: Keys, now: int, **kw: int) -> None:
    keys.apply(rotate(keys.records, now, alg="EdDSA", max_ttl=MAX_TTL, leeway=LEEWAY, **kw))


def do_rollback(keys: Keys, now: int) -> None:
    keys.apply(rollback(keys.records, now, max_ttl=MAX_TTL, leeway=LEEWAY))


def do_repair(keys: Keys, now: int) -> list[Operation]:
    ops = repair(keys.records, now, alg="EdDSA", max_ttl=MAX_TTL, leeway=LEEWAY)
    keys.apply(ops)
    return ops


def kids(records: Sequence[KeyRecord]) -> list[str]:
    return [r.kid for r in records]


class TestBootstrap:
    def test_current_and_next(self) -> None:
        """An empty store gets one current key (active at once) and one next key."""
        keys = booted()
        assert keys.kid("current") == ["k1"]
        assert keys.kid("next") == ["k2"]
        assert keys.get("k1").activated_at == T0
        assert keys.get("k2").activated_at is None

    def test_is_the_repair_of_nothing(self) -> None:
        """Repairing an empty store is the bootstrap plan."""
        assert repair([], T0, alg="ES256", max_ttl=1, leeway=0) == bootstrap(T0, "ES256")


class TestRotate:
    def test_moves_every_key_one_step(self) -> None:
        """Next signs, current retires after max_ttl + leeway, and a new next appears."""
        keys = booted()
        do_rotate(keys, T0 + 100)
        assert keys.kid("current") == ["k2"]
        assert keys.get("k2").activated_at == T0 + 100
        old = keys.get("k1")
        assert (old.state, old.retire_after) == ("retiring", T0 + 100 + KEEP)
        assert keys.kid("next") == ["k3"]
        assert keys.get("k3").created_at == T0 + 100

    def test_grace_extends_retirement(self) -> None:
        """The grace period is added to the old key's retire_after."""
        keys = booted()
        do_rotate(keys, T0 + 100, grace=5)
        assert keys.get("k1").retire_after == T0 + 100 + KEEP + 5

    def test_refused_before_publish_lead(self) -> None:
        """A next key published less than publish_lead seconds ago may not sign yet."""
        keys = booted()
        assert rotation_ready_at(keys.records, publish_lead=300) == T0 + 300
        with pytest.raises(Conflict, match=f"rotation is possible at {T0 + 300}"):
            do_rotate(keys, T0 + 299, publish_lead=300)
        do_rotate(keys, T0 + 300, publish_lead=300)
        assert keys.kid("current") == ["k2"]

    def test_refused_without_one_next_key(self) -> None:
        """Rotation needs exactly one next key."""
        keys = booted()
        keys.apply([SetState("k2", "retired", None, None)])
        with pytest.raises(Conflict, match="exactly one next key, found: none"):
            do_rotate(keys, T0)

    def test_refused_with_two_current_keys(self) -> None:
        """Rotation needs exactly one current key."""
        keys = booted()
        keys.apply([SetState("k2", "current", T0, None)])
        with pytest.raises(Conflict, match="found: k1, k2"):
            do_rotate(keys, T0)


class TestExpire:
    def test_retiring_key_published_until_retire_after(self) -> None:
        """A retiring key is published while now < retire_after, then expire retires it."""
        keys = booted()
        do_rotate(keys, T0)
        deadline = T0 + KEEP
        assert "k1" in kids(published(keys.records, deadline - 1))
        assert expire(keys.records, deadline - 1) == []
        assert "k1" not in kids(published(keys.records, deadline))
        keys.apply(expire(keys.records, deadline))
        assert keys.get("k1").state == "retired"
        assert keys.get("k1").retire_after == deadline

    def test_published_order(self) -> None:
        """The JWKS order is current, next, then retiring keys newest first."""
        keys = booted()
        do_rotate(keys, T0)
        do_rotate(keys, T0 + 10)
        assert kids(published(keys.records, T0 + 10)) == ["k3", "k4", "k2", "k1"]


class TestRollback:
    def test_inverts_a_rotation(self) -> None:
        """The previous key signs again; the rolled-back key waits as next, still published."""
        keys = booted()
        do_rotate(keys, T0 + 100)
        do_rollback(keys, T0 + 200)
        assert keys.kid("current") == ["k1"]
        assert keys.get("k1").activated_at == T0 + 200
        assert keys.get("k1").retire_after is None
        assert keys.kid("next") == ["k2"]
        assert keys.get("k2").retire_after == T0 + 200 + KEEP
        assert keys.get("k3").state == "retiring"
        assert set(kids(published(keys.records, T0 + 200))) == {"k1", "k2", "k3"}

    def test_twice_goes_back_twice(self) -> None:
        """Two rollbacks undo two rotations, newest first."""
        keys = booted()
        do_rotate(keys, T0 + 10)
        do_rotate(keys, T0 + 20)
        do_rollback(keys, T0 + 30)
        assert keys.kid("current") == ["k2"]
        do_rollback(keys, T0 + 40)
        assert keys.kid("current") == ["k1"]
        assert len(keys.kid("next")) == 1

    def test_same_second_rotations(self) -> None:
        """Rotations within one second still roll back to the most recent key."""
        keys = booted()
        do_rotate(keys, T0 + 5)
        do_rotate(keys, T0 + 5)
        do_rollback(keys, T0 + 5)
        assert keys.kid("current") == ["k2"]

    def test_refused_without_retiring_key(self) -> None:
        """There is nothing to roll back to before the first rotation."""
        with pytest.raises(Conflict, match="nothing to roll back"):
            do_rollback(booted(), T0)

    def test_refused_once_previous_key_unpublished(self) -> None:
        """A retiring key past retire_after is gone from verifiers: it may not sign again."""
        keys = booted()
        do_rotate(keys, T0)
        with pytest.raises(Conflict, match="nothing to roll back"):
            do_rollback(keys, T0 + KEEP)


class TestSigning:
    def test_the_current_key(self) -> None:
        """The signing key is the one current key."""
        assert signing(booted().records).kid == "k1"

    def test_no_current_key(self) -> None:
        """Without a current key there is nothing to sign with."""
        with pytest.raises(Conflict, match="found: none"):
            signing([])


class TestRepair:
    def test_consistent_states_need_nothing(self) -> None:
        """One current and one next key: no operations."""
        keys = booted()
        do_rotate(keys, T0 + 1)
        assert do_repair(keys, T0 + 2) == []

    def test_two_current_keys(self) -> None:
        """Of two current keys the latest activated stays; the other stays published."""
        keys = booted()
        keys.apply([SetState("k2", "current", T0 + 5, None), NewKey("EdDSA", "next", T0 + 5)])
        do_repair(keys, T0 + 6)
        assert keys.kid("current") == ["k2"]
        assert keys.get("k1").retire_after == T0 + 6 + KEEP

    def test_no_current_key_takes_the_newest_retiring(self) -> None:
        """A store left without a current key goes back to the newest published retiring key."""
        keys = booted()
        do_rotate(keys, T0 + 1)
        keys.apply([SetState("k2", "retiring", T0 + 1, T0 + 2 * KEEP)])
        do_repair(keys, T0 + 2)
        assert keys.kid("current") == ["k2"]
        assert keys.kid("next") == ["k3"]

    def test_no_current_key_takes_the_next_key(self) -> None:
        """Without any published retiring key, the next key signs and a new next appears."""
        keys = booted()
        keys.apply([SetState("k1", "retired", T0, None)])
        do_repair(keys, T0 + 2)
        assert keys.kid("current") == ["k2"]
        assert keys.kid("next") == ["k3"]

    def test_only_retired_keys(self) -> None:
        """A store of retired keys gets a fresh current and next key."""
        keys = booted()
        keys.apply([SetState(k, "retired", None, None) for k in ("k1", "k2")])
        do_repair(keys, T0)
        assert (keys.kid("current"), keys.kid("next")) == (["k3"], ["k4"])

    def test_two_next_keys(self) -> None:
        """Of two next keys the oldest stays; the other becomes retiring, still published."""
        keys = booted()
        keys.apply([NewKey("EdDSA", "next", T0 + 3)])
        do_repair(keys, T0 + 4)
        assert keys.kid("next") == ["k2"]
        assert keys.get("k3").state == "retiring"

    def test_missing_next_key(self) -> None:
        """A crash after promoting the next key is completed with a new next key."""
        keys = booted()
        keys.apply([SetState("k2", "current", T0, None), SetState("k1", "retiring", T0, T0 + 9)])
        do_repair(keys, T0 + 1)
        assert keys.kid("next") == ["k3"]
        assert keys.kid("current") == ["k2"]


# -- properties ---------------------------------------------------------------------------------

ACTIONS = ("rotate", "rollback", "expire")


def plan_for(action: str, records: Sequence[KeyRecord], now: int, lead: int) -> list[Operation]:
    """The plan ``action`` makes from ``records``, or none when the plan is refused."""
    plans: dict[str, Callable[[], list[Operation]]] = {
        "rotate": lambda: rotate(
            records, now, alg="EdDSA", max_ttl=MAX_TTL, leeway=LEEWAY, publish_lead=lead
        ),
        "rollback": lambda: rollback(records, now, max_ttl=MAX_TTL, leeway=LEEWAY),
        "expire": lambda: expire(records, now),
    }
    try:
        return plans[action]()
    except Conflict:
        return []


class History:
    """Random histories, checking the safety rules at every instant."""

    def __init__(self, lead: int) -> None:
        self.keys = booted()
        self.now = T0
        self.lead = lead
        self.last_signed: dict[str, int] = {}
        self.first_published: dict[str, int] = {}
        self.dropped: set[str] = set()
        self.observe()

    def observe(self) -> None:
        """Every current key signs now; check that each signer is still published."""
        for kid in self.keys.kid("current"):
            self.last_signed[kid] = self.now
        shown = set(kids(published(self.keys.records, self.now)))
        for kid in shown:
            self.first_published.setdefault(kid, self.now)
        self.dropped |= set(self.first_published) - shown
        for kid, signed_at in self.last_signed.items():
            if self.now < signed_at + KEEP:
                assert kid in shown, f"{kid} signed at {signed_at}, unpublished at {self.now}"
                # Unless a later plan changes them, these records must keep it published
                # until the last of its coupons is refused everywhere.
                last = published(self.keys.records, signed_at + KEEP - 1)
                assert kid in kids(last), f"{kid} signed at {signed_at}, drops out too soon"

    def check_consistent(self) -> None:
        assert len(self.keys.kid("current")) == 1
        assert len(self.keys.kid("next")) == 1
        assert do_repair(self.keys, self.now) == []

    def step(self, action: str, dt: int) -> None:
        self.now += dt
        self.observe()
        before = set(self.keys.kid("current"))
        self.keys.apply(plan_for(action, self.keys.records, self.now, self.lead))
        for kid in set(self.keys.kid("current")) - before:
            # Published continuously, for at least publish_lead seconds, before signing.
            assert kid not in self.dropped
            assert self.now - self.first_published[kid] >= self.lead
        self.observe()
        self.check_consistent()

    def race(self, first: str, second: str, dt: int, order: list[bool]) -> None:
        """Two processes plan from the same read; their writes interleave, then repair."""
        self.now += dt
        self.observe()
        plans = [
            plan_for(first, self.keys.records, self.now, self.lead),
            plan_for(second, self.keys.records, self.now, self.lead),
        ]
        picks = iter(order)
        while plans[0] or plans[1]:
            side = 0 if not plans[1] else 1 if not plans[0] else int(next(picks, False))
            self.keys.apply_one(plans[side].pop(0))
            self.observe()
        do_repair(self.keys, self.now)
        self.observe()
        self.check_consistent()


steps = st.lists(st.tuples(st.sampled_from(ACTIONS), st.integers(0, 2 * KEEP)), max_size=25)


class TestProperties:
    @given(steps=steps, lead=st.integers(0, 900))
    def test_histories_keep_the_invariants(self, steps: list[tuple[str, int]], lead: int) -> None:
        """Any history keeps one current and one next key, and publishes keys safely."""
        history = History(lead)
        for action, dt in steps:
            history.step(action, dt)

    @given(
        races=st.lists(
            st.tuples(
                st.sampled_from(ACTIONS),
                st.sampled_from(ACTIONS),
                st.integers(0, KEEP),
                st.lists(st.booleans(), max_size=6),
            ),
            max_size=12,
        )
    )
    def test_races_converge_safely(self, races: list[tuple[str, str, int, list[bool]]]) -> None:
        """Plans made from the same read and interleaved never unpublish a key that signed."""
        history = History(0)
        for first, second, dt, order in races:
            history.race(first, second, dt, order)
