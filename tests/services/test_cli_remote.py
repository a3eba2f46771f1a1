"""The CLI against a running Authority: issue, revoke, keys, policy bundles, and the curl
example — each through the real `coupon` command and a real `coupon up` process."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from tests.services.harness import AuthorityProcess, Launcher

ROOT = Path(__file__).resolve().parents[2]
BIN = Path(sys.executable).parent


@pytest.fixture(scope="module")
def embedded(module_launcher: Launcher) -> AuthorityProcess:
    """One embedded Authority for the module (the launcher stops it)."""
    return module_launcher.start("embedded", name="cli-embedded")


def coupon(
    proc: AuthorityProcess, *args: str, cwd: Path, check: bool = True
) -> subprocess.CompletedProcess[str]:
    env = {
        **{k: v for k, v in os.environ.items() if not k.startswith("COUPON_")},
        "COUPON_URL": proc.base_url,
        "COUPON_API_KEY": proc.admin_key,
        "PATH": f"{BIN}{os.pathsep}{os.environ['PATH']}",
    }
    result = subprocess.run(
        [str(BIN / "coupon"), *args], cwd=cwd, env=env, capture_output=True, text=True, timeout=60
    )
    if check:
        assert result.returncode == 0, result.stderr
    return result


class TestIssueAndRevoke:
    def test_issue_then_revoke_by_jti(self, embedded: AuthorityProcess, tmp_path: Path) -> None:
        """`coupon issue` prints a coupon the Authority recorded; `coupon revoke` acknowledges."""
        coupon(embedded, "keygen", "--out", "holder.jwk", cwd=tmp_path)
        issued = coupon(
            embedded, "issue", "--subject", "svc-a", "--audience", "orders-api",
            "--tenant", "acme", "--resource", "orders/**", "--action", "read",
            "--purpose", "fulfilment", "--bind-key", "holder.jwk", "--json", cwd=tmp_path,
        )  # fmt: skip
        answer = json.loads(issued.stdout)
        assert answer["policy_version"] == "builtin-1"
        revoked = coupon(
            embedded, "revoke", "jti", answer["jti"], "--reason", "lost", "--json", cwd=tmp_path
        )
        (record,) = json.loads(revoked.stdout)["revocations"]
        assert record["value"] == answer["jti"]
        assert record["kind"] == "jti"

    def test_problem_becomes_fail_line_and_exit_1(
        self, embedded: AuthorityProcess, tmp_path: Path
    ) -> None:
        """A refused call prints FAIL with the Authority's code and exits 1."""
        result = coupon(
            embedded, "revoke", "jti", "x", "--reason", "r",
            "--api-key", "cpk_0000000000000000_" + "A" * 43, cwd=tmp_path, check=False,
        )  # fmt: skip
        assert result.returncode == 1
        assert "FAIL: CPN-AUTH-002" in result.stderr

    def test_unreachable_authority_is_exit_3(self, tmp_path: Path) -> None:
        """No Authority at the URL is an environment error (exit 3), not a crash."""
        env = {**os.environ, "COUPON_URL": "http://127.0.0.1:9", "COUPON_API_KEY": "k"}
        result = subprocess.run(
            [str(BIN / "coupon"), "keys", "list"], env=env, capture_output=True, text=True,
            timeout=60, check=False,
        )  # fmt: skip
        assert result.returncode == 3, result.stderr


