"""The Authority's REST API against a running ``coupon up``, on the embedded default and on
PostgreSQL + Redis: issue, verify, introspect, revoke, the revocation feeds, time, keys,
health, correlation headers, authentication on every protected route, and the admin API.
"""

from __future__ import annotations

import json
import secrets
import time
from collections.abc import Iterator
from typing import Any, Final

import httpx
import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat
from prometheus_client.parser import text_string_to_metric_families
from tests.services.harness import (
    RESOURCE_URI,
    AuthorityProcess,
    Holder,
    Launcher,
    add_api_key,
    introspect,
    issue,
    issue_body,
    revoke,
    unique,
    verify,
    verify_body,
)

from coupon.authority._nonce import server_time
from coupon.authority._sse import SseEvent, SseParser, revocation_from_sse
from coupon.policy import default_policy_source, make_bundle, sign_bundle
from coupon.token import Binding, KeySet, Request, Verifier, attenuate
from coupon.token.hazmat import b64url_encode

PROBLEM_JSON: Final = "application/problem+json"
#: Routes that answer without an API key. ``/v1/coupons/attenuate`` authenticates the holder by
#: DPoP, and the session refresh and logout by the refresh token with a DPoP proof of the device
#: key (tests/services/test_sessions_e2e.py); ``/v1/audit/key`` publishes the audit-signing
#: public key, like the JWKS.
PUBLIC_PATHS: Final = frozenset(
    {
        "/healthz",
        "/readyz",
        "/metrics",
        "/v1/time",
        "/.well-known/jwks.json",
        "/v1/openapi.json",
        "/v1/docs",
        "/v1/coupons/attenuate",
        "/v1/sessions/refresh",
        "/v1/sessions/logout",
        "/v1/audit/key",
        # The Ledger's public side: hashes and signed checkpoints reveal nothing else.
        "/v1/ledger/checkpoint",
        "/v1/ledger/checkpoints",
        "/v1/ledger/key",
        "/v1/ledger/proof/inclusion",
        "/v1/ledger/proof/consistency",
        "/v1/ledger/tile/{path}",
    }
)
#: Public routes that need parameters (tested where their feature is).
PUBLIC_WITH_PARAMETERS: Final = frozenset(
    {
        "/v1/coupons/attenuate",
        "/v1/sessions/refresh",
        "/v1/sessions/logout",
        "/v1/ledger/proof/inclusion",
        "/v1/ledger/proof/consistency",
        "/v1/ledger/tile/{path}",
    }
)
#: Signs the policy bundles the admin tests upload; trusted through the settings.
POLICY_KEY: Final = Ed25519PrivateKey.generate()
POLICY_PUBLIC: Final = b64url_encode(
    POLICY_KEY.public_key().public_bytes(Encoding.Raw, PublicFormat.Raw)
)


@pytest.fixture(scope="module")
def authority(engine: str, module_launcher: Launcher) -> Iterator[AuthorityProcess]:
    """This module's Authority: a one-second leeway (so expiry is quick to observe) and a
    trusted policy-signing key for the admin tests."""
    proc = module_launcher.start(
        engine,
        name=f"api-{engine}",
        extra={"COUPON_LEEWAY": "1", "COUPON_POLICY_TRUSTED_KEYS": json.dumps([POLICY_PUBLIC])},
    )
    yield proc
    proc.close()


# -- helpers -------------------------------------------------------------------------------------


def latest_cursor(authority: AuthorityProcess) -> int:
    """The cursor after every revocation stored so far (walking the pull feed)."""
    cursor = 0
    while True:
        page = authority.client.get("/v1/revocations", params={"after": cursor}).json()
        if not page["revocations"]:
            return cursor
        cursor = page["cursor"]


def assert_problem(response: httpx.Response, status: int, code: str) -> dict[str, Any]:
    """Assert an RFC 9457 problem document with ``status`` and ``code``."""
    assert response.status_code == status, response.text
    assert response.headers["content-type"].startswith(PROBLEM_JSON), response.headers
    body: dict[str, Any] = response.json()
    assert body["code"] == code, body
    assert body["status"] == status
    assert body["title"]
    assert body["type"].endswith(code)
    return body


# -- issue ---------------------------------------------------------------------------------------


