"""The publisher: keeps the MQTT window full of pending records and deletes them in batches.

Theory of operation
-------------------
The outbox is the source of truth (agent/outbox.py); what is *in flight* lives here, in
memory, so keeping the window full costs no fsync:

1. While the uplink is connected, read pending records past a cursor
   (:meth:`~agent.outbox.Outbox.pending_after`, on the storage thread) and hand each to
   :meth:`~agent.uplink.Uplink.publish` as soon as one of :data:`PUBLISH_WINDOW` slots is
   free: no task and no future per record; the PUBACK calls back, so a slow PUBACK never
   holds the others back and the hot path costs one callback.
2. A PUBACK puts the seq on the acknowledged list. One task deletes what is on it in one
   transaction (:meth:`~agent.outbox.Outbox.mark_delivered_many`); what is acknowledged
   while that commit runs forms the next batch. One fsync covers many records.
3. A disconnect fails the publishes in flight; their records are still pending. When the
   uplink is back, the cursor starts again at the beginning, skipping what is acknowledged
   but not yet deleted, and the same sealed bytes are sent again (the platform dedups by
   ``(hub, seq)``).

4. A record the broker refuses for good (:class:`~agent.errors.PublishRejectedError`: not
   authorized, payload format invalid…) becomes ``refused`` in the outbox: kept, not sent
   again on its own, reported (``measurement_refused``). One refused transiently
   (:class:`~agent.errors.PublishRefusedError`) is tried again after a pause, and after
   :data:`MAX_TRANSIENT_REFUSALS` tries it is refused too. Either way the records after it
   keep flowing: one bad record never blocks delivery.

   A refusal only counts against the record when the broker accepted another record on
   the same connection: then this one is the poison. When nothing has been accepted yet
   (an ACL that denies the hub's topic, a broker over quota), the fault is the platform's,
   not the record's: nothing is marked, publishing pauses (``publish_refused_systemic``)
   and tries again after a full-jitter backoff, so a misconfigured platform never turns
   the whole outbox into refused records.
5. A record whose publish ends the connection (a broker that answers it with a PUBACK the
   client must treat as malformed, a proxy that cuts it) would otherwise be sent first
   after every reconnect, forever, and hold everything behind it. So after a connection
   ends with publishes in flight, the oldest of them is the *suspect*: on the next
   connection it is sent alone, and only its PUBACK lets the others go. When connections
   end :data:`MAX_CONNECTION_LOSSES` times in a row with it in flight, it is refused
   (``connection_lost_repeatedly``): kept, reported, and the rest flow.
6. With ``ack = "receipt"`` (docs/platform-protocol.md, "Receipts") a PUBACK deletes
   nothing: the envelope (named by its digest, :func:`agent.receipts.envelope_digest`) waits
   in a :class:`~agent.receipts.ReceiptBook` for the platform's signed receipt, which the
   uplink hands to :meth:`Publisher._on_receipt`. A valid receipt puts the seqs it holds on
   the acknowledged list (deleted in batches as above) and marks the ones it refuses
   ``refused`` (its reason logged); a rejected one deletes nothing, is logged
   ``receipt_rejected`` and raises a ``security`` event (:mod:`agent.security`). An envelope
   without its receipt :data:`~agent.receipts.RECEIPT_TIMEOUT_S` after its PUBACK, or
   unreceipted when the connection ended, is sent again (the same bytes: a receipt that still
   comes for the first copy deletes it all the same). How many envelopes may await a receipt
   is a :class:`~agent.receipts.ReceiptWindow`: from :data:`PUBLISH_WINDOW`, one more per
   envelope receipted up to :data:`~agent.receipts.AWAITING_MAX`, halved by a timeout, so a
   backlog drains at the link's pace while a platform that never answers costs one window per
   timeout.
7. Devices by reference (docs/platform-protocol.md "Devices by reference", agent/device_refs.py):
   with a version-3 dictionary and receipts, a reading names its device set by digest once
   the platform holds it: the publisher remembers which sets each envelope carried in full,
   and a receipt holding the envelope confirms them (:class:`~agent.device_refs.
   ConfirmedDeviceSets`, kept in the outbox's sync state with the platform key's id, written
   when it changes). A receipt refusing an envelope ``unknown_device`` (the platform lost the
   sets) marks nothing refused: every confirmed set is forgotten and the envelope's readings
   go again with their Devices in full (``device_sets_forgotten``). Only an envelope that named
   no set by reference and is refused so anyway is refused like any other.
8. :meth:`Publisher.stop`: no new publishes; the ones in flight get up to
   :data:`STOP_DRAIN_S` for their PUBACK (and receipt), the acknowledged ones are deleted, and
   :meth:`Publisher.run` returns. What had no PUBACK stays pending and is sent after the
   next start.

Every storage call of the publisher is made at low priority
(:meth:`~agent.storage.StorageThread.call_low`): a reading waiting to be committed goes
first, so its arrival-to-commit time does not include a read or a delete's fsync queued
before it.

Nothing here raises for a link or disk fault; those are logged and waited out. A bug
(anything that is not a hub error) propagates and ends the daemon, loudly.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import itertools
import random
import time
from collections import OrderedDict, deque
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Final

import structlog
from cryptography.hazmat.primitives.asymmetric import ec

from agent import cose
from agent.batching import (
    BATCH_MAX_READINGS,
    FRESH_WINDOW_S,
    URGENT_MAX,
    Candidate,
    Lane,
    SoloSet,
    Unit,
    UnitKind,
    fresh_boundary,
    next_unit,
)
from agent.budget import PERSIST_EVERY_S, BudgetState, ByteBudget
from agent.cancellation import first_of
from agent.device_refs import UNKNOWN_DEVICE_REASON, ConfirmedDeviceSets
from agent.dictionaries import Dictionary
from agent.envelopes import (
    MAX_BATCH_READINGS,
    EnvelopeSigner,
    ReadingPayload,
    build_batch,
    build_single,
    digest_of,
)
from agent.errors import (
    IntegrityError,
    PublishNotQueuedError,
    PublishRefusedError,
    PublishRejectedError,
    ReceiptRejectedError,
    RecordTooLargeError,
    StorageError,
)
from agent.outbox import MAX_BATCH, Outbox, OutboxRecord
from agent.profiles import AckMode, MessageKind
from agent.receipts import (
    AWAITING_MAX,
    RECEIPT_TIMEOUT_S,
    RELEASED_MAX,
    ItemFate,
    Receipt,
    ReceiptBook,
    ReceiptItem,
    ReceiptWindow,
    Settlement,
    envelope_digest,
)
from agent.retry import FullJitter, Rng
from agent.security import SecurityEvent, SecuritySink, report_security
from agent.storage import StorageThread
from agent.uplink import HANDOFF_FACTOR, INFLIGHT_MAX, InboundMessage, Uplink

log = structlog.get_logger(__name__)

PUBLISH_WINDOW: Final = INFLIGHT_MAX * HANDOFF_FACTOR
"""Records handed to the uplink at once: its in-flight window on the wire
(:data:`agent.uplink.INFLIGHT_MAX`, 20: paho's and mosquitto's default) and as many again
waiting in paho's queue, sent from within the processing of the PUBACK that frees a place
(:data:`agent.uplink.HANDOFF_FACTOR`)."""

READ_BATCH: Final = 200
"""Pending records read per storage call: ten windows, so one read keeps the window full
for a while; ≈ 1 MB of envelopes in memory at most."""

REFUSAL_RETRY_S: Final = 5.0
"""Pause before a record the broker refused transiently (quota exceeded, server busy) is
tried again; also the base of the backoff while every publish is refused."""

SYSTEMIC_REFUSAL_CAP_S: Final = 300.0
"""Longest pause while the broker refuses everything: a fixed platform is used within
minutes, and a refusing one is not hammered."""

MAX_TRANSIENT_REFUSALS: Final = 5
"""A record refused this many times, even transiently, is refused for good: it stops
costing the link, and it is reported rather than retried forever."""

MAX_CONNECTION_LOSSES: Final = 3
"""Connections lost in a row while a suspect record was in flight, the last ones with it
alone in flight, before it is refused: a network that drops exactly during one record's
round trip three times running is far less likely than a record that kills the link."""

STOP_DRAIN_S: Final = 1.0
"""On stop, how long publishes in flight may wait for their PUBACK: a loopback or LAN broker
answers in milliseconds, a cellular one within about a second; what has no PUBACK by then
stays pending and goes after the next start. Inner to the daemon's stop budget."""

