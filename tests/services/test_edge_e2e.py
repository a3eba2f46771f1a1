"""The edge end to end: nginx with ``auth_request`` to ``coupon gateway``, in front of the
example orders service, against a real Authority.

Everything is a real process (:mod:`tests.services.edge`): nginx runs the shipped
``deploy/nginx/coupon-edge.conf``, rendered with this run's ports. The same scenarios run
through the gateway as the front, and ``examples/orders/client.py --json`` runs against both.

nginx is required: without it the module skips, except under ``CI=true``, where it fails.
"""

from __future__ import annotations

import json
import os
import secrets
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any, Final

import httpx
import pytest
from tests.services.edge import (
    ROOT,
    EdgeStack,
    find_nginx,
    start_edge,
    start_nginx,
    start_service,
)
from tests.services.harness import AuthorityProcess, Holder, Launcher, add_api_key, issue, unique

from coupon.sdk import DPoPAuth

CLIENT: Final = ROOT / "examples" / "orders" / "client.py"
PROBLEM: Final = "application/problem+json"
#: The gateway's max_staleness in the Authority-down test: small, so it fails closed soon.
SHORT_STALENESS: Final = 2.0


def _in_ci() -> bool:
    return os.environ.get("CI", "").lower() == "true"


@pytest.fixture(scope="module")
def nginx_bin() -> str:
    """The nginx binary with the auth_request module (skip without it, fail under CI)."""
    found = find_nginx()
    problem = "nginx is not installed (apt-get install nginx-light)"
    if found is not None:
        built = subprocess.run([found, "-V"], capture_output=True, text=True, check=False)
        if "--with-http_auth_request_module" in built.stderr:
            return found
        problem = f"{found} has no auth_request module"
    if _in_ci():
        pytest.fail(f"{problem}; CI=true requires it")
    pytest.skip(problem)


@pytest.fixture(scope="module")
def edge_authority(nginx_bin: str, module_launcher: Launcher) -> Iterator[AuthorityProcess]:
    """An embedded Authority for the module's edge."""
    proc = module_launcher.start("embedded", name="edge-authority")
    yield proc
    proc.close()


