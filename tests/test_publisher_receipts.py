"""``ack = "receipt"``: the publisher deletes a reading only on the platform's signed receipt
(agent/publisher.py, agent/receipts.py), against a real TLS mosquitto.

The platform here is a stand-in: a plain paho client with the platform receiver's certificate
that subscribes to every hub's readings, stores the seqs of each envelope it gets and sends
receipts signed with the dev PKI's platform key by the reference platform's signer
(hil/platform_signing.py, pycose), gathering items for up to :data:`GATHER_S` as the contract
allows. (hil/receiver.py is becoming the reference platform that does this; until it sends
receipts this stand-in does.) Negative receipts are published by the tests themselves.

The headline: mosquitto restarted without persistence in the middle of a 3,000-reading backlog
loses nothing: what it had PUBACKed and not delivered is sent again, because only receipts
delete. And with dictionary 3 (Devices by reference), a platform that lost the device sets
refuses the readings naming them ``unknown_device``: the hub sends them again in full and
loses nothing.
"""

from __future__ import annotations

import asyncio
import contextlib
import ssl
import threading
from collections.abc import AsyncIterator, Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final

import cbor2
import paho.mqtt.client as mqtt
import pytest
from paho.mqtt.enums import CallbackAPIVersion, MQTTProtocolVersion

from agent import cose, dictionaries
from agent.device_refs import ConfirmedDeviceSets
from agent.envelopes import decompress
from agent.errors import ReceiptRejection
from agent.ingest import Signer
from agent.outbox import Outbox, OutboxCounts
from agent.profiles import AckMode
from agent.publisher import Publisher
from agent.receipts import CLOCK_SKEW_S as SKEW
from agent.receipts import envelope_digest
from agent.sealing import DataKey, Sealer
from agent.security import SecurityEvent, load_platform_key
from agent.storage import StorageThread
from agent.uplink import Uplink
from hil.broker import Broker
from hil.pki import DevPki
from hil.platform_signing import PlatformSigner
from hil.platform_verify import (
    Dictionaries,
    HubDirectory,
    RejectedError,
    device_set_of,
    verify_envelope,
)
from hil.train_dictionaries import hub_backlog
from tests.conftest import HUB_ID, uplink_settings
from tests.test_publisher import watching_logs

TIMEOUT_S: Final = 30.0
"""Every await is bounded; on loopback each step takes milliseconds."""

GATHER_S: Final = 0.05
"""The stand-in platform gathers receipt items this long (the contract allows 100 ms)."""

RECEIPTS: Final = f"homehub/v1/{HUB_ID}/receipts"
NOW: Final = 1_800_000_000
"""The hub's wall clock in these tests (and the receipts' iat)."""


# ---------------------------------------------------------------------------
# The stand-in platform
# ---------------------------------------------------------------------------


Judge = Callable[[bytes], tuple[list[int], str | None]]
"""A stand-in's verdict on an envelope: its seqs, and the reason it is refused (None: held)."""


