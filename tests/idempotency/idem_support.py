"""Helpers shared by the idempotency tests."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from coupon.idempotency import IdempotencyStore

KEY = '"8e03978e-40d5-43e8-bc93-6894a57f9324"'


class FakeClock:
    """A clock that moves only when told to."""

    def __init__(self, now: float = 1_700_000_000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


@dataclass
class StoreCase:
    """A store under test and how to let ``seconds`` pass for it."""

    name: str
    store: IdempotencyStore
    wait: Callable[[float], Awaitable[None]]
