"""How the reference platform verifies what a hub sends (docs/wire-format.md,
docs/platform-protocol.md): independent of the hub's code, the signature checked by pycose.

For each MQTT message on ``homehub/v1/<hub_id>/readings``:

1. The topic names the hub (``^[a-z0-9][a-z0-9-]{0,62}$``); nothing else identifies it.
2. The message is a tagged COSE_Sign1 (RFC 9052 §4.2): CBOR tag 18 around
   ``[protected: bstr, unprotected: {}, payload: bstr, signature: bstr]``, at most
   :data:`MAX_ENVELOPE_BYTES`, exactly one CBOR item, no duplicate map keys, no other tags.
3. The protected header is ``{1: -7, 3: content type, 4: kid}``, optionally with ``-70001:
   "zstd"`` and ``-70002: dictionary id``: alg ES256, one of our two content types (one reading,
   or a batch), and the key id (SHA-256 over the hub key's DER SubjectPublicKeyInfo, first 16
   bytes).
4. The hub's certificate is found by the topic's hub id and the kid, among every certificate
   the hub has had (:class:`HubDirectory`: its CN must be that id, issued by the platform CA),
   and must be valid now or have expired (a certificate not valid yet is parked here).
5. pycose reads the COSE_Sign1 and builds its Sig_structure; the ES256 signature over the
   payload *as sent* (compressed or not) is checked on OpenSSL, or on pycose's own ES256 with
   ``pure_pycose`` (see ``_check_signature``).
6. A compressed payload is one zstd frame made with the named dictionary (files ``<id>.zdict``,
   :class:`Dictionaries`), nothing after it, declaring its content size, at most
   :data:`MAX_DECOMPRESSED_BYTES` (checked before inflating), window at most
   :data:`MAX_WINDOW_BYTES`.
7. The payload is a deterministic CBOR map: one reading (at least ``v`` = 1, ``hub``, ``seq``,
   ``id``, ``kind``; ``hub`` equal to the topic's; decimal fractions, tag 4, the only tag), or a
   batch ``{"v": 1, "hub", "readings": [bstr .cbor reading, ...]}`` of 1 to 500 such readings.
   A version-2 reading (docs/platform-protocol.md "Derived identifiers") is expanded to the
   version-1 reading it stands for, whose deterministic CBOR is the reading's bytes from then
   on (:func:`expand_v2`, written from the document, not from the hub's code); so is a
   version-3 one ("Devices by reference", :func:`expand_v3`), its device set looked up in
   the platform's store (``device_sets``): one it does not hold is refused
   ``unknown_device``, and the hub sends the reading again with its Devices in full.
8. Under an expired certificate, every reading's ``hub_time`` must lie within its validity and
   not after now: validity at signing time (the reasoning is :class:`HubDirectory`'s).

A failure raises :class:`RejectedError`. Its ``refusable`` says whether the fault is the
envelope's own (signature, header, payload: the platform will never accept it, and tells the
hub so in a receipt's ``refused`` item when it can name the seqs, ``seqs``), or the platform's
(unknown hub or key, a certificate not valid, a dictionary it does not hold: it parks the
message and says nothing, so the hub sends it again once the platform is fixed).
"""

from __future__ import annotations

import datetime as dt
import functools
import hashlib
import io
import re
import uuid
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final, NoReturn

import cbor2
import zstandard
from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.utils import encode_dss_signature
from cryptography.x509.oid import NameOID
from pycose.algorithms import Es256
from pycose.exceptions import CoseException
from pycose.headers import Algorithm
from pycose.keys.cosekey import CoseKey
from pycose.messages.sign1message import Sign1Message

from hil.platform_signing import envelope_digest, key_id

# ---------------------------------------------------------------------------
# The wire format, as constants
# ---------------------------------------------------------------------------

TOPIC_RE: Final = re.compile(r"^homehub/v1/([a-z0-9][a-z0-9-]{0,62})/readings$")
COSE_SIGN1_TAG: Final = 18
HEADER_ALG, HEADER_CONTENT_TYPE, HEADER_KID = 1, 3, 4
HEADER_ENCODING: Final = -70001
HEADER_DICTIONARY: Final = -70002
ENCODING_ZSTD: Final = "zstd"
ALG_ES256: Final = -7
CONTENT_TYPE: Final = "application/vnd.homehub.reading+cbor"
BATCH_CONTENT_TYPE: Final = "application/vnd.homehub.readings+cbor"
KID_BYTES: Final = 16
SIGNATURE_BYTES: Final = 64
PAYLOAD_VERSION: Final = 1
PAYLOAD_VERSION_DERIVED_IDS: Final = 2
PAYLOAD_VERSION_DEVICES_BY_REFERENCE: Final = 3
DEVICE_SET_DIGEST_BYTES: Final = 16
UNKNOWN_DEVICE: Final = "unknown_device"
"""The receipt's reason for a version-3 reading naming a device set the platform lacks."""
FULL_URL_NAMESPACE: Final = uuid.UUID("6f1f4a52-3c1e-5b0a-9d43-2b6c1a0e8f11")
"""docs/platform-protocol.md "Derived identifiers": an entry's fullUrl is urn:uuid: and the
name-based UUID (version 5) of ``Type/id`` in this namespace."""
HUB_IDENTIFIER_SYSTEM: Final = "urn:homehub:fhir:reading-id"
MAX_BUNDLE_ENTRIES: Final = 64
MAX_SET_DEVICES: Final = 16
MAX_ENVELOPE_BYTES: Final = 256 * 1024
"""The largest profile limit (Azure IoT Hub's 256 KiB); a single reading's payload is at most
32 KiB, a batch fills up to its profile's limit."""
MAX_DECOMPRESSED_BYTES: Final = 1024 * 1024
"""A compressed payload decompressing to more than this is refused (docs/platform-protocol.md)."""
MAX_WINDOW_BYTES: Final = 2 * 1024 * 1024
"""A frame whose window exceeds this is refused (docs/platform-protocol.md, Compression)."""
MAX_DICTIONARY_ID: Final = 2**31 - 1
MAX_BATCH_READINGS: Final = 500
CBOR_DECIMAL_FRACTION_TAG: Final = 4
PAYLOAD_MAX_DEPTH: Final = 32
"""A FHIR Bundle of Observations and Devices nests about 8 deep."""

