"""What a call's metadata, peer string and TLS auth context become for authenticators."""

from __future__ import annotations

import ipaddress
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st
from tests.grpc_support import TestCa

from coupon.errors import AuthenticationFailed, InvalidProof
from coupon.grpc_api._call import client_cert_chain, metadata_headers, peer_address


class TestMetadataHeaders:
    """gRPC metadata as header fields."""

    def test_text_values_kept_binary_dropped(self) -> None:
        """Text metadata becomes headers; ``-bin`` values are not header text."""
        headers = metadata_headers([("x-api-key", "k"), ("trace-bin", b"\x00"), ("a", "1")])
        assert headers == {"x-api-key": "k", "a": "1"}

    def test_repeated_ordinary_keys_keep_the_first(self) -> None:
        """A repeated key that names no caller keeps its first value."""
        assert metadata_headers([("x-tenant", "a"), ("x-tenant", "b")]) == {"x-tenant": "a"}

    @pytest.mark.parametrize("key", ["x-api-key", "authorization"])
    def test_repeated_credentials_are_refused(self, key: str) -> None:
        """Two credentials are an ambiguity, refused as CPN-AUTH-002."""
        with pytest.raises(AuthenticationFailed) as raised:
            metadata_headers([(key, "one"), (key, "two")])
        assert raised.value.code.code == "CPN-AUTH-002"

    def test_repeated_proofs_are_refused(self) -> None:
        """Two DPoP proofs: CPN-POP-002 (RFC 9449 §4.3)."""
        with pytest.raises(InvalidProof) as raised:
            metadata_headers([("dpop", "a"), ("dpop", "b")])
        assert raised.value.code.code == "CPN-POP-002"

    def test_none(self) -> None:
        """A call without metadata has no headers."""
        assert metadata_headers(None) == {}


class TestPeerAddress:
    """gRPC's peer strings."""

    @given(st.ip_addresses(v=4), st.integers(min_value=0, max_value=65535))
    def test_ipv4(self, address: ipaddress.IPv4Address, port: int) -> None:
        """``ipv4:a.b.c.d:port`` gives the address."""
        assert peer_address(f"ipv4:{address}:{port}") == str(address)

    @given(st.ip_addresses(v=6), st.integers(min_value=0, max_value=65535))
    def test_ipv6(self, address: ipaddress.IPv6Address, port: int) -> None:
        """``ipv6:[addr]:port`` gives the address without brackets."""
        assert peer_address(f"ipv6:[{address}]:{port}") == str(address)

    @pytest.mark.parametrize(
        "peer", ["", "unix:/tmp/sock", "ipv4:", "ipv6:::1:5", "ipv6:[::1]", "something"]
    )
    def test_others_are_none(self, peer: str) -> None:
        """Unix sockets and anything unexpected give no address."""
        assert peer_address(peer) is None

    @given(st.text(max_size=64))
    def test_never_raises(self, peer: str) -> None:
        """Whatever the string, an address or None."""
        assert peer_address(peer) is None or isinstance(peer_address(peer), str)


class TestClientCertChain:
    """The TLS auth context's certificates."""

    def test_leaf(self, tmp_path: Path) -> None:
        """``x509_pem_cert`` alone is the chain of one."""
        leaf = TestCa(tmp_path).issue("svc-a")
        assert client_cert_chain({"x509_pem_cert": [leaf.cert_pem]}) == (leaf.cert_pem.decode(),)

    def test_whole_chain_leaf_first(self, tmp_path: Path) -> None:
        """``x509_pem_cert_chain`` wins, split into its certificates in order."""
        ca = TestCa(tmp_path)
        leaf = ca.issue("svc-a")
        chain = client_cert_chain(
            {"x509_pem_cert": [leaf.cert_pem], "x509_pem_cert_chain": [leaf.cert_pem + ca.cert_pem]}
        )
        assert chain == (leaf.cert_pem.decode(), ca.cert_pem.decode())

    @pytest.mark.parametrize(
        "context",
        [{}, {"transport_security_type": [b"ssl"]}, {"x509_pem_cert": [b"not a certificate"]}],
    )
    def test_without_a_certificate(self, context: dict[str, list[bytes]]) -> None:
        """No client certificate: an empty chain."""
        assert client_cert_chain(context) == ()