class StandInPlatform:
    """Subscribes to readings (QoS 1), stores seqs, sends signed receipts (see module doc).

    paho runs in its own thread; the test's loop is told of every change. ``judge`` reads
    an envelope (by default: a plain single, held).
    """

    def __init__(
        self,
        pki: DevPki,
        port: int,
        signer: PlatformSigner,
        loop: asyncio.AbstractEventLoop,
        judge: Judge | None = None,
    ) -> None:
        self.signer = signer
        self.judge = judge
        self.loop = loop
        self.stored: dict[int, int] = {}
        """seq -> how many copies arrived."""
        self.receipting = threading.Event()
        self.receipting.set()
        self._lock = threading.Lock()
        self._items: list[tuple[bytes, list[int]]] = []
        self._refused: list[tuple[bytes, list[int], str]] = []
        self._change = asyncio.Event()
        self._stop = threading.Event()
        self.subscriptions = 0
        ctx = ssl.create_default_context(cafile=str(pki.ca_cert))
        ctx.load_cert_chain(pki.receiver_cert, pki.receiver_key)
        self.client = mqtt.Client(
            CallbackAPIVersion.VERSION2,
            client_id="stand-in-platform",
            protocol=MQTTProtocolVersion.MQTTv5,
        )
        self.client.tls_set_context(ctx)
        self.client.reconnect_delay_set(0.05, 0.2)
        self.client.on_connect = self._on_connect
        self.client.on_subscribe = self._on_subscribe
        self.client.on_message = self._on_message
        self.client.connect("127.0.0.1", port)
        self.client.loop_start()
        self._flusher = threading.Thread(target=self._flush_loop, name="stand-in-receipts")
        self._flusher.start()

    def _on_connect(self, client: mqtt.Client, *_: Any) -> None:
        client.subscribe("homehub/v1/+/readings", qos=1)  # again after a broker restart

    def _on_subscribe(self, *_: Any) -> None:
        self.subscriptions += 1
        self._changed()

    def _on_message(self, _c: mqtt.Client, _u: Any, msg: mqtt.MQTTMessage) -> None:
        envelope = bytes(msg.payload)
        if self.judge is None:
            seqs, reason = [cbor2.loads(cbor2.loads(envelope).value[2])["seq"]], None
        else:
            seqs, reason = self.judge(envelope)
        with self._lock:
            if reason is not None:
                self._refused.append((envelope_digest(envelope), seqs, reason))
            else:
                for seq in seqs:
                    self.stored[seq] = self.stored.get(seq, 0) + 1
                self._items.append((envelope_digest(envelope), seqs))
        self._changed()

    def _flush_loop(self) -> None:
        while not self._stop.wait(GATHER_S):  # the platform's gathering period
            if not self.receipting.is_set():
                continue
            with self._lock:
                items, self._items = self._items[:1000], self._items[1000:]
                refused, self._refused = self._refused[:100], self._refused[100:]
            if items or refused:
                receipt = self.signer.receipt(
                    HUB_ID, items, refused, iat=NOW, exp=NOW + 600, strict=True
                )
                self.client.publish(RECEIPTS, receipt, qos=1)

    def _changed(self) -> None:
        self.loop.call_soon_threadsafe(self._wake)

    def _wake(self) -> None:
        event, self._change = self._change, asyncio.Event()
        event.set()

    async def until(self, predicate: Callable[[], bool]) -> None:
        while not predicate():
            await self._change.wait()

    def publish(self, payload: bytes) -> None:
        """Blocking until the broker PUBACKed it (call through asyncio.to_thread)."""
        info = self.client.publish(RECEIPTS, payload, qos=1)
        info.wait_for_publish(TIMEOUT_S)
        assert info.is_published()

    def close(self) -> None:
        self._stop.set()
        self._flusher.join()
        self.client.disconnect()
        self.client.loop_stop()


@pytest.fixture(scope="module")
def signer(dev_pki: DevPki) -> PlatformSigner:
    return PlatformSigner.from_pem_file(dev_pki.platform_key)


@pytest.fixture
async def platform(
    dev_pki: DevPki, broker: Broker, signer: PlatformSigner
) -> AsyncIterator[StandInPlatform]:
    p = StandInPlatform(dev_pki, broker.port, signer, asyncio.get_running_loop())
    try:
        async with asyncio.timeout(TIMEOUT_S):
            await p.until(lambda: p.subscriptions >= 1)
        yield p
    finally:
        p.close()


# ---------------------------------------------------------------------------
# The hub's side
# ---------------------------------------------------------------------------


@dataclass
class Rig:
    storage: StorageThread
    box: Outbox
    key: Any
    kid: bytes
    delivered: list[int] = field(default_factory=list)
    security: list[SecurityEvent] = field(default_factory=list)
    _change: asyncio.Event = field(default_factory=asyncio.Event)

    def changed(self) -> None:
        event, self._change = self._change, asyncio.Event()
        event.set()

    def note_delivered(self, seqs: Sequence[int]) -> None:
        self.delivered.extend(seqs)
        self.changed()

    def note_security(self, event: SecurityEvent) -> None:
        self.security.append(event)
        self.changed()

    async def until(self, predicate: Callable[[], bool]) -> None:
        while not predicate():
            await self._change.wait()


