"""Start and stop a ``coupon up`` Authority subprocess for a benchmark, and set it up.

Embedded mode: a fresh temporary data directory (SQLite, in-process fan-out), removed after.
Production mode: :class:`ProductionBackends` creates a fresh PostgreSQL database and a random
Redis key prefix, and fixes the master key and the admin credential so that several Authority
processes share keys and credentials; :meth:`ProductionBackends.drop` removes both afterwards.

The server runs as ``python -m coupon.cli up --port 0`` with ``COUPON_LOG_LEVEL=WARNING``;
its stdout announcement gives the URL and the admin key, its stderr goes to a log file.
Inherited ``COUPON_*`` variables are dropped so runs are repeatable. With a profile path or
what-if experiments it runs behind a small launcher instead (see ``_LAUNCHER``): a cProfile
the benchmark switches on for its measured windows only, and run-time patches that measure a
suggested server change before anyone makes it (the server code itself is never changed).
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import os
import platform
import re
import secrets
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
from redis.asyncio import Redis

CLEAN_EXIT = frozenset({0, 1, -2, -15, 130})

__all__ = [
    "CLEAN_EXIT",
    "EXPERIMENTS",
    "AuthorityProcess",
    "ProductionBackends",
    "create_api_key",
    "issue_coupons",
    "machine_info",
    "start_authority",
    "wait_ready",
]

PG_BASE = os.environ.get("BENCH_PG_URL", "postgresql://postgres@127.0.0.1:5432")
REDIS_URL = os.environ.get("BENCH_REDIS_URL", "redis://127.0.0.1:6379/0")
PROFILE_START = signal.SIGRTMIN + 1
PROFILE_STOP = signal.SIGRTMIN + 2
_UP = re.compile(r"Coupon Authority is up on (\S+)")
_ADMIN = re.compile(r"admin key\s+(cpk_\S+)")


def _b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


@dataclass
class ProductionBackends:
    """A fresh PostgreSQL database and Redis prefix, plus the secrets processes share."""

    database: str
    redis_prefix: str
    master_key: str
    admin_key: str
    pg_base: str = PG_BASE
    redis_url: str = REDIS_URL

    @property
    def database_url(self) -> str:
        return f"{self.pg_base}/{self.database}"

    @classmethod
    async def create(cls) -> ProductionBackends:
        """Create the database (trust auth as user postgres) and pick the secrets."""
        import asyncpg  # type: ignore[import-untyped]

        name = f"coupon_bench_{secrets.token_hex(6)}"
        conn = await asyncpg.connect(f"{PG_BASE}/postgres", timeout=10)
        try:
            await conn.execute(f'CREATE DATABASE "{name}"')
        finally:
            await conn.close()
        return cls(
            database=name,
            redis_prefix=f"bench{secrets.token_hex(4)}:",
            master_key=_b64url(secrets.token_bytes(32)),
            admin_key=f"cpk_{secrets.token_hex(8)}_{_b64url(secrets.token_bytes(32))}",
        )

    def env(self) -> dict[str, str]:
        """The environment that points an Authority process at these backends."""
        return {
            "COUPON_DATABASE_URL": self.database_url,
            "COUPON_REDIS_URL": self.redis_url,
            "COUPON_REDIS_PREFIX": self.redis_prefix,
            "COUPON_MASTER_KEY": self.master_key,
            "COUPON_ADMIN_API_KEY": self.admin_key,
            # One issuer for all processes (it defaults to each process's own URL).
            "COUPON_ISSUER": "https://authority.bench.invalid",
        }

    async def drop(self) -> None:
        """Drop the database and delete the Redis keys under the prefix (bounded)."""
        import asyncpg

        conn = await asyncpg.connect(f"{self.pg_base}/postgres", timeout=10)
        try:
            await conn.execute(f'DROP DATABASE IF EXISTS "{self.database}" WITH (FORCE)')
        finally:
            await conn.close()
        redis = Redis.from_url(self.redis_url, socket_timeout=5)
        try:
            batch: list[bytes] = []
            for _ in range(1_000_000):  # a bound, not an expectation
                async for key in redis.scan_iter(match=f"{self.redis_prefix}*", count=1000):
                    batch.append(key)
                    if len(batch) >= 1000:
                        break
                if not batch:
                    break
                await redis.delete(*batch)
                batch.clear()
        finally:
            await redis.aclose()


@dataclass
class AuthorityProcess:
    """A running ``coupon up`` subprocess."""

    proc: subprocess.Popen[str]
    url: str
    admin_key: str
    data_dir: Path
    log_path: Path
    profile_path: Path | None = None
    own_data_dir: bool = True
    lines: list[str] = field(default_factory=list)

    @property
    def pid(self) -> int:
        return self.proc.pid

    @property
    def host(self) -> str:
        return self.url.split("://", 1)[1].rsplit(":", 1)[0]

    @property
    def port(self) -> int:
        return int(self.url.rsplit(":", 1)[1].split("/", 1)[0])

    def cpu_seconds(self) -> float:
        """User + system CPU the server process has used so far (Linux ``/proc``)."""
        try:
            fields = Path(f"/proc/{self.pid}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            return float("nan")
        ticks = os.sysconf("SC_CLK_TCK")
        return (int(fields[11]) + int(fields[12])) / ticks

    def profile_start(self) -> None:
        """Start the server's profiler (see ``profile_path``)."""
        if self.profile_path is None:
            raise RuntimeError("not started with a profile_path")
        self.profile_path.unlink(missing_ok=True)
        self.proc.send_signal(PROFILE_START)
        time.sleep(0.05)

    def profile_stop(self, timeout: float = 30.0) -> Path:
        """Stop the profiler and wait for its file."""
        if self.profile_path is None:
            raise RuntimeError("not started with a profile_path")
        self.proc.send_signal(PROFILE_STOP)
        deadline = time.monotonic() + timeout
        while not self.profile_path.exists():
            if time.monotonic() > deadline:
                raise TimeoutError("the server wrote no profile")
            time.sleep(0.05)
        return self.profile_path

    def stop(self, timeout: float = 20.0) -> int:
        """Ctrl-C (SIGINT), wait, then SIGKILL.

        uvicorn shuts down gracefully and then re-raises the signal; SIGINT becomes a
        KeyboardInterrupt, which lets ``cProfile`` write its file on the way out. An exit
        status of 0, 1, -2 (SIGINT) or -15 (SIGTERM) is a clean stop.
        """
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGINT)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)
        if self.own_data_dir:
            shutil.rmtree(self.data_dir, ignore_errors=True)
        return self.proc.returncode

    def log_tail(self, n: int = 20) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-n:])
        except OSError:
            return ""


