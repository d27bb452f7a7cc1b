"""The daemon's publisher (agent/publisher.py) against a real TLS mosquitto, checked by the
independent receiver: a real storage thread and encrypted outbox on disk, the real uplink.

- One record the broker refuses (too large for it: PUBACK 0x83) ends ``refused`` after
  ``max_transient_refusals`` tries while the records after it are delivered and deleted
  without waiting for it; it is not sent again, even after a reconnect.
- A broker that refuses everything (the ACL denies the topic: PUBACK 0x87) marks nothing
  refused: the records stay pending and publishing pauses with a growing, jittered backoff.
- A link that drops with the window full, and deletes that fail on a failing disk: the
  records are sent again byte-identical and each is deleted once.

Mocks, each at a named edge: :class:`LinkProxy` (the network: a TCP relay that can withhold
the broker's answers and drop the link) and :class:`FailingDeletes` (the disk: the outbox's
sqlite3 connection failing every DELETE with SQLITE_IOERR_WRITE).
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import random
import re
import sqlite3
from collections.abc import AsyncIterator, Callable, Iterator, MutableMapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final

import pytest
from structlog.testing import capture_logs

from agent import cose
from agent import publisher as publisher_mod
from agent.ingest import Signer, prepare
from agent.ingest_batcher import Item, Status, commit_batch
from agent.normalize.phd import Context
from agent.outbox import Outbox, OutboxCounts
from agent.publisher import MAX_CONNECTION_LOSSES, PUBLISH_WINDOW, STOP_DRAIN_S, Publisher
from agent.retry import FullJitter
from agent.sealing import DataKey, Sealer
from agent.storage import StorageThread
from agent.uplink import INFLIGHT_MAX, Uplink, UplinkSettings
from hil.broker import Broker
from hil.crash_child import DEVICE, raw_measurement
from hil.pki import DevPki
from hil.receiver import Receiver
from tests import phi_canaries
from tests.conftest import HUB_ID, SUBSCRIBE_TIMEOUT_S, uplink_settings

TIMEOUT_S: Final = 15.0
"""Every await on the network or the disk is bounded; on loopback each step takes ms."""

PATIENT: Final = phi_canaries.PATIENT_ID
"""A canary: it must not appear in any log."""

SIZE_LIMIT: Final = 16 * 1024
"""The broker's ``message_size_limit``: a BP envelope (about 2 kB) passes, the poison not."""

POISON_BYTES: Final = 30_000
"""Above the broker's limit, below the outbox's (64 KiB) and the uplink's (33 KiB) bounds."""

RC_IMPLEMENTATION_SPECIFIC: Final = 0x83
RC_NOT_AUTHORIZED: Final = 0x87
SQLITE_IOERR_WRITE: Final = 10 | (3 << 8)


# ---------------------------------------------------------------------------
# Helpers
# ---------------------------------------------------------------------------


class LogWatch:
    """The structlog events captured while publishing (``capture_logs``), with a way to
    await a condition on them instead of sleeping."""

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self.entries: list[MutableMapping[str, Any]] = []
        self._loop = loop
        self._change = asyncio.Event()

    def processor(self, _logger: Any, _method: str, event: Any) -> Any:
        # May run on the storage thread: hand the notification to the loop.
        self._loop.call_soon_threadsafe(self._changed)
        return event

    def _changed(self) -> None:
        event, self._change = self._change, asyncio.Event()
        event.set()

    def named(self, name: str) -> list[MutableMapping[str, Any]]:
        return [e for e in self.entries if e["event"] == name]

    async def until(self, predicate: Callable[[], bool]) -> None:
        while not predicate():
            await self._change.wait()


@contextlib.contextmanager
def watching_logs() -> Iterator[LogWatch]:
    watch = LogWatch(asyncio.get_running_loop())
    with capture_logs(processors=[watch.processor]) as entries:
        watch.entries = entries
        yield watch


def _broker_log(request: pytest.FixtureRequest) -> Path:
    name = re.sub(r"[^A-Za-z0-9_.-]+", "_", request.node.nodeid)[-120:]
    return phi_canaries.log_dir() / f"{name}.mosquitto.log"


