"""The gateway's routes file: upstreams, routes with their coupon requirements, limits.

A TOML file (see ``docs/gateway.md``)::

    [gateway]
    audience = "orders-api"
    authority = "http://127.0.0.1:8700"
    public_url = "https://api.example"

    [upstreams.orders]
    url = "http://127.0.0.1:9000"
    pipeline = { extends = "sync-microservice", timeout = 2.0 }

    [[routes]]
    path = "/orders/{order_id}"
    methods = ["GET"]
    upstream = "orders"
    resource = "orders/{order_id}"
    action = "read"

The file is written by an operator, so anything it does not understand is a ``ValueError``
naming the key: a typo must not silently turn a check off. Secrets (the Authority API key)
never live in the file; it names the environment variable that holds them.
"""

from __future__ import annotations

import ipaddress
import re
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final
from urllib.parse import urlsplit

from starlette.routing import compile_path

from coupon.middleware import Requirement
from coupon.ratelimit import RateLimitConfig, TenantLimits
from coupon.resilience import PipelinePolicy, from_dict

__all__ = [
    "DEFAULT_MAX_BODY",
    "LOOPBACK",
    "GatewayConfig",
    "GatewayRoute",
    "IPNetwork",
    "Upstream",
    "load_config",
    "parse_config",
]

IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network
#: Who may ask ``/_coupon/check`` by default: nginx on the same host.
LOOPBACK: Final[tuple[IPNetwork, ...]] = (
    ipaddress.ip_network("127.0.0.0/8"),
    ipaddress.ip_network("::1/128"),
)
#: Largest request body forwarded when neither the route nor the gateway sets one.
DEFAULT_MAX_BODY: Final = 1024 * 1024
_METHODS: Final = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"})
_NAME: Final = re.compile(r"[A-Za-z0-9._-]{1,64}")
_MEDIA: Final = re.compile(r"[a-z0-9!#$&^_.+-]+/[a-z0-9!#$&^_.+*-]+")


@dataclass(frozen=True, slots=True)
class Upstream:
    """One service the gateway forwards to, with the resilience pipeline toward it."""

    name: str
    url: str
    pipeline: PipelinePolicy


@dataclass(frozen=True, slots=True)
class GatewayRoute:
    """One route: where it goes and what a request must bring.

    ``requirement`` is ``None`` only for a route declared ``public = true``.
    """

    path: str
    methods: frozenset[str]
    upstream: str
    requirement: Requirement | None
    max_body: int
    content_types: frozenset[str]
    rate_key: str = "default"
    idempotency: bool = True
    strip_prefix: str = ""


@dataclass(frozen=True, slots=True)
class GatewayConfig:
    """The whole routes file, validated."""

    audience: str
    authority: str
    routes: tuple[GatewayRoute, ...]
    upstreams: Mapping[str, Upstream]
    public_url: str | None = None
    api_key_env: str = "COUPON_GATEWAY_API_KEY"
    redis_url: str | None = None
    redis_prefix: str = "coupon:gw:"
    replay: str = "local"
    limits: RateLimitConfig | None = None
    max_staleness: float = 10.0
    issuers: tuple[str, ...] | None = None
    check_endpoint: bool = True
    check_from: tuple[IPNetwork, ...] = LOOPBACK
    max_in_flight: int = 512


def load_config(path: Path) -> GatewayConfig:
    """Read and validate the routes file at ``path``.

    Raises:
        ValueError: the file is not TOML or a setting is wrong (the message names it).
        OSError: the file cannot be read.
    """
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except tomllib.TOMLDecodeError as exc:
        raise ValueError(f"{path}: not valid TOML: {exc}") from None
    return parse_config(data)


