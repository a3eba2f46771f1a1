"""Talking to a running Authority from the CLI: URL, credential, problem documents."""

from __future__ import annotations

import os
from typing import Annotated, Any, Final

import typer

from coupon import codes
from coupon.errors import InternalError, error

from ._app import EnvironmentProblem

__all__ = ["ApiKeyOpt", "UrlOpt", "call"]

DEFAULT_URL: Final = "http://127.0.0.1:8700"

UrlOpt = Annotated[
    str | None,
    typer.Option("--url", help=f"The Authority's base URL [$COUPON_URL or {DEFAULT_URL}]."),
]
ApiKeyOpt = Annotated[
    str | None,
    typer.Option(
        "--api-key", help="The caller's API key [$COUPON_API_KEY; or read from var/admin.key]."
    ),
]


def _credential(given: str | None) -> str:
    if given:
        return given
    if os.environ.get("COUPON_API_KEY"):
        return os.environ["COUPON_API_KEY"]
    local = os.path.join(os.environ.get("COUPON_DATA_DIR", "var"), "admin.key")
    if os.path.exists(local):
        with open(local, encoding="utf-8") as handle:
            return handle.read().strip()
    raise typer.BadParameter(
        "no API key: pass --api-key or set COUPON_API_KEY", param_hint="--api-key"
    )


def call(
    method: str,
    path: str,
    *,
    url: str | None,
    api_key: str | None,
    body: Any = None,
    authenticated: bool = True,
) -> Any:
    """Call the Authority; a problem answer becomes the ``CouponError`` of its code."""
    import httpx

    base = (url or os.environ.get("COUPON_URL") or DEFAULT_URL).rstrip("/")
    headers = {"X-API-Key": _credential(api_key)} if authenticated else {}
    try:
        with httpx.Client(timeout=10.0, trust_env=False) as client:
            response = client.request(method, base + path, json=body, headers=headers)
    except httpx.HTTPError as exc:
        raise EnvironmentProblem(f"cannot reach the Authority at {base}: {exc}") from exc
    if response.headers.get("content-type", "").startswith("application/problem+json"):
        problem = response.json()
        try:
            code = codes.by_code(str(problem.get("code")))
        except KeyError:
            raise InternalError(codes.INTERNAL, f"HTTP {response.status_code}: {problem}") from None
        raise error(code, str(problem.get("detail", "")))
    if response.status_code >= 400:
        raise EnvironmentProblem(f"{method} {path}: HTTP {response.status_code}")
    return response.json()
