"""A small, real OpenID provider for the tests: Authlib's server parts served by Flask.

It is an OAuth 2.0 authorization server with OpenID Connect (``authlib.oauth2`` and
``authlib.oidc.core`` grants), run as its own process (``ProviderProcess`` in conftest.py):

- discovery (``/.well-known/openid-configuration``) and a JWKS with an RS256 and an ES256 key;
- the authorization-code flow with PKCE (S256 required) for the public client
  ``coupon-authority``; the user named by ``login_as`` is logged in automatically (no UI);
- ``client_credentials`` for confidential service clients;
- ID tokens (OpenID Connect Core) and RFC 9068 JWT access tokens (``typ: at+jwt``), signed
  with the current key of the configured algorithm;
- ``/admin/*`` for the tests: rotate a signing key, switch the algorithm, shift the clock,
  change the token lifetime, leave a claim out, answer discovery with another issuer, fail
  the JWKS, set its ``Cache-Control: max-age``, count requests.

Run it directly: ``python tests/oidc/provider.py --port 0``; it prints
``OpenID provider is up on <issuer>`` when ready.
"""

from __future__ import annotations

import argparse
import hmac
import itertools
import secrets
import sys
import threading
import time
from dataclasses import dataclass, field
from typing import Any

from authlib.integrations.flask_oauth2 import (  # type: ignore[import-untyped]
    AuthorizationServer,
)
from authlib.oauth2 import OAuth2Error  # type: ignore[import-untyped]
from authlib.oauth2.rfc6749 import (  # type: ignore[import-untyped]
    AuthorizationCodeMixin,
    ClientMixin,
)
from authlib.oauth2.rfc6749.grants import (  # type: ignore[import-untyped]
    AuthorizationCodeGrant,
    ClientCredentialsGrant,
)
from authlib.oauth2.rfc7636 import CodeChallenge  # type: ignore[import-untyped]
from authlib.oauth2.rfc9068 import JWTBearerTokenGenerator  # type: ignore[import-untyped]
from authlib.oidc.core import UserInfo  # type: ignore[import-untyped]
from authlib.oidc.core.grants import OpenIDCode  # type: ignore[import-untyped]
from flask import Flask, Response, jsonify, request
from joserfc.jwk import ECKey, KeyParameters, KeySet, RSAKey
from werkzeug.serving import make_server

AUTHORITY_CLIENT = "coupon-authority"
REDIRECT_URI = "http://127.0.0.1:8765/callback"
TOKEN_LIFETIME = 600

USERS: dict[str, dict[str, Any]] = {
    "alice": {"groups": ["coupon-issuers"], "tenant": "acme", "name": "Alice"},
    "bob": {"groups": ["staff"], "tenant": "acme", "name": "Bob"},
    "carol": {"groups": ["coupon-admins"], "tenant": "acme", "name": "Carol"},
}


@dataclass
class Client(ClientMixin):  # type: ignore[misc]
    """A registered client."""

    client_id: str
    secret: str | None
    grant_types: tuple[str, ...]
    claims: dict[str, Any] = field(default_factory=dict)
    audience: str = AUTHORITY_CLIENT
    redirect_uris: tuple[str, ...] = ()

    def get_client_id(self) -> str:
        return self.client_id

    def get_default_redirect_uri(self) -> str | None:
        return self.redirect_uris[0] if self.redirect_uris else None

    def get_allowed_scope(self, scope: str) -> str:
        allowed = {"openid", "profile", "coupon"}
        return " ".join(s for s in (scope or "").split() if s in allowed)

    def check_redirect_uri(self, redirect_uri: str) -> bool:
        return redirect_uri in self.redirect_uris

    def check_client_secret(self, client_secret: str) -> bool:
        return self.secret is not None and hmac.compare_digest(self.secret, client_secret)

    def check_endpoint_auth_method(self, method: str, endpoint: str) -> bool:
        if endpoint != "token":
            return True
        return method == "none" if self.secret is None else method != "none"

    def check_response_type(self, response_type: str) -> bool:
        return response_type == "code" and "authorization_code" in self.grant_types

    def check_grant_type(self, grant_type: str) -> bool:
        return grant_type in self.grant_types


CLIENTS: dict[str, Client] = {
    c.client_id: c
    for c in (
        Client(AUTHORITY_CLIENT, None, ("authorization_code",), redirect_uris=(REDIRECT_URI,)),
        Client(
            "orders-svc",
            "orders-secret",
            ("client_credentials",),
            {"groups": ["coupon-verifiers"], "tenant": "acme"},
        ),
        Client(
            "issuer-svc",
            "issuer-secret",
            ("client_credentials",),
            {"groups": ["coupon-issuers"], "tenant": "acme"},
        ),
        Client(
            "other-app",
            "other-secret",
            ("client_credentials",),
            {"groups": ["coupon-admins"], "tenant": "acme"},
            audience="other-app",
        ),
    )
}