def parse_config(data: Mapping[str, Any]) -> GatewayConfig:
    """Validate a parsed routes file (see the module docstring for its shape).

    Raises:
        ValueError: a setting is unknown, missing, of the wrong type or out of range.
    """
    _keys("the file", data, {"gateway", "upstreams", "routes", "limits"})
    gateway = _table("gateway", data.get("gateway", {}))
    _keys(
        "gateway",
        gateway,
        {
            "audience",
            "authority",
            "public_url",
            "api_key_env",
            "redis",
            "redis_prefix",
            "replay",
            "max_body",
            "max_staleness",
            "issuers",
            "check_endpoint",
            "check_from",
            "max_in_flight",
        },
    )
    audience = _string("gateway.audience", gateway.get("audience"))
    authority = _url("gateway.authority", gateway.get("authority"))
    public_url = gateway.get("public_url")
    if public_url is not None:
        public_url = _url("gateway.public_url", public_url).rstrip("/")
    max_body = _int("gateway.max_body", gateway.get("max_body", DEFAULT_MAX_BODY), low=0)
    upstreams = _upstreams(_table("upstreams", data.get("upstreams", {})))
    raw_routes = data.get("routes")
    if not isinstance(raw_routes, list) or not raw_routes:
        raise ValueError("routes: at least one [[routes]] table is required")
    routes = tuple(
        _route(f"routes[{i}]", _table(f"routes[{i}]", r), upstreams, max_body)
        for i, r in enumerate(raw_routes)
    )
    issuers = gateway.get("issuers")
    if issuers is not None:
        issuers = tuple(_strings("gateway.issuers", issuers))
    redis = gateway.get("redis")
    replay = gateway.get("replay", "shared" if redis is not None else "local")
    if replay not in ("shared", "local") or (replay == "shared" and redis is None):
        raise ValueError('gateway.replay must be "local", or "shared" with gateway.redis set')
    return GatewayConfig(
        audience=audience,
        authority=authority.rstrip("/"),
        routes=routes,
        upstreams=upstreams,
        public_url=public_url,
        api_key_env=_string(
            "gateway.api_key_env", gateway.get("api_key_env", "COUPON_GATEWAY_API_KEY")
        ),
        redis_url=None if redis is None else _string("gateway.redis", redis),
        redis_prefix=_string("gateway.redis_prefix", gateway.get("redis_prefix", "coupon:gw:")),
        replay=replay,
        limits=_limits(data["limits"]) if "limits" in data else None,
        max_staleness=_float("gateway.max_staleness", gateway.get("max_staleness", 10.0)),
        issuers=issuers,
        check_endpoint=_bool("gateway.check_endpoint", gateway.get("check_endpoint", True)),
        check_from=_networks("gateway.check_from", gateway.get("check_from")),
        max_in_flight=_int("gateway.max_in_flight", gateway.get("max_in_flight", 512), low=1),
    )


def _upstreams(table: Mapping[str, Any]) -> dict[str, Upstream]:
    out: dict[str, Upstream] = {}
    for name, value in table.items():
        where = f"upstreams.{name}"
        if not _NAME.fullmatch(name):
            raise ValueError(f"{where}: a name is 1-64 characters of [A-Za-z0-9._-]")
        spec = _table(where, value)
        _keys(where, spec, {"url", "pipeline"})
        url = _url(f"{where}.url", spec.get("url")).rstrip("/")
        pipeline = spec.get("pipeline", {"extends": "sync-microservice"})
        policy = from_dict(_table(f"{where}.pipeline", pipeline), name=f"upstream-{name}")
        out[name] = Upstream(name, url, policy)
    if not out:
        raise ValueError("upstreams: at least one upstream is required")
    return out


_ROUTE_KEYS: Final = frozenset(
    {
        "path",
        "methods",
        "upstream",
        "public",
        "resource",
        "action",
        "purpose",
        "audience",
        "max_body",
        "content_types",
        "rate_key",
        "idempotency",
        "strip_prefix",
    }
)


def _route(
    where: str, spec: Mapping[str, Any], upstreams: Mapping[str, Upstream], max_body: int
) -> GatewayRoute:
    _keys(where, spec, _ROUTE_KEYS)
    path = _string(f"{where}.path", spec.get("path"))
    if not path.startswith("/") or path.startswith("/_coupon"):
        raise ValueError(f"{where}.path must start with '/' and not with the reserved /_coupon")
    methods = frozenset(m.upper() for m in _strings(f"{where}.methods", spec.get("methods")))
    unknown = methods - _METHODS
    if unknown:
        raise ValueError(f"{where}.methods: unknown method {sorted(unknown)[0]!r}")
    upstream = _string(f"{where}.upstream", spec.get("upstream"))
    if upstream not in upstreams:
        raise ValueError(f"{where}.upstream: no upstream named {upstream!r}")
    public = _bool(f"{where}.public", spec.get("public", False))
    requirement: Requirement | None = None
    if public:
        bad = {"resource", "action", "purpose", "audience"} & set(spec)
        if bad:
            raise ValueError(f"{where}: a public route takes no {sorted(bad)[0]!r}")
    else:
        if "resource" not in spec or "action" not in spec:
            raise ValueError(f"{where}: needs resource and action, or public = true")
        purpose, audience = spec.get("purpose"), spec.get("audience")
        requirement = Requirement(
            resource=_string(f"{where}.resource", spec["resource"]),
            action=_string(f"{where}.action", spec["action"]),
            purpose=None if purpose is None else _string(f"{where}.purpose", purpose),
            audience=None if audience is None else _string(f"{where}.audience", audience),
        )
        missing = requirement.parameters - set(compile_path(path)[2])
        if missing:
            raise ValueError(f"{where}.resource: the path has no parameter {sorted(missing)[0]!r}")
    types = spec.get("content_types", ["application/json"])
    content_types = frozenset(t.lower() for t in _strings(f"{where}.content_types", types))
    for media in content_types:
        if not _MEDIA.fullmatch(media):
            raise ValueError(f"{where}.content_types: {media!r} is not a media type")
    strip = spec.get("strip_prefix", "")
    strip = _string(f"{where}.strip_prefix", strip) if strip else ""
    if strip and (not path.startswith(strip) or strip.endswith("/")):
        raise ValueError(f"{where}.strip_prefix must begin the path and not end with '/'")
    return GatewayRoute(
        path=path,
        methods=methods,
        upstream=upstream,
        requirement=requirement,
        max_body=_int(f"{where}.max_body", spec.get("max_body", max_body), low=0),
        content_types=content_types,
        rate_key=_string(f"{where}.rate_key", spec.get("rate_key", "default")),
        idempotency=_bool(f"{where}.idempotency", spec.get("idempotency", True)),
        strip_prefix=strip,
    )


