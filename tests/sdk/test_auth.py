"""``DPoPAuth``: the proof it signs, the one nonce retry, the remembered nonce (sync, async)."""

from __future__ import annotations

import asyncio
import time

import httpx
import pytest

from coupon.sdk import DPoPAuth
from coupon.token import SigningKey, verify_dpop_proof

URL = "https://api.example/orders/1?x=2"
COUPON = "header.payload.signature"
NONCE_CHALLENGE = 'DPoP error="use_dpop_nonce", error_description="nonce required"'


class Server:
    """A MockTransport handler that demands ``nonce`` and records every request."""

    def __init__(self, *, nonce: str | None = "n-1", always_challenge: bool = False) -> None:
        self.nonce = nonce
        self.always_challenge = always_challenge
        self.requests: list[httpx.Request] = []
        self.proofs: list[str] = []
        self.authorizations: list[str] = []

    def __call__(self, request: httpx.Request) -> httpx.Response:
        # httpx resends the same Request object: keep the headers as they were sent.
        self.requests.append(request)
        self.proofs.append(request.headers["DPoP"])
        self.authorizations.append(request.headers["Authorization"])
        proof = verify_dpop_proof(
            request.headers["DPoP"],
            method=request.method,
            uri=str(request.url),
            now=time.time(),
            access_token=request.headers["Authorization"].removeprefix("DPoP "),
        )
        if self.nonce is not None and (self.always_challenge or proof.nonce != self.nonce):
            return httpx.Response(
                401,
                headers={"WWW-Authenticate": NONCE_CHALLENGE, "DPoP-Nonce": self.nonce},
            )
        return httpx.Response(200, json={"nonce": proof.nonce, "jti": proof.jti})


@pytest.fixture
def key() -> SigningKey:
    return SigningKey.generate()


def test_proof_verifies_for_method_url_and_ath(key: SigningKey) -> None:
    """The proof is by the holder key, for this method and URL, with ``ath`` of the coupon."""
    server = Server(nonce=None)
    with httpx.Client(transport=httpx.MockTransport(server)) as client:
        response = client.post(URL, auth=DPoPAuth(key, COUPON), json={"a": 1})
    assert response.status_code == 200
    (request,) = server.requests
    assert request.headers["Authorization"] == f"DPoP {COUPON}"
    proof = verify_dpop_proof(
        request.headers["DPoP"], method="POST", uri=URL, now=time.time(), access_token=COUPON
    )
    assert proof.jkt == key.public.thumbprint
    assert proof.htu == "https://api.example/orders/1"


def test_nonce_challenge_is_answered_once(key: SigningKey) -> None:
    """A ``use_dpop_nonce`` 401 is answered with a proof carrying the nonce, then it succeeds."""
    server = Server(nonce="n-1")
    with httpx.Client(transport=httpx.MockTransport(server)) as client:
        response = client.get(URL, auth=DPoPAuth(key, COUPON))
    assert response.status_code == 200
    assert response.json()["nonce"] == "n-1"
    assert len(server.requests) == 2
    first, second = server.proofs
    assert first != second
    checked = verify_dpop_proof(first, method="GET", uri=URL, now=time.time(), access_token=COUPON)
    assert checked.nonce is None


def test_nonce_challenge_is_not_answered_twice(key: SigningKey) -> None:
    """A server that challenges again gets its second 401 back: two requests in all."""
    server = Server(nonce="n-1", always_challenge=True)
    with httpx.Client(transport=httpx.MockTransport(server)) as client:
        response = client.get(URL, auth=DPoPAuth(key, COUPON))
    assert response.status_code == 401
    assert len(server.requests) == 2


def test_other_401_is_not_retried(key: SigningKey) -> None:
    """A 401 without ``use_dpop_nonce`` (or without a nonce) is returned as it is."""
    calls: list[httpx.Request] = []

    def handler(request: httpx.Request) -> httpx.Response:
        calls.append(request)
        headers = {"WWW-Authenticate": 'DPoP error="invalid_token"', "DPoP-Nonce": "n"}
        return httpx.Response(401, headers=headers)

    with httpx.Client(transport=httpx.MockTransport(handler)) as client:
        assert client.get(URL, auth=DPoPAuth(key, COUPON)).status_code == 401
    assert len(calls) == 1


def test_nonce_is_remembered_per_origin(key: SigningKey) -> None:
    """After one challenge the next request carries the nonce straight away."""
    server = Server(nonce="n-1")
    auth = DPoPAuth(key, COUPON)
    with httpx.Client(transport=httpx.MockTransport(server)) as client:
        client.get(URL, auth=auth)
        client.get("https://api.example/other", auth=auth)
    assert len(server.requests) == 3
    assert auth.nonce_for("https://api.example/anything") == "n-1"
    assert auth.nonce_for("https://elsewhere.example/") is None


def test_nonce_from_a_success_is_remembered(key: SigningKey) -> None:
    """A ``DPoP-Nonce`` on a 200 (a rotated nonce) is used by the next request."""

    def handler(request: httpx.Request) -> httpx.Response:
        return httpx.Response(200, headers={"DPoP-Nonce": "fresh"})

    auth = DPoPAuth(key, COUPON)
    with httpx.Client(transport=httpx.MockTransport(handler)) as client:
        client.get(URL, auth=auth)
    assert auth.nonce_for(URL) == "fresh"


def test_coupon_callable_is_read_per_request(key: SigningKey) -> None:
    """A callable source is asked for the coupon on each request."""
    tokens = iter(["a.b.c", "d.e.f"])
    server = Server(nonce=None)
    auth = DPoPAuth(key, lambda: next(tokens))
    with httpx.Client(transport=httpx.MockTransport(server)) as client:
        client.get(URL, auth=auth)
        client.get(URL, auth=auth)
    assert server.authorizations == ["DPoP a.b.c", "DPoP d.e.f"]


def test_async_client(key: SigningKey) -> None:
    """The same flow drives ``httpx.AsyncClient``: challenge answered once, proof valid."""
    server = Server(nonce="n-2")

    async def run() -> httpx.Response:
        async with httpx.AsyncClient(transport=httpx.MockTransport(server)) as client:
            return await client.post(URL, auth=DPoPAuth(key, COUPON), content=b"body")

    response = asyncio.run(run())
    assert response.status_code == 200
    assert len(server.requests) == 2
    assert server.requests[1].content == b"body"


def test_rejects_a_non_coupon() -> None:
    """Misuse: the coupon must be a str or a callable."""
    with pytest.raises(TypeError):
        DPoPAuth(SigningKey.generate(), 42)  # type: ignore[arg-type]
