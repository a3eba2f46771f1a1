"""What a protected route requires, and the route table that finds it.

The middleware keeps its own route table instead of reading ``scope["path_params"]``: a pure
ASGI middleware runs *before* the router, so path parameters do not exist yet. Each entry is
``(method, path, Requirement)``; ``path`` uses Starlette's syntax (``/orders/{order_id}``,
``{n:int}``, ``{rest:path}``) and is compiled with :func:`starlette.routing.compile_path`, so
it matches exactly what the app's router matches.

Path-parameter values become segments of the requested resource, so each one must pass the
coupon resource grammar (:func:`coupon.token.parse_resource`): no ``..``, no ``%``-escapes,
no empty segment, nothing non-ASCII. A value that breaks the grammar is refused
(``CPN-REQ-001``), never allowed.

The path is matched twice: the decoded ``path`` (what the router sees) and the raw, still
percent-encoded ``raw_path``. A request is protected when either matches, and parameters are
taken from the raw match when there is one, so ``/orders/1%2F2`` is refused instead of slipping
past as an unlisted ``/orders/1/2``.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any, Final

from starlette.convertors import Convertor, PathConvertor
from starlette.routing import compile_path

from coupon import codes
from coupon.errors import CouponError, InvalidRequest
from coupon.token import parse_resource

__all__ = ["Match", "Requirement", "RouteTable"]

_PLACEHOLDER: Final = re.compile(r"\{([A-Za-z_][A-Za-z0-9_]*)\}")


@dataclass(frozen=True, slots=True)
class Requirement:
    """What a coupon must grant for a route.

    Args:
        resource: a resource template; ``{name}`` is filled from the path parameter ``name``
            (``orders/{order_id}``).
        action: the action the route performs (``read``).
        purpose: the purpose the service declares for the request, if it declares one.
        audience: overrides the middleware's audience for this route.
    """

    resource: str
    action: str
    purpose: str | None = None
    audience: str | None = None

    def __post_init__(self) -> None:
        if not isinstance(self.resource, str) or not isinstance(self.action, str):
            raise TypeError("resource and action are strings")
        try:
            parse_resource(_PLACEHOLDER.sub("x", self.resource))
        except CouponError as exc:
            raise ValueError(f"resource template {self.resource!r}: {exc.reason}") from None

    @property
    def parameters(self) -> frozenset[str]:
        """The path parameters the resource template names."""
        return frozenset(_PLACEHOLDER.findall(self.resource))

    def resource_for(self, params: Mapping[str, str]) -> str:
        """The concrete resource for these path parameter values.

        Raises:
            InvalidRequest: ``CPN-REQ-001`` when a value is not a valid resource segment.
        """
        for name in self.parameters:
            _check_value(name, params[name])
        return _PLACEHOLDER.sub(lambda m: params[m.group(1)], self.resource)


def _check_value(name: str, value: str) -> None:
    """A parameter value must be whole resource segments, exactly as given."""
    fail = InvalidRequest(
        codes.REQUEST_RESOURCE, f"path parameter {name!r} is not a resource segment"
    )
    if not value or value.startswith("/") or value.endswith("/"):
        raise fail
    try:
        segments = parse_resource(value)
    except CouponError as exc:
        raise InvalidRequest(
            codes.REQUEST_RESOURCE, f"path parameter {name!r}: {exc.reason}"
        ) from None
    if "/".join(segments) != value:  # pragma: no cover - parse_resource keeps inner text
        raise fail


@dataclass(frozen=True, slots=True)
class Match:
    """A protected route matched by a request."""

    method: str
    path: str
    requirement: Requirement
    params: Mapping[str, str]
    multi_segment: frozenset[str]

    def resource(self) -> str:
        """The concrete resource, checked segment by segment.

        Raises:
            InvalidRequest: ``CPN-REQ-001`` for a value outside the grammar.
        """
        for name in self.requirement.parameters - self.multi_segment:
            if "/" in self.params[name]:
                raise InvalidRequest(
                    codes.REQUEST_RESOURCE, f"path parameter {name!r} spans segments"
                )
        return self.requirement.resource_for(self.params)


@dataclass(frozen=True, slots=True)
class _Route:
    methods: frozenset[str]
    path: str
    regex: re.Pattern[str]
    convertors: dict[str, Convertor[Any]]
    requirement: Requirement

    def params(self, path: str) -> dict[str, str] | None:
        found = self.regex.match(path)
        if found is None:
            return None
        out: dict[str, str] = {}
        for name, text in found.groupdict().items():
            conv = self.convertors[name]
            # Round-trip through the convertor: "007" for an int route becomes "7", the
            # value the handler will see.
            out[name] = str(conv.to_string(conv.convert(text)))
        return out


class RouteTable:
    """The protected routes: ``[(method, path, Requirement), ...]``.

    ``GET`` also protects ``HEAD``. A method not listed for a path passes through, like a
    path not listed: list every method a protected path serves.

    Raises:
        ValueError: a route is malformed, or its template names an unknown parameter.
    """

    def __init__(self, routes: Iterable[tuple[str, str, Requirement]]) -> None:
        compiled: list[_Route] = []
        for method, path, requirement in routes:
            if not isinstance(requirement, Requirement):
                raise TypeError(f"route {method} {path}: expected a Requirement")
            if not path.startswith("/"):
                raise ValueError(f"route path {path!r} must start with '/'")
            regex, _format, convertors = compile_path(path)
            missing = requirement.parameters - set(convertors)
            if missing:
                raise ValueError(f"route {path!r} has no parameter {sorted(missing)[0]!r}")
            verb = method.upper()
            methods = frozenset({verb, "HEAD"} if verb == "GET" else {verb})
            compiled.append(_Route(methods, path, regex, convertors, requirement))
        self._routes = tuple(compiled)

    def __len__(self) -> int:
        return len(self._routes)

    def match(self, method: str, path: str, raw_path: str | None = None) -> Match | None:
        """The first protected route for ``method`` and the (decoded, raw) path, if any."""
        for route in self._routes:
            if method not in route.methods:
                continue
            raw = route.params(raw_path) if raw_path is not None else None
            params = raw if raw is not None else route.params(path)
            if params is None:
                continue
            multi = frozenset(
                n for n, c in route.convertors.items() if isinstance(c, PathConvertor)
            )
            return Match(method, route.path, route.requirement, params, multi)
        return None
