"""The ``coupon`` entry point, and the commands that make keys and coupons."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from importlib.metadata import entry_points
from pathlib import Path

import pytest
import typer
from tests.cli.cli_support import NOW, Cli, Keys, make_certificate

from coupon.cli import app, main
from coupon.cli._app import EPILOG
from coupon.token import SigningKey, VerifyingKey, parse_chain, x5t_s256_from_pem

COMMANDS = ["keygen", "mint", "attenuate", "decode", "inspect", "validate", "extract", "verify"]


def claims_of(token: str, link: int = -1) -> dict[str, object]:
    """The claims of one link, parsed by the library."""
    return parse_chain(token, max_size=65536, max_depth=64)[link].claims.to_dict()


class TestMain:
    def test_help_lists_every_command_and_the_exit_codes(self, cli: Cli) -> None:
        """`coupon --help` names each subcommand and documents the exit codes."""
        run = cli("--help")
        assert run.code == 0
        for command in [*COMMANDS, "dpop"]:
            assert f"  {command} " in run.out
        assert "Exit codes:" in run.out

    @pytest.mark.parametrize(
        "command", [[c] for c in COMMANDS] + [["dpop"], ["dpop", "create"], ["dpop", "verify"]]
    )
    def test_every_command_documents_exit_codes(self, cli: Cli, command: list[str]) -> None:
        """Each subcommand's --help ends with the exit-code table."""
        run = cli(*command, "--help")
        assert run.code == 0
        assert "Exit codes:" in run.out
        assert "3  environment error" in run.out

    @pytest.mark.parametrize("command", [[c] for c in COMMANDS] + [["dpop", "create"]])
    def test_every_command_has_json_mode(self, cli: Cli, command: list[str]) -> None:
        """Each subcommand offers --json."""
        assert "--json" in cli(*command, "--help").out

    def test_no_arguments_is_a_usage_error(self, cli: Cli) -> None:
        """Without a subcommand the help is shown and the exit code is 2."""
        run = cli()
        assert run.code == 2
        assert "Usage: coupon" in run.out + run.err

    def test_unknown_command_is_a_usage_error(self, cli: Cli) -> None:
        """An unknown subcommand exits 2 from the parser."""
        run = cli("frobnicate")
        assert run.code == 2
        assert "No such command" in run.err

    def test_version(self, cli: Cli) -> None:
        """--version prints the package version."""
        run = cli("--version")
        assert run.code == 0
        assert run.out.startswith("coupon 0.")

    def test_console_script_points_at_main(self) -> None:
        """The installed `coupon` script runs coupon.cli:main."""
        (script,) = [e for e in entry_points(group="console_scripts") if e.name == "coupon"]
        assert script.value == "coupon.cli:main"
        assert script.load() is main

    def test_real_process_exit_code_and_streams(self) -> None:
        """Run as a process, a bad token exits 1 with FAIL on stderr and nothing on stdout."""
        done = subprocess.run(
            [sys.executable, "-m", "coupon.cli", "validate", "not-a-token"],
            capture_output=True,
            text=True,
            check=False,
        )
        assert done.returncode == 1
        assert done.stdout == ""
        assert done.stderr.startswith("FAIL: CPN-TOK-002 ")

    def test_another_module_can_register_a_command(self, cli: Cli) -> None:
        """A command added to the exported Typer app is reachable through main()."""

        @app.command("hello-test")
        def hello() -> None:
            typer.echo("hi")

        try:
            run = cli("hello-test")
        finally:
            app.registered_commands.pop()
        assert (run.code, run.out) == (0, "hi\n")
        assert cli("hello-test").code == 2

    def test_json_error_document(self, cli: Cli) -> None:
        """With --json a CouponError also prints {"ok": false, "error": {...}} on stdout."""
        run = cli("validate", "not-a-token", "--json")
        assert run.code == 1
        error = run.json()["error"]
        assert run.json()["ok"] is False
        assert error["code"] == "CPN-TOK-002"
        assert error["protocol"] == "invalid_token"
        assert error["status"] == 401
        assert "FAIL: CPN-TOK-002" in run.err

    def test_verbose_prints_the_traceback(self, cli: Cli) -> None:
        """--verbose adds the traceback after the diagnostics."""
        quiet = cli("validate", "not-a-token")
        loud = cli("validate", "not-a-token", "--verbose")
        assert "Traceback" not in quiet.err
        assert "Traceback" in loud.err
        assert "MalformedCoupon" in loud.err

    def test_verbose_environment_error(self, cli: Cli, tmp_path: Path) -> None:
        """--verbose also shows the traceback of an environment error (exit 3)."""
        run = cli("decode", "-", "-v", stdin="x" * (1024 * 1024 + 1))
        assert run.code == 3
        assert run.err.startswith("ERROR: token on stdin is larger than")
        assert "Traceback" in run.err

    def test_oversized_file(self, cli: Cli, tmp_path: Path) -> None:
        """A token file over 1 MiB is not read (exit 3)."""
        big = tmp_path / "big.txt"
        big.write_text("x" * (1024 * 1024 + 1))
        run = cli("decode", str(big))
        assert run.code == 3
        assert "larger than" in run.err

    def test_global_verbose_before_the_command(self, cli: Cli) -> None:
        """-v may also come before the subcommand."""
        assert "Traceback" in cli("-v", "validate", "not-a-token").err


