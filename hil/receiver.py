"""The reference platform receiver: how a hospital platform reads what homehub sends.

Read this file to learn the wire format; it does not import the hub's own code, so it is also
an independent check of it. For each MQTT message on ``homehub/v1/<hub_id>/readings``:

1. The topic names the hub (``^[a-z0-9][a-z0-9-]{0,62}$``); nothing else identifies it.
2. The message is a tagged COSE_Sign1 (RFC 9052 §4.2): CBOR tag 18 around
   ``[protected: bstr, unprotected: {}, payload: bstr, signature: bstr]``, at most 64 KiB,
   exactly one CBOR item, no duplicate map keys, no other tags.
3. The protected header is the map ``{1: -7, 3: "application/vnd.homehub.reading+cbor",
   4: kid}``: alg ES256 (RFC 9053 §2.1), our content type, and the key id, which is the first
   16 bytes of SHA-256 over the DER SubjectPublicKeyInfo of the hub's key.
4. The hub's certificate is found by the topic's hub id (its CN must be that id, it must be
   issued by the platform CA and be valid now) and its key must have that kid.
5. The signature is the 64-byte ``r || s`` of ECDSA P-256/SHA-256 over the CBOR array
   ``["Signature1", protected, h'', payload]`` (the Sig_structure, RFC 9052 §4.4).
6. The payload is a deterministic CBOR map with at least ``v`` (1), ``hub``, ``seq``, ``id`` and
   ``kind``; ``hub`` must equal the topic's hub id. Decimal values are CBOR decimal fractions
   (tag 4), the only tag allowed in it.
7. ``(hub, id)`` identifies the reading: a hub re-sends until it gets an acknowledgement, so the
   same envelope can arrive more than once. A byte-identical copy is counted as a duplicate and
   not delivered again; the same id with different bytes is rejected.

Only then is the message acknowledged (PUBACK after the reading is handed on: manual ack), so
a receiver that dies before handing it on gets it again from the broker. Rejected messages are
acknowledged too (a platform would park them) and counted by reason.

MQTT transport: paho-mqtt's own network thread (``loop_start``) with its built-in reconnect,
deliberately *not* the hub's asyncio bridge, so a fault there cannot hide itself in tests.
Every callback crosses to the event loop only through ``loop.call_soon_threadsafe``.

Run it: ``python -m hil.receiver --broker-port N --ca ca.crt --cert r.crt --key r.key
--hub-cert hub-0001=hub-0001.crt``: one JSON line per verified reading on stdout, one line per
rejection or duplicate on stderr.
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import contextlib
import datetime as dt
import functools
import hashlib
import io
import json
import re
import signal
import ssl
import sys
from collections.abc import Callable, Iterable, Mapping, MutableMapping, Sequence
from dataclasses import dataclass, field
from decimal import Decimal
from pathlib import Path
from types import TracebackType
from typing import Any, Final, NoReturn, Self

import cbor2
import paho.mqtt.client as mqtt
import structlog
from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.utils import encode_dss_signature
from cryptography.x509.oid import NameOID
from paho.mqtt.enums import CallbackAPIVersion, MQTTProtocolVersion
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties
from paho.mqtt.reasoncodes import ReasonCode

from hil.pki import DevPki

_log = structlog.get_logger(__name__)

# ---------------------------------------------------------------------------
# The wire format, as constants
# ---------------------------------------------------------------------------

TOPIC_FILTER: Final = "homehub/v1/+/readings"
TOPIC_RE: Final = re.compile(r"^homehub/v1/([a-z0-9][a-z0-9-]{0,62})/readings$")
COSE_SIGN1_TAG: Final = 18
HEADER_ALG, HEADER_CONTENT_TYPE, HEADER_KID = 1, 3, 4
ALG_ES256: Final = -7
CONTENT_TYPE: Final = "application/vnd.homehub.reading+cbor"
KID_BYTES: Final = 16
SIGNATURE_BYTES: Final = 64
PAYLOAD_VERSION: Final = 1
MAX_ENVELOPE_BYTES: Final = 64 * 1024
"""The hub's payloads are at most 32 KiB; twice that is a generous envelope bound."""
CBOR_DECIMAL_FRACTION_TAG: Final = 4
PAYLOAD_MAX_DEPTH: Final = 32
"""A FHIR Bundle of Observations and Devices nests about 8 deep."""

