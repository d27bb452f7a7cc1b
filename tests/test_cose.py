"""COSE_Sign1 envelopes: exact RFC 9052 structure, deterministic signatures, strict rejection."""

from __future__ import annotations

import hashlib
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any, Final

import cbor2
import pytest
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.utils import (
    decode_dss_signature,
    encode_dss_signature,
)

from agent import cose
from agent.errors import IntegrityError, KeyMaterialError

CONTENT_TYPE: Final = "application/vnd.homehub.reading+cbor"
PAYLOAD: Final = cbor2.dumps(
    {
        "v": 1,
        "hub": "hub-0001",
        "seq": 7,
        "id": "urn:uuid:0f1e2d3c-4b5a-6978-8796-a5b4c3d2e1f0",
        "kind": "observation",
        "hub_time": "2026-11-23T10:00:00Z",
        "fhir": {"resourceType": "Bundle", "type": "collection"},
    },
    canonical=True,
)

# A fixed key: the tests below must not depend on a random draw.
KEY: Final = ec.derive_private_key(
    int.from_bytes(b"homehub cose test key 0123456789", "big"), ec.SECP256R1()
)
OTHER_KEY: Final = ec.derive_private_key(
    int.from_bytes(b"homehub cose other key 012345678", "big"), ec.SECP256R1()
)
KID: Final = cose.key_id(KEY.public_key())


def _envelope(payload: bytes = PAYLOAD) -> bytes:
    return cose.sign1(payload, KEY, KID, CONTENT_TYPE)


def _reason(message: bytes, key: ec.EllipticCurvePrivateKey = KEY) -> str:
    with pytest.raises(IntegrityError) as caught:
        cose.verify1(message, key.public_key())
    assert caught.value.what == "COSE_Sign1"
    return caught.value.reason


def _parts(message: bytes) -> list[Any]:
    """The four elements of a (valid) envelope, as mutable Python values."""
    tag = cbor2.loads(message)
    return [tag.value[0], dict(tag.value[1]), tag.value[2], tag.value[3]]


def _rebuild(parts: list[Any]) -> bytes:
    return cbor2.dumps(cbor2.CBORTag(18, parts), canonical=True)


def _raw(message: bytes, unprotected: bytes) -> bytes:
    """The envelope re-assembled by hand with raw bytes in the unprotected position."""
    protected, _, payload, signature = _parts(message)
    return (
        b"\xd2\x84" + cbor2.dumps(protected) + unprotected + cbor2.dumps(payload)
        + cbor2.dumps(signature)
    )  # fmt: skip


def _protected(header: dict[Any, Any]) -> bytes:
    return cbor2.dumps(header, canonical=True)


def _resigned(protected: bytes, payload: bytes = PAYLOAD) -> bytes:
    """An envelope with a chosen protected header and a *valid* signature over it."""
    tbs = cbor2.dumps(["Signature1", protected, b"", payload], canonical=True)
    r, s = decode_dss_signature(KEY.sign(tbs, ec.ECDSA(hashes.SHA256())))
    return _rebuild([protected, {}, payload, r.to_bytes(32, "big") + s.to_bytes(32, "big")])