ACK_BATCH_MIN: Final = 100
"""Acknowledged records deleted together without waiting (five windows)."""

ACK_LINGER_S: Final = 0.25
"""Longest an acknowledged record waits for companions before its delete: deleting late is
harmless (a crash before it only re-sends the same bytes). At line rate a PUBACK burst of
:data:`ACK_BATCH_MIN` comes in about 20 ms and goes at once; while readings stream in one
by one (a meter's download at 7.5-50 ms a record, each published as it is stored) 20 ms
made a delete, with its fsync, of 2-3 records every 20 ms, in the storage thread's way of
the readings (hil/bench/ble.py: ≈ 200 deletes for a 500-record download); 250 ms makes
that ≈ 15 of ≈ 30 records."""

BATCH_ENVELOPE_MAX_BYTES: Final = 256 * 1024
"""A batch envelope at most, whatever the profile allows: with :data:`PUBLISH_WINDOW`
envelopes handed to the uplink at once, the window holds at most ~10 MiB (compressed
readings are a few hundred bytes, so a batch of 50 is ~15 KiB and never near it)."""

STORAGE_RETRY_S: Final = 5.0
"""Pause before the disk is tried again after a storage error (full or failing)."""

FRESH_SCAN: Final = 64
"""Newest pending records looked at, at each connection, for where the fresh lane begins
(:meth:`~agent.outbox.Outbox.newest_pending`): more fresh ones than this are a download, and
the older of them are backfill."""

BUDGET_RECHECK_MAX_S: Final = 3600.0
"""While backfill waits for the next UTC day, look again at least this often (a wall clock
set meanwhile moves the day)."""

BUDGET_STATE_DEVICE: Final = "hub.publisher"
"""Sync-state owner of the budget's state in the outbox (never a device label: those have no
'.')."""
BUDGET_STATE_KEY: Final = "budget"
DEVICE_SETS_STATE_KEY: Final = "device_sets"
"""Sync-state key (owner :data:`BUDGET_STATE_DEVICE`) of the device sets the platform holds."""

DEVICE_NOTES_MAX: Final = AWAITING_MAX + RELEASED_MAX
"""Envelopes whose device sets (carried in full, named by reference) are remembered until
their receipt: as many as the receipt book recognises (awaiting and released), so a receipt
the book accepts finds its envelope's note."""


@dataclass(slots=True)
class PublisherStats:
    """Counters since start."""

    published: int = 0
    delivered: int = 0
    refused: int = 0
    transient_refusals: int = 0
    interrupted: int = 0
    not_queued: int = 0
    """Readings the MQTT client would not queue (its queue full) on a live connection:
    read again at once."""
    receipts_accepted: int = 0
    receipts_rejected: int = 0
    """Receipts refused, each a ``security`` event."""
    receipts_repeated: int = 0
    """Exact copies of an accepted receipt (at-least-once delivery): nothing done, no alarm."""
    receipt_timeouts: int = 0
    """Envelopes whose receipt did not come within the receipt timeout (sent again)."""
    receipt_items_stale: int = 0
    receipt_items_duplicate: int = 0
    envelopes: int = 0
    """Envelopes handed to the uplink (each try counts; a batch is one)."""
    batches: int = 0
    """Of :attr:`envelopes`, batches."""
    compressed: int = 0
    """Of :attr:`envelopes`, compressed ones."""
    bytes_sent: int = 0
    """MQTT payload bytes handed to the uplink (every try)."""
    batches_split: int = 0
    """Batches refused or lost with a connection: their readings went singly."""
    device_sets_confirmed: int = 0
    """Device sets a receipt confirmed the platform holds (sent by reference from then on)."""
    device_sets_forgotten: int = 0
    """Times the platform said it lacks a device set (``unknown_device``) and every confirmed
    set was forgotten."""
    resent_in_full: int = 0
    """Readings sent again with their Devices in full after an ``unknown_device`` refusal."""