@contextlib.asynccontextmanager
async def _receiver(pki: DevPki, port: int) -> AsyncIterator[Receiver]:
    async with Receiver.for_dev_pki(pki, port) as receiver:
        async with asyncio.timeout(SUBSCRIBE_TIMEOUT_S):
            await receiver.subscribed.wait()
        yield receiver


def _settings(pki: DevPki, port: int, **override: Any) -> UplinkSettings:
    return uplink_settings(pki, port, **{"backoff_max_s": 0.2, **override})


def _store_readings(box: Outbox, signer: Signer, indices: Sequence[int]) -> list[int]:
    """On the storage thread: real signed BP readings, committed as the daemon's ingest does."""
    items = []
    for i in indices:
        raw = raw_measurement(i)
        prepared = prepare(raw, DEVICE, Context(HUB_ID, PATIENT, "UTC", raw.received_wall))
        items.append(
            Item(
                prepared.kind,
                prepared.dedup_key,
                functools.partial(prepared.envelope, signer=signer),
                content_digest=prepared.content_digest,
            )
        )
    outcomes = commit_batch(box, items)
    assert all(o.status is Status.STORED for o in outcomes), outcomes
    return [o.seq for o in outcomes if o.seq is not None]


def _store_poison(box: Outbox) -> int:
    """One record the broker will refuse: too large for its message_size_limit."""
    result = box.append("observation", "poison", lambda seq: b"\xa5" * POISON_BYTES)
    assert result.seq is not None
    return result.seq


def _bodies(box: Outbox) -> dict[int, bytes]:
    return {r.seq: r.body for r in box.pending_after(0, 1000)}


def _drain(receiver: Receiver) -> dict[int, bytes]:
    """The envelopes the receiver verified so far, by seq."""
    received = {}
    while not receiver.readings.empty():
        reading = receiver.readings.get_nowait()
        received[reading.seq] = reading.envelope
    return received


@dataclass
class Rig:
    """A storage thread with an encrypted outbox on disk and the hub's signer."""

    storage: StorageThread
    box: Outbox
    signer: Signer
    path: Path
    sealer: Sealer
    delivered: list[int] = field(default_factory=list)
    """Every seq deleted after its PUBACK, in order, over every publisher run."""
    _change: asyncio.Event = field(default_factory=asyncio.Event)

    def note_delivered(self, seqs: Sequence[int]) -> None:
        self.delivered.extend(seqs)
        event, self._change = self._change, asyncio.Event()
        event.set()

    async def until_delivered(self, seqs: Sequence[int]) -> None:
        """Until every seq in ``seqs`` was deleted after its PUBACK."""
        while not set(seqs) <= set(self.delivered):
            await self._change.wait()


@pytest.fixture
async def rig(tmp_path: Path, dev_pki: DevPki) -> AsyncIterator[Rig]:
    sealer = Sealer(DataKey.generate())
    signer = Signer.from_key(cose.load_signing_key(dev_pki.hub_key))
    path = tmp_path / "outbox.db"
    async with StorageThread() as storage:
        box = await storage.call(Outbox.open, path, sealer, HUB_ID)
        r = Rig(storage, box, signer, path, sealer)
        try:
            yield r
        finally:
            await storage.call(r.box.close)


@contextlib.asynccontextmanager
async def _publishing(
    rig: Rig,
    settings: UplinkSettings,
    *,
    on_delivered: Callable[[Sequence[int]], None] | None = None,
    before_start: Callable[[Uplink], Any] | None = None,
    **publisher_args: Any,
) -> AsyncIterator[tuple[Publisher, Uplink]]:
    """Run the uplink and the daemon's publisher; stop both (bounded) at the end."""
    uplink = Uplink(settings)

    def delivered(seqs: Sequence[int]) -> None:
        if on_delivered is not None:
            on_delivered(seqs)
        rig.note_delivered(seqs)

    publisher = Publisher(rig.storage, rig.box, uplink, on_delivered=delivered, **publisher_args)
    async with asyncio.TaskGroup() as tg:
        tg.create_task(uplink.run(), name="test.uplink")
        running: asyncio.Task[None] | None = None
        try:
            if before_start is not None:
                async with asyncio.timeout(TIMEOUT_S):
                    await uplink.connected.wait()
                await before_start(uplink)
            running = tg.create_task(publisher.run(), name="test.publisher")
            yield publisher, uplink
        finally:
            publisher.stop()
            async with asyncio.timeout(TIMEOUT_S):
                if running is not None:
                    await running
                await uplink.close()