def _limits(value: Any) -> RateLimitConfig:
    table = _table("limits", value)
    _keys("limits", table, {"default", "tenants", "routes", "replicas"})
    default = _tenant_limits("limits.default", table.get("default"))
    tenants = {
        t: _tenant_limits(f"limits.tenants.{t}", v)
        for t, v in _table("limits.tenants", table.get("tenants", {})).items()
    }
    routes: dict[tuple[str, str], TenantLimits] = {}
    for tenant, keys in _table("limits.routes", table.get("routes", {})).items():
        for key, v in _table(f"limits.routes.{tenant}", keys).items():
            routes[(tenant, key)] = _tenant_limits(f"limits.routes.{tenant}.{key}", v)
    replicas = _int("limits.replicas", table.get("replicas", 1), low=1)
    return RateLimitConfig(default, tenants=tenants, routes=routes, replicas=replicas)


def _tenant_limits(where: str, value: Any) -> TenantLimits:
    table = _table(where, value)
    _keys(where, table, {"soft_per_s", "hard_per_s", "burst", "window", "name"})
    try:
        return TenantLimits(
            soft_per_s=_float(f"{where}.soft_per_s", table.get("soft_per_s")),
            hard_per_s=_float(f"{where}.hard_per_s", table.get("hard_per_s")),
            burst=_int(f"{where}.burst", table.get("burst"), low=1),
            window=_int(f"{where}.window", table.get("window", 1), low=1),
            name=_string(f"{where}.name", table.get("name", "default")),
        )
    except ValueError as exc:
        raise ValueError(f"{where}: {exc}") from None


# -- typed reads --------------------------------------------------------------------------------


def _keys(where: str, table: Mapping[str, Any], allowed: frozenset[str] | set[str]) -> None:
    unknown = sorted(set(table) - set(allowed))
    if unknown:
        raise ValueError(f"{where}: unknown setting {unknown[0]!r}")


def _table(where: str, value: Any) -> Mapping[str, Any]:
    if not isinstance(value, Mapping):
        raise ValueError(f"{where} must be a table")
    return value


def _string(where: str, value: Any) -> str:
    if not isinstance(value, str) or not value:
        raise ValueError(f"{where} must be a non-empty string")
    return value


def _strings(where: str, value: Any) -> list[str]:
    if not isinstance(value, list) or not value:
        raise ValueError(f"{where} must be a non-empty list of strings")
    return [_string(where, v) for v in value]


def _bool(where: str, value: Any) -> bool:
    if not isinstance(value, bool):
        raise ValueError(f"{where} must be true or false")
    return value


def _int(where: str, value: Any, *, low: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < low:
        raise ValueError(f"{where} must be an integer of at least {low}")
    return value


def _float(where: str, value: Any) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float) or not value > 0:
        raise ValueError(f"{where} must be a positive number")
    return float(value)


def _networks(where: str, value: Any) -> tuple[IPNetwork, ...]:
    if value is None:
        return LOOPBACK
    try:
        return tuple(ipaddress.ip_network(v) for v in _strings(where, value))
    except ValueError as exc:
        raise ValueError(f"{where}: {exc}") from None


def _url(where: str, value: Any) -> str:
    text = _string(where, value)
    parts = urlsplit(text)
    if parts.scheme not in ("http", "https") or not parts.netloc or parts.query:
        raise ValueError(f"{where} must be an http(s) URL without a query")
    return text
