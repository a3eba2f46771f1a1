"""The commands that look at a token without the issuer's keys: decode, inspect, validate,
extract."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from tests.cli.cli_support import NOW, Cli, Keys, make_certificate, mint_for

from coupon.cli._render import duration
from coupon.token import Binding, CouponBuilder, SigningKey, x5t_s256_from_pem


def tamper(token: str) -> str:
    """Flip one character of the last signature."""
    last = token[-2]
    return token[:-2] + ("A" if last != "A" else "B") + token[-1]


class TestDecode:
    def test_prints_every_link_and_warns(self, cli: Cli, chain: str) -> None:
        """Each link's header and claims are printed; stderr says they are not verified."""
        run = cli("decode", chain)
        assert run.code == 0
        assert run.err.startswith("WARNING: not verified")
        assert "--- link 0 (root)" in run.out
        assert "--- link 1" in run.out
        assert '"kid": "issuer-1"' in run.out
        assert '"sub": "svc-b"' in run.out

    def test_json(self, cli: Cli, chain: str, keys: Keys) -> None:
        """--json gives {"verified": false, "links": [{index, header, claims}, ...]}."""
        doc = cli("decode", chain, "--json").json()
        assert doc["verified"] is False
        root, link = doc["links"]
        assert root["index"] == 0
        assert root["header"] == {"alg": "EdDSA", "typ": "coupon+jwt", "kid": "issuer-1"}
        assert root["claims"]["jti"] == "root-1"
        assert link["header"]["jwk"]["kty"] == "OKP"
        assert link["claims"]["par"]["jti"] == "root-1"

    def test_does_not_check_signatures(self, cli: Cli, coupon: str) -> None:
        """A token with a broken signature still decodes: decode verifies nothing."""
        assert cli("decode", tamper(coupon)).code == 0

    def test_reads_stdin(self, cli: Cli, coupon: str) -> None:
        """TOKEN "-" reads the token from stdin."""
        run = cli("decode", "-", "--json", stdin=coupon + "\n")
        assert run.json()["links"][0]["claims"]["sub"] == "svc-a"

    @pytest.mark.parametrize(
        ("token", "code"),
        [
            ("not-a-token", "CPN-TOK-002"),
            ("bm90.e30.c2ln", "CPN-TOK-004"),
            ("a*.b.c", "CPN-TOK-003"),
        ],
    )
    def test_garbage(self, cli: Cli, token: str, code: str) -> None:
        """A token that is not a compact JWS fails with its code and no warning."""
        run = cli("decode", token)
        assert run.code == 1
        assert run.err.startswith(f"FAIL: {code} ")
        assert run.out == ""