class TestStructure:
    def test_round_trip(self) -> None:
        """verify1 returns exactly what sign1 signed, with the protected header's fields."""
        message = cose.verify1(_envelope(), KEY.public_key())
        assert message.payload == PAYLOAD
        assert message.alg == -7
        assert message.kid == KID
        assert message.content_type == CONTENT_TYPE

    def test_rfc9052_layout_field_by_field(self) -> None:
        """Tag 18 over [bstr protected, {}, bstr payload, 64-byte r||s], signing Sig_structure."""
        envelope = _envelope()
        assert envelope[0] == 0xD2  # major type 6, tag 18, one byte
        assert envelope[1] == 0x84  # array of 4
        tag = cbor2.loads(envelope)
        assert tag.tag == 18
        protected, unprotected, payload, signature = tag.value
        assert (
            bytes.fromhex("a30126037824") + CONTENT_TYPE.encode() + bytes.fromhex("0450") + KID
            == protected
        )
        assert dict(unprotected) == {}
        assert payload == PAYLOAD
        assert len(signature) == 64
        assert (len(protected), len(PAYLOAD)) == (60, 161)
        to_be_signed = (
            bytes.fromhex("846a") + b"Signature1"  # array(4), text(10)
            + bytes.fromhex("583c") + protected  # bstr(60)
            + bytes.fromhex("40")  # external_aad: bstr(0)
            + bytes.fromhex("58a1") + PAYLOAD  # bstr(161)
        )  # fmt: skip
        assert cbor2.dumps(["Signature1", protected, b"", PAYLOAD]) == to_be_signed
        r = int.from_bytes(signature[:32], "big")
        s = int.from_bytes(signature[32:], "big")
        KEY.public_key().verify(encode_dss_signature(r, s), to_be_signed, ec.ECDSA(hashes.SHA256()))

    def test_overhead_is_fixed(self) -> None:
        """Envelope = payload + 133 bytes: tag, array, 60-byte header, {}, 64-byte r||s, heads."""
        assert len(PAYLOAD) + 133 == len(_envelope())

    def test_kid_is_sha256_of_spki(self) -> None:
        """kid = SHA-256 over the DER SubjectPublicKeyInfo, first 16 bytes."""
        spki = KEY.public_key().public_bytes(
            serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
        )
        assert hashlib.sha256(spki).digest()[:16] == cose.key_id(KEY.public_key())

    def test_resigning_is_byte_identical(self) -> None:
        """RFC 6979: signing the same payload again gives the same envelope, byte for byte."""
        first = _envelope()
        assert first == _envelope()
        assert first == cose.sign1(PAYLOAD, KEY, KID, CONTENT_TYPE)

    def test_different_payloads_give_different_signatures(self) -> None:
        """Determinism is per payload, not a constant signature."""
        other = cbor2.dumps({"v": 1, "seq": 8}, canonical=True)
        assert _parts(_envelope())[3] != _parts(_envelope(other))[3]

    def test_large_payload_round_trips(self) -> None:
        """A payload near the 32 KiB bound (cbor2 #304 territory, > 4096 bytes) round-trips."""
        big = cbor2.dumps({"pad": b"\xab" * 32_000}, canonical=True)
        assert big == cose.verify1(_envelope(big), KEY.public_key()).payload

    def test_repr_hides_the_payload(self) -> None:
        """A Sign1Message's repr never shows the reading."""
        text = repr(cose.verify1(_envelope(), KEY.public_key()))
        assert "hub-0001" not in text
        assert "payload" not in text


class TestTampering:
    def test_every_single_bit_flip_is_rejected(self) -> None:
        """Flipping any one bit anywhere in the envelope makes verification fail."""
        envelope = _envelope()
        accepted = []
        for index in range(len(envelope)):
            for bit in range(8):
                flipped = bytearray(envelope)
                flipped[index] ^= 1 << bit
                try:
                    cose.verify1(bytes(flipped), KEY.public_key())
                except IntegrityError:
                    continue
                accepted.append((index, bit))
        assert accepted == []
        assert len(envelope) > 200  # the loop covered header, payload and signature

    def test_flipped_payload_bit_fails_the_signature(self) -> None:
        """A reading altered in transit is refused because the signature does not verify."""
        envelope = bytearray(_envelope())
        envelope[envelope.index(b"hub_time") + 12] ^= 0x01
        assert _reason(bytes(envelope)) == "signature does not verify"

    def test_another_key_is_refused_by_kid(self) -> None:
        """Verifying with a key that did not sign fails on the kid before the signature."""
        assert _reason(_envelope(), OTHER_KEY) == "kid does not match the verification key"

    def test_same_kid_other_key_fails_signature(self) -> None:
        """An envelope claiming our kid but signed by another key fails the signature."""
        forged = cose.sign1(PAYLOAD, OTHER_KEY, KID, CONTENT_TYPE)
        assert _reason(forged) == "signature does not verify"

    def test_wrong_content_type_when_expected(self) -> None:
        """expected_content_type rejects a different one."""
        message = cose.sign1(PAYLOAD, KEY, KID, "application/cbor")
        with pytest.raises(IntegrityError) as caught:
            cose.verify1(message, KEY.public_key(), expected_content_type=CONTENT_TYPE)
        assert f"content type 'application/cbor', expected {CONTENT_TYPE!r}" == caught.value.reason


