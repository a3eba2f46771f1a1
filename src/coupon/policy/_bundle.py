"""Signed policy bundles: canonical bytes, an Ed25519 signature and a strict verifier.

A bundle is the canonical JSON encoding (sorted keys, no whitespace, UTF-8) of::

    {"version": str, "created_at": int, "modules": {"name.rego": source}, "data": {...}}

It travels in an envelope::

    {"bundle": b64url(bundle bytes), "signature": b64url(sig), "signer": key id}

where the key id is the base64url SHA-256 of the signer's raw 32-byte Ed25519 public key and
the signature covers ``SIGNATURE_CONTEXT + bundle bytes``. The context string keeps a bundle
signature from ever being valid for anything else a key might sign.

:func:`verify_envelope` checks the signature *before* it parses the bundle, then parses it
strictly: duplicate members, non-canonical encoding, unknown members, oversize content and the
reserved names are all refused.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from types import MappingProxyType
from typing import Any, Final

from cryptography.exceptions import InvalidSignature as _CryptoInvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

from coupon import codes
from coupon.errors import InvalidRequest, MalformedCoupon
from coupon.token.hazmat import b64url_decode, b64url_encode, loads_object

__all__ = [
    "MAX_BUNDLE_BYTES",
    "RESERVED_VERSION_PREFIX",
    "SIGNATURE_CONTEXT",
    "Envelope",
    "VerifiedBundle",
    "key_id",
    "make_bundle",
    "sign_bundle",
    "trusted_keys_from_settings",
    "verify_envelope",
]

#: The largest canonical bundle accepted (modules and data together).
MAX_BUNDLE_BYTES: Final = 1 << 20
#: The largest envelope text accepted (the bundle in base64url plus a little).
MAX_ENVELOPE_BYTES: Final = MAX_BUNDLE_BYTES * 4 // 3 + 4096
MAX_MODULES: Final = 64
#: How deeply ``data`` may nest (rego-cpp parses it recursively).
MAX_DATA_DEPTH: Final = 32
#: Prepended to the bundle bytes before signing (domain separation).
SIGNATURE_CONTEXT: Final = b"coupon-policy-bundle/v1\x00"
#: Versions starting with this are the package's own policies; no uploaded bundle may use it.
RESERVED_VERSION_PREFIX: Final = "builtin"
#: The top-level data name the policy package lives under; data may not shadow it.
RESERVED_DATA_KEY: Final = "coupon"

_VERSION = re.compile(r"[A-Za-z0-9][A-Za-z0-9._+:-]{0,63}")
_MODULE_NAME = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.-]{0,63}\.rego")
_MEMBERS: Final = frozenset({"version", "created_at", "modules", "data"})
_ENVELOPE_MEMBERS: Final = frozenset({"bundle", "signature", "signer"})
_MAX_INT: Final = 2**53


class _Problem(Exception):
    """What is wrong with bundle content; becomes ``ValueError`` or ``InvalidRequest``."""


@dataclass(frozen=True, slots=True)
class Envelope:
    """A bundle, its signature and the signer's key id, as uploaded."""

    bundle: bytes
    signature: bytes
    signer: str

    def to_dict(self) -> dict[str, str]:
        """The JSON members of the wire form."""
        return {
            "bundle": b64url_encode(self.bundle),
            "signature": b64url_encode(self.signature),
            "signer": self.signer,
        }

    def to_json(self) -> bytes:
        """The wire form: compact JSON, members in a fixed order."""
        return json.dumps(self.to_dict(), separators=(",", ":")).encode("ascii")


@dataclass(frozen=True, slots=True)
class VerifiedBundle:
    """A bundle whose signature and content were checked by :func:`verify_envelope`.

    ``raw`` is exactly the signed bytes; ``digest`` (base64url SHA-256 of ``raw``) names the
    content for audit records. ``modules`` and ``data`` are read-only views.
    """

    version: str
    created_at: int
    modules: Mapping[str, str]
    data: Mapping[str, Any]
    raw: bytes
    signature: bytes
    signer: str

    @property
    def digest(self) -> str:
        """Base64url SHA-256 of the canonical bundle bytes."""
        return b64url_encode(hashlib.sha256(self.raw).digest())

    @property
    def envelope(self) -> Envelope:
        """The envelope this bundle arrived in (to store it again)."""
        return Envelope(self.raw, self.signature, self.signer)


