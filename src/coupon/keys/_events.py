"""What a device-backed signer reports: frozen-dataclass events for hooks, and why calls fail.

``coupon.observability.SignerMetrics`` is the hook the Authority installs: it turns these into
``coupon_signer_up``, ``coupon_signer_failures_total``, ``coupon_signer_operation_seconds``
and log lines, so this layer imports nothing above it.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Final, Literal, Protocol

__all__ = [
    "Reason",
    "SignerDown",
    "SignerEvent",
    "SignerFailed",
    "SignerHook",
    "SignerUp",
    "SignerUsed",
    "classify",
]

#: Why a call failed; the label values of ``coupon_signer_failures_total``.
Reason = Literal["pin", "token", "key", "session", "device", "library", "busy", "other"]


@dataclass(frozen=True, slots=True)
class SignerUp:
    """The token answers again (or answered the first connection)."""

    backend: str
    token: str


@dataclass(frozen=True, slots=True)
class SignerDown:
    """The token stopped answering: signing fails closed until it is back."""

    backend: str
    token: str
    reason: Reason
    detail: str
    retrying: bool


@dataclass(frozen=True, slots=True)
class SignerFailed:
    """One operation (sign, probe, connect, generate, find) failed."""

    backend: str
    token: str
    operation: str
    reason: Reason
    detail: str


@dataclass(frozen=True, slots=True)
class SignerUsed:
    """One operation succeeded, and how long it held the device."""

    backend: str
    token: str
    operation: str
    seconds: float


SignerEvent = SignerUp | SignerDown | SignerFailed | SignerUsed


class SignerHook(Protocol):
    """Told about every :data:`SignerEvent` (``coupon.observability.SignerMetrics`` is one)."""

    def __call__(self, event: SignerEvent, /) -> None: ...


_PIN_ERRORS: Final = frozenset(
    {
        "PinIncorrect",
        "PinInvalid",
        "PinLenRange",
        "PinExpired",
        "PinLocked",
        "UserPinNotInitialized",
    }
)
_REASONS: Final[dict[str, Reason]] = {
    **dict.fromkeys(_PIN_ERRORS, "pin"),
    **dict.fromkeys(
        ("TokenNotPresent", "TokenNotRecognised", "DeviceRemoved", "NoSuchToken", "SlotIDInvalid"),
        "token",
    ),
    **dict.fromkeys(("NoSuchKey", "ObjectHandleInvalid", "KeyHandleInvalid"), "key"),
    **dict.fromkeys(
        ("SessionClosed", "SessionHandleInvalid", "SessionCount", "UserNotLoggedIn"), "session"
    ),
    **dict.fromkeys(
        ("DeviceError", "DeviceMemory", "GeneralError", "FunctionFailed", "HostMemory"), "device"
    ),
}


def classify(exc: BaseException) -> Reason:
    """The failure reason of a PKCS#11 exception (bounded: a metric label)."""
    name = type(exc).__name__
    if name in _REASONS:
        return _REASONS[name]
    if name == "PKCS11Error" and "loading" in str(exc):  # the module file itself
        return "library"
    return "other"
