"""``coupon decode``, ``inspect``, ``validate`` and ``extract``: look at a token without keys.

None of these checks the root signature: only ``coupon verify`` (with the issuer's keys) says
whether a coupon may be trusted.
"""

from __future__ import annotations

import json
import time
from typing import Annotated, Any

import typer

from coupon.token import DEFAULT_MAX_DEPTH, SEPARATOR, Binding, Link, parse_chain
from coupon.token.hazmat import parse_compact

from ._app import EPILOG, JsonOpt, NowOpt, TokenArg, VerboseOpt, app, setup
from ._io import MAX_INPUT, read_text
from ._lib import DEFAULT_MAX_SIZE, check_links, links_of
from ._render import render_inspection

__all__ = ["decode", "describe", "extract", "inspect", "validate"]

NOT_VERIFIED = "not verified (nothing here checks a signature: use 'coupon verify')"


@app.command(epilog=EPILOG)
def decode(token: TokenArg, json_: JsonOpt = False, verbose: VerboseOpt = False) -> None:
    """Print header and claims, WITHOUT verifying.

    Each link is decoded as it is (strict base64url and JSON), so a coupon the verifier
    would refuse for its claims can still be read. Says "WARNING: not verified" on stderr.

    \b
    Example:
      coupon decode coupon.txt
    """
    output = setup(json_=json_, verbose=verbose)
    # The hazmat parser, not parse_chain: decode shows what is there, even claims the
    # coupon format would refuse. Only base64url and JSON must be well formed.
    decoded = [
        parse_compact(raw, max_size=MAX_INPUT)
        for raw in read_text(token, what="token").split(SEPARATOR)
    ]
    links = [
        {"index": i, "header": jws.header, "claims": jws.claims()} for i, jws in enumerate(decoded)
    ]
    output.warn(NOT_VERIFIED)
    if output.json:
        output.emit({"verified": False, "links": links})
        return
    for link in links:
        output.data(f"--- link {link['index']}" + (" (root)" if link["index"] == 0 else ""))
        output.data(json.dumps({"header": link["header"], "claims": link["claims"]}, indent=2))


def _binding(binding: Binding) -> dict[str, str]:
    if binding.jkt is not None:
        return {"kind": "jkt", "value": binding.jkt}
    return {"kind": "x5t#S256", "value": binding.x5t_s256 or ""}


def describe(links: list[Link], *, now: float) -> dict[str, Any]:
    """The structured view ``inspect --json`` prints (and the table is drawn from)."""
    root, leaf = links[0].claims, links[-1].claims
    # A link is only usable while every link above it is: the chain's window is the tightest.
    not_before = max(link.claims.nbf for link in links)
    expires_at = min(link.claims.exp for link in links)
    chain = []
    for depth, link in enumerate(links):
        c = link.claims
        signed_by = (
            {"kid": link.header["kid"]}
            if link.is_root
            else {"jkt": links[depth - 1].claims.cnf.jkt or ""}
        )
        chain.append(
            {
                "depth": c.dep,
                "jti": c.jti,
                "issuer": c.iss,
                "subject": c.sub,
                "signed_by": signed_by,
                "audience": list(c.aud),
                "resource": str(c.res),
                "actions": sorted(c.act),
                "purpose": c.pur,
                "not_before": c.nbf,
                "expires_at": c.exp,
                "binding": _binding(c.cnf),
            }
        )
    return {
        "verified": False,
        "issuer": root.iss,
        "subject": leaf.sub,
        "audience": list(leaf.aud),
        "tenant": leaf.tid,
        "resource": str(leaf.res),
        "actions": sorted(leaf.act),
        "purpose": leaf.pur,
        "issued_at": leaf.iat,
        "not_before": not_before,
        "expires_at": expires_at,
        "now": int(now),
        "seconds_left": int(expires_at - now),
        "expired": now >= expires_at,
        "binding": _binding(leaf.cnf),
        "lineage": leaf.lin,
        "policy": leaf.pol,
        "depth": leaf.dep,
        "kid": links[0].header["kid"],
        "links": chain,
    }