@pytest.fixture(scope="module")
def edge(
    nginx_bin: str, edge_authority: AuthorityProcess, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[EdgeStack]:
    """The service, the gateway (with a verifier API key of its own) and nginx."""
    key = add_api_key(edge_authority.database_url, ["verifier"])
    with start_edge(
        tmp_path_factory.mktemp("edge"),
        authority=edge_authority.base_url,
        api_key=key,
        nginx=nginx_bin,
    ) as stack:
        yield stack


@dataclass
class Caller:
    """A holder with a coupon for ``orders/123`` (read and refund, purpose billing)."""

    tenant: str
    subject: str
    jti: str
    client: httpx.Client


@pytest.fixture
def callers() -> Iterator[list[Caller]]:
    """Closes the clients of the callers a test made."""
    made: list[Caller] = []
    yield made
    for caller in made:
        caller.client.close()


def new_caller(authority: AuthorityProcess, base_url: str, made: list[Caller]) -> Caller:
    """A fresh holder, tenant and coupon; its client signs a DPoP proof per request."""
    holder = Holder()
    tenant, subject = unique("tenant"), unique("alice")
    answer = issue(
        authority, holder, subject=subject, tenant=tenant, resource="orders/123",
        actions=("read", "refund"), purpose="billing", audience=("orders",), ttl=300,
    )  # fmt: skip
    auth = DPoPAuth(holder.key, answer["coupon"])
    client = httpx.Client(base_url=base_url, auth=auth, timeout=10.0)
    made.append(Caller(tenant, subject, answer["jti"], client))
    return made[-1]


def expect(response: httpx.Response, status: int, stack: EdgeStack) -> None:
    """Assert the status; on failure show the exchange and every process's logs."""
    assert response.status_code == status, (
        f"{response.request.method} {response.request.url} -> {response.status_code}, "
        f"wanted {status}\n{dict(response.headers)}\n{response.text[:600]}\n{stack.logs()}"
    )


def problem_of(response: httpx.Response) -> dict[str, Any]:
    """The problem+json body of a refusal, checked against the response."""
    assert response.headers["content-type"] == PROBLEM, response.headers
    body: dict[str, Any] = response.json()
    assert body["status"] == response.status_code
    assert body["request_id"] == response.headers["x-request-id"]
    return body


class TestThroughNginx:
    """Coupon checks and tenant limits decided by the gateway, enforced by nginx."""

    def test_allowed(
        self, edge: EdgeStack, edge_authority: AuthorityProcess, callers: list[Caller]
    ) -> None:
        """A coupon with a DPoP proof reaches the service, which sees the verified caller."""
        caller = new_caller(edge_authority, edge.nginx_url, callers)
        rid = unique("edge-rid")
        response = caller.client.get("/orders/123", headers={"X-Request-Id": rid})
        expect(response, 200, edge)
        assert response.json() == {
            "order": "123",
            "status": "shipped",
            "caller": {"subject": caller.subject, "tenant": caller.tenant},
        }
        assert response.headers["x-request-id"] == rid
        assert response.headers["ratelimit-policy"].startswith('"tenant";q=')
        assert response.headers["ratelimit"].startswith('"tenant";r=')
        # The query is not part of the DPoP htu; HEAD is checked as GET is.
        expect(caller.client.get("/orders/123", params={"expand": "items"}), 200, edge)
        expect(caller.client.head("/orders/123"), 200, edge)
        expect(httpx.head(f"{edge.nginx_url}/orders/123"), 401, edge)

    def test_no_coupon_is_401_with_the_dpop_challenge(self, edge: EdgeStack) -> None:
        """Without a coupon the answer is the check's 401 and its DPoP challenge."""
        response = httpx.get(f"{edge.nginx_url}/orders/123")
        expect(response, 401, edge)
        assert response.headers["www-authenticate"].startswith("DPoP ")
        assert response.headers["cache-control"] == "no-store"
        assert problem_of(response)["title"] == "Unauthorized"

    def test_wider_request_is_403_insufficient_scope(
        self, edge: EdgeStack, edge_authority: AuthorityProcess, callers: list[Caller]
    ) -> None:
        """A coupon for orders/123 does not read orders/456; the gateway logs the request id."""
        caller = new_caller(edge_authority, edge.nginx_url, callers)
        rid = unique("edge-rid")
        response = caller.client.get("/orders/456", headers={"X-Request-Id": rid})
        expect(response, 403, edge)
        assert 'error="insufficient_scope"' in response.headers["www-authenticate"]
        assert problem_of(response)["error"] == "insufficient_scope"
        assert response.headers["x-request-id"] == rid
        gateway_log = edge.proc("gateway").output()
        assert any(rid in line and "coupon_denied" in line for line in gateway_log.splitlines())

    def test_tenant_throttled_is_429_with_retry_after(
        self, edge: EdgeStack, edge_authority: AuthorityProcess, callers: list[Caller]
    ) -> None:
        """Past the tenant's hard limit the real 429 comes back with Retry-After and RateLimit;
        after Retry-After seconds the tenant is admitted again, flagged over its soft limit."""
        caller = new_caller(edge_authority, edge.nginx_url, callers)
        seen: list[httpx.Response] = []
        for _ in range(30):
            seen.append(caller.client.get("/orders/123"))
            if seen[-1].status_code != 200:
                break
        refused = seen[-1]
        expect(refused, 429, edge)
        assert len(seen) > 1, "the first request of a fresh tenant was refused"
        assert problem_of(refused)["error"] == "slow_down"
        retry_after = int(refused.headers["retry-after"])
        assert retry_after >= 1
        assert refused.headers["ratelimit"].startswith('"tenant";r=0;t=')
        assert refused.headers["ratelimit-policy"].startswith('"tenant";q=')
        time.sleep(retry_after)
        # The hard limit has recovered, the slower soft one not yet: admitted, but flagged.
        again = [caller.client.get("/orders/123") for _ in range(4)]
        expect(again[0], 200, edge)
        flagged = [r for r in again if r.headers.get("x-ratelimit-soft") == "exceeded"]
        assert flagged, [(r.status_code, dict(r.headers)) for r in again]
        expect(flagged[0], 200, edge)

    def test_retried_post_is_replayed(
        self, edge: EdgeStack, edge_authority: AuthorityProcess, callers: list[Caller]
    ) -> None:
        """A POST retried with the same Idempotency-Key gets the first answer, replayed."""
        caller = new_caller(edge_authority, edge.nginx_url, callers)
        key = {"Idempotency-Key": f'"{secrets.token_hex(8)}"'}
        first = caller.client.post("/orders/123/refunds", json={"amount": 5}, headers=key)
        again = caller.client.post("/orders/123/refunds", json={"amount": 5}, headers=key)
        expect(first, 201, edge)
        expect(again, 201, edge)
        assert again.json()["refund"] == first.json()["refund"]
        assert again.json()["caller"]["tenant"] == caller.tenant
        assert "idempotent-replayed" not in first.headers
        assert again.headers["idempotent-replayed"] == "true"

    def test_forged_fields_do_not_reach_the_service(
        self, edge: EdgeStack, edge_authority: AuthorityProcess, callers: list[Caller]
    ) -> None:
        """Client-sent X-Coupon-*, X-Original-* and X-Forwarded-Proto are replaced by nginx."""
        caller = new_caller(edge_authority, edge.nginx_url, callers)
        forged = {
            "X-Coupon-Tenant": "evil-corp",
            "X-Coupon-Subject": "mallory",
            "X-Coupon-Id": "forged",
            "X-Forwarded-Proto": "https",  # would change the DPoP htu if it reached the check
        }
        response = caller.client.get("/orders/123", headers=forged)
        expect(response, 200, edge)
        assert response.json()["caller"] == {"subject": caller.subject, "tenant": caller.tenant}
        # The check decides on the request nginx received, not on what the client claims.
        wider = caller.client.get(
            "/orders/456", headers={"X-Original-URI": "/orders/123", "X-Original-Method": "GET"}
        )
        expect(wider, 403, edge)
        # Without a coupon, forged fields change nothing either.
        anonymous = httpx.get(f"{edge.nginx_url}/orders/123", headers=forged)
        expect(anonymous, 401, edge)

    def test_replayed_proof_is_401(self, edge: EdgeStack, edge_authority: AuthorityProcess) -> None:
        """The check remembers DPoP proofs: the same proof sent twice is refused the second time."""
        holder = Holder()
        coupon = issue(
            edge_authority, holder, tenant=unique("tenant"), resource="orders/123",
            actions=("read",), purpose="billing", audience=("orders",),
        )["coupon"]  # fmt: skip
        url = f"{edge.nginx_url}/orders/123"
        headers = {"Authorization": f"DPoP {coupon}", "DPoP": holder.proof(uri=url, token=coupon)}
        expect(httpx.get(url, headers=headers), 200, edge)
        replayed = httpx.get(url, headers=headers)
        expect(replayed, 401, edge)
        assert 'error="invalid_dpop_proof"' in replayed.headers["www-authenticate"]

    def test_route_body_rules_apply_behind_nginx(
        self, edge: EdgeStack, edge_authority: AuthorityProcess, callers: list[Caller]
    ) -> None:
        """A refund body over the route's max_body, or not JSON, is refused as at the gateway."""
        caller = new_caller(edge_authority, edge.nginx_url, callers)
        big = b'{"amount": 5, "pad": "' + b"x" * 5000 + b'"}'
        json_type = {"Content-Type": "application/json"}
        expect(caller.client.post("/orders/123/refunds", content=big, headers=json_type), 413, edge)
        text_type = {"Content-Type": "text/plain"}
        plain = caller.client.post("/orders/123/refunds", content=b"{}", headers=text_type)
        expect(plain, 415, edge)

    @pytest.mark.parametrize(
        ("method", "path", "status"),
        [
            ("GET", "/nowhere", 404),
            ("DELETE", "/orders/123", 405),
            ("GET", "/orders/1%2F2", 400),
            ("GET", "/_coupon/check", 404),  # internal: only nginx's subrequests reach it
        ],
    )
    def test_refusals_keep_their_status(
        self, edge: EdgeStack, method: str, path: str, status: int
    ) -> None:
        """The gateway's route table refuses with the real status, as problem+json."""
        response = httpx.request(method, f"{edge.nginx_url}{path}")
        expect(response, status, edge)
        if path != "/_coupon/check":
            assert problem_of(response)["error"] == "invalid_request"

    def test_request_id_is_made_when_missing_or_malformed(self, edge: EdgeStack) -> None:
        """nginx makes a request id unless the client's is well formed."""
        made = httpx.get(f"{edge.nginx_url}/health")
        expect(made, 200, edge)
        assert len(made.headers["x-request-id"]) == 32
        bad = httpx.get(f"{edge.nginx_url}/health", headers={"X-Request-Id": "no spaces!"})
        assert bad.headers["x-request-id"] not in ("no spaces!", made.headers["x-request-id"])

    def test_body_over_the_nginx_limit_is_413(self, edge: EdgeStack) -> None:
        """nginx bounds bodies itself (the check never sees them), answering problem+json."""
        response = httpx.post(
            f"{edge.nginx_url}/orders/123/refunds",
            content=b"x" * (1024 * 1024 + 1),
            headers={"Content-Type": "application/json"},
        )
        expect(response, 413, edge)
        problem_of(response)


class _Echo(BaseHTTPRequestHandler):
    """Answers every request with the header fields it received, as JSON."""

    protocol_version = "HTTP/1.1"  # keep-alive, as nginx's upstream block expects

    def do_GET(self) -> None:
        body = json.dumps([[k.lower(), v] for k, v in self.headers.items()]).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.send_header("X-Request-Id", "from-the-upstream")
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: Any) -> None:
        """Quiet."""