class TestInspect:
    def test_table(self, cli: Cli, chain: str) -> None:
        """The table names the parties, scope, time left, binding, lineage, policy and chain."""
        run = cli("inspect", chain, "--now", str(NOW + 30))
        assert run.code == 0
        assert run.err.startswith("WARNING: not verified")
        for text in (
            "https://authority.example",
            "svc-b",
            "orders-api",
            "acme",
            "orders/123",
            "fulfilment.ship",
            "1m 30s left",
            "root-1",
            "v7",
            "kid issuer-1",
            "link 0 key",
        ):
            assert text in run.out

    def test_expired(self, cli: Cli, chain: str) -> None:
        """Past the earliest expiry of the chain it says how long ago it expired."""
        run = cli("inspect", chain, "--now", str(NOW + 125))
        assert "EXPIRED 5s ago" in run.out

    def test_not_yet_valid(self, cli: Cli, keys: Keys) -> None:
        """Before nbf it says when the coupon starts."""
        token = mint_for(keys, not_before=NOW + 60)
        assert "starts in 1m 0s" in cli("inspect", token, "--now", str(NOW)).out

    def test_json(self, cli: Cli, chain: str, keys: Keys) -> None:
        """--json gives the same facts as structured data, one entry per link."""
        doc = cli("inspect", chain, "--now", str(NOW + 30), "--json").json()
        assert doc["verified"] is False
        assert doc["issuer"] == "https://authority.example"
        assert doc["subject"] == "svc-b"
        assert doc["audience"] == ["orders-api"]
        assert doc["actions"] == ["read"]
        assert doc["seconds_left"] == 90
        assert doc["expired"] is False
        assert doc["binding"] == {"kind": "jkt", "value": keys.delegate.public.thumbprint}
        assert (doc["lineage"], doc["policy"], doc["depth"], doc["kid"]) == (
            "root-1",
            "v7",
            1,
            "issuer-1",
        )
        root, link = doc["links"]
        assert root["signed_by"] == {"kid": "issuer-1"}
        assert link["signed_by"] == {"jkt": keys.holder.public.thumbprint}
        assert [root["depth"], link["depth"]] == [0, 1]
        assert root["resource"] == "orders/**"

    def test_certificate_binding(self, cli: Cli, keys: Keys, tmp_path: Path) -> None:
        """A coupon bound to a client certificate shows an x5t#S256 binding."""
        x5t = x5t_s256_from_pem(Path(make_certificate(tmp_path / "c.pem")).read_bytes())
        token = mint_for(keys, binding=Binding(x5t_s256=x5t))
        doc = cli("inspect", token, "--now", str(NOW), "--json").json()
        assert doc["binding"] == {"kind": "x5t#S256", "value": x5t}
        assert "x5t#S256" in cli("inspect", token, "--now", str(NOW)).out

    def test_claims_are_not_read_as_markup(self, cli: Cli, keys: Keys) -> None:
        """A subject that looks like rich markup, or holds a terminal escape, is shown inert."""
        token = mint_for(keys, subject="[red]svc\x1b[2J")
        run = cli("inspect", token, "--now", str(NOW))
        assert "[red]svc\\x1b[2J" in run.out
        assert "\x1b" not in run.out

    def test_strict_parse(self, cli: Cli) -> None:
        """A malformed token fails with its code (exit 1)."""
        run = cli("inspect", "x.y")
        assert run.code == 1
        assert "CPN-TOK-002" in run.err


class TestDuration:
    @pytest.mark.parametrize(
        ("seconds", "text"),
        [(0, "0s"), (59, "59s"), (90, "1m 30s"), (3_660, "1h 1m"), (90_000, "1d 1h"), (-5, "5s")],
    )
    def test_short_human_durations(self, seconds: int, text: str) -> None:
        """Durations keep their two largest units; the sign is the caller's to say."""
        assert duration(seconds) == text


class TestValidate:
    def test_good_chain(self, cli: Cli, chain: str) -> None:
        """A well-formed chain passes, and the output says the root signature was not checked."""
        run = cli("validate", chain)
        assert run.code == 0
        assert run.err == "OK: structure OK (root signature NOT checked)\n"
        assert run.out == ""

    def test_root_signature_is_not_checked(self, cli: Cli, coupon: str) -> None:
        """A root with a broken signature still has a valid structure."""
        assert cli("validate", tamper(coupon)).code == 0

    def test_json(self, cli: Cli, chain: str) -> None:
        """--json gives ok, the number of links, the depth and the root kid."""
        doc = cli("validate", chain, "--json").json()
        assert doc == {
            "ok": True,
            "links": 2,
            "depth": 1,
            "kid": "issuer-1",
            "root_signature_checked": False,
        }

    def test_broken_link_signature(self, cli: Cli, chain: str) -> None:
        """A link whose signature does not verify with its embedded key fails CPN-SIG-001."""
        run = cli("validate", tamper(chain))
        assert run.code == 1
        assert run.err.startswith("FAIL: CPN-SIG-001 ")

    def test_link_signed_by_another_key(self, cli: Cli, coupon: str) -> None:
        """A link signed by a key the parent does not bind fails CPN-CHAIN-001."""
        stranger = SigningKey.generate()
        link = (
            CouponBuilder()
            .child_of(coupon)
            .issuer("svc-a")
            .subject("svc-x")
            .audience("orders-api")
            .resource("orders/1")
            .actions("read")
            .purpose("fulfilment")
            .bind(Binding(jkt=stranger.public.thumbprint))
            .lifetime(now=NOW, ttl=60)
            .jti("forged")
            .sign(stranger, embed_key=True)
        )
        run = cli("validate", f"{coupon}~{link}")
        assert run.code == 1
        assert "CPN-CHAIN-001" in run.err

    def test_max_depth(self, cli: Cli, chain: str) -> None:
        """--max-depth 0 refuses any offline link (CPN-CHAIN-004)."""
        run = cli("validate", chain, "--max-depth", "0")
        assert run.code == 1
        assert "CPN-CHAIN-004" in run.err

    def test_max_size(self, cli: Cli, chain: str) -> None:
        """--max-size smaller than the token fails CPN-TOK-001."""
        assert "CPN-TOK-001" in cli("validate", chain, "--max-size", "100").err

    def test_unknown_claim(self, cli: Cli, keys: Keys) -> None:
        """Strict parsing refuses a claim it does not know (CPN-TOK-006)."""
        from coupon.token.hazmat import b64url_encode, dumps_compact

        header = b64url_encode(dumps_compact({"alg": "EdDSA", "typ": "coupon+jwt", "kid": "k"}))
        claims = b64url_encode(json.dumps({"ver": 1, "admin": True}).encode())
        run = cli("validate", f"{header}.{claims}.c2ln")
        assert run.code == 1
        assert "CPN-TOK-006" in run.err