RECEIVE_MAXIMUM: Final = 64
"""MQTT 5 Receive Maximum we announce: the broker should send at most this many
unacknowledged messages."""
INBOX_MAX: Final = 100_000
"""Messages received and not yet verified. mosquitto 2.0.11 was seen sending past our Receive
Maximum under a backlog of thousands (the receiver verifies each signature, slower than a
hub publishes), and an MQTT 5 broker re-sends an unacknowledged message only after a
reconnect: an inbox bounded by Receive Maximum lost messages the platform must never lose.
Bounded still, by a backlog far larger than any test's."""
SESSION_EXPIRY_S: Final = 3600
"""Our session (subscription, queued messages) survives an hour of absence at the broker."""
DEDUP_WINDOW: Final = 100_000
"""(hub, id) pairs remembered for duplicate detection; a real platform uses its database."""
REJECTIONS_KEPT: Final = 1000

# cbor2 6.3 decodes these tags into objects by itself; we refuse them all (the payload may
# carry tag 4 only). Any other tag reaches tag_hook, which keeps tag 18 and refuses the rest.
_CBOR2_BUILTIN_TAGS: Final = (
    0, 1, 2, 3, 4, 5, 25, 28, 29, 30, 35, 36, 37, 52, 54, 100, 256, 258, 260, 261, 1004,
    43000, 55799,
)  # fmt: skip


# ---------------------------------------------------------------------------
# Results
# ---------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class VerifiedReading:
    """A reading whose envelope verified against its hub's certificate."""

    hub_id: str
    seq: int
    id: str
    kind: str
    kid: bytes
    payload: dict[str, Any] = field(repr=False)
    envelope: bytes = field(repr=False)


class RejectedError(Exception):
    """A message failed verification; ``reason`` says which check."""

    def __init__(self, reason: str) -> None:
        self.reason = reason
        super().__init__(reason)


@dataclass(frozen=True, slots=True)
class Rejection:
    """One rejected message: the topic's hub id (or ``"?"``) and the reason."""

    hub_id: str
    reason: str


@dataclass(slots=True)
class ReceiverStats:
    """Counters since start."""

    verified: int = 0
    duplicates: int = 0
    conflicting_duplicates: int = 0
    conflicts: int = 0
    """Readings the hub marked ``conflict_of``: same identity as an earlier one, other content."""
    rejected: collections.Counter[str] = field(default_factory=collections.Counter)

    @property
    def rejected_total(self) -> int:
        """All rejections, whatever the reason."""
        return sum(self.rejected.values())


# ---------------------------------------------------------------------------
# Hub certificates
# ---------------------------------------------------------------------------


def key_id(public_key: ec.EllipticCurvePublicKey) -> bytes:
    """kid = SHA-256(DER SubjectPublicKeyInfo)[:16]."""
    spki = public_key.public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    return hashlib.sha256(spki).digest()[:KID_BYTES]


class HubDirectory:
    """The platform's list of hub certificates, indexed by hub id and kid."""

    def __init__(self, ca_cert: x509.Certificate) -> None:
        self._ca = ca_cert
        self._certs: dict[str, dict[bytes, x509.Certificate]] = {}

    @classmethod
    def load(cls, ca_file: Path, hub_certs: Iterable[tuple[str, Path]]) -> HubDirectory:
        """A directory from a CA file and ``(hub_id, certificate file)`` pairs."""
        directory = cls(x509.load_pem_x509_certificate(ca_file.read_bytes()))
        for hub_id, path in hub_certs:
            directory.add(hub_id, x509.load_pem_x509_certificate(path.read_bytes()))
        return directory

    def add(self, hub_id: str, cert: x509.Certificate) -> bytes:
        """Register a hub's certificate (CN must be the hub id, issued by the CA); its kid."""
        cns = cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)
        if [a.value for a in cns] != [hub_id]:
            raise ValueError(f"certificate CN is not {hub_id!r}")
        try:
            cert.verify_directly_issued_by(self._ca)
        except (ValueError, TypeError, InvalidSignature):
            raise ValueError("certificate not issued by the platform CA") from None
        public_key = cert.public_key()
        if not isinstance(public_key, ec.EllipticCurvePublicKey) or not isinstance(
            public_key.curve, ec.SECP256R1
        ):
            raise ValueError("hub certificate key is not P-256")
        kid = key_id(public_key)
        self._certs.setdefault(hub_id, {})[kid] = cert
        return kid

    def public_key(self, hub_id: str, kid: bytes) -> ec.EllipticCurvePublicKey:
        """The key a hub signs with under ``kid``; RejectedError if unknown or not valid now."""
        certs = self._certs.get(hub_id)
        if not certs:
            _reject(f"unknown hub {hub_id!r}")
        cert = certs.get(kid)
        if cert is None:
            _reject(f"kid does not match any certificate of hub {hub_id!r}")
        now = dt.datetime.now(dt.UTC)
        if not cert.not_valid_before_utc <= now <= cert.not_valid_after_utc:
            _reject(f"certificate of hub {hub_id!r} is not valid now")
        public_key = cert.public_key()
        assert isinstance(public_key, ec.EllipticCurvePublicKey)  # checked in add()
        return public_key


