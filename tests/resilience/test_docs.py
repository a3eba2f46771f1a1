"""The ```pycon examples of docs/resilience.md run as one doctest session."""

from __future__ import annotations

from pathlib import Path

from tests.test_docs_examples import run_page

PAGE = Path(__file__).resolve().parents[2] / "docs" / "resilience.md"


class TestResilienceDocs:
    def test_examples(self) -> None:
        """Every example on the resilience page gives the output shown."""
        failed, attempted, report = run_page(PAGE)
        assert attempted > 0
        assert failed == 0, report