# The server behind a small launcher that can (1) run a windowed cProfile: SIGRTMIN+1 starts
# it, SIGRTMIN+2 stops it and writes the file (SIGUSR1 is taken: `coupon up` dumps stacks on
# it), so the profile holds the measured requests and not start-up, imports or set-up (only
# the event-loop thread is profiled; aiosqlite's and anyio's worker threads are not), and
# (2) apply what-if EXPERIMENTS to the server at run time, for A/B evidence behind
# optimisation suggestions. Experiments patch the running process only; the server code is
# unchanged, and results with them are labelled as such.
_LAUNCHER = """
import cProfile, os, runpy, signal, socket, sys, time, types
_prof = cProfile.Profile()
def _start(*_):
    global _prof
    _prof = cProfile.Profile()
    _prof.enable()
def _stop(*_):
    _prof.disable()
    path = os.environ["BENCH_PROFILE_PATH"]
    _prof.dump_stats(path + ".tmp")
    os.replace(path + ".tmp", path)
if os.environ.get("BENCH_PROFILE_PATH"):
    signal.signal(signal.SIGRTMIN + 1, _start)
    signal.signal(signal.SIGRTMIN + 2, _stop)
experiments = set(filter(None, os.environ.get("BENCH_EXPERIMENTS", "").split(",")))
if "nodelay" in experiments:
    # The listening socket made with proto=IPPROTO_TCP: asyncio then sets TCP_NODELAY on
    # every accepted connection (it skips sockets whose proto is 0).
    import coupon.cli._up_cmd as up_cmd
    class _TcpSocket(socket.socket):
        def __init__(self, family=-1, type=-1, proto=-1, fileno=None):
            if fileno is None and type == socket.SOCK_STREAM and proto in (-1, 0):
                proto = socket.IPPROTO_TCP
            super().__init__(family, type, proto, fileno)
    patched = types.ModuleType("socket")
    patched.__dict__.update(socket.__dict__)
    patched.socket = _TcpSocket
    up_cmd.socket = patched
if "apikey-cache" in experiments:
    # API-key records cached in process for 5 s instead of one SELECT per request.
    from coupon.authority import _auth
    _original = _auth.ApiKeyAuthenticator.authenticate
    class _CachedStore:
        def __init__(self, store):
            self._store, self._cache = store, {}
        async def get_api_key(self, key_id):
            hit = self._cache.get(key_id)
            if hit is not None and hit[0] > time.monotonic():
                return hit[1]
            record = await self._store.get_api_key(key_id)
            self._cache[key_id] = (time.monotonic() + 5.0, record)
            return record
    async def _authenticate(self, headers):
        if not isinstance(self._store, _CachedStore):
            self._store = _CachedStore(self._store)
        return await _original(self, headers)
    _auth.ApiKeyAuthenticator.authenticate = _authenticate
if "gc-freeze" in experiments:
    # gc.freeze() once the Authority is up: the start-up heap leaves the collector's view,
    # so full collections stop rescanning it.
    import gc
    import coupon.cli._up_cmd as up_cmd
    _announce = up_cmd._announce
    def _announce_and_freeze(*args, **kwargs):
        _announce(*args, **kwargs)
        gc.freeze()
    up_cmd._announce = _announce_and_freeze
if "async-deps" in experiments:
    # The Authority's plain-def FastAPI dependencies (_authority, _ctx) called on the event
    # loop instead of through the anyio thread pool.
    import inspect
    import coupon.authority.app as authority_app
    _create_app = authority_app.create_app
    def _asyncify(fn):
        async def call(**kwargs):
            return fn(**kwargs)
        return call
    def _walk(dependant):
        for sub in dependant.dependencies:
            fn = sub.call
            if (
                inspect.isfunction(fn)
                and not inspect.iscoroutinefunction(fn)
                and not inspect.isgeneratorfunction(fn)
                and fn.__module__.startswith("coupon.authority")
            ):
                sub.call = _asyncify(fn)
            _walk(sub)
    def _routes(routes):
        for route in routes:
            if getattr(route, "dependant", None) is not None:
                _walk(route.dependant)
            if getattr(route, "original_router", None) is not None:
                _routes(route.original_router.routes)
            candidates = getattr(route, "effective_candidates", None)
            if candidates is not None:
                _routes(candidates() if callable(candidates) else candidates)
    def _create_app_async_deps(*args, **kwargs):
        app = _create_app(*args, **kwargs)
        _routes(app.router.routes)
        return app
    authority_app.create_app = _create_app_async_deps
unknown = experiments - {"nodelay", "apikey-cache", "gc-freeze", "async-deps"}
if unknown:
    raise SystemExit(f"unknown experiments {sorted(unknown)}")
sys.argv = ["coupon", *sys.argv[1:]]
runpy.run_module("coupon.cli", run_name="__main__", alter_sys=True)
"""
EXPERIMENTS = ("nodelay", "apikey-cache", "gc-freeze", "async-deps")


