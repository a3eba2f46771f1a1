"""Private keys sealed at rest: ``coupon.keys._sealing``."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest
from pydantic import SecretStr

from coupon.keys import MASTER_KEY_FILE, MasterKey, SealedKeys, SealingError, open_sealed, seal
from coupon.settings import Settings
from coupon.storage.base import KeyRecord
from coupon.token import SigningKey

KID = "key-1"


def settings(data_dir: Path, master_key: str | None = None) -> Settings:
    # model_validate skips the COUPON_* environment, so the tests see only these values.
    secret = SecretStr(master_key) if master_key is not None else None
    return Settings.model_validate({"data_dir": data_dir, "master_key": secret})


@pytest.fixture
def master() -> MasterKey:
    return MasterKey.generate()


@pytest.fixture
def jwk() -> dict[str, str]:
    return SigningKey.generate("EdDSA", kid=KID).private_jwk()


class TestSeal:
    @pytest.mark.parametrize("alg", ["EdDSA", "ES256"])
    def test_round_trip(self, master: MasterKey, alg: str) -> None:
        """A sealed private JWK opens to the same JWK, and the key still signs."""
        key = SigningKey.generate(alg, kid=KID)
        opened = open_sealed(master, KID, seal(master, KID, key.private_jwk()))
        assert opened == key.private_jwk()
        assert key.public.verify(SigningKey.from_jwk(opened).sign(b"m"), b"m")

    def test_layout(self, master: MasterKey, jwk: dict[str, str]) -> None:
        """A blob is a version byte, a 12-byte nonce, the ciphertext and a 16-byte tag."""
        blob = seal(master, KID, jwk)
        assert blob[0] == 1
        assert b'"d"' not in blob
        assert jwk["d"].encode() not in blob

    def test_nonce_is_fresh(self, master: MasterKey, jwk: dict[str, str]) -> None:
        """Sealing twice gives different blobs (a random nonce each time)."""
        assert seal(master, KID, jwk)[1:13] != seal(master, KID, jwk)[1:13]

    def test_other_kid_fails(self, master: MasterKey, jwk: dict[str, str]) -> None:
        """A blob moved onto another key's row does not open (the kid is associated data)."""
        blob = seal(master, KID, jwk)
        with pytest.raises(SealingError, match="moved from another kid"):
            open_sealed(master, "key-2", blob)

    def test_other_master_fails(self, master: MasterKey, jwk: dict[str, str]) -> None:
        """A blob sealed under another master key does not open, and the error names ours."""
        blob = seal(MasterKey.generate(), KID, jwk)
        with pytest.raises(SealingError, match=master.fingerprint):
            open_sealed(master, KID, blob)

    def test_every_bit_flip_fails(self, master: MasterKey, jwk: dict[str, str]) -> None:
        """Flipping any single bit of a blob makes it fail to open."""
        blob = seal(master, KID, jwk)
        for bit in range(len(blob) * 8):
            mutated = bytearray(blob)
            mutated[bit // 8] ^= 1 << (bit % 8)
            with pytest.raises(SealingError):
                open_sealed(master, KID, bytes(mutated))

    @pytest.mark.parametrize("size", [0, 1, 13, 28])
    def test_truncated_fails(self, master: MasterKey, size: int) -> None:
        """A blob too short to hold a nonce and a tag is refused before decryption."""
        with pytest.raises(SealingError, match="truncated"):
            open_sealed(master, KID, b"\x01" * size)

    def test_unknown_version_fails(self, master: MasterKey, jwk: dict[str, str]) -> None:
        """A blob of another format version is refused by name."""
        blob = b"\x02" + seal(master, KID, jwk)[1:]
        with pytest.raises(SealingError, match="version 2"):
            open_sealed(master, KID, blob)


class TestMasterKey:
    def test_wrong_size_is_misuse(self) -> None:
        """Building a master key from other than 32 bytes is a programming error."""
        with pytest.raises(ValueError, match="32 bytes"):
            MasterKey(b"short")

    def test_text_round_trip(self, master: MasterKey) -> None:
        """The base64url text form loads back to the same key."""
        again = MasterKey.from_text(master.to_text())
        assert again.fingerprint == master.fingerprint

    @pytest.mark.parametrize("text", ["not base64!", "AAAA", "A" * 44, ""])
    def test_bad_text(self, text: str) -> None:
        """Text that is not base64url of exactly 32 bytes is refused."""
        with pytest.raises(SealingError, match="master key"):
            MasterKey.from_text(text)

    def test_repr_hides_the_key(self, master: MasterKey) -> None:
        """The repr shows the fingerprint, never the key."""
        assert master.to_text() not in repr(master)
        assert master.fingerprint in repr(master)


class TestLoadOrCreate:
    def test_from_setting(self, tmp_path: Path, master: MasterKey) -> None:
        """COUPON_MASTER_KEY wins, and no file is written."""
        loaded = MasterKey.load_or_create(settings(tmp_path, master.to_text()))
        assert loaded.fingerprint == master.fingerprint
        assert not (tmp_path / MASTER_KEY_FILE).exists()

    def test_bad_setting(self, tmp_path: Path) -> None:
        """A malformed COUPON_MASTER_KEY is refused, not replaced by a file."""
        with pytest.raises(SealingError):
            MasterKey.load_or_create(settings(tmp_path, "nope"))

    def test_creates_private_file(self, tmp_path: Path) -> None:
        """On first use the key file is created with mode 0600 and no temporary is left."""
        data_dir = tmp_path / "var"
        created = MasterKey.load_or_create(settings(data_dir))
        path = data_dir / MASTER_KEY_FILE
        assert stat.S_IMODE(path.stat().st_mode) == 0o600
        assert [p.name for p in data_dir.iterdir()] == [MASTER_KEY_FILE]
        assert path.read_text().strip() == created.to_text()

    def test_reuses_file(self, tmp_path: Path) -> None:
        """A second start reads the same key back."""
        first = MasterKey.load_or_create(settings(tmp_path))
        second = MasterKey.load_or_create(settings(tmp_path))
        assert first.fingerprint == second.fingerprint

    @pytest.mark.parametrize("mode", [0o644, 0o640, 0o604, 0o660])
    def test_refuses_open_mode(self, tmp_path: Path, mode: int) -> None:
        """A key file that group or others may access is refused with the fix in the message."""
        MasterKey.load_or_create(settings(tmp_path))
        path = tmp_path / MASTER_KEY_FILE
        os.chmod(path, mode)
        with pytest.raises(SealingError, match="chmod 600"):
            MasterKey.load_or_create(settings(tmp_path))

    def test_accepts_read_only(self, tmp_path: Path) -> None:
        """A key file readable by its owner only (0400) is fine."""
        first = MasterKey.load_or_create(settings(tmp_path))
        os.chmod(tmp_path / MASTER_KEY_FILE, 0o400)
        assert MasterKey.load_or_create(settings(tmp_path)).fingerprint == first.fingerprint

    def test_damaged_file(self, tmp_path: Path) -> None:
        """A key file that does not hold a key is refused, naming the file."""
        path = tmp_path / MASTER_KEY_FILE
        path.write_bytes(b"\xff\xfe")
        os.chmod(path, 0o600)
        with pytest.raises(SealingError, match=MASTER_KEY_FILE):
            MasterKey.load_or_create(settings(tmp_path))

    def test_file_with_wrong_size(self, tmp_path: Path) -> None:
        """A key file holding base64url of the wrong length is refused, naming the file."""
        path = tmp_path / MASTER_KEY_FILE
        path.write_text("AAAA\n")
        os.chmod(path, 0o600)
        with pytest.raises(SealingError, match=f"{MASTER_KEY_FILE}: master key must be 32"):
            MasterKey.load_or_create(settings(tmp_path))

    def test_never_overwrites(self, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
        """When another process creates the file first, its key is used, not ours."""
        theirs = MasterKey.generate()
        path = tmp_path / MASTER_KEY_FILE
        real_link = os.link

        def racing_link(src: str, dst: Path) -> None:
            fd = os.open(dst, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            os.write(fd, theirs.to_text().encode())
            os.close(fd)
            real_link(src, dst)

        monkeypatch.setattr(os, "link", racing_link)
        loaded = MasterKey.load_or_create(settings(tmp_path))
        assert loaded.fingerprint == theirs.fingerprint
        assert path.read_text() == theirs.to_text()
        assert [p.name for p in tmp_path.iterdir()] == [MASTER_KEY_FILE]


class TestSealedKeys:
    def test_generate_then_load(self, master: MasterKey) -> None:
        """A generated key, stored sealed, loads back as a signer for the same public key."""
        backend = SealedKeys(master)
        signer, sealed = backend.generate("ES256")
        record = KeyRecord(signer.kid, signer.alg, "next", signer.public.jwk(), sealed, 0)
        loaded = backend.load(record)
        assert loaded.public.jwk() == signer.public.jwk()
        assert signer.public.verify(loaded.sign(b"m"), b"m")

    def test_no_sealed_private(self, master: MasterKey) -> None:
        """A row without a sealed private key (an HSM key) cannot be loaded here."""
        key = SigningKey.generate()
        record = KeyRecord(key.kid, key.alg, "current", key.public.jwk(), None, 0)
        with pytest.raises(SealingError, match="no sealed private key"):
            SealedKeys(master).load(record)

    def test_repr(self, master: MasterKey) -> None:
        """The repr names the master key by fingerprint only."""
        assert (
            repr(SealedKeys(master)) == f"SealedKeys(MasterKey(fingerprint={master.fingerprint!r}))"
        )