@dataclass
class EchoEdge:
    """nginx (the shipped configuration) asking the module's gateway, in front of an echo."""

    url: str
    stack: EdgeStack


@pytest.fixture(scope="module")
def echo_edge(
    nginx_bin: str, edge: EdgeStack, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[EchoEdge]:
    """A second nginx whose upstream shows what it was sent."""
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Echo)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    upstream = f"127.0.0.1:{server.server_address[1]}"
    gateway = edge.gateway_url.split("://", 1)[1]
    root = tmp_path_factory.mktemp("echo-edge")
    try:
        proc, url = start_nginx(root, gateway=gateway, upstream=upstream, nginx=nginx_bin)
        try:
            yield EchoEdge(url, edge)
        finally:
            proc.terminate()
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)


def fields_seen(response: httpx.Response) -> dict[str, list[str]]:
    """The header fields the echo upstream received, by lower-case name."""
    out: dict[str, list[str]] = {}
    for name, value in response.json():
        out.setdefault(name, []).append(value)
    return out


class TestWhatTheServiceReceives:
    """What nginx sends the service: only the gateway's X-Coupon-*, and the request id."""

    def test_verified_fields_replace_forged_ones(
        self, echo_edge: EchoEdge, edge_authority: AuthorityProcess, callers: list[Caller]
    ) -> None:
        """The service gets the verified subject, tenant and coupon id, once each, and the
        client's request id; no X-Coupon-Status and no forged values."""
        caller = new_caller(edge_authority, echo_edge.url, callers)
        rid = unique("edge-rid")
        forged = {
            "X-Coupon-Tenant": "evil-corp",
            "X-Coupon-Subject": "mallory",
            "X-Coupon-Id": "forged",
            "X-Coupon-Status": "204",
            "X-Forwarded-For": "10.6.6.6",
            "X-Request-Id": rid,
        }
        response = caller.client.get("/orders/123", headers=forged)
        expect(response, 200, echo_edge.stack)
        seen = fields_seen(response)
        assert seen["x-coupon-tenant"] == [caller.tenant]
        assert seen["x-coupon-subject"] == [caller.subject]
        assert seen["x-coupon-id"] == [caller.jti]
        assert "x-coupon-status" not in seen
        assert seen["x-request-id"] == [rid]
        assert seen["x-forwarded-for"] == ["127.0.0.1"]
        assert seen["x-forwarded-proto"] == ["http"]
        assert seen["host"] == ["127.0.0.1"]
        assert seen["x-forwarded-host"] == [echo_edge.url.split("://", 1)[1]]
        assert response.headers["x-request-id"] == rid  # the edge's, not the upstream's

    def test_public_route_carries_no_coupon_fields(self, echo_edge: EchoEdge) -> None:
        """On a public route nginx removes every X-Coupon-* the client sent."""
        forged = {"X-Coupon-Tenant": "evil-corp", "X-Coupon-Subject": "mallory"}
        response = httpx.get(f"{echo_edge.url}/health", headers=forged)
        expect(response, 200, echo_edge.stack)
        seen = fields_seen(response)
        assert not [name for name in seen if name.startswith("x-coupon-")], seen
        assert len(seen["x-request-id"][0]) == 32


