"""Run ``coupon up`` as a real subprocess and talk to it over HTTP.

:class:`AuthorityProcess` starts the Authority with a given environment (embedded data
directory, or PostgreSQL and Redis), waits until it has printed its URL and admin key and
answers ``/readyz``, and can stop it gracefully (SIGTERM), crash it (SIGKILL) and restart it
on the same port, data directory and database. Its stdout and stderr go to files, so a failed
start shows what the process said.

:class:`Launcher` starts processes for a fixture scope (each on its own deployment: a data
directory, or a fresh PostgreSQL database and Redis prefix) and stops them at the scope's end.
The helpers below build what a client needs: a holder key that signs DPoP proofs
(:class:`Holder`), request bodies, fresh secrets and direct credential records for tests that
need callers with other roles.
"""

from __future__ import annotations

import asyncio
import base64
import os
import re
import secrets
import signal
import ssl
import subprocess
import sys
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType
from typing import Any, Final, Protocol, Self

import httpx
import pytest

from coupon.storage.base import CouponRecord
from coupon.token import SigningKey, create_dpop_proof, new_jti

__all__ = [
    "ADMIN_KEY_HEADER",
    "RESOURCE_URI",
    "AuthorityProcess",
    "Holder",
    "Launcher",
    "ProductionEnv",
    "StartupError",
    "add_api_key",
    "introspect",
    "issue",
    "issue_body",
    "new_admin_api_key",
    "new_master_key",
    "revoke",
    "stored_coupon",
    "unique",
    "verify",
    "verify_body",
]

ADMIN_KEY_HEADER: Final = "X-API-Key"
#: The URI of the relying service's request that verification tests pretend to serve.
RESOURCE_URI: Final = "https://orders.example/orders/123/items"

_UP_LINE: Final = re.compile(r"Coupon Authority is up on (https?://\S+)")
_ADMIN_LINE: Final = re.compile(r"^\s+admin key\s+(cpk_\S+)", re.MULTILINE)
_GRPC_LINE: Final = re.compile(r"^\s+gRPC\s+(\S+)\s", re.MULTILINE)
_READY_LINE: Final = "Press Ctrl-C to stop."
_CLEAN_EXIT: Final = frozenset({0, -signal.SIGTERM})


class StartupError(RuntimeError):
    """The Authority did not become ready; the message carries its output."""


def unique(prefix: str) -> str:
    """A name no other test uses (``prefix-<8 hex>``)."""
    return f"{prefix}-{secrets.token_hex(4)}"


def new_master_key() -> str:
    """A ``COUPON_MASTER_KEY``: base64url of 32 random bytes without padding."""
    return base64.urlsafe_b64encode(secrets.token_bytes(32)).rstrip(b"=").decode()


def new_admin_api_key() -> str:
    """A ``COUPON_ADMIN_API_KEY``: ``cpk_<16 lowercase hex>_<43 base64url>``."""
    return f"cpk_{secrets.token_hex(8)}_{secrets.token_urlsafe(32)}"


@dataclass(frozen=True, slots=True)
class ProductionEnv:
    """One PostgreSQL database and Redis prefix, and the secrets every process on them shares."""

    database_url: str
    redis_url: str
    redis_prefix: str
    master_key: str = field(default_factory=new_master_key)
    admin_api_key: str = field(default_factory=new_admin_api_key)

    def env(self) -> dict[str, str]:
        """The ``COUPON_*`` variables that point a process at these engines."""
        return {
            "COUPON_DATABASE_URL": self.database_url,
            "COUPON_REDIS_URL": self.redis_url,
            "COUPON_REDIS_PREFIX": self.redis_prefix,
            "COUPON_MASTER_KEY": self.master_key,
            "COUPON_ADMIN_API_KEY": self.admin_api_key,
        }