class TestIssue:
    """``POST /v1/coupons``."""

    def test_issued_coupon_verifies_locally_against_the_jwks(
        self, authority: AuthorityProcess
    ) -> None:
        """A 201 coupon verifies with coupon.Verifier and the published JWKS, policy stamped."""
        holder = Holder()
        answer = issue(authority, holder, subject="alice", tenant="tenant-a", ttl=120)
        keys = KeySet.from_jwks(authority.anon.get("/.well-known/jwks.json").json())
        verifier = Verifier(keys, issuers=[authority.base_url])
        verified = verifier.verify(
            answer["coupon"],
            Request(
                audience="orders",
                resource="orders/123/items",
                action="read",
                purpose="billing",
                method="GET",
                uri=RESOURCE_URI,
                dpop=holder.proof(token=answer["coupon"]),
            ),
        )
        claims = verified.claims
        assert verified.kid == answer["kid"]
        assert claims.jti == answer["jti"] == answer["lineage"] == claims.lin
        assert claims.pol is not None
        assert claims.pol == answer["policy_version"]
        assert claims.sub == "alice"
        assert claims.tid == "tenant-a"
        assert claims.aud == ("orders",)
        assert str(claims.res) == "orders/123/**"
        assert claims.act == frozenset({"read"})
        assert claims.pur == "billing"
        assert claims.cnf.jkt == holder.jkt
        assert claims.iss == authority.base_url
        assert (answer["issued_at"], answer["expires_at"]) == (claims.iat, claims.exp)
        assert 0 < answer["expires_at"] - answer["issued_at"] <= 120
        assert 0 < answer["expires_in"] <= 120
        assert answer["token_type"] == "DPoP"
        assert answer["claims"]["pol"] == claims.pol
        assert len(answer["trace_id"]) == 32

    def test_policy_caps_the_requested_ttl(self, authority: AuthorityProcess) -> None:
        """A TTL above the builtin policy's 300 s cap is shortened, not refused."""
        answer = issue(authority, Holder(), ttl=3000)
        assert answer["expires_at"] - answer["issued_at"] == 300

    def test_issue_without_credentials_is_401(self, authority: AuthorityProcess) -> None:
        """No X-API-Key: 401 problem+json with CPN-AUTH-001 and an ApiKey challenge."""
        response = authority.anon.post("/v1/coupons", json=issue_body(Holder()))
        body = assert_problem(response, 401, "CPN-AUTH-001")
        assert response.headers["www-authenticate"].startswith("ApiKey")
        assert body["instance"] == "/v1/coupons"

    def test_issue_with_an_unknown_key_is_401(self, authority: AuthorityProcess) -> None:
        """A well-formed but unknown API key: 401 CPN-AUTH-002."""
        client = authority.client_with(f"cpk_{secrets.token_hex(8)}_{secrets.token_urlsafe(32)}")
        assert_problem(client.post("/v1/coupons", json=issue_body(Holder())), 401, "CPN-AUTH-002")

    def test_issue_with_a_malformed_key_is_401(self, authority: AuthorityProcess) -> None:
        """An API key of the wrong shape: 401 CPN-AUTH-002."""
        client = authority.client_with("not-a-key")
        assert_problem(client.post("/v1/coupons", json=issue_body(Holder())), 401, "CPN-AUTH-002")

    @pytest.mark.parametrize("role", ["auditor", "verifier"])
    def test_issue_with_the_wrong_role_is_403(self, authority: AuthorityProcess, role: str) -> None:
        """A caller without the issuer role: 403 CPN-AUTH-003."""
        client = authority.client_with(add_api_key(authority.database_url, [role]))
        assert_problem(client.post("/v1/coupons", json=issue_body(Holder())), 403, "CPN-AUTH-003")

    def test_tenant_bound_issuer_cannot_issue_for_another_tenant(
        self, authority: AuthorityProcess
    ) -> None:
        """An issuer bound to one tenant gets 403 CPN-AUTH-004 for another, 201 for its own."""
        client = authority.client_with(
            add_api_key(authority.database_url, ["issuer"], tenant="tenant-own")
        )
        other = client.post("/v1/coupons", json=issue_body(Holder(), tenant="tenant-other"))
        assert_problem(other, 403, "CPN-AUTH-004")
        own = client.post("/v1/coupons", json=issue_body(Holder(), tenant="tenant-own"))
        assert own.status_code == 201, own.text

    @pytest.mark.parametrize(
        ("content", "content_type"),
        [
            pytest.param(b"not json", "application/json", id="not JSON"),
            pytest.param(b"\xff\xfe{", "application/json", id="invalid UTF-8"),
            pytest.param(b"[]", "application/json", id="a JSON array"),
            pytest.param(b"{}", "application/json", id="an empty object"),
            pytest.param(b'{"subject": "a"}', "text/plain", id="JSON as text/plain"),
            pytest.param(
                b'{"subject": "alice", "audience": ["or',
                "application/json",
                id="a truncated object",
            ),
        ],
    )
    def test_unparsable_bodies_are_422(
        self, authority: AuthorityProcess, content: bytes, content_type: str
    ) -> None:
        """A body that is not an issue request at all: 422 CPN-REQ-009, never a 500."""
        response = authority.client.post(
            "/v1/coupons", content=content, headers={"content-type": content_type}
        )
        assert_problem(response, 422, "CPN-REQ-009")

    @pytest.mark.parametrize(
        "change",
        [
            pytest.param({"extra": 1}, id="an unknown member"),
            pytest.param({"ttl": 1.5}, id="a fractional ttl"),
            pytest.param({"ttl": 0}, id="a zero ttl"),
            pytest.param({"ttl": 86_401}, id="a ttl over a day"),
            pytest.param({"ttl": "soon"}, id="a string ttl"),
            pytest.param({"tenant": "t" * 257}, id="an over-long tenant"),
            pytest.param({"subject": ""}, id="an empty subject"),
            pytest.param({"audience": "orders"}, id="audience not a list"),
            pytest.param({"audience": []}, id="no audience"),
            pytest.param({"actions": []}, id="no actions"),
            pytest.param({"actions": [f"a{i}" for i in range(33)]}, id="too many actions"),
            pytest.param({"actions": [1, 2]}, id="actions not strings"),
            pytest.param(
                {"binding": {"jkt": "A" * 43, "x5t#S256": "B" * 43}}, id="binding with both members"
            ),
            pytest.param({"binding": {}}, id="binding with neither member"),
            pytest.param({"binding": {"jkt": "abc"}}, id="a short jkt"),
            pytest.param({"binding": "jkt"}, id="binding not an object"),
            pytest.param({"resource": None}, id="resource null"),
        ],
    )
    def test_invalid_fields_are_422(
        self, authority: AuthorityProcess, change: dict[str, Any]
    ) -> None:
        """A field that breaks the request schema: 422 CPN-REQ-009 naming the field."""
        body = {**issue_body(Holder()), **change}
        response = authority.client.post("/v1/coupons", json=body)
        problem = assert_problem(response, 422, "CPN-REQ-009")
        assert problem["detail"].startswith("body")

    @pytest.mark.parametrize(
        "change",
        [
            pytest.param({"resource": "orders/../admin"}, id="a dot segment"),
            pytest.param({"resource": "orders/**/items"}, id="a wildcard in the middle"),
            pytest.param({"resource": "orders%2F123"}, id="an encoded separator"),
            pytest.param({"actions": ["READ ME"]}, id="an action with a space"),
            pytest.param({"purpose": "billing..refund"}, id="an empty purpose segment"),
            pytest.param({"audience": [""]}, id="an empty audience"),
            pytest.param({"subject": "ali\u0000ce"}, id="a NUL in the subject"),
            pytest.param({"tenant": "tenant\u0000a"}, id="a NUL in the tenant"),
            pytest.param({"subject": "\ud800"}, id="a lone surrogate escape"),
        ],
    )
    def test_semantically_invalid_fields_are_4xx_never_5xx(
        self, authority: AuthorityProcess, change: dict[str, Any]
    ) -> None:
        """Values the schema lets through but the coupon rules refuse: a coded 4xx, never 5xx."""
        body = json.dumps({**issue_body(Holder()), **change}).encode()
        response = authority.client.post(
            "/v1/coupons", content=body, headers={"content-type": "application/json"}
        )
        assert response.status_code < 500, f"{change}: {response.status_code} {response.text}"
        if response.status_code >= 400:
            assert response.headers["content-type"].startswith(PROBLEM_JSON)
            assert response.json()["code"].startswith("CPN-REQ-"), response.text


