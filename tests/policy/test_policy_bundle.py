"""Signed policy bundles: canonical encoding, Ed25519 signatures and strict verification."""

from __future__ import annotations

import base64
import json
from typing import Any

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from tests.policy.policy_support import SIGNING_KEY, TRUSTED, sign_raw

from coupon import codes
from coupon.codes import ErrorCode
from coupon.errors import InvalidRequest
from coupon.policy import (
    MAX_BUNDLE_BYTES,
    SIGNATURE_CONTEXT,
    Envelope,
    key_id,
    make_bundle,
    sign_bundle,
    trusted_keys_from_settings,
    verify_envelope,
)
from coupon.token.hazmat import b64url_encode

MODULES = {"policy.rego": "package coupon\n\nimport rego.v1\n\ndecision := {}\n"}
DATA: dict[str, Any] = {"grants": [], "defaults": {"max_ttl": 60}}


def bundle(**overrides: Any) -> bytes:
    args: dict[str, Any] = {"version": "2024.1", "modules": MODULES, "data": DATA}
    args.update(overrides)
    return make_bundle(args["version"], args["modules"], args["data"], created_at=1_700_000_000)


def raises_code(code: ErrorCode) -> Any:
    return pytest.raises(InvalidRequest, match=code.code)


def content(**overrides: Any) -> dict[str, Any]:
    base: dict[str, Any] = {
        "version": "2024.1",
        "created_at": 1,
        "modules": dict(MODULES),
        "data": dict(DATA),
    }
    base.update(overrides)
    return base


