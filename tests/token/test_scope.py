"""The resource, action and purpose grammar of ``coupon.token._scope`` and its matcher."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, cast

import pytest

from coupon import codes
from coupon.codes import ErrorCode
from coupon.errors import InvalidRequest
from coupon.token import CouponBuilder, ResourcePattern, parse_resource, purpose_covers
from coupon.token._scope import (
    MAX_ACTIONS,
    MAX_RESOURCE_LENGTH,
    MAX_SEGMENTS,
    parse_action,
    parse_actions,
    parse_purpose,
)

SEGMENT_128 = "s" * 128
# 7 segments of 128 characters, 7 slashes and 121 more characters: exactly 1024.
LONGEST = "/".join([SEGMENT_128] * 7 + ["t" * 121])

# Everything here is refused both as a pattern and as a concrete resource.
BAD_IN_BOTH = [
    pytest.param("", id="empty"),
    pytest.param("/", id="only-slash"),
    pytest.param("//", id="two-slashes"),
    pytest.param("//orders", id="double-leading-slash"),
    pytest.param("orders//", id="double-trailing-slash"),
    pytest.param("orders//1", id="empty-segment"),
    pytest.param(".", id="dot"),
    pytest.param("..", id="dot-dot"),
    pytest.param("orders/./1", id="dot-segment"),
    pytest.param("orders/../admin", id="traversal"),
    pytest.param("orders/..", id="trailing-traversal"),
    pytest.param("../orders", id="leading-traversal"),
    pytest.param("orders%2F1", id="percent-2F"),
    pytest.param("orders%2f1", id="percent-2f"),
    pytest.param("orders/%2e%2e/admin", id="percent-dot-dot"),
    pytest.param("%2e", id="percent-dot"),
    pytest.param("orders/%41", id="percent-unreserved"),
    pytest.param("orders\\1", id="backslash"),
    pytest.param("orders\\..\\admin", id="backslash-traversal"),
    pytest.param("orders/1 ", id="trailing-space"),
    pytest.param(" orders", id="leading-space"),
    pytest.param("orders /1", id="inner-space"),
    pytest.param("orders\t1", id="tab"),
    pytest.param("orders\n", id="trailing-newline"),
    pytest.param("orders\r\n1", id="crlf"),
    pytest.param("orders\x00", id="nul"),
    pytest.param("orders/\x00/1", id="nul-segment"),
    pytest.param("orders\x7f", id="del"),
    pytest.param("orders\x1b", id="escape"),
    pytest.param("orders\u00a0", id="no-break-space"),
    pytest.param("orders\u200b", id="zero-width-space"),
    pytest.param("ordérs", id="latin-accent"),
    pytest.param("оrders", id="cyrillic-o-homoglyph"),
    pytest.param("ｏrders", id="fullwidth-o"),
    pytest.param("orders／1", id="fullwidth-solidus"),
    pytest.param("orders\u2215admin", id="division-slash"),
    pytest.param("orders\u2024\u2024", id="one-dot-leaders"),
    pytest.param("\u212aelvin", id="kelvin-sign"),
    pytest.param("orders?id=1", id="query"),
    pytest.param("orders#1", id="fragment"),
    pytest.param("orders;1", id="semicolon"),
    pytest.param("orders&1", id="ampersand"),
    pytest.param("orders'1", id="quote"),
    pytest.param('orders"1', id="double-quote"),
    pytest.param("orders<1>", id="angle-brackets"),
    pytest.param("orders|1", id="pipe"),
    pytest.param("orders$1", id="dollar"),
    pytest.param("orders!", id="bang"),
    pytest.param("orders(1)", id="parentheses"),
    pytest.param("orders[1]", id="brackets"),
    pytest.param("orders{1}", id="braces"),
    pytest.param("orders^1", id="caret"),
    pytest.param("orders`1", id="backtick"),
    pytest.param("s" * 129, id="segment-too-long"),
    pytest.param("/".join(["s"] * (MAX_SEGMENTS + 1)), id="too-many-segments"),
    pytest.param(LONGEST + "t", id="too-long"),
    pytest.param("a*", id="star-in-literal"),
    pytest.param("*a", id="star-prefix"),
    pytest.param("***", id="triple-star"),
    pytest.param("orders/**/1", id="rest-not-last"),
    pytest.param("**/orders", id="rest-first"),
    pytest.param("**/**", id="rest-twice"),
]

GOOD_IN_BOTH = [
    pytest.param("orders", id="one-segment"),
    pytest.param("orders/1", id="two-segments"),
    pytest.param("a-b_c.d~e:f@g+h=i,j", id="every-punctuation"),
    pytest.param("...", id="three-dots"),
    pytest.param(".well-known", id="leading-dot"),
    pytest.param("v1.2", id="inner-dot"),
    pytest.param("ABCxyz0189", id="mixed-case-and-digits"),
    pytest.param(SEGMENT_128, id="segment-128"),
    pytest.param("/".join(["s"] * MAX_SEGMENTS), id="max-segments"),
    pytest.param(LONGEST, id="max-length"),
]


def assert_refused(text: object, code: ErrorCode, *, pattern: bool) -> None:
    """Assert that parsing ``text`` raises ``InvalidRequest`` with ``code``."""
    parse: Callable[[str], object] = ResourcePattern.parse if pattern else parse_resource
    with pytest.raises(InvalidRequest) as info:
        parse(cast(str, text))
    assert info.value.code is code


def pattern_matches(pattern: str, resource: str) -> bool:
    """Parse both sides and match, as the verifier does."""
    return ResourcePattern.parse(pattern).matches(parse_resource(resource))


def covers(pattern: str, other: str) -> bool:
    """Parse both patterns and ask whether the first covers the second."""
    return ResourcePattern.parse(pattern).covers(ResourcePattern.parse(other))


class TestResourcePatternGrammar:
    """``ResourcePattern.parse``: what a granted pattern may look like."""

    @pytest.mark.parametrize("text", BAD_IN_BOTH)
    def test_refuses(self, text: str) -> None:
        """A pattern that breaks the grammar is refused with CPN-REQ-001, never normalised."""
        assert_refused(text, codes.REQUEST_RESOURCE, pattern=True)

    @pytest.mark.parametrize("text", GOOD_IN_BOTH)
    def test_accepts_literals(self, text: str) -> None:
        """A pattern of valid literals parses into exactly its segments."""
        assert ResourcePattern.parse(text).segments == tuple(text.split("/"))

    @pytest.mark.parametrize(
        ("text", "segments"),
        [
            ("*", ("*",)),
            ("**", ("**",)),
            ("*/**", ("*", "**")),
            ("orders/*", ("orders", "*")),
            ("orders/**", ("orders", "**")),
            ("orders/*/items/*", ("orders", "*", "items", "*")),
            ("*/*/**", ("*", "*", "**")),
        ],
    )
    def test_accepts_wildcards(self, text: str, segments: tuple[str, ...]) -> None:
        """``*`` may stand anywhere and ``**`` only last."""
        assert ResourcePattern.parse(text).segments == segments

    @pytest.mark.parametrize(
        "text", ["/orders/*", "orders/*/", "/orders/*/"], ids=["leading", "trailing", "both"]
    )
    def test_drops_one_leading_and_one_trailing_slash(self, text: str) -> None:
        """One leading and one trailing ``/`` are dropped, so a URL path can be passed as is."""
        assert ResourcePattern.parse(text) == ResourcePattern.parse("orders/*")

    def test_str_is_the_canonical_text(self) -> None:
        """``str()`` gives the pattern without the dropped slashes."""
        assert str(ResourcePattern.parse("/orders/*/items/**/")) == "orders/*/items/**"

    def test_open_ended(self) -> None:
        """Only a pattern ending in ``**`` is open-ended."""
        assert ResourcePattern.parse("orders/**").open_ended
        assert not ResourcePattern.parse("orders/*").open_ended
        assert not ResourcePattern.parse("orders").open_ended

    def test_limits_are_the_documented_ones(self) -> None:
        """The length and segment limits are those the grammar documents."""
        assert (MAX_RESOURCE_LENGTH, MAX_SEGMENTS) == (1024, 32)
        assert len(LONGEST) == MAX_RESOURCE_LENGTH

    @pytest.mark.parametrize("value", [None, 42, b"orders", ["orders"]])
    def test_refuses_non_strings(self, value: object) -> None:
        """A non-string is refused with CPN-REQ-001, not a raw TypeError."""
        assert_refused(value, codes.REQUEST_RESOURCE, pattern=True)


class TestParseResource:
    """``parse_resource``: the concrete resource a request names."""

    @pytest.mark.parametrize("text", BAD_IN_BOTH)
    def test_refuses(self, text: str) -> None:
        """A resource that breaks the grammar is refused with CPN-REQ-001."""
        assert_refused(text, codes.REQUEST_RESOURCE, pattern=False)

    @pytest.mark.parametrize("text", ["*", "**", "orders/*", "orders/**", "*/1"])
    def test_refuses_wildcards(self, text: str) -> None:
        """A wildcard in a concrete resource is refused, so a request cannot smuggle one."""
        assert_refused(text, codes.REQUEST_RESOURCE, pattern=False)

    @pytest.mark.parametrize("text", GOOD_IN_BOTH)
    def test_accepts(self, text: str) -> None:
        """A valid resource parses into exactly its segments."""
        assert parse_resource(text) == tuple(text.split("/"))

    def test_drops_one_leading_and_one_trailing_slash(self) -> None:
        """A URL path with its leading and trailing slash parses like the bare resource."""
        assert parse_resource("/orders/42/") == ("orders", "42")

    @pytest.mark.parametrize("value", [None, 42, ("orders",)])
    def test_refuses_non_strings(self, value: object) -> None:
        """A non-string is refused with CPN-REQ-001, not a raw TypeError."""
        assert_refused(value, codes.REQUEST_RESOURCE, pattern=False)


class TestMatches:
    """``ResourcePattern.matches``: exact, case-sensitive, segment by segment."""

    @pytest.mark.parametrize(
        ("pattern", "resource"),
        [
            ("orders", "orders"),
            ("orders/1", "orders/1"),
            ("orders/*", "orders/1"),
            ("orders/*", "/orders/1/"),
            ("orders/*/items", "orders/1/items"),
            ("orders/**", "orders"),
            ("orders/**", "orders/1"),
            ("orders/**", "orders/1/items/2"),
            ("*", "orders"),
            ("**", "orders"),
            ("**", "orders/1/items"),
            ("*/**", "orders"),
            ("*/**", "orders/1"),
            ("*/*", "orders/1"),
            ("Orders/*", "Orders/1"),
        ],
    )
    def test_matches(self, pattern: str, resource: str) -> None:
        """The pattern grants the resource."""
        assert pattern_matches(pattern, resource)

    @pytest.mark.parametrize(
        ("pattern", "resource"),
        [
            ("orders/*", "Orders/1"),
            ("orders/*", "ORDERS/1"),
            ("Orders/*", "orders/1"),
            ("orders/1", "orders/01"),
            ("orders/*", "orders"),
            ("orders/*", "orders/1/items"),
            ("orders/*/items", "orders/1"),
            ("orders/*/items", "orders/1/2/items"),
            ("orders/**", "ordersx"),
            ("orders/**", "order"),
            ("orders/**", "Orders/1"),
            ("orders/**", "customers/orders"),
            ("orders", "orders/1"),
            ("orders", "ordersx"),
            ("*", "orders/1"),
            ("*/*", "orders"),
            ("*/*/**", "orders"),
            ("v1.2", "v1-2"),
        ],
    )
    def test_does_not_match(self, pattern: str, resource: str) -> None:
        """The pattern does not grant the resource."""
        assert not pattern_matches(pattern, resource)

    def test_star_is_exactly_one_segment(self) -> None:
        """``*`` matches one segment of any content and never zero or two."""
        pattern = ResourcePattern.parse("a/*")
        assert pattern.matches(("a", "x"))
        assert not pattern.matches(("a",))
        assert not pattern.matches(("a", "x", "y"))

    def test_rest_is_zero_or_more_trailing_segments(self) -> None:
        """``**`` matches zero, one or many trailing segments after the fixed prefix."""
        pattern = ResourcePattern.parse("a/b/**")
        assert pattern.matches(("a", "b"))
        assert pattern.matches(("a", "b", "c"))
        assert pattern.matches(("a", "b", *["c"] * (MAX_SEGMENTS - 2)))
        assert not pattern.matches(("a",))
        assert not pattern.matches(("a", "c", "b"))


class TestCovers:
    """``ResourcePattern.covers``: whether one grant includes another."""

    @pytest.mark.parametrize(
        ("pattern", "other"),
        [
            ("orders/**", "orders/**"),
            ("orders/**", "orders"),
            ("orders/**", "orders/1"),
            ("orders/**", "orders/*"),
            ("orders/**", "orders/*/items"),
            ("orders/**", "orders/1/**"),
            ("orders/**", "orders/*/**"),
            ("orders/*", "orders/*"),
            ("orders/*", "orders/1"),
            ("orders/1", "orders/1"),
            ("*", "*"),
            ("*", "orders"),
            ("*/*", "orders/*"),
            ("**", "**"),
            ("**", "*"),
            ("**", "*/**"),
            ("**", "orders/1/items/**"),
            ("*/**", "*/**"),
            ("*/**", "orders"),
            ("*/**", "orders/**"),
        ],
    )
    def test_covers(self, pattern: str, other: str) -> None:
        """Every resource the second pattern grants, the first grants too."""
        assert covers(pattern, other)

    @pytest.mark.parametrize(
        ("pattern", "other"),
        [
            ("orders/*", "orders/**"),
            ("orders/*", "orders"),
            ("orders/*", "orders/1/2"),
            ("orders/*", "orders/*/*"),
            ("orders/1", "orders/*"),
            ("orders/1", "orders/1/**"),
            ("orders/**", "Orders/1"),
            ("orders/**", "ordersx/**"),
            ("orders/**", "**"),
            ("orders/**", "*/**"),
            ("orders/**", "*"),
            ("orders/*/items", "orders/*/*"),
            ("*", "**"),
            ("*", "*/*"),
            ("*/*", "*"),
            ("*/*/**", "*/**"),
            ("customers/**", "orders/**"),
        ],
    )
    def test_does_not_cover(self, pattern: str, other: str) -> None:
        """Some resource the second pattern grants is not granted by the first."""
        assert not covers(pattern, other)

    def test_star_rest_covers_rest(self) -> None:
        """``*/**`` covers ``**``: a resource has at least one segment, so both grant the same."""
        # Every concrete resource is non-empty, so "**" grants exactly what "*/**" grants.
        for resource in ("a", "a/b", "a/b/c"):
            assert pattern_matches("**", resource)
            assert pattern_matches("*/**", resource)
        assert covers("*/**", "**")