class TestDocs:
    PAGE = Path(__file__).resolve().parents[2] / "docs" / "cli.md"

    @pytest.mark.parametrize("command", [*COMMANDS, "dpop create", "dpop verify"])
    def test_every_command_has_a_section(self, command: str) -> None:
        """docs/cli.md has a section for each subcommand."""
        assert f"## `coupon {command}`" in self.PAGE.read_text(encoding="utf-8")

    def test_exit_codes_are_documented(self) -> None:
        """docs/cli.md lists the four exit codes the epilog lists."""
        text = self.PAGE.read_text(encoding="utf-8")
        for code in range(4):
            assert f"| {code} |" in text
            assert f"  {code}  " in EPILOG


class TestKeygen:
    def test_writes_private_jwk_0600_and_public_jwks(self, cli: Cli, tmp_path: Path) -> None:
        """--out gets the private JWK (mode 0600), --jwks-out the public JWKS; stdout the ids."""
        out, jwks = tmp_path / "k.jwk", tmp_path / "jwks.json"
        run = cli("keygen", "--kid", "issuer-1", "--out", str(out), "--jwks-out", str(jwks))
        assert run.code == 0
        assert os.stat(out).st_mode & 0o777 == 0o600
        key = SigningKey.from_jwk(json.loads(out.read_text()))
        assert key.kid == "issuer-1"
        assert key.alg == "EdDSA"
        public = json.loads(jwks.read_text())["keys"]
        assert public == [key.public.jwk()]
        assert "d" not in public[0]
        assert run.out == f"kid: issuer-1\nthumbprint: {key.public.thumbprint}\n"

    def test_es256(self, cli: Cli, tmp_path: Path) -> None:
        """--alg ES256 makes a P-256 key whose kid defaults to its thumbprint."""
        out = tmp_path / "k.jwk"
        assert cli("keygen", "--alg", "ES256", "--out", str(out)).code == 0
        key = SigningKey.from_jwk(json.loads(out.read_text()))
        assert key.alg == "ES256"
        assert key.kid == key.public.thumbprint

    def test_without_out_prints_the_private_jwk(self, cli: Cli) -> None:
        """Without --out the private JWK is the data on stdout; kid and thumbprint go to stderr."""
        run = cli("keygen")
        key = SigningKey.from_jwk(run.json())
        assert f"thumbprint: {key.public.thumbprint}" in run.err

    def test_json(self, cli: Cli, tmp_path: Path) -> None:
        """--json gives kid, alg, thumbprint, the public JWK and the paths written."""
        out = tmp_path / "k.jwk"
        doc = cli("keygen", "--out", str(out), "--json").json()
        assert set(doc) == {"kid", "alg", "thumbprint", "public_jwk", "out", "jwks_out"}
        assert doc["out"] == str(out)
        assert doc["thumbprint"] == VerifyingKey.from_jwk(doc["public_jwk"]).thumbprint

    def test_json_without_out_includes_the_private_jwk(self, cli: Cli) -> None:
        """With --json and no --out the private JWK is in the document (it is the output)."""
        doc = cli("keygen", "--json").json()
        assert SigningKey.from_jwk(doc["private_jwk"]).kid == doc["kid"]
        assert doc["out"] is None

    def test_refuses_to_overwrite(self, cli: Cli, tmp_path: Path) -> None:
        """An existing file is an environment error (exit 3) and is left alone."""
        out = tmp_path / "k.jwk"
        out.write_text("keep me")
        run = cli("keygen", "--out", str(out))
        assert run.code == 3
        assert "ERROR:" in run.err
        assert "--force" in run.err
        assert out.read_text() == "keep me"

    def test_existing_jwks_out_stops_before_the_key_is_written(
        self, cli: Cli, tmp_path: Path
    ) -> None:
        """A refused --jwks-out leaves no orphan private key behind."""
        (tmp_path / "jwks.json").write_text("{}")
        out = tmp_path / "k.jwk"
        run = cli("keygen", "--out", str(out), "--jwks-out", str(tmp_path / "jwks.json"))
        assert run.code == 3
        assert not out.exists()

    def test_force_overwrites_and_tightens_the_mode(self, cli: Cli, tmp_path: Path) -> None:
        """--force replaces the file and makes it 0600 even if it was world-readable."""
        out = tmp_path / "k.jwk"
        out.write_text("old")
        out.chmod(0o644)
        assert cli("keygen", "--out", str(out), "--force").code == 0
        assert os.stat(out).st_mode & 0o777 == 0o600
        SigningKey.from_jwk(json.loads(out.read_text()))

    def test_unwritable_path_exits_3(self, cli: Cli, tmp_path: Path) -> None:
        """A directory that does not exist is an environment error."""
        assert cli("keygen", "--out", str(tmp_path / "no" / "k.jwk")).code == 3

    def test_bad_kid_is_a_coupon_error(self, cli: Cli) -> None:
        """A kid with a path separator is refused with CPN-REQ-005 (exit 1)."""
        run = cli("keygen", "--kid", "../etc/passwd")
        assert run.code == 1
        assert run.err.startswith("FAIL: CPN-REQ-005 ")

    def test_unknown_alg_is_a_usage_error(self, cli: Cli) -> None:
        """--alg accepts only EdDSA and ES256."""
        assert cli("keygen", "--alg", "HS256").code == 2