def start_authority(
    mode: str,
    *,
    backends: ProductionBackends | None = None,
    env: dict[str, str] | None = None,
    profile_path: Path | None = None,
    experiments: Sequence[str] = (),
    timeout: float = 60.0,
) -> AuthorityProcess:
    """Start ``coupon up`` on a free loopback port and wait for its announcement."""
    if mode not in ("embedded", "production"):
        raise ValueError(f"mode is embedded or production, not {mode!r}")
    if mode == "production" and backends is None:
        raise ValueError("production mode needs ProductionBackends")
    data_dir = Path(tempfile.mkdtemp(prefix="coupon-bench-"))
    child_env = {k: v for k, v in os.environ.items() if not k.startswith("COUPON_")}
    child_env["COUPON_LOG_LEVEL"] = "WARNING"
    if backends is not None and mode == "production":
        child_env.update(backends.env())
    child_env.update(env or {})
    up_args = ["up", "--host", "127.0.0.1", "--port", "0", "--data-dir", str(data_dir)]
    if profile_path is not None or experiments:
        unknown = set(experiments) - set(EXPERIMENTS)
        if unknown:
            raise ValueError(f"unknown experiments {sorted(unknown)}")
        child_env["BENCH_PROFILE_PATH"] = str(profile_path or "")
        child_env["BENCH_EXPERIMENTS"] = ",".join(experiments)
        cmd = [sys.executable, "-c", _LAUNCHER, *up_args]
    else:
        cmd = [sys.executable, "-m", "coupon.cli", *up_args]
    log_path = data_dir / "server.log"
    log = log_path.open("w")
    proc = subprocess.Popen(
        cmd,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=log,
        text=True,
        env=child_env,
        start_new_session=True,
    )
    log.close()
    lines: list[str] = []
    ready = threading.Event()

    def pump() -> None:
        assert proc.stdout is not None
        for line in proc.stdout:
            lines.append(line.rstrip("\n"))
            if line.startswith("Press Ctrl-C"):
                ready.set()
        ready.set()

    threading.Thread(target=pump, daemon=True, name="authority-stdout").start()
    if not ready.wait(timeout) or proc.poll() is not None:
        proc.kill()
        tail = log_path.read_text(errors="replace")[-3000:] if log_path.exists() else ""
        shutil.rmtree(data_dir, ignore_errors=True)
        raise RuntimeError(f"the Authority did not start: {lines[-5:]!r}\n{tail}")
    text = "\n".join(lines)
    up = _UP.search(text)
    admin = _ADMIN.search(text)
    if up is None:
        proc.kill()
        raise RuntimeError(f"no 'is up on' line in {text!r}")
    admin_key = admin.group(1) if admin else (backends.admin_key if backends else "")
    return AuthorityProcess(
        proc, up.group(1), admin_key, data_dir, log_path, profile_path, True, lines
    )