def key_id(public_key: Ed25519PublicKey) -> str:
    """The key id of an Ed25519 public key: base64url SHA-256 of its 32 raw bytes."""
    raw = public_key.public_bytes(Encoding.Raw, PublicFormat.Raw)
    return b64url_encode(hashlib.sha256(raw).digest())


def _canonical(content: Mapping[str, Any]) -> bytes:
    return json.dumps(
        content, sort_keys=True, separators=(",", ":"), ensure_ascii=False, allow_nan=False
    ).encode("utf-8")


def _depth(value: Any, limit: int) -> int:
    """How deeply ``value`` nests, stopping early once past ``limit``."""
    stack: list[tuple[Any, int]] = [(value, 1)]
    deepest = 0
    while stack:
        item, level = stack.pop()
        deepest = max(deepest, level)
        if deepest > limit:
            return deepest
        if isinstance(item, dict):
            stack.extend((v, level + 1) for v in item.values())
        elif isinstance(item, list):
            stack.extend((v, level + 1) for v in item)
    return deepest


def _check_version(version: object) -> str:
    if not isinstance(version, str) or not _VERSION.fullmatch(version):
        raise _Problem(f"version must match {_VERSION.pattern}")
    if version.lower().startswith(RESERVED_VERSION_PREFIX):
        raise _Problem(f"versions starting with {RESERVED_VERSION_PREFIX!r} are reserved")
    return version


def _check_content(content: Mapping[str, Any], *, allow_reserved: bool = False) -> None:
    """Raise ``_Problem`` naming the first thing wrong with parsed bundle content."""
    members = set(content)
    if members != _MEMBERS:
        missing, extra = sorted(_MEMBERS - members), sorted(members - _MEMBERS)
        raise _Problem(f"bundle members wrong (missing {missing}, unexpected {extra})")
    version = content["version"]
    if allow_reserved:
        if not isinstance(version, str) or not _VERSION.fullmatch(version):
            raise _Problem(f"version must match {_VERSION.pattern}")
    else:
        _check_version(version)
    created_at = content["created_at"]
    if type(created_at) is not int or not 0 <= created_at < _MAX_INT:
        raise _Problem("created_at must be a non-negative integer (seconds)")
    modules = content["modules"]
    if not isinstance(modules, Mapping) or not modules:
        raise _Problem("modules must be a non-empty object of name -> Rego source")
    if len(modules) > MAX_MODULES:
        raise _Problem(f"more than {MAX_MODULES} modules")
    for name, source in modules.items():
        if not isinstance(name, str) or not _MODULE_NAME.fullmatch(name):
            raise _Problem(f"module name {str(name)[:40]!r} must match {_MODULE_NAME.pattern}")
        if not isinstance(source, str) or not source.strip():
            raise _Problem(f"module {name!r} must be non-empty Rego source text")
        if "\x00" in source:
            raise _Problem(f"module {name!r} contains a NUL character")
    data = content["data"]
    if not isinstance(data, Mapping):
        raise _Problem("data must be a JSON object")
    if RESERVED_DATA_KEY in data:
        raise _Problem(f"data may not define {RESERVED_DATA_KEY!r}: it would shadow the policy")
    if _depth(dict(data), MAX_DATA_DEPTH) > MAX_DATA_DEPTH:
        raise _Problem(f"data nests deeper than {MAX_DATA_DEPTH} levels")