# ---------------------------------------------------------------------------
# Verification (steps 1-6 of the module docstring)
# ---------------------------------------------------------------------------


def verify_reading(topic: str, envelope: bytes, hubs: HubDirectory) -> VerifiedReading:
    """Verify one message; RejectedError says why not."""
    # 1. The hub id comes from the topic, which the broker ACL ties to the hub's certificate.
    match = TOPIC_RE.fullmatch(topic)
    if match is None:
        _reject("topic is not homehub/v1/<hub id>/readings")
    hub_id = match.group(1)

    # 2. One tagged COSE_Sign1, strictly decoded.
    if len(envelope) > MAX_ENVELOPE_BYTES:
        _reject(f"envelope larger than {MAX_ENVELOPE_BYTES} bytes")
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

    # 3. The protected header: exactly alg, content type and kid.
    header = _decode_one(protected, "protected header", allowed_tags=set(), max_depth=1)
    if not isinstance(header, dict) or set(header) != {HEADER_ALG, HEADER_CONTENT_TYPE, HEADER_KID}:
        _reject("protected header must hold exactly labels 1 (alg), 3 (content type), 4 (kid)")
    if type(header[HEADER_ALG]) is not int or header[HEADER_ALG] != ALG_ES256:
        _reject("alg is not ES256 (-7)")
    if header[HEADER_CONTENT_TYPE] != CONTENT_TYPE:
        _reject(f"content type is not {CONTENT_TYPE}")
    kid = header[HEADER_KID]
    if not isinstance(kid, bytes) or len(kid) != KID_BYTES:
        _reject(f"kid is not a {KID_BYTES}-byte string")

    # 4. The hub's key, by hub id and kid.
    public_key = hubs.public_key(hub_id, kid)

    # 5. The signature over the Sig_structure.
    to_be_signed = cbor2.dumps(["Signature1", protected, b"", payload], canonical=True)
    r = int.from_bytes(signature[:32], "big")
    s = int.from_bytes(signature[32:], "big")
    try:
        public_key.verify(encode_dss_signature(r, s), to_be_signed, ec.ECDSA(hashes.SHA256()))
    except InvalidSignature:
        _reject("signature does not verify")

    # 6. The payload.
    body = _decode_one(
        payload, "payload", allowed_tags={CBOR_DECIMAL_FRACTION_TAG}, max_depth=PAYLOAD_MAX_DEPTH
    )
    if not isinstance(body, dict):
        _reject("payload is not a map")
    for name, kind in (("v", int), ("hub", str), ("seq", int), ("id", str), ("kind", str)):
        if type(body.get(name)) is not kind:
            _reject(f"payload field {name!r} missing or not {kind.__name__}")
    if body["v"] != PAYLOAD_VERSION:
        _reject(f"payload version {body['v']} not supported")
    if body["hub"] != hub_id:
        _reject("payload hub differs from the topic's hub id")
    if body["seq"] < 0 or not body["id"]:
        _reject("payload seq negative or id empty")
    conflict_of = body.get("conflict_of")
    if conflict_of is not None and (
        type(conflict_of) is not int or not 0 < conflict_of < body["seq"]
    ):
        _reject("payload conflict_of is not the seq of an earlier record")
    return VerifiedReading(
        hub_id=hub_id,
        seq=body["seq"],
        id=body["id"],
        kind=body["kind"],
        kid=kid,
        payload=body,
        envelope=envelope,
    )