class TestGatewayAsFront:
    """The same decisions with the gateway itself as the front."""

    def test_allowed_denied_and_forged(
        self, edge: EdgeStack, edge_authority: AuthorityProcess, callers: list[Caller]
    ) -> None:
        """Allowed with the verified caller, 403 when wider, 401 without a coupon."""
        caller = new_caller(edge_authority, edge.gateway_url, callers)
        allowed = caller.client.get("/orders/123", headers={"X-Coupon-Tenant": "evil-corp"})
        expect(allowed, 200, edge)
        assert allowed.json()["caller"] == {"subject": caller.subject, "tenant": caller.tenant}
        expect(caller.client.get("/orders/456"), 403, edge)
        anonymous = httpx.get(f"{edge.gateway_url}/orders/123")
        expect(anonymous, 401, edge)
        assert anonymous.headers["www-authenticate"].startswith("DPoP ")


class TestAuthorityDown:
    """Without the Authority the edge fails closed: 503 with Retry-After, never 401."""

    def test_503_never_401(
        self,
        nginx_bin: str,
        launcher: Launcher,
        edge: EdgeStack,
        callers: list[Caller],
        tmp_path: Path,
    ) -> None:
        """Once the revocation state is older than max_staleness both fronts answer 503; with
        the gateway gone too, nginx still answers 503."""
        authority = launcher.start("embedded", name="doomed")
        key = add_api_key(authority.database_url, ["verifier"])
        with start_edge(
            tmp_path / "edge",
            authority=authority.base_url,
            api_key=key,
            nginx=nginx_bin,
            max_staleness=SHORT_STALENESS,
            service_url=edge.service_url,
        ) as stack:
            caller = new_caller(authority, stack.nginx_url, callers)
            direct = new_caller(authority, stack.gateway_url, callers)
            expect(caller.client.get("/orders/123"), 200, stack)
            authority.terminate()

            statuses: list[int] = []
            deadline = time.monotonic() + SHORT_STALENESS + 10
            response = caller.client.get("/orders/123")
            while response.status_code == 200 and time.monotonic() < deadline:
                statuses.append(response.status_code)
                time.sleep(0.3)  # under the tenant's soft limit
                response = caller.client.get("/orders/123")
            expect(response, 503, stack)
            assert set(statuses) <= {200}, statuses
            assert int(response.headers["retry-after"]) >= 1
            assert problem_of(response)["error"] == "temporarily_unavailable"

            at_gateway = direct.client.get("/orders/123")
            expect(at_gateway, 503, stack)
            assert int(at_gateway.headers["retry-after"]) >= 1
            expect(httpx.get(f"{stack.nginx_url}/health"), 200, stack)  # public: still served

            stack.proc("gateway").terminate()
            no_check = caller.client.get("/orders/123")
            expect(no_check, 503, stack)
            assert no_check.headers["retry-after"] == "1"
            problem_of(no_check)


