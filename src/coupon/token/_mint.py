"""Minting coupons: an immutable builder, ``mint``, and offline ``attenuate``.

Time and randomness are arguments (``now``, ``jti``); when left out, the clock and the OS
random source are read here, in one place, so tests and vectors can pin them.
"""

from __future__ import annotations

import secrets
import time
from collections.abc import Iterable
from dataclasses import dataclass, field, replace
from typing import Any, Final

from coupon import codes
from coupon.errors import InvalidRequest, MalformedCoupon

from ._chain import COUPON_TYP, SEPARATOR, Link, link_hash, parse_chain
from ._claims import MAX_STRING, Binding, Claims
from ._keys import Signer, SigningKey
from ._narrowing import widening
from ._scope import ResourcePattern, parse_actions, parse_purpose
from .hazmat import b64url_encode, encode_compact

__all__ = ["DEFAULT_MAX_DEPTH", "CouponBuilder", "attenuate", "mint", "new_jti"]

DEFAULT_MAX_DEPTH: Final = 4
DEFAULT_TTL: Final = 300


def new_jti() -> str:
    """A fresh random identifier (128 bits, base64url)."""
    return b64url_encode(secrets.token_bytes(16))


def _text(name: str, value: str) -> str:
    if not isinstance(value, str) or not value or len(value) > MAX_STRING:
        raise InvalidRequest(
            codes.REQUEST_CLAIM, f"{name} must be a non-empty string of at most {MAX_STRING}"
        )
    if not value.isascii():
        try:
            value.encode("utf-8")
        except UnicodeEncodeError:
            raise InvalidRequest(codes.REQUEST_CLAIM, f"{name} holds a lone surrogate") from None
    return value


