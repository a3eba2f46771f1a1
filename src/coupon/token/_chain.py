"""Parsing coupons and offline attenuation chains.

A presented coupon is one compact JWS, or a *chain* ``root~link1~link2``: the root is signed
by the issuer (header ``kid``), and every later link is signed by the key its predecessor
binds in ``cnf.jkt`` (header ``jwk``, whose RFC 7638 thumbprint must equal that ``jkt``).
Everything here is independent of trusted keys and of time, so a result can be cached.
"""

from __future__ import annotations

import hashlib
import itertools
from typing import Any, Final, NamedTuple

from coupon import codes
from coupon.errors import (
    CouponError,
    InvalidChain,
    InvalidCoupon,
    InvalidSignature,
    MalformedCoupon,
)

from ._claims import Claims
from ._keys import KID_PATTERN
from ._narrowing import widening
from .hazmat import (
    COUPON_ALGORITHMS,
    CompactJWS,
    b64url_encode,
    jwk_thumbprint,
    parse_compact,
    public_key_from_jwk,
    verify_signature,
)

__all__ = [
    "COUPON_TYP",
    "SEPARATOR",
    "Link",
    "check_links",
    "link_hash",
    "parse_chain",
]

COUPON_TYP: Final = "coupon+jwt"
SEPARATOR: Final = "~"
_ROOT_HEADER: Final = frozenset({"alg", "typ", "kid"})
_LINK_HEADER: Final = frozenset({"alg", "typ", "jwk"})
_LINK_JWK_MEMBERS: Final = frozenset({"kty", "crv", "x", "y"})


class Link(NamedTuple):
    """One parsed, not yet verified, coupon of a chain (a tuple: cheap to build)."""

    raw: str
    header: dict[str, Any]
    claims: Claims
    jws: CompactJWS

    @property
    def is_root(self) -> bool:
        """Whether this link was signed by an issuer (``kid``) rather than a holder."""
        return "kid" in self.header


def link_hash(raw: str) -> str:
    """The ``par.hsh`` value naming a parent: base64url(SHA-256(ASCII(parent JWS)))."""
    return b64url_encode(hashlib.sha256(raw.encode("ascii")).digest())


def _check_header(header: dict[str, Any], *, root: bool) -> None:
    if "crit" in header:
        raise InvalidCoupon(
            codes.HEADER_CRIT, f"critical header(s) {header['crit']!r} not understood"
        )
    allowed = _ROOT_HEADER if root else _LINK_HEADER
    if header.keys() != allowed:
        extra = sorted(header.keys() - allowed)
        missing = sorted(allowed - header.keys())
        raise InvalidCoupon(
            codes.HEADER_FIELD, f"header members not allowed {extra} or missing {missing}"
        )
    if header["typ"] != COUPON_TYP:
        raise InvalidCoupon(codes.HEADER_TYP, f"typ must be {COUPON_TYP!r}, not {header['typ']!r}")
    alg = header["alg"]
    if not isinstance(alg, str) or alg not in COUPON_ALGORITHMS:
        raise InvalidCoupon(codes.HEADER_ALG, f"alg {str(alg)[:20]!r} is not allowed")
    if root and (not isinstance(header["kid"], str) or not KID_PATTERN.fullmatch(header["kid"])):
        raise InvalidCoupon(codes.HEADER_KID, "kid is malformed")
    if not root and (
        not isinstance(header["jwk"], dict) or not header["jwk"].keys() <= _LINK_JWK_MEMBERS
    ):
        raise InvalidCoupon(codes.HEADER_FIELD, "jwk must be an object of public key members")


def parse_chain(token: str, *, max_size: int, max_depth: int) -> list[Link]:
    """Split and strictly parse every link of ``token``; no signature is checked here."""
    if not isinstance(token, str):
        raise TypeError("token must be a str")
    if len(token) > max_size:
        raise MalformedCoupon(
            codes.TOKEN_TOO_LARGE, f"token is {len(token)} characters, limit {max_size}"
        )
    raws = token.split(SEPARATOR)
    if len(raws) > max_depth + 1:
        raise InvalidChain(codes.CHAIN_DEPTH, f"chain has {len(raws) - 1} links, limit {max_depth}")
    links = []
    for i, raw in enumerate(raws):
        jws = parse_compact(raw, max_size=max_size)
        _check_header(jws.header, root=i == 0)
        links.append(Link(raw, jws.header, Claims.from_dict(jws.claims()), jws))
    return links


def check_links(links: list[Link], *, max_depth: int) -> None:
    """Check every link after the root: key, signature, parent naming, depth, narrowing."""
    for parent, child in itertools.pairwise(links):
        bound = parent.claims.cnf.jkt
        if bound is None:
            raise InvalidChain(
                codes.CHAIN_BINDING, "only a coupon bound with cnf.jkt can be attenuated offline"
            )
        try:
            key, alg = public_key_from_jwk(child.header["jwk"])
            thumbprint = jwk_thumbprint(child.header["jwk"])
        except CouponError as exc:
            raise InvalidChain(codes.CHAIN_LINK, f"link key unusable: {exc.reason}") from None
        if thumbprint != bound:
            raise InvalidChain(codes.CHAIN_LINK, "link is not signed by the key its parent binds")
        if alg != child.header["alg"]:
            raise InvalidCoupon(
                codes.HEADER_ALG_KEY, f"header alg {child.header['alg']} but key is {alg}"
            )
        if not verify_signature(alg, key, child.jws.signature, child.jws.signing_input):
            raise InvalidSignature(
                codes.SIGNATURE, f"signature of link {child.claims.jti} does not verify"
            )
        par = child.claims.par
        if par is None or par.jti != parent.claims.jti or par.hsh != link_hash(parent.raw):
            raise InvalidChain(
                codes.CHAIN_PARENT, f"link {child.claims.jti} does not name its parent"
            )
        if child.claims.iss != parent.claims.sub:
            raise InvalidChain(codes.CHAIN_PARENT, "link issuer is not the parent's subject")
        if child.claims.dep > max_depth:
            raise InvalidChain(codes.CHAIN_DEPTH, f"depth {child.claims.dep} exceeds {max_depth}")
        why = widening(parent.claims, child.claims)
        if why is not None:
            raise InvalidChain(codes.CHAIN_WIDENS, why)
