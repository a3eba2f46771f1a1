"""Helpers for the PKCS#11 tests: a connected token, raw sessions, known keys imported."""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable, Iterator
from typing import Any

import pkcs11
from pkcs11 import Attribute, KeyType, ObjectClass
from tests.softhsm_fixtures import MODULE, Token

from coupon.keys import Pkcs11Token, SignerEvent, SignerHook
from coupon.keys._pkcs11 import _module

#: DER of the curve OIDs: id-Ed25519 (RFC 8410) and prime256v1.
EC_PARAMS = {"EdDSA": bytes.fromhex("06032b6570"), "ES256": bytes.fromhex("06082a8648ce3d030107")}


def open_token(
    token: Token,
    *,
    pin: str | None = None,
    probe_interval: float = 0.2,
    timeout: float = 2.0,
    hooks: tuple[SignerHook, ...] = (),
    module: str = MODULE,
) -> Pkcs11Token:
    """Connect to ``token`` the way the Authority does, with fast probes for tests."""
    return Pkcs11Token.open(
        module,
        token.label,
        token.pin if pin is None else pin,
        probe_interval=probe_interval,
        timeout=timeout,
        hooks=hooks,
    )


@contextlib.contextmanager
def raw_session(label: str) -> Iterator[pkcs11.Session]:
    """A second session on ``label`` in this process (it shares the login), holding the
    module lock the way every caller must."""
    module = _module(MODULE)
    with module.lock:
        session = module.load().get_token(token_label=label).open(rw=True)
        try:
            yield session
        finally:
            session.close()


def private_key(session: pkcs11.Session, object_id: bytes) -> Any:
    """The private key object with ``CKA_ID`` ``object_id``."""
    return session.get_key(object_class=ObjectClass.PRIVATE_KEY, id=object_id)


def import_key(hsm: Pkcs11Token, alg: str, secret: bytes, object_id: bytes) -> None:
    """Import a published test key as a session object (for known-answer tests only)."""

    def create(session: pkcs11.Session) -> None:
        session.create_object(
            {
                Attribute.CLASS: ObjectClass.PRIVATE_KEY,
                Attribute.KEY_TYPE: KeyType.EC_EDWARDS if alg == "EdDSA" else KeyType.EC,
                Attribute.EC_PARAMS: EC_PARAMS[alg],
                Attribute.VALUE: secret,
                Attribute.ID: object_id,
                Attribute.TOKEN: False,
                Attribute.SIGN: True,
                Attribute.SENSITIVE: True,
                Attribute.EXTRACTABLE: False,
            }
        )

    hsm.call("import", create)


def wait_for(condition: Callable[[], bool], *, timeout: float = 10.0, what: str = "it") -> None:
    """Poll ``condition`` until it holds; fail after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"{what} did not happen within {timeout}s")
        time.sleep(0.02)


class Events:
    """A hook that keeps every event except the per-operation timings."""

    def __init__(self) -> None:
        self.seen: list[SignerEvent] = []

    def __call__(self, event: SignerEvent) -> None:
        if type(event).__name__ != "SignerUsed":
            self.seen.append(event)

    def names(self) -> list[str]:
        """The event class names, in order."""
        return [type(e).__name__ for e in self.seen]
