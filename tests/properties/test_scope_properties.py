"""Properties of resource patterns, checked against a naive reference model.

Patterns and resources are drawn from a two-letter alphabet so that literals collide often;
the resource alphabet adds a third letter that no pattern contains, so ``*`` and ``**`` are
exercised on segments that no literal matches.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable, Sequence
from typing import TypeVar

from hypothesis import example, given, settings
from hypothesis import strategies as st

from coupon import codes
from coupon.errors import InvalidRequest
from coupon.token import ResourcePattern, parse_resource

PATTERN_LITERALS = ("a", "b")
RESOURCE_LITERALS = ("a", "b", "c")
ONE, REST = "*", "**"

SETTINGS = settings(max_examples=100, deadline=None)


T = TypeVar("T")


def outcome(make: Callable[[], T]) -> T | InvalidRequest:
    """Run ``make`` and return its result, or the ``InvalidRequest`` it raised."""
    try:
        return make()
    except InvalidRequest as exc:
        return exc


def ref_matches(pattern: Sequence[str], resource: Sequence[str]) -> bool:
    """The obviously correct matcher: one recursive step per pattern segment.

    ``**`` is handled wherever it stands (trying every split), which is more general than the
    grammar needs, so the model does not lean on "``**`` is last" at all.
    """
    if not pattern:
        return not resource
    head, rest = pattern[0], pattern[1:]
    if head == REST:
        return any(ref_matches(rest, resource[i:]) for i in range(len(resource) + 1))
    if not resource:
        return False
    if head == ONE or head == resource[0]:
        return ref_matches(rest, resource[1:])
    return False


def literals(pattern: Sequence[str]) -> set[str]:
    """The literal segments of ``pattern``."""
    return {s for s in pattern if s not in (ONE, REST)}


def ref_covers(p: Sequence[str], q: Sequence[str]) -> bool:
    """Whether every resource ``q`` matches is matched by ``p``, by bounded enumeration.

    The sets are infinite when a pattern ends in ``**`` (and large even without it), so we
    enumerate resources over the alphabet ``lit(p) | lit(q) | {fresh}`` and of length
    ``1 .. max(len(p), len(q)) + 1``. That is enough: if any resource ``r`` (of any length and
    any segments) is matched by ``q`` and not by ``p``, one of the enumerated ones is too.

    * Alphabet. A segment of ``r`` that is not a literal of ``p`` or ``q`` sits under a
      wildcard of ``q`` (a literal of ``q`` would have to equal it), so ``q`` still matches when
      it is replaced by ``fresh``; and ``p`` compares it only for equality with its own
      literals, all different from both the old value and ``fresh``, so ``p`` still fails.
    * Length. Let ``n = max(len(p), len(q))``. If ``len(r) > n + 1``, ``q`` must end in ``**``
      (a closed ``q`` matches only its own length). Cut ``r`` to ``n + 1`` segments: ``q``
      still matches, since its fixed prefix (shorter than ``n + 1``) is kept and ``**``
      absorbs the rest. If ``p`` is closed it needs length ``len(p) < n + 1``, so it still
      fails; if ``p`` ends in ``**`` its answer depends only on its fixed prefix (kept) and on
      the length being at least that prefix (true before and after), so it still fails.
    * Resources have at least one segment (``parse_resource`` refuses the empty one), and
      ``n + 1`` stays far below ``MAX_SEGMENTS``, so every enumerated resource is a real one
      and the real length limit removes no witness the argument needs.
    """
    alphabet = sorted(literals(p) | literals(q) | {"fresh"})
    for length in range(1, max(len(p), len(q)) + 2):
        for resource in itertools.product(alphabet, repeat=length):
            if ref_matches(q, resource) and not ref_matches(p, resource):
                return False
    return True


@st.composite
def patterns(draw: st.DrawFn, *, max_fixed: int = 4) -> str:
    """A pattern over the small alphabet: literals and ``*``, optionally ending in ``**``."""
    open_ended = draw(st.booleans())
    fixed = draw(
        st.lists(
            st.sampled_from((*PATTERN_LITERALS, ONE)),
            min_size=0 if open_ended else 1,
            max_size=max_fixed,
        )
    )
    return "/".join([*fixed, REST] if open_ended else fixed)


resources = st.lists(st.sampled_from(RESOURCE_LITERALS), min_size=1, max_size=6).map("/".join)


@st.composite
def instances(draw: st.DrawFn, pattern: str) -> str:
    """A concrete resource that ``pattern`` matches, with its wildcards filled in at random."""
    out: list[str] = []
    for segment in pattern.split("/"):
        if segment == ONE:
            out.append(draw(st.sampled_from(RESOURCE_LITERALS)))
        elif segment == REST:
            out.extend(draw(st.lists(st.sampled_from(RESOURCE_LITERALS), max_size=3)))
        else:
            out.append(segment)
    if not out:  # a lone "**" with zero segments filled in: resources are never empty
        out.append(draw(st.sampled_from(RESOURCE_LITERALS)))
    return "/".join(out)


# Any literal the grammar allows (not "." or ".."), for the round trips.
grammar_literals = st.from_regex(r"[A-Za-z0-9\-_.~:@+=,]{1,16}", fullmatch=True).filter(
    lambda s: s not in (".", "..")
)


@st.composite
def grammar_patterns(draw: st.DrawFn) -> list[str]:
    """The segments of any valid pattern: valid literals and ``*``, maybe ending in ``**``."""
    fixed = draw(st.lists(st.one_of(grammar_literals, st.just(ONE)), min_size=1, max_size=8))
    return [*fixed, REST] if draw(st.booleans()) else fixed


class TestMatchesAgreesWithReference:
    """``ResourcePattern.matches`` against the recursive reference matcher."""

    @SETTINGS
    @given(pattern=patterns(), resource=resources)
    def test_agrees(self, pattern: str, resource: str) -> None:
        """The matcher and the reference model give the same answer on every pair."""
        segments = tuple(pattern.split("/"))
        expected = ref_matches(segments, tuple(resource.split("/")))
        assert ResourcePattern.parse(pattern).matches(parse_resource(resource)) is expected

    @SETTINGS
    @given(data=st.data(), pattern=patterns())
    def test_matches_its_instances(self, data: st.DataObject, pattern: str) -> None:
        """A pattern matches every resource obtained by filling in its wildcards."""
        resource = data.draw(instances(pattern))
        assert ResourcePattern.parse(pattern).matches(parse_resource(resource))


class TestCovers:
    """``ResourcePattern.covers`` is the subset relation on the sets of matched resources."""

    @SETTINGS
    @given(data=st.data(), p=patterns(), q=patterns())
    def test_sound(self, data: st.DataObject, p: str, q: str) -> None:
        """When ``p`` covers ``q``, every resource ``q`` matches is matched by ``p``."""
        resource = data.draw(instances(q))
        pattern_q = ResourcePattern.parse(q)
        assert pattern_q.matches(parse_resource(resource))
        if ResourcePattern.parse(p).covers(pattern_q):
            assert ResourcePattern.parse(p).matches(parse_resource(resource))

    @SETTINGS
    @given(p=patterns(), q=patterns())
    @example(p="*/**", q="**")
    @example(p="a/**", q="a")
    @example(p="a/*", q="a/**")
    @example(p="*/*/**", q="*/**")
    def test_exact(self, p: str, q: str) -> None:
        """``covers`` answers exactly what bounded enumeration of resources answers."""
        expected = ref_covers(tuple(p.split("/")), tuple(q.split("/")))
        assert ResourcePattern.parse(p).covers(ResourcePattern.parse(q)) is expected

    @SETTINGS
    @given(p=patterns())
    def test_reflexive(self, p: str) -> None:
        """Every pattern covers itself."""
        assert ResourcePattern.parse(p).covers(ResourcePattern.parse(p))

    @SETTINGS
    @given(p=patterns(max_fixed=3), q=patterns(max_fixed=3), r=patterns(max_fixed=3))
    def test_transitive(self, p: str, q: str, r: str) -> None:
        """If ``p`` covers ``q`` and ``q`` covers ``r``, then ``p`` covers ``r``."""
        pp, pq, pr = (ResourcePattern.parse(x) for x in (p, q, r))
        if pp.covers(pq) and pq.covers(pr):
            assert pp.covers(pr)


class TestRoundTrip:
    """Parsing and printing patterns and resources."""

    @SETTINGS
    @given(segments=grammar_patterns(), lead=st.booleans(), trail=st.booleans())
    def test_pattern_round_trips(self, segments: list[str], lead: bool, trail: bool) -> None:
        """parse → str → parse gives the same pattern, and str drops the optional slashes."""
        canonical = "/".join(segments)
        text = ("/" if lead else "") + canonical + ("/" if trail else "")
        pattern = ResourcePattern.parse(text)
        assert pattern.segments == tuple(segments)
        assert str(pattern) == canonical
        assert ResourcePattern.parse(str(pattern)) == pattern

    @SETTINGS
    @given(segments=st.lists(grammar_literals, min_size=1, max_size=8))
    def test_resource_round_trips(self, segments: list[str]) -> None:
        """A resource parses into its segments, and as a pattern it matches exactly itself."""
        text = "/".join(segments)
        assert parse_resource(text) == tuple(segments)
        assert ResourcePattern.parse(text).matches(parse_resource(text))

    @SETTINGS
    @given(text=st.text(alphabet="ab*/.%\\ é\x00", max_size=12))
    def test_any_text_parses_canonically_or_is_refused(self, text: str) -> None:
        """Arbitrary text either is refused with CPN-REQ-001 or re-serialises to itself."""
        pattern = outcome(lambda: ResourcePattern.parse(text))
        if isinstance(pattern, InvalidRequest):
            assert pattern.code is codes.REQUEST_RESOURCE
            return
        body = text.removeprefix("/")
        body = body.removesuffix("/")
        assert str(pattern) == body
        assert ResourcePattern.parse(str(pattern)) == pattern
