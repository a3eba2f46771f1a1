"""TLS for the Authority's servers: the server context, its reload, the ASGI TLS extension.

- :func:`server_context` builds an ``ssl.SSLContext`` from :class:`~coupon.settings.Settings`
  (TLS 1.2 or newer, forward-secret AEAD suites, client certificates per
  ``tls_client_auth``). Any Python TLS server can use it.
- :class:`ServerTls` is the context a long-running server listens with: on a new handshake it
  notices changed certificate, key or CA files (at most every ``tls_reload_interval``) and
  serves the new ones from then on, without a restart. Connections already open keep theirs.
- :class:`ClientCaFile` is the client CA bundle as the forwarded-certificate check sees it,
  reloaded the same way.
- :func:`asgi_tls_extension` is what an ASGI server puts in ``scope["extensions"]["tls"]``
  for one connection (the ASGI TLS extension).
"""

from __future__ import annotations

import os
import ssl
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, Final

from cryptography import x509

from coupon.observability import get_logger
from coupon.settings import Settings

from ._x509 import ClientCertificateValidator

__all__ = [
    "TLS_VERSIONS",
    "ClientCaFile",
    "FileWatch",
    "ServerTls",
    "asgi_tls_extension",
    "server_context",
]

#: The ``tls_version`` values of the ASGI TLS extension (the protocol's own numbers).
TLS_VERSIONS: Final = {"TLSv1.2": 0x0303, "TLSv1.3": 0x0304}
#: TLS 1.2 suites: ECDHE (forward secrecy) with an AEAD. TLS 1.3 suites are all AEAD.
_TLS12_CIPHERS: Final = "ECDHE+AESGCM:ECDHE+CHACHA20"
_MIN_VERSION: Final = {"1.2": ssl.TLSVersion.TLSv1_2, "1.3": ssl.TLSVersion.TLSv1_3}
_VERIFY: Final = {"optional": ssl.CERT_OPTIONAL, "required": ssl.CERT_REQUIRED}
_log = get_logger("coupon.tls")
_cipher_ids: dict[str, int] = {}

Stamp = tuple[tuple[int, int, int], ...]


def _check(settings: Settings) -> None:
    s = settings
    if s.tls_cert is None and (s.tls_key is not None or s.tls_client_auth != "none"):
        raise ValueError("COUPON_TLS_KEY and COUPON_TLS_CLIENT_AUTH need COUPON_TLS_CERT")
    if s.tls_client_auth != "none" and s.tls_client_ca is None:
        raise ValueError(
            f"COUPON_TLS_CLIENT_AUTH={s.tls_client_auth} needs COUPON_TLS_CLIENT_CA (the CAs "
            "that sign client certificates)"
        )


def server_context(settings: Settings) -> ssl.SSLContext:
    """A server context for the certificate, key and client CAs named by ``settings``.

    Raises:
        ValueError: the settings are inconsistent (no ``tls_cert``, client auth without CAs).
        OSError, ssl.SSLError: a file is missing or unreadable, or the key does not match.
    """
    _check(settings)
    if settings.tls_cert is None:
        raise ValueError("COUPON_TLS_CERT is not set")
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.minimum_version = _MIN_VERSION[settings.tls_min_version]
    ctx.set_ciphers(_TLS12_CIPHERS)
    ctx.options |= ssl.OP_NO_COMPRESSION | ssl.OP_NO_RENEGOTIATION | ssl.OP_CIPHER_SERVER_PREFERENCE
    ctx.set_alpn_protocols(["http/1.1"])
    ctx.load_cert_chain(settings.tls_cert, settings.tls_key)
    if settings.tls_client_auth != "none" and settings.tls_client_ca is not None:
        ctx.load_verify_locations(cafile=settings.tls_client_ca)
        # Every certificate in the bundle is a trust anchor, an intermediate too: the same
        # rule as the check of forwarded certificates (ClientCertificateValidator).
        ctx.verify_flags |= ssl.VERIFY_X509_PARTIAL_CHAIN
        ctx.verify_mode = _VERIFY[settings.tls_client_auth]
        # No session tickets: a resumed session skips the certificate check, so a certificate
        # that expired, or whose CA left the bundle, would keep working for the ticket's life.
        ctx.options |= ssl.OP_NO_TICKET
        ctx.num_tickets = 0
    return ctx


def _stamp(paths: Sequence[Path]) -> Stamp:
    """What changes when a file is replaced or rewritten (missing files count too)."""
    out = []
    for path in paths:
        try:
            st = os.stat(path)
        except OSError:
            out.append((-1, -1, -1))
            continue
        out.append((st.st_mtime_ns, st.st_size, st.st_ino))
    return tuple(out)


