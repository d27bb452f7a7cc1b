"""Tests for agent/sealing.py: the data key file, AEAD sealing, keyed hashes, record AAD."""

from __future__ import annotations

import hashlib
import hmac
import os
import pickle
import stat
from pathlib import Path

import pytest
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.ciphers.aead import AESGCM, ChaCha20Poly1305
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from agent.errors import IntegrityError, KeyMaterialError
from agent.sealing import (
    KEY_FILE_SIZE,
    SEAL_OVERHEAD_BYTES,
    AeadAlgorithm,
    DataKey,
    Sealer,
    check_key_placement,
    create_data_key,
    load_data_key,
    record_aad,
    sync_state_aad,
)

FIXED_KEY = bytes(range(32))


def _hkdf(key: bytes, label: bytes) -> bytes:
    return HKDF(algorithm=hashes.SHA256(), length=32, salt=None, info=label).derive(key)


@pytest.fixture
def key_path(tmp_path: Path) -> Path:
    (tmp_path / "keys").mkdir()
    return tmp_path / "keys" / "data.key"


class TestKeyFile:
    def test_create_makes_private_file_of_fixed_size(self, key_path: Path) -> None:
        """A new key file is a 50-byte regular file with mode 0600, and loads back."""
        created = create_data_key(key_path)
        st = os.stat(key_path)
        assert stat.S_IMODE(st.st_mode) == 0o600
        assert st.st_size == KEY_FILE_SIZE == 50
        assert load_data_key(key_path).key_id == created.key_id
        assert key_path.read_bytes()[:10] == b"HHDATKEY\x01\x00"

    def test_create_ignores_permissive_umask(self, key_path: Path) -> None:
        """The key file is 0600 even when the process umask is 0."""
        old = os.umask(0)
        try:
            create_data_key(key_path)
        finally:
            os.umask(old)
        assert stat.S_IMODE(os.stat(key_path).st_mode) == 0o600

    def test_create_never_replaces_an_existing_key(self, key_path: Path) -> None:
        """Creating over an existing file fails, leaves it unchanged and leaves no temp file."""
        create_data_key(key_path)
        before = key_path.read_bytes()
        with pytest.raises(KeyMaterialError) as info:
            create_data_key(key_path)
        assert info.value.reason == "already exists; refusing to replace a data key"
        assert key_path.read_bytes() == before
        assert [p.name for p in key_path.parent.iterdir()] == ["data.key"]

    def test_create_in_missing_directory_fails(self, tmp_path: Path) -> None:
        """A key cannot be created in a directory that does not exist."""
        with pytest.raises(KeyMaterialError) as info:
            create_data_key(tmp_path / "nope" / "data.key")
        assert info.value.reason == "cannot create: No such file or directory"

    @pytest.mark.parametrize("mode", [0o644, 0o640, 0o604, 0o660, 0o601])
    def test_load_refuses_group_or_other_bits(self, key_path: Path, mode: int) -> None:
        """A key file readable or writable by group/other is refused, naming its mode."""
        create_data_key(key_path)
        key_path.chmod(mode)
        with pytest.raises(KeyMaterialError) as info:
            load_data_key(key_path)
        assert info.value.reason == f"mode {mode:04o} gives group/other access; need 0600"

    def test_load_accepts_0400(self, key_path: Path) -> None:
        """A read-only owner mode (systemd LoadCredential gives 0400) is accepted."""
        created = create_data_key(key_path)
        key_path.chmod(0o400)
        assert load_data_key(key_path).key_id == created.key_id

    def test_load_refuses_missing_file(self, key_path: Path) -> None:
        """A missing key file is a KeyMaterialError naming the path."""
        with pytest.raises(KeyMaterialError) as info:
            load_data_key(key_path)
        assert info.value.what == f"data key file {key_path}"
        assert info.value.reason == "missing (create it with the hub's init step)"

    def test_load_refuses_directory(self, key_path: Path) -> None:
        """A directory in place of the key file is refused."""
        key_path.mkdir(mode=0o700)
        with pytest.raises(KeyMaterialError) as info:
            load_data_key(key_path)
        assert info.value.reason == "not a regular file"

    @pytest.mark.parametrize(
        ("edit", "reason"),
        [
            (lambda b: b[:-1], "size 49 bytes, expected 50"),
            (lambda b: b + b"\x00", "size 51 bytes, expected 50"),
            (lambda b: b"XXDATKEY" + b[8:], "not a homehub data key file (bad magic)"),
            (lambda b: b[:8] + b"\x02" + b[9:], "unsupported format version 2"),
            (lambda b: b[:9] + b"\x01" + b[10:], "unsupported key protection 0x01"),
            (
                lambda b: b[:20] + bytes([b[20] ^ 1]) + b[21:],
                "check value mismatch: the key file is damaged",
            ),
            (
                lambda b: b[:-1] + bytes([b[-1] ^ 0x80]),
                "check value mismatch: the key file is damaged",
            ),
        ],
    )
    def test_load_refuses_bad_format(self, key_path: Path, edit: object, reason: str) -> None:
        """A truncated, padded, foreign, future or damaged key file is refused with a reason."""
        create_data_key(key_path)
        data = key_path.read_bytes()
        key_path.write_bytes(edit(data))  # type: ignore[operator]
        with pytest.raises(KeyMaterialError) as info:
            load_data_key(key_path)
        assert info.value.reason == reason
        assert data[10:42].hex() not in str(info.value)

    def test_file_format_round_trip(self) -> None:
        """The file bytes are magic, version, protection, key, HMAC check value."""
        data = DataKey(FIXED_KEY).to_file_bytes()
        check = hmac.new(FIXED_KEY, b"homehub key check v1", hashlib.sha256).digest()[:8]
        assert data == b"HHDATKEY\x01\x00" + FIXED_KEY + check
        assert DataKey.from_file_bytes(data).key_id == DataKey(FIXED_KEY).key_id


