"""gRPC and REST give the same answer to the same request (table-driven, one real process).

Each case sends one request both ways to the same ``coupon up`` (embedded, then PostgreSQL +
Redis) and compares: the same stable code, and the gRPC status that docs/grpc.md maps the
REST status to (``ErrorDetail.http_status`` is the REST status itself). Decisions of
``Verify`` (200, ``allow`` false) compare their codes the same way.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any, Final

import grpc
import pytest
from google.protobuf.message import Message
from tests.grpc_support import Outcome, call
from tests.services.grpc_served import Served, dpop_metadata, issue_message, serve_grpc
from tests.services.harness import Holder, Launcher, issue, issue_body

from coupon.grpc_api import (
    HTTP_TO_GRPC,
    AttenuateRequest,
    Binding,
    IntrospectRequest,
    RevokeRequest,
    VerifyRequest,
)


@dataclass(frozen=True)
class Rest:
    """One REST request (sent without credentials unless ``headers`` carry them)."""

    path: str
    json: dict[str, Any] | None = None
    form: dict[str, str] | None = None
    headers: dict[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class Rpc:
    """The same request over gRPC."""

    method: str
    request: Message
    metadata: list[tuple[str, str]] = field(default_factory=list)


@dataclass
class World:
    """What the cases build on: the process, a holder and a coupon bound to it."""

    served: Served
    holder: Holder
    coupon: str

    def api(self, name: str) -> dict[str, str]:
        """REST headers with the key called ``name``."""
        return {"X-API-Key": getattr(self.served.keys, name)}


Case = Callable[[World], tuple[Rest, Rpc]]


def _metadata(headers: dict[str, str]) -> list[tuple[str, str]]:
    return [(k.lower(), v) for k, v in headers.items()]


def _issue(key: str | None, **fields: Any) -> Case:
    def build(w: World) -> tuple[Rest, Rpc]:
        body = issue_body(w.holder, **fields)
        headers = w.api(key) if key else {}
        return Rest("/v1/coupons", json=body, headers=headers), Rpc(
            "Issue", issue_message(body), _metadata(headers)
        )

    return build


def _issue_with(api_key: str, *, twice: bool = False) -> Case:
    """Issue with a literal ``x-api-key`` (sent twice over gRPC when ``twice``)."""

    def build(w: World) -> tuple[Rest, Rpc]:
        body = issue_body(w.holder)
        metadata = [("x-api-key", api_key)]
        if twice:  # REST cannot send it twice; gRPC refuses the ambiguity as a bad key
            metadata.append(("x-api-key", w.served.keys.admin))
        return Rest("/v1/coupons", json=body, headers={"X-API-Key": api_key}), Rpc(
            "Issue", issue_message(body), metadata
        )

    return build


def _issue_raw(change: Callable[[dict[str, Any]], None]) -> Case:
    def build(w: World) -> tuple[Rest, Rpc]:
        body = issue_body(w.holder)
        change(body)
        return Rest("/v1/coupons", json=body, headers=w.api("admin")), Rpc(
            "Issue", issue_message(body), w.served.key("admin")
        )

    return build


def _verify(key: str | None, *, coupon: str | None = None, **fields: Any) -> Case:
    def build(w: World) -> tuple[Rest, Rpc]:
        body: dict[str, Any] = {"coupon": w.coupon if coupon is None else coupon}
        body.update({"audience": "orders", **fields})
        headers = w.api(key) if key else {}
        return Rest("/v1/coupons/verify", json=body, headers=headers), Rpc(
            "Verify", VerifyRequest(**body), _metadata(headers)
        )

    return build


def _introspect(key: str | None, token: str) -> Case:
    def build(w: World) -> tuple[Rest, Rpc]:
        headers = w.api(key) if key else {}
        return Rest("/v1/coupons/introspect", form={"token": token}, headers=headers), Rpc(
            "Introspect", IntrospectRequest(token=token), _metadata(headers)
        )

    return build


def _revoke(key: str | None, kind: str, value: str, reason: str = "parity") -> Case:
    def build(w: World) -> tuple[Rest, Rpc]:
        body = {"kind": kind, "value": value, "reason": reason}
        headers = w.api(key) if key else {}
        return Rest("/v1/revocations", json=body, headers=headers), Rpc(
            "Revoke", RevokeRequest(**body), _metadata(headers)
        )

    return build


def _attenuate(
    *, auth: str | None = "dpop", parent: str | None = None, proof: bool = True, **fields: Any
) -> Case:
    """Attenuate ``parent`` (the world's coupon) with a fresh proof for each transport."""

    def build(w: World) -> tuple[Rest, Rpc]:
        token = w.coupon if parent is None else parent
        delegate = Holder()
        body: dict[str, Any] = {"subject": "bob", "binding": {"jkt": delegate.jkt}, **fields}
        msg = AttenuateRequest(subject=body["subject"], binding=Binding(jkt=delegate.jkt))
        for name in ("resource", "purpose", "ttl"):
            if name in fields:
                setattr(msg, name, fields[name])
        for name in ("audience", "actions"):
            getattr(msg, name).extend(fields.get(name, []))
        rest_md = dict(dpop_metadata(w.holder, token, w.served.rest_attenuate_htu))
        grpc_md = list(dpop_metadata(w.holder, token, w.served.attenuate_htu))
        headers = {"Authorization": rest_md["authorization"], "DPoP": rest_md["dpop"]}
        if auth is None:
            headers, grpc_md = {}, []
        elif auth != "dpop":
            headers["Authorization"] = auth
            grpc_md[0] = ("authorization", auth)
        if not proof:
            del headers["DPoP"]
            grpc_md = grpc_md[:1]
        return Rest("/v1/coupons/attenuate", json=body, headers=headers), Rpc(
            "Attenuate", msg, grpc_md
        )

    return build


CASES: Final[dict[str, Case]] = {
    # Issue: the caller, then the body.
    "issue-no-key": _issue(None),
    "issue-unknown-key": _issue_with("cpk_0000000000000000_" + "A" * 43),
    "issue-malformed-key": _issue_with("not-a-key"),
    "issue-duplicate-key": _issue_with("not-a-key", twice=True),
    "issue-verifier-role": _issue("verifier"),
    "issue-other-tenant": _issue("tenant_issuer", tenant="tenant-a"),
    "issue-own-tenant": _issue("tenant_issuer", tenant="tenant-b"),
    "issue-ok": _issue("admin"),
    "issue-empty-subject": _issue("admin", subject=""),
    "issue-control-character": _issue("admin", subject="ali\x00ce"),
    "issue-long-subject": _issue("admin", subject="s" * 257),
    "issue-no-audience": _issue("admin", audience=()),
    "issue-17-audiences": _issue("admin", audience=[f"a{i}" for i in range(17)]),
    "issue-ttl-zero": _issue("admin", ttl=0),
    "issue-ttl-too-long": _issue("admin", ttl=86_401),
    "issue-bad-resource": _issue("admin", resource="orders/../secrets"),
    "issue-wildcard-in-segment": _issue("admin", resource="orders/1*3"),
    "issue-bad-jkt": _issue_raw(lambda b: b.update(binding={"jkt": "short"})),
    "issue-empty-binding": _issue_raw(lambda b: b.update(binding={})),
    "issue-no-binding": _issue_raw(lambda b: b.pop("binding")),
    "issue-x5t-binding": _issue_raw(lambda b: b.update(binding={"x5t#S256": "A" * 43})),
    # Verify: decisions and errors.
    "verify-no-key": _verify(None),
    "verify-auditor-role": _verify("auditor"),
    "verify-missing-proof": _verify("verifier", resource="orders/123/items", action="read"),
    "verify-garbage": _verify("verifier", coupon="not.a.coupon"),
    "verify-empty-coupon": _verify("verifier", coupon=""),
    "verify-wrong-audience": _verify("verifier", audience="billing"),
    "verify-proof-without-htu": _verify("verifier", dpop="x.y.z", htm="GET"),
    "verify-bad-thumbprint": _verify("verifier", certificate_thumbprint="nope"),
    # Introspect.
    "introspect-no-key": _introspect(None, "x"),
    "introspect-garbage": _introspect("verifier", "garbage"),
    "introspect-empty": _introspect("verifier", ""),
    "introspect-too-large": _introspect("verifier", "t" * 32_769),
    "introspect-active": lambda w: _introspect("auditor", w.coupon)(w),
    # Revoke.
    "revoke-no-key": _revoke(None, "jti", "x"),
    "revoke-verifier-role": _revoke("verifier", "jti", "x"),
    "revoke-unknown-kind": _revoke("admin", "everything", "x"),
    "revoke-empty-reason": _revoke("admin", "jti", "x", reason=""),
    "revoke-unknown-jti-by-tenant": _revoke("tenant_issuer", "jti", "no-such-jti"),
    "revoke-subject-by-tenant": _revoke("tenant_issuer", "subject", "alice"),
    # Attenuate: proof of possession first (after the body).
    "attenuate-no-authorization": _attenuate(auth=None),
    "attenuate-bearer": _attenuate(auth="Bearer abc"),
    "attenuate-no-proof": _attenuate(proof=False),
    "attenuate-garbage-parent": _attenuate(parent="not.a.coupon"),
    "attenuate-ttl-zero": _attenuate(ttl=0),
    "attenuate-widens-resource": _attenuate(resource="orders/**"),
    "attenuate-widens-actions": _attenuate(actions=["read", "write"]),
    "attenuate-ok": _attenuate(resource="orders/123/items"),
}


@pytest.fixture(scope="module")
def world(engine: str, module_launcher: Launcher) -> Iterator[World]:
    """One Authority serving both transports, a holder and a coupon of theirs."""
    served = serve_grpc(module_launcher, engine, name=f"{engine}-parity")
    holder = Holder()
    coupon = issue(served.proc, holder)["coupon"]
    yield World(served, holder, coupon)
    served.close()


def _rest(w: World, rest: Rest) -> tuple[int, str | None, dict[str, Any]]:
    response = w.served.proc.anon.post(
        rest.path, json=rest.json, data=rest.form, headers=rest.headers
    )
    body: dict[str, Any] = response.json()
    code = body.get("code") if response.status_code >= 400 or body.get("allow") is False else None
    return response.status_code, code, body


def _grpc(w: World, rpc: Rpc) -> Outcome:
    return call(getattr(w.served.stub, rpc.method), rpc.request, rpc.metadata)


@pytest.mark.parametrize("case", sorted(CASES))
def test_same_answer_over_grpc_and_rest(world: World, case: str) -> None:
    """The same request gets the same code over both transports, at the mapped status."""
    rest, rpc = CASES[case](world)
    status, code, body = _rest(world, rest)
    outcome = _grpc(world, rpc)
    assert status < 500, body
    if status >= 400:
        assert outcome.status == HTTP_TO_GRPC[status], (case, body, outcome.details)
        assert outcome.code == code, (case, body, outcome.details)
        assert outcome.detail is not None
        assert outcome.detail.http_status == status
        assert outcome.detail.title == body["title"]
        assert outcome.details == f"{code}: {outcome.detail.reason}"
        return
    assert outcome.status == grpc.StatusCode.OK, (case, body, outcome.details)
    answer = outcome.answer
    if "allow" in body:  # a decision of Verify
        assert answer.allow == body["allow"]
        assert (answer.code if answer.HasField("code") else None) == code
        assert (answer.step if answer.HasField("step") else None) == body.get("step")
    elif "active" in body:
        assert answer.active == body["active"]
        if body["active"]:
            assert (answer.jti, answer.sub, list(answer.act)) == (
                body["jti"],
                body["sub"],
                body["act"],
            )
    else:
        assert answer.token_type == body["token_type"]
        assert answer.claims.res == body["claims"]["res"]
        assert sorted(answer.claims.act) == sorted(body["claims"]["act"])


def test_table_covers_every_rpc() -> None:
    """The table has cases for each of the five RPCs."""
    methods = {name.split("-", 1)[0] for name in CASES}
    assert methods == {"issue", "verify", "introspect", "revoke", "attenuate"}
