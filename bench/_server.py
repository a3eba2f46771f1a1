"""Start and stop a ``coupon up`` Authority subprocess for a benchmark, and set it up.

Embedded mode: a fresh temporary data directory (SQLite, in-process fan-out), removed after.
Production mode: :class:`ProductionBackends` creates a fresh PostgreSQL database and a random
Redis key prefix, and fixes the master key and the admin credential so that several Authority
processes share keys and credentials; :meth:`ProductionBackends.drop` removes both afterwards.

The server runs as ``python -m coupon.cli up --port 0`` (optionally under ``cProfile``) with
``COUPON_LOG_LEVEL=WARNING``; its stdout announcement gives the URL and the admin key, its
stderr goes to a log file. Inherited ``COUPON_*`` variables are dropped so runs are repeatable.
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
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
from redis.asyncio import Redis

__all__ = [
    "AuthorityProcess",
    "ProductionBackends",
    "create_api_key",
    "machine_info",
    "start_authority",
]

PG_BASE = os.environ.get("BENCH_PG_URL", "postgresql://postgres@127.0.0.1:5432")
REDIS_URL = os.environ.get("BENCH_REDIS_URL", "redis://127.0.0.1:6379/0")
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
        }

    async def drop(self) -> None:
        """Drop the database and delete the Redis keys under the prefix (bounded)."""
        import asyncpg

        conn = await asyncpg.connect(f"{PG_BASE}/postgres", timeout=10)
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

    def stop(self, timeout: float = 20.0) -> int:
        """SIGTERM, wait (the profile is written on a clean exit), then SIGKILL."""
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
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


def start_authority(
    mode: str,
    *,
    backends: ProductionBackends | None = None,
    env: dict[str, str] | None = None,
    profile_path: Path | None = None,
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
    cmd = [sys.executable]
    if profile_path is not None:
        cmd += ["-m", "cProfile", "-o", str(profile_path)]
    cmd += ["-m", "coupon.cli", "up", "--host", "127.0.0.1", "--port", "0"]
    cmd += ["--data-dir", str(data_dir)]
    log_path = data_dir / "server.log"
    log = log_path.open("w")
    proc = subprocess.Popen(  # noqa: S603 - our own interpreter and arguments
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
    return AuthorityProcess(proc, up.group(1), admin_key, data_dir, log_path, profile_path, True, lines)


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


def machine_info() -> dict[str, Any]:
    """Python, OS and CPU facts for the JSON output."""
    load = os.getloadavg() if hasattr(os, "getloadavg") else (math_nan := float("nan"),) * 3
    del_unused = locals().get("math_nan")
    del del_unused
    return {
        "python": platform.python_version(),
        "implementation": platform.python_implementation(),
        "os": platform.platform(),
        "cpu": _cpu_model(),
        "cpus": os.cpu_count(),
        "loadavg_at_start": [round(x, 2) for x in load],
        "server": "uvicorn (h11, asyncio loop), one process per Authority",
    }
