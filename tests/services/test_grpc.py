"""The ``coupon.v1.CouponAuthority`` gRPC service against a running ``coupon up``, with the
generated client: each RPC, DPoP over gRPC (replays and proofs for other URIs refused),
revocation across transports, callers refused, correlation (``traceparent``, ``x-request-id``),
metrics, bounded messages and load shedding. Embedded, then PostgreSQL + Redis.
"""

from __future__ import annotations

import json
import secrets
import time
from collections.abc import Iterator
from typing import Any

import grpc
import pytest
from prometheus_client.parser import text_string_to_metric_families
from tests.grpc_support import call
from tests.services.grpc_served import Served, dpop_metadata, issue_message, serve_grpc
from tests.services.harness import Holder, Launcher, issue_body, verify, verify_body

from coupon.grpc_api import (
    SERVICE,
    AttenuateRequest,
    Binding,
    CouponResponse,
    IntrospectRequest,
    RevokeRequest,
    VerifyRequest,
)


@pytest.fixture(scope="module")
def served(engine: str, module_launcher: Launcher) -> Iterator[Served]:
    """One Authority serving gRPC for the module, on each engine in turn."""
    s = serve_grpc(module_launcher, engine, name=f"{engine}-grpc")
    yield s
    s.close()


def _issue(s: Served, holder: Holder, **fields: Any) -> CouponResponse:
    out = call(s.stub.Issue, issue_message(issue_body(holder, **fields)), s.key("admin"))
    assert out.status == grpc.StatusCode.OK, out.details
    answer: CouponResponse = out.answer
    return answer


def _verify_request(coupon: str, holder: Holder, **fields: str) -> VerifyRequest:
    return VerifyRequest(**verify_body(coupon, holder, **fields))


def _attenuate(
    s: Served, holder: Holder, parent: str, delegate: Holder, **fields: Any
) -> CouponResponse:
    request = AttenuateRequest(subject="bob", binding=Binding(jkt=delegate.jkt), **fields)
    out = call(s.stub.Attenuate, request, dpop_metadata(holder, parent, s.attenuate_htu))
    assert out.status == grpc.StatusCode.OK, out.details
    answer: CouponResponse = out.answer
    return answer


class TestRpcs:
    """Each RPC does what its REST route does."""

    def test_issue_answers_a_coupon_bound_to_the_key(self, served: Served) -> None:
        """Issue returns the coupon, its claims and what the Authority recorded."""
        holder = Holder()
        answer = _issue(served, holder, ttl=60)
        assert answer.token_type == "DPoP"
        assert answer.claims.cnf.jkt == holder.jkt
        assert (answer.claims.sub, list(answer.claims.aud)) == ("alice", ["orders"])
        assert answer.claims.jti == answer.jti == answer.lineage
        assert answer.expires_at - answer.issued_at == 60
        assert answer.policy_version == answer.claims.pol
        assert not answer.claims.HasField("par")

    def test_verify_allows_with_a_real_proof(self, served: Served) -> None:
        """Verify over gRPC allows the coupon with its holder's proof, like REST."""
        holder = Holder()
        coupon = _issue(served, holder).coupon
        out = call(served.stub.Verify, _verify_request(coupon, holder), served.key("verifier"))
        assert out.status == grpc.StatusCode.OK, out.details
        assert out.answer.allow
        assert out.answer.claims.sub == "alice"
        assert [c.jti for c in out.answer.chain] == [out.answer.claims.jti]
        assert out.answer.timings_us

    def test_verify_denial_is_an_answer(self, served: Served) -> None:
        """A wider action is a decision (allow false, CPN-SCOPE-002), not an error."""
        holder = Holder()
        coupon = _issue(served, holder).coupon
        request = _verify_request(coupon, holder, action="delete")
        out = call(served.stub.Verify, request, served.key("verifier"))
        assert out.status == grpc.StatusCode.OK
        assert (out.answer.allow, out.answer.code) == (False, "CPN-SCOPE-002")
        assert out.answer.reason

    def test_attenuate_with_dpop_over_grpc(self, served: Served) -> None:
        """The holder proves possession over gRPC and gets a narrower sub-coupon."""
        holder, delegate = Holder(), Holder()
        parent = _issue(served, holder)
        child = _attenuate(served, holder, parent.coupon, delegate, resource="orders/123/items")
        assert child.claims.par.jti == parent.jti
        assert child.claims.dep == 1
        assert child.lineage == parent.lineage
        assert child.claims.cnf.jkt == delegate.jkt
        allowed = verify(served.proc, verify_body(child.coupon, delegate))
        assert allowed["allow"], allowed

    def test_introspect_active_then_inactive_after_revoke(self, served: Served) -> None:
        """Introspect says active; after Revoke over gRPC it says inactive, and REST denies."""
        holder = Holder()
        issued = _issue(served, holder)
        active = call(
            served.stub.Introspect, IntrospectRequest(token=issued.coupon), served.key("auditor")
        )
        assert active.answer.active
        assert (active.answer.jti, active.answer.cnf.jkt) == (issued.jti, holder.jkt)
        revoked = call(
            served.stub.Revoke,
            RevokeRequest(kind="jti", value=issued.jti, reason="lost laptop"),
            served.key("admin"),
        )
        assert revoked.status == grpc.StatusCode.OK, revoked.details
        assert [r.value for r in revoked.answer.revocations] == [issued.jti]
        assert revoked.answer.cursor == revoked.answer.revocations[0].seq
        inactive = call(
            served.stub.Introspect, IntrospectRequest(token=issued.coupon), served.key("auditor")
        )
        assert not inactive.answer.active
        denied = verify(served.proc, verify_body(issued.coupon, holder))
        assert (denied["allow"], denied["code"]) == (False, "CPN-REV-001")


