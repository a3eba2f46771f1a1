"""The policy engine: compiled Rego bundles evaluated in worker threads, failing closed.

rego-cpp (through regopy) compiles a bundle's modules and data once into a ``Bundle``; an
evaluation then only sets the input and runs the planned entrypoint ``coupon/decision``.

Threads. regopy calls the C library through ``ctypes``, which releases the GIL, so
evaluations really run in parallel, and one ``Interpreter`` shared between threads mixes up
their inputs (measured: 222 wrong answers in 20,000 concurrent evaluations). Each worker
thread therefore owns its own ``Interpreter``; the compiled ``Bundle`` of a version is shared
read-only (measured: 0 wrong answers in the same test, and the concurrency test in
``tests/policy`` checks it on every run).

Deadlines. A rego-cpp evaluation cannot be interrupted. The caller stops waiting at the
deadline and gets ``CPN-POL-002``; the worker finishes in the background. An evaluation still
running past its deadline counts as *overdue*; while every worker is overdue, new evaluations
fail at once instead of queueing behind them.

Strings. rego-cpp 1.5.2 keeps strings parsed from JSON (the data) in their JSON-escaped form
and prints them as they are, but keeps strings set through its input builder raw, which both
breaks comparisons with data and lets a quote in the input corrupt the output JSON. So every
string of the input is handed over JSON-escaped (``ensure_ascii``), exactly as the data is.
"""

from __future__ import annotations

import asyncio
import importlib.resources
import json
import os
import re
import threading
from collections import OrderedDict
from collections.abc import Mapping
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from types import MappingProxyType
from typing import Any, Final

from regopy import Bundle, Interpreter, LogLevel, RegoError  # type: ignore[import-untyped]
from regopy.rego_shared import (  # type: ignore[import-untyped]
    rego_bundle_query_entrypoint,
    rego_free_output,
    rego_output_ok,
    rego_output_string,
)

from coupon import codes
from coupon.errors import DependencyUnavailable, InvalidRequest, MalformedCoupon, PolicyDenied
from coupon.token.hazmat import loads_object

from ._bundle import VerifiedBundle, _unsigned_bundle
from ._model import PolicyCaller, PolicyDecision, PolicyInput, PolicyRequest

__all__ = [
    "BUILTIN_DATA",
    "BUILTIN_VERSION",
    "ENTRYPOINT",
    "PolicyEngine",
    "builtin_bundle",
    "default_policy_source",
]


def _frozen(value: Any) -> Any:
    """A deeply read-only copy: mappings become proxies, lists become tuples."""
    if isinstance(value, Mapping):
        return MappingProxyType({k: _frozen(v) for k, v in value.items()})
    if isinstance(value, list | tuple):
        return tuple(_frozen(v) for v in value)
    return value


#: The rule every bundle must define: ``data.coupon.decision``.
ENTRYPOINT: Final = "coupon/decision"
#: The version of the policy that ships in the package.
BUILTIN_VERSION: Final = "builtin-1"
#: The data of the builtin policy: callers with the ``admin`` or ``issuer`` role may issue
#: anything for 5 minutes at most, bound to either kind of key; any caller may ask for a
#: sub-coupon (the Authority has checked that it holds the parent and that the sub-coupon is
#: narrower), up to depth 4. Tenant-bound callers are kept to their tenant by the policy.
BUILTIN_DATA: Final[Mapping[str, Any]] = _frozen(
    {
        "defaults": {"max_ttl": 300, "bindings": ["jkt"], "max_depth": 4},
        "grants": [
            {
                "id": "builtin-issuers",
                "callers": ["*"],
                "roles": ["admin", "issuer"],
                "tenants": ["*"],
                "subjects": ["*"],
                "audiences": ["*"],
                "resources": ["**"],
                "actions": ["*"],
                "purposes": ["*"],
                "max_ttl": 300,
                "bindings": ["jkt", "x5t#S256"],
            },
            {
                "id": "builtin-holders",
                "callers": ["*"],
                "requests": ["attenuate"],
                "tenants": ["*"],
                "subjects": ["*"],
                "audiences": ["*"],
                "resources": ["**"],
                "actions": ["*"],
                "purposes": ["*"],
                "max_ttl": 300,
                "bindings": ["jkt", "x5t#S256"],
            },
        ],
    }
)

