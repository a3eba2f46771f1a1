"""A ``coupon up`` serving gRPC too, for the gRPC service tests, with callers of every kind.

:class:`Served` bundles the process, a generated client stub on its gRPC port, and API keys
with the roles the tests need. Both transports reach the same process and database, so an
answer over gRPC can be compared with the answer over REST to the same request.
"""

from __future__ import annotations

import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Final

import grpc
from tests.services.harness import AuthorityProcess, Holder, Launcher, add_api_key

from coupon.grpc_api import SERVICE, Binding, CouponAuthorityStub, IssueRequest
from coupon.token import create_dpop_proof, new_jti

__all__ = ["Keys", "Served", "dpop_metadata", "issue_message", "serve_grpc"]

GRPC_ON: Final = {"COUPON_GRPC_PORT": "0"}


@dataclass(frozen=True)
class Keys:
    """API keys: the admin's, one per other role, and an issuer bound to ``tenant-b``."""

    admin: str
    verifier: str
    auditor: str
    tenant_issuer: str


@dataclass
class Served:
    """An Authority reachable over REST and gRPC."""

    proc: AuthorityProcess
    channel: grpc.Channel
    stub: CouponAuthorityStub
    keys: Keys

    @property
    def attenuate_htu(self) -> str:
        """The DPoP ``htu`` of ``Attenuate`` (the default public gRPC URL)."""
        return f"https://{self.proc.grpc_target}/{SERVICE}/Attenuate"

    @property
    def rest_attenuate_htu(self) -> str:
        """The DPoP ``htu`` of ``POST /v1/coupons/attenuate``."""
        return f"{self.proc.base_url}/v1/coupons/attenuate"

    def key(self, name: str) -> list[tuple[str, str]]:
        """The ``x-api-key`` metadata of the key called ``name`` (``admin``, ``verifier``...)."""
        return [("x-api-key", getattr(self.keys, name))]

    def close(self) -> None:
        """Close the channel (the launcher stops the process)."""
        self.channel.close()


def serve_grpc(
    launcher: Launcher, engine: str, *, name: str, extra: Mapping[str, str] | None = None
) -> Served:
    """Start ``coupon up`` with ``COUPON_GRPC_PORT=0`` and keys of every role."""
    proc = launcher.start(engine, name=name, extra={**GRPC_ON, **(extra or {})})
    assert proc.grpc_target is not None, proc.stdout_path.read_text()
    channel = grpc.insecure_channel(proc.grpc_target)
    keys = Keys(
        admin=proc.admin_key,
        verifier=add_api_key(proc.database_url, ["verifier"]),
        auditor=add_api_key(proc.database_url, ["auditor"]),
        tenant_issuer=add_api_key(proc.database_url, ["issuer"], tenant="tenant-b"),
    )
    return Served(proc, channel, CouponAuthorityStub(channel), keys)


def issue_message(body: Mapping[str, Any]) -> IssueRequest:
    """The ``IssueRequest`` with the fields of a REST issue body (``issue_body``)."""
    msg = IssueRequest(
        subject=body.get("subject", ""),
        audience=body.get("audience", []),
        tenant=body.get("tenant", ""),
        resource=body.get("resource", ""),
        actions=body.get("actions", []),
        purpose=body.get("purpose", ""),
    )
    if body.get("ttl") is not None:
        msg.ttl = body["ttl"]
    if "binding" in body:
        binding = body["binding"]
        msg.binding.CopyFrom(
            Binding(jkt=binding["jkt"])
            if "jkt" in binding
            else Binding(x5t_s256=binding["x5t#S256"])
            if "x5t#S256" in binding
            else Binding()
        )
    return msg


def dpop_metadata(
    holder: Holder, coupon: str, htu: str, *, proof: str | None = None
) -> Sequence[tuple[str, str]]:
    """``authorization: DPoP <coupon>`` and a fresh proof for ``htu`` (or ``proof``)."""
    made = proof or create_dpop_proof(
        holder.key, method="POST", uri=htu, now=int(time.time()), jti=new_jti(), access_token=coupon
    )
    return [("authorization", f"DPoP {coupon}"), ("dpop", made)]
