"""Gateway added latency, open loop: direct upstream against the gateway and nginx paths.

Everything runs on this machine over loopback, each in its own process:

- a real Authority (``coupon up``, embedded; see ``bench/_server.py``), which issues the
  coupons and feeds the gateway its keys and revocations;
- the example upstream ``examples/orders/service.py`` without ``--authority`` (it trusts the
  edge's ``X-Coupon-*`` fields), served by uvicorn as the example ships it;
- ``coupon gateway`` with ``examples/orders/gateway.toml`` rendered for the run (ports, a
  ``public_url`` for the DPoP ``htu``, tenant limits raised so they never bind);
- nginx (one worker) with two servers: a plain ``proxy_pass`` to the upstream, and the same
  behind ``auth_request`` to the gateway's ``/_coupon/check`` (``deploy/nginx/coupon-edge.conf``
  rendered when it exists, else the minimal configuration in :func:`nginx_conf`);
- this script, the load generator (``bench/_loadgen.py``: latency from the *scheduled* send
  time, so a stalled server cannot hide behind a slower client).

Paths, each measured at every ``--rates`` step:

- ``direct_public``: ``GET /health`` straight to the upstream;
- ``gateway_public``: the same through the gateway (a ``public = true`` route: path checks,
  route, forwarding through the resilience pipeline; no coupon);
- ``direct``: ``GET /orders/123`` straight to the upstream, carrying the same
  ``Authorization``/``DPoP`` fields as the protected requests (the upstream ignores them);
- ``gateway_protected``: ``GET /orders/123`` through the gateway with a DPoP-bound coupon and a
  fresh proof: local verification, tenant limit, forwarding;
- ``nginx_plain``: ``GET /orders/123`` through nginx, no ``auth_request``;
- ``nginx_auth``: the same with ``auth_request`` to the gateway's ``/_coupon/check``.

The *added* latency of a path is its percentile minus the same percentile of its direct
baseline at the same rate in the same run (``gateway_public`` − ``direct_public``, the others
− ``direct``, and ``nginx_auth`` − ``nginx_plain`` for the check alone): a difference of
percentiles, not a percentile of differences.

DPoP proofs are generated before each step (one Ed25519 signature each, ~50 µs: outside the
timed path), each used once, for a pool of ``--pool`` coupons with their own holder keys;
coupons are used in turn, so after the warm-up every coupon's signature is cached in the
gateway and what is measured is the steady state: a known coupon with a new proof (the
proof's signature, ``htu``/``htm``/``ath``/``iat`` checks and the replay store run on every
request). Steps run in ``--rounds`` rounds, the order of the paths shuffled in each, so that
machine noise hits them alike; a round's step is a warm-up at the same rate (not recorded)
then ``--duration`` seconds measured, then a pause until every process is idle again.

After the measurements (unless ``--no-profile``) the gateway's event-loop thread is profiled
with cProfile (switched on for the profiled windows only, via ``bench/_server.py``'s launcher)
on ``gateway_public``, ``gateway_protected`` and ``nginx_auth``; with ``--py-spy PATH`` each of
those paths is also sampled by py-spy (not a project dependency) in a window of its own.
Profiled windows are not part of the latency figures. The CPU each process used in every
measured window comes from ``/proc`` (``cpu_ms_per_request``).

``--experiment`` patches the gateway process at run time (``_GATEWAY_PRELUDE``) to measure a
suggested change before anyone makes it; the output then says ``PATCHED``.

Usage::

    .venv/bin/python bench/gateway.py                 # 100/200/400 req/s, 2 rounds, ~7 min
    .venv/bin/python bench/gateway.py --quick         # a smoke run, < 1 min
    .venv/bin/python bench/gateway.py --rates 200 --paths direct gateway_protected
    .venv/bin/python bench/gateway.py --rates 300 500 --experiment sniffio --no-profile
    .venv/bin/python bench/gateway.py --rates 100 --py-spy /path/to/py-spy

One JSON document goes to stdout; progress and a short table go to stderr.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import io
import json
import math
import os
import pstats
import random
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # run as a script

from bench._loadgen import (
    HttpResponse,
    RunResult,
    build_request,
    latency_summary,
    run_open_loop,
)
from bench._server import (
    _LAUNCHER,
    CLEAN_EXIT,
    PROFILE_START,
    PROFILE_STOP,
    AuthorityProcess,
    create_api_key,
    issue_coupons,
    machine_info,
    start_authority,
    wait_ready,
)

from coupon.gateway import parse_config
from coupon.token import SigningKey, create_dpop_proof, new_jti

ROOT = Path(__file__).resolve().parent.parent
NGINX = os.environ.get("BENCH_NGINX", "/usr/sbin/nginx")
EXAMPLE_ROUTES = ROOT / "examples" / "orders" / "gateway.toml"
EXAMPLE_SERVICE = ROOT / "examples" / "orders" / "service.py"
SHIPPED_NGINX_CONF = ROOT / "deploy" / "nginx" / "coupon-edge.conf"
PUBLIC_URL = "https://orders.example"  # the gateway's public_url: the proofs' htu origin
HOST = "orders.example"
AUDIENCE = "orders"  # examples/orders/gateway.toml
TENANT = "acme"
ORDER_PATH = "/orders/123"
HEALTH_PATH = "/health"
HTU = PUBLIC_URL + ORDER_PATH
TTL = 300  # the builtin policy's cap; the pool is re-issued when it runs short
PATHS = (
    "direct_public",
    "gateway_public",
    "direct",
    "gateway_protected",
    "nginx_plain",
    "nginx_auth",
)
#: path -> the direct path it is compared with.
BASELINE = {
    "gateway_public": "direct_public",
    "gateway_protected": "direct",
    "nginx_plain": "direct",
    "nginx_auth": "direct",
}
PROFILED = ("gateway_public", "gateway_protected", "nginx_auth")
TARGET_P50_MS = 1.0
TARGET_P99_MS = 3.0


def log(message: str) -> None:
    print(f"[gateway] {message}", file=sys.stderr, flush=True)


def revision() -> dict[str, Any]:
    """The commit measured, and the files under src/, examples/ and deploy/ that differ from
    it (other people edit the same checkout: a dirty tree is measured as it is)."""

    def git(*argv: str) -> str:
        try:
            done = subprocess.run(
                ["git", *argv], cwd=ROOT, capture_output=True, text=True, timeout=10, check=False
            )
        except (OSError, subprocess.TimeoutExpired):
            return ""
        return done.stdout.strip()

    dirty = git("status", "--porcelain", "--", "src", "examples", "deploy").splitlines()
    return {"commit": git("rev-parse", "--short", "HEAD") or None, "dirty": dirty}


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def cpu_seconds(pids: Sequence[int]) -> float:
    """User + system CPU the processes have used so far (Linux ``/proc``)."""
    ticks = os.sysconf("SC_CLK_TCK")
    total = 0
    for pid in pids:
        with contextlib.suppress(OSError, IndexError):
            fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
            total += int(fields[11]) + int(fields[12])
    return total / ticks


def children(pid: int) -> list[int]:
    """Direct children of ``pid`` (nginx's workers)."""
    out: list[int] = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        with contextlib.suppress(OSError, IndexError, ValueError):
            fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
            if int(fields[1]) == pid:
                out.append(int(entry.name))
    return out


# -- the processes ------------------------------------------------------------------------------

# What-if patches applied to the gateway process at run time, before `coupon gateway` starts:
# A/B evidence behind a suggestion, never the figures of the gateway as shipped (the output
# then says "PATCHED"). The gateway's code is not changed.
_GATEWAY_PRELUDE = """
import os as _os, sys as _sys, types as _types
_gw_experiments = set(filter(None, _os.environ.get("BENCH_GW_EXPERIMENTS", "").split(",")))
if "sniffio" in _gw_experiments:
    # httpcore 1.0.9 imports sniffio inside current_async_library(), called for every lock,
    # event and semaphore it sets up; sniffio is not installed (anyio >= 4.11 stopped
    # requiring it), and a failed import is not cached: each call stats every sys.path entry.
    # A module answering "asyncio" is what sniffio itself answers in this process.
    _sniffio = _types.ModuleType("sniffio")
    _sniffio.current_async_library = lambda: "asyncio"
    _sys.modules["sniffio"] = _sniffio
if "pool-linear" in _gw_experiments:
    # httpcore 1.0.9's AsyncConnectionPool._assign_requests_to_connections, which runs on
    # every request and every response close, counts the pool's connections once per
    # connection (quadratic in the pool size, which grows with concurrency up to the
    # gateway's max_keepalive_connections=200). The same method with the count kept as it
    # goes (closing an idle connection while more than max_keepalive are idle, the documented
    # meaning); everything else as in 1.0.9, has_expired()'s socket poll included.
    from httpcore._async import connection_pool as _pool
    def _assign(self):
        closing_connections = []
        idle = sum(1 for c in self._connections if c.is_idle())
        for connection in list(self._connections):
            if connection.is_closed():
                self._connections.remove(connection)
            elif connection.has_expired():
                idle -= int(connection.is_idle())
                self._connections.remove(connection)
                closing_connections.append(connection)
            elif connection.is_idle() and idle > self._max_keepalive_connections:
                idle -= 1
                self._connections.remove(connection)
                closing_connections.append(connection)
        queued_requests = [request for request in self._requests if request.is_queued()]
        for pool_request in queued_requests:
            origin = pool_request.request.url.origin
            available_connections = [
                c for c in self._connections if c.can_handle_request(origin) and c.is_available()
            ]
            idle_connections = [c for c in self._connections if c.is_idle()]
            if available_connections:
                pool_request.assign_to_connection(available_connections[0])
            elif len(self._connections) < self._max_connections:
                connection = self.create_connection(origin)
                self._connections.append(connection)
                pool_request.assign_to_connection(connection)
            elif idle_connections:
                connection = idle_connections[0]
                self._connections.remove(connection)
                closing_connections.append(connection)
                connection = self.create_connection(origin)
                self._connections.append(connection)
                pool_request.assign_to_connection(connection)
        return closing_connections
    _pool.AsyncConnectionPool._assign_requests_to_connections = _assign
"""
GATEWAY_EXPERIMENTS = ("sniffio", "pool-linear")


def render_routes(template: str, *, authority: str, upstream: str) -> str:
    """``examples/orders/gateway.toml`` for this run: our Authority, our upstream, the public
    URL the proofs name, and tenant limits that never bind (rate limits are measured by
    ``bench/ratelimit.py``; here they must not refuse anything)."""
    out, n1 = re.subn(
        r'(?m)^authority = ".*"$',
        f'authority = "{authority}"\npublic_url = "{PUBLIC_URL}"',
        template,
    )
    out, n2 = re.subn(r'(?m)^url = "http://[^"]*"$', f'url = "{upstream}"', out)
    out, n3 = re.subn(
        r"(?m)^default = \{.*\}$",
        'default = { soft_per_s = 1000000, hard_per_s = 1000000, burst = 1000000, name = "bench" }',
        out,
    )
    if (n1, n2, n3) != (1, 1, 1):
        raise RuntimeError(f"{EXAMPLE_ROUTES} changed shape; update render_routes")
    import tomllib

    parse_config(tomllib.loads(out))  # fail here, not in the gateway, if it is wrong
    return out


def nginx_main(work: Path, http: str) -> str:
    """The top of an nginx configuration around ``http`` (one worker, files under ``work``)."""
    return f"""
worker_processes 1;
daemon off;
pid {work}/nginx.pid;
error_log {work}/nginx-error.log warn;
events {{ worker_connections 4096; }}
http {{
    access_log off;
    client_body_temp_path {work}/body;
    proxy_temp_path {work}/proxy;
    fastcgi_temp_path {work}/fastcgi;
    uwsgi_temp_path {work}/uwsgi;
    scgi_temp_path {work}/scgi;
{http}
}}
"""


def minimal_nginx_http(*, plain: int, auth: int, upstream: int, gateway: int) -> str:
    """Two servers with keep-alive to both backends: ``plain`` proxies, ``auth`` puts
    ``auth_request`` to the gateway's check in front of the same proxy and passes the coupon's
    subject, tenant and id on (``examples/orders/service.py`` reads them). Used when
    ``deploy/nginx/coupon-edge.conf`` is absent, or with ``--nginx-conf minimal``."""
    keep = 'proxy_http_version 1.1;\n        proxy_set_header Connection "";'
    return f"""
    upstream orders {{ server 127.0.0.1:{upstream}; keepalive 32; }}
    upstream coupon_gateway {{ server 127.0.0.1:{gateway}; keepalive 32; }}
    server {{
        listen 127.0.0.1:{plain};
        location / {{
            proxy_pass http://orders;
            {keep}
        }}
    }}
    server {{
        listen 127.0.0.1:{auth};
        location = /_coupon_auth {{
            internal;
            proxy_pass http://coupon_gateway/_coupon/check;
            proxy_pass_request_body off;
            proxy_set_header Content-Length "";
            proxy_set_header X-Original-Method $request_method;
            proxy_set_header X-Original-URI $request_uri;
            {keep}
        }}
        location / {{
            auth_request /_coupon_auth;
            auth_request_set $coupon_subject $upstream_http_x_coupon_subject;
            auth_request_set $coupon_tenant $upstream_http_x_coupon_tenant;
            auth_request_set $coupon_id $upstream_http_x_coupon_id;
            proxy_set_header X-Coupon-Subject $coupon_subject;
            proxy_set_header X-Coupon-Tenant $coupon_tenant;
            proxy_set_header X-Coupon-Id $coupon_id;
            proxy_pass http://orders;
            {keep}
        }}
    }}
"""


def shipped_nginx_http(
    text: str, *, plain: int, auth: int, upstream: int, gateway: int
) -> tuple[str, list[str]]:
    """``deploy/nginx/coupon-edge.conf`` rendered for the run, plus a ``plain`` twin of its
    server without the check; returns the text and the changes made for the bench.

    The placeholders are filled in as its header says. Its per-address ``limit_req`` (every
    bench request comes from 127.0.0.1) is raised so it never refuses; the module still runs.
    The twin is the same ``server`` block on another port with every ``auth_request``,
    ``auth_request_set`` and ``error_page`` line removed: the same proxy, no subrequest.
    """
    out = (
        text.replace("@LISTEN@", f"127.0.0.1:{auth}")
        .replace("@GATEWAY@", f"127.0.0.1:{gateway}")
        .replace("@UPSTREAM@", f"127.0.0.1:{upstream}")
    )
    out, n_rate = re.subn(r"(limit_req_zone [^;]*rate=)\d+r/s", r"\g<1>1000000r/s", out)
    out, n_burst = re.subn(r"(limit_req zone=\S+ burst=)\d+", r"\g<1>1000000", out)
    at = out.find("\nserver {")
    if "@" in re.sub(r"(?m)#.*$|@coupon_\w+", "", out) or at < 0 or n_rate != 1 or n_burst != 1:
        raise RuntimeError(
            f"{SHIPPED_NGINX_CONF} changed shape; update shipped_nginx_http "
            "or run with --nginx-conf minimal"
        )
    twin = re.sub(r"(?m)^\s*(auth_request|auth_request_set|error_page)\s[^\n]*\n", "", out[at:])
    twin, n_listen = re.subn(r"(?m)^(\s*listen )[^;]+;", rf"\g<1>127.0.0.1:{plain};", twin)
    if n_listen != 1 or re.search(r"(?m)^\s*auth_request", twin):
        raise RuntimeError(f"{SHIPPED_NGINX_CONF}: cannot derive the plain twin")
    changes = [
        "placeholders: @LISTEN@, @GATEWAY@, @UPSTREAM@ filled with loopback ports",
        "limit_req_zone coupon_per_ip rate and limit_req burst raised to 1000000 "
        "(all bench traffic comes from one address)",
        "nginx_plain: the same server block on another port without auth_request, "
        "auth_request_set and error_page lines",
    ]
    return out + "\n# -- bench: the same server without the check\n" + twin, changes


@dataclass
class Stack:
    """Every process of the run and where it listens."""

    work: Path
    authority: AuthorityProcess | None = None
    upstream: subprocess.Popen[bytes] | None = None
    gateway: subprocess.Popen[bytes] | None = None
    nginx: subprocess.Popen[bytes] | None = None
    ports: dict[str, int] = field(default_factory=dict)
    profile_path: Path | None = None
    nginx_conf_source: str = ""
    nginx_changes: list[str] = field(default_factory=list)
    nginx_workers: list[int] = field(default_factory=list)

    def pids(self) -> dict[str, list[int]]:
        out: dict[str, list[int]] = {}
        if self.authority is not None:
            out["authority"] = [self.authority.pid]
        if self.upstream is not None:
            out["upstream"] = [self.upstream.pid]
        if self.gateway is not None:
            out["gateway"] = [self.gateway.pid]
        if self.nginx is not None:
            out["nginx"] = [self.nginx.pid, *self.nginx_workers]
        return out

    def cpu(self) -> dict[str, float]:
        return {name: cpu_seconds(pids) for name, pids in self.pids().items()}

    def target(self, path: str) -> int:
        if path.startswith("direct"):
            return self.ports["upstream"]
        if path.startswith("gateway"):
            return self.ports["gateway"]
        return self.ports["nginx_auth" if path == "nginx_auth" else "nginx_plain"]

    def stop(self) -> None:
        for proc in (self.nginx, self.gateway, self.upstream):
            if proc is None or proc.poll() is not None:
                continue
            proc.send_signal(signal.SIGINT if proc is not self.nginx else signal.SIGQUIT)
            try:
                proc.wait(15)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(5)
        if self.authority is not None:
            code = self.authority.stop()
            if code not in CLEAN_EXIT:
                log(f"the Authority exited with {code}: {self.authority.log_tail()}")
        shutil.rmtree(self.work, ignore_errors=True)


def _spawn(cmd: list[str], log_path: Path, env: dict[str, str]) -> subprocess.Popen[bytes]:
    with log_path.open("wb") as out:
        return subprocess.Popen(
            cmd,
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=subprocess.STDOUT,
            env=env,
            start_new_session=True,
        )


def _tail(path: Path, n: int = 15) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-n:])
    except OSError:
        return ""


