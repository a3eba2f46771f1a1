"""DPoP server nonces (RFC 9449 §8) that carry the server's time.

A nonce is ``base64url(timestamp || tag)``: an 8-byte big-endian Unix time in seconds and the
first 16 bytes of ``HMAC-SHA256(secret, label || timestamp)``. Nothing is stored, so every
Authority process that shares the secret accepts the nonces of the others, and a client can
read the server's clock from the nonce (:func:`server_time`) to correct its own ``iat``.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import re
import struct
from typing import Final

from coupon import codes
from coupon.errors import NonceRequired

__all__ = ["NonceService", "server_time"]

_LABEL: Final = b"coupon-dpop-nonce-v1\x00"
_TAG_SIZE: Final = 16
_TEXT: Final = re.compile(r"[A-Za-z0-9_-]{32}")  # 24 bytes, so no padding and no spare bits
_MIN_SECRET: Final = 16


def _refuse(reason: str) -> NonceRequired:
    return NonceRequired(codes.POP_NONCE, reason, step="nonce")


def _decode(nonce: str) -> tuple[int, bytes]:
    if not _TEXT.fullmatch(nonce):
        raise _refuse("malformed nonce")
    raw = base64.urlsafe_b64decode(nonce)
    (timestamp,) = struct.unpack(">Q", raw[:8])
    return timestamp, raw[8:]


def server_time(nonce: str) -> int:
    """The server time (Unix seconds) carried by a nonce; for clients (no tag check).

    Raises:
        NonceRequired: ``CPN-POP-011`` when ``nonce`` is not one of ours.
    """
    return _decode(nonce)[0]


class NonceService:
    """Issues and checks stateless, time-stamped DPoP nonces; a ``NonceChecker``.

    Args:
        secret: the HMAC key shared by every process (at least 16 bytes).
        lifetime: seconds a nonce stays acceptable.
        skew: seconds a nonce may appear to come from the future (another process's clock).
    """

    def __init__(self, secret: bytes, *, lifetime: int, skew: int = 5) -> None:
        if len(secret) < _MIN_SECRET:
            raise ValueError(f"the nonce secret must be at least {_MIN_SECRET} bytes")
        if lifetime <= 0 or skew < 0:
            raise ValueError("lifetime must be positive and skew not negative")
        self._secret = bytes(secret)
        self.lifetime = lifetime
        self.skew = skew

    def _tag(self, stamp: bytes) -> bytes:
        return hmac.new(self._secret, _LABEL + stamp, hashlib.sha256).digest()[:_TAG_SIZE]

    def issue(self, now: float) -> str:
        """A fresh nonce for the ``DPoP-Nonce`` header, stamped with ``now``."""
        stamp = struct.pack(">Q", int(now))
        return base64.urlsafe_b64encode(stamp + self._tag(stamp)).decode("ascii")

    def check(self, nonce: str | None, *, now: float) -> None:
        """Accept a nonce this service (or a sibling with the same secret) issued recently.

        Raises:
            NonceRequired: ``CPN-POP-011`` if the nonce is missing, malformed, forged, older
                than ``lifetime`` or from further in the future than ``skew``.
        """
        if not nonce:
            raise _refuse("a server nonce is required")
        timestamp, tag = _decode(nonce)
        if not hmac.compare_digest(tag, self._tag(struct.pack(">Q", timestamp))):
            raise _refuse("nonce was not issued by this server")
        if timestamp > now + self.skew:
            raise _refuse("nonce is from the future")
        if now - timestamp > self.lifetime:
            raise _refuse("nonce has expired")
