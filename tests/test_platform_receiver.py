"""The reference platform against a real TLS mosquitto: signed receipts, persistence across its
own restart, shared subscriptions, flow control (docs/platform-protocol.md, issue 9).

The hub side here is a bare paho client with the hub's certificate (the hub's own receipt
handling is built in parallel); receipts are checked with the hub's COSE code (agent/cose.py)
against the platform certificate, so the two independent implementations meet.
"""

from __future__ import annotations

import asyncio
import contextlib
import ssl
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any, Final

import cbor2
import paho.mqtt.client as mqtt
import pytest
from cryptography import x509
from cryptography.hazmat.primitives.asymmetric import ec
from paho.mqtt.enums import CallbackAPIVersion, MQTTProtocolVersion

from agent import cose
from hil.broker import Broker
from hil.pki import DevPki
from hil.platform_signing import RECEIPT_CONTENT_TYPE, envelope_digest
from hil.platform_store import PlatformStore
from hil.platform_verify import BATCH_CONTENT_TYPE
from hil.receiver import Receiver, VerifiedReading
from tests.test_platform_verify import batch, reading, sign

HUB: Final = "hub-0001"
TOPIC: Final = f"homehub/v1/{HUB}/readings"
TIMEOUT_S: Final = 20.0


class HubClient:
    """A hub as the platform sees it: publishes envelopes, receives its receipts."""

    def __init__(self, pki: DevPki, port: int) -> None:
        self._loop = asyncio.get_running_loop()
        self.receipts: asyncio.Queue[bytes] = asyncio.Queue()
        self.ready = asyncio.Event()
        ctx = ssl.create_default_context(ssl.Purpose.SERVER_AUTH, cafile=str(pki.ca_cert))
        ctx.load_cert_chain(pki.hub_cert, pki.hub_key)
        self._client = mqtt.Client(
            CallbackAPIVersion.VERSION2, client_id=HUB, protocol=MQTTProtocolVersion.MQTTv5
        )
        self._client.tls_set_context(ctx)
        self._client.on_connect = self._on_connect
        self._client.on_subscribe = self._on_subscribe
        self._client.on_message = self._on_message
        self._client.connect_async("127.0.0.1", port)
        self._client.loop_start()

    def _on_connect(self, client: mqtt.Client, *_: Any) -> None:
        client.subscribe(f"homehub/v1/{HUB}/receipts", qos=1)

    def _on_subscribe(self, *_: Any) -> None:
        self._loop.call_soon_threadsafe(self.ready.set)

    def _on_message(self, _c: mqtt.Client, _u: Any, msg: mqtt.MQTTMessage) -> None:
        self._loop.call_soon_threadsafe(self.receipts.put_nowait, bytes(msg.payload))

    async def publish(self, envelope: bytes) -> None:
        """Publish at QoS 1 and return on the broker's PUBACK."""
        info = self._client.publish(TOPIC, envelope, qos=1)
        await asyncio.to_thread(info.wait_for_publish, TIMEOUT_S)
        assert info.is_published()

    async def close(self) -> None:
        """Disconnect and join paho's thread."""
        self._client.disconnect()
        await asyncio.to_thread(self._client.loop_stop)


@contextlib.asynccontextmanager
async def hub_client(pki: DevPki, port: int) -> AsyncIterator[HubClient]:
    """A connected hub client subscribed to its receipts."""
    hub = HubClient(pki, port)
    try:
        async with asyncio.timeout(TIMEOUT_S):
            await hub.ready.wait()
        yield hub
    finally:
        await hub.close()


@contextlib.asynccontextmanager
async def running(pki: DevPki, port: int, **options: Any) -> AsyncIterator[Receiver]:
    """A receiver for the dev PKI (receipts on), subscribed."""
    async with Receiver.for_dev_pki(pki, port, **options) as receiver:
        async with asyncio.timeout(TIMEOUT_S):
            await receiver.subscribed.wait()
        yield receiver


@pytest.fixture(scope="module")
def hub_key(dev_pki: DevPki) -> ec.EllipticCurvePrivateKey:
    """The dev hub's signing key."""
    return cose.load_signing_key(dev_pki.hub_key)


@pytest.fixture(scope="module")
def platform_public_key(dev_pki: DevPki) -> ec.EllipticCurvePublicKey:
    """The key of the platform certificate a hub is configured with."""
    key = x509.load_pem_x509_certificate(dev_pki.platform_cert.read_bytes()).public_key()
    assert isinstance(key, ec.EllipticCurvePublicKey)
    return key


