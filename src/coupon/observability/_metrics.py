"""Prometheus metrics of the Authority, on one registry per app (tests stay independent)."""

from __future__ import annotations

from dataclasses import dataclass, field

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

__all__ = ["AuthorityMetrics", "LedgerMetrics"]

_LATENCY_BUCKETS = (0.0005, 0.001, 0.002, 0.003, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1.0)


@dataclass
class AuthorityMetrics:
    """Every metric the Authority exports."""

    registry: CollectorRegistry = field(default_factory=CollectorRegistry)

    def __post_init__(self) -> None:
        r = self.registry
        self.decisions = Counter(
            "coupon_decisions_total",
            "Authority decisions by operation, result and code.",
            ["operation", "result", "code"],
            registry=r,
        )
        self.request_seconds = Histogram(
            "coupon_http_request_duration_seconds",
            "HTTP request latency by route and status.",
            ["route", "method", "status"],
            buckets=_LATENCY_BUCKETS,
            registry=r,
        )
        self.verify_seconds = Histogram(
            "coupon_verify_duration_seconds",
            "Time spent verifying a coupon (library pipeline).",
            ["result"],
            buckets=_LATENCY_BUCKETS,
            registry=r,
        )
        self.policy_seconds = Histogram(
            "coupon_policy_evaluation_seconds",
            "Policy evaluation latency.",
            ["result"],
            buckets=_LATENCY_BUCKETS,
            registry=r,
        )
        self.revocation_staleness = Gauge(
            "coupon_revocation_staleness_seconds",
            "Age of the newest confirmed revocation state in this process.",
            registry=r,
        )
        self.revocation_cursor = Gauge(
            "coupon_revocation_cursor",
            "Sequence number of the newest revocation applied in this process.",
            registry=r,
        )
        self.revocations = Counter(
            "coupon_revocations_total", "Revocations made, by kind.", ["kind"], registry=r
        )
        self.audit_events = Counter(
            "coupon_audit_events_total", "Audit events written, by action.", ["action"], registry=r
        )
        self.keys = Gauge("coupon_keys", "Signing keys by state.", ["state"], registry=r)
        self.shed = Counter(
            "coupon_load_shed_total",
            "Requests shed by replay-storm protection.",
            ["scope"],
            registry=r,
        )
        # Dual-auth migration (docs/migration.md): adoption per audience, errors, freshness.
        self.verify_decisions = Counter(
            "coupon_verify_decisions_total",
            "Verify decisions by audience, token kind (coupon or legacy) and outcome.",
            ["audience", "kind", "allow"],
            registry=r,
        )
        self.verify_denials = Counter(
            "coupon_verify_denials_total",
            "Verify denials by token kind and error code.",
            ["kind", "code"],
            registry=r,
        )
        self.revocation_newest_age = Gauge(
            "coupon_revocation_newest_age_seconds",
            "Age of the newest revocation this process enforces (its revoked_at to now).",
            registry=r,
        )
        self._audiences: set[str] = set()

    def count_verify(self, audience: str, kind: str, *, allow: bool, code: str = "") -> None:
        """Count one verify decision; audiences past the first 256 share the label ``_other``
        (the caller names the audience, so its label set must stay bounded)."""
        if audience not in self._audiences:
            if len(self._audiences) >= 256:
                audience = "_other"
            else:
                self._audiences.add(audience)
        self.verify_decisions.labels(audience, kind, "true" if allow else "false").inc()
        if not allow:
            self.verify_denials.labels(kind, code).inc()


_INTEGRATION_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.0, 5.0)


@dataclass
class LedgerMetrics:
    """Every metric the Ledger exports (on the app's registry)."""

    registry: CollectorRegistry = field(default_factory=CollectorRegistry)

    def __post_init__(self) -> None:
        r = self.registry
        self.appended = Counter(
            "coupon_ledger_entries_total", "Entries appended, by source.", ["source"], registry=r
        )
        self.batch_seconds = Histogram(
            "coupon_ledger_commit_seconds",
            "Time to commit one batch of entries with their tiles.",
            buckets=_LATENCY_BUCKETS,
            registry=r,
        )
        self.integration_seconds = Histogram(
            "coupon_ledger_integration_seconds",
            "From an entry's commit to the first signed checkpoint that includes it.",
            buckets=_INTEGRATION_BUCKETS,
            registry=r,
        )
        self.tree_size = Gauge("coupon_ledger_tree_size", "Entries in the log.", registry=r)
        self.checkpoint_size = Gauge(
            "coupon_ledger_checkpoint_size", "Tree size of the newest checkpoint.", registry=r
        )
        self.checkpoint_age = Gauge(
            "coupon_ledger_checkpoint_age_seconds", "Age of the newest checkpoint.", registry=r
        )
        self.proof_seconds = Histogram(
            "coupon_ledger_proof_seconds",
            "Time to build a proof, by kind.",
            ["kind"],
            buckets=_LATENCY_BUCKETS,
            registry=r,
        )
        self.witness = Counter(
            "coupon_ledger_witness_requests_total",
            "Cosignature requests to witnesses, by witness and outcome.",
            ["witness", "outcome"],
            registry=r,
        )
        self.relay_lag = Gauge(
            "coupon_ledger_relay_pending",
            "Audit events waiting to be relayed into the log (last poll).",
            registry=r,
        )