class Holder:
    """A client key pair that coupons bind to (``cnf.jkt``) and that signs DPoP proofs."""

    def __init__(self, alg: str = "EdDSA") -> None:
        self.key = SigningKey.generate(alg)

    @property
    def jkt(self) -> str:
        """The RFC 7638 thumbprint a coupon binds."""
        return self.key.public.thumbprint

    def proof(self, *, method: str = "GET", uri: str = RESOURCE_URI, token: str | None) -> str:
        """A fresh DPoP proof for one request, with ``ath`` when ``token`` is presented."""
        return create_dpop_proof(
            self.key,
            method=method,
            uri=uri,
            now=int(time.time()),
            jti=new_jti(),
            access_token=token,
        )


def issue_body(
    holder: Holder,
    *,
    subject: str = "alice",
    tenant: str = "tenant-a",
    audience: Sequence[str] = ("orders",),
    resource: str = "orders/123/**",
    actions: Sequence[str] = ("read",),
    purpose: str = "billing",
    ttl: int | None = 120,
) -> dict[str, Any]:
    """The body of ``POST /v1/coupons`` for a coupon bound to ``holder``."""
    body: dict[str, Any] = {
        "subject": subject,
        "audience": list(audience),
        "tenant": tenant,
        "resource": resource,
        "actions": list(actions),
        "purpose": purpose,
        "binding": {"jkt": holder.jkt},
    }
    if ttl is not None:
        body["ttl"] = ttl
    return body


def verify_body(
    coupon: str,
    holder: Holder,
    *,
    audience: str = "orders",
    resource: str = "orders/123/items",
    action: str = "read",
    purpose: str = "billing",
    proof: str | None = None,
) -> dict[str, Any]:
    """The body of ``POST /v1/coupons/verify`` for a GET of :data:`RESOURCE_URI`.

    A fresh proof by ``holder`` is made unless ``proof`` is given (to replay one).
    """
    return {
        "coupon": coupon,
        "audience": audience,
        "resource": resource,
        "action": action,
        "purpose": purpose,
        "dpop": proof if proof is not None else holder.proof(token=coupon),
        "htm": "GET",
        "htu": RESOURCE_URI,
    }


def issue(authority: AuthorityProcess, holder: Holder, **fields: Any) -> dict[str, Any]:
    """Issue a coupon with the admin key; assert it was created and return the answer."""
    response = authority.client.post("/v1/coupons", json=issue_body(holder, **fields))
    assert response.status_code == 201, response.text
    answer: dict[str, Any] = response.json()
    return answer


def verify(authority: AuthorityProcess, body: dict[str, Any]) -> dict[str, Any]:
    """Ask the Authority to verify; a decision (allow or deny) is always a 200."""
    response = authority.client.post("/v1/coupons/verify", json=body)
    assert response.status_code == 200, response.text
    answer: dict[str, Any] = response.json()
    return answer


def revoke(authority: AuthorityProcess, kind: str, value: str) -> dict[str, Any]:
    """Revoke with the admin key; assert it was stored and return the answer."""
    response = authority.client.post(
        "/v1/revocations", json={"kind": kind, "value": value, "reason": f"test {kind}"}
    )
    assert response.status_code == 201, response.text
    answer: dict[str, Any] = response.json()
    return answer


def introspect(authority: AuthorityProcess, token: str) -> dict[str, Any]:
    """RFC 7662 introspection with the admin key."""
    response = authority.client.post("/v1/coupons/introspect", data={"token": token})
    assert response.status_code == 200, response.text
    answer: dict[str, Any] = response.json()
    return answer


def add_api_key(database_url: str, roles: Sequence[str], *, tenant: str | None = None) -> str:
    """Store a credential with ``roles`` straight into the Authority's database.

    Used where a test needs a caller with other roles without depending on the admin API.
    """
    from coupon.authority._auth import new_api_key
    from coupon.storage.sql import SqlStore

    credential, record = new_api_key(unique("svc"), roles, tenant=tenant)

    async def store() -> None:
        sql = await SqlStore.connect(database_url)
        try:
            await sql.add_api_key(record)
        finally:
            await sql.close()

    asyncio.run(store())
    return credential


def stored_coupon(database_url: str, jti: str) -> CouponRecord | None:
    """The Authority's record of coupon ``jti``, read straight from its database."""
    from coupon.storage.sql import SqlStore

    async def read() -> CouponRecord | None:
        sql = await SqlStore.connect(database_url)
        try:
            return await sql.get_coupon(jti)
        finally:
            await sql.close()

    return asyncio.run(read())


