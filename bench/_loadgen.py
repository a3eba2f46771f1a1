"""A small HTTP/1.1 load generator for the Authority benchmarks (open and closed loop).

Hand-built requests over persistent asyncio stream connections, and a minimal response
parser (status line, ``Content-Length`` or chunked body). No HTTP library sits in the timed
path, so the generator's own cost per request stays in the tens of microseconds and it can
keep up with a few thousand requests per second from one core.

Open loop (:func:`run_open_loop`): request ``i`` is *scheduled* at ``t0 + i / rate`` whatever
the responses do, and its latency is measured from that scheduled time (or from the actual
send, when that was earlier), so a stalled server
shows up as latency instead of silently lowering the offered load (no coordinated omission).
A request waits in a queue when every connection is busy; that wait is part of its latency.

Closed loop (:func:`run_closed_loop`): ``concurrency`` workers, each sending its next request
when the previous answer arrives; the right model for "N callers at once".

Every run is bounded in count and in time. Times are ``time.perf_counter()`` seconds.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import math
import time
from collections import Counter
from collections.abc import AsyncIterator, Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

__all__ = [
    "Classify",
    "HttpConnection",
    "HttpResponse",
    "RunResult",
    "build_request",
    "latency_summary",
    "percentile",
    "run_closed_loop",
    "run_open_loop",
]

_TRANSPORT_ERRORS = (OSError, asyncio.IncompleteReadError, asyncio.LimitOverrunError, ValueError)


@dataclass(frozen=True, slots=True)
class HttpResponse:
    """One parsed HTTP/1.1 response."""

    status: int
    headers: dict[bytes, bytes]
    body: bytes


#: Sorts a response into "ok", "http:<status>" (an error) or another label such as
#: "deny:<code>" (answered, but not ok); transport failures are labelled "error:<exception>".
Classify = Callable[[HttpResponse], str]


def build_request(
    method: str,
    path: str,
    host: str,
    *,
    body: bytes = b"",
    headers: Sequence[tuple[str, str]] = (),
) -> bytes:
    """The bytes of one HTTP/1.1 request on a keep-alive connection."""
    lines = [f"{method} {path} HTTP/1.1", f"Host: {host}"]
    lines += [f"{name}: {value}" for name, value in headers]
    if body or method in ("POST", "PUT", "PATCH"):
        lines.append(f"Content-Length: {len(body)}")
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1") + body


async def _read_head(
    reader: asyncio.StreamReader,
) -> tuple[int, dict[bytes, bytes]]:
    head = await reader.readuntil(b"\r\n\r\n")
    lines = head[:-4].split(b"\r\n")
    parts = lines[0].split(b" ", 2)
    if len(parts) < 2 or not parts[0].startswith(b"HTTP/1."):
        raise ValueError(f"bad status line {lines[0][:80]!r}")
    headers: dict[bytes, bytes] = {}
    for line in lines[1:]:
        name, _, value = line.partition(b":")
        headers[name.strip().lower()] = value.strip()
    return int(parts[1]), headers


async def _chunks(reader: asyncio.StreamReader) -> AsyncIterator[bytes]:
    """The payloads of a chunked body, as they arrive (ends after the last chunk)."""
    while True:
        size_line = await reader.readuntil(b"\r\n")
        size = int(size_line.split(b";", 1)[0].strip(), 16)
        if size == 0:
            while (await reader.readuntil(b"\r\n")) != b"\r\n":
                pass  # trailers
            return
        data = await reader.readexactly(size + 2)
        yield data[:-2]


class HttpConnection:
    """One persistent HTTP/1.1 connection; requests on it are sent one at a time."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self._reader = reader
        self._writer = writer
        self.closed = False

    @classmethod
    async def open(cls, host: str, port: int) -> HttpConnection:
        """Connect (TCP_NODELAY is the asyncio default)."""
        reader, writer = await asyncio.open_connection(host, port, limit=1 << 20)
        return cls(reader, writer)

    async def request(self, raw: bytes) -> HttpResponse:
        """Send ``raw`` (see :func:`build_request`) and read the whole response."""
        self._writer.write(raw)
        status, headers = await _read_head(self._reader)
        length = headers.get(b"content-length")
        if length is not None:
            body = await self._reader.readexactly(int(length))
        elif b"chunked" in headers.get(b"transfer-encoding", b"").lower():
            body = b"".join([chunk async for chunk in _chunks(self._reader)])
        else:
            body = await self._reader.read()
            self.closed = True
        if headers.get(b"connection", b"").lower() == b"close":
            self.closed = True
        return HttpResponse(status, headers, body)

    async def stream(self, raw: bytes) -> tuple[int, AsyncIterator[bytes]]:
        """Send ``raw`` and return the status and an iterator over the body as it arrives
        (for ``text/event-stream``); the connection is not reusable afterwards."""
        self._writer.write(raw)
        status, headers = await _read_head(self._reader)
        self.closed = True
        if b"chunked" in headers.get(b"transfer-encoding", b"").lower():
            return status, _chunks(self._reader)

        async def raw_body() -> AsyncIterator[bytes]:
            while data := await self._reader.read(65536):
                yield data

        return status, raw_body()

    async def close(self) -> None:
        """Close the connection (errors on close are ignored)."""
        self.closed = True
        self._writer.close()
        with contextlib.suppress(OSError):
            await self._writer.wait_closed()


