"""The committed generated code is what ``./dev proto`` makes from the committed proto."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
GENERATED = ROOT / "src" / "coupon" / "grpc_api" / "_gen"
OUTPUTS = (
    "authority_pb2.py",
    "authority_pb2.pyi",
    "authority_pb2_grpc.py",
    "authority_pb2_grpc.pyi",
)


@pytest.fixture(scope="module")
def regenerated(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The output of proto/generate.py in a fresh directory."""
    out = tmp_path_factory.mktemp("gen")
    subprocess.run(
        [sys.executable, str(ROOT / "proto" / "generate.py"), "--out", str(out)],
        check=True,
        capture_output=True,
        cwd=ROOT,
    )
    return out / "coupon" / "grpc_api" / "_gen"


@pytest.mark.parametrize("name", OUTPUTS)
def test_regeneration_reproduces_the_committed_file(regenerated: Path, name: str) -> None:
    """Byte for byte: run ``./dev proto`` after editing the proto, and commit the result."""
    assert (regenerated / name).read_bytes() == (GENERATED / name).read_bytes()


def test_nothing_else_is_generated(regenerated: Path) -> None:
    """The generator writes exactly the committed files."""
    assert sorted(p.name for p in regenerated.iterdir()) == sorted(OUTPUTS)


def test_service_and_messages_keep_their_proto_names() -> None:
    """The virtual path changes Python imports only: names stay coupon.v1.*."""
    from coupon.grpc_api import SERVICE, IssueRequest
    from coupon.grpc_api._gen import authority_pb2

    assert SERVICE == "coupon.v1.CouponAuthority"
    assert IssueRequest.DESCRIPTOR.full_name == "coupon.v1.IssueRequest"
    assert authority_pb2.DESCRIPTOR.services_by_name["CouponAuthority"].full_name == SERVICE
    assert [
        m.name for m in authority_pb2.DESCRIPTOR.services_by_name["CouponAuthority"].methods
    ] == [
        "Issue",
        "Attenuate",
        "Verify",
        "Introspect",
        "Revoke",
    ]