def open_receipt(message: bytes, key: ec.EllipticCurvePublicKey) -> dict[str, Any]:
    """A receipt's payload, verified by the hub's own COSE code."""
    verified = cose.verify1(message, key, expected_content_type=RECEIPT_CONTENT_TYPE)
    body = cbor2.loads(verified.payload)
    assert isinstance(body, dict)
    assert cbor2.dumps(body, canonical=True) == verified.payload
    return body


async def receipt_items(
    hub: HubClient, key: ec.EllipticCurvePublicKey, count: int
) -> tuple[dict[bytes, list[list[int]]], dict[bytes, list[tuple[list[int], str]]], list[bytes]]:
    """Collect receipts until ``count`` items came: held and refused items by digest, rids."""
    held: dict[bytes, list[list[int]]] = {}
    refused: dict[bytes, list[tuple[list[int], str]]] = {}
    rids: list[bytes] = []
    async with asyncio.timeout(TIMEOUT_S):
        while sum(map(len, held.values())) + sum(map(len, refused.values())) < count:
            body = open_receipt(await hub.receipts.get(), key)
            assert HUB == body["hub"]
            assert 0 < body["exp"] - body["iat"] <= 3600
            rids.append(body["rid"])
            for digest, seqs in body["held"]:
                held.setdefault(digest, []).append(seqs)
            for digest, seqs, code in body.get("refused", []):
                refused.setdefault(digest, []).append((seqs, code))
    return held, refused, rids


async def test_receipts_for_held_duplicate_and_refused(
    dev_pki: DevPki,
    broker: Broker,
    hub_key: ec.EllipticCurvePrivateKey,
    platform_public_key: ec.EllipticCurvePublicKey,
) -> None:
    """Single, batch, a copy of the single, a tampered envelope and one for an unknown key:
    receipts name held [digest, seqs] for the three good ones (the copy again), refused for
    the tampered one, nothing for the unknown key's (parked); signed by the platform key."""
    single = sign(hub_key, reading(1))
    batched = sign(hub_key, batch([2, 3, 4]), BATCH_CONTENT_TYPE)
    tampered = bytearray(sign(hub_key, reading(5)))
    tampered[-1] ^= 1
    stranger = sign(ec.generate_private_key(ec.SECP256R1()), reading(6))
    async with running(dev_pki, broker.port) as receiver, hub_client(dev_pki, broker.port) as hub:
        for envelope in (single, batched, single, bytes(tampered), stranger):
            await hub.publish(envelope)
        held, refused, rids = await receipt_items(hub, platform_public_key, 4)
        async with asyncio.timeout(TIMEOUT_S):
            await receiver.wait_until(lambda s: s.parked == 1)
        store = receiver.store
        assert store is not None
        assert ([1, 2, 3, 4], 2) == (store.seqs(HUB), store.arrivals(envelope_digest(single)))
        assert all(store.rid_used(rid) for rid in rids)
    assert {
        envelope_digest(single): [[1], [1]],
        envelope_digest(batched): [[2, 3, 4]],
    } == held
    assert {envelope_digest(bytes(tampered)): [([5], "bad_signature")]} == refused
    stats = receiver.stats
    assert (4, 1, 1, 4, 1) == (
        stats.verified,
        stats.duplicates,
        stats.parked,
        stats.held_items + stats.refused_items,
        stats.batches,
    )
    assert {
        "signature does not verify": 1,
        "kid does not match any certificate of hub 'hub-0001'": 1,
    } == dict(stats.rejected)
    assert len(rids) == len(set(rids))


async def test_restarted_receiver_remembers(
    dev_pki: DevPki,
    broker: Broker,
    tmp_path: Path,
    hub_key: ec.EllipticCurvePrivateKey,
    platform_public_key: ec.EllipticCurvePublicKey,
) -> None:
    """A receiver restarted on its state directory takes an old envelope for the copy it is
    (not a new reading) and receipts it again; another reading with that id and other bytes
    is a conflicting duplicate."""
    state = tmp_path / "platform"
    old = sign(hub_key, reading(1))
    async with hub_client(dev_pki, broker.port) as hub:
        async with running(dev_pki, broker.port, state_dir=state) as first:
            await hub.publish(old)
            await receipt_items(hub, platform_public_key, 1)
            assert (1, 0) == (first.stats.verified, first.stats.duplicates)
            (got,) = [first.readings.get_nowait()]
            assert 1 == got.seq
        async with running(dev_pki, broker.port, state_dir=state) as second:
            await hub.publish(old)
            held, _, _ = await receipt_items(hub, platform_public_key, 1)
            body = cbor2.loads(reading(1))
            body["hub_time"] = "2026-12-01T00:00:00Z"  # same id and seq, other bytes
            await hub.publish(sign(hub_key, cbor2.dumps(body, canonical=True)))
            await receipt_items(hub, platform_public_key, 1)
            assert second.readings.empty()
            store = second.store
            assert store is not None
            assert ["id_conflict"] == store.parked_codes()
    # Three receipts (stopping awaits their records), remembered in the state directory.
    assert 3 == PlatformStore.in_state_dir(state).count("receipts")
    assert {envelope_digest(old): [[1]]} == held
    assert (0, 1, 1) == (
        second.stats.verified,
        second.stats.duplicates,
        second.stats.conflicting_duplicates,
    )


