"""``coupon certs``: a small private PKI for mTLS (test CAs, server and client certificates).

Files go by a NAME prefix: ``--out orders`` writes ``orders.pem`` (the certificate, then any
intermediates) and ``orders.key`` (its private key, mode 0600); ``--ca ca`` reads
``ca.pem`` and ``ca.key``. The procedures (rotation with an overlapping CA bundle, nginx in
front) are in ``docs/mtls.md``.
"""

from __future__ import annotations

import datetime
import os
import tempfile
from pathlib import Path
from typing import Annotated

import typer
from cryptography import x509

from coupon.authority._pki import (
    Credential,
    LeafKind,
    bundle,
    create_ca,
    describe,
    issue_leaf,
    load_credential,
    parse_lifetime,
    renew,
)

from ._app import EPILOG, EnvironmentProblem, JsonOpt, VerboseOpt, app, setup
from ._io import read_bytes, write_file

__all__ = ["ca", "certs_app", "client", "rotate", "server", "show"]

certs_app = typer.Typer(
    name="certs",
    help="Make a private PKI for mTLS: CAs, server and client certificates; rotate them.",
    epilog=EPILOG,
    no_args_is_help=True,
)
app.add_typer(certs_app)

OutOpt = Annotated[
    str,
    typer.Option(
        "--out", "-o", metavar="NAME", help="Write NAME.pem (certificate) and NAME.key (0600)."
    ),
]
CaOpt = Annotated[
    str, typer.Option("--ca", metavar="NAME", help="The signing CA: NAME.pem and NAME.key.")
]
ForceOpt = Annotated[bool, typer.Option("--force", help="Overwrite files that exist.")]
CnOpt = Annotated[str | None, typer.Option("--cn", metavar="NAME", help="Subject common name.")]
DnsOpt = Annotated[
    list[str] | None, typer.Option("--dns", metavar="NAME", help="A DNS name (repeatable).")
]


def _lifetime(text: str) -> datetime.timedelta:
    try:
        return parse_lifetime(text)
    except ValueError as exc:
        raise typer.BadParameter(str(exc), param_hint="--lifetime") from None


def _now() -> datetime.datetime:
    return datetime.datetime.now(datetime.UTC)


def _load(name: str) -> Credential:
    cert = read_bytes(f"{name}.pem", what="certificate")
    key = read_bytes(f"{name}.key", what="private key")
    try:
        return load_credential(cert, key)
    except ValueError as exc:
        raise EnvironmentProblem(f"cannot use {name}.pem and {name}.key: {exc}") from None


def _write(name: str, credential: Credential, *, force: bool) -> None:
    write_file(f"{name}.key", credential.key_pem().decode(), private=True, force=force)
    write_file(f"{name}.pem", credential.cert_pem().decode(), private=False, force=force)


def _replace(path: str, data: bytes, *, private: bool) -> None:
    """Write ``path`` in one step (a reader sees the old file or the new, never half)."""
    target = Path(path)
    try:
        fd, tmp = tempfile.mkstemp(dir=target.parent, prefix=f".{target.name}.")
        with os.fdopen(fd, "wb") as handle:
            os.fchmod(handle.fileno(), 0o600 if private else 0o644)
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, target)
    except OSError as exc:
        raise EnvironmentProblem(f"cannot write {path!r}: {exc.strerror or exc}") from exc


def _report(json_: bool, verbose: bool, cert: x509.Certificate, written: list[str]) -> None:
    output = setup(json_=json_, verbose=verbose)
    info = describe(cert, now=_now())
    if json_:
        output.emit({"ok": True, "files": written, "certificate": info})
        return
    output.data(f"identity  {info['identity'] or '-'}")
    output.data(f"x5t#S256  {info['x5t#S256']}")
    output.data(f"expires   {info['not_after']}")
    output.ok(f"wrote {', '.join(written)}")


