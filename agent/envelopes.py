"""Compact envelopes: one reading compressed, or many readings in one batch (sans-I/O).

The outbox stores each reading as the single COSE_Sign1 made when it was stored
(:meth:`agent.ingest.Prepared.envelope`); its payload, the reading's deterministic CBOR, is
what this module works on (:meth:`ReadingPayload.from_stored`). From those payloads it builds
what the publisher sends (docs/platform-protocol.md "Compression" and "Batches"):

- :func:`build_single`: one reading, its payload a zstd frame (with a dictionary when one is
  given), content type ``application/vnd.homehub.reading+cbor``;
- :func:`build_batch`: the first readings of a list that fit, up to
  :data:`MAX_BATCH_READINGS`, a decompressed payload of :data:`MAX_DECOMPRESSED_BYTES` and the
  caller's byte limit, content type ``application/vnd.homehub.readings+cbor``, payload
  ``{"v": 1, "hub": <hub id>, "readings": [bstr, ...]}``, compressed the same way.

With a dictionary trained on version-2 readings (:attr:`~agent.dictionaries.Dictionary.
reading_version`), each reading goes in its version-2 form, without the identifiers the
receiver derives (agent/derived_ids.py); with one trained on version 3, in its version-3
form (agent/device_refs.py): its Devices by reference when the caller says the platform
holds their set (``known_device_sets``), else in full. A reading that has no exact form of
that version goes as version 1. The stored envelope and every identity stay version 1. The
result says which device sets it carried in full and which it named by reference (a receipt
holding it confirms the first: agent/publisher.py).

Both sign with the caller's ES256 operation (:class:`agent.ingest.Signer`, a key provider) and
are deterministic when it is (RFC 6979): the same readings, dictionary and limit give the same
bytes. Each result carries the seqs it holds and its digest (the first 16 bytes of SHA-256
over the bytes as sent), which is how a receipt names it.

:func:`open_envelope` is the inverse a platform (and ``homehub verify``) runs: signature first,
then bounded decompression (a frame declaring more than 1 MiB, or with trailing bytes, is
refused before anything is inflated), then each reading's payload decoded strictly, all of one
hub. Every fault raises :class:`~agent.errors.IntegrityError` naming it.
"""

from __future__ import annotations

import hashlib
from collections.abc import Container, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Final, NoReturn, Protocol

import cbor2
import zstandard
from cryptography.hazmat.primitives.asymmetric import ec

from agent import cose, derived_ids, device_refs
from agent.dictionaries import BATCH_COMPRESSION_LEVEL, COMPRESSION_LEVEL, Dictionary
from agent.errors import IntegrityError, RecordTooLargeError, UnknownDevicesError
from agent.payload import CONTENT_TYPE as READING_CONTENT_TYPE

BATCH_CONTENT_TYPE: Final = "application/vnd.homehub.readings+cbor"
BATCH_VERSION: Final = 1
READING_VERSION: Final = derived_ids.READING_V1
READING_VERSIONS: Final = (derived_ids.READING_V1, derived_ids.READING_V2, device_refs.READING_V3)
MAX_BATCH_READINGS: Final = 500
MAX_DECOMPRESSED_BYTES: Final = 1024 * 1024
"""Largest payload, decompressed or plain, of any envelope: a verifier refuses a frame that
declares more, so a batch is cut to fit it (about 130 readings of ~8 KB)."""
DIGEST_BYTES: Final = 16
"""A receipt names an envelope by the first 16 bytes of SHA-256 over the bytes sent."""

READING_MAX_DEPTH: Final = 16
"""A reading's payload nests about 10 deep (map, Bundle, entry, resource, component…)."""
_BATCH_MAX_DEPTH: Final = 3
"""map -> readings array -> byte strings."""
_MAX_WINDOW_BYTES: Final = 2 * MAX_DECOMPRESSED_BYTES
"""A frame whose window needs more memory than this is refused before decoding."""

_ZSTD_MAGIC: Final = b"\x28\xb5\x2f\xfd"


class EnvelopeSigner(Protocol):
    """What signing needs: :class:`agent.ingest.Signer` is one."""

    @property
    def sign(self) -> cose.Es256Sign:
        """ES256 over a message: the 64-byte ``r || s``."""
        ...

    @property
    def kid(self) -> bytes:
        """The signing key's COSE key id."""
        ...


