"""Compact envelopes: single and batch, compressed with a dictionary, opened strictly."""

from __future__ import annotations

import functools
from typing import Any, Final

import cbor2
import pytest
import zstandard
from cryptography.hazmat.primitives.asymmetric import ec

from agent import cose, dictionaries, envelopes
from agent.dictionaries import Dictionary
from agent.envelopes import (
    BATCH_CONTENT_TYPE,
    MAX_BATCH_READINGS,
    MAX_DECOMPRESSED_BYTES,
    ReadingPayload,
    build_batch,
    build_single,
    open_envelope,
)
from agent.errors import IntegrityError, RecordTooLargeError
from agent.ingest import Signer
from agent.payload import CONTENT_TYPE
from hil.train_dictionaries import SyntheticReading, hub_backlog, synthetic_readings

KEY: Final = ec.derive_private_key(
    int.from_bytes(b"homehub envelopes test key 01234", "big"), ec.SECP256R1()
)
OTHER_KEY: Final = ec.derive_private_key(
    int.from_bytes(b"homehub envelopes other key 0123", "big"), ec.SECP256R1()
)
SIGNER: Final = Signer.from_key(KEY)
PUBLIC: Final = KEY.public_key()
DICTIONARIES: Final = dictionaries.load()
DICTIONARY: Final = DICTIONARIES[1]


def _stored(readings: list[SyntheticReading]) -> list[ReadingPayload]:
    return [ReadingPayload.from_stored(cbor2.loads(r.payload)["seq"], r.envelope) for r in readings]


@functools.cache
def _backlog(count: int) -> list[ReadingPayload]:
    return _stored(hub_backlog(count, 4242))


def _tiny(count: int, hub: str = "hub-0001", size: int = 0) -> list[ReadingPayload]:
    """Small synthetic reading payloads (``size`` bytes of filler each)."""
    return [
        ReadingPayload(
            seq,
            hub,
            cbor2.dumps({"v": 1, "hub": hub, "seq": seq, "pad": b"x" * size}, canonical=True),
        )
        for seq in range(1, count + 1)
    ]


def _signed(payload: bytes, content_type: str = BATCH_CONTENT_TYPE, **header: Any) -> bytes:
    return cose.sign1_with(
        payload,
        SIGNER.sign,
        SIGNER.kid,
        content_type,
        max_payload_bytes=MAX_DECOMPRESSED_BYTES,
        **header,
    )


def _reason(message: bytes, key: ec.EllipticCurvePrivateKey = KEY) -> str:
    with pytest.raises(IntegrityError) as caught:
        open_envelope(message, key.public_key(), DICTIONARIES)
    return caught.value.reason


class TestSingle:
    def test_compressed_single_opens_to_the_stored_payload(self) -> None:
        reading = _backlog(3)[0]
        envelope = build_single(reading, SIGNER, DICTIONARY)
        opened = open_envelope(envelope.data, PUBLIC, DICTIONARIES)
        assert (CONTENT_TYPE, "zstd", 1) == (
            opened.content_type,
            opened.encoding,
            opened.dictionary_id,
        )
        assert [reading.payload] == [r.payload for r in opened.readings]
        assert (reading.seq,) == envelope.seqs
        assert reading.hub == opened.hub
        assert (
            cose.ENCODING_ZSTD
            == cose.verify1(envelope.data, PUBLIC, allow_compression=True).encoding
        )
        assert envelopes.digest_of(envelope.data) == envelope.digest == opened.digest
        print(f"single: stored payload {len(reading.payload)} B, envelope {len(envelope.data)} B")
        assert len(envelope.data) < len(reading.payload) / 5

    def test_uncompressed_single_is_the_stored_envelope_again(self) -> None:
        stored = hub_backlog(1, 4242)[0]
        reading = _stored([stored])[0]
        signer = Signer.from_key(KEY)
        # The stored one was signed by the synthetic key; re-signing with KEY must give what
        # KEY would have stored: the same protected header and payload, RFC 6979 signature.
        expected = cose.sign1_with(stored.payload, signer.sign, signer.kid, CONTENT_TYPE)
        assert expected == build_single(reading, signer, None).data

    def test_zstd_without_dictionary(self) -> None:
        reading = _backlog(3)[1]
        envelope = build_single(reading, SIGNER, None, compress=True)
        opened = open_envelope(envelope.data, PUBLIC, {})
        assert ("zstd", None) == (opened.encoding, opened.dictionary_id)
        assert reading.payload == opened.readings[0].payload

    def test_deterministic(self) -> None:
        reading = _backlog(3)[2]
        assert build_single(reading, SIGNER, DICTIONARY) == build_single(
            reading, SIGNER, DICTIONARY
        )

    def test_a_dictionary_with_compression_off_is_a_bug(self) -> None:
        with pytest.raises(ValueError, match="compression is off"):
            build_single(_backlog(3)[0], SIGNER, DICTIONARY, compress=False)


