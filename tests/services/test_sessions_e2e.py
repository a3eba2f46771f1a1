"""End-user sessions against real ``coupon up`` processes, embedded and production.

Start, refresh (rotation), reuse detection revoking the whole family, the device key binding,
the per-user limit, logout, two refreshes racing with one token (two processes on one
database in production), and a rotation surviving ``kill -9``.
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from tests.services.harness import (
    AuthorityProcess,
    Holder,
    Launcher,
    add_api_key,
    unique,
    verify,
    verify_body,
)

SCOPE: dict[str, Any] = {
    "tenant": "tenant-a",
    "audience": ["orders"],
    "resource": "orders/123/**",
    "actions": ["read"],
    "purpose": "billing",
}


@pytest.fixture(scope="module")
def authority(engine: str, module_launcher: Launcher) -> Iterator[AuthorityProcess]:
    """One Authority per engine for the module's sessions."""
    proc = module_launcher.start(engine, name=f"sessions-{engine}")
    yield proc
    proc.close()


def start(proc: AuthorityProcess, holder: Holder, subject: str) -> dict[str, Any]:
    """Start a session with the admin key (admin has the issuer role)."""
    body = {**SCOPE, "subject": subject, "jkt": holder.jkt}
    response = proc.client.post("/v1/sessions", json=body)
    assert response.status_code == 201, response.text
    assert response.headers["cache-control"] == "no-store"
    answer: dict[str, Any] = response.json()
    return answer


def refresh(
    proc: AuthorityProcess, holder: Holder, token: str, *, base_url: str | None = None
) -> httpx.Response:
    """Refresh as the device: no API key, a DPoP proof for POST .../v1/sessions/refresh."""
    url = (base_url or proc.base_url) + "/v1/sessions/refresh"
    proof = holder.proof(method="POST", uri=url, token=None)
    return httpx.post(url, json={"refresh_token": token}, headers={"DPoP": proof}, timeout=10)


def logout(proc: AuthorityProcess, holder: Holder, token: str) -> httpx.Response:
    url = proc.base_url + "/v1/sessions/logout"
    proof = holder.proof(method="POST", uri=url, token=None)
    return httpx.post(url, json={"refresh_token": token}, headers={"DPoP": proof}, timeout=10)


def decision(proc: AuthorityProcess, holder: Holder, session: dict[str, Any]) -> dict[str, Any]:
    """The Authority's verify decision on the session's access coupon."""
    return verify(proc, verify_body(session["access"]["coupon"], holder))


def code(response: httpx.Response) -> str:
    value: str = response.json()["code"]
    return value


def audit_actions(proc: AuthorityProcess, lineage: str) -> list[tuple[str, str]]:
    """(action, result) of every audit event about ``lineage``, oldest first."""
    found: list[tuple[str, str]] = []
    cursor = 0
    while True:
        response = proc.client.get("/v1/audit/events", params={"after": cursor, "limit": 1000})
        assert response.status_code == 200, response.text
        page = response.json()
        if not page["events"]:
            return found
        for item in page["events"]:
            event = json.loads(item["event"])
            if event["lineage"] == lineage:
                found.append((event["action"], event["result"]))
        cursor = page["cursor"]


class TestLifecycle:
    def test_start_refresh_logout(self, authority: AuthorityProcess) -> None:
        """A session's coupons verify; refresh rotates; logout revokes every coupon."""
        holder = Holder()
        first = start(authority, holder, unique("user"))
        sid = first["session_id"]
        assert first["access"]["lineage"] == sid
        assert first["access"]["claims"]["cnf"] == {"jkt": holder.jkt}
        assert first["generation"] == 0
        assert decision(authority, holder, first)["allow"] is True

        response = refresh(authority, holder, first["refresh_token"])
        assert response.status_code == 200, response.text
        second = response.json()
        assert second["session_id"] == sid
        assert second["generation"] == 1
        assert second["refresh_token"] != first["refresh_token"]
        assert second["access"]["jti"] != first["access"]["jti"]
        assert decision(authority, holder, second)["allow"] is True
        assert decision(authority, holder, first)["allow"] is True  # rotation revokes nothing

        out = logout(authority, holder, second["refresh_token"])
        assert out.status_code == 200, out.text
        assert out.json() == {"session_id": sid, "revoked": True}
        for session in (first, second):
            denied = decision(authority, holder, session)
            assert (denied["allow"], denied["code"]) == (False, "CPN-REV-001")
        assert code(refresh(authority, holder, second["refresh_token"])) == "CPN-SESS-003"
        assert logout(authority, holder, second["refresh_token"]).json()["revoked"] is False
        actions = audit_actions(authority, sid)
        assert actions[:3] == [
            ("session.start", "ok"),
            ("session.refresh", "ok"),
            ("session.logout", "ok"),
        ]

    def test_service_ends_a_session_by_id(self, authority: AuthorityProcess) -> None:
        """An issuer ends a session with its id; another tenant's issuer may not."""
        holder = Holder()
        session = start(authority, holder, unique("user"))
        body = {"session_id": session["session_id"]}
        outsider = add_api_key(authority.database_url, ["issuer"], tenant="tenant-b")
        denied = authority.client_with(outsider).post("/v1/sessions/logout", json=body)
        assert (denied.status_code, code(denied)) == (403, "CPN-AUTH-004")
        assert authority.anon.post("/v1/sessions/logout", json=body).status_code == 401
        ended = authority.client.post("/v1/sessions/logout", json=body)
        assert ended.json() == {"session_id": session["session_id"], "revoked": True}
        assert decision(authority, holder, session)["code"] == "CPN-REV-001"