def _swap(index: int, value: Any) -> Callable[[bytes], bytes]:
    def change(message: bytes) -> bytes:
        parts = _parts(message)
        parts[index] = value
        return _rebuild(parts)

    return change


NOT_TAG18: Final = "not a tagged COSE_Sign1 (CBOR tag 18 expected)"
TOO_LARGE: Final = (
    f"envelope of {cose.MAX_MESSAGE_BYTES + 1} bytes exceeds {cose.MAX_MESSAGE_BYTES}"
)

MALFORMED: Final[list[tuple[str, Callable[[bytes], bytes], str]]] = [
    ("untagged", lambda m: m[1:], NOT_TAG18),
    ("tag 18 in two bytes", lambda m: b"\xd8\x12" + m[1:], NOT_TAG18),
    ("tag 98 (COSE_Sign)", lambda m: b"\xd8\x62" + m[1:], NOT_TAG18),
    ("empty", lambda m: b"", NOT_TAG18),
    ("tag around a map", lambda m: b"\xd2\xa0", "tag 18 must wrap an array, not a map"),
    ("three elements", lambda m: _rebuild(_parts(m)[:3]), "array of 3 elements, COSE_Sign1 has 4"),
    (
        "five elements",
        lambda m: _rebuild([*_parts(m), b""]),
        "array of 5 elements, COSE_Sign1 has 4",
    ),
    ("protected as map", _swap(0, {1: -7}), "protected header is a map, not a byte string"),
    ("unprotected as bstr", _swap(1, b""), "unprotected header is a byte string, not a map"),
    ("unprotected not empty", _swap(1, {4: b"x"}), "unprotected header must be empty"),
    ("detached payload", _swap(2, None), "detached payload not supported"),
    ("payload as text", _swap(2, "x"), "payload is a text string, not a byte string"),
    ("signature as int", _swap(3, 5), "signature is an integer, not a byte string"),
    ("short signature", _swap(3, b"\x01" * 63), "signature is 63 bytes, ES256 needs 64"),
    ("trailing byte", lambda m: m + b"\x00", "envelope: 1 trailing bytes after the CBOR item"),
    ("truncated", lambda m: m[:-1], "envelope: truncated CBOR"),
    (
        "indefinite array",
        lambda m: b"\xd2\x9f" + m[2:] + b"\xff",
        "envelope: indefinite-length CBOR item",
    ),
    (
        "duplicate keys in unprotected",
        lambda m: _raw(m, b"\xa2\x01\x26\x01\x26"),
        "envelope: duplicate map keys",
    ),
    (
        "datetime tag in unprotected",
        _swap(1, {1: cbor2.CBORTag(1, 0)}),
        "envelope: CBOR tag 1 not allowed",
    ),
    (
        "unknown tag in unprotected",
        _swap(1, {1: cbor2.CBORTag(9999, 0)}),
        "envelope: CBOR tag 9999 not allowed",
    ),
    (
        "too deep",
        lambda m: _rebuild([b"", {1: [[[1]]]}, b"", b""]),
        "envelope: CBOR nested too deeply",
    ),
    ("too large", lambda m: b"\xd2" + b"\x00" * cose.MAX_MESSAGE_BYTES, TOO_LARGE),
    (
        "non-shortest length",
        lambda m: m[:2] + b"\x59\x00" + m[3:],  # bstr(60) as 59 00 3c instead of 58 3c
        "envelope not in deterministic CBOR encoding",
    ),
    ("empty protected", _swap(0, b""), "protected header is empty (alg is required)"),
    ("protected not a map", _swap(0, cbor2.dumps([1])), "protected header is an array, not a map"),
    (
        "protected trailing",
        _swap(0, _protected({1: -7, 3: CONTENT_TYPE, 4: KID}) + b"\x00"),
        "protected header: 1 trailing bytes after the CBOR item",
    ),
    (
        "protected duplicate keys",
        _swap(0, bytes.fromhex("a401260126") + _protected({3: CONTENT_TYPE, 4: KID})[1:]),
        "protected header: duplicate map keys",
    ),
    ("no alg", _swap(0, _protected({3: CONTENT_TYPE, 4: KID})), "protected header lacks label 1"),
    ("no kid", _swap(0, _protected({1: -7, 3: CONTENT_TYPE})), "protected header lacks label 4"),
    (
        "crit header",
        _swap(0, _protected({1: -7, 2: [1], 3: CONTENT_TYPE, 4: KID})),
        "unknown protected header label(s) 2",
    ),
    (
        "ES384",
        _swap(0, _protected({1: -35, 3: CONTENT_TYPE, 4: KID})),
        "unknown alg -35, only ES256 (-7) is accepted",
    ),
    (
        "alg as text",
        _swap(0, _protected({1: "ES256", 3: CONTENT_TYPE, 4: KID})),
        "unknown alg 'ES256', only ES256 (-7) is accepted",
    ),
    (
        "content type as int",
        _swap(0, _protected({1: -7, 3: 60, 4: KID})),
        "content type is an integer, not a text string",
    ),
    (
        "short kid",
        _swap(0, _protected({1: -7, 3: CONTENT_TYPE, 4: KID[:8]})),
        "kid is 8 bytes, expected 16",
    ),
    (
        "header keys out of order",
        _swap(0, cbor2.dumps({4: KID, 3: CONTENT_TYPE, 1: -7})),
        "protected header not in deterministic CBOR encoding",
    ),
]