@certs_app.command(epilog=EPILOG)
def ca(
    out: OutOpt,
    cn: Annotated[str, typer.Option("--cn", metavar="NAME", help="The CA's name.")] = "Coupon CA",
    lifetime: Annotated[
        str, typer.Option("--lifetime", metavar="TIME", help="Validity: 90d, 24h, 30m.")
    ] = "365d",
    parent: Annotated[
        str | None,
        typer.Option("--ca", metavar="NAME", help="Sign with this CA: an intermediate CA."),
    ] = None,
    force: ForceOpt = False,
    json_: JsonOpt = False,
    verbose: VerboseOpt = False,
) -> None:
    """Create a CA (a root, or an intermediate with --ca).

    \b
    Example:
      coupon certs ca --out ca --cn "Orders mTLS CA" --lifetime 365d
    """
    setup(json_=json_, verbose=verbose)
    issuer = _load(parent) if parent is not None else None
    credential = create_ca(cn, now=_now(), lifetime=_lifetime(lifetime), parent=issuer)
    _write(out, credential, force=force)
    _report(json_, verbose, credential.certificate, [f"{out}.pem", f"{out}.key"])


def _leaf(
    kind: LeafKind,
    *,
    ca_name: str,
    out: str,
    lifetime: str,
    cn: str | None,
    ou: str | None,
    dns: list[str] | None,
    ips: list[str] | None,
    uris: list[str] | None,
    force: bool,
    json_: bool,
    verbose: bool,
) -> None:
    setup(json_=json_, verbose=verbose)
    issuer = _load(ca_name)
    try:
        credential = issue_leaf(
            issuer,
            kind,
            now=_now(),
            lifetime=_lifetime(lifetime),
            common_name=cn,
            organizational_unit=ou,
            dns=dns or (),
            ips=ips or (),
            uris=uris or (),
        )
    except ValueError as exc:
        raise typer.BadParameter(str(exc)) from None
    _write(out, credential, force=force)
    _report(json_, verbose, credential.certificate, [f"{out}.pem", f"{out}.key"])


@certs_app.command(epilog=EPILOG)
def server(
    ca: CaOpt,
    out: OutOpt,
    dns: DnsOpt = None,
    ip: Annotated[
        list[str] | None, typer.Option("--ip", metavar="ADDR", help="An IP address (repeatable).")
    ] = None,
    cn: CnOpt = None,
    lifetime: Annotated[
        str, typer.Option("--lifetime", metavar="TIME", help="Validity: 90d, 24h, 30m.")
    ] = "30d",
    force: ForceOpt = False,
    json_: JsonOpt = False,
    verbose: VerboseOpt = False,
) -> None:
    """Issue a server certificate (extended key usage serverAuth) for COUPON_TLS_CERT.

    \b
    Example:
      coupon certs server --ca ca --out authority --dns authority.internal --ip 127.0.0.1
    """
    _leaf(
        "server", ca_name=ca, out=out, lifetime=lifetime, cn=cn, ou=None, dns=dns, ips=ip,
        uris=None, force=force, json_=json_, verbose=verbose,
    )  # fmt: skip


@certs_app.command(epilog=EPILOG)
def client(
    ca: CaOpt,
    out: OutOpt,
    uri: Annotated[
        list[str] | None,
        typer.Option("--uri", metavar="URI", help="A URI name, e.g. a SPIFFE ID (repeatable)."),
    ] = None,
    dns: DnsOpt = None,
    cn: CnOpt = None,
    ou: Annotated[
        str | None, typer.Option("--ou", metavar="UNIT", help="Subject organizational unit.")
    ] = None,
    lifetime: Annotated[
        str, typer.Option("--lifetime", metavar="TIME", help="Validity: 90d, 24h, 30m.")
    ] = "24h",
    force: ForceOpt = False,
    json_: JsonOpt = False,
    verbose: VerboseOpt = False,
) -> None:
    """Issue a client certificate (extended key usage clientAuth) for an mTLS caller.

    The Authority names the caller by its URI (uri:...), else its first DNS name (dns:...),
    else its CN (cn:...): the "identity" line, which goes into COUPON_MTLS_IDENTITIES.

    \b
    Example:
      coupon certs client --ca ca --out orders --uri spiffe://example.org/orders
    """
    _leaf(
        "client", ca_name=ca, out=out, lifetime=lifetime, cn=cn, ou=ou, dns=dns, ips=None,
        uris=uri, force=force, json_=json_, verbose=verbose,
    )  # fmt: skip