class TestDpopProfile:
    """DPoP over gRPC: htm POST, htu the public gRPC URL and the method's path."""

    def test_replayed_proof_is_refused(self, served: Served) -> None:
        """The same proof twice: the second Attenuate is UNAUTHENTICATED, CPN-RPL-001."""
        holder, delegate = Holder(), Holder()
        parent = _issue(served, holder).coupon
        metadata = dpop_metadata(holder, parent, served.attenuate_htu)
        request = AttenuateRequest(subject="bob", binding=Binding(jkt=delegate.jkt))
        assert call(served.stub.Attenuate, request, metadata).status == grpc.StatusCode.OK
        again = call(served.stub.Attenuate, request, metadata)
        assert (again.status, again.code) == (grpc.StatusCode.UNAUTHENTICATED, "CPN-RPL-001")
        assert again.detail is not None
        assert again.detail.protocol_error == "invalid_dpop_proof"

    @pytest.mark.parametrize("target", ["rest", "issue-method", "plain-http"])
    def test_proof_for_another_uri_is_refused(self, served: Served, target: str) -> None:
        """A proof made for REST, another method or another scheme: CPN-POP-008."""
        htu = {
            "rest": served.rest_attenuate_htu,
            "issue-method": f"https://{served.proc.grpc_target}/{SERVICE}/Issue",
            "plain-http": f"http://{served.proc.grpc_target}/{SERVICE}/Attenuate",
        }[target]
        holder, delegate = Holder(), Holder()
        parent = _issue(served, holder).coupon
        request = AttenuateRequest(subject="bob", binding=Binding(jkt=delegate.jkt))
        out = call(served.stub.Attenuate, request, dpop_metadata(holder, parent, htu))
        assert (out.status, out.code) == (grpc.StatusCode.UNAUTHENTICATED, "CPN-POP-008")

    def test_grpc_proof_is_refused_over_rest(self, served: Served) -> None:
        """The other way round: REST refuses a proof made for the gRPC method."""
        holder, delegate = Holder(), Holder()
        parent = _issue(served, holder).coupon
        md = dict(dpop_metadata(holder, parent, served.attenuate_htu))
        response = served.proc.anon.post(
            "/v1/coupons/attenuate",
            json={"subject": "bob", "binding": {"jkt": delegate.jkt}},
            headers={"Authorization": md["authorization"], "DPoP": md["dpop"]},
        )
        assert (response.status_code, response.json()["code"]) == (401, "CPN-POP-008")

    def test_proof_by_another_key_is_refused(self, served: Served) -> None:
        """Only the parent's holder can attenuate it: CPN-POP-012."""
        holder, thief = Holder(), Holder()
        parent = _issue(served, holder).coupon
        request = AttenuateRequest(subject="bob", binding=Binding(jkt=thief.jkt))
        out = call(
            served.stub.Attenuate, request, dpop_metadata(thief, parent, served.attenuate_htu)
        )
        assert (out.status, out.code) == (grpc.StatusCode.UNAUTHENTICATED, "CPN-POP-012")

    def test_two_proofs_are_refused(self, served: Served) -> None:
        """Two dpop metadata values are refused (RFC 9449 §4.3), not resolved: CPN-POP-002."""
        holder, delegate = Holder(), Holder()
        parent = _issue(served, holder).coupon
        metadata = [
            *dpop_metadata(holder, parent, served.attenuate_htu),
            dpop_metadata(holder, parent, served.attenuate_htu)[1],
        ]
        request = AttenuateRequest(subject="bob", binding=Binding(jkt=delegate.jkt))
        out = call(served.stub.Attenuate, request, metadata)
        assert (out.status, out.code) == (grpc.StatusCode.UNAUTHENTICATED, "CPN-POP-002")