class TestSecrecy:
    def test_repr_and_str_hide_the_key(self) -> None:
        """DataKey and Sealer reprs show a derived key id, never the key or subkeys."""
        key = DataKey(FIXED_KEY)
        sealer = Sealer(key)
        texts = [repr(key), str(key), repr(sealer), str(sealer)]
        secrets = [FIXED_KEY, _hkdf(FIXED_KEY, b"homehub seal v1")]
        secrets.append(_hkdf(FIXED_KEY, b"homehub dedup v1"))
        for text in texts:
            for secret in secrets:
                assert secret.hex() not in text
                assert repr(secret)[2:-1] not in text
        assert repr(key) == f"DataKey(key_id={key.key_id!r})"
        assert repr(sealer) == f"Sealer(key_id={key.key_id!r}, algorithm=CHACHA20_POLY1305)"

    def test_key_id_is_a_derived_label(self) -> None:
        """The key id is 16 hex digits from HKDF, stable for one key, different for another."""
        expected = HKDF(hashes.SHA256(), 8, None, b"homehub key id v1").derive(FIXED_KEY).hex()
        assert DataKey(FIXED_KEY).key_id == expected
        assert DataKey(bytes(32)).key_id != expected

    def test_pickling_refused(self) -> None:
        """Neither the key nor a sealer can be pickled out of the process."""
        with pytest.raises(TypeError):
            pickle.dumps(DataKey(FIXED_KEY))
        with pytest.raises(TypeError):
            pickle.dumps(Sealer(DataKey(FIXED_KEY)))

    def test_wrong_key_length_refused(self) -> None:
        """A data key must be exactly 32 bytes; the error does not echo the bytes."""
        with pytest.raises(KeyMaterialError) as info:
            DataKey(b"\xab" * 31)
        assert info.value.reason == "must be 32 bytes, got 31"


