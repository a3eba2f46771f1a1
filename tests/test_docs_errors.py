"""docs/errors.md and the code agree: every error code, and the exception tree.

The page is what callers read; ``coupon.codes`` is what services raise. This test parses the
page, so neither can change without the other.
"""

from __future__ import annotations

import inspect
import re
from pathlib import Path

import pytest

from coupon import codes, errors

PAGE = Path(__file__).resolve().parent.parent / "docs" / "errors.md"

_ROW = re.compile(r"^\|\s*`(CPN-[A-Z]+-\d{3})`\s*\|(.*)\|\s*$")
_TREE_LINE = re.compile(r"^(?P<prefix>[│├└─ ]*)(?P<name>[A-Z]\w*)")


def _text() -> str:
    return PAGE.read_text(encoding="utf-8")


def code_rows(text: str) -> list[tuple[str, str, str, int, str]]:
    """Every table row that starts with a code, as (code, title, kind, status, protocol)."""
    rows = []
    for line in text.splitlines():
        match = _ROW.match(line)
        if match is None:
            continue
        cells = [cell.strip() for cell in match.group(2).split("|")]
        assert len(cells) == 4, f"a code row has five columns: {line}"
        title, kind, status, protocol = cells
        rows.append((match.group(1), title, kind.strip("`"), int(status), protocol.strip("`")))
    return rows


def tree_parents(text: str) -> dict[str, str | None]:
    """The exception tree drawn on the page, as {class name: parent class name}."""
    section = text.split("## Exception tree", 1)[1]
    block = section.split("```", 2)[1]
    parents: dict[str, str | None] = {}
    stack: list[str] = []
    for line in block.splitlines():
        match = _TREE_LINE.match(line)
        if match is None:
            continue
        depth = len(match.group("prefix")) // 4
        del stack[depth:]
        parents[match.group("name")] = stack[-1] if stack else None
        stack.append(match.group("name"))
    return parents


def _error_classes() -> dict[str, type[errors.CouponError]]:
    return {
        name: cls
        for name, cls in vars(errors).items()
        if inspect.isclass(cls) and issubclass(cls, errors.CouponError)
    }


class TestCodeTable:
    def test_lists_exactly_the_codes(self) -> None:
        """The page lists every code in coupon.codes.ALL, once, and no other."""
        listed = [row[0] for row in code_rows(_text())]
        duplicates = sorted({code for code in listed if listed.count(code) > 1})
        assert duplicates == []
        assert sorted(set(listed) - codes.ALL.keys()) == [], "documented but not in codes.py"
        assert sorted(codes.ALL.keys() - set(listed)) == [], "in codes.py but not documented"

    @pytest.mark.parametrize("code", sorted(codes.ALL))
    def test_row_matches_code(self, code: str) -> None:
        """Each row's title, exception class, HTTP status and protocol error are the code's."""
        rows = {row[0]: row[1:] for row in code_rows(_text())}
        entry = codes.ALL[code]
        assert rows.get(code) == (entry.title, entry.kind, entry.status, entry.protocol)

    def test_codes_follow_the_format(self) -> None:
        """Every code is SVC-CAT-NNN and its category is described on the page."""
        text = _text()
        for code in codes.ALL:
            assert re.fullmatch(r"CPN-[A-Z]+-\d{3}", code), code
            category = code.split("-")[1]
            assert f"| `{category}` |" in text, f"category {category} is not described"

    def test_parser_reads_a_row(self) -> None:
        """The row parser reads the five columns the page uses."""
        row = "| `CPN-TOK-001` | token exceeds the size limit | `MalformedCoupon` | 401 | `x` |"
        assert code_rows(row) == [
            ("CPN-TOK-001", "token exceeds the size limit", "MalformedCoupon", 401, "x")
        ]


class TestExceptionTree:
    def test_tree_is_the_class_hierarchy(self) -> None:
        """The tree names every CouponError class, each under its real base class."""
        drawn = tree_parents(_text())
        classes = _error_classes()
        assert sorted(drawn) == sorted(classes)
        for name, cls in classes.items():
            base = cls.__bases__[0]
            expected = base.__name__ if issubclass(base, errors.CouponError) else None
            assert drawn[name] == expected, f"{name} is drawn under {drawn[name]}"

    def test_every_kind_is_a_class_in_the_tree(self) -> None:
        """Each exception class named by a code appears in the tree."""
        drawn = tree_parents(_text())
        assert {entry.kind for entry in codes.ALL.values()} <= drawn.keys()

    def test_parser_reads_nesting(self) -> None:
        """The tree parser follows the box-drawing indentation."""
        text = "## Exception tree\n```\nA\n├── B\n│   └── C\n└── D\n```\n"
        assert tree_parents(text) == {"A": None, "B": "A", "C": "B", "D": "A"}
