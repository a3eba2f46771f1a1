"""Structured JSON logs (structlog) with trace and request ids, and secrets redacted.

Tokens, proofs, keys and credentials never reach a log line: the redaction processor
replaces them by name and by shape (anything that looks like a compact JWS).
"""

from __future__ import annotations

import logging
import re
import sys
from collections.abc import MutableMapping
from typing import Any, Final

import structlog

__all__ = ["REDACTED", "configure_logging", "get_logger", "redact"]

REDACTED: Final = "[redacted]"
_SECRET_NAMES: Final = frozenset(
    {
        "token",
        "coupon",
        "dpop",
        "proof",
        "authorization",
        "api_key",
        "x-api-key",
        "secret",
        "password",
        "private_key",
        "d",
        "master_key",
        "refresh_token",
        "pin",
    }
)
# Three base64url parts joined by dots, possibly chained with "~": a JWS or a coupon chain.
_JWS_SHAPE: Final = re.compile(r"[A-Za-z0-9_-]{8,}\.[A-Za-z0-9_-]{8,}\.[A-Za-z0-9_-]{8,}")


def _scrub(value: Any) -> Any:
    if isinstance(value, str):
        return _JWS_SHAPE.sub(REDACTED, value)
    if isinstance(value, dict):
        return {
            k: REDACTED if str(k).lower() in _SECRET_NAMES else _scrub(v) for k, v in value.items()
        }
    if isinstance(value, list | tuple):
        return [_scrub(v) for v in value]
    return value


def redact(
    _logger: Any, _method: str, event_dict: MutableMapping[str, Any]
) -> MutableMapping[str, Any]:
    """structlog processor: drop secret-named fields and JWS-shaped strings."""
    for key in list(event_dict):
        if key.lower() in _SECRET_NAMES:
            event_dict[key] = REDACTED
        else:
            event_dict[key] = _scrub(event_dict[key])
    return event_dict


def configure_logging(*, level: str = "INFO", json: bool = True) -> None:
    """Configure structlog (and the standard library's root logger) once per process."""
    numeric = logging.getLevelName(level.upper())
    if not isinstance(numeric, int):
        numeric = logging.INFO
    renderer: Any = (
        structlog.processors.JSONRenderer() if json else structlog.dev.ConsoleRenderer(colors=False)
    )
    structlog.configure(
        processors=[
            structlog.contextvars.merge_contextvars,
            structlog.processors.add_log_level,
            structlog.processors.TimeStamper(fmt="iso", utc=True),
            redact,
            structlog.processors.format_exc_info,
            renderer,
        ],
        wrapper_class=structlog.make_filtering_bound_logger(numeric),
        logger_factory=structlog.PrintLoggerFactory(file=sys.stderr),
        cache_logger_on_first_use=False,
    )


def get_logger(name: str) -> Any:
    """A bound structlog logger carrying ``logger=name``."""
    # Initial values keep the proxy lazy: binding now would freeze today's configuration.
    return structlog.get_logger(component=name)
