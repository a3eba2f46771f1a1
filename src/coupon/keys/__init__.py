"""The Authority's signing keys: sealing at rest, rotation plans and the keyring.

- :mod:`._sealing`: the master key and the AES-256-GCM envelopes of private keys;
- :mod:`._plan`: rotation as pure functions over key records and the time;
- :mod:`._keyring`: the :class:`Keyring` that applies plans to the store and signs;
- :mod:`._pkcs11`, :mod:`._hsm` and :mod:`._events`: keys generated and kept inside a
  PKCS#11 token, and what its signers report.

The key lifecycle is described on ``docs/keys.md``.
"""

from ._events import SignerDown, SignerEvent, SignerFailed, SignerHook, SignerUp, SignerUsed
from ._hsm import (
    Pkcs11Keys,
    Pkcs11NoteSigner,
    Pkcs11Signer,
    generate_in_token,
    parse_reference,
    public_raw,
    reference,
)
from ._keyring import KeyEvent, KeyInfo, Keyring, KeyStore
from ._pkcs11 import Pkcs11Token
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
    SignerHealth,
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
    "Pkcs11Keys",
    "Pkcs11NoteSigner",
    "Pkcs11Signer",
    "Pkcs11Token",
    "SealedKeys",
    "SealingError",
    "SetState",
    "SignerDown",
    "SignerEvent",
    "SignerFailed",
    "SignerHealth",
    "SignerHook",
    "SignerUp",
    "SignerUsed",
    "bootstrap",
    "expire",
    "generate_in_token",
    "open_sealed",
    "parse_reference",
    "public_raw",
    "published",
    "reference",
    "repair",
    "rollback",
    "rotate",
    "rotation_ready_at",
    "seal",
    "signing",
]
