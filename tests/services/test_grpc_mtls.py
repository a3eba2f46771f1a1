"""gRPC over TLS and mTLS against a running ``coupon up``, with certificates made here.

A test CA signs the server's certificate and the clients'. With ``COUPON_GRPC_TLS_CLIENT_CA``
a client needs a certificate from that CA to connect at all; a service then gets a coupon
bound to its certificate (``x5t#S256``, RFC 8705) and relying services verify the binding.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import grpc
import pytest
from tests.grpc_support import Issued, TestCa, call
from tests.services.grpc_served import dpop_metadata, issue_message
from tests.services.harness import AuthorityProcess, Holder, Launcher, issue_body

from coupon.grpc_api import (
    SERVICE,
    AttenuateRequest,
    Binding,
    CouponAuthorityStub,
    VerifyRequest,
)
from coupon.token import x5t_s256

#: The identity of the client certificate (its SAN URI), listed in COUPON_MTLS_IDENTITIES.
IDENTITY = "uri:spiffe://example.test/svc-a"


@dataclass
class Mtls:
    """An Authority requiring client certificates on gRPC, and the certificates around it."""

    proc: AuthorityProcess
    ca: TestCa
    client: Issued
    stranger: Issued
    unlisted: Issued

    def stub(self, credentials: grpc.ChannelCredentials) -> CouponAuthorityStub:
        """A client stub over a new secure channel (closed with the process)."""
        assert self.proc.grpc_target is not None
        channel = grpc.secure_channel(self.proc.grpc_target, credentials)
        self._channels.append(channel)
        return CouponAuthorityStub(channel)

    def __post_init__(self) -> None:
        self._channels: list[grpc.Channel] = []

    def close(self) -> None:
        """Close the channels."""
        for channel in self._channels:
            channel.close()


@pytest.fixture(scope="module")
def mtls(module_launcher: Launcher, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Mtls]:
    """``coupon up`` with gRPC mTLS (embedded): server and client certificates of one CA."""
    directory = tmp_path_factory.mktemp("pki")
    ca = TestCa(directory)
    server = ca.issue("authority", server=True)
    client = ca.issue("svc-a", uris=["spiffe://example.test/svc-a"])
    stranger = TestCa(directory / "other", "Other CA").issue("svc-a")
    unlisted = ca.issue("svc-b", uris=["spiffe://example.test/svc-b"])
    proc = module_launcher.start(
        "embedded",
        name="grpc-mtls",
        extra={
            "COUPON_GRPC_PORT": "0",
            "COUPON_GRPC_TLS_CERT": str(server.cert_path),
            "COUPON_GRPC_TLS_KEY": str(server.key_path),
            "COUPON_GRPC_TLS_CLIENT_CA": str(ca.cert_path),
            "COUPON_MTLS_IDENTITIES": json.dumps({IDENTITY: {"roles": ["issuer"]}}),
        },
    )
    state = Mtls(proc, ca, client, stranger, unlisted)
    yield state
    state.close()


class TestMtls:
    """Client certificates required; coupons bound to them."""

    def test_banner_announces_mtls(self, mtls: Mtls) -> None:
        """The start-up banner names the gRPC port and its security."""
        banner = mtls.proc.stdout_path.read_text()
        assert f"gRPC        {mtls.proc.grpc_target}  ({SERVICE}, mTLS;" in banner

    def test_service_gets_a_certificate_bound_coupon(self, mtls: Mtls) -> None:
        """Over mTLS a service gets a coupon bound to its certificate; verify checks it."""
        stub = mtls.stub(mtls.ca.channel_credentials(mtls.client))
        key = [("x-api-key", mtls.proc.admin_key)]
        thumbprint = x5t_s256(mtls.client.der)
        body = issue_body(Holder(), subject="svc-a")
        body["binding"] = {"x5t#S256": thumbprint}
        issued = call(stub.Issue, issue_message(body), key)
        assert issued.status == grpc.StatusCode.OK, issued.details
        assert issued.answer.token_type == "mTLS"
        assert issued.answer.claims.cnf.x5t_s256 == thumbprint
        coupon = issued.answer.coupon
        base = {"coupon": coupon, "audience": "orders", "resource": "orders/123/items"}
        bound = call(stub.Verify, VerifyRequest(**base, certificate_thumbprint=thumbprint), key)
        assert bound.answer.allow, bound.answer.reason
        other = x5t_s256(mtls.stranger.der)
        wrong = call(stub.Verify, VerifyRequest(**base, certificate_thumbprint=other), key)
        assert (wrong.answer.allow, wrong.answer.code) == (False, "CPN-POP-013")
        missing = call(stub.Verify, VerifyRequest(**base), key)
        assert (missing.answer.allow, missing.answer.code) == (False, "CPN-POP-013")

    def test_certificate_alone_authenticates_and_binds_self(self, mtls: Mtls) -> None:
        """No API key: the certificate names the caller, and "self" binds the coupon to it."""
        stub = mtls.stub(mtls.ca.channel_credentials(mtls.client))
        body = issue_body(Holder(), subject="svc-a")
        body["binding"] = {"x5t#S256": "self"}
        issued = call(stub.Issue, issue_message(body))
        assert issued.status == grpc.StatusCode.OK, issued.details
        assert issued.answer.token_type == "mTLS"
        assert issued.answer.claims.cnf.x5t_s256 == x5t_s256(mtls.client.der)

    def test_unlisted_certificate_is_refused(self, mtls: Mtls) -> None:
        """A certificate of the right CA whose identity is not listed: PERMISSION_DENIED."""
        stub = mtls.stub(mtls.ca.channel_credentials(mtls.unlisted))
        body = issue_body(Holder())
        body["binding"] = {"x5t#S256": "self"}
        out = call(stub.Issue, issue_message(body))
        assert out.status == grpc.StatusCode.PERMISSION_DENIED, out.details
        assert out.code is not None
        assert out.code.startswith("CPN-MTLS-")

    def test_api_key_caller_cannot_bind_self(self, mtls: Mtls) -> None:
        """ "self" needs a caller authenticated by its certificate, as over HTTPS."""
        stub = mtls.stub(mtls.ca.channel_credentials(mtls.client))
        body = issue_body(Holder())
        body["binding"] = {"x5t#S256": "self"}
        out = call(stub.Issue, issue_message(body), [("x-api-key", mtls.proc.admin_key)])
        assert out.status == grpc.StatusCode.INVALID_ARGUMENT, out.details
        assert out.code is not None
        assert out.code.startswith("CPN-MTLS-")

    def test_certificate_bound_parent_is_not_attenuated_with_dpop(self, mtls: Mtls) -> None:
        """As over REST: a certificate-bound coupon cannot be attenuated by DPoP."""
        stub = mtls.stub(mtls.ca.channel_credentials(mtls.client))
        holder = Holder()
        body = issue_body(holder)
        body["binding"] = {"x5t#S256": x5t_s256(mtls.client.der)}
        parent = call(stub.Issue, issue_message(body), [("x-api-key", mtls.proc.admin_key)])
        assert parent.status == grpc.StatusCode.OK, parent.details
        htu = f"https://{mtls.proc.grpc_target}/{SERVICE}/Attenuate"
        request = AttenuateRequest(subject="bob", binding=Binding(jkt=Holder().jkt))
        out = call(stub.Attenuate, request, dpop_metadata(holder, parent.answer.coupon, htu))
        assert (out.status, out.code) == (grpc.StatusCode.UNAUTHENTICATED, "CPN-POP-013")

    @pytest.mark.parametrize("who", ["no-certificate", "other-ca", "plaintext"])
    def test_clients_without_a_trusted_certificate_cannot_connect(
        self, mtls: Mtls, who: str
    ) -> None:
        """No certificate, one from another CA, or no TLS at all: the handshake fails."""
        assert mtls.proc.grpc_target is not None
        if who == "plaintext":
            channel = grpc.insecure_channel(mtls.proc.grpc_target)
            stub = CouponAuthorityStub(channel)
        else:
            client = None if who == "no-certificate" else mtls.stranger
            stub = mtls.stub(mtls.ca.channel_credentials(client))
        out = call(
            stub.Issue,
            issue_message(issue_body(Holder())),
            [("x-api-key", mtls.proc.admin_key)],
            timeout=5,
        )
        assert out.status == grpc.StatusCode.UNAVAILABLE
        assert out.detail is None
        if who == "plaintext":
            channel.close()


def test_tls_files_are_reloaded(launcher: Launcher, tmp_path: Path) -> None:
    """TLS without client certificates; replaced files serve new connections, no restart."""
    first = TestCa(tmp_path / "first", "First CA")
    served = first.issue("authority", server=True)
    proc = launcher.start(
        "embedded",
        name="grpc-tls",
        extra={
            "COUPON_GRPC_PORT": "0",
            "COUPON_GRPC_TLS_CERT": str(served.cert_path),
            "COUPON_GRPC_TLS_KEY": str(served.key_path),
            "COUPON_TLS_RELOAD_INTERVAL": "0.2",
        },
    )
    assert proc.grpc_target is not None
    assert f"({SERVICE}, TLS;" in proc.stdout_path.read_text()
    key = [("x-api-key", proc.admin_key)]
    request = issue_message(issue_body(Holder()))

    def issue_trusting(ca: TestCa) -> grpc.StatusCode:
        assert proc.grpc_target is not None
        with grpc.secure_channel(proc.grpc_target, ca.channel_credentials()) as channel:
            return call(CouponAuthorityStub(channel).Issue, request, key, timeout=5).status

    assert issue_trusting(first) == grpc.StatusCode.OK
    second = TestCa(tmp_path / "second", "Second CA")
    renewed = second.issue("authority", server=True, filename="renewed")
    served.key_path.write_bytes(renewed.key_pem)
    served.cert_path.write_bytes(renewed.cert_pem)
    deadline = time.monotonic() + 10
    while issue_trusting(second) != grpc.StatusCode.OK:
        assert time.monotonic() < deadline, "the new certificate was never served"
        time.sleep(0.2)
    assert issue_trusting(first) == grpc.StatusCode.UNAVAILABLE