class TestReuse:
    def test_reuse_revokes_the_family(self, authority: AuthorityProcess) -> None:
        """A spent refresh token presented again revokes every coupon of the session."""
        holder = Holder()
        first = start(authority, holder, unique("user"))
        second = refresh(authority, holder, first["refresh_token"]).json()
        reused = refresh(authority, holder, first["refresh_token"])
        assert (reused.status_code, code(reused)) == (401, "CPN-SESS-002")
        assert reused.headers["www-authenticate"].startswith("DPoP ")
        for session in (first, second):
            denied = decision(authority, holder, session)
            assert (denied["allow"], denied["code"]) == (False, "CPN-REV-001")
        assert code(refresh(authority, holder, second["refresh_token"])) == "CPN-SESS-003"
        assert ("session.reuse_detected", "deny") in audit_actions(authority, first["session_id"])


class TestDeviceKey:
    def test_refresh_needs_the_device_key(self, authority: AuthorityProcess) -> None:
        """Another key's proof, or none, is refused and spends nothing."""
        holder, thief = Holder(), Holder()
        session = start(authority, holder, unique("user"))
        token = session["refresh_token"]
        stolen = refresh(authority, thief, token)
        assert (stolen.status_code, code(stolen)) == (401, "CPN-SESS-005")
        url = authority.base_url + "/v1/sessions/refresh"
        bare = httpx.post(url, json={"refresh_token": token}, timeout=10)
        assert (bare.status_code, code(bare)) == (401, "CPN-POP-001")
        wrong_uri = holder.proof(method="POST", uri=authority.base_url + "/v1/x", token=None)
        bad = httpx.post(url, json={"refresh_token": token}, headers={"DPoP": wrong_uri})
        assert code(bad) == "CPN-POP-008"
        assert refresh(authority, holder, token).status_code == 200  # still unspent
        assert ("session.refresh", "deny") in audit_actions(authority, session["session_id"])

    def test_a_proof_is_used_once(self, authority: AuthorityProcess) -> None:
        """Replaying the device's proof is refused (CPN-RPL-001)."""
        holder = Holder()
        session = start(authority, holder, unique("user"))
        url = authority.base_url + "/v1/sessions/refresh"
        proof = holder.proof(method="POST", uri=url, token=None)
        ok = httpx.post(
            url, json={"refresh_token": session["refresh_token"]}, headers={"DPoP": proof}
        )
        assert ok.status_code == 200
        again = httpx.post(
            url, json={"refresh_token": ok.json()["refresh_token"]}, headers={"DPoP": proof}
        )
        assert code(again) == "CPN-RPL-001"


