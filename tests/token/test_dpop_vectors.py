"""Known answers from RFC 9449 (provenance: tests/vectors/README.md, "RFC 9449")."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from coupon import codes
from coupon.errors import CouponError
from coupon.token._dpop import ath_for, verify_dpop_proof
from coupon.token.hazmat import jwk_thumbprint

VECTORS: dict[str, Any] = json.loads(
    (Path(__file__).parent.parent / "vectors" / "rfc9449.json").read_text()
)
PROOFS = {v["name"]: v for v in VECTORS["proofs"]}


def check(vector: dict[str, Any], **overrides: Any) -> Any:
    """Verify a published proof with the request its figure shows (ES256 is allowed by default)."""
    args: dict[str, Any] = {
        "method": vector["method"],
        "uri": vector["uri"],
        "now": vector["now"],
        "access_token": vector["access_token"],
        **overrides,
    }
    return verify_dpop_proof(vector["proof"], **args)


class TestRfc9449Proofs:
    @pytest.mark.parametrize("name", sorted(PROOFS))
    def test_published_proof_verifies(self, name: str) -> None:
        """Each published proof verifies at its own iat and yields the published values."""
        vector = PROOFS[name]
        proof = check(vector)
        expected = vector["expected"]
        actual = {key: getattr(proof, key) for key in expected}
        assert actual == expected

    def test_figure_2_token_request(self) -> None:
        """The §4.1 proof, checked at iat 1562262616 for POST https://server.example.com/token."""
        vector = PROOFS["rfc9449-figure-2"]
        assert (vector["now"], vector["method"], vector["uri"]) == (
            1562262616,
            "POST",
            "https://server.example.com/token",
        )
        assert check(vector).jkt == "0ZcOCORZNYy-DWpqq30jZyJGHTN0d2HglBV3uiguA4I"

    def test_figure_13_needs_its_token(self) -> None:
        """The §7.1 proof is bound to its access token: another token fails ath."""
        with pytest.raises(CouponError) as info:
            check(PROOFS["rfc9449-figure-13"], access_token="another-token")
        assert info.value.code is codes.POP_ATH

    def test_figure_2_expires(self) -> None:
        """An hour after its iat the published proof is too old."""
        vector = PROOFS["rfc9449-figure-2"]
        with pytest.raises(CouponError) as info:
            check(vector, now=vector["now"] + 3600)
        assert info.value.code is codes.POP_IAT

    @pytest.mark.parametrize(
        ("overrides", "code"),
        [
            ({"method": "GET"}, codes.POP_HTM),
            ({"uri": "https://server.example.com/other"}, codes.POP_HTU),
            ({"algorithms": frozenset({"EdDSA"})}, codes.POP_ALG),
        ],
    )
    def test_figure_2_request_mismatch(self, overrides: dict[str, Any], code: Any) -> None:
        """The published proof is refused for another method, URI or algorithm policy."""
        with pytest.raises(CouponError) as info:
            check(PROOFS["rfc9449-figure-2"], **overrides)
        assert info.value.code is code

    def test_figure_2_signature_bit_flip(self) -> None:
        """One changed character of the published signature makes it fail."""
        vector = dict(PROOFS["rfc9449-figure-2"])
        head, payload, sig = vector["proof"].split(".")
        vector["proof"] = f"{head}.{payload}.{'B' if sig[0] == 'A' else 'A'}{sig[1:]}"
        with pytest.raises(CouponError) as info:
            check(vector)
        assert info.value.code is codes.POP_SIGNATURE


class TestRfc9449Thumbprint:
    @pytest.mark.parametrize("vector", VECTORS["thumbprints"], ids=lambda v: v["name"])
    def test_jkt(self, vector: dict[str, Any]) -> None:
        """The §6.1 jkt is the RFC 7638 thumbprint of the proofs' key."""
        assert jwk_thumbprint(vector["jwk"]) == vector["jkt"]


class TestRfc9449Ath:
    @pytest.mark.parametrize("vector", VECTORS["ath"], ids=lambda v: v["name"])
    def test_ath(self, vector: dict[str, Any]) -> None:
        """The §7.1 ath is base64url(SHA-256) of the access token."""
        assert ath_for(vector["access_token"]) == vector["ath"]