class Publisher:
    """Sends the outbox's pending records through the uplink (see the module docstring).

    Args:
        storage: the storage thread that owns ``outbox``.
        outbox: the outbox (used only through ``storage``).
        uplink: the MQTT uplink.
        on_delivered: called on the loop with each batch of deleted seqs (tests, crash child).
        window: publishes in flight at once.
        ack: what deletes a record: the broker's PUBACK, or the platform's receipt (then
            ``platform_key`` is required and a PUBACK only starts ``receipt_timeout_s``).
        on_security: told of every ``security`` event (a rejected receipt).
        wall_clock: the hub's Unix time, for a receipt's ``iat``/``exp``, freshness and the
            budget's UTC day (tests set it).
        signer: the hub's signing operation (:class:`agent.ingest.Signer`): needed to build
            batches and compressed envelopes. Without it every record goes alone, as stored.
        dictionary: asked before each envelope is built: the zstd dictionary the platform
            announced (agent/platform_link.py), or None. Envelopes are compressed only while
            it returns one; otherwise singles are the stored bytes and batches plain.
        batch_max_readings: ``[mqtt] batch_max_readings``: readings per batch at most
            (1: no batches).
        daily_budget_bytes: ``[mqtt] daily_budget_bytes``: backfill bytes per UTC day
            (agent/budget.py; 0: no budget).
        fresh_window_s: how recently stored a reading is fresh (agent/batching.py).
    """

    def __init__(
        self,
        storage: StorageThread,
        outbox: Outbox,
        uplink: Uplink,
        *,
        on_delivered: Callable[[Sequence[int]], None] | None = None,
        window: int = PUBLISH_WINDOW,
        refusal_retry_s: float = REFUSAL_RETRY_S,
        max_transient_refusals: int = MAX_TRANSIENT_REFUSALS,
        rng: Rng | None = None,
        ack: AckMode = AckMode.PUBACK,
        platform_key: ec.EllipticCurvePublicKey | None = None,
        receipt_timeout_s: float = RECEIPT_TIMEOUT_S,
        on_security: SecuritySink | None = None,
        wall_clock: Callable[[], float] = time.time,
        signer: EnvelopeSigner | None = None,
        dictionary: Callable[[], Dictionary | None] | None = None,
        batch_max_readings: int = BATCH_MAX_READINGS,
        daily_budget_bytes: int = 0,
        fresh_window_s: float = FRESH_WINDOW_S,
    ) -> None:
        if not 1 <= window <= MAX_BATCH:
            raise ValueError(f"window must be 1..{MAX_BATCH}")
        if not 1 <= batch_max_readings <= MAX_BATCH_READINGS:
            raise ValueError(f"batch_max_readings must be 1..{MAX_BATCH_READINGS}")
        if daily_budget_bytes < 0 or fresh_window_s < 0:
            raise ValueError("daily_budget_bytes and fresh_window_s must be >= 0")
        if dictionary is not None and signer is None:
            raise ValueError("compressing needs the signer")
        self._signer = signer
        self._dictionary = dictionary
        self._batch_max = batch_max_readings if signer is not None else 1
        self._batch_bytes = min(uplink.max_publish_bytes, BATCH_ENVELOPE_MAX_BYTES)
        """A batch's envelope at most: what the uplink takes (the profile's payload limit) and
        :data:`BATCH_ENVELOPE_MAX_BYTES`, which bounds the window's memory."""
        self._fresh_window_s = fresh_window_s
        self._budget = ByteBudget(daily_budget_bytes)
        self._budget_saved_at: float | None = None
        """Monotonic time the budget's state was last written (None: not since start)."""
        self._solo = SoloSet()
        """Readings to send singly: of split batches, or not plain readings."""
        self._urgent: dict[int, None] = {}
        """Seqs whose values crossed an alert limit (agent/urgency.py), oldest first, at most
        :data:`~agent.batching.URGENT_MAX`: in memory only (agent/batching.py)."""
        if refusal_retry_s <= 0 or max_transient_refusals < 1:
            raise ValueError("refusal_retry_s must be > 0 and max_transient_refusals >= 1")
        self._refusal_retry_s = refusal_retry_s
        self._max_transient_refusals = max_transient_refusals
        self._systemic = FullJitter(refusal_retry_s, max(refusal_retry_s, SYSTEMIC_REFUSAL_CAP_S))
        self._systemic_attempts = 0
        self._rng = rng or random.Random()  # noqa: S311 - jitter, not cryptography
        self._acked_on_connection = 0
        self._hold = asyncio.Event()
        self._hold.set()  # set: publishing may go on; clear while every publish is refused
        self._interrupted: list[tuple[int, ...]] = []
        """Envelopes (their seqs) whose publish the end of the current connection
        interrupted."""
        self._suspect: int | None = None
        self._suspect_losses = 0
        self._suspect_settled = asyncio.Event()
        self._stop_requested = asyncio.Event()
        self.storage = storage
        self.outbox = outbox
        self.uplink = uplink
        self.stats = PublisherStats()
        self._on_delivered = on_delivered
        self._free_slots = window
        """Publishes that may start now (the window minus what is in flight)."""
        self._slot_freed = asyncio.Event()
        self._in_flight: set[int] = set()
        self._acked: list[int] = []
        """PUBACKed, not yet deleted (in PUBACK order)."""
        self._acked_set: set[int] = set()
        """The same seqs, plus those being deleted right now: never published again."""
        self._wake = asyncio.Event()
        self._ack_ready = asyncio.Event()
        self._idle = asyncio.Event()
        self._idle.set()
        self._stopping = False
        self._settled = False
        """Stopping, and the in-flight publishes had their :data:`STOP_DRAIN_S`."""
        self._tasks: set[asyncio.Task[None]] = set()
        """Refusals being written down (the only work of a record that needs a task)."""
        self._rescan = False
        self._retry_handle: asyncio.TimerHandle | None = None
        self._on_security = on_security
        self._wall_clock = wall_clock
        self._platform_key = platform_key
        self._book: ReceiptBook | None = None
        self._receipt_window = ReceiptWindow(window, max(window, AWAITING_MAX))
        self._book_changed = asyncio.Event()
        self._device_sets: ConfirmedDeviceSets | None = None
        """The device sets the platform holds (receipts only: nothing else confirms them)."""
        self._device_notes: OrderedDict[bytes, _DeviceNote] = OrderedDict()
        """Envelope digest -> the device sets it carried and named, until its receipt."""
        if ack is AckMode.RECEIPT:
            if platform_key is None:
                raise ValueError("ack 'receipt' needs the platform key")
            self._book = ReceiptBook(uplink.settings.hub_id, timeout_s=receipt_timeout_s)
            self._device_sets = ConfirmedDeviceSets(cose.key_id(platform_key))
            uplink.on_message(MessageKind.RECEIPTS, self._on_receipt)

    # -- public -------------------------------------------------------------------------

    def wake(self) -> None:
        """New records were stored: look again."""
        self._wake.set()

    def mark_urgent(self, seqs: Iterable[int]) -> None:
        """Stored readings whose values crossed an alert limit: if they are backfill, they go
        before the rest of it (agent/batching.py, lane *urgent*)."""
        for seq in seqs:
            self._urgent[seq] = None
        while len(self._urgent) > URGENT_MAX:
            del self._urgent[next(iter(self._urgent))]

    @property
    def urgent_pending(self) -> int:
        """Urgent seqs remembered (sent ones are forgotten at the next connection)."""
        return len(self._urgent)

    def stop(self) -> None:
        """Publish nothing new; :meth:`run` returns once in-flight work is settled."""
        self._stopping = True
        self._stop_requested.set()
        self._slot_freed.set()
        self._wake.set()
        self._ack_ready.set()

    @property
    def stopping(self) -> bool:
        """Whether :meth:`stop` was called (a property: it changes across awaits)."""
        return self._stopping

    @property
    def in_flight(self) -> int:
        """Publishes awaiting their PUBACK now."""
        return len(self._in_flight)

    @property
    def awaiting_receipt(self) -> int:
        """Envelopes PUBACKed and awaiting the platform's receipt now (0 with PUBACK acks)."""
        return self._book.awaiting if self._book is not None else 0

    @property
    def receipt_window(self) -> int:
        """Envelopes that may await a receipt at once now (:class:`ReceiptWindow`)."""
        return self._receipt_window.size

    @property
    def known_device_sets(self) -> frozenset[bytes]:
        """The device sets the platform is known to hold (named by reference)."""
        return self._device_sets.known if self._device_sets is not None else frozenset()

    async def run(self) -> None:
        """Publish until :meth:`stop`; then drain for up to :data:`STOP_DRAIN_S` and return."""
        await self._load_budget()
        await self._load_device_sets()
        try:
            async with asyncio.TaskGroup() as tg:
                acks = tg.create_task(self._delete_acknowledged(), name="hub.publisher.acks")
                timeouts = None
                if self._book is not None:
                    timeouts = tg.create_task(
                        self._expire_receipts(self._book), name="hub.publisher.receipts"
                    )
                while True:
                    await self._until_connected()
                    if self.stopping:
                        break
                    await self._serve(tg)
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(STOP_DRAIN_S):
                        await self._idle.wait()
                        await self._until_receipted()
                if timeouts is not None:
                    timeouts.cancel()
                # Publishes without a PUBACK by now stay pending and go after the next start;
                # a refusal still being written down is dropped with them (it stays pending).
                for task in self._tasks:
                    task.cancel()
                self._settled = True
                self._ack_ready.set()
                await acks
                await self._save_budget()
        finally:
            if self._retry_handle is not None:
                self._retry_handle.cancel()

    # -- one connection -------------------------------------------------------------------

    async def _until_connected(self) -> None:
        """Wait for the uplink, a stop, and the end of the previous connection's publishes.

        Only what has not happened yet is awaited: an event already set returns at once, so
        waiting on it would spin (an offline hub burning a core)."""
        while not self.stopping:
            connected = self.uplink.connected.is_set()
            if connected and self._idle.is_set():
                return
            self._wake.clear()
            if connected:  # the previous connection's publishes are still settling
                await first_of(self._idle.wait(), self._wake.wait())
            else:
                await first_of(self.uplink.connected.wait(), self._wake.wait())

    async def _serve(self, tg: asyncio.TaskGroup) -> None:
        """Keep the window full while this connection lasts: the fresh lane first, then
        backfill (agent/batching.py), each record alone or in batches."""
        self._acked_on_connection = 0
        if self._book is not None:
            released = self._book.release_all()
            if released:
                # Unreceipted at the end of the last connection: sent again (a receipt that
                # still comes for the old copy deletes them all the same).
                log.info("receipt_released", count=len(released), first_seq=min(released))
                self._book_changed_now()
        await self._judge_suspect()
        fresh_from = await self._fresh_from()
        if fresh_from is None:
            return  # the disk failed (logged, waited): try again with the next pass
        fresh = _LaneState(Lane.FRESH, fresh_from - 1, None)
        urgent = _LaneState(Lane.URGENT, 0, fresh_from)
        # The oldest READ_BATCH of them: more go with the backfill, in their turn.
        urgent.among = tuple(seq for seq in self._urgent if seq < fresh_from)[:READ_BATCH]
        backfill = _LaneState(Lane.BACKFILL, 0, fresh_from)
        lanes = (fresh, urgent, backfill)
        try:
            while self.uplink.connected.is_set() and not self.stopping:
                if self._rescan:
                    self._rescan = False
                    for lane in lanes:
                        lane.reset()
                # Room first, then choose: what was stored while the window was full goes
                # before the backfill that was waiting for the same room.
                if not await self._until_room():
                    return
                if self._rescan:
                    continue
                if self._wake.is_set():
                    # Something was stored: the fresh lane has more (its records are all
                    # past its cursor, whatever the clock).
                    self._wake.clear()
                    fresh.more()
                chosen = await self._choose(lanes)
                if chosen is None:
                    await self._wait_for_work()
                    continue
                lane, unit = chosen
                outgoing = await self._build(lane, unit)
                if outgoing is None:
                    continue
                if lane.lane is Lane.BACKFILL and not self._backfill_allowed(len(outgoing.data)):
                    await self._save_budget()
                    continue  # not sent: built again when the budget allows
                lane.taken(len(outgoing.seqs))
                if not self.uplink.connected.is_set() or self.stopping:
                    return
                if not await self._hand_off(outgoing, tg):
                    return
                if self._budget_save_due():
                    await self._save_budget()
        finally:
            for lane in lanes:
                lane.reset()

    async def _fresh_from(self) -> int | None:
        """Where this connection's fresh lane begins (agent/batching.py)."""
        try:
            newest, next_seq = await self.storage.call_low(self.outbox.newest_pending, FRESH_SCAN)
        except StorageError as exc:
            self._storage_failed(exc)
            await asyncio.sleep(STORAGE_RETRY_S)
            return None
        window_start = self._wall_clock() - self._fresh_window_s
        return fresh_boundary(newest, next_seq, window_start)

    async def _until_room(self) -> bool:
        """Until an envelope may go now (a window slot, receipt room, no systemic pause);
        False when the connection ended or the publisher stops."""
        while True:
            if self.stopping or not self.uplink.connected.is_set():
                return False
            if not self._hold.is_set():
                await self._until_released()
                continue
            if self._free_slots > 0 and not self._receipts_full():
                return True
            # One wake-up refills every slot freed meanwhile (PUBACKs come in bursts).
            self._slot_freed.clear()
            await first_of(self._slot_freed.wait(), self.uplink.disconnected_or_reconnected())

    def _sendable(self, seq: int) -> bool:
        book = self._book
        return not (
            seq in self._in_flight
            or seq in self._acked_set
            or (book is not None and book.holds(seq))
        )

    def _batchable(self, record: OutboxRecord) -> bool:
        return record.attempts == 0 and record.seq not in self._solo and record.seq != self._suspect

    def _compressing(self) -> bool:
        """Whether envelopes are compressed now (the platform announced a dictionary the hub
        ships). Batches are built only then: a plain batch saves ~2 % of the bytes (the FHIR
        Bundles are most of them) and costs unsealing, re-encoding and signing per batch on
        the storage thread, while a plain single is the stored envelope, sent as it is
        (measured: a 20,000-reading backlog drained at ~40 readings/s in plain batches of 5
        under a streaming feed, against thousands a second as stored singles)."""
        return self._dictionary is not None and self._dictionary() is not None

    async def _choose(self, lanes: Sequence[_LaneState]) -> tuple[_LaneState, Unit] | None:
        """The lane and unit to send next (fresh first; backfill while the budget allows),
        reading the outbox as needed; None when there is nothing to send now."""
        for lane in lanes:
            if lane.lane is Lane.BACKFILL and not self._backfill_allowed(None):
                continue
            batching = self._compressing()
            while True:
                lane.drop_unsendable(self._sendable)
                candidates = [
                    Candidate(r.seq, batching and self._batchable(r))
                    for r in itertools.islice(lane.waiting, self._batch_max + 1)
                ]
                unit = next_unit(
                    candidates, more_to_read=not lane.exhausted, batch_max=self._batch_max
                )
                if unit is None:
                    break
                if unit.kind is not UnitKind.READ_MORE:
                    return lane, unit
                if not await self._fill(lane):
                    return None  # the disk failed (logged, waited)
        return None

    async def _fill(self, lane: _LaneState) -> bool:
        """Read the lane's next records; False on a storage error."""
        if lane.among is not None:
            records = await self._read_among(lane.among)
            if records is None:
                return False
            lane.add_all(records)
            # What is no longer pending was delivered: forgotten.
            for seq in set(lane.among) - {r.seq for r in records}:
                self._urgent.pop(seq, None)
            return True
        if lane.prefetch is not None:
            records, lane.prefetch = await lane.prefetch, None
        else:
            records = await self._read(lane.cursor)
        if records is None:
            return False
        lane.add(records)
        if len(records) == READ_BATCH and not lane.exhausted:
            # Read the next batch while this one is sent: the read must not wait behind a
            # delete's fsync on the storage thread with the window empty.
            lane.prefetch = asyncio.ensure_future(self._read(lane.cursor))
        return True

    async def _build(self, lane: _LaneState, unit: Unit) -> _Outgoing | None:
        """The envelope of ``unit``: the stored bytes of a single when nothing is compressed,
        else built on the storage thread (compressing and signing are not the loop's)."""
        dictionary = self._dictionary() if self._dictionary is not None else None
        records = list(itertools.islice(lane.waiting, len(unit.seqs)))
        if unit.kind is UnitKind.SINGLE and dictionary is None:
            record = records[0]
            digest = envelope_digest(record.body) if self._book is not None else None
            return _Outgoing((record.seq,), record.body, digest)
        signer = self._signer
        assert signer is not None  # batches and dictionaries only with a signer
        built = await self.storage.call_low(
            _build_envelope,
            records,
            signer,
            dictionary,
            self._batch_bytes,
            batch=unit.kind is UnitKind.BATCH,
            known_device_sets=self.known_device_sets,
        )
        if built.not_readings:
            self._solo.add(built.not_readings)
        return built

    async def _hand_off(self, out: _Outgoing, tg: asyncio.TaskGroup) -> bool:
        """Give one envelope to the uplink; False when the connection ended meanwhile (the
        suspect, sent alone, is waited for)."""
        self._free_slots -= 1
        self._in_flight.update(out.seqs)
        self._idle.clear()
        digest = None
        if self._book is not None:
            digest = out.digest if out.digest is not None else envelope_digest(out.data)
            self._book.sent(digest, out.seqs)
            if out.carried or out.referenced:
                self._note_devices(digest, _DeviceNote(out.carried, out.referenced))
        self._budget.charge(len(out.data), self._wall_clock())
        stats = self.stats
        stats.envelopes += 1
        stats.bytes_sent += len(out.data)
        stats.batches += len(out.seqs) > 1 or out.batch
        stats.compressed += out.compressed
        # No task, no future per envelope: the PUBACK calls back (the hot path).
        self.uplink.publish_then(out.data, functools.partial(self._published, out.seqs, tg, digest))
        if self._suspect is not None and self._suspect in out.seqs:
            # Alone in flight until it settles (module docstring, step 5).
            self._suspect_settled.clear()
            await first_of(self._suspect_settled.wait(), self.uplink.disconnected_or_reconnected())
            if not self.uplink.connected.is_set():
                return False
        return True

    # -- the byte budget --------------------------------------------------------------------

    def note_link_bytes(self, delta_bytes: int) -> None:
        """The cellular module carried ``delta_bytes`` more (its data counters): the day's
        budget counts the larger of its estimate and the module's count (agent/budget.py)."""
        self._budget.note_link_bytes(delta_bytes, self._wall_clock())

    def budget_state(self) -> BudgetState:
        """The daily byte budget now, for the status message (agent/budget.py)."""
        return self._budget.state(self._wall_clock())

    def _backfill_allowed(self, payload_bytes: int | None) -> bool:
        """Whether backfill may send (an envelope of ``payload_bytes``); logs the pause and
        the resumption."""
        budget = self._budget
        if not budget.enabled:
            return True
        wall = self._wall_clock()
        was_paused = budget.paused
        allowed = budget.allows(payload_bytes, wall)
        if allowed and was_paused:
            log.info("budget_resumed", limit_bytes=budget.limit_bytes)
        elif not allowed and not was_paused:
            state = budget.state(wall)
            log.warning(
                "budget_paused",
                used_bytes=state.used_bytes,
                limit_bytes=state.limit_bytes,
                resume_in_s=round(budget.seconds_to_next_day(wall)),
            )
        return allowed

    def _budget_save_due(self) -> bool:
        if not self._budget.enabled:
            return False
        saved = self._budget_saved_at
        return saved is None or asyncio.get_running_loop().time() - saved >= PERSIST_EVERY_S

    async def _load_budget(self) -> None:
        if not self._budget.enabled:
            return
        try:
            data = await self.storage.call_low(
                self.outbox.get_sync_state, BUDGET_STATE_DEVICE, BUDGET_STATE_KEY
            )
        except (StorageError, IntegrityError) as exc:
            log.error("budget_state_unreadable", error=type(exc).__name__)
            return
        self._budget = ByteBudget.from_bytes(self._budget.limit_bytes, data)
        self._budget_saved_at = asyncio.get_running_loop().time()

    async def _save_budget(self) -> None:
        """Write the budget's state (at most every PERSIST_EVERY_S while sending, when
        backfill pauses, at stop); a failure is logged and tried again later."""
        if not self._budget.enabled:
            return
        self._budget_saved_at = asyncio.get_running_loop().time()
        try:
            await self.storage.call_low(
                self.outbox.set_sync_state,
                BUDGET_STATE_DEVICE,
                BUDGET_STATE_KEY,
                self._budget.to_bytes(),
            )
        except StorageError as exc:
            self._storage_failed(exc)

    async def _judge_suspect(self) -> None:
        """At a new connection: who was in flight when the last one ended (step 5). When the
        oldest envelope in flight was a batch, it is split: its readings go singly, the
        oldest of them the suspect (agent/batching.py, "Poison in a batch")."""
        interrupted, self._interrupted = self._interrupted, []
        seqs = {seq for envelope in interrupted for seq in envelope}
        suspect = self._suspect
        if suspect is None:
            if seqs:
                oldest = min(seqs)
                envelope = next(e for e in interrupted if oldest in e)
                if len(envelope) > 1:
                    self._split(envelope, "connection_lost")
                self._suspect, self._suspect_losses = oldest, 1
            return
        if suspect not in seqs:
            return  # not sent on the lost connection: still suspect, no new evidence
        self._suspect_losses += 1
        if self._suspect_losses < MAX_CONNECTION_LOSSES:
            log.warning("measurement_suspect", seq=suspect, losses=self._suspect_losses)
            return
        self._suspect = None
        await self._refuse(suspect, None, "connection_lost_repeatedly")

    def _split(self, seqs: Sequence[int], why: str) -> None:
        """A batch is never blamed: its readings go singly from now on (agent/batching.py)."""
        self._solo.add(seqs)
        self.stats.batches_split += 1
        log.warning("batch_split", count=len(seqs), first_seq=min(seqs), why=why)

    async def _until_released(self) -> None:
        """While every publish is refused: wait for the retry, a disconnect or a stop."""
        await first_of(
            self._hold.wait(),
            self.uplink.disconnected_or_reconnected(),
            self._wake_on_stop(),
        )

    async def _wake_on_stop(self) -> None:
        while not self.stopping:
            self._wake.clear()
            await self._wake.wait()

    async def _read_among(self, seqs: Sequence[int]) -> list[OutboxRecord] | None:
        try:
            return await self.storage.call_low(self.outbox.pending_in, seqs)
        except StorageError as exc:
            self._storage_failed(exc)
            await asyncio.sleep(STORAGE_RETRY_S)
            return None

    async def _read(self, cursor: int) -> list[OutboxRecord] | None:
        try:
            return await self.storage.call_low(self.outbox.pending_after, cursor, READ_BATCH)
        except StorageError as exc:
            self._storage_failed(exc)
            await asyncio.sleep(STORAGE_RETRY_S)
            return None

    async def _wait_for_work(self) -> None:
        """Until something is stored, the connection drops, a retry is due, or a stop; and
        while backfill waits for the budget, until the next UTC day."""
        if self.stopping:
            return
        waits = [self._wake.wait(), self.uplink.disconnected_or_reconnected()]
        if self._budget.paused:
            delay = min(self._budget.seconds_to_next_day(self._wall_clock()), BUDGET_RECHECK_MAX_S)
            waits.append(asyncio.sleep(max(delay, 0.0)))  # a deadline timer, not a sync
        await first_of(*waits)

    # -- one record -----------------------------------------------------------------------

    def _published(
        self,
        seqs: tuple[int, ...],
        tg: asyncio.TaskGroup,
        digest: bytes | None,
        exc: BaseException | None,
    ) -> None:
        """The PUBACK (or the failure) of the envelope holding ``seqs`` arrived: settle it.
        ``digest``: the envelope's, when receipts delete (else None)."""
        keep = False  # still in flight while its refusal is written down
        try:
            if self._suspect is not None and self._suspect in seqs:
                self._suspect_settled.set()
                if exc is None:
                    self._suspect = None  # its PUBACK came: it was not the record's fault
            if digest is not None and self._book is not None:
                if exc is None:
                    # The broker has it; the platform's receipt is due within the timeout.
                    self._book.acked(digest, asyncio.get_running_loop().time())
                else:
                    self._book.failed(digest)
                self._book_changed_now()
            if exc is None:
                self.stats.published += len(seqs)
                self._acked_on_connection += 1
                self._systemic_attempts = 0
                if digest is None:
                    self._acked.extend(seqs)
                    self._acked_set.update(seqs)
                    self._ack_ready.set()
            elif isinstance(exc, PublishRefusedError):
                if len(seqs) > 1:
                    # Any of its readings may be the cause: they go singly (and a systemic
                    # refusal still pauses below).
                    self._split(seqs, "refused")
                    self._rescan = True
                    self._wake.set()
                if self._acked_on_connection == 0:
                    self._refused_systemically(seqs[0], exc)
                elif len(seqs) == 1 and not self._settled:
                    keep = True
                    (seq,) = seqs
                    task = tg.create_task(
                        self._record_refusal(seq, exc), name=f"hub.refused[{seq}]"
                    )
                    self._tasks.add(task)
                    task.add_done_callback(self._tasks.discard)
            elif isinstance(exc, PublishNotQueuedError):
                # The client's queue was full on a live connection: nothing was sent and
                # nobody is to blame; the records are read again at once (a slot is free).
                self.stats.not_queued += len(seqs)
                self._rescan = True
                self._wake.set()
            else:
                # The connection ended first (an UplinkError), or a bug in the bridge ended it
                # (the uplink logged its traceback): still pending, sent again later.
                self.stats.interrupted += len(seqs)
                self._interrupted.append(seqs)
        finally:
            self._free_slots += 1
            self._slot_freed.set()
            if not keep:
                self._done_with(seqs)

    def _done_with(self, seqs: Sequence[int]) -> None:
        self._in_flight.difference_update(seqs)
        if not self._in_flight:
            self._idle.set()

    async def _record_refusal(self, seq: int, exc: PublishRefusedError) -> None:
        try:
            if isinstance(exc, PublishRejectedError):
                await self._refuse(seq, exc.rc, "rejected")
            else:
                await self._refused_transiently(seq, exc)
        finally:
            self._done_with((seq,))

    async def _refuse(self, seq: int, rc: int | None, why: str, reason: str | None = None) -> None:
        """Mark ``seq`` refused; ``reason``: the platform's code from a receipt."""
        try:
            changed = await self.storage.call_low(self.outbox.mark_refused, seq, rc)
        except StorageError as exc:
            self._storage_failed(exc)  # stays pending: refused again next time
            return
        self._solo.discard((seq,))
        if changed:
            self.stats.refused += 1
            log.error("measurement_refused", seq=seq, rc=rc, why=why, reason=reason)

    async def _refused_transiently(self, seq: int, exc: PublishRefusedError) -> None:
        self.stats.transient_refusals += 1
        try:
            attempts = await self.storage.call_low(self.outbox.note_attempt, seq)
        except StorageError as error:
            self._storage_failed(error)
            attempts = 0
        if attempts >= self._max_transient_refusals:
            await self._refuse(seq, exc.rc, "refused_repeatedly")
            return
        log.warning("measurement_publish_refused", seq=seq, rc=exc.rc, attempts=attempts)
        self._retry_after(self._refusal_retry_s)

    def _refused_systemically(self, seq: int, exc: PublishRefusedError) -> None:
        """Refused with nothing accepted on this connection: pause, mark nothing."""
        self.stats.transient_refusals += 1
        if not self._hold.is_set():
            return  # already paused: one log line and one timer per pause
        self._hold.clear()
        delay = self._systemic.delay(self._systemic_attempts, self._rng)
        self._systemic_attempts += 1
        log.error("publish_refused_systemic", seq=seq, rc=exc.rc, retry_in_s=round(delay, 3))
        self._retry_after(delay)

    def _retry_after(self, delay_s: float) -> None:
        if self._retry_handle is None or self._retry_handle.cancelled():
            self._retry_handle = asyncio.get_running_loop().call_later(delay_s, self._retry_refused)

    def _retry_refused(self) -> None:
        self._retry_handle = None
        self._rescan = True
        self._hold.set()
        self._wake.set()

    # -- acknowledgements -------------------------------------------------------------------

    async def _delete_acknowledged(self) -> None:
        """Delete acknowledged records in batches until stopped and nothing is left."""
        while True:
            await self._ack_ready.wait()
            self._ack_ready.clear()
            if len(self._acked) < ACK_BATCH_MIN and not self.stopping:
                # Let a burst of PUBACKs gather: one delete (one fsync) for many, and the
                # storage thread free for ingest and reads in between.
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(ACK_LINGER_S):
                        await self._stop_requested.wait()
            while self._acked:
                batch = self._acked[:MAX_BATCH]
                try:
                    await self.storage.call_low(self.outbox.mark_delivered_many, batch)
                except StorageError as exc:
                    # Still pending on disk and excluded from publishing here: deleted on
                    # the next try, or sent again (same bytes) after a restart.
                    self._storage_failed(exc)
                    if self._settled:
                        return  # stopping: left pending, re-sent after the next start
                    with contextlib.suppress(TimeoutError):
                        async with asyncio.timeout(STORAGE_RETRY_S):
                            await self._stop_requested.wait()  # a stop cuts the pause short
                    continue
                del self._acked[: len(batch)]
                self._acked_set.difference_update(batch)
                self._solo.discard(batch)
                self.stats.delivered += len(batch)
                log.info(
                    "measurements_delivered",
                    count=len(batch),
                    first_seq=batch[0],
                    last_seq=batch[-1],
                )
                if self._on_delivered is not None:
                    self._on_delivered(batch)
            if self._settled or (
                self.stopping and self._idle.is_set() and not (self._book and len(self._book))
            ):
                return

    # -- receipts (ack = "receipt") ------------------------------------------------------

    def _receipts_full(self) -> bool:
        """Whether as many envelopes await a receipt as the receipt window allows."""
        book = self._book
        return book is not None and (book.full or len(book) >= self._receipt_window.size)

    def _book_changed_now(self) -> None:
        """The receipt book changed: wake a send waiting for the window, and the stop."""
        self._slot_freed.set()
        event, self._book_changed = self._book_changed, asyncio.Event()
        event.set()

    async def _until_receipted(self) -> None:
        """Until no envelope awaits a receipt (wrap in a timeout)."""
        while self._book is not None and len(self._book):
            await self._book_changed.wait()

    async def _expire_receipts(self, book: ReceiptBook) -> None:
        """Release envelopes whose receipt is overdue, at their deadline: sent again."""
        loop = asyncio.get_running_loop()
        while True:
            deadline = book.next_deadline()
            if deadline is None:
                await self._book_changed.wait()
                continue
            delay = deadline - loop.time()
            if delay > 0:
                await asyncio.sleep(delay)  # a deadline timer, not a synchronisation
                continue
            seqs = book.expire(loop.time())
            if not seqs:
                continue
            self.stats.receipt_timeouts += len(seqs)
            self._receipt_window.timed_out()
            log.warning(
                "receipt_timeout",
                count=len(seqs),
                first_seq=min(seqs),
                timeout_s=book.timeout_s,
                window=self._receipt_window.size,
            )
            self._rescan = True
            self._wake.set()
            self._book_changed_now()

    async def _on_receipt(self, message: InboundMessage) -> None:
        """A message on the receipts topic (the uplink's dispatcher, one at a time)."""
        book, key = self._book, self._platform_key
        if book is None or key is None or self._settled:
            return
        try:
            receipt = Receipt.from_bytes(message.payload, key)
            unknown = book.unknown_seqs(receipt)
            pending: frozenset[int] = frozenset()
            if unknown:
                try:
                    pending = await self.storage.call_low(self.outbox.pending_among, unknown)
                except StorageError as exc:
                    self._storage_failed(exc)  # undecidable now; what it names is sent again
                    return
            settlement = book.settle(receipt, self._wall_clock(), pending)
        except ReceiptRejectedError as exc:
            self._receipt_rejected(exc)
            return
        if settlement.repeated:
            # The same bytes again (QoS 1 is at least once): taken already, nothing to do.
            self.stats.receipts_repeated += 1
            log.info("receipt_repeated")
            return
        await self._take_receipt(settlement)

    def _receipt_rejected(self, exc: ReceiptRejectedError) -> None:
        self.stats.receipts_rejected += 1
        log.warning("receipt_rejected", reason=exc.reason.value, detail=exc.detail)
        report_security(SecurityEvent("receipt", exc.reason.value, exc.detail), self._on_security)

    async def _take_receipt(self, settlement: Settlement) -> None:
        settlement = await self._take_device_sets(settlement)
        self.stats.receipts_accepted += 1
        taken = settlement.count(ItemFate.HELD) + settlement.count(ItemFate.REFUSED)
        self._receipt_window.receipted(taken)
        for item, fate in settlement.fates:
            if fate is ItemFate.STALE:
                self.stats.receipt_items_stale += 1
                log.info("receipt_item_stale", seqs=len(item.seqs), first_seq=min(item.seqs))
            elif fate is ItemFate.DUPLICATE:
                self.stats.receipt_items_duplicate += 1
                log.info("receipt_item_duplicate", seqs=len(item.seqs), first_seq=min(item.seqs))
        for seq in settlement.held:
            if seq not in self._acked_set:
                self._acked.append(seq)
                self._acked_set.add(seq)
        if settlement.held:
            self._ack_ready.set()
        log.debug(
            "receipt_accepted",
            held=len(settlement.held),
            refused=len(settlement.refused),
            window=self._receipt_window.size,
        )
        self._book_changed_now()
        for item, fate in settlement.fates:
            if fate is not ItemFate.REFUSED:
                continue
            if len(item.seqs) > 1:
                # A refused batch blames none of its readings: they go singly, and the
                # platform's answer to each tells the poison (agent/batching.py).
                self._split(item.seqs, "platform_refused")
                self._rescan = True
                self._wake.set()
                continue
            for seq in item.seqs:
                await self._refuse(seq, None, "platform_refused", item.reason)

    # -- device sets (docs/platform-protocol.md "Devices by reference") --------------------

    def _note_devices(self, digest: bytes, note: _DeviceNote) -> None:
        self._device_notes[digest] = note
        self._device_notes.move_to_end(digest)
        while len(self._device_notes) > DEVICE_NOTES_MAX:
            self._device_notes.popitem(last=False)

    async def _take_device_sets(self, settlement: Settlement) -> Settlement:
        """The device-set side of an accepted receipt: sets carried in full by a held envelope
        are confirmed; an envelope refused ``unknown_device`` that named a set by reference is
        taken out of the settlement (not refused): every set is forgotten and its readings
        go again, with their Devices in full. The settlement left to take as usual."""
        sets = self._device_sets
        if sets is None:
            return settlement
        confirmed: set[bytes] = set()
        resend: list[int] = []
        fates: list[tuple[ReceiptItem, ItemFate]] = []
        for item, fate in settlement.fates:
            note = (
                self._device_notes.pop(item.digest, None)
                if fate in (ItemFate.HELD, ItemFate.REFUSED)
                else None
            )
            if fate is ItemFate.HELD and note is not None:
                confirmed.update(note.carried)
            if (
                fate is ItemFate.REFUSED
                and item.reason == UNKNOWN_DEVICE_REASON
                and note is not None
                and note.referenced
            ):
                resend.extend(item.seqs)
                continue
            fates.append((item, fate))
        changed = False
        if resend:
            if sets.forget():
                changed = True
                self.stats.device_sets_forgotten += 1
            self.stats.resent_in_full += len(resend)
            log.warning("device_sets_forgotten", readings=len(resend), first_seq=min(resend))
            self._rescan = True
            self._wake.set()
        # Sets held in this very receipt were stored after whatever the platform lost.
        if sets.confirm(confirmed):
            changed = True
            self.stats.device_sets_confirmed += len(confirmed)
            log.info("device_sets_confirmed", known=len(sets))
        if changed:
            await self._save_device_sets()
        if not resend:
            return settlement
        taken = frozenset(resend)
        return Settlement(
            settlement.rid,
            settlement.held,
            tuple(r for r in settlement.refused if r[0] not in taken),
            tuple(fates),
            settlement.repeated,
        )

    async def _load_device_sets(self) -> None:
        sets = self._device_sets
        if sets is None:
            return
        try:
            data = await self.storage.call_low(
                self.outbox.get_sync_state, BUDGET_STATE_DEVICE, DEVICE_SETS_STATE_KEY
            )
            if data is not None:
                self._device_sets = ConfirmedDeviceSets.from_bytes(data, sets.platform_kid)
        except (StorageError, IntegrityError) as exc:
            # Start as if the platform held none: Devices in full until receipts confirm them.
            log.error("device_sets_unreadable", error=type(exc).__name__)

    async def _save_device_sets(self) -> None:
        """Write the confirmed device sets (each time they change: rarely); a failure is
        logged, the sets kept in memory (written with the next change)."""
        sets = self._device_sets
        if sets is None:
            return
        try:
            await self.storage.call_low(
                self.outbox.set_sync_state,
                BUDGET_STATE_DEVICE,
                DEVICE_SETS_STATE_KEY,
                sets.to_bytes(),
            )
        except StorageError as exc:
            self._storage_failed(exc)

    def _storage_failed(self, exc: StorageError) -> None:
        log.error(
            "outbox_unavailable",
            error=type(exc).__name__,
            operation=exc.operation,
            reason=exc.reason,
            retry_in_s=STORAGE_RETRY_S,
        )


