"""docs/grpc.md's Python client example runs against a live Authority and prints what the
page says it prints (each ``print(...)  # <expected>`` line)."""

from __future__ import annotations

import contextlib
import io
import re
from pathlib import Path
from typing import Any

from tests.services.grpc_served import serve_grpc
from tests.services.harness import Launcher

PAGE = Path(__file__).resolve().parents[2] / "docs" / "grpc.md"
_BLOCK = re.compile(r"^```python\n(.*?)^```$", re.MULTILINE | re.DOTALL)
_PRINT = re.compile(r"^\s*print\(.*\)\s+# (.*)$", re.MULTILINE)


def _client_example() -> str:
    blocks: list[str] = _BLOCK.findall(PAGE.read_text(encoding="utf-8"))
    [block] = [b for b in blocks if "Stub(channel)" in b]
    return block


def test_client_example_prints_what_the_page_says(launcher: Launcher) -> None:
    """Issue, Verify and a refused Revoke, exactly as the page shows them."""
    served = serve_grpc(launcher, "embedded", name="docs")
    served.close()
    code = _client_example()
    namespace: dict[str, Any] = {
        "target": served.proc.grpc_target,
        "api_key": served.proc.admin_key,
    }
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        exec(compile(code, f"{PAGE}:python", "exec"), namespace)
    namespace["channel"].close()
    assert out.getvalue().splitlines() == _PRINT.findall(code)