class TestCallers:
    """No RPC but Attenuate answers without credentials, and Attenuate needs DPoP."""

    @pytest.mark.parametrize(
        ("method", "request_"),
        [
            ("Issue", issue_message(issue_body(Holder()))),
            ("Verify", VerifyRequest(coupon="x", audience="orders")),
            ("Introspect", IntrospectRequest(token="x")),
            ("Revoke", RevokeRequest(kind="jti", value="x", reason="r")),
        ],
        ids=["Issue", "Verify", "Introspect", "Revoke"],
    )
    @pytest.mark.parametrize("key", [None, "cpk_0123456789abcdef_" + "B" * 43, "garbage"])
    def test_unauthenticated_calls_are_refused(
        self, served: Served, method: str, request_: object, key: str | None
    ) -> None:
        """No key, an unknown key or a malformed one: UNAUTHENTICATED with CPN-AUTH-*."""
        metadata = [("x-api-key", key)] if key else []
        out = call(getattr(served.stub, method), request_, metadata)
        assert out.status == grpc.StatusCode.UNAUTHENTICATED, out.details
        assert out.code == ("CPN-AUTH-001" if key is None else "CPN-AUTH-002")

    def test_attenuate_without_dpop_is_refused(self, served: Served) -> None:
        """An API key is no substitute for proof of possession of the parent."""
        request = AttenuateRequest(subject="bob", binding=Binding(jkt=Holder().jkt))
        out = call(served.stub.Attenuate, request, served.key("admin"))
        assert (out.status, out.code) == (grpc.StatusCode.UNAUTHENTICATED, "CPN-POP-001")

    def test_unknown_method_is_unimplemented(self, served: Served) -> None:
        """A method the service does not have is UNIMPLEMENTED, not a crash."""
        method: grpc.UnaryUnaryMultiCallable[bytes, bytes] = served.channel.unary_unary(
            f"/{SERVICE}/Mint"
        )
        out = call(method, b"")
        assert out.status == grpc.StatusCode.UNIMPLEMENTED

    def test_oversized_message_is_refused(self, served: Served) -> None:
        """A message above the 64 KiB bound is refused before any work; the server lives on."""
        request = IntrospectRequest(token="t" * 70_000)
        out = call(served.stub.Introspect, request, served.key("auditor"))
        assert out.status == grpc.StatusCode.RESOURCE_EXHAUSTED
        assert served.proc.anon.get("/healthz").status_code == 200


