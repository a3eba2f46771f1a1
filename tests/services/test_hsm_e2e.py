"""``coupon up`` with ``COUPON_KEY_BACKEND=pkcs11`` on a fresh SoftHSM2 token: coupons and
checkpoints signed in the token, keys that never leave it, and HSM outages failing closed."""

from __future__ import annotations

import sqlite3
from collections.abc import Iterator
from pathlib import Path

import jwt as pyjwt
import pytest
from tests.services.harness import AuthorityProcess, Holder, issue, issue_body, verify, verify_body
from tests.services.hsm_support import (
    inspect_token,
    launch_unready,
    metric,
    pkcs11_env,
    wait_until,
)
from tests.softhsm_fixtures import SoftHsm, Token, require_softhsm

from coupon.keys import parse_reference
from coupon.ledger import open_checkpoint, parse_vkey

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def hsm(tmp_path_factory: pytest.TempPathFactory) -> SoftHsm:
    """A SoftHSM2 installation for this module's Authority (not this process's)."""
    require_softhsm()
    return SoftHsm(tmp_path_factory.mktemp("hsm-e2e"))


@pytest.fixture(scope="module")
def token(hsm: SoftHsm) -> Token:
    """A fresh token: the Authority generates every key in it."""
    return hsm.init_token("coupon-e2e")


