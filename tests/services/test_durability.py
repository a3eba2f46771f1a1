"""Nothing acknowledged is lost: ``kill -9`` of ``coupon up`` right after an acknowledged issue
or revoke, then a restart on the same data directory or database, on both engines
(PRODUCT.md §6). Also: a second start keeps the signing keys and the admin key.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import pytest
from tests.services.harness import (
    AuthorityProcess,
    Holder,
    Launcher,
    add_api_key,
    introspect,
    issue,
    revoke,
    stored_coupon,
    unique,
    verify,
    verify_body,
)

BURST = 10


def audit_events(proc: AuthorityProcess) -> list[dict[str, Any]]:
    """Every audit event the Authority has stored, decoded, oldest first."""
    events: list[dict[str, Any]] = []
    cursor = 0
    while True:
        response = proc.client.get("/v1/audit/events", params={"after": cursor, "limit": 1000})
        assert response.status_code == 200, response.text
        page = response.json()
        if not page["events"]:
            return events
        events += [json.loads(e["event"]) for e in page["events"]]
        cursor = page["cursor"]


@dataclass(frozen=True)
class IssueCrash:
    """Coupons acknowledged right before a SIGKILL, and what is needed to use them."""

    holder: Holder
    tenant: str
    tenant_issuer: str
    coupons: list[dict[str, Any]]


@dataclass(frozen=True)
class RevokeCrash:
    """Revocations acknowledged right before a SIGKILL, and the coupons they hit."""

    holder: Holder
    coupons: list[dict[str, Any]]
    answers: list[dict[str, Any]]


@pytest.fixture(scope="module")
def durable(engine: str, module_launcher: Launcher) -> Iterator[AuthorityProcess]:
    """One Authority per engine that the scenarios below crash and restart in turn."""
    proc = module_launcher.start(engine, name=f"durable-{engine}")
    yield proc
    proc.close()


@pytest.fixture(scope="class")
def after_issue_crash(durable: AuthorityProcess) -> IssueCrash:
    """Issue a burst of coupons, SIGKILL on the last 201, restart on the same state."""
    holder, tenant = Holder(), unique("tenant")
    tenant_issuer = add_api_key(durable.database_url, ["issuer"], tenant=tenant)
    coupons = [issue(durable, holder, tenant=tenant, subject=unique("s")) for _ in range(BURST)]
    durable.kill9()
    durable.start()
    return IssueCrash(holder, tenant, tenant_issuer, coupons)


@pytest.fixture(scope="class")
def after_revoke_crash(durable: AuthorityProcess) -> RevokeCrash:
    """Issue coupons, revoke each (by jti, then by subject), SIGKILL on the last 201, restart."""
    holder = Holder()
    subjects = [unique("subj") for _ in range(BURST)]
    coupons = [issue(durable, holder, subject=s) for s in subjects]
    for coupon in coupons:
        assert verify(durable, verify_body(coupon["coupon"], holder))["allow"] is True
    answers = [revoke(durable, "jti", coupons[0]["jti"])]
    answers += [revoke(durable, "subject", s) for s in subjects[1:]]
    durable.kill9()
    durable.start()
    return RevokeCrash(holder, coupons, answers)


class TestKillAfterIssue:
    """SIGKILL right after issue answers 201, then a restart on the same state."""

    def test_coupon_records_survive(
        self, durable: AuthorityProcess, after_issue_crash: IssueCrash
    ) -> None:
        """Every coupon acknowledged before the crash has its full record after the restart."""
        for coupon in after_issue_crash.coupons:
            record = stored_coupon(durable.database_url, coupon["jti"])
            assert record is not None, f"coupon {coupon['jti']} lost in the crash"
            claims = coupon["claims"]
            assert (record.subject, record.tenant, record.lineage) == (
                claims["sub"],
                after_issue_crash.tenant,
                coupon["lineage"],
            )
            assert (record.kid, record.expires_at) == (coupon["kid"], coupon["expires_at"])
            assert record.policy_version == coupon["policy_version"]
            assert record.binding == {"jkt": after_issue_crash.holder.jkt}

    def test_issue_audit_events_survive(
        self, durable: AuthorityProcess, after_issue_crash: IssueCrash
    ) -> None:
        """The coupon.issue audit event committed with each coupon is there after the crash."""
        issued = {
            e["target"]["jti"]
            for e in audit_events(durable)
            if e["action"] == "coupon.issue" and e["result"] == "ok"
        }
        assert {c["jti"] for c in after_issue_crash.coupons} <= issued

    def test_coupons_still_verify(
        self, durable: AuthorityProcess, after_issue_crash: IssueCrash
    ) -> None:
        """The signing keys survived: the coupons introspect active and verify."""
        holder = after_issue_crash.holder
        for coupon in after_issue_crash.coupons:
            assert introspect(durable, coupon["coupon"])["active"] is True
            assert verify(durable, verify_body(coupon["coupon"], holder))["allow"] is True

    def test_tenant_issuer_can_revoke_by_jti(
        self, durable: AuthorityProcess, after_issue_crash: IssueCrash
    ) -> None:
        """A tenant-bound issuer, which may revoke only coupons on record, revokes one after the
        crash, and it is then denied."""
        coupon = after_issue_crash.coupons[-1]
        client = durable.client_with(after_issue_crash.tenant_issuer)
        response = client.post(
            "/v1/revocations", json={"kind": "jti", "value": coupon["jti"], "reason": "after"}
        )
        assert response.status_code == 201, response.text
        denied = verify(durable, verify_body(coupon["coupon"], after_issue_crash.holder))
        assert (denied["allow"], denied["code"]) == (False, "CPN-REV-001"), denied


class TestKillAfterRevoke:
    """SIGKILL right after a revoke answers 201, then a restart on the same state."""

    def test_revocations_are_enforced(
        self, durable: AuthorityProcess, after_revoke_crash: RevokeCrash
    ) -> None:
        """Every coupon revoked before the crash is denied with CPN-REV-001 after it."""
        for coupon in after_revoke_crash.coupons:
            denied = verify(durable, verify_body(coupon["coupon"], after_revoke_crash.holder))
            assert (denied["allow"], denied["code"]) == (False, "CPN-REV-001"), denied
            assert introspect(durable, coupon["coupon"]) == {"active": False}

    def test_revocations_are_in_the_feed(
        self, durable: AuthorityProcess, after_revoke_crash: RevokeCrash
    ) -> None:
        """The pull feed still lists every acknowledged revocation under its seq."""
        feed: set[tuple[int, str, str]] = set()
        cursor = 0
        while True:
            page = durable.client.get("/v1/revocations", params={"after": cursor}).json()
            if not page["revocations"]:
                break
            feed |= {(r["seq"], r["kind"], r["value"]) for r in page["revocations"]}
            cursor = page["cursor"]
        for answer in after_revoke_crash.answers:
            for record in answer["revocations"]:
                assert (record["seq"], record["kind"], record["value"]) in feed


class TestRestart:
    """A graceful stop (SIGTERM) and a second start on the same state."""

    def test_second_start_keeps_keys_and_admin_key(self, durable: AuthorityProcess) -> None:
        """After a clean SIGTERM stop and a second start: the same JWKS, the same admin key,
        and coupons issued before still verify."""
        first_key = durable.admin_key
        jwks = durable.anon.get("/.well-known/jwks.json").json()
        holder = Holder()
        coupon = issue(durable, holder)
        durable.terminate(timeout=5.0)
        durable.start()
        assert durable.admin_key == first_key
        if durable.printed_admin_key is not None:
            assert durable.printed_admin_key == first_key
        assert durable.anon.get("/.well-known/jwks.json").json() == jwks
        assert durable.client.get("/v1/revocations").status_code == 200
        assert verify(durable, verify_body(coupon["coupon"], holder))["allow"] is True
        assert issue(durable, holder)["kid"] == coupon["kid"]


class TestShutdown:
    """SIGTERM while clients are connected."""

    def test_sigterm_with_an_open_stream_stops_cleanly(self, durable: AuthorityProcess) -> None:
        """SIGTERM while a subscriber holds the revocation stream open still stops within 5 s,
        with no traceback."""
        with durable.client.stream("GET", "/v1/revocations/stream", timeout=10.0) as response:
            assert response.status_code == 200
            chunks = response.iter_text()  # keep it: dropping it would close the stream
            assert next(chunks).startswith(":")
            durable.terminate(timeout=5.0)
        durable.start()
