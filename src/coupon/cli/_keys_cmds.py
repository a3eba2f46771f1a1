"""``coupon keygen``: make a coupon-signing (or DPoP holder) key as a JWK."""

from __future__ import annotations

import json
import os
from enum import StrEnum
from typing import Annotated, Any

import typer

from coupon.token import KeySet, SigningKey

from ._app import EPILOG, EnvironmentProblem, JsonOpt, VerboseOpt, app, setup
from ._io import write_file

__all__ = ["Algorithm", "keygen"]


class Algorithm(StrEnum):
    """The algorithms a coupon key signs with."""

    EdDSA = "EdDSA"
    ES256 = "ES256"


@app.command(epilog=EPILOG)
def keygen(
    alg: Annotated[
        Algorithm, typer.Option("--alg", help="Signature algorithm of the new key.")
    ] = Algorithm.EdDSA,
    kid: Annotated[
        str | None,
        typer.Option(
            "--kid",
            metavar="KID",
            help="Key id (letters, digits and ._:-); default: the key's thumbprint.",
        ),
    ] = None,
    out: Annotated[
        str | None,
        typer.Option(
            "--out",
            "-o",
            metavar="FILE",
            help="Write the private JWK here (mode 0600). Default: print it on stdout.",
        ),
    ] = None,
    jwks_out: Annotated[
        str | None,
        typer.Option(
            "--jwks-out", metavar="FILE", help="Also write the public key as a JWKS document."
        ),
    ] = None,
    force: Annotated[
        bool, typer.Option("--force", help="Overwrite FILEs that already exist.")
    ] = False,
    json_: JsonOpt = False,
    verbose: VerboseOpt = False,
) -> None:
    """Generate a signing key as a private JWK.

    The private JWK is written with mode 0600; --jwks-out also writes the public key as a
    JWKS document, the file 'coupon verify --jwks' reads.

    With --out, stdout gets the kid and the RFC 7638 thumbprint (the value a coupon's cnf.jkt
    holds when it is bound to this key). Without --out, stdout gets the private JWK itself
    and the kid and thumbprint go to stderr.

    \b
    Example:
      coupon keygen --kid issuer-1 --out issuer.jwk --jwks-out jwks.json
    """
    output = setup(json_=json_, verbose=verbose)
    if not force:
        # Check both before writing either, so a refusal leaves no half-made key pair.
        for path in (out, jwks_out):
            if path is not None and os.path.lexists(path):
                raise EnvironmentProblem(f"{path!r} exists (pass --force to overwrite)")
    key = SigningKey.generate(alg.value, kid=kid)
    private = json.dumps(key.private_jwk(), indent=2) + "\n"
    if out is not None:
        write_file(out, private, private=True, force=force)
    if jwks_out is not None:
        jwks = json.dumps(KeySet([key.public]).to_jwks(), indent=2) + "\n"
        write_file(jwks_out, jwks, private=False, force=force)

    if output.json:
        document: dict[str, Any] = {
            "kid": key.kid,
            "alg": key.alg,
            "thumbprint": key.public.thumbprint,
            "public_jwk": key.public.jwk(),
            "out": out,
            "jwks_out": jwks_out,
        }
        if out is None:
            document["private_jwk"] = key.private_jwk()
        output.emit(document)
        return
    summary = [f"kid: {key.kid}", f"thumbprint: {key.public.thumbprint}"]
    if out is None:
        output.data(private.rstrip("\n"))
        for line in summary:
            output.note(line)
    else:
        for line in summary:
            output.data(line)
