"""Write the seed corpus for fuzz/fuzz_token.py into fuzz/corpus/ (deterministic).

Keys come from fixed seeds and the clock is fixed (``fuzz_token.NOW``), so running this twice
writes the same bytes. Each seed is checked on the way: the valid ones must be accepted by
the harness's verifier, so the fuzzer starts from inputs that reach the deepest steps.

Run::

    .venv/bin/python fuzz/make_corpus.py            # writes fuzz/corpus/seed-*
"""

from __future__ import annotations

import importlib
import json
import sys
from pathlib import Path
from types import ModuleType

from cryptography.hazmat.primitives.asymmetric import ec

from coupon.token import Binding, Request, SigningKey, Verifier, create_dpop_proof, mint
from coupon.token.hazmat import b64url_decode, public_key_to_jwk


def _fuzz_token() -> ModuleType:
    """The fuzz target module, found next to this script whether run or imported."""
    here = str(Path(__file__).resolve().parent)
    if here not in sys.path:
        sys.path.insert(0, here)
    return importlib.import_module("fuzz_token")


ft = _fuzz_token()
CORPUS = Path(__file__).resolve().parent / "corpus"


def _parts(jws: str) -> tuple[bytes, bytes]:
    header, claims, _ = jws.split(".")
    return b64url_decode(header), b64url_decode(claims)


def _proof(key: SigningKey, token: str, jti: str) -> str:
    return create_dpop_proof(
        key, method=ft.METHOD, uri=ft.URI, now=ft.NOW, jti=jti, access_token=token
    )


def _must_verify(token: str, dpop: str | None) -> None:
    request = Request(
        audience=ft.AUDIENCE,
        resource="orders/123",
        action="read",
        purpose="fulfilment",
        tenant="acme",
        method=ft.METHOD,
        uri=ft.URI,
        dpop=dpop,
        certificate=ft.CERTIFICATE,
    )
    Verifier(ft.KEYS).verify(token, request, now=ft.NOW)


def seeds() -> dict[str, bytes]:
    """Every seed, by file name."""
    cert_token = mint(
        ft.ISSUER_KEY,
        issuer="https://authority.example",
        subject="svc-fulfilment",
        audience=[ft.AUDIENCE, "stock-api"],
        tenant="acme",
        resource="orders/**",
        actions=["read"],
        purpose="fulfilment",
        binding=Binding(x5t_s256=ft.CERTIFICATE),
        ttl=300,
        now=ft.NOW - 10,
        jti="fuzz-cert",
        policy="p-7",
    )
    root_proof = _proof(ft.HOLDER_KEY, ft.ROOT_TOKEN, "proof-root")
    chain_proof = _proof(ft.DELEGATE_KEY, ft.CHAIN_TOKEN, "proof-chain")
    _must_verify(cert_token, None)
    _must_verify(ft.ROOT_TOKEN, root_proof)
    _must_verify(ft.CHAIN_TOKEN, chain_proof)
    ec_key = SigningKey(ec.derive_private_key(0x5EED, ec.SECP256R1()), kid="ec")
    link = ft.CHAIN_TOKEN.split("~")[1]
    return {
        # raw text inputs
        "seed-raw-root-x5t": cert_token.encode(),
        "seed-raw-root-dpop": f"{ft.ROOT_TOKEN}\n{root_proof}".encode(),
        "seed-raw-chain-dpop": f"{ft.CHAIN_TOKEN}\n{chain_proof}".encode(),
        "seed-raw-chain-resource": f"{ft.CHAIN_TOKEN}\n{chain_proof}\n/orders/123/".encode(),
        "seed-raw-dpop-proof": root_proof.encode(),
        "seed-raw-resource": b"orders/123",
        "seed-raw-resource-pattern": b"/orders/*/items/**/",
        "seed-raw-uri": ft.URI.encode(),
        "seed-raw-uri-ipv6": b"https://[::1]:443/a/./b/../c%7e%2F?q#f",
        "seed-raw-b64": b"eyJhbGciOiJFZERTQSJ9",
        "seed-raw-jwk-okp": json.dumps(public_key_to_jwk(ft.HOLDER_KEY.public.public_key)).encode(),
        "seed-raw-jwk-ec": json.dumps(ec_key.public.jwk()).encode(),
        "seed-raw-claims": _parts(cert_token)[1],
        # signed structures: the harness re-signs the (mutated) JSON
        "seed-root-x5t": ft.structured(b"#root\n", *_parts(cert_token)),
        "seed-root-jkt": ft.structured(b"#root\n", *_parts(ft.ROOT_TOKEN)),
        "seed-link": ft.structured(b"#link\n", *_parts(link)),
        "seed-dpop": ft.structured(b"#dpop\n", *_parts(root_proof)),
    }


def main() -> int:
    CORPUS.mkdir(exist_ok=True)
    for name, data in seeds().items():
        ft.check_input(data)  # a seed must not itself be a finding
        (CORPUS / name).write_bytes(data)
        print(f"wrote {CORPUS.name}/{name} ({len(data)} bytes)", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
