"""Raw JOSE pieces: strict base64url and JSON, the algorithm table, compact JWS.

.. warning::
   This is a hazardous-materials layer. It checks *structure*, not *meaning*: a JWS that
   parses here has not been verified for anything. Use :func:`coupon.verify` unless you are
   writing a verifier yourself.
"""

from ._algorithms import (
    ALGORITHMS,
    COUPON_ALGORITHMS,
    PRIVATE_JWK_MEMBERS,
    Algorithm,
    PublicKey,
    jwk_thumbprint,
    public_key_from_jwk,
    public_key_to_jwk,
    sign,
    verify_ed25519,
    verify_signature,
)
from ._encoding import b64url_decode, b64url_encode, dumps_compact, loads_object
from ._jws import CompactJWS, encode_compact, parse_compact

__all__ = [
    "ALGORITHMS",
    "COUPON_ALGORITHMS",
    "PRIVATE_JWK_MEMBERS",
    "Algorithm",
    "CompactJWS",
    "PublicKey",
    "b64url_decode",
    "b64url_encode",
    "dumps_compact",
    "encode_compact",
    "jwk_thumbprint",
    "loads_object",
    "parse_compact",
    "public_key_from_jwk",
    "public_key_to_jwk",
    "sign",
    "verify_ed25519",
    "verify_signature",
]
