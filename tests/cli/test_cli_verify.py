"""``coupon verify`` (the full pipeline, JWKS from files and URLs) and ``coupon dpop``."""

from __future__ import annotations

import json
import socket
from pathlib import Path

import pytest
from tests.cli.cli_support import AUD, NOW, URL, Cli, Keys, Served, make_certificate, mint_for

from coupon.token import Binding, SigningKey, create_dpop_proof, x5t_s256_from_pem


def proof_for(key: SigningKey, token: str, *, jti: str = "p-1", now: int = NOW) -> str:
    """A DPoP proof for GET URL carrying ``token``'s hash."""
    return create_dpop_proof(key, method="GET", uri=URL, now=now, jti=jti, access_token=token)


def verify_args(keys: Keys, token: str, proof: str, *extra: str) -> list[str]:
    """A `coupon verify` command line for a GET of orders/123 with a DPoP proof."""
    return [
        "verify",
        token,
        "--jwks",
        keys.jwks_file,
        "--aud",
        AUD,
        "--dpop",
        proof,
        "--htm",
        "GET",
        "--htu",
        URL,
        "--now",
        str(NOW),
        *extra,
    ]


class TestVerify:
    def test_allowed(self, cli: Cli, keys: Keys, chain: str) -> None:
        """An allowed request: OK and timings on stderr, the leaf claims on stdout, exit 0."""
        proof = proof_for(keys.delegate, chain)
        run = cli(*verify_args(keys, chain, proof, "--resource", "orders/123", "--action", "read"))
        assert run.code == 0
        lines = run.err.splitlines()
        assert lines[0] == "OK: allowed"
        assert lines[1].startswith("timings (us): parse ")
        for step in ("signature", "chain", "binding", "replay", "total"):
            assert f" {step} " in lines[1]
        claims = run.json()
        assert claims["sub"] == "svc-b"
        assert claims["jti"] == "link-1"

    def test_denied_wider_resource(self, cli: Cli, keys: Keys, chain: str) -> None:
        """A resource outside the leaf's scope: FAIL, diagnostics, then timings; exit 1."""
        proof = proof_for(keys.delegate, chain)
        run = cli(*verify_args(keys, chain, proof, "--resource", "orders/124"))
        assert run.code == 1
        assert run.out == ""
        lines = run.err.splitlines()
        assert lines[0] == "FAIL: CPN-SCOPE-001 resource not granted"
        assert "  reason: resource 'orders/124' not granted by orders/123" in lines
        assert "  step:   scope" in lines
        assert lines[-1].startswith("timings (us): ")

    def test_json_allowed(self, cli: Cli, keys: Keys, chain: str) -> None:
        """--json puts claims, chain, proof and timings (microseconds) in one document."""
        proof = proof_for(keys.delegate, chain)
        run = cli(*verify_args(keys, chain, proof, "--json"))
        doc = run.json()
        assert doc["allowed"] is True
        assert doc["kid"] == "issuer-1"
        assert doc["cached"] is False
        assert doc["claims"]["sub"] == "svc-b"
        assert [c["jti"] for c in doc["chain"]] == ["root-1", "link-1"]
        assert doc["proof"]["jkt"] == keys.delegate.public.thumbprint
        assert doc["proof"]["jti"] == "p-1"
        assert doc["timings_us"]["total"] > 0
        assert "timings" not in run.err
        assert run.err == "OK: allowed\n"

    def test_json_denied(self, cli: Cli, keys: Keys, chain: str) -> None:
        """--json on a denial: allowed false, the error and the timings; FAIL on stderr."""
        proof = proof_for(keys.delegate, chain)
        run = cli(*verify_args(keys, chain, proof, "--action", "write", "--json"))
        assert run.code == 1
        doc = run.json()
        assert doc["allowed"] is False
        assert doc["error"]["code"] == "CPN-SCOPE-002"
        assert doc["error"]["step"] == "scope"
        assert "total" in doc["timings_us"]
        assert run.err.startswith("FAIL: CPN-SCOPE-002 ")
        assert "timings" not in run.err

    def test_expired(self, cli: Cli, keys: Keys, chain: str) -> None:
        """Past exp plus leeway the coupon is refused with CPN-TIME-001."""
        later = NOW + 200
        proof = proof_for(keys.delegate, chain, now=later)
        args = verify_args(keys, chain, proof)
        args[args.index("--now") + 1] = str(later)
        assert cli(*args).err.startswith("FAIL: CPN-TIME-001 ")

    def test_leeway(self, cli: Cli, keys: Keys, chain: str) -> None:
        """--leeway widens the clock tolerance: 10 s past exp passes with the default 30 s."""
        later = NOW + 130
        proof = proof_for(keys.delegate, chain, now=later)
        args = verify_args(keys, chain, proof)
        args[args.index("--now") + 1] = str(later)
        assert cli(*args).code == 0
        assert "CPN-TIME-001" in cli(*args, "--leeway", "0").err

    def test_max_ttl(self, cli: Cli, keys: Keys, chain: str) -> None:
        """--max-ttl refuses a root that lives longer (CPN-TIME-004)."""
        proof = proof_for(keys.delegate, chain)
        assert "CPN-TIME-004" in cli(*verify_args(keys, chain, proof, "--max-ttl", "100")).err

    def test_issuer(self, cli: Cli, keys: Keys, chain: str) -> None:
        """--issuer restricts the trusted root iss (CPN-AUD-002)."""
        proof = proof_for(keys.delegate, chain)
        good = verify_args(keys, chain, proof, "--issuer", "https://authority.example")
        assert cli(*good).code == 0
        assert "CPN-AUD-002" in cli(*verify_args(keys, chain, proof, "--issuer", "x")).err

    def test_wrong_audience(self, cli: Cli, keys: Keys, chain: str) -> None:
        """Another audience is refused with CPN-AUD-001."""
        args = verify_args(keys, chain, proof_for(keys.delegate, chain))
        args[args.index(AUD)] = "billing-api"
        assert cli(*args).err.startswith("FAIL: CPN-AUD-001 ")

    def test_proof_by_the_wrong_key(self, cli: Cli, keys: Keys, chain: str) -> None:
        """A proof signed by the holder, not the delegate the leaf binds, fails CPN-POP-012."""
        run = cli(*verify_args(keys, chain, proof_for(keys.holder, chain)))
        assert "CPN-POP-012" in run.err

    def test_proof_required(self, cli: Cli, keys: Keys, coupon: str) -> None:
        """A key-bound coupon without a proof fails CPN-POP-001."""
        run = cli("verify", coupon, "--jwks", keys.jwks_file, "--aud", AUD, "--now", str(NOW))
        assert run.code == 1
        assert "CPN-POP-001" in run.err

    def test_untrusted_issuer_key(self, cli: Cli, keys: Keys, chain: str, tmp_path: Path) -> None:
        """A JWKS without the signing kid refuses the coupon (CPN-HDR-004)."""
        other = tmp_path / "other.json"
        other.write_text(json.dumps({"keys": [SigningKey.generate(kid="k2").public.jwk()]}))
        args = verify_args(keys, chain, proof_for(keys.delegate, chain))
        args[args.index(keys.jwks_file)] = str(other)
        assert "CPN-HDR-004" in cli(*args).err

    def test_single_jwk_as_jwks(self, cli: Cli, keys: Keys, chain: str, tmp_path: Path) -> None:
        """A file holding one public JWK is accepted as a JWKS of one key."""
        one = tmp_path / "issuer.pub.jwk"
        one.write_text(json.dumps(keys.issuer.public.jwk()))
        args = verify_args(keys, chain, proof_for(keys.delegate, chain))
        args[args.index(keys.jwks_file)] = str(one)
        assert cli(*args).code == 0

    def test_duplicate_kid_in_jwks(self, cli: Cli, keys: Keys, chain: str, tmp_path: Path) -> None:
        """A JWKS with two keys of one kid is an invalid key set (CPN-REQ-005), not a crash."""
        dup = tmp_path / "dup.json"
        jwk = keys.issuer.public.jwk()
        dup.write_text(json.dumps({"keys": [jwk, jwk]}))
        args = verify_args(keys, chain, proof_for(keys.delegate, chain))
        args[args.index(keys.jwks_file)] = str(dup)
        run = cli(*args)
        assert run.code == 1
        assert "CPN-REQ-005" in run.err

    def test_certificate_binding(self, cli: Cli, keys: Keys, tmp_path: Path) -> None:
        """--cert (or --x5t) proves an mTLS-bound coupon; another certificate fails CPN-POP-013."""
        pem = make_certificate(tmp_path / "client.pem")
        x5t = x5t_s256_from_pem(Path(pem).read_bytes())
        token = mint_for(keys, binding=Binding(x5t_s256=x5t))
        base = ["verify", token, "--jwks", keys.jwks_file, "--aud", AUD, "--now", str(NOW)]
        assert cli(*base, "--cert", pem).code == 0
        assert cli(*base, "--x5t", x5t).code == 0
        other = make_certificate(tmp_path / "other.pem")
        assert "CPN-POP-013" in cli(*base, "--cert", other).err
        assert cli(*base, "--cert", pem, "--x5t", x5t).code == 2

    def test_dpop_needs_method_and_url(self, cli: Cli, keys: Keys, chain: str) -> None:
        """--dpop without --htm/--htu is a usage error."""
        run = cli("verify", chain, "--jwks", keys.jwks_file, "--aud", AUD, "--dpop", "x")
        assert run.code == 2

    def test_aud_is_required(self, cli: Cli, keys: Keys, chain: str) -> None:
        """--aud is required: fail closed."""
        assert cli("verify", chain, "--jwks", keys.jwks_file).code == 2

    def test_token_and_proof_from_files(
        self, cli: Cli, keys: Keys, chain: str, tmp_path: Path
    ) -> None:
        """TOKEN and --dpop may name files."""
        (tmp_path / "chain.txt").write_text(chain + "\n")
        (tmp_path / "proof.txt").write_text(proof_for(keys.delegate, chain) + "\n")
        args = verify_args(keys, str(tmp_path / "chain.txt"), str(tmp_path / "proof.txt"))
        assert cli(*args).code == 0

    def test_only_one_stdin(self, cli: Cli, keys: Keys) -> None:
        """TOKEN and --dpop cannot both be "-"."""
        assert cli(*verify_args(keys, "-", "-"), stdin="x").code == 2

    def test_missing_jwks_file(self, cli: Cli, keys: Keys, chain: str, tmp_path: Path) -> None:
        """A JWKS file that cannot be read is an environment error (exit 3)."""
        args = verify_args(keys, chain, "p")
        args[args.index(keys.jwks_file)] = str(tmp_path / "none.json")
        run = cli(*args)
        assert run.code == 3
        assert run.err.startswith("ERROR: cannot read JWKS file")