# ---------------------------------------------------------------------------
# One poison record among good ones
# ---------------------------------------------------------------------------


@pytest.fixture
def small_broker(
    dev_pki: DevPki, tmp_path: Path, request: pytest.FixtureRequest
) -> Iterator[Broker]:
    """A mosquitto that refuses (PUBACK 0x83) any publish above :data:`SIZE_LIMIT` bytes."""
    with Broker(
        dev_pki,
        tmp_path / "broker",
        log_path=_broker_log(request),
        message_size_limit=SIZE_LIMIT,
    ) as running:
        yield running


POISON_TIMEOUT_S: Final = 5.0
"""The poison's three tries take about 0.2 s on loopback."""

RC_PACKET_TOO_LARGE: Final = 0x95
"""What mosquitto 2.0.11 (Debian bookworm, Ubuntu jammy) puts in the PUBACK of a publish above
``message_size_limit``; later versions send 0x83 (implementation specific error)."""


async def test_poison_record_is_refused_and_does_not_block_the_others(
    rig: Rig, dev_pki: DevPki, small_broker: Broker
) -> None:
    """5 good records, one the broker refuses (too large for it), 10 good: every good one
    arrives and is deleted, the poison ends refused with measurement_refused and is never
    sent again, not even after a reconnect re-reads the outbox from its start.

    How the broker refuses decides the path. mosquitto 2.0.11 (Debian 12, this machine)
    answers with PUBACK 0x95, which MQTT 5 does not allow in a PUBACK: paho drops the
    connection as malformed, so the poison kills every connection it is sent on; the
    publisher sends it alone after the first loss and refuses it after MAX_CONNECTION_LOSSES
    (``connection_lost_repeatedly``, no reason code). Later versions answer 0x83: a transient
    refusal tried max_transient_refusals (3) times (``refused_repeatedly``, rc 0x83), while
    the records after it are deleted before it settles."""
    before = await rig.storage.call(_store_readings, rig.box, rig.signer, range(5))
    poison = await rig.storage.call(_store_poison, rig.box)
    after = await rig.storage.call(_store_readings, rig.box, rig.signer, range(5, 15))
    assert before[-1] < poison < after[0]
    good = before + after
    bodies = await rig.storage.call(_bodies, rig.box)
    refused_when_deleted: dict[int, int] = {}
    publisher_ref: list[Publisher] = []

    def on_delivered(seqs: Sequence[int]) -> None:
        for seq in seqs:
            refused_when_deleted[seq] = publisher_ref[0].stats.refused

    settings = _settings(dev_pki, small_broker.port)
    async with _receiver(dev_pki, small_broker.port) as receiver:
        with watching_logs() as logs:
            async with _publishing(
                rig,
                settings,
                on_delivered=on_delivered,
                refusal_retry_s=0.05,
                max_transient_refusals=3,
            ) as (publisher, uplink):
                publisher_ref.append(publisher)
                async with asyncio.timeout(POISON_TIMEOUT_S):
                    await logs.until(lambda: bool(logs.named("measurement_refused")))
                    await receiver.wait_until(lambda s: s.verified >= len(good))
                    await rig.until_delivered(good)
                received = _drain(receiver)
                refusals_before_reconnect = uplink.stats.refused
                connects = uplink.stats.connects
                # A reconnect starts the publisher's cursor at the beginning of the outbox.
                await small_broker.arestart()
                async with asyncio.timeout(TIMEOUT_S):
                    await uplink.wait_until(lambda s: s.connects > connects)
                extra = await rig.storage.call(_store_readings, rig.box, rig.signer, [15])
                publisher.wake()  # as the daemon's ingest does after a commit
                async with asyncio.timeout(TIMEOUT_S):
                    await rig.until_delivered(extra)
                refusals_after = uplink.stats.refused
            counts = await rig.storage.call(rig.box.counts)
            refused = await rig.storage.call(rig.box.refused)
            still = await rig.storage.call(_bodies, rig.box)

    # Every good record reached the platform, byte for byte, and was deleted once.
    assert {seq: bodies[seq] for seq in good} == received
    assert 0 == receiver.stats.rejected_total
    assert sorted([*good, *extra]) == sorted(rig.delivered)
    (event,) = logs.named("measurement_refused")
    assert poison == event["seq"]
    assert OutboxCounts(0, None, refused=1) == counts
    assert {} == still
    assert 1 == publisher.stats.refused
    assert [] == logs.named("publish_refused_systemic")
    if event["why"] == "connection_lost_repeatedly":
        # mosquitto 2.0.11: the poison ended MAX_CONNECTION_LOSSES connections, the later
        # ones with it alone in flight; then the rest flowed.
        assert [(poison, None)] == refused
        assert event["rc"] is None
        suspect = logs.named("measurement_suspect")
        assert [(poison, n) for n in range(2, MAX_CONNECTION_LOSSES)] == [
            (e["seq"], e["losses"]) for e in suspect
        ]
        assert uplink.stats.disconnects >= MAX_CONNECTION_LOSSES
    else:
        # A broker that answers 0x83: refused 3 times (attempts), then set aside; the ones
        # after the poison did not wait for it to settle.
        assert "refused_repeatedly" == event["why"]
        assert [(poison, RC_IMPLEMENTATION_SPECIFIC)] == refused
        assert {seq: 0 for seq in after} == {seq: refused_when_deleted[seq] for seq in after}
        transient = logs.named("measurement_publish_refused")
        assert [(poison, 1), (poison, 2)] == [(e["seq"], e["attempts"]) for e in transient]
        assert 3 == refusals_before_reconnect == refusals_after