@dataclass(frozen=True, slots=True)
class CouponBuilder:
    """An immutable coupon builder; each setter returns a new builder and may be called once.

    >>> key = SigningKey.generate()
    >>> token = (
    ...     CouponBuilder()
    ...     .issuer("https://authority.example")
    ...     .subject("svc-billing")
    ...     .audience("orders-api")
    ...     .tenant("acme")
    ...     .resource("orders/*")
    ...     .actions("read")
    ...     .purpose("billing")
    ...     .bind(Binding(jkt=key.public.thumbprint))
    ...     .lifetime(now=1_700_000_000, ttl=300)
    ...     .jti("coupon-1")
    ...     .sign(key)
    ... )
    >>> token.count(".")
    2
    """

    _values: dict[str, Any] = field(default_factory=dict)
    _parent: Link | None = None

    def _set(self, name: str, value: Any) -> CouponBuilder:
        if name in self._values:
            raise ValueError(f"{name} is already set")
        return replace(self, _values={**self._values, name: value})

    def issuer(self, value: str) -> CouponBuilder:
        """Set ``iss``."""
        return self._set("iss", _text("issuer", value))

    def subject(self, value: str) -> CouponBuilder:
        """Set ``sub``, the holder."""
        return self._set("sub", _text("subject", value))

    def audience(self, *values: str) -> CouponBuilder:
        """Set ``aud``: one or more services that accept the coupon."""
        if not values:
            raise InvalidRequest(codes.REQUEST_CLAIM, "at least one audience")
        if len(set(values)) != len(values):
            raise InvalidRequest(codes.REQUEST_CLAIM, "duplicate audience")
        return self._set("aud", tuple(_text("audience", v) for v in values))

    def tenant(self, value: str) -> CouponBuilder:
        """Set ``tid``."""
        return self._set("tid", _text("tenant", value))

    def resource(self, pattern: str) -> CouponBuilder:
        """Set ``res``, a resource pattern (see the grammar in ``docs/coupon-format.md``)."""
        return self._set("res", ResourcePattern.parse(pattern))

    def actions(self, *values: str) -> CouponBuilder:
        """Set ``act``."""
        return self._set("act", parse_actions(list(values)))

    def purpose(self, value: str) -> CouponBuilder:
        """Set ``pur``."""
        return self._set("pur", parse_purpose(value))

    def bind(self, binding: Binding) -> CouponBuilder:
        """Set ``cnf``: the DPoP key thumbprint or certificate thumbprint the coupon binds."""
        return self._set("cnf", binding)

    def lifetime(self, *, now: int, ttl: int, not_before: int | None = None) -> CouponBuilder:
        """Set ``iat`` = now, ``nbf`` = not_before or now, ``exp`` = now + ttl."""
        if type(now) is not int or type(ttl) is not int or ttl <= 0:
            raise InvalidRequest(codes.REQUEST_CLAIM, "now and ttl must be integers, ttl > 0")
        nbf = now if not_before is None else not_before
        if type(nbf) is not int or not now <= nbf < now + ttl:
            raise InvalidRequest(codes.REQUEST_CLAIM, "not_before must fall within the lifetime")
        return self._set("iat", now)._set("nbf", nbf)._set("exp", now + ttl)

    def expires(self, exp: int) -> CouponBuilder:
        """Override ``exp`` (used to clamp a sub-coupon to its parent)."""
        if type(exp) is not int:
            raise InvalidRequest(codes.REQUEST_CLAIM, "exp must be an integer")
        values = dict(self._values)
        values["exp"] = exp
        return replace(self, _values=values)

    def jti(self, value: str) -> CouponBuilder:
        """Set ``jti``."""
        return self._set("jti", _text("jti", value))

    def lineage(self, value: str) -> CouponBuilder:
        """Set ``lin``; a root coupon defaults to its own ``jti``."""
        return self._set("lin", _text("lineage", value))

    def policy(self, version: str) -> CouponBuilder:
        """Stamp ``pol``, the policy version that allowed the coupon."""
        return self._set("pol", _text("policy", version))

    def child_of(self, parent_token: str) -> CouponBuilder:
        """Make this a sub-coupon of ``parent_token`` (its last link when it is a chain).

        Sets ``par``, ``lin``, ``dep`` and ``tid``; :meth:`build` refuses any widening.
        """
        if self._parent is not None:
            raise ValueError("parent is already set")
        parent = parse_chain(parent_token, max_size=len(parent_token), max_depth=64)[-1]
        return replace(self, _parent=parent)

    def build(self) -> Claims:
        """Check the values and return the claims; ``InvalidRequest`` when they are unusable."""
        values = dict(self._values)
        parent = self._parent
        if parent is not None:
            values.setdefault("tid", parent.claims.tid)
            values.setdefault("pol", parent.claims.pol)
            values["lin"] = parent.claims.lin
            values["dep"] = parent.claims.dep + 1
            values["par"] = {"jti": parent.claims.jti, "hsh": link_hash(parent.raw)}
        else:
            values["dep"] = 0
            if "jti" in values:
                values.setdefault("lin", values["jti"])
        missing = [
            n
            for n in ("iss", "sub", "aud", "tid", "res", "act", "pur", "cnf", "iat", "jti")
            if n not in values
        ]
        if missing:
            raise ValueError(f"missing {', '.join(missing)}")
        document = {
            "ver": 1,
            **values,
            "aud": list(values["aud"]),
            "res": str(values["res"]),
            "act": sorted(values["act"]),
            "cnf": values["cnf"].to_cnf(),
        }
        if document.get("pol") is None:
            document.pop("pol", None)
        if values["exp"] <= values["nbf"]:
            raise InvalidRequest(codes.REQUEST_CLAIM, "coupon expires before it becomes valid")
        try:
            claims = Claims.from_dict(document)
        except MalformedCoupon as exc:
            raise InvalidRequest(codes.REQUEST_CLAIM, exc.reason) from None
        if parent is not None:
            why = widening(parent.claims, claims)
            if why is not None:
                raise InvalidRequest(codes.REQUEST_WIDENS, why)
        return claims

    def sign(self, signer: SigningKey | Signer, *, embed_key: bool = False) -> str:
        """Build, sign and serialise; ``embed_key`` puts ``jwk`` in the header (a chain link)."""
        claims = self.build()
        if embed_key:
            jwk = {k: v for k, v in signer.public.jwk().items() if k not in ("kid", "alg", "use")}
            header: dict[str, Any] = {"alg": signer.alg, "typ": COUPON_TYP, "jwk": jwk}
        else:
            header = {"alg": signer.alg, "typ": COUPON_TYP, "kid": signer.kid}
        signing_input, prefix = encode_compact(header, claims.to_dict())
        return f"{prefix}.{b64url_encode(signer.sign(signing_input))}"


