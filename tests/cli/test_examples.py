"""The examples shipped in examples/ run and say what the docs say they say."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


class TestWalkthrough:
    def test_walkthrough_allows_the_narrow_request_and_denies_the_wider(
        self, tmp_path: Path
    ) -> None:
        """examples/walkthrough.sh ends with an allow then a CPN-SCOPE-002 denial."""
        env = {
            **os.environ,
            "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}",
        }
        result = subprocess.run(
            ["bash", str(ROOT / "examples" / "walkthrough.sh"), str(tmp_path)],
            env=env,
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
        )
        assert result.returncode == 0, result.stderr
        assert "OK: allowed" in result.stderr
        assert "FAIL: CPN-SCOPE-002 action not granted" in result.stderr
        assert "walkthrough done" in result.stdout
        assert (tmp_path / "chain.txt").read_text().count("~") == 1