class TestPurposeCovers:
    """``purpose_covers``: dotted purposes, a grant covers itself and what is below it."""

    @pytest.mark.parametrize(
        ("granted", "requested"),
        [
            ("billing", "billing"),
            ("billing", "billing.refund"),
            ("billing", "billing.refund.partial"),
            ("billing.refund", "billing.refund"),
            ("billing.refund", "billing.refund.partial"),
        ],
    )
    def test_covers(self, granted: str, requested: str) -> None:
        """The requested purpose is the granted one or below it."""
        assert purpose_covers(granted, requested)

    @pytest.mark.parametrize(
        ("granted", "requested"),
        [
            ("billing", "billingx"),
            ("billing", "billing2"),
            ("billing", "billing2.refund"),
            ("billing", "billing-refund"),
            ("billing", "billing_refund"),
            ("billing", "Billing"),
            ("billing", "ops"),
            ("billing", "ops.billing"),
            ("billing.refund", "billing"),
            ("billing.refund", "billing.refunds"),
            ("billing.refund", "billing.refund2.partial"),
            ("billing.refund", "billing.other"),
        ],
    )
    def test_does_not_cover(self, granted: str, requested: str) -> None:
        """A sibling, a prefix that is not a label boundary, or a wider purpose is refused."""
        assert not purpose_covers(granted, requested)


