"""The server TLS context, its reload, and the ASGI TLS extension, over real handshakes.

An asyncio TLS server on 127.0.0.1 answers each line with the ASGI TLS extension of its
connection; clients are ``ssl`` contexts with the test certificates (tests/mtls_pki.py).
"""

from __future__ import annotations

import asyncio
import json
import ssl
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import pytest
from cryptography import x509
from cryptography.hazmat.primitives.serialization import Encoding
from tests.mtls_pki import HOUR, Pki, client_context, now

from coupon.authority._pki import renew
from coupon.authority._tls import ClientCaFile, ServerTls, asgi_tls_extension, server_context
from coupon.errors import AuthenticationFailed
from coupon.settings import Settings


class Clock:
    """A monotonic clock the test moves."""

    def __init__(self) -> None:
        self.t = 1000.0

    def __call__(self) -> float:
        return self.t


def settings_for(pki: Pki, **extra: Any) -> Settings:
    values: dict[str, Any] = {
        "tls_cert": pki.server.cert,
        "tls_key": pki.server.key,
        "tls_client_ca": pki.ca.cert,
        "tls_client_auth": "optional",
    }
    values.update(extra)
    return Settings(**values)


@asynccontextmanager
async def tls_server(context: ssl.SSLContext) -> AsyncIterator[int]:
    """A server that answers a line with its connection's ASGI TLS extension (JSON)."""

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            await reader.readline()
            extension = asgi_tls_extension(writer.get_extra_info("ssl_object"))
            writer.write(json.dumps(extension).encode() + b"\n")
            await writer.drain()
        except (ssl.SSLError, ConnectionError):
            pass
        finally:
            writer.close()

    server = await asyncio.start_server(handle, "127.0.0.1", 0, ssl=context)
    try:
        yield server.sockets[0].getsockname()[1]
    finally:
        server.close()
        await server.wait_closed()


async def ask(port: int, context: ssl.SSLContext) -> dict[str, Any] | None:
    """The server's view of this connection, or None when the handshake was refused."""
    try:
        reader, writer = await asyncio.open_connection(
            "127.0.0.1", port, ssl=context, server_hostname="localhost"
        )
        writer.write(b"hello\n")
        line = await asyncio.wait_for(reader.readline(), 5)
        peer = writer.get_extra_info("ssl_object").getpeercert(binary_form=True)
        writer.close()
    except (ssl.SSLError, ConnectionError):
        return None
    if not line:
        return None  # TLS 1.3: the server's refusal arrives after the client's handshake
    answer: dict[str, Any] = json.loads(line)
    answer["server_der"] = peer.hex()
    return answer


@pytest.fixture
def pki(tmp_path: Path) -> Pki:
    return Pki(tmp_path / "pki")


@pytest.mark.asyncio
class TestClientAuthModes:
    async def test_optional(self, pki: Pki) -> None:
        """Optional: no certificate is fine; a certificate shows in client_cert_chain."""
        async with tls_server(server_context(settings_for(pki))) as port:
            anonymous = await ask(port, client_context(pki))
            orders = await ask(port, client_context(pki, "orders"))
        assert anonymous is not None
        assert anonymous["client_cert_chain"] == []
        assert anonymous["client_cert_name"] is None
        assert orders is not None
        assert orders["client_cert_chain"] == [pki.clients["orders"].pem]

    async def test_required(self, pki: Pki) -> None:
        """Required: no handshake without a certificate."""
        async with tls_server(
            server_context(settings_for(pki, tls_client_auth="required"))
        ) as port:
            assert await ask(port, client_context(pki)) is None
            assert await ask(port, client_context(pki, "orders")) is not None

    async def test_none_does_not_ask(self, pki: Pki) -> None:
        """None: the server does not ask, so a client's certificate never reaches the app."""
        context = server_context(settings_for(pki, tls_client_auth="none"))
        async with tls_server(context) as port:
            answer = await ask(port, client_context(pki, "orders"))
        assert answer is not None
        assert answer["client_cert_chain"] == []

    @pytest.mark.parametrize("client", ["rogue", "expired", "server_only"])
    async def test_refused_certificates(self, pki: Pki, client: str) -> None:
        """Another CA, an expired certificate, a server-only certificate: no handshake."""
        async with tls_server(server_context(settings_for(pki))) as port:
            assert await ask(port, client_context(pki, client)) is None

    async def test_extension_numbers(self, pki: Pki) -> None:
        """tls_version and cipher_suite are the protocol's numbers; the name is RFC 4514."""
        async with tls_server(server_context(settings_for(pki))) as port:
            answer = await ask(port, client_context(pki, "legacy"))
        assert answer is not None
        assert answer["tls_version"] == 0x0304
        assert answer["cipher_suite"] in {0x1301, 0x1302, 0x1303}
        assert answer["client_cert_name"] == "CN=legacy-batch"


