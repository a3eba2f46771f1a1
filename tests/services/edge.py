"""Run the edge as real processes: the example orders service, ``coupon gateway`` and nginx.

:func:`start_edge` starts the three in front of a running Authority: the service of
``examples/orders/service.py`` (trusting the edge), the gateway on a routes file made from
``examples/orders/gateway.toml`` (Authority and upstream URLs filled in), and nginx on
``deploy/nginx/coupon-edge.conf`` rendered with the ports chosen here (:func:`render_edge_conf`;
the tests never carry a second copy of it). Each process is waited for until it answers, its
output goes to files under the stack's directory, and a failure to start raises
:class:`EdgeStartupError` with the tails of every log. :meth:`EdgeStack.close` stops them all.

nginx runs unprivileged-style from a prefix directory: ``nginx -p <dir> -e <dir>/error.log
-c <dir>/nginx.conf -g 'daemon off;'`` with its pid, logs and temp paths inside ``<dir>``.
"""

from __future__ import annotations

import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Final, Self

import httpx

from coupon.gateway import load_config

__all__ = [
    "EDGE_CONF",
    "ROUTES_EXAMPLE",
    "EdgeStack",
    "EdgeStartupError",
    "Proc",
    "find_nginx",
    "free_port",
    "render_edge_conf",
    "routes_for",
    "start_edge",
    "start_gateway",
    "start_nginx",
    "start_service",
]

ROOT: Final = Path(__file__).resolve().parents[2]
EDGE_CONF: Final = ROOT / "deploy" / "nginx" / "coupon-edge.conf"
ROUTES_EXAMPLE: Final = ROOT / "examples" / "orders" / "gateway.toml"
SERVICE: Final = ROOT / "examples" / "orders" / "service.py"

_PLACEHOLDER: Final = re.compile(r"@[A-Z_]+@")
_GATEWAY_UP: Final = re.compile(r"Coupon gateway is up on (http://\S+)")
_IN_USE: Final = "address already in use"  # nginx and uvicorn, compared in lower case


class EdgeStartupError(RuntimeError):
    """A process of the edge did not become ready; the message carries its output."""


def find_nginx() -> str | None:
    """The nginx binary (``PATH``, then Debian's ``/usr/sbin/nginx``), or ``None``."""
    found = shutil.which("nginx")
    if found is not None:
        return found
    debian = Path("/usr/sbin/nginx")
    return str(debian) if os.access(debian, os.X_OK) else None