def mint_args(keys: Keys, *extra: str) -> list[str]:
    """A full `coupon mint` command line, minus the binding."""
    return [
        "mint",
        "--key",
        keys.issuer_file,
        "--issuer",
        "https://authority.example",
        "--subject",
        "svc-a",
        "--audience",
        "orders-api",
        "--audience",
        "billing-api",
        "--tenant",
        "acme",
        "--resource",
        "orders/**",
        "--action",
        "read",
        "--action",
        "write",
        "--purpose",
        "fulfilment",
        "--now",
        str(NOW),
        *extra,
    ]


class TestMint:
    def test_bound_to_a_holder_key_file(self, cli: Cli, keys: Keys) -> None:
        """--bind-key puts the holder key's thumbprint in cnf.jkt; stdout is the coupon."""
        run = cli(*mint_args(keys, "--bind-key", keys.holder_file, "--jti", "c-1"))
        assert run.code == 0
        token = run.out.strip()
        assert token.count(".") == 2
        claims = claims_of(token)
        assert claims["cnf"] == {"jkt": keys.holder.public.thumbprint}
        assert claims["aud"] == ["orders-api", "billing-api"]
        assert claims["act"] == ["read", "write"]
        assert claims["iat"] == NOW
        assert claims["exp"] == NOW + 300
        assert claims["jti"] == "c-1"

    def test_bind_key_may_be_a_public_jwk(self, cli: Cli, keys: Keys, tmp_path: Path) -> None:
        """A public JWK is enough to bind to."""
        public = tmp_path / "holder.pub.jwk"
        public.write_text(json.dumps(keys.holder.public.jwk()))
        token = cli(*mint_args(keys, "--bind-key", str(public))).out.strip()
        assert claims_of(token)["cnf"] == {"jkt": keys.holder.public.thumbprint}

    def test_jkt_ttl_and_policy(self, cli: Cli, keys: Keys) -> None:
        """--jkt, --ttl and --policy go into cnf.jkt, exp and pol."""
        thumb = keys.holder.public.thumbprint
        run = cli(*mint_args(keys, "--jkt", thumb, "--ttl", "60", "--policy", "v9"))
        claims = claims_of(run.out.strip())
        assert claims["cnf"] == {"jkt": thumb}
        assert claims["exp"] == NOW + 60
        assert claims["pol"] == "v9"

    def test_bound_to_a_certificate(self, cli: Cli, keys: Keys, tmp_path: Path) -> None:
        """--cert binds to the certificate's x5t#S256; --x5t binds to a given thumbprint."""
        pem = make_certificate(tmp_path / "client.pem")
        x5t = x5t_s256_from_pem(Path(pem).read_bytes())
        by_cert = cli(*mint_args(keys, "--cert", pem)).out.strip()
        by_x5t = cli(*mint_args(keys, "--x5t", x5t)).out.strip()
        assert claims_of(by_cert)["cnf"] == {"x5t#S256": x5t}
        assert claims_of(by_x5t)["cnf"] == {"x5t#S256": x5t}

    def test_json(self, cli: Cli, keys: Keys) -> None:
        """--json gives the token, its depth and its claims."""
        doc = cli(*mint_args(keys, "--bind-key", keys.holder_file, "--json")).json()
        assert set(doc) == {"token", "depth", "claims"}
        assert doc["depth"] == 0
        assert doc["claims"] == claims_of(doc["token"])

    @pytest.mark.parametrize("bindings", [[], ["--jkt", "a" * 43, "--x5t", "b" * 43]])
    def test_exactly_one_binding(self, cli: Cli, keys: Keys, bindings: list[str]) -> None:
        """No binding, or two, is a usage error."""
        run = cli(*mint_args(keys, *bindings))
        assert run.code == 2
        assert "exactly one" in run.err

    def test_missing_required_option(self, cli: Cli, keys: Keys) -> None:
        """Leaving out --purpose is a usage error."""
        args = mint_args(keys, "--bind-key", keys.holder_file)
        i = args.index("--purpose")
        assert cli(*args[:i], *args[i + 2 :]).code == 2

    def test_bad_resource_is_a_coupon_error(self, cli: Cli, keys: Keys) -> None:
        """A resource with a dot segment is refused by the library (CPN-REQ-001, exit 1)."""
        args = mint_args(keys, "--bind-key", keys.holder_file)
        args[args.index("orders/**")] = "orders/../admin"
        run = cli(*args)
        assert run.code == 1
        assert run.err.startswith("FAIL: CPN-REQ-001 ")
        assert "reason:" in run.err

    def test_short_jkt_is_a_coupon_error(self, cli: Cli, keys: Keys) -> None:
        """A thumbprint that is not 43 characters is refused with CPN-REQ-004."""
        run = cli(*mint_args(keys, "--jkt", "short"))
        assert run.code == 1
        assert "CPN-REQ-004" in run.err

    def test_missing_key_file_exits_3(self, cli: Cli, keys: Keys, tmp_path: Path) -> None:
        """An issuer key file that cannot be read is an environment error."""
        args = mint_args(keys, "--bind-key", keys.holder_file)
        args[args.index(keys.issuer_file)] = str(tmp_path / "missing.jwk")
        run = cli(*args)
        assert run.code == 3
        assert "cannot read key file" in run.err

    def test_key_file_that_is_not_json(self, cli: Cli, keys: Keys, tmp_path: Path) -> None:
        """A key file with garbage in it is an invalid key (CPN-REQ-005, exit 1)."""
        bad = tmp_path / "bad.jwk"
        bad.write_text("-----BEGIN PRIVATE KEY-----")
        args = mint_args(keys, "--bind-key", str(bad))
        run = cli(*args)
        assert run.code == 1
        assert "CPN-REQ-005" in run.err

    def test_key_file_that_is_not_an_object(self, cli: Cli, keys: Keys, tmp_path: Path) -> None:
        """A key file holding a JSON array is refused with CPN-REQ-005."""
        bad = tmp_path / "list.jwk"
        bad.write_text("[]")
        run = cli(*mint_args(keys, "--bind-key", str(bad)))
        assert run.code == 1
        assert "is not a JSON object" in run.err

    def test_public_key_cannot_sign(self, cli: Cli, keys: Keys, tmp_path: Path) -> None:
        """A public JWK as --key is refused with CPN-REQ-005."""
        public = tmp_path / "issuer.pub.jwk"
        public.write_text(json.dumps(keys.issuer.public.jwk()))
        args = mint_args(keys, "--bind-key", keys.holder_file)
        args[args.index(keys.issuer_file)] = str(public)
        assert "CPN-REQ-005" in cli(*args).err