@dataclass(frozen=True, slots=True)
class ReadingPayload:
    """One stored reading's deterministic payload, with its seq and hub (from the payload)."""

    seq: int
    hub: str
    payload: bytes = field(repr=False)

    @classmethod
    def from_stored(cls, seq: int, envelope: bytes) -> ReadingPayload:
        """The payload inside a stored single envelope (the outbox record's body).

        Neither the signature nor the payload's strict form is checked again: the outbox's
        seal (AEAD) already authenticated the record as the bytes this hub signed, so a plain
        decode reads ``hub`` and ``seq`` (the strict decode of network input cost ~1.3 ms a
        reading, half of a batch's build: hil/bench/uplink.py). Raises
        :class:`IntegrityError` when it is not a plain reading envelope or its payload's seq
        is not ``seq``.
        """
        message = cose.split1(envelope)
        if message.content_type != READING_CONTENT_TYPE or message.encoding is not None:
            raise IntegrityError(f"seq {seq}", "stored envelope is not a plain reading")
        try:
            content = cbor2.loads(message.payload)
        except (cbor2.CBORDecodeError, ValueError) as exc:
            raise IntegrityError(f"seq {seq}", "stored payload is not CBOR") from exc
        hub, payload_seq = _reading_fields(content, "reading")
        if payload_seq != seq:
            raise IntegrityError(f"seq {seq}", f"stored payload has seq {payload_seq}")
        return cls(seq, hub, message.payload)


@dataclass(frozen=True, slots=True)
class Envelope:
    """A signed envelope ready to publish."""

    seqs: tuple[int, ...]
    """The seqs of the readings it holds, in order."""
    data: bytes = field(repr=False)
    """The COSE_Sign1 bytes: the MQTT payload."""
    digest: bytes
    """SHA-256 over ``data``, first 16 bytes (how a receipt names it)."""
    content_type: str
    dictionary_id: int | None
    compressed: bool
    payload_bytes: int
    """Size of the payload before compression."""
    device_sets_carried: frozenset[bytes] = frozenset()
    """Digests of the device sets its version-3 readings carried in full (a receipt holding
    it tells that the platform holds them)."""
    device_sets_referenced: frozenset[bytes] = frozenset()
    """Digests of the device sets its version-3 readings named by reference."""


@dataclass(frozen=True, slots=True)
class _Wire:
    """One reading as an envelope carries it, and what it did with its Devices."""

    payload: bytes = field(repr=False)
    carried: bytes | None = None
    """Its device set's digest when it went in full in a version-3 reading."""
    referenced: bytes | None = None
    """Its device set's digest when it went by reference."""


def digest_of(message: bytes) -> bytes:
    """The receipt digest of an envelope: SHA-256 over its bytes, first 16 bytes."""
    return hashlib.sha256(message).digest()[:DIGEST_BYTES]


def build_single(
    reading: ReadingPayload,
    signer: EnvelopeSigner,
    dictionary: Dictionary | None,
    *,
    compress: bool | None = None,
    level: int = COMPRESSION_LEVEL,
    known_device_sets: Container[bytes] = frozenset(),
) -> Envelope:
    """One reading in its own envelope, compressed (``compress``, by default: when a
    dictionary is given) with ``dictionary`` if any. Uncompressed, it is the stored envelope
    again (byte for byte with a deterministic signer). ``known_device_sets``: the digests of
    the device sets the platform holds (a version-3 dictionary names those by reference)."""
    use_zstd = _compressing(compress, dictionary)
    wire = _wire_payload(reading, dictionary if use_zstd else None, known_device_sets)
    payload = wire.payload
    if len(payload) > MAX_DECOMPRESSED_BYTES:
        raise RecordTooLargeError("observation", len(payload), MAX_DECOMPRESSED_BYTES)
    sent = _compress(payload, dictionary, level) if use_zstd else payload
    return _sign((reading.seq,), sent, len(payload), READING_CONTENT_TYPE, signer, dictionary,
                 use_zstd, [wire])  # fmt: skip


