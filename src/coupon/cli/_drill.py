"""The key-rotation drill against a running Authority: rotate, verify, roll back, verify.

Independent of Typer. :class:`Drill` talks to the Authority over HTTP with an admin key and
checks everything itself, the way a relying service and an auditor would:

- coupons against the published JWKS (the signature, with the key the ``kid`` names) and at
  the Authority's verify endpoint (with a DPoP proof of the holder key);
- checkpoints against each Ledger key on its own (old and new must each verify during the
  overlap), and for consistency with the checkpoint taken before the drill (RFC 9162 proof).

Each step is reported as it ends; the first failure stops the drill.
"""

from __future__ import annotations

import base64
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Final

from coupon.errors import CouponError
from coupon.ledger import open_checkpoint, parse_vkey, verify_consistency
from coupon.token import KeySet, SigningKey, create_dpop_proof, new_jti
from coupon.token.hazmat import parse_compact

if TYPE_CHECKING:
    import httpx

__all__ = ["Drill", "Step"]

#: What the drill's coupons are for: nothing but the drill.
SCOPE: Final = {
    "subject": "keys-drill",
    "audience": ["keys-drill"],
    "tenant": "keys-drill",
    "resource": "keys-drill/**",
    "actions": ["read"],
    "purpose": "keys-drill",
    "ttl": 300,
}
HTU: Final = "https://keys-drill.invalid/keys-drill/probe"


class DrillFailure(Exception):
    """A check of the drill did not hold."""


@dataclass(frozen=True, slots=True)
class Step:
    """One step of the drill and what it found."""

    number: int
    name: str
    ok: bool
    detail: str

    def line(self) -> str:
        """The transcript line."""
        return f"{'OK  ' if self.ok else 'FAIL'}  {self.number:>2}  {self.name}: {self.detail}"


@dataclass
class _Coupon:
    label: str
    token: str
    kid: str
    holder: SigningKey


@dataclass
class _Checkpoint:
    size: int
    root: bytes


