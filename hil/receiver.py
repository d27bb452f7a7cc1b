"""The reference platform: how a hospital platform reads what homehub sends, and vouches for it.

Read it with docs/wire-format.md and docs/platform-protocol.md. It does not import the hub's
own code (agent/), so it is an independent check of it: envelopes are verified with pycose
(hil/platform_verify.py), receipts are signed with pycose (hil/platform_signing.py).

For each MQTT message on ``homehub/v1/<hub_id>/readings`` (optionally through an MQTT 5 shared
subscription ``$share/<group>/homehub/v1/+/readings``, so that several receivers share one
fleet, each message going to one of them):

1. verify it (hil/platform_verify.py: topic, size, one tagged COSE_Sign1, header, the hub's
   certificate by hub id and kid, among every certificate the hub has had, the signature,
   decompression, the payload, one reading or a batch);
2. store it durably (hil/platform_store.py, SQLite in ``--state-dir``; a version-3 reading's
   Devices by reference are taken from the device sets stored with earlier readings, one
   not held refused ``unknown_device``): each reading
   deduplicated by (hub, id) against everything held, also across this receiver's restarts;
   a byte-identical copy is a *duplicate* (stored once, not delivered again), the same id with
   other bytes a *conflicting duplicate* (parked for review); a message that fails verification
   is parked with its reason;
3. only after that commit: PUBACK to the broker (manual ack; a receiver that dies before the
   commit gets the message again), deliver new readings (:attr:`Receiver.readings`, the
   ``consumer`` hook), and queue a receipt item: ``held [digest, seqs]`` for a stored envelope
   (duplicates too: a copy of an envelope the platform holds gets a receipt again), ``refused
   [digest, seqs, code]`` for an envelope that will never verify when the hub is known and its
   seqs can be read; nothing for the rest (parked and counted only);
4. receipts gather items per hub for up to :data:`RECEIPT_GATHER_S` (or
   :data:`RECEIPT_MAX_ITEMS`) and go out signed with the platform key on
   ``homehub/v1/<hub>/receipts`` at QoS 1.

Hub certificates: those given at start (``--hub-cert``, :meth:`Receiver.for_dev_pki`) and those
learned while running (:meth:`Receiver.add_hub_certificate`, when the platform issues a hub a
new certificate: remembered in the state directory and loaded again at each start). A hub
keeps every certificate it had: after a rotation its outbox still holds envelopes signed with
the old key, and new ones come signed with the new key.

Flow control: the receiver announces MQTT 5 Receive Maximum :data:`RECEIVE_MAXIMUM` and acks a
message only once it is stored and handed on, so a consumer that falls behind (a full
:attr:`Receiver.readings` queue, a slow ``consumer``) stops the acks and the broker stops
sending: it queues for us instead. Nothing is dropped unacknowledged.

MQTT transport: paho-mqtt's own network thread (``loop_start``) with its built-in reconnect,
deliberately *not* the hub's asyncio bridge, so a fault there cannot hide itself in tests.
Every callback crosses to the event loop only through ``loop.call_soon_threadsafe``.

Run it: ``python -m hil.receiver --broker-port N --ca ca.crt --cert r.crt --key r.key
--hub-cert hub-0001=hub-0001.crt [--platform-key platform.key] [--state-dir DIR]
[--dictionaries DIR] [--share-group G --client-id ID]``: one JSON line per new verified
reading on stdout, one line per rejection or duplicate on stderr.
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import contextlib
import json
import os
import signal
import ssl
import sys
import time
from collections.abc import Awaitable, Callable, MutableMapping, Sequence
from dataclasses import dataclass, field
from decimal import Decimal
from pathlib import Path
from types import TracebackType
from typing import Any, Final, Self

import cbor2
import paho.mqtt.client as mqtt
import structlog
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from paho.mqtt.enums import CallbackAPIVersion, MQTTProtocolVersion
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties
from paho.mqtt.reasoncodes import ReasonCode

from hil.pki import DevPki
from hil.platform_signing import PlatformSigner, envelope_digest
from hil.platform_store import CONFLICTING_REASON, Outcome, PlatformStore
from hil.platform_verify import (
    ALG_ES256,
    BATCH_CONTENT_TYPE,
    CONTENT_TYPE,
    MAX_DECOMPRESSED_BYTES,
    MAX_ENVELOPE_BYTES,
    TOPIC_RE,
    Dictionaries,
    HubDirectory,
    RejectedError,
    VerifiedEnvelope,
    VerifiedReading,
    verify_envelope,
    verify_reading,
)

__all__ = [
    "ALG_ES256",
    "BATCH_CONTENT_TYPE",
    "CONTENT_TYPE",
    "MAX_DECOMPRESSED_BYTES",
    "MAX_ENVELOPE_BYTES",
    "TOPIC_FILTER",
    "TOPIC_RE",
    "Dictionaries",
    "HubDirectory",
    "Receipt",
    "Receiver",
    "ReceiverStats",
    "RejectedError",
    "Rejection",
    "VerifiedEnvelope",
    "VerifiedReading",
    "build_parser",
    "main",
    "receipts_topic",
    "verify_envelope",
    "verify_reading",
]

_log = structlog.get_logger(__name__)

TOPIC_FILTER: Final = "homehub/v1/+/readings"

RECEIVE_MAXIMUM: Final = 64
"""MQTT 5 Receive Maximum we announce: the broker sends at most this many unacknowledged
messages; the rest waits at the broker until we ack (flow control)."""
SESSION_EXPIRY_S: Final = 3600
"""Our session (subscription, queued messages) survives an hour of absence at the broker."""
REJECTIONS_KEPT: Final = 1000
STORE_BATCH_MAX: Final = 256
"""Messages verified and stored in one transaction (one fsync) when they wait in the inbox."""
RECEIPT_GATHER_S: Final = 0.1
"""A receipt gathers items for up to 100 ms (docs/platform-protocol.md)."""
RECEIPT_MAX_ITEMS: Final = 1000
RECEIPT_VALIDITY_S: Final = 900
"""``exp - iat`` of our receipts: a hub offline for longer gets them expired, deletes nothing
and sends again after its receipt timeout; we then receipt the copies."""

Consumer = Callable[[VerifiedReading], Awaitable[None]]


def receipts_topic(hub_id: str) -> str:
    """``homehub/v1/<hub>/receipts``."""
    return f"homehub/v1/{hub_id}/receipts"


# ---------------------------------------------------------------------------
# Results
# ---------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Rejection:
    """One rejected message: the topic's hub id (or ``"?"``) and the reason."""

    hub_id: str
    reason: str