@dataclass(frozen=True, slots=True)
class _DeviceNote:
    """What one envelope did with device sets (agent/device_refs.py)."""

    carried: frozenset[bytes]
    """Sets it carried in full: held, the platform holds them."""
    referenced: frozenset[bytes]
    """Sets it named by reference: refused ``unknown_device``, it goes again in full."""


@dataclass(slots=True)
class _Outgoing:
    """One envelope to hand to the uplink."""

    seqs: tuple[int, ...]
    data: bytes = field(repr=False)
    digest: bytes | None
    """Its receipt digest when already known (a built envelope), else computed when needed."""
    batch: bool = False
    compressed: bool = False
    not_readings: tuple[int, ...] = ()
    """Records met while building that are not plain readings: they go singly, as stored."""
    carried: frozenset[bytes] = frozenset()
    """Device sets its version-3 readings carried in full."""
    referenced: frozenset[bytes] = frozenset()
    """Device sets its version-3 readings named by reference."""


class _LaneState:
    """A lane's place in the outbox on this connection: what was read and not yet sent."""

    def __init__(self, lane: Lane, after: int, below: int | None) -> None:
        self.lane = lane
        self.start = after
        self.below = below
        """Seqs from here on belong to another lane (backfill ends where fresh begins)."""
        self.cursor = after
        self.waiting: deque[OutboxRecord] = deque()
        self.exhausted = False
        self.prefetch: asyncio.Future[list[OutboxRecord] | None] | None = None
        self.among: tuple[int, ...] | None = None
        """The urgent lane's seqs (read by seq, all at once); None: read by cursor."""

    def reset(self) -> None:
        """Read again from the start (a rescan), dropping what was read."""
        self.cursor = self.start
        self.waiting.clear()
        self.exhausted = False
        self._cancel_prefetch()

    def more(self) -> None:
        """Records were added past the cursor: the lane is not exhausted any more."""
        self.exhausted = False

    def add(self, records: Sequence[OutboxRecord]) -> None:
        if records:
            self.cursor = records[-1].seq
        if len(records) < READ_BATCH:
            self.exhausted = True
        for record in records:
            if self.below is not None and record.seq >= self.below:
                self.exhausted = True
                self._cancel_prefetch()
                break
            self.waiting.append(record)

    def add_all(self, records: Sequence[OutboxRecord]) -> None:
        """Everything the lane holds, read at once (the urgent lane)."""
        self.waiting.extend(records)
        self.exhausted = True

    def drop_unsendable(self, sendable: Callable[[int], bool]) -> None:
        if any(not sendable(r.seq) for r in self.waiting):
            kept = [r for r in self.waiting if sendable(r.seq)]
            self.waiting.clear()
            self.waiting.extend(kept)

    def taken(self, count: int) -> None:
        for _ in range(count):
            self.waiting.popleft()

    def _cancel_prefetch(self) -> None:
        if self.prefetch is not None:
            self.prefetch.cancel()
            self.prefetch = None


