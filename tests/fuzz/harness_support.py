"""What the fuzz smoke tests share: loading a harness script, and libFuzzer-like mutants.

A seeded, deterministic stand-in for an atheris run: the committed seeds plus byte edits of
them (flip, insert, erase, repeat, splice, dictionary word) and some random bytes.
"""

from __future__ import annotations

import importlib.util
import random
import sys
from collections.abc import Iterator, Sequence
from pathlib import Path
from types import ModuleType

FUZZ_DIR = Path(__file__).resolve().parents[2] / "fuzz"


def load_harness(name: str) -> ModuleType:
    """Import ``fuzz/<name>.py`` (a script, not a package module) under ``name``."""
    spec = importlib.util.spec_from_file_location(name, FUZZ_DIR / f"{name}.py")
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module  # corpus makers import their harness by name
    spec.loader.exec_module(module)
    return module


def mutate(data: bytes, rng: random.Random, pool: Sequence[bytes], words: Sequence[bytes]) -> bytes:
    """One to four libFuzzer-like edits: flip, insert, erase, repeat, splice, dictionary."""
    buf = bytearray(data)
    for _ in range(rng.randint(1, 4)):
        kind = rng.randrange(6)
        pos = rng.randrange(len(buf) + 1)
        if kind == 0 and buf:
            buf[min(pos, len(buf) - 1)] ^= 1 << rng.randrange(8)
        elif kind == 1:
            buf[pos:pos] = bytes(rng.randrange(256) for _ in range(rng.randint(1, 8)))
        elif kind == 2:
            del buf[pos : pos + rng.randint(1, 16)]
        elif kind == 3:
            buf[pos:pos] = buf[pos : pos + rng.randint(1, 8)] * rng.randint(2, 64)
        elif kind == 4:
            other = rng.choice(pool)
            start = rng.randrange(len(other) + 1)
            buf[pos:] = other[start:]
        else:
            buf[pos:pos] = rng.choice(words)
    return bytes(buf)


def mutants(
    corpus: Sequence[Path],
    dictionary: Sequence[str],
    *,
    seed: int,
    count: int,
    random_max: int,
) -> Iterator[bytes]:
    """``count`` inputs: every tenth random bytes (up to ``random_max``), else a mutant."""
    rng = random.Random(seed)
    pool = [p.read_bytes() for p in corpus]
    words = [entry.encode() for entry in dictionary]
    for i in range(count):
        if i % 10 == 0:
            yield bytes(rng.randrange(256) for _ in range(rng.randint(0, random_max)))
        else:
            yield mutate(rng.choice(pool), rng, pool, words)
