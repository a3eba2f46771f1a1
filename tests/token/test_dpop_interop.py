"""Interop with joserfc 1.8: its DPoP-shaped JWTs verify with us, ours verify with it.

joserfc has no DPoP layer, so the proofs are built and checked as plain JWS with the RFC 9449
header and claims; what matters is that both sides agree on bytes, keys and thumbprints.
"""

from __future__ import annotations

import json
from typing import Any

import pytest
from joserfc import jws, jwt
from joserfc.errors import BadSignatureError, SecurityWarning
from joserfc.jwk import ECKey, GuestProtocol, OKPKey, RSAKey

from coupon import codes
from coupon.errors import InvalidProof
from coupon.token._dpop import ath_for, create_dpop_proof, verify_dpop_proof
from coupon.token._keys import SigningKey

NOW = 1_700_000_000
METHOD = "POST"
URI = "https://api.example.com/token"
TOKEN = "an-access-token"

JoseKey = ECKey | OKPKey | RSAKey


def joserfc_proof(key: JoseKey, alg: str, **extra: Any) -> str:
    """A DPoP proof signed by joserfc."""
    header = {"typ": "dpop+jwt", "alg": alg, "jwk": key.as_dict(private=False)}
    claims = {"jti": "jose-1", "htm": METHOD, "htu": URI, "iat": NOW, **extra}
    return jwt.encode(header, claims, key, algorithms=[alg])


def joserfc_verify(proof: str, alg: str) -> tuple[dict[str, Any], dict[str, Any], str]:
    """Check a proof with joserfc alone: key from its own header, as a DPoP server would."""
    found: list[JoseKey] = []

    def key_from_header(obj: GuestProtocol) -> JoseKey:
        jwk = obj.headers()["jwk"]
        key: JoseKey
        if jwk["kty"] == "EC":
            key = ECKey.import_key(jwk)
        elif jwk["kty"] == "OKP":
            key = OKPKey.import_key(jwk)
        else:
            key = RSAKey.import_key(jwk)
        found.append(key)
        return key

    obj = jws.deserialize_compact(proof, key_from_header, algorithms=[alg])
    assert obj.payload is not None
    return obj.headers(), json.loads(obj.payload), found[0].thumbprint()


class TestJoserfcToUs:
    def test_es256(self) -> None:
        """A joserfc ES256 proof verifies with us, with the same thumbprint."""
        key = ECKey.generate_key("P-256")
        proof = joserfc_proof(key, "ES256", ath=ath_for(TOKEN))
        checked = verify_dpop_proof(proof, method=METHOD, uri=URI, now=NOW, access_token=TOKEN)
        assert (checked.jkt, checked.jti, checked.alg) == (key.thumbprint(), "jose-1", "ES256")

    def test_eddsa(self) -> None:
        """A joserfc EdDSA proof verifies with us (joserfc warns that EdDSA is deprecated)."""
        key = OKPKey.generate_key("Ed25519")
        with pytest.warns(SecurityWarning):
            proof = joserfc_proof(key, "EdDSA")
        checked = verify_dpop_proof(proof, method=METHOD, uri=URI, now=NOW)
        assert (checked.jkt, checked.alg) == (key.thumbprint(), "EdDSA")

    def test_ps256(self) -> None:
        """A joserfc PS256 proof verifies with us where PS256 is allowed."""
        key = RSAKey.generate_key(2048)
        proof = joserfc_proof(key, "PS256")
        checked = verify_dpop_proof(
            proof, method=METHOD, uri=URI, now=NOW, algorithms=frozenset({"PS256"})
        )
        assert checked.jkt == key.thumbprint()

    def test_fully_specified_ed25519_alg_is_refused(self) -> None:
        """RFC 9864's "Ed25519" alg is not in our table: refused as POP_ALG, not crashed on."""
        key = OKPKey.generate_key("Ed25519")
        proof = joserfc_proof(key, "Ed25519")
        with pytest.raises(InvalidProof) as info:
            verify_dpop_proof(proof, method=METHOD, uri=URI, now=NOW)
        assert info.value.code is codes.POP_ALG


class TestUsToJoserfc:
    @pytest.mark.parametrize("alg", ["ES256", "EdDSA"])
    def test_our_proof_verifies(self, alg: str) -> None:
        """Our proof verifies with joserfc using only its header jwk; thumbprints agree."""
        key = SigningKey.generate(alg)
        proof = create_dpop_proof(
            key, method=METHOD, uri=URI + "?q=1", now=NOW, jti="ours-1", access_token=TOKEN
        )
        if alg == "EdDSA":
            with pytest.warns(SecurityWarning):
                header, claims, thumbprint = joserfc_verify(proof, alg)
        else:
            header, claims, thumbprint = joserfc_verify(proof, alg)
        assert (header["typ"], header["alg"]) == ("dpop+jwt", alg)
        assert claims == {
            "jti": "ours-1",
            "htm": METHOD,
            "htu": URI,
            "iat": NOW,
            "ath": ath_for(TOKEN),
        }
        assert thumbprint == key.public.thumbprint

    def test_tampered_proof_fails_in_joserfc(self) -> None:
        """joserfc refuses our proof once a signed byte changes, as we do."""
        key = SigningKey.generate("ES256")
        proof = create_dpop_proof(key, method=METHOD, uri=URI, now=NOW, jti="j")
        head, payload, sig = proof.split(".")
        tampered = f"{head}.{payload}.{'B' if sig[0] == 'A' else 'A'}{sig[1:]}"
        with pytest.raises(BadSignatureError):
            joserfc_verify(tampered, "ES256")
