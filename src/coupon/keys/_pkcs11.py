"""One logged-in PKCS#11 session, shared by every signer of the process, that fails closed.

:class:`Pkcs11Token` opens the module (``COUPON_PKCS11_MODULE``), finds the token by its
label, logs in with the user PIN and keeps one read-write session. Every call into the module
goes through :meth:`Pkcs11Token.call`, under one lock per module:

- python-pkcs11 initialises modules with ``C_Initialize(NULL)``, which tells the module the
  application will not call it from several threads at once (SoftHSM2 then turns its own
  locking off). The lock makes that true; it also makes one session enough.
- A call that fails marks the token *down*: later calls fail at once with ``CPN-DEP-004``
  (``DependencyUnavailable``) without touching the device, and a watcher thread reconnects
  with capped, jittered backoff (finalising and re-initialising the module: a token that was
  removed and put back is only seen again after ``C_Initialize``). While the token is up the
  watcher probes it (``C_GetTokenInfo``) every ``probe_interval`` seconds, so an outage is
  noticed while nobody signs.
- A refused PIN is never retried: retrying a wrong PIN would lock the token's user PIN. The
  token stays down until the operator fixes the PIN and restarts the process.

What happens is reported as frozen-dataclass events to hooks (``coupon.observability``
turns them into metrics and log lines), like the resilience pipelines do.
"""

from __future__ import annotations

import contextlib
import random
import threading
import time
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any, Final, Literal, TypeVar

from coupon import codes
from coupon.errors import DependencyUnavailable

from ._events import (
    Reason,
    SignerDown,
    SignerEvent,
    SignerFailed,
    SignerHook,
    SignerUp,
    SignerUsed,
    classify,
)

if TYPE_CHECKING:
    from opentelemetry.trace import Tracer
    from pkcs11 import Session
    from pkcs11._pkcs11 import lib

__all__ = ["Pkcs11Token"]

T = TypeVar("T")

_MIN_BACKOFF: Final = 0.25


def _describe(exc: BaseException) -> str:
    text = str(exc).strip()
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


class _Module:
    """One PKCS#11 module (shared object) in this process: its lock and initialisation count."""

    def __init__(self, path: str) -> None:
        self.path = path
        self.lock = threading.Lock()
        self.generation = 0  # bumped by every re-initialisation: older sessions are gone
        self._lib: lib | None = None

    def load(self) -> lib:
        if self._lib is None:
            import pkcs11

            self._lib = pkcs11.lib(self.path)
        return self._lib

    def reinitialize(self) -> None:
        lib = self.load()
        with contextlib.suppress(Exception):  # already finalised, or the device is gone
            lib.finalize()
        self.generation += 1
        lib.initialize()


_MODULES: dict[str, _Module] = {}
_MODULES_LOCK: Final = threading.Lock()


def _module(path: str) -> _Module:
    with _MODULES_LOCK:
        if path not in _MODULES:
            _MODULES[path] = _Module(path)
        return _MODULES[path]


