"""Generate the Python code of ``proto/coupon/v1/authority.proto`` (``./dev proto``).

Writes ``authority_pb2.py``, ``authority_pb2_grpc.py`` and their mypy-protobuf stubs into
``src/coupon/grpc_api/_gen/`` (or ``--out DIR``, which then gets the same tree under it). The
proto is compiled under the virtual path ``coupon/grpc_api/_gen/authority.proto``, so the
generated modules import each other as ``coupon.grpc_api._gen`` and never as ``coupon.v1``
(which is not a Python package). The message and service names stay ``coupon.v1.*``.

A test regenerates into a temporary directory and compares with the committed files.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from importlib import resources
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PROTO_DIR = ROOT / "proto" / "coupon" / "v1"
PROTOS = ("authority.proto",)
VIRTUAL = "coupon/grpc_api/_gen"
OUTPUTS = (
    "authority_pb2.py",
    "authority_pb2.pyi",
    "authority_pb2_grpc.py",
    "authority_pb2_grpc.pyi",
)


def generate(out: Path) -> list[Path]:
    """Compile the protos into ``out`` (a source root); return the files written."""
    from grpc_tools import protoc  # type: ignore[import-untyped]

    bindir = Path(sys.executable).parent
    include = resources.files("grpc_tools") / "_proto"
    target = out / VIRTUAL
    target.mkdir(parents=True, exist_ok=True)
    args = [
        "grpc_tools.protoc",
        f"--proto_path={VIRTUAL}={PROTO_DIR}",
        f"--proto_path={include}",
        f"--plugin=protoc-gen-mypy={bindir / 'protoc-gen-mypy'}",
        f"--plugin=protoc-gen-mypy_grpc={bindir / 'protoc-gen-mypy_grpc'}",
        f"--python_out={out}",
        f"--grpc_python_out={out}",
        f"--mypy_out={out}",
        f"--mypy_grpc_out={out}",
        *(f"{VIRTUAL}/{name}" for name in PROTOS),
    ]
    if protoc.main(args) != 0:
        raise SystemExit("protoc failed")
    return [target / name for name in OUTPUTS]


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=ROOT / "src", help="source root [src]")
    args = parser.parse_args(argv)
    for path in generate(args.out):
        print(path.relative_to(args.out))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