@pytest.fixture
async def rig(tmp_path: Path, dev_pki: DevPki) -> AsyncIterator[Rig]:
    key = cose.load_signing_key(dev_pki.hub_key)
    async with StorageThread() as storage:
        box = await storage.call(
            Outbox.open, tmp_path / "outbox.db", Sealer(DataKey.generate()), HUB_ID
        )
        try:
            yield Rig(storage, box, key, cose.key_id(key.public_key()))
        finally:
            await storage.call(box.close)


def _store(rig: Rig, count: int) -> list[int]:
    """On the storage thread: ``count`` small signed envelopes naming their seq (cheap
    stand-ins for readings: the path under test does not look inside)."""
    seqs = []
    for i in range(count):

        def envelope(seq: int) -> bytes:
            payload = cbor2.dumps({"v": 1, "hub": HUB_ID, "seq": seq, "kind": "observation"})
            return cose.sign1(payload, rig.key, rig.kid)

        result = rig.box.append("observation", f"reading-{i}-{id(rig)}", envelope)
        assert result.seq is not None
        seqs.append(result.seq)
    return seqs


def _bodies(box: Outbox) -> dict[int, bytes]:
    return {r.seq: r.body for r in box.pending_after(0, 1000)}


@contextlib.asynccontextmanager
async def publishing(
    rig: Rig, dev_pki: DevPki, broker: Broker, **publisher_args: Any
) -> AsyncIterator[tuple[Publisher, Uplink]]:
    uplink = Uplink(uplink_settings(dev_pki, broker.port, backoff_max_s=0.2))
    publisher = Publisher(
        rig.storage,
        rig.box,
        uplink,
        on_delivered=rig.note_delivered,
        ack=AckMode.RECEIPT,
        platform_key=load_platform_key(dev_pki.platform_cert),
        on_security=rig.note_security,
        wall_clock=lambda: float(NOW),
        **publisher_args,
    )
    async with asyncio.TaskGroup() as tg:
        tg.create_task(uplink.run(), name="test.uplink")
        running = tg.create_task(publisher.run(), name="test.publisher")
        try:
            yield publisher, uplink
        finally:
            publisher.stop()
            async with asyncio.timeout(TIMEOUT_S):
                await running
                await uplink.close()


async def _counts(rig: Rig) -> OutboxCounts:
    return await rig.storage.call(rig.box.counts)


# ---------------------------------------------------------------------------
# Tests
# ---------------------------------------------------------------------------


async def test_puback_deletes_nothing_the_receipt_deletes(
    rig: Rig, dev_pki: DevPki, broker: Broker, platform: StandInPlatform
) -> None:
    """30 readings PUBACKed and stored by the platform, receipts held back: all 30 still
    pending, awaiting their receipt. Receipts let go: all 30 deleted, once each."""
    platform.receipting.clear()
    seqs = await rig.storage.call(_store, rig, 30)
    async with publishing(rig, dev_pki, broker) as (publisher, uplink):
        async with asyncio.timeout(TIMEOUT_S):
            await platform.until(lambda: set(seqs) <= set(platform.stored))
            await uplink.wait_until(lambda s: s.acked >= 30)
        assert 30 == publisher.awaiting_receipt
        assert OutboxCounts(30, None) == _without_age(await _counts(rig))
        assert [] == rig.delivered
        platform.receipting.set()
        async with asyncio.timeout(TIMEOUT_S):
            await rig.until(lambda: set(seqs) <= set(rig.delivered))
        assert 0 == publisher.awaiting_receipt
    assert sorted(seqs) == sorted(rig.delivered)
    assert OutboxCounts(0, None) == await _counts(rig)
    assert ([], 0) == (rig.security, publisher.stats.receipts_rejected)


def _without_age(counts: OutboxCounts) -> OutboxCounts:
    """The counts without the oldest record's age (a wall-clock reading)."""
    return OutboxCounts(counts.pending, None, counts.damaged, counts.refused)


