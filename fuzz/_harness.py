"""What the atheris targets share: the libFuzzer dictionary file, replay, and the launch.

A target is a script with a ``check_input(data: bytes) -> None`` that raises only on a
finding; this module runs it under libFuzzer or replays saved inputs through it.
"""

from __future__ import annotations

import os
import shlex
import sys
import tempfile
import traceback
from collections.abc import Callable, Sequence
from pathlib import Path

__all__ = ["dictionary_file", "fuzz", "replay"]

Check = Callable[[bytes], None]
Mutator = Callable[[bytes, int, int], bytes]


def dictionary_file(name: str, entries: Sequence[str]) -> str:
    """Write ``entries`` in libFuzzer's dictionary format to the temp dir; return the path."""

    def quote(entry: str) -> str:
        raw = entry.encode("utf-8")
        body = "".join(
            chr(b) if 0x20 <= b < 0x7F and b not in b'"\\' else f"\\x{b:02x}" for b in raw
        )
        return f'"{body}"'

    path = Path(tempfile.gettempdir()) / f"coupon-fuzz-{name}.dict"
    path.write_text("".join(f"{quote(entry)}\n" for entry in entries), encoding="ascii")
    return str(path)


def replay(paths: Sequence[str], check_input: Check) -> int:
    """Run ``check_input`` on each file (or every file of a directory), without atheris.

    Prints one line per input to stderr and the traceback of each finding; returns 1 if any.
    """
    files: list[Path] = []
    for name in paths:
        path = Path(name)
        files.extend(sorted(p for p in path.iterdir() if p.is_file()) if path.is_dir() else [path])
    findings = 0
    for path in files:
        try:
            check_input(path.read_bytes())
        except Exception:
            findings += 1
            print(f"FINDING: {path}", file=sys.stderr)
            traceback.print_exc()
        else:
            print(f"ok: {path}", file=sys.stderr)
    print(f"{len(files)} inputs, {findings} findings", file=sys.stderr)
    return 1 if findings else 0


def fuzz(
    args: list[str],
    script: str,
    check_input: Check,
    *,
    name: str,
    dictionary: Sequence[str],
    mutator: Callable[[bytes, int, int], bytes | None] | None = None,
) -> None:
    """Run libFuzzer through atheris with ``args`` as libFuzzer takes them.

    Unless a ``-dict=`` argument is given, ``dictionary`` is used. ``mutator`` may return a
    structure-aware edit, or None to let libFuzzer mutate.
    """
    import atheris

    # libFuzzer's -fork, -merge and -minimize_crash re-run argv[0] through the shell: make it
    # "python this-file", so the script needs no exec bit and runs under this interpreter.
    args[0] = f"{shlex.quote(sys.executable)} {shlex.quote(os.path.abspath(script))}"
    if not any(arg.startswith("-dict=") for arg in args):
        args.insert(1, f"-dict={dictionary_file(name, dictionary)}")
    atheris.instrument_all()
    if mutator is None:
        atheris.Setup(args, check_input)
    else:
        custom = mutator

        def custom_mutator(data: bytes, max_size: int, seed: int) -> bytes:
            mutated = custom(data, max_size, seed)
            if mutated is not None and len(mutated) <= max_size:
                return mutated
            result: bytes = atheris.Mutate(data, max_size)
            return result

        atheris.Setup(args, check_input, custom_mutator=custom_mutator)
    atheris.Fuzz()