class TestCorrelation:
    """``traceparent`` continues the caller's trace; ``x-request-id`` is echoed."""

    def test_traceparent_is_continued(self, served: Served) -> None:
        """The answer and the trailer carry our trace id with the server span's id."""
        trace_id, parent_span = secrets.token_hex(16), secrets.token_hex(8)
        request_id = f"req-{secrets.token_hex(4)}"
        metadata = [
            *served.key("admin"),
            ("traceparent", f"00-{trace_id}-{parent_span}-01"),
            ("x-request-id", request_id),
        ]
        out = call(served.stub.Issue, issue_message(issue_body(Holder())), metadata)
        assert out.answer.trace_id == trace_id
        version, returned, span, _flags = str(out.trailing["traceparent"]).split("-")
        assert (version, returned) == ("00", trace_id)
        assert span != parent_span
        assert out.trailing["x-request-id"] == request_id

    def test_errors_carry_the_ids_and_reach_the_log(self, served: Served) -> None:
        """A refusal's detail names the trace and request; the server logs it with them."""
        trace_id = secrets.token_hex(16)
        request_id = f"req-{secrets.token_hex(4)}"
        metadata = [
            ("traceparent", f"00-{trace_id}-{secrets.token_hex(8)}-01"),
            ("x-request-id", request_id),
        ]
        out = call(served.stub.Revoke, RevokeRequest(kind="jti", value="x", reason="r"), metadata)
        assert out.detail is not None
        assert (out.detail.trace_id, out.detail.request_id) == (trace_id, request_id)
        assert out.trailing["x-request-id"] == request_id
        deadline = time.monotonic() + 5
        while True:
            lines = [
                json.loads(line)
                for line in served.proc.stderr_path.read_text().splitlines()
                if line.startswith("{") and request_id in line
            ]
            if lines or time.monotonic() > deadline:
                break
            time.sleep(0.05)
        assert any(
            e["event"] == "rpc_denied" and e["trace_id"] == trace_id and e["method"] == "Revoke"
            for e in lines
        ), lines

    def test_malformed_request_id_is_replaced(self, served: Served) -> None:
        """An x-request-id outside [A-Za-z0-9._:-]{1,128} is replaced by a fresh one."""
        metadata = [*served.key("verifier"), ("x-request-id", "no spaces allowed")]
        out = call(served.stub.Introspect, IntrospectRequest(token=""), metadata)
        assert out.status == grpc.StatusCode.OK
        assert out.trailing["x-request-id"] not in ("", "no spaces allowed")


def test_metrics_count_grpc_calls(served: Served) -> None:
    """``/metrics`` counts gRPC calls by method and status code."""
    call(served.stub.Introspect, IntrospectRequest(token=""), served.key("verifier"))
    call(served.stub.Introspect, IntrospectRequest(token=""))
    text = served.proc.anon.get("/metrics").text
    samples = {
        (s.labels["method"], s.labels["code"]): s.value
        for family in text_string_to_metric_families(text)
        if family.name == "coupon_grpc_requests"
        for s in family.samples
        if s.name == "coupon_grpc_requests_total"
    }
    assert samples[("Introspect", "OK")] >= 1
    assert samples[("Introspect", "UNAUTHENTICATED")] >= 1


def test_load_shedding_is_resource_exhausted(launcher: Launcher) -> None:
    """Over the per-coupon verification limit: RESOURCE_EXHAUSTED, CPN-RATE-001, retry-after."""
    s = serve_grpc(
        launcher, "embedded", name="shedding", extra={"COUPON_REPLAY_LIMIT_PER_COUPON": "2"}
    )
    try:
        holder = Holder()
        coupon = _issue(s, holder).coupon
        outcomes = [
            call(s.stub.Verify, _verify_request(coupon, holder), s.key("verifier"))
            for _ in range(4)
        ]
        shed = [o for o in outcomes if o.status != grpc.StatusCode.OK]
        assert shed, [o.answer for o in outcomes]
        assert shed[0].status == grpc.StatusCode.RESOURCE_EXHAUSTED
        assert shed[0].code == "CPN-RATE-001"
        assert shed[0].detail is not None
        assert shed[0].detail.retry_after >= 1
        assert shed[0].trailing["retry-after"] == str(shed[0].detail.retry_after)
    finally:
        s.close()


def test_stops_cleanly_with_the_authority(launcher: Launcher) -> None:
    """SIGTERM stops the gRPC server with the Authority: clean exit, port closed."""
    s = serve_grpc(launcher, "embedded", name="lifecycle")
    try:
        assert call(s.stub.Introspect, IntrospectRequest(token=""), s.key("verifier")).answer
        s.proc.terminate()
        after = call(s.stub.Introspect, IntrospectRequest(token=""), s.key("verifier"), timeout=2)
        assert after.status in (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED)
    finally:
        s.close()


def test_off_unless_configured(launcher: Launcher) -> None:
    """Without COUPON_GRPC_PORT no gRPC server starts and the banner has no gRPC line."""
    proc = launcher.start("embedded", name="no-grpc")
    assert proc.grpc_target is None
    assert "gRPC" not in proc.stdout_path.read_text()