# -- verify --------------------------------------------------------------------------------------


class TestVerify:
    """``POST /v1/coupons/verify``."""

    def test_allow_with_a_real_dpop_proof(self, authority: AuthorityProcess) -> None:
        """A coupon with its holder's fresh DPoP proof is allowed, with claims and trace id."""
        holder = Holder()
        coupon = issue(authority, holder)
        answer = verify(authority, verify_body(coupon["coupon"], holder))
        assert answer["allow"] is True, answer
        assert answer["claims"]["jti"] == coupon["jti"]
        assert answer["kid"] == coupon["kid"]
        assert [link["jti"] for link in answer["chain"]] == [coupon["jti"]]
        assert len(answer["trace_id"]) == 32
        assert answer["timings_us"]["total"] > 0

    def test_wider_action_is_denied(self, authority: AuthorityProcess) -> None:
        """Asking for an action the coupon does not grant: allow false, CPN-SCOPE-002."""
        holder = Holder()
        coupon = issue(authority, holder, actions=["read"])
        answer = verify(authority, verify_body(coupon["coupon"], holder, action="delete"))
        assert answer["allow"] is False
        assert answer["code"] == "CPN-SCOPE-002", answer
        assert answer["reason"]
        assert answer["step"]

    def test_replayed_proof_is_denied(self, authority: AuthorityProcess) -> None:
        """The same DPoP proof a second time: the first allowed, the second CPN-RPL-001."""
        holder = Holder()
        coupon = issue(authority, holder)["coupon"]
        proof = holder.proof(token=coupon)
        assert verify(authority, verify_body(coupon, holder, proof=proof))["allow"] is True
        answer = verify(authority, verify_body(coupon, holder, proof=proof))
        assert (answer["allow"], answer["code"]) == (False, "CPN-RPL-001"), answer

    def test_wrong_audience_is_denied(self, authority: AuthorityProcess) -> None:
        """A coupon presented to another audience: allow false, CPN-AUD-001."""
        holder = Holder()
        coupon = issue(authority, holder, audience=["orders"])["coupon"]
        answer = verify(authority, verify_body(coupon, holder, audience="payments"))
        assert (answer["allow"], answer["code"]) == (False, "CPN-AUD-001"), answer

    def test_proof_by_another_key_is_denied(self, authority: AuthorityProcess) -> None:
        """A proof signed by a key other than the bound one: allow false, CPN-POP-012."""
        holder = Holder()
        coupon = issue(authority, holder)["coupon"]
        thief = Holder()
        answer = verify(authority, verify_body(coupon, holder, proof=thief.proof(token=coupon)))
        assert (answer["allow"], answer["code"]) == (False, "CPN-POP-012"), answer

    def test_missing_proof_is_denied(self, authority: AuthorityProcess) -> None:
        """A key-bound coupon without a DPoP proof: allow false, CPN-POP-001."""
        holder = Holder()
        coupon = issue(authority, holder)["coupon"]
        body = {**verify_body(coupon, holder), "dpop": None, "htm": None, "htu": None}
        answer = verify(authority, body)
        assert (answer["allow"], answer["code"]) == (False, "CPN-POP-001"), answer

    def test_garbage_coupon_is_denied(self, authority: AuthorityProcess) -> None:
        """A token that is not a compact JWS: allow false with a CPN-TOK code."""
        answer = verify(authority, verify_body("garbage", Holder()))
        assert answer["allow"] is False
        assert answer["code"].startswith("CPN-TOK-"), answer

    def test_proof_without_htu_is_422(self, authority: AuthorityProcess) -> None:
        """A DPoP proof without the method and URI it is for: a 4xx problem, not a decision."""
        holder = Holder()
        coupon = issue(authority, holder)["coupon"]
        body = {**verify_body(coupon, holder), "htu": None}
        response = authority.client.post("/v1/coupons/verify", json=body)
        assert 400 <= response.status_code < 500, response.text
        assert response.json()["code"].startswith("CPN-REQ-")

    def test_verify_needs_the_verifier_role(self, authority: AuthorityProcess) -> None:
        """An auditor may not ask for decisions: 403 CPN-AUTH-003."""
        holder = Holder()
        coupon = issue(authority, holder)["coupon"]
        client = authority.client_with(add_api_key(authority.database_url, ["auditor"]))
        response = client.post("/v1/coupons/verify", json=verify_body(coupon, holder))
        assert_problem(response, 403, "CPN-AUTH-003")

    def test_verifier_role_may_verify(self, authority: AuthorityProcess) -> None:
        """A verifier credential gets decisions."""
        holder = Holder()
        coupon = issue(authority, holder)["coupon"]
        client = authority.client_with(add_api_key(authority.database_url, ["verifier"]))
        response = client.post("/v1/coupons/verify", json=verify_body(coupon, holder))
        assert response.status_code == 200, response.text
        assert response.json()["allow"] is True

    def test_malformed_verify_body_is_422(self, authority: AuthorityProcess) -> None:
        """A verify request without a coupon: 422 CPN-REQ-009."""
        response = authority.client.post("/v1/coupons/verify", json={"audience": "orders"})
        assert_problem(response, 422, "CPN-REQ-009")


