"""``coupon verify``: the whole verification pipeline, with per-step timings."""

from __future__ import annotations

import time
from typing import Annotated, Any

import typer

from coupon.token import DpopProof, Request, Verifier, x5t_s256_from_pem

from ._app import EPILOG, JsonOpt, NowOpt, TokenArg, VerboseOpt, app, error_document, setup
from ._io import STDIN, load_key_set, read_bytes, read_text
from ._lib import DEFAULT_LEEWAY, DEFAULT_MAX_TTL

__all__ = ["format_timings", "verify"]


def format_timings(timings: dict[str, float]) -> str:
    """One stderr line: each step's time in microseconds, in pipeline order."""
    steps = "  ".join(f"{name} {us:.1f}" for name, us in timings.items())
    return f"timings (us): {steps}"


def _proof(proof: DpopProof | None) -> dict[str, Any] | None:
    if proof is None:
        return None
    return {
        "jkt": proof.jkt,
        "jti": proof.jti,
        "iat": proof.iat,
        "htm": proof.htm,
        "htu": proof.htu,
    }


def _opt(flag: str, metavar: str, text: str) -> Any:
    return typer.Option(flag, metavar=metavar, help=text)


@app.command(epilog=EPILOG)
def verify(
    token: TokenArg,
    jwks: Annotated[
        str,
        _opt("--jwks", "FILE|URL", "Trusted issuer keys: a JWKS file, or an https:// URL."),
    ],
    aud: Annotated[str, _opt("--aud", "AUD", "This service's audience (no default: fail closed).")],
    resource: Annotated[
        str | None, _opt("--resource", "RES", "The resource acted on (orders/123).")
    ] = None,
    action: Annotated[str | None, _opt("--action", "ACT", "The action performed.")] = None,
    purpose: Annotated[str | None, _opt("--purpose", "PUR", "The declared purpose.")] = None,
    tenant: Annotated[str | None, _opt("--tenant", "TID", "The request's tenant.")] = None,
    dpop: Annotated[
        str | None, _opt("--dpop", "PROOF", "The DPoP header value, or a file holding it.")
    ] = None,
    htm: Annotated[str | None, _opt("--htm", "METHOD", "HTTP method, with --dpop.")] = None,
    htu: Annotated[str | None, _opt("--htu", "URL", "Request URL, with --dpop.")] = None,
    cert: Annotated[
        str | None, _opt("--cert", "PEM", "The client certificate presented over mTLS.")
    ] = None,
    x5t: Annotated[
        str | None, _opt("--x5t", "THUMB", "Its x5t#S256 thumbprint, instead of --cert.")
    ] = None,
    issuer: Annotated[
        list[str] | None, _opt("--issuer", "ISS", "Only trust roots from this iss (repeat).")
    ] = None,
    max_ttl: Annotated[
        int,
        typer.Option(
            "--max-ttl", metavar="SECONDS", min=1, help="Longest coupon lifetime accepted."
        ),
    ] = DEFAULT_MAX_TTL,
    leeway: Annotated[
        int, typer.Option("--leeway", metavar="SECONDS", min=0, help="Clock skew tolerated.")
    ] = DEFAULT_LEEWAY,
    now: NowOpt = None,
    json_: JsonOpt = False,
    verbose: VerboseOpt = False,
) -> None:
    """Verify a coupon for one request.

    With the issuer's keys: signature, chain, time, audience, scope, key binding (DPoP or
    mTLS) and replay.

    Allowed: "OK: allowed" on stderr and the leaf claims on stdout (exit 0). Denied:
    "FAIL: <code> <title>" and the diagnostics on stderr (exit 1). The per-step timings, in
    microseconds, follow on stderr (inside the document with --json). Each run has a fresh
    replay store, so a replayed proof is only caught within one process.

    \b
    Example:
      coupon verify chain.txt --jwks jwks.json --aud orders-api \\
        --resource orders/123 --action read --dpop proof.txt \\
        --htm GET --htu https://api.example/orders/123
    """
    output = setup(json_=json_, verbose=verbose)
    if dpop is not None and (htm is None or htu is None):
        raise typer.BadParameter("--dpop needs --htm and --htu", param_hint="'--htm' / '--htu'")
    if cert is not None and x5t is not None:
        raise typer.BadParameter("give one of them", param_hint="'--cert' / '--x5t'")
    if dpop == token == STDIN:
        raise typer.BadParameter("only one of TOKEN and --dpop can be read from stdin")
    text = read_text(token, what="token")
    proof = read_text(dpop, what="DPoP proof") if dpop is not None else None
    if cert is not None:
        x5t = x5t_s256_from_pem(read_bytes(cert, what="certificate"))
    verifier = Verifier(load_key_set(jwks), issuers=issuer or None, max_ttl=max_ttl, leeway=leeway)
    request = Request(
        audience=aud,
        resource=resource,
        action=action,
        purpose=purpose,
        tenant=tenant,
        method=htm,
        uri=htu,
        dpop=proof,
        certificate=x5t,
    )
    decision = verifier.decide(text, request, now=time.time() if now is None else now)
    if decision.error is not None:
        if output.json:
            output.emit(
                {
                    "allowed": False,
                    "error": error_document(decision.error),
                    "timings_us": decision.timings,
                }
            )
        else:
            # main() prints "FAIL:" and the diagnostics; the timings go after them.
            output.footer.append(format_timings(decision.timings))
        raise decision.error
    verified = decision.verified
    assert verified is not None
    output.ok("allowed")
    if output.json:
        output.emit(
            {
                "allowed": True,
                "kid": verified.kid,
                "cached": verified.cached,
                "claims": verified.claims.to_dict(),
                "chain": [c.to_dict() for c in verified.chain],
                "proof": _proof(verified.proof),
                "timings_us": decision.timings,
            }
        )
    else:
        output.note(format_timings(decision.timings))
        output.emit(verified.claims.to_dict())