def resumed_twice(port: int, context: ssl.SSLContext) -> bool:
    """Connect, then reconnect offering the first connection's session: was it resumed?"""
    import socket

    session = None
    reused = False
    for _ in range(2):
        with (
            socket.create_connection(("127.0.0.1", port), timeout=5) as raw,
            context.wrap_socket(raw, server_hostname="localhost", session=session) as tls,
        ):
            tls.sendall(b"hello\n")
            tls.recv(65536)  # the answer also carries any TLS 1.3 ticket
            reused, session = bool(tls.session_reused), tls.session
    return reused


@pytest.mark.asyncio
class TestResumption:
    async def test_no_resumption_with_client_certificates(self, pki: Pki) -> None:
        """With client auth a reconnection is a full handshake: the certificate is checked
        against today's CAs and dates every time."""
        async with tls_server(server_context(settings_for(pki))) as port:
            reused = await asyncio.to_thread(resumed_twice, port, client_context(pki, "orders"))
        assert reused is False

    async def test_resumption_without_client_auth(self, pki: Pki) -> None:
        """Without client certificates nothing is lost by resuming, and it stays on."""
        context = server_context(settings_for(pki, tls_client_auth="none"))
        async with tls_server(context) as port:
            reused = await asyncio.to_thread(resumed_twice, port, client_context(pki))
        assert reused is True


@pytest.mark.asyncio
class TestVersionsAndSuites:
    def client_12(self, pki: Pki, ciphers: str | None = None) -> ssl.SSLContext:
        ctx = client_context(pki)
        ctx.maximum_version = ssl.TLSVersion.TLSv1_2
        if ciphers:
            ctx.set_ciphers(ciphers)
        return ctx

    async def test_tls12_allowed_by_default(self, pki: Pki) -> None:
        """A TLS 1.2 client gets an ECDHE AEAD suite."""
        async with tls_server(server_context(settings_for(pki))) as port:
            answer = await ask(port, self.client_12(pki))
        assert answer is not None
        assert answer["tls_version"] == 0x0303
        assert answer["cipher_suite"] is not None

    async def test_tls13_only(self, pki: Pki) -> None:
        """tls_min_version 1.3 refuses a TLS 1.2 client."""
        async with tls_server(server_context(settings_for(pki, tls_min_version="1.3"))) as port:
            assert await ask(port, self.client_12(pki)) is None
            assert await ask(port, client_context(pki)) is not None

    async def test_no_static_rsa_or_cbc(self, pki: Pki) -> None:
        """TLS 1.2 without forward secrecy or without AEAD is refused."""
        async with tls_server(server_context(settings_for(pki))) as port:
            assert await ask(port, self.client_12(pki, "AES128-GCM-SHA256")) is None
            assert await ask(port, self.client_12(pki, "ECDHE-ECDSA-AES128-SHA")) is None


class TestConfiguration:
    def test_client_auth_needs_a_ca(self, pki: Pki) -> None:
        """Client certificates without the CAs that sign them cannot be checked."""
        with pytest.raises(ValueError, match="CLIENT_CA"):
            server_context(settings_for(pki, tls_client_ca=None))

    def test_client_auth_needs_a_certificate(self) -> None:
        """Client auth without a server certificate is a configuration error."""
        with pytest.raises(ValueError, match="TLS_CERT"):
            server_context(Settings(tls_client_auth="required"))

    def test_missing_file(self, pki: Pki) -> None:
        """A certificate file that does not exist is an OSError at start-up."""
        with pytest.raises(OSError, match="No such file"):
            server_context(settings_for(pki, tls_cert=pki.root / "nope.pem"))

    def test_key_of_another_certificate(self, pki: Pki) -> None:
        """A key that does not match the certificate is refused at start-up."""
        with pytest.raises(ssl.SSLError):
            server_context(settings_for(pki, tls_key=pki.clients["orders"].key))

    def test_https_base_url(self, pki: Pki) -> None:
        """With a certificate the public URL defaults to https."""
        assert settings_for(pki).base_url.startswith("https://")
        assert Settings().base_url.startswith("http://")

    def test_interval_zero_never_reloads(self, pki: Pki) -> None:
        """tls_reload_interval 0 turns reloading off."""
        clock = Clock()
        served = ServerTls(settings_for(pki, tls_reload_interval=0), clock=clock)
        replace_file(pki.server.cert, pki.server.cert.read_bytes())
        clock.t += 1000
        assert served.maybe_reload() is False
        assert served.context.sni_callback is None