def _build_envelope(
    records: Sequence[OutboxRecord],
    signer: EnvelopeSigner,
    dictionary: Dictionary | None,
    max_bytes: int,
    *,
    batch: bool,
    known_device_sets: frozenset[bytes] = frozenset(),
) -> _Outgoing:
    """On the storage thread: the envelope for the first of ``records`` (a single,
    compressed with ``dictionary``) or for as many of them as fit one batch. A record that is
    not a plain reading envelope ends the batch there; first, it goes alone as stored."""
    payloads: list[ReadingPayload] = []
    not_readings: tuple[int, ...] = ()
    for record in records if batch else records[:1]:
        try:
            payloads.append(ReadingPayload.from_stored(record.seq, record.body))
        except IntegrityError:
            not_readings = (record.seq,)
            break
    first = records[0]
    if not payloads:
        return _Outgoing((first.seq,), first.body, None, not_readings=not_readings)
    try:
        if batch and len(payloads) > 1:
            envelope = build_batch(
                payloads, signer, dictionary, max_bytes, known_device_sets=known_device_sets
            )
        else:
            envelope = build_single(
                payloads[0], signer, dictionary, known_device_sets=known_device_sets
            )
    except RecordTooLargeError:
        # Larger than a batch may be even alone: as stored, alone (and refused by the
        # broker if it is too large for it too: the per-record rules apply).
        return _Outgoing((first.seq,), first.body, None, not_readings=(first.seq,))
    if envelope.compressed and len(envelope.data) >= len(first.body) and len(envelope.seqs) == 1:
        return _Outgoing((first.seq,), first.body, digest_of(first.body))
    return _Outgoing(
        envelope.seqs,
        envelope.data,
        envelope.digest,
        batch=len(envelope.seqs) > 1,
        compressed=envelope.compressed,
        not_readings=not_readings,
        carried=envelope.device_sets_carried,
        referenced=envelope.device_sets_referenced,
    )


__all__ = [
    "MAX_CONNECTION_LOSSES",
    "MAX_TRANSIENT_REFUSALS",
    "PUBLISH_WINDOW",
    "REFUSAL_RETRY_S",
    "STOP_DRAIN_S",
    "SYSTEMIC_REFUSAL_CAP_S",
    "Publisher",
    "PublisherStats",
]