_DEFAULT_CACHE_SIZE: Final = 8
_PROBE: Final = PolicyInput(
    caller=PolicyCaller(id="policy-probe", roles=("issuer",), tenant=None),
    request=PolicyRequest(
        subject="probe",
        audience=("probe",),
        tenant="probe",
        resource="probe/resource",
        actions=("read",),
        purpose="probe",
        ttl=60,
        binding="jkt",
    ),
    now=0,
)


def default_policy_source() -> str:
    """The Rego source of the default policy (``coupon/policy/default.rego``)."""
    resource = importlib.resources.files("coupon.policy").joinpath("default.rego")
    return resource.read_text(encoding="utf-8")


def builtin_bundle() -> VerifiedBundle:
    """The builtin bundle: the default policy with :data:`BUILTIN_DATA`, version ``builtin-1``.

    It carries no signature. It ships inside the package, so it is exactly as trusted as the
    engine code that runs it: whoever could change it could change the engine. Its version
    prefix is reserved, so no uploaded bundle can pose as it, and its ``digest`` ties the name
    to the exact bytes in audit records.
    """
    modules = {"default.rego": default_policy_source()}
    return _unsigned_bundle(BUILTIN_VERSION, modules, _plain(BUILTIN_DATA))


def _plain(value: Any) -> Any:
    """Copy read-only mappings into plain dicts so that ``json`` can encode them."""
    if isinstance(value, Mapping):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_plain(v) for v in value]
    return value