def free_port() -> int:
    """A TCP port on 127.0.0.1 that was free a moment ago (callers retry if it is taken)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def render_edge_conf(
    *, listen: str, gateway: str, upstream: str, template: Path = EDGE_CONF
) -> str:
    """The shipped nginx configuration with its placeholders filled in.

    Raises:
        ValueError: a placeholder is left over (the template gained one this does not know).
    """
    text = template.read_text(encoding="utf-8")
    for name, value in (("@LISTEN@", listen), ("@GATEWAY@", gateway), ("@UPSTREAM@", upstream)):
        text = text.replace(name, value)
    # Comments may mention the placeholders; directives must not keep one.
    code = "\n".join(line.split("#", 1)[0] for line in text.splitlines())
    left = sorted(set(_PLACEHOLDER.findall(code)))
    if left:
        raise ValueError(f"{template}: placeholders not filled in: {', '.join(left)}")
    return text


def routes_for(authority: str, upstream: str, *, max_staleness: float) -> str:
    """``examples/orders/gateway.toml`` pointed at ``authority`` and ``upstream``.

    Raises:
        ValueError: the example no longer has the lines this replaces.
    """
    text = ROUTES_EXAMPLE.read_text(encoding="utf-8")
    swaps = (
        ('authority = "http://127.0.0.1:8700"', f'authority = "{authority}"'),
        ('url = "http://127.0.0.1:9000"', f'url = "{upstream}"'),
        ("[gateway]\n", f"[gateway]\nmax_staleness = {max_staleness!r}\n"),
    )
    for old, new in swaps:
        if text.count(old) != 1:
            raise ValueError(f"{ROUTES_EXAMPLE}: expected one {old!r}")
        text = text.replace(old, new)
    return text


def _child_env(extra: Mapping[str, str]) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("COUPON_")}
    env.update(extra)
    env["PYTHONUNBUFFERED"] = "1"
    return env


class Proc:
    """One subprocess of the edge, its stdout and stderr in files under ``log_dir``.

    Args:
        name: used in file names and messages.
        argv: the command.
        log_dir: where ``<name>.stdout.log`` and ``<name>.stderr.log`` go.
        env: added to the caller's environment (whose ``COUPON_*`` variables are dropped).
        extra_logs: more files worth showing when something fails (nginx's error log).
    """

    def __init__(
        self,
        name: str,
        argv: Sequence[str],
        *,
        log_dir: Path,
        env: Mapping[str, str] | None = None,
        extra_logs: Sequence[Path] = (),
    ) -> None:
        self.name = name
        self.argv = list(argv)
        self.env = _child_env(env or {})
        self.stdout_path = log_dir / f"{name}.stdout.log"
        self.stderr_path = log_dir / f"{name}.stderr.log"
        self.extra_logs = list(extra_logs)
        self._proc: subprocess.Popen[bytes] | None = None

    def launch(self) -> Self:
        """Spawn the process without waiting for it."""
        self.stdout_path.parent.mkdir(parents=True, exist_ok=True)
        with self.stdout_path.open("wb") as out, self.stderr_path.open("wb") as err:
            self._proc = subprocess.Popen(
                self.argv, stdin=subprocess.DEVNULL, stdout=out, stderr=err, env=self.env, cwd=ROOT
            )
        return self

    @property
    def running(self) -> bool:
        """Whether the process is alive."""
        return self._proc is not None and self._proc.poll() is None

    def output(self) -> str:
        """Everything the process has printed so far (stdout, then stderr)."""
        return "".join(_read(p) for p in (self.stdout_path, self.stderr_path))

    def wait_for(self, what: str, ready: Callable[[], bool], *, timeout: float) -> None:
        """Poll ``ready`` until it is true.

        Raises:
            EdgeStartupError: the process exited or ``timeout`` passed (it is stopped first).
        """
        deadline = time.monotonic() + timeout
        try:
            while not ready():
                if not self.running:
                    raise EdgeStartupError(self.failure(f"exited before it could {what}"))
                if time.monotonic() > deadline:
                    raise EdgeStartupError(self.failure(f"did not {what} within {timeout:g}s"))
                time.sleep(0.05)
        except BaseException:
            self.terminate()
            raise

    def terminate(self, *, timeout: float = 10.0, sig: int = signal.SIGTERM) -> int:
        """Stop with ``sig`` and wait; SIGKILL after ``timeout``. Returns the exit status."""
        proc = self._proc
        if proc is None:
            return 0
        if proc.poll() is None:
            proc.send_signal(sig)
            try:
                proc.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        return proc.returncode

    def tails(self, size: int = 3000) -> str:
        """The ends of the process's logs, for a failure message."""
        parts = [f"--- {self.name}: {' '.join(self.argv[:6])} ...  (exit {self._exit()}) ---"]
        for path in (self.stdout_path, self.stderr_path, *self.extra_logs):
            text = _read(path)
            if text:
                parts.append(f"[{path.name}]\n{text[-size:]}")
        return "\n".join(parts)

    def failure(self, what: str) -> str:
        """A message: ``what`` happened, and the logs."""
        return f"{self.name} {what}\n{self.tails()}"

    def _exit(self) -> int | None:
        return None if self._proc is None else self._proc.poll()


def _read(path: Path) -> str:
    try:
        return path.read_text(errors="replace")
    except FileNotFoundError:
        return ""


def _answers(url: str, *, ok: Callable[[int], bool]) -> Callable[[], bool]:
    def ready() -> bool:
        try:
            return ok(httpx.get(url, timeout=2.0).status_code)
        except httpx.TransportError:
            return False

    return ready


def _start_on_free_port(
    start: Callable[[int], tuple[Proc, str]], attempts: int = 3
) -> tuple[Proc, str]:
    """``start(port)`` on a free port, again on another if the port was taken meanwhile."""
    for attempt in range(attempts):
        try:
            return start(free_port())
        except EdgeStartupError as exc:
            if _IN_USE not in str(exc).lower() or attempt == attempts - 1:
                raise
    raise AssertionError("unreachable")  # pragma: no cover


def start_service(
    log_dir: Path,
    *,
    authority: str | None = None,
    api_key: str = "",
    name: str = "service",
    timeout: float = 30.0,
) -> tuple[Proc, str]:
    """The example orders service; returns its URL.

    Without ``authority`` it trusts the edge; with it, it checks coupons itself with the
    middleware (``api_key`` reads the revocation feed).
    """

    def start(port: int) -> tuple[Proc, str]:
        argv = [sys.executable, str(SERVICE), "--host", "127.0.0.1", "--port", str(port)]
        if authority is not None:
            argv += ["--authority", authority]
        proc = Proc(name, argv, log_dir=log_dir, env={"COUPON_SERVICE_API_KEY": api_key}).launch()
        url = f"http://127.0.0.1:{port}"
        health = _answers(f"{url}/health", ok=lambda status: status == 200)
        proc.wait_for("answer /health with 200", health, timeout=timeout)
        return proc, url

    return _start_on_free_port(start)


def start_gateway(
    log_dir: Path, *, routes: str, api_key: str, timeout: float = 30.0
) -> tuple[Proc, str]:
    """``coupon gateway`` on a free port with the routes file text ``routes``; returns its URL.

    Ready once it has announced its URL and ``/_coupon/readyz`` answers 200 (the Authority's
    keys fetched).
    """
    routes_path = log_dir / "routes.toml"
    routes_path.parent.mkdir(parents=True, exist_ok=True)
    routes_path.write_text(routes, encoding="utf-8")
    load_config(routes_path)  # a bad routes file fails here, with the setting named
    argv = [sys.executable, "-m", "coupon.cli", "gateway", "--config", str(routes_path)]
    argv += ["--host", "127.0.0.1", "--port", "0", "--log-level", "info"]
    proc = Proc("gateway", argv, log_dir=log_dir, env={"COUPON_GATEWAY_API_KEY": api_key})
    proc.launch()
    found: list[str] = []

    def announced() -> bool:
        match = _GATEWAY_UP.search(_read(proc.stderr_path))
        if match is not None:
            found.append(match.group(1).rstrip("/"))
        return match is not None

    proc.wait_for("announce its URL", announced, timeout=timeout)
    url = found[-1]
    proc.wait_for(
        "answer /_coupon/readyz with 200",
        _answers(f"{url}/_coupon/readyz", ok=lambda status: status == 200),
        timeout=timeout,
    )
    return proc, url


_NGINX_MAIN: Final = """\
# Written by tests/services/edge.py: a main file around the shipped coupon-edge.conf.
{user}worker_processes 1;
pid {dir}/nginx.pid;
error_log {dir}/error.log info;
events {{ worker_connections 256; }}
http {{
    client_body_temp_path {dir}/tmp/body;
    proxy_temp_path {dir}/tmp/proxy;
    fastcgi_temp_path {dir}/tmp/fastcgi;
    uwsgi_temp_path {dir}/tmp/uwsgi;
    scgi_temp_path {dir}/tmp/scgi;
    include {dir}/coupon-edge.conf;
    access_log {dir}/access.log coupon_edge;
}}
"""


def start_nginx(
    log_dir: Path, *, gateway: str, upstream: str, nginx: str, timeout: float = 15.0
) -> tuple[Proc, str]:
    """nginx in front of ``upstream`` (host:port), asking ``gateway`` (host:port).

    Ready once ``/health`` answers 200 through it, which takes the check and the service.
    """
    prefix = log_dir / "nginx"
    (prefix / "tmp").mkdir(parents=True, exist_ok=True)
    # As root the workers would switch to "nobody", who may not enter pytest's 0700 temp
    # directories; a test's nginx keeps the user that started it.
    user = "user root;\n" if os.geteuid() == 0 else ""
    main = prefix / "nginx.conf"
    main.write_text(_NGINX_MAIN.format(dir=prefix, user=user), encoding="utf-8")

    def start(port: int) -> tuple[Proc, str]:
        conf = render_edge_conf(listen=f"127.0.0.1:{port}", gateway=gateway, upstream=upstream)
        (prefix / "coupon-edge.conf").write_text(conf, encoding="utf-8")
        error_log = prefix / "error.log"
        error_log.write_bytes(b"")
        argv = [nginx, "-p", str(prefix), "-e", str(error_log), "-c", str(main)]
        proc = Proc(
            "nginx", [*argv, "-g", "daemon off;"], log_dir=log_dir, extra_logs=[error_log]
        ).launch()
        url = f"http://127.0.0.1:{port}"

        def ready() -> bool:
            if _IN_USE in _read(error_log).lower():  # fail now, not after nginx's retries
                raise EdgeStartupError(proc.failure(f"found port {port} taken"))
            return _answers(f"{url}/health", ok=lambda status: status == 200)()

        proc.wait_for("answer /health with 200", ready, timeout=timeout)
        return proc, url

    return _start_on_free_port(start)


def _host_port(url: str) -> str:
    return url.split("://", 1)[1]


@dataclass
class EdgeStack:
    """The running edge: nginx → (check: gateway) → service, and the gateway as a front."""

    root: Path
    service_url: str
    gateway_url: str
    nginx_url: str
    procs: list[Proc] = field(default_factory=list)

    def proc(self, name: str) -> Proc:
        """The process called ``name`` (``service``, ``gateway`` or ``nginx``)."""
        for proc in self.procs:
            if proc.name == name:
                return proc
        raise KeyError(name)

    def logs(self) -> str:
        """The tails of every process's logs, for assertion messages."""
        return "\n".join(proc.tails() for proc in self.procs)

    def close(self) -> None:
        """Stop nginx, the gateway, then the service (SIGTERM, SIGKILL after 10 s)."""
        for proc in reversed(self.procs):
            proc.terminate()

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def start_edge(
    root: Path,
    *,
    authority: str,
    api_key: str,
    nginx: str,
    max_staleness: float = 10.0,
    service_url: str | None = None,
) -> EdgeStack:
    """Start the service (unless ``service_url`` names a running one), the gateway and nginx.

    Args:
        root: the stack's directory (logs, routes file, nginx prefix).
        authority: the Authority's base URL.
        api_key: the gateway's Authority API key (role verifier).
        nginx: the nginx binary.
        max_staleness: the gateway's ``max_staleness`` (seconds).
        service_url: a service already running, shared by several stacks.

    Raises:
        EdgeStartupError: a process did not become ready (everything started is stopped).
    """
    stack = EdgeStack(root, service_url or "", "", "")
    try:
        if service_url is None:
            service, stack.service_url = start_service(root)
            stack.procs.append(service)
        routes = routes_for(authority, stack.service_url, max_staleness=max_staleness)
        gateway, stack.gateway_url = start_gateway(root, routes=routes, api_key=api_key)
        stack.procs.append(gateway)
        front, stack.nginx_url = start_nginx(
            root,
            gateway=_host_port(stack.gateway_url),
            upstream=_host_port(stack.service_url),
            nginx=nginx,
        )
        stack.procs.append(front)
    except BaseException as exc:
        logs = stack.logs()
        stack.close()
        if isinstance(exc, EdgeStartupError):
            raise EdgeStartupError(f"{exc}\n{logs}") from None
        raise
    return stack