async def create_api_key(url: str, admin_key: str, name: str, roles: list[str]) -> str:
    """A new service credential with ``roles`` (created with the admin key)."""
    async with httpx.AsyncClient(base_url=url, timeout=10) as client:
        r = await client.post(
            "/v1/admin/api-keys",
            headers={"X-API-Key": admin_key},
            json={"name": name, "roles": roles},
        )
        r.raise_for_status()
        key: str = r.json()["api_key"]
        return key


async def issue_coupons(
    url: str, key: str, bodies: list[dict[str, Any]], *, concurrency: int = 8
) -> list[dict[str, Any]]:
    """Issue one coupon per body (setup, not timed); returns the responses in order."""
    out: list[dict[str, Any] | None] = [None] * len(bodies)
    todo = iter(range(len(bodies)))
    async with httpx.AsyncClient(base_url=url, timeout=30) as client:

        async def work() -> None:
            for i in todo:
                r = await client.post("/v1/coupons", headers={"X-API-Key": key}, json=bodies[i])
                if r.status_code != 201:
                    raise RuntimeError(f"issue failed: {r.status_code} {r.text[:300]}")
                out[i] = r.json()

        await asyncio.gather(*(work() for _ in range(concurrency)))
    return [o for o in out if o is not None]


async def wait_ready(url: str, timeout: float = 20.0) -> None:
    """Wait for ``/readyz`` to answer 200."""
    deadline = time.monotonic() + timeout
    async with httpx.AsyncClient(base_url=url, timeout=5) as client:
        while time.monotonic() < deadline:
            with contextlib.suppress(httpx.HTTPError):
                if (await client.get("/readyz")).status_code == 200:
                    return
            await asyncio.sleep(0.1)
    raise TimeoutError(f"{url} not ready after {timeout} s")


def _cpu_model() -> str:
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    return platform.processor() or "unknown"


def machine_info(loadavg_at_start: tuple[float, float, float] | None = None) -> dict[str, Any]:
    """Python, OS and CPU facts for the JSON output, with the load average at the start of
    the run (pass ``os.getloadavg()`` taken then) and now: a busy machine shows here."""
    from importlib import metadata
    from importlib.util import find_spec

    http = "httptools" if find_spec("httptools") else "h11"
    loop = "uvloop" if find_spec("uvloop") else "asyncio"
    return {
        "python": platform.python_version(),
        "implementation": platform.python_implementation(),
        "os": platform.platform(),
        "cpu": _cpu_model(),
        "cpus": os.cpu_count(),
        "loadavg_at_start": [round(x, 2) for x in loadavg_at_start or os.getloadavg()],
        "loadavg_at_end": [round(x, 2) for x in os.getloadavg()],
        "server": f"uvicorn {metadata.version('uvicorn')} ({http}, {loop} loop), one process",
    }
