"""Compact JWS serialisation (RFC 7515 §7.1), strictly parsed.

Only the structure lives here; what a header must contain is decided by the caller (a
coupon and a DPoP proof have different rules).
"""

from __future__ import annotations

from typing import Any, NamedTuple

from coupon import codes
from coupon.errors import MalformedCoupon

from ._encoding import b64url_decode, b64url_encode, dumps_compact, loads_object

__all__ = ["CompactJWS", "encode_compact", "parse_compact"]


class CompactJWS(NamedTuple):
    """The three parts of a compact JWS, decoded (a tuple: built on every cold verify)."""

    header: dict[str, Any]
    payload: bytes
    signature: bytes
    signing_input: bytes

    def claims(self) -> dict[str, Any]:
        """Decode the payload as a strict JSON object."""
        return loads_object(self.payload)


def parse_compact(token: str, *, max_size: int) -> CompactJWS:
    """Split and decode a compact JWS of at most ``max_size`` characters.

    Raises:
        MalformedCoupon: on size, structure, base64url or header JSON problems.
    """
    if len(token) > max_size:
        raise MalformedCoupon(
            codes.TOKEN_TOO_LARGE, f"token is {len(token)} characters, limit {max_size}"
        )
    if not token.isascii():
        raise MalformedCoupon(codes.TOKEN_MALFORMED, "token contains non-ASCII characters")
    parts = token.split(".")
    if len(parts) != 3:
        raise MalformedCoupon(
            codes.TOKEN_MALFORMED, f"compact JWS has 3 parts, this has {len(parts)}"
        )
    header_b64, payload_b64, signature_b64 = parts
    if not header_b64 or not payload_b64 or not signature_b64:
        raise MalformedCoupon(codes.TOKEN_MALFORMED, "empty JWS part")
    header = loads_object(b64url_decode(header_b64))
    return CompactJWS(
        header=header,
        payload=b64url_decode(payload_b64),
        signature=b64url_decode(signature_b64),
        signing_input=f"{header_b64}.{payload_b64}".encode("ascii"),
    )


def encode_compact(header: dict[str, Any], claims: dict[str, Any]) -> tuple[bytes, str]:
    """Encode header and claims; return the signing input and the unsigned prefix."""
    prefix = f"{b64url_encode(dumps_compact(header))}.{b64url_encode(dumps_compact(claims))}"
    return prefix.encode("ascii"), prefix
