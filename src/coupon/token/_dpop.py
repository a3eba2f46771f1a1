"""DPoP proofs (RFC 9449): create them, and check them the way §4.3 says.

Pure: time, the ``jti`` and the nonce store are arguments. A proof is checked in this order,
each failure a :class:`~coupon.errors.InvalidProof` with its own code::

    request    the server's own method and URI are well formed   InvalidRequest REQUEST_URI
    structure  one compact JWS, size cap, strict base64url/JSON  POP_MALFORMED
    typ        "dpop+jwt"                                         POP_TYP
    alg        allowed here and in the closed table               POP_ALG
    crit       absent (we understand no extension)                POP_MALFORMED
    jwk        present, public, canonical, fits alg               POP_JWK / POP_ALG
    signature  verifies with that jwk                             POP_SIGNATURE
    claims     jti, htm, htu, iat present and typed               POP_CLAIM
    htm, htu   match the request (htu after RFC 3986 normalising) POP_HTM / POP_HTU
    iat        within [now - max_age - leeway, now + leeway]      POP_IAT
    ath        hash of the access token, when one is presented    POP_ATH
    nonce      accepted by the caller's nonce checker             NonceRequired POP_NONCE

RFC 9449 allows any order; the nonce goes last because it is the one check that touches
state. Replay (a ``jti`` seen before) is the caller's, with the returned ``jti``.
"""

from __future__ import annotations

import hashlib
import ipaddress
import math
import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Final, Protocol

from coupon import codes
from coupon.codes import ErrorCode
from coupon.errors import CouponError, InvalidProof, InvalidRequest

from ._keys import Signer, SigningKey
from .hazmat import (
    ALGORITHMS,
    PRIVATE_JWK_MEMBERS,
    PublicKey,
    b64url_encode,
    encode_compact,
    jwk_thumbprint,
    parse_compact,
    public_key_from_jwk,
    public_key_to_jwk,
    verify_signature,
)

__all__ = [
    "DPOP_TYP",
    "DpopProof",
    "NonceChecker",
    "ath_for",
    "create_dpop_proof",
    "normalize_htu",
    "verify_dpop_proof",
]

DPOP_TYP: Final = "dpop+jwt"
MAX_URI_LENGTH: Final = 4096
MAX_JTI_LENGTH: Final = 256

# RFC 9110 §5.6.2 token: what an HTTP method may be made of.
_METHOD = re.compile(r"[!#$%&'*+.^_`|~0-9A-Za-z-]{1,64}")
# Every character RFC 3986 allows anywhere in a URI (unreserved, reserved, "%").
_URI_CHARS = re.compile(r"[A-Za-z0-9\-._~:/?#\[\]@!$&'()*+,;=%]*")
# RFC 3986 Appendix B, with the authority required.
_URI = re.compile(r"([A-Za-z][A-Za-z0-9+.-]*)://([^/?#]*)([^?#]*)(?:\?[^#]*)?(?:#.*)?", re.DOTALL)
_REG_NAME = re.compile(r"[a-z0-9\-._~!$&'()*+,;=]+")
_PCT = re.compile(r"%(.?.?)")
_UNRESERVED: Final = frozenset("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-._~")
_DEFAULT_PORTS: Final = {"http": 80, "https": 443}


@dataclass(frozen=True, slots=True)
class DpopProof:
    """A DPoP proof that passed every check of :func:`verify_dpop_proof`."""

    jkt: str
    jti: str
    iat: int
    htm: str
    htu: str
    ath: str | None
    nonce: str | None
    alg: str
    jwk: dict[str, str]


class NonceChecker(Protocol):
    """The server's DPoP nonce policy (RFC 9449 §8, §9)."""

    def check(self, nonce: str | None, *, now: float) -> None:
        """Raise ``NonceRequired`` (``POP_NONCE``) if ``nonce`` is missing, stale or unknown."""
        ...


def _fail(code: ErrorCode, reason: str, step: str) -> CouponError:
    return InvalidProof(code, reason, step=step)


def _bad_uri(reason: str) -> InvalidRequest:
    return InvalidRequest(codes.REQUEST_URI, reason, step="request")


def ath_for(access_token: str) -> str:
    """The ``ath`` claim for ``access_token``: base64url(SHA-256(ASCII(token))).

    Raises:
        ValueError: if the token is not ASCII (RFC 9449 §4.2 hashes its ASCII encoding).
    """
    if not access_token.isascii():
        raise ValueError("an access token is ASCII (RFC 6750 token68)")
    return b64url_encode(hashlib.sha256(access_token.encode("ascii")).digest())