def _escaped(value: Any) -> Any:
    """``value`` with every string replaced by its JSON-escaped form (see the module doc)."""
    if isinstance(value, str):
        return json.dumps(value)[1:-1]
    if isinstance(value, dict):
        return {_escaped(k): _escaped(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_escaped(v) for v in value]
    return value


_ERROR = re.compile(r"\(error (?:(\d+):)?")
_ERRORMSG = re.compile(r"\(errormsg (\d+):")


def describe_rego_error(text: str, sources: Mapping[str, str]) -> str:
    """Turn rego-cpp's error S-expression into ``file:line:col: message`` lines."""
    found: list[str] = []
    for match in _ERROR.finditer(text):
        where = ""
        pos = match.end()
        if match.group(1):
            name = text[pos : pos + int(match.group(1))]
            pos += len(name)
            loc = re.match(r"\|(\d+)\|", text[pos:])
            if loc and name in sources:
                offset = int(loc.group(1))
                before = sources[name].encode("utf-8")[:offset].decode("utf-8", "replace")
                line = before.count("\n") + 1
                col = len(before) - (before.rfind("\n") + 1) + 1
                where = f"{name}:{line}:{col}: "
            else:
                where = f"{name}: "
        msg = _ERRORMSG.search(text, pos)
        if msg is None:
            continue
        start = msg.end()
        message = text[start : start + int(msg.group(1))]
        entry = where + message
        if entry not in found:
            found.append(entry)
    if not found:
        return " ".join(text.split())[:300] or "unknown Rego error"
    return "; ".join(found[:5])


class _EvaluationFailed(Exception):
    """The engine could not produce a decision value."""


@dataclass(frozen=True, slots=True)
class _Compiled:
    version: str
    digest: str
    bundle: Any  # regopy.Bundle
    modules: Mapping[str, str]


def _new_interpreter() -> Any:
    interp = Interpreter()
    interp.log_level = LogLevel.NONE  # rego-cpp prints errors to stdout otherwise
    return interp


def _compile(bundle: VerifiedBundle) -> _Compiled:
    interp = _new_interpreter()
    try:
        for name in sorted(bundle.modules):
            interp.add_module(name, bundle.modules[name])
        interp.add_data(_plain(bundle.data))
        compiled = interp.build(None, [ENTRYPOINT])
    except RegoError as exc:
        raise InvalidRequest(
            codes.POLICY_INVALID,
            f"policy {bundle.version!r} does not compile: "
            f"{describe_rego_error(str(exc), bundle.modules)}",
        ) from None
    if not isinstance(compiled, Bundle) or not compiled.ok():
        raise InvalidRequest(codes.POLICY_INVALID, f"policy {bundle.version!r} did not build")
    return _Compiled(bundle.version, bundle.digest, compiled, bundle.modules)


def _query(interp: Any, bundle: Any) -> tuple[bool, str]:
    """Run the entrypoint and return (ok, raw result text).

    This goes through regopy's C-level functions rather than its ``Output`` class, which
    parses the result with a lenient ``json.loads`` and raises on the error text rego-cpp
    sometimes returns (``(error (errormsg ...))``) instead of showing it.
    """
    impl = rego_bundle_query_entrypoint(interp._impl, bundle._impl, ENTRYPOINT)
    try:
        return bool(rego_output_ok(impl)), str(rego_output_string(impl))
    finally:
        rego_free_output(impl)


def _decision_value(text: str) -> Any:
    if text.strip() == "undefined":
        raise _EvaluationFailed("data.coupon.decision is undefined for this input")
    try:
        result = loads_object(text.encode("utf-8"))
    except MalformedCoupon as exc:
        raise _EvaluationFailed(f"engine output is not strict JSON: {exc.reason}") from None
    expressions = result.get("expressions")
    if set(result) != {"expressions"} or not isinstance(expressions, list):
        raise _EvaluationFailed("engine output has an unexpected shape")
    if len(expressions) != 1:
        raise _EvaluationFailed(f"decision has {len(expressions)} values, not 1")
    return expressions[0]


class PolicyEngine:
    """Compiled policy versions and their fail-closed evaluation.

    Args:
        cache_size: how many versions stay compiled (least recently used go first; the
            builtin policy is never evicted).
        workers: evaluation threads; each owns one rego-cpp interpreter.

    Use :meth:`builtin` for an engine that already holds the builtin policy.
    """

    def __init__(self, *, cache_size: int = _DEFAULT_CACHE_SIZE, workers: int | None = None):
        if cache_size < 1:
            raise ValueError("cache_size must be at least 1")
        workers = workers if workers is not None else max(2, min(4, os.cpu_count() or 1))
        if workers < 1:
            raise ValueError("workers must be at least 1")
        self._cache_size = cache_size
        self._workers = workers
        self._cache: OrderedDict[str, _Compiled] = OrderedDict()
        self._pinned: set[str] = set()
        self._lock = threading.Lock()
        self._overdue = 0
        self._local = threading.local()
        self._pool = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="coupon-policy")

    @classmethod
    def builtin(
        cls, *, cache_size: int = _DEFAULT_CACHE_SIZE, workers: int | None = None
    ) -> PolicyEngine:
        """An engine with the builtin policy (:func:`builtin_bundle`) loaded and pinned."""
        engine = cls(cache_size=cache_size, workers=workers)
        engine._load(builtin_bundle(), pin=True)
        return engine

    # -- versions --------------------------------------------------------------------------------

    def load(self, bundle: VerifiedBundle) -> None:
        """Compile a verified bundle and keep it under its version.

        Loading the same content again is a no-op. Versions are immutable: the same version
        with other content is refused.

        Raises:
            InvalidRequest: ``CPN-POL-004`` when the Rego does not compile (the message names
                file, line and column) or the version is already loaded with other content.
        """
        self._load(bundle, pin=False)

    def _load(self, bundle: VerifiedBundle, *, pin: bool) -> None:
        with self._lock:
            existing = self._cache.get(bundle.version)
            if existing is not None and existing.digest == bundle.digest:
                self._cache.move_to_end(bundle.version)
                return
        if existing is not None:
            raise InvalidRequest(
                codes.POLICY_INVALID,
                f"policy version {bundle.version!r} is already loaded with other content",
            )
        compiled = _compile(bundle)
        with self._lock:
            self._cache[bundle.version] = compiled
            self._cache.move_to_end(bundle.version)
            if pin:
                self._pinned.add(bundle.version)
            evictable = [v for v in self._cache if v not in self._pinned]
            while len(self._cache) - len(self._pinned) > self._cache_size and evictable:
                del self._cache[evictable.pop(0)]

    @property
    def versions(self) -> tuple[str, ...]:
        """The compiled versions, least recently used first."""
        with self._lock:
            return tuple(self._cache)

    def __contains__(self, version: object) -> bool:
        with self._lock:
            return version in self._cache

    def digest(self, version: str) -> str:
        """The bundle digest a loaded version was compiled from (``KeyError`` if not loaded)."""
        with self._lock:
            return self._cache[version].digest

    def _get(self, version: str) -> _Compiled:
        with self._lock:
            compiled = self._cache.get(version)
            if compiled is not None:
                self._cache.move_to_end(version)
                return compiled
        raise DependencyUnavailable(
            codes.POLICY_FAILED, f"policy version {version!r} is not loaded"
        )

    # -- evaluation ------------------------------------------------------------------------------

    async def decide(
        self, version: str, policy_input: PolicyInput, *, deadline_ms: int
    ) -> PolicyDecision:
        """Evaluate ``version`` on ``policy_input``; return the decision, allow or deny.

        Raises:
            DependencyUnavailable: ``CPN-POL-002``, fail closed, when the version is not
                loaded, the deadline passes, the engine errs, the decision is undefined or the
                output is not model v1.
        """
        if not isinstance(policy_input, PolicyInput):
            raise TypeError("policy_input must be a PolicyInput")
        if type(deadline_ms) is not int or deadline_ms <= 0:
            raise ValueError("deadline_ms must be a positive int")
        compiled = self._get(version)
        document = _escaped(policy_input.to_input())
        with self._lock:
            saturated = self._overdue >= self._workers
        if saturated:
            raise DependencyUnavailable(
                codes.POLICY_FAILED, "every policy worker is stuck in an overdue evaluation"
            )
        future = self._pool.submit(self._run, compiled, document)
        try:
            value = await asyncio.wait_for(asyncio.wrap_future(future), deadline_ms / 1000)
        except TimeoutError:
            self._note_overdue(future)
            raise DependencyUnavailable(
                codes.POLICY_FAILED,
                f"policy {version!r} did not decide within its {deadline_ms} ms deadline",
            ) from None
        except _EvaluationFailed as exc:
            raise DependencyUnavailable(
                codes.POLICY_FAILED, f"policy {version!r} failed: {exc}"
            ) from None
        return PolicyDecision.from_output(value, version=version, policy_input=policy_input)

    async def evaluate(
        self, version: str, policy_input: PolicyInput, *, deadline_ms: int
    ) -> PolicyDecision:
        """Evaluate like :meth:`decide`, but raise on a denial: what is returned is an allow.

        Raises:
            PolicyDenied: ``CPN-POL-001`` with the policy's reason when it denies.
            DependencyUnavailable: ``CPN-POL-002`` as in :meth:`decide`.
        """
        decision = await self.decide(version, policy_input, deadline_ms=deadline_ms)
        if not decision.allow:
            raise PolicyDenied(codes.POLICY_DENIED, decision.reason)
        return decision

    async def check(self, version: str, *, deadline_ms: int) -> PolicyDecision:
        """Evaluate a loaded version once on a fixed probe input (for bundle uploads).

        Any well-formed decision, allow or deny, passes.

        Raises:
            InvalidRequest: ``CPN-POL-004`` when the policy cannot produce a model v1 decision
                within the deadline.
        """
        try:
            return await self.decide(version, _PROBE, deadline_ms=deadline_ms)
        except DependencyUnavailable as exc:
            raise InvalidRequest(codes.POLICY_INVALID, exc.reason) from None

    def _note_overdue(self, future: Future[Any]) -> None:
        if future.done():  # cancelled before it started, or finished just now
            return
        with self._lock:
            self._overdue += 1

        def finished(_: Future[Any]) -> None:
            with self._lock:
                self._overdue -= 1

        future.add_done_callback(finished)

    def _interpreter(self) -> Any:
        interp = getattr(self._local, "interpreter", None)
        if interp is None:
            interp = self._local.interpreter = _new_interpreter()
        return interp

    def _run(self, compiled: _Compiled, document: dict[str, Any]) -> Any:
        """Runs in a worker thread: one evaluation on this thread's interpreter."""
        try:
            interp = self._interpreter()
            interp.set_input(document)
            ok, text = _query(interp, compiled.bundle)
        except Exception as exc:  # a RegoError from the engine
            self._local.interpreter = None  # do not trust its state again
            raise _EvaluationFailed(f"engine error: {describe_rego_error(str(exc), {})}") from None
        if not ok:
            self._local.interpreter = None
            raise _EvaluationFailed("evaluation error (conflicting rules or a failing built-in)")
        if text.startswith("(error"):
            raise _EvaluationFailed(describe_rego_error(text, compiled.modules))
        return _decision_value(text)

    # -- lifetime --------------------------------------------------------------------------------

    def close(self) -> None:
        """Stop the workers, waiting for running evaluations to finish."""
        self._pool.shutdown(wait=True, cancel_futures=True)

    def __enter__(self) -> PolicyEngine:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()
