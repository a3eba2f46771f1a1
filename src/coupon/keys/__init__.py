"""The Authority's signing keys: sealing at rest, rotation plans and the keyring.

- :mod:`._sealing`: the master key and the AES-256-GCM envelopes of private keys;
- :mod:`._plan`: rotation as pure functions over key records and the time;
- :mod:`._keyring`: the :class:`Keyring` that applies plans to the store and signs.

The key lifecycle is described on ``docs/keys.md``.
"""

from ._keyring import KeyEvent, KeyInfo, Keyring, KeyStore
from ._plan import (
    KeyView,
    NewKey,
    Operation,
    SetState,
    bootstrap,
    expire,
    published,
    repair,
    rollback,
    rotate,
    rotation_ready_at,
    signing,
)
from ._sealing import (
    MASTER_KEY_FILE,
    KeyBackend,
    MasterKey,
    SealedKeys,
    SealingError,
    open_sealed,
    seal,
)

__all__ = [
    "MASTER_KEY_FILE",
    "KeyBackend",
    "KeyEvent",
    "KeyInfo",
    "KeyStore",
    "KeyView",
    "Keyring",
    "MasterKey",
    "NewKey",
    "Operation",
    "SealedKeys",
    "SealingError",
    "SetState",
    "bootstrap",
    "expire",
    "open_sealed",
    "published",
    "repair",
    "rollback",
    "rotate",
    "rotation_ready_at",
    "seal",
    "signing",
]