class TestAttenuate:
    def test_appends_a_narrower_link(self, cli: Cli, keys: Keys, coupon: str) -> None:
        """The new link narrows the parent, binds the delegate and inherits what is left out."""
        run = cli(
            "attenuate",
            coupon,
            "--key",
            keys.holder_file,
            "--to-key",
            keys.delegate_file,
            "--subject",
            "svc-b",
            "--resource",
            "orders/123",
            "--action",
            "read",
            "--now",
            str(NOW),
        )
        assert run.code == 0
        chain = run.out.strip()
        assert chain.startswith(coupon + "~")
        link = claims_of(chain)
        assert link["sub"] == "svc-b"
        assert link["iss"] == "svc-a"
        assert link["res"] == "orders/123"
        assert link["act"] == ["read"]
        assert link["pur"] == "fulfilment"
        assert link["cnf"] == {"jkt": keys.delegate.public.thumbprint}
        assert link["dep"] == 1

    def test_to_jkt_from_stdin_with_json(self, cli: Cli, keys: Keys, coupon: str) -> None:
        """TOKEN "-" reads stdin; --to-jkt binds a thumbprint; --json gives depth and claims."""
        thumb = keys.delegate.public.thumbprint
        run = cli(
            "attenuate",
            "-",
            "--key",
            keys.holder_file,
            "--to-jkt",
            thumb,
            "--subject",
            "svc-b",
            "--purpose",
            "fulfilment.ship",
            "--ttl",
            "60",
            "--now",
            str(NOW),
            "--json",
            stdin=coupon + "\n",
        )
        doc = run.json()
        assert doc["depth"] == 1
        assert doc["claims"]["cnf"] == {"jkt": thumb}
        assert doc["claims"]["exp"] == NOW + 60
        assert doc["token"].startswith(coupon + "~")

    def test_widening_is_refused(self, cli: Cli, keys: Keys, coupon: str) -> None:
        """Asking for an action the parent lacks fails with CPN-REQ-006."""
        run = cli(
            "attenuate",
            coupon,
            "--key",
            keys.holder_file,
            "--to-key",
            keys.delegate_file,
            "--subject",
            "svc-b",
            "--action",
            "delete",
            "--now",
            str(NOW),
        )
        assert run.code == 1
        assert run.err.startswith("FAIL: CPN-REQ-006 ")

    def test_only_the_bound_key_can_attenuate(self, cli: Cli, keys: Keys, coupon: str) -> None:
        """The delegate's key cannot extend a coupon bound to the holder (CPN-REQ-005)."""
        run = cli(
            "attenuate",
            coupon,
            "--key",
            keys.delegate_file,
            "--to-key",
            keys.delegate_file,
            "--subject",
            "svc-b",
        )
        assert run.code == 1
        assert "CPN-REQ-005" in run.err

    @pytest.mark.parametrize("targets", [[], ["--to-jkt", "a" * 43, "--to-key", "x.jwk"]])
    def test_exactly_one_delegate(
        self, cli: Cli, keys: Keys, coupon: str, targets: list[str]
    ) -> None:
        """Neither or both of --to-key and --to-jkt is a usage error."""
        run = cli("attenuate", coupon, "--key", keys.holder_file, "--subject", "s", *targets)
        assert run.code == 2

    def test_token_from_a_file(self, cli: Cli, keys: Keys, coupon: str, tmp_path: Path) -> None:
        """A TOKEN that names a file is read from it (trailing newline ignored)."""
        path = tmp_path / "coupon.txt"
        path.write_text(coupon + "\n")
        run = cli(
            "attenuate",
            str(path),
            "--key",
            keys.holder_file,
            "--to-key",
            keys.delegate_file,
            "--subject",
            "svc-b",
            "--now",
            str(NOW),
        )
        assert run.code == 0
        assert run.out.startswith(coupon + "~")