# cbor2 6.3 decodes these tags into objects by itself; we refuse them all (the payload may
# carry tag 4 only). Any other tag reaches tag_hook, which keeps allowed ones and refuses the rest.
_CBOR2_BUILTIN_TAGS: Final = (
    0, 1, 2, 3, 4, 5, 25, 28, 29, 30, 35, 36, 37, 52, 54, 100, 256, 258, 260, 261, 1004,
    43000, 55799,
)  # fmt: skip


# ---------------------------------------------------------------------------
# Results
# ---------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class VerifiedReading:
    """A reading whose envelope verified against its hub's certificate.

    ``envelope`` is the whole MQTT payload it came in (a batch's for a batched reading);
    ``reading_bytes`` the reading's own deterministic CBOR (what a copy repeats byte for byte).
    """

    hub_id: str
    seq: int
    id: str
    kind: str
    kid: bytes
    payload: dict[str, Any] = field(repr=False)
    envelope: bytes = field(repr=False)
    reading_bytes: bytes = field(default=b"", repr=False)
    device_set: tuple[bytes, bytes] | None = field(default=None, repr=False)
    """The device set the reading carried in full (digest, deterministic CBOR of the array of
    its Device resources), which the platform keeps; None when it had none or named it by
    reference (held already)."""

    @property
    def conflict_of(self) -> int | None:
        """The seq of the earlier record with the same id, on a conflict record."""
        value = self.payload.get("conflict_of")
        return value if type(value) is int else None


@dataclass(frozen=True, slots=True)
class VerifiedEnvelope:
    """One verified message: its readings (one, or a batch's) and how it came."""

    hub_id: str
    kid: bytes
    content_type: str
    dictionary: int | None
    """The zstd dictionary id when compressed with one; None when not compressed or without."""
    compressed: bool
    readings: tuple[VerifiedReading, ...] = field(repr=False)
    envelope: bytes = field(repr=False)

    @property
    def digest(self) -> bytes:
        """How a receipt names it: SHA-256 over the message, first 16 bytes."""
        return envelope_digest(self.envelope)

    @property
    def seqs(self) -> list[int]:
        """The seq of each reading, in the envelope's order."""
        return [r.seq for r in self.readings]


class RejectedError(Exception):
    """A message failed verification; ``reason`` says which check (see the module doc for
    ``refusable``); ``code`` is the short code a receipt's ``refused`` item carries."""

    def __init__(self, reason: str, code: str = "malformed", *, refusable: bool = True) -> None:
        self.reason = reason
        self.code = code
        self.refusable = refusable
        self.hub_id: str | None = None
        self.seqs: list[int] | None = None
        super().__init__(reason)


DeviceSetLookup = Callable[[str, bytes], list[dict[str, Any]] | None]
"""The platform's device sets: (hub id, digest) -> the Device resources, None when not held."""


def _reject(reason: str, code: str = "malformed", *, refusable: bool = True) -> NoReturn:
    raise RejectedError(reason, code, refusable=refusable)


def _park(reason: str, code: str) -> NoReturn:
    raise RejectedError(reason, code, refusable=False)


# ---------------------------------------------------------------------------
# Hub certificates and dictionaries
# ---------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class HubKey:
    """One key a hub signs with: its certificates (one, or more when the CA renewed the
    certificate for the same key) and the key as pycose and as OpenSSL want it."""

    certs: tuple[x509.Certificate, ...]
    cose_key: CoseKey
    public_key: ec.EllipticCurvePublicKey


