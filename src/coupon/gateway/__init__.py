"""``coupon gateway``: the edge reverse proxy driven by a routes file.

Routes to upstreams with per-route coupon requirements, request validation, trace and
request ids, tenant rate limits, idempotency keys and a resilience pipeline per upstream;
``/_coupon/check`` serves nginx's ``auth_request``. See ``docs/gateway.md``.
"""

from ._app import DEFAULT_LIMITS, Edge, Gateway, build_gateway
from ._check import STATUS_HEADER, CheckEndpoint
from ._config import (
    DEFAULT_MAX_BODY,
    LOOPBACK,
    GatewayConfig,
    GatewayRoute,
    IPNetwork,
    Upstream,
    load_config,
    parse_config,
)
from ._metrics import GatewayMetrics
from ._proxy import IDEMPOTENT_METHODS, Forwarder, UpstreamFailed
from ._routes import (
    GatewayTable,
    check_body_rules,
    check_headers,
    check_path,
    identity_fields,
    route_of,
    tenant_of,
)

__all__ = [
    "DEFAULT_LIMITS",
    "DEFAULT_MAX_BODY",
    "IDEMPOTENT_METHODS",
    "LOOPBACK",
    "STATUS_HEADER",
    "CheckEndpoint",
    "Edge",
    "Forwarder",
    "Gateway",
    "GatewayConfig",
    "GatewayMetrics",
    "GatewayRoute",
    "GatewayTable",
    "IPNetwork",
    "Upstream",
    "UpstreamFailed",
    "build_gateway",
    "check_body_rules",
    "check_headers",
    "check_path",
    "identity_fields",
    "load_config",
    "parse_config",
    "route_of",
    "tenant_of",
]
