"""Local verification, side by side: coupon against PyJWT, biscuit-python and pymacaroons.

One process, one machine, one run. Every case is measured per operation with
``time.perf_counter_ns`` after a warm-up, with the garbage collector off while timing, and the
cases are interleaved in rounds (order shuffled per round) so that machine noise hits them all
alike. Inputs (tokens, DPoP proofs) are built before each round's timing starts; only the
verification itself is timed.

Usage::

    .venv/bin/python bench/verify.py                    # 3000 iterations per case
    .venv/bin/python bench/verify.py --quick            # a smoke run
    .venv/bin/python bench/verify.py --profile coupon_cold

One JSON document goes to stdout; profiles and progress go to stderr. See docs/benchmarks.md
for what each case checks and what the peers do not.
"""

from __future__ import annotations

import argparse
import cProfile
import datetime as dt
import functools
import gc
import hashlib
import io
import json
import os
import platform
import pstats
import random
import sys
import time
from collections.abc import Callable, Sequence
from importlib import metadata
from typing import Any

import biscuit_auth
import jwt
from cryptography.hazmat.backends.openssl import backend as openssl_backend
from cryptography.hazmat.primitives.asymmetric import ed25519
from pymacaroons import Macaroon
from pymacaroons import Verifier as MacaroonVerifier

from coupon.token import (
    Binding,
    KeySet,
    MemoryReplayStore,
    MemoryRevocations,
    Request,
    SigningKey,
    Verified,
    Verifier,
    attenuate,
    create_dpop_proof,
    mint,
    new_jti,
    x5t_s256,
)

Op = Callable[[], object]

ISSUER = "https://authority.example"
AUDIENCE = "orders-api"
TENANT = "acme"
PURPOSE = "fulfilment"
RESOURCE_PATTERN = "orders/*"
RESOURCE = "orders/123"
ACTION = "read"
METHOD = "GET"
URI = "https://orders.example/orders/123"
TTL = 3600  # the verifier's default max_ttl; long enough for any --iterations

CASES = (
    "coupon_cold",
    "coupon_cold_dpop",
    "coupon_cached",
    "coupon_cached_dpop",
    "coupon_chain_cold",
    "pyjwt_eddsa",
    "biscuit_parse_authorize",
    "biscuit_parse_authorize_min",
    "pymacaroons_verify",
)


def _now() -> int:
    return int(time.time())


def _seed_key(label: str) -> SigningKey:
    """A deterministic Ed25519 key, so runs differ only in timing."""
    raw = hashlib.sha256(f"coupon-bench:{label}".encode()).digest()
    return SigningKey(ed25519.Ed25519PrivateKey.from_private_bytes(raw), kid=label)