# ---------------------------------------------------------------------------
# A broker that refuses everything
# ---------------------------------------------------------------------------

OBSERVE_S: Final = 1.5
"""How long a refusing broker is watched: a tight loop would refuse thousands in it."""

SYSTEMIC_SEED: Final = 7


async def test_systemic_refusal_marks_nothing_and_pauses(
    rig: Rig, dev_pki: DevPki, broker: Broker
) -> None:
    """A hub identity the ACL does not allow on this topic (another CN publishing under
    hub-0001's topic): every publish is refused with 0x87 and nothing was ever accepted on
    the connection, so it is the platform's fault: no record is marked refused (all stay
    pending, attempts 0), publish_refused_systemic is logged with the backoff's delay, and the
    rounds of publishes are spaced by that full-jitter backoff (bounded, no tight loop)."""
    cert, key = dev_pki.issue_client("other-hub")
    seqs = await rig.storage.call(_store_readings, rig.box, rig.signer, range(3))
    settings = _settings(dev_pki, broker.port, cert_file=cert, key_file=key)
    refusal_times: list[float] = []
    loop = asyncio.get_running_loop()
    with watching_logs() as logs:
        async with _publishing(
            rig, settings, refusal_retry_s=0.05, rng=random.Random(SYSTEMIC_SEED)
        ) as (publisher, uplink):
            async with asyncio.timeout(TIMEOUT_S):
                await uplink.connected.wait()
            started = loop.time()
            # Observe for OBSERVE_S (a measurement window, not a synchronisation).
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(OBSERVE_S):
                    while True:
                        seen = uplink.stats.refused
                        await uplink.wait_until(lambda s, seen=seen: s.refused > seen)  # type: ignore[misc]
                        refusal_times.extend(
                            [loop.time() - started] * (uplink.stats.refused - seen)
                        )
            # One snapshot, no await in between: rounds so far and publishes refused so far.
            systemic = list(logs.named("publish_refused_systemic"))
            refused_publishes = uplink.stats.refused
            pending = await rig.storage.call(rig.box.pending_after, 0, 100)
        counts = await rig.storage.call(rig.box.counts)

    assert 0 == publisher.stats.refused
    assert OutboxCounts(3, counts.oldest_age_s, refused=0) == counts
    assert [(seq, 0) for seq in seqs] == [(r.seq, r.attempts) for r in pending]
    assert [] == logs.named("measurement_refused")
    assert systemic, "no publish_refused_systemic"
    assert {RC_NOT_AUTHORIZED} == {e["rc"] for e in systemic}
    # The pauses are the publisher's full-jitter backoff (base refusal_retry_s), drawn in order.
    rng = random.Random(SYSTEMIC_SEED)
    backoff = FullJitter(0.05, publisher_mod.SYSTEMIC_REFUSAL_CAP_S)
    expected = [round(backoff.delay(n, rng), 3) for n in range(len(systemic))]
    assert expected == [e["retry_in_s"] for e in systemic]
    # Each round publishes each pending record once, and a round starts only after the
    # previous pause: over OBSERVE_S at most as many rounds as those pauses allow.
    rounds = len(systemic)
    assert rounds * len(seqs) >= refused_publishes >= (rounds - 1) * len(seqs) + 1
    rng = random.Random(SYSTEMIC_SEED)
    pauses = [backoff.delay(n, rng) for n in range(64)]
    possible = 1 + next(k for k in range(64) if sum(pauses[: k + 1]) > OBSERVE_S)
    print(f"systemic: {rounds} rounds, {refused_publishes} refused publishes in {OBSERVE_S} s")
    assert rounds <= possible, (rounds, possible, refusal_times)
    assert refused_publishes <= possible * len(seqs) < 100


