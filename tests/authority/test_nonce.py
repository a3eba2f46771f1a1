"""DPoP server nonces: stateless, time-stamped, shared by every process with the secret."""

from __future__ import annotations

import base64

import pytest

from coupon import codes
from coupon.authority._nonce import NonceService, server_time
from coupon.errors import NonceRequired
from coupon.token import NonceChecker, SigningKey, create_dpop_proof, verify_dpop_proof

NOW = 1_700_000_000
SECRET = b"s" * 32
URI = "https://authority.example/v1/coupons/verify"


@pytest.fixture
def nonces() -> NonceService:
    return NonceService(SECRET, lifetime=300)


def refused(service: NonceService, nonce: str | None, now: float, reason: str) -> None:
    with pytest.raises(NonceRequired, match=reason) as info:
        service.check(nonce, now=now)
    assert info.value.code is codes.POP_NONCE
    assert info.value.code.protocol == "use_dpop_nonce"


class TestRoundTrip:
    def test_is_a_nonce_checker(self, nonces: NonceService) -> None:
        """The service plugs into verify_dpop_proof as its NonceChecker."""
        checker: NonceChecker = nonces
        checker.check(nonces.issue(NOW), now=NOW)

    def test_accepted_for_its_lifetime(self, nonces: NonceService) -> None:
        """A nonce passes from issue until lifetime seconds later, then expires."""
        nonce = nonces.issue(NOW)
        nonces.check(nonce, now=NOW)
        nonces.check(nonce, now=NOW + 300)
        refused(nonces, nonce, NOW + 301, "expired")

    def test_sibling_process_accepts(self, nonces: NonceService) -> None:
        """Another process with the same secret accepts the nonce; another secret does not."""
        nonce = nonces.issue(NOW)
        NonceService(SECRET, lifetime=300).check(nonce, now=NOW + 1)
        refused(NonceService(b"t" * 32, lifetime=300), nonce, NOW + 1, "not issued")

    def test_carries_server_time(self, nonces: NonceService) -> None:
        """A client reads the server's clock from the nonce; fractions are dropped."""
        assert server_time(nonces.issue(NOW + 0.9)) == NOW

    def test_shape(self, nonces: NonceService) -> None:
        """32 base64url characters: an 8-byte timestamp and a 16-byte tag."""
        nonce = nonces.issue(NOW)
        assert len(nonce) == 32
        assert base64.urlsafe_b64decode(nonce)[:8] == NOW.to_bytes(8, "big")

    def test_in_a_dpop_proof(self, nonces: NonceService) -> None:
        """A proof carrying a fresh nonce verifies; one carrying a forged nonce does not."""
        key = SigningKey.generate()
        good = create_dpop_proof(
            key, method="POST", uri=URI, now=NOW, jti="j1", nonce=nonces.issue(NOW)
        )
        assert verify_dpop_proof(good, method="POST", uri=URI, now=NOW, nonces=nonces).jti == "j1"
        forged = NonceService(b"x" * 32, lifetime=300).issue(NOW)
        bad = create_dpop_proof(key, method="POST", uri=URI, now=NOW, jti="j2", nonce=forged)
        with pytest.raises(NonceRequired):
            verify_dpop_proof(bad, method="POST", uri=URI, now=NOW, nonces=nonces)


class TestRefused:
    @pytest.mark.parametrize("nonce", [None, ""])
    def test_missing(self, nonces: NonceService, nonce: str | None) -> None:
        """No nonce: the client is told to fetch one."""
        refused(nonces, nonce, NOW, "required")

    @pytest.mark.parametrize(
        "nonce",
        ["abc", "A" * 31, "A" * 33, "A" * 31 + "=", "A" * 31 + "+", "A" * 31 + "/", "Ä" * 32],
    )
    def test_malformed(self, nonces: NonceService, nonce: str) -> None:
        """Wrong length or characters outside base64url are refused, never a ValueError."""
        refused(nonces, nonce, NOW, "malformed")
        with pytest.raises(NonceRequired):
            server_time(nonce)

    @pytest.mark.parametrize("byte", range(24))
    def test_every_byte_is_covered(self, nonces: NonceService, byte: int) -> None:
        """Flipping any bit of any byte (timestamp or tag) makes the nonce unacceptable."""
        raw = bytearray(base64.urlsafe_b64decode(nonces.issue(NOW)))
        raw[byte] ^= 0x01
        tampered = base64.urlsafe_b64encode(bytes(raw)).decode()
        refused(nonces, tampered, NOW, "not issued")

    def test_from_the_future(self, nonces: NonceService) -> None:
        """A nonce stamped past now + skew is refused; within the skew it passes."""
        nonces.check(nonces.issue(NOW + 5), now=NOW)
        refused(nonces, nonces.issue(NOW + 6), NOW, "future")


class TestMisuse:
    def test_short_secret(self) -> None:
        """A secret shorter than 16 bytes is a programming error."""
        with pytest.raises(ValueError, match="16 bytes"):
            NonceService(b"short", lifetime=60)

    @pytest.mark.parametrize(("lifetime", "skew"), [(0, 5), (60, -1)])
    def test_bad_windows(self, lifetime: int, skew: int) -> None:
        """A non-positive lifetime or a negative skew is a programming error."""
        with pytest.raises(ValueError, match="lifetime"):
            NonceService(SECRET, lifetime=lifetime, skew=skew)
