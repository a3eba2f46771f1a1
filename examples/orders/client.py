"""Call the example orders service the way a real client does: SDK, coupon and DPoP.

    python examples/orders/client.py http://127.0.0.1:9000 --authority http://127.0.0.1:8700

It asks the Authority for a coupon bound to a fresh holder key (tenant ``acme``, audience
``orders``, ``orders/123``, actions read and refund, purpose billing), then shows:

1. ``allowed``   — ``GET /orders/123`` with the coupon and a DPoP proof: 200;
2. ``denied``    — ``GET /orders/456``, wider than the coupon: 403 ``insufficient_scope``;
3. ``replayed``  — ``POST /orders/123/refunds`` twice with one ``Idempotency-Key``: the
   second answer is the first one, replayed (same refund id, ``Idempotent-Replayed: true``);
4. ``throttled`` — reads in a burst until the tenant's hard limit answers 429.

The Authority API key (role issuer) is read from ``COUPON_API_KEY``. ``--json`` prints one
JSON object with what each step saw (the tests read it).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import secrets
import sys
from typing import Any

import httpx

from coupon.sdk import AuthorityClient, DPoPAuth
from coupon.token import SigningKey


async def run(service: str, authority: str, api_key: str, *, burst: int) -> dict[str, Any]:
    holder = SigningKey.generate()
    async with AuthorityClient(authority, api_key=api_key) as issuer:
        issued = await issuer.issue(
            subject="alice",
            audience=["orders"],
            tenant="acme",
            resource="orders/123",
            actions=["read", "refund"],
            purpose="billing",
            binding_key=holder,
            ttl=300,
        )
    seen: dict[str, Any] = {"coupon": issued.jti}
    auth = DPoPAuth(holder, issued.coupon)
    async with httpx.AsyncClient(base_url=service, auth=auth, timeout=10) as client:
        ok = await client.get("/orders/123")
        seen["allowed"] = {"status": ok.status_code, "body": ok.json()}
        wider = await client.get("/orders/456")
        seen["denied"] = {
            "status": wider.status_code,
            "www_authenticate": wider.headers.get("www-authenticate", ""),
        }
        key = f'"{secrets.token_hex(8)}"'
        answers = []
        for _ in range(2):
            r = await client.post(
                "/orders/123/refunds", json={"amount": 5}, headers={"Idempotency-Key": key}
            )
            answers.append(
                {
                    "status": r.status_code,
                    "refund": r.json().get("refund"),
                    "replayed": r.headers.get("idempotent-replayed") == "true",
                }
            )
        seen["replayed"] = answers
        throttled: dict[str, Any] = {"status": None, "after": None}
        for n in range(1, burst + 1):
            r = await client.get("/orders/123")
            if r.status_code == 429:
                throttled = {
                    "status": 429,
                    "after": n,
                    "retry_after": r.headers.get("retry-after"),
                    "ratelimit": r.headers.get("ratelimit"),
                    "policy": r.headers.get("ratelimit-policy"),
                }
                break
        seen["throttled"] = throttled
    return seen


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("service", help="the orders service (or the edge in front of it)")
    parser.add_argument("--authority", default="http://127.0.0.1:8700")
    parser.add_argument("--burst", type=int, default=50, help="most reads sent to hit 429")
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    args = parser.parse_args()
    api_key = os.environ.get("COUPON_API_KEY", "")
    if not api_key:
        parser.error("set COUPON_API_KEY to an Authority API key (role issuer)")
    seen = asyncio.run(run(args.service, args.authority, api_key, burst=args.burst))
    if args.json:
        print(json.dumps(seen))
        return 0
    first, second = seen["replayed"]
    denied, t = seen["denied"], seen["throttled"]
    print(f"allowed:   GET /orders/123 -> {seen['allowed']['status']}")
    print(f"denied:    GET /orders/456 -> {denied['status']}  {denied['www_authenticate']}")
    print(
        f"replayed:  POST /orders/123/refunds twice -> refund {first['refund']}, "
        f"then refund {second['refund']} again (Idempotent-Replayed: {second['replayed']})"
    )
    print(
        f"throttled: 429 after {t['after']} reads; "
        f"Retry-After {t.get('retry_after')}; RateLimit {t.get('ratelimit')}"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
