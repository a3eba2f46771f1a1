"""Resource patterns, actions and purposes: the grammar and the matcher.

Resources are path-like and matched segment by segment::

    pattern  = segment *( "/" segment )
    segment  = literal / "*" / "**"          ; "**" only as the last segment
    literal  = 1*128( ALPHA / DIGIT / "-" / "_" / "." / "~" / ":" / "@" / "+" / "=" / "," )
               ; but never "." or ".."

``*`` matches exactly one segment; ``**`` matches zero or more trailing segments. Matching is
exact and case-sensitive. Nothing is decoded or folded: percent signs, backslashes, empty
segments, dot segments, whitespace and any non-ASCII character are *rejected*, never
normalised, because a normalisation the backend does differently is exactly the trick an
attacker uses (``orders/1/../2``, ``orders%2F2``, ``ＯRDERS``). The only normalisation is that
one leading and one trailing ``/`` are dropped, so a URL path can be passed as it is.

Purposes are dotted hierarchies: ``billing.refund`` is narrower than ``billing``. A grant of
``billing`` covers ``billing`` and ``billing.refund``, never ``billingx`` or ``billing2.refund``.
"""

from __future__ import annotations

import functools
import re
from dataclasses import dataclass
from typing import Final

from coupon import codes
from coupon.errors import InvalidRequest

__all__ = [
    "MAX_ACTIONS",
    "MAX_RESOURCE_LENGTH",
    "MAX_SEGMENTS",
    "ResourcePattern",
    "parse_action",
    "parse_actions",
    "parse_purpose",
    "parse_resource",
    "purpose_covers",
]

MAX_RESOURCE_LENGTH: Final = 1024
MAX_SEGMENTS: Final = 32
MAX_ACTIONS: Final = 32
MAX_PURPOSE_DEPTH: Final = 8

_LITERAL: Final = re.compile(r"[A-Za-z0-9\-_.~:@+=,]{1,128}")
_ACTION: Final = re.compile(r"[a-z][a-z0-9_.:-]{0,63}")
_PURPOSE: Final = re.compile(r"[a-z][a-z0-9_-]{0,62}(?:\.[a-z][a-z0-9_-]{0,62}){0,7}")

ONE: Final = "*"
REST: Final = "**"


def _segments(text: str, *, wildcards: bool) -> tuple[str, ...]:
    what = "resource pattern" if wildcards else "resource"
    if not isinstance(text, str):
        raise InvalidRequest(codes.REQUEST_RESOURCE, f"{what} must be a string")
    if len(text) > MAX_RESOURCE_LENGTH:
        raise InvalidRequest(codes.REQUEST_RESOURCE, f"{what} longer than {MAX_RESOURCE_LENGTH}")
    body = text[1:] if text.startswith("/") else text
    body = body[:-1] if body.endswith("/") else body
    if not body:
        raise InvalidRequest(codes.REQUEST_RESOURCE, f"empty {what}")
    segments = tuple(body.split("/"))
    if len(segments) > MAX_SEGMENTS:
        raise InvalidRequest(
            codes.REQUEST_RESOURCE, f"{what} has more than {MAX_SEGMENTS} segments"
        )
    last = len(segments) - 1
    for i, seg in enumerate(segments):
        if wildcards and (seg == ONE or (seg == REST and i == last)):
            continue
        if seg in (".", ".."):
            raise InvalidRequest(codes.REQUEST_RESOURCE, f"dot segment {seg!r} in {what}")
        if not _LITERAL.fullmatch(seg):
            raise InvalidRequest(codes.REQUEST_RESOURCE, _why_bad(seg, what))
    return segments


def _why_bad(seg: str, what: str) -> str:
    if seg == "":
        return f"empty segment in {what}"
    if seg == REST:
        return (
            f"'**' may only end a {what}" if what == "resource pattern" else "wildcard in resource"
        )
    if seg == ONE:
        return f"wildcard in {what}"
    if not seg.isascii():
        return f"non-ASCII character in {what}"
    if "%" in seg:
        return f"percent-encoding in {what}"
    if len(seg) > 128:
        return f"segment longer than 128 characters in {what}"
    return f"character not allowed in {what} segment {seg[:40]!r}"


def parse_resource(text: str) -> tuple[str, ...]:
    """Parse a concrete requested resource (no wildcards) into its segments.

    Raises:
        InvalidRequest: ``CPN-REQ-001`` when the text breaks the grammar.
    """
    if not isinstance(text, str):
        raise InvalidRequest(codes.REQUEST_RESOURCE, "resource must be a string")
    return _resource_cached(text)


