"""The ``coupon.v1.CouponAuthority`` methods: thin, over the same service layer as REST.

Each method does what its REST route does, in the same order (authenticate, validate, call
:class:`~coupon.authority._service.Authority`), so the same input gets the same code.
"""

from __future__ import annotations

from typing import Any

from grpc import aio

from coupon import codes
from coupon.errors import CouponError, InvalidProof

from . import _convert as convert
from ._call import Call, Dispatcher
from ._gen import authority_pb2 as pb
from ._gen import authority_pb2_grpc as pb_grpc

__all__ = ["CouponAuthorityService"]

_Context = aio.ServicerContext[Any, Any]


class CouponAuthorityService(pb_grpc.CouponAuthorityServicer):
    """The gRPC service of one Authority.

    Args:
        dispatcher: runs each call (span, ids, caller, errors).
        attenuate_htu: the URI a DPoP proof for ``Attenuate`` must name: the public gRPC
            URL and the method's path.
    """

    def __init__(self, dispatcher: Dispatcher, *, attenuate_htu: str) -> None:
        self._run = dispatcher.run
        self.attenuate_htu = attenuate_htu

    async def Issue(  # noqa: N802 - the proto's name
        self, request: pb.IssueRequest, context: _Context
    ) -> pb.CouponResponse:
        """Issue a root coupon (roles: issuer, admin)."""

        async def handle(call: Call) -> pb.CouponResponse:
            caller = await call.principal()
            wanted = convert.issue_input(request, caller)
            issued = await call.authority.issue(caller, wanted, call.ctx)
            return convert.coupon_response(issued, call.ctx)

        return await self._run("Issue", context, handle)

    async def Attenuate(  # noqa: N802 - the proto's name
        self, request: pb.AttenuateRequest, context: _Context
    ) -> pb.CouponResponse:
        """Issue a sub-coupon to the holder of the parent, proven with DPoP over gRPC."""

        async def handle(call: Call) -> pb.CouponResponse:
            wanted = convert.delegate_input(request)
            authorization = call.caller.headers.get("authorization")
            if authorization is None or not authorization.startswith("DPoP "):
                raise InvalidProof(
                    codes.POP_MISSING, "send the parent as authorization: DPoP <coupon>"
                )
            issued = await call.authority.attenuate(
                authorization[5:].strip(),
                call.caller.headers.get("dpop"),
                self.attenuate_htu,
                wanted,
                call.ctx,
            )
            return convert.coupon_response(issued, call.ctx)

        return await self._run("Attenuate", context, handle)

    async def Verify(  # noqa: N802 - the proto's name
        self, request: pb.VerifyRequest, context: _Context
    ) -> pb.VerifyResponse:
        """Verify for a relying service; a denial is an answer, not an error."""

        async def handle(call: Call) -> pb.VerifyResponse:
            caller = await call.principal()
            wanted = convert.verify_input(request)
            try:
                verified = await call.authority.verify(caller, wanted, call.ctx)
            except CouponError as exc:
                # As REST: the caller's own faults and overload are errors, the rest decisions.
                if exc.code.status in (429, 503) or exc.code.code.startswith(
                    ("CPN-AUTH", "CPN-REQ")
                ):
                    raise
                return convert.verify_denied(exc, call.ctx)
            return convert.verify_allowed(verified, call.ctx)

        return await self._run("Verify", context, handle)

    async def Introspect(  # noqa: N802 - the proto's name
        self, request: pb.IntrospectRequest, context: _Context
    ) -> pb.IntrospectResponse:
        """RFC 7662 introspection."""

        async def handle(call: Call) -> pb.IntrospectResponse:
            caller = await call.principal()
            token = convert.introspect_token(request)
            if not token:
                return pb.IntrospectResponse(active=False)
            return convert.introspection(await call.authority.introspect(caller, token))

        return await self._run("Introspect", context, handle)

    async def Revoke(  # noqa: N802 - the proto's name
        self, request: pb.RevokeRequest, context: _Context
    ) -> pb.RevokeResponse:
        """Revoke durably, then fan out."""

        async def handle(call: Call) -> pb.RevokeResponse:
            caller = await call.principal()
            body = convert.revoke_request(request)
            stored = await call.authority.revoke(
                caller, body.kind, body.value, body.reason, call.ctx
            )
            return convert.revoke_response(stored)

        return await self._run("Revoke", context, handle)