async def _wait_http(url: str, proc: subprocess.Popen[bytes], log_path: Path) -> None:
    deadline = time.monotonic() + 30
    async with httpx.AsyncClient(timeout=2, trust_env=False) as client:
        while time.monotonic() < deadline:
            if proc.poll() is not None:
                raise RuntimeError(f"{url}: the process exited:\n{_tail(log_path)}")
            with contextlib.suppress(httpx.HTTPError):
                if (await client.get(url)).status_code == 200:
                    return
            await asyncio.sleep(0.1)
    raise RuntimeError(f"{url} not ready after 30 s:\n{_tail(log_path)}")


async def start_stack(
    stack: Stack, *, with_nginx: bool, nginx_choice: str, experiments: Sequence[str]
) -> tuple[str, str]:
    """Start every process; returns the issuer API key and the gateway's verifier key."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("COUPON_")}
    stack.authority = start_authority("embedded")
    authority = stack.authority
    log(f"Authority on {authority.url} (pid {authority.pid})")
    await wait_ready(authority.url)
    verifier_key = await create_api_key(
        authority.url, authority.admin_key, "bench-gateway", ["verifier"]
    )
    issuer_key = await create_api_key(
        authority.url, authority.admin_key, "bench-client", ["issuer"]
    )

    up_port = free_port()
    up_log = stack.work / "upstream.log"
    stack.upstream = _spawn(
        [sys.executable, str(EXAMPLE_SERVICE), "--host", "127.0.0.1", "--port", str(up_port)],
        up_log,
        env,
    )
    stack.ports["upstream"] = up_port
    await _wait_http(f"http://127.0.0.1:{up_port}{HEALTH_PATH}", stack.upstream, up_log)
    log(f"upstream examples/orders/service.py on :{up_port} (pid {stack.upstream.pid})")

    routes = stack.work / "routes.toml"
    routes.write_text(
        render_routes(
            EXAMPLE_ROUTES.read_text(),
            authority=authority.url,
            upstream=f"http://127.0.0.1:{up_port}",
        )
    )
    gw_port = free_port()
    gw_log = stack.work / "gateway.log"
    stack.profile_path = stack.work / "gateway.prof"
    gw_env = {
        **env,
        "COUPON_GATEWAY_API_KEY": verifier_key,
        "BENCH_PROFILE_PATH": str(stack.profile_path),
        "BENCH_EXPERIMENTS": "",
        "BENCH_GW_EXPERIMENTS": ",".join(experiments),
    }
    gw_args = ["gateway", "--config", str(routes), "--port", str(gw_port), "--log-level", "warning"]
    # bench/_server.py's launcher: `coupon gateway` unchanged, plus a cProfile the bench
    # switches on (SIGRTMIN+1) and off (SIGRTMIN+2) around the profiled windows only.
    launcher = _GATEWAY_PRELUDE + _LAUNCHER
    stack.gateway = _spawn([sys.executable, "-c", launcher, *gw_args], gw_log, gw_env)
    stack.ports["gateway"] = gw_port
    await _wait_http(f"http://127.0.0.1:{gw_port}/_coupon/readyz", stack.gateway, gw_log)
    log(f"coupon gateway on :{gw_port} (pid {stack.gateway.pid})")

    if with_nginx:
        plain, auth = free_port(), free_port()
        stack.ports["nginx_plain"], stack.ports["nginx_auth"] = plain, auth
        conf_path = stack.work / "nginx.conf"
        ports = {"plain": plain, "auth": auth, "upstream": up_port, "gateway": gw_port}
        if nginx_choice == "shipped":
            http, stack.nginx_changes = shipped_nginx_http(SHIPPED_NGINX_CONF.read_text(), **ports)
            stack.nginx_conf_source = "deploy/nginx/coupon-edge.conf, rendered"
        else:
            http = minimal_nginx_http(**ports)
            stack.nginx_conf_source = "minimal configuration in bench/gateway.py"
        conf_path.write_text(nginx_main(stack.work, http))
        ng_log = stack.work / "nginx.log"
        stack.nginx = _spawn([NGINX, "-c", str(conf_path), "-p", str(stack.work)], ng_log, env)
        await _wait_http(f"http://127.0.0.1:{plain}{HEALTH_PATH}", stack.nginx, ng_log)
        stack.nginx_workers = children(stack.nginx.pid)
        log(f"nginx on :{plain} (plain) and :{auth} (auth_request), workers {stack.nginx_workers}")
    return issuer_key, verifier_key


# -- the clients --------------------------------------------------------------------------------


class Clients:
    """A pool of coupons, each bound to its own holder key, and the requests that use them."""

    def __init__(self, size: int) -> None:
        self.size = size
        self.keys: list[SigningKey] = []
        self.coupons: list[str] = []
        self.expires_at = 0

    async def issue(self, url: str, issuer_key: str) -> None:
        self.keys = [SigningKey.generate() for _ in range(self.size)]
        bodies = [
            {
                "subject": f"bench-client-{i}",
                "audience": [AUDIENCE],
                "tenant": TENANT,
                "resource": "orders/*",
                "actions": ["read"],
                "purpose": "fulfilment",
                "ttl": TTL,
                "binding": {"jkt": key.public.thumbprint},
            }
            for i, key in enumerate(self.keys)
        ]
        issued = await issue_coupons(url, issuer_key, bodies)
        self.coupons = [c["coupon"] for c in issued]
        self.expires_at = min(int(c["expires_at"]) for c in issued)

    def protected(self, i: int, *, now: int) -> bytes:
        """``GET /orders/123`` with coupon ``i % size`` and a fresh proof."""
        k = i % self.size
        proof = create_dpop_proof(
            self.keys[k],
            method="GET",
            uri=HTU,
            now=now,
            jti=new_jti(),
            access_token=self.coupons[k],
        )
        return build_request(
            "GET",
            ORDER_PATH,
            HOST,
            headers=[("Authorization", f"DPoP {self.coupons[k]}"), ("DPoP", proof)],
        )


def classify_plain(response: HttpResponse) -> str:
    return "ok" if response.status == 200 else f"http:{response.status}"


def classify_verified(response: HttpResponse) -> str:
    """200 *and* the upstream saw the verified tenant (the edge's ``X-Coupon-Tenant``)."""
    if response.status != 200:
        return f"http:{response.status}"
    return "ok" if b'"tenant":"acme"' in response.body else "deny:no-verified-caller"


# -- steps --------------------------------------------------------------------------------------


@dataclass
class Step:
    """One path at one rate, over every round."""

    runs: list[RunResult] = field(default_factory=list)
    cpu: Counter[str] = field(default_factory=Counter)
    gateway_cpu_rounds: list[float] = field(default_factory=list)  # ms per request


async def settle(stack: Stack, *, idle: float = 0.1, limit: float = 30.0) -> None:
    """Wait until no process uses more than ``idle`` of a core for 0.3 s."""
    deadline = time.monotonic() + limit
    while time.monotonic() < deadline:
        before = stack.cpu()
        await asyncio.sleep(0.3)
        after = stack.cpu()
        if all((after[k] - before[k]) / 0.3 < idle for k in after):
            return
    log("  the processes did not settle")


async def run_step(
    stack: Stack,
    clients: Clients,
    issuer_key: str,
    path: str,
    rate: int,
    args: argparse.Namespace,
    *,
    profile: str = "",
    samples: Path | None = None,
) -> tuple[RunResult, dict[str, float]]:
    """Warm up, then measure ``path`` at ``rate``; returns the run and CPU s per process.

    ``profile``: ``"cprofile"`` switches the gateway's cProfile on for the measured window;
    ``"py-spy"`` samples the gateway with ``--py-spy`` into ``samples`` meanwhile.
    """
    assert stack.authority is not None
    assert stack.gateway is not None
    duration: float = args.profile_duration if profile else args.duration
    warm_n = round(rate * args.warmup)
    n = round(rate * duration)
    if clients.expires_at - time.time() < args.warmup + duration + 60:
        log(f"  issuing {clients.size} coupons")
        await clients.issue(stack.authority.url, issuer_key)
    if path in ("gateway_protected", "nginx_auth"):
        started = time.perf_counter()
        now = int(time.time())
        prebuilt = [clients.protected(i, now=now) for i in range(warm_n + n)]
        log(f"  {len(prebuilt)} DPoP proofs built in {time.perf_counter() - started:.2f} s")
        classify = classify_verified
    elif path in ("direct", "nginx_plain"):
        # The same fields as a protected request (one fixed proof; nothing checks it here).
        prebuilt = [clients.protected(0, now=int(time.time()))]
        classify = classify_plain
    else:
        prebuilt = [build_request("GET", HEALTH_PATH, HOST)]
        classify = classify_plain
    size = len(prebuilt)
    common: dict[str, Any] = {
        "host": "127.0.0.1",
        "port": stack.target(path),
        "rate": float(rate),
        "classify": classify,
        "connections": args.connections,
        "timeout": 5.0,
        "drain": 10.0,
    }
    if warm_n:
        warm = await run_open_loop(
            duration=args.warmup, make_request=lambda i: prebuilt[i % size], **common
        )
        bad = {label: c for label, c in warm.outcomes.items() if label != "ok"}
        if bad:
            log(f"  warm-up not all ok: {bad}")
    sampler: subprocess.Popen[bytes] | None = None
    if profile == "cprofile":
        _profile_signal(stack, PROFILE_START)
    elif profile == "py-spy":
        assert samples is not None
        sampler = subprocess.Popen(
            [
                args.py_spy,
                "record",
                "--pid",
                str(stack.gateway.pid),
                "--duration",
                str(math.ceil(duration)),
                "--rate",
                "1000",
                "--full-filenames",
                "--nonblocking",  # read the process's memory without pausing it
                "--format",
                "raw",
                "--output",
                str(samples),
            ],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        await asyncio.sleep(0.3)  # let it attach
    cpu0 = stack.cpu()
    result = await run_open_loop(
        duration=duration, make_request=lambda i: prebuilt[(warm_n + i) % size], **common
    )
    cpu1 = stack.cpu()
    if sampler is not None:
        try:
            await asyncio.to_thread(sampler.wait, 30)
        except subprocess.TimeoutExpired:
            sampler.kill()
            sampler.wait(5)
    return result, {k: cpu1[k] - cpu0[k] for k in cpu1}


def _profile_signal(stack: Stack, sig: int) -> None:
    assert stack.gateway is not None
    stack.gateway.send_signal(sig)
    time.sleep(0.05)


def _profile_stop(stack: Stack, into: Path) -> Path:
    assert stack.profile_path is not None
    stack.profile_path.unlink(missing_ok=True)
    _profile_signal(stack, PROFILE_STOP)
    deadline = time.monotonic() + 30
    while not stack.profile_path.exists():
        if time.monotonic() > deadline:
            raise TimeoutError("the gateway wrote no profile")
        time.sleep(0.05)
    return stack.profile_path.rename(into)


def summarize(step: Step) -> dict[str, Any]:
    """Every round of one path at one rate, merged: percentiles over all answered requests."""
    runs = step.runs
    latencies = [x for r in runs for x in r.latencies]
    service = [x for r in runs for x in r.service]
    outcomes: Counter[str] = Counter()
    for r in runs:
        outcomes.update(r.outcomes)
    answered = len(latencies)
    per_round = [r.summary() for r in runs]
    errors = sum(s["errors"] for s in per_round)
    out: dict[str, Any] = {
        "target_rps": runs[0].target_rps,
        "offered_rps_min": min(s["offered_rps"] or 0.0 for s in per_round),
        "achieved_rps_min": min(s["achieved_rps"] for s in per_round),
    }
    out.update(latency_summary(latencies))
    out["requests"] = sum(r.planned for r in runs)
    out["answered"] = answered
    out["errors"] = errors
    out["outcomes"] = dict(sorted(outcomes.items()))
    out["service_p50_ms"] = latency_summary(service)["p50_ms"]
    out["service_p99_ms"] = latency_summary(service)["p99_ms"]
    out["rounds_p50_ms"] = [s["p50_ms"] for s in per_round]
    out["rounds_p99_ms"] = [s["p99_ms"] for s in per_round]
    out["generator"] = {
        "release_lag_p99_ms_max": max(s["generator"]["release_lag_p99_ms"] for s in per_round),
        "connection_wait_p99_ms_max": max(
            s["generator"]["connection_wait_p99_ms"] for s in per_round
        ),
        "client_cpu_util_max": max(s["client_cpu_util"] for s in per_round),
    }
    out["rounds_gateway_cpu_ms_per_request"] = step.gateway_cpu_rounds
    out["cpu_ms_per_request"] = {
        name: round(seconds / max(answered, 1) * 1000, 3)
        for name, seconds in sorted(step.cpu.items())
    }
    return out


def added(results: dict[str, dict[str, dict[str, Any]]]) -> dict[str, Any]:
    """Per path and rate: its percentiles minus its baseline's, and their ratios."""
    out: dict[str, Any] = {}
    pairs = list(BASELINE.items())
    pairs.append(("nginx_auth", "nginx_plain"))
    for path, base in pairs:
        for rate, step in results.get(path, {}).items():
            floor = results.get(base, {}).get(rate)
            if floor is None:
                continue
            entry: dict[str, Any] = {"baseline": base}
            for q in ("p50", "p99", "p999"):
                ours, theirs = step.get(f"{q}_ms"), floor.get(f"{q}_ms")
                if ours is None or theirs is None:
                    continue
                entry[f"added_{q}_ms"] = round(ours - theirs, 3)
                entry[f"ratio_{q}"] = round(ours / theirs, 2) if theirs else None
            out.setdefault(f"{path}_over_{base}", {})[rate] = entry
    return out


def targets(results: dict[str, dict[str, dict[str, Any]]], extra: dict[str, Any]) -> dict[str, Any]:
    """PRODUCT.md §5, per path and rate: added p50 < 1 ms and added p99 < 3 ms, with no
    errors and the full rate achieved; ``all_met`` is every one of them at every rate."""
    checks = (
        ("gateway_public", "gateway_public_over_direct_public"),
        ("gateway_protected", "gateway_protected_over_direct"),
        ("nginx_auth_request", "nginx_auth_over_nginx_plain"),
    )
    out: dict[str, Any] = {}
    for name, key in checks:
        measured = "nginx_auth" if name == "nginx_auth_request" else name
        for rate, entry in extra.get(key, {}).items():
            step = results[measured][rate]
            out[f"{name}_at_{rate}"] = {
                "added_p50_under_1ms": entry.get("added_p50_ms", math.inf) < TARGET_P50_MS,
                "added_p99_under_3ms": entry.get("added_p99_ms", math.inf) < TARGET_P99_MS,
                "no_errors_full_rate": step["errors"] == 0
                and step["achieved_rps_min"] >= 0.97 * float(rate),
            }
    out["all_met"] = bool(out) and all(all(v.values()) for v in out.values())
    return out


# -- the profile --------------------------------------------------------------------------------

# Where the gateway's event-loop thread spends its own time, by the file of each function.
_COMPONENTS: tuple[tuple[str, tuple[str, ...]], ...] = (
    # cProfile: uvloop's run call; py-spy: C time under the last Python frame, Runner.run.
    ("event loop (uvloop: epoll wait, socket I/O in C)", ("uvloop", "asyncio/runners.py")),
    ("HTTP server (uvicorn, httptools)", ("uvicorn/", "httptools")),
    ("HTTP client to upstream (httpx, httpcore, h11, anyio)", ("httpx/", "httpcore/", "h11/")),
    ("anyio / sniffio", ("anyio/", "sniffio/")),
    ("imports at request time (importlib, stat)", ("importlib", "posix.stat", "_imp.")),
    ("tracing (opentelemetry)", ("opentelemetry/",)),
    ("metrics (prometheus_client)", ("prometheus_client/",)),
    ("logging (structlog, logging)", ("structlog/", "logging/")),
    ("coupon verifier (coupon.token)", ("coupon/token/",)),
    ("crypto (signatures, hashes, random)", ("cryptography", "_sodium", "nacl/", "_hashlib")),
    ("coupon middleware", ("coupon/middleware/",)),
    ("coupon gateway", ("coupon/gateway/",)),
    ("coupon resilience pipeline", ("coupon/resilience/",)),
    ("coupon rate limit, idempotency", ("coupon/ratelimit/", "coupon/idempotency/")),
    ("coupon observability, ASGI helpers", ("coupon/observability/", "coupon/_asgi")),
    ("coupon SDK (LocalVerifier, revocation sync)", ("coupon/sdk/",)),
    ("starlette (route compile, helpers)", ("starlette/",)),
    ("asyncio", ("asyncio/", "_asyncio", "_contextvars", "contextvars")),
)


def _component(filename: str, name: str) -> str:
    where = f"{filename} {name}"
    for label, needles in _COMPONENTS:
        if any(needle in where for needle in needles):
            return label
    return "other (builtins, stdlib)"


def profile_digest(path: Path, requests: int, cpu_s: float, top: int) -> dict[str, Any]:
    """The gateway's cProfile of one window: own time per request by component and the top
    functions. The event loop's own entry holds both idle time and uvloop's C work, so the
    busy figure is the process's measured CPU, and shares exclude the loop's entry."""
    stats = pstats.Stats(str(path), stream=io.StringIO())
    raw: dict[Any, Any] = stats.stats  # type: ignore[attr-defined]
    rows = []
    components: Counter[str] = Counter()
    for (filename, line, name), (_cc, ncalls, tottime, cumtime, _callers) in raw.items():
        short = filename.split("site-packages/")[-1].split("/src/")[-1].split("/lib/python3")[-1]
        rows.append((f"{short}:{line}({name})", ncalls, tottime, cumtime, filename, name))
        components[_component(filename, name)] += tottime
    loop_label = _COMPONENTS[0][0]
    python_busy = sum(t for label, t in components.items() if label != loop_label)

    def table(key: int) -> list[dict[str, Any]]:
        chosen = sorted(rows, key=lambda r: r[key], reverse=True)[:top]
        return [
            {
                "function": f,
                "calls_per_request": round(c / requests, 2),
                "own_us_per_request": round(t / requests * 1e6, 1),
                "own_share_of_python": None
                if _component(fn, nm) == loop_label
                else round(t / python_busy, 4),
                "cum_us_per_request": round(cu / requests * 1e6, 1),
            }
            for f, c, t, cu, fn, nm in chosen
        ]

    by_component = [
        {
            "component": label,
            "own_us_per_request": round(t / requests * 1e6, 1),
            "share_of_python": None if label == loop_label else round(t / python_busy, 3),
        }
        for label, t in components.most_common()
    ]
    return {
        "requests": requests,
        "gateway_cpu_us_per_request_profiled": round(cpu_s / requests * 1e6, 1),
        "python_own_us_per_request": round(python_busy / requests * 1e6, 1),
        "by_component": by_component,
        "note": "cProfile inflates the cost of many small calls; read shares, not absolutes. "
        "Event-loop thread only.",
        "by_own_time": table(2),
        "by_cumulative_time": table(3),
    }


_FRAME = re.compile(r"^(?P<name>.+) \((?P<file>[^()]+?)(?::\d+)?\)$")
#: Frames whose inclusive share of the samples is reported: (label, file suffix, function).
_FRAMES_OF_INTEREST: tuple[tuple[str, str, str], ...] = (
    ("forwarding: httpx AsyncClient.send", "httpx/_client.py", "send"),
    (
        "  of which httpcore pool assignment",
        "connection_pool.py",
        "_assign_requests_to_connections",
    ),
    ("  of which failed imports (importlib)", "_bootstrap>", "_find_and_load"),
    ("coupon verification: LocalVerifier.verify", "coupon/sdk/_local.py", "verify"),
    ("  of which the DPoP proof", "coupon/token/_dpop.py", "verify_dpop_proof"),
    ("tenant limit: RateLimitMiddleware", "coupon/ratelimit/_middleware.py", "__call__"),
    ("tracing: opentelemetry (anywhere)", "opentelemetry/", ""),
    ("HTTP server: uvicorn httptools protocol", "httptools_impl.py", ""),
)


def pyspy_digest(path: Path, top: int) -> dict[str, Any]:
    """py-spy's collapsed stacks (``--format raw``): shares of the busy samples (py-spy
    leaves idle ones out) by the component of the innermost frame, the inclusive share of a
    few frames, and the top innermost functions. Sampling does not slow small calls down
    the way cProfile does, so these shares are the closer ones. Inclusive shares count a
    frame only on the stack of the task it runs in: work a coroutine hands to another task
    (the resilience pipeline runs each attempt in its own) is not under it; and a sample read
    without pausing the process (``--nonblocking``) may hold a truncated stack."""
    own: Counter[str] = Counter()
    inclusive: Counter[str] = Counter()
    leaves: Counter[str] = Counter()
    total = 0
    try:
        lines = path.read_text().splitlines()
    except OSError:
        return {"error": f"py-spy wrote no samples to {path}"}
    for line in lines:
        stack, _, count = line.rpartition(" ")
        if not count.isdigit():
            continue
        frames = []
        for text in stack.split(";"):
            match = _FRAME.match(text)
            if match is not None:
                frames.append((match.group("file"), match.group("name")))
        if not frames:
            continue
        n = int(count)
        total += n
        file, name = frames[-1]
        short = file.split("site-packages/")[-1].split("/src/")[-1]
        leaves[f"{short}({name})"] += n
        own[_component(file, name)] += n
        for label, suffix, function in _FRAMES_OF_INTEREST:
            if any(
                suffix in f and (not function or nm == function or nm.endswith("." + function))
                for f, nm in frames
            ):
                inclusive[label] += n
    if not total:
        return {"error": "no samples"}
    return {
        "samples": total,
        "by_component_innermost": [
            {"component": c, "share": round(n / total, 3)} for c, n in own.most_common()
        ],
        "inclusive_share": {
            label: round(inclusive[label] / total, 3) for label, _, _ in _FRAMES_OF_INTEREST
        },
        "top_innermost": [
            {"function": f, "share": round(n / total, 4)} for f, n in leaves.most_common(top)
        ],
    }


# -- the run ------------------------------------------------------------------------------------


def human_table(doc: dict[str, Any]) -> str:
    lines = [
        f"{'path':<18} {'rate':>5} {'p50':>7} {'p99':>7} {'p99.9':>7} "
        f"{'+p50':>7} {'+p99':>7} {'err':>4} {'gw cpu':>7}",
    ]
    extra = doc["added"]
    for path, per_rate in doc["results"].items():
        for rate, s in per_rate.items():
            base = BASELINE.get(path)
            entry = extra.get(f"{path}_over_{base}", {}).get(rate, {}) if base else {}
            plus50 = entry.get("added_p50_ms")
            plus99 = entry.get("added_p99_ms")
            gw = s["cpu_ms_per_request"].get("gateway", 0.0)
            lines.append(
                f"{path:<18} {rate:>5} {s['p50_ms']:>7.3f} {s['p99_ms']:>7.3f} "
                f"{s['p999_ms']:>7.3f} "
                f"{'' if plus50 is None else f'{plus50:+.3f}':>7} "
                f"{'' if plus99 is None else f'{plus99:+.3f}':>7} "
                f"{s['errors']:>4} {gw:>7.3f}"
            )
    for rate, entry in extra.get("nginx_auth_over_nginx_plain", {}).items():
        lines.append(
            f"{'auth_request only':<18} {rate:>5} {'':>7} {'':>7} {'':>7} "
            f"{entry.get('added_p50_ms', 0.0):>+7.3f} {entry.get('added_p99_ms', 0.0):>+7.3f}"
        )
    lines.append(
        "ms; +p50/+p99 = minus the direct baseline at the same rate (auth_request only: "
        "nginx_auth minus nginx_plain); gw cpu = gateway CPU ms/request"
    )
    return "\n".join(lines)


async def main_async(args: argparse.Namespace) -> dict[str, Any]:
    load_at_start = os.getloadavg()
    rev = revision()
    paths: list[str] = args.paths
    with_nginx = any(p.startswith("nginx") for p in paths)
    stack = Stack(Path(tempfile.mkdtemp(prefix="coupon-bench-gw-")))
    results: dict[str, dict[str, dict[str, Any]]] = {}
    profiles: dict[str, Any] = {}
    rng = random.Random(args.seed)
    nginx_source, nginx_changes = "", []
    try:
        issuer_key, _ = await start_stack(
            stack,
            with_nginx=with_nginx,
            nginx_choice=args.nginx_conf,
            experiments=args.experiment,
        )
        clients = Clients(args.pool)
        steps: dict[tuple[str, int], Step] = {}
        for round_no in range(args.rounds):
            for rate in args.rates:
                order = list(paths)
                rng.shuffle(order)
                for path in order:
                    log(f"round {round_no + 1}/{args.rounds}: {path} at {rate} req/s")
                    result, cpu = await run_step(stack, clients, issuer_key, path, rate, args)
                    step = steps.setdefault((path, rate), Step())
                    step.runs.append(result)
                    step.cpu.update(cpu)
                    step.gateway_cpu_rounds.append(
                        round(cpu.get("gateway", 0.0) / max(result.answered, 1) * 1000, 3)
                    )
                    s = result.summary()
                    log(
                        "  achieved {achieved_rps}/s p50 {p50_ms} p99 {p99_ms} p99.9 {p999_ms} "
                        "max {max_ms} ms errors {errors} {outcomes}".format(**s)
                    )
                    await settle(stack)
        for path in paths:
            results[path] = {str(rate): summarize(steps[(path, rate)]) for rate in args.rates}
        if args.profile:
            work = stack.work / "profiles"
            work.mkdir()
            for path in [p for p in args.profile_paths if p in paths]:
                log(f"profiling the gateway: {path} at {args.profile_rate} req/s")
                result, cpu = await run_step(
                    stack, clients, issuer_key, path, args.profile_rate, args, profile="cprofile"
                )
                prof = _profile_stop(stack, work / f"{path}.prof")
                s = result.summary()
                profiles[path] = {
                    "rate": args.profile_rate,
                    "duration_s": args.profile_duration,
                    "latency_while_profiled (not comparable)": {
                        k: s[k] for k in ("p50_ms", "p99_ms", "errors")
                    },
                    **profile_digest(prof, max(result.answered, 1), cpu["gateway"], args.top),
                }
                await settle(stack)
                if args.py_spy:
                    log(f"sampling the gateway with py-spy: {path} at {args.profile_rate} req/s")
                    raw = work / f"{path}.py-spy.txt"
                    result, cpu = await run_step(
                        stack,
                        clients,
                        issuer_key,
                        path,
                        args.profile_rate,
                        args,
                        profile="py-spy",
                        samples=raw,
                    )
                    profiles[path]["py_spy"] = {
                        "gateway_cpu_us_per_request": round(
                            cpu["gateway"] / max(result.answered, 1) * 1e6, 1
                        ),
                        **pyspy_digest(raw, args.top),
                    }
                    await settle(stack)
                if args.keep_profiles:
                    kept = Path(args.keep_profiles)
                    kept.mkdir(parents=True, exist_ok=True)
                    for made in work.glob(f"{path}.*"):
                        shutil.copy(made, kept / made.name)
        nginx_source = stack.nginx_conf_source
        nginx_changes = stack.nginx_changes
    finally:
        stack.stop()
    extra = added(results)
    doc: dict[str, Any] = {
        "benchmark": "gateway added latency",
        "gateway_build": "as shipped"
        if not args.experiment
        else f"PATCHED at run time for an A/B experiment: {', '.join(args.experiment)}",
        "command": " ".join(["python", *sys.argv]),
        "machine": machine_info(load_at_start),
        "revision_at_start": rev,
        "config": {
            "rates": args.rates,
            "rounds": args.rounds,
            "duration_s_per_round": args.duration,
            "warmup_s_per_round": args.warmup,
            "connections": args.connections,
            "pool": args.pool,
            "paths": paths,
            "seed": args.seed,
            "experiments": args.experiment,
            "upstream": "examples/orders/service.py (uvicorn.run defaults), no --authority",
            "gateway": "coupon gateway, examples/orders/gateway.toml rendered (limits raised, "
            "public_url set), in-memory replay/limits/idempotency (no Redis), one process",
            "nginx": f"{NGINX}, 1 worker; {nginx_source}" if with_nginx else None,
            "nginx_changes_for_the_bench": nginx_changes if with_nginx else None,
            "authority": "coupon up, embedded",
            "generator": "open loop, asyncio streams, latency from the scheduled send time",
            "proofs": "pre-generated before each step, one per request; coupons cached",
        },
        "results": results,
        "added": extra,
        "targets": targets(results, extra),
    }
    if profiles:
        doc["profile"] = profiles
    return doc


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    parser.add_argument("--rates", type=int, nargs="+", default=[100, 200, 400])
    parser.add_argument("--rounds", type=int, default=2, help="interleaved rounds")
    parser.add_argument("--duration", type=float, default=5.0, help="seconds per step per round")
    parser.add_argument("--warmup", type=float, default=1.0, help="seconds before each step")
    parser.add_argument("--paths", nargs="+", choices=PATHS, default=list(PATHS))
    parser.add_argument("--pool", type=int, default=20, help="coupons (holder keys)")
    parser.add_argument("--connections", type=int, default=32, help="keep-alive connections")
    parser.add_argument("--seed", type=int, default=1, help="seed for the path order")
    parser.add_argument("--no-profile", dest="profile", action="store_false")
    parser.add_argument("--profile-rate", type=int, default=100)
    parser.add_argument(
        "--profile-paths", nargs="+", choices=PROFILED, default=list(PROFILED), metavar="PATH"
    )
    parser.add_argument("--profile-duration", type=float, default=5.0)
    parser.add_argument("--top", type=int, default=25, help="functions in each profile table")
    parser.add_argument("--keep-profiles", metavar="DIR", help="copy the .prof files here")
    parser.add_argument(
        "--py-spy",
        metavar="PATH",
        help="also sample each profiled path with this py-spy binary (not a project "
        "dependency), in a window of its own",
    )
    parser.add_argument(
        "--nginx-conf",
        choices=("shipped", "minimal"),
        default="shipped" if SHIPPED_NGINX_CONF.exists() else "minimal",
        help="deploy/nginx/coupon-edge.conf rendered (the default when it exists) or the "
        "bench's own minimal configuration",
    )
    parser.add_argument(
        "--experiment",
        action="append",
        choices=GATEWAY_EXPERIMENTS,
        default=[],
        help="A/B only: patch the gateway process at run time (see _GATEWAY_PRELUDE)",
    )
    parser.add_argument("--quick", action="store_true", help="a smoke run (< 1 min)")
    args = parser.parse_args(argv)
    if args.quick:
        args.rates = [100, 200]
        args.rounds = 1
        args.duration = 1.5
        args.warmup = 0.5
        args.pool = min(args.pool, 5)
        args.profile_duration = 2.0
        args.profile_paths = ["gateway_protected"]
    if args.warmup + max(args.duration, args.profile_duration) > 45:
        parser.error("DPoP proofs live 60 s: keep --warmup + --duration <= 45")
    if args.rounds < 1 or args.pool < 1 or any(r <= 0 for r in args.rates):
        parser.error("--rounds, --pool and --rates must be positive")
    return args


def main(argv: Sequence[str] | None = None) -> None:
    args = parse_args(argv)
    if not Path(NGINX).exists() and any(p.startswith("nginx") for p in args.paths):
        sys.exit(f"no nginx at {NGINX} (set BENCH_NGINX, or leave the nginx paths out)")
    doc = asyncio.run(main_async(args))
    print(human_table(doc), file=sys.stderr)
    json.dump(doc, sys.stdout, indent=2)
    sys.stdout.write("\n")


if __name__ == "__main__":
    main()
