"""Issue-time policy: signed Rego bundles, policy model v1 and a fail-closed engine.

The Authority asks the policy whether to issue each coupon (and each Authority-issued
sub-coupon), so verification never has to. Policies arrive as Ed25519-signed bundles
(:func:`verify_envelope`), are compiled once per version by rego-cpp (:class:`PolicyEngine`)
and are evaluated on a :class:`PolicyInput` under a deadline. Every failure, timeout or
malformed answer is a denial (``CPN-POL-002``); see ``docs/policy.md``.
"""

from ._bundle import (
    MAX_BUNDLE_BYTES,
    SIGNATURE_CONTEXT,
    Envelope,
    VerifiedBundle,
    key_id,
    make_bundle,
    sign_bundle,
    trusted_keys_from_settings,
    verify_envelope,
)
from ._engine import (
    BUILTIN_DATA,
    BUILTIN_VERSION,
    ENTRYPOINT,
    PolicyEngine,
    builtin_bundle,
    default_policy_source,
)
from ._model import (
    BINDING_KINDS,
    BindingKind,
    PolicyCaller,
    PolicyDecision,
    PolicyInput,
    PolicyParent,
    PolicyRequest,
    lint_policy_data,
)

__all__ = [
    "BINDING_KINDS",
    "BUILTIN_DATA",
    "BUILTIN_VERSION",
    "ENTRYPOINT",
    "MAX_BUNDLE_BYTES",
    "SIGNATURE_CONTEXT",
    "BindingKind",
    "Envelope",
    "PolicyCaller",
    "PolicyDecision",
    "PolicyEngine",
    "PolicyInput",
    "PolicyParent",
    "PolicyRequest",
    "VerifiedBundle",
    "builtin_bundle",
    "default_policy_source",
    "key_id",
    "lint_policy_data",
    "make_bundle",
    "sign_bundle",
    "trusted_keys_from_settings",
    "verify_envelope",
]
