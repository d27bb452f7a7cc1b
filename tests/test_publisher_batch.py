"""Affordable on a metered SIM (issue 9), the publisher's side, against a real TLS mosquitto
and the reference platform (hil/receiver.py: pycose, signed receipts, dictionaries):

- a 500-reading backlog drains in batch envelopes, each reading arriving exactly once and
  deleted on the platform's receipt; the figures (envelopes, bytes) printed, plain and with
  dictionary 1;
- compression only once the platform's dictionary is given; before that a single is the
  stored envelope, byte for byte;
- a reading stored during a drain goes before the backfill still waiting;
- a reading the platform refuses inside a batch: the batch is split, the reading refused
  alone, the others held;
- ack = "puback": a PUBACK deletes every reading of a batch;
- the daily byte budget: backfill stops at it, a fresh reading still goes, the next UTC day
  (a hand-driven wall clock) resumes it.

The backlog is stored by an outbox whose clock runs an hour behind: it piled up while the
link was down (backfill); what a test stores while publishing is fresh because it is stored
while connected, whatever its time.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator, Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final

import cbor2
import pytest

from agent import cose, dictionaries
from agent.budget import cost_bytes, utc_day
from agent.dictionaries import Dictionary
from agent.ingest import Signer
from agent.outbox import Outbox, OutboxCounts
from agent.payload import CONTENT_TYPE as READING_CONTENT_TYPE
from agent.profiles import AckMode
from agent.publisher import BUDGET_STATE_DEVICE, BUDGET_STATE_KEY, Publisher
from agent.sealing import DataKey, Sealer
from agent.security import load_platform_key
from agent.storage import StorageThread
from agent.uplink import Uplink
from hil.broker import Broker
from hil.pki import DevPki
from hil.platform_verify import Dictionaries, VerifiedReading
from hil.receiver import Receiver
from tests.conftest import HUB_ID, SUBSCRIBE_TIMEOUT_S, uplink_settings
from tests.test_publisher import _store_readings, watching_logs

TIMEOUT_S: Final = 60.0
BACKDATE_S: Final = 3600.0
DICTIONARY: Final = dictionaries.load()[1]


class _Uplink(Uplink):
    """The real uplink, noting the size of every payload it is handed (for the budget)."""

    sizes: list[int]

    def publish_then(self, payload: bytes, done: Any) -> bytes:
        self.sizes.append(len(payload))
        return super().publish_then(payload, done)


@dataclass
class Rig:
    storage: StorageThread
    box: Outbox
    signer: Signer
    delivered: list[int] = field(default_factory=list)
    _change: asyncio.Event = field(default_factory=asyncio.Event)

    def note_delivered(self, seqs: Sequence[int]) -> None:
        self.delivered.extend(seqs)
        event, self._change = self._change, asyncio.Event()
        event.set()

    async def until_delivered(self, seqs: Sequence[int]) -> None:
        await self.until(lambda: set(seqs) <= set(self.delivered))

    async def until(self, predicate: Callable[[], bool]) -> None:
        while not predicate():
            await self._change.wait()

    async def store(self, count: int, first: int) -> list[int]:
        return await self.storage.call(
            _store_readings, self.box, self.signer, range(first, first + count)
        )

    async def counts(self) -> OutboxCounts:
        return await self.storage.call(self.box.counts)


@pytest.fixture
async def rig(tmp_path: Path, dev_pki: DevPki) -> AsyncIterator[Rig]:
    signer = Signer.from_key(cose.load_signing_key(dev_pki.hub_key))
    async with StorageThread() as storage:
        box = await storage.call(
            Outbox.open,
            tmp_path / "outbox.db",
            Sealer(DataKey.generate()),
            HUB_ID,
            clock=lambda: time.time() - BACKDATE_S,
        )
        try:
            yield Rig(storage, box, signer)
        finally:
            await storage.call(box.close)


@contextlib.asynccontextmanager
async def _receiver(
    pki: DevPki, port: int, *, receipts: bool = True, **options: Any
) -> AsyncIterator[Receiver]:
    held = Dictionaries({1: DICTIONARY.data})
    async with Receiver.for_dev_pki(
        pki, port, receipts=receipts, dictionaries=held, **options
    ) as receiver:
        async with asyncio.timeout(SUBSCRIBE_TIMEOUT_S):
            await receiver.subscribed.wait()
        yield receiver


@contextlib.asynccontextmanager
async def _publishing(
    rig: Rig,
    pki: DevPki,
    broker: Broker,
    *,
    ack: AckMode = AckMode.RECEIPT,
    urgent: Sequence[int] = (),
    inflight_max: int | None = None,
    **args: Any,
) -> AsyncIterator[tuple[Publisher, _Uplink]]:
    settings: dict[str, Any] = {"backoff_max_s": 0.2}
    if inflight_max is not None:
        settings["inflight_max"] = inflight_max
    uplink = _Uplink(uplink_settings(pki, broker.port, **settings))
    uplink.sizes = []
    receipts = ack is AckMode.RECEIPT
    publisher = Publisher(
        rig.storage,
        rig.box,
        uplink,
        on_delivered=rig.note_delivered,
        ack=ack,
        platform_key=load_platform_key(pki.platform_cert) if receipts else None,
        signer=rig.signer,
        **args,
    )
    publisher.mark_urgent(urgent)  # as the daemon does when it stores them
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


def _drain(receiver: Receiver) -> list[VerifiedReading]:
    out = []
    while not receiver.readings.empty():
        out.append(receiver.readings.get_nowait())
    return out


# ---------------------------------------------------------------------------
# A backlog drains in batches
# ---------------------------------------------------------------------------

BACKLOG: Final = 500


@pytest.mark.parametrize("compressed", [False, True], ids=["plain", "dictionary_1"])
async def test_backlog_drains_in_batches_each_reading_once(
    rig: Rig, dev_pki: DevPki, broker: Broker, compressed: bool
) -> None:
    seqs = await rig.store(BACKLOG, 0)
    stored_bytes = sum(len(b) for b in (await rig.storage.call(_bodies, rig.box)).values())
    dictionary = DICTIONARY if compressed else None
    async with _receiver(dev_pki, broker.port) as receiver:
        async with _publishing(rig, dev_pki, broker, dictionary=lambda: dictionary) as (
            publisher,
            uplink,
        ):
            async with asyncio.timeout(TIMEOUT_S):
                await rig.until_delivered(seqs)
        arrived = _drain(receiver)
    print(
        f"\n{BACKLOG} readings ({'dictionary 1' if compressed else 'plain'}): "
        f"{publisher.stats.envelopes} envelopes, {publisher.stats.bytes_sent} B "
        f"({publisher.stats.bytes_sent / BACKLOG:.0f} B a reading; stored singles: "
        f"{stored_bytes} B, {stored_bytes / BACKLOG:.0f} B a reading)"
    )
    # Every reading once, each deleted once, on the platform's receipt.
    assert sorted(seqs) == sorted(r.seq for r in arrived)
    assert sorted(seqs) == sorted(rig.delivered)
    assert (0, 0) == (receiver.stats.duplicates, receiver.stats.rejected_total)
    assert OutboxCounts(0, None) == await rig.counts()
    stats = publisher.stats
    assert (BACKLOG, 0, 0) == (stats.delivered, stats.refused, stats.receipts_rejected)
    assert stats.envelopes == receiver.stats.envelopes == len(uplink.sizes)
    assert sum(uplink.sizes) == stats.bytes_sent
    if compressed:
        # In compressed batches: at most 50 readings each, each within what the uplink takes.
        assert stats.batches == receiver.stats.batches >= stats.envelopes - 3
        assert max(uplink.sizes) <= cose.MAX_MESSAGE_BYTES
        assert stats.envelopes == receiver.stats.compressed
        assert BACKLOG // 50 <= stats.envelopes <= BACKLOG // 50 + 1
        assert stats.bytes_sent < stored_bytes / 15
    else:
        # Nothing announced: the stored singles, byte for byte (a plain batch would save
        # ~2 % of the bytes for a storage thread's worth of unsealing and signing).
        assert (0, 0) == (receiver.stats.compressed, receiver.stats.batches)
        assert (BACKLOG, stored_bytes) == (stats.envelopes, stats.bytes_sent)


def _bodies(box: Outbox) -> dict[int, bytes]:
    return {r.seq: r.body for r in box.pending_after(0, 1000)}


# ---------------------------------------------------------------------------
# Compression only once the platform announced the dictionary
# ---------------------------------------------------------------------------


async def test_compression_only_after_the_dictionary_is_given(
    rig: Rig, dev_pki: DevPki, broker: Broker
) -> None:
    announced: list[Dictionary | None] = [None]
    async with (
        _receiver(dev_pki, broker.port) as receiver,
        _publishing(rig, dev_pki, broker, dictionary=lambda: announced[0]) as (publisher, _u),
    ):
        # Nothing announced: a fresh single is the stored envelope, byte for byte, and so is
        # each reading of a burst (no plain batches).
        (single,) = await rig.store(1, 0)
        body = (await rig.storage.call(_bodies, rig.box))[single]
        publisher.wake()
        async with asyncio.timeout(TIMEOUT_S):
            await rig.until_delivered([single])
        burst = await rig.store(10, 1)
        publisher.wake()
        async with asyncio.timeout(TIMEOUT_S):
            await rig.until_delivered(burst)
        before = _drain(receiver)
        plain = (receiver.stats.envelopes, receiver.stats.batches, receiver.stats.compressed)
        # Announced: compressed from the next envelope on, single and batch.
        announced[0] = DICTIONARY
        (late,) = await rig.store(1, 11)
        publisher.wake()
        async with asyncio.timeout(TIMEOUT_S):
            await rig.until_delivered([late])
        burst2 = await rig.store(10, 12)
        publisher.wake()
        async with asyncio.timeout(TIMEOUT_S):
            await rig.until_delivered(burst2)
        after = _drain(receiver)
    assert body == next(r.envelope for r in before if r.seq == single)
    assert (11, 0, 0) == plain
    assert receiver.stats.compressed == receiver.stats.envelopes - plain[0] >= 2
    assert sorted([late, *burst2]) == sorted(r.seq for r in after)
    assert len(next(r.envelope for r in after if r.seq == late)) < len(body) / 5


# ---------------------------------------------------------------------------
# Fresh before backfill
# ---------------------------------------------------------------------------


async def test_fresh_reading_goes_before_the_remaining_backfill(
    rig: Rig, dev_pki: DevPki, broker: Broker
) -> None:
    backlog = await rig.store(300, 0)
    gate = asyncio.Event()
    arrivals: list[int] = []
    first = asyncio.Event()

    async def consumer(reading: VerifiedReading) -> None:
        arrivals.append(reading.seq)
        first.set()
        await gate.wait()  # the platform holds its receipts: the hub's window fills

    async with _receiver(dev_pki, broker.port, consumer=consumer) as receiver:
        async with _publishing(rig, dev_pki, broker, window=2, dictionary=lambda: DICTIONARY) as (
            publisher,
            _uplink,
        ):
            async with asyncio.timeout(TIMEOUT_S):
                await first.wait()
            (fresh,) = await rig.store(1, 1000)
            publisher.wake()
            gate.set()
            async with asyncio.timeout(TIMEOUT_S):
                await rig.until_delivered([*backlog, fresh])
        _drain(receiver)
    assert sorted([*backlog, fresh]) == sorted(arrivals)
    # At most the two envelopes (window 2, batches of 50) already sent went before it.
    position = arrivals.index(fresh)
    assert position <= 100, position
    assert len(arrivals) - position - 1 >= 200
    assert publisher.stats.envelopes <= 300 // 50 + 2


@pytest.mark.parametrize("compressed", [False, True], ids=["plain", "dictionary_1"])
async def test_urgent_backfill_goes_before_the_rest_of_the_backlog(
    rig: Rig, dev_pki: DevPki, broker: Broker, compressed: bool
) -> None:
    """Readings past an alert limit (agent/urgency.py), stored while the link was down, go
    first; the backlog follows, each reading once; the urgent ones are then forgotten."""
    backlog = await rig.store(200, 0)
    urgent = [backlog[150], backlog[199], backlog[7]]
    arrivals: list[int] = []

    async def consumer(reading: VerifiedReading) -> None:
        arrivals.append(reading.seq)

    dictionary = (lambda: DICTIONARY) if compressed else None
    async with _receiver(dev_pki, broker.port, consumer=consumer) as receiver:
        async with _publishing(
            rig, dev_pki, broker, window=1, urgent=urgent, dictionary=dictionary
        ) as (publisher, _uplink):
            assert 3 == publisher.urgent_pending
            async with asyncio.timeout(TIMEOUT_S):
                await rig.until_delivered(backlog)
        _drain(receiver)
    assert sorted(urgent) == arrivals[:3]  # singly (fewer than a batch), oldest first
    assert sorted(backlog) == sorted(arrivals)


async def test_a_full_client_queue_delays_nothing_until_a_reconnect(
    rig: Rig, dev_pki: DevPki, broker: Broker
) -> None:
    """The publisher's window larger than the MQTT client's queue (inflight 1: room for 18):
    paho refuses the rest on a live connection; they are read again at once, not held for a
    reconnect that never comes. Every reading delivered on the one connection."""
    backlog = await rig.store(120, 0)
    async with _receiver(dev_pki, broker.port) as receiver:
        async with _publishing(rig, dev_pki, broker, inflight_max=1, window=40) as (
            publisher,
            uplink,
        ):
            async with asyncio.timeout(TIMEOUT_S):
                await rig.until_delivered(backlog)
            assert publisher.stats.not_queued > 0  # the queue did fill
            assert 1 == uplink.stats.connects
        _drain(receiver)
    assert sorted(backlog) == sorted(rig.delivered)


# ---------------------------------------------------------------------------
# Poison inside a batch
# ---------------------------------------------------------------------------


def _store_poison(rig: Rig) -> int:
    """A reading envelope the hub signs whose payload the platform refuses (no Bundle)."""
    result = rig.box.append(
        "observation",
        "poison",
        lambda seq: cose.sign1_with(
            cbor2.dumps({"v": 1, "hub": HUB_ID, "seq": seq, "kind": "observation"}, canonical=True),
            rig.signer.sign,
            rig.signer.kid,
            READING_CONTENT_TYPE,
        ),
    )
    assert result.seq is not None
    return result.seq


async def test_poison_in_a_batch_is_refused_alone(
    rig: Rig, dev_pki: DevPki, broker: Broker
) -> None:
    good = await rig.store(20, 0)
    poison = await rig.storage.call(_store_poison, rig)
    good += await rig.store(20, 20)
    async with _receiver(dev_pki, broker.port) as receiver:
        with watching_logs() as logs:
            async with _publishing(rig, dev_pki, broker, dictionary=lambda: DICTIONARY) as (
                publisher,
                _uplink,
            ):
                async with asyncio.timeout(TIMEOUT_S):
                    await logs.until(lambda: bool(logs.named("measurement_refused")))
                    await rig.until_delivered(good)
        arrived = _drain(receiver)
    assert sorted(good) == sorted(r.seq for r in arrived)
    (split,) = logs.named("batch_split")
    assert ("platform_refused", 41, good[0]) == (split["why"], split["count"], split["first_seq"])
    (refused,) = logs.named("measurement_refused")
    assert (poison, "platform_refused") == (refused["seq"], refused["why"])
    assert OutboxCounts(0, None, refused=1) == await rig.counts()
    assert [(poison, None)] == await rig.storage.call(rig.box.refused)
    assert 1 == publisher.stats.refused


# ---------------------------------------------------------------------------
# ack = "puback"
# ---------------------------------------------------------------------------


async def test_puback_deletes_every_reading_of_a_batch(
    rig: Rig, dev_pki: DevPki, broker: Broker
) -> None:
    seqs = await rig.store(200, 0)
    async with _receiver(dev_pki, broker.port, receipts=False) as receiver:
        async with _publishing(
            rig, dev_pki, broker, ack=AckMode.PUBACK, dictionary=lambda: DICTIONARY
        ) as (publisher, _uplink):
            async with asyncio.timeout(TIMEOUT_S):
                await rig.until_delivered(seqs)
                await receiver.wait_until(lambda s: s.verified >= len(seqs))
        arrived = _drain(receiver)
    assert sorted(seqs) == sorted(r.seq for r in arrived)
    assert sorted(seqs) == sorted(rig.delivered)
    assert OutboxCounts(0, None) == await rig.counts()
    assert 4 == publisher.stats.envelopes == publisher.stats.batches == receiver.stats.batches


# ---------------------------------------------------------------------------
# The daily byte budget
# ---------------------------------------------------------------------------


class WallClock:
    def __init__(self, now: float) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


BUDGET_BYTES: Final = 40_000


async def test_budget_pauses_backfill_not_fresh_and_resumes_the_next_day(
    rig: Rig, dev_pki: DevPki, broker: Broker
) -> None:
    backlog = await rig.store(300, 0)  # about 50 kB in 6 compressed batches: two days
    wall = WallClock(time.time())
    async with _receiver(dev_pki, broker.port, receipts=False) as receiver:
        with watching_logs() as logs:
            async with _publishing(
                rig,
                dev_pki,
                broker,
                ack=AckMode.PUBACK,
                dictionary=lambda: DICTIONARY,
                daily_budget_bytes=BUDGET_BYTES,
                wall_clock=wall,
            ) as (publisher, uplink):
                async with asyncio.timeout(TIMEOUT_S):
                    await logs.until(lambda: bool(logs.named("budget_paused")))
                    # Everything sent before the pause PUBACKed and deleted.
                    await rig.until(
                        lambda: (
                            publisher.in_flight == 0
                            and len(rig.delivered) == publisher.stats.published
                        )
                    )
                paused = publisher.budget_state()
                sent_before = list(uplink.sizes)
                delivered_before = set(rig.delivered)
                # A fresh reading goes all the same.
                (fresh,) = await rig.store(1, 1000)
                publisher.wake()
                async with asyncio.timeout(TIMEOUT_S):
                    await rig.until_delivered([fresh])
                after_fresh = publisher.budget_state()
                backfill_while_paused = set(rig.delivered) - delivered_before - {fresh}
                # The next UTC day: backfill resumes.
                wall.now = (utc_day(wall.now) + 1) * 86_400 + 1.0
                publisher.wake()
                async with asyncio.timeout(TIMEOUT_S):
                    await rig.until_delivered(backlog)
                next_day = publisher.budget_state()
        saved = await rig.storage.call(
            rig.box.get_sync_state, BUDGET_STATE_DEVICE, BUDGET_STATE_KEY
        )
        _drain(receiver)
    # Backfill stopped within the budget: every byte charged by the stated estimate.
    charged = sum(cost_bytes(n) for n in sent_before)
    print(
        f"\nbudget {BUDGET_BYTES} B: {len(sent_before)} envelopes, {sum(sent_before)} B payload,"
        f" {charged} B charged, then paused; {len(rig.delivered) - len(delivered_before)} later"
    )
    assert (True, charged) == (paused.paused, paused.used_bytes)
    assert charged <= BUDGET_BYTES
    assert 0 < len(delivered_before) < len(backlog)
    assert set() == backfill_while_paused
    assert after_fresh.used_bytes == charged + cost_bytes(uplink.sizes[len(sent_before)])
    assert after_fresh.paused
    (resumed,) = logs.named("budget_resumed")
    assert "budget_resumed" == resumed["event"]
    assert (utc_day(wall.now), False) == (next_day.day, next_day.paused)
    assert next_day.used_bytes == sum(cost_bytes(n) for n in uplink.sizes[len(sent_before) + 1 :])
    assert OutboxCounts(0, None) == await rig.counts()
    assert saved is not None
    assert 12 == len(saved)
