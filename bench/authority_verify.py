"""Authority verify over HTTP at fixed rates, open loop, from another process.

The server is a ``coupon up`` subprocess (embedded: SQLite + in-process; production:
PostgreSQL + Redis); this script is the load generator (see ``bench/_loadgen.py``): requests
are scheduled at fixed intervals over persistent HTTP/1.1 connections and each latency runs
from the *scheduled* send time, so a slow server cannot hide behind a slower client.

Scenarios, each at every ``--rates`` step for ``--duration`` seconds after a warm-up:

- ``mtls``: ``x5t#S256``-bound coupons, ``certificate_thumbprint`` in the body, no proof: the
  Authority's verify path (API-key check, storm guard, signature, claims, scope, binding,
  revocation) plus the HTTP stack.
- ``dpop``: ``jkt``-bound coupons and a fresh DPoP proof per request (pre-generated right
  before each step, since proofs expire after 60 s): adds the proof's signature check and the
  replay store (in memory, or Redis ``SET NX``).
- ``healthz``: ``GET /healthz`` at the same rate: the floor of the HTTP stack, for ratios.

A pool of coupons (``--pool``, 500) with one subject per 5 coupons keeps the per-coupon and
per-subject storm limits (200/s, 1000/s) out of the way without changing them.

Usage::

    .venv/bin/python bench/authority_verify.py                       # embedded, 500/1000/2000
    .venv/bin/python bench/authority_verify.py --mode production
    .venv/bin/python bench/authority_verify.py --quick               # a smoke run
    .venv/bin/python bench/authority_verify.py --rates 1000 --scenarios mtls --profile

One JSON document goes to stdout; progress goes to stderr.
"""

from __future__ import annotations

import argparse
import asyncio
import io
import json
import os
import pstats
import secrets
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # run as a script

from bench._loadgen import (
    HttpResponse,
    RunResult,
    build_request,
    run_open_loop,
)
from bench._server import (
    CLEAN_EXIT,
    EXPERIMENTS,
    AuthorityProcess,
    ProductionBackends,
    create_api_key,
    issue_coupons,
    machine_info,
    start_authority,
    wait_ready,
)

from coupon.token import SigningKey, create_dpop_proof, new_jti

AUDIENCE = "orders-api"
TENANT = "acme"
RESOURCE_PATTERN = "orders/*"
RESOURCE = "orders/123"
ACTION = "read"
PURPOSE = "fulfilment"
HTM = "GET"
HTU = "https://orders.example/orders/123"
TTL = 300  # the builtin policy's cap
SCENARIOS = ("healthz", "mtls", "dpop")


def log(message: str) -> None:
    print(f"[authority_verify] {message}", file=sys.stderr, flush=True)


def classify_verify(response: HttpResponse) -> str:
    if response.status != 200:
        return f"http:{response.status}"
    if b'"allow":true' in response.body:
        return "ok"
    try:
        code = json.loads(response.body).get("code")
    except ValueError:
        code = "unparsable"
    return f"deny:{code}"


def classify_health(response: HttpResponse) -> str:
    return "ok" if response.status == 200 else f"http:{response.status}"