class AuthorityProcess:
    """One ``coupon up`` subprocess.

    Args:
        data_dir: the ``--data-dir`` (SQLite files, master key and admin key when embedded).
        env: ``COUPON_*`` settings; every other ``COUPON_*`` variable of the caller is dropped.
        log_dir: where ``<name>-<n>.stdout.log`` and ``.stderr.log`` go (``data_dir`` if None).
        name: used in log file names and messages.
        port: the first ``--port``; 0 picks a free one, and restarts keep the port chosen.
        startup_timeout: seconds to wait for the ready line and a 200 from ``/readyz``.
        tls: the client side of HTTPS for every client made here (trusted CAs, and a client
            certificate where the process requires one); None: httpx's default.
    """

    def __init__(
        self,
        *,
        data_dir: Path,
        env: Mapping[str, str] | None = None,
        log_dir: Path | None = None,
        name: str = "authority",
        port: int = 0,
        startup_timeout: float = 30.0,
        tls: ssl.SSLContext | None = None,
    ) -> None:
        self.data_dir = data_dir
        self.tls = tls
        self.env = dict(env or {})
        self.log_dir = log_dir or data_dir
        self.name = name
        self.port = port
        self.startup_timeout = startup_timeout
        self.starts = 0
        self.printed_admin_key: str | None = None
        #: ``host:port`` of the gRPC server the process announced (``COUPON_GRPC_PORT``), or None.
        self.grpc_target: str | None = None
        self._proc: subprocess.Popen[bytes] | None = None
        self._base_url: str | None = None
        self._admin_key: str | None = None
        self._clients: list[httpx.Client] = []
        self._client: httpx.Client | None = None
        self._anon: httpx.Client | None = None
        self.stdout_path = self.log_dir / f"{name}-0.stdout.log"
        self.stderr_path = self.log_dir / f"{name}-0.stderr.log"

    # -- lifecycle -------------------------------------------------------------------------------

    def start(self) -> Self:
        """Launch the process and wait until it is ready."""
        self.launch()
        return self.wait_ready()

    def launch(self) -> None:
        """Spawn ``coupon up`` without waiting (to start several processes at once)."""
        if self.running:
            raise RuntimeError(f"{self.name} is already running")
        self.data_dir.mkdir(parents=True, exist_ok=True)
        self.log_dir.mkdir(parents=True, exist_ok=True)
        self.stdout_path = self.log_dir / f"{self.name}-{self.starts}.stdout.log"
        self.stderr_path = self.log_dir / f"{self.name}-{self.starts}.stderr.log"
        self.starts += 1
        env = {k: v for k, v in os.environ.items() if not k.startswith("COUPON_")}
        env.update(self.env)
        env["PYTHONUNBUFFERED"] = "1"
        argv = [
            sys.executable,
            "-m",
            "coupon.cli",
            "up",
            "--host",
            "127.0.0.1",
            "--port",
            str(self.port),
            "--data-dir",
            str(self.data_dir),
        ]
        with self.stdout_path.open("wb") as out, self.stderr_path.open("wb") as err:
            self._proc = subprocess.Popen(
                argv, stdin=subprocess.DEVNULL, stdout=out, stderr=err, env=env
            )

    def wait_ready(self) -> Self:
        """Read the ready announcement from stdout, then poll ``/readyz`` until it is 200."""
        deadline = time.monotonic() + self.startup_timeout
        text = ""
        while _READY_LINE not in text:
            if self._proc is None or self._proc.poll() is not None:
                raise StartupError(self._failure("exited before it was ready"))
            if time.monotonic() > deadline:
                raise StartupError(self._failure("printed no ready line in time"))
            time.sleep(0.02)
            text = self.stdout_path.read_text(errors="replace")
        up = _UP_LINE.search(text)
        if up is None:
            raise StartupError(self._failure("announced no URL"))
        self._base_url = up.group(1).rstrip("/")
        self.port = int(self._base_url.rsplit(":", 1)[1])
        printed = _ADMIN_LINE.search(text)
        self.printed_admin_key = printed.group(1) if printed else None
        grpc_line = _GRPC_LINE.search(text)
        self.grpc_target = grpc_line.group(1) if grpc_line else None
        self._admin_key = self.printed_admin_key or self._known_admin_key()
        self._reset_clients()
        last = "no answer"
        while True:
            try:
                response = self.anon.get("/readyz", timeout=2.0)
                if response.status_code == 200:
                    return self
                last = f"{response.status_code} {response.text[:300]}"
            except httpx.TransportError as exc:
                last = repr(exc)
            if time.monotonic() > deadline:
                raise StartupError(self._failure(f"/readyz did not turn 200 ({last})"))
            time.sleep(0.05)

    def kill9(self) -> None:
        """Crash the process with SIGKILL (no shutdown code runs) and reap it."""
        proc = self._require_proc()
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=10)

    def terminate(self, *, timeout: float = 10.0) -> int:
        """Stop with SIGTERM and assert a clean exit within ``timeout`` seconds.

        Clean means exit status 0, or death by the SIGTERM that uvicorn re-raises after its
        graceful shutdown, and no traceback on stderr.
        """
        proc = self._require_proc()
        proc.send_signal(signal.SIGTERM)
        try:
            code = proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            message = self._failure(f"did not exit within {timeout}s of SIGTERM (now killed)")
            proc.kill()
            proc.wait()
            raise AssertionError(message) from None
        assert code in _CLEAN_EXIT, self._failure(f"exited with status {code} after SIGTERM")
        stderr = self.stderr_path.read_text(errors="replace")
        assert "Traceback" not in stderr, self._failure("printed a traceback while stopping")
        return code

    def restart(self, *, kill: bool = False) -> Self:
        """Stop (SIGTERM, or SIGKILL when ``kill``) if running, then start on the same port."""
        if self.running:
            if kill:
                self.kill9()
            else:
                self.terminate()
        return self.start()

    def close(self) -> None:
        """Stop the process however it takes (SIGTERM, then SIGKILL) and close the clients."""
        for client in self._clients:
            client.close()
        self._clients.clear()
        self._client = self._anon = None
        proc = self._proc
        if proc is not None and proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    # -- what tests use --------------------------------------------------------------------------

    @property
    def running(self) -> bool:
        """Whether the process is alive."""
        return self._proc is not None and self._proc.poll() is None

    @property
    def pid(self) -> int:
        """The process id."""
        return self._require_proc().pid

    @property
    def base_url(self) -> str:
        """``http://127.0.0.1:<port>`` as the process announced it."""
        if self._base_url is None:
            raise RuntimeError(f"{self.name} has not started")
        return self._base_url

    @property
    def admin_key(self) -> str:
        """The admin credential (printed, ``COUPON_ADMIN_API_KEY`` or ``data_dir/admin.key``)."""
        if self._admin_key is None:
            raise RuntimeError(f"{self.name} has no known admin key")
        return self._admin_key

    @property
    def database_url(self) -> str:
        """The SQLAlchemy URL of the process's state (for direct checks by tests)."""
        return self.env.get("COUPON_DATABASE_URL") or (
            f"sqlite+aiosqlite:///{self.data_dir / 'authority.db'}"
        )

    @property
    def client(self) -> httpx.Client:
        """An HTTP client on :attr:`base_url` that sends the admin key."""
        if self._client is None:
            raise RuntimeError(f"{self.name} has not started")
        return self._client

    @property
    def anon(self) -> httpx.Client:
        """An HTTP client on :attr:`base_url` without credentials."""
        if self._anon is None:
            raise RuntimeError(f"{self.name} has not started")
        return self._anon

    def client_with(self, api_key: str) -> httpx.Client:
        """An HTTP client that sends ``api_key`` (closed with the process)."""
        client = httpx.Client(
            base_url=self.base_url,
            headers={ADMIN_KEY_HEADER: api_key},
            timeout=10.0,
            verify=self.tls if self.tls is not None else True,
        )
        self._clients.append(client)
        return client

    def stderr_tail(self, size: int = 4000) -> str:
        """The end of the current run's stderr."""
        try:
            return self.stderr_path.read_text(errors="replace")[-size:]
        except FileNotFoundError:
            return ""

    # -- internals -------------------------------------------------------------------------------

    def _known_admin_key(self) -> str | None:
        given = self.env.get("COUPON_ADMIN_API_KEY")
        if given:
            return given
        path = self.data_dir / "admin.key"
        return path.read_text().strip() if path.exists() else None

    def _reset_clients(self) -> None:
        for client in self._clients:
            client.close()
        self._clients.clear()
        self._anon = httpx.Client(
            base_url=self.base_url,
            timeout=10.0,
            verify=self.tls if self.tls is not None else True,
        )
        self._clients.append(self._anon)
        self._client = self.client_with(self._admin_key) if self._admin_key else None

    def _require_proc(self) -> subprocess.Popen[bytes]:
        if self._proc is None:
            raise RuntimeError(f"{self.name} has not started")
        return self._proc

    def _failure(self, what: str) -> str:
        stdout = ""
        if self.stdout_path.exists():
            stdout = self.stdout_path.read_text(errors="replace")[-2000:]
        code = self._proc.poll() if self._proc is not None else None
        return (
            f"Authority {self.name!r} {what} (exit status {code}).\n"
            f"--- stdout ({self.stdout_path}) ---\n{stdout}\n"
            f"--- stderr ({self.stderr_path}) ---\n{self.stderr_tail()}"
        )


