"""Everything one Authority process runs on, built from :class:`Settings`.

Embedded default: SQLite under ``data_dir``, in-process revocation bus, replay store and
storm guard. Production: the same code with PostgreSQL (``COUPON_DATABASE_URL``) and Redis
(``COUPON_REDIS_URL``), so several processes behave as one.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import time
from pathlib import Path
from typing import Any

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey
from cryptography.hazmat.primitives.serialization import Encoding, NoEncryption, PrivateFormat

from coupon import codes
from coupon.errors import Conflict, CouponError, DependencyUnavailable
from coupon.keys import Keyring, MasterKey, Pkcs11Token
from coupon.observability import AuthorityMetrics, SignerMetrics, get_logger, tracer_provider
from coupon.policy import (
    BUILTIN_VERSION,
    Envelope,
    PolicyDecision,
    PolicyEngine,
    PolicyInput,
    key_id,
    trusted_keys_from_settings,
    verify_envelope,
)
from coupon.settings import Settings
from coupon.storage.sql import KEY_BOOTSTRAP_LOCK, SqlStore
from coupon.token import KeySet, Request, Verified, Verifier, parse_chain

from ._audit import AuditSigner, StoreAuditSink
from ._auth import ApiKeyAuthenticator, Authenticator, api_key_record, new_api_key
from ._bus import InProcessBus, RedisBus, RevocationBus
from ._mtls import mtls_authenticators
from ._nonce import NonceService
from ._oidc import OidcAuthenticator
from ._replay import AsyncReplayStore, MemoryAsyncReplayStore, RedisReplayStore, redis_client
from ._revocation import RevocationView
from ._signing_backend import open_key_backend, signer_problem
from ._storm import MemoryStormGuard, RedisStormGuard, StormGuard
from ._sync import RevocationSync, Revoker

__all__ = ["ADMIN_KEY_FILE", "POLICY_KEY_FILE", "Runtime"]

ADMIN_KEY_FILE = "admin.key"
POLICY_KEY_FILE = "policy-signing.key"
_log = get_logger("coupon.authority")
_TRACER = tracer_provider().get_tracer("coupon.authority")
_STOP_TIMEOUT = 3.0


def _write_secret(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as handle:
        handle.write(text + "\n")
        handle.flush()
        os.fsync(handle.fileno())
    os.replace(tmp, path)


def _local_policy_key(data_dir: Path) -> Ed25519PrivateKey:
    """The embedded default's own bundle-signing key (created on first start, mode 0600)."""
    path = data_dir / POLICY_KEY_FILE
    if path.exists():
        return Ed25519PrivateKey.from_private_bytes(bytes.fromhex(path.read_text().strip()))
    key = Ed25519PrivateKey.generate()
    raw = key.private_bytes(Encoding.Raw, PrivateFormat.Raw, NoEncryption())
    _write_secret(path, raw.hex())
    return key


