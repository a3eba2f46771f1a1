"""The PKCS#11 connection (``coupon.keys._pkcs11``) through real SoftHSM2 outages: it fails
closed, raises the alert, logs, and reconnects; and the keyring never falls back."""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pkcs11
import pytest
import pytest_asyncio
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.utils import encode_dss_signature
from hypothesis import given
from hypothesis import strategies as st
from structlog.testing import capture_logs
from tests.keys.hsm_support import Events, open_token, wait_for
from tests.softhsm_fixtures import MODULE, SoftHsm, Token

from coupon import codes
from coupon.errors import DependencyUnavailable
from coupon.keys import Keyring, Pkcs11Keys, Pkcs11Token, SignerDown, parse_reference, reference
from coupon.keys._events import classify
from coupon.keys._hsm import _jws_signature
from coupon.keys._pkcs11 import _module
from coupon.observability import SignerMetrics
from coupon.storage.sql import SqlStore

REASONS = {"pin", "token", "key", "session", "device", "library", "busy", "other"}
P256_ORDER = int("FFFFFFFF00000000FFFFFFFFFFFFFFFFBCE6FAADA7179E84F3B9CAC2FC632551", 16)


@pytest.fixture
def metrics() -> SignerMetrics:
    """The alert metrics on a registry of their own."""
    return SignerMetrics()


@pytest.fixture
def hsm(hsm_token: Token, metrics: SignerMetrics) -> Iterator[Pkcs11Token]:
    """A connected token reporting to ``metrics``."""
    token = open_token(hsm_token, hooks=(metrics,))
    yield token
    token.close()


def sample(metrics: SignerMetrics, name: str, **labels: str) -> float | None:
    """One sample of the alert metrics."""
    return metrics.registry.get_sample_value(name, {"backend": "pkcs11", **labels})


class TestOutage:
    """The token disappears while the process runs, then comes back."""

    def test_signing_fails_closed_alerts_and_recovers(
        self, softhsm: SoftHsm, hsm: Pkcs11Token, metrics: SignerMetrics
    ) -> None:
        """Signing answers CPN-DEP-004 while the token is gone (the gauge is 0, the failure
        is counted and logged); once it is back the watcher reconnects and signing works."""
        signer, _ = Pkcs11Keys(hsm).generate("EdDSA")
        assert signer.public.verify(signer.sign(b"before"), b"before")
        assert sample(metrics, "coupon_signer_up") == 1
        with capture_logs() as logs:
            with softhsm.removed():
                with pytest.raises(DependencyUnavailable) as caught:
                    signer.sign(b"during")
                assert caught.value.code is codes.UNAVAILABLE_SIGNER
                assert hsm.problem is not None
                assert sample(metrics, "coupon_signer_up") == 0
                with pytest.raises(DependencyUnavailable):  # fails fast, no device call
                    signer.sign(b"during")
                time.sleep(0.6)  # reconnect attempts fail while the token is away
                assert not hsm.up
            wait_for(lambda: hsm.up, what="reconnecting")
        assert signer.public.verify(signer.sign(b"after"), b"after")
        assert sample(metrics, "coupon_signer_up") == 1
        failures = sum(
            sample(metrics, "coupon_signer_failures_total", reason=r) or 0 for r in REASONS
        )
        assert failures >= 2  # the sign, then at least one reconnect attempt
        events = [e["event"] for e in logs]
        assert events.count("signer_down") == 1
        assert "signer_up" in events
        down = next(e for e in logs if e["event"] == "signer_down")
        assert down["log_level"] == "error"
        assert down["retrying"] is True

    def test_probe_notices_an_idle_outage(self, softhsm: SoftHsm, hsm: Pkcs11Token) -> None:
        """With nobody signing, the health probe still marks the token down, and up again."""
        with softhsm.removed():
            wait_for(lambda: not hsm.up, what="the probe noticing")
            assert hsm.problem is not None
            assert hsm.problem.startswith(("device", "token"))  # the probe, or a reconnect
        wait_for(lambda: hsm.up, what="reconnecting")

    def test_a_killed_session_is_replaced(self, hsm: Pkcs11Token) -> None:
        """A session closed behind our back fails one call, then the token reconnects."""
        signer, _ = Pkcs11Keys(hsm).generate("ES256")
        session = hsm._session
        assert session is not None
        with _module(MODULE).lock:
            session.close()
        with pytest.raises(DependencyUnavailable):
            signer.sign(b"x")
        wait_for(lambda: hsm.up, what="reconnecting")
        assert signer.public.verify(signer.sign(b"x"), b"x")

    def test_a_busy_module_fails_fast(self, hsm: Pkcs11Token) -> None:
        """A call stuck in the device holds the lock: others fail after the timeout instead of
        queueing forever, and the token is marked down until the lock is free again."""
        hsm._timeout = 0.2
        signer, _ = Pkcs11Keys(hsm).generate("EdDSA")
        lock = _module(MODULE).lock
        held = threading.Event()
        release = threading.Event()

        def stuck() -> None:
            with lock:
                held.set()
                release.wait(5)

        thread = threading.Thread(target=stuck)
        thread.start()
        held.wait(5)
        started = time.monotonic()
        with pytest.raises(DependencyUnavailable, match="busy"):
            signer.sign(b"x")
        assert time.monotonic() - started < 1.0
        assert hsm.problem is not None
        assert hsm.problem.startswith("busy")
        release.set()
        thread.join()
        wait_for(lambda: hsm.up, what="reconnecting")
        assert signer.public.verify(signer.sign(b"x"), b"x")


