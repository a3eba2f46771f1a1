"""``coupon mint`` and ``coupon attenuate``: make coupons and offline sub-coupons."""

from __future__ import annotations

from typing import Annotated

import typer

from coupon import token as lib
from coupon.token import Binding, x5t_s256_from_pem

from ._app import EPILOG, JsonOpt, NowOpt, Output, TokenArg, VerboseOpt, app, setup
from ._io import key_thumbprint, load_signing_key, read_bytes, read_text
from ._lib import links_of

__all__ = ["attenuate", "mint"]

KeyFileOpt = Annotated[
    str,
    typer.Option("--key", "-k", metavar="FILE", help="The private JWK that signs."),
]
JtiOpt = Annotated[
    str | None,
    typer.Option("--jti", metavar="ID", help="The coupon id (default: 128 random bits)."),
]


def _binding(bind_key: str | None, jkt: str | None, x5t: str | None, cert: str | None) -> Binding:
    given = [v for v in (bind_key, jkt, x5t, cert) if v is not None]
    if len(given) != 1:
        raise typer.BadParameter(
            "give exactly one of them", param_hint="'--bind-key' / '--jkt' / '--x5t' / '--cert'"
        )
    if bind_key is not None:
        return Binding(jkt=key_thumbprint(bind_key))
    if jkt is not None:
        return Binding(jkt=jkt)
    if cert is not None:
        return Binding(x5t_s256=x5t_s256_from_pem(read_bytes(cert, what="certificate")))
    return Binding(x5t_s256=x5t)


def _print_token(output: Output, token: str) -> None:
    if output.json:
        leaf = links_of(token)[-1].claims
        output.emit({"token": token, "depth": leaf.dep, "claims": leaf.to_dict()})
    else:
        output.data(token)


@app.command(epilog=EPILOG)
def mint(
    key: KeyFileOpt,
    issuer: Annotated[str, typer.Option("--issuer", metavar="ISS", help="iss: who issues.")],
    subject: Annotated[
        str, typer.Option("--subject", metavar="SUB", help="sub: the holder (a service id).")
    ],
    audience: Annotated[
        list[str],
        typer.Option("--audience", metavar="AUD", help="aud: a service that accepts it (repeat)."),
    ],
    tenant: Annotated[str, typer.Option("--tenant", metavar="TID", help="tid: the tenant.")],
    resource: Annotated[
        str,
        typer.Option("--resource", metavar="PATTERN", help="res: e.g. orders/*, orders/**."),
    ],
    action: Annotated[
        list[str], typer.Option("--action", metavar="ACT", help="act: an action (repeat).")
    ],
    purpose: Annotated[
        str, typer.Option("--purpose", metavar="PUR", help="pur: e.g. billing.refund.")
    ],
    bind_key: Annotated[
        str | None,
        typer.Option("--bind-key", metavar="FILE", help="Bind to this JWK's key (cnf.jkt)."),
    ] = None,
    jkt: Annotated[
        str | None,
        typer.Option("--jkt", metavar="THUMB", help="Bind to a key thumbprint (cnf.jkt)."),
    ] = None,
    x5t: Annotated[
        str | None,
        typer.Option(
            "--x5t", metavar="THUMB", help="Bind to a certificate thumbprint (cnf.x5t#S256)."
        ),
    ] = None,
    cert: Annotated[
        str | None,
        typer.Option("--cert", metavar="PEM", help="Bind to this client certificate."),
    ] = None,
    ttl: Annotated[
        int, typer.Option("--ttl", metavar="SECONDS", help="Lifetime in seconds.")
    ] = 300,
    now: NowOpt = None,
    jti: JtiOpt = None,
    policy: Annotated[
        str | None,
        typer.Option("--policy", metavar="VERSION", help="pol: the policy version to stamp."),
    ] = None,
    json_: JsonOpt = False,
    verbose: VerboseOpt = False,
) -> None:
    """Mint a root coupon bound to a holder key.

    The coupon is signed by the issuer key and bound to exactly one of: a holder key
    (--bind-key or --jkt, for DPoP) or a client certificate (--cert or --x5t, for mTLS).

    \b
    Example:
      coupon mint --key issuer.jwk --issuer https://authority.example \\
        --subject svc-a --audience orders-api --tenant acme \\
        --resource 'orders/**' --action read --purpose fulfilment \\
        --bind-key holder.jwk > coupon.txt
    """
    output = setup(json_=json_, verbose=verbose)
    binding = _binding(bind_key, jkt, x5t, cert)
    token = lib.mint(
        load_signing_key(key),
        issuer=issuer,
        subject=subject,
        audience=audience,
        tenant=tenant,
        resource=resource,
        actions=action,
        purpose=purpose,
        binding=binding,
        ttl=ttl,
        now=now,
        jti=jti,
        policy=policy,
    )
    _print_token(output, token)


@app.command(epilog=EPILOG)
def attenuate(
    token: TokenArg,
    key: Annotated[
        str,
        typer.Option(
            "--key", "-k", metavar="FILE", help="The holder's private JWK (the bound key)."
        ),
    ],
    subject: Annotated[
        str, typer.Option("--subject", metavar="SUB", help="sub of the new link: the delegate.")
    ],
    to_key: Annotated[
        str | None,
        typer.Option("--to-key", metavar="FILE", help="Bind the new link to this JWK's key."),
    ] = None,
    to_jkt: Annotated[
        str | None,
        typer.Option("--to-jkt", metavar="THUMB", help="Bind the new link to this thumbprint."),
    ] = None,
    resource: Annotated[
        str | None,
        typer.Option("--resource", metavar="PATTERN", help="Narrower resource pattern."),
    ] = None,
    action: Annotated[
        list[str] | None,
        typer.Option("--action", metavar="ACT", help="Keep only these actions (repeat)."),
    ] = None,
    purpose: Annotated[
        str | None, typer.Option("--purpose", metavar="PUR", help="Narrower purpose.")
    ] = None,
    audience: Annotated[
        list[str] | None,
        typer.Option("--audience", metavar="AUD", help="Keep only these audiences (repeat)."),
    ] = None,
    ttl: Annotated[
        int | None,
        typer.Option(
            "--ttl", metavar="SECONDS", help="Lifetime (default and cap: the parent's expiry)."
        ),
    ] = None,
    now: NowOpt = None,
    jti: JtiOpt = None,
    json_: JsonOpt = False,
    verbose: VerboseOpt = False,
) -> None:
    """Attenuate offline: append a narrower link.

    The new link is signed by the holder's key (the key the last link binds) and bound to
    the delegate's key; the extended chain "root~...~link" is printed.

    Scope left out is inherited from the parent; anything wider than the parent is refused
    (CPN-REQ-006).

    \b
    Example:
      coupon attenuate coupon.txt --key holder.jwk --to-key delegate.jwk \\
        --subject svc-b --resource orders/123 --action read > chain.txt
    """
    output = setup(json_=json_, verbose=verbose)
    if (to_key is None) == (to_jkt is None):
        raise typer.BadParameter("give exactly one of them", param_hint="'--to-key' / '--to-jkt'")
    delegate = Binding(jkt=key_thumbprint(to_key) if to_key is not None else to_jkt)
    chain = lib.attenuate(
        read_text(token, what="token"),
        load_signing_key(key),
        delegate=delegate,
        subject=subject,
        resource=resource,
        actions=action or None,
        purpose=purpose,
        audience=audience or None,
        ttl=ttl,
        now=now,
        jti=jti,
    )
    _print_token(output, chain)
