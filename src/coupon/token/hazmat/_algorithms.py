"""The JWS algorithms we accept, and public-key import from JWK (RFC 7517/7518/8037).

The table is closed: ``none`` and every HMAC algorithm are absent, so a token can never
choose to be checked with a shared secret or with no key at all.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Final

import nacl.exceptions
import nacl.signing
from cryptography.exceptions import InvalidSignature as _CryptoInvalidSignature
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, padding, rsa
from cryptography.hazmat.primitives.asymmetric.utils import (
    decode_dss_signature,
    encode_dss_signature,
)
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

from coupon import codes
from coupon.errors import InvalidRequest, MalformedCoupon

from ._encoding import b64url_decode, b64url_encode

__all__ = [
    "ALGORITHMS",
    "COUPON_ALGORITHMS",
    "PRIVATE_JWK_MEMBERS",
    "Algorithm",
    "PublicKey",
    "jwk_thumbprint",
    "public_key_from_jwk",
    "public_key_to_jwk",
    "sign",
    "verify_ed25519",
    "verify_signature",
]

PublicKey = ed25519.Ed25519PublicKey | ec.EllipticCurvePublicKey | rsa.RSAPublicKey
PrivateKey = ed25519.Ed25519PrivateKey | ec.EllipticCurvePrivateKey | rsa.RSAPrivateKey

PRIVATE_JWK_MEMBERS: Final = frozenset({"d", "p", "q", "dp", "dq", "qi", "oth", "k"})
_MIN_RSA_BITS: Final = 2048


@dataclass(frozen=True, slots=True)
class Algorithm:
    """A JWS algorithm and the key it needs."""

    name: str
    kty: str
    crv: str | None
    coordinate_size: int  # bytes of one EC coordinate / Ed25519 key; 0 for RSA


ALGORITHMS: Final[Mapping[str, Algorithm]] = {
    "EdDSA": Algorithm("EdDSA", "OKP", "Ed25519", 32),
    "ES256": Algorithm("ES256", "EC", "P-256", 32),
    "ES384": Algorithm("ES384", "EC", "P-384", 48),
    "RS256": Algorithm("RS256", "RSA", None, 0),
    "PS256": Algorithm("PS256", "RSA", None, 0),
}
COUPON_ALGORITHMS: Final = frozenset({"EdDSA", "ES256"})

_CURVES: Final[Mapping[str, ec.EllipticCurve]] = {"P-256": ec.SECP256R1(), "P-384": ec.SECP384R1()}
_EC_HASH: Final[Mapping[str, hashes.HashAlgorithm]] = {
    "ES256": hashes.SHA256(),
    "ES384": hashes.SHA384(),
}


def _bad_key(reason: str) -> InvalidRequest:
    return InvalidRequest(codes.REQUEST_KEY, reason)


def _member(jwk: Mapping[str, Any], name: str, size: int | None = None) -> bytes:
    value = jwk.get(name)
    if not isinstance(value, str):
        raise _bad_key(f"JWK member {name!r} missing or not a string")
    try:
        raw = b64url_decode(value)
    except MalformedCoupon:
        raise _bad_key(f"JWK member {name!r} is not canonical base64url") from None
    if size is not None and len(raw) != size:
        raise _bad_key(f"JWK member {name!r} must be {size} bytes, got {len(raw)}")
    return raw


def public_key_from_jwk(jwk: Mapping[str, Any]) -> tuple[PublicKey, str]:
    """Load a public key from a JWK and return it with the one algorithm it is used with.

    The algorithm is the key's, never the token's: an Ed25519 key is only ever EdDSA, a
    P-256 key only ES256. An RSA key needs an explicit ``alg`` member (RS256 or PS256).
    """
    if PRIVATE_JWK_MEMBERS & jwk.keys():
        raise _bad_key("JWK contains private key material")
    kty = jwk.get("kty")
    if kty == "OKP":
        if jwk.get("crv") != "Ed25519":
            raise _bad_key(f"unsupported OKP curve {jwk.get('crv')!r}")
        key: PublicKey = ed25519.Ed25519PublicKey.from_public_bytes(_member(jwk, "x", 32))
        alg = "EdDSA"
    elif kty == "EC":
        crv = jwk.get("crv")
        ec_alg = {"P-256": "ES256", "P-384": "ES384"}.get(crv) if isinstance(crv, str) else None
        if ec_alg is None:
            raise _bad_key(f"unsupported EC curve {crv!r}")
        alg = ec_alg
        size = ALGORITHMS[alg].coordinate_size
        x = int.from_bytes(_member(jwk, "x", size), "big")
        y = int.from_bytes(_member(jwk, "y", size), "big")
        try:
            key = ec.EllipticCurvePublicNumbers(x, y, _CURVES[crv]).public_key()  # type: ignore[index]
        except ValueError:
            raise _bad_key("EC point is not on the curve") from None
    elif kty == "RSA":
        rsa_alg = jwk.get("alg", "RS256")
        if rsa_alg not in ("RS256", "PS256"):
            raise _bad_key(f"unsupported RSA algorithm {rsa_alg!r}")
        alg = rsa_alg
        n = int.from_bytes(_member(jwk, "n"), "big")
        e = int.from_bytes(_member(jwk, "e"), "big")
        if n.bit_length() < _MIN_RSA_BITS or e < 3 or e % 2 == 0:
            raise _bad_key("RSA key too small or exponent invalid")
        try:
            key = rsa.RSAPublicNumbers(e, n).public_key()
        except ValueError:
            raise _bad_key("RSA public numbers are invalid") from None
    else:
        raise _bad_key(f"unsupported key type {kty!r}")
    declared = jwk.get("alg")
    if declared is not None and declared != alg:
        raise _bad_key(f"JWK alg {declared!r} does not fit a {kty} key")
    return key, alg


def _int_b64(value: int, size: int | None = None) -> str:
    length = size if size is not None else (value.bit_length() + 7) // 8
    return b64url_encode(value.to_bytes(length, "big"))


def public_key_to_jwk(key: PublicKey) -> dict[str, str]:
    """Return the required public members of ``key`` as a JWK (no ``kid``, no ``alg``)."""
    if isinstance(key, ed25519.Ed25519PublicKey):
        raw = key.public_bytes(Encoding.Raw, PublicFormat.Raw)
        return {"crv": "Ed25519", "kty": "OKP", "x": b64url_encode(raw)}
    if isinstance(key, ec.EllipticCurvePublicKey):
        crv = {"secp256r1": "P-256", "secp384r1": "P-384"}.get(key.curve.name)
        if crv is None:
            raise ValueError(f"unsupported curve {key.curve.name}")
        size = (key.curve.key_size + 7) // 8
        nums = key.public_numbers()
        return {"crv": crv, "kty": "EC", "x": _int_b64(nums.x, size), "y": _int_b64(nums.y, size)}
    if isinstance(key, rsa.RSAPublicKey):
        nums_r = key.public_numbers()
        return {"e": _int_b64(nums_r.e), "kty": "RSA", "n": _int_b64(nums_r.n)}
    raise TypeError(f"unsupported key type {type(key).__name__}")


_THUMBPRINT_MEMBERS: Final[Mapping[str, tuple[str, ...]]] = {
    "OKP": ("crv", "kty", "x"),
    "EC": ("crv", "kty", "x", "y"),
    "RSA": ("e", "kty", "n"),
}


def jwk_thumbprint(jwk: Mapping[str, Any]) -> str:
    """RFC 7638 SHA-256 thumbprint of a public JWK, base64url-encoded."""
    kty = jwk.get("kty")
    members = _THUMBPRINT_MEMBERS.get(kty) if isinstance(kty, str) else None
    if members is None:
        raise _bad_key(f"unsupported key type {jwk.get('kty')!r}")
    required = {}
    for name in members:
        value = jwk.get(name)
        if not isinstance(value, str):
            raise _bad_key(f"JWK member {name!r} missing or not a string")
        required[name] = value
    canonical = json.dumps(required, separators=(",", ":"), sort_keys=True).encode()
    return b64url_encode(hashlib.sha256(canonical).digest())


def verify_ed25519(public: bytes, signature: bytes, data: bytes) -> bool:
    """Ed25519 verification by libsodium.

    libsodium refuses small-order public keys and non-canonical encodings, which OpenSSL
    accepts: with the identity point as "key", one signature verifies for every message.
    It is also faster here. Every Ed25519 check in the project goes through this function.
    """
    if len(signature) != 64 or len(public) != 32:
        return False
    try:
        nacl.signing.VerifyKey(public).verify(data, signature)
    except (nacl.exceptions.BadSignatureError, nacl.exceptions.ValueError):
        return False
    return True


def verify_signature(alg: str, key: PublicKey, signature: bytes, data: bytes) -> bool:
    """Return whether ``signature`` over ``data`` verifies with ``key`` under ``alg``.

    The caller has already matched ``alg`` to the key; a mismatch here is a bug, so it
    answers False rather than trusting the pairing.
    """
    try:
        if alg == "EdDSA" and isinstance(key, ed25519.Ed25519PublicKey):
            return verify_ed25519(key.public_bytes(Encoding.Raw, PublicFormat.Raw), signature, data)
        if alg in _EC_HASH and isinstance(key, ec.EllipticCurvePublicKey):
            size = ALGORITHMS[alg].coordinate_size
            if len(signature) != 2 * size or key.curve.name != _CURVES[ALGORITHMS[alg].crv].name:  # type: ignore[index]
                return False
            r = int.from_bytes(signature[:size], "big")
            s = int.from_bytes(signature[size:], "big")
            key.verify(encode_dss_signature(r, s), data, ec.ECDSA(_EC_HASH[alg]))
            return True
        if alg == "RS256" and isinstance(key, rsa.RSAPublicKey):
            key.verify(signature, data, padding.PKCS1v15(), hashes.SHA256())
            return True
        if alg == "PS256" and isinstance(key, rsa.RSAPublicKey):
            pss = padding.PSS(mgf=padding.MGF1(hashes.SHA256()), salt_length=32)
            key.verify(signature, data, pss, hashes.SHA256())
            return True
    except _CryptoInvalidSignature:
        return False
    return False


def sign(alg: str, key: PrivateKey, data: bytes) -> bytes:
    """Sign ``data`` with ``key`` under ``alg``, returning the JWS signature bytes."""
    if alg == "EdDSA" and isinstance(key, ed25519.Ed25519PrivateKey):
        return key.sign(data)
    if alg in _EC_HASH and isinstance(key, ec.EllipticCurvePrivateKey):
        size = ALGORITHMS[alg].coordinate_size
        r, s = decode_dss_signature(key.sign(data, ec.ECDSA(_EC_HASH[alg])))
        return r.to_bytes(size, "big") + s.to_bytes(size, "big")
    if alg == "RS256" and isinstance(key, rsa.RSAPrivateKey):
        return key.sign(data, padding.PKCS1v15(), hashes.SHA256())
    if alg == "PS256" and isinstance(key, rsa.RSAPrivateKey):
        pss = padding.PSS(mgf=padding.MGF1(hashes.SHA256()), salt_length=32)
        return key.sign(data, pss, hashes.SHA256())
    raise ValueError(f"key of type {type(key).__name__} cannot sign {alg}")