# ---------------------------------------------------------------------------
# The link drops with the window full
# ---------------------------------------------------------------------------


class LinkProxy:
    """MOCK at the network edge: a TCP relay between the hub and the broker (the TLS bytes
    pass untouched). :meth:`hold` withholds what the broker sends (its PUBACKs) as a stalled
    link does; :meth:`cut` drops every relayed connection at once (the hub sees the link go
    down); new connections are relayed normally."""

    def __init__(self, broker_port: int) -> None:
        self.broker_port = broker_port
        self.port = 0
        self._server: asyncio.Server | None = None
        self._flowing = asyncio.Event()
        self._flowing.set()
        self._transports: list[asyncio.WriteTransport] = []
        self._tasks: set[asyncio.Task[None]] = set()
        self.connections = 0

    async def __aenter__(self) -> LinkProxy:
        self._server = await asyncio.start_server(self._relay, "127.0.0.1", 0)
        self.port = self._server.sockets[0].getsockname()[1]
        return self

    async def __aexit__(self, *_exc: object) -> None:
        assert self._server is not None
        self._server.close()
        self.cut()
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        await self._server.wait_closed()

    def hold(self) -> None:
        self._flowing.clear()

    def cut(self) -> None:
        for transport in self._transports:
            transport.abort()
        self._transports.clear()
        self._flowing.set()

    async def _relay(self, hub_r: asyncio.StreamReader, hub_w: asyncio.StreamWriter) -> None:
        self.connections += 1
        broker_r, broker_w = await asyncio.open_connection("127.0.0.1", self.broker_port)
        pair = [hub_w.transport, broker_w.transport]
        self._transports.extend(pair)
        up = asyncio.create_task(self._pump(hub_r, broker_w, held=False, pair=pair))
        down = asyncio.create_task(self._pump(broker_r, hub_w, held=True, pair=pair))
        self._tasks.update((up, down))
        up.add_done_callback(self._tasks.discard)
        down.add_done_callback(self._tasks.discard)

    async def _pump(
        self,
        reader: asyncio.StreamReader,
        writer: asyncio.StreamWriter,
        *,
        held: bool,
        pair: list[asyncio.WriteTransport],
    ) -> None:
        try:
            while True:
                data = await reader.read(65536)
                if not data:
                    break
                if held:
                    await self._flowing.wait()
                if writer.transport.is_closing():
                    break
                writer.write(data)
                await writer.drain()
        except (ConnectionError, OSError):
            pass
        finally:
            for transport in pair:
                transport.abort()


