"""Drawing ``coupon inspect``'s view as rich tables (text mode only)."""

from __future__ import annotations

import sys
from datetime import UTC, datetime
from typing import Any

from rich import box
from rich.console import Console
from rich.table import Table
from rich.text import Text

__all__ = ["duration", "printable", "render_inspection", "timestamp"]


def printable(value: str) -> Text:
    """``value`` as inert text: no rich markup, control characters shown as escapes.

    Claim values come from an unverified token; one must not move the cursor or clear the
    screen of whoever inspects it.
    """
    if not value.isprintable():
        value = "".join(
            c if c.isprintable() else c.encode("unicode_escape").decode("ascii") for c in value
        )
    return Text(value)


def duration(seconds: int) -> str:
    """``seconds`` as a short human duration: ``45s``, ``4m 12s``, ``2h 5m``, ``3d 4h``."""
    seconds = abs(seconds)
    days, rest = divmod(seconds, 86_400)
    hours, rest = divmod(rest, 3_600)
    minutes, secs = divmod(rest, 60)
    if days:
        return f"{days}d {hours}h"
    if hours:
        return f"{hours}h {minutes}m"
    if minutes:
        return f"{minutes}m {secs}s"
    return f"{secs}s"


def timestamp(epoch: int) -> str:
    """``epoch`` as UTC ISO 8601 with the raw number beside it."""
    return f"{datetime.fromtimestamp(epoch, UTC):%Y-%m-%dT%H:%M:%SZ} ({epoch})"


def _validity(view: dict[str, Any]) -> str:
    now, nbf, exp = view["now"], view["not_before"], view["expires_at"]
    if now >= exp:
        return f"EXPIRED {duration(now - exp)} ago"
    if now < nbf:
        return f"not valid yet: starts in {duration(nbf - now)}"
    return f"{duration(exp - now)} left"


def render_inspection(view: dict[str, Any]) -> None:
    """Print the summary table and the chain table to stdout."""
    # Created per call, on the current sys.stdout, so redirection and capture both work.
    console = Console(file=sys.stdout, highlight=False)
    summary = Table(box=box.SIMPLE, show_header=False, title="coupon (NOT verified)")
    summary.add_column("field", style="bold")
    summary.add_column("value", overflow="fold")
    binding = view["binding"]
    rows = [
        ("issuer", view["issuer"]),
        ("subject", view["subject"]),
        ("audience", ", ".join(view["audience"])),
        ("tenant", view["tenant"]),
        ("resource", view["resource"]),
        ("actions", ", ".join(view["actions"])),
        ("purpose", view["purpose"]),
        ("validity", _validity(view)),
        ("not before", timestamp(view["not_before"])),
        ("expires", timestamp(view["expires_at"])),
        ("binding", f"{binding['kind']} {binding['value']}"),
        ("root kid", view["kid"]),
        ("lineage", view["lineage"]),
        ("policy", view["policy"] or "-"),
        ("depth", str(view["depth"])),
    ]
    for name, value in rows:
        summary.add_row(name, printable(value))
    console.print(summary)

    chain = Table(box=box.SIMPLE, title="chain")
    for column in ("depth", "subject", "signed by", "scope", "expires"):
        chain.add_column(column, overflow="fold")
    now = view["now"]
    for link in view["links"]:
        kid = link["signed_by"].get("kid")
        # A link's signer is the key its parent binds; the full thumbprint is in --json.
        signer = f"kid {kid}" if kid is not None else f"link {link['depth'] - 1} key"
        scope = f"{link['resource']} {','.join(link['actions'])} ({link['purpose']})"
        exp = link["expires_at"]
        expires = f"in {duration(exp - now)}" if exp > now else f"{duration(now - exp)} ago"
        chain.add_row(
            str(link["depth"]),
            printable(link["subject"]),
            printable(signer),
            printable(scope),
            expires,
        )
    console.print(chain)
