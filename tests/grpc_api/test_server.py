"""The gRPC server in-process: what authenticators see of a call, and its spans.

A real :class:`~coupon.authority._runtime.Runtime` (SQLite in a temporary directory) and a
real gRPC server with mTLS; a recording authenticator placed before the API-key one shows the
:class:`~coupon.authority._auth.CallerContext` each call builds, and an in-memory exporter
shows the server span continuing the caller's trace.
"""

from __future__ import annotations

import secrets
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import grpc
import pytest
import pytest_asyncio
from grpc import aio
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind
from tests.grpc_support import Issued, TestCa

from coupon.authority._auth import CallerContext, Principal
from coupon.authority._runtime import Runtime
from coupon.authority._service import Authority
from coupon.grpc_api import (
    SERVICE,
    CouponAuthorityStub,
    GrpcServer,
    IntrospectRequest,
    RevokeRequest,
    VerifyRequest,
    read_error_detail,
)
from coupon.observability import tracer_provider
from coupon.settings import Settings

if TYPE_CHECKING:
    from coupon.grpc_api._gen.authority_pb2_grpc import CouponAuthorityAsyncStub

EXPORTER = InMemorySpanExporter()
tracer_provider().add_span_processor(SimpleSpanProcessor(EXPORTER))


class Recorder:
    """An authenticator that only remembers what it was shown."""

    def __init__(self) -> None:
        self.seen: list[CallerContext] = []

    async def authenticate(self, caller: CallerContext) -> Principal | None:
        self.seen.append(caller)
        return None


@dataclass
class Running:
    """The runtime, the server, a client channel with a certificate, and the recorder."""

    runtime: Runtime
    server: GrpcServer
    channel: aio.Channel
    client: Issued
    recorder: Recorder

    @property
    def stub(self) -> CouponAuthorityAsyncStub:
        """A stub on the mTLS channel (the generated stub, typed for asyncio)."""
        return CouponAuthorityStub(self.channel)


@pytest_asyncio.fixture
async def running(tmp_path: Path) -> AsyncIterator[Running]:
    """A runtime and its gRPC server requiring client certificates of a test CA."""
    ca = TestCa(tmp_path / "pki")
    server_cert = ca.issue("authority", server=True)
    client = ca.issue("svc-a", uris=["spiffe://example.test/svc-a"])
    settings = Settings.model_validate(
        {
            "data_dir": str(tmp_path / "data"),
            "grpc_port": 0,
            "grpc_tls_cert": str(server_cert.cert_path),
            "grpc_tls_key": str(server_cert.key_path),
            "grpc_tls_client_ca": str(ca.cert_path),
        }
    )
    runtime = await Runtime.start(settings)
    recorder = Recorder()
    runtime.authenticators.insert(0, recorder)
    server = await GrpcServer.start(Authority(runtime))
    channel = aio.secure_channel(f"127.0.0.1:{server.port}", ca.channel_credentials(client))
    try:
        yield Running(runtime, server, channel, client, recorder)
    finally:
        await channel.close()
        await server.stop(grace=1)
        await runtime.stop()


@pytest.mark.asyncio
async def test_caller_context_carries_the_certificate_and_peer(running: Running) -> None:
    """Authenticators see the verified client certificate, the peer and the metadata."""
    assert running.runtime.admin_credential is not None
    metadata = (("x-api-key", running.runtime.admin_credential), ("x-tenant", "acme"))
    answer = await running.stub.Introspect(IntrospectRequest(token=""), metadata=metadata)
    assert not answer.active
    [seen] = running.recorder.seen
    assert seen.client_cert_chain == (running.client.cert_pem.decode(),)
    assert seen.peer == "127.0.0.1"
    assert seen.headers["x-api-key"] == running.runtime.admin_credential
    assert seen.headers["x-tenant"] == "acme"


@pytest.mark.asyncio
async def test_server_span_continues_the_trace(running: Running) -> None:
    """One SERVER span per call, child of the caller's span; the verify span is its child."""
    trace_id, parent = secrets.token_hex(16), secrets.token_hex(8)
    assert running.runtime.admin_credential is not None
    metadata = (
        ("x-api-key", running.runtime.admin_credential),
        ("traceparent", f"00-{trace_id}-{parent}-01"),
    )
    EXPORTER.clear()
    with pytest.raises(aio.AioRpcError) as raised:
        await running.stub.Revoke(
            RevokeRequest(kind="everything", value="x", reason="r"), metadata=metadata
        )
    assert raised.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    detail = read_error_detail(raised.value.trailing_metadata())  # type: ignore[arg-type]
    assert detail is not None
    assert detail.trace_id == trace_id
    [span] = [s for s in EXPORTER.get_finished_spans() if s.name == f"{SERVICE}/Revoke"]
    assert span.kind == SpanKind.SERVER
    assert span.context is not None
    assert f"{span.context.trace_id:032x}" == trace_id
    assert span.parent is not None
    assert f"{span.parent.span_id:016x}" == parent
    assert span.attributes is not None
    assert span.attributes["rpc.system"] == "grpc"
    assert span.attributes["rpc.method"] == "Revoke"
    assert span.attributes["rpc.grpc.status_code"] == grpc.StatusCode.INVALID_ARGUMENT.value[0]
    assert span.attributes["coupon.code"] == "CPN-REQ-009"


@pytest.mark.asyncio
async def test_verify_span_is_a_child_of_the_server_span(running: Running) -> None:
    """The service layer's spans nest under the RPC's server span."""
    assert running.runtime.admin_credential is not None
    EXPORTER.clear()
    answer = await running.stub.Verify(
        VerifyRequest(coupon="not.a.coupon", audience="orders"),
        metadata=(("x-api-key", running.runtime.admin_credential),),
    )
    assert (answer.allow, answer.code) == (False, "CPN-TOK-003")
    spans = {s.name: s for s in EXPORTER.get_finished_spans()}
    server, verify = spans[f"{SERVICE}/Verify"], spans["coupon.verify"]
    assert verify.parent is not None
    assert server.context is not None
    assert verify.parent.span_id == server.context.span_id
    assert f"{server.context.trace_id:032x}" == answer.trace_id


@pytest.mark.asyncio
async def test_port_in_use_fails_to_start(running: Running) -> None:
    """A second server on a port already served fails at start instead of sharing it."""
    taken = running.runtime.settings.model_copy(update={"grpc_port": running.server.port})
    with pytest.raises(RuntimeError, match="bind"):
        await GrpcServer.start(Authority(running.runtime), settings=taken)


@pytest.mark.asyncio
async def test_start_needs_a_port(running: Running) -> None:
    """Starting without COUPON_GRPC_PORT is a programming error."""
    unset = running.runtime.settings.model_copy(update={"grpc_port": None})
    with pytest.raises(ValueError, match="COUPON_GRPC_PORT"):
        await GrpcServer.start(Authority(running.runtime), settings=unset)
