"""The cost of ``CouponMiddleware`` per request, in process: no network, no server.

One ASGI request is one call of the app with a prebuilt scope, ``receive`` and ``send`` that
return at once; the coroutine is driven to its end with ``send(None)`` (nothing in it waits
for I/O), so what is timed is the middleware and the app, not an event loop. Cases:

- ``bare``: the app alone (answers 200 "ok"): the floor;
- ``passthrough``: the app behind the middleware, on a path the route table does not
  protect (the table lookup and nothing else);
- ``cold``: a protected route, a coupon never seen before by this verifier and a fresh DPoP
  proof: parse, issuer signature, chain, time, audience, scope, the proof (its own signature,
  ``htm``/``htu``/``ath``/``iat``), replay store, revocation, then the app;
- ``cached``: the same coupon again with a fresh proof. ``coupon.token.Verifier`` caches the
  parse + signature + chain result per token string (``_verify.py``: ``_checked``); the DPoP
  proof is new on every request and is always verified, so this is the best case a
  DPoP-bound coupon gets;
- ``verifier_cold`` / ``verifier_cached``: ``Verifier.verify`` alone with the same inputs as
  ``cold`` / ``cached`` (its own ``Request``), to separate the verifier from the middleware's
  own work (reading headers, the ``Request``, ``htu``, the request id, the state);
- ``denied_no_coupon``: a protected route without ``Authorization``: the 401 answer with its
  challenge, a problem+json body and the log line.

The verifier is a ``coupon.token.Verifier`` over a fixed ``KeySet`` with an issuer
allow-list, an in-memory replay store and 200 unrelated revocations (the gateway's
``LocalVerifier`` wraps the same ``Verifier``; its key and revocation sync are not on the
request path). Inputs (coupons, proofs, scopes) are built before each batch; calls are timed
one by one with ``time.perf_counter_ns``, the garbage collector off while timing, in
``--rounds`` rounds whose case order is shuffled (seeded) so that machine noise lands on all
cases alike (``bench/verify.py``'s method and helpers).

Usage::

    .venv/bin/python bench/middleware.py              # 3000 timed calls per case, ~10 s
    .venv/bin/python bench/middleware.py --quick      # a smoke run
    .venv/bin/python bench/middleware.py --iterations 20000

One JSON document goes to stdout; progress and a short table go to stderr.
"""

from __future__ import annotations

import argparse
import functools
import hashlib
import json
import os
import random
import sys
import time
from collections.abc import Awaitable, Callable, Coroutine, MutableMapping, Sequence
from pathlib import Path
from typing import Any

from cryptography.hazmat.primitives.asymmetric import ed25519

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # run as a script

from bench.verify import _machine, _summary, _time_ops, _timer_overhead_ns

from coupon.middleware import CouponMiddleware, Requirement
from coupon.observability import configure_logging
from coupon.token import (
    Binding,
    KeySet,
    MemoryReplayStore,
    MemoryRevocations,
    Request,
    SigningKey,
    Verifier,
    create_dpop_proof,
    mint,
    new_jti,
)

ISSUER = "https://authority.example"
AUDIENCE = "orders"
TENANT = "acme"
PUBLIC_URL = "https://orders.example"
PATH = "/orders/123"
HTU = PUBLIC_URL + PATH
TTL = 3600
CASES = (
    "bare",
    "passthrough",
    "cold",
    "cached",
    "verifier_cold",
    "verifier_cached",
    "denied_no_coupon",
)
Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
Op = Callable[[], object]


def _seed_key(label: str) -> SigningKey:
    raw = hashlib.sha256(f"coupon-bench:{label}".encode()).digest()
    return SigningKey(ed25519.Ed25519PrivateKey.from_private_bytes(raw), kid=label)


async def _receive() -> Message:
    return {"type": "http.request", "body": b"", "more_body": False}


class _Recorder:
    """The ``send`` of one request: keeps the status."""

    __slots__ = ("status",)

    def __init__(self) -> None:
        self.status = 0

    async def __call__(self, message: Message) -> None:
        if message["type"] == "http.response.start":
            self.status = message["status"]


async def bare_app(scope: Scope, receive: Receive, send: Send) -> None:
    """The protected service: 200 "ok", nothing else."""
    await send(
        {"type": "http.response.start", "status": 200, "headers": [(b"content-length", b"2")]}
    )
    await send({"type": "http.response.body", "body": b"ok"})


def _drive(coro: Coroutine[Any, Any, None]) -> None:
    """Run a coroutine that never suspends (every await here returns at once)."""
    try:
        coro.send(None)
    except StopIteration:
        return
    coro.close()
    raise RuntimeError("the ASGI call suspended; the bench expects it not to")


def _call(app: Any, scope: Scope) -> int:
    send = _Recorder()
    _drive(app(scope, _receive, send))
    return send.status