class HubDirectory:
    """The platform's list of hub certificates: every certificate each hub has had, by hub id
    and kid (the envelope's kid picks one).

    A certificate is checked when it is added (:meth:`add`: CN = the hub id, issued by the
    platform CA, a P-256 key) and is kept when the hub gets a new one: a rotation replaces the
    hub's key, and the envelopes already in its outbox stay signed with the old key.

    Validity, checked for each envelope (``clock``: the platform's time, UTC): an envelope
    verifies under a certificate that is valid *now*, or under one that has *expired* if every
    reading in it says (``hub_time``, under the signature) it was stored while that
    certificate was valid and not after now. That is validity at signing time, not now:

    - a certificate's lifetime bounds when its key may *sign*, not when its signatures may be
      *checked*. A hub stores (and signs) readings offline and sends them when it can, possibly
      long after; after a rotation its backlog stays signed with the old key. Checking "valid
      now" would park every such reading once the old certificate expired: kept on the hub,
      sent again and again, never delivered, a clinical reading lost to the hospital;
    - the time of signing is the hub's own claim: a reading is signed when it is stored, and
      its ``hub_time`` is that moment, covered by the signature (a batch is signed when it is
      sent, so its readings' store times are a lower bound of its signing time: a batch made
      after the expiry of the old key's certificate from readings stored before it is
      accepted; the hub signs with the key it started with, so this happens only to a hub
      running since before a rotation). Without a trusted timestamp nothing better exists;
      what it costs: whoever obtains a key whose certificate expired could backdate readings
      into its validity. Against that the platform removes a compromised or decommissioned
      hub's certificates from the directory (revocation); a certificate in it is one the
      platform still vouches for;
    - a certificate not yet valid now is not valid at any earlier signing time either: parked;
      so is a reading claiming a store time in the future, or outside the validity, or none.

    Thread-safe for one writer (:meth:`add`) beside readers in other threads: each change
    replaces the hub's entry whole.
    """

    def __init__(
        self, ca_cert: x509.Certificate, *, clock: Callable[[], dt.datetime] | None = None
    ) -> None:
        self._ca = ca_cert
        self._clock = clock or (lambda: dt.datetime.now(dt.UTC))
        self._keys: dict[str, dict[bytes, HubKey]] = {}

    @classmethod
    def load(cls, ca_file: Path, hub_certs: Iterable[tuple[str, Path]]) -> HubDirectory:
        """A directory from a CA file and ``(hub_id, certificate file)`` pairs."""
        directory = cls(x509.load_pem_x509_certificate(ca_file.read_bytes()))
        for hub_id, path in hub_certs:
            directory.add(hub_id, x509.load_pem_x509_certificate(path.read_bytes()))
        return directory

    @staticmethod
    def check(
        ca: x509.Certificate, hub_id: str, cert: x509.Certificate
    ) -> ec.EllipticCurvePublicKey:
        """The certificate's key if it may be a hub's: CN is the hub id, issued by ``ca``,
        a P-256 key; ValueError says why not."""
        cns = cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)
        if [a.value for a in cns] != [hub_id]:
            raise ValueError(f"certificate CN is not {hub_id!r}")
        try:
            cert.verify_directly_issued_by(ca)
        except (ValueError, TypeError, InvalidSignature):
            raise ValueError("certificate not issued by the platform CA") from None
        public_key = cert.public_key()
        if not isinstance(public_key, ec.EllipticCurvePublicKey) or not isinstance(
            public_key.curve, ec.SECP256R1
        ):
            raise ValueError("hub certificate key is not P-256")
        return public_key

    @property
    def ca(self) -> x509.Certificate:
        """The platform CA every hub certificate must be issued by."""
        return self._ca

    def add(self, hub_id: str, cert: x509.Certificate) -> bytes:
        """Register a hub's certificate (:meth:`check`), beside the ones it had; its kid.
        Adding one that is held already changes nothing."""
        public_key = self.check(self._ca, hub_id, cert)
        kid = key_id(public_key)
        keys = dict(self._keys.get(hub_id, {}))
        held = keys.get(kid)
        if held is None:
            pem = public_key.public_bytes(
                serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
            ).decode()
            keys[kid] = HubKey((cert,), CoseKey.from_pem_public_key(pem), public_key)
        elif cert not in held.certs:
            keys[kid] = HubKey((*held.certs, cert), held.cose_key, held.public_key)
        else:
            return kid
        self._keys[hub_id] = keys
        return kid

    def knows(self, hub_id: str) -> bool:
        """Whether any certificate is registered for ``hub_id``."""
        return bool(self._keys.get(hub_id))

    def certificates(self, hub_id: str) -> list[x509.Certificate]:
        """Every certificate registered for ``hub_id``, in the order they were added."""
        return [c for key in self._keys.get(hub_id, {}).values() for c in key.certs]

    def kids(self, hub_id: str) -> list[bytes]:
        """The kids ``hub_id`` may sign under, in the order they were added."""
        return list(self._keys.get(hub_id, {}))

    def now(self) -> dt.datetime:
        """The platform's time (UTC) the validity is checked against."""
        return self._clock()

    def public_key(self, hub_id: str, kid: bytes) -> ec.EllipticCurvePublicKey:
        """The key a hub signs with under ``kid``; RejectedError if unknown or not valid now."""
        key = self.key(hub_id, kid)
        if not _valid_at(key.certs, self.now()):
            _not_valid(hub_id)
        return key.public_key

    def cose_key(self, hub_id: str, kid: bytes) -> CoseKey:
        """The same key as pycose wants it."""
        key = self.key(hub_id, kid)
        if not _valid_at(key.certs, self.now()):
            _not_valid(hub_id)
        return key.cose_key

    def key(self, hub_id: str, kid: bytes) -> HubKey:
        """The key of ``kid`` whatever its validity; parked when unknown."""
        keys = self._keys.get(hub_id)
        if not keys:
            _park(f"unknown hub {hub_id!r}", "unknown_hub")
        key = keys.get(kid)
        if key is None:
            _park(f"kid does not match any certificate of hub {hub_id!r}", "unknown_kid")
        return key


def _valid_at(certs: Iterable[x509.Certificate], when: dt.datetime) -> bool:
    return any(c.not_valid_before_utc <= when <= c.not_valid_after_utc for c in certs)


def _not_valid(hub_id: str) -> NoReturn:
    _park(f"certificate of hub {hub_id!r} is not valid now", "certificate_not_valid")


