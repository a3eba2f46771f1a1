"""The library pieces the CLI uses that ``coupon.token`` does not re-export (yet).

Kept in one place so that when they become public only this file changes.
"""

from __future__ import annotations

from typing import Final

from coupon.token import (
    DEFAULT_LEEWAY,
    DEFAULT_MAX_SIZE,
    DEFAULT_MAX_TTL,
    Link,
    check_links,
    parse_chain,
)

from ._io import MAX_INPUT

__all__ = [
    "DEFAULT_LEEWAY",
    "DEFAULT_MAX_SIZE",
    "DEFAULT_MAX_TTL",
    "LENIENT_DEPTH",
    "check_links",
    "links_of",
]

#: How deep a chain the read-only commands parse: as deep as ``attenuate`` parses a parent,
#: so a chain a verifier would refuse for its depth can still be looked at.
LENIENT_DEPTH: Final = 64


def links_of(token: str) -> list[Link]:
    """Strictly parse every link of ``token`` for looking at it; nothing is verified."""
    return parse_chain(token, max_size=MAX_INPUT, max_depth=LENIENT_DEPTH)