# -- introspect ----------------------------------------------------------------------------------


class TestIntrospect:
    """``POST /v1/coupons/introspect`` (RFC 7662)."""

    def test_active_coupon(self, authority: AuthorityProcess) -> None:
        """A valid coupon: active true with the RFC 7662 members and the coupon claims."""
        holder = Holder()
        coupon = issue(authority, holder, subject="intro", actions=["read", "list"])
        answer = introspect(authority, coupon["coupon"])
        assert answer["active"] is True
        assert answer["scope"] == "list read"
        assert answer["sub"] == answer["client_id"] == "intro"
        assert answer["token_type"] == "DPoP"
        assert answer["jti"] == coupon["jti"]
        assert answer["exp"] == coupon["expires_at"]
        assert answer["iat"] == coupon["issued_at"]
        assert answer["aud"] == ["orders"]
        assert answer["iss"] == authority.base_url
        assert answer["cnf"] == {"jkt": holder.jkt}
        assert answer["pol"] == coupon["policy_version"]

    @pytest.mark.parametrize("token", ["garbage", "a.b.c", "x" * 20_000])
    def test_garbage_is_inactive(self, authority: AuthorityProcess, token: str) -> None:
        """Anything that is not a coupon: exactly ``{"active": false}``."""
        assert introspect(authority, token) == {"active": False}

    def test_expired_coupon_becomes_inactive(self, authority: AuthorityProcess) -> None:
        """A one-second coupon is active, then inactive once its expiry and the leeway pass."""
        coupon = issue(authority, Holder(), ttl=1)
        assert introspect(authority, coupon["coupon"])["active"] is True
        deadline = coupon["expires_at"] + 1 + 3  # exp + leeway + slack
        while introspect(authority, coupon["coupon"])["active"]:
            assert time.time() < deadline, "the coupon stayed active after its expiry"
            time.sleep(0.2)

    def test_revoked_coupon_is_inactive(self, authority: AuthorityProcess) -> None:
        """A revoked coupon: active false."""
        coupon = issue(authority, Holder())
        revoke(authority, "jti", coupon["jti"])
        assert introspect(authority, coupon["coupon"]) == {"active": False}

    def test_json_body_is_refused(self, authority: AuthorityProcess) -> None:
        """Introspection takes a form; a JSON body is a 4xx problem, never a 500."""
        response = authority.client.post("/v1/coupons/introspect", json={"token": "x"})
        assert 400 <= response.status_code < 500, response.text
        assert response.headers["content-type"].startswith(PROBLEM_JSON)


# -- revoke --------------------------------------------------------------------------------------


class TestRevoke:
    """``POST /v1/revocations``, enforced by the Authority's own verify."""

    @pytest.mark.parametrize("kind", ["jti", "lineage", "subject", "tenant"])
    def test_revocation_is_enforced(self, authority: AuthorityProcess, kind: str) -> None:
        """After revoking by jti, lineage, subject or tenant, verify denies with CPN-REV-001."""
        holder = Holder()
        subject, tenant = unique("subj"), unique("tenant")
        coupon = issue(authority, holder, subject=subject, tenant=tenant)
        assert verify(authority, verify_body(coupon["coupon"], holder))["allow"] is True
        value = {
            "jti": coupon["jti"],
            "lineage": coupon["lineage"],
            "subject": subject,
            "tenant": tenant,
        }[kind]
        answer = revoke(authority, kind, value)
        first = answer["revocations"][0]
        assert (first["kind"], first["value"]) == (kind, value)
        assert first["reason"] == f"test {kind}"
        assert first["actor"] == "apikey:admin"
        assert answer["cursor"] == max(r["seq"] for r in answer["revocations"])
        denied = verify(authority, verify_body(coupon["coupon"], holder))
        assert (denied["allow"], denied["code"]) == (False, "CPN-REV-001"), denied

    def test_revocation_spares_other_coupons(self, authority: AuthorityProcess) -> None:
        """Revoking one subject leaves a coupon of another subject allowed."""
        holder = Holder()
        kept = issue(authority, holder, subject=unique("kept"))
        revoke(authority, "subject", unique("gone"))
        assert verify(authority, verify_body(kept["coupon"], holder))["allow"] is True

    @pytest.mark.parametrize("kind", ["jti", "lineage"])
    def test_revocation_kills_offline_sub_coupons(
        self, authority: AuthorityProcess, kind: str
    ) -> None:
        """A chain the holder attenuated offline dies with its root's jti or lineage."""
        holder, delegate = Holder(), Holder()
        root = issue(authority, holder, subject=unique("parent"))
        chain = attenuate(
            root["coupon"],
            holder.key,
            delegate=Binding(jkt=delegate.jkt),
            subject=unique("delegate"),
            resource="orders/123/items",
            actions=["read"],
        )
        allowed = verify(authority, verify_body(chain, delegate))
        assert allowed["allow"] is True, allowed
        assert len(allowed["chain"]) == 2
        revoke(authority, kind, root["jti"] if kind == "jti" else root["lineage"])
        denied = verify(authority, verify_body(chain, delegate))
        assert (denied["allow"], denied["code"]) == (False, "CPN-REV-001"), denied

    def test_revoke_needs_the_issuer_role(self, authority: AuthorityProcess) -> None:
        """A verifier may not revoke: 403 CPN-AUTH-003."""
        client = authority.client_with(add_api_key(authority.database_url, ["verifier"]))
        response = client.post(
            "/v1/revocations", json={"kind": "subject", "value": "x", "reason": "no"}
        )
        assert_problem(response, 403, "CPN-AUTH-003")

    @pytest.mark.parametrize(
        "body",
        [
            {"kind": "everything", "value": "x", "reason": "r"},
            {"kind": "jti", "value": "", "reason": "r"},
            {"kind": "jti", "value": "x"},
            {"kind": "jti", "value": "x" * 257, "reason": "r"},
        ],
    )
    def test_malformed_revocation_is_422(
        self, authority: AuthorityProcess, body: dict[str, Any]
    ) -> None:
        """An unknown kind, an empty or over-long value, or no reason: 422 CPN-REQ-009."""
        assert_problem(authority.client.post("/v1/revocations", json=body), 422, "CPN-REQ-009")


