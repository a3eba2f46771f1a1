"""The gRPC server of one Authority process: grpc.aio on the Authority's own event loop.

Started and stopped with the Authority (``create_app``'s lifespan) when ``COUPON_GRPC_PORT``
is set. TLS and mTLS as :mod:`._tls` decides from the settings; plaintext without them.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Final

from grpc import aio

from coupon.settings import Settings

from ._call import SERVICE, Dispatcher, GrpcMetrics
from ._gen import authority_pb2_grpc as pb_grpc
from ._service import CouponAuthorityService
from ._tls import server_credentials

if TYPE_CHECKING:
    from coupon.authority._service import Authority

__all__ = ["GrpcServer"]

#: Every request message is bounded (REST's field limits fit well within it).
MAX_MESSAGE: Final = 64 * 1024
#: ``authorization: DPoP <coupon>`` and a ``dpop`` proof, each up to 8 KiB, must fit.
MAX_METADATA: Final = 32 * 1024
MAX_CONCURRENT_RPCS: Final = 4096
_OPTIONS: Final = (
    ("grpc.max_receive_message_length", MAX_MESSAGE),
    ("grpc.max_metadata_size", MAX_METADATA),
    # Never share the port with another process that binds it too (gRPC's default does).
    ("grpc.so_reuseport", 0),
)


def _hostport(host: str, port: int) -> str:
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


class GrpcServer:
    """A running ``coupon.v1.CouponAuthority`` server; build it with :meth:`start`.

    Attributes:
        port: the port it listens on (the one chosen when ``COUPON_GRPC_PORT`` is 0).
        security: ``"plaintext"``, ``"TLS"`` or ``"mTLS"``.
        public_url: the base of the DPoP ``htu`` for ``Attenuate``.
    """

    def __init__(self, server: aio.Server, *, port: int, security: str, public_url: str) -> None:
        self._server = server
        self.port = port
        self.security = security
        self.public_url = public_url

    @property
    def attenuate_htu(self) -> str:
        """The ``htu`` a DPoP proof for ``Attenuate`` names."""
        return f"{self.public_url}/{SERVICE}/Attenuate"

    @classmethod
    async def start(cls, authority: Authority, *, settings: Settings | None = None) -> GrpcServer:
        """Bind ``COUPON_GRPC_PORT`` on the Authority's host and start serving.

        ``settings`` default to the Authority's own.

        Raises:
            ValueError: no ``grpc_port``, or TLS settings that do not fit together.
            RuntimeError: the port cannot be bound (gRPC's error).
            OSError: a TLS file cannot be read.
        """
        s = settings or authority.rt.settings
        if s.grpc_port is None:
            raise ValueError("COUPON_GRPC_PORT is not set")
        tls = server_credentials(s)
        server = aio.server(options=_OPTIONS, maximum_concurrent_rpcs=MAX_CONCURRENT_RPCS)
        address = _hostport(s.host, s.grpc_port)
        if tls is None:
            port = server.add_insecure_port(address)
            security = "plaintext"
        else:
            port = server.add_secure_port(address, tls[0])
            security = tls[1].security
        if port == 0:
            raise OSError(f"cannot listen for gRPC on {address}")
        public_url = s.grpc_public_url.rstrip("/") or f"https://{_hostport(s.host, port)}"
        grpc_server = cls(server, port=port, security=security, public_url=public_url)
        dispatcher = Dispatcher(authority, GrpcMetrics(authority.rt.metrics.registry))
        pb_grpc.add_CouponAuthorityServicer_to_server(
            CouponAuthorityService(dispatcher, attenuate_htu=grpc_server.attenuate_htu), server
        )
        await server.start()
        return grpc_server

    async def stop(self, grace: float = 5.0) -> None:
        """Stop accepting calls, let those in flight finish within ``grace`` seconds."""
        await self._server.stop(grace)