def _stored_at(reading: VerifiedReading) -> dt.datetime | None:
    """The reading's ``hub_time`` (RFC 3339, with its offset), or None when it has none."""
    value = reading.payload.get("hub_time")
    if not isinstance(value, str) or len(value) > 64:
        return None
    try:
        when = dt.datetime.fromisoformat(value)
    except ValueError:
        return None
    return when if when.tzinfo is not None else None


def _signed_while_valid(
    certs: Iterable[x509.Certificate], readings: Iterable[VerifiedReading], now: dt.datetime
) -> bool:
    """Whether one certificate was valid when every reading was stored (none in the future)."""
    times = [_stored_at(r) for r in readings]
    if not times or any(t is None or t > now for t in times):
        return False
    return any(all(_valid_at((c,), t) for t in times if t is not None) for c in certs)


class Dictionaries:
    """The zstd dictionaries the platform holds, by id (files ``<id>.zdict``).

    A file's zstd dictionary id must equal the id of its name (docs/platform-protocol.md).
    """

    def __init__(self, dictionaries: Mapping[int, bytes] | None = None) -> None:
        self._decompressors: dict[int, zstandard.ZstdDecompressor] = {}
        for dict_id, data in (dictionaries or {}).items():
            self.add(dict_id, data)

    @classmethod
    def load(cls, directory: Path) -> Dictionaries:
        """Every ``<id>.zdict`` file in ``directory``."""
        found = cls()
        for path in sorted(directory.glob("*.zdict")):
            if not path.stem.isdigit():
                raise ValueError(f"dictionary file name is not <id>.zdict: {path.name}")
            found.add(int(path.stem), path.read_bytes())
        return found

    def add(self, dict_id: int, data: bytes) -> None:
        """Hold one dictionary; ValueError if its zstd id is not ``dict_id``."""
        zdict = zstandard.ZstdCompressionDict(data, dict_type=zstandard.DICT_TYPE_FULLDICT)
        if zdict.dict_id() != dict_id or not 0 < dict_id <= MAX_DICTIONARY_ID:
            raise ValueError(f"dictionary {dict_id}: its zstd dictionary id is {zdict.dict_id()}")
        self._decompressors[dict_id] = zstandard.ZstdDecompressor(
            dict_data=zdict, max_window_size=MAX_WINDOW_BYTES
        )

    @property
    def ids(self) -> list[int]:
        """The ids held, ascending (what an ``announce`` command lists)."""
        return sorted(self._decompressors)

    def decompress(self, frame: bytes, dict_id: int | None) -> bytes:
        """One zstd frame, made with ``dict_id`` (or none), bounded; RejectedError if not."""
        if dict_id is None:
            dctx = zstandard.ZstdDecompressor(max_window_size=MAX_WINDOW_BYTES)
        else:
            held = self._decompressors.get(dict_id)
            if held is None:
                _park(f"zstd dictionary {dict_id} not held by the platform", "unknown_dictionary")
            dctx = held
        return _bounded_decompress(dctx, frame, dict_id)


def _bounded_decompress(
    dctx: zstandard.ZstdDecompressor, frame: bytes, dict_id: int | None
) -> bytes:
    try:
        params = zstandard.get_frame_parameters(frame)
    except zstandard.ZstdError:
        _reject("payload: not a zstd frame")
    if params.dict_id not in (0, dict_id or 0):
        _reject("payload: zstd frame made with another dictionary than the header's")
    size = params.content_size
    if size == zstandard.CONTENTSIZE_UNKNOWN:
        _reject("payload: zstd frame does not declare its content size")
    if size > MAX_DECOMPRESSED_BYTES:
        _reject(f"payload: decompresses to more than {MAX_DECOMPRESSED_BYTES} bytes", "too_large")
    if params.window_size > MAX_WINDOW_BYTES:
        _reject(f"payload: zstd window larger than {MAX_WINDOW_BYTES} bytes", "too_large")
    try:
        # The declared size was checked before anything is inflated; max_output_size bounds
        # it once more. One frame, nothing after it.
        return dctx.decompress(
            frame, max_output_size=MAX_DECOMPRESSED_BYTES, allow_extra_data=False
        )
    except zstandard.ZstdError:
        _reject(
            f"payload: zstd frame malformed or larger than {MAX_DECOMPRESSED_BYTES} bytes "
            "decompressed"
        )


# ---------------------------------------------------------------------------
# Verification
# ---------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class _Header:
    content_type: str
    kid: bytes
    compressed: bool
    dictionary: int | None