def canonical(obj: Any) -> bytes:
    return json.dumps(obj, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode()


class TestMakeBundle:
    def test_canonical_bytes(self) -> None:
        """The bundle is sorted, compact UTF-8 JSON of exactly the four members."""
        raw = bundle(data={"z": 1, "a": "é"})
        assert raw == canonical(
            {
                "version": "2024.1",
                "created_at": 1_700_000_000,
                "modules": MODULES,
                "data": {"z": 1, "a": "é"},
            }
        )
        assert raw.startswith(b'{"created_at":1700000000,"data":{"a":"\xc3\xa9","z":1}')

    def test_deterministic(self) -> None:
        """The same content always encodes to the same bytes, whatever the dict order."""
        assert bundle(data={"a": 1, "b": 2}) == bundle(data={"b": 2, "a": 1})

    @pytest.mark.parametrize(
        ("overrides", "message"),
        [
            pytest.param({"version": ""}, "version must match", id="empty-version"),
            pytest.param({"version": "a b"}, "version must match", id="space-in-version"),
            pytest.param({"version": "x" * 65}, "version must match", id="long-version"),
            pytest.param({"version": "builtin-2"}, "reserved", id="reserved-version"),
            pytest.param({"version": "BUILTIN"}, "reserved", id="reserved-version-case"),
            pytest.param({"modules": {}}, "non-empty object", id="no-modules"),
            pytest.param({"modules": {"p.txt": "package x"}}, "module name", id="not-rego"),
            pytest.param({"modules": {"../p.rego": "x"}}, "module name", id="path-in-name"),
            pytest.param({"modules": {"p.rego": " \n"}}, "non-empty Rego", id="blank-module"),
            pytest.param({"modules": {"p.rego": "a\x00b"}}, "NUL", id="nul"),
            pytest.param(
                {"modules": {f"m{i}.rego": "package x" for i in range(65)}},
                "more than 64",
                id="too-many-modules",
            ),
            pytest.param({"data": {"coupon": {}}}, "shadow", id="data-shadows-package"),
            pytest.param({"data": {"x": float("nan")}}, "JSON-serialisable", id="nan"),
            pytest.param({"data": {"x": object()}}, "JSON-serialisable", id="object"),
            pytest.param({"data": {"x": "a" * MAX_BUNDLE_BYTES}}, "limit", id="too-large"),
        ],
    )
    def test_refuses(self, overrides: dict[str, Any], message: str) -> None:
        """Content that breaks a rule is a programming error: ``ValueError``."""
        with pytest.raises(ValueError, match=message):
            bundle(**overrides)

    def test_refuses_deep_data(self) -> None:
        """Data nesting deeper than 32 levels is refused (the engine parses recursively)."""
        deep: Any = 1
        for _ in range(40):
            deep = [deep]
        with pytest.raises(ValueError, match="nests deeper"):
            bundle(data={"x": deep})

    def test_refuses_bool_created_at(self) -> None:
        """``created_at`` must be an integer, and ``True`` is not one."""
        with pytest.raises(ValueError, match="created_at"):
            make_bundle("v1", MODULES, {}, created_at=True)


class TestSignAndVerify:
    def test_round_trip(self) -> None:
        """A signed bundle verifies and gives back its content, signer and digest."""
        raw = bundle()
        env = sign_bundle(raw, SIGNING_KEY)
        verified = verify_envelope(env.to_json(), TRUSTED)
        assert verified.version == "2024.1"
        assert verified.created_at == 1_700_000_000
        assert dict(verified.modules) == MODULES
        assert dict(verified.data) == DATA
        assert verified.raw == raw
        assert verified.signer == key_id(SIGNING_KEY.public_key())
        assert verified.envelope == env
        assert len(verified.digest) == 43

    @pytest.mark.parametrize("form", ["bytes", "str", "dict", "envelope"])
    def test_accepts_every_form(self, form: str) -> None:
        """The envelope may be JSON bytes, JSON text, its members or an ``Envelope``."""
        env = sign_bundle(bundle(), SIGNING_KEY)
        value: Any = {
            "bytes": env.to_json(),
            "str": env.to_json().decode(),
            "dict": env.to_dict(),
            "envelope": env,
        }[form]
        assert verify_envelope(value, TRUSTED).raw == env.bundle

    def test_wire_form(self) -> None:
        """The envelope is three base64url/text members; the key id is SHA-256 of the key."""
        env = sign_bundle(bundle(), SIGNING_KEY)
        members = json.loads(env.to_json())
        assert set(members) == {"bundle", "signature", "signer"}
        assert "=" not in members["bundle"] + members["signature"]
        assert members["signer"] == "If4x36FUomFia_hUBG_SJxt77UtqvkWqWId-9H-XIbk"

    def test_signature_has_context(self) -> None:
        """The signature covers the context string, so a bare signature of the bytes fails."""
        raw = bundle()
        env = sign_bundle(raw, SIGNING_KEY)
        SIGNING_KEY.public_key().verify(env.signature, SIGNATURE_CONTEXT + raw)
        bare = Envelope(raw, SIGNING_KEY.sign(raw), env.signer)
        with raises_code(codes.POLICY_SIGNATURE):
            verify_envelope(bare, TRUSTED)

    def test_views_are_read_only(self) -> None:
        """A verified bundle's modules and data cannot be changed through it."""
        verified = verify_envelope(sign_bundle(bundle(), SIGNING_KEY), TRUSTED)
        with pytest.raises(TypeError):
            verified.modules["x.rego"] = "package x"  # type: ignore[index]

    def test_sign_refuses_non_canonical(self) -> None:
        """``sign_bundle`` refuses bytes that ``make_bundle`` would not have produced."""
        with pytest.raises(ValueError, match="canonical"):
            sign_bundle(json.dumps(content()).encode(), SIGNING_KEY)

    def test_sign_needs_ed25519(self) -> None:
        """Only an Ed25519 private key signs bundles."""
        with pytest.raises(TypeError):
            sign_bundle(bundle(), "key")  # type: ignore[arg-type]


class TestTampering:
    @pytest.mark.parametrize("index", [0, 1, 17, 40, -2, -1])
    def test_flipped_bundle_bit(self, index: int) -> None:
        """One flipped bit anywhere in the bundle breaks the signature."""
        env = sign_bundle(bundle(), SIGNING_KEY)
        raw = bytearray(env.bundle)
        raw[index] ^= 0x01
        with raises_code(codes.POLICY_SIGNATURE):
            verify_envelope(Envelope(bytes(raw), env.signature, env.signer), TRUSTED)

    @pytest.mark.parametrize("index", [0, 31, 32, 63])
    def test_flipped_signature_bit(self, index: int) -> None:
        """One flipped bit in either half of the signature is caught."""
        env = sign_bundle(bundle(), SIGNING_KEY)
        sig = bytearray(env.signature)
        sig[index] ^= 0x80
        with raises_code(codes.POLICY_SIGNATURE):
            verify_envelope(Envelope(env.bundle, bytes(sig), env.signer), TRUSTED)

    def test_truncated_signature(self) -> None:
        """A short signature does not verify."""
        env = sign_bundle(bundle(), SIGNING_KEY)
        with raises_code(codes.POLICY_SIGNATURE):
            verify_envelope(Envelope(env.bundle, env.signature[:-1], env.signer), TRUSTED)

    def test_unknown_signer(self) -> None:
        """A bundle signed by a key that is not trusted is refused, before any parsing."""
        other = Ed25519PrivateKey.generate()
        env = sign_raw(b"not even json", other)
        with raises_code(codes.POLICY_SIGNATURE) as info:
            verify_envelope(env, TRUSTED)
        assert "unknown bundle signer" in str(info.value)

    def test_signer_claims_trusted_id(self) -> None:
        """Naming a trusted key id does not help a bundle signed by another key."""
        other = Ed25519PrivateKey.generate()
        env = sign_raw(bundle(), other)
        forged = Envelope(env.bundle, env.signature, key_id(SIGNING_KEY.public_key()))
        with raises_code(codes.POLICY_SIGNATURE):
            verify_envelope(forged, TRUSTED)

    def test_misfiled_trusted_key(self) -> None:
        """A trust map that files a key under another key's id is a configuration error."""
        other = Ed25519PrivateKey.generate().public_key()
        env = sign_bundle(bundle(), SIGNING_KEY)
        with pytest.raises(ValueError, match="different key id"):
            verify_envelope(env, {env.signer: other})


class TestMalformed:
    @pytest.mark.parametrize(
        "text",
        [
            pytest.param(b"", id="empty"),
            pytest.param(b"[]", id="array"),
            pytest.param(b"\xff", id="not-utf8"),
            pytest.param(b'{"bundle":"","signature":"","signer":"x","signer":"y"}', id="dup"),
            pytest.param(b'{"bundle":"","signature":""}', id="missing-member"),
            pytest.param(b'{"bundle":"","signature":"","signer":"x","x":1}', id="extra"),
            pytest.param(b'{"bundle":1,"signature":"","signer":"x"}', id="not-string"),
            pytest.param(b'{"bundle":"e30=","signature":"","signer":"x"}', id="padding"),
            pytest.param(b'{"bundle":"e3+","signature":"","signer":"x"}', id="alphabet"),
        ],
    )
    def test_bad_envelope(self, text: bytes) -> None:
        """A malformed envelope is ``CPN-POL-004``, never a raw ``ValueError``."""
        with raises_code(codes.POLICY_INVALID):
            verify_envelope(text, TRUSTED)

    def test_oversize_envelope(self) -> None:
        """Envelope text past the size limit is refused before it is parsed."""
        with raises_code(codes.POLICY_INVALID):
            verify_envelope(b" " * (2 * MAX_BUNDLE_BYTES), TRUSTED)

    def test_oversize_bundle(self) -> None:
        """A signed bundle past 1 MiB is refused."""
        env = sign_raw(b"x" * (MAX_BUNDLE_BYTES + 1))
        with raises_code(codes.POLICY_INVALID):
            verify_envelope(env, TRUSTED)

    @pytest.mark.parametrize(
        "raw",
        [
            pytest.param(b"not json", id="not-json"),
            pytest.param(b"[1]", id="not-object"),
            pytest.param(
                b'{"created_at":1,"data":{},"data":{},"modules":{"a.rego":"x"},"version":"v"}',
                id="duplicate-member",
            ),
            pytest.param(json.dumps(content()).encode(), id="not-canonical"),
            pytest.param(canonical(content(version="builtin-1")), id="reserved-version"),
            pytest.param(canonical(content(extra=1)), id="extra-member"),
            pytest.param(
                canonical({k: v for k, v in content().items() if k != "data"}), id="missing-member"
            ),
            pytest.param(canonical(content(created_at=-1)), id="negative-time"),
            pytest.param(canonical(content(created_at=1.5)), id="float-time"),
            pytest.param(canonical(content(modules=[])), id="modules-list"),
            pytest.param(canonical(content(modules={"a.rego": 1})), id="module-not-text"),
            pytest.param(canonical(content(data=[])), id="data-list"),
            pytest.param(canonical(content(data={"coupon": 1})), id="data-shadows"),
            pytest.param(b'{"created_at":1,"data":{"x":NaN},"modules":{},"version":"v"}', id="nan"),
        ],
    )
    def test_bad_bundle_content(self, raw: bytes) -> None:
        """Properly signed but malformed content is ``CPN-POL-004``."""
        with raises_code(codes.POLICY_INVALID):
            verify_envelope(sign_raw(raw), TRUSTED)


class TestTrustedKeys:
    def test_from_settings(self) -> None:
        """Base64url raw public keys become a map by key id."""
        raw = SIGNING_KEY.public_key().public_bytes_raw()
        trusted = trusted_keys_from_settings([b64url_encode(raw)])
        assert list(trusted) == [key_id(SIGNING_KEY.public_key())]
        env = sign_bundle(bundle(), SIGNING_KEY)
        assert verify_envelope(env, trusted).version == "2024.1"

    def test_empty(self) -> None:
        """No configured keys: nothing verifies."""
        env = sign_bundle(bundle(), SIGNING_KEY)
        with raises_code(codes.POLICY_SIGNATURE):
            verify_envelope(env, trusted_keys_from_settings([]))

    @pytest.mark.parametrize(
        "text",
        [
            pytest.param("not base64!", id="alphabet"),
            pytest.param(b64url_encode(b"x" * 31), id="short"),
            pytest.param(base64.b64encode(b"x" * 32).decode(), id="padded"),
        ],
    )
    def test_bad_entry(self, text: str) -> None:
        """A malformed configured key is a configuration error naming its position."""
        with pytest.raises(ValueError, match=r"policy_trusted_keys\[0\]"):
            trusted_keys_from_settings([text])


class TestEnvelopeForms:
    def test_wrong_type(self) -> None:
        """An envelope of another type is a programming error."""
        with pytest.raises(TypeError):
            verify_envelope(42, TRUSTED)  # type: ignore[arg-type]

    def test_oversize_member(self) -> None:
        """An oversize bundle member in a mapping is refused before decoding."""
        members = {"bundle": "A" * (2 * MAX_BUNDLE_BYTES), "signature": "", "signer": "x"}
        with raises_code(codes.POLICY_INVALID):
            verify_envelope(members, TRUSTED)