class TestBatch:
    def test_batch_round_trip(self) -> None:
        readings = _backlog(20)
        batch = build_batch(readings, SIGNER, DICTIONARY, 256 * 1024)
        assert tuple(r.seq for r in readings) == batch.seqs
        opened = open_envelope(batch.data, PUBLIC, DICTIONARIES)
        assert BATCH_CONTENT_TYPE == opened.content_type
        assert [r.payload for r in readings] == [r.payload for r in opened.readings]
        assert [r.seq for r in readings] == [r.seq for r in opened.readings]
        assert all(r.content["hub"] == opened.hub for r in opened.readings)
        print(f"batch of 20: {len(batch.data)} B, {len(batch.data) / 20:.0f} B per reading")

    def test_deterministic(self) -> None:
        readings = _backlog(20)
        assert build_batch(readings, SIGNER, DICTIONARY, 4096).data == (
            build_batch(readings, SIGNER, DICTIONARY, 4096).data
        )

    @pytest.mark.parametrize("max_bytes", [1500, 3000, 6000])
    def test_cut_at_the_byte_limit(self, max_bytes: int) -> None:
        """As many readings as fit: the envelope is within the limit, one more is not."""
        readings = _backlog(40)
        batch = build_batch(readings, SIGNER, DICTIONARY, max_bytes)
        n = len(batch.seqs)
        assert 1 <= n < 40
        assert len(batch.data) <= max_bytes
        payload = cbor2.dumps(
            {"v": 1, "hub": readings[0].hub, "readings": [r.payload for r in readings[: n + 1]]},
            canonical=True,
        )
        frame = zstandard.ZstdCompressor(
            level=dictionaries.BATCH_COMPRESSION_LEVEL,
            dict_data=DICTIONARY.zstd_batch,
            write_checksum=False,
            write_dict_id=False,
        ).compress(payload)
        one_more = _signed(frame, payload_encoding="zstd", dictionary_id=1)
        assert len(one_more) > max_bytes
        assert tuple(r.seq for r in readings[:n]) == batch.seqs

    def test_plain_batch_cut_exactly(self) -> None:
        readings = _tiny(50, size=1000)
        batch = build_batch(readings, SIGNER, None, 10_000)
        n = len(batch.seqs)
        assert len(batch.data) <= 10_000
        longer = _signed(
            cbor2.dumps(
                {"v": 1, "hub": "hub-0001", "readings": [r.payload for r in readings[: n + 1]]},
                canonical=True,
            )
        )
        assert len(longer) > 10_000
        assert (False, None) == (batch.compressed, batch.dictionary_id)
        assert n == len(open_envelope(batch.data, PUBLIC).readings)

    def test_at_most_500_readings(self) -> None:
        batch = build_batch(_tiny(600), SIGNER, DICTIONARY, 1 << 20)
        assert MAX_BATCH_READINGS == len(batch.seqs)
        assert MAX_BATCH_READINGS == len(open_envelope(batch.data, PUBLIC, DICTIONARIES).readings)

    def test_decompressed_payload_at_most_one_mebibyte(self) -> None:
        readings = _tiny(40, size=60_000)  # compresses to nothing, inflates past 1 MiB
        batch = build_batch(readings, SIGNER, None, 1 << 20, compress=True)
        assert 17 == len(batch.seqs)  # 17 x 60 kB fit in 1 MiB, 18 do not
        assert batch.payload_bytes <= MAX_DECOMPRESSED_BYTES
        assert len(batch.data) < 4096
        assert 17 == len(open_envelope(batch.data, PUBLIC, {}).readings)

    def test_first_reading_too_large(self) -> None:
        with pytest.raises(RecordTooLargeError):
            build_batch(_tiny(3, size=5000), SIGNER, None, 2000)

    def test_one_hub_per_batch(self) -> None:
        with pytest.raises(ValueError, match="one hub"):
            build_batch(_tiny(2) + _tiny(2, hub="hub-0002"), SIGNER, None, 1 << 20)