async def test_bad_receipts_delete_nothing_and_raise_security_events(
    rig: Rig,
    dev_pki: DevPki,
    foreign_pki: DevPki,
    broker: Broker,
    platform: StandInPlatform,
    signer: PlatformSigner,
) -> None:
    """With the platform's own receipts held back, the test sends for the hub's envelopes a
    receipt signed by another key, one with a broken signature, one for another hub, an
    expired one, one with a seq too many, one naming an envelope never sent, and one reusing
    the rid of the valid one: each is rejected with its reason and a security event, nothing
    is deleted but by the one valid receipt. The valid one delivered twice (QoS 1 is at least
    once) is taken once and raises nothing."""
    platform.receipting.clear()
    seqs = await rig.storage.call(_store, rig, 3)
    bodies = await rig.storage.call(_bodies, rig.box)
    d = {seq: envelope_digest(bodies[seq]) for seq in seqs}
    a, b, c = seqs
    other = PlatformSigner.from_pem_file(foreign_pki.platform_key)
    rid = bytes(range(16))
    valid = signer.receipt(HUB_ID, [(d[a], [a])], iat=NOW, exp=NOW + 60, rid=rid)
    forged = bytearray(signer.receipt(HUB_ID, [(d[b], [b])], iat=NOW, exp=NOW + 60))
    forged[-1] ^= 1
    never_sent = envelope_digest(b"never sent")
    window = {"iat": NOW, "exp": NOW + 60}
    bad = [
        (other.receipt(HUB_ID, [(d[b], [b])], **window), ReceiptRejection.WRONG_KEY),
        (bytes(forged), ReceiptRejection.FORGED),
        (signer.receipt("hub-0002", [(d[b], [b])], **window), ReceiptRejection.WRONG_HUB),
        (
            signer.receipt(HUB_ID, [(d[b], [b])], iat=NOW - SKEW - 120, exp=NOW - SKEW - 60),
            ReceiptRejection.EXPIRED,
        ),
        (signer.receipt(HUB_ID, [(d[b], [b, c])], **window), ReceiptRejection.MISMATCHED),
        (
            signer.receipt(HUB_ID, [(never_sent, [a + 1000])], **window),
            ReceiptRejection.UNKNOWN_ENVELOPE,
        ),
    ]
    async with publishing(rig, dev_pki, broker) as (publisher, uplink):
        async with asyncio.timeout(TIMEOUT_S):
            await uplink.wait_until(lambda s: s.acked >= 3 and s.subscribed >= 1)
        for message, _reason in bad:
            await asyncio.to_thread(platform.publish, message)
        async with asyncio.timeout(TIMEOUT_S):
            await rig.until(lambda: len(rig.security) >= len(bad))
        assert [r.value for _, r in bad] == [e.check for e in rig.security]
        assert {"receipt"} == {e.source for e in rig.security}
        assert 3 == (await _counts(rig)).pending
        await asyncio.to_thread(platform.publish, valid)
        async with asyncio.timeout(TIMEOUT_S):
            await rig.until(lambda: a in rig.delivered)
        await asyncio.to_thread(platform.publish, valid)  # the same bytes: at least once
        replayed = signer.receipt(HUB_ID, [(d[a], [a])], iat=NOW, exp=NOW + 61, rid=rid)
        await asyncio.to_thread(platform.publish, replayed)  # its rid, other bytes
        async with asyncio.timeout(TIMEOUT_S):
            await rig.until(lambda: len(rig.security) > len(bad))
        assert ReceiptRejection.REPLAYED.value == rig.security[-1].check
        assert (1, 1, len(bad) + 1) == (
            publisher.stats.receipts_accepted,
            publisher.stats.receipts_repeated,
            publisher.stats.receipts_rejected,
        )
        assert [a] == rig.delivered
        assert 2 == (await _counts(rig)).pending


async def test_refused_item_marks_refused(
    rig: Rig, dev_pki: DevPki, broker: Broker, platform: StandInPlatform, signer: PlatformSigner
) -> None:
    platform.receipting.clear()
    (seq,) = await rig.storage.call(_store, rig, 1)
    body = (await rig.storage.call(_bodies, rig.box))[seq]
    with watching_logs() as logs:
        async with publishing(rig, dev_pki, broker) as (publisher, uplink):
            async with asyncio.timeout(TIMEOUT_S):
                await uplink.wait_until(lambda s: s.acked >= 1 and s.subscribed >= 1)
            receipt = signer.receipt(
                HUB_ID, [], [(envelope_digest(body), [seq], "bad_signature")], iat=NOW, exp=NOW + 60
            )
            await asyncio.to_thread(platform.publish, receipt)
            async with asyncio.timeout(TIMEOUT_S):
                await logs.until(lambda: bool(logs.named("measurement_refused")))
    assert OutboxCounts(0, None, refused=1) == await _counts(rig)
    (event,) = logs.named("measurement_refused")
    assert (seq, "platform_refused", "bad_signature") == (
        event["seq"],
        event["why"],
        event["reason"],
    )
    assert 1 == publisher.stats.refused