class World:
    """Keys, verifiers and the per-case input builders (nothing here is timed)."""

    def __init__(self) -> None:
        self.issuer = _seed_key("issuer")
        self.holder = _seed_key("holder")
        self.delegate = _seed_key("delegate")
        self.certificate = x5t_s256(b"bench client certificate DER")
        self.keys = KeySet([self.issuer.public])
        # Some unrelated revocations, so the lookups are not into empty tables.
        revoked = MemoryRevocations()
        for i in range(100):
            revoked.jtis[f"revoked-{i}"] = "bench"
            revoked.subjects[f"gone-{i}"] = (0, "bench")
        self.revocations = revoked
        self.cert_request = Request(
            audience=AUDIENCE,
            resource=RESOURCE,
            action=ACTION,
            purpose=PURPOSE,
            tenant=TENANT,
            certificate=self.certificate,
        )
        # One verifier per case, kept across rounds like a long-lived service would.
        self.verifiers: dict[str, Verifier] = {
            name: self._verifier() for name in CASES if name.startswith("coupon_")
        }
        self.cached_cert_token = self._mint(Binding(x5t_s256=self.certificate))
        self.cached_dpop_token = self._mint(Binding(jkt=self.holder.public.thumbprint))
        # Prime the cache: the cached cases measure repeat presentations only.
        self.verifiers["coupon_cached"].verify(self.cached_cert_token, self.cert_request)
        self.verifiers["coupon_cached_dpop"].verify(
            self.cached_dpop_token, self._dpop_request(self.holder, self.cached_dpop_token)
        )
        # PyJWT: the same claims, an Ed25519 key object loaded once.
        self.jwt_private = ed25519.Ed25519PrivateKey.from_private_bytes(
            hashlib.sha256(b"coupon-bench:pyjwt").digest()
        )
        self.jwt_public = self.jwt_private.public_key()
        # biscuit-python
        self.biscuit_keypair = biscuit_auth.KeyPair.from_private_key(
            biscuit_auth.PrivateKey(
                "ed25519-private/" + hashlib.sha256(b"coupon-bench:biscuit").hexdigest()
            )
        )
        self.biscuit_public = self.biscuit_keypair.public_key
        # pymacaroons: a root secret shared by minter and verifier.
        self.macaroon_key = hashlib.sha256(b"coupon-bench:macaroon").hexdigest()

    def _verifier(self) -> Verifier:
        return Verifier(
            self.keys,
            issuers=[ISSUER],
            replay=MemoryReplayStore(capacity=1_000_000),
            revocations=self.revocations,
        )

    def _mint(self, binding: Binding, *, now: int | None = None) -> str:
        return mint(
            self.issuer,
            issuer=ISSUER,
            subject="svc-fulfilment",
            audience=AUDIENCE,
            tenant=TENANT,
            resource=RESOURCE_PATTERN,
            actions=["read", "list"],
            purpose=PURPOSE,
            binding=binding,
            ttl=TTL,
            now=_now() if now is None else now,
        )

    def _dpop_request(self, key: SigningKey, token: str) -> Request:
        proof = create_dpop_proof(
            key, method=METHOD, uri=URI, now=_now(), jti=new_jti(), access_token=token
        )
        return Request(
            audience=AUDIENCE,
            resource=RESOURCE,
            action=ACTION,
            purpose=PURPOSE,
            tenant=TENANT,
            method=METHOD,
            uri=URI,
            dpop=proof,
        )

    # -- input builders: each returns n ready-to-call operations -------------------------------

    def prepare(self, case: str, n: int) -> list[Op]:
        builder: Callable[[int], list[Op]] = getattr(self, f"_prepare_{case}")
        return builder(n)

    def _prepare_coupon_cold(self, n: int) -> list[Op]:
        verify = self.verifiers["coupon_cold"].verify
        binding = Binding(x5t_s256=self.certificate)
        now = _now()
        return [
            functools.partial(verify, self._mint(binding, now=now), self.cert_request)
            for _ in range(n)
        ]

    def _prepare_coupon_cold_dpop(self, n: int) -> list[Op]:
        verify = self.verifiers["coupon_cold_dpop"].verify
        binding = Binding(jkt=self.holder.public.thumbprint)
        now = _now()
        ops: list[Op] = []
        for _ in range(n):
            token = self._mint(binding, now=now)
            ops.append(functools.partial(verify, token, self._dpop_request(self.holder, token)))
        return ops

    def _prepare_coupon_cached(self, n: int) -> list[Op]:
        op = functools.partial(
            self.verifiers["coupon_cached"].verify, self.cached_cert_token, self.cert_request
        )
        return [op] * n

    def _prepare_coupon_cached_dpop(self, n: int) -> list[Op]:
        verify = self.verifiers["coupon_cached_dpop"].verify
        token = self.cached_dpop_token
        return [
            functools.partial(verify, token, self._dpop_request(self.holder, token))
            for _ in range(n)
        ]

    def _prepare_coupon_chain_cold(self, n: int) -> list[Op]:
        verify = self.verifiers["coupon_chain_cold"].verify
        binding = Binding(jkt=self.holder.public.thumbprint)
        delegate = Binding(jkt=self.delegate.public.thumbprint)
        now = _now()
        ops: list[Op] = []
        for _ in range(n):
            chain = attenuate(
                self._mint(binding, now=now),
                self.holder,
                delegate=delegate,
                subject="svc-picker",
                resource=RESOURCE,
                actions=[ACTION],
                now=now,
            )
            ops.append(functools.partial(verify, chain, self._dpop_request(self.delegate, chain)))
        return ops

    def _prepare_pyjwt_eddsa(self, n: int) -> list[Op]:
        now = _now()
        decode = functools.partial(
            jwt.decode,
            key=self.jwt_public,
            algorithms=["EdDSA"],
            audience=AUDIENCE,
            issuer=ISSUER,
            options={"require": ["exp", "iat", "nbf", "aud", "iss"]},
        )
        ops: list[Op] = []
        for _ in range(n):
            claims = {
                "iss": ISSUER,
                "sub": "svc-fulfilment",
                "aud": AUDIENCE,
                "iat": now,
                "nbf": now,
                "exp": now + TTL,
                "jti": new_jti(),
                "tid": TENANT,
                "res": RESOURCE_PATTERN,
                "act": ["list", "read"],
                "pur": PURPOSE,
                "cnf": {"x5t#S256": self.certificate},
            }
            token = jwt.encode(
                claims, self.jwt_private, algorithm="EdDSA", headers={"kid": "issuer"}
            )
            ops.append(functools.partial(decode, token))
        return ops

    _BISCUIT_TOKEN = (
        'right("orders/123", "read"); tenant("acme"); purpose("fulfilment");'
        ' audience("orders-api"); jti({jti}); check if time($t), $t < {exp};'
    )
    _BISCUIT_POLICY = (
        'resource("orders/123"); operation("read"); time({now});'
        " allow if right($r, $o), resource($r), operation($o);"
        ' check if tenant("acme"); check if audience("orders-api");'
        ' check if purpose("fulfilment");'
    )
    _BISCUIT_POLICY_MIN = (
        'resource("orders/123"); operation("read"); time({now});'
        " allow if right($r, $o), resource($r), operation($o);"
    )

    def _biscuits(self, n: int) -> list[str]:
        exp = dt.datetime.fromtimestamp(_now() + TTL, dt.UTC)
        return [
            biscuit_auth.BiscuitBuilder(self._BISCUIT_TOKEN, {"exp": exp, "jti": new_jti()})
            .build(self.biscuit_keypair.private_key)
            .to_base64()
            for _ in range(n)
        ]

    def _biscuit_ops(self, n: int, policy: str) -> list[Op]:
        public = self.biscuit_public
        parse = biscuit_auth.Biscuit.from_base64
        authorizer = biscuit_auth.AuthorizerBuilder
        utc = dt.UTC

        def authorize(token: str) -> object:
            biscuit = parse(token, public)
            return authorizer(policy, {"now": dt.datetime.now(utc)}).build(biscuit).authorize()

        return [functools.partial(authorize, token) for token in self._biscuits(n)]

    def _prepare_biscuit_parse_authorize(self, n: int) -> list[Op]:
        return self._biscuit_ops(n, self._BISCUIT_POLICY)

    def _prepare_biscuit_parse_authorize_min(self, n: int) -> list[Op]:
        return self._biscuit_ops(n, self._BISCUIT_POLICY_MIN)

    def _prepare_pymacaroons_verify(self, n: int) -> list[Op]:
        key = self.macaroon_key
        exact = (
            f"aud = {AUDIENCE}",
            f"tenant = {TENANT}",
            f"resource = {RESOURCE}",
            f"action = {ACTION}",
            f"purpose = {PURPOSE}",
        )

        def not_expired(caveat: str) -> bool:
            return caveat.startswith("time < ") and time.time() < int(caveat[7:])

        def check(serialized: str) -> object:
            macaroon = Macaroon.deserialize(serialized)
            verifier = MacaroonVerifier()
            for predicate in exact:
                verifier.satisfy_exact(predicate)
            verifier.satisfy_general(not_expired)
            return verifier.verify(macaroon, key)

        expires = _now() + TTL
        ops: list[Op] = []
        for _ in range(n):
            macaroon = Macaroon(location=ISSUER, identifier=new_jti(), key=key)
            for predicate in (*exact, f"time < {expires}"):
                macaroon.add_first_party_caveat(predicate)
            ops.append(functools.partial(check, macaroon.serialize()))
        return ops


