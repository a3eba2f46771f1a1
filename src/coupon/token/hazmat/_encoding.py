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
import re
from typing import Any

from coupon import codes
from coupon.errors import MalformedCoupon

__all__ = ["b64url_decode", "b64url_encode", "dumps_compact", "loads_object"]

_ALPHABET = re.compile(r"[A-Za-z0-9_-]*")
# A final character that carries only 4 (len % 4 == 2) or 2 (len % 4 == 3) significant bits
# must leave the unused low bits zero, else two strings decode to the same bytes.
_CANONICAL_LAST = {
    2: frozenset("AQgw"),
    3: frozenset("AEIMQUYcgkosw048"),
}


def b64url_encode(data: bytes) -> str:
    """Encode ``data`` as unpadded base64url (RFC 7515 §2)."""
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def b64url_decode(text: str) -> bytes:
    """Decode unpadded, canonical base64url; raise ``MalformedCoupon`` on anything else."""
    if not _ALPHABET.fullmatch(text):
        raise MalformedCoupon(codes.TOKEN_BASE64, "characters outside the base64url alphabet")
    rem = len(text) % 4
    if rem == 1:
        raise MalformedCoupon(codes.TOKEN_BASE64, "impossible base64url length")
    if rem and text[-1] not in _CANONICAL_LAST[rem]:
        raise MalformedCoupon(codes.TOKEN_BASE64, "non-canonical base64url (trailing bits set)")
    try:
        return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))
    except (binascii.Error, ValueError) as exc:  # pragma: no cover - excluded by the checks above
        raise MalformedCoupon(codes.TOKEN_BASE64, str(exc)) from None


def _has_surrogate(text: str) -> bool:
    # json decodes "\ud800" escapes into lone surrogates, which no UTF-8 encoder accepts
    # later (logs, audit, comparisons); ASCII text, the common case, is checked in O(1) C.
    if text.isascii():
        return False
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return True
    return False


def _pairs_without_duplicates(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    for key, value in pairs:
        if _has_surrogate(key) or (type(value) is str and _has_surrogate(value)):
            raise MalformedCoupon(codes.TOKEN_JSON, "lone surrogate in a JSON string")
        if type(value) is list:
            for item in value:
                if type(item) is str and _has_surrogate(item):
                    raise MalformedCoupon(codes.TOKEN_JSON, "lone surrogate in a JSON string")
    obj = dict(pairs)
    if len(obj) != len(pairs):
        seen: set[str] = set()
        dup = next(k for k, _ in pairs if k in seen or seen.add(k))  # type: ignore[func-returns-value]
        raise MalformedCoupon(codes.TOKEN_DUPLICATE_KEY, f"duplicate JSON member {dup!r}")
    return obj


def _reject_constant(name: str) -> Any:
    raise MalformedCoupon(codes.TOKEN_JSON, f"JSON constant {name} is not allowed")


def loads_object(data: bytes) -> dict[str, Any]:
    """Parse ``data`` as a strict UTF-8 JSON object."""
    try:
        text = data.decode("utf-8")
        value = json.loads(
            text, object_pairs_hook=_pairs_without_duplicates, parse_constant=_reject_constant
        )
    except MalformedCoupon:
        raise
    except (UnicodeDecodeError, ValueError, RecursionError) as exc:
        raise MalformedCoupon(codes.TOKEN_JSON, f"invalid JSON: {exc}") from None
    if not isinstance(value, dict):
        raise MalformedCoupon(codes.TOKEN_JSON, "JSON value is not an object")
    return value


def dumps_compact(value: dict[str, Any]) -> bytes:
    """Serialise ``value`` as compact UTF-8 JSON with members in insertion order."""
    return json.dumps(value, separators=(",", ":"), ensure_ascii=False, allow_nan=False).encode()
