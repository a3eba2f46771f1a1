"""Spans, correlation ids, metrics and log redaction of the Authority, in-process."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest
import pytest_asyncio
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from structlog.testing import capture_logs

from coupon.authority._runtime import Runtime
from coupon.authority._service import Authority
from coupon.authority.app import create_app
from coupon.observability import REDACTED, get_logger, redact, tracer_provider
from coupon.settings import Settings
from coupon.token import SigningKey, create_dpop_proof, new_jti

EXPORTER = InMemorySpanExporter()
tracer_provider().add_span_processor(SimpleSpanProcessor(EXPORTER))
TRACE_ID = "4bf92f3577b34da6a3ce929d0e0e4736"
TRACEPARENT = f"00-{TRACE_ID}-00f067aa0ba902b7-01"


@pytest_asyncio.fixture
async def client(tmp_path: Path) -> AsyncIterator[tuple[httpx.AsyncClient, Runtime]]:
    settings = Settings.model_validate({"data_dir": str(tmp_path), "log_json": True})
    runtime = await Runtime.start(settings)
    app = create_app(settings, runtime=runtime)
    app.state.authority = Authority(runtime)
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url=settings.base_url) as http:
        yield http, runtime
    await runtime.stop()


async def _issue_and_verify(http: httpx.AsyncClient, runtime: Runtime) -> httpx.Response:
    assert runtime.admin_credential is not None
    headers = {"X-API-Key": runtime.admin_credential}
    holder = SigningKey.generate()
    issued = await http.post(
        "/v1/coupons",
        headers=headers,
        json={
            "subject": "svc-a",
            "audience": ["orders"],
            "tenant": "acme",
            "resource": "orders/**",
            "actions": ["read"],
            "purpose": "billing",
            "binding": {"jkt": holder.public.thumbprint},
        },
    )
    assert issued.status_code == 201, issued.text
    coupon = issued.json()["coupon"]
    uri = "https://orders.example/orders/1"
    proof = create_dpop_proof(
        holder, method="GET", uri=uri, now=int(time.time()), jti=new_jti(), access_token=coupon
    )
    return await http.post(
        "/v1/coupons/verify",
        headers={**headers, "traceparent": TRACEPARENT, "X-Request-Id": "req-42"},
        json={
            "coupon": coupon,
            "audience": "orders",
            "resource": "orders/1",
            "action": "read",
            "dpop": proof,
            "htm": "GET",
            "htu": uri,
        },
    )


class TestTracing:
    @pytest.mark.asyncio
    async def test_verify_continues_the_callers_trace(
        self, client: tuple[httpx.AsyncClient, Runtime]
    ) -> None:
        """The server span and the coupon.verify span join the trace named in traceparent."""
        EXPORTER.clear()
        response = await _issue_and_verify(*client)
        assert response.json()["allow"] is True
        assert response.json()["trace_id"] == TRACE_ID
        assert response.headers["traceparent"].split("-")[1] == TRACE_ID
        spans = {s.name: s for s in EXPORTER.get_finished_spans()}
        verify = spans["coupon.verify"]
        assert f"{verify.context.trace_id:032x}" == TRACE_ID
        assert verify.attributes is not None
        assert verify.attributes["coupon.result"] == "allow"
        server = spans["POST /v1/coupons/verify"]
        assert verify.parent is not None
        assert verify.parent.span_id == server.context.span_id

    @pytest.mark.asyncio
    async def test_request_id_is_echoed(self, client: tuple[httpx.AsyncClient, Runtime]) -> None:
        """A well-formed X-Request-Id comes back; a malformed one is replaced."""
        http, _ = client
        assert (await http.get("/healthz", headers={"X-Request-Id": "req-42"})).headers[
            "x-request-id"
        ] == "req-42"
        replaced = (await http.get("/healthz", headers={"X-Request-Id": "bad id\x7f"})).headers
        assert replaced["x-request-id"] != "bad id\x7f"
        assert len(replaced["x-request-id"]) == 16


class TestMetrics:
    @pytest.mark.asyncio
    async def test_decisions_and_route_latency_are_exported(
        self, client: tuple[httpx.AsyncClient, Runtime]
    ) -> None:
        """After a verify, /metrics counts the decision and times the route by its template."""
        http, runtime = client
        await _issue_and_verify(http, runtime)
        text = (await http.get("/metrics")).text
        assert (
            'coupon_decisions_total{code="",operation="coupon.verify",result="allow"} 1.0' in text
        )
        assert 'route="/v1/coupons/verify"' in text
        assert "coupon_revocation_staleness_seconds" in text


class TestRedaction:
    def test_secret_fields_and_token_shapes_are_redacted(self) -> None:
        """Named secrets and anything shaped like a JWS never reach a log line."""
        jws = "eyJhbGciOiJFZERTQSJ9.eyJzdWIiOiJzdmMtYSJ9.c2lnbmF0dXJlLWJ5dGVz"
        with capture_logs(processors=[redact]) as logs:
            get_logger("test").info(
                "presented", token="secret", authorization="DPoP x", detail=f"got {jws} here"
            )
        (entry,) = logs
        assert entry["token"] == REDACTED
        assert entry["authorization"] == REDACTED
        assert jws not in entry["detail"]
        assert entry["detail"] == f"got {REDACTED} here"