def _verify(verifier: Verifier, token: str, request: Request) -> int:
    verifier.verify(token, request)
    return 200


class World:
    """Keys, the verifier, the middleware and the input builders (nothing here is timed)."""

    def __init__(self) -> None:
        self.issuer = _seed_key("issuer")
        self.holder = _seed_key("holder")
        revoked = MemoryRevocations()
        for i in range(100):
            revoked.jtis[f"revoked-{i}"] = "bench"
            revoked.subjects[f"gone-{i}"] = (0, "bench")
        routes = [
            ("GET", "/orders/{order_id}", Requirement(resource="orders/{order_id}", action="read"))
        ]
        self.verifiers: dict[str, Verifier] = {}
        self.apps: dict[str, Any] = {}
        for case in CASES:
            verifier = Verifier(
                KeySet([self.issuer.public]),
                issuers=[ISSUER],
                replay=MemoryReplayStore(capacity=10_000_000),
                revocations=revoked,
            )
            self.verifiers[case] = verifier
            self.apps[case] = CouponMiddleware(
                bare_app,
                verifier=verifier,
                audience=AUDIENCE,
                routes=routes,
                public_url=PUBLIC_URL,
            )
        self.apps["bare"] = bare_app
        self.cached_token = {case: self._mint() for case in ("cached", "verifier_cached")}
        # Prime the caches: the cached cases measure repeat presentations only.
        self.verifiers["cached"].verify(
            self.cached_token["cached"], self._request(self.cached_token["cached"])
        )
        self.verifiers["verifier_cached"].verify(
            self.cached_token["verifier_cached"],
            self._request(self.cached_token["verifier_cached"]),
        )

    def _mint(self) -> str:
        return mint(
            self.issuer,
            issuer=ISSUER,
            subject="svc-client",
            audience=AUDIENCE,
            tenant=TENANT,
            resource="orders/*",
            actions=["read"],
            purpose="fulfilment",
            binding=Binding(jkt=self.holder.public.thumbprint),
            ttl=TTL,
            now=int(time.time()),
        )

    def _proof(self, token: str) -> str:
        return create_dpop_proof(
            self.holder,
            method="GET",
            uri=HTU,
            now=int(time.time()),
            jti=new_jti(),
            access_token=token,
        )

    def _request(self, token: str) -> Request:
        return Request(
            audience=AUDIENCE,
            resource="orders/123",
            action="read",
            method="GET",
            uri=HTU,
            dpop=self._proof(token),
        )

    @staticmethod
    def _scope(path: str, headers: list[tuple[bytes, bytes]]) -> Scope:
        return {
            "type": "http",
            "asgi": {"version": "3.0"},
            "http_version": "1.1",
            "method": "GET",
            "scheme": "https",
            "path": path,
            "raw_path": path.encode("ascii"),
            "query_string": b"",
            "root_path": "",
            "headers": [(b"host", b"orders.example"), *headers],
            "client": ("127.0.0.1", 50000),
            "server": ("127.0.0.1", 443),
            "state": {},
        }

    def _protected_scope(self, token: str) -> Scope:
        return self._scope(
            PATH,
            [
                (b"authorization", f"DPoP {token}".encode("ascii")),
                (b"dpop", self._proof(token).encode("ascii")),
            ],
        )

    def prepare(self, case: str, n: int) -> list[Op]:
        """``n`` ready calls of ``case``; each has its own scope (the middleware writes
        ``scope["state"]``) and, where the case says so, its own coupon or proof."""
        app = self.apps[case]
        if case in ("bare", "passthrough"):
            token = self.cached_token["cached"]
            path = PATH if case == "bare" else "/health"
            scopes = [
                self._scope(
                    path,
                    [
                        (b"authorization", f"DPoP {token}".encode("ascii")),
                        (b"dpop", self._proof(token).encode("ascii")),
                    ],
                )
                for _ in range(n)
            ]
        elif case == "cold":
            scopes = [self._protected_scope(self._mint()) for _ in range(n)]
        elif case == "cached":
            scopes = [self._protected_scope(self.cached_token["cached"]) for _ in range(n)]
        elif case == "denied_no_coupon":
            scopes = [self._scope(PATH, []) for _ in range(n)]
        elif case == "verifier_cold":
            verifier = self.verifiers[case]
            tokens = [self._mint() for _ in range(n)]
            return [functools.partial(_verify, verifier, t, self._request(t)) for t in tokens]
        elif case == "verifier_cached":
            verifier = self.verifiers[case]
            token = self.cached_token[case]
            return [
                functools.partial(_verify, verifier, token, self._request(token)) for _ in range(n)
            ]
        else:
            raise ValueError(case)
        return [functools.partial(_call, app, scope) for scope in scopes]


EXPECTED = dict.fromkeys(CASES, 200) | {"denied_no_coupon": 401}


