"""DPoP for httpx: an :class:`httpx.Auth` that presents a coupon with a fresh proof.

The flow is the shape of httpx's ``DigestAuth``: send, and when the server answers
``401`` with ``WWW-Authenticate: DPoP error="use_dpop_nonce"`` and a ``DPoP-Nonce``, sign a
new proof with that nonce and send once more (RFC 9449 §8). Never twice: a server that keeps
asking gets its second 401 back. The latest nonce of each origin is kept for later requests.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Generator

import httpx

from coupon.token import SigningKey, create_dpop_proof, new_jti

__all__ = ["CouponSupplier", "DPoPAuth"]

#: Where :class:`DPoPAuth` reads the coupon: the token itself, or a callable returning it.
CouponSupplier = str | Callable[[], str]


def _origin(url: httpx.URL) -> str:
    return f"{url.scheme}://{url.netloc.decode('ascii')}"


def _asks_for_nonce(response: httpx.Response) -> bool:
    if response.status_code != 401 or "DPoP-Nonce" not in response.headers:
        return False
    challenge = response.headers.get("WWW-Authenticate", "")
    return challenge.lstrip().lower().startswith("dpop") and 'error="use_dpop_nonce"' in challenge


class DPoPAuth(httpx.Auth):
    """Send ``Authorization: DPoP <coupon>`` with a ``DPoP`` proof signed by ``key``.

    Args:
        key: the holder's key, the one the coupon's ``cnf.jkt`` names.
        coupon: the coupon, or a callable returning the current one (a
            :meth:`CouponSource.current` that refreshes stays a plain ``str`` here).
        clock: POSIX seconds; the proof's ``iat`` is its whole part.
        jti: makes each proof's ``jti`` (128 random bits by default).

    Works with ``httpx.Client`` and ``httpx.AsyncClient``: the flow never reads a body.
    """

    requires_request_body = False
    requires_response_body = False

    def __init__(
        self,
        key: SigningKey,
        coupon: CouponSupplier,
        *,
        clock: Callable[[], float] = time.time,
        jti: Callable[[], str] = new_jti,
    ) -> None:
        if not isinstance(coupon, str) and not callable(coupon):
            raise TypeError("coupon is a str or a callable returning one")
        self._key = key
        self._coupon = coupon
        self._clock = clock
        self._jti = jti
        self._nonces: dict[str, str] = {}
        self._lock = threading.Lock()

    def nonce_for(self, url: httpx.URL | str) -> str | None:
        """The latest ``DPoP-Nonce`` the origin of ``url`` sent, if any."""
        with self._lock:
            return self._nonces.get(_origin(httpx.URL(url)))

    def _remember(self, response: httpx.Response) -> None:
        nonce = response.headers.get("DPoP-Nonce")
        if nonce:
            with self._lock:
                self._nonces[_origin(response.request.url)] = nonce

    def _token(self) -> str:
        return self._coupon if isinstance(self._coupon, str) else self._coupon()

    def _sign(self, request: httpx.Request, token: str, nonce: str | None) -> None:
        request.headers["Authorization"] = f"DPoP {token}"
        request.headers["DPoP"] = create_dpop_proof(
            self._key,
            method=request.method,
            uri=str(request.url),
            now=int(self._clock()),
            jti=self._jti(),
            access_token=token,
            nonce=nonce,
        )

    def auth_flow(self, request: httpx.Request) -> Generator[httpx.Request, httpx.Response, None]:
        token = self._token()
        self._sign(request, token, self.nonce_for(request.url))
        response = yield request
        self._remember(response)
        if not _asks_for_nonce(response):
            return
        self._sign(request, token, response.headers["DPoP-Nonce"])
        response = yield request
        self._remember(response)