class TestRevokeByKid:
    """Revocation by signing key id, on an Authority of its own (it kills every coupon)."""

    def test_kid_revocation_is_enforced(self, engine: str, launcher: Launcher) -> None:
        """After revoking the signing key's kid, its coupons are denied with CPN-REV-001."""
        proc = launcher.start(engine, name=f"kid-{engine}")
        holder = Holder()
        coupon = issue(proc, holder)
        assert verify(proc, verify_body(coupon["coupon"], holder))["allow"] is True
        revoke(proc, "kid", coupon["kid"])
        denied = verify(proc, verify_body(coupon["coupon"], holder))
        assert (denied["allow"], denied["code"]) == (False, "CPN-REV-001"), denied
        assert introspect(proc, coupon["coupon"]) == {"active": False}


# -- revocation feeds ----------------------------------------------------------------------------


class TestRevocationFeed:
    """``GET /v1/revocations`` (pull) and ``GET /v1/revocations/stream`` (server-sent events)."""

    def test_pull_feed_pages_by_cursor(self, authority: AuthorityProcess) -> None:
        """Three new revocations come back oldest first, two then one, and then nothing."""
        start = latest_cursor(authority)
        values = [unique("feed") for _ in range(3)]
        for value in values:
            revoke(authority, "subject", value)
        first = authority.client.get("/v1/revocations", params={"after": start, "limit": 2})
        assert first.status_code == 200, first.text
        page1 = first.json()
        assert [r["value"] for r in page1["revocations"]] == values[:2]
        assert page1["cursor"] == page1["revocations"][-1]["seq"]
        page2 = authority.client.get(
            "/v1/revocations", params={"after": page1["cursor"], "limit": 2}
        ).json()
        assert [r["value"] for r in page2["revocations"]] == values[2:]
        seqs = [r["seq"] for r in page1["revocations"] + page2["revocations"]]
        assert seqs == sorted(seqs)
        assert seqs[0] > start
        page3 = authority.client.get("/v1/revocations", params={"after": page2["cursor"]}).json()
        assert page3 == {"revocations": [], "cursor": page2["cursor"]}

    @pytest.mark.parametrize(
        "params", [{"after": -1}, {"limit": 0}, {"limit": 1001}, {"after": "x"}]
    )
    def test_bad_feed_parameters_are_422(
        self, authority: AuthorityProcess, params: dict[str, Any]
    ) -> None:
        """A negative cursor, a limit out of range or a non-number: 422 CPN-REQ-009."""
        response = authority.client.get("/v1/revocations", params=params)
        assert_problem(response, 422, "CPN-REQ-009")

    @pytest.mark.parametrize("after", [2**31, 2**53, 2**62])
    def test_cursor_past_every_revocation_is_an_empty_page(
        self, authority: AuthorityProcess, after: int
    ) -> None:
        """Any cursor the API accepts (up to 2**62), even one past 32 bits, gets an empty page."""
        response = authority.client.get("/v1/revocations", params={"after": after})
        assert response.status_code == 200, response.text
        assert response.json() == {"revocations": [], "cursor": after}

    @pytest.mark.parametrize(
        "last_event_id",
        [
            pytest.param(b"abc", id="letters"),
            pytest.param(b"-1", id="negative"),
            pytest.param(b"\xb2", id="superscript two"),
            pytest.param(b"\xb9\xb2", id="superscript twelve"),
        ],
    )
    def test_stream_survives_a_strange_last_event_id(
        self, authority: AuthorityProcess, last_event_id: bytes
    ) -> None:
        """A Last-Event-ID that is not a plain decimal cursor never gets a 5xx."""
        with authority.client.stream(
            "GET",
            "/v1/revocations/stream",
            headers=[(b"Last-Event-ID", last_event_id)],
            timeout=5.0,
        ) as response:
            assert response.status_code < 500, response.read().decode(errors="replace")

    def test_stream_pushes_a_new_revocation(self, authority: AuthorityProcess) -> None:
        """A subscriber to the SSE stream receives a revocation made after it connected."""
        start = latest_cursor(authority)
        value = unique("sse")
        parser = SseParser()
        events: list[SseEvent] = []
        with authority.client.stream(
            "GET", "/v1/revocations/stream", params={"after": start}, timeout=5.0
        ) as response:
            assert response.status_code == 200
            assert response.headers["content-type"].startswith("text/event-stream")
            chunks = response.iter_text()
            while parser.comments == 0:
                events += parser.feed(next(chunks))
            revoked = revoke(authority, "subject", value)
            deadline = time.monotonic() + 5
            while not any(value in e.data for e in events):
                assert time.monotonic() < deadline, f"no event for {value}: {events}"
                events += parser.feed(next(chunks))
        record = revocation_from_sse(next(e for e in events if value in e.data))
        assert (record.kind, record.value) == ("subject", value)
        assert record.seq == revoked["cursor"]
        assert record.seq > start


# -- Authority-issued sub-coupons ----------------------------------------------------------------