class TestLimits:
    def test_fourth_session_evicts_the_oldest(self, authority: AuthorityProcess) -> None:
        """At most 3 live sessions per user (default): the oldest is revoked, coupons and all."""
        user, other = unique("user"), unique("user")
        holders = [Holder() for _ in range(4)]
        sessions = [start(authority, h, user) for h in holders]
        elsewhere = start(authority, Holder(), other)
        denied = decision(authority, holders[0], sessions[0])
        assert (denied["allow"], denied["code"]) == (False, "CPN-REV-001")
        assert code(refresh(authority, holders[0], sessions[0]["refresh_token"])) == "CPN-SESS-003"
        for holder, session in zip(holders[1:], sessions[1:], strict=True):
            assert decision(authority, holder, session)["allow"] is True
        assert refresh(authority, holders[3], sessions[3]["refresh_token"]).status_code == 200
        assert elsewhere["refresh_token"]  # the other user's session is untouched
        assert refresh(authority, Holder(), elsewhere["refresh_token"]).status_code == 401

    def test_requests_are_checked(self, authority: AuthorityProcess) -> None:
        """Malformed tokens are 422, unknown ones 401; only issuers start sessions."""
        url = authority.base_url + "/v1/sessions/refresh"
        malformed = httpx.post(url, json={"refresh_token": "nope"}, timeout=10)
        assert (malformed.status_code, code(malformed)) == (422, "CPN-REQ-009")
        unknown = refresh(authority, Holder(), "cpr_" + "A" * 43)
        assert (unknown.status_code, code(unknown)) == (401, "CPN-SESS-001")
        verifier = add_api_key(authority.database_url, ["verifier"])
        body = {**SCOPE, "subject": "x", "jkt": Holder().jkt}
        refused = authority.client_with(verifier).post("/v1/sessions", json=body)
        assert (refused.status_code, code(refused)) == (403, "CPN-AUTH-003")
        assert authority.anon.post("/v1/sessions", json=body).status_code == 401


class TestRace:
    def test_two_refreshes_with_one_token(
        self, authority: AuthorityProcess, engine: str, module_launcher: Launcher
    ) -> None:
        """Two refreshes at once with the same token: exactly one wins, the other is reuse and
        revokes the family (production: the two go to two processes on one database)."""
        procs = {authority.base_url: authority}
        targets = [authority.base_url, authority.base_url]
        if engine == "production":
            twin = module_launcher.start(engine, name="sessions-twin", env=authority.env)
            targets[1] = twin.base_url
            procs[twin.base_url] = twin
        for _round in range(3):
            holder = Holder()
            session = start(authority, holder, unique("user"))
            token = session["refresh_token"]
            barrier = threading.Barrier(2)
            results: list[httpx.Response] = []
            threads = [
                threading.Thread(
                    target=_race, args=(authority, holder, token, target, barrier, results)
                )
                for target in targets
            ]
            for thread in threads:
                thread.start()
            for thread in threads:
                thread.join(timeout=30)
            statuses = sorted(r.status_code for r in results)
            assert statuses == [200, 401], [r.text for r in results]
            loser = next(r for r in results if r.status_code == 401)
            winner = next(r for r in results if r.status_code == 200).json()
            assert code(loser) == "CPN-SESS-002"
            # The winner's coupon is checked where it was issued (its iss): the loser's
            # revocation reaches that process through the revocation fan-out.
            issuer = procs[winner["access"]["claims"]["iss"]]
            assert _eventually_revoked(issuer, holder, winner)
            assert code(refresh(authority, holder, winner["refresh_token"])) == "CPN-SESS-003"


def _eventually_revoked(proc: AuthorityProcess, holder: Holder, session: dict[str, Any]) -> bool:
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline:
        if decision(proc, holder, session).get("code") == "CPN-REV-001":
            return True
        time.sleep(0.05)
    return False


def _race(
    proc: AuthorityProcess,
    holder: Holder,
    token: str,
    base_url: str,
    barrier: threading.Barrier,
    results: list[httpx.Response],
) -> None:
    barrier.wait()
    results.append(refresh(proc, holder, token, base_url=base_url))  # list.append is atomic


def test_rotation_survives_kill9(engine: str, launcher: Launcher) -> None:
    """A refresh acknowledged right before SIGKILL is durable: after the restart the new token
    works and the old one is spent (its reuse revokes the session)."""
    proc = launcher.start(engine)
    holder = Holder()
    first = start(proc, holder, unique("user"))
    second = refresh(proc, holder, first["refresh_token"]).json()
    proc.kill9()
    proc.start()
    third = refresh(proc, holder, second["refresh_token"])
    assert third.status_code == 200, third.text
    assert decision(proc, holder, third.json())["allow"] is True
    assert code(refresh(proc, holder, first["refresh_token"])) == "CPN-SESS-002"
    assert decision(proc, holder, third.json())["code"] == "CPN-REV-001"


def test_idle_timeout(launcher: Launcher) -> None:
    """A session unused for longer than COUPON_SESSION_IDLE_TIMEOUT expires."""
    proc = launcher.start("embedded", extra={"COUPON_SESSION_IDLE_TIMEOUT": "1"})
    holder = Holder()
    session = start(proc, holder, unique("user"))
    time.sleep(2.1)
    expired = refresh(proc, holder, session["refresh_token"])
    assert (expired.status_code, code(expired)) == (401, "CPN-SESS-004")
