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
7. :meth:`Publisher.stop`: no new publishes; the ones in flight get up to
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
import random
import time
from collections.abc import Callable, Coroutine, Sequence
from dataclasses import dataclass
from typing import Any, Final

import structlog
from cryptography.hazmat.primitives.asymmetric import ec

from agent.errors import (
    PublishRefusedError,
    PublishRejectedError,
    ReceiptRejectedError,
    StorageError,
)
from agent.outbox import MAX_BATCH, Outbox, OutboxRecord
from agent.profiles import AckMode, MessageKind
from agent.receipts import (
    AWAITING_MAX,
    RECEIPT_TIMEOUT_S,
    ItemFate,
    Receipt,
    ReceiptBook,
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

STORAGE_RETRY_S: Final = 5.0
"""Pause before the disk is tried again after a storage error (full or failing)."""


@dataclass(slots=True)
class PublisherStats:
    """Counters since start."""

    published: int = 0
    delivered: int = 0
    refused: int = 0
    transient_refusals: int = 0
    interrupted: int = 0
    receipts_accepted: int = 0
    receipts_rejected: int = 0
    """Receipts refused, each a ``security`` event."""
    receipts_repeated: int = 0
    """Exact copies of an accepted receipt (at-least-once delivery): nothing done, no alarm."""
    receipt_timeouts: int = 0
    """Envelopes whose receipt did not come within the receipt timeout (sent again)."""
    receipt_items_stale: int = 0
    receipt_items_duplicate: int = 0


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
        wall_clock: the hub's Unix time, for a receipt's ``iat``/``exp`` (tests set it).
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
    ) -> None:
        if not 1 <= window <= MAX_BATCH:
            raise ValueError(f"window must be 1..{MAX_BATCH}")
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
        self._interrupted: list[int] = []
        """Seqs whose publish the end of the current connection interrupted."""
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
        if ack is AckMode.RECEIPT:
            if platform_key is None:
                raise ValueError("ack 'receipt' needs the platform key")
            self._book = ReceiptBook(uplink.settings.hub_id, timeout_s=receipt_timeout_s)
            uplink.on_message(MessageKind.RECEIPTS, self._on_receipt)

    # -- public -------------------------------------------------------------------------

    def wake(self) -> None:
        """New records were stored: look again."""
        self._wake.set()

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

    async def run(self) -> None:
        """Publish until :meth:`stop`; then drain for up to :data:`STOP_DRAIN_S` and return."""
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
                await _first_of(self._idle.wait(), self._wake.wait())
            else:
                await _first_of(self.uplink.connected.wait(), self._wake.wait())

    async def _serve(self, tg: asyncio.TaskGroup) -> None:
        """Keep the window full while this connection lasts."""
        cursor = 0
        self._acked_on_connection = 0
        if self._book is not None:
            released = self._book.release_all()
            if released:
                # Unreceipted at the end of the last connection: sent again (a receipt that
                # still comes for the old copy deletes them all the same).
                log.info("receipt_released", count=len(released), first_seq=min(released))
                self._book_changed_now()
        await self._judge_suspect()
        prefetch: asyncio.Task[list[OutboxRecord] | None] | None = None
        try:
            while self.uplink.connected.is_set() and not self.stopping:
                if self._rescan:
                    self._rescan, cursor = False, 0
                    if prefetch is not None:
                        prefetch.cancel()
                        prefetch = None
                self._wake.clear()
                if prefetch is not None:
                    records, prefetch = await prefetch, None
                else:
                    records = await self._read(cursor)
                if records is None:
                    continue
                if not records:
                    await self._wait_for_work()
                    continue
                cursor = records[-1].seq
                if len(records) == READ_BATCH:
                    # Read the next batch while this one is sent: the read must not wait
                    # behind a delete's fsync on the storage thread with the window empty.
                    prefetch = asyncio.ensure_future(self._read(cursor))
                if not await self._send(records, tg):
                    return
        finally:
            if prefetch is not None:
                prefetch.cancel()

    async def _send(self, records: list[OutboxRecord], tg: asyncio.TaskGroup) -> bool:
        """Hand ``records`` to the uplink as window slots free; False when the connection
        ended or the publisher stops."""
        book = self._book
        for record in records:
            if record.seq in self._in_flight or record.seq in self._acked_set:
                continue
            if book is not None and book.holds(record.seq):
                continue  # awaiting its receipt
            if not self._hold.is_set():
                await self._until_released()
                if self.stopping or not self.uplink.connected.is_set():
                    return False
            while self._free_slots == 0 or self._receipts_full():
                # One wake-up refills every slot freed meanwhile (PUBACKs come in bursts).
                self._slot_freed.clear()
                await _first_of(self._slot_freed.wait(), self.uplink.disconnected_or_reconnected())
                if self.stopping or not self.uplink.connected.is_set():
                    return False
            if self.stopping or not self.uplink.connected.is_set():
                return False
            if book is not None and book.holds(record.seq):
                continue  # sent again by a wake-up meanwhile, awaiting its receipt
            self._free_slots -= 1
            self._in_flight.add(record.seq)
            self._idle.clear()
            digest = None
            if book is not None:
                digest = envelope_digest(record.body)
                book.sent(digest, (record.seq,))
            # No task, no future per record: the PUBACK calls back (the hot path).
            self.uplink.publish_then(
                record.body, functools.partial(self._published, record.seq, tg, digest)
            )
            if record.seq == self._suspect:
                # Alone in flight until it settles (module docstring, step 5).
                self._suspect_settled.clear()
                await _first_of(
                    self._suspect_settled.wait(), self.uplink.disconnected_or_reconnected()
                )
                if not self.uplink.connected.is_set():
                    return False
        return True

    async def _judge_suspect(self) -> None:
        """At a new connection: who was in flight when the last one ended (step 5)."""
        interrupted, self._interrupted = self._interrupted, []
        suspect = self._suspect
        if suspect is None:
            if interrupted:
                self._suspect, self._suspect_losses = min(interrupted), 1
            return
        if suspect not in interrupted:
            return  # not sent on the lost connection: still suspect, no new evidence
        self._suspect_losses += 1
        if self._suspect_losses < MAX_CONNECTION_LOSSES:
            log.warning("measurement_suspect", seq=suspect, losses=self._suspect_losses)
            return
        self._suspect = None
        await self._refuse(suspect, None, "connection_lost_repeatedly")

    async def _until_released(self) -> None:
        """While every publish is refused: wait for the retry, a disconnect or a stop."""
        await _first_of(
            self._hold.wait(),
            self.uplink.disconnected_or_reconnected(),
            self._wake_on_stop(),
        )

    async def _wake_on_stop(self) -> None:
        while not self.stopping:
            self._wake.clear()
            await self._wake.wait()

    async def _read(self, cursor: int) -> list[OutboxRecord] | None:
        try:
            return await self.storage.call_low(self.outbox.pending_after, cursor, READ_BATCH)
        except StorageError as exc:
            self._storage_failed(exc)
            await asyncio.sleep(STORAGE_RETRY_S)
            return None

    async def _wait_for_work(self) -> None:
        """Until something is stored, the connection drops, a retry is due, or a stop."""
        if self.stopping:
            return
        await _first_of(self._wake.wait(), self.uplink.disconnected_or_reconnected())

    # -- one record -----------------------------------------------------------------------

    def _published(
        self, seq: int, tg: asyncio.TaskGroup, digest: bytes | None, exc: BaseException | None
    ) -> None:
        """The PUBACK (or the failure) of record ``seq`` arrived: settle it. ``digest``: its
        envelope's, when receipts delete (else None)."""
        keep = False  # still in flight while its refusal is written down
        try:
            if seq == self._suspect:
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
                self.stats.published += 1
                self._acked_on_connection += 1
                self._systemic_attempts = 0
                if digest is None:
                    self._acked.append(seq)
                    self._acked_set.add(seq)
                    self._ack_ready.set()
            elif isinstance(exc, PublishRefusedError):
                if self._acked_on_connection == 0:
                    self._refused_systemically(seq, exc)
                elif not self._settled:
                    keep = True
                    task = tg.create_task(
                        self._record_refusal(seq, exc), name=f"hub.refused[{seq}]"
                    )
                    self._tasks.add(task)
                    task.add_done_callback(self._tasks.discard)
            else:
                # The connection ended first (an UplinkError), or a bug in the bridge ended it
                # (the uplink logged its traceback): still pending, sent again later.
                self.stats.interrupted += 1
                self._interrupted.append(seq)
        finally:
            self._free_slots += 1
            self._slot_freed.set()
            if not keep:
                self._done_with(seq)

    def _done_with(self, seq: int) -> None:
        self._in_flight.discard(seq)
        if not self._in_flight:
            self._idle.set()

    async def _record_refusal(self, seq: int, exc: PublishRefusedError) -> None:
        try:
            if isinstance(exc, PublishRejectedError):
                await self._refuse(seq, exc.rc, "rejected")
            else:
                await self._refused_transiently(seq, exc)
        finally:
            self._done_with(seq)

    async def _refuse(self, seq: int, rc: int | None, why: str, reason: str | None = None) -> None:
        """Mark ``seq`` refused; ``reason``: the platform's code from a receipt."""
        try:
            changed = await self.storage.call_low(self.outbox.mark_refused, seq, rc)
        except StorageError as exc:
            self._storage_failed(exc)  # stays pending: refused again next time
            return
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
        for seq, reason in settlement.refused:
            await self._refuse(seq, None, "platform_refused", reason)

    def _storage_failed(self, exc: StorageError) -> None:
        log.error(
            "outbox_unavailable",
            error=type(exc).__name__,
            operation=exc.operation,
            reason=exc.reason,
            retry_in_s=STORAGE_RETRY_S,
        )


async def _first_of(*waits: Coroutine[Any, Any, Any]) -> None:
    """Return when the first of ``waits`` completes; the others are cancelled."""
    futures = [asyncio.ensure_future(w) for w in waits]
    try:
        await asyncio.wait(futures, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for f in futures:
            f.cancel()


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
