"""mTLS end to end: ``coupon up`` serving TLS, callers named by their certificates, nginx in
front forwarding them, and certificate-bound coupons (RFC 8705).

Every piece is real: ``coupon up`` subprocesses (uvicorn on uvloop with the TLS protocol),
httpx clients with the certificates of tests/mtls_pki.py, nginx running the shipped
``deploy/nginx/coupon-authority-mtls.conf``. Three Authorities:

- ``required``: no handshake without a certificate of the client CA;
- ``optional``: a certificate or another credential (an API key); files reloaded in 0.5 s;
- ``proxied``: plain HTTP behind nginx, believing the forwarded field from 127.0.0.1 only.

Callers from 127.0.0.2 are "elsewhere": an untrusted peer on the same machine.
nginx is required: without it the nginx tests skip, except under ``CI=true``.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any, Final
from urllib.parse import quote

import httpx
import pytest
from cryptography import x509
from cryptography.hazmat.primitives.serialization import Encoding
from tests.mtls_pki import Pki, Written, client_context, now
from tests.services.edge import Proc, find_nginx, free_port
from tests.services.harness import AuthorityProcess, Launcher

from coupon.authority._pki import renew

ROOT: Final = Path(__file__).resolve().parents[2]
NGINX_CONF: Final = ROOT / "deploy" / "nginx" / "coupon-authority-mtls.conf"
IDENTITIES: Final = {
    "uri:spiffe://example.org/orders": {"roles": ["issuer"], "tenant": "acme"},
    "dns:billing.internal": {"roles": ["verifier", "auditor"]},
    "cn:legacy-batch": {"roles": ["admin"]},
}
ELSEWHERE: Final = "127.0.0.2"


def issue_body(binding: dict[str, str], *, tenant: str = "acme") -> dict[str, Any]:
    return {
        "subject": "orders-worker",
        "audience": ["payments"],
        "tenant": tenant,
        "resource": "payments/**",
        "actions": ["charge"],
        "purpose": "checkout",
        "ttl": 120,
        "binding": binding,
    }


def verify_body(coupon: str, thumbprint: str | None) -> dict[str, Any]:
    body: dict[str, Any] = {
        "coupon": coupon,
        "audience": "payments",
        "resource": "payments/42",
        "action": "charge",
        "purpose": "checkout",
    }
    if thumbprint is not None:
        body["certificate_thumbprint"] = thumbprint
    return body


def code(response: httpx.Response) -> str:
    document: dict[str, Any] = response.json()
    return str(document.get("code"))


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Pki:
    return Pki(tmp_path_factory.mktemp("pki"))


def tls_env(pki: Pki, mode: str, *, cert: Written | None = None) -> dict[str, str]:
    served = cert or pki.server
    return {
        "COUPON_TLS_CERT": str(served.cert),
        "COUPON_TLS_KEY": str(served.key),
        "COUPON_TLS_CLIENT_CA": str(pki.ca.cert),
        "COUPON_TLS_CLIENT_AUTH": mode,
        "COUPON_MTLS_IDENTITIES": json.dumps(IDENTITIES),
    }


@pytest.fixture(scope="module")
def required(pki: Pki, module_launcher: Launcher) -> Iterator[AuthorityProcess]:
    """An Authority that requires client certificates (its own clients present billing's)."""
    proc = module_launcher.start(
        "embedded",
        name="mtls-required",
        extra=tls_env(pki, "required"),
        tls=client_context(pki, "billing"),
    )
    yield proc
    proc.close()


@pytest.fixture(scope="module")
def optional_server(pki: Pki) -> Written:
    """The optional Authority's own server certificate (rotated by a test)."""
    return pki.write(
        "optional-server", renew(pki.server.credential.certificate, pki.ca.credential, now=now())
    )


@pytest.fixture(scope="module")
def optional(
    pki: Pki, optional_server: Written, module_launcher: Launcher
) -> Iterator[AuthorityProcess]:
    """An Authority where certificates are optional, reloading its files every 0.5 s."""
    env = tls_env(pki, "optional", cert=optional_server) | {"COUPON_TLS_RELOAD_INTERVAL": "0.5"}
    proc = module_launcher.start(
        "embedded", name="mtls-optional", extra=env, tls=client_context(pki)
    )
    yield proc
    proc.close()


def client(
    proc: AuthorityProcess,
    pki: Pki,
    name: str | None,
    *,
    local: str = "127.0.0.1",
    base: str | None = None,
    **headers: str,
) -> httpx.Client:
    """A client of ``proc`` presenting ``name``'s certificate from address ``local``."""
    transport = httpx.HTTPTransport(verify=client_context(pki, name), local_address=local)
    return httpx.Client(
        base_url=base or proc.base_url, transport=transport, headers=headers, timeout=10
    )


class TestRequired:
    @pytest.mark.parametrize("name", [None, "rogue", "expired", "server_only"])
    def test_no_handshake(self, required: AuthorityProcess, pki: Pki, name: str | None) -> None:
        """No certificate, another CA's, an expired one, a server one: the connection fails."""
        with client(required, pki, name) as c, pytest.raises(httpx.TransportError):
            c.get("/healthz")

    def test_mapped_issuer_gets_a_certificate_bound_coupon(
        self, required: AuthorityProcess, pki: Pki
    ) -> None:
        """The orders service gets a coupon bound to its own certificate ("self")."""
        with client(required, pki, "orders") as c:
            response = c.post("/v1/coupons", json=issue_body({"x5t#S256": "self"}))
        assert response.status_code == 201, response.text
        answer = response.json()
        assert answer["token_type"] == "mTLS"
        assert answer["claims"]["cnf"] == {"x5t#S256": pki.clients["orders"].thumbprint}

    def test_roles_come_from_the_mapping(self, required: AuthorityProcess, pki: Pki) -> None:
        """billing is a verifier and auditor: it reads revocations and may not issue."""
        with client(required, pki, "billing") as c:
            assert c.get("/v1/revocations").status_code == 200
            refused = c.post("/v1/coupons", json=issue_body({"x5t#S256": "self"}))
        assert refused.status_code == 403
        assert code(refused) == "CPN-AUTH-003"

    def test_tenant_comes_from_the_mapping(self, required: AuthorityProcess, pki: Pki) -> None:
        """orders is bound to tenant acme."""
        with client(required, pki, "orders") as c:
            refused = c.post("/v1/coupons", json=issue_body({"x5t#S256": "self"}, tenant="other"))
        assert (refused.status_code, code(refused)) == (403, "CPN-AUTH-004")

    def test_unmapped_identity(self, required: AuthorityProcess, pki: Pki) -> None:
        """A good certificate whose identity nobody mapped: 403 CPN-MTLS-004."""
        with client(required, pki, "stranger") as c:
            refused = c.get("/v1/revocations")
        assert (refused.status_code, code(refused)) == (403, "CPN-MTLS-004")


class TestOptional:
    def test_no_certificate_falls_back_to_api_keys(
        self, optional: AuthorityProcess, pki: Pki
    ) -> None:
        """Without a certificate: 401 alone, and the admin API key still works."""
        with client(optional, pki, None) as c:
            assert code(c.get("/v1/revocations")) == "CPN-AUTH-001"
            assert (
                c.get("/v1/revocations", headers={"X-API-Key": optional.admin_key}).status_code
                == 200
            )

    def test_certificate_bound_coupon_round_trip(
        self, optional: AuthorityProcess, pki: Pki
    ) -> None:
        """Issued over mTLS; verified with its certificate's thumbprint, refused with another
        or none (RFC 8705 §3); introspection shows the binding."""
        orders = pki.clients["orders"].thumbprint
        with client(optional, pki, "orders") as c:
            issued = c.post("/v1/coupons", json=issue_body({"x5t#S256": orders}))
        assert issued.status_code == 201, issued.text
        coupon = issued.json()["coupon"]
        with client(optional, pki, "billing") as verifier:
            right = verifier.post("/v1/coupons/verify", json=verify_body(coupon, orders)).json()
            other = verifier.post(
                "/v1/coupons/verify", json=verify_body(coupon, pki.clients["billing"].thumbprint)
            ).json()
            missing = verifier.post("/v1/coupons/verify", json=verify_body(coupon, None)).json()
            introspected = verifier.post("/v1/coupons/introspect", data={"token": coupon}).json()
        assert right["allow"] is True
        assert (other["allow"], other["code"]) == (False, "CPN-POP-013")
        assert (missing["allow"], missing["code"]) == (False, "CPN-POP-013")
        assert introspected["cnf"] == {"x5t#S256": orders}

    def test_binding_another_certificate_needs_admin(
        self, optional: AuthorityProcess, pki: Pki
    ) -> None:
        """orders may not bind billing's certificate; the admin may; "self" needs a certificate."""
        billing = pki.clients["billing"].thumbprint
        with client(optional, pki, "orders") as c:
            refused = c.post("/v1/coupons", json=issue_body({"x5t#S256": billing}))
        assert (refused.status_code, code(refused)) == (403, "CPN-MTLS-005")
        admin = optional.client
        assert admin.post("/v1/coupons", json=issue_body({"x5t#S256": billing})).status_code == 201
        no_cert = admin.post("/v1/coupons", json=issue_body({"x5t#S256": "self"}))
        assert (no_cert.status_code, code(no_cert)) == (400, "CPN-MTLS-006")

    def test_forged_field_has_no_effect(self, optional: AuthorityProcess, pki: Pki) -> None:
        """An X-Client-Cert naming the admin changes nothing (no proxy is trusted here)."""
        forged = quote(pki.clients["legacy"].pem, safe="")
        with client(optional, pki, "orders", **{"X-Client-Cert": forged}) as c:
            refused = c.post("/v1/coupons", json=issue_body({"x5t#S256": "self"}, tenant="other"))
        with client(optional, pki, None, **{"X-Client-Cert": forged}) as c:
            anonymous = c.get("/v1/revocations")
        assert (refused.status_code, code(refused)) == (403, "CPN-AUTH-004")  # still orders
        assert code(anonymous) == "CPN-AUTH-001"
        metrics = optional.client.get("/metrics").text
        assert re.search(r"^coupon_mtls_forwarded_ignored_total [1-9]", metrics, re.MULTILINE)

    def test_rotated_server_certificate_is_served(
        self, optional: AuthorityProcess, optional_server: Written, pki: Pki
    ) -> None:
        """coupon certs rotate on the live files: new handshakes get the new certificate."""
        name, ca = optional_server.cert.with_suffix(""), pki.ca.cert.with_suffix("")
        argv = [sys.executable, "-m", "coupon.cli", "certs", "rotate", str(name), "--ca", str(ca)]
        subprocess.run(argv, check=True, capture_output=True)
        rotated = x509.load_pem_x509_certificate(optional_server.cert.read_bytes())
        deadline = time.monotonic() + 10
        served = b""
        while time.monotonic() < deadline:
            served = peer_certificate(optional.port, pki)
            if served == rotated.public_bytes(Encoding.DER):
                break
            time.sleep(0.2)
        assert served == rotated.public_bytes(Encoding.DER)
        with client(optional, pki, "orders") as c:
            assert c.get("/v1/revocations").status_code == 200


def peer_certificate(port: int, pki: Pki) -> bytes:
    """The certificate a fresh handshake with 127.0.0.1:port presents."""
    import socket

    context = client_context(pki)
    with (
        socket.create_connection(("127.0.0.1", port), timeout=5) as raw,
        context.wrap_socket(raw, server_hostname="127.0.0.1") as tls,
    ):
        der = tls.getpeercert(binary_form=True)
    assert der is not None
    return der


# -- behind nginx --------------------------------------------------------------------------------

_NGINX_MAIN: Final = """\
# Written by tests/services/test_mtls_e2e.py: a main file around the shipped configuration.
{user}worker_processes 1;
pid {dir}/nginx.pid;
error_log {dir}/error.log info;
events {{ worker_connections 64; }}
http {{
    client_body_temp_path {dir}/tmp/body;
    proxy_temp_path {dir}/tmp/proxy;
    fastcgi_temp_path {dir}/tmp/fastcgi;
    uwsgi_temp_path {dir}/tmp/uwsgi;
    scgi_temp_path {dir}/tmp/scgi;
    access_log {dir}/access.log;
    include {dir}/coupon-authority-mtls.conf;
}}
"""


def render(pki: Pki, *, listen: str, authority: str) -> str:
    """The shipped configuration with its placeholders filled in (none may be left)."""
    text = NGINX_CONF.read_text()
    for name, value in {
        "@LISTEN@": listen,
        "@AUTHORITY@": authority,
        "@SERVER_CERT@": str(pki.server.cert),
        "@SERVER_KEY@": str(pki.server.key),
        "@CLIENT_CA@": str(pki.ca.cert),
    }.items():
        text = text.replace(name, value)
    code_lines = "\n".join(line.split("#", 1)[0] for line in text.splitlines())
    assert "@" not in code_lines.replace("$", ""), "a placeholder was left in the configuration"
    return text


@pytest.fixture(scope="module")
def nginx_bin() -> str:
    """The nginx binary (skip without it, fail under CI)."""
    found = find_nginx()
    if found is not None:
        return found
    if os.environ.get("CI", "").lower() == "true":
        pytest.fail("nginx is not installed (apt-get install nginx-light); CI=true requires it")
    pytest.skip("nginx is not installed (apt-get install nginx-light)")


@pytest.fixture(scope="module")
def proxied(pki: Pki, nginx_bin: str, module_launcher: Launcher) -> Iterator[AuthorityProcess]:
    """A plain-HTTP Authority believing the forwarded field from 127.0.0.1 (nginx) only."""
    env = {
        "COUPON_TLS_TRUSTED_PROXIES": json.dumps(["127.0.0.1/32"]),
        "COUPON_TLS_CLIENT_CA": str(pki.ca.cert),
        "COUPON_MTLS_IDENTITIES": json.dumps(IDENTITIES),
    }
    proc = module_launcher.start("embedded", name="mtls-proxied", extra=env)
    yield proc
    proc.close()


@pytest.fixture(scope="module")
def nginx(
    pki: Pki, nginx_bin: str, proxied: AuthorityProcess, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[str]:
    """nginx terminating mTLS in front of ``proxied``; yields its https URL."""
    prefix = tmp_path_factory.mktemp("nginx")
    (prefix / "tmp").mkdir()
    user = "user root;\n" if os.geteuid() == 0 else ""
    (prefix / "nginx.conf").write_text(_NGINX_MAIN.format(dir=prefix, user=user))
    port = free_port()
    authority = proxied.base_url.split("://", 1)[1]
    (prefix / "coupon-authority-mtls.conf").write_text(
        render(pki, listen=f"127.0.0.1:{port}", authority=authority)
    )
    argv = [
        nginx_bin,
        "-p",
        str(prefix),
        "-e",
        str(prefix / "error.log"),
        "-c",
        str(prefix / "nginx.conf"),
    ]
    proc = Proc(
        "nginx", [*argv, "-g", "daemon off;"], log_dir=prefix, extra_logs=[prefix / "error.log"]
    ).launch()
    url = f"https://localhost:{port}"

    def ready() -> bool:
        try:
            return (
                httpx.get(f"{url}/healthz", verify=client_context(pki), timeout=2).status_code
                == 200
            )
        except httpx.TransportError:
            return False

    proc.wait_for("answer /healthz through TLS", ready, timeout=15)
    yield url
    proc.terminate()


class TestBehindNginx:
    def test_forwarded_certificate_names_the_caller(
        self, nginx: str, proxied: AuthorityProcess, pki: Pki
    ) -> None:
        """Through nginx, orders gets a coupon bound to the certificate it showed nginx."""
        with client(proxied, pki, "orders", base=nginx) as c:
            response = c.post("/v1/coupons", json=issue_body({"x5t#S256": "self"}))
        assert response.status_code == 201, response.text
        assert response.json()["claims"]["cnf"] == {"x5t#S256": pki.clients["orders"].thumbprint}

    def test_forgery_through_nginx_is_replaced(
        self, nginx: str, proxied: AuthorityProcess, pki: Pki
    ) -> None:
        """A caller without a certificate cannot smuggle one: nginx replaces the field."""
        forged = quote(pki.clients["legacy"].pem, safe="")
        with client(proxied, pki, None, base=nginx, **{"X-Client-Cert": forged}) as c:
            assert code(c.get("/v1/revocations")) == "CPN-AUTH-001"

    def test_bad_certificates_stop_at_nginx(
        self, nginx: str, proxied: AuthorityProcess, pki: Pki
    ) -> None:
        """Another CA's or an expired certificate: nginx answers 400 itself."""
        for name in ("rogue", "expired"):
            with client(proxied, pki, name, base=nginx) as c:
                assert c.get("/v1/revocations").status_code == 400

    def test_forgery_from_an_untrusted_peer(self, proxied: AuthorityProcess, pki: Pki) -> None:
        """Straight to the Authority from 127.0.0.2, the admin's certificate counts for nothing."""
        forged = quote(pki.clients["legacy"].pem, safe="")
        with client(proxied, pki, None, local=ELSEWHERE, **{"X-Client-Cert": forged}) as c:
            assert code(c.get("/v1/revocations")) == "CPN-AUTH-001"

    @pytest.mark.parametrize("name", ["expired", "rogue", "server_only"])
    def test_trusted_peer_is_checked_again(
        self, proxied: AuthorityProcess, pki: Pki, name: str
    ) -> None:
        """Even from the trusted address, what is forwarded must verify now: CPN-MTLS-002."""
        forwarded = quote(pki.clients[name].pem, safe="")
        with client(proxied, pki, None, **{"X-Client-Cert": forwarded}) as c:
            refused = c.get("/v1/revocations")
        assert (refused.status_code, code(refused)) == (401, "CPN-MTLS-002")
