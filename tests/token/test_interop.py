"""Coupons minted here verify with independent JOSE implementations (joserfc, PyJWT)."""

from __future__ import annotations

import jwt as pyjwt
import pytest
from joserfc import jws as jf_jws
from joserfc import jwt as jf_jwt
from joserfc.jwk import KeySet as JfKeySet
from joserfc.jwk import import_key as jf_import_key

from coupon import Binding, KeySet, SigningKey, attenuate, mint
from coupon.token import parse_chain

NOW = 1_800_000_000

# joserfc warns that the "EdDSA" name is deprecated by RFC 9864 in favour of "Ed25519"; the
# format keeps "EdDSA" (RFC 8037), which every JOSE library we checked still accepts.
pytestmark = pytest.mark.filterwarnings("ignore:EdDSA is deprecated")


def _coupon(issuer: SigningKey, holder: SigningKey) -> str:
    return mint(
        issuer,
        issuer="https://authority.example",
        subject="svc-a",
        audience=["orders-api", "billing-api"],
        tenant="acme",
        resource="orders/**",
        actions=["read", "write"],
        purpose="billing",
        binding=Binding(jkt=holder.public.thumbprint),
        now=NOW,
        ttl=600,
        jti="interop-1",
    )


@pytest.fixture(params=["EdDSA", "ES256"])
def issuer(request: pytest.FixtureRequest) -> SigningKey:
    return SigningKey.generate(request.param)


class TestJoserfc:
    def test_root_coupon_verifies_against_our_jwks(self, issuer: SigningKey) -> None:
        """joserfc checks the signature of our coupon with the JWKS we publish."""
        token = _coupon(issuer, SigningKey.generate())
        keys = JfKeySet.import_key_set(KeySet([issuer.public]).to_jwks())  # type: ignore[arg-type]
        decoded = jf_jwt.decode(token, keys, algorithms=[issuer.alg])
        assert decoded.header == {"alg": issuer.alg, "typ": "coupon+jwt", "kid": issuer.kid}
        assert decoded.claims["jti"] == "interop-1"
        assert decoded.claims["cnf"] == {"jkt": decoded.claims["cnf"]["jkt"]}

    def test_tampered_coupon_fails_in_joserfc(self, issuer: SigningKey) -> None:
        """joserfc rejects a coupon whose signature we corrupt, so the check above is real."""
        token = _coupon(issuer, SigningKey.generate())
        head, payload, sig = token.split(".")
        flipped = ("A" if sig[0] != "A" else "B") + sig[1:]
        keys = JfKeySet.import_key_set(KeySet([issuer.public]).to_jwks())  # type: ignore[arg-type]
        with pytest.raises(Exception, match="signature"):
            jf_jwt.decode(f"{head}.{payload}.{flipped}", keys, algorithms=[issuer.alg])

    def test_offline_link_verifies_with_its_embedded_key(self, issuer: SigningKey) -> None:
        """Each offline link is an ordinary JWS that joserfc verifies with the header's jwk."""
        holder, delegate = SigningKey.generate(), SigningKey.generate("ES256")
        chain = attenuate(
            _coupon(issuer, holder),
            holder,
            delegate=Binding(jkt=delegate.public.thumbprint),
            subject="svc-b",
            resource="orders/7",
            actions=["read"],
            now=NOW + 5,
        )
        link = parse_chain(chain, max_size=10_000, max_depth=4)[1]
        key = jf_import_key(link.header["jwk"])
        sig = jf_jws.deserialize_compact(link.raw, key, algorithms=[holder.alg])
        assert sig.headers()["jwk"] == link.header["jwk"]


class TestPyJWT:
    def test_root_coupon_decodes_with_pyjwt(self, issuer: SigningKey) -> None:
        """PyJWT verifies signature, audience and expiry of our coupon from our JWK."""
        token = _coupon(issuer, SigningKey.generate())
        key = pyjwt.PyJWK(issuer.public.jwk()).key
        claims = pyjwt.decode(
            token,
            key=key,
            algorithms=[issuer.alg],
            audience="billing-api",
            options={"verify_exp": False, "verify_nbf": False, "verify_iat": False},
        )
        assert claims["sub"] == "svc-a"
        assert claims["res"] == "orders/**"
        assert pyjwt.get_unverified_header(token)["typ"] == "coupon+jwt"

    def test_pyjwt_refuses_wrong_audience(self, issuer: SigningKey) -> None:
        """The PyJWT check is not vacuous: another audience fails there too."""
        token = _coupon(issuer, SigningKey.generate())
        key = pyjwt.PyJWK(issuer.public.jwk()).key
        with pytest.raises(pyjwt.InvalidAudienceError):
            pyjwt.decode(
                token,
                key=key,
                algorithms=[issuer.alg],
                audience="payments-api",
                options={"verify_exp": False, "verify_iat": False, "verify_nbf": False},
            )