class Runtime:
    """The long-lived parts of one Authority process and their background tasks.

    Build it with :meth:`start`; the constructor only assembles parts that already exist.
    """

    def __init__(
        self,
        settings: Settings,
        *,
        store: SqlStore,
        keyring: Keyring,
        engine: PolicyEngine,
        trusted_policy_keys: dict[str, Ed25519PublicKey],
        local_policy_key: Ed25519PrivateKey | None,
        audit_signer: AuditSigner,
        nonces: NonceService,
        redis: Any,
        bus: RevocationBus,
        replay: AsyncReplayStore,
        storm: StormGuard,
        view: RevocationView,
        sync: RevocationSync,
        closers: list[Any],
    ) -> None:
        self.settings = settings
        self.store = store
        self.keyring = keyring
        self.engine = engine
        self.trusted_policy_keys = trusted_policy_keys
        self.local_policy_key = local_policy_key
        self.audit_signer = audit_signer
        self.audit_sink = StoreAuditSink(store, audit_signer)
        self.nonces = nonces
        self.redis = redis
        self.bus = bus
        self.replay = replay
        self.storm = storm
        self.view = view
        self.sync = sync
        self.revoker = Revoker(store, view, bus)
        self.authenticators: list[Authenticator] = [ApiKeyAuthenticator(store)]
        self.metrics = AuthorityMetrics()
        self.signer_metrics = SignerMetrics(self.metrics.registry)
        #: The PKCS#11 token holding the signing keys (``COUPON_KEY_BACKEND=pkcs11``), or None.
        self.hsm: Pkcs11Token | None = None
        self.max_token = 8192
        self.policy_version = BUILTIN_VERSION
        self.admin_credential: str | None = None
        self._closers = closers
        #: The master key (set by :meth:`start`); the Ledger seals its keys with it too.
        self.master: MasterKey | None = None
        #: Set when the process begins to shut down: long-lived streams end on it.
        self.closing = asyncio.Event()
        self._reload_lock = asyncio.Lock()
        self._last_key_reload = 0.0
        self._tasks: list[asyncio.Task[None]] = []
        self._verifier: Verifier | None = None
        self._verifier_keys: KeySet | None = None

    # -- start and stop --------------------------------------------------------------------------

    @classmethod
    async def start(cls, settings: Settings) -> Runtime:
        """Connect, migrate, load keys, policy and revocations, start background tasks."""
        s = settings
        closers: list[Any] = []
        store = await SqlStore.connect(s.sqlalchemy_url)
        closers.append(store.close)
        await store.migrate()
        master = MasterKey.load_or_create(s)
        keys, hsm = open_key_backend(s, master)
        if hsm is not None:
            closers.append(hsm.close)
        # Replicas starting together on an empty database would each create first keys and
        # publish different JWKS until their next reload: the first one in creates them.
        async with store.exclusive(KEY_BOOTSTRAP_LOCK):
            keyring = await Keyring.open(
                store,
                keys,
                alg=s.key_algorithm,
                max_ttl=s.max_ttl,
                leeway=s.leeway,
                grace=int(s.key_reload_interval) + 1,
            )
        engine = PolicyEngine.builtin()
        closers.append(engine.close)
        trusted = trusted_keys_from_settings(s.policy_trusted_keys)
        local_policy_key = None
        if not s.database_url:
            local_policy_key = _local_policy_key(s.data_dir)
            trusted[key_id(local_policy_key.public_key())] = local_policy_key.public_key()
        redis: Any = None
        bus: RevocationBus
        replay: AsyncReplayStore
        storm: StormGuard = MemoryStormGuard(
            per_coupon=s.replay_limit_per_coupon, per_subject=s.replay_limit_per_subject
        )
        if s.redis_url:
            redis = redis_client(s.redis_url)
            closers.append(redis.aclose)
            prefix = s.redis_prefix
            bus = RedisBus(s.redis_url, f"{prefix}revocations", client_name="coupon-authority")
            replay = RedisReplayStore(redis, prefix=f"{prefix}dpop:")
            if s.storm_guard_shared:
                storm = RedisStormGuard(
                    redis,
                    per_coupon=s.replay_limit_per_coupon,
                    per_subject=s.replay_limit_per_subject,
                    prefix=f"{prefix}storm:",
                )
        else:
            bus = InProcessBus()
            replay = MemoryAsyncReplayStore()
        closers.append(bus.close)
        view = RevocationView(max_staleness=s.revocation_max_staleness)
        sync = RevocationSync(view, store, bus, poll_interval=s.revocation_poll_interval)
        rt = cls(
            s,
            store=store,
            keyring=keyring,
            engine=engine,
            trusted_policy_keys=trusted,
            local_policy_key=local_policy_key,
            audit_signer=AuditSigner.from_seed(master.derive("coupon/audit-signing/v1")),
            nonces=NonceService(
                master.derive("coupon/dpop-nonce/v1"), lifetime=s.dpop_nonce_lifetime
            ),
            redis=redis,
            bus=bus,
            replay=replay,
            storm=storm,
            view=view,
            sync=sync,
            closers=closers,
        )
        rt.master = master
        rt.hsm = hsm
        if hsm is not None:
            hsm.add_hook(rt.signer_metrics)
        await rt.reload_policy()
        sync.start()
        try:
            await sync.ready(timeout=10)
        except TimeoutError:
            _log.warning("revocation_sync_not_ready", error=sync.last_error)
        await rt._bootstrap_admin()
        rt._tasks.append(asyncio.create_task(rt._maintenance(), name="coupon-maintenance"))
        if s.oidc_provider_list:  # OpenID Connect callers (docs/oidc.md)
            oidc = OidcAuthenticator.from_settings(s, registry=rt.metrics.registry)
            closers.append(oidc.aclose)
            rt.authenticators.append(oidc)
            oidc.start()
        # mTLS callers (docs/mtls.md) last: an explicit credential in the request goes first.
        rt.authenticators.extend(mtls_authenticators(s, registry=rt.metrics.registry))
        return rt

    async def stop(self) -> None:
        """Stop background tasks and close connections (in reverse order of opening)."""
        self.closing.set()
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await asyncio.wait_for(task, _STOP_TIMEOUT)
        # Every step is bounded: a dependency that hangs must not keep the process alive.
        with contextlib.suppress(Exception):
            await asyncio.wait_for(self.sync.stop(), _STOP_TIMEOUT)
        for close in reversed(self._closers):
            with contextlib.suppress(Exception):
                result = close()
                if asyncio.iscoroutine(result):
                    await asyncio.wait_for(result, _STOP_TIMEOUT)

    async def _bootstrap_admin(self) -> None:
        """On an empty credential table, create the first admin credential and keep it."""
        if await self.store.count_api_keys() > 0:
            path = self.settings.data_dir / ADMIN_KEY_FILE
            if path.exists():
                self.admin_credential = path.read_text().strip()
            return
        given = self.settings.admin_api_key
        credential, record = new_api_key("admin", ["admin"])
        if given is not None:
            credential = given.get_secret_value()
            record = api_key_record(credential, "admin", ["admin"])
        try:
            await self.store.add_api_key(record)
        except Conflict:
            return
        self.admin_credential = credential
        if not self.settings.database_url:
            _write_secret(self.settings.data_dir / ADMIN_KEY_FILE, credential)

    async def _maintenance(self) -> None:
        interval = self.settings.key_reload_interval
        last_rotation = time.time()
        while True:
            await asyncio.sleep(interval)
            try:
                await self.keyring.reload()
                await self.keyring.expire()
                rotate_every = self.settings.key_rotation_interval
                if rotate_every and time.time() - last_rotation >= rotate_every:
                    await self.keyring.rotate("scheduler")
                    last_rotation = time.time()
                await self.reload_policy()
                self.refresh_gauges()
            except CouponError as exc:
                _log.warning("maintenance_failed", code=exc.code.code, reason=exc.reason)
            except Exception as exc:  # keep the loop alive; the next round retries
                _log.error("maintenance_error", error=repr(exc))

    def refresh_gauges(self) -> None:
        """Set the gauges that describe state rather than events."""
        now = time.time()
        self.metrics.revocation_staleness.set(self.view.staleness(now))
        self.metrics.revocation_cursor.set(self.view.cursor)
        newest = self.view.latest_revoked_at
        if newest is not None:
            self.metrics.revocation_newest_age.set(max(0.0, now - newest))
        counts: dict[str, int] = {"next": 0, "current": 0, "retiring": 0, "retired": 0}
        for info in self.keyring.describe():
            counts[info["state"]] = counts.get(info["state"], 0) + 1
        for state, count in counts.items():
            self.metrics.keys.labels(state).set(count)
        self.signer_metrics.observe(self.settings.key_backend, signer_problem(self.keyring))

    # -- policy ----------------------------------------------------------------------------------

    async def reload_policy(self) -> None:
        """Load the version the store says is active (the builtin one when none is)."""
        history = await self.store.policy_history()
        if not history:
            self.policy_version = BUILTIN_VERSION
            return
        version = history[-1].version
        if version != BUILTIN_VERSION and version not in self.engine:
            record = await self.store.get_policy(version)
            if record is None:
                raise DependencyUnavailable(codes.POLICY_FAILED, f"active policy {version} missing")
            bundle = verify_envelope(
                Envelope(record.bundle, record.signature, record.signer), self.trusted_policy_keys
            )
            self.engine.load(bundle)
        self.policy_version = version

    async def decide(self, policy_input: PolicyInput) -> PolicyDecision:
        """Evaluate the active policy under the deadline (fails closed)."""
        started = time.perf_counter()
        with _TRACER.start_as_current_span("coupon.policy.evaluate") as span:
            span.set_attribute("coupon.policy_version", self.policy_version)
            try:
                decision = await self.engine.decide(
                    self.policy_version, policy_input, deadline_ms=self.settings.policy_deadline_ms
                )
            except CouponError as exc:
                span.set_attribute("coupon.code", exc.code.code)
                self.metrics.policy_seconds.labels("error").observe(time.perf_counter() - started)
                raise
            result = "allow" if decision.allow else "deny"
            span.set_attribute("coupon.result", result)
        self.metrics.policy_seconds.labels(result).observe(time.perf_counter() - started)
        return decision

    # -- verification ----------------------------------------------------------------------------

    def verifier(self) -> Verifier:
        """The verifier for the keys published now (rebuilt when the key set changes)."""
        keys = self.keyring.keyset()
        if self._verifier is None or keys is not self._verifier_keys:
            s = self.settings
            self._verifier = Verifier(
                keys,
                issuers=[s.issuer_id],
                max_ttl=s.max_ttl,
                leeway=s.leeway,
                max_depth=s.max_depth,
                max_size=self.max_token,
                revocations=self.view,
                nonces=self.nonces if s.dpop_nonce_required else None,
                dpop_max_age=s.dpop_max_age,
            )
            self._verifier_keys = keys
        return self._verifier

    async def verify(self, token: str, request: Request, *, shed: bool = False) -> Verified:
        """Full verification with the shared replay store; ``shed`` applies storm limits."""
        started = time.perf_counter()
        with _TRACER.start_as_current_span("coupon.verify") as span:
            try:
                if shed:
                    await self._shed(token)
                try:
                    verified = await self.verifier().verify_async(
                        token, request, replay=self.replay
                    )
                except CouponError as exc:
                    # A kid we do not know may be one another process created moments ago:
                    # reload the keys once (at most every second) and try again.
                    if exc.code is not codes.HEADER_KID or not await self._reload_keys_now():
                        raise
                    verified = await self.verifier().verify_async(
                        token, request, replay=self.replay
                    )
            except CouponError as exc:
                span.set_attribute("coupon.result", "deny")
                span.set_attribute("coupon.code", exc.code.code)
                self.metrics.verify_seconds.labels("deny").observe(time.perf_counter() - started)
                raise
            span.set_attribute("coupon.result", "allow")
            span.set_attribute("coupon.lineage", verified.claims.lin)
        self.metrics.verify_seconds.labels("allow").observe(time.perf_counter() - started)
        return verified

    async def _reload_keys_now(self) -> bool:
        """Reload the keyring unless that happened less than a second ago (single flight)."""
        async with self._reload_lock:
            if time.monotonic() - self._last_key_reload < 1.0:
                return False
            self._last_key_reload = time.monotonic()
            await self.keyring.reload()
            return True

    async def _shed(self, token: str) -> None:
        # Storm limits key on the presented coupon. A repeat (the storm case) is in the
        # verifier's cache; a first presentation is parsed here, and an unparsable token is
        # left to the verifier, which denies it on its own.
        leaf = self.verifier().cached_claims(token)
        if leaf is None:
            try:
                chain = parse_chain(
                    token, max_size=self.max_token, max_depth=self.settings.max_depth
                )
            except CouponError:
                return
            leaf = chain[-1].claims
        try:
            await self.storm.admit(leaf.jti, leaf.sub, now=time.time())
        except CouponError as exc:
            self.metrics.shed.labels(exc.code.code).inc()
            raise
