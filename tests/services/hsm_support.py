"""``coupon up`` on a SoftHSM2 token: settings, waiting, metrics, and looking into the token.

The token is read from a separate Python process (its own PKCS#11 application, with the PIN
and its own ``SOFTHSM2_CONF``): what an administrator holding the PIN could do.
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
from typing import Any, Final

import httpx
from prometheus_client.parser import text_string_to_metric_families
from tests.services.harness import AuthorityProcess
from tests.softhsm_fixtures import MODULE, SoftHsm, Token

__all__ = ["inspect_token", "launch_unready", "metric", "pkcs11_env", "wait_until"]

_INSPECT: Final = r"""
import json, sys
import pkcs11
from pkcs11 import Attribute, KeyType, Mechanism, MechanismFlag, ObjectClass
module, label, pin, ids = sys.argv[1], sys.argv[2], sys.argv[3], json.loads(sys.argv[4])
session = pkcs11.lib(module).get_token(token_label=label).open(rw=True, user_pin=pin)
wrapping = session.generate_key(KeyType.AES, 256, capabilities=MechanismFlag.WRAP)
out = {}
for text in ids:
    key = session.get_key(object_class=ObjectClass.PRIVATE_KEY, id=text.encode())
    found = {a.name: key[a] for a in (Attribute.SENSITIVE, Attribute.EXTRACTABLE,
             Attribute.ALWAYS_SENSITIVE, Attribute.NEVER_EXTRACTABLE, Attribute.LOCAL,
             Attribute.TOKEN)}
    for what, attempt in (
        ("VALUE", lambda: key[Attribute.VALUE]),
        ("WRAP", lambda: wrapping.wrap_key(key, mechanism=Mechanism.AES_KEY_WRAP_PAD)),
    ):
        try:
            attempt()
            found[what] = "LEAKED"
        except pkcs11.PKCS11Error as exc:
            found[what] = type(exc).__name__
    out[text] = found
session.close()
print(json.dumps(out))
"""


def pkcs11_env(hsm: SoftHsm, token: Token, *, alg: str = "EdDSA") -> dict[str, str]:
    """The settings of an Authority whose keys (and the Ledger's) live in ``token``."""
    return {
        "COUPON_KEY_BACKEND": "pkcs11",
        "COUPON_PKCS11_MODULE": MODULE,
        "COUPON_PKCS11_TOKEN_LABEL": token.label,
        "COUPON_PKCS11_PIN": token.pin,
        "COUPON_PKCS11_PROBE_INTERVAL": "0.3",
        "COUPON_KEY_ALGORITHM": alg,
        "COUPON_LEDGER_CHECKPOINT_INTERVAL": "0.1",
        **hsm.env(),
    }


def wait_until(check: Any, *, timeout: float = 20.0, what: str = "it") -> Any:
    """Call ``check`` until it returns something truthy; fail after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        result = check()
        if result:
            return result
        if time.monotonic() > deadline:
            raise AssertionError(f"{what} did not happen within {timeout}s")
        time.sleep(0.1)


def launch_unready(proc: AuthorityProcess, *, timeout: float = 30.0) -> None:
    """Restart ``proc`` (already started once: same port) and wait until it answers
    ``/healthz``, without asking it to be ready."""
    proc.launch()

    def alive() -> bool:
        assert proc.running, proc.stderr_tail()
        try:
            return proc.anon.get("/healthz", timeout=1.0).status_code == 200
        except httpx.TransportError:
            return False

    wait_until(alive, timeout=timeout, what="the Authority answering /healthz")


def metric(proc: AuthorityProcess, name: str, **labels: str) -> float | None:
    """The sum of the samples of ``/metrics`` named ``name`` with ``labels``, or None."""
    text = proc.anon.get("/metrics").text
    values = [
        float(sample.value)
        for family in text_string_to_metric_families(text)
        for sample in family.samples
        if sample.name == name and all(sample.labels.get(k) == v for k, v in labels.items())
    ]
    return sum(values) if values else None


def inspect_token(hsm: SoftHsm, token: Token, object_ids: list[str]) -> dict[str, Any]:
    """Each private key's protection attributes, and what reading and wrapping it gave."""
    result = subprocess.run(
        [sys.executable, "-c", _INSPECT, MODULE, token.label, token.pin, json.dumps(object_ids)],
        env={"PATH": "/usr/bin:/bin", **hsm.env()},
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    found: dict[str, Any] = json.loads(result.stdout)
    return found