@certs_app.command(epilog=EPILOG)
def rotate(
    name: Annotated[
        str, typer.Argument(metavar="NAME", help="The NAME.pem and NAME.key to renew.")
    ],
    ca: CaOpt,
    lifetime: Annotated[
        str | None,
        typer.Option("--lifetime", metavar="TIME", help="Validity (default: the old one's)."),
    ] = None,
    json_: JsonOpt = False,
    verbose: VerboseOpt = False,
) -> None:
    """Renew a server or client certificate in place: same names, new key, new validity.

    Each file is replaced in one step (key first); a running Authority picks the new pair up
    within COUPON_TLS_RELOAD_INTERVAL. Coupons bound to the old certificate (x5t#S256) do not
    work with the new one.

    \b
    Example:
      coupon certs rotate authority --ca ca
    """
    setup(json_=json_, verbose=verbose)
    old = _load(name)
    try:
        fresh = renew(
            old.certificate,
            _load(ca),
            now=_now(),
            lifetime=_lifetime(lifetime) if lifetime is not None else None,
        )
    except ValueError as exc:
        raise typer.BadParameter(str(exc)) from None
    _replace(f"{name}.key", fresh.key_pem(), private=True)
    _replace(f"{name}.pem", fresh.cert_pem(), private=False)
    _report(json_, verbose, fresh.certificate, [f"{name}.pem", f"{name}.key"])


@certs_app.command("bundle", epilog=EPILOG)
def bundle_cmd(
    files: Annotated[
        list[str], typer.Argument(metavar="PEM...", help="CA certificate files to merge.")
    ],
    out: Annotated[str, typer.Option("--out", "-o", metavar="FILE", help="The bundle file.")],
    json_: JsonOpt = False,
    verbose: VerboseOpt = False,
) -> None:
    """Merge CA certificates into one bundle (for COUPON_TLS_CLIENT_CA during a CA rotation).

    Duplicates appear once; expired certificates are left out (with a warning).

    \b
    Example:
      coupon certs bundle ca-2025.pem ca-2026.pem --out clients-ca.pem
    """
    output = setup(json_=json_, verbose=verbose)
    try:
        pem, expired = bundle([read_bytes(f, what="certificate file") for f in files], now=_now())
    except ValueError as exc:
        raise EnvironmentProblem(f"cannot bundle: {exc}") from None
    _replace(out, pem, private=False)
    certs = x509.load_pem_x509_certificates(pem)
    for cert in expired:
        output.warn(f"left out {cert.subject.rfc4514_string()}: expired")
    if json_:
        output.emit(
            {
                "ok": True,
                "file": out,
                "certificates": [describe(c, now=_now()) for c in certs],
                "expired": [c.subject.rfc4514_string() for c in expired],
            }
        )
        return
    for cert in certs:
        output.data(
            f"{cert.subject.rfc4514_string()}  until {cert.not_valid_after_utc.isoformat()}"
        )
    output.ok(f"wrote {out} ({len(certs)} certificates)")


@certs_app.command(epilog=EPILOG)
def show(
    file: Annotated[str, typer.Argument(metavar="PEM", help="A certificate file.")],
    json_: JsonOpt = False,
    verbose: VerboseOpt = False,
) -> None:
    """Show a certificate as the Authority sees it: identity, x5t#S256, validity.

    \b
    Example:
      coupon certs show orders.pem
    """
    output = setup(json_=json_, verbose=verbose)
    try:
        certs = x509.load_pem_x509_certificates(read_bytes(file, what="certificate file"))
    except ValueError as exc:
        raise EnvironmentProblem(f"{file!r} is not PEM certificates: {exc}") from None
    infos = [describe(c, now=_now()) for c in certs]
    if json_:
        output.emit({"ok": True, "certificates": infos})
        return
    for info in infos:
        for key in ("subject", "issuer", "names", "identity", "x5t#S256", "not_after"):
            value = info[key]
            shown = ", ".join(value) if isinstance(value, list) else value
            output.data(f"{key:<10}{shown if shown not in (None, '') else '-'}")
        output.data("")