def _encode(
    version: str,
    modules: Mapping[str, str],
    data: Mapping[str, Any],
    created_at: int,
    *,
    allow_reserved: bool,
) -> bytes:
    content = {
        "version": version,
        "created_at": created_at,
        "modules": dict(modules) if isinstance(modules, Mapping) else modules,
        "data": dict(data) if isinstance(data, Mapping) else data,
    }
    try:
        _check_content(content, allow_reserved=allow_reserved)
        raw = _canonical(content)
    except _Problem as exc:
        raise ValueError(str(exc)) from None
    except (TypeError, ValueError) as exc:
        raise ValueError(f"data is not JSON-serialisable: {exc}") from None
    if len(raw) > MAX_BUNDLE_BYTES:
        raise ValueError(f"bundle is {len(raw)} bytes; the limit is {MAX_BUNDLE_BYTES}")
    return raw


def make_bundle(
    version: str,
    modules: Mapping[str, str],
    data: Mapping[str, Any],
    *,
    created_at: int,
) -> bytes:
    """Encode a policy bundle as its canonical, signable bytes.

    Args:
        version: the bundle's name in the history (``2024-06-01.1``); unique, immutable.
        modules: Rego sources by file name (``policy.rego``); one must define
            ``data.coupon.decision``.
        data: the base document (for the default policy: ``grants`` and ``defaults``).
        created_at: when the bundle was made, in seconds since the epoch.

    Returns:
        The canonical JSON bytes, at most :data:`MAX_BUNDLE_BYTES`.

    Raises:
        ValueError: the content breaks a rule (bad version or module name, reserved names,
            too large, too deeply nested, not JSON-serialisable).
    """
    return _encode(version, modules, data, created_at, allow_reserved=False)


def _parse(raw: bytes) -> dict[str, Any]:
    """Parse and check canonical bundle bytes; raise ``_Problem`` on anything wrong."""
    if len(raw) > MAX_BUNDLE_BYTES:
        raise _Problem(f"bundle is {len(raw)} bytes; the limit is {MAX_BUNDLE_BYTES}")
    try:
        content = loads_object(raw)
    except MalformedCoupon as exc:
        raise _Problem(f"bundle is not strict JSON: {exc.reason}") from None
    _check_content(content)
    if _canonical(content) != raw:
        raise _Problem("bundle bytes are not in canonical form")
    return content


def sign_bundle(bundle: bytes, private_key: Ed25519PrivateKey) -> Envelope:
    """Sign canonical bundle bytes (from :func:`make_bundle`).

    Raises:
        TypeError: ``private_key`` is not an Ed25519 private key.
        ValueError: ``bundle`` is not a valid canonical bundle.
    """
    if not isinstance(private_key, Ed25519PrivateKey):
        raise TypeError("policy bundles are signed with an Ed25519 private key")
    try:
        _parse(bundle)
    except _Problem as exc:
        raise ValueError(str(exc)) from None
    signature = private_key.sign(SIGNATURE_CONTEXT + bundle)
    return Envelope(bundle, signature, key_id(private_key.public_key()))


def _invalid(reason: str) -> InvalidRequest:
    return InvalidRequest(codes.POLICY_INVALID, reason)


def _envelope_members(envelope: Envelope | bytes | str | Mapping[str, Any]) -> Envelope:
    if isinstance(envelope, Envelope):
        return envelope
    if isinstance(envelope, bytes | str):
        text = envelope.encode("utf-8") if isinstance(envelope, str) else envelope
        if len(text) > MAX_ENVELOPE_BYTES:
            raise _invalid(f"envelope larger than {MAX_ENVELOPE_BYTES} bytes")
        try:
            members: Mapping[str, Any] = loads_object(text)
        except MalformedCoupon as exc:
            raise _invalid(f"envelope is not strict JSON: {exc.reason}") from None
    elif isinstance(envelope, Mapping):
        members = envelope
    else:
        raise TypeError("envelope must be an Envelope, JSON text or a mapping")
    if set(members) != _ENVELOPE_MEMBERS:
        raise _invalid(f"envelope members must be exactly {sorted(_ENVELOPE_MEMBERS)}")
    if not all(isinstance(members[k], str) for k in _ENVELOPE_MEMBERS):
        raise _invalid("envelope members must be strings")
    if len(members["bundle"]) > MAX_ENVELOPE_BYTES:
        raise _invalid(f"envelope larger than {MAX_ENVELOPE_BYTES} bytes")
    try:
        bundle = b64url_decode(members["bundle"])
        signature = b64url_decode(members["signature"])
    except MalformedCoupon as exc:
        raise _invalid(f"envelope member is not base64url: {exc.reason}") from None
    return Envelope(bundle, signature, members["signer"])