@app.command(epilog=EPILOG)
def inspect(
    token: TokenArg, now: NowOpt = None, json_: JsonOpt = False, verbose: VerboseOpt = False
) -> None:
    """Show a coupon for humans (not verified).

    Who issued it to whom, what it grants, how long it has left, the key or certificate it
    is bound to, and each link of its chain.

    The token is parsed strictly but NOT verified ("WARNING: not verified" on stderr).
    The validity window is the chain's tightest (latest nbf, earliest exp).

    \b
    Example:
      coupon inspect chain.txt
    """
    output = setup(json_=json_, verbose=verbose)
    links = links_of(read_text(token, what="token"))
    view = describe(links, now=time.time() if now is None else now)
    output.warn(NOT_VERIFIED)
    if output.json:
        output.emit(view)
    else:
        render_inspection(view)


@app.command(epilog=EPILOG)
def validate(
    token: TokenArg,
    max_depth: Annotated[
        int, typer.Option("--max-depth", metavar="N", help="Deepest delegation accepted.")
    ] = DEFAULT_MAX_DEPTH,
    max_size: Annotated[
        int, typer.Option("--max-size", metavar="CHARS", help="Longest token accepted.")
    ] = DEFAULT_MAX_SIZE,
    json_: JsonOpt = False,
    verbose: VerboseOpt = False,
) -> None:
    """Check a token's structure, without keys.

    Every link is strictly parsed, and each offline link must be signed by the key its
    parent binds, name its parent, and narrow it.

    The root signature, time and audience are NOT checked (that needs 'coupon verify').
    Prints "OK: structure OK (root signature NOT checked)" on stderr, or fails with the code.

    \b
    Example:
      coupon validate chain.txt
    """
    output = setup(json_=json_, verbose=verbose)
    links = parse_chain(read_text(token, what="token"), max_size=max_size, max_depth=max_depth)
    check_links(links, max_depth=max_depth)
    output.ok("structure OK (root signature NOT checked)")
    if output.json:
        output.emit(
            {
                "ok": True,
                "links": len(links),
                "depth": links[-1].claims.dep,
                "kid": links[0].header["kid"],
                "root_signature_checked": False,
            }
        )


def _lookup(document: dict[str, Any], path: str) -> Any:
    value: Any = document
    for part in path.split("."):
        if isinstance(value, dict) and part in value:
            value = value[part]
        elif isinstance(value, list) and part.isdigit() and int(part) < len(value):
            value = value[int(part)]
        else:
            raise KeyError(path)
    return value


@app.command(epilog=EPILOG)
def extract(
    token: TokenArg,
    claim: Annotated[
        str | None,
        typer.Argument(metavar="CLAIM", help="A dotted path: sub, cnf.jkt, par.jti, act.0."),
    ] = None,
    link: Annotated[
        int,
        typer.Option(
            "--link", metavar="N", help="Which link: 0 is the root, -1 (default) the leaf."
        ),
    ] = -1,
    header: Annotated[
        bool, typer.Option("--header", help="Look CLAIM up in the JWS header instead.")
    ] = False,
    all_links: Annotated[
        bool, typer.Option("--links", help="Print each link's compact JWS, one per line.")
    ] = False,
    json_: JsonOpt = False,
    verbose: VerboseOpt = False,
) -> None:
    """Print one claim, or split a chain into links.

    A claim is printed bare if it is a plain string, as JSON otherwise. Nothing is verified: do
    not base a decision on the value.

    A CLAIM that the link does not have is a usage error (exit 2).

    \b
    Examples:
      coupon extract chain.txt cnf.jkt
      coupon extract chain.txt --link 0 kid --header
      coupon extract chain.txt --links
    """
    output = setup(json_=json_, verbose=verbose)
    if all_links == (claim is not None):
        raise typer.BadParameter("give a CLAIM or --links (not both)", param_hint="CLAIM")
    links = links_of(read_text(token, what="token"))
    if all_links:
        if output.json:
            output.emit({"links": [x.raw for x in links]})
        else:
            for x in links:
                output.data(x.raw)
        return
    assert claim is not None
    if not -len(links) <= link < len(links):
        raise typer.BadParameter(f"the chain has {len(links)} link(s)", param_hint="--link")
    index = link % len(links)
    chosen = links[index]
    source = chosen.header if header else chosen.jws.claims()
    try:
        value = _lookup(source, claim)
    except KeyError:
        where = "header" if header else "claims"
        raise typer.BadParameter(
            f"link {index} {where} have no {claim!r}", param_hint="CLAIM"
        ) from None
    if output.json:
        output.emit({"link": index, "claim": claim, "header": header, "value": value})
    else:
        # A string with control characters is shown escaped (JSON), never sent raw to a tty.
        bare = isinstance(value, str) and value.isprintable()
        output.data(value if bare else json.dumps(value))