def mint(
    signer: SigningKey | Signer,
    *,
    issuer: str,
    subject: str,
    audience: str | Iterable[str],
    tenant: str,
    resource: str,
    actions: Iterable[str],
    purpose: str,
    binding: Binding,
    ttl: int = DEFAULT_TTL,
    now: int | None = None,
    jti: str | None = None,
    not_before: int | None = None,
    lineage: str | None = None,
    policy: str | None = None,
) -> str:
    """Mint a root coupon signed by ``signer``.

    Raises:
        InvalidRequest: a value breaks the format (``CPN-REQ-*``).
    """
    auds = (audience,) if isinstance(audience, str) else tuple(audience)
    builder = (
        CouponBuilder()
        .issuer(issuer)
        .subject(subject)
        .audience(*auds)
        .tenant(tenant)
        .resource(resource)
        .actions(*actions)
        .purpose(purpose)
        .bind(binding)
        .lifetime(now=int(time.time()) if now is None else now, ttl=ttl, not_before=not_before)
        .jti(jti or new_jti())
    )
    if lineage is not None:
        builder = builder.lineage(lineage)
    if policy is not None:
        builder = builder.policy(policy)
    return builder.sign(signer)


def attenuate(
    token: str,
    holder: SigningKey | Signer,
    *,
    delegate: Binding,
    subject: str,
    resource: str | None = None,
    actions: Iterable[str] | None = None,
    purpose: str | None = None,
    audience: str | Iterable[str] | None = None,
    ttl: int | None = None,
    now: int | None = None,
    jti: str | None = None,
    max_depth: int = DEFAULT_MAX_DEPTH,
) -> str:
    """Attenuate ``token`` offline: append a link signed by ``holder`` for the ``delegate``.

    ``holder`` must be the key that the last link binds (``cnf.jkt``). Left-out scope keeps the
    parent's; the link expires at ``now + ttl`` or the parent's expiry, whichever is sooner.

    Raises:
        InvalidRequest: the holder key is not bound, or the request widens (``CPN-REQ-006``).
    """
    if delegate.jkt is None:
        raise InvalidRequest(codes.REQUEST_CLAIM, "offline links bind a DPoP key (jkt)")
    parent = parse_chain(token, max_size=len(token), max_depth=max(max_depth, 64))[-1].claims
    if parent.cnf.jkt != holder.public.thumbprint:
        raise InvalidRequest(codes.REQUEST_KEY, "this key is not the key the coupon is bound to")
    if parent.dep + 1 > max_depth:
        raise InvalidRequest(codes.REQUEST_WIDENS, f"depth {parent.dep + 1} exceeds {max_depth}")
    moment = int(time.time()) if now is None else now
    nbf = max(moment, parent.nbf)
    exp = parent.exp if ttl is None else min(parent.exp, moment + ttl)
    if exp <= nbf:
        raise InvalidRequest(codes.REQUEST_CLAIM, "the parent expires before the link could start")
    auds = (
        parent.aud
        if audience is None
        else ((audience,) if isinstance(audience, str) else tuple(audience))
    )
    link = (
        CouponBuilder()
        .child_of(token)
        .issuer(parent.sub)
        .subject(subject)
        .audience(*auds)
        .resource(str(parent.res) if resource is None else resource)
        .actions(*(sorted(parent.act) if actions is None else actions))
        .purpose(parent.pur if purpose is None else purpose)
        .bind(delegate)
        .lifetime(now=moment, ttl=max(exp - moment, 1), not_before=nbf if nbf > moment else None)
        .expires(exp)
        .jti(jti or new_jti())
        .sign(holder, embed_key=True)
    )
    return f"{token}{SEPARATOR}{link}"