class TestKeysAndPolicy:
    def test_rotate_and_roll_back(self, embedded: AuthorityProcess, tmp_path: Path) -> None:
        """`coupon keys rotate` promotes the next key; `rollback` restores the previous one."""
        before = json.loads(coupon(embedded, "keys", "list", "--json", cwd=tmp_path).stdout)
        current = next(k["kid"] for k in before["keys"] if k["state"] == "current")
        following = next(k["kid"] for k in before["keys"] if k["state"] == "next")
        rotated = json.loads(coupon(embedded, "keys", "rotate", "--json", cwd=tmp_path).stdout)
        assert rotated["signing_kid"] == following
        back = json.loads(coupon(embedded, "keys", "rollback", "--json", cwd=tmp_path).stdout)
        assert back["signing_kid"] == current

    def test_sign_upload_activate_and_roll_back_a_bundle(
        self, embedded: AuthorityProcess, tmp_path: Path
    ) -> None:
        """A bundle signed with the embedded signing key uploads, activates and rolls back."""
        rego = ROOT / "examples" / "policy" / "policy.rego"
        data = ROOT / "examples" / "policy" / "data.json"
        key = embedded.data_dir / "policy-signing.key"
        coupon(
            embedded, "policy", "sign", "--key", str(key), "--version", "cli-test-1",
            "--rego", str(rego), "--data", str(data), "--out", "bundle.json", cwd=tmp_path,
        )  # fmt: skip
        uploaded = coupon(
            embedded, "policy", "upload", "bundle.json", "--activate", "--json", cwd=tmp_path
        )
        assert json.loads(uploaded.stdout)["active"] == "cli-test-1"
        listed = json.loads(coupon(embedded, "policy", "list", "--json", cwd=tmp_path).stdout)
        assert listed["active"] == "cli-test-1"
        assert [p["version"] for p in listed["policies"]] == ["cli-test-1"]
        back = json.loads(coupon(embedded, "policy", "rollback", "--json", cwd=tmp_path).stdout)
        assert back == {"active": "builtin-1", "previous": "cli-test-1"}

    def test_bundle_signed_by_an_unknown_key_is_refused(
        self, embedded: AuthorityProcess, tmp_path: Path
    ) -> None:
        """A bundle signed by a key the Authority does not trust is CPN-POL-003."""
        coupon(embedded, "policy", "keygen", "--out", "stranger.key", cwd=tmp_path)
        coupon(
            embedded, "policy", "sign", "--key", "stranger.key", "--version", "evil-1",
            "--rego", str(ROOT / "examples" / "policy" / "policy.rego"), "--out", "evil.json",
            cwd=tmp_path,
        )  # fmt: skip
        result = coupon(embedded, "policy", "upload", "evil.json", cwd=tmp_path, check=False)
        assert result.returncode == 1
        assert "FAIL: CPN-POL-003" in result.stderr


class TestCurlExample:
    def test_authority_walkthrough_script(self, embedded: AuthorityProcess, tmp_path: Path) -> None:
        """examples/authority.sh issues, verifies (allowed), revokes, and is denied CPN-REV-001."""
        env = {**os.environ, "PATH": f"{BIN}{os.pathsep}{os.environ['PATH']}"}
        result = subprocess.run(
            ["bash", str(ROOT / "examples" / "authority.sh"), embedded.base_url,
             embedded.admin_key, str(tmp_path)],
            env=env, capture_output=True, text=True, timeout=120, check=False,
        )  # fmt: skip
        assert result.returncode == 0, result.stdout + result.stderr
        assert "False CPN-REV-001" in result.stdout
        assert "authority walkthrough done" in result.stdout

    def test_ledger_walkthrough_script(self, embedded: AuthorityProcess, tmp_path: Path) -> None:
        """examples/ledger.sh proves a fresh revocation is in the log (the README's commands)."""
        env = {**os.environ, "PATH": f"{BIN}{os.pathsep}{os.environ['PATH']}"}
        env = {k: v for k, v in env.items() if not k.startswith("COUPON_")}
        result = subprocess.run(
            ["bash", str(ROOT / "examples" / "ledger.sh"), embedded.base_url,
             embedded.admin_key, str(tmp_path)],
            env=env, capture_output=True, text=True, timeout=120, check=False,
        )  # fmt: skip
        assert result.returncode == 0, result.stdout + result.stderr
        assert "is in the log of size" in result.stderr
        assert "ledger walkthrough done" in result.stdout
        state = json.loads((tmp_path / "trust.json").read_text())
        assert state["size"] >= 1