class Pool:
    """Coupons of one scenario and what is needed to present them."""

    def __init__(self, scenario: str, size: int) -> None:
        self.scenario = scenario
        self.size = size
        self.keys: list[SigningKey] = []
        self.thumbprints: list[str] = []
        self.coupons: list[str] = []
        self.expires_at = 0

    async def issue(self, url: str, issuer_key: str) -> None:
        bodies: list[dict[str, Any]] = []
        self.keys, self.thumbprints = [], []
        for i in range(self.size):
            if self.scenario == "dpop":
                key = SigningKey.generate()
                self.keys.append(key)
                binding = {"jkt": key.public.thumbprint}
            else:
                thumbprint = secrets.token_urlsafe(32)  # 43 base64url chars, like x5t#S256
                self.thumbprints.append(thumbprint)
                binding = {"x5t#S256": thumbprint}
            bodies.append(
                {
                    "subject": f"bench-subject-{i // 5}",
                    "audience": [AUDIENCE],
                    "tenant": TENANT,
                    "resource": RESOURCE_PATTERN,
                    "actions": [ACTION, "list"],
                    "purpose": PURPOSE,
                    "ttl": TTL,
                    "binding": binding,
                }
            )
        issued = await issue_coupons(url, issuer_key, bodies)
        self.coupons = [c["coupon"] for c in issued]
        self.expires_at = min(int(c["expires_at"]) for c in issued)

    def body(self, i: int) -> dict[str, Any]:
        k = i % self.size
        body: dict[str, Any] = {
            "coupon": self.coupons[k],
            "audience": AUDIENCE,
            "resource": RESOURCE,
            "action": ACTION,
            "purpose": PURPOSE,
            "tenant": TENANT,
        }
        if self.scenario == "dpop":
            body["dpop"] = create_dpop_proof(
                self.keys[k],
                method=HTM,
                uri=HTU,
                now=int(time.time()),
                jti=new_jti(),
                access_token=self.coupons[k],
            )
            body["htm"] = HTM
            body["htu"] = HTU
        else:
            body["certificate_thumbprint"] = self.thumbprints[k]
        return body


def verify_request(host: str, key: str, body: dict[str, Any]) -> bytes:
    return build_request(
        "POST",
        "/v1/coupons/verify",
        host,
        body=json.dumps(body, separators=(",", ":")).encode(),
        headers=[("X-API-Key", key), ("Content-Type", "application/json")],
    )


async def run_step(
    server: AuthorityProcess,
    scenario: str,
    pool: Pool | None,
    verifier_key: str,
    issuer_key: str,
    rate: int,
    args: argparse.Namespace,
) -> tuple[dict[str, Any], int, Path | None]:
    """Warm up, then measure one scenario at one rate.

    Returns the summary, the requests answered in the measured window, and the server's
    profile of that window (with ``--profile``).
    """
    host = f"{server.host}:{server.port}"
    warm_n = round(rate * args.warmup)
    n = round(rate * args.duration)
    make: Callable[[int], bytes]
    if scenario == "healthz":
        raw = build_request("GET", "/healthz", host)
        make = lambda _i: raw  # noqa: E731
    else:
        assert pool is not None
        if pool.expires_at - time.time() < args.warmup + args.duration + 40:
            log(f"issuing {pool.size} {scenario} coupons")
            await pool.issue(server.url, issuer_key)
        if scenario == "dpop":
            started = time.perf_counter()
            prebuilt = [verify_request(host, verifier_key, pool.body(i)) for i in range(warm_n + n)]
            log(f"  {len(prebuilt)} DPoP proofs built in {time.perf_counter() - started:.1f} s")
        else:
            prebuilt = [verify_request(host, verifier_key, pool.body(i)) for i in range(pool.size)]
        size = len(prebuilt)

        def make(i: int) -> bytes:
            return prebuilt[i % size]

    classify = classify_health if scenario == "healthz" else classify_verify
    common: dict[str, Any] = {
        "host": server.host,
        "port": server.port,
        "rate": float(rate),
        "classify": classify,
        "connections": args.connections,
        "timeout": 5.0,
        "drain": 10.0,
    }
    if warm_n:
        warm = await run_open_loop(duration=args.warmup, make_request=make, **common)
        bad = sum(n for label, n in warm.outcomes.items() if label != "ok")
        if bad:
            log(f"  warm-up: {dict(warm.outcomes)}")

    def measured(i: int) -> bytes:
        return make(warm_n + i)

    if server.profile_path is not None:
        server.profile_start()
    cpu0 = server.cpu_seconds()
    result: RunResult = await run_open_loop(duration=args.duration, make_request=measured, **common)
    cpu = server.cpu_seconds() - cpu0
    profile = None
    if server.profile_path is not None:
        profile = server.profile_stop().rename(f"{server.profile_path}.{scenario}.{rate}")
    summary = result.summary()
    summary["server_cpu_util"] = round(cpu / max(summary["elapsed_s"], 1e-9), 3)
    summary["server_cpu_ms_per_request"] = round(cpu / max(result.answered, 1) * 1000, 3)
    summary["non_allow"] = summary.pop("non_ok")
    return summary, result.answered, profile