class TestVerifyJwksUrl:
    def test_fetches_from_localhost(
        self, cli: Cli, keys: Keys, chain: str, http_server: Served
    ) -> None:
        """An http://127.0.0.1 JWKS URL is fetched and used."""
        http_server.routes["/jwks.json"] = (200, Path(keys.jwks_file).read_bytes())
        args = verify_args(keys, chain, proof_for(keys.delegate, chain))
        args[args.index(keys.jwks_file)] = f"{http_server.base}/jwks.json"
        assert cli(*args).code == 0

    def test_http_error_status(self, cli: Cli, keys: Keys, chain: str, http_server: Served) -> None:
        """A 404 is an environment error (exit 3)."""
        args = verify_args(keys, chain, "p")
        args[args.index(keys.jwks_file)] = f"{http_server.base}/missing"
        run = cli(*args)
        assert run.code == 3
        assert "HTTP 404" in run.err

    def test_size_cap(self, cli: Cli, keys: Keys, chain: str, http_server: Served) -> None:
        """A JWKS over 1 MiB is refused before it is parsed (exit 3)."""
        http_server.routes["/big"] = (200, b" " * (1024 * 1024 + 1))
        args = verify_args(keys, chain, "p")
        args[args.index(keys.jwks_file)] = f"{http_server.base}/big"
        run = cli(*args)
        assert run.code == 3
        assert "larger than" in run.err

    def test_not_json(self, cli: Cli, keys: Keys, chain: str, http_server: Served) -> None:
        """A body that is not JSON is an invalid key set (exit 1)."""
        http_server.routes["/html"] = (200, b"<html>")
        args = verify_args(keys, chain, "p")
        args[args.index(keys.jwks_file)] = f"{http_server.base}/html"
        assert "CPN-REQ-005" in cli(*args).err

    def test_connection_refused(self, cli: Cli, keys: Keys, chain: str) -> None:
        """Nothing listening is an environment error (exit 3)."""
        with socket.socket() as sock:
            sock.bind(("127.0.0.1", 0))
            port = sock.getsockname()[1]
        args = verify_args(keys, chain, "p")
        args[args.index(keys.jwks_file)] = f"http://127.0.0.1:{port}/jwks.json"
        run = cli(*args)
        assert run.code == 3
        assert "cannot fetch" in run.err

    @pytest.mark.parametrize(
        "url", ["http://example.com/jwks.json", "ftp://example.com/jwks", "https://[::1"]
    )
    def test_only_https_or_localhost(self, cli: Cli, keys: Keys, chain: str, url: str) -> None:
        """Plain http to another host, or another scheme, is a usage error (exit 2)."""
        args = verify_args(keys, chain, "p")
        args[args.index(keys.jwks_file)] = url
        assert cli(*args).code == 2


