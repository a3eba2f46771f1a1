"""Log entries: a signed audit event wrapped in the Ledger's canonical envelope.

An entry (a leaf) is RFC 8785 canonical JSON::

    {"v": 1, "event": {...}, "sig": "<base64url Ed25519>", "kid": "audit:...",
     "pd": null | {"ref": "<subject reference>", "ct": "<base64url AES-GCM>"}}

``event`` is the emitter's signed document (canonical JSON re-encodes it byte for byte);
``pd`` is its personal data, encrypted under the subject's own key. The event commits to
that data (``event.personal.commit`` = SHA-256 over a salt and the data), so the signature
still verifies, and every proof stays valid, after the subject's key is erased.
"""

from __future__ import annotations

import base64
import hashlib
import json
import re
from dataclasses import dataclass
from typing import Any, Final

import rfc8785

from coupon import codes
from coupon.errors import MalformedLogData

__all__ = [
    "MAX_EVENT_SIZE",
    "Leaf",
    "Submission",
    "build_leaf",
    "check_commitment",
    "event_columns",
    "parse_event",
    "parse_leaf",
]

MAX_EVENT_SIZE: Final = 16_384
_PLAIN: Final = re.compile(r"[!#-\[\]-~]{1,128}")  # printable ASCII but '"' and '\\'
_STRINGS: Final = ("id", "service", "action", "result", "reason", "trace_id", "request_id")


def _bad(reason: str) -> MalformedLogData:
    return MalformedLogData(codes.LOG_ENTRY, reason)


def b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def unb64url(text: str) -> bytes:
    try:
        return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))
    except (ValueError, TypeError) as exc:
        raise _bad("bad base64url") from exc


@dataclass(frozen=True, slots=True)
class Submission:
    """A signed audit event on its way into the log."""

    event: bytes  # the canonical JSON that was signed
    signature: bytes
    kid: str
    personal: bytes | None = None  # {"subject", "data", "salt"} as JSON, or None


@dataclass(frozen=True, slots=True)
class Leaf:
    """A parsed entry."""

    event: dict[str, Any]
    signature: bytes
    kid: str
    pd_ref: str | None
    pd_ciphertext: bytes | None

    def signed_bytes(self) -> bytes:
        """The bytes the emitter signed (canonical JSON is unique)."""
        return rfc8785.dumps(self.event)


def _loads(data: bytes, what: str) -> Any:
    if len(data) > 4 * MAX_EVENT_SIZE:
        raise _bad(f"{what} is too large")
    try:
        return json.loads(data)
    except (ValueError, RecursionError) as exc:
        raise _bad(f"{what} is not JSON") from exc


def parse_event(data: bytes, *, canonical: bool = True) -> dict[str, Any]:
    """The event document, checked for the fields the Ledger indexes.

    Args:
        data: the event's bytes, exactly as signed.
        canonical: check that they are RFC 8785 canonical JSON (the entry embeds them as
            they are, so an auditor re-serialises them to check the signature). The relay
            of events this process's Authority serialised itself skips the (costly) check.

    Raises:
        MalformedLogData: ``CPN-LOG-005`` for anything but a well-formed v1 event.
    """
    if len(data) > MAX_EVENT_SIZE:
        raise _bad(f"event exceeds {MAX_EVENT_SIZE} bytes")
    doc = _loads(data, "event")
    if not isinstance(doc, dict) or doc.get("v") != 1:
        raise _bad("event is not a v1 object")
    for name in _STRINGS:
        if not isinstance(doc.get(name), str):
            raise _bad(f"event.{name} must be a string")
    if not isinstance(doc.get("time"), int) or isinstance(doc.get("time"), bool):
        raise _bad("event.time must be an integer (ms)")
    if not isinstance(doc.get("actor"), dict) or not isinstance(doc.get("target"), dict):
        raise _bad("event.actor and event.target must be objects")
    if doc.get("code") is not None and not isinstance(doc["code"], str):
        raise _bad("event.code must be a string or null")
    personal = doc.get("personal")
    if personal is not None and not (
        isinstance(personal, dict) and isinstance(personal.get("commit"), str)
    ):
        raise _bad("event.personal must be null or {commit}")
    if canonical and _canonical(doc) != data:
        raise _bad("event is not RFC 8785 canonical JSON")
    return doc