class Pkcs11Token:
    """A PKCS#11 token with one logged-in session that reconnects by itself.

    Build it with :meth:`open`; it never raises for an unavailable device: it starts down and
    says why (:attr:`problem`).

    Args:
        module: the path of the PKCS#11 module (e.g. ``/usr/lib/softhsm/libsofthsm2.so``).
        label: the token label (``CKA_LABEL`` of the token, not of a key).
        pin: the user PIN.
        probe_interval: seconds between health probes while up; the reconnect backoff
            doubles from 0.25 s up to this.
        timeout: seconds a call waits for the module lock before it fails (``busy``).
        hooks: called with every :data:`SignerEvent`, on the calling or the watcher thread.
        tracer: OpenTelemetry tracer for a span per device operation (none when None).
    """

    backend: Final = "pkcs11"

    def __init__(
        self,
        module: str,
        label: str,
        pin: str,
        *,
        probe_interval: float = 5.0,
        timeout: float = 5.0,
        hooks: Sequence[SignerHook] = (),
        tracer: Tracer | None = None,
    ) -> None:
        if probe_interval <= 0 or timeout <= 0:
            raise ValueError("probe_interval and timeout must be positive")
        self.module = module
        self.label = label
        self._pin = pin
        self._probe_interval = probe_interval
        self._timeout = timeout
        self.hooks: list[SignerHook] = list(hooks)
        self._tracer = tracer
        self._module = _module(module)
        self._session: Session | None = None
        self._generation = -1
        self._problem: str | None = "not connected yet"
        self._announced: Literal["up", "down"] | None = None  # the last SignerUp/SignerDown
        self._last_failure: tuple[Reason, str] = ("other", "not connected yet")
        self._permanent = False
        self._closed = threading.Event()
        self._wake = threading.Event()
        self._watcher: threading.Thread | None = None
        #: Objects found by a key id, valid for one module generation.
        self.cache: dict[bytes, tuple[int, Any]] = {}

    @classmethod
    def open(
        cls,
        module: str,
        label: str,
        pin: str,
        *,
        probe_interval: float = 5.0,
        timeout: float = 5.0,
        hooks: Sequence[SignerHook] = (),
        tracer: Tracer | None = None,
    ) -> Pkcs11Token:
        """Connect (or start down, saying why) and start the watcher thread."""
        token = cls(
            module,
            label,
            pin,
            probe_interval=probe_interval,
            timeout=timeout,
            hooks=hooks,
            tracer=tracer,
        )
        token._connect(reinitialize=False)
        token._watcher = threading.Thread(
            target=token._watch, name=f"coupon-pkcs11-{label}", daemon=True
        )
        token._watcher.start()
        return token

    # -- state -----------------------------------------------------------------------------------

    @property
    def problem(self) -> str | None:
        """Why the token cannot sign now, or None when it is up. No device round trip."""
        return self._problem

    @property
    def up(self) -> bool:
        """Whether the token is connected and logged in."""
        return self._problem is None

    @property
    def generation(self) -> int:
        """The module generation of the current session (handles from others are stale)."""
        return self._generation

    def add_hook(self, hook: SignerHook) -> None:
        """Add a hook and tell it the current state (a :class:`SignerUp` or :class:`SignerDown`)."""
        self.hooks.append(hook)
        if self._problem is None:
            hook(SignerUp(self.backend, self.label))
        else:
            reason, detail = self._last_failure
            hook(SignerDown(self.backend, self.label, reason, detail, not self._permanent))

    def _emit(self, event: SignerEvent) -> None:
        for hook in self.hooks:
            with contextlib.suppress(Exception):  # a broken hook must not break signing
                hook(event)

    def _unavailable(self, problem: str) -> DependencyUnavailable:
        return DependencyUnavailable(
            codes.UNAVAILABLE_SIGNER, f"HSM token {self.label!r} is unavailable: {problem}"
        )

    # -- calls -----------------------------------------------------------------------------------

    def call(self, operation: str, fn: Callable[[Session], T]) -> T:
        """Run ``fn`` with the session, under the module lock; fail closed.

        Raises:
            DependencyUnavailable: ``CPN-DEP-004``: the token is down, stayed busy for
                ``timeout`` seconds, or the call failed (the token is then marked down).
        """
        if self._problem is not None:
            raise self._unavailable(self._problem)
        if not self._module.lock.acquire(timeout=self._timeout):
            # Another call has held the device this long: it hangs. Fail fast from now on
            # (the session is in use: only the state changes); the watcher reconnects once
            # the lock is free again.
            detail = f"the module stayed busy for {self._timeout:g}s"
            self._emit(SignerFailed(self.backend, self.label, operation, "busy", detail))
            self._mark_down("busy", detail)
            raise self._unavailable(detail)
        span = (
            self._tracer.start_as_current_span(f"coupon.hsm.{operation}")
            if self._tracer is not None
            else contextlib.nullcontext()
        )
        try:
            with span:
                if self._problem is not None:
                    raise self._unavailable(self._problem)
                started = time.perf_counter()
                try:
                    session = self._current_session()
                    result = fn(session)
                except DependencyUnavailable:
                    raise
                except Exception as exc:
                    import pkcs11

                    if not isinstance(exc, pkcs11.PKCS11Error):
                        raise
                    self._down(operation, classify(exc), _describe(exc))
                    raise self._unavailable(_describe(exc)) from None
                seconds = time.perf_counter() - started
        finally:
            self._module.lock.release()
        self._emit(SignerUsed(self.backend, self.label, operation, seconds))
        return result

    def _current_session(self) -> Session:
        # Called under the module lock. Another token on this module may have re-initialised
        # it: our session is then gone, and we open a new one (not a failure).
        if self._session is None or self._generation != self._module.generation:
            self._open_session()
        assert self._session is not None
        return self._session

    def _open_session(self) -> None:
        from pkcs11.exceptions import UserAlreadyLoggedIn

        lib = self._module.load()
        token = lib.get_token(token_label=self.label)
        try:
            session = token.open(rw=True, user_pin=self._pin)
        except UserAlreadyLoggedIn:  # logged in by another session of this process
            session = token.open(rw=True)
        self._session, self._generation = session, self._module.generation
        self.cache.clear()

    def _down(self, operation: str, reason: Reason, detail: str) -> None:
        # Called under the module lock.
        self._emit(SignerFailed(self.backend, self.label, operation, reason, detail))
        self._close_session()
        self._mark_down(reason, detail)

    def _mark_down(self, reason: Reason, detail: str) -> None:
        if reason == "pin":
            self._permanent = True
            detail += (
                " (not retried: retrying a refused PIN can lock the token; "
                "fix COUPON_PKCS11_PIN and restart)"
            )
        self._problem = f"{reason}: {detail}"
        self._last_failure = (reason, detail)
        if self._announced != "down" or self._permanent:
            self._announced = "down"
            self._emit(
                SignerDown(self.backend, self.label, reason, detail, retrying=not self._permanent)
            )
        self._wake.set()

    def _close_session(self) -> None:
        session, self._session = self._session, None
        self.cache.clear()
        if session is not None and self._generation == self._module.generation:
            with contextlib.suppress(Exception):
                session.close()

    # -- connecting and watching -----------------------------------------------------------------

    def _connect(self, *, reinitialize: bool) -> bool:
        if not self._module.lock.acquire(timeout=self._timeout):
            return False
        try:
            self._close_session()
            if reinitialize:
                self._module.reinitialize()
            self._open_session()
        except Exception as exc:
            self._down("connect", classify(exc), _describe(exc))
            return False
        finally:
            self._module.lock.release()
        self._problem = None
        self._announced = "up"
        self._emit(SignerUp(self.backend, self.label))
        return True

    def _probe(self) -> None:
        def token_info(session: Session) -> None:
            session.token.slot.get_token()  # C_GetTokenInfo: fails once the token is gone

        with contextlib.suppress(DependencyUnavailable):
            self.call("probe", token_info)

    def _watch(self) -> None:
        delay = _MIN_BACKOFF
        while not self._closed.is_set():
            if self._problem is None:
                delay = _MIN_BACKOFF
                self._wake.wait(self._probe_interval)
                self._wake.clear()
                if self._problem is None and not self._closed.is_set():
                    self._probe()
            elif self._permanent:
                self._closed.wait()
            else:
                self._closed.wait(delay * (0.8 + 0.4 * random.random()))  # noqa: S311 (jitter)
                if self._closed.is_set() or self._connect(reinitialize=True):
                    continue
                delay = min(delay * 2, self._probe_interval)

    def close(self) -> None:
        """Stop the watcher and close the session (logging out)."""
        self._closed.set()
        self._wake.set()
        if self._watcher is not None:
            self._watcher.join(timeout=self._timeout + 1)
        if self._module.lock.acquire(timeout=self._timeout):
            try:
                self._close_session()
            finally:
                self._module.lock.release()
        self._problem = "closed"

    def __repr__(self) -> str:
        state = "up" if self._problem is None else f"down ({self._problem})"
        return f"Pkcs11Token(label={self.label!r}, {state})"