def verify_envelope(
    topic: str,
    envelope: bytes,
    hubs: HubDirectory,
    dictionaries: Dictionaries | None = None,
    *,
    pure_pycose: bool = False,
    device_sets: DeviceSetLookup | None = None,
) -> VerifiedEnvelope:
    """Verify one message (steps 1-7 of the module doc); RejectedError says why not, with
    ``hub_id`` (the topic's, when valid) and ``seqs`` (when the payload names them) filled in.
    ``device_sets``: where a version-3 reading's device set is looked up (none held without)."""
    match = TOPIC_RE.fullmatch(topic)
    if match is None:
        _park("topic is not homehub/v1/<hub id>/readings", "bad_topic")
    hub_id = match.group(1)
    dictionaries = dictionaries or Dictionaries()
    parts: tuple[bytes, _Header | None, bytes] | None = None
    try:
        protected, payload, signature = _split(envelope)
        parts = (protected, None, payload)
        header = _parse_header(protected)
        parts = (protected, header, payload)
        key = hubs.key(hub_id, header.kid)
        now = hubs.now()
        valid_now = _valid_at(key.certs, now)
        if not valid_now and not any(now > c.not_valid_after_utc for c in key.certs):
            _not_valid(hub_id)  # not valid yet: not at any earlier signing time either
        _check_signature(protected, payload, signature, key.cose_key, key.public_key, pure_pycose)
        plain = (
            dictionaries.decompress(payload, header.dictionary) if header.compressed else payload
        )
        lookup = device_sets or (lambda _hub, _digest: None)
        readings = _readings(
            plain,
            header.content_type,
            hub_id,
            header.kid,
            envelope,
            lambda digest: lookup(hub_id, digest),
        )
        if not valid_now and not _signed_while_valid(key.certs, readings, now):
            _not_valid(hub_id)  # expired, and not signed while it was valid
    except RejectedError as exc:
        exc.hub_id = hub_id
        if exc.refusable and parts is not None:
            exc.seqs = _readable_seqs(parts[1], parts[2], dictionaries)
        raise
    return VerifiedEnvelope(
        hub_id=hub_id,
        kid=header.kid,
        content_type=header.content_type,
        dictionary=header.dictionary,
        compressed=header.compressed,
        readings=readings,
        envelope=envelope,
    )


def verify_reading(topic: str, envelope: bytes, hubs: HubDirectory) -> VerifiedReading:
    """Verify a single-reading, uncompressed message (the first version's wire format)."""
    verified = verify_envelope(topic, envelope, hubs)
    if verified.content_type != CONTENT_TYPE or len(verified.readings) != 1:
        _reject(f"content type is not {CONTENT_TYPE}", "bad_header")
    return verified.readings[0]


def _split(envelope: bytes) -> tuple[bytes, bytes, bytes]:
    if len(envelope) > MAX_ENVELOPE_BYTES:
        _reject(f"envelope larger than {MAX_ENVELOPE_BYTES} bytes", "too_large")
    item = _decode_one(envelope, "envelope", allowed_tags={COSE_SIGN1_TAG}, max_depth=3)
    if not isinstance(item, cbor2.CBORTag) or item.tag != COSE_SIGN1_TAG:
        _reject("not a tagged COSE_Sign1 (CBOR tag 18)")
    # cbor2 decodes a tag's content immutably: the array arrives as a tuple, maps as frozendict.
    if not isinstance(item.value, list | tuple) or len(item.value) != 4:
        _reject("COSE_Sign1 must be an array of 4 elements")
    protected, unprotected, payload, signature = item.value
    if not isinstance(protected, bytes):
        _reject("protected header is not a byte string")
    if not isinstance(unprotected, Mapping) or len(unprotected) != 0:
        _reject("unprotected header must be an empty map")
    if not isinstance(payload, bytes):
        _reject("payload is not a byte string")
    if not isinstance(signature, bytes) or len(signature) != SIGNATURE_BYTES:
        _reject(f"signature is not a {SIGNATURE_BYTES}-byte string")
    return protected, payload, signature


_REQUIRED_LABELS: Final = frozenset({HEADER_ALG, HEADER_CONTENT_TYPE, HEADER_KID})
_COMPRESSION_LABELS: Final = frozenset({HEADER_ENCODING, HEADER_DICTIONARY})


def _parse_header(protected: bytes) -> _Header:
    header = _decode_one(protected, "protected header", allowed_tags=set(), max_depth=1)
    if (
        not isinstance(header, dict)
        or not _REQUIRED_LABELS <= set(header)
        or not set(header) <= _REQUIRED_LABELS | _COMPRESSION_LABELS
    ):
        _reject(
            "protected header must hold exactly labels 1 (alg), 3 (content type), 4 (kid)",
            "bad_header",
        )
    if type(header[HEADER_ALG]) is not int or header[HEADER_ALG] != ALG_ES256:
        _reject("alg is not ES256 (-7)", "bad_header")
    content_type = header[HEADER_CONTENT_TYPE]
    if content_type not in (CONTENT_TYPE, BATCH_CONTENT_TYPE):
        _reject(f"content type is not {CONTENT_TYPE}", "bad_header")
    kid = header[HEADER_KID]
    if not isinstance(kid, bytes) or len(kid) != KID_BYTES:
        _reject(f"kid is not a {KID_BYTES}-byte string", "bad_header")
    compressed = HEADER_ENCODING in header
    if compressed and header[HEADER_ENCODING] != ENCODING_ZSTD:
        _reject('payload encoding (-70001) is not "zstd"', "bad_header")
    dictionary = header.get(HEADER_DICTIONARY)
    if dictionary is not None and (
        not compressed or type(dictionary) is not int or not 0 < dictionary <= MAX_DICTIONARY_ID
    ):
        _reject("zstd dictionary (-70002) without zstd, or not a positive id", "bad_header")
    return _Header(content_type, kid, compressed, dictionary)


