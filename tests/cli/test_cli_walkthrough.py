"""The README walkthrough, end to end, through the CLI only (no library calls to set up).

keygen issuer/holder/delegate -> mint bound to the holder -> attenuate offline to the
delegate -> dpop create with the delegate key -> verify allows the right request and denies
a wider one. (A replayed proof is only caught inside one verifier process; each CLI run has a
fresh replay store, so replay is tested on the library, not here.)
"""

from __future__ import annotations

from pathlib import Path

from tests.cli.cli_support import Cli

NOW = "1800000000"
URL = "https://api.example/orders/123"


class TestReadmeWalkthrough:
    def test_walkthrough(self, cli: Cli, tmp_path: Path) -> None:
        """The whole README flow: allowed for the delegated request, denied for a wider one."""
        issuer, holder, delegate = (str(tmp_path / f"{n}.jwk") for n in ("iss", "hold", "del"))
        jwks = str(tmp_path / "jwks.json")

        # 1. Keys: the Authority's issuer key (with its public JWKS), a holder, a delegate.
        assert cli("keygen", "--kid", "issuer-1", "--out", issuer, "--jwks-out", jwks).code == 0
        assert cli("keygen", "--out", holder).code == 0
        made_delegate = cli("keygen", "--alg", "ES256", "--out", delegate, "--json")
        delegate_jkt = made_delegate.json()["thumbprint"]

        # 2. Mint a coupon for svc-a, bound to the holder key.
        minted = cli(
            "mint", "--key", issuer, "--issuer", "https://authority.example",
            "--subject", "svc-a", "--audience", "orders-api", "--tenant", "acme",
            "--resource", "orders/**", "--action", "read", "--action", "write",
            "--purpose", "fulfilment", "--bind-key", holder, "--now", NOW,
        )  # fmt: skip
        assert minted.code == 0
        coupon = tmp_path / "coupon.txt"
        coupon.write_text(minted.out)

        # 3. svc-a attenuates it offline for svc-b: one order, read only, a narrower purpose.
        attenuated = cli(
            "attenuate", str(coupon), "--key", holder, "--to-key", delegate,
            "--subject", "svc-b", "--resource", "orders/123", "--action", "read",
            "--purpose", "fulfilment.ship", "--ttl", "120", "--now", NOW,
        )  # fmt: skip
        assert attenuated.code == 0
        chain = tmp_path / "chain.txt"
        chain.write_text(attenuated.out)
        assert cli("validate", str(chain)).code == 0
        assert cli("extract", str(chain), "cnf.jkt").out.strip() == delegate_jkt
        inspected = cli("inspect", str(chain), "--now", NOW, "--json").json()
        assert (inspected["subject"], inspected["resource"], inspected["depth"]) == (
            "svc-b",
            "orders/123",
            1,
        )

        # 4. svc-b signs a DPoP proof over the chain with the delegate key.
        made = cli(
            "dpop", "create", "--key", delegate, "--htm", "GET", "--htu", URL,
            "--token", str(chain), "--now", NOW,
        )  # fmt: skip
        assert made.code == 0
        proof = tmp_path / "proof.txt"
        proof.write_text(made.out)

        # 5. The orders API verifies: the delegated request is allowed...
        request = [
            "verify", str(chain), "--jwks", jwks, "--aud", "orders-api",
            "--dpop", str(proof), "--htm", "GET", "--htu", URL, "--now", NOW,
        ]  # fmt: skip
        allowed = cli(*request, "--resource", "orders/123", "--action", "read",
                      "--purpose", "fulfilment.ship")  # fmt: skip
        assert allowed.code == 0
        assert allowed.err.startswith("OK: allowed\ntimings (us): ")

        # ... and anything wider than the delegation is denied with a CPN-SCOPE code.
        for wider, code in (
            (["--resource", "orders/124"], "CPN-SCOPE-001"),
            (["--resource", "orders/123", "--action", "write"], "CPN-SCOPE-002"),
            (["--purpose", "fulfilment"], "CPN-SCOPE-003"),
            (["--tenant", "globex"], "CPN-SCOPE-004"),
        ):
            denied = cli(*request, *wider)
            assert denied.code == 1, wider
            assert denied.err.startswith(f"FAIL: {code} "), denied.err