def build_batch(
    readings: Sequence[ReadingPayload],
    signer: EnvelopeSigner,
    dictionary: Dictionary | None,
    max_bytes: int,
    *,
    compress: bool | None = None,
    level: int = BATCH_COMPRESSION_LEVEL,
    known_device_sets: Container[bytes] = frozenset(),
) -> Envelope:
    """A batch of the first readings of ``readings`` that fit: at most
    :data:`MAX_BATCH_READINGS`, a payload of at most :data:`MAX_DECOMPRESSED_BYTES` before
    compression, and an envelope of at most ``max_bytes`` as sent. The result's ``seqs`` say
    how many were taken (at least one); the caller sends the rest in later envelopes.

    All readings must be of one hub (``ValueError`` otherwise, as for an empty list).
    ``known_device_sets`` as for :func:`build_single`. Raises :class:`RecordTooLargeError`
    when the first reading alone does not fit.
    """
    if not readings:
        raise ValueError("a batch needs at least one reading")
    hub = readings[0].hub
    if any(r.hub != hub for r in readings):
        raise ValueError("a batch holds readings of one hub only")
    use_zstd = _compressing(compress, dictionary)
    plain_limit = None if use_zstd else max_bytes
    count = _fit_uncompressed(readings, hub, signer.kid, plain_limit)
    if count == 0:
        first = len(_batch_payload(hub, [r.payload for r in readings[:1]]))
        raise RecordTooLargeError("batch", first, min(MAX_DECOMPRESSED_BYTES, max_bytes))
    wire = [
        _wire_payload(r, dictionary if use_zstd else None, known_device_sets)
        for r in readings[:count]
    ]
    best: tuple[int, bytes, int] | None = None  # (count, payload as sent, payload bytes)
    failed = count + 1  # the smallest count known not to fit
    guess = count
    while True:
        payload = _batch_payload(hub, [w.payload for w in wire[:guess]])
        sent = _compress(payload, dictionary, level) if use_zstd else payload
        size = _envelope_bytes(signer.kid, BATCH_CONTENT_TYPE, dictionary, use_zstd, len(sent))
        if size <= max_bytes:
            best = (guess, sent, len(payload))
        else:
            failed = guess
        if best is not None and best[0] == failed - 1:
            break
        if best is None:
            if failed == 1:
                raise RecordTooLargeError("batch", size, max_bytes)
            guess = max(1, min(failed - 1, guess * max_bytes * 95 // (size * 100)))
        else:
            guess = (best[0] + failed) // 2
    taken, sent, payload_bytes = best
    seqs = tuple(r.seq for r in readings[:taken])
    return _sign(
        seqs, sent, payload_bytes, BATCH_CONTENT_TYPE, signer, dictionary, use_zstd, wire[:taken]
    )


def _compressing(compress: bool | None, dictionary: Dictionary | None) -> bool:
    if compress is None:
        return dictionary is not None
    if not compress and dictionary is not None:
        raise ValueError("a dictionary was given but compression is off")
    return compress


def _head_bytes(value: int) -> int:
    """Bytes of a CBOR head (RFC 8949 §3) carrying ``value``: a string's length, an array's
    count."""
    return 1 if value < 24 else 2 if value < 256 else 3 if value < 65536 else 5


def _fit_uncompressed(
    readings: Sequence[ReadingPayload], hub: str, kid: bytes, plain_limit: int | None
) -> int:
    """How many first readings fit the count and decompressed bounds and, for a plain batch
    (``plain_limit``), the envelope bound: sizes known exactly without building anything."""
    fixed = len(_batch_payload(hub, [])) - 1  # less the head of the empty array
    total, count = 0, 0
    for reading in readings[:MAX_BATCH_READINGS]:
        total += _head_bytes(len(reading.payload)) + len(reading.payload)
        size = fixed + _head_bytes(count + 1) + total
        if size > MAX_DECOMPRESSED_BYTES:
            break
        if plain_limit is not None and (
            _envelope_bytes(kid, BATCH_CONTENT_TYPE, None, False, size) > plain_limit
        ):
            break
        count += 1
    return count


def _batch_payload(hub: str, payloads: Sequence[bytes]) -> bytes:
    return cbor2.dumps(
        {"v": BATCH_VERSION, "hub": hub, "readings": list(payloads)},
        canonical=True,
    )


def _wire_payload(
    reading: ReadingPayload, dictionary: Dictionary | None, known: Container[bytes]
) -> _Wire:
    """The reading as sent with ``dictionary``: in the version the dictionary was trained on
    (2 or 3; 3 with its Devices by reference when their set is ``known``) when the reading
    has an exact form of it, else its stored version 1."""
    version = dictionary.reading_version if dictionary is not None else derived_ids.READING_V1
    if version == device_refs.READING_V3:
        compacted = device_refs.compact(reading.payload, known)
        if compacted is None:
            return _Wire(reading.payload)
        if compacted.by_reference:
            return _Wire(compacted.payload, referenced=compacted.device_set)
        return _Wire(compacted.payload, carried=compacted.device_set)
    if version == derived_ids.READING_V2:
        return _Wire(derived_ids.compact(reading.payload) or reading.payload)
    return _Wire(reading.payload)


def _compress(payload: bytes, dictionary: Dictionary | None, level: int) -> bytes:
    """One zstd frame: content size written (a verifier bounds by it), no checksum (the
    signature covers the bytes), no dictionary id (the protected header names it)."""
    compressor = zstandard.ZstdCompressor(
        level=level,
        dict_data=dictionary.prepared(level) if dictionary is not None else None,
        write_checksum=False,
        write_content_size=True,
        write_dict_id=False,
    )
    return compressor.compress(payload)


def _envelope_bytes(
    kid: bytes, content_type: str, dictionary: Dictionary | None, zstd: bool, payload: int
) -> int:
    """The exact size of a COSE_Sign1 with this header and a payload of ``payload`` bytes."""
    protected = cose.protected_header(
        content_type,
        kid,
        payload_encoding=cose.ENCODING_ZSTD if zstd else None,
        dictionary_id=dictionary.id if dictionary is not None else None,
    )
    head = _head_bytes
    # tag 18 and array head, protected, empty map, payload, signature (64 bytes, 2-byte head)
    return 2 + head(len(protected)) + len(protected) + 1 + head(payload) + payload + 2 + 64


def _sign(
    seqs: tuple[int, ...],
    sent: bytes,
    payload_bytes: int,
    content_type: str,
    signer: EnvelopeSigner,
    dictionary: Dictionary | None,
    zstd: bool,
    wire: Sequence[_Wire] = (),
) -> Envelope:
    data = cose.sign1_with(
        sent,
        signer.sign,
        signer.kid,
        content_type,
        payload_encoding=cose.ENCODING_ZSTD if zstd else None,
        dictionary_id=dictionary.id if dictionary is not None else None,
        max_payload_bytes=MAX_DECOMPRESSED_BYTES,
    )
    return Envelope(
        seqs=seqs,
        data=data,
        digest=digest_of(data),
        content_type=content_type,
        dictionary_id=dictionary.id if dictionary is not None else None,
        compressed=zstd,
        payload_bytes=payload_bytes,
        device_sets_carried=frozenset(w.carried for w in wire if w.carried is not None),
        device_sets_referenced=frozenset(w.referenced for w in wire if w.referenced is not None),
    )


# ---------------------------------------------------------------------------
# Opening (the platform's side, and homehub verify)
# ---------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class OpenedReading:
    """One reading of a verified envelope: its payload bytes and their decoded content."""

    seq: int
    payload: bytes = field(repr=False)
    content: dict[str, Any] = field(repr=False)


@dataclass(frozen=True, slots=True)
class OpenedEnvelope:
    """A verified envelope's readings (one for a single envelope), all of ``hub``."""

    content_type: str
    kid: bytes
    hub: str
    encoding: str | None
    dictionary_id: int | None
    digest: bytes
    envelope_bytes: int
    payload_bytes: int
    """Size of the (decompressed) payload."""
    readings: tuple[OpenedReading, ...] = field(repr=False)


def open_envelope(
    message: bytes,
    hub_public_key: ec.EllipticCurvePublicKey,
    dictionaries: Mapping[int, Dictionary] | None = None,
    device_sets: Mapping[bytes, Sequence[Mapping[str, Any]]] | None = None,
) -> OpenedEnvelope:
    """Verify a reading or batch envelope with the hub's key and return its readings.

    In order: the COSE_Sign1 (structure, header, kid, signature; :func:`cose.verify1`), then
    the frame (declared size at most :data:`MAX_DECOMPRESSED_BYTES`, the dictionary the header
    names among ``dictionaries``, no trailing bytes), then the payload: a reading, or a batch
    map of exactly ``v``, ``hub`` and 1 to 500 ``readings``; every reading strict CBOR
    (deterministic for version 1), of the same hub, each seq once; a version-2 or -3 reading
    expanded to version 1, a version-3 one's Devices by reference from ``device_sets``
    (digest -> Device resources: :func:`device_sets_of` an earlier envelope).

    Raises :class:`IntegrityError` naming the fault, :class:`UnknownDevicesError` (one) when
    a reading's device set is not in ``device_sets``.
    """
    verified = cose.verify1(
        message,
        hub_public_key,
        allow_compression=True,
        max_message_bytes=cose.MAX_BATCH_MESSAGE_BYTES,
    )
    if verified.content_type not in (READING_CONTENT_TYPE, BATCH_CONTENT_TYPE):
        _refuse(f"content type {verified.content_type[:60]!r} is not a reading or batch")
    payload = verified.payload
    if verified.encoding is not None:
        payload = decompress(payload, verified.dictionary_id, dictionaries or {})
    elif len(payload) > MAX_DECOMPRESSED_BYTES:
        _refuse(f"payload of {len(payload)} bytes exceeds {MAX_DECOMPRESSED_BYTES}")
    sets = device_sets or {}
    if verified.content_type == READING_CONTENT_TYPE:
        hub, readings = _open_reading(payload, sets)
    else:
        hub, readings = _open_batch(payload, sets)
    return OpenedEnvelope(
        content_type=verified.content_type,
        kid=verified.kid,
        hub=hub,
        encoding=verified.encoding,
        dictionary_id=verified.dictionary_id,
        digest=digest_of(message),
        envelope_bytes=len(message),
        payload_bytes=len(payload),
        readings=readings,
    )


def decompress(
    frame: bytes, dictionary_id: int | None, dictionaries: Mapping[int, Dictionary]
) -> bytes:
    """Inflate one zstd frame, bounded: its header must declare its content size, at most
    :data:`MAX_DECOMPRESSED_BYTES`, and a window within twice that; the frame must end where
    the payload does; ``dictionary_id`` must be one of ``dictionaries``."""
    dictionary = None
    if dictionary_id is not None:
        dictionary = dictionaries.get(dictionary_id)
        if dictionary is None:
            _refuse(f"zstd dictionary {dictionary_id} is not available")
    if frame[:4] != _ZSTD_MAGIC:
        _refuse("payload is not a zstd frame")
    try:
        params = zstandard.get_frame_parameters(frame)
    except zstandard.ZstdError:
        _refuse("zstd frame header is malformed")
    if params.content_size == zstandard.CONTENTSIZE_UNKNOWN:
        _refuse("zstd frame does not declare its size")
    if params.content_size > MAX_DECOMPRESSED_BYTES:
        _refuse(f"zstd frame declares {params.content_size} bytes, more than 1 MiB")
    if params.window_size > _MAX_WINDOW_BYTES:
        _refuse(f"zstd frame window of {params.window_size} bytes is too large")
    if params.dict_id not in (0, dictionary_id or 0):
        _refuse(f"zstd frame names dictionary {params.dict_id}, the header another")
    if _frame_length(frame) != len(frame):
        _refuse("trailing bytes after the zstd frame")
    decompressor = zstandard.ZstdDecompressor(
        dict_data=dictionary.zstd if dictionary is not None else None,
        max_window_size=_MAX_WINDOW_BYTES,
    )
    try:
        out = decompressor.decompress(frame)
    except zstandard.ZstdError:
        _refuse("zstd frame does not decompress" + (" with its dictionary" if dictionary else ""))
    if len(out) != params.content_size:
        _refuse("zstd frame's content is not the size it declares")
    return out


def _frame_length(frame: bytes) -> int:
    """The length of the zstd frame at the start of ``frame`` (RFC 8878 §3.1.1): the header,
    every block (3-byte head; an RLE block carries 1 byte) to the last, the checksum if any.
    Returns more than ``len(frame)`` for a truncated frame."""
    try:
        pos = zstandard.frame_header_size(frame)
        checksum = zstandard.get_frame_parameters(frame).has_checksum
    except zstandard.ZstdError:
        _refuse("zstd frame header is malformed")
    while pos + 3 <= len(frame):
        head = int.from_bytes(frame[pos : pos + 3], "little")
        last, kind, size = head & 1, (head >> 1) & 3, head >> 3
        if kind == 3:
            _refuse("zstd frame holds a reserved block type")
        pos += 3 + (1 if kind == 1 else size)
        if last:
            return pos + (4 if checksum else 0)
    return len(frame) + 1


def device_sets_of(opened: OpenedEnvelope) -> dict[bytes, tuple[Mapping[str, Any], ...]]:
    """The device sets an opened envelope's readings carry (digest -> Device resources): what
    a later envelope of the same hub may name by reference (``open_envelope``'s
    ``device_sets``)."""
    sets: dict[bytes, tuple[Mapping[str, Any], ...]] = {}
    for reading in opened.readings:
        found = device_refs.device_set(reading.content)
        if found is not None:
            sets[found[0]] = found[1]
    return sets


def _open_reading(
    payload: bytes, device_sets: Mapping[bytes, Sequence[Mapping[str, Any]]]
) -> tuple[str, tuple[OpenedReading, ...]]:
    hub, reading = _opened_reading(payload, "reading", device_sets)
    return hub, (reading,)


def _opened_reading(
    data: bytes, part: str, device_sets: Mapping[bytes, Sequence[Mapping[str, Any]]]
) -> tuple[str, OpenedReading]:
    """One reading's payload decoded strictly; a version-2 or -3 reading expanded to the
    version-1 reading (bytes and content) it stands for (agent/derived_ids.py,
    agent/device_refs.py). Only version 1 must be in deterministic encoding: the receiver
    makes it from the others."""
    content = cose.strict_cbor(
        data, part, max_depth=READING_MAX_DEPTH, decimal_fractions=True, deterministic=False
    )
    compacted = isinstance(content, dict) and content.get("v") in (
        derived_ids.READING_V2,
        device_refs.READING_V3,
    )
    if not compacted and not _deterministic(content, data):
        _refuse(f"{part}: not in deterministic CBOR encoding")
    hub, seq = _reading_fields(content, part)
    assert isinstance(content, dict)
    try:
        if content["v"] == derived_ids.READING_V2:
            data, content = derived_ids.expand(content)
        elif content["v"] == device_refs.READING_V3:
            data, content = device_refs.expand(content, device_sets.get)
    except UnknownDevicesError as exc:
        raise UnknownDevicesError("envelope", f"{part}: {exc.reason}", exc.digest) from None
    except IntegrityError as exc:
        _refuse(f"{part}: {exc.reason}")
    return hub, OpenedReading(seq, data, content)


def _deterministic(content: object, data: bytes) -> bool:
    try:
        return cbor2.dumps(content, canonical=True) == data
    except (cbor2.CBOREncodeError, ValueError, TypeError):
        return False


def _open_batch(
    payload: bytes, device_sets: Mapping[bytes, Sequence[Mapping[str, Any]]]
) -> tuple[str, tuple[OpenedReading, ...]]:
    batch = cose.strict_cbor(payload, "batch", max_depth=_BATCH_MAX_DEPTH)
    if not isinstance(batch, dict) or set(batch) != {"v", "hub", "readings"}:
        _refuse("batch is not a map of exactly v, hub and readings")
    if type(batch["v"]) is not int or batch["v"] != BATCH_VERSION:
        _refuse(f"batch version is not {BATCH_VERSION}")
    hub, items = batch["hub"], batch["readings"]
    if not isinstance(hub, str):
        _refuse("batch hub is not a text string")
    if not isinstance(items, list) or not 1 <= len(items) <= MAX_BATCH_READINGS:
        _refuse(f"batch readings is not an array of 1 to {MAX_BATCH_READINGS}")
    readings: list[OpenedReading] = []
    seen: set[int] = set()
    for index, item in enumerate(items):
        part = f"reading {index}"
        if not isinstance(item, bytes):
            _refuse(f"{part} is not a byte string")
        reading_hub, reading = _opened_reading(item, part, device_sets)
        if reading_hub != hub:
            _refuse(f"{part} is of another hub than the batch")
        if reading.seq in seen:
            _refuse(f"{part}: seq {reading.seq} twice in the batch")
        seen.add(reading.seq)
        readings.append(reading)
    return hub, tuple(readings)


def _reading_fields(content: object, part: str) -> tuple[str, int]:
    """A reading payload's hub and seq, after checking it is a version 1, 2 or 3 reading map."""
    if not isinstance(content, dict):
        _refuse(f"{part} is not a map")
    version, hub, seq = content.get("v"), content.get("hub"), content.get("seq")
    if type(version) is not int or version not in READING_VERSIONS:
        _refuse(f"{part}: version is not 1, 2 or 3")
    if not isinstance(hub, str):
        _refuse(f"{part}: hub is not a text string")
    if type(seq) is not int or seq < 0:
        _refuse(f"{part}: seq is not an unsigned integer")
    return hub, seq


def _refuse(reason: str) -> NoReturn:
    raise IntegrityError("envelope", reason)