# -- statistics ----------------------------------------------------------------------------------


def percentile(ordered: Sequence[float], p: float) -> float:
    """Nearest-rank percentile of an ascending sequence (NaN when empty)."""
    if not ordered:
        return math.nan
    rank = max(1, math.ceil(p / 100.0 * len(ordered)))
    return ordered[min(rank, len(ordered)) - 1]


def latency_summary(seconds: Sequence[float], prefix: str = "") -> dict[str, float | None]:
    """p50/p99/p99.9/max (and mean) in milliseconds, rounded to the microsecond."""
    ordered = sorted(seconds)

    def ms(value: float) -> float | None:
        return None if math.isnan(value) else round(value * 1000.0, 3)

    mean = sum(ordered) / len(ordered) if ordered else math.nan
    return {
        f"{prefix}p50_ms": ms(percentile(ordered, 50)),
        f"{prefix}p99_ms": ms(percentile(ordered, 99)),
        f"{prefix}p999_ms": ms(percentile(ordered, 99.9)),
        f"{prefix}max_ms": ms(ordered[-1] if ordered else math.nan),
        f"{prefix}mean_ms": ms(mean),
    }


@dataclass
class RunResult:
    """What one run measured; :meth:`summary` is the JSON-ready digest."""

    kind: str
    target_rps: float | None
    concurrency: int
    planned: int
    duration_s: float
    connections: int
    latencies: list[float] = field(default_factory=list)  # answered requests only
    service: list[float] = field(default_factory=list)  # sent -> answered
    release_lag: list[float] = field(default_factory=list)  # scheduled -> handed to a worker
    queue_wait: list[float] = field(default_factory=list)  # handed over -> written
    outcomes: Counter[str] = field(default_factory=Counter)
    started: float = 0.0
    last_release: float = 0.0
    last_done: float = 0.0
    client_cpu_s: float = 0.0
    max_in_flight: int = 0
    unfinished: int = 0

    @property
    def answered(self) -> int:
        return len(self.latencies)

    def summary(self) -> dict[str, Any]:
        """Rates, latency percentiles, error counts and generator health, as plain JSON."""
        elapsed = max(self.last_done - self.started, 1e-9)
        ok = self.outcomes.get("ok", 0)
        errors = self.unfinished + sum(
            n for label, n in self.outcomes.items() if label.startswith(("error:", "http:"))
        )
        out: dict[str, Any] = {}
        if self.target_rps is not None:
            out["target_rps"] = self.target_rps
            offered = max(self.last_release - self.started, 1e-9)
            out["offered_rps"] = round(self.planned / offered, 1) if self.planned > 1 else None
        else:
            out["concurrency"] = self.concurrency
        out["achieved_rps"] = round(self.answered / elapsed, 1)
        out["ok_per_s"] = round(ok / elapsed, 1)
        out.update(latency_summary(self.latencies))
        out["requests"] = self.planned
        out["answered"] = self.answered
        out["ok"] = ok
        out["errors"] = errors
        out["non_ok"] = sum(self.outcomes.values()) - ok - (errors - self.unfinished)
        out["outcomes"] = dict(sorted(self.outcomes.items()))
        out["unfinished"] = self.unfinished
        out["service_p50_ms"] = latency_summary(self.service)["p50_ms"]
        out["service_p99_ms"] = latency_summary(self.service)["p99_ms"]
        if self.target_rps is not None:
            lag = latency_summary(self.release_lag)
            wait = latency_summary(self.queue_wait)
            out["generator"] = {
                "release_lag_p50_ms": lag["p50_ms"],
                "release_lag_p99_ms": lag["p99_ms"],
                "release_lag_max_ms": lag["max_ms"],
                "connection_wait_p99_ms": wait["p99_ms"],
                "max_in_flight": self.max_in_flight,
                "connections": self.connections,
            }
        out["client_cpu_util"] = round(self.client_cpu_s / elapsed, 3)
        out["elapsed_s"] = round(elapsed, 3)
        return out


class _Gc:
    """Keep the generator's own collector pauses out of the measurement."""

    def __enter__(self) -> None:
        gc.collect()
        gc.disable()

    def __exit__(self, *exc: object) -> None:
        gc.enable()


async def _open_pool(host: str, port: int, n: int) -> list[HttpConnection]:
    return list(await asyncio.gather(*(HttpConnection.open(host, port) for _ in range(n))))