class TestMalformed:
    @pytest.mark.parametrize(
        ("change", "reason"),
        [pytest.param(change, reason, id=name) for name, change, reason in MALFORMED],
    )
    def test_rejected_with_reason(self, change: Callable[[bytes], bytes], reason: str) -> None:
        """A malformed envelope raises IntegrityError whose reason names the fault."""
        assert reason == _reason(change(_envelope()))

    def test_header_checks_hold_even_with_a_valid_signature(self) -> None:
        """A correctly signed envelope with a non-deterministic header is still refused."""
        message = _resigned(cbor2.dumps({4: KID, 3: CONTENT_TYPE, 1: -7}))
        assert _reason(message) == "protected header not in deterministic CBOR encoding"

    def test_control_envelope_passes(self) -> None:
        """The unmodified envelope the table starts from verifies (the table tests something)."""
        assert cose.verify1(_rebuild(_parts(_envelope())), KEY.public_key()).payload == PAYLOAD


class TestKeys:
    def test_sign_refuses_a_p384_key(self) -> None:
        """ES256 needs P-256: another curve is a KeyMaterialError."""
        with pytest.raises(KeyMaterialError) as caught:
            cose.sign1(PAYLOAD, ec.generate_private_key(ec.SECP384R1()), KID)
        assert caught.value.reason == "not a P-256 (secp256r1) key, ES256 needs one"

    def test_sign_refuses_a_short_kid(self) -> None:
        """The kid is 16 bytes; anything else is the caller's bug."""
        with pytest.raises(ValueError, match="kid must be 16 bytes, got 8"):
            cose.sign1(PAYLOAD, KEY, KID[:8])

    def _write_key(self, path: Path, key: ec.EllipticCurvePrivateKey, mode: int) -> Path:
        path.write_bytes(
            key.private_bytes(
                serialization.Encoding.PEM,
                serialization.PrivateFormat.PKCS8,
                serialization.NoEncryption(),
            )
        )
        os.chmod(path, mode)
        return path

    def test_load_signing_key(self, tmp_path: Path) -> None:
        """A 0600 PEM P-256 key loads and signs envelopes the public key verifies."""
        key = cose.load_signing_key(self._write_key(tmp_path / "hub.key", KEY, 0o600))
        assert cose.key_id(key.public_key()) == KID
        assert cose.verify1(cose.sign1(PAYLOAD, key, KID), KEY.public_key()).payload == PAYLOAD

    def test_key_readable_by_others_is_refused(self, tmp_path: Path) -> None:
        """Mode 0644 is refused, naming the mode."""
        path = self._write_key(tmp_path / "hub.key", KEY, 0o644)
        with pytest.raises(KeyMaterialError) as caught:
            cose.load_signing_key(path)
        assert f"{path}: mode 0644 lets group or others read it, must be 0600" == (
            caught.value.reason
        )

    def test_missing_key(self, tmp_path: Path) -> None:
        """A missing key file is a KeyMaterialError that names the file."""
        with pytest.raises(KeyMaterialError) as caught:
            cose.load_signing_key(tmp_path / "nope.key")
        assert f"{tmp_path / 'nope.key'}: file not found" == caught.value.reason

    def test_symlinked_key_is_refused(self, tmp_path: Path) -> None:
        """A symlink is not followed (O_NOFOLLOW)."""
        target = self._write_key(tmp_path / "real.key", KEY, 0o600)
        link = tmp_path / "link.key"
        link.symlink_to(target)
        with pytest.raises(KeyMaterialError) as caught:
            cose.load_signing_key(link)
        assert caught.value.reason.startswith(f"{link}: cannot be opened")

    def test_not_pem(self, tmp_path: Path) -> None:
        """Garbage in a key file is refused without echoing it."""
        path = tmp_path / "hub.key"
        path.write_bytes(b"not a key at all")
        os.chmod(path, 0o600)
        with pytest.raises(KeyMaterialError) as caught:
            cose.load_signing_key(path)
        assert f"{path}: not an unencrypted PEM private key" == caught.value.reason

    def test_p384_key_file(self, tmp_path: Path) -> None:
        """A P-384 key file is refused: ES256 is P-256 only."""
        path = self._write_key(tmp_path / "hub.key", ec.generate_private_key(ec.SECP384R1()), 0o600)
        with pytest.raises(KeyMaterialError) as caught:
            cose.load_signing_key(path)
        assert caught.value.reason == "not a P-256 (secp256r1) key, ES256 needs one"