async def test_link_drop_with_full_window_resends_same_bytes_deleted_once(
    rig: Rig, dev_pki: DevPki, broker: Broker
) -> None:
    """The broker's PUBACKs are withheld until the window is full (40 handed to the uplink:
    20 in flight, all already forwarded to the platform, 20 in paho's queue), then the link
    drops: all 40 are sent again after the reconnect, byte-identical (the platform counts
    the 20 it had as duplicates, no conflict), and every record is deleted exactly once."""
    count = 60
    seqs = await rig.storage.call(_store_readings, rig.box, rig.signer, range(count))
    bodies = await rig.storage.call(_bodies, rig.box)
    async with _receiver(dev_pki, broker.port) as receiver, LinkProxy(broker.port) as proxy:
        settings = _settings(dev_pki, proxy.port)

        async def hold_acks(_uplink: Uplink) -> None:
            proxy.hold()  # connected: from now on the broker's answers are withheld

        async with _publishing(rig, settings, before_start=hold_acks) as (publisher, uplink):
            async with asyncio.timeout(TIMEOUT_S):
                # 40 handed to the uplink: 20 on the wire, 20 waiting in paho's queue.
                await uplink.wait_until(lambda s: s.in_flight == PUBLISH_WINDOW)
                await receiver.wait_until(lambda s: s.verified == INFLIGHT_MAX)
            assert [] == rig.delivered
            proxy.cut()
            async with asyncio.timeout(TIMEOUT_S):
                await rig.until_delivered(seqs)
                await receiver.wait_until(lambda s: s.verified == count)
                await receiver.wait_until(lambda s: s.duplicates == INFLIGHT_MAX)
        counts = await rig.storage.call(rig.box.counts)
        received = _drain(receiver)
    assert bodies == received
    assert (count, INFLIGHT_MAX, 0, 0) == (
        receiver.stats.verified,
        receiver.stats.duplicates,
        receiver.stats.conflicting_duplicates,
        receiver.stats.rejected_total,
    )
    assert seqs == sorted(rig.delivered)
    assert len(rig.delivered) == len(set(rig.delivered))
    assert OutboxCounts(0, None) == counts
    assert (PUBLISH_WINDOW, PUBLISH_WINDOW) == (
        publisher.stats.interrupted,
        uplink.stats.lost_in_flight,
    )
    assert 2 == proxy.connections


# ---------------------------------------------------------------------------
# Deletes that fail (a failing disk)
# ---------------------------------------------------------------------------


class FailingDeletes:
    """MOCK at the storage edge (a failing disk), in the style of tests/test_outbox_faults.py:
    wraps the outbox's real ``sqlite3.Connection`` and makes every DELETE raise
    ``sqlite3.OperationalError`` with SQLITE_IOERR_WRITE, as SQLite reports a failed write.
    Everything else reaches the real connection."""

    def __init__(self, real: sqlite3.Connection) -> None:
        self.real = real
        self.failed = 0

    def execute(self, sql: str, *args: Any) -> sqlite3.Cursor:
        self._check(sql)
        return self.real.execute(sql, *args)

    def executemany(self, sql: str, *args: Any) -> sqlite3.Cursor:
        self._check(sql)
        return self.real.executemany(sql, *args)

    def _check(self, sql: str) -> None:
        if sql.lstrip().upper().startswith("DELETE"):
            self.failed += 1
            error = sqlite3.OperationalError("injected fault")
            error.sqlite_errorcode = SQLITE_IOERR_WRITE
            error.sqlite_errorname = "SQLITE_IOERR_WRITE"
            raise error

    def __getattr__(self, name: str) -> Any:
        return getattr(self.real, name)


def _fail_deletes(box: Outbox) -> FailingDeletes:
    """On the storage thread: the disk starts failing writes of deletes."""
    real = box._conn
    assert isinstance(real, sqlite3.Connection)
    faulty = FailingDeletes(real)
    box._conn = faulty  # type: ignore[assignment]
    return faulty


def _heal(box: Outbox, faulty: FailingDeletes) -> None:
    box._conn = faulty.real