def _reject(reason: str) -> NoReturn:
    raise RejectedError(reason)


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


# ---------------------------------------------------------------------------
# The MQTT side
# ---------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class _Incoming:
    topic: str
    envelope: bytes
    mid: int
    qos: int
    generation: int


class Receiver:
    """Subscribes, verifies, deduplicates and queues readings (see the module docstring).

    Use as ``async with Receiver(...) as receiver:``; verified readings arrive on
    :attr:`readings`; :attr:`stats` counts; :meth:`wait_until` awaits a condition on them.
    """

    def __init__(
        self,
        *,
        port: int,
        ca_file: Path,
        cert_file: Path,
        key_file: Path,
        hubs: HubDirectory,
        host: str = "127.0.0.1",
        client_id: str = "platform-receiver",
        queue_max: int = 10_000,
        on_rejected: Callable[[Rejection], None] | None = None,
        on_duplicate: Callable[[VerifiedReading], None] | None = None,
    ) -> None:
        self.host = host
        self._on_rejected = on_rejected
        self._on_duplicate = on_duplicate
        self.port = port
        self.hubs = hubs
        self.stats = ReceiverStats()
        self.readings: asyncio.Queue[VerifiedReading] = asyncio.Queue(maxsize=queue_max)
        self.rejections: collections.deque[Rejection] = collections.deque(maxlen=REJECTIONS_KEPT)
        self.subscribed = asyncio.Event()
        self._inbox: asyncio.Queue[_Incoming] = asyncio.Queue(maxsize=INBOX_MAX)
        self._seen: collections.OrderedDict[tuple[str, str], bytes] = collections.OrderedDict()
        self._generation = 0
        self._change = asyncio.Event()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._task: asyncio.Task[None] | None = None

        ctx = ssl.create_default_context(ssl.Purpose.SERVER_AUTH, cafile=str(ca_file))
        ctx.minimum_version = ssl.TLSVersion.TLSv1_2
        ctx.load_cert_chain(cert_file, key_file)
        self._client = mqtt.Client(
            CallbackAPIVersion.VERSION2,
            client_id=client_id,
            protocol=MQTTProtocolVersion.MQTTv5,
            manual_ack=True,
        )
        self._client.tls_set_context(ctx)
        self._client.reconnect_delay_set(min_delay=1, max_delay=8)
        self._client.suppress_exceptions = True
        self._client.on_connect = self._on_connect
        self._client.on_subscribe = self._on_subscribe
        self._client.on_disconnect = self._on_disconnect
        self._client.on_message = self._on_message

    @classmethod
    def for_dev_pki(cls, pki: DevPki, port: int, *, host: str = "127.0.0.1") -> Receiver:
        """A receiver for a hil.pki.DevPki: its receiver certificate and its one hub."""
        hubs = HubDirectory.load(pki.ca_cert, [(pki.hub_id, pki.hub_cert)])
        return cls(
            port=port,
            host=host,
            ca_file=pki.ca_cert,
            cert_file=pki.receiver_cert,
            key_file=pki.receiver_key,
            hubs=hubs,
        )

    # -- lifecycle ----------------------------------------------------------------------

    async def start(self) -> None:
        """Connect in paho's thread (retrying until the broker is there) and start processing."""
        self._loop = asyncio.get_running_loop()
        self._task = asyncio.create_task(self._process(), name="receiver.process")
        props = Properties(PacketTypes.CONNECT)  # type: ignore[no-untyped-call]
        props.SessionExpiryInterval = SESSION_EXPIRY_S
        props.ReceiveMaximum = RECEIVE_MAXIMUM
        # Clean Start 0 from the very first CONNECT: mosquitto 2.0 persists a session across
        # its own restart only for clients that connected with Clean Start 0, whatever the
        # Session Expiry Interval; and a platform wants what was queued for it anyway.
        self._client.connect_async(
            self.host, self.port, keepalive=30, clean_start=False, properties=props
        )
        self._client.loop_start()

    async def stop(self) -> None:
        """Disconnect, join paho's thread, stop processing."""
        self._client.disconnect()
        await asyncio.to_thread(self._client.loop_stop)
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None

    async def __aenter__(self) -> Self:
        await self.start()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.stop()

    async def wait_until(self, predicate: Callable[[ReceiverStats], bool]) -> None:
        """Return once ``predicate(self.stats)`` holds (wrap in ``asyncio.timeout``)."""
        while not predicate(self.stats):
            await self._change.wait()

    # -- paho's thread: record and hand over, nothing else --------------------------------

    def _to_loop(self, fn: Callable[..., None], *args: Any) -> None:
        if self._loop is not None:
            with contextlib.suppress(RuntimeError):  # loop closed during shutdown
                self._loop.call_soon_threadsafe(fn, *args)

    def _on_connect(
        self,
        client: mqtt.Client,
        _u: Any,
        flags: mqtt.ConnectFlags,
        reason: ReasonCode,
        _p: Properties | None,
    ) -> None:
        if reason.is_failure:
            self._to_loop(self._log_event, "receiver_connect_refused", str(reason))
            return
        self._generation += 1
        client.subscribe(TOPIC_FILTER, qos=1)
        self._to_loop(
            self._log_event, "receiver_connected", f"session_present={flags.session_present}"
        )

    def _on_subscribe(
        self,
        _c: mqtt.Client,
        _u: Any,
        _mid: int,
        reasons: list[ReasonCode],
        _p: Properties | None,
    ) -> None:
        if all(not r.is_failure for r in reasons):
            self._to_loop(self.subscribed.set)
            self._to_loop(self._log_event, "receiver_subscribed", TOPIC_FILTER)
        else:
            self._to_loop(self._log_event, "receiver_subscribe_refused", str(reasons[0]))

    def _on_disconnect(
        self,
        _c: mqtt.Client,
        _u: Any,
        _f: mqtt.DisconnectFlags,
        reason: ReasonCode,
        _p: Properties | None,
    ) -> None:
        self._to_loop(self.subscribed.clear)
        self._to_loop(self._log_event, "receiver_disconnected", str(reason))

    def _on_message(self, _c: mqtt.Client, _u: Any, msg: mqtt.MQTTMessage) -> None:
        try:
            topic = msg.topic
        except UnicodeDecodeError:
            topic = ""
        item = _Incoming(topic, bytes(msg.payload), msg.mid, msg.qos, self._generation)
        self._to_loop(self._enqueue, item)

    # -- the event loop -----------------------------------------------------------------------

    def _log_event(self, event: str, detail: str) -> None:
        _log.info(event, detail=detail)

    def _enqueue(self, item: _Incoming) -> None:
        try:
            self._inbox.put_nowait(item)
        except asyncio.QueueFull:  # not acked: the broker re-sends it after a reconnect
            self._rejected("?", "receiver inbox full")

    async def _process(self) -> None:
        while True:
            item = await self._inbox.get()
            match = TOPIC_RE.fullmatch(item.topic)
            hub = match.group(1) if match else "?"
            try:
                reading = verify_reading(item.topic, item.envelope, self.hubs)
            except RejectedError as exc:
                self._rejected(hub, exc.reason)
            else:
                await self._deliver(reading)
            if item.qos > 0 and item.generation == self._generation:
                self._client.ack(item.mid, item.qos)
            self._changed()

    async def _deliver(self, reading: VerifiedReading) -> None:
        conflict_of = reading.payload.get("conflict_of")
        if conflict_of is not None:
            # The hub stored a reading whose identity equals an earlier one's while its content
            # differs (docs/wire-format.md): kept apart and counted, never merged into the first.
            key = (reading.hub_id, f"{reading.id}#conflict-{reading.seq}")
        else:
            key = (reading.hub_id, reading.id)
        digest = hashlib.sha256(reading.envelope).digest()
        prior = self._seen.get(key)
        if prior == digest:
            self.stats.duplicates += 1
            _log.info("receiver_duplicate", hub=reading.hub_id, seq=reading.seq)
            if self._on_duplicate is not None:
                self._on_duplicate(reading)
            return
        if prior is not None:
            self.stats.conflicting_duplicates += 1
            self._rejected(reading.hub_id, "id already received with a different envelope")
            return
        self._seen[key] = digest
        if len(self._seen) > DEDUP_WINDOW:
            self._seen.popitem(last=False)
        if conflict_of is not None:
            self.stats.conflicts += 1
            _log.warning("receiver_conflict", hub=reading.hub_id, seq=reading.seq)
        await self.readings.put(reading)
        self.stats.verified += 1

    def _rejected(self, hub_id: str, reason: str) -> None:
        self.stats.rejected[reason] += 1
        rejection = Rejection(hub_id, reason)
        self.rejections.append(rejection)
        _log.warning("receiver_rejected", hub=hub_id, reason=reason)
        if self._on_rejected is not None:
            self._on_rejected(rejection)

    def _changed(self) -> None:
        event, self._change = self._change, asyncio.Event()
        event.set()


