"""The ``Idempotency-Key`` header and the request fingerprint.

The header is a Structured Field Item whose value is a String (RFC 8941 §3.3.3,
draft-ietf-httpapi-idempotency-key-header §2): ``Idempotency-Key: "8e03978e-…"``. We accept
1..255 printable ASCII characters inside the quotes, with the two escapes RFC 8941 allows
(``\\"`` and ``\\\\``). Anything else, including a bare token, a list (two header lines), or
parameters, is refused with ``CPN-IDEM-001``.
"""

from __future__ import annotations

import hashlib

from coupon import codes
from coupon.errors import InvalidRequest

__all__ = ["MAX_KEY_LENGTH", "fingerprint", "parse_idempotency_key", "storage_key"]

#: The longest key we accept, in characters after unescaping.
MAX_KEY_LENGTH = 255
#: A header longer than this cannot hold a valid key (every character escaped, quotes, spaces).
_MAX_HEADER = 2 * MAX_KEY_LENGTH + 64


def _bad(reason: str) -> InvalidRequest:
    return InvalidRequest(codes.IDEM_KEY, reason)


def parse_idempotency_key(header: str | bytes) -> str:
    """Return the key carried by an ``Idempotency-Key`` header value.

    Raises:
        InvalidRequest: ``CPN-IDEM-001`` unless the value is one sf-string of 1..255
            printable ASCII characters.
    """
    if isinstance(header, bytes):
        try:
            header = header.decode("ascii")
        except UnicodeDecodeError:
            raise _bad("Idempotency-Key is not ASCII") from None
    if len(header) > _MAX_HEADER:
        raise _bad("Idempotency-Key is too long")
    # RFC 8941 §4.2: discard leading and trailing spaces (SP only, not tabs).
    text = header.strip(" ")
    if len(text) < 2 or text[0] != '"':
        raise _bad("Idempotency-Key must be a quoted structured-field string")
    out: list[str] = []
    i = 1
    while i < len(text):
        char = text[i]
        if char == "\\":
            if i + 1 >= len(text) or text[i + 1] not in '"\\':
                raise _bad("Idempotency-Key has an invalid escape")
            out.append(text[i + 1])
            i += 2
            continue
        if char == '"':
            break
        if not " " <= char <= "~":
            raise _bad("Idempotency-Key has a character that is not printable ASCII")
        out.append(char)
        i += 1
    else:
        raise _bad("Idempotency-Key has no closing quote")
    if i != len(text) - 1:
        raise _bad("Idempotency-Key has data after the string (a list or parameters)")
    if not out:
        raise _bad("Idempotency-Key is empty")
    if len(out) > MAX_KEY_LENGTH:
        raise _bad(f"Idempotency-Key is longer than {MAX_KEY_LENGTH} characters")
    return "".join(out)


def fingerprint(method: str, route: str, body: bytes) -> str:
    """The SHA-256 (hex) of the method, the route and the body, each length-prefixed."""
    digest = hashlib.sha256()
    for part in (method.upper().encode(), route.encode(), body):
        digest.update(len(part).to_bytes(8, "big"))
        digest.update(part)
    return digest.hexdigest()


def storage_key(tenant: str, key: str) -> str:
    """``<tenant>:<sha256(key)>``: the tenant-scoped name of a key in a store.

    The hash has a fixed length, so a tenant containing ``:`` cannot collide with another.
    """
    return f"{tenant}:{hashlib.sha256(key.encode()).hexdigest()}"
