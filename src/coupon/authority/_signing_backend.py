"""Settings into the key backend: sealed keys (the default) or a PKCS#11 token.

With ``COUPON_KEY_BACKEND=pkcs11`` the coupon keys and the Ledger's checkpoint keys are
generated and kept in the token; the master key still derives the audit-signing and DPoP
nonce secrets and seals the Ledger's personal-data keys.
"""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING, Final

from coupon import codes
from coupon.errors import DependencyUnavailable
from coupon.keys import KeyBackend, MasterKey, Pkcs11Keys, Pkcs11Token, SignerHealth
from coupon.observability import tracer_provider

if TYPE_CHECKING:
    from coupon.keys import Keyring
    from coupon.settings import Settings
    from coupon.token import CouponBuilder, Signer

__all__ = ["SIGN_TIMEOUT", "open_key_backend", "sign_coupon", "signer_problem"]

#: How long an issuance waits for a device signature before answering 503 ``CPN-DEP-004``.
SIGN_TIMEOUT: Final = 10.0


def open_key_backend(
    settings: Settings, master: MasterKey
) -> tuple[MasterKey | KeyBackend, Pkcs11Token | None]:
    """The keyring's backend and, for ``pkcs11``, the token (already connected or down).

    Raises:
        ValueError: ``pkcs11`` without a PIN (a configuration error: refuse to start).
    """
    if settings.key_backend != "pkcs11":
        return master, None
    if settings.pkcs11_pin is None:
        raise ValueError("COUPON_KEY_BACKEND=pkcs11 needs COUPON_PKCS11_PIN")
    token = Pkcs11Token.open(
        settings.pkcs11_module,
        settings.pkcs11_token_label,
        settings.pkcs11_pin.get_secret_value(),
        probe_interval=settings.pkcs11_probe_interval,
        tracer=tracer_provider().get_tracer("coupon.keys"),
    )
    return Pkcs11Keys(token), token


def signer_problem(keyring: Keyring) -> str | None:
    """Why the keyring cannot sign now, or None (what ``coupon_signer_up`` reports)."""
    try:
        _ = keyring.signer
    except Exception as exc:
        return str(exc) or type(exc).__name__
    return None


async def sign_coupon(
    builder: CouponBuilder, signer: Signer, *, timeout: float = SIGN_TIMEOUT
) -> str:
    """``builder.sign(signer)``; for a key in a device, in a worker thread, bounded.

    A PKCS#11 call blocks, and on a network HSM for as long as the network says: on the event
    loop it would stall every request of the process. Sealed keys sign inline (tens of µs).

    Raises:
        DependencyUnavailable: ``CPN-DEP-004``: the device is down, or did not answer within
            ``timeout`` seconds.
    """
    if not isinstance(signer, SignerHealth):
        return builder.sign(signer)
    try:
        return await asyncio.wait_for(asyncio.to_thread(builder.sign, signer), timeout)
    except TimeoutError:
        raise DependencyUnavailable(
            codes.UNAVAILABLE_SIGNER, f"the HSM did not sign within {timeout:g}s"
        ) from None
