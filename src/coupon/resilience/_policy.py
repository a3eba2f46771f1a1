"""Pipeline configuration: frozen dataclasses, the named defaults, and loading from data.

Durations are seconds (floats). ``from_dict`` and ``load`` read a mapping such as parsed TOML
or JSON and raise ``ValueError`` on anything they do not understand: a configuration file is
written by an operator, so a mistake there is misuse, not untrusted input.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any, Final

__all__ = [
    "DEFAULTS",
    "BreakerPolicy",
    "BudgetPolicy",
    "BulkheadPolicy",
    "PipelinePolicy",
    "RetryPolicy",
    "from_dict",
    "load",
]

_RETRY_STATUS = frozenset({408, 429, 500, 502, 503, 504})


def _require(ok: bool, message: str) -> None:
    if not ok:
        raise ValueError(message)


def _positive(name: str, value: float | None, *, zero: bool = False) -> None:
    if value is None:
        return
    ok = value >= 0 if zero else value > 0
    _require(math.isfinite(value) and ok, f"{name} must be {'>= 0' if zero else '> 0'}: {value}")


@dataclass(frozen=True, slots=True, kw_only=True)
class BudgetPolicy:
    """Retries may add at most ``ratio`` on top of first attempts within ``window`` seconds."""

    ratio: float = 0.2
    window: float = 10.0
    min_retries: int = 10

    def __post_init__(self) -> None:
        _positive("budget.ratio", self.ratio, zero=True)
        _positive("budget.window", self.window)
        _require(self.min_retries >= 0, "budget.min_retries must be >= 0")


@dataclass(frozen=True, slots=True, kw_only=True)
class RetryPolicy:
    """How often and how soon to try again.

    The n-th retry (n = 1, 2, ...) waits ``min(max_delay, base_delay * multiplier ** (n - 1))``
    — a uniform draw below that with ``full_jitter`` — plus a uniform draw below ``jitter``.
    A ``Retry-After`` longer than that wins.
    """

    max_retries: int = 1
    base_delay: float = 0.1
    multiplier: float = 2.0
    max_delay: float = 10.0
    full_jitter: bool = True
    jitter: float = 0.0
    on_status: frozenset[int] = _RETRY_STATUS
    budget: BudgetPolicy | None = field(default_factory=BudgetPolicy)

    def __post_init__(self) -> None:
        _require(self.max_retries >= 0, "retry.max_retries must be >= 0")
        _positive("retry.base_delay", self.base_delay, zero=True)
        _require(self.multiplier >= 1, "retry.multiplier must be >= 1")
        _positive("retry.max_delay", self.max_delay, zero=True)
        _positive("retry.jitter", self.jitter, zero=True)
        _require(
            all(500 <= s <= 599 or s in (408, 429) for s in self.on_status),
            f"retry.on_status may name 408, 429 and 5xx only: {sorted(self.on_status)}",
        )


@dataclass(frozen=True, slots=True, kw_only=True)
class BreakerPolicy:
    """Open when at least ``failure_ratio`` of at least ``min_throughput`` calls failed."""

    failure_ratio: float = 0.5
    window: float = 30.0
    buckets: int = 10
    min_throughput: int = 10
    break_duration: float = 30.0
    probes: int = 1

    def __post_init__(self) -> None:
        _require(0 < self.failure_ratio <= 1, "breaker.failure_ratio must be in (0, 1]")
        _positive("breaker.window", self.window)
        _require(self.buckets >= 1, "breaker.buckets must be >= 1")
        _require(self.min_throughput >= 1, "breaker.min_throughput must be >= 1")
        _positive("breaker.break_duration", self.break_duration)
        _require(self.probes >= 1, "breaker.probes must be >= 1")


@dataclass(frozen=True, slots=True, kw_only=True)
class BulkheadPolicy:
    """At most ``max_concurrent`` calls at once and ``max_queue`` waiting; more are rejected."""

    max_concurrent: int = 10
    max_queue: int = 0

    def __post_init__(self) -> None:
        _require(self.max_concurrent >= 1, "bulkhead.max_concurrent must be >= 1")
        _require(self.max_queue >= 0, "bulkhead.max_queue must be >= 0")


@dataclass(frozen=True, slots=True, kw_only=True)
class PipelinePolicy:
    """Everything a :class:`~coupon.resilience.Pipeline` needs; ``None`` turns a stage off."""

    name: str
    timeout: float | None = None
    attempt_timeout: float | None = None
    retry: RetryPolicy | None = None
    breaker: BreakerPolicy | None = None
    bulkhead: BulkheadPolicy | None = None

    def __post_init__(self) -> None:
        _require(bool(self.name), "a pipeline needs a name")
        _positive("timeout", self.timeout)
        _positive("attempt_timeout", self.attempt_timeout)


DEFAULTS: Final[Mapping[str, PipelinePolicy]] = MappingProxyType(
    {
        "sync-microservice": PipelinePolicy(
            name="sync-microservice",
            timeout=0.6,
            attempt_timeout=0.3,
            retry=RetryPolicy(
                max_retries=1,
                base_delay=0.025,
                multiplier=1.0,
                full_jitter=False,
                jitter=0.025,
                on_status=frozenset({408, 502, 503, 504}),
            ),
            breaker=BreakerPolicy(
                failure_ratio=0.5, window=30.0, break_duration=30.0, min_throughput=10
            ),
            bulkhead=BulkheadPolicy(max_concurrent=50, max_queue=100),
        ),
        "redis-operation": PipelinePolicy(
            name="redis-operation",
            timeout=0.1,
            retry=RetryPolicy(max_retries=1, base_delay=0.01, multiplier=1.0),
            breaker=BreakerPolicy(
                failure_ratio=0.3, window=15.0, break_duration=15.0, min_throughput=20
            ),
        ),
        "external-api": PipelinePolicy(
            name="external-api",
            timeout=30.0,
            attempt_timeout=10.0,
            retry=RetryPolicy(
                max_retries=3,
                base_delay=1.0,
                on_status=frozenset({429, 500, 502, 503, 504}),
            ),
            breaker=BreakerPolicy(
                failure_ratio=0.5, window=60.0, break_duration=60.0, min_throughput=5
            ),
            bulkhead=BulkheadPolicy(max_concurrent=20, max_queue=50),
        ),
        "async-job": PipelinePolicy(name="async-job", timeout=300.0),
        "database-query": PipelinePolicy(
            name="database-query",
            timeout=30.0,
            retry=RetryPolicy(max_retries=3, base_delay=0.1),
            breaker=BreakerPolicy(failure_ratio=0.5, window=30.0, break_duration=30.0),
        ),
    }
)

_SECTIONS: dict[str, type[Any]] = {
    "retry": RetryPolicy,
    "breaker": BreakerPolicy,
    "bulkhead": BulkheadPolicy,
}


def _number(where: str, value: object, *, integer: bool) -> float | int:
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise ValueError(f"{where} must be a number, not {value!r}")
    if integer and not isinstance(value, int):
        raise ValueError(f"{where} must be an integer, not {value!r}")
    return value


def _convert(where: str, kind: type[Any], data: object, base: Any) -> Any:
    if data is False:
        return None
    if not isinstance(data, Mapping):
        raise ValueError(f"{where} must be a table or false, not {data!r}")
    fields = {f.name: f for f in dataclasses.fields(kind)}
    values: dict[str, Any] = {}
    for key, value in data.items():
        spot = f"{where}.{key}"
        if key not in fields:
            raise ValueError(f"unknown setting {spot}")
        if key == "budget":
            values[key] = _convert(spot, BudgetPolicy, value, getattr(base, key, None))
        elif key == "on_status":
            if not isinstance(value, list):
                raise ValueError(f"{spot} must be a list of status codes")
            values[key] = frozenset(int(_number(spot, v, integer=True)) for v in value)
        elif key == "full_jitter":
            if not isinstance(value, bool):
                raise ValueError(f"{spot} must be true or false")
            values[key] = value
        else:
            integer = fields[key].type in ("int", int)
            values[key] = _number(spot, value, integer=integer)
    return dataclasses.replace(base, **values) if base is not None else kind(**values)


def from_dict(data: Mapping[str, Any], *, name: str) -> PipelinePolicy:
    """Build one pipeline's policy from a mapping (a TOML table, a JSON object).

    ``extends`` names a default to start from (``"sync-microservice"``...); ``timeout`` and
    ``attempt_timeout`` are seconds; ``retry``, ``breaker`` and ``bulkhead`` are tables whose
    keys are the fields of the policy classes, or ``false`` to turn the stage off.

    Args:
        data: the table.
        name: the pipeline's name (metric label, error attribute).

    Raises:
        ValueError: an unknown key, a value of the wrong type or out of range.
    """
    if not isinstance(data, Mapping):
        raise ValueError(f"pipeline {name!r} must be a table")
    extends = data.get("extends")
    if extends is None:
        policy = PipelinePolicy(name=name)
    elif isinstance(extends, str) and extends in DEFAULTS:
        policy = dataclasses.replace(DEFAULTS[extends], name=name)
    else:
        raise ValueError(f"{name}.extends must name one of {sorted(DEFAULTS)}: {extends!r}")
    changes: dict[str, Any] = {}
    for key, value in data.items():
        spot = f"{name}.{key}"
        if key == "extends":
            continue
        if key in ("timeout", "attempt_timeout"):
            changes[key] = None if value is False else _number(spot, value, integer=False)
        elif key in _SECTIONS:
            changes[key] = _convert(spot, _SECTIONS[key], value, getattr(policy, key))
        else:
            raise ValueError(f"unknown setting {spot}")
    try:
        return dataclasses.replace(policy, **changes)
    except TypeError as exc:  # pragma: no cover - every field was checked above
        raise ValueError(str(exc)) from exc


def load(data: Mapping[str, Any]) -> dict[str, PipelinePolicy]:
    """Build every pipeline of a ``{name: table}`` mapping with :func:`from_dict`.

    Raises:
        ValueError: as :func:`from_dict`, naming the pipeline.
    """
    if not isinstance(data, Mapping):
        raise ValueError("the configuration must be a table of pipelines")
    return {str(name): from_dict(table, name=str(name)) for name, table in data.items()}