@dataclass(frozen=True, slots=True)
class Receipt:
    """A receipt the receiver sent: what it named (the signed bytes in ``message``)."""

    hub_id: str
    rid: bytes
    held: tuple[tuple[bytes, tuple[int, ...]], ...]
    refused: tuple[tuple[bytes, tuple[int, ...], str], ...]
    message: bytes = field(repr=False)


@dataclass(slots=True)
class ReceiverStats:
    """Counters since start (the store holds what survives a restart)."""

    verified: int = 0
    """New readings stored and delivered."""
    duplicates: int = 0
    conflicting_duplicates: int = 0
    conflicts: int = 0
    """Readings the hub marked ``conflict_of``: same identity as an earlier one, other content."""
    rejected: collections.Counter[str] = field(default_factory=collections.Counter)
    envelopes: int = 0
    """Messages that verified (one reading or a batch)."""
    batches: int = 0
    compressed: int = 0
    receipts_sent: int = 0
    held_items: int = 0
    refused_items: int = 0
    parked: int = 0
    """Messages kept without a receipt item (the hub or the seqs unknown, the platform's fault)."""
    received: int = 0
    """MQTT messages taken off the connection (copies included)."""
    unacked: int = 0
    """Messages received on this connection and not yet acknowledged."""
    max_unacked: int = 0

    @property
    def rejected_total(self) -> int:
        """All rejections, whatever the reason."""
        return sum(self.rejected.values())


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