async def run_open_loop(
    *,
    host: str,
    port: int,
    rate: float,
    duration: float,
    make_request: Callable[[int], bytes],
    classify: Classify,
    connections: int = 64,
    timeout: float = 5.0,
    drain: float = 10.0,
    early: float = 0.001,
    kind: str = "open",
) -> RunResult:
    """Send ``round(rate * duration)`` requests at fixed intervals; see the module docstring.

    The event loop wakes with about a millisecond of granularity, so requests are handed to
    the connections up to ``early`` seconds before their scheduled time rather than up to a
    millisecond after it; a latency is then ``answer - min(scheduled, sent)``: never shorter
    than what the server took, never hiding a late send.

    ``make_request(i)`` must be cheap (prebuilt bytes). A request not answered within
    ``timeout`` seconds counts as ``error:TimeoutError`` and its connection is replaced; the
    run stops ``drain`` seconds after the last scheduled send whatever is still outstanding.
    """
    if rate <= 0 or duration <= 0:
        raise ValueError("rate and duration must be positive")
    n = max(1, round(rate * duration))
    interval = 1.0 / rate
    result = RunResult(kind, rate, 0, n, duration, connections)
    pool = await _open_pool(host, port, connections)
    scheduled = [0.0] * n
    released = [0.0] * n
    queue: asyncio.Queue[int] = asyncio.Queue()
    finished = asyncio.Event()
    done_count = 0
    in_flight = 0

    async def worker(slot: int) -> None:
        nonlocal done_count, in_flight
        conn: HttpConnection | None = pool[slot]
        while True:
            i = await queue.get()
            raw = make_request(i)
            sent = time.perf_counter()
            in_flight += 1
            result.max_in_flight = max(result.max_in_flight, in_flight)
            try:
                async with asyncio.timeout(timeout):
                    if conn is None or conn.closed:
                        conn = await HttpConnection.open(host, port)
                    response = await conn.request(raw)
                label = classify(response)
                end = time.perf_counter()
                result.latencies.append(end - min(scheduled[i], sent))
                result.service.append(end - sent)
            except (TimeoutError, *_TRANSPORT_ERRORS) as exc:
                label = f"error:{type(exc).__name__}"
                end = time.perf_counter()
                if conn is not None:
                    await conn.close()
                conn = None
            in_flight -= 1
            result.queue_wait.append(sent - released[i])
            result.outcomes[label] += 1
            result.last_done = max(result.last_done, end)
            done_count += 1
            if done_count == n:
                finished.set()

    workers = [asyncio.create_task(worker(k)) for k in range(connections)]
    with _Gc():
        cpu0 = time.process_time()
        t0 = time.perf_counter() + 0.02
        result.started = t0
        i = 0
        while i < n:
            now = time.perf_counter()
            while i < n and t0 + i * interval <= now + early:
                scheduled[i] = t0 + i * interval
                released[i] = now
                queue.put_nowait(i)
                i += 1
            if i < n:
                await asyncio.sleep(max(0.0, t0 + i * interval - early - time.perf_counter()))
        result.last_release = released[-1]
        try:
            async with asyncio.timeout(drain):
                await finished.wait()
        except TimeoutError:
            result.unfinished = n - done_count
        result.client_cpu_s = time.process_time() - cpu0
    result.release_lag = [released[k] - scheduled[k] for k in range(n)]
    for task in workers:
        task.cancel()
    await asyncio.gather(*workers, return_exceptions=True)
    await asyncio.gather(*(c.close() for c in pool), return_exceptions=True)
    return result


async def run_closed_loop(
    *,
    host: str,
    port: int,
    concurrency: int,
    duration: float,
    make_request: Callable[[int], bytes],
    classify: Classify,
    max_requests: int = 1_000_000,
    timeout: float = 5.0,
    kind: str = "closed",
) -> RunResult:
    """``concurrency`` workers send back to back for ``duration`` seconds (or ``max_requests``
    in all); latency is send -> answer."""
    result = RunResult(kind, None, concurrency, 0, duration, concurrency)
    pool = await _open_pool(host, port, concurrency)
    counter = 0

    async def worker(slot: int) -> None:
        nonlocal counter
        conn: HttpConnection | None = pool[slot]
        while time.perf_counter() < deadline and counter < max_requests:
            i = counter
            counter += 1
            raw = make_request(i)
            sent = time.perf_counter()
            try:
                async with asyncio.timeout(timeout):
                    if conn is None or conn.closed:
                        conn = await HttpConnection.open(host, port)
                    response = await conn.request(raw)
                label = classify(response)
                end = time.perf_counter()
                result.latencies.append(end - sent)
                result.service.append(end - sent)
            except (TimeoutError, *_TRANSPORT_ERRORS) as exc:
                label = f"error:{type(exc).__name__}"
                end = time.perf_counter()
                if conn is not None:
                    await conn.close()
                conn = None
            result.outcomes[label] += 1
            result.last_done = max(result.last_done, end)
        if conn is not None:
            await conn.close()

    with _Gc():
        cpu0 = time.process_time()
        result.started = time.perf_counter()
        deadline = result.started + duration
        async with asyncio.timeout(duration + timeout + 5.0):
            await asyncio.gather(*(worker(k) for k in range(concurrency)))
        result.client_cpu_s = time.process_time() - cpu0
    result.planned = counter
    return result
