"""Keys that sign and verify coupons, and the key set a verifier trusts.

The key decides the algorithm: an Ed25519 key only ever verifies ``EdDSA``, a P-256 key only
``ES256``. A ``KeySet`` works like ``MultiFernet``: its first key signs, any key verifies.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from typing import Any, Final, Protocol, runtime_checkable

from cryptography.hazmat.primitives.asymmetric import ec, ed25519

from coupon import codes
from coupon.errors import InvalidRequest, MalformedCoupon

from .hazmat import (
    COUPON_ALGORITHMS,
    PublicKey,
    b64url_decode,
    b64url_encode,
    jwk_thumbprint,
    public_key_from_jwk,
    public_key_to_jwk,
    sign,
    verify_ed25519,
    verify_signature,
)

__all__ = ["KID_PATTERN", "KeySet", "Signer", "SigningKey", "VerifyingKey"]

#: What a ``kid`` may look like: no path separators, quotes, spaces or control characters,
#: so a ``kid`` can never steer a file, URL or query lookup ("kid injection").
KID_PATTERN: Final = re.compile(r"[A-Za-z0-9._:-]{1,128}")


def _check_kid(kid: str) -> str:
    if not KID_PATTERN.fullmatch(kid) or kid in (".", ".."):
        raise InvalidRequest(codes.REQUEST_KEY, f"kid {kid[:40]!r} is not allowed")
    return kid


class VerifyingKey:
    """A public key with its ``kid`` and its one algorithm."""

    __slots__ = ("_key", "_raw", "alg", "kid", "thumbprint")

    def __init__(self, key: PublicKey, alg: str, *, kid: str | None = None) -> None:
        self._key = key
        self.alg = alg
        jwk = public_key_to_jwk(key)
        self.thumbprint = jwk_thumbprint(jwk)
        self.kid = _check_kid(kid) if kid is not None else self.thumbprint
        # Keep the raw Ed25519 key: verify_ed25519 (libsodium) needs it on the hot path.
        self._raw = b64url_decode(jwk["x"]) if alg == "EdDSA" else None

    @classmethod
    def from_jwk(cls, jwk: Mapping[str, Any]) -> VerifyingKey:
        """Load a public JWK; its ``kid`` defaults to its RFC 7638 thumbprint."""
        key, alg = public_key_from_jwk(jwk)
        kid = jwk.get("kid")
        if kid is not None and not isinstance(kid, str):
            raise InvalidRequest(codes.REQUEST_KEY, "kid must be a string")
        return cls(key, alg, kid=kid)

    @property
    def public_key(self) -> PublicKey:
        """The ``cryptography`` public key object."""
        return self._key

    def jwk(self) -> dict[str, str]:
        """The public JWK with ``kid``, ``alg`` and ``use``."""
        return {**public_key_to_jwk(self._key), "kid": self.kid, "alg": self.alg, "use": "sig"}

    def verify(self, signature: bytes, data: bytes) -> bool:
        """Return whether ``signature`` over ``data`` verifies with this key."""
        if self._raw is not None:
            return verify_ed25519(self._raw, signature, data)
        return verify_signature(self.alg, self._key, signature, data)

    def __repr__(self) -> str:
        return f"VerifyingKey(alg={self.alg!r}, kid={self.kid!r})"


@runtime_checkable
class Signer(Protocol):
    """Anything that signs with a key it may keep to itself (a file, an HSM, a KMS)."""

    @property
    def alg(self) -> str: ...

    @property
    def kid(self) -> str: ...

    @property
    def public(self) -> VerifyingKey: ...

    def sign(self, data: bytes) -> bytes: ...


_PrivateKey = ed25519.Ed25519PrivateKey | ec.EllipticCurvePrivateKey
_CURVES: Final = {"ES256": ec.SECP256R1()}


class SigningKey:
    """A private coupon-signing key (``EdDSA`` or ``ES256``) held in memory."""

    __slots__ = ("_private", "public")

    def __init__(self, private: _PrivateKey, *, kid: str | None = None) -> None:
        self._private = private
        alg = "EdDSA" if isinstance(private, ed25519.Ed25519PrivateKey) else "ES256"
        if isinstance(private, ec.EllipticCurvePrivateKey) and private.curve.name != "secp256r1":
            raise ValueError("only P-256 EC keys sign coupons")
        self.public = VerifyingKey(private.public_key(), alg, kid=kid)

    @classmethod
    def generate(cls, alg: str = "EdDSA", *, kid: str | None = None) -> SigningKey:
        """Generate a fresh key for ``alg`` (``EdDSA`` or ``ES256``)."""
        if alg == "EdDSA":
            return cls(ed25519.Ed25519PrivateKey.generate(), kid=kid)
        if alg == "ES256":
            return cls(ec.generate_private_key(ec.SECP256R1()), kid=kid)
        raise ValueError(f"coupons are signed with EdDSA or ES256, not {alg!r}")

    @classmethod
    def from_jwk(cls, jwk: Mapping[str, Any]) -> SigningKey:
        """Load a private JWK (OKP/Ed25519 or EC/P-256 with ``d``)."""
        d = jwk.get("d")
        if not isinstance(d, str):
            raise InvalidRequest(codes.REQUEST_KEY, "private JWK needs a 'd' member")
        try:
            raw = b64url_decode(d)
        except MalformedCoupon:
            raise InvalidRequest(codes.REQUEST_KEY, "'d' is not canonical base64url") from None
        public = {k: v for k, v in jwk.items() if k != "d"}
        pub_key, alg = public_key_from_jwk(public)
        private: _PrivateKey
        try:
            if alg == "EdDSA" and len(raw) == 32:
                private = ed25519.Ed25519PrivateKey.from_private_bytes(raw)
            elif alg == "ES256" and len(raw) == 32:
                private = ec.derive_private_key(int.from_bytes(raw, "big"), _CURVES[alg])
            else:
                raise InvalidRequest(codes.REQUEST_KEY, f"cannot sign coupons with a {alg} key")
        except ValueError:
            raise InvalidRequest(codes.REQUEST_KEY, "private scalar out of range") from None
        if public_key_to_jwk(private.public_key()) != public_key_to_jwk(pub_key):
            raise InvalidRequest(codes.REQUEST_KEY, "private and public members do not match")
        kid = jwk.get("kid")
        if kid is not None and not isinstance(kid, str):
            raise InvalidRequest(codes.REQUEST_KEY, "kid must be a string")
        return cls(private, kid=kid)

    @property
    def alg(self) -> str:
        """The algorithm this key signs with."""
        return self.public.alg

    @property
    def kid(self) -> str:
        """The key id written into each coupon header."""
        return self.public.kid

    def private_jwk(self) -> dict[str, str]:
        """The private JWK (handle with care: it contains the secret scalar)."""
        if isinstance(self._private, ed25519.Ed25519PrivateKey):
            from cryptography.hazmat.primitives.serialization import (
                Encoding,
                NoEncryption,
                PrivateFormat,
            )

            raw = self._private.private_bytes(Encoding.Raw, PrivateFormat.Raw, NoEncryption())
        else:
            raw = self._private.private_numbers().private_value.to_bytes(32, "big")
        return {**self.public.jwk(), "d": b64url_encode(raw)}

    def sign(self, data: bytes) -> bytes:
        """Sign ``data``; returns the JWS signature bytes."""
        return sign(self.alg, self._private, data)

    def __repr__(self) -> str:
        return f"SigningKey(alg={self.alg!r}, kid={self.kid!r})"


class KeySet:
    """The keys a verifier trusts; the first key, if it can, signs.

    Keys are found by ``kid``. Two keys with the same ``kid`` are refused: a lookup must
    never depend on order.
    """

    __slots__ = ("_by_kid", "_keys")

    def __init__(self, keys: Iterable[SigningKey | Signer | VerifyingKey]) -> None:
        self._keys = tuple(keys)
        if not self._keys:
            raise ValueError("a KeySet needs at least one key")
        self._by_kid: dict[str, VerifyingKey] = {}
        for key in self._keys:
            public = key if isinstance(key, VerifyingKey) else key.public
            if public.alg not in COUPON_ALGORITHMS:
                raise ValueError(f"coupon keys use EdDSA or ES256, not {public.alg}")
            if public.kid in self._by_kid:
                raise ValueError(f"duplicate kid {public.kid!r} in KeySet")
            self._by_kid[public.kid] = public

    @classmethod
    def from_jwks(cls, jwks: Mapping[str, Any]) -> KeySet:
        """Load the signature keys of a JWKS document; keys for other uses are skipped."""
        keys = jwks.get("keys")
        if not isinstance(keys, list):
            raise InvalidRequest(codes.REQUEST_KEY, "JWKS has no 'keys' list")
        loaded = []
        for jwk in keys:
            if not isinstance(jwk, dict):
                raise InvalidRequest(codes.REQUEST_KEY, "JWKS entry is not an object")
            if jwk.get("use", "sig") != "sig" or jwk.get("kty") == "RSA":
                continue
            loaded.append(VerifyingKey.from_jwk(jwk))
        if not loaded:
            raise InvalidRequest(codes.REQUEST_KEY, "JWKS holds no usable coupon key")
        try:
            return cls(loaded)
        except ValueError as exc:
            raise InvalidRequest(codes.REQUEST_KEY, str(exc)) from None

    def to_jwks(self) -> dict[str, list[dict[str, str]]]:
        """The public JWKS document for these keys."""
        return {"keys": [key.jwk() for key in self._by_kid.values()]}

    def get(self, kid: str) -> VerifyingKey | None:
        """The key with ``kid``, or None."""
        return self._by_kid.get(kid)

    @property
    def signer(self) -> SigningKey | Signer:
        """The first key, which signs; ``ValueError`` if it is public only."""
        first = self._keys[0]
        if isinstance(first, VerifyingKey):
            raise ValueError("the first key of this KeySet is public only")
        return first

    def __iter__(self) -> Any:
        return iter(self._by_kid.values())

    def __len__(self) -> int:
        return len(self._by_kid)

    def __repr__(self) -> str:
        return f"KeySet({list(self._by_kid)!r})"
