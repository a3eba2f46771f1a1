"""What signing in a PKCS#11 token (SoftHSM2) costs, and whether it must leave the event loop.

Three parts, each against a fresh SoftHSM2 installation in a temporary directory:

- ``sign``: one signature, timed one by one (``perf_counter_ns``, GC off): a software key
  (``SigningKey``) against a token key (``Pkcs11Signer``: the device call under the module
  lock, plus our verification of the signature before it is released), EdDSA and ES256;
- ``loop``: the event loop while ``--tasks`` coroutines sign back to back, either inline
  (``builder.sign`` on the loop) or through ``sign_coupon`` (a worker thread, what the
  Authority does for a device key); a ticker sleeping 1 ms measures how late the loop wakes
  it (what every other request of the process would wait), and signatures per second;
- ``issue``: ``POST /v1/coupons`` through ``coupon up`` (embedded) with the sealed backend
  and with ``COUPON_KEY_BACKEND=pkcs11``, closed loop at concurrency 1 and 16 (``bench/issue.py``'s
  generator), so the device's share of a whole issuance shows.

Usage::

    .venv/bin/python bench/hsm.py            # ~1 minute
    .venv/bin/python bench/hsm.py --quick

One JSON document goes to stdout; progress goes to stderr.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # run as a script

from bench._loadgen import run_closed_loop
from bench._server import create_api_key, machine_info, start_authority, wait_ready
from bench.issue import classify, make_requests

MODULE = "/usr/lib/softhsm/libsofthsm2.so"
PIN = "bench-pin-1234"


def log(message: str) -> None:
    print(f"[hsm] {message}", file=sys.stderr, flush=True)


def softhsm(root: Path, label: str) -> dict[str, str]:
    """A SoftHSM2 installation under ``root`` with one token; the env that points at it."""
    (root / "tokens").mkdir(parents=True)
    conf = root / "softhsm2.conf"
    conf.write_text(f"directories.tokendir = {root / 'tokens'}\nobjectstore.backend = file\n")
    env = {"SOFTHSM2_CONF": str(conf)}
    subprocess.run(
        [
            "softhsm2-util",
            "--init-token",
            "--free",
            "--label",
            label,
            "--pin",
            PIN,
            "--so-pin",
            PIN,
        ],
        env={**os.environ, **env},
        check=True,
        capture_output=True,
    )
    return env


def percentiles(ns: list[int]) -> dict[str, float]:
    us = sorted(n / 1000 for n in ns)
    return {
        "p50_us": round(us[len(us) // 2], 1),
        "p99_us": round(us[int(len(us) * 0.99)], 1),
        "mean_us": round(statistics.fmean(us), 1),
    }


def time_calls(call: Callable[[], object], n: int) -> dict[str, float]:
    for _ in range(min(n, 200)):
        call()
    gc.disable()
    try:
        samples = []
        for _ in range(n):
            t0 = time.perf_counter_ns()
            call()
            samples.append(time.perf_counter_ns() - t0)
    finally:
        gc.enable()
    return percentiles(samples)


def part_sign(n: int) -> dict[str, Any]:
    from coupon.keys import Pkcs11Keys, Pkcs11Token
    from coupon.token import SigningKey

    token = Pkcs11Token.open(MODULE, "bench", PIN)
    data = b"x" * 400  # about a coupon's signing input
    out: dict[str, Any] = {}
    try:
        for alg in ("EdDSA", "ES256"):
            software = SigningKey.generate(alg)
            device, _ = Pkcs11Keys(token).generate(alg)
            out[alg] = {
                "software": time_calls(lambda k=software: k.sign(data), n),  # type: ignore[misc]
                "pkcs11": time_calls(lambda k=device: k.sign(data), n),  # type: ignore[misc]
            }
            log(f"sign {alg}: {out[alg]}")
    finally:
        token.close()
    return out


async def part_loop(tasks: int, seconds: float) -> dict[str, Any]:
    from coupon.keys import Pkcs11Keys, Pkcs11Token
    from coupon.token import Binding, CouponBuilder

    token = Pkcs11Token.open(MODULE, "bench", PIN)
    signer, _ = Pkcs11Keys(token).generate("EdDSA")
    builder = (
        CouponBuilder()
        .issuer("https://bench.example")
        .subject("s")
        .audience("a")
        .tenant("t")
        .resource("r/*")
        .actions("read")
        .purpose("p")
        .bind(Binding(jkt="A" * 43))
        .lifetime(now=int(time.time()), ttl=60)
        .jti("j" * 22)
        .lineage("j" * 22)
    )
    out: dict[str, Any] = {}
    try:
        for mode in ("inline", "thread"):
            out[mode] = await _loop_run(mode, tasks, seconds, lambda: builder.sign(signer))
            log(f"loop {mode}: {out[mode]}")
    finally:
        token.close()
    return out


async def _loop_run(
    mode: str, tasks: int, seconds: float, sign: Callable[[], str]
) -> dict[str, float]:
    """Sign from ``tasks`` coroutines for ``seconds``; a 1 ms ticker measures the loop."""
    from coupon.authority._signing_backend import SIGN_TIMEOUT

    lags: list[float] = []
    done = 0
    stop = time.perf_counter() + seconds

    async def ticker() -> None:
        while time.perf_counter() < stop:
            t0 = time.perf_counter()
            await asyncio.sleep(0.001)
            lags.append((time.perf_counter() - t0 - 0.001) * 1000)

    async def worker() -> None:
        nonlocal done
        while time.perf_counter() < stop:
            if mode == "inline":
                sign()
                await asyncio.sleep(0)
            else:  # what sign_coupon does for a device key
                await asyncio.wait_for(asyncio.to_thread(sign), SIGN_TIMEOUT)
            done += 1

    await asyncio.gather(ticker(), *(worker() for _ in range(tasks)))
    lags.sort()
    return {
        "signatures_per_s": round(done / seconds),
        "ticker_lag_p50_ms": round(lags[len(lags) // 2], 3),
        "ticker_lag_p99_ms": round(lags[int(len(lags) * 0.99)], 3),
        "ticker_lag_max_ms": round(lags[-1], 3),
    }


async def part_issue(env: dict[str, str], duration: float) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for backend in ("sealed", "pkcs11"):
        extra = {"COUPON_KEY_BACKEND": backend}
        if backend == "pkcs11":
            extra |= {"COUPON_PKCS11_TOKEN_LABEL": "bench-issue", "COUPON_PKCS11_PIN": PIN}
        server = start_authority("embedded", env={**env, **extra})
        try:
            await wait_ready(server.url)
            key = await create_api_key(server.url, server.admin_key, "bench-issuer", ["issuer"])
            # Odd requests of bench/issue.py bind a DPoP key (jkt), which an issuer may ask for.
            requests = make_requests(f"{server.host}:{server.port}", key, 2000)[1::2]
            out[backend] = {}
            for concurrency in (1, 16):
                common: dict[str, Any] = {
                    "host": server.host,
                    "port": server.port,
                    "concurrency": concurrency,
                    "make_request": _cycle(requests),
                    "classify": classify,
                }
                await run_closed_loop(duration=1.0, **common)
                summary = (await run_closed_loop(duration=duration, **common)).summary()
                out[backend][str(concurrency)] = {
                    k: summary[k] for k in ("ok_per_s", "p50_ms", "p99_ms", "errors")
                }
                log(f"issue {backend} c={concurrency}: {out[backend][str(concurrency)]}")
        finally:
            server.stop()
    return out


def _cycle(requests: list[bytes]) -> Callable[[int], bytes]:
    return lambda i: requests[i % len(requests)]


async def main_async(args: argparse.Namespace) -> dict[str, Any]:
    load = os.getloadavg()
    root = Path(tempfile.mkdtemp(prefix="coupon-bench-hsm-"))
    env = softhsm(root, "bench")
    init = ["softhsm2-util", "--init-token", "--free", "--label", "bench-issue"]
    subprocess.run(
        [*init, "--pin", PIN, "--so-pin", PIN],
        env={**os.environ, **env},
        check=True,
        capture_output=True,
    )
    os.environ.update(env)  # this process's module reads it at C_Initialize
    n = 300 if args.quick else 3000
    seconds = 1.0 if args.quick else 3.0
    return {
        "benchmark": "hsm",
        "machine": machine_info(load),
        "module": f"{MODULE} (SoftHSM2, file object store)",
        "sign": part_sign(n),
        "loop": await part_loop(args.tasks, seconds),
        "issue": await part_issue(env, 2.0 if args.quick else 6.0),
    }


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="a short smoke run")
    parser.add_argument("--tasks", type=int, default=16, help="concurrent signers (loop part)")
    args = parser.parse_args(argv)
    print(json.dumps(asyncio.run(main_async(args)), indent=2))


if __name__ == "__main__":
    main()