def _normalize_pct(text: str) -> str:
    """Uppercase %-escapes and decode those of unreserved characters (RFC 3986 §6.2.2.1-2)."""

    def fix(match: re.Match[str]) -> str:
        hex_digits = match.group(1)
        if len(hex_digits) != 2 or not all(c in "0123456789abcdefABCDEF" for c in hex_digits):
            raise _bad_uri("malformed percent-encoding")
        char = chr(int(hex_digits, 16))
        return char if char in _UNRESERVED else "%" + hex_digits.upper()

    return _PCT.sub(fix, text)


def _remove_dot_segments(path: str) -> str:
    """RFC 3986 §5.2.4, on a path that is empty or starts with "/"."""
    out: list[str] = []
    for segment in path.split("/")[1:]:
        if segment == "..":
            if out:
                out.pop()
        elif segment != ".":
            out.append(segment)
    # A trailing "." or ".." leaves a directory: keep the final "/".
    if path.endswith(("/.", "/..")):
        out.append("")
    return "/" + "/".join(out)


def _normalize_host(host: str) -> str:
    if host.startswith("["):
        # ipaddress would accept a zone id ("%25eth0"): it names a local interface, refuse it.
        if not host.endswith("]") or "%" in host:
            raise _bad_uri("malformed IP literal")
        try:
            # Only IPv6 (no zone id, no IPvFuture); compressed, lowercase, as RFC 5952 says.
            return f"[{ipaddress.IPv6Address(host[1:-1]).compressed}]"
        except ValueError:
            raise _bad_uri("invalid IPv6 literal") from None
    host = host.lower()
    if not _REG_NAME.fullmatch(host):
        raise _bad_uri("missing host, or a host with characters we do not accept")
    return host


def normalize_htu(uri: str) -> str:
    """Normalise an http(s) URI for comparing ``htu`` (RFC 9449 §4.3, RFC 3986 §6.2.2-6.2.3).

    Lowercases scheme and host, drops the default port, the query and the fragment, uppercases
    %-escapes and decodes the unreserved ones, removes dot segments, and turns an empty path
    into "/". The path keeps its case.

    Raises:
        InvalidRequest: ``REQUEST_URI`` when the URI is too long, not ASCII, not absolute
            http(s), has userinfo, a bad host or port, or characters outside RFC 3986.
    """
    if len(uri) > MAX_URI_LENGTH:
        raise _bad_uri(f"URI is {len(uri)} characters, limit {MAX_URI_LENGTH}")
    if not uri.isascii() or not _URI_CHARS.fullmatch(uri):
        raise _bad_uri("URI has characters outside RFC 3986 (non-ASCII, space, control...)")
    match = _URI.fullmatch(uri)
    if match is None:
        raise _bad_uri("not an absolute URI with an authority")
    scheme, authority, path = match.group(1).lower(), match.group(2), match.group(3)
    if scheme not in _DEFAULT_PORTS:
        raise _bad_uri(f"scheme {scheme!r} is not http or https")
    if "@" in authority:
        raise _bad_uri("userinfo is not allowed in a DPoP URI")
    host, port = authority, ""
    # The last ":" outside an IPv6 literal starts the port.
    colon = authority.rfind(":")
    if colon > authority.rfind("]"):
        host, port = authority[:colon], authority[colon + 1 :]
    host = _normalize_host(host)
    if port:
        if not port.isdigit() or len(port) > 5 or not 0 < int(port) <= 65535:
            raise _bad_uri(f"invalid port {port[:8]!r}")
        port = "" if int(port) == _DEFAULT_PORTS[scheme] else f":{int(port)}"
    path = _remove_dot_segments(_normalize_pct(path)) if path else "/"
    return f"{scheme}://{host}{port}{path}"


def _check_method(method: str) -> str:
    if not _METHOD.fullmatch(method):
        raise _bad_uri(f"HTTP method {method[:16]!r} is not an RFC 9110 token")
    return method


def _htu_for(uri: str) -> str:
    """``uri`` as the client writes it into ``htu``: query and fragment removed (§4.2)."""
    normalize_htu(uri)  # refuse garbage before signing it
    return uri.split("#", 1)[0].split("?", 1)[0]