@dataclass
class User:
    """A person who logs in."""

    user_id: str

    def get_user_id(self) -> str:
        return self.user_id


@dataclass
class Code(AuthorizationCodeMixin):  # type: ignore[misc]
    """An issued authorization code."""

    code: str
    client_id: str
    redirect_uri: str
    scope: str
    user_id: str
    nonce: str | None
    code_challenge: str | None
    code_challenge_method: str | None
    auth_time: int

    def get_redirect_uri(self) -> str:
        return self.redirect_uri

    def get_scope(self) -> str:
        return self.scope

    def get_nonce(self) -> str | None:
        return self.nonce

    def get_auth_time(self) -> int:
        return self.auth_time

    def get_acr(self) -> str | None:
        return None

    def get_amr(self) -> list[str] | None:
        return None


class State:
    """Keys, test knobs and request counters (shared by the server's threads)."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.issuer = ""
        self.serials = itertools.count(1)
        self.keys: dict[str, list[RSAKey | ECKey]] = {"RS256": [], "ES256": []}
        for alg in self.keys:
            self.rotate(alg, keep_old=False)
        self.codes: dict[str, Code] = {}
        self.config: dict[str, Any] = self.default_config()
        self.stats: dict[str, int] = {"discovery": 0, "jwks": 0, "token": 0}

    @staticmethod
    def default_config() -> dict[str, Any]:
        return {
            "signing_alg": "RS256",
            "clock_offset": 0,
            "omit_claims": [],
            "discovery_issuer": None,
            "jwks_status": 200,
            "jwks_max_age": 300,
            "token_lifetime": TOKEN_LIFETIME,
        }

    def rotate(self, alg: str, *, keep_old: bool) -> str:
        kid = f"{alg.lower()}-{next(self.serials)}-{secrets.token_hex(3)}"  # unique per process
        params: KeyParameters = {"kid": kid, "use": "sig", "alg": alg}
        key = (
            RSAKey.generate_key(2048, parameters=params, private=True)
            if alg == "RS256"
            else ECKey.generate_key("P-256", parameters=params, private=True)
        )
        with self.lock:
            self.keys[alg] = [key, *self.keys[alg]] if keep_old else [key]
        return kid

    def signing_keys(self) -> KeySet:
        alg = self.config["signing_alg"]
        return KeySet([self.keys[alg][0]])

    def public_jwks(self) -> dict[str, Any]:
        keys = [k.as_dict(private=False) for ks in self.keys.values() for k in ks]
        return {"keys": keys}

    def now(self) -> int:
        return int(time.time()) + int(self.config["clock_offset"])

    def times(self) -> dict[str, int]:
        now = self.now()
        return {"iat": now, "nbf": now, "exp": now + int(self.config["token_lifetime"])}


STATE = State()


class AccessTokens(JWTBearerTokenGenerator):  # type: ignore[misc]
    """RFC 9068 access tokens, audience per client, claims of the user or the client."""

    def __init__(self) -> None:
        super().__init__(issuer="")

    @property
    def issuer(self) -> str:
        return STATE.issuer

    @issuer.setter
    def issuer(self, value: str) -> None:
        pass

    @property
    def alg(self) -> str:
        return str(STATE.config["signing_alg"])

    @alg.setter
    def alg(self, value: str) -> None:
        pass

    def get_jwks(self) -> KeySet:
        return STATE.signing_keys()

    def get_audiences(self, client: Client, user: User | None, scope: str) -> str:
        return client.audience

    def get_extra_claims(
        self, client: Client, grant_type: str, user: User | None, scope: str
    ) -> dict[str, Any]:
        claims = dict(USERS[user.user_id]) if user is not None else dict(client.claims)
        claims.pop("name", None)
        claims.update(STATE.times())
        return claims


class IdTokens(OpenIDCode):  # type: ignore[misc]
    """ID tokens of the authorization-code flow."""

    def exists_nonce(self, nonce: str, request: Any) -> bool:
        return any(c.nonce == nonce for c in STATE.codes.values())

    def resolve_client_private_key(self, client: Client) -> KeySet:
        return STATE.signing_keys()

    def get_client_algorithm(self, client: Client) -> str:
        return str(STATE.config["signing_alg"])

    def get_encode_header(self, client: Client) -> dict[str, str]:
        return {"alg": self.get_client_algorithm(client)}

    def get_client_claims(self, client: Client) -> dict[str, Any]:
        times = STATE.times()
        return {"iss": STATE.issuer, "aud": [client.client_id], **times, "auth_time": times["iat"]}

    def generate_user_info(self, user: User, scope: str) -> UserInfo:
        info = {"sub": user.user_id, **USERS[user.user_id]}
        for name in STATE.config["omit_claims"]:
            info.pop(name, None)
        return UserInfo(info)


class CodeGrant(AuthorizationCodeGrant):  # type: ignore[misc]
    """The authorization-code grant, for public clients with PKCE."""

    TOKEN_ENDPOINT_AUTH_METHODS = ["none", "client_secret_basic", "client_secret_post"]  # noqa: RUF012

    def save_authorization_code(self, code: str, request: Any) -> None:
        data = request.payload.data
        STATE.codes[code] = Code(
            code=code,
            client_id=request.client.client_id,
            redirect_uri=request.payload.redirect_uri,
            scope=request.payload.scope,
            user_id=request.user.user_id,
            nonce=data.get("nonce"),
            code_challenge=data.get("code_challenge"),
            code_challenge_method=data.get("code_challenge_method"),
            auth_time=STATE.now(),
        )

    def query_authorization_code(self, code: str, client: Client) -> Code | None:
        found = STATE.codes.get(code)
        return found if found is not None and found.client_id == client.client_id else None

    def delete_authorization_code(self, authorization_code: Code) -> None:
        STATE.codes.pop(authorization_code.code, None)

    def authenticate_user(self, authorization_code: Code) -> User:
        return User(authorization_code.user_id)


def create_app(prefix: str = "") -> Flask:
    """The provider's Flask app (on :data:`STATE`), its endpoints under ``prefix``."""
    app = Flask("coupon-test-provider")
    server = AuthorizationServer(
        app, query_client=CLIENTS.get, save_token=lambda token, request: None
    )
    server.register_token_generator("default", AccessTokens())
    server.register_grant(CodeGrant, [CodeChallenge(required=True), IdTokens(require_nonce=True)])
    server.register_grant(ClientCredentialsGrant)

    @app.get(prefix + "/.well-known/openid-configuration")
    def discovery() -> Response:
        STATE.stats["discovery"] += 1
        issuer = STATE.config["discovery_issuer"] or STATE.issuer
        return jsonify(
            issuer=issuer,
            authorization_endpoint=f"{STATE.issuer}/authorize",
            token_endpoint=f"{STATE.issuer}/token",
            jwks_uri=f"{STATE.issuer}/jwks",
            response_types_supported=["code"],
            subject_types_supported=["public"],
            id_token_signing_alg_values_supported=["RS256", "ES256"],
            grant_types_supported=["authorization_code", "client_credentials"],
            code_challenge_methods_supported=["S256"],
            token_endpoint_auth_methods_supported=["none", "client_secret_basic"],
            scopes_supported=["openid", "profile", "coupon"],
        )

    @app.get(prefix + "/jwks")
    def jwks() -> Response:
        STATE.stats["jwks"] += 1
        status = int(STATE.config["jwks_status"])
        if status != 200:
            return Response("unavailable", status=status)
        response = jsonify(STATE.public_jwks())
        response.headers["Cache-Control"] = f"public, max-age={STATE.config['jwks_max_age']}"
        return response

    @app.get(prefix + "/authorize")
    def authorize() -> Any:
        user = request.args.get("login_as")
        end_user = User(user) if user in USERS else None
        try:
            grant = server.get_consent_grant(end_user=end_user)
        except OAuth2Error as error:
            return jsonify(error=error.error, description=error.description), 400
        return server.create_authorization_response(grant_user=end_user, grant=grant)

    @app.post(prefix + "/token")
    def token() -> Any:
        STATE.stats["token"] += 1
        return server.create_token_response()

    @app.post(prefix + "/admin/rotate")
    def rotate() -> Response:
        body = request.get_json(force=True)
        kid = STATE.rotate(body.get("alg", "RS256"), keep_old=bool(body.get("keep_old")))
        return jsonify(kid=kid, jwks=STATE.public_jwks())

    @app.post(prefix + "/admin/config")
    def configure() -> Response:
        body = request.get_json(force=True)
        if body.get("reset"):
            STATE.config = STATE.default_config()
        unknown = set(body) - set(STATE.config) - {"reset"}
        if unknown:
            return Response(f"unknown settings {sorted(unknown)}", status=400)
        STATE.config.update({k: v for k, v in body.items() if k != "reset"})
        return jsonify(STATE.config)

    @app.get(prefix + "/admin/stats")
    def stats() -> Response:
        return jsonify(STATE.stats)

    return app


def main(argv: list[str] | None = None) -> None:
    """Serve until killed; print the ready line with the issuer."""
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--issuer-path", default="", help="e.g. /realms/test")
    args = parser.parse_args(argv)
    app = create_app(args.issuer_path)
    server = make_server("127.0.0.1", args.port, app, threaded=True)
    STATE.issuer = f"http://127.0.0.1:{server.server_port}{args.issuer_path}"
    print(f"OpenID provider is up on {STATE.issuer}", flush=True)
    try:
        server.serve_forever()
    finally:
        server.server_close()
        sys.stdout.flush()


if __name__ == "__main__":
    main()