@pytest.fixture(scope="module")
def authority(
    hsm: SoftHsm, token: Token, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[AuthorityProcess]:
    """One Authority on the token, shared by the module's tests (each leaves it running)."""
    root = tmp_path_factory.mktemp("authority-hsm")
    proc = AuthorityProcess(data_dir=root, env=pkcs11_env(hsm, token), name="hsm")
    proc.start()
    yield proc
    proc.close()


def coupon_kids(data_dir: Path) -> list[tuple[str, bytes | None]]:
    """(kid, sealed_private) of every coupon key in the Authority's database."""
    with sqlite3.connect(data_dir / "authority.db") as db:
        return list(db.execute("SELECT kid, sealed_private FROM keys"))


def ledger_rows(data_dir: Path) -> list[tuple[str, bytes]]:
    """(key_id, sealed_private) of every checkpoint key in the Ledger's database."""
    with sqlite3.connect(data_dir / "ledger.db") as db:
        return list(db.execute("SELECT key_id, sealed_private FROM ledger_keys"))


class TestSignedInTheToken:
    """What the Authority signs, it signs in the token; verifiers need only public keys."""

    def test_coupons_verify_against_the_jwks(self, authority: AuthorityProcess) -> None:
        """An issued coupon verifies with PyJWT against the published JWKS, and the Authority
        allows it."""
        holder = Holder()
        answer = issue(authority, holder)
        jwks = authority.anon.get("/.well-known/jwks.json").json()
        key = pyjwt.PyJWKSet.from_dict(jwks)[answer["kid"]].key
        claims = pyjwt.decode(
            answer["coupon"], key=key, algorithms=["EdDSA"], audience="orders", leeway=30
        )
        assert claims["jti"] == answer["jti"]
        assert verify(authority, verify_body(answer["coupon"], holder))["allow"] is True

    def test_checkpoints_verify_with_the_published_ledger_key(
        self, authority: AuthorityProcess
    ) -> None:
        """The newest checkpoint verifies with the Ledger's published vkey, and that key is
        held in the token."""
        issue(authority, Holder())  # something new to checkpoint
        keys = authority.anon.get("/v1/ledger/key").json()
        verifiers = [parse_vkey(k["vkey"]) for k in keys["keys"] if k["active"]]

        def checkpoint() -> int:
            note = authority.anon.get("/v1/ledger/checkpoint").text
            return open_checkpoint(note, verifiers, origin=keys["origin"])[0].size

        assert wait_until(checkpoint, what="a checkpoint") > 0
        for key_id, sealed in ledger_rows(authority.data_dir):
            assert parse_reference(sealed) == ("coupon-e2e", f"ledger:{key_id}".encode())

    def test_private_keys_never_leave_the_token(
        self, authority: AuthorityProcess, hsm: SoftHsm, token: Token
    ) -> None:
        """The database holds references only; the token, asked by another application that
        has the PIN, refuses to reveal or wrap any of the keys, all generated on the device."""
        kids = coupon_kids(authority.data_dir)
        assert len(kids) >= 2
        for kid, sealed in kids:
            assert parse_reference(sealed) == ("coupon-e2e", kid.encode())
        ids = [kid for kid, _ in kids] + [f"ledger:{k}" for k, _ in ledger_rows(authority.data_dir)]
        found = inspect_token(hsm, token, ids)
        for object_id in ids:
            assert found[object_id] == {
                "SENSITIVE": True,
                "EXTRACTABLE": False,
                "ALWAYS_SENSITIVE": True,
                "NEVER_EXTRACTABLE": True,
                "LOCAL": True,
                "TOKEN": True,
                "VALUE": "AttributeSensitive",
                "WRAP": "KeyUnextractable",
            }, object_id


class TestOutage:
    """The token goes away under a running Authority, and comes back."""

    def test_fails_closed_alerts_and_recovers(
        self, authority: AuthorityProcess, hsm: SoftHsm
    ) -> None:
        """Issuance answers 503 CPN-DEP-004, /readyz says why, coupon_signer_up is 0 and the
        failure is counted and logged; verification and the JWKS keep working; once the
        token is back the Authority signs again with the same key."""
        holder = Holder()
        before = issue(authority, holder)
        with hsm.removed():
            response = authority.client.post("/v1/coupons", json=issue_body(Holder()))
            assert response.status_code == 503, response.text
            assert response.json()["code"] == "CPN-DEP-004"
            assert response.headers["Retry-After"] == "1"
            ready = authority.anon.get("/readyz")
            assert ready.status_code == 503
            assert "HSM token 'coupon-e2e' is unavailable" in ready.json()["checks"]["signing_key"]
            assert metric(authority, "coupon_signer_up", backend="pkcs11") == 0
            failures = metric(authority, "coupon_signer_failures_total", backend="pkcs11")
            assert failures is not None
            assert failures >= 1
            assert authority.anon.get("/.well-known/jwks.json").status_code == 200
            assert verify(authority, verify_body(before["coupon"], holder))["allow"] is True
        wait_until(lambda: authority.anon.get("/readyz").status_code == 200, what="readiness again")
        after = issue(authority, Holder())
        assert after["kid"] == before["kid"]
        assert metric(authority, "coupon_signer_up", backend="pkcs11") == 1
        log = authority.stderr_path.read_text()
        assert '"event": "signer_down"' in log
        assert '"event": "signer_up"' in log

    def test_a_wrong_pin_after_restart(self, authority: AuthorityProcess, token: Token) -> None:
        """Restarted with a wrong PIN, the Authority runs but is not ready and signs nothing
        (no software key exists to fall back to); with the right PIN it signs with the same
        keys again."""
        kid = issue(authority, Holder())["kid"]
        authority.terminate()
        authority.env["COUPON_PKCS11_PIN"] = "wrong-pin"
        try:
            launch_unready(authority)
            ready = authority.anon.get("/readyz")
            assert ready.status_code == 503
            assert "PinIncorrect" in ready.json()["checks"]["signing_key"]
            response = authority.client.post("/v1/coupons", json=issue_body(Holder()))
            assert response.status_code == 503
            assert response.json()["code"] == "CPN-DEP-004"
            assert metric(authority, "coupon_signer_up", backend="pkcs11") == 0
            assert '"reason": "pin"' in authority.stderr_path.read_text()
        finally:
            authority.terminate()
            authority.env["COUPON_PKCS11_PIN"] = token.pin
        authority.start()
        assert issue(authority, Holder())["kid"] == kid

    def test_the_sealed_backend_does_not_sign_with_hsm_keys(
        self, authority: AuthorityProcess
    ) -> None:
        """The same data directory started with the default backend cannot sign: its keys
        are in the token, and nothing falls back to a software key."""
        authority.terminate()
        authority.env["COUPON_KEY_BACKEND"] = "sealed"
        try:
            launch_unready(authority)
            ready = authority.anon.get("/readyz").json()
            assert "COUPON_KEY_BACKEND=pkcs11" in ready["checks"]["signing_key"]
            response = authority.client.post("/v1/coupons", json=issue_body(Holder()))
            assert response.status_code == 503
            assert response.json()["code"] == "CPN-DEP-004"
        finally:
            authority.terminate()
            authority.env["COUPON_KEY_BACKEND"] = "pkcs11"
        authority.start()


def test_es256_keys_in_the_token(hsm: SoftHsm, tmp_path: Path) -> None:
    """With COUPON_KEY_ALGORITHM=ES256 the P-256 key is made in the token and its raw
    ``r || s`` signatures verify with PyJWT."""
    token = hsm.init_token("coupon-es256")
    with AuthorityProcess(
        data_dir=tmp_path, env=pkcs11_env(hsm, token, alg="ES256"), name="hsm-es256"
    ) as proc:
        proc.start()
        holder = Holder()
        answer = issue(proc, holder)
        jwks = proc.anon.get("/.well-known/jwks.json").json()
        key = pyjwt.PyJWKSet.from_dict(jwks)[answer["kid"]].key
        assert pyjwt.decode(
            answer["coupon"], key=key, algorithms=["ES256"], audience="orders", leeway=30
        )
        assert verify(proc, verify_body(answer["coupon"], holder))["allow"] is True