class TestCompressionLabels:
    """Labels -70001 ("zstd") and -70002 (dictionary id): signed, returned, strictly checked."""

    def test_round_trip_with_a_dictionary(self) -> None:
        message = cose.sign1(PAYLOAD, KEY, KID, CONTENT_TYPE)
        compressed = cose.sign1_with(
            PAYLOAD, _sign, KID, CONTENT_TYPE, payload_encoding="zstd", dictionary_id=1
        )
        verified = cose.verify1(compressed, KEY.public_key(), allow_compression=True)
        assert ("zstd", 1, PAYLOAD) == (verified.encoding, verified.dictionary_id, verified.payload)
        plain = cose.verify1(message, KEY.public_key(), allow_compression=True)
        assert (None, None) == (plain.encoding, plain.dictionary_id)

    def test_protected_header_bytes(self) -> None:
        """Deterministic order: 1, 3, 4, then -70001 and -70002 (major type 1 after 0)."""
        protected = _parts(
            cose.sign1_with(
                PAYLOAD, _sign, KID, CONTENT_TYPE, payload_encoding="zstd", dictionary_id=258
            )
        )[0]
        expected = (
            b"\xa5\x01\x26\x03\x78\x24" + CONTENT_TYPE.encode() + b"\x04\x50" + KID
            + b"\x3a\x00\x01\x11\x70\x64zstd" + b"\x3a\x00\x01\x11\x71\x19\x01\x02"
        )  # fmt: skip
        assert expected == protected
        assert protected == cose.protected_header(
            CONTENT_TYPE, KID, payload_encoding="zstd", dictionary_id=258
        )

    def test_without_compression_the_bytes_are_unchanged(self) -> None:
        assert cose.sign1(PAYLOAD, KEY, KID, CONTENT_TYPE) == cose.sign1_with(
            PAYLOAD, _sign, KID, CONTENT_TYPE, payload_encoding=None, dictionary_id=None
        )

    def test_refused_unless_the_caller_decompresses(self) -> None:
        compressed = cose.sign1_with(PAYLOAD, _sign, KID, CONTENT_TYPE, payload_encoding="zstd")
        assert "compressed payload where a plain one is expected" == _reason(compressed)

    @pytest.mark.parametrize(
        ("extra", "reason"),
        [
            ({-70001: "gzip"}, "unknown payload encoding 'gzip'"),
            ({-70001: 1}, "payload encoding is an integer, not a text string"),
            ({-70001: None}, "payload encoding is null, not a text string"),
            ({-70002: 1}, "label -70002 (zstd dictionary) without payload encoding"),
            ({-70001: "zstd", -70002: "1"}, "zstd dictionary id is a text string, not an"),
            ({-70001: "zstd", -70002: 0}, "zstd dictionary id 0 out of 1..2147483647"),
            ({-70001: "zstd", -70002: -3}, "zstd dictionary id -3 out of 1..2147483647"),
            ({-70001: "zstd", -70002: 2**31}, "zstd dictionary id 2147483648 out of"),
            ({-70001: "zstd", -70003: 1}, "unknown protected header label(s) -70003"),
            ({-70001: "zstd", 2: [1]}, "unknown protected header label(s) 2"),
        ],
    )
    def test_bad_labels(self, extra: dict[int, Any], reason: str) -> None:
        header = {1: -7, 3: CONTENT_TYPE, 4: KID, **extra}
        message = _resigned(_protected(header))
        with pytest.raises(IntegrityError) as caught:
            cose.verify1(message, KEY.public_key(), allow_compression=True)
        assert caught.value.reason.startswith(reason)

    @pytest.mark.parametrize(
        ("header", "match"),
        [
            ({"payload_encoding": "gzip"}, "unknown payload encoding"),
            ({"dictionary_id": 1}, "needs payload_encoding"),
            ({"payload_encoding": "zstd", "dictionary_id": 0}, "out of 1.."),
            ({"payload_encoding": "zstd", "dictionary_id": True}, "out of 1.."),
        ],
    )
    def test_signing_refuses_bad_labels(self, header: dict[str, Any], match: str) -> None:
        with pytest.raises(ValueError, match=match):
            cose.sign1_with(PAYLOAD, _sign, KID, CONTENT_TYPE, **header)

    def test_batch_size_bound_is_opt_in(self) -> None:
        big = b"\0" * (40 * 1024)
        with pytest.raises(ValueError, match="exceeds"):
            cose.sign1_with(big, _sign, KID, CONTENT_TYPE)
        message = cose.sign1_with(big, _sign, KID, CONTENT_TYPE, max_payload_bytes=len(big))
        assert "exceeds" in _reason(message)
        verified = cose.verify1(
            message, KEY.public_key(), max_message_bytes=cose.MAX_BATCH_MESSAGE_BYTES
        )
        assert big == verified.payload

    def test_split1_reads_without_verifying(self) -> None:
        message = cose.sign1_with(PAYLOAD, _sign, KID, CONTENT_TYPE, payload_encoding="zstd")
        split = cose.split1(message)
        assert (PAYLOAD, "zstd", KID) == (split.payload, split.encoding, split.kid)
        with pytest.raises(IntegrityError):
            cose.split1(message[:-1])


def _sign(message: bytes) -> bytes:
    return cose.es256_sign(KEY, message)
