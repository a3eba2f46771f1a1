"""Commands against a running Authority: issue, revoke, keys and policy bundles."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Annotated

import typer

from coupon.token.hazmat import b64url_encode

from ._app import EPILOG, JsonOpt, VerboseOpt, app, setup
from ._io import key_thumbprint, read_bytes, read_json_object, write_file
from ._remote import ApiKeyOpt, UrlOpt, call

__all__ = ["issue", "keys_app", "policy_app", "revoke"]


@app.command(epilog=EPILOG)
def issue(
    subject: Annotated[str, typer.Option(help="The holder (sub).")],
    audience: Annotated[list[str], typer.Option(help="An audience; repeat for more.")],
    tenant: Annotated[str, typer.Option(help="The tenant (tid).")],
    resource: Annotated[str, typer.Option(help="Resource pattern, e.g. 'orders/**'.")],
    action: Annotated[list[str], typer.Option(help="An action; repeat for more.")],
    purpose: Annotated[str, typer.Option(help="The purpose, e.g. billing.refund.")],
    bind_key: Annotated[
        str | None, typer.Option("--bind-key", help="Bind to this holder JWK file (DPoP).")
    ] = None,
    jkt: Annotated[str | None, typer.Option(help="Bind to this DPoP key thumbprint.")] = None,
    x5t: Annotated[str | None, typer.Option(help="Bind to this certificate thumbprint.")] = None,
    ttl: Annotated[int | None, typer.Option(help="Lifetime in seconds (policy caps it).")] = None,
    url: UrlOpt = None,
    api_key: ApiKeyOpt = None,
    json_: JsonOpt = False,
    verbose: VerboseOpt = False,
) -> None:
    """Ask the Authority to issue a coupon (POST /v1/coupons); prints the coupon."""
    out = setup(json_=json_, verbose=verbose)
    chosen = [b for b in (bind_key, jkt, x5t) if b]
    if len(chosen) != 1:
        raise typer.BadParameter("give exactly one of --bind-key, --jkt, --x5t")
    binding = {"x5t#S256": x5t} if x5t else {"jkt": jkt or key_thumbprint(bind_key or "")}
    body = {
        "subject": subject,
        "audience": audience,
        "tenant": tenant,
        "resource": resource,
        "actions": action,
        "purpose": purpose,
        "binding": binding,
        **({"ttl": ttl} if ttl else {}),
    }
    answer = call("POST", "/v1/coupons", url=url, api_key=api_key, body=body)
    if out.json:
        out.emit(answer)
    else:
        out.data(answer["coupon"])
        out.ok(
            f"issued {answer['jti']} (policy {answer['policy_version']}, {answer['expires_in']}s)"
        )


@app.command(epilog=EPILOG)
def revoke(
    kind: Annotated[str, typer.Argument(help="jti, lineage, subject, tenant or kid.")],
    value: Annotated[str, typer.Argument(help="What to revoke.")],
    reason: Annotated[str, typer.Option(help="Why (recorded in the audit trail).")],
    url: UrlOpt = None,
    api_key: ApiKeyOpt = None,
    json_: JsonOpt = False,
    verbose: VerboseOpt = False,
) -> None:
    """Revoke coupons at the Authority (POST /v1/revocations); acknowledged once durable."""
    out = setup(json_=json_, verbose=verbose)
    if kind not in ("jti", "lineage", "subject", "tenant", "kid"):
        raise typer.BadParameter("kind is one of jti, lineage, subject, tenant, kid")
    answer = call(
        "POST",
        "/v1/revocations",
        url=url,
        api_key=api_key,
        body={"kind": kind, "value": value, "reason": reason},
    )
    if out.json:
        out.emit(answer)
    else:
        for r in answer["revocations"]:
            out.data(f"{r['seq']}\t{r['kind']}\t{r['value']}")
        out.ok(f"revoked; feed cursor {answer['cursor']}")


_POLICY_DONE = "active {active} (was {previous})"


def _post_and_report(
    path: str, done: str, url: str | None, api_key: str | None, json_: bool
) -> None:
    """POST an admin action; print the answer (JSON) or ``done`` filled from it."""
    out = setup(json_=json_, verbose=False)
    answer = call("POST", path, url=url, api_key=api_key)
    if out.json:
        out.emit(answer)
    else:
        out.ok(done.format(**answer))


keys_app = typer.Typer(help="The Authority's signing keys (admin).", no_args_is_help=True)
app.add_typer(keys_app, name="keys")


@keys_app.command("list", epilog=EPILOG)
def keys_list(url: UrlOpt = None, api_key: ApiKeyOpt = None, json_: JsonOpt = False) -> None:
    """List signing keys and their states."""
    out = setup(json_=json_, verbose=False)
    answer = call("GET", "/v1/admin/keys", url=url, api_key=api_key)
    if out.json:
        out.emit(answer)
        return
    for k in answer["keys"]:
        out.data(f"{k['kid']}\t{k['alg']}\t{k['state']}")


@keys_app.command("rotate", epilog=EPILOG)
def keys_rotate(url: UrlOpt = None, api_key: ApiKeyOpt = None, json_: JsonOpt = False) -> None:
    """Planned rotation: next signs, current retires once its coupons expired."""
    _post_and_report("/v1/admin/keys/rotate", "signing with {signing_kid}", url, api_key, json_)


@keys_app.command("rollback", epilog=EPILOG)
def keys_rollback(url: UrlOpt = None, api_key: ApiKeyOpt = None, json_: JsonOpt = False) -> None:
    """Undo the last rotation."""
    _post_and_report("/v1/admin/keys/rollback", "signing with {signing_kid}", url, api_key, json_)


policy_app = typer.Typer(
    help="Policy bundles: sign, upload, activate, roll back.", no_args_is_help=True
)
app.add_typer(policy_app, name="policy")


@policy_app.command("keygen", epilog=EPILOG)
def policy_keygen(
    out_path: Annotated[str, typer.Option("--out", help="Where to write the private key (0600).")],
    force: Annotated[bool, typer.Option(help="Overwrite an existing file.")] = False,
    json_: JsonOpt = False,
) -> None:
    """Make a bundle-signing key; prints the public key for COUPON_POLICY_TRUSTED_KEYS."""
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
    from cryptography.hazmat.primitives.serialization import (
        Encoding,
        NoEncryption,
        PrivateFormat,
        PublicFormat,
    )

    from coupon.policy import key_id

    out = setup(json_=json_, verbose=False)
    key = Ed25519PrivateKey.generate()
    raw = key.private_bytes(Encoding.Raw, PrivateFormat.Raw, NoEncryption())
    write_file(out_path, raw.hex() + "\n", private=True, force=force)
    public = b64url_encode(key.public_key().public_bytes(Encoding.Raw, PublicFormat.Raw))
    doc = {"public_key": public, "key_id": key_id(key.public_key()), "out": out_path}
    out.emit(doc) if out.json else out.data(f"public key: {public}\nkey id:     {doc['key_id']}")


@policy_app.command("sign", epilog=EPILOG)
def policy_sign(
    key: Annotated[str, typer.Option(help="The bundle-signing key (hex, from policy keygen).")],
    version: Annotated[str, typer.Option(help="The bundle's version (unique, immutable).")],
    rego: Annotated[list[Path], typer.Option(help="A Rego module; repeat for more.")],
    data: Annotated[Path | None, typer.Option(help="The data document (JSON).")] = None,
    out_path: Annotated[str | None, typer.Option("--out", help="Write here, not stdout.")] = None,
    force: Annotated[bool, typer.Option(help="Overwrite an existing file.")] = False,
) -> None:
    """Build and sign a policy bundle envelope (what `policy upload` sends)."""
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

    from coupon.policy import make_bundle, sign_bundle

    setup(json_=False, verbose=False)
    private = Ed25519PrivateKey.from_private_bytes(
        bytes.fromhex(read_bytes(key, what="key").decode().strip())
    )
    modules = {p.name: read_bytes(str(p), what="Rego module").decode() for p in rego}
    document = read_json_object(str(data), what="data file") if data else {}
    try:
        bundle = make_bundle(version, modules, document, created_at=int(time.time()))
    except ValueError as exc:
        raise typer.BadParameter(str(exc)) from None
    text = sign_bundle(bundle, private).to_json().decode()
    if out_path:
        write_file(out_path, text + "\n", private=False, force=force)
    else:
        typer.echo(text)


@policy_app.command("upload", epilog=EPILOG)
def policy_upload(
    bundle: Annotated[str, typer.Argument(help="The signed envelope file.")],
    activate: Annotated[bool, typer.Option(help="Activate it at once.")] = False,
    url: UrlOpt = None,
    api_key: ApiKeyOpt = None,
    json_: JsonOpt = False,
) -> None:
    """Upload a signed bundle (checked: signature, compilation, a probe evaluation)."""
    out = setup(json_=json_, verbose=False)
    envelope = json.loads(read_bytes(bundle, what="bundle"))
    path = "/v1/admin/policies" + ("?activate=true" if activate else "")
    answer = call("POST", path, url=url, api_key=api_key, body=envelope)
    out.emit(answer) if out.json else out.ok(
        f"uploaded {answer['version']}; active {answer['active']}"
    )


@policy_app.command("activate", epilog=EPILOG)
def policy_activate(
    version: Annotated[str, typer.Argument(help="The version to put in force.")],
    url: UrlOpt = None,
    api_key: ApiKeyOpt = None,
    json_: JsonOpt = False,
) -> None:
    """Put an uploaded version in force."""
    _post_and_report(f"/v1/admin/policies/{version}/activate", _POLICY_DONE, url, api_key, json_)


@policy_app.command("rollback", epilog=EPILOG)
def policy_rollback(url: UrlOpt = None, api_key: ApiKeyOpt = None, json_: JsonOpt = False) -> None:
    """Re-activate the version in force before the current one."""
    _post_and_report("/v1/admin/policies/rollback", _POLICY_DONE, url, api_key, json_)


@policy_app.command("list", epilog=EPILOG)
def policy_list(url: UrlOpt = None, api_key: ApiKeyOpt = None, json_: JsonOpt = False) -> None:
    """Uploaded versions, the active one and the activation history."""
    out = setup(json_=json_, verbose=False)
    answer = call("GET", "/v1/admin/policies", url=url, api_key=api_key)
    if out.json:
        out.emit(answer)
        return
    out.data(f"active: {answer['active']}")
    for p in answer["policies"]:
        out.data(f"{p['version']}\t{p['uploaded_at']}\t{p['uploaded_by']}")
