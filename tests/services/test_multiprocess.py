"""Two ``coupon up`` processes on one PostgreSQL database and one Redis prefix act as one
Authority: shared keys, coupons, revocations (pushed within 2 s) and DPoP replay guard.

Both processes share the master key, the admin key and the issuer name (as replicas behind one
load balancer would). The shared pair starts one after the other; a separate test starts three
replicas at the same moment, so that migrations, key creation and the admin bootstrap race as
they do in a real roll-out.
"""

from __future__ import annotations

import itertools
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import pytest
from tests.services.harness import (
    AuthorityProcess,
    Holder,
    Launcher,
    issue,
    revoke,
    unique,
    verify,
    verify_body,
)

#: The issue's bound: a revoke on one process is enforced by the others within this.
PROPAGATION_BOUND = 2.0
ISSUER = "https://authority.coupon.test"

Pair = tuple[AuthorityProcess, AuthorityProcess]


@pytest.fixture(scope="module")
def pair(module_launcher: Launcher, pg_url: str) -> Iterator[Pair]:
    """Processes A and B on the session's database and one Redis prefix, A started first."""
    shared = module_launcher.production_env(database_url=pg_url)
    env = {**shared.env(), "COUPON_ISSUER": ISSUER}
    a = module_launcher.start("production", name="replica-a", env=env)
    b = module_launcher.start("production", name="replica-b", env=env)
    yield a, b
    a.close()
    b.close()


def decide(proc: AuthorityProcess, body: dict[str, Any]) -> tuple[bool, str | None]:
    """(allow, code) of one verification on ``proc``."""
    answer = verify(proc, body)
    return answer["allow"], answer.get("code")


class TestSharedState:
    """What one process writes, the other reads."""

    def test_both_publish_the_same_jwks(self, pair: Pair) -> None:
        """A and B publish identical key sets."""
        a, b = pair
        jwks_a = a.anon.get("/.well-known/jwks.json").json()
        jwks_b = b.anon.get("/.well-known/jwks.json").json()
        assert jwks_a == jwks_b

    def test_both_accept_the_shared_admin_key(self, pair: Pair) -> None:
        """The bootstrap admin key works on both processes."""
        a, b = pair
        assert a.admin_key == b.admin_key
        assert a.client.get("/v1/revocations").status_code == 200
        assert b.client.get("/v1/revocations").status_code == 200

    @pytest.mark.parametrize("direction", ["a-to-b", "b-to-a"])
    def test_coupon_issued_on_one_verifies_on_the_other(self, pair: Pair, direction: str) -> None:
        """A coupon issued by one process is allowed by the other."""
        issuer, verifier = pair if direction == "a-to-b" else pair[::-1]
        holder = Holder()
        coupon = issue(issuer, holder)
        assert coupon["claims"]["iss"] == ISSUER
        assert decide(verifier, verify_body(coupon["coupon"], holder)) == (True, None)


class TestRevocationFanOut:
    """A revocation made on A reaches B."""

    def test_revocation_on_a_is_enforced_by_b_within_2s(self, pair: Pair) -> None:
        """B denies a coupon revoked on A with CPN-REV-001 within 2 s of the revoke call."""
        a, b = pair
        holder = Holder()
        coupon = issue(a, holder, subject=unique("fanout"))
        assert decide(b, verify_body(coupon["coupon"], holder)) == (True, None)
        started = time.monotonic()
        revoke(a, "jti", coupon["jti"])
        while True:
            allow, code = decide(b, verify_body(coupon["coupon"], holder))
            elapsed = time.monotonic() - started
            if not allow:
                break
            assert elapsed < PROPAGATION_BOUND, f"B still allowed {elapsed:.3f}s after revoke"
            time.sleep(0.01)
        assert code == "CPN-REV-001"
        assert elapsed < PROPAGATION_BOUND, f"B enforced it only after {elapsed:.3f}s"

    def test_revocation_on_a_is_in_bs_feed(self, pair: Pair) -> None:
        """B's pull feed lists a revocation made on A under the same seq."""
        a, b = pair
        answer = revoke(a, "subject", unique("feed"))
        record = answer["revocations"][0]
        page = b.client.get("/v1/revocations", params={"after": record["seq"] - 1}).json()
        assert page["revocations"][0] == record


class TestSharedReplayGuard:
    """One DPoP proof is good for one verification across the whole deployment."""

    def test_same_proof_on_both_succeeds_once(self, pair: Pair) -> None:
        """The proof is allowed on A, then refused on B with CPN-RPL-001."""
        a, b = pair
        holder = Holder()
        coupon = issue(a, holder)["coupon"]
        proof = holder.proof(token=coupon)
        assert decide(a, verify_body(coupon, holder, proof=proof)) == (True, None)
        assert decide(b, verify_body(coupon, holder, proof=proof)) == (False, "CPN-RPL-001")

    def test_same_proof_raced_on_both_succeeds_once(self, pair: Pair) -> None:
        """Sent to A and B at the same moment, several times each, the proof is allowed once."""
        a, b = pair
        holder = Holder()
        coupon = issue(a, holder)["coupon"]
        body = verify_body(coupon, holder)
        targets = [a, b] * 4
        with ThreadPoolExecutor(max_workers=len(targets)) as pool:
            results = list(pool.map(lambda proc: decide(proc, body), targets))
        assert results.count((True, None)) == 1, results
        assert results.count((False, "CPN-RPL-001")) == len(targets) - 1, results


class TestConcurrentStart:
    """Replicas started at the same moment on an empty database."""

    def test_simultaneous_start_agrees_at_once(self, launcher: Launcher) -> None:
        """Three replicas launched together publish one JWKS as soon as they are ready, and
        each accepts the coupons of the others (no waiting for a key reload)."""
        env = {**launcher.production_env().env(), "COUPON_ISSUER": ISSUER}
        replicas = [
            launcher.process("production", name=f"cold-{n}", env=env) for n in ("a", "b", "c")
        ]
        for replica in replicas:
            replica.launch()
        for replica in replicas:
            replica.wait_ready()
        jwks = [r.anon.get("/.well-known/jwks.json").json() for r in replicas]
        assert all(j == jwks[0] for j in jwks), jwks
        holder = Holder()
        coupons = [issue(r, holder) for r in replicas]
        wrong = []
        for (issuer, coupon), verifier in itertools.product(
            zip(replicas, coupons, strict=True), replicas
        ):
            allow, code = decide(verifier, verify_body(coupon["coupon"], holder))
            if not allow:
                wrong.append(f"{verifier.name} denied kid {coupon['kid']} of {issuer.name}: {code}")
        assert not wrong, "\n".join(wrong)