class TestParsePurpose:
    """``parse_purpose``: lowercase dotted labels, at most eight deep."""

    @pytest.mark.parametrize(
        "text",
        [
            "billing",
            "billing.refund",
            "billing.refund.partial",
            "a-b_c9",
            "a." * 7 + "a",
            "a" + "b" * 62,
        ],
    )
    def test_accepts(self, text: str) -> None:
        """A valid purpose is returned unchanged."""
        assert parse_purpose(text) == text

    @pytest.mark.parametrize(
        "text",
        [
            "",
            "Billing",
            "billing.Refund",
            "1billing",
            "billing.1refund",
            "-billing",
            "billing.",
            ".billing",
            "billing..refund",
            "billing refund",
            "billing\n",
            "billing\x00",
            "bílling",
            "billing/refund",
            "billing*",
            "a." * 8 + "a",
            "a" + "b" * 63,
        ],
    )
    def test_refuses(self, text: str) -> None:
        """An invalid purpose is refused with CPN-REQ-003."""
        with pytest.raises(InvalidRequest) as info:
            parse_purpose(text)
        assert info.value.code is codes.REQUEST_PURPOSE

    def test_refuses_non_string(self) -> None:
        """A non-string purpose is refused with CPN-REQ-003."""
        with pytest.raises(InvalidRequest) as info:
            parse_purpose(cast(str, 7))
        assert info.value.code is codes.REQUEST_PURPOSE