class TestSealer:
    @pytest.mark.parametrize("algorithm", list(AeadAlgorithm))
    def test_round_trip(self, algorithm: AeadAlgorithm) -> None:
        """A sealed record opens with the same aad; prefix says the algorithm; +29 bytes."""
        sealer = Sealer(DataKey(FIXED_KEY), algorithm)
        aad = record_aad("hub-1", 7, "observation")
        sealed = sealer.seal(b"reading 120/80", aad=aad)
        assert sealed[0] == algorithm.value
        assert len(sealed) == len(b"reading 120/80") + SEAL_OVERHEAD_BYTES
        assert sealer.open(sealed, aad=aad) == b"reading 120/80"

    def test_default_is_chacha20_poly1305(self) -> None:
        """Without a choice, records are sealed with ChaCha20-Poly1305 (prefix 0x01)."""
        assert Sealer(DataKey(FIXED_KEY)).seal(b"x", aad=b"a")[0] == 0x01

    @pytest.mark.parametrize(
        ("algorithm", "aead"),
        [(AeadAlgorithm.CHACHA20_POLY1305, ChaCha20Poly1305), (AeadAlgorithm.AES_256_GCM, AESGCM)],
    )
    def test_format_matches_independent_implementation(
        self, algorithm: AeadAlgorithm, aead: type[ChaCha20Poly1305] | type[AESGCM]
    ) -> None:
        """prefix‖nonce‖ct‖tag under the HKDF 'homehub seal v1' subkey, aad = prefix‖aad."""
        sealed = Sealer(DataKey(FIXED_KEY), algorithm).seal(b"canary", aad=b"ctx")
        cipher = aead(_hkdf(FIXED_KEY, b"homehub seal v1"))
        assert cipher.decrypt(sealed[1:13], sealed[13:], sealed[:1] + b"ctx") == b"canary"

    def test_fresh_nonce_per_record(self) -> None:
        """Sealing the same plaintext twice gives different nonces and ciphertexts."""
        sealer = Sealer(DataKey(FIXED_KEY))
        a, b = sealer.seal(b"same", aad=b""), sealer.seal(b"same", aad=b"")
        assert a[1:13] != b[1:13]
        assert a[13:] != b[13:]

    def test_open_accepts_either_algorithm(self) -> None:
        """A sealer set to AES-GCM still opens ChaCha20 records, and vice versa."""
        key = DataKey(FIXED_KEY)
        chacha = Sealer(key, AeadAlgorithm.CHACHA20_POLY1305)
        aes = Sealer(key, AeadAlgorithm.AES_256_GCM)
        assert aes.open(chacha.seal(b"r1", aad=b"a"), aad=b"a") == b"r1"
        assert chacha.open(aes.seal(b"r2", aad=b"a"), aad=b"a") == b"r2"

    def test_wrong_aad_fails(self) -> None:
        """A record moved to another seq, kind or hub fails to open."""
        sealer = Sealer(DataKey(FIXED_KEY))
        sealed = sealer.seal(b"r", aad=record_aad("hub-1", 7, "observation"))
        for aad in (
            record_aad("hub-1", 8, "observation"),
            record_aad("hub-1", 7, "health"),
            record_aad("hub-2", 7, "observation"),
        ):
            with pytest.raises(IntegrityError) as info:
                sealer.open(sealed, aad=aad)
            assert info.value.reason == "CHACHA20_POLY1305 authentication failed (30 bytes)"

    @pytest.mark.parametrize("position", [1, 6, 12, 13, 14, 29])
    def test_any_flipped_bit_fails(self, position: int) -> None:
        """Flipping a bit in the nonce, ciphertext or tag makes open fail."""
        sealer = Sealer(DataKey(FIXED_KEY))
        sealed = bytearray(sealer.seal(b"r", aad=b"a"))
        sealed[position] ^= 0x01
        with pytest.raises(IntegrityError):
            sealer.open(bytes(sealed), aad=b"a")

    def test_switched_algorithm_byte_fails(self) -> None:
        """Relabelling a ChaCha20 record as AES-GCM fails (the prefix is authenticated)."""
        sealer = Sealer(DataKey(FIXED_KEY))
        sealed = sealer.seal(b"r", aad=b"a")
        with pytest.raises(IntegrityError) as info:
            sealer.open(b"\x02" + sealed[1:], aad=b"a")
        assert info.value.reason == "AES_256_GCM authentication failed (30 bytes)"

    def test_unknown_prefix_and_short_input(self) -> None:
        """An unknown algorithm byte or a too-short record is an IntegrityError with a reason."""
        sealer = Sealer(DataKey(FIXED_KEY))
        sealed = sealer.seal(b"r", aad=b"a")
        with pytest.raises(IntegrityError) as info:
            sealer.open(b"\x7f" + sealed[1:], aad=b"a")
        assert info.value.reason == "unknown algorithm id 0x7f"
        with pytest.raises(IntegrityError) as info:
            sealer.open(sealed[:28], aad=b"a")
        assert info.value.reason == "too short (28 bytes)"

    def test_other_key_fails(self) -> None:
        """A record sealed under one key does not open under another."""
        sealed = Sealer(DataKey(FIXED_KEY)).seal(b"r", aad=b"a")
        with pytest.raises(IntegrityError):
            Sealer(DataKey(bytes(32))).open(sealed, aad=b"a")


