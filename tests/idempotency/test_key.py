"""Parsing the Idempotency-Key header (an RFC 8941 sf-string) and the request fingerprint."""

from __future__ import annotations

import pytest

from coupon import codes
from coupon.errors import InvalidRequest
from coupon.idempotency import fingerprint, parse_idempotency_key, storage_key


class TestParse:
    @pytest.mark.parametrize(
        ("header", "key"),
        [
            ('"8e03978e-40d5-43e8-bc93-6894a57f9324"', "8e03978e-40d5-43e8-bc93-6894a57f9324"),
            (b'"abc"', "abc"),
            ('"a"', "a"),
            ('  "padded"  ', "padded"),
            ('"with space"', "with space"),
            (r'"esc\"aped"', 'esc"aped'),
            (r'"back\\slash"', "back\\slash"),
            ('"~!#$%&()*+,-./:;<=>?@[]^_`{|}"', "~!#$%&()*+,-./:;<=>?@[]^_`{|}"),
            ('"' + "k" * 255 + '"', "k" * 255),
            ('"' + "\\\\" * 255 + '"', "\\" * 255),
        ],
    )
    def test_good(self, header: str | bytes, key: str) -> None:
        """A quoted string of 1..255 printable ASCII characters, escapes decoded."""
        assert parse_idempotency_key(header) == key

    @pytest.mark.parametrize(
        "header",
        [
            "",
            "   ",
            '""',
            "abc",  # a token, not a string
            "8e03978e-40d5",
            '"abc',  # no closing quote
            'abc"',
            '"a"b"',  # data after the string
            '"a", "b"',  # a list (two header lines)
            '"a";p=1',  # parameters
            '"a" x',
            r'"bad\escape"',
            '"trailing\\"',
            '"tab\there"',
            '"new\nline"',
            '"del\x7f"',
            '"caf\u00e9"',
            b'"caf\xc3\xa9"',
            '\t"tabbed"',  # only SP is stripped
            '"' + "k" * 256 + '"',
            '"' + "k" * 5000 + '"',
            ":YWJj:",  # a byte sequence
            "?1",  # a boolean
            "42",
        ],
    )
    def test_bad(self, header: str | bytes) -> None:
        """Anything else is CPN-IDEM-001 (400), never a raw ValueError."""
        with pytest.raises(InvalidRequest) as info:
            parse_idempotency_key(header)
        assert info.value.code is codes.IDEM_KEY
        assert info.value.code.status == 400


class TestFingerprint:
    def test_stable_and_hex(self) -> None:
        a = fingerprint("POST", "/orders", b'{"n":1}')
        assert a == fingerprint("post", "/orders", b'{"n":1}')
        assert len(a) == 64
        int(a, 16)

    @pytest.mark.parametrize(
        "other",
        [
            ("PATCH", "/orders", b'{"n":1}'),
            ("POST", "/orders/1", b'{"n":1}'),
            ("POST", "/orders", b'{"n":2}'),
            ("POST", "/orders", b""),
        ],
    )
    def test_each_part_counts(self, other: tuple[str, str, bytes]) -> None:
        assert fingerprint("POST", "/orders", b'{"n":1}') != fingerprint(*other)

    def test_parts_are_delimited(self) -> None:
        """Moving bytes from the route into the body changes the fingerprint."""
        assert fingerprint("POST", "/ab", b"c") != fingerprint("POST", "/a", b"bc")


class TestStorageKey:
    def test_tenant_scoped_and_hashed(self) -> None:
        a = storage_key("acme", "k1")
        assert a.startswith("acme:")
        assert "k1" not in a
        assert a != storage_key("globex", "k1")
        assert a != storage_key("acme", "k2")
