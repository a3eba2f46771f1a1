"""Gateway replicas sharing a real Redis: one limit, one idempotency record, one replay cache;
and what happens to each when Redis dies."""

from __future__ import annotations

import httpx
import pytest
from tests.gateway.world import EDGE, Authority, World, routes_file
from tests.redis_fixtures import PrivateRedis

from coupon import codes
from coupon.token import SigningKey

pytestmark = pytest.mark.asyncio


def _config(url: str, prefix: str, *, replay: str = "shared") -> dict[str, object]:
    config = routes_file()
    config["gateway"].update(redis=url, redis_prefix=prefix, replay=replay)
    config["limits"] = {
        "default": {"soft_per_s": 1, "hard_per_s": 1, "burst": 4, "window": 4},
        "replicas": 2,
    }
    return config


async def test_replicas_share_limits_keys_and_replay(redis_url: str, redis_prefix: str) -> None:
    authority, holder = Authority(), SigningKey.generate()
    config = _config(redis_url, redis_prefix)
    async with (
        World(config, authority=authority, holder=holder) as a,
        World(config, authority=authority, holder=holder) as b,
    ):
        auth = a.auth()
        # One hard limit across both: burst 4, whichever replica answers.
        statuses = [
            (await (a if n % 2 else b).client.get("/orders/1", auth=auth)).status_code
            for n in range(5)
        ]
        assert statuses == [200, 200, 200, 200, 429]

        other = a.auth(a.coupon(tenant="globex"))
        key = {"Idempotency-Key": '"shared-1"'}
        first = await a.client.post("/orders/1/refunds", json={"n": 1}, headers=key, auth=other)
        again = await b.client.post("/orders/1/refunds", json={"n": 1}, headers=key, auth=other)
        assert first.status_code == 200
        assert again.headers["idempotent-replayed"] == "true"
        assert a.upstream.calls + b.upstream.calls == 5

        # A proof used on one replica is a replay on the other.
        coupon = a.coupon(tenant="initech")
        signed = next(a.auth(coupon).auth_flow(httpx.Request("GET", EDGE + "/orders/1")))
        fields = {"authorization": signed.headers["authorization"], "dpop": signed.headers["dpop"]}
        assert (await a.client.get("/orders/1", headers=fields)).status_code == 200
        replayed = await b.client.get("/orders/1", headers=fields)
        assert replayed.status_code == 401
        assert 'error="invalid_dpop_proof"' in replayed.headers["www-authenticate"]


async def test_redis_dies_shared_replay_fails_closed(private_redis: PrivateRedis) -> None:
    async with World(_config(private_redis.url, "gw:")) as w:
        assert (await w.client.get("/orders/1", auth=w.auth())).status_code == 200
        private_redis.kill()
        down = await w.client.get("/orders/1", auth=w.auth())
        assert down.status_code == 503
        assert down.headers["retry-after"] == "1"
        assert w.upstream.calls == 1
        assert (await w.client.get("/public/a")).status_code == 200


async def test_redis_dies_limits_degrade_to_the_replica_share(
    private_redis: PrivateRedis,
) -> None:
    """With a local replay cache, reads go on; limits go in-process at 1/replicas."""
    async with World(_config(private_redis.url, "gw:", replay="local")) as w:
        auth = w.auth()
        assert (await w.client.get("/orders/1", auth=auth)).status_code == 200
        assert w.metric("coupon_ratelimit_degraded") == 0
        private_redis.kill()
        answers = [await w.client.get("/orders/1", auth=auth) for _ in range(3)]
        # burst 4 // 2 replicas = 2 admitted in-process, then refused: never unlimited.
        assert [r.status_code for r in answers] == [200, 200, 429]
        assert answers[2].json()["code"] == codes.RATE_TENANT.code
        assert w.metric("coupon_ratelimit_degraded") == 1
        policy = answers[0].headers["ratelimit-policy"]
        assert policy.endswith(";q=2;w=4")  # half of the 4-per-4-s quota
        keyed = await w.client.post(
            "/orders/1/refunds",
            json={"n": 1},
            headers={"Idempotency-Key": '"k"'},
            auth=w.auth(w.coupon(tenant="globex")),
        )
        assert keyed.status_code == 503  # cannot promise "once": refused, never run twice
        assert keyed.json()["code"] == codes.UNAVAILABLE_STORAGE.code
        assert w.upstream.calls == 3