class TestDpop:
    def test_create_then_verify(self, cli: Cli, keys: Keys, chain: str) -> None:
        """A created proof verifies and reports the key's thumbprint, its jti and iat."""
        made = cli(
            "dpop",
            "create",
            "--key",
            keys.delegate_file,
            "--htm",
            "GET",
            "--htu",
            URL + "?page=2",
            "--token",
            chain,
            "--now",
            str(NOW),
            "--jti",
            "p-9",
        )
        assert made.code == 0
        proof = made.out.strip()
        run = cli("dpop", "verify", proof, "--htm", "GET", "--htu", URL, "--token", chain)
        assert run.code == 1  # the clock is far from NOW: the proof is too old
        assert "CPN-POP-009" in run.err
        run = cli(
            "dpop", "verify", proof, "--htm", "GET", "--htu", URL, "--token", chain,
            "--now", str(NOW),
        )  # fmt: skip
        assert run.code == 0
        assert run.err == "OK: proof valid (replay NOT checked)\n"
        assert run.out == f"jkt: {keys.delegate.public.thumbprint}\njti: p-9\niat: {NOW}\n"

    def test_json(self, cli: Cli, keys: Keys, chain: str) -> None:
        """--json for create gives the proof, jkt, jti and iat; for verify every checked field."""
        made = cli(
            "dpop", "create", "--key", keys.holder_file, "--htm", "POST", "--htu", URL,
            "--nonce", "n-1", "--now", str(NOW), "--json",
        ).json()  # fmt: skip
        assert made["jkt"] == keys.holder.public.thumbprint
        assert made["iat"] == NOW
        assert len(made["jti"]) == 22
        doc = cli(
            "dpop", "verify", made["proof"], "--htm", "POST", "--htu", URL, "--now", str(NOW),
            "--json",
        ).json()  # fmt: skip
        assert doc["jkt"] == made["jkt"]
        assert doc["nonce"] == "n-1"
        assert doc["ath"] is None
        assert doc["alg"] == "EdDSA"

    @pytest.mark.parametrize(
        ("extra", "code"),
        [
            (["--htm", "POST", "--htu", URL], "CPN-POP-007"),
            (["--htm", "GET", "--htu", "https://api.example/other"], "CPN-POP-008"),
            (["--htm", "GET", "--htu", URL, "--token", "another"], "CPN-POP-010"),
            (["--htm", "GET", "--htu", URL, "--now", str(NOW + 100)], "CPN-POP-009"),
            (["--htm", "GET", "--htu", "ftp://x"], "CPN-REQ-007"),
        ],
    )
    def test_verify_failures(
        self, cli: Cli, keys: Keys, chain: str, extra: list[str], code: str
    ) -> None:
        """Each mismatch fails with its own code (exit 1)."""
        proof = proof_for(keys.delegate, chain)
        args = ["dpop", "verify", proof, "--now", str(NOW), "--token", chain, *extra]
        run = cli(*args)
        assert run.code == 1
        assert run.err.startswith(f"FAIL: {code} ")

    def test_max_age(self, cli: Cli, keys: Keys, chain: str) -> None:
        """--max-age widens how old a proof may be."""
        proof = proof_for(keys.delegate, chain)
        base = ["dpop", "verify", proof, "--htm", "GET", "--htu", URL, "--now", str(NOW + 100)]
        assert cli(*base).code == 1
        assert cli(*base, "--max-age", "120").code == 0
        assert cli(*base, "--max-age", "-1").code == 2

    def test_create_bad_url_is_a_coupon_error(self, cli: Cli, keys: Keys) -> None:
        """A URL that is not http(s) is refused by the library (CPN-REQ-007)."""
        run = cli("dpop", "create", "--key", keys.holder_file, "--htm", "GET", "--htu", "x")
        assert run.code == 1
        assert "CPN-REQ-007" in run.err

    def test_create_too_long_jti_is_a_usage_error(self, cli: Cli, keys: Keys) -> None:
        """A --jti over 256 characters is a usage error."""
        args = ["dpop", "create", "--key", keys.holder_file, "--htm", "GET", "--htu", URL]
        assert cli(*args, "--jti", "j" * 257).code == 2

    def test_proof_from_stdin(self, cli: Cli, keys: Keys, chain: str) -> None:
        """PROOF "-" reads the proof from stdin."""
        proof = proof_for(keys.delegate, chain)
        args = ["dpop", "verify", "-", "--htm", "GET", "--htu", URL, "--now", str(NOW)]
        assert cli(*args, stdin=proof).code == 0

    def test_only_one_stdin(self, cli: Cli) -> None:
        """PROOF and --token cannot both be "-"."""
        args = ["dpop", "verify", "-", "--token", "-", "--htm", "GET", "--htu", URL]
        assert cli(*args, stdin="x").code == 2

    def test_group_without_subcommand(self, cli: Cli) -> None:
        """`coupon dpop` alone shows its help and is a usage error."""
        run = cli("dpop")
        assert run.code == 2
        assert "create" in run.out + run.err