class TestKeyedHash:
    def test_known_answer(self) -> None:
        """keyed_hash is HMAC-SHA256 under HKDF(key, info='homehub dedup v1')."""
        subkey = _hkdf(FIXED_KEY, b"homehub dedup v1")
        expected = hmac.new(subkey, b"SN123|2026-01-01T08:00", hashlib.sha256).digest()
        assert Sealer(DataKey(FIXED_KEY)).keyed_hash(b"SN123|2026-01-01T08:00") == expected

    def test_depends_on_key(self) -> None:
        """The same dedup key hashes differently under another data key."""
        a = Sealer(DataKey(FIXED_KEY)).keyed_hash(b"k")
        b = Sealer(DataKey(bytes(32))).keyed_hash(b"k")
        assert len(a) == len(b) == 32
        assert a != b


class TestAad:
    def test_exact_encoding(self) -> None:
        """record_aad is length-prefixed context, hub id, u64 seq, kind, all big-endian."""
        assert record_aad("hub-1", 258, "obs") == (
            b"\x00\x11homehub record v1"
            + b"\x00\x05hub-1"
            + b"\x00\x00\x00\x00\x00\x00\x01\x02"
            + b"\x00\x03obs"
        )

    def test_unambiguous(self) -> None:
        """Moving characters between hub id and kind changes the AAD."""
        assert record_aad("ab", 1, "c") != record_aad("a", 1, "bc")
        assert sync_state_aad("h", "ab", "c") != sync_state_aad("h", "a", "bc")
        assert sync_state_aad("h", "d", "k") != record_aad("h", 0, "d")

    @pytest.mark.parametrize(
        ("hub", "seq", "kind"), [("", 1, "k"), ("h", 1, ""), ("h", -1, "k"), ("h", 2**64, "k")]
    )
    def test_rejects_out_of_range(self, hub: str, seq: int, kind: str) -> None:
        """Empty texts and a seq outside unsigned 64 bits are a caller's bug (ValueError)."""
        with pytest.raises(ValueError, match=r"must"):
            record_aad(hub, seq, kind)

    def test_accepts_u64_max(self) -> None:
        """The largest unsigned 64-bit seq encodes as eight 0xff bytes."""
        assert record_aad("h", 2**64 - 1, "k")[22:30] == b"\xff" * 8


class TestPlacement:
    def test_key_beside_database_refused(self, tmp_path: Path) -> None:
        """A key file in the database's directory (or below it) is refused."""
        (tmp_path / "state" / "keys").mkdir(parents=True)
        db = tmp_path / "state" / "outbox.db"
        for key in (tmp_path / "state" / "data.key", tmp_path / "state" / "keys" / "data.key"):
            key.touch()
            with pytest.raises(KeyMaterialError) as info:
                check_key_placement(key, db)
            assert info.value.reason == f"lies inside the database directory {db.parent}"

    def test_key_apart_on_same_filesystem(self, tmp_path: Path) -> None:
        """A key in another directory passes; same filesystem is reported as False."""
        (tmp_path / "state").mkdir()
        (tmp_path / "keys").mkdir()
        key = tmp_path / "keys" / "data.key"
        key.touch()
        assert check_key_placement(key, tmp_path / "state" / "outbox.db") is False