def der(cert: x509.Certificate) -> str:
    return cert.public_bytes(Encoding.DER).hex()


def replace_file(path: Path, data: bytes) -> None:
    tmp = path.with_suffix(".tmp")
    tmp.write_bytes(data)
    tmp.replace(path)


@pytest.mark.asyncio
class TestReload:
    async def test_rotated_server_certificate(self, pki: Pki) -> None:
        """After a rotation, new handshakes get the new certificate once the interval passed."""
        clock = Clock()
        served = ServerTls(settings_for(pki, tls_reload_interval=5), clock=clock)
        fresh = renew(pki.server.credential.certificate, pki.ca.credential, now=now())
        async with tls_server(served.context) as port:
            before = await ask(port, client_context(pki))
            replace_file(pki.server.key, fresh.key_pem())
            replace_file(pki.server.cert, fresh.cert_pem())
            still = await ask(port, client_context(pki))  # within the interval
            clock.t += 5
            after = await ask(port, client_context(pki))
        assert before is not None
        assert still is not None
        assert after is not None
        assert before["server_der"] == still["server_der"] == der(pki.server.credential.certificate)
        assert after["server_der"] == der(fresh.certificate)
        assert served.reloads == 1

    async def test_overlapping_ca_bundle(self, pki: Pki) -> None:
        """A client of a new CA is let in once the bundle holds both CAs and is reloaded."""
        clock = Clock()
        served = ServerTls(settings_for(pki, tls_reload_interval=1), clock=clock)
        async with tls_server(served.context) as port:
            assert await ask(port, client_context(pki, "rogue")) is None
            replace_file(pki.ca.cert, pki.ca.cert.read_bytes() + pki.other_ca.cert.read_bytes())
            clock.t += 1
            assert await ask(port, client_context(pki, "rogue")) is not None
            assert await ask(port, client_context(pki, "orders")) is not None

    async def test_bad_files_keep_the_old_context(self, pki: Pki) -> None:
        """A half-replaced pair (new key, old certificate) keeps serving the old one."""
        clock = Clock()
        served = ServerTls(settings_for(pki, tls_reload_interval=1), clock=clock)
        fresh = renew(pki.server.credential.certificate, pki.ca.credential, now=now())
        async with tls_server(served.context) as port:
            replace_file(pki.server.key, fresh.key_pem())
            clock.t += 1
            during = await ask(port, client_context(pki))
            replace_file(pki.server.cert, fresh.cert_pem())
            clock.t += 1
            after = await ask(port, client_context(pki))
        assert during is not None
        assert after is not None
        assert during["server_der"] == der(pki.server.credential.certificate)
        assert after["server_der"] == der(fresh.certificate)


class TestClientCaFile:
    def test_reload(self, pki: Pki) -> None:
        """The forwarded-certificate check follows the CA file, keeping the last good one."""
        clock = Clock()
        cas = ClientCaFile(pki.ca.cert, interval=1, clock=clock)
        rogue = pki.clients["rogue"].credential.certificate
        check: Callable[[], object] = lambda: cas.validator().validate(rogue, now=now())  # noqa: E731
        with pytest.raises(AuthenticationFailed):
            check()
        replace_file(pki.ca.cert, b"not PEM")
        clock.t += 1
        with pytest.raises(AuthenticationFailed):
            check()  # still the old bundle, not a crash
        replace_file(pki.ca.cert, pki.other_ca.cert.read_bytes())
        clock.t += 1
        check()

    def test_unreadable_at_start(self, pki: Pki) -> None:
        """A CA file that cannot be read stops the start."""
        with pytest.raises(OSError, match="No such file"):
            ClientCaFile(pki.root / "missing.pem", interval=1)

    def test_expired_leaf_is_refused(self, pki: Pki) -> None:
        """The same check refuses an expired certificate of the right CA."""
        cas = ClientCaFile(pki.ca.cert, interval=0)
        expired = pki.clients["expired"].credential.certificate
        with pytest.raises(AuthenticationFailed):
            cas.validator().validate(expired, now=now() + HOUR)
