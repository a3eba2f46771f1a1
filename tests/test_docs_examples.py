"""The ```pycon examples in the docs run as doctests (STYLE.md: doc examples are doctested).

Each page is one doctest session: its blocks run in order and share their names, so a later
block can use what an earlier one defined, as a reader following the page would.
"""

from __future__ import annotations

import doctest
import io
import re
from pathlib import Path

import pytest

DOCS = Path(__file__).resolve().parent.parent / "docs"

#: The pages whose examples are tested. Add a page here when it gains ```pycon blocks.
PAGES = ("python-api.md", "coupon-format.md", "errors.md", "ledger.md")

_BLOCK = re.compile(r"^```pycon[ \t]*\n(.*?)^```[ \t]*$", re.MULTILINE | re.DOTALL)
_FLAGS = doctest.ELLIPSIS | doctest.DONT_ACCEPT_TRUE_FOR_1


def pycon_blocks(text: str) -> list[tuple[int, str]]:
    """Return each ```pycon block of ``text`` with the 0-based line its code starts on."""
    return [
        (text.count("\n", 0, match.start(1)), match.group(1)) for match in _BLOCK.finditer(text)
    ]


def run_page(path: Path) -> tuple[int, int, str]:
    """Run every block of ``path`` in one namespace; return (failed, attempted, report)."""
    parser = doctest.DocTestParser()
    runner = doctest.DocTestRunner(optionflags=_FLAGS)
    out = io.StringIO()
    globs: dict[str, object] = {"__name__": f"docs.{path.stem}"}
    failed = attempted = 0
    for lineno, block in pycon_blocks(path.read_text(encoding="utf-8")):
        test = parser.get_doctest(block, globs, f"{path.name}:{lineno + 1}", str(path), lineno)
        result = runner.run(test, out=out.write, clear_globs=False)
        failed, attempted = failed + result.failed, attempted + result.attempted
        globs = test.globs  # DocTest copies its globals: carry them to the next block
    return failed, attempted, out.getvalue()


class TestBlockExtraction:
    def test_finds_blocks_and_their_lines(self) -> None:
        """Blocks are found with the line their code starts on; other fences are skipped."""
        text = "intro\n```pycon\n>>> 1 + 1\n2\n```\n```python\nx = 1\n```\n"
        text += "```pycon\n>>> 3\n3\n```\n"
        assert pycon_blocks(text) == [(2, ">>> 1 + 1\n2\n"), (9, ">>> 3\n3\n")]

    def test_a_failing_example_is_reported(self, tmp_path: Path) -> None:
        """A wrong expected output makes the page fail, naming the line."""
        page = tmp_path / "page.md"
        page.write_text("text\n\n```pycon\n>>> 1 + 1\n3\n```\n", encoding="utf-8")
        failed, attempted, report = run_page(page)
        assert (failed, attempted) == (1, 1)
        assert "line 4" in report

    def test_blocks_share_one_session(self, tmp_path: Path) -> None:
        """A name defined in one block is visible in the next, as for a reader."""
        page = tmp_path / "page.md"
        page.write_text("```pycon\n>>> x = 41\n```\n\n```pycon\n>>> x + 1\n42\n```\n")
        assert run_page(page)[:2] == (0, 2)


@pytest.mark.parametrize("page", PAGES)
def test_page_examples(page: str) -> None:
    """Every ```pycon example on the page produces the output the page shows."""
    path = DOCS / page
    failed, attempted, report = run_page(path)
    assert attempted > 0, f"{page} has no ```pycon examples"
    assert failed == 0, f"{failed} of {attempted} examples failed in {page}:\n{report}"