async def test_no_receipt_within_the_timeout_sends_again(
    rig: Rig, dev_pki: DevPki, broker: Broker, platform: StandInPlatform
) -> None:
    """Receipts held back past a 0.5 s receipt timeout: the envelopes are sent again (the
    platform gets copies); receipts let go: every reading deleted once, the receipts for the
    extra copies taken as duplicates."""
    platform.receipting.clear()
    seqs = await rig.storage.call(_store, rig, 10)
    async with publishing(rig, dev_pki, broker, receipt_timeout_s=0.5) as (publisher, _uplink):
        async with asyncio.timeout(TIMEOUT_S):
            await platform.until(lambda: all(platform.stored.get(s, 0) >= 2 for s in seqs))
        assert publisher.stats.receipt_timeouts >= 10
        assert [] == rig.delivered
        platform.receipting.set()
        async with asyncio.timeout(TIMEOUT_S):
            await rig.until(lambda: set(seqs) <= set(rig.delivered))
    assert sorted(seqs) == sorted(rig.delivered)
    assert 0 == (await _counts(rig)).pending
    assert [] == rig.security


BACKLOG: Final = 3000


async def test_broker_restart_without_persistence_loses_nothing(
    rig: Rig, dev_pki: DevPki, broker: Broker, platform: StandInPlatform
) -> None:
    """The issue's headline. 3,000 readings drain; once the platform holds 1,000 of them,
    mosquitto is restarted without persistence: whatever it had PUBACKed and not delivered
    is gone from the broker. Only receipts delete, so those are sent again: the platform
    ends up with every one of the 3,000, and every one is deleted from the outbox once."""
    seqs = await rig.storage.call(_store, rig, BACKLOG)
    async with publishing(rig, dev_pki, broker, receipt_timeout_s=2.0) as (_publisher, uplink):
        async with asyncio.timeout(TIMEOUT_S):
            await platform.until(lambda: len(platform.stored) >= 1000)
        await broker.arestart()
        async with asyncio.timeout(TIMEOUT_S * 4):
            await rig.until(lambda: len(set(rig.delivered)) >= BACKLOG)
        assert uplink.stats.connects >= 2
    assert set(seqs) == set(platform.stored)
    assert sorted(seqs) == sorted(rig.delivered)
    assert OutboxCounts(0, None) == await _counts(rig)
    assert [] == rig.security


V3: Final = dictionaries.load()[3]


def _store_payloads(rig: Rig, payloads: Sequence[bytes]) -> list[int]:
    """On the storage thread: real readings (version-1 payloads) re-signed as this hub's."""
    seqs = []
    for payload in payloads:

        def envelope(seq: int, payload: bytes = payload) -> bytes:
            content = cbor2.loads(payload)
            content["seq"], content["hub"] = seq, HUB_ID
            return cose.sign1(cbor2.dumps(content, canonical=True), rig.key, rig.kid)

        result = rig.box.append("observation", f"{cbor2.loads(payload)['id']}-{id(rig)}", envelope)
        assert result.seq is not None
        seqs.append(result.seq)
    return seqs


