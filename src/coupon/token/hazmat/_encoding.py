"""Strict base64url and JSON for JOSE objects.

Both decoders refuse everything a lenient decoder would quietly repair: padding, characters
outside the alphabet, non-canonical trailing bits, non-UTF-8 bytes, duplicate object members,
``NaN``/``Infinity`` and absurd nesting. Strictness matters because two parties that repair
input differently disagree about what was signed.
"""

from __future__ import annotations

import base64
import binascii
import json
import math
from typing import Any

from coupon import codes
from coupon.errors import MalformedCoupon

__all__ = ["b64url_decode", "b64url_encode", "dumps_compact", "loads_object"]

# A final character that carries only 4 (len % 4 == 2) or 2 (len % 4 == 3) significant bits
# must leave the unused low bits zero, else two strings decode to the same bytes.
_TO_STANDARD = bytes.maketrans(b"-_", b"+/")
_PAD = (b"", b"", b"==", b"=")
_CANONICAL_LAST = {
    2: frozenset("AQgw"),
    3: frozenset("AEIMQUYcgkosw048"),
}


def b64url_encode(data: bytes) -> str:
    """Encode ``data`` as unpadded base64url (RFC 7515 §2)."""
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def b64url_decode(text: str) -> bytes:
    """Decode unpadded, canonical base64url; raise ``MalformedCoupon`` on anything else."""
    try:
        raw = text.encode("ascii")
    except (UnicodeEncodeError, AttributeError):
        raise MalformedCoupon(
            codes.TOKEN_BASE64, "characters outside the base64url alphabet"
        ) from None
    # The standard alphabet's "+", "/" and "=" would be accepted by the decoder below, so they
    # are refused here; everything else outside the alphabet is refused by strict mode.
    if b"+" in raw or b"/" in raw or b"=" in raw:
        raise MalformedCoupon(codes.TOKEN_BASE64, "characters outside the base64url alphabet")
    rem = len(raw) % 4
    if rem == 1:
        raise MalformedCoupon(codes.TOKEN_BASE64, "impossible base64url length")
    if rem and text[-1] not in _CANONICAL_LAST[rem]:
        raise MalformedCoupon(codes.TOKEN_BASE64, "non-canonical base64url (trailing bits set)")
    try:
        return binascii.a2b_base64(raw.translate(_TO_STANDARD) + _PAD[rem], strict_mode=True)
    except binascii.Error:
        raise MalformedCoupon(
            codes.TOKEN_BASE64, "characters outside the base64url alphabet"
        ) from None


def _pairs_without_duplicates(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    obj = dict(pairs)
    if len(obj) != len(pairs):
        seen: set[str] = set()
        dup = next(k for k, _ in pairs if k in seen or seen.add(k))  # type: ignore[func-returns-value]
        raise MalformedCoupon(codes.TOKEN_DUPLICATE_KEY, f"duplicate JSON member {dup!r}")
    return obj


def _reject_constant(name: str) -> Any:
    raise MalformedCoupon(codes.TOKEN_JSON, f"JSON constant {name} is not allowed")


def _finite_float(text: str) -> float:
    value = float(text)
    if not math.isfinite(value):  # 1e400 would otherwise become inf
        raise MalformedCoupon(codes.TOKEN_JSON, f"JSON number {text[:20]} is out of range")
    return value


# One decoder for the process: json.loads would build a new one per call when given hooks.
_DECODER = json.JSONDecoder(
    object_pairs_hook=_pairs_without_duplicates,
    parse_constant=_reject_constant,
    parse_float=_finite_float,
)


def loads_object(data: bytes) -> dict[str, Any]:
    """Parse ``data`` as a strict UTF-8 JSON object."""
    try:
        text = data.decode("utf-8")
        value = _DECODER.decode(text)
        # Strict UTF-8 bytes cannot hold a lone surrogate; only a "\uD800" escape makes one,
        # and no encoder downstream (logs, audit, comparisons) accepts it.
        if "\\u" in text:
            json.dumps(value, ensure_ascii=False).encode("utf-8")
    except MalformedCoupon:
        raise
    except (UnicodeError, ValueError, RecursionError) as exc:
        raise MalformedCoupon(codes.TOKEN_JSON, f"invalid JSON: {exc}") from None
    if not isinstance(value, dict):
        raise MalformedCoupon(codes.TOKEN_JSON, "JSON value is not an object")
    return value


def dumps_compact(value: dict[str, Any]) -> bytes:
    """Serialise ``value`` as compact UTF-8 JSON with members in insertion order."""
    return json.dumps(value, separators=(",", ":"), ensure_ascii=False, allow_nan=False).encode()