def verify_envelope(
    envelope: Envelope | bytes | str | Mapping[str, Any],
    trusted: Mapping[str, Ed25519PublicKey],
) -> VerifiedBundle:
    """Check a bundle envelope's signature, then parse the bundle strictly.

    Args:
        envelope: the wire form (JSON bytes or text), its parsed members, or an
            :class:`Envelope` (for example rebuilt from a stored ``PolicyRecord``).
        trusted: the bundle-signing keys, by key id (see :func:`trusted_keys_from_settings`).

    Returns:
        The verified bundle.

    Raises:
        InvalidRequest: ``CPN-POL-003`` when the signer is unknown or the signature does not
            verify; ``CPN-POL-004`` when the envelope or the bundle is malformed.
        ValueError: a key in ``trusted`` is filed under the wrong key id.
    """
    env = _envelope_members(envelope)
    if len(env.bundle) > MAX_BUNDLE_BYTES:
        raise _invalid(f"bundle is {len(env.bundle)} bytes; the limit is {MAX_BUNDLE_BYTES}")
    public_key = trusted.get(env.signer)
    if public_key is None:
        raise InvalidRequest(codes.POLICY_SIGNATURE, f"unknown bundle signer {env.signer[:64]!r}")
    if key_id(public_key) != env.signer:
        raise ValueError(f"trusted key filed under {env.signer!r} has a different key id")
    try:
        public_key.verify(env.signature, SIGNATURE_CONTEXT + env.bundle)
    except _CryptoInvalidSignature:
        raise InvalidRequest(
            codes.POLICY_SIGNATURE, "bundle signature does not verify with the signer's key"
        ) from None
    try:
        content = _parse(env.bundle)
    except _Problem as exc:
        raise _invalid(str(exc)) from None
    return _verified(content, env)


def _verified(content: Mapping[str, Any], env: Envelope) -> VerifiedBundle:
    return VerifiedBundle(
        version=content["version"],
        created_at=content["created_at"],
        modules=MappingProxyType(dict(content["modules"])),
        data=MappingProxyType(dict(content["data"])),
        raw=env.bundle,
        signature=env.signature,
        signer=env.signer,
    )


def _unsigned_bundle(
    version: str, modules: Mapping[str, str], data: Mapping[str, Any]
) -> VerifiedBundle:
    """A bundle that ships inside the package and needs no signature (the builtin policy)."""
    raw = _encode(version, modules, data, 0, allow_reserved=True)
    return _verified(json.loads(raw), Envelope(raw, b"", "package"))


def trusted_keys_from_settings(keys: Sequence[str]) -> dict[str, Ed25519PublicKey]:
    """Turn ``Settings.policy_trusted_keys`` (base64url raw Ed25519 public keys) into a map.

    Returns:
        The keys by key id, ready for :func:`verify_envelope`.

    Raises:
        ValueError: an entry is not the base64url of 32 raw bytes.
    """
    trusted: dict[str, Ed25519PublicKey] = {}
    for i, text in enumerate(keys):
        try:
            raw = b64url_decode(text.strip())
        except (MalformedCoupon, AttributeError):
            raise ValueError(f"policy_trusted_keys[{i}] is not base64url") from None
        if len(raw) != 32:
            raise ValueError(f"policy_trusted_keys[{i}] is not a raw 32-byte Ed25519 public key")
        public_key = Ed25519PublicKey.from_public_bytes(raw)
        trusted[key_id(public_key)] = public_key
    return trusted