def create_dpop_proof(
    key: SigningKey | Signer,
    *,
    method: str,
    uri: str,
    now: int,
    jti: str,
    access_token: str | None = None,
    nonce: str | None = None,
) -> str:
    """Create a DPoP proof for one request.

    Args:
        key: the client's key; its public JWK goes in the header (required members only).
        method: the HTTP method, as sent (case matters).
        uri: the target URI; query and fragment are left out of ``htu``.
        now: the ``iat``, in seconds since the epoch.
        jti: a fresh unique identifier (at least 96 random bits), 1-256 characters.
        access_token: when presenting a token, its hash goes in ``ath``.
        nonce: the latest ``DPoP-Nonce`` the server sent, if any.

    Returns:
        The compact JWS.

    Raises:
        InvalidRequest: ``REQUEST_URI`` if ``method`` or ``uri`` is malformed.
        TypeError: if ``now`` is not an ``int``.
        ValueError: if ``jti`` is empty or too long.

    .. versionadded:: 0.1
    """
    if isinstance(now, bool) or not isinstance(now, int):
        raise TypeError("iat is whole seconds: pass an int")
    if not 0 < len(jti) <= MAX_JTI_LENGTH:
        raise ValueError(f"jti must be 1 to {MAX_JTI_LENGTH} characters")
    header = {"typ": DPOP_TYP, "alg": key.alg, "jwk": public_key_to_jwk(key.public.public_key)}
    claims: dict[str, Any] = {
        "jti": jti,
        "htm": _check_method(method),
        "htu": _htu_for(uri),
        "iat": now,
    }
    if access_token is not None:
        claims["ath"] = ath_for(access_token)
    if nonce is not None:
        claims["nonce"] = nonce
    signing_input, prefix = encode_compact(header, claims)
    return f"{prefix}.{b64url_encode(key.sign(signing_input))}"


def _load_jwk(header: Mapping[str, Any], alg: str) -> tuple[PublicKey, dict[str, str]]:
    """Check the header's ``jwk`` and return its key and public members (step ``jwk``)."""
    jwk = header.get("jwk")
    if not isinstance(jwk, dict):
        raise _fail(codes.POP_JWK, "the jwk header is missing or not an object", "jwk")
    private = sorted(PRIVATE_JWK_MEMBERS & jwk.keys())
    if private:
        raise _fail(codes.POP_JWK, f"the jwk holds private key material {private}", "jwk")
    # An RSA key fits RS256 and PS256: the proof's alg chooses, unless the jwk says.
    if jwk.get("kty") == "RSA" and "alg" not in jwk and alg in ("RS256", "PS256"):
        jwk = {**jwk, "alg": alg}
    try:
        key, key_alg = public_key_from_jwk(jwk)
        public = public_key_to_jwk(key)
    except InvalidRequest as exc:
        raise _fail(codes.POP_JWK, exc.reason, "jwk") from None
    except (ValueError, TypeError) as exc:  # the key constructors' own checks (e.g. RSA e < n)
        raise _fail(codes.POP_JWK, f"unusable jwk: {exc}", "jwk") from None
    if any(jwk.get(name) != value for name, value in public.items()):
        raise _fail(codes.POP_JWK, "the jwk is not in canonical form (RFC 7518 §6)", "jwk")
    if key_alg != alg:
        raise _fail(codes.POP_ALG, f"alg {alg} does not fit a {key_alg} key", "jwk")
    return key, public


def _required_str(claims: Mapping[str, Any], name: str) -> str:
    value = claims.get(name)
    if not isinstance(value, str):
        raise _fail(codes.POP_CLAIM, f"claim {name!r} is missing or not a string", name)
    return value


def _optional_str(claims: Mapping[str, Any], name: str) -> str | None:
    return _required_str(claims, name) if name in claims else None


