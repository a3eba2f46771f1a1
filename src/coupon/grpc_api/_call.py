"""One RPC being served: its metadata, its caller, its span and ids, and its error answer.

The gRPC counterpart of the REST app's ``CorrelationMiddleware``, ``_caller`` dependency and
problem handler, in one place: every RPC of the service runs through :meth:`Dispatcher.run`.
"""

from __future__ import annotations

import re
import secrets
import time
from collections.abc import Awaitable, Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any, Final, NoReturn, TypeVar

import grpc
import structlog
from grpc import aio
from opentelemetry.trace import SpanKind, Status, StatusCode
from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator
from prometheus_client import CollectorRegistry, Counter, Histogram

from coupon import codes
from coupon.authority._auth import API_KEY_HEADER, CallerContext, Principal, authenticate
from coupon.authority._service import Authority, Context
from coupon.errors import AuthenticationFailed, CouponError, InternalError, InvalidProof
from coupon.observability import get_logger, tracer_provider

from ._status import DETAILS_KEY, error_detail, grpc_status, status_details

__all__ = [
    "SERVICE",
    "Call",
    "Dispatcher",
    "GrpcMetrics",
    "client_cert_chain",
    "metadata_headers",
    "peer_address",
]

#: The full name of the service; a method's path is ``/{SERVICE}/{method}``.
SERVICE: Final = "coupon.v1.CouponAuthority"
_REQUEST_ID: Final = re.compile(r"[A-Za-z0-9._:-]{1,128}")
_PEM: Final = re.compile(
    rb"-----BEGIN CERTIFICATE-----\r?\n.+?\r?\n-----END CERTIFICATE-----", re.DOTALL
)
_PROPAGATOR: Final = TraceContextTextMapPropagator()
#: Metadata keys that decide who the caller is: sent twice, the call is refused.
_SINGLE: Final = {API_KEY_HEADER: "credentials", "authorization": "credentials", "dpop": "proof"}
_LATENCY_BUCKETS = (0.0005, 0.001, 0.002, 0.003, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1.0)
_log = get_logger("coupon.grpc")

R = TypeVar("R")


def metadata_headers(metadata: Iterable[tuple[str, str | bytes]] | None) -> dict[str, str]:
    """The call's text metadata as header fields (gRPC keys are already lowercase).

    Binary (``-bin``) values are left out. A key that names the caller (``x-api-key``,
    ``authorization``, ``dpop``) sent more than once is refused, never resolved by picking
    one: ``CPN-AUTH-002`` for credentials, ``CPN-POP-002`` for a DPoP proof (RFC 9449 §4.3).
    """
    headers: dict[str, str] = {}
    for key, value in metadata or ():
        if not isinstance(value, str):
            continue
        if key in headers and key in _SINGLE:
            if _SINGLE[key] == "proof":
                raise InvalidProof(codes.POP_MALFORMED, "more than one dpop metadata value")
            raise AuthenticationFailed(codes.AUTH_INVALID, f"{key} sent more than once")
        headers.setdefault(key, value)
    return headers


def peer_address(peer: str) -> str | None:
    """The address in gRPC's peer string (``ipv4:1.2.3.4:5``, ``ipv6:[::1]:5``), else None."""
    kind, _, rest = peer.partition(":")
    if kind == "ipv4":
        host, sep, _port = rest.rpartition(":")
        return host if sep and host else None
    if kind == "ipv6":
        host, sep, _port = rest.rpartition(":")
        return host[1:-1] if sep and host.startswith("[") and host.endswith("]") else None
    return None


def client_cert_chain(auth_context: Mapping[str, Iterable[bytes]]) -> tuple[str, ...]:
    """The client certificate chain the TLS handshake verified, PEM, leaf first.

    gRPC names the peer's leaf ``x509_pem_cert`` (and, when it sent one, the whole chain
    ``x509_pem_cert_chain``); both are absent without mTLS.
    """
    for key in ("x509_pem_cert_chain", "x509_pem_cert"):
        blob = b"".join(auth_context.get(key, ()))
        pems = _PEM.findall(blob)
        if pems:
            return tuple(pem.decode("ascii") + "\n" for pem in pems)
    return ()


class GrpcMetrics:
    """The gRPC server's metrics, on the Authority's registry (``/metrics``)."""

    def __init__(self, registry: CollectorRegistry) -> None:
        self.requests = Counter(
            "coupon_grpc_requests_total",
            "gRPC calls by method and status code.",
            ["method", "code"],
            registry=registry,
        )
        self.seconds = Histogram(
            "coupon_grpc_request_duration_seconds",
            "gRPC call latency by method and status code.",
            ["method", "code"],
            buckets=_LATENCY_BUCKETS,
            registry=registry,
        )