def _check_signature(
    protected: bytes,
    payload: bytes,
    signature: bytes,
    cose_key: CoseKey,
    public_key: ec.EllipticCurvePublicKey,
    pure_pycose: bool,
) -> None:
    """pycose reads the message and builds the Sig_structure of the bytes as received; the
    ES256 check runs on OpenSSL (``cryptography``), or with ``pure_pycose`` on pycose's own
    ES256 (python-ecdsa, pure Python: about 5 ms a signature here, a platform capped near 200
    envelopes a second, too slow for the backlog tests and the uplink bench, so it is the
    cross-check, not the default).

    pycose 1.1's own ``Sign1Message.decode`` cannot read what cbor2 6 returns (arrays and maps
    inside a tag arrive as tuple and frozendict), so the outer array is ours (``_split``) and
    pycose gets its parts.
    """
    try:
        message = Sign1Message.from_cose_obj([protected, {}, payload, signature], True)
        message.key = cose_key
        if message.get_attr(Algorithm) is not Es256:
            ok = False
        elif pure_pycose:
            ok = message.verify_signature()
        else:
            to_be_signed = message._create_sig_structure()  # pycose's Sig_structure
            r = int.from_bytes(signature[:32], "big")
            s = int.from_bytes(signature[32:], "big")
            public_key.verify(encode_dss_signature(r, s), to_be_signed, ec.ECDSA(hashes.SHA256()))
            ok = True
    except (CoseException, ValueError, TypeError, KeyError, InvalidSignature):
        ok = False
    if not ok:
        _reject("signature does not verify", "bad_signature")


def _readings(
    plain: bytes,
    content_type: str,
    hub_id: str,
    kid: bytes,
    envelope: bytes,
    device_set: Callable[[bytes], list[dict[str, Any]] | None],
) -> tuple[VerifiedReading, ...]:
    if content_type == CONTENT_TYPE:
        return (_reading(plain, hub_id, kid, envelope, "payload", device_set),)
    body = _decode_one(
        plain, "payload", allowed_tags={CBOR_DECIMAL_FRACTION_TAG}, max_depth=PAYLOAD_MAX_DEPTH
    )
    if not isinstance(body, dict) or set(body) != {"v", "hub", "readings"}:
        _reject('batch payload must be {"v", "hub", "readings"}')
    if type(body["v"]) is not int or body["v"] != PAYLOAD_VERSION:
        _reject(f"payload version {body['v']!r} not supported")
    if body["hub"] != hub_id:
        _reject("payload hub differs from the topic's hub id", "hub_mismatch")
    items = body["readings"]
    if not isinstance(items, list) or not 1 <= len(items) <= MAX_BATCH_READINGS:
        _reject(f"batch must hold 1 to {MAX_BATCH_READINGS} readings")
    if not all(isinstance(item, bytes) for item in items):
        _reject("batch readings must be byte strings (bstr .cbor reading)")
    readings = tuple(
        _reading(item, hub_id, kid, envelope, f"batch reading {i}", device_set)
        for i, item in enumerate(items)
    )
    seqs = [r.seq for r in readings]
    if len(set(seqs)) != len(seqs):
        _reject("batch names a seq twice")
    return readings


def _reading(
    data: bytes,
    hub_id: str,
    kid: bytes,
    envelope: bytes,
    what: str,
    device_set: Callable[[bytes], list[dict[str, Any]] | None],
) -> VerifiedReading:
    body = _decode_one(
        data, what, allowed_tags={CBOR_DECIMAL_FRACTION_TAG}, max_depth=PAYLOAD_MAX_DEPTH
    )
    if not isinstance(body, dict):
        _reject(f"{what} is not a map")
    for name, kind in (("v", int), ("hub", str), ("seq", int), ("id", str), ("kind", str)):
        if type(body.get(name)) is not kind:
            _reject(f"{what} field {name!r} missing or not {kind.__name__}")
    by_reference = False
    if body["v"] == PAYLOAD_VERSION_DERIVED_IDS:
        data, body = expand_v2(body, what)
    elif body["v"] == PAYLOAD_VERSION_DEVICES_BY_REFERENCE:
        by_reference = "devices" in body
        data, body = expand_v3(body, what, device_set)
    elif body["v"] != PAYLOAD_VERSION:
        _reject(f"{what} version {body['v']} not supported")
    if body["hub"] != hub_id:
        _reject(f"{what} hub differs from the topic's hub id", "hub_mismatch")
    if body["seq"] < 0 or not body["id"]:
        _reject(f"{what} seq negative or id empty")
    conflict_of = body.get("conflict_of")
    if conflict_of is not None and (
        type(conflict_of) is not int or not 0 < conflict_of < body["seq"]
    ):
        _reject(f"{what} conflict_of is not the seq of an earlier record")
    return VerifiedReading(
        hub_id=hub_id,
        seq=body["seq"],
        id=body["id"],
        kind=body["kind"],
        kid=kid,
        payload=body,
        envelope=envelope,
        reading_bytes=data,
        device_set=None if by_reference else device_set_of(body),
    )


def _entry_resource(entry: dict[str, Any], what: str, n: int) -> dict[str, Any]:
    """A copy of entry ``n``'s resource, with its ``id`` (:func:`_give_id`); rejected when it
    is not a map with a ``resourceType``."""
    resource = dict(entry["resource"]) if isinstance(entry["resource"], dict) else None
    if resource is None or not isinstance(resource.get("resourceType"), str):
        _reject(f"{what}: entry {n} has no resource with a resourceType")
    _give_id(resource, what, n)
    return resource


def _give_id(resource: dict[str, Any], what: str, n: int) -> None:
    """Rule 3 of "Derived identifiers" reversed for entry ``n``: an Observation without ``id``
    gets ``obs-`` and 32 hex digits of SHA-256 over its one hub identifier; every resource's
    ``id`` must then be text."""
    if "id" not in resource:
        identifiers = resource.get("identifier")
        hub_ids = [
            i.get("value")
            for i in (identifiers if isinstance(identifiers, list) else ())
            if isinstance(i, dict) and i.get("system") == HUB_IDENTIFIER_SYSTEM
        ]
        if resource["resourceType"] != "Observation" or len(hub_ids) != 1:
            _reject(f"{what}: entry {n} has no id and none can be derived")
        if not isinstance(hub_ids[0], str):
            _reject(f"{what}: entry {n}'s hub identifier is not text")
        resource["id"] = "obs-" + hashlib.sha256(hub_ids[0].encode()).hexdigest()[:32]
    if not isinstance(resource["id"], str):
        _reject(f"{what}: entry {n}'s id is not text")


