"""Known answers for the hazmat layer: RFC 8037 (Ed25519 JOSE) and RFC 7638 (thumbprints).

Provenance: tests/vectors/README.md, sections "RFC 8037" and "RFC 7638".
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

import pytest
from cryptography.hazmat.primitives.asymmetric import ed25519

from coupon.errors import InvalidRequest
from coupon.token._keys import SigningKey
from coupon.token.hazmat import (
    b64url_decode,
    b64url_encode,
    dumps_compact,
    jwk_thumbprint,
    parse_compact,
    public_key_from_jwk,
    public_key_to_jwk,
    sign,
    verify_signature,
)

VECTORS: dict[str, Any] = json.loads(
    (Path(__file__).parent.parent / "vectors" / "jose.json").read_text()
)
RFC8037: dict[str, Any] = VECTORS["rfc8037"]
RFC7638: dict[str, Any] = VECTORS["rfc7638"]


class TestRfc8037Keys:
    def test_d_derives_x(self) -> None:
        """The A.1 private scalar yields the A.2 public key."""
        private = ed25519.Ed25519PrivateKey.from_private_bytes(
            b64url_decode(RFC8037["private_jwk"]["d"])
        )
        assert public_key_to_jwk(private.public_key()) == {
            "crv": "Ed25519",
            "kty": "OKP",
            "x": RFC8037["public_jwk"]["x"],
        }

    def test_public_jwk_loads_as_eddsa(self) -> None:
        """An Ed25519 JWK is only ever EdDSA."""
        _, alg = public_key_from_jwk(RFC8037["public_jwk"])
        assert alg == "EdDSA"

    def test_private_jwk_is_refused_as_public(self) -> None:
        """The A.1 JWK has d, so it cannot be loaded as a public key."""
        with pytest.raises(InvalidRequest):
            public_key_from_jwk(RFC8037["private_jwk"])


class TestRfc8037Thumbprint:
    def test_canonical_json(self) -> None:
        """A.3: the thumbprint input is the required members, sorted, without whitespace."""
        required = {k: RFC8037["public_jwk"][k] for k in ("crv", "kty", "x")}
        canonical = json.dumps(required, separators=(",", ":"), sort_keys=True)
        assert canonical == RFC8037["thumbprint_canonical_json"]
        assert hashlib.sha256(canonical.encode()).hexdigest() == RFC8037["thumbprint_sha256_hex"]

    def test_thumbprint(self) -> None:
        """A.3: jwk_thumbprint gives the published base64url value."""
        assert jwk_thumbprint(RFC8037["public_jwk"]) == RFC8037["thumbprint"]

    def test_private_members_do_not_count(self) -> None:
        """The thumbprint of the private JWK is the public key's."""
        assert jwk_thumbprint(RFC8037["private_jwk"]) == RFC8037["thumbprint"]

    def test_signing_key_thumbprint(self) -> None:
        """A SigningKey loaded from A.1 names itself by the A.3 thumbprint."""
        key = SigningKey.from_jwk(RFC8037["private_jwk"])
        assert key.public.thumbprint == RFC8037["thumbprint"]
        assert key.kid == RFC8037["thumbprint"]


class TestRfc8037Jws:
    def test_encoding(self) -> None:
        """A.4: our compact JSON and base64url give the published signing input."""
        head, payload, _ = RFC8037["jws"]["compact"].split(".")
        assert b64url_encode(dumps_compact(RFC8037["jws"]["protected"])) == head
        assert b64url_encode(RFC8037["jws"]["payload"].encode()) == payload

    def test_sign_reproduces_signature(self) -> None:
        """A.4: Ed25519 is deterministic, so signing gives the published bytes."""
        compact = RFC8037["jws"]["compact"]
        signing_input, _, signature = compact.rpartition(".")
        private = ed25519.Ed25519PrivateKey.from_private_bytes(
            b64url_decode(RFC8037["private_jwk"]["d"])
        )
        assert b64url_encode(sign("EdDSA", private, signing_input.encode())) == signature
        key = SigningKey.from_jwk(RFC8037["private_jwk"])
        assert b64url_encode(key.sign(signing_input.encode())) == signature

    def test_verify(self) -> None:
        """A.5: the A.4 JWS parses and verifies with the public key."""
        jws = parse_compact(RFC8037["jws"]["compact"], max_size=4096)
        assert jws.header == RFC8037["jws"]["protected"]
        assert jws.payload == RFC8037["jws"]["payload"].encode()
        key, alg = public_key_from_jwk(RFC8037["public_jwk"])
        assert verify_signature(alg, key, jws.signature, jws.signing_input)

    @pytest.mark.parametrize("part", [0, 1, 2])
    def test_one_changed_byte_fails(self, part: int) -> None:
        """Changing one byte of header, payload or signature breaks verification."""
        pieces = [b64url_decode(p) for p in RFC8037["jws"]["compact"].split(".")]
        pieces[part] = bytes([pieces[part][0] ^ 1]) + pieces[part][1:]
        signing_input = f"{b64url_encode(pieces[0])}.{b64url_encode(pieces[1])}".encode()
        key, alg = public_key_from_jwk(RFC8037["public_jwk"])
        assert not verify_signature(alg, key, pieces[2], signing_input)


class TestRfc7638:
    def test_canonical_json(self) -> None:
        """§3.1: the canonical form keeps e, kty, n only, in that order."""
        required = {k: RFC7638["jwk"][k] for k in ("e", "kty", "n")}
        canonical = json.dumps(required, separators=(",", ":"), sort_keys=True)
        assert canonical == RFC7638["thumbprint_canonical_json"]

    def test_thumbprint(self) -> None:
        """§3.1: the RSA example's thumbprint, ignoring its alg and kid."""
        assert jwk_thumbprint(RFC7638["jwk"]) == RFC7638["thumbprint"]

    def test_member_order_and_extras_do_not_matter(self) -> None:
        """The thumbprint depends only on the required members' values."""
        shuffled = dict(reversed(list(RFC7638["jwk"].items())))
        assert jwk_thumbprint({**shuffled, "use": "sig"}) == RFC7638["thumbprint"]

    def test_key_round_trips(self) -> None:
        """The RSA key loads as RS256 (its alg) and re-encodes n and e exactly."""
        key, alg = public_key_from_jwk(RFC7638["jwk"])
        assert alg == "RS256"
        jwk = public_key_to_jwk(key)
        assert (jwk["n"], jwk["e"]) == (RFC7638["jwk"]["n"], RFC7638["jwk"]["e"])
        assert jwk_thumbprint(jwk) == RFC7638["thumbprint"]

    def test_one_changed_character(self) -> None:
        """A one-character change in n changes the thumbprint."""
        n = RFC7638["jwk"]["n"]
        changed = {**RFC7638["jwk"], "n": ("A" if n[0] != "A" else "B") + n[1:]}
        assert jwk_thumbprint(changed) != RFC7638["thumbprint"]