@dataclass
class Drill:
    """One run of the drill.

    Args:
        client: an HTTP client on the Authority's base URL that sends the admin key.
        rollback: also roll the coupon keys back and verify again.
        report: called with each step as it ends.
        wait: seconds to wait for a new checkpoint.
    """

    client: httpx.Client
    rollback: bool = False
    report: Callable[[Step], None] = lambda step: None
    wait: float = 15.0
    steps: list[Step] = field(default_factory=list)
    _coupons: list[_Coupon] = field(default_factory=list)
    _ledger_keys: list[str] = field(default_factory=list)
    _seen: _Checkpoint | None = None  # the newest checkpoint a step verified

    # -- the drill -------------------------------------------------------------------------------

    def run(self) -> bool:
        """Run every step; False at the first failure."""
        try:
            before = self._record()
            self._issue("A", want_kid=before["current"])
            self._rotate_coupon_keys(before)
            self._rotate_ledger_key()
            self._issue("B", want_kid=before["next"])
            self._verify_coupons()
            self._checkpoint_holds("after the rotation", before["checkpoint"])
            if self.rollback:
                self._roll_back(before)
                self._issue("C", want_kid=before["current"])
                self._verify_coupons()
                self._checkpoint_holds("after the rollback", before["checkpoint"])
        except DrillFailure:
            return False
        return True

    @contextmanager
    def _step(self, name: str) -> Iterator[list[str]]:
        detail: list[str] = []
        number = len(self.steps) + 1
        try:
            yield detail
        except (DrillFailure, CouponError, KeyError, ValueError, TypeError) as exc:
            reason = exc.diagnostics() if isinstance(exc, CouponError) else str(exc)
            step = Step(number, name, False, reason or type(exc).__name__)
            self.steps.append(step)
            self.report(step)
            raise DrillFailure(reason) from exc
        step = Step(number, name, True, "; ".join(detail))
        self.steps.append(step)
        self.report(step)

    def _record(self) -> dict[str, Any]:
        with self._step("record the keys and the checkpoint") as detail:
            keys = self._get("/v1/admin/keys")["keys"]
            current = _one(keys, "current")
            nxt = _one(keys, "next")
            self._ledger_keys = [k["vkey"] for k in self._ledger()["keys"] if k["active"]]
            checkpoint = self._checkpoint(self._ledger_keys)
            detail += [
                f"coupon key {current['kid']} ({current['alg']}) signs, {nxt['kid']} is next",
                f"ledger keys {', '.join(_key_name(v) for v in self._ledger_keys)}",
                f"checkpoint of size {checkpoint.size} verifies with each",
            ]
        return {"current": current["kid"], "next": nxt["kid"], "checkpoint": checkpoint}

    def _issue(self, label: str, *, want_kid: str) -> None:
        with self._step(f"issue coupon {label}") as detail:
            holder = SigningKey.generate()
            body = {**SCOPE, "binding": {"jkt": holder.public.thumbprint}}
            answer = self._post("/v1/coupons", body)
            token = answer["coupon"]
            kid = parse_compact(token, max_size=16_384).header["kid"]
            _expect(kid == want_kid, f"signed by {kid}, expected {want_kid}")
            self._signature_ok(token, self._get("/.well-known/jwks.json"))
            self._coupons.append(_Coupon(label, token, kid, holder))
            detail.append(f"jti {answer['jti']} signed by {kid}; verifies against the JWKS")

    def _rotate_coupon_keys(self, before: dict[str, Any]) -> None:
        with self._step("rotate the coupon keys") as detail:
            answer = self._post("/v1/admin/keys/rotate", None)
            _expect(answer["previous_kid"] == before["current"], f"previous {answer}")
            _expect(answer["signing_kid"] == before["next"], f"now signing {answer}")
            detail.append(
                f"{answer['signing_kid']} signs, {answer['previous_kid']} retiring, "
                f"{answer['next_kid']} is next"
            )

    def _rotate_ledger_key(self) -> None:
        with self._step("rotate the ledger key") as detail:
            answer = self._post("/v1/ledger/keys/rotate", None)
            retiring = {r["vkey"]: r["retire_ms"] for r in answer["retiring"]}
            _expect(set(self._ledger_keys) <= set(retiring), "an old key was not kept signing")
            now_ms = time.time() * 1000
            _expect(all(ms > now_ms for ms in retiring.values()), "no overlap: old key retired")
            self._ledger_keys = [*self._ledger_keys, answer["new"]]
            until = min(retiring.values()) // 1000
            detail.append(
                f"new key {_key_name(answer['new'])}; the old ones sign too until "
                f"{time.strftime('%Y-%m-%dT%H:%M:%SZ', time.gmtime(until))}"
            )

    def _roll_back(self, before: dict[str, Any]) -> None:
        with self._step("roll back the coupon keys") as detail:
            answer = self._post("/v1/admin/keys/rollback", None)
            _expect(answer["signing_kid"] == before["current"], f"now signing {answer}")
            detail.append(
                f"{answer['signing_kid']} signs again, {answer['next_kid']} is next; the ledger "
                "key is not rolled back: its old key still signs (overlap)"
            )

    def _verify_coupons(self) -> None:
        labels = ", ".join(c.label for c in self._coupons)
        with self._step(f"verify coupons {labels}") as detail:
            jwks = self._get("/.well-known/jwks.json")
            for c in self._coupons:
                self._signature_ok(c.token, jwks)
                proof = create_dpop_proof(
                    c.holder,
                    method="GET",
                    uri=HTU,
                    now=int(time.time()),
                    jti=new_jti(),
                    access_token=c.token,
                )
                answer = self._post(
                    "/v1/coupons/verify",
                    {
                        "coupon": c.token,
                        "audience": "keys-drill",
                        "resource": "keys-drill/probe",
                        "action": "read",
                        "purpose": "keys-drill",
                        "dpop": proof,
                        "htm": "GET",
                        "htu": HTU,
                    },
                )
                _expect(answer["allow"] is True, f"coupon {c.label}: {answer.get('code')}")
                detail.append(f"{c.label} ({c.kid[:8]}…) allowed")
            detail.append(f"every signature verifies against the JWKS of {len(jwks['keys'])} keys")

    def _checkpoint_holds(self, when: str, first: _Checkpoint) -> None:
        with self._step(f"checkpoint {when}") as detail:
            latest = self._next_checkpoint(self._seen or first)
            self._seen = latest
            if first.size:
                proof = self._get(
                    f"/v1/ledger/proof/consistency?first={first.size}&second={latest.size}"
                )
                hashes = [base64.b64decode(h) for h in proof["proof"]]
                verify_consistency(first.size, latest.size, hashes, first.root, latest.root)
            detail += [
                f"size {latest.size} verifies with each of the "
                f"{len(self._ledger_keys)} ledger keys on its own",
                f"consistent with the pre-drill checkpoint of size {first.size}"
                if first.size
                else "the pre-drill checkpoint was of the empty log (nothing to prove)",
            ]

    # -- helpers ---------------------------------------------------------------------------------

    def _next_checkpoint(self, first: _Checkpoint) -> _Checkpoint:
        """A checkpoint larger than ``first`` that every ledger key signed (waiting for it):
        it holds the drill's own audit events since ``first``."""
        deadline = time.monotonic() + self.wait
        while True:
            try:
                latest = self._checkpoint(self._ledger_keys)
                _expect(latest.size > first.size, f"no checkpoint beyond size {first.size}")
                return latest
            except (DrillFailure, CouponError):
                if time.monotonic() > deadline:
                    raise
            time.sleep(0.2)

    def _checkpoint(self, vkeys: list[str]) -> _Checkpoint:
        """The newest checkpoint, verified with each of ``vkeys`` alone."""
        origin = self._ledger()["origin"]
        note = self.client.get("/v1/ledger/checkpoint").text
        checkpoint = None
        for vkey in vkeys:
            checkpoint, _, _ = open_checkpoint(note, [parse_vkey(vkey)], origin=origin)
        _expect(checkpoint is not None, "no ledger key to verify the checkpoint with")
        assert checkpoint is not None
        return _Checkpoint(checkpoint.size, checkpoint.root_hash)

    def _ledger(self) -> dict[str, Any]:
        answer: dict[str, Any] = self._get("/v1/ledger/key")
        return answer

    def _signature_ok(self, token: str, jwks: dict[str, Any]) -> None:
        jws = parse_compact(token, max_size=16_384)
        key = KeySet.from_jwks(jwks).get(jws.header["kid"])
        _expect(key is not None, f"kid {jws.header['kid']} is not in the JWKS")
        assert key is not None
        _expect(key.verify(jws.signature, jws.signing_input), "signature does not verify")

    def _get(self, path: str) -> Any:
        return _answer(self.client.get(path), path)

    def _post(self, path: str, body: Any) -> Any:
        return _answer(self.client.post(path, json=body), path)


def _answer(response: httpx.Response, path: str) -> Any:
    if response.status_code >= 400:
        raise DrillFailure(f"{path}: HTTP {response.status_code} {response.text[:300]}")
    return response.json()


def _expect(condition: bool, reason: str) -> None:
    if not condition:
        raise DrillFailure(reason)


def _one(keys: list[dict[str, Any]], state: str) -> dict[str, Any]:
    found = [k for k in keys if k["state"] == state]
    _expect(len(found) == 1, f"{len(found)} keys are {state}")
    return found[0]


def _key_name(vkey: str) -> str:
    """``<name>+<id>``: the public part of a vkey worth printing."""
    return "+".join(vkey.split("+")[:2])
