"""``coupon keys drill`` against a real ``coupon up`` whose keys live in SoftHSM2: twice,
the second time with ``--rollback``, and once during an HSM outage (it must fail)."""

from __future__ import annotations

import json
from collections.abc import Iterator

import pytest
from tests.services.harness import AuthorityProcess
from tests.services.hsm_support import pkcs11_env, wait_until
from tests.softhsm_fixtures import SoftHsm, require_softhsm

from coupon.cli import main

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def hsm(tmp_path_factory: pytest.TempPathFactory) -> SoftHsm:
    """A SoftHSM2 installation for this module's Authority."""
    require_softhsm()
    return SoftHsm(tmp_path_factory.mktemp("hsm-drill"))


@pytest.fixture(scope="module")
def authority(hsm: SoftHsm, tmp_path_factory: pytest.TempPathFactory) -> Iterator[AuthorityProcess]:
    """An Authority whose coupon and Ledger keys are in a fresh token."""
    token = hsm.init_token("coupon-drill")
    root = tmp_path_factory.mktemp("authority-drill")
    with AuthorityProcess(data_dir=root, env=pkcs11_env(hsm, token), name="drill") as proc:
        proc.start()
        yield proc


def drill(authority: AuthorityProcess, *extra: str) -> list[str]:
    """Run the drill; its exit code is the last element, the transcript lines before it."""
    argv = ["keys", "drill", "--url", authority.base_url, "--api-key", authority.admin_key]
    return [*extra, str(main([*argv, *extra]))]


class TestDrill:
    """The drill passes twice in a row, including the rollback case."""

    def test_rotation_then_rollback(
        self, authority: AuthorityProcess, capsys: pytest.CaptureFixture[str]
    ) -> None:
        """Run 1 rotates and verifies (7 steps); run 2 also rolls back (11 steps); every
        step is OK and the coupon key signing at the end is the one from before run 2."""
        assert drill(authority)[-1] == "0"
        first = capsys.readouterr()
        lines = first.out.splitlines()
        assert lines[0].startswith("coupon keys drill against")
        assert [line[:4] for line in lines[1:]] == ["OK  "] * 7
        assert "OK: drill passed: 7 steps" in first.err
        signing = authority.client.get("/v1/admin/keys").json()["keys"][0]["kid"]

        assert drill(authority, "--rollback")[-1] == "0"
        second = capsys.readouterr()
        lines = second.out.splitlines()
        assert [line[:4] for line in lines[1:]] == ["OK  "] * 11
        assert "roll back the coupon keys" in lines[8]
        assert "OK: drill passed: 11 steps" in second.err
        current = [
            k
            for k in authority.client.get("/v1/admin/keys").json()["keys"]
            if k["state"] == "current"
        ]
        assert current[0]["kid"] == signing

    def test_json_transcript(
        self, authority: AuthorityProcess, capsys: pytest.CaptureFixture[str]
    ) -> None:
        """``--json`` prints every step as a document."""
        assert drill(authority, "--json")[-1] == "0"
        document = json.loads(capsys.readouterr().out)
        assert document["ok"] is True
        assert [s["number"] for s in document["steps"]] == list(range(1, 8))

    def test_fails_during_an_hsm_outage(
        self, authority: AuthorityProcess, hsm: SoftHsm, capsys: pytest.CaptureFixture[str]
    ) -> None:
        """With the token gone the drill stops at the first issuance and exits 1."""
        with hsm.removed():
            wait_until(
                lambda: authority.anon.get("/readyz").status_code == 503, what="the outage seen"
            )
            assert drill(authority)[-1] == "1"
        captured = capsys.readouterr()
        assert "FAIL   2  issue coupon A: /v1/coupons: HTTP 503" in captured.out
        assert "CPN-DEP-004" in captured.out
        assert "FAIL: drill failed at step 2 (issue coupon A)" in captured.err
        wait_until(lambda: authority.anon.get("/readyz").status_code == 200, what="recovery")
