"""The routes file: what it accepts, and that every mistake names its key."""

from __future__ import annotations

import copy
import re
from pathlib import Path
from typing import Any
from urllib.parse import unquote

import pytest
from hypothesis import given
from hypothesis import strategies as st
from tests.gateway.world import routes_file

from coupon import codes
from coupon.errors import GatewayError
from coupon.gateway import GatewayTable, check_path, load_config, parse_config

EXAMPLE = Path(__file__).parents[2] / "examples" / "orders" / "gateway.toml"


def test_the_shipped_example_parses() -> None:
    config = load_config(EXAMPLE)
    assert config.audience == "orders"
    assert [r.path for r in config.routes] == [
        "/orders/{order_id}",
        "/orders/{order_id}/refunds",
        "/health",
    ]
    refunds = config.routes[1]
    assert refunds.requirement is not None
    assert refunds.requirement.purpose == "billing"
    assert refunds.max_body == 4096
    assert config.routes[2].requirement is None
    assert config.upstreams["orders"].pipeline.breaker is not None
    assert config.upstreams["orders"].pipeline.breaker.break_duration == 5.0
    assert config.limits is not None
    assert config.limits.default.hard_per_s == 5


def test_defaults() -> None:
    config = parse_config(routes_file())
    route = config.routes[0]
    assert route.content_types == frozenset({"application/json"})
    assert route.max_body == 1024 * 1024
    assert route.idempotency
    assert route.rate_key == "default"
    assert config.api_key_env == "COUPON_GATEWAY_API_KEY"
    assert config.check_endpoint is True


def _broken(change: Any) -> dict[str, Any]:
    data = copy.deepcopy(routes_file())
    change(data)
    return data


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (lambda d: d.update(extra=1), "unknown setting 'extra'"),
        (lambda d: d["gateway"].update(audiance="x"), "gateway: unknown setting 'audiance'"),
        (lambda d: d["gateway"].pop("audience"), "gateway.audience"),
        (lambda d: d["gateway"].update(authority="ftp://x"), "gateway.authority"),
        (lambda d: d.update(routes=[]), "at least one"),
        (lambda d: d["routes"][0].update(methods=["BREW"]), "unknown method 'BREW'"),
        (lambda d: d["routes"][0].update(upstream="nope"), "no upstream named 'nope'"),
        (lambda d: d["routes"][0].pop("action"), "needs resource and action"),
        (lambda d: d["routes"][0].update(path="orders"), "must start with '/'"),
        (lambda d: d["routes"][0].update(path="/_coupon/x"), "reserved"),
        (lambda d: d["routes"][0].update(resource="orders/{nope}"), "no parameter 'nope'"),
        (lambda d: d["routes"][0].update(resource="orders/../x"), "resource template"),
        (lambda d: d["routes"][2].update(action="read"), "a public route takes no 'action'"),
        (lambda d: d["routes"][0].update(max_body=-1), "max_body"),
        (lambda d: d["routes"][0].update(content_types=["json"]), "not a media type"),
        (lambda d: d["routes"][0].update(public="yes"), "true or false"),
        (lambda d: d["routes"][3].update(strip_prefix="/v2"), "strip_prefix"),
        (lambda d: d["upstreams"]["orders"].update(pipeline={"retry": {"tries": 3}}), "tries"),
        (lambda d: d["upstreams"].update({"bad name": {"url": "http://x"}}), "a name is"),
        (lambda d: d["limits"]["default"].update(soft_per_s=500), "soft_per_s"),
        (lambda d: d["limits"].update(replicas=0), "limits.replicas"),
        (lambda d: d["gateway"].update(replay="shared"), 'gateway.replay must be "local"'),
        (lambda d: d["gateway"].update(replay="maybe"), "gateway.replay"),
        (lambda d: d["gateway"].update(check_from=["10.0.0.300/8"]), "gateway.check_from"),
    ],
)
def test_mistakes_name_their_key(change: Any, message: str) -> None:
    with pytest.raises(ValueError, match=re.escape(message)):
        parse_config(_broken(change))


def test_unreadable_toml_is_a_value_error(tmp_path: Path) -> None:
    path = tmp_path / "routes.toml"
    path.write_text("[gateway\n")
    with pytest.raises(ValueError, match="not valid TOML"):
        load_config(path)


def test_first_route_wins_and_head_follows_get() -> None:
    table = GatewayTable(parse_config(routes_file()).routes)
    assert table.match("HEAD", "/orders/7").path == "/orders/{order_id}"
    with pytest.raises(GatewayError) as caught:
        table.match("POST", "/orders/7")
    assert caught.value.code is codes.GATEWAY_METHOD


# -- path safety: a property ---------------------------------------------------------------------

_SEGMENT = st.text(alphabet="ab.%2fF5cC0/\\", min_size=0, max_size=6)


@given(st.lists(_SEGMENT, min_size=1, max_size=5))
def test_accepted_paths_mean_one_thing(segments: list[str]) -> None:
    """Whatever is accepted decodes to clean segments: no dot segment, no hidden separator."""
    raw = "/" + "/".join(segments)
    try:
        path = check_path(raw)
    except (GatewayError, UnicodeDecodeError):
        return
    assert path == unquote(raw)
    parts = path.split("/")[1:]
    assert all(p not in (".", "..") for p in parts)
    assert all(p for p in parts[:-1])
    assert "\\" not in path
    # Decoding never added a separator the raw path did not have.
    assert path.count("/") == raw.count("/")