# Grammar checks are pure and the same few values repeat on every request, so their
# results are memoised (bounded; failures raise and are not cached).
@functools.lru_cache(maxsize=4096)
def _resource_cached(text: str) -> tuple[str, ...]:
    return _segments(text, wildcards=False)


@functools.lru_cache(maxsize=4096)
def _pattern_cached(text: str) -> ResourcePattern:
    return ResourcePattern(_segments(text, wildcards=True))


@dataclass(frozen=True, slots=True)
class ResourcePattern:
    """A parsed resource pattern; build it with :meth:`parse`."""

    segments: tuple[str, ...]

    @classmethod
    def parse(cls, text: str) -> ResourcePattern:
        """Parse ``text`` per the grammar above; ``InvalidRequest`` if it breaks it."""
        if not isinstance(text, str):
            raise InvalidRequest(codes.REQUEST_RESOURCE, "resource pattern must be a string")
        return _pattern_cached(text)

    def __str__(self) -> str:
        return "/".join(self.segments)

    @property
    def open_ended(self) -> bool:
        """Whether the pattern ends in ``**``."""
        return self.segments[-1] == REST

    def matches(self, resource: tuple[str, ...]) -> bool:
        """Whether the concrete ``resource`` (from :func:`parse_resource`) is granted."""
        pat = self.segments
        if pat[-1] == REST:
            fixed = len(pat) - 1
            if len(resource) < fixed:
                return False
        elif len(resource) != len(pat):
            return False
        else:
            fixed = len(pat)
        for i in range(fixed):
            p = pat[i]
            if p != ONE and p != resource[i]:
                return False
        return True

    def covers(self, other: ResourcePattern) -> bool:
        """Whether every resource ``other`` matches is also matched by this pattern."""
        mine, theirs = self.segments, other.segments
        mine_open, theirs_open = mine[-1] == REST, theirs[-1] == REST
        mine_fixed = len(mine) - mine_open
        theirs_fixed = len(theirs) - theirs_open
        if mine_open:
            # A resource has at least one segment, so "**" alone matches lengths 1, 2, ...
            shortest = max(theirs_fixed, 1) if theirs_open else theirs_fixed
            if shortest < mine_fixed:
                return False
        elif theirs_open or theirs_fixed != mine_fixed:
            return False
        for i in range(mine_fixed):
            p = mine[i]
            if p == ONE:
                continue
            # Past their fixed part their segment is arbitrary: only "*" covers it.
            if i >= theirs_fixed or p != theirs[i]:
                return False
        return True


def parse_action(text: str) -> str:
    """Validate one action name (``read``, ``orders.refund``)."""
    if not isinstance(text, str) or not _ACTION.fullmatch(text):
        raise InvalidRequest(codes.REQUEST_ACTION, f"invalid action {str(text)[:40]!r}")
    return text


def parse_actions(values: object) -> frozenset[str]:
    """Validate a non-empty list of distinct action names."""
    if not isinstance(values, list | tuple | frozenset | set) or not values:
        raise InvalidRequest(codes.REQUEST_ACTION, "actions must be a non-empty list")
    if len(values) > MAX_ACTIONS:
        raise InvalidRequest(codes.REQUEST_ACTION, f"more than {MAX_ACTIONS} actions")
    if all(type(v) is str for v in values):
        return _actions_cached(tuple(values))
    return _actions(tuple(values))


def _actions(values: tuple[object, ...]) -> frozenset[str]:
    actions = frozenset(parse_action(v) for v in values)  # type: ignore[arg-type]
    if len(actions) != len(values):
        raise InvalidRequest(codes.REQUEST_ACTION, "duplicate action")
    return actions


@functools.lru_cache(maxsize=4096)
def _actions_cached(values: tuple[str, ...]) -> frozenset[str]:
    return _actions(values)


@functools.lru_cache(maxsize=4096)
def _purpose_cached(text: str) -> str:
    if not _PURPOSE.fullmatch(text):
        raise InvalidRequest(codes.REQUEST_PURPOSE, f"invalid purpose {text[:40]!r}")
    return text


def parse_purpose(text: str) -> str:
    """Validate a purpose (``billing``, ``billing.refund``)."""
    if isinstance(text, str):
        return _purpose_cached(text)
    if not isinstance(text, str) or not _PURPOSE.fullmatch(text):
        raise InvalidRequest(codes.REQUEST_PURPOSE, f"invalid purpose {str(text)[:40]!r}")
    return text


def purpose_covers(granted: str, requested: str) -> bool:
    """Whether ``requested`` equals ``granted`` or is a narrower purpose below it."""
    return requested == granted or requested.startswith(granted + ".")