class TestExtract:
    def test_claim_of_the_leaf(self, cli: Cli, chain: str, keys: Keys) -> None:
        """A dotted path is looked up in the leaf's claims and printed bare."""
        run = cli("extract", chain, "cnf.jkt")
        assert (run.code, run.out) == (0, keys.delegate.public.thumbprint + "\n")

    def test_link_option(self, cli: Cli, chain: str) -> None:
        """--link 0 picks the root; a non-string value is printed as JSON."""
        assert cli("extract", chain, "act", "--link", "0").out == '["read", "write"]\n'
        assert cli("extract", chain, "act.1", "--link", "0").out == "write\n"
        assert cli("extract", chain, "exp", "--link", "0").out == f"{NOW + 300}\n"

    def test_header(self, cli: Cli, chain: str) -> None:
        """--header looks the path up in the JWS header."""
        assert cli("extract", chain, "kid", "--header", "--link", "0").out == "issuer-1\n"
        assert cli("extract", chain, "jwk.kty", "--header").out == "OKP\n"

    def test_links(self, cli: Cli, chain: str, coupon: str) -> None:
        """--links prints each link's compact JWS on its own line."""
        run = cli("extract", chain, "--links")
        assert run.out.splitlines() == chain.split("~")
        assert run.out.splitlines()[0] == coupon
        assert cli("extract", chain, "--links", "--json").json() == {"links": chain.split("~")}

    def test_json(self, cli: Cli, chain: str) -> None:
        """--json gives the link index, the path and the value."""
        doc = cli("extract", chain, "par", "--json").json()
        assert doc["link"] == 1
        assert doc["claim"] == "par"
        assert doc["value"]["jti"] == "root-1"

    def test_control_characters_are_escaped(self, cli: Cli, keys: Keys) -> None:
        """A string holding a terminal escape is printed JSON-escaped, not raw."""
        token = mint_for(keys, subject="svc\x1b[2J")
        assert cli("extract", token, "sub").out == '"svc\\u001b[2J"\n'

    @pytest.mark.parametrize(
        "args",
        [
            ["nope"],
            ["cnf.nope"],
            ["act.9", "--link", "0"],
            ["sub", "--link", "2"],
            ["sub", "--link", "-3"],
            [],
            ["sub", "--links"],
        ],
    )
    def test_usage_errors(self, cli: Cli, chain: str, args: list[str]) -> None:
        """A missing claim, a link out of range, or CLAIM with --links is a usage error."""
        assert cli("extract", chain, *args).code == 2

    def test_invalid_token(self, cli: Cli) -> None:
        """An invalid token fails with its code (exit 1)."""
        assert cli("extract", "garbage", "sub").code == 1
