"""A signer hook that exports Prometheus metrics and logs outages (see :mod:`coupon.keys`).

``coupon_signer_up{backend}`` is the alert: 0 means the Authority cannot sign coupons (or the
Ledger its checkpoints) and answers ``CPN-DEP-004``; it never falls back to another key.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

from coupon.keys import SignerDown, SignerEvent, SignerFailed, SignerUp, SignerUsed

from ._logging import get_logger

__all__ = ["SignerMetrics"]

_log = get_logger("coupon.keys")
_BUCKETS = (0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.05, 0.25, 1.0)


@dataclass
class SignerMetrics:
    """A :data:`coupon.keys.SignerHook`: signer health, failures and device time, logged.

    Add it to a :class:`~coupon.keys.Pkcs11Token`'s hooks; :meth:`observe` sets the gauge
    for any backend from the keyring's own view (the sealed backend has no events).
    """

    registry: CollectorRegistry = field(default_factory=CollectorRegistry)

    def __post_init__(self) -> None:
        r = self.registry
        self.up = Gauge(
            "coupon_signer_up",
            "1 when the signing key can sign, 0 when it cannot (issuance answers 503 "
            "CPN-DEP-004): alert on 0.",
            ["backend"],
            registry=r,
        )
        self.failures = Counter(
            "coupon_signer_failures_total",
            "Failed signer operations by backend and reason (pin, token, key, session, "
            "device, library, busy, other).",
            ["backend", "reason"],
            registry=r,
        )
        self.seconds = Histogram(
            "coupon_signer_operation_seconds",
            "Time an operation held the signing device (sign, find, generate, probe).",
            ["backend", "operation"],
            buckets=_BUCKETS,
            registry=r,
        )

    def observe(self, backend: str, problem: str | None) -> None:
        """Set ``coupon_signer_up`` for ``backend`` from the keyring's view."""
        self.up.labels(backend).set(0 if problem else 1)

    def __call__(self, event: SignerEvent, /) -> None:
        """Update the metrics and log state changes for one event."""
        if isinstance(event, SignerUsed):
            self.seconds.labels(event.backend, event.operation).observe(event.seconds)
        elif isinstance(event, SignerFailed):
            self.failures.labels(event.backend, event.reason).inc()
            _log.warning(
                "signer_operation_failed",
                backend=event.backend,
                hsm_token=event.token,
                operation=event.operation,
                reason=event.reason,
                detail=event.detail,
            )
        elif isinstance(event, SignerDown):
            self.up.labels(event.backend).set(0)
            _log.error(
                "signer_down",
                backend=event.backend,
                hsm_token=event.token,
                reason=event.reason,
                detail=event.detail,
                retrying=event.retrying,
            )
        elif isinstance(event, SignerUp):
            self.up.labels(event.backend).set(1)
            _log.info("signer_up", backend=event.backend, hsm_token=event.token)
