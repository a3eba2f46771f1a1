"""The revocation view: what it enforces, how its cursor moves, and how it fails closed."""

from __future__ import annotations

import math

import pytest
from hypothesis import given
from hypothesis import strategies as st

from coupon import codes
from coupon.authority._revocation import RevocationView
from coupon.errors import DependencyUnavailable
from coupon.storage.base import RevocationKind, RevocationRecord
from coupon.token import MemoryRevocations, RevocationChecker, RevocationFacts

NOW = 1_700_000_000


def rec(
    seq: int, kind: RevocationKind = "jti", value: str = "j1", at: int = NOW
) -> RevocationRecord:
    return RevocationRecord(kind, value, f"reason {seq}", "admin", at, seq)


def facts(
    *,
    jtis: tuple[str, ...] = ("j0",),
    lineage: str = "L0",
    subjects: tuple[str, ...] = ("alice",),
    tenant: str = "t0",
    kid: str = "k0",
    issued_at: int = NOW - 10,
) -> RevocationFacts:
    return RevocationFacts(jtis, lineage, subjects, tenant, kid, issued_at)


def fresh_view(*records: RevocationRecord) -> RevocationView:
    view = RevocationView(max_staleness=10)
    view.apply(records)
    view.mark_fresh(NOW)
    return view


class TestLookups:
    def test_is_a_revocation_checker(self) -> None:
        """The view plugs into the token core's verifier as its RevocationChecker."""
        assert isinstance(RevocationView(max_staleness=1), RevocationChecker)

    def test_nothing_revoked(self) -> None:
        """A fresh view with no matching revocation lets the coupon stand."""
        assert fresh_view(rec(1, "jti", "other")).revoked(facts(), now=NOW) is None

    @pytest.mark.parametrize(
        ("record", "expected"),
        [
            (rec(1, "jti", "j0"), "jti j0 revoked"),
            (rec(1, "lineage", "L0"), "lineage L0 revoked"),
            (rec(1, "subject", "alice"), "subject alice revoked"),
            (rec(1, "tenant", "t0"), "tenant t0 revoked"),
            (rec(1, "kid", "k0"), "key k0 revoked"),
        ],
    )
    def test_each_kind(self, record: RevocationRecord, expected: str) -> None:
        """Each kind of revocation hits the coupon it names, with its reason."""
        reason = fresh_view(record).revoked(facts(), now=NOW)
        assert reason == f"{expected}: reason 1"

    def test_any_link_of_a_chain(self) -> None:
        """Revoking a parent's jti kills an offline chain below it."""
        view = fresh_view(rec(1, "jti", "parent"))
        assert view.revoked(facts(jtis=("parent", "child")), now=NOW) is not None

    def test_later_subjects_of_a_chain(self) -> None:
        """Every subject of a chain is checked, not only the first."""
        view = fresh_view(rec(1, "subject", "bob"))
        assert view.revoked(facts(subjects=("alice", "bob")), now=NOW) is not None

    @pytest.mark.parametrize("kind", ["subject", "tenant"])
    def test_name_revocations_spare_later_coupons(self, kind: RevocationKind) -> None:
        """Subject and tenant revocations hit only coupons issued at or before them."""
        value = {"subject": "alice", "tenant": "t0"}[kind]
        view = fresh_view(rec(1, kind, value, at=NOW))
        assert view.revoked(facts(issued_at=NOW), now=NOW) is not None
        assert view.revoked(facts(issued_at=NOW + 1), now=NOW) is None

    def test_key_revocation_ignores_iat(self) -> None:
        """A revoked key kills every coupon it signed, even one claiming a later iat."""
        view = fresh_view(rec(1, "kid", "k0", at=NOW))
        assert view.revoked(facts(issued_at=NOW + 3600), now=NOW) == "key k0 revoked: reason 1"

    def test_the_latest_name_revocation_wins(self) -> None:
        """A second, later revocation of a subject covers coupons issued in between."""
        view = fresh_view(rec(2, "subject", "alice", at=NOW + 100), rec(1, "subject", "alice"))
        assert view.revoked(facts(issued_at=NOW + 50), now=NOW) == "subject alice revoked: reason 2"

    @given(
        st.lists(
            st.tuples(
                st.sampled_from(["jti", "lineage", "subject", "tenant", "kid"]),
                st.sampled_from(["a", "b", "c"]),
                st.integers(0, 4),
            ),
            max_size=12,
        ),
        st.sampled_from(["a", "b", "c"]),
        st.integers(0, 4),
    )
    def test_agrees_with_memory_revocations(
        self, entries: list[tuple[RevocationKind, str, int]], name: str, issued_at: int
    ) -> None:
        """Whatever was revoked, the view and the core's MemoryRevocations deny alike."""
        records = [rec(i + 1, k, v, at=t) for i, (k, v, t) in enumerate(entries)]
        memory = MemoryRevocations()
        tables = {"subject": memory.subjects, "tenant": memory.tenants, "kid": memory.kids}
        for r in records:
            if r.kind == "jti":
                memory.jtis.setdefault(r.value, r.reason)
            elif r.kind == "lineage":
                memory.lineages.setdefault(r.value, r.reason)
            elif r.value not in tables[r.kind] or r.revoked_at > tables[r.kind][r.value][0]:
                tables[r.kind][r.value] = (r.revoked_at, r.reason)
        f = facts(
            jtis=(name,), lineage=name, subjects=(name,), tenant=name, kid=name, issued_at=issued_at
        )
        assert fresh_view(*records).revoked(f, now=NOW) == memory.revoked(f, now=NOW)