class TestActions:
    """``parse_action`` and ``parse_actions``: a non-empty set of lowercase names."""

    @pytest.mark.parametrize(
        "text", ["read", "orders.refund", "a:b", "x-y", "a_b", "r2", "a" + "b" * 63]
    )
    def test_accepts_action(self, text: str) -> None:
        """A valid action name is returned unchanged."""
        assert parse_action(text) == text

    @pytest.mark.parametrize(
        "text",
        [
            "",
            "Read",
            "READ",
            "1read",
            "_read",
            "read write",
            "read\n",
            "read\x00",
            "réad",
            "read/all",
            "read*",
            "a" + "b" * 64,
        ],
    )
    def test_refuses_action(self, text: str) -> None:
        """An invalid action name is refused with CPN-REQ-002."""
        with pytest.raises(InvalidRequest) as info:
            parse_action(text)
        assert info.value.code is codes.REQUEST_ACTION

    def test_accepts_list(self) -> None:
        """A list of distinct valid actions becomes a frozenset."""
        assert parse_actions(["read", "write"]) == frozenset({"read", "write"})

    def test_accepts_the_maximum(self) -> None:
        """Exactly ``MAX_ACTIONS`` actions are accepted."""
        assert len(parse_actions([f"a{i}" for i in range(MAX_ACTIONS)])) == MAX_ACTIONS

    @pytest.mark.parametrize(
        "values",
        [
            pytest.param([], id="empty"),
            pytest.param("read", id="bare-string"),
            pytest.param({"read": True}, id="dict"),
            pytest.param(None, id="none"),
            pytest.param(["read", "read"], id="duplicate"),
            pytest.param(["read", 1], id="non-string"),
            pytest.param(["Read"], id="invalid-name"),
            pytest.param([f"a{i}" for i in range(MAX_ACTIONS + 1)], id="too-many"),
        ],
    )
    def test_refuses_list(self, values: Any) -> None:
        """An empty, duplicated, oversized or ill-typed list is refused with CPN-REQ-002."""
        with pytest.raises(InvalidRequest) as info:
            parse_actions(values)
        assert info.value.code is codes.REQUEST_ACTION


class TestBuilderUsesTheGrammar:
    """``CouponBuilder`` refuses what the grammar refuses, with the same codes."""

    def test_resource(self) -> None:
        """A traversal in a requested grant is refused with CPN-REQ-001."""
        with pytest.raises(InvalidRequest) as info:
            CouponBuilder().resource("orders/../admin")
        assert info.value.code is codes.REQUEST_RESOURCE

    def test_actions(self) -> None:
        """A duplicated action is refused with CPN-REQ-002."""
        with pytest.raises(InvalidRequest) as info:
            CouponBuilder().actions("read", "read")
        assert info.value.code is codes.REQUEST_ACTION

    def test_purpose(self) -> None:
        """An uppercase purpose is refused with CPN-REQ-003."""
        with pytest.raises(InvalidRequest) as info:
            CouponBuilder().purpose("Billing")
        assert info.value.code is codes.REQUEST_PURPOSE
