"""Which TLS files the gRPC server uses, and how replaced files are picked up."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import grpc
import pytest
from structlog.testing import capture_logs
from tests.grpc_support import TestCa

from coupon.grpc_api._tls import TlsFiles, _Reloader, check_pair, server_credentials, tls_files
from coupon.settings import Settings


def _settings(**values: Any) -> Settings:
    return Settings.model_validate(
        {k: str(v) if isinstance(v, Path) else v for k, v in values.items()}
    )


@pytest.fixture
def ca(tmp_path: Path) -> TestCa:
    """A test CA writing into a temporary directory."""
    return TestCa(tmp_path)


class TestTlsFiles:
    """gRPC's own files first, else the HTTP server's."""

    def test_plaintext_by_default(self) -> None:
        """No TLS settings: plaintext."""
        assert tls_files(_settings()) is None
        assert server_credentials(_settings()) is None

    def test_grpc_files(self, ca: TestCa) -> None:
        """COUPON_GRPC_TLS_*: TLS, and mTLS with a client CA."""
        server = ca.issue("authority", server=True)
        tls = tls_files(_settings(grpc_tls_cert=server.cert_path, grpc_tls_key=server.key_path))
        assert tls == TlsFiles(server.cert_path, server.key_path)
        assert tls.security == "TLS"
        mtls = tls_files(
            _settings(
                grpc_tls_cert=server.cert_path,
                grpc_tls_key=server.key_path,
                grpc_tls_client_ca=ca.cert_path,
            )
        )
        assert mtls is not None
        assert (mtls.client_ca, mtls.security) == (ca.cert_path, "mTLS")

    @pytest.mark.parametrize(
        "names",
        [("grpc_tls_cert",), ("grpc_tls_key",), ("grpc_tls_client_ca",)],
        ids=lambda n: n[0],
    )
    def test_incomplete_grpc_files(self, ca: TestCa, names: tuple[str, ...]) -> None:
        """A certificate without its key (or the reverse, or only a CA) stops the start."""
        with pytest.raises(ValueError, match="COUPON_GRPC_TLS_CERT"):
            tls_files(_settings(**dict.fromkeys(names, ca.cert_path)))

    def test_inherits_the_http_servers_files(self, ca: TestCa) -> None:
        """Without gRPC files, COUPON_TLS_CERT/KEY serve gRPC too; required auth is mTLS."""
        server = ca.issue("authority", server=True)
        plain = tls_files(_settings(tls_cert=server.cert_path, tls_key=server.key_path))
        assert plain == TlsFiles(server.cert_path, server.key_path)
        required = tls_files(
            _settings(
                tls_cert=server.cert_path,
                tls_key=server.key_path,
                tls_client_ca=ca.cert_path,
                tls_client_auth="required",
            )
        )
        assert required == TlsFiles(server.cert_path, server.key_path, ca.cert_path)

    def test_optional_client_auth_is_not_asked_on_grpc(self, ca: TestCa) -> None:
        """gRPC cannot ask for an optional certificate: TLS only, and a warning says so."""
        server = ca.issue("authority", server=True)
        with capture_logs() as logs:
            files = tls_files(
                _settings(
                    tls_cert=server.cert_path,
                    tls_key=server.key_path,
                    tls_client_ca=ca.cert_path,
                    tls_client_auth="optional",
                )
            )
        assert files == TlsFiles(server.cert_path, server.key_path)
        assert [e["event"] for e in logs] == ["grpc_client_certificates_off"]

    def test_key_inside_the_certificate_file(self, ca: TestCa, tmp_path: Path) -> None:
        """Without tls_key the certificate file holds the key, as for the HTTP server."""
        server = ca.issue("authority", server=True)
        both = tmp_path / "both.pem"
        both.write_bytes(server.cert_pem + server.key_pem)
        files = tls_files(_settings(tls_cert=both))
        assert files == TlsFiles(both, both)
        assert server_credentials(_settings(tls_cert=both)) is not None


class TestCheckPair:
    """The key must be the certificate's."""

    def test_matching(self, ca: TestCa) -> None:
        """A certificate and its key, apart or in one file."""
        leaf = ca.issue("authority", server=True)
        check_pair(leaf.key_pem, leaf.cert_pem + ca.cert_pem)
        check_pair(leaf.cert_pem + leaf.key_pem, leaf.cert_pem)

    def test_mismatched(self, ca: TestCa) -> None:
        """Another certificate's key is refused."""
        one, two = ca.issue("one", server=True), ca.issue("two", server=True)
        with pytest.raises(ValueError, match="does not belong"):
            check_pair(one.key_pem, two.cert_pem)

    def test_no_key(self, ca: TestCa) -> None:
        """A file without a private key is refused."""
        with pytest.raises(ValueError, match="no PEM private key"):
            check_pair(ca.cert_pem, ca.cert_pem)


class TestReloader:
    """Replaced files are read at most once per interval, and only when whole."""

    def test_reload(self, ca: TestCa) -> None:
        """Unchanged: nothing; replaced: a new configuration; half-replaced: retried later."""
        leaf = ca.issue("authority", server=True)
        now = [0.0]
        reloader = _Reloader(TlsFiles(leaf.cert_path, leaf.key_path), 1.0, clock=lambda: now[0])
        assert reloader() is None  # inside the interval
        now[0] = 1.5
        assert reloader() is None  # nothing changed
        other = ca.issue("other", server=True)
        leaf.cert_path.write_bytes(other.cert_pem)  # the key is not replaced yet
        os.utime(leaf.cert_path, ns=(1, 1))
        now[0] = 3.0
        assert reloader() is None
        assert reloader.reloads == 0
        leaf.key_path.write_bytes(other.key_pem)
        now[0] = 4.5
        assert isinstance(reloader(), grpc.ServerCertificateConfiguration)
        assert reloader.reloads == 1
        now[0] = 6.0
        assert reloader() is None

    def test_never_with_a_zero_interval(self, ca: TestCa) -> None:
        """tls_reload_interval 0: the files are read once."""
        leaf = ca.issue("authority", server=True)
        reloader = _Reloader(TlsFiles(leaf.cert_path, leaf.key_path), 0, clock=lambda: 1e9)
        leaf.cert_path.write_bytes(leaf.cert_pem + b"\n")
        assert reloader() is None

    def test_missing_file_at_start_fails(self, tmp_path: Path) -> None:
        """At start-up an unreadable file is an error, not a plaintext fallback."""
        missing = tmp_path / "missing.pem"
        with pytest.raises(FileNotFoundError, match=r"missing\.pem"):
            server_credentials(_settings(grpc_tls_cert=missing, grpc_tls_key=missing))
