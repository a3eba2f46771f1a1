"""Measure the policy engine on this machine (the figures in docs/policy.md).

Run from the repository root::

    .venv/bin/python examples/policy/bench.py

It prints one line per measurement: compile time, raw rego-cpp evaluation time (allow and
deny, for the builtin policy and for this directory's example bundle), the latency of
``PolicyEngine.decide`` one call at a time, and the throughput of 50 concurrent calls.
Times are the best of five rounds of CPU time (evaluation) or wall-clock percentiles.
"""

from __future__ import annotations

import asyncio
import json
import statistics
import time
from pathlib import Path

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from regopy import Interpreter, LogLevel  # type: ignore[import-untyped]

from coupon.policy import (
    BUILTIN_VERSION,
    PolicyCaller,
    PolicyEngine,
    PolicyInput,
    PolicyRequest,
    VerifiedBundle,
    builtin_bundle,
    key_id,
    make_bundle,
    sign_bundle,
    verify_envelope,
)
from coupon.policy._engine import _escaped, _plain

HERE = Path(__file__).resolve().parent


def example_bundle() -> VerifiedBundle:
    """This directory's policy.rego and data.json, signed with a throwaway key."""
    key = Ed25519PrivateKey.generate()
    raw = make_bundle(
        "example-1",
        {"policy.rego": (HERE / "policy.rego").read_text(encoding="utf-8")},
        json.loads((HERE / "data.json").read_text(encoding="utf-8")),
        created_at=int(time.time()),
    )
    envelope = sign_bundle(raw, key).to_json()
    return verify_envelope(envelope, {key_id(key.public_key()): key.public_key()})


def policy_input(caller: str, roles: tuple[str, ...], resource: str) -> PolicyInput:
    return PolicyInput(
        caller=PolicyCaller(id=caller, roles=roles),
        request=PolicyRequest(
            subject="alice",
            audience=("orders-api",),
            tenant="acme",
            resource=resource,
            actions=("read",),
            purpose="billing",
            ttl=900,
            binding="jkt",
        ),
        now=int(time.time()),
    )


CASES = {
    "builtin allow": (BUILTIN_VERSION, policy_input("svc", ("issuer",), "orders/42")),
    "builtin deny": (BUILTIN_VERSION, policy_input("svc", ("auditor",), "orders/42")),
    "example allow": ("example-1", policy_input("svc-orders", (), "orders/42")),
    "example deny": ("example-1", policy_input("svc-orders", (), "users/7")),
}


def compile_ms(bundle: VerifiedBundle) -> float:
    best = float("inf")
    for _ in range(5):
        start = time.perf_counter()
        interp = Interpreter()
        interp.log_level = LogLevel.NONE
        for name, source in bundle.modules.items():
            interp.add_module(name, source)
        interp.add_data(_plain(bundle.data))
        interp.build(None, ["coupon/decision"])
        best = min(best, time.perf_counter() - start)
    return best * 1e3


def raw_eval_us(bundle: VerifiedBundle, inp: PolicyInput, *, fresh: bool = False) -> float:
    interp = Interpreter()
    interp.log_level = LogLevel.NONE
    for name, source in bundle.modules.items():
        interp.add_module(name, source)
    interp.add_data(_plain(bundle.data))
    compiled = interp.build(None, ["coupon/decision"])
    document = _escaped(inp.to_input())
    runner = Interpreter()
    best = float("inf")
    for _ in range(5):
        start = time.process_time()
        for _ in range(200):
            if fresh:
                runner = Interpreter()
                runner.log_level = LogLevel.NONE
            runner.set_input(document)
            runner.query_bundle_entrypoint(compiled, "coupon/decision")
        best = min(best, (time.process_time() - start) / 200)
    return best * 1e6


async def decide_latency(engine: PolicyEngine, version: str, inp: PolicyInput) -> list[float]:
    samples = []
    for _ in range(1000):
        start = time.perf_counter()
        await engine.decide(version, inp, deadline_ms=1000)
        samples.append(time.perf_counter() - start)
    return samples


async def throughput(engine: PolicyEngine, version: str, inp: PolicyInput) -> float:
    rounds, width = 40, 50
    start = time.perf_counter()
    for _ in range(rounds):
        await asyncio.gather(*(engine.decide(version, inp, deadline_ms=1000) for _ in range(width)))
    return rounds * width / (time.perf_counter() - start)


def pct(samples: list[float], q: float) -> float:
    return statistics.quantiles(samples, n=100)[int(q) - 1] * 1e6


async def main() -> None:
    bundles = {BUILTIN_VERSION: builtin_bundle(), "example-1": example_bundle()}
    key = Ed25519PrivateKey.generate()
    envelope = sign_bundle(bundles["example-1"].raw, key).to_json()
    trusted = {key_id(key.public_key()): key.public_key()}
    start = time.perf_counter()
    for _ in range(200):
        verify_envelope(envelope, trusted)
    print(f"verify example-1      {(time.perf_counter() - start) / 200 * 1e6:8.0f} us")
    for version, bundle in bundles.items():
        print(f"compile {version:<14} {compile_ms(bundle):8.1f} ms  ({len(bundle.raw)} bytes)")
    for name, (version, inp) in CASES.items():
        reused = raw_eval_us(bundles[version], inp)
        fresh = raw_eval_us(bundles[version], inp, fresh=True)
        print(f"eval {name:<17} {reused:8.0f} us  (fresh interpreter each time: {fresh:.0f} us)")
    for workers in (1, 2, 4):
        with PolicyEngine.builtin(workers=workers) as engine:
            engine.load(bundles["example-1"])
            for name, (version, inp) in CASES.items():
                if workers == 2:
                    samples = await decide_latency(engine, version, inp)
                    print(
                        f"decide {name:<15} p50 {pct(samples, 50):6.0f} us"
                        f"  p99 {pct(samples, 99):6.0f} us"
                    )
            rate = await throughput(engine, "example-1", CASES["example allow"][1])
            print(f"throughput workers={workers}   {rate:8.0f} decisions/s (50 concurrent)")


if __name__ == "__main__":
    asyncio.run(main())