class TestRefusedStart:
    """A token that cannot be used from the start: the process runs, signing fails closed."""

    def test_a_wrong_pin_is_never_retried(self, hsm_token: Token) -> None:
        """A refused PIN leaves the token down for good: one login attempt only (retrying
        could lock a real token's user PIN)."""
        events = Events()
        token = open_token(hsm_token, pin="not-the-pin", hooks=(events,), probe_interval=0.1)
        try:
            assert token.problem is not None
            assert token.problem.startswith("pin")
            time.sleep(0.8)  # eight probe intervals: a retrying watcher would try again
            assert events.names() == ["SignerFailed", "SignerDown"]  # one login attempt
            assert token._permanent
            with pytest.raises(DependencyUnavailable, match="PinIncorrect"):
                token.call("sign", lambda session: None)
        finally:
            token.close()

    def test_a_hook_added_later_hears_the_state(self, hsm_token: Token) -> None:
        """``add_hook`` tells a late hook why the token is down (the alert at startup)."""
        token = open_token(hsm_token, pin="not-the-pin")
        try:
            events = Events()
            token.add_hook(events)
            (down,) = events.seen
            assert isinstance(down, SignerDown)
            assert down.reason == "pin"
            assert down.retrying is False
        finally:
            token.close()

    def test_a_missing_module(self, tmp_path: Path, hsm_token: Token) -> None:
        """A module file that does not load is reported, not raised."""
        token = open_token(hsm_token, module=str(tmp_path / "missing.so"))
        try:
            assert token.problem is not None
            assert token.problem.startswith("library")
        finally:
            token.close()

    def test_an_unknown_token_label(self, hsm_token: Token) -> None:
        """A label no token has: down (and retried, it may be plugged in)."""
        token = open_token(Token("no-such-token", hsm_token.pin))
        try:
            assert token.problem is not None
            assert token.problem.startswith("token")
            assert not token._permanent
        finally:
            token.close()


@pytest_asyncio.fixture
async def store(tmp_path: Path) -> AsyncIterator[SqlStore]:
    """The Authority's SQLite store (its keys table)."""
    sql = await SqlStore.connect(f"sqlite+aiosqlite:///{tmp_path}/keys.db")
    await sql.migrate()
    yield sql
    await sql.close()


class TestKeyring:
    """The keyring over the PKCS#11 backend: no software fallback, ever."""

    @pytest.mark.asyncio
    async def test_outage_fails_closed_and_rotation_waits(
        self, softhsm: SoftHsm, hsm: Pkcs11Token, store: SqlStore
    ) -> None:
        """During an outage the keyring refuses to hand out a signer and to rotate; the JWKS
        is still served; afterwards both work with the same keys."""
        keyring = await Keyring.open(store, Pkcs11Keys(hsm), alg="ES256", max_ttl=60, leeway=5)
        kid = keyring.signer.kid
        records = await store.list_keys()
        assert all(parse_reference(r.sealed_private) for r in records)
        with softhsm.removed():
            wait_for(lambda: not hsm.up, what="the probe noticing")
            with pytest.raises(DependencyUnavailable) as caught:
                _ = keyring.signer
            assert caught.value.code is codes.UNAVAILABLE_SIGNER
            with pytest.raises(DependencyUnavailable):
                await keyring.rotate("test")
            assert await store.list_keys() == records  # nothing changed
            assert len(keyring.jwks()["keys"]) == 2
        await asyncio.to_thread(wait_for, lambda: hsm.up, what="reconnecting")
        assert keyring.signer.kid == kid
        event = await keyring.rotate("test")
        assert event.previous_kid == kid


class TestProperties:
    """Invariants of the pure helpers."""

    @given(label=st.text(min_size=1, max_size=32), object_id=st.binary(min_size=1, max_size=64))
    def test_references_round_trip(self, label: str, object_id: bytes) -> None:
        """Any label and id survive the RFC 7512 URI, which stays ASCII."""
        uri = reference(label, object_id)
        assert uri.isascii()
        assert parse_reference(uri) == (label, object_id)

    @given(blob=st.binary(max_size=200))
    def test_anything_else_is_not_a_reference(self, blob: bytes) -> None:
        """Random bytes (a sealed blob) never parse as a reference, and never raise."""
        result = parse_reference(b"pkcs11:" + blob)
        assert result is None or isinstance(result, tuple)
        if not blob.startswith(b"pkcs11:"):
            assert parse_reference(b"\x01" + blob) is None

    @given(r=st.integers(1, P256_ORDER - 1), s=st.integers(1, P256_ORDER - 1))
    def test_der_signatures_become_raw(self, r: int, s: int) -> None:
        """A module answering ECDSA in DER is converted to the JWS ``r || s``."""
        raw = r.to_bytes(32, "big") + s.to_bytes(32, "big")
        assert _jws_signature("ES256", encode_dss_signature(r, s)) == raw
        assert _jws_signature("ES256", raw) == raw

    def test_every_pkcs11_error_has_a_bounded_reason(self) -> None:
        """Each python-pkcs11 exception maps to one of the metric's reason labels."""
        errors = [
            value
            for value in vars(pkcs11.exceptions).values()
            if isinstance(value, type) and issubclass(value, pkcs11.PKCS11Error)
        ]
        assert len(errors) > 50
        assert {classify(error()) for error in errors} <= REASONS
        assert classify(pkcs11.PinIncorrect()) == "pin"
        assert classify(pkcs11.ObjectHandleInvalid()) == "key"
        assert classify(pkcs11.PKCS11Error("OS exception while loading x.so")) == "library"

    def test_p256_order(self) -> None:
        """The order used above is P-256's (a signature's r and s are below it)."""
        key = ec.generate_private_key(ec.SECP256R1())
        assert key.curve.name == "secp256r1"
        assert P256_ORDER.bit_length() == 256