class TestAttenuate:
    """``POST /v1/coupons/attenuate``: the parent's holder proves possession with DPoP."""

    def _attenuate(
        self, authority: AuthorityProcess, parent: str, holder: Holder, delegate: Holder
    ) -> httpx.Response:
        uri = f"{authority.base_url}/v1/coupons/attenuate"
        return authority.anon.post(
            "/v1/coupons/attenuate",
            json={
                "subject": unique("delegate"),
                "resource": "orders/123/items",
                "actions": ["read"],
                "binding": {"jkt": delegate.jkt},
            },
            headers={
                "Authorization": f"DPoP {parent}",
                "DPoP": holder.proof(method="POST", uri=uri, token=parent),
            },
        )

    def test_holder_gets_a_narrower_sub_coupon(self, authority: AuthorityProcess) -> None:
        """The holder's DPoP-proven request yields a 201 sub-coupon that its delegate can use."""
        holder, delegate = Holder(), Holder()
        parent = issue(authority, holder, actions=["read", "write"])
        response = self._attenuate(authority, parent["coupon"], holder, delegate)
        assert response.status_code == 201, response.text
        child = response.json()
        assert child["lineage"] == parent["lineage"]
        assert child["claims"]["par"]["jti"] == parent["jti"]
        assert child["claims"]["dep"] == 1
        assert child["claims"]["act"] == ["read"]
        assert child["expires_at"] <= parent["expires_at"]
        allowed = verify(authority, verify_body(child["coupon"], delegate))
        assert allowed["allow"] is True, allowed

    def test_revoking_the_parent_kills_the_sub_coupon(self, authority: AuthorityProcess) -> None:
        """Revoking the parent's jti also denies the Authority-issued sub-coupon."""
        holder, delegate = Holder(), Holder()
        parent = issue(authority, holder)
        response = self._attenuate(authority, parent["coupon"], holder, delegate)
        assert response.status_code == 201, response.text
        revoke(authority, "jti", parent["jti"])
        denied = verify(authority, verify_body(response.json()["coupon"], delegate))
        assert (denied["allow"], denied["code"]) == (False, "CPN-REV-001"), denied

    def test_without_proof_is_401(self, authority: AuthorityProcess) -> None:
        """No DPoP proof of the parent: 401, never a sub-coupon."""
        holder = Holder()
        parent = issue(authority, holder)["coupon"]
        response = authority.anon.post(
            "/v1/coupons/attenuate",
            json={"subject": "bob", "binding": {"jkt": Holder().jkt}},
            headers={"Authorization": f"DPoP {parent}"},
        )
        assert response.status_code == 401, response.text
        assert response.json()["code"].startswith("CPN-POP-")

    def test_proof_by_another_key_is_401(self, authority: AuthorityProcess) -> None:
        """A proof signed by someone other than the parent's holder: 401."""
        holder = Holder()
        parent = issue(authority, holder)["coupon"]
        response = self._attenuate(authority, parent, Holder(), Holder())
        assert response.status_code == 401, response.text


# -- time, keys, health, metrics -----------------------------------------------------------------


class TestTimeAndKeys:
    """``GET /v1/time`` and ``GET /.well-known/jwks.json``."""

    def test_time_is_close_to_the_local_clock(self, authority: AuthorityProcess) -> None:
        """The authorised time is within 2 s of ours and comes with a DPoP-Nonce."""
        before = time.time()
        response = authority.anon.get("/v1/time")
        after = time.time()
        assert response.status_code == 200
        body = response.json()
        assert before - 2 <= body["time"] <= after + 2
        assert before - 2 <= body["time_ms"] / 1000 <= after + 2
        assert response.headers["dpop-nonce"] == body["nonce"]
        assert response.headers["cache-control"] == "no-store"
        assert body["leeway"] == 1
        assert body["dpop_max_age"] > 0
        assert server_time(body["nonce"]) == body["time"]

    def test_jwks_publishes_public_signing_keys(self, authority: AuthorityProcess) -> None:
        """The JWKS lists public Ed25519 keys with kids, and no private member."""
        response = authority.anon.get("/.well-known/jwks.json")
        assert response.status_code == 200
        assert "max-age" in response.headers["cache-control"]
        keys = response.json()["keys"]
        assert keys
        for jwk in keys:
            assert jwk["kty"] == "OKP"
            assert jwk["crv"] == "Ed25519"
            assert jwk["alg"] == "EdDSA"
            assert jwk["kid"]
            assert "d" not in jwk
        assert len({jwk["kid"] for jwk in keys}) == len(keys)
        assert issue(authority, Holder())["kid"] in {jwk["kid"] for jwk in keys}


class TestHealth:
    """``/healthz``, ``/readyz`` and ``/metrics``."""

    def test_healthz(self, authority: AuthorityProcess) -> None:
        """Alive: 200 with status ok."""
        response = authority.anon.get("/healthz")
        assert (response.status_code, response.json()) == (200, {"status": "ok"})

    def test_readyz_reports_each_dependency(self, authority: AuthorityProcess, engine: str) -> None:
        """Ready: 200, every check ok, and Redis among them in production."""
        response = authority.anon.get("/readyz")
        assert response.status_code == 200, response.text
        body = response.json()
        assert body["status"] == "ready"
        assert set(body["checks"].values()) == {"ok"}
        assert {"database", "signing_key", "revocations"} <= set(body["checks"])
        assert ("redis" in body["checks"]) == (engine == "production")

    def test_metrics_count_decisions(self, authority: AuthorityProcess) -> None:
        """After a verify, /metrics (Prometheus text) counts it in coupon_decisions_total."""
        holder = Holder()
        coupon = issue(authority, holder)["coupon"]
        assert verify(authority, verify_body(coupon, holder))["allow"] is True
        response = authority.anon.get("/metrics")
        assert response.status_code == 200
        assert response.headers["content-type"].startswith("text/plain")
        samples = [
            sample
            for family in text_string_to_metric_families(response.text)
            for sample in family.samples
            if sample.name == "coupon_decisions_total"
        ]
        allowed = [
            s
            for s in samples
            if s.labels.get("operation") == "coupon.verify" and s.labels.get("result") == "allow"
        ]
        assert allowed, samples
        assert allowed[0].value >= 1