class _Databases(Protocol):
    def create_database(self) -> str: ...


class _Prefixes(Protocol):
    url: str

    def new_prefix(self) -> str: ...


class Launcher:
    """Starts Authority processes for one fixture scope and stops them all at its end."""

    def __init__(self, request: pytest.FixtureRequest, root: Path) -> None:
        self._request = request
        self._root = root
        self._procs: list[AuthorityProcess] = []

    def production_env(self, *, database_url: str | None = None) -> ProductionEnv:
        """Fresh engines for one deployment: a new database (or ``database_url``), a new
        Redis prefix, a new master key and a new admin key."""
        postgres: _Databases = self._request.getfixturevalue("postgres")
        redis_srv: _Prefixes = self._request.getfixturevalue("redis_server")
        return ProductionEnv(
            database_url=database_url or postgres.create_database(),
            redis_url=redis_srv.url,
            redis_prefix=redis_srv.new_prefix(),
        )

    def env_for(self, engine: str) -> dict[str, str]:
        """The settings of a new deployment on ``engine``."""
        if engine == "embedded":
            return {}
        if engine == "production":
            return self.production_env().env()
        raise ValueError(f"unknown engine {engine!r}")

    def process(
        self,
        engine: str,
        *,
        name: str | None = None,
        env: Mapping[str, str] | None = None,
        extra: Mapping[str, str] | None = None,
        data_dir: Path | None = None,
        tls: ssl.SSLContext | None = None,
    ) -> AuthorityProcess:
        """A not yet started process for ``engine``: its own deployment unless ``env`` names
        one, with the settings in ``extra`` added (``tls``: see :class:`AuthorityProcess`)."""
        label = name or f"{engine}-{len(self._procs)}"
        settings = self.env_for(engine) if env is None else dict(env)
        settings.update(extra or {})
        proc = AuthorityProcess(
            data_dir=data_dir or self._root / label,
            env=settings,
            log_dir=self._root / "logs",
            name=label,
            tls=tls,
        )
        self._procs.append(proc)
        return proc

    def start(
        self,
        engine: str,
        *,
        name: str | None = None,
        env: Mapping[str, str] | None = None,
        extra: Mapping[str, str] | None = None,
        data_dir: Path | None = None,
        tls: ssl.SSLContext | None = None,
    ) -> AuthorityProcess:
        """Start a ready process for ``engine`` (arguments as for :meth:`process`)."""
        return self.process(
            engine, name=name, env=env, extra=extra, data_dir=data_dir, tls=tls
        ).start()

    def close(self) -> None:
        """Stop every process started here."""
        for proc in reversed(self._procs):
            proc.close()
        self._procs.clear()
