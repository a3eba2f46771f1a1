"""``coupon certs``: a CA, server and client certificates, rotation, bundles, show.

Runs the commands in-process (the ``cli`` fixture) in a temporary directory, then checks the
files with ``cryptography`` and the Authority's own identity and trust code.
"""

from __future__ import annotations

import datetime
import json
import stat
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.x509.oid import ExtendedKeyUsageOID
from tests.cli.cli_support import Cli
from tests.mtls_pki import now

from coupon.authority._pki import create_ca
from coupon.authority._x509 import ClientCertificateValidator, certificate_identity
from coupon.token import x5t_s256_from_pem


@pytest.fixture
def here(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.chdir(tmp_path)
    return tmp_path


def certs(path: Path) -> list[x509.Certificate]:
    return x509.load_pem_x509_certificates(path.read_bytes())


def usages(cert: x509.Certificate) -> list[x509.ObjectIdentifier]:
    return list(cert.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value)


class TestIssue:
    def test_ca_server_client(self, cli: Cli, here: Path) -> None:
        """A CA signs a server and a client certificate that the Authority's checks accept."""
        assert cli("certs", "ca", "--out", "ca", "--cn", "Orders CA").code == 0
        run = cli(
            "certs",
            "server",
            "--ca",
            "ca",
            "--out",
            "srv",
            "--dns",
            "localhost",
            "--ip",
            "127.0.0.1",
        )
        assert run.code == 0, run.err
        run = cli(
            "certs",
            "client",
            "--ca",
            "ca",
            "--out",
            "orders",
            "--uri",
            "spiffe://example.org/orders",
        )
        assert run.code == 0, run.err
        assert "identity  uri:spiffe://example.org/orders" in run.out
        ca, (server,), (client,) = (
            certs(here / "ca.pem")[0],
            certs(here / "srv.pem"),
            certs(here / "orders.pem"),
        )
        assert usages(server) == [ExtendedKeyUsageOID.SERVER_AUTH]
        assert usages(client) == [ExtendedKeyUsageOID.CLIENT_AUTH]
        assert ClientCertificateValidator([ca]).validate(client, now=now())
        assert stat.S_IMODE((here / "orders.key").stat().st_mode) == 0o600
        lifetime = client.not_valid_after_utc - client.not_valid_before_utc
        assert lifetime == datetime.timedelta(hours=24, minutes=5)  # 24 h and the skew margin

    def test_intermediate_ca_chain(self, cli: Cli, here: Path) -> None:
        """A leaf of an intermediate CA is written with the intermediate after it."""
        cli("certs", "ca", "--out", "root")
        assert cli("certs", "ca", "--ca", "root", "--out", "issuing", "--cn", "Issuing").code == 0
        run = cli(
            "certs",
            "client",
            "--ca",
            "issuing",
            "--out",
            "job",
            "--cn",
            "batch",
            "--lifetime",
            "30m",
        )
        assert run.code == 0, run.err
        leaf, intermediate = certs(here / "job.pem")
        (root,) = certs(here / "root.pem")
        assert ClientCertificateValidator([root]).validate(leaf, [intermediate], now=now())
        assert certificate_identity(leaf) == "cn:batch"

    def test_json(self, cli: Cli, here: Path) -> None:
        """--json prints the files and the certificate as the Authority sees it."""
        cli("certs", "ca", "--out", "ca")
        run = cli(
            "certs", "client", "--ca", "ca", "--out", "c", "--dns", "Billing.Internal", "--json"
        )
        document = json.loads(run.out)
        assert document["files"] == ["c.pem", "c.key"]
        assert document["certificate"]["identity"] == "dns:billing.internal"
        assert document["certificate"]["x5t#S256"] == x5t_s256_from_pem(
            (here / "c.pem").read_text()
        )

    @pytest.mark.parametrize(
        ("args", "code"),
        [
            (["certs", "client", "--ca", "ca", "--out", "c", "--cn", "x", "--lifetime", "5y"], 2),
            (["certs", "client", "--ca", "ca", "--out", "c"], 2),
            (["certs", "client", "--ca", "missing", "--out", "c", "--cn", "x"], 3),
            (["certs", "ca", "--out", "ca"], 3),
            (["certs", "show", "ca.key"], 3),
        ],
        ids=[
            "bad lifetime",
            "no name",
            "missing CA",
            "overwrite without --force",
            "not a certificate",
        ],
    )
    def test_refusals(self, cli: Cli, here: Path, args: list[str], code: int) -> None:
        """Usage errors exit 2; unreadable or existing files exit 3."""
        cli("certs", "ca", "--out", "ca")
        assert cli(*args).code == code


class TestRotate:
    def test_same_identity_new_key(self, cli: Cli, here: Path) -> None:
        """Rotation keeps names, usage and lifetime, and changes the key and the thumbprint."""
        cli("certs", "ca", "--out", "ca")
        cli(
            "certs",
            "client",
            "--ca",
            "ca",
            "--out",
            "c",
            "--uri",
            "spiffe://x/c",
            "--lifetime",
            "2h",
        )
        (old,) = certs(here / "c.pem")
        old_key = (here / "c.key").read_bytes()
        run = cli("certs", "rotate", "c", "--ca", "ca")
        assert run.code == 0, run.err
        (new,) = certs(here / "c.pem")
        assert certificate_identity(new) == certificate_identity(old) == "uri:spiffe://x/c"
        assert (here / "c.key").read_bytes() != old_key
        assert new.public_key() != old.public_key()
        span = new.not_valid_after_utc - new.not_valid_before_utc
        assert span == old.not_valid_after_utc - old.not_valid_before_utc
        assert stat.S_IMODE((here / "c.key").stat().st_mode) == 0o600

    def test_refuses_a_ca(self, cli: Cli, here: Path) -> None:
        """A CA is not renewed in place (a new CA and a bundle is the procedure)."""
        cli("certs", "ca", "--out", "ca")
        assert cli("certs", "rotate", "ca", "--ca", "ca").code == 2


class TestBundleAndShow:
    def test_overlap_bundle(self, cli: Cli, here: Path) -> None:
        """Old and new CA in one bundle, duplicates once, an expired CA left out with a warning."""
        cli("certs", "ca", "--out", "old", "--cn", "Old")
        cli("certs", "ca", "--out", "new", "--cn", "New")
        past = create_ca(
            "Gone", now=now() - datetime.timedelta(days=3), lifetime=datetime.timedelta(days=1)
        )
        (here / "gone.pem").write_bytes(past.cert_pem())
        run = cli("certs", "bundle", "old.pem", "new.pem", "old.pem", "gone.pem", "--out", "b.pem")
        assert run.code == 0, run.err
        assert "left out CN=Gone: expired" in run.err
        assert [c.subject.rfc4514_string() for c in certs(here / "b.pem")] == ["CN=Old", "CN=New"]

    def test_nothing_valid(self, cli: Cli, here: Path) -> None:
        """A bundle of only expired CAs is refused."""
        past = create_ca(
            "Gone", now=now() - datetime.timedelta(days=3), lifetime=datetime.timedelta(days=1)
        )
        (here / "gone.pem").write_bytes(past.cert_pem())
        assert cli("certs", "bundle", "gone.pem", "--out", "b.pem").code == 3

    def test_show(self, cli: Cli, here: Path) -> None:
        """show prints identity, thumbprint and validity of each certificate in the file."""
        cli("certs", "ca", "--out", "ca")
        cli("certs", "client", "--ca", "ca", "--out", "c", "--cn", "legacy-batch")
        run = cli("certs", "show", "c.pem")
        assert "identity  cn:legacy-batch" in run.out
        assert f"x5t#S256  {x5t_s256_from_pem((here / 'c.pem').read_text())}" in run.out
        document = json.loads(cli("certs", "show", "ca.pem", "--json").out)
        assert document["certificates"][0]["ca"] is True

    def test_help(self, cli: Cli) -> None:
        """The group lists its commands and the exit codes."""
        run = cli("certs", "--help")
        for command in ("ca", "server", "client", "rotate", "bundle", "show"):
            assert f"  {command} " in run.out
        assert "Exit codes:" in run.out