# ---------------------------------------------------------------------------
# Command line
# ---------------------------------------------------------------------------


def _json_default(value: object) -> Any:
    if isinstance(value, Decimal):
        if not value.is_finite() or abs(value.adjusted()) > 300:
            return str(value)  # no billion-digit int, no float overflow
        return int(value) if value == value.to_integral_value() else float(value)
    if isinstance(value, bytes):
        return value.hex()
    raise TypeError(f"not JSON serialisable: {type(value).__name__}")


def _hub_cert_arg(text: str) -> tuple[str, Path]:
    hub_id, sep, path = text.partition("=")
    if not sep or not TOPIC_RE.fullmatch(f"homehub/v1/{hub_id}/readings"):
        raise argparse.ArgumentTypeError("expected HUB_ID=CERT_FILE with a valid hub id")
    return hub_id, Path(path)


def build_parser() -> argparse.ArgumentParser:
    """The command line of ``python -m hil.receiver``."""
    p = argparse.ArgumentParser(prog="python -m hil.receiver", description=__doc__.split("\n")[0])
    p.add_argument("--broker-host", default="127.0.0.1")
    p.add_argument("--broker-port", type=int, required=True)
    p.add_argument("--ca", type=Path, required=True, help="CA of the broker and of the hubs")
    p.add_argument("--cert", type=Path, required=True, help="the receiver's client certificate")
    p.add_argument("--key", type=Path, required=True, help="the receiver's client key")
    p.add_argument(
        "--hub-cert",
        type=_hub_cert_arg,
        action="append",
        required=True,
        metavar="HUB_ID=CERT",
        help="a hub's certificate (repeatable)",
    )
    return p