class TestCursor:
    def test_in_order(self) -> None:
        """Contiguous records move the cursor to the last one."""
        view = RevocationView(max_staleness=1)
        assert view.apply([rec(1), rec(2), rec(3)]) == 3
        assert (view.cursor, view.highest, view.has_gap) == (3, 3, False)

    def test_idempotent(self) -> None:
        """Applying the same records again changes nothing and counts nothing new."""
        view = fresh_view(rec(1, "jti", "a"), rec(2, "jti", "b"))
        assert view.apply([rec(1, "jti", "a"), rec(2, "jti", "b")]) == 0
        assert view.cursor == 2
        assert view.revoked(facts(jtis=("a",)), now=NOW) == "jti a revoked: reason 1"

    def test_a_record_past_a_gap_is_enforced_but_holds_the_cursor(self) -> None:
        """A record that skips ahead is enforced at once; the cursor waits below the gap."""
        view = fresh_view(rec(1, "jti", "a"), rec(4, "jti", "d"))
        assert view.revoked(facts(jtis=("d",)), now=NOW) is not None
        assert (view.cursor, view.highest, view.has_gap) == (1, 4, True)
        assert view.gaps() == [(2, 3)]
        assert view.known(4)
        assert not view.known(2)

    def test_filling_the_gap_releases_the_cursor(self) -> None:
        """When the missing records arrive the cursor jumps over everything held."""
        view = fresh_view(rec(1), rec(4), rec(6))
        view.apply([rec(3), rec(2)])
        assert (view.cursor, view.gaps()) == (4, [(5, 5)])
        view.apply([rec(5)])
        assert (view.cursor, view.has_gap) == (6, False)

    def test_skip_settles_a_gap_that_never_fills(self) -> None:
        """skip() declares a rolled-back seq settled; a late record is still enforced."""
        view = fresh_view(rec(1), rec(3, "jti", "c"), rec(5))
        view.skip(2)
        assert (view.cursor, view.gaps()) == (3, [(4, 4)])
        assert view.apply([rec(2, "jti", "late")]) == 0
        assert view.revoked(facts(jtis=("late",)), now=NOW) is not None

    def test_listeners(self) -> None:
        """Listeners hear about new records and skips, not about repeats."""
        view = RevocationView(max_staleness=1)
        calls: list[int] = []
        listener = lambda: calls.append(view.cursor)  # noqa: E731
        view.add_listener(listener)
        view.apply([rec(1)])
        view.apply([rec(1)])
        view.apply([rec(3)])
        view.skip(2)
        view.remove_listener(listener)
        view.apply([rec(4)])
        assert calls == [1, 1, 3]

    def test_unstored_record_is_misuse(self) -> None:
        """A record without a seq (never stored) cannot be applied."""
        with pytest.raises(ValueError, match="seq"):
            RevocationView(max_staleness=1).apply([rec(0)])

    def test_unknown_kind_is_misuse(self) -> None:
        """A kind outside the five is refused rather than silently ignored."""
        bad = RevocationRecord("x5t", "v", "r", "a", NOW, 1)  # type: ignore[arg-type]
        with pytest.raises(ValueError, match="kind"):
            RevocationView(max_staleness=1).apply([bad])

    def test_latest_revoked_at(self) -> None:
        """The newest revocation time is exposed for the freshness metric."""
        view = RevocationView(max_staleness=1)
        assert view.latest_revoked_at is None
        view.apply([rec(1, at=NOW + 5), rec(2, at=NOW)])
        assert view.latest_revoked_at == NOW + 5


class TestStaleness:
    def test_never_synchronised_fails_closed(self) -> None:
        """A view no pull has confirmed denies everything with CPN-DEP-001."""
        view = RevocationView(max_staleness=10)
        with pytest.raises(DependencyUnavailable) as info:
            view.revoked(facts(), now=NOW)
        assert info.value.code is codes.UNAVAILABLE_REVOCATION
        assert view.staleness(NOW) == math.inf

    def test_within_the_bound(self) -> None:
        """Up to max_staleness after the last confirmation the view answers."""
        view = fresh_view()
        assert view.revoked(facts(), now=NOW + 10) is None
        assert view.staleness(NOW + 4) == 4

    def test_beyond_the_bound_fails_closed(self) -> None:
        """Past max_staleness the view denies with CPN-DEP-001."""
        view = fresh_view()
        with pytest.raises(DependencyUnavailable) as info:
            view.revoked(facts(), now=NOW + 10.5)
        assert info.value.code.code == "CPN-DEP-001"

    def test_a_known_revocation_is_still_reported_when_stale(self) -> None:
        """A stale view still gives the precise reason for a coupon it knows is revoked."""
        view = fresh_view(rec(1, "jti", "j0"))
        assert view.revoked(facts(), now=NOW + 100) is not None

    def test_mark_fresh_never_goes_back(self) -> None:
        """An older confirmation arriving late does not make the view look staler."""
        view = fresh_view()
        view.mark_fresh(NOW - 50)
        assert view.fresh_at == NOW

    def test_positive_bound(self) -> None:
        """A zero staleness bound is a programming error."""
        with pytest.raises(ValueError, match="max_staleness"):
            RevocationView(max_staleness=0)