def expand_v2(body: dict[str, Any], what: str) -> tuple[bytes, dict[str, Any]]:
    """A version-2 reading as the version-1 reading it stands for: its deterministic CBOR and
    content. Each step of docs/platform-protocol.md "Derived identifiers", reversed:
    Observation ids from their hub identifier, fullUrls from ``Type/id``, references to an
    entry's ``Type/id`` made that entry's fullUrl, ``v`` 1."""
    fhir = body.get("fhir")
    entries = fhir.get("entry") if isinstance(fhir, dict) else None
    if not isinstance(entries, list) or not 0 < len(entries) <= MAX_BUNDLE_ENTRIES:
        _reject(f"{what}: version 2 without 1 to {MAX_BUNDLE_ENTRIES} Bundle entries")
    resources = []
    for n, entry in enumerate(entries):
        if not isinstance(entry, dict) or set(entry) != {"resource"}:
            _reject(f"{what}: entry {n} of a version-2 Bundle must hold only its resource")
        resources.append(_entry_resource(entry, what, n))
    urls: dict[str, str] = {}
    for resource in resources:
        name = f"{resource['resourceType']}/{resource['id']}"
        if name in urls:
            _reject(f"{what}: two entries are {resource['resourceType']}s of one id")
        urls[name] = f"urn:uuid:{uuid.uuid5(FULL_URL_NAMESPACE, name)}"

    def linked(value: Any) -> Any:
        if isinstance(value, dict):
            return {
                k: urls.get(v, v) if k == "reference" and isinstance(v, str) else linked(v)
                for k, v in value.items()
            }
        if isinstance(value, list):
            return [linked(v) for v in value]
        return value

    v1 = dict(body)
    v1["v"] = PAYLOAD_VERSION
    v1["fhir"] = {**fhir, "entry": []} if isinstance(fhir, dict) else {}  # (a dict: see above)
    v1["fhir"]["entry"] = [
        {"fullUrl": url, "resource": linked(resource)}
        for url, resource in zip(urls.values(), resources, strict=True)
    ]
    return cbor2.dumps(v1, canonical=True), v1


def expand_v3(
    body: dict[str, Any],
    what: str,
    device_set: Callable[[bytes], list[dict[str, Any]] | None],
) -> tuple[bytes, dict[str, Any]]:
    """A version-3 reading as the version-1 reading it stands for: its deterministic CBOR and
    content. The steps of docs/platform-protocol.md "Devices by reference", in order: the
    entries ``{"device": k}`` become the k-th resource of the set ``devices`` names (one not
    held: ``unknown_device``), Observation ids from their hub identifier, fullUrls from
    ``Type/id``, integer references made the fullUrl of that entry (in the reading's own
    resources only), ``devices`` removed, ``v`` 1."""
    fhir = body.get("fhir")
    entries = fhir.get("entry") if isinstance(fhir, dict) else None
    if not isinstance(entries, list) or not 0 < len(entries) <= MAX_BUNDLE_ENTRIES:
        _reject(f"{what}: version 3 without 1 to {MAX_BUNDLE_ENTRIES} Bundle entries")
    by_reference = [
        n for n, entry in enumerate(entries) if isinstance(entry, dict) and set(entry) == {"device"}
    ]
    taken: list[dict[str, Any]] = []
    if "devices" in body:
        digest = body["devices"]
        if not isinstance(digest, bytes) or len(digest) != DEVICE_SET_DIGEST_BYTES:
            _reject(f"{what}: devices is not a {DEVICE_SET_DIGEST_BYTES}-byte digest")
        if not by_reference:
            _reject(f"{what}: names a device set and no entry is a Device by reference")
        held = device_set(digest)
        if held is None:
            _reject(
                f"{what}: device set {digest.hex()} is not held by the platform", UNKNOWN_DEVICE
            )
        if len(held) != len(by_reference):
            _reject(f"{what}: the device set holds {len(held)} Devices, the reading names "
                    f"{len(by_reference)}")  # fmt: skip
        taken = held
    elif by_reference:
        _reject(f"{what}: a Device by reference without a device set (devices)")
    resources: list[dict[str, Any]] = []
    from_set: set[int] = set()
    for n, entry in enumerate(entries):
        if n in by_reference:
            k = by_reference.index(n)
            if type(entry["device"]) is not int or entry["device"] != k:
                _reject(f"{what}: entry {n} is the Device {k} of the set, numbered otherwise")
            device = taken[k]
            if not isinstance(device, dict) or device.get("resourceType") != "Device":
                _reject(f"{what}: the device set holds something other than a Device")
            from_set.add(n)
            resources.append(device)
            continue
        if not isinstance(entry, dict) or set(entry) != {"resource"}:
            _reject(f"{what}: entry {n} of a version-3 Bundle is neither a resource nor a Device")
        resources.append(_entry_resource(entry, what, n))
    urls: list[str] = []
    names: set[str] = set()
    for resource in resources:
        name = f"{resource['resourceType']}/{resource['id']}"
        if name in names:
            _reject(f"{what}: two entries are {resource['resourceType']}s of one id")
        names.add(name)
        urls.append(f"urn:uuid:{uuid.uuid5(FULL_URL_NAMESPACE, name)}")

    def linked(value: Any) -> Any:
        if isinstance(value, dict):
            out = {}
            for k, v in value.items():
                if k == "reference" and not isinstance(v, str):
                    if type(v) is not int or not 0 <= v < len(urls):
                        _reject(f"{what}: a reference is neither text nor an entry's index")
                    out[k] = urls[v]
                else:
                    out[k] = linked(v)
            return out
        if isinstance(value, list):
            return [linked(v) for v in value]
        return value

    assert isinstance(fhir, dict)
    v1 = {k: v for k, v in body.items() if k != "devices"}
    v1["v"] = PAYLOAD_VERSION
    v1["fhir"] = {
        **fhir,
        "entry": [
            {"fullUrl": url, "resource": resource if n in from_set else linked(resource)}
            for n, (url, resource) in enumerate(zip(urls, resources, strict=True))
        ],
    }
    return cbor2.dumps(v1, canonical=True), v1