@dataclass(slots=True)
class _Result:
    """What verifying and storing one message found (made in the store's thread)."""

    item: _Incoming
    verified: VerifiedEnvelope | None = None
    outcomes: list[Outcome] = field(default_factory=list)
    error: RejectedError | None = None


class Receiver:
    """Subscribes, verifies, stores, acknowledges, delivers and receipts (see the module doc).

    Use as ``async with Receiver(...) as receiver:``; new verified readings arrive on
    :attr:`readings`; :attr:`stats` counts; :meth:`wait_until` awaits a condition on them;
    :attr:`store` is the database; :attr:`receipts` the receipts sent.

    ``signer``: the platform key; receipts are sent when it is given (``send_receipts``).
    ``state_dir``: where the database lives (in memory when None: forgotten at the end).
    ``share_group``: subscribe through ``$share/<group>/``; give each receiver its own
    ``client_id``. ``consumer``: awaited for each new reading before its message is acked (a
    slow one slows the flow). ``dictionaries``: the zstd dictionaries the platform holds.
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
        signer: PlatformSigner | None = None,
        send_receipts: bool = True,
        state_dir: Path | None = None,
        dictionaries: Dictionaries | None = None,
        share_group: str | None = None,
        consumer: Consumer | None = None,
        receive_maximum: int = RECEIVE_MAXIMUM,
        on_receipt: Callable[[Receipt], None] | None = None,
        pure_pycose: bool = False,
    ) -> None:
        if share_group is not None and not TOPIC_RE.fullmatch(f"homehub/v1/{share_group}/readings"):
            raise ValueError("share group must match ^[a-z0-9][a-z0-9-]{0,62}$")
        self.host = host
        self.port = port
        self.hubs = hubs
        self.dictionaries = dictionaries or Dictionaries()
        self.signer = signer if send_receipts else None
        self.topic_filter = (
            TOPIC_FILTER if share_group is None else f"$share/{share_group}/{TOPIC_FILTER}"
        )
        self.stats = ReceiverStats()
        self.readings: asyncio.Queue[VerifiedReading] = asyncio.Queue(maxsize=queue_max)
        self.rejections: collections.deque[Rejection] = collections.deque(maxlen=REJECTIONS_KEPT)
        self.receipts: collections.deque[Receipt] = collections.deque(maxlen=REJECTIONS_KEPT)
        self.subscribed = asyncio.Event()
        self._state_dir = state_dir
        self.store: PlatformStore | None = None
        self._on_rejected = on_rejected
        self._on_duplicate = on_duplicate
        self._on_receipt = on_receipt
        self._consumer = consumer
        self._pure_pycose = pure_pycose
        self._receive_maximum = receive_maximum
        # Unbounded on purpose: what the broker sends is bounded by Receive Maximum while we
        # do not ack, and a message taken off the socket must never be dropped unacked.
        self._inbox: asyncio.Queue[_Incoming] = asyncio.Queue()
        self._generation = 0
        self._loop_generation = 0
        self._change = asyncio.Event()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._task: asyncio.Task[None] | None = None
        self._pending: dict[
            str,
            tuple[list[tuple[bytes, tuple[int, ...]]], list[tuple[bytes, tuple[int, ...], str]]],
        ] = {}
        self._flush_handles: dict[str, asyncio.TimerHandle] = {}
        self._receipt_tasks: set[asyncio.Task[None]] = set()

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
    def for_dev_pki(
        cls,
        pki: DevPki,
        port: int,
        *,
        host: str = "127.0.0.1",
        receipts: bool = True,
        **options: Any,
    ) -> Receiver:
        """A receiver for a hil.pki.DevPki: its receiver certificate, its one hub, and (unless
        ``receipts=False``) its platform key signing receipts. ``options`` go to the
        constructor (``state_dir``, ``share_group``, ``client_id``, ``consumer``...)."""
        hubs = HubDirectory.load(pki.ca_cert, [(pki.hub_id, pki.hub_cert)])
        signer = PlatformSigner.from_pem_file(pki.platform_key) if receipts else None
        return cls(
            port=port,
            host=host,
            ca_file=pki.ca_cert,
            cert_file=pki.receiver_cert,
            key_file=pki.receiver_key,
            hubs=hubs,
            signer=signer,
            **options,
        )

    # -- lifecycle ----------------------------------------------------------------------

    async def start(self) -> None:
        """Open the store, connect in paho's thread (retrying until the broker is there) and
        start processing."""
        self._loop = asyncio.get_running_loop()
        self.store = await asyncio.to_thread(PlatformStore.in_state_dir, self._state_dir)
        for hub_id, der in await asyncio.to_thread(self.store.hub_certificates):
            try:
                self.hubs.add(hub_id, x509.load_der_x509_certificate(der))
            except ValueError as exc:  # another CA now, or damaged: the hub's others still count
                _log.warning("receiver_hub_certificate_unusable", hub=hub_id, reason=str(exc))
        self._task = asyncio.create_task(self._process(), name="receiver.process")
        props = Properties(PacketTypes.CONNECT)  # type: ignore[no-untyped-call]
        props.SessionExpiryInterval = SESSION_EXPIRY_S
        props.ReceiveMaximum = self._receive_maximum
        # Clean Start 0 from the very first CONNECT: mosquitto 2.0 persists a session across
        # its own restart only for clients that connected with Clean Start 0, whatever the
        # Session Expiry Interval; and a platform wants what was queued for it anyway.
        self._client.connect_async(
            self.host, self.port, keepalive=30, clean_start=False, properties=props
        )
        self._client.loop_start()

    async def stop(self) -> None:
        """Stop processing, send the receipts gathered so far, disconnect, close the store."""
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None
        for hub_id in list(self._pending):
            self._flush(hub_id)
        if self._receipt_tasks:
            await asyncio.gather(*self._receipt_tasks, return_exceptions=True)
        self._client.disconnect()
        await asyncio.to_thread(self._client.loop_stop)
        if self.store is not None:
            self.store.close()
            self.store = None

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

    async def add_hub_certificate(self, hub_id: str, cert: x509.Certificate | bytes) -> bytes:
        """Learn a hub's new certificate (DER bytes or loaded) at run time, beside the ones it
        had (:class:`HubDirectory`); its kid. Checked first (CN, the platform CA, P-256:
        ValueError says why not), then remembered durably in the state directory (a restart
        loads it again; in memory without one), then used. The platform calls it when it
        issues the certificate, before the hub can sign with its key
        (:meth:`hil.platform_console.PlatformConsole.install_certificate`). A message that
        came under the key before is parked (``unknown_kid``): the hub sends it again.

        Raises:
            RuntimeError: the receiver is not started (its store is not open).
        """
        if isinstance(cert, bytes):
            cert = x509.load_der_x509_certificate(cert)
        store = self.store
        if store is None:
            raise RuntimeError("the receiver is not started")
        HubDirectory.check(self.hubs.ca, hub_id, cert)
        der = cert.public_bytes(serialization.Encoding.DER)
        await asyncio.to_thread(store.add_hub_certificate, hub_id, der, time.time())
        kid = self.hubs.add(hub_id, cert)
        _log.info("receiver_hub_certificate_added", hub=hub_id, kid=kid.hex())
        return kid

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
        self._to_loop(self._new_generation, self._generation)
        client.subscribe(self.topic_filter, qos=1)
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
            self._to_loop(self._log_event, "receiver_subscribed", self.topic_filter)
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

    def _new_generation(self, generation: int) -> None:
        # Messages of an earlier connection can no longer be acked (their mids died with it):
        # the broker sends them again on this one.
        self._loop_generation = generation
        self.stats.unacked = 0

    def _enqueue(self, item: _Incoming) -> None:
        self.stats.received += 1
        if item.qos > 0 and item.generation == self._loop_generation:
            self.stats.unacked += 1
            self.stats.max_unacked = max(self.stats.max_unacked, self.stats.unacked)
        self._inbox.put_nowait(item)
        self._changed()

    async def _process(self) -> None:
        while True:
            batch = [await self._inbox.get()]
            while len(batch) < STORE_BATCH_MAX and not self._inbox.empty():
                batch.append(self._inbox.get_nowait())
            results = await asyncio.to_thread(self._verify_and_store, batch)
            for result in results:
                await self._handle(result)
                self._ack(result.item)
                self._changed()

    def _verify_and_store(self, batch: Sequence[_Incoming]) -> list[_Result]:
        """In a worker thread: verify every message, store all in one durable transaction."""
        results = []
        store = self.store
        assert store is not None
        # Device sets carried by the messages before, stored with them in this transaction: a
        # later message of the batch may name them (a backlog sent again all at once).
        learned: dict[tuple[str, bytes], list[dict[str, Any]]] = {}

        def device_set(hub: str, digest: bytes) -> list[dict[str, Any]] | None:
            found = learned.get((hub, digest))
            return found if found is not None else store.device_set(hub, digest)

        for item in batch:
            try:
                verified = verify_envelope(
                    item.topic,
                    item.envelope,
                    self.hubs,
                    self.dictionaries,
                    pure_pycose=self._pure_pycose,
                    device_sets=device_set,
                )
            except RejectedError as exc:
                results.append(_Result(item, error=exc))
            else:
                results.append(_Result(item, verified=verified))
                for reading in verified.readings:
                    if reading.device_set is not None:
                        digest, devices = reading.device_set
                        learned.setdefault((verified.hub_id, digest), cbor2.loads(devices))
        now = time.time()
        with store.transaction():
            for result in results:
                if result.verified is not None:
                    result.outcomes = store.store_envelope(result.verified, now)
                elif result.error is not None:
                    error = result.error
                    store.park(
                        error.hub_id,
                        error.code,
                        error.reason,
                        result.item.envelope,
                        envelope_digest(result.item.envelope),
                        now,
                    )
        return results

    async def _handle(self, result: _Result) -> None:
        digest = envelope_digest(result.item.envelope)
        if result.error is not None:
            error = result.error
            hub = error.hub_id or "?"
            self._rejected(hub, error.reason)
            if (
                error.refusable
                and error.seqs is not None
                and error.hub_id is not None
                and self.hubs.knows(error.hub_id)
            ):
                self._add_item(error.hub_id, refused=(digest, tuple(error.seqs), error.code))
            else:
                self.stats.parked += 1
            return
        verified = result.verified
        assert verified is not None
        self.stats.envelopes += 1
        self.stats.batches += verified.content_type == BATCH_CONTENT_TYPE
        self.stats.compressed += verified.compressed
        for reading, outcome in zip(verified.readings, result.outcomes, strict=True):
            if outcome is Outcome.DUPLICATE:
                self.stats.duplicates += 1
                _log.info("receiver_duplicate", hub=reading.hub_id, seq=reading.seq)
                if self._on_duplicate is not None:
                    self._on_duplicate(reading)
            elif outcome is Outcome.CONFLICTING:
                self.stats.conflicting_duplicates += 1
                self._rejected(reading.hub_id, CONFLICTING_REASON)
            else:
                if reading.conflict_of is not None:
                    # The hub stored a reading whose identity equals an earlier one's while its
                    # content differs (docs/wire-format.md): kept apart, never merged.
                    self.stats.conflicts += 1
                    _log.warning("receiver_conflict", hub=reading.hub_id, seq=reading.seq)
                if self._consumer is not None:
                    await self._consumer(reading)
                await self.readings.put(reading)
                self.stats.verified += 1
        # Every reading of it is stored (a conflicting one parked for review): held.
        self._add_item(verified.hub_id, held=(digest, tuple(verified.seqs)))

    def _ack(self, item: _Incoming) -> None:
        if item.qos > 0 and item.generation == self._loop_generation:
            self._client.ack(item.mid, item.qos)
            self.stats.unacked -= 1

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

    # -- receipts -------------------------------------------------------------------------

    def _add_item(
        self,
        hub_id: str,
        *,
        held: tuple[bytes, tuple[int, ...]] | None = None,
        refused: tuple[bytes, tuple[int, ...], str] | None = None,
    ) -> None:
        if self.signer is None or self._loop is None:
            return
        held_items, refused_items = self._pending.setdefault(hub_id, ([], []))
        if held is not None:
            held_items.append(held)
        if refused is not None:
            refused_items.append(refused)
        if len(held_items) + len(refused_items) >= RECEIPT_MAX_ITEMS:
            self._flush(hub_id)
        elif hub_id not in self._flush_handles:
            self._flush_handles[hub_id] = self._loop.call_later(
                RECEIPT_GATHER_S, self._flush, hub_id
            )

    def _flush(self, hub_id: str) -> None:
        handle = self._flush_handles.pop(hub_id, None)
        if handle is not None:
            handle.cancel()
        pending = self._pending.pop(hub_id, None)
        if pending is None or self.signer is None:
            return
        held, refused = pending
        iat = int(time.time())
        exp = iat + RECEIPT_VALIDITY_S
        rid = os.urandom(16)
        message = self.signer.receipt(hub_id, held, refused, iat=iat, exp=exp, rid=rid)
        receipt = Receipt(hub_id, rid, tuple(held), tuple(refused), message)
        store = self.store
        if store is None:
            self._send_receipt(receipt)
            return
        # The receipt id is stored before the receipt leaves: what was issued is on record
        # (and visible to whoever holds the receipt) first.
        task = asyncio.ensure_future(self._record_then_send(store, receipt, iat, exp))
        self._receipt_tasks.add(task)
        task.add_done_callback(self._receipt_tasks.discard)

    async def _record_then_send(
        self, store: PlatformStore, receipt: Receipt, iat: int, exp: int
    ) -> None:
        await asyncio.to_thread(
            store.record_receipt,
            receipt.rid,
            receipt.hub_id,
            iat,
            exp,
            len(receipt.held),
            len(receipt.refused),
        )
        self._send_receipt(receipt)

    def _send_receipt(self, receipt: Receipt) -> None:
        self._client.publish(receipts_topic(receipt.hub_id), receipt.message, qos=1)
        self.stats.receipts_sent += 1
        self.stats.held_items += len(receipt.held)
        self.stats.refused_items += len(receipt.refused)
        self.receipts.append(receipt)
        _log.info(
            "receiver_receipt_sent",
            hub=receipt.hub_id,
            held=len(receipt.held),
            refused=len(receipt.refused),
        )
        if self._on_receipt is not None:
            self._on_receipt(receipt)
        self._changed()


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
    p.add_argument(
        "--platform-key",
        type=Path,
        help="the platform signing key (PEM): receipts are sent, signed with it",
    )
    p.add_argument(
        "--no-receipts", action="store_true", help="send no receipts even with a platform key"
    )
    p.add_argument(
        "--state-dir",
        type=Path,
        help="where the platform's database lives (survives a restart); in memory if not given",
    )
    p.add_argument(
        "--dictionaries", type=Path, help="directory of zstd dictionaries named <id>.zdict"
    )
    p.add_argument(
        "--share-group",
        help="subscribe through $share/<group>/ (several receivers share one fleet)",
    )
    p.add_argument(
        "--client-id",
        default="platform-receiver",
        help="MQTT client id (each receiver of a share group needs its own)",
    )
    p.add_argument("--receive-maximum", type=int, default=RECEIVE_MAXIMUM)
    p.add_argument(
        "--pure-pycose",
        action="store_true",
        help="check ES256 with pycose's own pure-Python ECDSA (slow) instead of OpenSSL",
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
        signer=None
        if args.platform_key is None
        else PlatformSigner.from_pem_file(args.platform_key),
        send_receipts=not args.no_receipts,
        state_dir=args.state_dir,
        dictionaries=None if args.dictionaries is None else Dictionaries.load(args.dictionaries),
        share_group=args.share_group,
        client_id=args.client_id,
        receive_maximum=args.receive_maximum,
        pure_pycose=args.pure_pycose,
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