class DeviceSetsPlatform:
    """The stand-in's judge for dictionary 3: verifies as the reference platform does, with
    device sets kept in memory (``lost``: forgotten, as by a platform restored from an old
    backup); records each reading's arrival and whether its Devices came by reference."""

    def __init__(self, pki: DevPki) -> None:
        self.hubs = HubDirectory.load(pki.ca_cert, [(HUB_ID, pki.hub_cert)])
        self.held = Dictionaries({V3.id: V3.data})
        self.sets: dict[bytes, list[dict[str, Any]]] = {}
        self.arrivals: list[tuple[int, bool, str | None]] = []
        """(seq, its Devices by reference, the refusal's reason or None)."""

    def lose(self) -> None:
        self.sets.clear()

    def judge(self, envelope: bytes) -> tuple[list[int], str | None]:
        message = cose.split1(envelope)
        plain = decompress(message.payload, message.dictionary_id, {V3.id: V3})
        body = cbor2.loads(plain)
        readings = [body] if "seq" in body else [cbor2.loads(r) for r in body["readings"]]
        try:
            verified = verify_envelope(
                f"homehub/v1/{HUB_ID}/readings",
                envelope,
                self.hubs,
                self.held,
                device_sets=lambda _hub, digest: self.sets.get(digest),
            )
        except RejectedError as exc:
            self.arrivals += [(r["seq"], "devices" in r, exc.code) for r in readings]
            return [r["seq"] for r in readings], exc.code
        for reading in verified.readings:
            found = device_set_of(reading.payload)
            if found is not None:
                self.sets[found[0]] = cbor2.loads(found[1])
        self.arrivals += [(r["seq"], "devices" in r, None) for r in readings]
        return verified.seqs, None


async def test_a_platform_that_lost_the_device_sets_gets_the_devices_again(
    rig: Rig, dev_pki: DevPki, broker: Broker, signer: PlatformSigner
) -> None:
    """Dictionary 3: the first reading carries its Devices in full; its receipt confirms the
    set, and the next reading names it by reference. The platform then loses its device sets:
    the next two, by reference, are refused ``unknown_device``; the hub marks nothing refused,
    forgets the set and sends them again in full. Every reading is held and deleted once,
    none refused, and the set is confirmed again and kept in the outbox: after a restart the
    next reading names it at once."""
    judge = DeviceSetsPlatform(dev_pki)
    platform = StandInPlatform(
        dev_pki, broker.port, signer, asyncio.get_running_loop(), judge=judge.judge
    )
    payloads = [r.payload for r in hub_backlog(5, 4040, ("blood_pressure",))]
    digest = device_set_of(cbor2.loads(payloads[0]))
    assert digest is not None
    try:
        async with asyncio.timeout(TIMEOUT_S):
            await platform.until(lambda: platform.subscriptions >= 1)
        options = {"signer": Signer.from_key(rig.key), "dictionary": lambda: V3}
        with watching_logs() as logs:
            async with publishing(rig, dev_pki, broker, **options) as (publisher, _uplink):
                for first, last in ((0, 1), (1, 2)):
                    (seq,) = await rig.storage.call(_store_payloads, rig, payloads[first:last])
                    publisher.wake()
                    async with asyncio.timeout(TIMEOUT_S):
                        await rig.until(lambda seq=seq: seq in rig.delivered)
                    assert frozenset({digest[0]}) == publisher.known_device_sets
                judge.lose()
                later = await rig.storage.call(_store_payloads, rig, payloads[2:4])
                publisher.wake()
                async with asyncio.timeout(TIMEOUT_S):
                    await rig.until(lambda: set(later) <= set(rig.delivered))
                assert frozenset({digest[0]}) == publisher.known_device_sets
                assert 2 == publisher.stats.resent_in_full
                assert publisher.stats.device_sets_forgotten >= 1
            saved = await rig.storage.call(rig.box.get_sync_state, "hub.publisher", "device_sets")
            # A restart: the set is read back from the outbox, the next reading names it.
            async with publishing(rig, dev_pki, broker, **options) as (publisher, _uplink):
                (e,) = await rig.storage.call(_store_payloads, rig, payloads[4:])
                publisher.wake()
                async with asyncio.timeout(TIMEOUT_S):
                    await rig.until(lambda: e in rig.delivered)
    finally:
        platform.close()
    a, b = sorted(rig.delivered)[:2]
    c, d = later
    assert [
        (a, False, None),
        (b, True, None),
        (c, False, None),
        (c, True, "unknown_device"),
        (d, False, None),
        (d, True, "unknown_device"),
        (e, True, None),
    ] == sorted(judge.arrivals)
    assert OutboxCounts(0, None) == await _counts(rig)
    assert [] == logs.named("measurement_refused")
    assert logs.named("device_sets_forgotten")
    assert saved is not None
    assert digest[0] in ConfirmedDeviceSets.from_bytes(saved, cose.key_id(
        load_platform_key(dev_pki.platform_cert)
    )).known  # fmt: skip
    assert [] == rig.security
