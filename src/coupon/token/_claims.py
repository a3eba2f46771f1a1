"""The claims of a coupon (format v1), parsed strictly into a typed record.

A v1 coupon is closed: an unknown claim is refused, because a verifier that skipped a
restriction it did not understand would grant more than the issuer meant.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Final

from coupon import codes
from coupon.errors import CouponError, MalformedCoupon

from ._scope import ResourcePattern, parse_actions, parse_purpose

__all__ = ["FORMAT_VERSION", "Binding", "Claims", "Parent"]

FORMAT_VERSION: Final = 1
MAX_STRING: Final = 256
MAX_AUDIENCES: Final = 16

_REQUIRED: Final = ("ver", "iss", "sub", "aud", "iat", "nbf", "exp", "jti", "tid", "res", "act")
_REQUIRED_REST: Final = ("pur", "cnf", "lin", "dep")
_OPTIONAL: Final = frozenset({"par", "pol"})
_KNOWN: Final = frozenset(_REQUIRED) | frozenset(_REQUIRED_REST) | _OPTIONAL
_ABSENT: Final = object()
_B64_43: Final = re.compile(r"[A-Za-z0-9_-]{43}")


def _fail(reason: str) -> MalformedCoupon:
    return MalformedCoupon(codes.TOKEN_CLAIM, reason)


def _str(claims: Mapping[str, Any], name: str) -> str:
    value = claims.get(name)
    if not isinstance(value, str) or not value or len(value) > MAX_STRING:
        raise _fail(f"claim {name!r} must be a non-empty string of at most {MAX_STRING}")
    return value


def _b64_43(claims: Mapping[str, Any], name: str) -> str:
    """A base64url SHA-256 value (43 characters): thumbprints and hashes."""
    value = claims.get(name)
    if not isinstance(value, str) or not _B64_43.fullmatch(value):
        raise _fail(f"{name!r} must be a 43-character base64url SHA-256 value")
    return value


def _int(claims: Mapping[str, Any], name: str) -> int:
    value = claims.get(name)
    # bool is an int subclass; JSON true must not pass for a time.
    if type(value) is not int or not 0 <= value < 2**53:
        raise _fail(f"claim {name!r} must be a non-negative integer")
    return value


@dataclass(frozen=True, slots=True)
class Binding:
    """The key a coupon is bound to (RFC 7800 ``cnf``): exactly one of the two members."""

    jkt: str | None = None
    x5t_s256: str | None = None

    def __post_init__(self) -> None:
        if (self.jkt is None) == (self.x5t_s256 is None):
            raise ValueError("a Binding has exactly one of jkt and x5t_s256")

    @classmethod
    def from_cnf(cls, cnf: object) -> Binding:
        """Parse a ``cnf`` claim (exactly one of ``jkt`` or ``x5t#S256``)."""
        if not isinstance(cnf, dict) or len(cnf) != 1:
            raise _fail("claim 'cnf' must hold exactly one of 'jkt' and 'x5t#S256'")
        ((name, _value),) = cnf.items()
        if name not in ("jkt", "x5t#S256"):
            raise _fail("claim 'cnf' must hold a 'jkt' or 'x5t#S256'")
        value = _b64_43(cnf, name)
        return cls(jkt=value) if name == "jkt" else cls(x5t_s256=value)

    def to_cnf(self) -> dict[str, str]:
        """The ``cnf`` claim value."""
        return {"jkt": self.jkt} if self.jkt is not None else {"x5t#S256": self.x5t_s256 or ""}


@dataclass(frozen=True, slots=True)
class Parent:
    """A sub-coupon's link to its parent: the parent's ``jti`` and a hash of its bytes."""

    jti: str
    hsh: str


@dataclass(frozen=True, slots=True)
class Claims:
    """The verified-or-not claims of one coupon (one link of a chain)."""

    iss: str
    sub: str
    aud: tuple[str, ...]
    iat: int
    nbf: int
    exp: int
    jti: str
    tid: str
    res: ResourcePattern
    act: frozenset[str]
    pur: str
    cnf: Binding
    lin: str
    dep: int
    par: Parent | None = None
    pol: str | None = None

    @classmethod
    def from_dict(cls, claims: Mapping[str, Any]) -> Claims:
        """Validate a decoded claims object; ``MalformedCoupon`` if anything is off."""
        if claims.get("ver") != FORMAT_VERSION or type(claims.get("ver")) is not int:
            raise MalformedCoupon(codes.TOKEN_VERSION, f"unsupported version {claims.get('ver')!r}")
        unknown = claims.keys() - _KNOWN
        if unknown:
            raise _fail(f"unknown claim(s) {sorted(unknown)[:5]}")
        aud = claims.get("aud")
        if isinstance(aud, str):
            auds: tuple[str, ...] = (aud,)
        elif isinstance(aud, list) and 0 < len(aud) <= MAX_AUDIENCES:
            auds = tuple(aud)
        else:
            raise _fail("claim 'aud' must be a string or a non-empty list")
        for a in auds:
            if not isinstance(a, str) or not a or len(a) > MAX_STRING:
                raise _fail("claim 'aud' holds an invalid audience")
        if len(set(auds)) != len(auds):
            raise _fail("claim 'aud' repeats an audience")
        try:
            res_text = claims.get("res")
            if not isinstance(res_text, str):
                raise _fail("claim 'res' must be a string")
            res = ResourcePattern.parse(res_text)
            act = parse_actions(claims.get("act"))
            pur = parse_purpose(_str(claims, "pur"))
        except MalformedCoupon:
            raise
        except CouponError as exc:
            raise _fail(f"scope claim invalid: {exc.reason}") from None
        par = claims.get("par", _ABSENT)
        parent = None
        if par is not _ABSENT:
            if not isinstance(par, dict) or par.keys() != {"jti", "hsh"}:
                raise _fail("claim 'par' must be an object with 'jti' and 'hsh'")
            parent = Parent(_str(par, "jti"), _b64_43(par, "hsh"))
        pol = claims.get("pol", _ABSENT)
        if pol is _ABSENT:
            pol = None
        elif not isinstance(pol, str) or not pol or len(pol) > MAX_STRING:
            raise _fail("claim 'pol' must be a non-empty string")
        dep = _int(claims, "dep")
        if (dep == 0) != (parent is None):
            raise _fail("claims 'dep' and 'par' disagree")
        return cls(
            iss=_str(claims, "iss"),
            sub=_str(claims, "sub"),
            aud=auds,
            iat=_int(claims, "iat"),
            nbf=_int(claims, "nbf"),
            exp=_int(claims, "exp"),
            jti=_str(claims, "jti"),
            tid=_str(claims, "tid"),
            res=res,
            act=act,
            pur=pur,
            cnf=Binding.from_cnf(claims.get("cnf")),
            lin=_str(claims, "lin"),
            dep=dep,
            par=parent,
            pol=pol,
        )

    def to_dict(self) -> dict[str, Any]:
        """The claims object as written into a coupon (members in a fixed order)."""
        out: dict[str, Any] = {
            "ver": FORMAT_VERSION,
            "iss": self.iss,
            "sub": self.sub,
            "aud": self.aud[0] if len(self.aud) == 1 else list(self.aud),
            "iat": self.iat,
            "nbf": self.nbf,
            "exp": self.exp,
            "jti": self.jti,
            "tid": self.tid,
            "res": str(self.res),
            "act": sorted(self.act),
            "pur": self.pur,
            "cnf": self.cnf.to_cnf(),
            "lin": self.lin,
            "dep": self.dep,
        }
        if self.par is not None:
            out["par"] = {"jti": self.par.jti, "hsh": self.par.hsh}
        if self.pol is not None:
            out["pol"] = self.pol
        return out