async def test_failed_deletes_then_restart_resend_same_bytes_deleted_once(
    rig: Rig, dev_pki: DevPki, broker: Broker, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Every delete fails (EIO) after the PUBACKs: outbox_unavailable is logged and the
    delete retried, but nothing is published twice; the process then dies (its tasks
    cancelled, as by SIGKILL). After a restart on the healed disk the same records are
    still pending with the same bytes, are sent again (the platform counts each as a
    byte-identical duplicate) and each is deleted exactly once."""
    monkeypatch.setattr(publisher_mod, "STORAGE_RETRY_S", 0.05)  # the retry, shortened
    count = 10
    seqs = await rig.storage.call(_store_readings, rig.box, rig.signer, range(count))
    bodies = await rig.storage.call(_bodies, rig.box)
    faulty = await rig.storage.call(_fail_deletes, rig.box)
    settings = _settings(dev_pki, broker.port)
    async with _receiver(dev_pki, broker.port) as receiver:
        with watching_logs() as logs:
            uplink = Uplink(settings)
            publisher = Publisher(rig.storage, rig.box, uplink, on_delivered=rig.note_delivered)
            async with asyncio.TaskGroup() as tg:
                tg.create_task(uplink.run(), name="test.uplink")
                life = tg.create_task(publisher.run(), name="test.publisher")
                async with asyncio.timeout(TIMEOUT_S):
                    await receiver.wait_until(lambda s: s.verified == count)
                    await logs.until(lambda: len(logs.named("outbox_unavailable")) >= 3)
                published_once = (uplink.stats.acked, publisher.stats.published)
                life.cancel()  # the process dies: no orderly stop
                await uplink.close()
            failures = logs.named("outbox_unavailable")
        assert (count, count) == published_once
        assert [] == rig.delivered
        assert {("StorageError", "mark_delivered", "SQLITE_IOERR_WRITE: injected fault")} == {
            (e["error"], e["operation"], e["reason"]) for e in failures
        }
        assert faulty.failed >= 3
        # Restart: the healed disk, the outbox reopened from the file.
        await rig.storage.call(_heal, rig.box, faulty)
        await rig.storage.call(rig.box.close)
        rig.box = await rig.storage.call(Outbox.open, rig.path, rig.sealer, HUB_ID)
        assert bodies == await rig.storage.call(_bodies, rig.box)
        async with _publishing(rig, settings) as (publisher, uplink):
            async with asyncio.timeout(TIMEOUT_S):
                await rig.until_delivered(seqs)
                await receiver.wait_until(lambda s: s.duplicates == count)
        counts = await rig.storage.call(rig.box.counts)
        received = _drain(receiver)
    assert bodies == received
    assert (count, count, 0, 0) == (
        receiver.stats.verified,
        receiver.stats.duplicates,
        receiver.stats.conflicting_duplicates,
        receiver.stats.rejected_total,
    )
    assert seqs == sorted(rig.delivered)
    assert len(seqs) == len(rig.delivered)
    assert OutboxCounts(0, None) == counts


STOP_BOUND_S: Final = STOP_DRAIN_S + 1.0
"""The publisher's stop: its drain for PUBACKs plus a margin; the daemon's whole ordered stop
(agent.daemon.STOP_BUDGET_S, 5 s) must also fit the uplink's DISCONNECT and ingest."""


async def test_stop_is_bounded_while_deletes_fail(
    rig: Rig, dev_pki: DevPki, broker: Broker
) -> None:
    """With every delete failing (the daemon's own retry pause), stop() lets run() return
    within STOP_DRAIN_S and a margin; the acknowledged records stay pending, to be sent
    again (same bytes) after the next start."""
    count = 5
    await rig.storage.call(_store_readings, rig.box, rig.signer, range(count))
    faulty = await rig.storage.call(_fail_deletes, rig.box)
    settings = _settings(dev_pki, broker.port)
    uplink = Uplink(settings)
    publisher = Publisher(rig.storage, rig.box, uplink, on_delivered=rig.note_delivered)
    with watching_logs() as logs:
        async with asyncio.TaskGroup() as tg:
            tg.create_task(uplink.run(), name="test.uplink")
            life = tg.create_task(publisher.run(), name="test.publisher")
            try:
                async with asyncio.timeout(TIMEOUT_S):
                    await uplink.wait_until(lambda s: s.acked == count)
                    await logs.until(lambda: bool(logs.named("outbox_unavailable")))
                publisher.stop()
                done, _ = await asyncio.wait({life}, timeout=STOP_BOUND_S)
            finally:
                life.cancel()
                await uplink.close()
    await rig.storage.call(_heal, rig.box, faulty)
    counts = await rig.storage.call(rig.box.counts)
    assert count == counts.pending
    assert done, f"Publisher.run() had not returned {STOP_BOUND_S} s after stop()"
