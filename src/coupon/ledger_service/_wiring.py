"""Settings into objects: trusted emitter keys, and the hook that asks witnesses to cosign."""

from __future__ import annotations

import base64
import time
from collections.abc import Sequence

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from ._service import Ledger

__all__ = ["emitter_keys", "witnessing"]


def emitter_keys(entries: Sequence[str]) -> dict[str, Ed25519PublicKey]:
    """Parse ``"<kid> <base64url Ed25519 public key>"`` settings.

    Raises:
        ValueError: a malformed entry (a configuration error: refuse to start).
    """
    keys = {}
    for entry in entries:
        kid, _, text = entry.strip().partition(" ")
        raw = base64.urlsafe_b64decode(text.strip() + "=" * (-len(text.strip()) % 4))
        if not kid or len(raw) != 32:
            raise ValueError(f"ledger emitter {entry!r}: want '<kid> <base64url public key>'")
        keys[kid] = Ed25519PublicKey.from_public_bytes(raw)
    return keys


def witnessing(ledger: Ledger, entries: Sequence[str]) -> object:
    """The hook that asks each configured witness (``"<vkey> <url>"``) to cosign."""
    import httpx

    from ._witness import LogWitnessing, WitnessClient

    client = httpx.AsyncClient(timeout=5.0, trust_env=False)
    ledger.closers.append(client.aclose)
    clients = []
    for entry in entries:
        vkey, _, url = entry.strip().partition(" ")
        if not url.strip():
            raise ValueError(f"ledger witness {entry!r}: want '<witness vkey> <url>'")
        clients.append(WitnessClient(url.strip(), vkey, client=client))

    async def store(seq: int, witness: str, line: str) -> None:
        await ledger.store.add_cosignature(seq, witness, line, int(time.time() * 1000))

    return LogWitnessing(
        clients,
        proof=ledger.consistency_proof,
        store=store,
        count=lambda witness, outcome: ledger.metrics.witness.labels(witness, outcome).inc(),
    )
