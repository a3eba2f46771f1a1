"""Reading the CLI's inputs (tokens, keys, JWKS files and URLs) and writing key files.

Failures to *reach* an input (a missing file, a refused connection) are
:class:`EnvironmentProblem` (exit 3); input that is there but unusable is a ``CouponError``
from the library (exit 1); a value the user typed wrong is a usage error (exit 2).
"""

from __future__ import annotations

import json
import os
import sys
from typing import Any, Final

import typer

from coupon import codes
from coupon.errors import InvalidRequest
from coupon.token import KeySet, SigningKey, VerifyingKey

from ._app import EnvironmentProblem

__all__ = [
    "MAX_INPUT",
    "MAX_JWKS",
    "STDIN",
    "fetch_url",
    "key_thumbprint",
    "load_key_set",
    "load_signing_key",
    "read_bytes",
    "read_json_object",
    "read_text",
    "write_file",
]

#: The largest token, proof, key or certificate file read (real ones are a few KiB).
MAX_INPUT: Final = 1024 * 1024
#: The largest JWKS document fetched from a URL.
MAX_JWKS: Final = 1024 * 1024
FETCH_TIMEOUT: Final = 5.0
#: The TOKEN-like argument that means "read standard input".
STDIN: Final = "-"
_LOOPBACK: Final = frozenset({"localhost", "127.0.0.1", "::1"})


def read_bytes(path: str | os.PathLike[str], *, what: str, limit: int = MAX_INPUT) -> bytes:
    """Read a file of at most ``limit`` bytes; ``EnvironmentProblem`` if it cannot."""
    try:
        with open(path, "rb") as f:
            data = f.read(limit + 1)
    except OSError as exc:
        raise EnvironmentProblem(
            f"cannot read {what} {str(path)!r}: {exc.strerror or exc}"
        ) from exc
    if len(data) > limit:
        raise EnvironmentProblem(f"{what} {str(path)!r} is larger than {limit} bytes")
    return data


def read_text(value: str, *, what: str) -> str:
    """A TOKEN-like argument: ``-`` reads stdin, an existing file is read, else the value.

    Surrounding whitespace (a trailing newline from ``echo`` or an editor) is dropped.
    """
    if value == STDIN:
        text = sys.stdin.read(MAX_INPUT + 1)
        if len(text) > MAX_INPUT:
            raise EnvironmentProblem(f"{what} on stdin is larger than {MAX_INPUT} characters")
        return text.strip()
    # os.path.isfile, unlike Path.is_file, answers False for a token too long to be a path.
    if os.path.isfile(value):
        return read_bytes(value, what=what).decode("utf-8", errors="replace").strip()
    return value.strip()


def read_json_object(path: str, *, what: str) -> dict[str, Any]:
    """Read a JSON object from a file; ``InvalidRequest`` (``CPN-REQ-005``) if it is not one."""
    return _json_object(read_bytes(path, what=what), what=f"{what} {path!r}")


def _json_object(data: bytes, *, what: str) -> dict[str, Any]:
    try:
        document = json.loads(data)
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise InvalidRequest(codes.REQUEST_KEY, f"{what} is not JSON: {exc}") from None
    if not isinstance(document, dict):
        raise InvalidRequest(codes.REQUEST_KEY, f"{what} is not a JSON object")
    return document


def load_signing_key(path: str) -> SigningKey:
    """Load a private JWK file (as written by ``coupon keygen``)."""
    return SigningKey.from_jwk(read_json_object(path, what="key file"))


def key_thumbprint(path: str) -> str:
    """The RFC 7638 thumbprint of a public or private JWK file."""
    jwk = read_json_object(path, what="key file")
    if "d" in jwk:
        return SigningKey.from_jwk(jwk).public.thumbprint
    return VerifyingKey.from_jwk(jwk).thumbprint


def _check_url(url: str) -> bool:
    """Refuse anything but https (or http to this machine); return whether it is loopback."""
    import httpx

    try:
        parsed = httpx.URL(url)
    except httpx.InvalidURL as exc:
        raise typer.BadParameter(f"invalid URL: {exc}", param_hint="--jwks") from None
    loopback = parsed.host in _LOOPBACK
    if parsed.scheme == "https" or (parsed.scheme == "http" and loopback):
        return loopback
    raise typer.BadParameter(
        "a JWKS URL must be https:// (plain http:// only for localhost)", param_hint="--jwks"
    )


def fetch_url(url: str) -> bytes:
    """GET ``url`` with a 5 s timeout and a size cap, without following redirects."""
    import httpx  # only the commands that fetch pay for the import

    loopback = _check_url(url)
    body = bytearray()
    try:
        # A proxy from the environment must not see (or break) a request to this machine.
        with (
            httpx.Client(timeout=FETCH_TIMEOUT, trust_env=not loopback) as client,
            client.stream("GET", url, headers={"Accept": "application/json"}) as response,
        ):
            if response.status_code != 200:
                raise EnvironmentProblem(f"GET {url}: HTTP {response.status_code}")
            # Counted after decompression, so a compressed bomb stops at the cap too.
            for chunk in response.iter_bytes():
                body += chunk
                if len(body) > MAX_JWKS:
                    raise EnvironmentProblem(f"GET {url}: response larger than {MAX_JWKS} bytes")
    except httpx.HTTPError as exc:
        raise EnvironmentProblem(f"cannot fetch {url}: {exc}") from exc
    return bytes(body)


def load_key_set(source: str) -> KeySet:
    """The issuer keys to trust: a JWKS (or one public JWK) from a file or an https URL."""
    if source.lower().startswith(("http://", "https://")):
        document = _json_object(fetch_url(source), what=f"JWKS at {source}")
    elif "://" in source:
        raise typer.BadParameter("only https:// URLs or file paths", param_hint="--jwks")
    else:
        document = read_json_object(source, what="JWKS file")
    if "keys" not in document and "kty" in document:
        document = {"keys": [document]}  # one bare public JWK is a JWKS of one
    try:
        return KeySet.from_jwks(document)
    except ValueError as exc:
        # KeySet raises ValueError on a duplicate kid or a non-coupon algorithm; for a file
        # the user handed us that is bad input, not a programming error.
        raise InvalidRequest(codes.REQUEST_KEY, f"unusable JWKS: {exc}") from None


def write_file(path: str, text: str, *, private: bool, force: bool) -> None:
    """Write ``text`` to ``path``: mode 0600 when ``private``; refuse to overwrite unless forced."""
    flags = os.O_WRONLY | os.O_CREAT | (os.O_TRUNC if force else os.O_EXCL)
    try:
        fd = os.open(path, flags, 0o600 if private else 0o644)
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            if private:
                # An overwritten file keeps its old mode; tighten it before the secret lands.
                os.fchmod(f.fileno(), 0o600)
            f.write(text)
    except FileExistsError:
        raise EnvironmentProblem(f"{path!r} exists (pass --force to overwrite)") from None
    except OSError as exc:
        raise EnvironmentProblem(f"cannot write {path!r}: {exc.strerror or exc}") from exc
