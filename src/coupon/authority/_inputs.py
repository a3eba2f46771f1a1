"""Validated request bodies to the service layer's inputs: one mapping for REST and gRPC."""

from __future__ import annotations

from coupon.token import Binding

from ._auth import Principal
from ._models import AttenuateRequest, BindingModel, IssueRequest
from ._mtls import resolve_binding
from ._service import DelegateInput, IssueInput

__all__ = ["binding_of", "delegate_input", "issue_input"]


def binding_of(model: BindingModel, caller: Principal | None = None) -> Binding:
    """The key to bind; ``"x5t#S256": "self"`` is the caller's own certificate (mtls.md)."""
    return resolve_binding(caller, jkt=model.jkt, x5t_s256=model.x5t_s256)


def issue_input(body: IssueRequest, caller: Principal | None) -> IssueInput:
    """What ``issue`` is asked for."""
    return IssueInput(
        subject=body.subject,
        audience=tuple(body.audience),
        tenant=body.tenant,
        resource=body.resource,
        actions=tuple(body.actions),
        purpose=body.purpose,
        ttl=body.ttl,
        binding=binding_of(body.binding, caller),
    )


def delegate_input(body: AttenuateRequest) -> DelegateInput:
    """What ``attenuate`` is asked for; a left-out (or empty) value keeps the parent's."""
    return DelegateInput(
        subject=body.subject,
        binding=binding_of(body.binding),
        audience=tuple(body.audience) if body.audience else None,
        resource=body.resource,
        actions=tuple(body.actions) if body.actions else None,
        purpose=body.purpose,
        ttl=body.ttl,
    )
