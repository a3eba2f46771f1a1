"""Atheris fuzz target for the parsers that read untrusted input.

Contract under test (docs/fuzzing.md, STYLE.md "Errors"): whatever str an attacker sends,
the parsers and the verifier either succeed or raise a :class:`coupon.errors.CouponError`.
Any other exception (``ValueError``, ``TypeError``, ``KeyError``, ``RecursionError``...) is a
finding. Inputs are always ``str`` (or ``bytes`` where the API takes bytes): a ``TypeError``
for a non-str argument is a programmer error, not a finding.

Two kinds of input, chosen by a prefix so that a corpus file stays readable:

* anything else ("raw"): the bytes decoded as text (UTF-8, undecodable bytes kept as lone
  surrogates) go through every text parser: ``b64url_decode``, ``loads_object`` (+
  ``Claims.from_dict`` and ``public_key_from_jwk`` on the object), ``parse_chain``,
  ``ResourcePattern.parse``, ``parse_resource``, ``normalize_htu``, ``verify_dpop_proof``, and
  ``Verifier.decide`` on ``token\\ndpop\\nresource`` (the parts split on newlines).
* ``#root\\n``, ``#link\\n``, ``#dpop\\n`` + ``<header JSON>\\n<claims JSON>``: the harness encodes
  and *signs* the fuzzed JSON (as the issuer, as the holder extending a real coupon offline,
  as the DPoP client), so mutations get past the signature checks and reach the later steps.
  ``#link`` and ``#dpop`` model a real attacker, who holds their own key; ``#root`` models a
  mis-minted coupon (the issuer signing odd claims).

Run (see docs/fuzzing.md)::

    .venv/bin/python fuzz/fuzz_token.py -runs=20000 fuzz/corpus
    .venv/bin/python fuzz/fuzz_token.py -max_total_time=240 -artifact_prefix=/tmp/ fuzz/corpus

:func:`check_input` is the per-input function; it does not need atheris, so
``tests/fuzz/test_fuzz_smoke.py`` replays the corpus through it in plain pytest.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import random
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, Final

from cryptography.hazmat.primitives.asymmetric import ed25519

from coupon.errors import CouponError

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run as a script: find fuzz/
from fuzz._harness import fuzz, replay

from coupon.token import (
    Binding,
    Claims,
    KeySet,
    MemoryRevocations,
    Request,
    ResourcePattern,
    SigningKey,
    Verifier,
    attenuate,
    create_dpop_proof,
    mint,
    normalize_htu,
    parse_chain,
    parse_resource,
    verify_dpop_proof,
    x5t_s256,
)
from coupon.token.hazmat import b64url_decode, b64url_encode, loads_object, public_key_from_jwk

__all__ = [
    "AUDIENCE",
    "CERTIFICATE",
    "CHAIN_TOKEN",
    "DELEGATE_KEY",
    "HOLDER_KEY",
    "ISSUER_KEY",
    "KEYS",
    "METHOD",
    "NOW",
    "PREFIXES",
    "ROOT_TOKEN",
    "URI",
    "check_input",
    "main",
    "mutate_json",
    "replay",
    "seed_key",
    "structured",
]

#: The fixed clock of every check, so that an input behaves the same on every run.
NOW: Final = 1_700_000_000
AUDIENCE: Final = "orders-api"
TENANT: Final = "acme"
PURPOSE: Final = "fulfilment"
RESOURCE: Final = "orders/123"
ACTION: Final = "read"
METHOD: Final = "GET"
URI: Final = "https://orders.example/orders/123?page=2"
MAX_INPUT: Final = 16_384
PREFIXES: Final = (b"#root\n", b"#link\n", b"#dpop\n")


def seed_key(label: str) -> SigningKey:
    """A deterministic Ed25519 key named ``label``."""
    raw = hashlib.sha256(f"coupon-fuzz:{label}".encode()).digest()
    return SigningKey(ed25519.Ed25519PrivateKey.from_private_bytes(raw), kid=label)


ISSUER_KEY: Final = seed_key("issuer")
HOLDER_KEY: Final = seed_key("holder")
DELEGATE_KEY: Final = seed_key("delegate")
CERTIFICATE: Final = x5t_s256(b"fuzz client certificate DER")
KEYS: Final = KeySet([ISSUER_KEY.public])

#: A valid root coupon bound to HOLDER_KEY: the parent the ``#link`` inputs extend.
ROOT_TOKEN: Final = mint(
    ISSUER_KEY,
    issuer="https://authority.example",
    subject="svc-fulfilment",
    audience=AUDIENCE,
    tenant=TENANT,
    resource="orders/*",
    actions=["read", "list"],
    purpose=PURPOSE,
    binding=Binding(jkt=HOLDER_KEY.public.thumbprint),
    ttl=600,
    now=NOW - 60,
    jti="fuzz-root",
)
#: A valid one-link chain, for the corpus.
CHAIN_TOKEN: Final = attenuate(
    ROOT_TOKEN,
    HOLDER_KEY,
    delegate=Binding(jkt=DELEGATE_KEY.public.thumbprint),
    subject="svc-picker",
    resource=RESOURCE,
    actions=[ACTION],
    now=NOW - 30,
    jti="fuzz-link",
)


def _proof(key: SigningKey, token: str | None, jti: str = "fuzz-proof") -> str:
    return create_dpop_proof(key, method=METHOD, uri=URI, now=NOW, jti=jti, access_token=token)


def _request(*, dpop: str | None, resource: str = RESOURCE) -> Request:
    return Request(
        audience=AUDIENCE,
        resource=resource,
        action=ACTION,
        purpose=PURPOSE,
        tenant=TENANT,
        method=METHOD,
        uri=URI,
        dpop=dpop,
        certificate=CERTIFICATE,
    )


def _verifier() -> Verifier:
    # Fresh per input: no cache or replay state carries over, so a crash replays alone.
    revoked = MemoryRevocations(jtis={"revoked-jti": "fuzz"}, lineages={"revoked-lin": "fuzz"})
    return Verifier(KEYS, issuers=["https://authority.example"], revocations=revoked)


def _decide(token: str, request: Request) -> None:
    decision = _verifier().decide(token, request, now=NOW)
    # decide() reports denials; it may raise only what verify() may raise for misuse.
    assert decision.allowed == (decision.error is None) == (decision.verified is not None)
    if decision.verified is not None:
        assert AUDIENCE in decision.verified.claims.aud


def _guard(call: Callable[[], object]) -> None:
    """Run ``call``; a CouponError is an accepted answer, anything else propagates."""
    with contextlib.suppress(CouponError):
        call()


def _check_raw(data: bytes) -> None:
    text = data.decode("utf-8", "surrogateescape")
    _guard(lambda: b64url_decode(text))
    try:
        obj = loads_object(data)
    except CouponError:
        obj = None
    if obj is not None:
        _guard(lambda: Claims.from_dict(obj))
        _guard(lambda: public_key_from_jwk(obj))
    _guard(lambda: parse_chain(text, max_size=8192, max_depth=4))
    _guard(lambda: ResourcePattern.parse(text))
    _guard(lambda: parse_resource(text))
    _guard(lambda: normalize_htu(text))
    _guard(
        lambda: verify_dpop_proof(
            text, method=METHOD, uri=URI, now=NOW, access_token=ROOT_TOKEN, leeway=30
        )
    )
    parts = text.split("\n", 2)
    token = parts[0]
    dpop = parts[1] if len(parts) > 1 else None
    resource = parts[2] if len(parts) > 2 else RESOURCE
    # decide() turns every CouponError into a Decision; anything raised here is a finding.
    _decide(token, _request(dpop=dpop, resource=resource))


def _sign(key: SigningKey, header: bytes, claims: bytes) -> str:
    prefix = f"{b64url_encode(header)}.{b64url_encode(claims)}"
    return f"{prefix}.{b64url_encode(key.sign(prefix.encode('ascii')))}"


def structured(kind: bytes, header: bytes, claims: bytes) -> bytes:
    """Build a structured input (used by ``make_corpus.py``)."""
    assert kind in PREFIXES
    return kind + header + b"\n" + claims


def _check_structured(kind: bytes, body: bytes) -> None:
    header, _, claims = body.partition(b"\n")
    if kind == b"#root\n":
        token = _sign(ISSUER_KEY, header, claims)
        _guard(lambda: parse_chain(token, max_size=8192, max_depth=4))
        _decide(token, _request(dpop=_proof(HOLDER_KEY, token)))
    elif kind == b"#link\n":
        token = f"{ROOT_TOKEN}~{_sign(HOLDER_KEY, header, claims)}"
        _guard(lambda: parse_chain(token, max_size=8192, max_depth=4))
        _decide(token, _request(dpop=_proof(DELEGATE_KEY, token)))
    else:
        proof = _sign(HOLDER_KEY, header, claims)
        _guard(
            lambda: verify_dpop_proof(
                proof, method=METHOD, uri=URI, now=NOW, access_token=ROOT_TOKEN, leeway=30
            )
        )
        _decide(ROOT_TOKEN, _request(dpop=proof))


#: Values the JSON mutator swaps in: wrong types, edge numbers, odd strings.
_ODD_VALUES: Final[tuple[Any, ...]] = (
    None, True, False, 0, -1, 1.5, 2**53, 2**64, -(2**63), 10**40, "", " ", "\ud800",
    "é", "\x00", "A" * 300, "../..", "*", "**", [], {}, [None], [[[]]], {"": ""},
    {"kty": "RSA", "alg": "RS256", "n": "AQAB" * 86, "e": "AQAB"},
)  # fmt: skip
#: Characters the JSON mutator puts in place of one character of a string (length kept).
_ODD_CHARS: Final = ("é", "\ud800", "\udfff", "\x00", "\n", " ", "/", "%", "~", ".", "*", "ﬀ")


def _nodes(value: Any, path: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    out = [path]
    if isinstance(value, dict):
        for key, child in value.items():
            out.extend(_nodes(child, (*path, key)))
    elif isinstance(value, list):
        for index, child in enumerate(value):
            out.extend(_nodes(child, (*path, index)))
    return out


def _mutate_value(value: Any, rng: random.Random) -> Any:
    if isinstance(value, str) and value and rng.random() < 0.5:
        i = rng.randrange(len(value))
        return value[:i] + rng.choice(_ODD_CHARS) + value[i + 1 :]
    if isinstance(value, int) and not isinstance(value, bool) and rng.random() < 0.5:
        return value + rng.choice((-1, 1, 3600, -(2**31), 2**53 - value))
    if isinstance(value, dict) and rng.random() < 0.5:
        copy = dict(value)
        if copy and rng.random() < 0.5:
            del copy[rng.choice(list(copy))]
        else:
            copy[rng.choice(("x", "crit", "kid", "jwk", "par", "pol", "zzz"))] = rng.choice(
                _ODD_VALUES
            )
        return copy
    if rng.random() < 0.2:
        return [value]
    return rng.choice(_ODD_VALUES)


def mutate_json(data: bytes, seed: int) -> bytes | None:
    """Mutate one value inside a signed-structure input's JSON; None if ``data`` is not one.

    Byte mutations rarely keep JSON valid; this swaps types, edge numbers and odd characters
    (non-ASCII, lone surrogates, NUL) into a header or claim while keeping the rest intact.
    """
    prefix = next((p for p in PREFIXES if data.startswith(p)), None)
    if prefix is None:
        return None
    rng = random.Random(seed)
    docs = data[len(prefix) :].split(b"\n", 1)
    if len(docs) != 2:
        return None
    which = rng.randrange(2)
    try:
        doc = json.loads(docs[which])
    except (ValueError, RecursionError):
        return None
    path = rng.choice(_nodes(doc))
    if not path:
        doc = _mutate_value(doc, rng)
    else:
        parent = doc
        for step in path[:-1]:
            parent = parent[step]
        parent[path[-1]] = _mutate_value(parent[path[-1]], rng)
    docs[which] = json.dumps(doc).encode()  # ASCII: odd characters become \u escapes
    return prefix + b"\n".join(docs)


def check_input(data: bytes) -> None:
    """Feed one fuzz input to every parser; raise only on a finding."""
    if len(data) > MAX_INPUT:
        return
    for prefix in PREFIXES:
        if data.startswith(prefix):
            _check_structured(prefix, data[len(prefix) :])
            return
    _check_raw(data)


#: Tokens libFuzzer splices into inputs (JOSE/coupon member names and values, URI pieces).
DICTIONARY: Final = (
    *(f'"{name}"' for name in (
        "alg", "typ", "kid", "jwk", "crit", "kty", "crv", "x", "y", "n", "e", "d", "use",
        "ver", "iss", "sub", "aud", "iat", "nbf", "exp", "jti", "tid", "res", "act", "pur",
        "cnf", "lin", "dep", "par", "pol", "hsh", "jkt", "x5t#S256", "htm", "htu", "ath",
        "nonce", "RSA", "EC", "OKP", "P-256", "P-384", "Ed25519", "EdDSA", "ES256", "ES384",
        "RS256", "PS256", "none", "HS256", "coupon+jwt", "dpop+jwt",
    )),
    "**", "/*/", "%2F", "%2e", "%", "[::1]", "https://", "http://", ":443", ":0", "/../",
    "/./", "~", "\\u0000", "\\ud800", "\\u00e9", "1e999", "NaN", "-0", "1.0", "true",
    "null", "[]", "{}", "9007199254740992", "AQAB", "=", "+", "/",
)  # fmt: skip


def main(argv: Sequence[str] | None = None) -> None:
    """Run libFuzzer through atheris (arguments as libFuzzer takes them).

    Unless a ``-dict=`` argument is given, the built-in :data:`DICTIONARY` is used. With
    ``--replay FILE_OR_DIR...`` the inputs are run once through :func:`replay` instead.
    Half the time a JSON-aware edit of a signed structure, otherwise libFuzzer's own.
    """
    args = list(sys.argv if argv is None else argv)
    if len(args) > 1 and args[1] == "--replay":
        sys.exit(replay(args[2:], check_input))
    fuzz(
        args,
        __file__,
        check_input,
        name="token",
        dictionary=DICTIONARY,
        mutator=lambda data, _max_size, seed: mutate_json(data, seed) if seed % 2 else None,
    )


if __name__ == "__main__":
    main()
