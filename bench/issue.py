"""Issue with policy: ``POST /v1/coupons`` at increasing concurrency, closed loop.

The server is a ``coupon up`` subprocess (embedded or production); this script drives it
with ``--concurrency`` callers (1, 4, 16), each sending its next request when the previous
answer arrives, for ``--duration`` seconds per level after a warm-up. Every issue runs the
whole path: API-key check, Rego policy under its deadline, signing, and the durable commit
of the coupon record with its signed audit event (SQLite with synchronous=FULL, or
PostgreSQL), so the figures include a commit per request.

Requests alternate between ``jkt`` and ``x5t#S256`` bindings and spread over 100 subjects.
They carry an admin key: binding a certificate other than the caller's own needs admin since
the Authority knows mTLS callers (ADR 0012), and the bench binds made-up thumbprints.

Usage::

    .venv/bin/python bench/issue.py                        # embedded, 1/4/16 for 10 s each
    .venv/bin/python bench/issue.py --mode production
    .venv/bin/python bench/issue.py --quick
    .venv/bin/python bench/issue.py --concurrency 4 --duration 6 --profile --experiment nodelay

One JSON document goes to stdout; progress goes to stderr.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import secrets
import sys
import tempfile
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # run as a script

from bench._loadgen import HttpResponse, build_request, run_closed_loop
from bench._server import (
    CLEAN_EXIT,
    EXPERIMENTS,
    ProductionBackends,
    create_api_key,
    machine_info,
    start_authority,
    wait_ready,
)
from bench.authority_verify import profile_digest


def log(message: str) -> None:
    print(f"[issue] {message}", file=sys.stderr, flush=True)


def classify(response: HttpResponse) -> str:
    return "ok" if response.status == 201 else f"http:{response.status}"


def make_requests(host: str, key: str, n: int) -> list[bytes]:
    """``n`` distinct issue requests (prebuilt; the generator cycles through them)."""
    out = []
    for i in range(n):
        thumbprint = secrets.token_urlsafe(32)
        binding = {"jkt": thumbprint} if i % 2 else {"x5t#S256": thumbprint}
        body = {
            "subject": f"bench-issue-{i % 100}",
            "audience": ["orders-api"],
            "tenant": "acme",
            "resource": "orders/*",
            "actions": ["read", "list"],
            "purpose": "fulfilment",
            "ttl": 300,
            "binding": binding,
        }
        out.append(
            build_request(
                "POST",
                "/v1/coupons",
                host,
                body=json.dumps(body, separators=(",", ":")).encode(),
                headers=[("X-API-Key", key), ("Content-Type", "application/json")],
            )
        )
    return out


async def main_async(args: argparse.Namespace) -> dict[str, Any]:
    load_at_start = os.getloadavg()
    backends = await ProductionBackends.create() if args.mode == "production" else None
    server = None
    results: dict[str, Any] = {}
    profiles: dict[str, Any] = {}
    try:
        profile_path = None
        if args.profile:
            profile_path = Path(tempfile.mkdtemp(prefix="coupon-prof-")) / "server.prof"
        server = start_authority(
            args.mode, backends=backends, experiments=args.experiment, profile_path=profile_path
        )
        log(f"{args.mode} Authority on {server.url} (pid {server.pid})")
        await wait_ready(server.url)
        issuer = await create_api_key(server.url, server.admin_key, "bench-issuer", ["admin"])
        requests = make_requests(f"{server.host}:{server.port}", issuer, 1000)

        def make(i: int) -> bytes:
            return requests[i % len(requests)]

        for concurrency in args.concurrency:
            common: dict[str, Any] = {
                "host": server.host,
                "port": server.port,
                "concurrency": concurrency,
                "make_request": make,
                "classify": classify,
                "max_requests": args.max_requests,
            }
            if args.warmup > 0:
                await run_closed_loop(duration=args.warmup, **common)
            if server.profile_path is not None:
                server.profile_start()
            cpu0 = server.cpu_seconds()
            result = await run_closed_loop(duration=args.duration, **common)
            cpu = server.cpu_seconds() - cpu0
            if server.profile_path is not None and result.answered:
                path = server.profile_stop()
                profiles[str(concurrency)] = profile_digest(
                    [path], result.answered, args.profile_top
                )
            summary = result.summary()
            summary["issues_per_s"] = summary.pop("ok_per_s")
            summary["server_cpu_util"] = round(cpu / max(summary["elapsed_s"], 1e-9), 3)
            summary["server_cpu_ms_per_request"] = round(cpu / max(result.answered, 1) * 1000, 3)
            results[str(concurrency)] = summary
            log(
                "concurrency {concurrency}: {issues_per_s} issues/s p50 {p50_ms} p99 {p99_ms} "
                "p99.9 {p999_ms} max {max_ms} ms errors {errors} server cpu "
                "{server_cpu_util}".format(**summary)
            )
            await asyncio.sleep(args.cooldown)
    finally:
        if server is not None:
            code = server.stop()
            if code not in CLEAN_EXIT:
                log(f"server exited with {code}: {server.log_tail()}")
        if backends is not None:
            await backends.drop()
    ratios: dict[str, Any] = {}
    one = results.get("1")
    for level, step in results.items():
        if one and level != "1" and one["issues_per_s"]:
            ratios[f"throughput_{level}_over_1"] = round(
                step["issues_per_s"] / one["issues_per_s"], 2
            )
            ratios[f"p99_{level}_over_1"] = round(step["p99_ms"] / one["p99_ms"], 2)
    return {
        "benchmark": "issue",
        "mode": args.mode,
        "server": "as shipped"
        if not args.experiment
        else f"PATCHED at run time for an A/B experiment: {', '.join(args.experiment)}",
        "machine": machine_info(load_at_start),
        "config": {
            "concurrency": args.concurrency,
            "duration_s": args.duration,
            "warmup_s": args.warmup,
            "generator": "closed loop, asyncio streams, one keep-alive connection per caller",
            "policy": "builtin-1 (Rego, in-process)",
        },
        "results": results,
        "ratios": ratios,
        **({"profile": profiles} if profiles else {}),
    }


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--mode", choices=("embedded", "production"), default="embedded")
    parser.add_argument("--concurrency", type=int, nargs="+", default=[1, 4, 16])
    parser.add_argument("--duration", type=float, default=10.0, help="seconds per level")
    parser.add_argument("--warmup", type=float, default=1.0, help="seconds before each level")
    parser.add_argument("--cooldown", type=float, default=1.0)
    parser.add_argument("--max-requests", type=int, default=200_000, help="bound per level")
    parser.add_argument("--quick", action="store_true", help="a short smoke run")
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
    args = parser.parse_args(argv)
    if args.quick:
        args.duration = 2.0
        args.warmup = 0.3
        args.cooldown = 0.2
    if args.duration <= 0 or any(c < 1 for c in args.concurrency):
        parser.error("--duration and --concurrency must be positive")
    return args


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    doc = asyncio.run(main_async(args))
    json.dump(doc, sys.stdout, indent=2)
    sys.stdout.write("\n")


if __name__ == "__main__":
    main()