@dataclass(frozen=True, slots=True)
class Call:
    """What a method handler sees of its call."""

    caller: CallerContext
    ctx: Context
    authority: Authority

    async def principal(self) -> Principal:
        """The authenticated caller (the same authenticators as REST), or raise."""
        return await authenticate(self.authority.rt.authenticators, self.caller)


class Dispatcher:
    """Runs each RPC: span, ids, caller context, metrics, and errors as gRPC statuses."""

    def __init__(self, authority: Authority, metrics: GrpcMetrics) -> None:
        self.authority = authority
        self.metrics = metrics
        self._tracer = tracer_provider().get_tracer("coupon.grpc")

    async def run(
        self,
        method: str,
        context: aio.ServicerContext[Any, Any],
        handler: Callable[[Call], Awaitable[R]],
    ) -> R:
        """Serve one call of ``method`` with ``handler``; a ``CouponError`` aborts the call."""
        started = time.perf_counter()
        raw = context.invocation_metadata() or ()
        carrier = {k: v for k, v in raw if k == "traceparent" and isinstance(v, str)}
        given = next((v for k, v in raw if k == "x-request-id" and isinstance(v, str)), "")
        request_id = given if _REQUEST_ID.fullmatch(given) else secrets.token_hex(8)
        failure: tuple[CouponError, grpc.StatusCode] | None = None
        with self._tracer.start_as_current_span(
            f"{SERVICE}/{method}", context=_PROPAGATOR.extract(carrier), kind=SpanKind.SERVER
        ) as span:
            trace_id = f"{span.get_span_context().trace_id:032x}"
            out: dict[str, str] = {}
            _PROPAGATOR.inject(out)
            trailing = (("x-request-id", request_id), ("traceparent", out.get("traceparent", "")))
            span.set_attribute("rpc.system", "grpc")
            span.set_attribute("rpc.service", SERVICE)
            span.set_attribute("rpc.method", method)
            span.set_attribute("coupon.request_id", request_id)
            ctx = Context(trace_id=trace_id, request_id=request_id)
            with structlog.contextvars.bound_contextvars(trace_id=trace_id, request_id=request_id):
                try:
                    call = Call(
                        caller=CallerContext(
                            headers=metadata_headers(raw),
                            peer=peer_address(context.peer()),
                            client_cert_chain=client_cert_chain(context.auth_context()),
                        ),
                        ctx=ctx,
                        authority=self.authority,
                    )
                    result = await handler(call)
                except CouponError as exc:
                    failure = (exc, grpc_status(exc.code))
                    _log.info("rpc_denied", method=method, code=exc.code.code, reason=exc.reason)
                except Exception as exc:
                    failure = (
                        InternalError(codes.INTERNAL, "internal error; see the log with this id"),
                        grpc.StatusCode.INTERNAL,
                    )
                    _log.error("rpc_internal_error", method=method, error=repr(exc), exc_info=exc)
            status = failure[1] if failure else grpc.StatusCode.OK
            span.set_attribute("rpc.grpc.status_code", status.value[0])
            if failure is not None:
                span.set_attribute("coupon.code", failure[0].code.code)
                if status is grpc.StatusCode.INTERNAL:
                    span.set_status(Status(StatusCode.ERROR))
        self.metrics.requests.labels(method, status.name).inc()
        self.metrics.seconds.labels(method, status.name).observe(time.perf_counter() - started)
        if failure is not None:
            await self._abort(context, failure[0], failure[1], ctx, trailing)
        context.set_trailing_metadata(trailing)
        return result

    async def _abort(
        self,
        context: aio.ServicerContext[Any, Any],
        exc: CouponError,
        status: grpc.StatusCode,
        ctx: Context,
        trailing: tuple[tuple[str, str], ...],
    ) -> NoReturn:
        nonce = None
        if exc.code is codes.POP_NONCE:
            nonce = self.authority.rt.nonces.issue(time.time())
        detail = error_detail(
            exc, request_id=ctx.request_id, trace_id=ctx.trace_id, dpop_nonce=nonce
        )
        message = f"{exc.code.code}: {exc.reason}"
        extra: list[tuple[str, str | bytes]] = [
            *trailing,
            (DETAILS_KEY, status_details(status, message, detail)),
        ]
        if nonce:
            extra.append(("dpop-nonce", nonce))
        if detail.HasField("retry_after"):
            extra.append(("retry-after", str(detail.retry_after)))
        await context.abort(status, message, trailing_metadata=tuple(extra))
