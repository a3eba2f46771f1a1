"""TLS for the gRPC server: which files, and credentials that pick up replaced files.

The gRPC server takes its own ``COUPON_GRPC_TLS_*`` files when any is set, else the HTTP
server's ``COUPON_TLS_*`` (docs/mtls.md): one certificate can serve both ports. gRPC can ask
for a client certificate only by requiring one, so:

- ``COUPON_GRPC_TLS_CLIENT_CA`` set: mTLS, a client certificate signed by it is required;
- inherited ``COUPON_TLS_CLIENT_AUTH=required``: the same with ``COUPON_TLS_CLIENT_CA``;
- inherited ``optional``: TLS without client certificates on gRPC (callers there use their
  other credentials; a warning says so at start-up).

Like the HTTP server, the credentials re-read changed files (at most every
``tls_reload_interval`` seconds, checked when a client connects); connections already open
keep their certificate. A reload that fails (files caught mid-replacement) keeps the old ones.
"""

from __future__ import annotations

import re
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import cast

import grpc
from cryptography import x509
from cryptography.hazmat.primitives import serialization

from coupon.authority._tls import FileWatch
from coupon.observability import get_logger
from coupon.settings import Settings

__all__ = ["TlsFiles", "check_pair", "server_credentials", "tls_files"]

_log = get_logger("coupon.grpc")
_KEY_BLOCK = re.compile(
    rb"-----BEGIN ([A-Z ]*)PRIVATE KEY-----\r?\n.+?\r?\n-----END \1PRIVATE KEY-----", re.DOTALL
)


@dataclass(frozen=True, slots=True)
class TlsFiles:
    """The PEM files the gRPC server's TLS uses."""

    cert: Path
    key: Path
    client_ca: Path | None = None

    @property
    def security(self) -> str:
        """``"mTLS"`` when client certificates are required, else ``"TLS"``."""
        return "mTLS" if self.client_ca is not None else "TLS"

    def paths(self) -> tuple[Path, ...]:
        """Every file, for change detection."""
        return (self.cert, self.key) + ((self.client_ca,) if self.client_ca else ())


def tls_files(settings: Settings) -> TlsFiles | None:
    """The files to serve gRPC with (None: plaintext).

    Raises:
        ValueError: ``COUPON_GRPC_TLS_CERT`` without ``_KEY`` (or the reverse), or a client
            CA without a server certificate.
    """
    s = settings
    if s.grpc_tls_cert or s.grpc_tls_key or s.grpc_tls_client_ca:
        if s.grpc_tls_cert is None or s.grpc_tls_key is None:
            raise ValueError(
                "COUPON_GRPC_TLS_CERT and COUPON_GRPC_TLS_KEY go together (and "
                "COUPON_GRPC_TLS_CLIENT_CA needs both)"
            )
        return TlsFiles(s.grpc_tls_cert, s.grpc_tls_key, s.grpc_tls_client_ca)
    if s.tls_cert is None:
        return None
    client_ca = s.tls_client_ca if s.tls_client_auth == "required" else None
    if s.tls_client_auth == "optional":
        _log.warning(
            "grpc_client_certificates_off",
            reason="gRPC asks for client certificates only when it requires them; set "
            "COUPON_GRPC_TLS_CLIENT_CA to require them on the gRPC port",
        )
    # Without tls_key the certificate file holds the key too (as ssl.load_cert_chain reads it).
    return TlsFiles(s.tls_cert, s.tls_key or s.tls_cert, client_ca)


def check_pair(key_pem: bytes, chain_pem: bytes) -> None:
    """Raise ``ValueError`` unless ``key_pem`` holds the private key of the first certificate
    in ``chain_pem`` (either may be a file holding both)."""
    key_block = _KEY_BLOCK.search(key_pem)
    if key_block is None:
        raise ValueError("no PEM private key")
    key = serialization.load_pem_private_key(key_block.group(0), password=None)
    leaf = x509.load_pem_x509_certificates(chain_pem)[0]
    spki = (serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)
    if key.public_key().public_bytes(*spki) != leaf.public_key().public_bytes(*spki):
        raise ValueError("the private key does not belong to the certificate")


class _Reloader:
    """gRPC's certificate-configuration fetcher: new files, at most once per interval."""

    def __init__(
        self, files: TlsFiles, interval: float, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self.files = files
        self.interval = interval
        self.reloads = 0
        self._watch = FileWatch(files.paths(), interval, clock)

    def load(self) -> grpc.ServerCertificateConfiguration:
        """The configuration the files hold now.

        Raises:
            OSError: a file cannot be read.
            ValueError: the key is not the certificate's (or either does not parse).
        """
        f = self.files
        key, chain = f.key.read_bytes(), f.cert.read_bytes()
        check_pair(key, chain)
        roots = f.client_ca.read_bytes() if f.client_ca is not None else None
        return grpc.ssl_server_certificate_configuration([(key, chain)], root_certificates=roots)

    def __call__(self) -> grpc.ServerCertificateConfiguration | None:
        stamp = self._watch.changed()
        if stamp is None:
            return None
        try:
            config = self.load()
        except (OSError, ValueError) as exc:  # caught mid-replacement: keep the old, retry
            _log.warning("grpc_tls_reload_failed", error=repr(exc))
            return None
        self._watch.stamp = stamp
        self.reloads += 1
        _log.info("grpc_tls_reloaded", files=[str(p) for p in self.files.paths()])
        return config


def server_credentials(settings: Settings) -> tuple[grpc.ServerCredentials, TlsFiles] | None:
    """TLS credentials for the gRPC server and the files they come from; None: plaintext.

    Raises:
        ValueError: as :func:`tls_files`.
        OSError: a file cannot be read at start-up.
    """
    files = tls_files(settings)
    if files is None:
        return None
    reloader = _Reloader(files, settings.tls_reload_interval)
    # The fetcher returns None for "no change", as gRPC documents (the stubs leave it out).
    fetcher = cast("Callable[[], grpc.ServerCertificateConfiguration]", reloader)
    credentials = grpc.dynamic_ssl_server_credentials(
        reloader.load(), fetcher, require_client_authentication=files.client_ca is not None
    )
    return credentials, files
