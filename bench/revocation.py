"""Revocation propagation: revoke -> received by every SSE subscriber, and denied by a verifier.

``--subscribers`` processes (default 4, each a separate Python process running this script in
``--subscriber`` mode) follow ``GET /v1/revocations/stream``; in production mode a second
Authority process shares PostgreSQL and Redis with the first, half the subscribers follow it,
and a poller verifies a coupon of the revoked lineage on it until it is denied
(``CPN-REV-001``). In embedded mode there is one process: the poller verifies on it (the
revoking process enforces before it answers, so this channel checks the acknowledgement).

For each of ``--count`` revocations, one at a time: the poller starts verifying the lineage's
coupon (allowed until then), the clock starts, ``POST /v1/revocations`` (kind ``lineage``) is
sent, and the script waits until every subscriber has reported the event and the poller has
seen the denial (or ``--timeout``). Subscribers time-stamp an event when they parse it, with
``time.monotonic()`` (CLOCK_MONOTONIC, one clock for every process on the machine).

Channels: ``sse@A``/``sse@B`` (subscribers of each process), ``verify@B`` (or ``verify@A``:
when the denial's answer arrived; ``...:first_denied_request_sent`` is when that poll left,
i.e. propagation to within one poll), ``revoke_ack`` (the revoke call's own latency) and
``every_verifier`` (per revocation, the slowest of all channels: "rejected at every
verifier"). Targets (PRODUCT.md §5): p99 < 2 s (seed), aim < 250 ms.

Usage::

    .venv/bin/python bench/revocation.py                       # embedded, 4 subscribers, 200
    .venv/bin/python bench/revocation.py --mode production
    .venv/bin/python bench/revocation.py --quick

One JSON document goes to stdout; progress goes to stderr.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import random
import secrets
import signal
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # run as a script

from bench._loadgen import HttpConnection, build_request, latency_summary
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

from coupon.authority._sse import SseParser, revocation_from_sse

AUDIENCE = "orders-api"
REVOKED_CODE = "CPN-REV-001"


def log(message: str) -> None:
    print(f"[revocation] {message}", file=sys.stderr, flush=True)


# -- subscriber process --------------------------------------------------------------------------


async def subscriber_main(url: str, key: str, after: int, max_seconds: float) -> None:
    """Follow the SSE stream; print one JSON line per revocation, with its arrival time."""
    host_port = url.split("://", 1)[1].rstrip("/")
    host, port = host_port.rsplit(":", 1)
    conn = await HttpConnection.open(host, int(port))
    raw = build_request(
        "GET",
        f"/v1/revocations/stream?after={after}",
        host_port,
        headers=[("X-API-Key", key), ("Accept", "text/event-stream")],
    )
    parser = SseParser()
    ready = False
    async with asyncio.timeout(max_seconds):
        status, chunks = await conn.stream(raw)
        if status != 200:
            print(json.dumps({"error": f"status {status}"}), flush=True)
            return
        async for chunk in chunks:
            events = parser.feed(chunk.decode("utf-8"))
            now = time.monotonic()
            if not ready and parser.comments:
                ready = True
                print(json.dumps({"ready": True}), flush=True)
            for event in events:
                if event.event != "revocation":
                    continue
                record = revocation_from_sse(event)
                line = {"value": record.value, "seq": record.seq, "t": now}
                print(json.dumps(line), flush=True)


# -- the benchmark -------------------------------------------------------------------------------


@dataclass
class Subscriber:
    index: int
    authority: str  # "A" or "B"
    proc: asyncio.subprocess.Process
    arrivals: dict[str, float] = field(default_factory=dict)
    ready: asyncio.Event = field(default_factory=asyncio.Event)
    reader: asyncio.Task[None] | None = None

    @property
    def channel(self) -> str:
        return f"sse@{self.authority}"


async def _read_subscriber(sub: Subscriber, changed: asyncio.Event) -> None:
    assert sub.proc.stdout is not None
    while line := await sub.proc.stdout.readline():
        msg = json.loads(line)
        if msg.get("ready"):
            sub.ready.set()
        elif "value" in msg:
            sub.arrivals.setdefault(msg["value"], float(msg["t"]))
            changed.set()
        elif "error" in msg:
            log(f"subscriber {sub.index}: {msg['error']}")


async def start_subscriber(
    index: int, authority: str, url: str, key: str, after: int, max_seconds: float
) -> Subscriber:
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        str(Path(__file__).resolve()),
        "--subscriber",
        url,
        "--key",
        key,
        "--after",
        str(after),
        "--max-seconds",
        str(max_seconds),
        stdin=asyncio.subprocess.DEVNULL,
        stdout=asyncio.subprocess.PIPE,
    )
    return Subscriber(index, authority, proc)


class Poller:
    """Verifies one coupon on one Authority, back to back, until it is denied."""

    def __init__(self, server: AuthorityProcess, key: str, interval: float) -> None:
        self.server = server
        self.key = key
        self.interval = interval
        self.conn: HttpConnection | None = None
        self.rtts: list[float] = []

    def request(self, coupon: str, thumbprint: str) -> bytes:
        body = {
            "coupon": coupon,
            "audience": AUDIENCE,
            "resource": "orders/1",
            "action": "read",
            "certificate_thumbprint": thumbprint,
        }
        return build_request(
            "POST",
            "/v1/coupons/verify",
            f"{self.server.host}:{self.server.port}",
            body=json.dumps(body).encode(),
            headers=[("X-API-Key", self.key), ("Content-Type", "application/json")],
        )

    async def verify(self, raw: bytes) -> tuple[str, float]:
        """("allow" or the denial code or "http:<status>", the monotonic send time)."""
        if self.conn is None or self.conn.closed:
            self.conn = await HttpConnection.open(self.server.host, self.server.port)
        sent = time.monotonic()
        response = await self.conn.request(raw)
        self.rtts.append(time.monotonic() - sent)
        if response.status != 200:
            return f"http:{response.status}", sent
        answer = json.loads(response.body)
        return ("allow" if answer.get("allow") else str(answer.get("code"))), sent

    async def until_denied(self, raw: bytes, deadline: float) -> tuple[float, float] | None:
        """Poll until ``deadline``; (send time, answer time) of the first revocation denial."""
        while time.monotonic() < deadline:
            outcome, sent = await self.verify(raw)
            if outcome == REVOKED_CODE:
                return sent, time.monotonic()
            if outcome != "allow":
                log(f"poller: unexpected answer {outcome}")
            await asyncio.sleep(self.interval)
        return None


async def post_json(conn: HttpConnection, host: str, path: str, key: str, body: Any) -> Any:
    raw = build_request(
        "POST",
        path,
        host,
        body=json.dumps(body).encode(),
        headers=[("X-API-Key", key), ("Content-Type", "application/json")],
    )
    response = await conn.request(raw)
    if response.status not in (200, 201):
        raise RuntimeError(f"{path}: {response.status} {response.body[:300]!r}")
    return json.loads(response.body)


def channel_summary(values: list[float | None]) -> dict[str, Any]:
    got = [v for v in values if v is not None]
    return {**latency_summary(got), "n": len(got), "missed": len(values) - len(got)}


async def main_async(args: argparse.Namespace) -> dict[str, Any]:
    load_at_start = os.getloadavg()
    backends = await ProductionBackends.create() if args.mode == "production" else None
    env = {"COUPON_REPLAY_LIMIT_PER_COUPON": "100000"}  # the poller verifies one coupon often
    servers: list[AuthorityProcess] = []
    subscribers: list[Subscriber] = []
    try:
        a = start_authority(args.mode, backends=backends, env=env, experiments=args.experiment)
        servers.append(a)
        await wait_ready(a.url)
        if args.mode == "production":
            b = start_authority(args.mode, backends=backends, env=env, experiments=args.experiment)
            servers.append(b)
            await wait_ready(b.url)
        log(", ".join(f"{s.url} (pid {s.pid})" for s in servers))
        names = ["A", "B"][: len(servers)]
        issuer = await create_api_key(a.url, a.admin_key, "bench-revoker", ["issuer"])
        verifier = await create_api_key(a.url, a.admin_key, "bench-poller", ["verifier"])
        thumbprints = [secrets.token_urlsafe(32) for _ in range(args.count)]
        bodies = [
            {
                "subject": f"bench-rev-{i}",
                "audience": [AUDIENCE],
                "tenant": "acme",
                "resource": "orders/*",
                "actions": ["read"],
                "purpose": "fulfilment",
                "ttl": 300,
                "binding": {"x5t#S256": thumbprints[i]},
            }
            for i in range(args.count)
        ]
        issued = await issue_coupons(a.url, issuer, bodies)
        log(f"issued {len(issued)} coupons")
        async with httpx.AsyncClient(base_url=a.url, timeout=10) as client:
            page = (await client.get("/v1/revocations", headers={"X-API-Key": verifier})).json()
        cursor = int(page["cursor"])
        max_seconds = 60.0 + args.count * (args.timeout + args.gap_max)
        changed = asyncio.Event()
        for i in range(args.subscribers):
            where = names[i % len(names)]
            server = servers[i % len(servers)]
            sub = await start_subscriber(i, where, server.url, verifier, cursor, max_seconds)
            sub.reader = asyncio.create_task(_read_subscriber(sub, changed))
            subscribers.append(sub)
        async with asyncio.timeout(30):
            await asyncio.gather(*(s.ready.wait() for s in subscribers))
        log(f"{len(subscribers)} subscribers connected")
        target = servers[-1]
        poller = Poller(target, verifier, args.poll_interval)
        poll_channel = f"verify@{names[-1]}"
        poll_sent = f"{poll_channel}:first_denied_request_sent"
        conn = await HttpConnection.open(a.host, a.port)
        a_host = f"{a.host}:{a.port}"
        rows: list[dict[str, Any]] = []
        for i, coupon in enumerate(issued):
            lineage = coupon["lineage"]
            raw = poller.request(coupon["coupon"], thumbprints[i])
            before, _ = await poller.verify(raw)
            if before != "allow":
                raise RuntimeError(f"coupon {i} not allowed before its revocation: {before}")
            t0 = time.monotonic()
            deadline = t0 + args.timeout
            poll = asyncio.create_task(poller.until_denied(raw, deadline))
            await post_json(
                conn,
                a_host,
                "/v1/revocations",
                issuer,
                {"kind": "lineage", "value": lineage, "reason": "benchmark"},
            )
            t_ack = time.monotonic()
            while time.monotonic() < deadline and not all(
                lineage in s.arrivals for s in subscribers
            ):
                changed.clear()
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(max(0.0, deadline - time.monotonic())):
                        await changed.wait()
            denied = await poll
            row: dict[str, Any] = {"revoke_ack": t_ack - t0, poll_channel: None, poll_sent: None}
            if denied is not None:
                row[poll_sent] = max(denied[0] - t0, 0.0)
                row[poll_channel] = max(denied[1] - t0, 0.0)
            for s in subscribers:
                got = s.arrivals.get(lineage)
                row[f"sub{s.index}"] = None if got is None else max(got - t0, 0.0)
            rows.append(row)
            if (i + 1) % 50 == 0:
                log(f"  {i + 1}/{len(issued)} revoked")
            await asyncio.sleep(random.uniform(args.gap_min, args.gap_max))
        await conn.close()
        if poller.conn is not None:
            await poller.conn.close()
    finally:
        for s in subscribers:
            if s.proc.returncode is None:
                s.proc.send_signal(signal.SIGTERM)
        for s in subscribers:
            with contextlib.suppress(TimeoutError, ProcessLookupError):
                async with asyncio.timeout(5):
                    await s.proc.wait()
            if s.proc.returncode is None:
                s.proc.kill()
            if s.reader is not None:
                s.reader.cancel()
        for server in servers:
            code = server.stop()
            if code not in CLEAN_EXIT:
                log(f"server exited with {code}: {server.log_tail()}")
        if backends is not None:
            await backends.drop()

    channels: dict[str, Any] = {}
    per_subscriber: dict[str, Any] = {}
    for s in subscribers:
        values = [r[f"sub{s.index}"] for r in rows]
        per_subscriber[f"sub{s.index}@{s.authority}"] = channel_summary(values)
    for name in sorted({s.channel for s in subscribers}):
        values = [r[f"sub{s.index}"] for r in rows for s in subscribers if s.channel == name]
        channels[name] = channel_summary(values)
    channels[poll_channel] = channel_summary([r[poll_channel] for r in rows])
    channels[poll_sent] = channel_summary([r[poll_sent] for r in rows])
    worst: list[float | None] = []
    for r in rows:
        parts = [v for k, v in r.items() if k not in ("revoke_ack", poll_sent)]
        worst.append(None if any(v is None for v in parts) else max(parts))
    channels["every_verifier"] = channel_summary(worst)
    channels["revoke_ack"] = channel_summary([r["revoke_ack"] for r in rows])
    every = channels["every_verifier"]
    p99 = every["p99_ms"]
    return {
        "benchmark": "revocation",
        "mode": args.mode,
        "server": "as shipped"
        if not args.experiment
        else f"PATCHED at run time for an A/B experiment: {', '.join(args.experiment)}",
        "machine": machine_info(load_at_start),
        "config": {
            "count": args.count,
            "subscribers": args.subscribers,
            "authorities": len(servers),
            "kind": "lineage",
            "poll_interval_ms": args.poll_interval * 1000,
            "poll_rtt_p50_ms": latency_summary(poller.rtts)["p50_ms"],
            "gap_ms": [args.gap_min * 1000, args.gap_max * 1000],
            "timeout_s": args.timeout,
            "clock": "time.monotonic (CLOCK_MONOTONIC, shared by the processes)",
            "start": "just before POST /v1/revocations is written",
        },
        "channels": channels,
        "per_subscriber": per_subscriber,
        "targets": {
            "p99_under_2s": p99 is not None and p99 < 2000 and every["missed"] == 0,
            "p99_under_250ms": p99 is not None and p99 < 250 and every["missed"] == 0,
            "p99_over_250ms_aim": None if p99 is None else round(p99 / 250.0, 3),
        },
    }


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--mode", choices=("embedded", "production"), default="embedded")
    parser.add_argument("--subscribers", type=int, default=4)
    parser.add_argument("--count", type=int, default=200, help="revocations")
    parser.add_argument("--timeout", type=float, default=5.0, help="seconds per revocation")
    parser.add_argument("--poll-interval", type=float, default=0.0005, help="seconds")
    parser.add_argument("--gap-min", type=float, default=0.01, help="seconds between revokes")
    parser.add_argument("--gap-max", type=float, default=0.03)
    parser.add_argument("--quick", action="store_true", help="a short smoke run")
    parser.add_argument(
        "--experiment",
        action="append",
        choices=EXPERIMENTS,
        default=[],
        help="A/B only: patch the server processes at run time (see bench/_server.py)",
    )
    parser.add_argument("--subscriber", metavar="URL", help=argparse.SUPPRESS)
    parser.add_argument("--key", help=argparse.SUPPRESS)
    parser.add_argument("--after", type=int, default=0, help=argparse.SUPPRESS)
    parser.add_argument("--max-seconds", type=float, default=600.0, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.quick:
        args.count = min(args.count, 20)
        args.subscribers = min(args.subscribers, 2)
    if args.count < 1 or args.subscribers < 1:
        parser.error("--count and --subscribers must be positive")
    return args


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    if args.subscriber:
        with contextlib.suppress(KeyboardInterrupt, TimeoutError, BrokenPipeError):
            signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
            asyncio.run(subscriber_main(args.subscriber, args.key, args.after, args.max_seconds))
        return
    doc = asyncio.run(main_async(args))
    json.dump(doc, sys.stdout, indent=2)
    sys.stdout.write("\n")


if __name__ == "__main__":
    main()