async def _main(args: argparse.Namespace) -> None:
    receiver = Receiver(
        host=args.broker_host,
        port=args.broker_port,
        ca_file=args.ca,
        cert_file=args.cert,
        key_file=args.key,
        hubs=HubDirectory.load(args.ca, args.hub_cert),
        on_rejected=lambda r: print(f"rejected hub={r.hub_id}: {r.reason}", file=sys.stderr),
        on_duplicate=lambda r: print(
            f"duplicate hub={r.hub_id} seq={r.seq}: byte-identical, not delivered again",
            file=sys.stderr,
        ),
    )
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    async with receiver, asyncio.TaskGroup() as tg:
        printer = tg.create_task(_print_readings(receiver), name="receiver.print")
        await stop.wait()
        printer.cancel()


async def _print_readings(receiver: Receiver) -> None:
    while True:
        r = await receiver.readings.get()
        line = {
            "hub": r.hub_id,
            "seq": r.seq,
            "id": r.id,
            "kind": r.kind,
            "kid": r.kid.hex(),
            "payload": r.payload,
        }
        print(json.dumps(line, default=_json_default, sort_keys=True), flush=True)


def _drop_printed_events(_logger: Any, _method: str, event: MutableMapping[str, Any]) -> Any:
    """The command line prints rejections and duplicates itself, one line each."""
    if event.get("event") in ("receiver_rejected", "receiver_duplicate"):
        raise structlog.DropEvent
    return event


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of ``python -m hil.receiver``."""
    args = build_parser().parse_args(argv)
    structlog.configure(
        processors=[_drop_printed_events, *structlog.get_config()["processors"]],
        logger_factory=structlog.PrintLoggerFactory(sys.stderr),
    )
    asyncio.run(_main(args))
    return 0


if __name__ == "__main__":
    sys.exit(main())