class TestFromStored:
    def test_seq_must_match(self) -> None:
        stored = hub_backlog(1, 4242)[0]
        seq = cbor2.loads(stored.payload)["seq"]
        with pytest.raises(IntegrityError, match=f"has seq {seq}"):
            ReadingPayload.from_stored(seq + 1, stored.envelope)

    def test_a_compressed_envelope_is_not_a_stored_reading(self) -> None:
        envelope = build_single(_backlog(3)[0], SIGNER, DICTIONARY)
        with pytest.raises(IntegrityError, match="not a plain reading"):
            ReadingPayload.from_stored(envelope.seqs[0], envelope.data)


def _frame(payload: bytes, dictionary: Dictionary | None = DICTIONARY, **kw: Any) -> bytes:
    options: dict[str, Any] = {"write_checksum": False, "write_dict_id": False} | kw
    return zstandard.ZstdCompressor(
        level=3, dict_data=dictionary.zstd if dictionary else None, **options
    ).compress(payload)


def _batch_of(*readings: bytes, hub: str = "hub-0001") -> bytes:
    return cbor2.dumps({"v": 1, "hub": hub, "readings": list(readings)}, canonical=True)


def _reading(seq: int = 1, hub: str = "hub-0001", **extra: Any) -> bytes:
    return cbor2.dumps({"v": 1, "hub": hub, "seq": seq, **extra}, canonical=True)