# -- measuring ----------------------------------------------------------------------------------


def _time_ops(ops: Sequence[Op], out: list[int], results: list[object] | None = None) -> None:
    """Run each op once, appending its duration in ns (and its result); GC off while timing."""
    clock = time.perf_counter_ns
    append = out.append
    keep = results.append if results is not None else None
    gc.collect()
    gc.disable()
    try:
        for op in ops:
            t0 = clock()
            try:
                result = op()
            except Exception as exc:  # counted in the report; the warm-up already passed
                result = exc
            append(clock() - t0)
            if keep is not None:
                keep(result)
    finally:
        gc.enable()


def _timer_overhead_ns(n: int = 20_000) -> float:
    """The median cost of timing an op that does nothing (the floor under every figure)."""
    samples: list[int] = []
    _time_ops([_noop] * n, samples)
    samples.sort()
    return float(samples[len(samples) // 2])


def _noop() -> None:
    return None


def _percentile(ordered: Sequence[int], q: float) -> float:
    """Nearest-rank percentile of already sorted samples, in µs."""
    index = min(len(ordered) - 1, max(0, round(q * len(ordered) + 0.5) - 1))
    return ordered[index] / 1000


def _summary(samples: list[int]) -> dict[str, float | int]:
    ordered = sorted(samples)
    mean_ns = sum(ordered) / len(ordered)
    return {
        "p50_us": round(_percentile(ordered, 0.50), 2),
        "p99_us": round(_percentile(ordered, 0.99), 2),
        "p999_us": round(_percentile(ordered, 0.999), 2),
        "mean_us": round(mean_ns / 1000, 2),
        "ops_per_s": round(1e9 / mean_ns),
        "n": len(ordered),
    }


def _step_medians(outcomes: Sequence[object]) -> dict[str, float]:
    """Median of each step timing the verifier reported itself (``Verified.timings``)."""
    steps: dict[str, list[float]] = {}
    for outcome in outcomes:
        if not isinstance(outcome, Verified):
            continue
        for step, micros in outcome.timings.items():
            steps.setdefault(step, []).append(micros)
    return {step: round(sorted(v)[len(v) // 2], 2) for step, v in steps.items()}


def _machine() -> dict[str, Any]:
    cpu_model = platform.processor() or None
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as cpuinfo:
            for line in cpuinfo:
                if line.startswith("model name"):
                    cpu_model = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    versions: dict[str, str | None] = {}
    for dist in (
        "cryptography",
        "pynacl",
        "pyjwt",
        "biscuit-python",
        "pymacaroons",
        "coupon-authority",
    ):
        try:
            versions[dist] = metadata.version(dist)
        except metadata.PackageNotFoundError:
            versions[dist] = None
    return {
        "python": platform.python_version(),
        "implementation": platform.python_implementation(),
        "platform": platform.platform(),
        "cpu_model": cpu_model,
        "cpu_count": os.cpu_count(),
        "cpu_affinity": len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else None,
        "cryptography": versions["cryptography"],
        "openssl": openssl_backend.openssl_version_text(),
        "versions": versions,
    }


def _ratio(results: dict[str, dict[str, float | int]], peer: str, ours: str) -> float:
    return round(float(results[peer]["p50_us"]) / float(results[ours]["p50_us"]), 3)


def run(
    cases: Sequence[str], *, iterations: int, rounds: int, warmup: int, seed: int
) -> dict[str, Any]:
    """Measure ``cases`` interleaved in ``rounds`` and return the JSON-ready report."""
    world = World()
    rng = random.Random(seed)
    for case in cases:  # warm-up, also a correctness check: every op must succeed
        for op in world.prepare(case, warmup):
            op()
    samples: dict[str, list[int]] = {case: [] for case in cases}
    outcomes: dict[str, list[object]] = {case: [] for case in cases}
    per_round = [iterations // rounds + (i < iterations % rounds) for i in range(rounds)]
    for count in per_round:
        order = list(cases)
        rng.shuffle(order)
        for case in order:
            ops = world.prepare(case, count)
            _time_ops(ops, samples[case], outcomes[case])
        print(f"round done: {', '.join(order)}", file=sys.stderr)
    results = {case: _summary(samples[case]) for case in cases}
    for case in cases:
        failures = [r for r in outcomes[case] if isinstance(r, Exception)]
        results[case]["errors"] = len(failures)
        if failures:
            print(f"{case}: {len(failures)} ops raised, e.g. {failures[0]!r}", file=sys.stderr)
    report: dict[str, Any] = {
        "benchmark": "local verification, side by side",
        "command": " ".join([os.path.basename(sys.executable), *sys.argv]),
        "machine": _machine(),
        "config": {
            "iterations": iterations,
            "rounds": rounds,
            "warmup": warmup,
            "seed": seed,
            "timer_overhead_ns": _timer_overhead_ns(),
        },
        "cases": results,
        "coupon_steps_p50_us": {
            case: _step_medians(outcomes[case]) for case in cases if case.startswith("coupon_")
        },
    }
    needed = {
        "coupon_cold",
        "coupon_cold_dpop",
        "coupon_cached",
        "pyjwt_eddsa",
        "biscuit_parse_authorize",
        "pymacaroons_verify",
    }
    if needed <= set(cases):
        cold = float(results["coupon_cold"]["p50_us"])
        cached = float(results["coupon_cached"]["p50_us"])
        ratios: dict[str, float] = {
            "pyjwt_over_coupon_cold_p50": _ratio(results, "pyjwt_eddsa", "coupon_cold"),
            "biscuit_over_coupon_cold_p50": _ratio(
                results, "biscuit_parse_authorize", "coupon_cold"
            ),
            "pymacaroons_over_coupon_cold_p50": _ratio(
                results, "pymacaroons_verify", "coupon_cold"
            ),
            "pyjwt_over_coupon_cold_dpop_p50": _ratio(results, "pyjwt_eddsa", "coupon_cold_dpop"),
            "biscuit_over_coupon_cold_dpop_p50": _ratio(
                results, "biscuit_parse_authorize", "coupon_cold_dpop"
            ),
            "coupon_cached_p50_us": cached,
        }
        report["ratios"] = ratios
        report["targets"] = {
            "cold_faster_than_pyjwt": cold < float(results["pyjwt_eddsa"]["p50_us"]),
            "cold_faster_than_biscuit": cold < float(results["biscuit_parse_authorize"]["p50_us"]),
            "cached_p50_under_10us": cached < 10.0,
            # PRODUCT.md §5 names the whole pipeline (DPoP, replay, revocation) too.
            "cold_dpop_faster_than_pyjwt": float(results["coupon_cold_dpop"]["p50_us"])
            < float(results["pyjwt_eddsa"]["p50_us"]),
            "cold_dpop_faster_than_biscuit": float(results["coupon_cold_dpop"]["p50_us"])
            < float(results["biscuit_parse_authorize"]["p50_us"]),
        }
    return report


def breakdown(*, iterations: int) -> dict[str, float]:
    """Median µs of the pieces of one cold DPoP verification, each timed on its own.

    Only public (and hazmat) functions are timed, so this keeps working while the
    verifier's private structure changes; the library's own per-step timings are in the
    main report (``coupon_steps_p50_us``).
    """
    import base64
    import binascii

    from nacl.signing import VerifyKey

    from coupon.token import (
        Claims,
        ResourcePattern,
        RevocationFacts,
        ath_for,
        normalize_htu,
        parse_chain,
        parse_resource,
    )
    from coupon.token.hazmat import (
        b64url_decode,
        jwk_thumbprint,
        loads_object,
        parse_compact,
        public_key_from_jwk,
        public_key_to_jwk,
    )

    world = World()
    token = world._mint(Binding(jkt=world.holder.public.thumbprint))
    request = world._dpop_request(world.holder, token)
    assert request.dpop is not None
    jws = parse_compact(token, max_size=8192)
    proof = parse_compact(request.dpop, max_size=4096)
    payload_b64 = token.split(".")[1]
    claims = Claims.from_dict(jws.claims())
    ed_key = world.issuer.public.public_key
    assert isinstance(ed_key, ed25519.Ed25519PublicKey)
    nacl_key = VerifyKey(ed_key.public_bytes_raw())
    proof_jwk = proof.header["jwk"]
    proof_key, _ = public_key_from_jwk(proof_jwk)

    def facts() -> RevocationFacts:  # what the verifier derives from a chain per request
        return RevocationFacts(
            jtis=(claims.jti,),
            lineage=claims.lin,
            subjects=(claims.sub,),
            tenant=claims.tid,
            kid=world.issuer.kid,
            issued_at=claims.iat,
        )

    pieces: dict[str, Op] = {
        "ed25519_verify_cryptography": functools.partial(
            ed_key.verify, jws.signature, jws.signing_input
        ),
        "ed25519_verify_pynacl": functools.partial(
            nacl_key.verify, jws.signing_input, jws.signature
        ),
        "coupon_keyset_key_verify": functools.partial(
            world.issuer.public.verify, jws.signature, jws.signing_input
        ),
        "parse_chain_one_coupon": functools.partial(parse_chain, token, max_size=8192, max_depth=4),
        "parse_compact_coupon": functools.partial(parse_compact, token, max_size=8192),
        "b64url_decode_payload": functools.partial(b64url_decode, payload_b64),
        "stdlib_urlsafe_b64decode_payload": functools.partial(
            base64.urlsafe_b64decode, payload_b64 + "=" * (-len(payload_b64) % 4)
        ),
        "binascii_a2b_base64_payload": functools.partial(
            binascii.a2b_base64,
            payload_b64.translate(str.maketrans("-_", "+/")) + "=" * (-len(payload_b64) % 4),
        ),
        "loads_object_claims": functools.partial(loads_object, jws.payload),
        "stdlib_json_loads_claims": functools.partial(json.loads, jws.payload),
        "claims_from_dict": functools.partial(Claims.from_dict, jws.claims()),
        "parse_resource_request": functools.partial(parse_resource, RESOURCE),
        "resource_pattern_parse": functools.partial(ResourcePattern.parse, RESOURCE_PATTERN),
        "revocation_facts_build": facts,
        "revocation_lookup": functools.partial(world.revocations.revoked, facts(), now=0.0),
        "dpop_verify_total": functools.partial(_dpop_verify, request.dpop, token),
        "dpop_parse_compact": functools.partial(parse_compact, request.dpop, max_size=4096),
        "dpop_public_key_from_jwk": functools.partial(public_key_from_jwk, proof_jwk),
        "dpop_public_key_to_jwk": functools.partial(public_key_to_jwk, proof_key),
        "dpop_jwk_thumbprint": functools.partial(jwk_thumbprint, proof_jwk),
        "dpop_normalize_htu": functools.partial(normalize_htu, URI),
        "dpop_ath_for": functools.partial(ath_for, token),
        "perf_counter_ns": time.perf_counter_ns,
    }
    out: dict[str, float] = {}
    for name, op in pieces.items():
        samples: list[int] = []
        _time_ops([op] * 50, [])
        _time_ops([op] * iterations, samples)
        samples.sort()
        out[name] = round(samples[len(samples) // 2] / 1000, 2)
    return out


def _dpop_verify(proof: str, token: str) -> object:
    from coupon.token import verify_dpop_proof

    return verify_dpop_proof(
        proof, method=METHOD, uri=URI, now=time.time(), access_token=token, leeway=30
    )


def profile(case: str, *, iterations: int, top: int = 25) -> None:
    """Run ``case`` under cProfile and print the top functions by cumulative time to stderr."""
    world = World()
    for op in world.prepare(case, 50):
        op()
    ops = world.prepare(case, iterations)
    profiler = cProfile.Profile()
    gc.disable()
    profiler.enable()
    for op in ops:
        op()
    profiler.disable()
    gc.enable()
    text = io.StringIO()
    stats = pstats.Stats(profiler, stream=text)
    stats.sort_stats(pstats.SortKey.CUMULATIVE).print_stats(top)
    print(f"profile of {case}: {iterations} operations", file=sys.stderr)
    print(text.getvalue(), file=sys.stderr)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0] if __doc__ else None)
    parser.add_argument("--iterations", type=int, default=3000, help="timed ops per case")
    parser.add_argument("--rounds", type=int, default=5, help="interleaved rounds")
    parser.add_argument("--warmup", type=int, default=200, help="untimed ops per case first")
    parser.add_argument("--seed", type=int, default=1, help="seed for the round order")
    parser.add_argument("--quick", action="store_true", help="a smoke run (300 iterations)")
    parser.add_argument("--cases", nargs="+", choices=CASES, default=list(CASES))
    parser.add_argument("--profile", choices=CASES, metavar="CASE", help="profile one case")
    parser.add_argument(
        "--breakdown", action="store_true", help="time the pieces of a cold verification"
    )
    args = parser.parse_args(argv)
    iterations: int = args.iterations
    warmup: int = args.warmup
    if args.quick:
        iterations, warmup = min(iterations, 300), min(warmup, 30)
    if iterations < args.rounds or args.rounds < 1:
        parser.error("--iterations must be at least --rounds, and --rounds at least 1")
    if args.profile:
        profile(args.profile, iterations=iterations)
        return 0
    if args.breakdown:
        pieces = {"machine": _machine(), "pieces_p50_us": breakdown(iterations=iterations)}
        json.dump(pieces, sys.stdout, indent=2)
        sys.stdout.write("\n")
        return 0
    report = run(
        args.cases, iterations=iterations, rounds=args.rounds, warmup=warmup, seed=args.seed
    )
    json.dump(report, sys.stdout, indent=2)
    sys.stdout.write("\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