async def test_shared_subscription_splits_the_fleet(
    dev_pki: DevPki,
    broker: Broker,
    hub_key: ec.EllipticCurvePrivateKey,
    platform_public_key: ec.EllipticCurvePublicKey,
) -> None:
    """Two receivers in one share group: 120 readings, each delivered exactly once overall,
    both receivers used, every envelope receipted once."""
    count = 120
    envelopes = [sign(hub_key, reading(seq)) for seq in range(1, count + 1)]
    async with (
        running(dev_pki, broker.port, share_group="platform", client_id="platform-a") as a,
        running(dev_pki, broker.port, share_group="platform", client_id="platform-b") as b,
        hub_client(dev_pki, broker.port) as hub,
    ):
        for envelope in envelopes:
            await hub.publish(envelope)
        held, refused, _ = await receipt_items(hub, platform_public_key, count)
        async with asyncio.timeout(TIMEOUT_S):
            await a.wait_until(lambda _: a.stats.verified + b.stats.verified == count)
    seqs_a = _drain(a)
    seqs_b = _drain(b)
    assert set() == set(seqs_a) & set(seqs_b)
    assert list(range(1, count + 1)) == sorted(seqs_a + seqs_b)
    assert seqs_a
    assert seqs_b
    assert {envelope_digest(e): [[n]] for n, e in enumerate(envelopes, 1)} == held
    assert {} == refused
    assert (0, 0) == (a.stats.duplicates + b.stats.duplicates, a.stats.rejected_total)


def _drain(receiver: Receiver) -> list[int]:
    seqs = []
    while not receiver.readings.empty():
        seqs.append(receiver.readings.get_nowait().seq)
    return seqs


async def test_slow_consumer_slows_the_flow(
    dev_pki: DevPki,
    broker: Broker,
    hub_key: ec.EllipticCurvePrivateKey,
    platform_public_key: ec.EllipticCurvePublicKey,
) -> None:
    """A consumer that does not keep up: the receiver stops acking, the broker stops at our
    Receive Maximum (10) and queues the other 90 (all 100 PUBACKed to the hub); once it goes
    on, all 100 arrive, none lost, none twice, all receipted.

    Only the stalled phase's bound is asserted: once acks flow again, mosquitto 2.0.11 was
    measured here sending up to 90 past our Receive Maximum (the receiver's inbox takes them;
    nothing is dropped)."""
    receive_maximum, count = 10, 100
    gate = asyncio.Event()
    consumed: list[int] = []

    async def slow(reading: VerifiedReading) -> None:
        await gate.wait()
        consumed.append(reading.seq)

    async with (
        running(dev_pki, broker.port, consumer=slow, receive_maximum=receive_maximum) as receiver,
        hub_client(dev_pki, broker.port) as hub,
    ):
        for seq in range(1, count + 1):
            await hub.publish(sign(hub_key, reading(seq)))
        # Every message is at the broker (PUBACKed to the hub); we hold 10 unacknowledged.
        async with asyncio.timeout(TIMEOUT_S):
            await receiver.wait_until(lambda s: s.unacked == receive_maximum)
        assert (receive_maximum, receive_maximum, 0) == (
            receiver.stats.max_unacked,
            receiver.stats.received,
            receiver.stats.verified,
        )
        gate.set()
        await receipt_items(hub, platform_public_key, count)
        async with asyncio.timeout(TIMEOUT_S):
            await receiver.wait_until(lambda s: s.verified == count)
    assert list(range(1, count + 1)) == sorted(consumed)
    assert (count, 0, 0) == (
        receiver.stats.received,
        receiver.stats.duplicates,
        receiver.stats.rejected_total,
    )