def _canonical(doc: Any) -> bytes | None:
    """RFC 8785 bytes of ``doc``; None when it has none (a lone surrogate: not Unicode)."""
    try:
        return rfc8785.dumps(doc)
    except (ValueError, TypeError):  # CanonicalizationError and UnicodeEncodeError included
        return None


def check_commitment(doc: dict[str, Any], personal: bytes | None) -> tuple[str | None, bytes]:
    """The subject and the exact plaintext to encrypt, after checking the event's commitment.

    Raises:
        MalformedLogData: when the data does not match what the event committed to.
    """
    committed = doc.get("personal")
    if personal is None or committed is None:
        if personal is not None or committed is not None:
            raise _bad("personal data and the event's commitment must come together")
        return None, b""
    body = _loads(personal, "personal data")
    if not isinstance(body, dict) or not isinstance(body.get("salt"), str):
        raise _bad("personal data must be {subject, data, salt}")
    subject = body.get("subject")
    if subject is not None and not isinstance(subject, str):
        raise _bad("personal.subject must be a string")
    salt = unb64url(body["salt"])
    committed_to = _canonical({"subject": subject, "data": body.get("data")})
    if committed_to is None:
        raise _bad("personal data is not valid Unicode")
    digest = hashlib.sha256(salt + committed_to)
    if b64url(digest.digest()) != committed["commit"]:
        raise _bad("personal data does not match the event's commitment")
    return subject, personal


def build_leaf(sub: Submission, pd: dict[str, str] | None) -> bytes:
    """The entry's bytes (what the leaf hash covers): RFC 8785 canonical JSON.

    Assembled around the event's own canonical bytes rather than re-serialised: members in
    code-point order, and every other value is ASCII without characters JSON escapes
    (base64url, hex, the checked ``kid``), which ``json.dumps`` writes as RFC 8785 does.
    """
    if not _PLAIN.fullmatch(sub.kid):
        raise _bad("kid must be 1-128 printable ASCII characters without quotes")
    pd_json = "null" if pd is None else json.dumps(pd, sort_keys=True, separators=(",", ":"))
    tail = f',"kid":"{sub.kid}","pd":{pd_json},"sig":"{b64url(sub.signature)}","v":1}}'
    return b'{"event":' + sub.event + tail.encode()


def parse_leaf(data: bytes) -> Leaf:
    """An entry's parts.

    Raises:
        MalformedLogData: ``CPN-LOG-005``.
    """
    doc = _loads(data, "entry")
    if not isinstance(doc, dict) or doc.get("v") != 1 or not isinstance(doc.get("event"), dict):
        raise _bad("entry is not a v1 envelope")
    pd = doc.get("pd")
    if not isinstance(doc.get("sig"), str) or not isinstance(doc.get("kid"), str):
        raise _bad("entry needs sig and kid")
    if pd is not None and not (
        isinstance(pd, dict) and isinstance(pd.get("ref"), str) and isinstance(pd.get("ct"), str)
    ):
        raise _bad("entry.pd must be null or {ref, ct}")
    return Leaf(
        event=doc["event"],
        signature=unb64url(doc["sig"]),
        kid=doc["kid"],
        pd_ref=None if pd is None else pd["ref"],
        pd_ciphertext=None if pd is None else unb64url(pd["ct"]),
    )


def _target_text(target: dict[str, Any]) -> str:
    parts = [f"{k}={target[k]}" for k in sorted(target) if isinstance(target[k], str | int)]
    return " ".join(parts)[:512]


def event_columns(doc: dict[str, Any]) -> dict[str, Any]:
    """The search columns of an event (who, what, to what, when, result, why)."""
    actor = doc["actor"].get("id")
    return {
        "time_ms": doc["time"],
        "service": doc["service"][:64],
        "action": doc["action"][:64],
        "result": doc["result"][:16],
        "actor": (actor if isinstance(actor, str) else "")[:256],
        "target": _target_text(doc["target"]),
        "code": (doc.get("code") or None) and str(doc["code"])[:32],
        "trace_id": doc["trace_id"][:64],
    }