async def settle(server: AuthorityProcess, *, idle: float = 0.15, limit: float = 60.0) -> None:
    """Wait until the server has worked off any backlog (under ``idle`` of a core for 0.5 s),
    so that an overloaded step does not bleed into the next one."""
    deadline = time.monotonic() + limit
    while time.monotonic() < deadline:
        cpu0 = server.cpu_seconds()
        await asyncio.sleep(0.5)
        if (server.cpu_seconds() - cpu0) / 0.5 < idle:
            return
    log("  the server did not settle")


def ratios(results: dict[str, dict[str, dict[str, Any]]]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    base = results.get("healthz", {})
    for scenario in ("mtls", "dpop"):
        for rate, step in results.get(scenario, {}).items():
            floor = base.get(rate)
            if floor and floor.get("p50_ms") and step.get("p50_ms"):
                out[f"{scenario}_over_healthz_p50_at_{rate}"] = round(
                    step["p50_ms"] / floor["p50_ms"], 2
                )
                out[f"{scenario}_over_healthz_p99_at_{rate}"] = round(
                    step["p99_ms"] / floor["p99_ms"], 2
                )
    for rate, step in results.get("dpop", {}).items():
        other = results.get("mtls", {}).get(rate)
        if other and other.get("p50_ms") and step.get("p50_ms"):
            out[f"dpop_over_mtls_p50_at_{rate}"] = round(step["p50_ms"] / other["p50_ms"], 2)
            out[f"dpop_over_mtls_p99_at_{rate}"] = round(step["p99_ms"] / other["p99_ms"], 2)
    for scenario in ("mtls", "dpop"):
        at_1000 = results.get(scenario, {}).get("1000")
        if at_1000 and at_1000.get("p99_ms") is not None:
            out[f"{scenario}_p99_at_1000_over_10ms_target"] = round(at_1000["p99_ms"] / 10.0, 3)
    return out


def targets(results: dict[str, dict[str, dict[str, Any]]]) -> dict[str, Any]:
    """The PRODUCT.md §5 checks at 1000 req/s (None when that step did not run)."""
    steps = [results.get(s, {}).get("1000") for s in ("mtls", "dpop")]
    ran: list[dict[str, Any]] = [s for s in steps if s is not None]
    if not ran:
        return {"p99_under_10ms_at_1000": None, "p99_under_3ms_at_1000": None}

    def under(limit: float) -> bool:
        return all(
            s["p99_ms"] is not None
            and s["p99_ms"] < limit
            and s["errors"] == 0
            and s["achieved_rps"] >= 0.97 * s["target_rps"]
            for s in ran
        )

    per: dict[str, Any] = {}
    for name, step in zip(("mtls", "dpop"), steps, strict=True):
        if step is not None:
            per[f"{name}_p99_under_10ms_at_1000"] = step["p99_ms"] < 10.0
            per[f"{name}_p99_under_3ms_at_1000"] = step["p99_ms"] < 3.0
    return {"p99_under_10ms_at_1000": under(10.0), "p99_under_3ms_at_1000": under(3.0), **per}


# Where the profiled thread's own time goes, by the file (or built-in) each function is in.
_COMPONENTS: tuple[tuple[str, tuple[str, ...]], ...] = (
    ("idle (epoll wait)", ("select.epoll",)),
    ("socket send/recv syscalls", ("_socket.socket",)),
    (
        "thread hand-offs (aiosqlite, anyio thread pool)",
        ("_thread.", "_queue.", "threading.py", "queue.py", "concurrent/", "aiosqlite/", "anyio/"),
    ),
    ("storage (SQLAlchemy, greenlet)", ("sqlalchemy/", "greenlet", "coupon/storage/")),
    ("HTTP parsing (uvicorn, h11)", ("uvicorn/", "h11/")),
    ("framework (FastAPI, Starlette, pydantic)", ("fastapi/", "starlette/", "pydantic")),
    (
        "tracing, metrics, logging",
        ("opentelemetry/", "prometheus_client/", "structlog/", "coupon/observability/"),
    ),
    (
        "crypto (signatures, hashes, random)",
        (
            "_sodium",
            "cryptography",
            "nacl/",
            "_hashlib",
            "hashlib",
            "urandom",
            "random.py",
            "secrets.py",
        ),
    ),
    ("coupon verifier (coupon.token)", ("coupon/token/",)),
    ("Authority code (coupon.authority)", ("coupon/authority/",)),
    ("JSON", ("json/", "_json")),
    ("asyncio event loop", ("asyncio/", "selectors.py", "_contextvars", "_asyncio")),
)


def _component(filename: str, name: str) -> str:
    where = f"{filename} {name}"
    for label, needles in _COMPONENTS:
        if any(needle in where for needle in needles):
            return label
    return "other (builtins, stdlib)"


def profile_digest(paths: list[Path], requests: int, top: int) -> dict[str, Any]:
    """The server's cProfile of measured windows: top functions by own and cumulative time,
    per answered request. Coroutine resumptions count as calls, and cumulative times of
    coroutines include time suspended: read ``own_us`` for costs."""
    stats = pstats.Stats(*[str(p) for p in paths], stream=io.StringIO())
    raw: dict[Any, Any] = stats.stats  # type: ignore[attr-defined]
    total = sum(v[2] for v in raw.values())
    rows = []
    for (filename, line, name), (_cc, ncalls, tottime, cumtime, _callers) in raw.items():
        short = filename.split("site-packages/")[-1].split("/src/")[-1].split("/lib/python3")[-1]
        rows.append((f"{short}:{line}({name})", ncalls, tottime, cumtime))

    def table(key: int) -> list[dict[str, Any]]:
        chosen = sorted(rows, key=lambda r: r[key], reverse=True)[:top]
        return [
            {
                "function": f,
                "calls_per_request": round(c / requests, 2),
                "own_us_per_request": round(t / requests * 1e6, 1),
                "own_share": round(t / total, 4) if total else None,
                "cum_us_per_request": round(cu / requests * 1e6, 1),
            }
            for f, c, t, cu in chosen
        ]

    components: dict[str, float] = {}
    for (filename, _line, name), (_cc, _n, tottime, _cum, _callers) in raw.items():
        label = _component(filename, name)
        components[label] = components.get(label, 0.0) + tottime
    busy = total - components.get("idle (epoll wait)", 0.0)
    by_component = [
        {
            "component": label,
            "own_us_per_request": round(t / requests * 1e6, 1),
            "share_of_busy": None if label.startswith("idle") else round(t / busy, 3),
        }
        for label, t in sorted(components.items(), key=lambda kv: kv[1], reverse=True)
    ]
    return {
        "requests": requests,
        "profiled_thread_us_per_request": round(total / requests * 1e6, 1),
        "busy_us_per_request": round(busy / requests * 1e6, 1),
        "by_component": by_component,
        "note": "cProfile inflates absolute costs; read the shares. Event-loop thread only.",
        "by_own_time": table(2),
        "by_cumulative_time": table(3),
    }


async def main_async(args: argparse.Namespace) -> dict[str, Any]:
    load_at_start = os.getloadavg()
    backends = await ProductionBackends.create() if args.mode == "production" else None
    env = {}
    if args.replay_limit:
        env["COUPON_REPLAY_LIMIT_PER_COUPON"] = str(args.replay_limit)
    profile_path = None
    if args.profile:
        profile_path = Path(tempfile.mkdtemp(prefix="coupon-prof-")) / "server.prof"
    server = None
    results: dict[str, dict[str, dict[str, Any]]] = {}
    profiles: dict[str, tuple[list[Path], list[int]]] = {}
    try:
        server = start_authority(
            args.mode,
            backends=backends,
            env=env,
            profile_path=profile_path,
            experiments=args.experiment,
        )
        log(f"{args.mode} Authority on {server.url} (pid {server.pid})")
        await wait_ready(server.url)
        admin = server.admin_key
        verifier_key = await create_api_key(server.url, admin, "bench-verifier", ["verifier"])
        issuer_key = await create_api_key(server.url, admin, "bench-issuer", ["issuer"])
        for scenario in args.scenarios:
            pool = None if scenario == "healthz" else Pool(scenario, args.pool)
            results[scenario] = {}
            for rate in args.rates:
                log(f"{scenario} at {rate} req/s for {args.duration} s")
                summary, answered, profile = await run_step(
                    server, scenario, pool, verifier_key, issuer_key, rate, args
                )
                if profile is not None:
                    profiles.setdefault(scenario, ([], [0]))[0].append(profile)
                    profiles[scenario][1][0] += answered
                results[scenario][str(rate)] = summary
                log(
                    "  achieved {achieved_rps}/s p50 {p50_ms} p99 {p99_ms} p99.9 {p999_ms} "
                    "max {max_ms} ms errors {errors} non-allow {non_allow} server cpu "
                    "{server_cpu_util}".format(**summary)
                )
                await asyncio.sleep(args.cooldown)
                await settle(server)
    finally:
        if server is not None:
            code = server.stop()
            if code not in CLEAN_EXIT:
                log(f"server exited with {code}: {server.log_tail()}")
        if backends is not None:
            await backends.drop()
    doc: dict[str, Any] = {
        "benchmark": "authority_verify",
        "mode": args.mode,
        "server": "as shipped"
        if not args.experiment
        else f"PATCHED at run time for an A/B experiment: {', '.join(args.experiment)}",
        "machine": machine_info(load_at_start),
        "config": {
            "rates": args.rates,
            "duration_s": args.duration,
            "warmup_s": args.warmup,
            "connections": args.connections,
            "pool": args.pool,
            "subjects": (args.pool + 4) // 5,
            "scenarios": args.scenarios,
            "replay_limit_per_coupon": args.replay_limit or "default (200/s)",
            "profiled": bool(args.profile),
            "experiments": args.experiment,
            "generator": "open loop, asyncio streams, latency from the scheduled send time",
        },
        "results": results,
        "ratios": ratios(results),
        "targets": targets(results),
    }
    if profiles:
        doc["profile"] = {
            scenario: profile_digest(paths, count[0], args.profile_top)
            for scenario, (paths, count) in profiles.items()
            if count[0]
        }
        log(f"profiles kept in {profile_path.parent if profile_path else '?'}")
    return doc


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--mode", choices=("embedded", "production"), default="embedded")
    parser.add_argument("--rates", type=int, nargs="+", default=[500, 1000, 2000])
    parser.add_argument("--duration", type=float, default=10.0, help="seconds per step")
    parser.add_argument("--warmup", type=float, default=2.0, help="seconds before each step")
    parser.add_argument("--cooldown", type=float, default=1.0, help="seconds between steps")
    parser.add_argument("--scenarios", nargs="+", choices=SCENARIOS, default=list(SCENARIOS))
    parser.add_argument("--pool", type=int, default=500, help="coupons per scenario")
    parser.add_argument("--connections", type=int, default=64, help="keep-alive connections")
    parser.add_argument(
        "--replay-limit", type=int, default=0, help="COUPON_REPLAY_LIMIT_PER_COUPON (0: default)"
    )
    parser.add_argument(
        "--profile", action="store_true", help="profile the server's measured windows (cProfile)"
    )
    parser.add_argument("--profile-top", type=int, default=30)
    parser.add_argument(
        "--experiment",
        action="append",
        choices=EXPERIMENTS,
        default=[],
        help="A/B only: patch the server process at run time (see bench/_server.py)",
    )
    parser.add_argument("--quick", action="store_true", help="a short smoke run")
    args = parser.parse_args(argv)
    if args.quick:
        args.rates = [500, 1000]
        args.duration = 2.0
        args.warmup = 0.5
        args.cooldown = 0.2
        args.pool = min(args.pool, 100)
    if "dpop" in args.scenarios and args.warmup + args.duration > 45:
        parser.error("dpop proofs live 60 s: keep --warmup + --duration <= 45")
    if args.pool < 1 or args.duration <= 0 or any(r <= 0 for r in args.rates):
        parser.error("--pool, --duration and --rates must be positive")
    return args


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    doc = asyncio.run(main_async(args))
    json.dump(doc, sys.stdout, indent=2)
    sys.stdout.write("\n")


if __name__ == "__main__":
    main()