class TestOpenRefuses:
    def test_unknown_dictionary(self) -> None:
        message = _signed(_frame(_batch_of(_reading())), payload_encoding="zstd", dictionary_id=9)
        assert "zstd dictionary 9 is not available" == _reason(message)

    def test_frame_declaring_more_than_one_mebibyte(self) -> None:
        """A zip bomb is refused by its declared size before anything is inflated."""
        bomb = _frame(b"\0" * (MAX_DECOMPRESSED_BYTES + 1), None)
        assert len(bomb) < 1024
        message = _signed(bomb, payload_encoding="zstd")
        assert "more than 1 MiB" in _reason(message)

    def test_frame_without_declared_size(self) -> None:
        obj = zstandard.ZstdCompressor(write_content_size=False).compressobj()
        frame = obj.compress(_batch_of(_reading())) + obj.flush()
        assert "zstd frame does not declare its size" == _reason(
            _signed(frame, payload_encoding="zstd")
        )

    def test_trailing_bytes_after_the_frame(self) -> None:
        frame = _frame(_batch_of(_reading())) + b"\0"
        message = _signed(frame, payload_encoding="zstd", dictionary_id=1)
        assert "trailing bytes after the zstd frame" == _reason(message)

    def test_two_frames(self) -> None:
        frame = _frame(_batch_of(_reading()), None)
        message = _signed(frame + frame, payload_encoding="zstd")
        assert "trailing bytes after the zstd frame" == _reason(message)

    def test_truncated_frame(self) -> None:
        frame = _frame(_batch_of(_reading(pad=bytes(range(256)) * 8)), None)
        message = _signed(frame[:-5], payload_encoding="zstd")
        assert "trailing bytes after the zstd frame" == _reason(message)

    def test_not_a_frame(self) -> None:
        message = _signed(_batch_of(_reading()), payload_encoding="zstd")
        assert "payload is not a zstd frame" == _reason(message)

    def test_frame_made_with_another_dictionary(self) -> None:
        other = zstandard.train_dictionary(
            4096, [_reading(i, pad=bytes([i]) * 50) for i in range(200)], dict_id=7
        )
        frame = zstandard.ZstdCompressor(dict_data=other).compress(_batch_of(_reading()))
        message = _signed(frame, payload_encoding="zstd", dictionary_id=1)
        assert "zstd frame names dictionary 7, the header another" == _reason(message)

    def test_compressed_where_the_caller_expects_plain(self) -> None:
        envelope = build_single(_backlog(3)[0], SIGNER, DICTIONARY)
        with pytest.raises(IntegrityError, match="compressed payload where a plain one"):
            cose.verify1(envelope.data, PUBLIC)

    def test_wrong_key(self) -> None:
        envelope = build_single(_backlog(3)[0], SIGNER, DICTIONARY)
        assert "kid does not match the verification key" == _reason(envelope.data, OTHER_KEY)

    def test_tampered_frame(self) -> None:
        data = bytearray(build_single(_backlog(3)[0], SIGNER, DICTIONARY).data)
        data[-80] ^= 1
        assert "signature does not verify" == _reason(bytes(data))

    @pytest.mark.parametrize(
        ("batch", "reason"),
        [
            (cbor2.dumps([1], canonical=True), "batch is not a map of exactly v, hub and readings"),
            (
                cbor2.dumps({"v": 1, "hub": "h", "readings": [], "x": 1}, canonical=True),
                "batch is not a map of exactly v, hub and readings",
            ),
            (
                cbor2.dumps({"v": 2, "hub": "hub-0001", "readings": [_reading()]}, canonical=True),
                "batch version is not 1",
            ),
            (_batch_of(), "batch readings is not an array of 1 to 500"),
            (_batch_of(_reading(1), _reading(1)), "reading 1: seq 1 twice in the batch"),
            (_batch_of(_reading(1), _reading(2, hub="hub-0002")), "reading 1 is of another hub"),
            (_batch_of(_reading(1), b"\xa1\x61v\x01\x00"), "reading 1: 1 trailing bytes"),
            (_batch_of(_reading(1, n=cbor2.CBORTag(1, 0))), "reading 0: CBOR tag 1 not allowed"),
            (_batch_of(bytes.fromhex("a3617601636875626168637365711801")), "not in deterministic"),
            (_batch_of(cbor2.dumps({"v": 1, "hub": "hub-0001"})), "reading 0: seq is not"),
            (_batch_of(cbor2.dumps([1])), "reading 0 is not a map"),
        ],
    )
    def test_malformed_batch(self, batch: bytes, reason: str) -> None:
        for message in (
            _signed(batch),
            _signed(_frame(batch), payload_encoding="zstd", dictionary_id=1),
        ):
            assert reason in _reason(message)

    def test_decimal_fractions_are_the_one_tag(self) -> None:
        from decimal import Decimal

        payload = _reading(1, value=Decimal("17.0"))
        opened = open_envelope(_signed(payload, CONTENT_TYPE), PUBLIC)
        assert "17.0" == str(opened.readings[0].content["value"])

    def test_another_content_type(self) -> None:
        message = _signed(_reading(), "application/vnd.homehub.receipt+cbor")
        assert "is not a reading or batch" in _reason(message)


def test_every_kind_compresses_with_the_shipped_dictionary() -> None:
    """Held-out readings of each kind (drawn with a seed not used for training) round-trip."""
    for kind in ("blood_pressure", "glucose", "pulse_oximetry"):
        readings = _stored(synthetic_readings(kind, 5, 31337))
        for reading in readings:
            envelope = build_single(reading, SIGNER, DICTIONARY)
            assert [reading.payload] == [
                r.payload for r in open_envelope(envelope.data, PUBLIC, DICTIONARIES).readings
            ]
