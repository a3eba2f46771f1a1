"""Errors as gRPC statuses: the mapping table, the details trailer, and docs/grpc.md."""

from __future__ import annotations

import re
from pathlib import Path

import grpc
import pytest
from hypothesis import given
from hypothesis import strategies as st

from coupon import codes
from coupon.errors import CouponError, InvalidProof, InvalidRequest, RateLimited
from coupon.grpc_api import (
    DETAILS_KEY,
    HTTP_TO_GRPC,
    ErrorDetail,
    Status,
    grpc_status,
    read_error_detail,
)
from coupon.grpc_api._status import error_detail, status_details

PAGE = Path(__file__).resolve().parents[2] / "docs" / "grpc.md"
_ROW = re.compile(r"^\|\s*(\d{3})\s*\|\s*`([A-Z_]+)`\s*\|", re.MULTILINE)


class TestMapping:
    """Every code maps to the gRPC status of its HTTP status."""

    @pytest.mark.parametrize("code", sorted(codes.ALL))
    def test_every_code_is_an_error(self, code: str) -> None:
        """No code answers OK or UNKNOWN, and a 4xx never claims to be the server's fault."""
        entry = codes.ALL[code]
        status = grpc_status(entry)
        assert status not in (grpc.StatusCode.OK, grpc.StatusCode.UNKNOWN)
        if entry.status < 500:
            assert status not in (grpc.StatusCode.INTERNAL, grpc.StatusCode.UNAVAILABLE)

    def test_every_status_in_use_is_in_the_table(self) -> None:
        """The table names each HTTP status a code uses (no silent fallback today)."""
        used = {entry.status for entry in codes.ALL.values()}
        assert used <= HTTP_TO_GRPC.keys()

    @pytest.mark.parametrize(
        ("status", "expected"),
        [
            (401, grpc.StatusCode.UNAUTHENTICATED),
            (403, grpc.StatusCode.PERMISSION_DENIED),
            (400, grpc.StatusCode.INVALID_ARGUMENT),
            (422, grpc.StatusCode.INVALID_ARGUMENT),
            (404, grpc.StatusCode.NOT_FOUND),
            (409, grpc.StatusCode.FAILED_PRECONDITION),
            (429, grpc.StatusCode.RESOURCE_EXHAUSTED),
            (503, grpc.StatusCode.UNAVAILABLE),
            (500, grpc.StatusCode.INTERNAL),
        ],
    )
    def test_the_documented_pairs(self, status: int, expected: grpc.StatusCode) -> None:
        """The pairs the product promises (docs/grpc.md)."""
        assert HTTP_TO_GRPC[status] == expected

    @given(st.integers(min_value=400, max_value=599))
    def test_unknown_statuses_fall_back_by_class(self, status: int) -> None:
        """A status outside the table: FAILED_PRECONDITION for 4xx, INTERNAL for 5xx."""
        entry = codes.ErrorCode("CPN-TEST-001", "t", "CouponError", status, "p")
        expected = HTTP_TO_GRPC.get(status) or (
            grpc.StatusCode.FAILED_PRECONDITION if status < 500 else grpc.StatusCode.INTERNAL
        )
        assert grpc_status(entry) == expected

    def test_docs_table_is_the_mapping(self) -> None:
        """docs/grpc.md's status table is HTTP_TO_GRPC, row for row."""
        rows = {int(s): name for s, name in _ROW.findall(PAGE.read_text(encoding="utf-8"))}
        assert rows == {status: code.name for status, code in HTTP_TO_GRPC.items()}


class TestDetails:
    """The ``grpc-status-details-bin`` trailer."""

    def test_round_trip(self) -> None:
        """What the server packs, the client helper reads back."""
        exc = InvalidProof(codes.REPLAY, "proof abc was already used", step="replay")
        detail = error_detail(exc, request_id="req-1", trace_id="ab" * 16)
        blob = status_details(grpc.StatusCode.UNAUTHENTICATED, "CPN-RPL-001: x", detail)
        read = read_error_detail([("x-request-id", "req-1"), (DETAILS_KEY, blob)])
        assert read == detail
        assert (read.code, read.http_status, read.protocol_error) == (
            "CPN-RPL-001",
            401,
            "invalid_dpop_proof",
        )
        assert read.step == "replay"
        assert not read.HasField("retry_after")

    def test_status_is_wire_compatible_with_google_rpc_status(self) -> None:
        """Known answer: google.rpc.Status{code: 16, message: "m"} is 08 10 12 01 6d."""
        assert Status(code=16, message="m").SerializeToString() == bytes.fromhex("081012016d")
        blob = status_details(grpc.StatusCode.UNAUTHENTICATED, "m", ErrorDetail(code="C"))
        status = Status.FromString(blob)
        assert (status.code, status.message) == (16, "m")
        assert status.details[0].type_url == "type.googleapis.com/coupon.v1.ErrorDetail"

    def test_hints_for_rate_limits_unavailability_and_nonces(self) -> None:
        """Retry-after for 429 and 503, and a fresh nonce when one is required."""
        limited = RateLimited(codes.RATE_COUPON, "slow down")
        limited.retry_after = 2.6
        assert error_detail(limited, request_id="", trace_id="").retry_after == 3
        down = CouponError(codes.UNAVAILABLE_STORAGE, "db down")
        assert error_detail(down, request_id="", trace_id="").retry_after == 1
        nonce = InvalidProof(codes.POP_NONCE, "use a nonce")
        assert error_detail(nonce, request_id="", trace_id="", dpop_nonce="n1").dpop_nonce == "n1"
        plain = error_detail(InvalidRequest(codes.REQUEST_BODY, "x"), request_id="", trace_id="")
        assert not plain.HasField("dpop_nonce")

    @pytest.mark.parametrize(
        "trailing",
        [
            None,
            [],
            [("x-request-id", "r")],
            [(DETAILS_KEY, "text, not bytes")],
            [(DETAILS_KEY, Status(code=3).SerializeToString())],
        ],
    )
    def test_no_detail(self, trailing: list[tuple[str, str | bytes]] | None) -> None:
        """Absent, textual or empty trailers hold no detail (gRPC's own errors)."""
        assert read_error_detail(trailing) is None

    @given(st.binary(max_size=256))
    def test_garbage_trailer_never_raises(self, blob: bytes) -> None:
        """Whatever bytes a server sends, reading them answers a detail or None."""
        result = read_error_detail([(DETAILS_KEY, blob)])
        assert result is None or isinstance(result, ErrorDetail)