class TestCorrelation:
    """``X-Request-Id`` and W3C ``traceparent`` in and out."""

    def test_request_id_is_echoed(self, authority: AuthorityProcess) -> None:
        """The X-Request-Id we send comes back, on success and on a problem."""
        request_id = unique("req")
        ok = authority.anon.get("/healthz", headers={"X-Request-Id": request_id})
        assert ok.headers["x-request-id"] == request_id
        denied = authority.anon.post(
            "/v1/coupons", json=issue_body(Holder()), headers={"X-Request-Id": request_id}
        )
        assert denied.headers["x-request-id"] == request_id
        assert denied.json()["request_id"] == request_id

    def test_request_id_is_generated(self, authority: AuthorityProcess) -> None:
        """Without an X-Request-Id, the Authority makes one."""
        assert authority.anon.get("/healthz").headers["x-request-id"]

    def test_traceparent_is_propagated(self, authority: AuthorityProcess) -> None:
        """The response's traceparent and the decision carry the trace id we sent."""
        trace_id = secrets.token_hex(16)
        traceparent = f"00-{trace_id}-{secrets.token_hex(8)}-01"
        holder = Holder()
        coupon = issue(authority, holder)["coupon"]
        response = authority.client.post(
            "/v1/coupons/verify",
            json=verify_body(coupon, holder),
            headers={"traceparent": traceparent},
        )
        assert response.status_code == 200, response.text
        version, returned_trace, span, _flags = response.headers["traceparent"].split("-")
        assert (version, returned_trace) == ("00", trace_id)
        assert len(span) == 16
        assert response.json()["trace_id"] == trace_id

    def test_malformed_traceparent_starts_a_new_trace(self, authority: AuthorityProcess) -> None:
        """A malformed traceparent is ignored: a fresh, valid one comes back."""
        response = authority.anon.get("/healthz", headers={"traceparent": "00-zz-yy-01"})
        assert response.status_code == 200
        version, trace_id, span, _flags = response.headers["traceparent"].split("-")
        assert version == "00"
        assert len(trace_id) == 32
        assert int(trace_id, 16) != 0
        assert len(span) == 16


# -- authentication everywhere -------------------------------------------------------------------


def _protected_operations(openapi: dict[str, Any]) -> list[tuple[str, str, dict[str, Any]]]:
    """(method, path, operation) of every documented operation outside :data:`PUBLIC_PATHS`."""
    operations = []
    for path, item in openapi["paths"].items():
        if path in PUBLIC_PATHS:
            continue
        for method, operation in item.items():
            if method in {"get", "post", "put", "patch", "delete"}:
                operations.append((method.upper(), path, operation))
    return operations


def _call(
    client: httpx.Client, method: str, path: str, operation: dict[str, Any]
) -> httpx.Response:
    """Call one operation with a placeholder path and an empty body of the documented type
    (credentials are checked before the body, so its content does not matter)."""
    concrete = path
    for parameter in operation.get("parameters", []):
        if parameter["in"] == "path":
            concrete = concrete.replace("{" + parameter["name"] + "}", "x1")
    content = operation.get("requestBody", {}).get("content", {})
    if "application/x-www-form-urlencoded" in content:
        return client.request(method, concrete, data={"token": "x"})
    if "application/json" in content:
        return client.request(method, concrete, json={})
    return client.request(method, concrete)


class TestAuthentication:
    """Every protected route, found by walking the OpenAPI document, refuses strangers."""

    def test_openapi_lists_the_protected_routes(self, authority: AuthorityProcess) -> None:
        """The walk covers at least issue, verify, introspect, revoke and both feeds."""
        openapi = authority.anon.get("/v1/openapi.json").json()
        walked = {(m, p) for m, p, _ in _protected_operations(openapi)}
        assert {
            ("POST", "/v1/coupons"),
            ("POST", "/v1/coupons/verify"),
            ("POST", "/v1/coupons/introspect"),
            ("POST", "/v1/revocations"),
            ("GET", "/v1/revocations"),
            ("GET", "/v1/revocations/stream"),
        } <= walked

    def test_every_protected_route_refuses_a_call_without_credentials(
        self, authority: AuthorityProcess
    ) -> None:
        """Each non-public operation answers 401 CPN-AUTH-001 problem+json without a key."""
        openapi = authority.anon.get("/v1/openapi.json").json()
        wrong = []
        for method, path, operation in _protected_operations(openapi):
            response = _call(authority.anon, method, path, operation)
            code = response.json().get("code") if response.content else None
            if response.status_code != 401 or code != "CPN-AUTH-001":
                wrong.append(f"{method} {path}: {response.status_code} {response.text[:200]}")
        assert not wrong, "\n".join(wrong)

    def test_every_protected_route_refuses_an_unknown_key(
        self, authority: AuthorityProcess
    ) -> None:
        """Each non-public operation answers 401 CPN-AUTH-002 to a key it never issued."""
        openapi = authority.anon.get("/v1/openapi.json").json()
        stranger = authority.client_with(f"cpk_{secrets.token_hex(8)}_{secrets.token_urlsafe(32)}")
        wrong = []
        for method, path, operation in _protected_operations(openapi):
            response = _call(stranger, method, path, operation)
            code = response.json().get("code") if response.content else None
            if response.status_code != 401 or code != "CPN-AUTH-002":
                wrong.append(f"{method} {path}: {response.status_code} {response.text[:200]}")
        assert not wrong, "\n".join(wrong)

    def test_public_routes_answer_without_credentials(self, authority: AuthorityProcess) -> None:
        """The public routes answer 200 to anyone."""
        for path in sorted(PUBLIC_PATHS - PUBLIC_WITH_PARAMETERS):
            response = authority.anon.get(path)
            assert response.status_code == 200, f"{path}: {response.status_code}"


# -- admin (last: it changes keys and policy) ----------------------------------------------------


def _policy_envelope(version: str, *, max_ttl: int) -> dict[str, str]:
    data = {
        "defaults": {"max_ttl": max_ttl, "bindings": ["jkt"], "max_depth": 4},
        "grants": [
            {
                "id": "test-issuers",
                "callers": ["*"],
                "roles": ["admin", "issuer"],
                "tenants": ["*"],
                "subjects": ["*"],
                "audiences": ["*"],
                "resources": ["**"],
                "actions": ["*"],
                "purposes": ["*"],
                "max_ttl": max_ttl,
                "bindings": ["jkt", "x5t#S256"],
            }
        ],
    }
    bundle = make_bundle(
        version, {"policy.rego": default_policy_source()}, data, created_at=int(time.time())
    )
    return sign_bundle(bundle, POLICY_KEY).to_dict()