class FileWatch:
    """Rate-limited "did these files change?" (at most one stat round per interval)."""

    def __init__(self, paths: Sequence[Path], interval: float, clock: Callable[[], float]):
        self.paths = list(paths)
        self.interval = interval
        self._clock = clock
        self.stamp = _stamp(self.paths)
        self._next = clock() + interval

    def changed(self) -> Stamp | None:
        """The new stamp when the files changed since the last accepted one, else None."""
        if self.interval <= 0:
            return None
        now = self._clock()
        if now < self._next:
            return None
        self._next = now + self.interval
        stamp = _stamp(self.paths)
        return stamp if stamp != self.stamp else None


class ServerTls:
    """The TLS context a server listens with, reloading its files while it runs.

    The listening context never changes (the server holds it); each new handshake is moved to
    the newest context built from the files (OpenSSL's ``SSL_set_SSL_CTX``, from the
    ClientHello callback). A reload that fails (a key that does not match the new certificate
    while the files are being replaced) keeps the previous context and is retried.

    Raises:
        ValueError, OSError, ssl.SSLError: as :func:`server_context`, at construction.
    """

    def __init__(self, settings: Settings, *, clock: Callable[[], float] = time.monotonic):
        self._settings = settings
        self.context = server_context(settings)
        self.current = self.context
        self.reloads = 0
        files = [p for p in (settings.tls_cert, settings.tls_key, settings.tls_client_ca) if p]
        self._watch = FileWatch(files, settings.tls_reload_interval, clock)
        if settings.tls_reload_interval > 0:
            self.context.sni_callback = self._on_client_hello

    def _on_client_hello(
        self, ssl_object: ssl.SSLObject, server_name: str | None, context: ssl.SSLContext
    ) -> None:
        try:
            self.maybe_reload()
            if self.current is not context:
                ssl_object.context = self.current
        except Exception as exc:  # never fail a handshake over a reload problem
            _log.error("tls_reload_error", error=repr(exc))

    def maybe_reload(self) -> bool:
        """Build a new context if the files changed (rate-limited); True when one was built."""
        stamp = self._watch.changed()
        if stamp is None:
            return False
        try:
            fresh = server_context(self._settings)
        except (OSError, ssl.SSLError, ValueError) as exc:
            _log.warning(
                "tls_reload_failed", error=str(exc), files=[str(p) for p in self._watch.paths]
            )
            return False
        self.current = fresh
        self._watch.stamp = stamp
        self.reloads += 1
        _log.info("tls_reloaded", reloads=self.reloads)
        return True


class ClientCaFile:
    """The client CA bundle for checking forwarded certificates, re-read when it changes.

    Raises:
        ValueError, OSError: the file cannot be read or holds no certificate (at construction;
            a later bad version keeps the previous one).
    """

    def __init__(
        self, path: Path, *, interval: float, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self.path = path
        self._watch = FileWatch([path], interval, clock)
        self._validator = self._load()

    def _load(self) -> ClientCertificateValidator:
        return ClientCertificateValidator(x509.load_pem_x509_certificates(self.path.read_bytes()))

    def validator(self) -> ClientCertificateValidator:
        """The validator for the newest readable version of the bundle."""
        stamp = self._watch.changed()
        if stamp is not None:
            try:
                self._validator = self._load()
                self._watch.stamp = stamp
                _log.info("tls_client_ca_reloaded", path=str(self.path))
            except (OSError, ValueError) as exc:
                _log.warning("tls_client_ca_reload_failed", path=str(self.path), error=str(exc))
        return self._validator


def _cipher_id(ssl_object: ssl.SSLObject, name: str) -> int | None:
    if name not in _cipher_ids:
        for cipher in ssl_object.context.get_ciphers():
            _cipher_ids[cipher["name"]] = cipher["id"] & 0xFFFF
    return _cipher_ids.get(name)


def asgi_tls_extension(ssl_object: ssl.SSLObject) -> dict[str, Any]:
    """The ASGI TLS extension of one connection (``scope["extensions"]["tls"]``).

    ``client_cert_chain`` holds the client certificate the handshake verified, as PEM (only
    the leaf: Python exposes the verified chain from 3.13 on, and the leaf is what names the
    caller). It is empty when the server did not ask for a certificate or none was sent.
    ``tls_version`` and ``cipher_suite`` are the protocol's numbers (0x0304 is TLS 1.3).
    """
    chain: list[str] = []
    name: str | None = None
    if ssl_object.context.verify_mode != ssl.CERT_NONE:
        der = ssl_object.getpeercert(binary_form=True)
        if der:
            chain.append(ssl.DER_cert_to_PEM_cert(der))
            name = x509.load_der_x509_certificate(der).subject.rfc4514_string()
    cipher = ssl_object.cipher()
    version = ssl_object.version()
    return {
        "server_cert": None,
        "client_cert_chain": chain,
        "client_cert_name": name,
        "client_cert_error": None,
        "tls_version": TLS_VERSIONS.get(version or ""),
        "cipher_suite": _cipher_id(ssl_object, cipher[0]) if cipher else None,
    }