def device_set_of(reading: dict[str, Any]) -> tuple[bytes, bytes] | None:
    """The device set of a (version-1) reading, as the platform keeps it: its digest (the
    first 16 bytes of SHA-256 over the deterministic CBOR of the array of the Bundle's Device
    resources, in order) and that CBOR; None when the Bundle holds no Device."""
    fhir = reading.get("fhir")
    entries = fhir.get("entry") if isinstance(fhir, dict) else None
    if not isinstance(entries, list):
        return None
    devices = [
        entry["resource"]
        for entry in entries
        if isinstance(entry, dict)
        and isinstance(entry.get("resource"), dict)
        and entry["resource"].get("resourceType") == "Device"
    ]
    if not devices or len(devices) > MAX_SET_DEVICES:
        return None
    encoded = cbor2.dumps(devices, canonical=True)
    return hashlib.sha256(encoded).digest()[:DEVICE_SET_DIGEST_BYTES], encoded


def _readable_seqs(
    header: _Header | None, payload: bytes, dictionaries: Dictionaries
) -> list[int] | None:
    """The seqs a rejected envelope names, when its payload can be read; None if not.

    Only the seqs: nothing else of an envelope that did not verify is used."""
    try:
        plain = payload
        if header is not None and header.compressed:
            plain = dictionaries.decompress(payload, header.dictionary)
        body = _decode_one(
            plain, "payload", allowed_tags={CBOR_DECIMAL_FRACTION_TAG}, max_depth=PAYLOAD_MAX_DEPTH
        )
        if not isinstance(body, dict):
            return None
        if type(body.get("seq")) is int and body["seq"] >= 0:
            return [body["seq"]]
        items = body.get("readings")
        if not isinstance(items, list) or not 1 <= len(items) <= MAX_BATCH_READINGS:
            return None
        seqs = []
        for item in items:
            if not isinstance(item, bytes):
                return None
            reading = _decode_one(
                item,
                "reading",
                allowed_tags={CBOR_DECIMAL_FRACTION_TAG},
                max_depth=PAYLOAD_MAX_DEPTH,
            )
            if not isinstance(reading, dict) or type(reading.get("seq")) is not int:
                return None
            seqs.append(reading["seq"])
    except RejectedError:
        return None
    return seqs if all(s >= 0 for s in seqs) else None


# ---------------------------------------------------------------------------
# Strict CBOR
# ---------------------------------------------------------------------------


class _TagRefusedError(Exception):
    def __init__(self, tag: int) -> None:
        self.tag = tag
        super().__init__(tag)


def _refuse(tag: int, _value: object, _immutable: bool) -> NoReturn:
    raise _TagRefusedError(tag)


def _decode_one(data: bytes, what: str, *, allowed_tags: set[int], max_depth: int) -> Any:
    """Exactly one CBOR item: bounded depth, no duplicate keys, only ``allowed_tags``."""
    semantic = {
        tag: functools.partial(_refuse, tag)
        for tag in _CBOR2_BUILTIN_TAGS
        if tag not in allowed_tags
    }

    def tag_hook(tag: cbor2.CBORTag, _immutable: bool) -> cbor2.CBORTag:
        if tag.tag not in allowed_tags:
            raise _TagRefusedError(tag.tag)
        return tag

    decoder = cbor2.CBORDecoder(
        io.BytesIO(data),
        tag_hook=tag_hook,
        semantic_decoders=semantic,
        max_depth=max_depth,
        allow_indefinite=False,
        allow_duplicate_keys=False,
    )
    try:
        value = decoder.decode()
    except cbor2.CBORDecodeError as exc:
        cause = exc.__cause__
        if isinstance(cause, _TagRefusedError):
            _reject(f"{what}: CBOR tag {cause.tag} not allowed")
        text = str(exc).lower()
        if "duplicate map key" in text:
            _reject(f"{what}: duplicate map keys")
        _reject(f"{what}: malformed CBOR")
    if decoder.fp.tell() != len(data):
        _reject(f"{what}: trailing bytes after the CBOR item")
    return value


def reading_digest(reading: VerifiedReading) -> bytes:
    """SHA-256 over a reading's own bytes: equal for a byte-identical copy, in any envelope."""
    return hashlib.sha256(reading.reading_bytes or reading.envelope).digest()
