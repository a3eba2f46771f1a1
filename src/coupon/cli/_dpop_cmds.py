"""``coupon dpop create`` and ``coupon dpop verify``: DPoP proofs (RFC 9449)."""

from __future__ import annotations

import time
from typing import Annotated

import typer

from coupon.token import create_dpop_proof, new_jti, verify_dpop_proof

from ._app import EPILOG, JsonOpt, NowOpt, VerboseOpt, app, setup
from ._io import STDIN, load_signing_key, read_text

__all__ = ["create", "dpop_app", "verify"]

dpop_app = typer.Typer(
    name="dpop",
    help="Create and check DPoP proofs (RFC 9449) by hand.",
    epilog=EPILOG,
    no_args_is_help=True,
)
app.add_typer(dpop_app)

HtmOpt = Annotated[str, typer.Option("--htm", metavar="METHOD", help="The HTTP method (GET).")]
HtuOpt = Annotated[
    str, typer.Option("--htu", metavar="URL", help="The request URL (query is ignored).")
]
TokenOpt = Annotated[
    str | None,
    typer.Option(
        "--token",
        metavar="TOKEN",
        help='The coupon sent with the proof (for ath): the token, a file, or "-".',
    ),
]


@dpop_app.command(epilog=EPILOG)
def create(
    key: Annotated[
        str, typer.Option("--key", "-k", metavar="FILE", help="The private JWK that proves.")
    ],
    htm: HtmOpt,
    htu: HtuOpt,
    token: TokenOpt = None,
    nonce: Annotated[
        str | None,
        typer.Option("--nonce", metavar="NONCE", help="The server's latest DPoP-Nonce."),
    ] = None,
    now: NowOpt = None,
    jti: Annotated[
        str | None,
        typer.Option("--jti", metavar="ID", help="The proof id (default: 128 random bits)."),
    ] = None,
    json_: JsonOpt = False,
    verbose: VerboseOpt = False,
) -> None:
    """Create a DPoP proof for one request and print it.

    Give --token with the coupon (or chain) it accompanies so the proof carries its hash
    (ath); a verifier refuses a proof without it.

    \b
    Example:
      coupon dpop create --key delegate.jwk --htm GET \\
        --htu https://api.example/orders/123 --token chain.txt > proof.txt
    """
    output = setup(json_=json_, verbose=verbose)
    signer = load_signing_key(key)
    access_token = read_text(token, what="token") if token is not None else None
    proof_jti = new_jti() if jti is None else jti
    iat = int(time.time()) if now is None else now
    try:
        proof = create_dpop_proof(
            signer,
            method=htm,
            uri=htu,
            now=iat,
            jti=proof_jti,
            access_token=access_token,
            nonce=nonce,
        )
    except ValueError as exc:
        # The library's misuse errors (jti length, a non-ASCII token) are typing mistakes here.
        raise typer.BadParameter(str(exc), param_hint="'--jti' / '--token'") from None
    if output.json:
        output.emit({"proof": proof, "jkt": signer.public.thumbprint, "jti": proof_jti, "iat": iat})
    else:
        output.data(proof)


@dpop_app.command(epilog=EPILOG)
def verify(
    proof: Annotated[
        str,
        typer.Argument(metavar="PROOF", help='The DPoP proof, a file holding it, or "-".'),
    ],
    htm: HtmOpt,
    htu: HtuOpt,
    token: TokenOpt = None,
    now: NowOpt = None,
    max_age: Annotated[
        int, typer.Option("--max-age", metavar="SECONDS", min=0, help="How old the proof may be.")
    ] = 60,
    leeway: Annotated[
        int, typer.Option("--leeway", metavar="SECONDS", min=0, help="Clock skew tolerated.")
    ] = 5,
    json_: JsonOpt = False,
    verbose: VerboseOpt = False,
) -> None:
    """Check a DPoP proof (replay is not checked).

    Prints the proof's key thumbprint (jkt), jti and iat.

    Checks structure, typ, alg, jwk, signature, htm, htu, iat and (with --token) ath. Replay
    is NOT checked: that needs the verifier's memory of earlier proofs.

    \b
    Example:
      coupon dpop verify proof.txt --htm GET \\
        --htu https://api.example/orders/123 --token chain.txt
    """
    output = setup(json_=json_, verbose=verbose)
    if proof == token == STDIN:
        raise typer.BadParameter("only one of PROOF and --token can be read from stdin")
    checked = verify_dpop_proof(
        read_text(proof, what="DPoP proof"),
        method=htm,
        uri=htu,
        now=time.time() if now is None else now,
        access_token=read_text(token, what="token") if token is not None else None,
        max_age=max_age,
        leeway=leeway,
    )
    output.ok("proof valid (replay NOT checked)")
    if output.json:
        output.emit(
            {
                "jkt": checked.jkt,
                "jti": checked.jti,
                "iat": checked.iat,
                "htm": checked.htm,
                "htu": checked.htu,
                "ath": checked.ath,
                "nonce": checked.nonce,
                "alg": checked.alg,
                "jwk": checked.jwk,
            }
        )
    else:
        for name in ("jkt", "jti", "iat"):
            output.data(f"{name}: {getattr(checked, name)}")
