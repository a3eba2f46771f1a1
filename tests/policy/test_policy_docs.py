"""The ```pycon examples of docs/policy.md run as one doctest session, from the repo root."""

from __future__ import annotations

import doctest
import io
import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
PAGE = ROOT / "docs" / "policy.md"
_BLOCK = re.compile(r"^```pycon[ \t]*\n(.*?)^```[ \t]*$", re.MULTILINE | re.DOTALL)


def test_policy_page_examples(monkeypatch: pytest.MonkeyPatch) -> None:
    """Every example on docs/policy.md produces the output the page shows."""
    monkeypatch.chdir(ROOT)
    text = PAGE.read_text(encoding="utf-8")
    parser = doctest.DocTestParser()
    runner = doctest.DocTestRunner(optionflags=doctest.ELLIPSIS)
    out = io.StringIO()
    globs: dict[str, object] = {"__name__": "docs.policy"}
    attempted = failed = 0
    for match in _BLOCK.finditer(text):
        lineno = text.count("\n", 0, match.start(1))
        test = parser.get_doctest(match.group(1), globs, "policy.md", str(PAGE), lineno)
        result = runner.run(test, out=out.write, clear_globs=False)
        failed, attempted = failed + result.failed, attempted + result.attempted
        globs = test.globs
    assert attempted > 10
    assert failed == 0, out.getvalue()
