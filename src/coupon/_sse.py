"""A client parser for ``text/event-stream`` (server-sent events), shared by the SDK and the
Authority's tests and tools.

Standard library only, so ``coupon.sdk`` can follow the revocation stream without importing
the Authority (FastAPI, SQLAlchemy, Redis).
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import Final

__all__ = ["SseEvent", "SseParser", "parse_sse"]

_EOL: Final = re.compile(r"\r\n|\r|\n")


@dataclass(frozen=True, slots=True)
class SseEvent:
    """One dispatched server-sent event (``id`` is the last event id seen, per WHATWG)."""

    event: str
    data: str
    id: str | None = None


class SseParser:
    """An incremental ``text/event-stream`` parser (WHATWG HTML §9.2.6) for clients.

    Feed it decoded chunks as they arrive; it returns the events completed so far. Comment
    lines are counted in :attr:`comments` (heartbeats) and otherwise ignored, except that
    ``on_comment``, when given, is called with each comment's text (``": heartbeat"`` gives
    ``"heartbeat"``) as the line is parsed.
    """

    def __init__(self, *, on_comment: Callable[[str], None] | None = None) -> None:
        self._buffer = ""
        self._after_cr = False
        self._data: list[str] = []
        self._event = ""
        self._id: str | None = None
        self._on_comment = on_comment
        self.comments = 0

    def feed(self, chunk: str) -> list[SseEvent]:
        """Parse ``chunk``; return the events it completed."""
        events: list[SseEvent] = []
        if not chunk:
            return events
        if self._after_cr and chunk[0] == "\n":
            chunk = chunk[1:]  # the second half of a CRLF split across chunks
        self._after_cr = False
        buffer = self._buffer + chunk
        start = 0
        for match in _EOL.finditer(buffer):
            self._line(buffer[start : match.start()], events)
            start = match.end()
        self._after_cr = buffer.endswith("\r")
        self._buffer = buffer[start:]
        return events

    def _line(self, line: str, events: list[SseEvent]) -> None:
        if not line:
            if self._data:
                events.append(SseEvent(self._event or "message", "\n".join(self._data), self._id))
            self._data, self._event = [], ""
            return
        if line.startswith(":"):
            self.comments += 1
            if self._on_comment is not None:
                self._on_comment(line[1:].removeprefix(" "))
            return
        field, _, value = line.partition(":")
        value = value.removeprefix(" ")
        if field == "data":
            self._data.append(value)
        elif field == "event":
            self._event = value
        elif field == "id" and "\0" not in value:
            self._id = value


def parse_sse(text: str) -> list[SseEvent]:
    """Parse a whole ``text/event-stream`` body (an unterminated last event is dropped)."""
    return SseParser().feed(text)
