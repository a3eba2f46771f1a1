"""Purpose binding: present, for each kind of call, a sub-coupon narrowed to that call.

A service often holds one broad coupon (``orders/**``, read and refund, purpose
``billing``) but makes calls that each need much less. :class:`PurposeBound` narrows the
coupon offline — the holder signs one more link, no call to the Authority — to the purpose
(and optionally the resource and actions) of one kind of call. Such a sub-coupon is useless
for any other purpose if it leaks from a log or a downstream service.

Each sub-coupon stays bound to the same holder key, so the same :class:`DPoPAuth` key signs
its proofs. It is cached and minted again when the parent coupon changes (a refresh) or when
fewer than ``refresh_before`` seconds of it are left.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterable

from coupon.token import DEFAULT_MAX_DEPTH, Binding, SigningKey, attenuate, parse_chain

from ._auth import CouponSupplier

__all__ = ["PurposeBound"]


class PurposeBound:
    """A coupon supplier for :class:`DPoPAuth` that narrows the coupon to one purpose.

    Args:
        holder: the key the coupon is bound to; it signs the narrowing link.
        coupon: the broad coupon, or a callable returning the current one.
        purpose: the purpose of the calls (equal to the coupon's, or a sub-purpose of it:
            ``billing.refund`` under ``billing``).
        resource: narrow the resource too (a pattern inside the coupon's).
        actions: narrow the actions too (a subset of the coupon's).
        ttl: seconds a sub-coupon lives at most (never past its parent).
        refresh_before: mint again when fewer than this many seconds are left.
        clock: POSIX seconds.

    Raises:
        InvalidRequest: on first use, when the narrowing would widen the coupon
            (``CPN-REQ-006``) or ``holder`` is not its key (``CPN-REQ-005``).

    Example::

        auth = DPoPAuth(holder, PurposeBound(holder, source.current, purpose="billing.refund",
                                             resource="orders/123", actions=["refund"]))
    """

    def __init__(
        self,
        holder: SigningKey,
        coupon: CouponSupplier,
        *,
        purpose: str,
        resource: str | None = None,
        actions: Iterable[str] | None = None,
        ttl: int = 300,
        refresh_before: int = 30,
        clock: Callable[[], float] = time.time,
    ) -> None:
        if ttl <= refresh_before:
            raise ValueError("ttl must be longer than refresh_before")
        self.holder = holder
        self._coupon = coupon
        self.purpose = purpose
        self.resource = resource
        self.actions = tuple(actions) if actions is not None else None
        self.ttl = ttl
        self.refresh_before = refresh_before
        self._clock = clock
        self._lock = threading.Lock()
        self._parent: str | None = None
        self._narrowed = ""
        self._expires = 0
        self.minted = 0  # sub-coupons minted so far, for tests and metrics

    def __call__(self) -> str:
        """The current sub-coupon, minted first when needed."""
        parent = self._coupon if isinstance(self._coupon, str) else self._coupon()
        now = int(self._clock())
        with self._lock:
            if parent != self._parent or self._expires - now < self.refresh_before:
                self._mint(parent, now)
            return self._narrowed

    def _mint(self, parent: str, now: int) -> None:
        claims = parse_chain(parent, max_size=len(parent), max_depth=DEFAULT_MAX_DEPTH)[-1].claims
        self._narrowed = attenuate(
            parent,
            self.holder,
            delegate=Binding(jkt=self.holder.public.thumbprint),
            subject=claims.sub,
            resource=self.resource,
            actions=self.actions,
            purpose=self.purpose,
            ttl=self.ttl,
            now=now,
        )
        self._parent = parent
        self._expires = min(claims.exp, now + self.ttl)
        self.minted += 1
