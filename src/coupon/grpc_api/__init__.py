"""The Authority over gRPC: the ``coupon.v1.CouponAuthority`` service (docs/grpc.md).

The contract is ``proto/coupon/v1/authority.proto``; its messages and the client stub are
re-exported here. ``coupon up`` serves it when ``COUPON_GRPC_PORT`` is set::

    channel = grpc.insecure_channel("127.0.0.1:8701")
    stub = CouponAuthorityStub(channel)
    answer = stub.Verify(VerifyRequest(...), metadata=[("x-api-key", key)])

A failed call's :class:`ErrorDetail` (the stable code) is
``read_error_detail(error.trailing_metadata())``.
"""

from ._call import SERVICE
from ._gen.authority_pb2 import (
    AttenuateRequest,
    Binding,
    Claims,
    CouponResponse,
    ErrorDetail,
    IntrospectRequest,
    IntrospectResponse,
    IssueRequest,
    Parent,
    Revocation,
    RevokeRequest,
    RevokeResponse,
    Status,
    VerifyRequest,
    VerifyResponse,
)
from ._gen.authority_pb2_grpc import CouponAuthorityStub
from ._server import GrpcServer
from ._status import DETAILS_KEY, HTTP_TO_GRPC, grpc_status, read_error_detail

__all__ = [
    "DETAILS_KEY",
    "HTTP_TO_GRPC",
    "SERVICE",
    "AttenuateRequest",
    "Binding",
    "Claims",
    "CouponAuthorityStub",
    "CouponResponse",
    "ErrorDetail",
    "GrpcServer",
    "IntrospectRequest",
    "IntrospectResponse",
    "IssueRequest",
    "Parent",
    "Revocation",
    "RevokeRequest",
    "RevokeResponse",
    "Status",
    "VerifyRequest",
    "VerifyResponse",
    "grpc_status",
    "read_error_detail",
]