def run(
    cases: Sequence[str], *, iterations: int, rounds: int, warmup: int, seed: int
) -> dict[str, Any]:
    """Measure ``cases`` interleaved in ``rounds``; the JSON-ready report."""
    world = World()
    rng = random.Random(seed)
    for case in cases:  # warm-up, also a correctness check
        for op in world.prepare(case, warmup):
            status = op()
            if status != EXPECTED[case]:
                raise RuntimeError(f"{case}: got {status!r}, expected {EXPECTED[case]}")
    samples: dict[str, list[int]] = {case: [] for case in cases}
    outcomes: dict[str, list[object]] = {case: [] for case in cases}
    per_round = [iterations // rounds + (i < iterations % rounds) for i in range(rounds)]
    for count in per_round:
        order = list(cases)
        rng.shuffle(order)
        for case in order:
            _time_ops(world.prepare(case, count), samples[case], outcomes[case])
        print(f"round done: {', '.join(order)}", file=sys.stderr)
    results: dict[str, dict[str, Any]] = {}
    for case in cases:
        results[case] = dict(_summary(samples[case]))
        results[case]["errors"] = sum(1 for r in outcomes[case] if r != EXPECTED[case])
    report: dict[str, Any] = {
        "benchmark": "CouponMiddleware per-request cost, in process",
        "command": " ".join([os.path.basename(sys.executable), *sys.argv]),
        "machine": _machine(),
        "config": {
            "iterations": iterations,
            "rounds": rounds,
            "warmup": warmup,
            "seed": seed,
            "timer_overhead_ns": _timer_overhead_ns(),
            "verifier": "coupon.token.Verifier: fixed KeySet, issuer allow-list, "
            "MemoryReplayStore, MemoryRevocations with 200 entries",
        },
        "cases": results,
        "derived": derived(results),
    }
    return report


def derived(results: dict[str, dict[str, Any]]) -> dict[str, Any]:
    """Added µs over the bare app, the overhead ratio, and the middleware's own share."""
    out: dict[str, Any] = {}
    bare = results.get("bare")
    if bare is None:
        return out
    for case in ("passthrough", "cold", "cached", "denied_no_coupon"):
        if case not in results:
            continue
        entry: dict[str, Any] = {}
        for q in ("p50", "p99"):
            ours, floor = float(results[case][f"{q}_us"]), float(bare[f"{q}_us"])
            entry[f"added_{q}_us"] = round(ours - floor, 2)
            entry[f"ratio_{q}"] = round(ours / floor, 1) if floor else None
        out[f"{case}_over_bare"] = entry
    for case, alone in (("cold", "verifier_cold"), ("cached", "verifier_cached")):
        if case in results and alone in results:
            own = float(results[case]["p50_us"]) - float(results[alone]["p50_us"])
            out[f"{case}_middleware_own_p50_us"] = round(own - float(bare["p50_us"]), 2)
            out[f"{case}_verifier_share_p50"] = round(
                float(results[alone]["p50_us"]) / float(results[case]["p50_us"]), 3
            )
    if "cold" in results and "cached" in results:
        out["cold_over_cached_p50"] = round(
            float(results["cold"]["p50_us"]) / float(results["cached"]["p50_us"]), 2
        )
    return out


def human_table(report: dict[str, Any]) -> str:
    lines = [f"{'case':<18} {'p50 µs':>9} {'p99 µs':>9} {'p99.9 µs':>9} {'errors':>6}"]
    for case, s in report["cases"].items():
        lines.append(
            f"{case:<18} {s['p50_us']:>9.2f} {s['p99_us']:>9.2f} {s['p999_us']:>9.2f} "
            f"{s['errors']:>6}"
        )
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n", 1)[0])
    parser.add_argument("--iterations", type=int, default=3000, help="timed calls per case")
    parser.add_argument("--rounds", type=int, default=5, help="interleaved rounds")
    parser.add_argument("--warmup", type=int, default=200, help="untimed calls per case first")
    parser.add_argument("--seed", type=int, default=1, help="seed for the round order")
    parser.add_argument("--cases", nargs="+", choices=CASES, default=list(CASES))
    parser.add_argument("--quick", action="store_true", help="a smoke run (300 calls per case)")
    args = parser.parse_args(argv)
    iterations: int = args.iterations
    warmup: int = args.warmup
    if args.quick:
        iterations, warmup = min(iterations, 300), min(warmup, 30)
    if iterations < args.rounds or args.rounds < 1:
        parser.error("--iterations must be at least --rounds, and --rounds at least 1")
    # The denial's log line goes through the project's structlog set-up, as in a service;
    # WARNING keeps it out of the output (its processors still run up to the level check).
    configure_logging(level="WARNING", json=True)
    report = run(
        args.cases, iterations=iterations, rounds=args.rounds, warmup=warmup, seed=args.seed
    )
    print(human_table(report), file=sys.stderr)
    json.dump(report, sys.stdout, indent=2)
    sys.stdout.write("\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