class TestAdmin:
    """The admin API: keys, policy bundles and credentials."""

    def test_admin_lists_keys(self, authority: AuthorityProcess) -> None:
        """GET /v1/admin/keys lists one current key, published in the JWKS."""
        response = authority.client.get("/v1/admin/keys")
        assert response.status_code == 200, response.text
        keys = response.json()["keys"]
        current = [k for k in keys if k["state"] == "current"]
        assert len(current) == 1
        jwks = authority.anon.get("/.well-known/jwks.json").json()
        assert current[0]["kid"] in {k["kid"] for k in jwks["keys"]}

    def test_rotation_and_rollback(self, authority: AuthorityProcess) -> None:
        """Rotating signs with the published next key and keeps old coupons valid; rollback
        returns to the previous key."""
        holder = Holder()
        before = issue(authority, holder)
        rotated = authority.client.post("/v1/admin/keys/rotate")
        assert rotated.status_code == 200, rotated.text
        change = rotated.json()
        assert change["previous_kid"] == before["kid"]
        assert change["signing_kid"] != before["kid"]
        after = issue(authority, holder)
        assert after["kid"] == change["signing_kid"]
        published = {k["kid"] for k in authority.anon.get("/.well-known/jwks.json").json()["keys"]}
        assert {before["kid"], after["kid"], change["next_kid"]} <= published
        assert verify(authority, verify_body(before["coupon"], holder))["allow"] is True
        rolled = authority.client.post("/v1/admin/keys/rollback")
        assert rolled.status_code == 200, rolled.text
        assert rolled.json()["signing_kid"] == before["kid"]
        assert issue(authority, holder)["kid"] == before["kid"]
        assert verify(authority, verify_body(after["coupon"], holder))["allow"] is True

    def test_policy_upload_activate_and_rollback(self, authority: AuthorityProcess) -> None:
        """An uploaded signed bundle, once active, is stamped into coupons and caps their TTL;
        rollback restores the previous policy."""
        version = unique("svc-policy")
        uploaded = authority.client.post(
            "/v1/admin/policies", json=_policy_envelope(version, max_ttl=60)
        )
        assert uploaded.status_code == 201, uploaded.text
        listed = authority.client.get("/v1/admin/policies").json()
        assert version in {p["version"] for p in listed["policies"]}
        previous = listed["active"]
        activated = authority.client.post(f"/v1/admin/policies/{version}/activate")
        assert activated.status_code == 200, activated.text
        try:
            coupon = issue(authority, Holder(), ttl=3000)
            assert coupon["policy_version"] == version
            assert coupon["expires_at"] - coupon["issued_at"] == 60
        finally:
            rolled = authority.client.post("/v1/admin/policies/rollback")
        assert rolled.status_code == 200, rolled.text
        assert rolled.json()["active"] == previous
        assert issue(authority, Holder())["policy_version"] == previous

    def test_forged_policy_is_refused(self, authority: AuthorityProcess) -> None:
        """A bundle signed by an untrusted key: a 4xx problem, and it is not listed."""
        version = unique("svc-forged")
        envelope = _policy_envelope(version, max_ttl=60)
        forged = sign_bundle(
            make_bundle(
                version,
                {"policy.rego": default_policy_source()},
                {"grants": []},
                created_at=int(time.time()),
            ),
            Ed25519PrivateKey.generate(),
        ).to_dict()
        response = authority.client.post("/v1/admin/policies", json={**envelope, **forged})
        assert 400 <= response.status_code < 500, response.text
        assert response.json()["code"].startswith("CPN-POL-")
        listed = authority.client.get("/v1/admin/policies").json()
        assert version not in {p["version"] for p in listed["policies"]}

    def test_created_api_key_has_only_its_roles(self, authority: AuthorityProcess) -> None:
        """POST /v1/admin/api-keys hands out a key that may verify but not issue."""
        response = authority.client.post(
            "/v1/admin/api-keys", json={"name": unique("verifier"), "roles": ["verifier"]}
        )
        assert response.status_code == 201, response.text
        client = authority.client_with(response.json()["api_key"])
        assert_problem(client.post("/v1/coupons", json=issue_body(Holder())), 403, "CPN-AUTH-003")
        holder = Holder()
        coupon = issue(authority, holder)["coupon"]
        decision = client.post("/v1/coupons/verify", json=verify_body(coupon, holder))
        assert decision.status_code == 200, decision.text
        assert decision.json()["allow"] is True

    @pytest.mark.parametrize("after", [2**31, 2**62])
    def test_audit_cursor_past_every_event_is_an_empty_page(
        self, authority: AuthorityProcess, after: int
    ) -> None:
        """GET /v1/audit/events with any accepted cursor past the end gets an empty page."""
        response = authority.client.get("/v1/audit/events", params={"after": after})
        assert response.status_code == 200, response.text
        assert response.json() == {"events": [], "cursor": after}

    def test_api_key_with_unknown_role_is_refused(self, authority: AuthorityProcess) -> None:
        """A credential request naming an unknown role: a 4xx problem."""
        response = authority.client.post(
            "/v1/admin/api-keys", json={"name": unique("x"), "roles": ["superuser"]}
        )
        assert 400 <= response.status_code < 500, response.text

    @pytest.mark.parametrize(
        ("method", "path"),
        [
            ("GET", "/v1/admin/keys"),
            ("POST", "/v1/admin/keys/rotate"),
            ("POST", "/v1/admin/keys/rollback"),
            ("POST", "/v1/admin/policies/rollback"),
        ],
    )
    def test_admin_routes_refuse_other_roles(
        self, authority: AuthorityProcess, method: str, path: str
    ) -> None:
        """An issuer credential is not an admin: 403 CPN-AUTH-003."""
        client = authority.client_with(add_api_key(authority.database_url, ["issuer"]))
        assert_problem(client.request(method, path), 403, "CPN-AUTH-003")