def verify_dpop_proof(
    proof: str,
    *,
    method: str,
    uri: str,
    now: float,
    access_token: str | None = None,
    nonces: NonceChecker | None = None,
    algorithms: frozenset[str] = frozenset({"EdDSA", "ES256"}),
    max_age: int = 60,
    leeway: int = 5,
    max_size: int = 4096,
) -> DpopProof:
    """Check a DPoP proof for one request (RFC 9449 §4.3) and return what it proves.

    Args:
        proof: the ``DPoP`` header value (the caller has already refused a second header).
        method: the request's HTTP method.
        uri: the request's full target URI (query and fragment are ignored).
        now: the current time, in seconds since the epoch.
        access_token: the token presented with the proof; ``ath`` must then match it.
        nonces: the server's nonce policy, if it issues nonces.
        algorithms: the ``alg`` values accepted; a subset of the hazmat table.
        max_age: how old ``iat`` may be, in seconds.
        leeway: clock skew tolerated on both sides, in seconds.
        max_size: the largest proof accepted, in characters.

    Returns:
        The checked proof. Its ``jti`` is not checked for replay: that is the caller's.

    Raises:
        InvalidProof: with the code of the first check that failed (see the module doc).
        NonceRequired: when ``nonces`` refuses the proof's nonce.
        InvalidRequest: ``REQUEST_URI`` if ``method`` or ``uri`` is itself malformed.
        TypeError: if ``proof`` is not a ``str``.
        ValueError: on misuse (unknown algorithms, negative windows, a non-finite ``now``).

    .. versionadded:: 0.1
    """
    if not isinstance(proof, str):
        raise TypeError("a DPoP proof is a str")
    if not math.isfinite(now):
        raise ValueError("now must be a finite number of seconds")
    if not algorithms <= ALGORITHMS.keys():
        raise ValueError(f"unknown algorithms {sorted(algorithms - ALGORITHMS.keys())}")
    if max_age < 0 or leeway < 0:
        raise ValueError("max_age and leeway cannot be negative")
    expected_htu = normalize_htu(uri)
    _check_method(method)

    try:
        jws = parse_compact(proof, max_size=max_size)
    except CouponError as exc:
        raise _fail(codes.POP_MALFORMED, exc.reason, "structure") from None
    header = jws.header

    if header.get("typ") != DPOP_TYP:
        raise _fail(codes.POP_TYP, f"typ must be {DPOP_TYP!r}", "typ")
    alg = header.get("alg")
    if not isinstance(alg, str) or alg not in algorithms:
        allowed = sorted(algorithms)
        raise _fail(codes.POP_ALG, f"alg {str(alg)[:16]!r} is not one of {allowed}", "alg")
    if "crit" in header:
        raise _fail(codes.POP_MALFORMED, "a crit header names an extension we do not know", "crit")
    key, jwk = _load_jwk(header, alg)
    if not verify_signature(alg, key, jws.signature, jws.signing_input):
        raise _fail(codes.POP_SIGNATURE, "signature does not verify with the jwk", "signature")

    try:
        claims = jws.claims()
    except CouponError as exc:
        raise _fail(codes.POP_MALFORMED, exc.reason, "structure") from None
    jti = _required_str(claims, "jti")
    htm = _required_str(claims, "htm")
    htu = _required_str(claims, "htu")
    iat = claims.get("iat")
    if isinstance(iat, bool) or not isinstance(iat, int):
        raise _fail(codes.POP_CLAIM, "claim 'iat' is missing or not an integer", "iat")
    ath = _optional_str(claims, "ath")
    nonce = _optional_str(claims, "nonce")
    if not 0 < len(jti) <= MAX_JTI_LENGTH:
        raise _fail(codes.POP_CLAIM, f"jti must be 1 to {MAX_JTI_LENGTH} characters", "jti")

    if htm != method:
        raise _fail(codes.POP_HTM, f"htm {htm[:16]!r} is not the method {method!r}", "htm")
    try:
        proof_htu = normalize_htu(htu)
    except InvalidRequest as exc:
        raise _fail(codes.POP_HTU, f"htu: {exc.reason}", "htu") from None
    if proof_htu != expected_htu:
        raise _fail(codes.POP_HTU, f"htu {proof_htu[:200]!r} is not {expected_htu!r}", "htu")
    if iat < now - max_age - leeway:
        raise _fail(codes.POP_IAT, f"proof issued at {iat} is older than {max_age}s", "iat")
    if iat > now + leeway:
        raise _fail(codes.POP_IAT, f"proof issued at {iat} is in the future", "iat")
    if access_token is not None:
        if not access_token.isascii():
            raise _fail(codes.POP_ATH, "the access token is not ASCII", "ath")
        if ath is None:
            raise _fail(codes.POP_ATH, "ath is required with an access token", "ath")
        if ath != ath_for(access_token):
            raise _fail(codes.POP_ATH, "ath is not the hash of this access token", "ath")
    if nonces is not None:
        nonces.check(nonce, now=now)

    return DpopProof(
        jkt=jwk_thumbprint(jwk),
        jti=jti,
        iat=iat,
        htm=htm,
        htu=htu,
        ath=ath,
        nonce=nonce,
        alg=alg,
        jwk=jwk,
    )