def run_client(url: str, authority: AuthorityProcess, stack: EdgeStack) -> dict[str, Any]:
    """``examples/orders/client.py URL --json``; waits out the tenant's throttle afterwards."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("COUPON_")}
    env["COUPON_API_KEY"] = authority.admin_key
    argv = [sys.executable, str(CLIENT), url, "--authority", authority.base_url, "--json"]
    done = subprocess.run(
        [*argv, "--burst", "30"], capture_output=True, text=True, timeout=60, env=env, cwd=ROOT
    )
    assert done.returncode == 0, f"{done.stdout}\n{done.stderr}\n{stack.logs()}"
    seen: dict[str, Any] = json.loads(done.stdout)
    # Both runs use the example's tenant: let its limit recover before the next one.
    time.sleep(float(seen["throttled"].get("retry_after") or 1))
    return seen


@pytest.fixture(scope="module")
def protected_service(
    edge: EdgeStack, edge_authority: AuthorityProcess, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[str]:
    """The example service checking coupons itself with the middleware, no edge in front."""
    key = add_api_key(edge_authority.database_url, ["verifier"])
    proc, url = start_service(
        tmp_path_factory.mktemp("protected"),
        authority=edge_authority.base_url,
        api_key=key,
        name="protected-service",
    )
    try:
        yield url
    finally:
        proc.terminate()


class TestExampleClient:
    """``examples/orders/client.py`` shows allowed, denied, replayed and throttled."""

    @pytest.mark.parametrize("front", ["nginx", "gateway", "middleware"])
    def test_client_json(
        self,
        edge: EdgeStack,
        edge_authority: AuthorityProcess,
        front: str,
        request: pytest.FixtureRequest,
    ) -> None:
        """Each of the four steps sees what the example promises, behind every front."""
        if front == "middleware":
            url = request.getfixturevalue("protected_service")
        else:
            url = edge.nginx_url if front == "nginx" else edge.gateway_url
        seen = run_client(url, edge_authority, edge)
        shown = json.dumps(seen, indent=1)
        assert seen["allowed"]["status"] == 200, shown
        assert seen["allowed"]["body"]["caller"] == {"subject": "alice", "tenant": "acme"}
        assert seen["denied"]["status"] == 403, shown
        assert 'error="insufficient_scope"' in seen["denied"]["www_authenticate"]
        first, second = seen["replayed"]
        assert (first["status"], second["status"]) == (201, 201), shown
        assert first["refund"] == second["refund"]
        assert (first["replayed"], second["replayed"]) == (False, True)
        throttled = seen["throttled"]
        assert throttled["status"] == 429, shown
        assert int(throttled["retry_after"]) >= 1
        assert throttled["ratelimit"].startswith('"tenant";r=0')
        assert throttled["policy"].startswith('"tenant";q=')


class TestDemoScript:
    """``examples/orders/demo.sh``: the README's commands, run as they are written."""

    def test_both_protections_show_the_four_outcomes(
        self, nginx_bin: str, edge_authority: AuthorityProcess, tmp_path: Path
    ) -> None:
        bin_dir = Path(sys.executable).parent
        env = {k: v for k, v in os.environ.items() if not k.startswith("COUPON_")}
        env["PATH"] = os.pathsep.join([str(bin_dir), str(Path(nginx_bin).parent), env["PATH"]])
        done = subprocess.run(
            ["bash", str(ROOT / "examples" / "orders" / "demo.sh"), edge_authority.base_url,
             edge_authority.admin_key, str(tmp_path)],
            env=env, capture_output=True, text=True, timeout=180, check=False, cwd=ROOT,
        )  # fmt: skip
        shown = done.stdout + done.stderr
        assert done.returncode == 0, shown
        assert "SKIP" not in shown
        for outcome in (
            "allowed:   GET /orders/123 -> 200",
            'denied:    GET /orders/456 -> 403  DPoP error="insufficient_scope"',
            "(Idempotent-Replayed: True)",
            "throttled: 429 after",
        ):
            assert done.stdout.count(outcome) == 2, shown  # once per protection
