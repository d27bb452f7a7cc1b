"""One collection session with a Glucose Service (GLS 1.0, UUID 0x1808) meter: an incremental sync.

This is the thin bleak adapter around the sans-I/O core :mod:`drivers.gls_sync`, which holds
the record joining, the high-water mark (:class:`SyncMark`), which RACP request comes next
(its theory of operation) and the bounds on what a meter may push. Only bleak's public API is
used (through the sessions' shared core, :mod:`agent.ble.gatt_session`), so the same
procedure runs over BlueZ and over Bumble.

Steps (GLS/GLP collector procedure, ble-spec-facts §4.5)
-------------------------------------------------------
1. **Scan** for the allowlisted address advertising 0x1808; **connect** (optionally pair:
   GLS wants an encrypted link before the RACP is used).
2. **Read** DIS (all optional) and the Glucose Feature 0x2A51 (mandatory), then the meter's
   clock, Current Time 0x2A2B, when it has CTS 0x1805 (:mod:`agent.ble.current_time`).
3. **Subscribe**: notifications on Glucose Measurement 0x2A18 and (when present) Glucose
   Measurement Context 0x2A34, indications on the RACP 0x2A52. A meter answers a report
   request with ATT error 0x81 if the measurement CCCD is not enabled.
4. **Incremental sync** from the committed mark (``sync_state("gls_last_seq")``): the
   requests :meth:`GlsSync.next_procedure` asks for, one procedure at a time: ">= mark+1"
   for a meter numbering its records upwards, "<= mark-1" for one counting down (newer
   records numbered lower; told apart by the probes, :func:`drivers.gls_sync.counts_down`),
   with a second report once the numbers wrapped.
5. Each record, joined with its context by sequence number, is handed on in the meter's
   order as a :class:`RawMeasurement` with ``related={0x2A34: context}`` and
   ``sync_state={"gls_last_seq": mark}``, so the mark commits in the same outbox
   transaction as the reading: it never runs ahead of what is stored.
6. A procedure **ends** with the RACP Response Code indication ``06 00 01 xx``: success or
   "no records found"; anything else is a :class:`~agent.errors.DeviceProtocolError`.

Bounds: the bleak callbacks feed the core, which refuses a value beyond any of its bounds
(:mod:`drivers.gls_sync`); the callback then ends the link at once, the session hands on the
records complete before, and raises :class:`~agent.errors.DeviceFloodError` naming the
buffer. In time, a procedure ends after :data:`RACP_PROCEDURE_TIMEOUT_S` without progress,
and in any case :data:`RACP_PROCEDURE_MAX_S` after its request, however much the meter
sends (both inner to the session deadline; the hub writes Abort ``03 00``). At
``max_records`` the hub writes Abort (from the callback that hit the limit, so a slow
pipeline never delays it) and the session ends normally (``LIMIT``); a meter that streams
on past :data:`~drivers.gls_sync.MAX_RECORDS_AFTER_ABORT` records, or for
:data:`ABORT_OBEYED_S` and more, is a flood.

A **dropped link** raises :class:`~agent.errors.BleLinkLostError` after handing on every
complete record received; a record still waiting for its context is not handed on, and
since the mark stays below it the next session asks for it again.
"""

from __future__ import annotations

import asyncio
import enum
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Final, NoReturn

import structlog
from bleak import BleakClient
from bleak.backends.characteristic import BleakGATTCharacteristic
from bleak.backends.device import BLEDevice
from bleak.backends.service import BleakGATTService
from bleak.exc import BleakError

from agent import wall_clock
from agent.ble.current_time import ClockPolicy, with_device_clock
from agent.ble.gatt_session import (
    CONNECT_TIMEOUT_S,
    SCAN_TIMEOUT_S,
    DisValues,
    GattSession,
    check_session_timeout,
    device_facts,
    session_deadline,
)
from agent.ble.stack import BleStack
from agent.ble.uuids import (
    GLUCOSE_FEATURE,
    GLUCOSE_MEASUREMENT,
    GLUCOSE_MEASUREMENT_CONTEXT,
    GLUCOSE_SERVICE,
    RECORD_ACCESS_CONTROL_POINT,
)
from agent.cancellation import raise_if_cancelled
from agent.errors import BleLinkLostError, ConfigError, DeviceProtocolError
from agent.measurement import OnMeasurement, RawMeasurement
from agent.normalize.device import DeviceFacts
from drivers.gls_sync import (
    LIMIT_REACHED,
    MAX_RECORDS_PER_SESSION,
    GlsSync,
    JoinedRecord,
    Procedure,
    ProcedureFinished,
    Reason,
    RecordJoiner,
    RecordReady,
    SyncDone,
    SyncMark,
    fingerprint,
    read_mark,
)
from drivers.racp import RacpRequest

__all__ = [
    "ABORT_TIMEOUT_S",
    "GLUCOSE_MEASUREMENT",
    "GLUCOSE_MEASUREMENT_CONTEXT",
    "MAX_RECORDS_PER_SESSION",
    "RACP_PROCEDURE_MAX_S",
    "RACP_PROCEDURE_TIMEOUT_S",
    "SYNC_KEY",
    "GlsDeviceInfo",
    "GlsSessionResult",
    "JoinedRecord",
    "RecordJoiner",
    "SessionEnd",
    "SyncMark",
    "collect_glucose",
    "fingerprint",
    "read_mark",
]

log = structlog.get_logger(__name__)


SYNC_KEY: Final = "gls_last_seq"
"""The outbox sync-state key of a glucometer's high-water mark (:class:`SyncMark`)."""

RACP_PROCEDURE_TIMEOUT_S: Final = 30.0
"""Longest wait for the next value of an RACP procedure (a record or the final response):
the ATT transaction timeout (Core Vol 3 Part F §3.3.3) and TI's GLUCOSE_PROCEDURE_TIMEOUT,
both 30 s (ble-spec-facts §4.5). It restarts with every value, so a long transfer is not
cut; :data:`RACP_PROCEDURE_MAX_S` bounds the whole procedure. Inner to the session
deadline."""

RACP_PROCEDURE_MAX_S: Final = 300.0
"""Longest an RACP procedure may last from its request, however much the meter sends: a
stream cannot extend it by resetting the progress timeout. ``MAX_RECORDS_PER_SESSION``
(1 000) records at a slow meter's pace (≤ 4 records/s, TI's sample paces one per 100-250 ms)
take ≤ 250 s; the daemon's session deadline (120 s by default) usually ends it first."""

ABORT_TIMEOUT_S: Final = 5.0
"""Best-effort Abort: one write, and then waiting for its Response Code (``06 00 03 01``),
each inner to the procedure timeout."""

ABORT_OBEYED_S: Final = ABORT_TIMEOUT_S / 2
"""A meter obeys Abort within its round trip (a connection event or two, plus the records
its controller had queued); one still sending records this long after the Abort was
written, when the wait for its answer ends, ignores it: a flood (``records_after_abort``).
The worst healthy case measured, the virtual radio (nothing paces the emulator), had the
queued rest of a 3,000-record report (1,999 records) in before the Abort's write was even
answered."""


@dataclass(frozen=True, slots=True)
class GlsDeviceInfo:
    """Raw values read at connection: DIS strings and System ID, Glucose Feature 0x2A51."""

    glucose_feature: bytes = field(repr=False)
    dis: DisValues = field(default_factory=DisValues, repr=False)


class SessionEnd(enum.Enum):
    """Why a glucose session ended normally."""

    COMPLETE = "complete"  #: the meter reported every record asked for
    LIMIT = "limit"  #: MAX_RECORDS_PER_SESSION reached; the meter keeps the rest
    DEADLINE = "deadline"  #: the session deadline passed during a transfer


@dataclass(frozen=True, slots=True)
class GlsSessionResult:
    """What a session did (``facts`` holds the full address: not in the repr)."""

    device: str
    measurements: int
    ended_by: SessionEnd
    resynced: bool
    info: GlsDeviceInfo
    facts: DeviceFacts = field(repr=False)


class _Deadline(Exception):
    """The session deadline passed during a procedure."""


class _Limit(Exception):
    """``max_records`` records were handed on."""


class _GlsSession(GattSession):
    """The state of one session; :func:`collect_glucose` is its public face."""

    service_uuid = GLUCOSE_SERVICE
    service_name = "Glucose Service"

    def __init__(
        self,
        ble: BleStack,
        address: str,
        on_measurement: OnMeasurement,
        *,
        mark: SyncMark | None,
        deadline: float,
        procedure_timeout_s: float,
        max_records: int,
    ) -> None:
        super().__init__(ble, address, on_measurement, deadline=deadline)
        self.procedure_timeout_s = procedure_timeout_s
        self.core = GlsSync(mark, device=self.label, max_records=max_records)
        #: The RACP, once discovered: the callbacks write Abort to it at the limit.
        self.racp: BleakGATTCharacteristic | None = None
        #: The Abort, written once (from the callback that hit the limit, or the loop); its
        #: result is the loop time it was written.
        self._abort: asyncio.Task[float] | None = None
        #: Loop time of the last record that arrived (refused ones included).
        self.last_record_at = 0.0
        #: The timer that ends the current wait of a procedure (:meth:`woken_or_at`).
        self._timer: asyncio.TimerHandle | None = None

    # -- radio steps ------------------------------------------------------------------

    def att_error_text(self, code: int) -> str:
        """ATT errors by name, with the GLS application errors 0x80 and 0x81."""
        return _att_name(code)

    async def disconnect(self, client: BleakClient) -> None:
        """Disconnect (best effort), then re-raise a cancellation swallowed on the way; an
        Abort still being written ends with the link."""
        await super().disconnect(client)
        if self._abort is not None and not self._abort.done():
            self._abort.cancel()
            await asyncio.wait({self._abort})
        raise_if_cancelled()

    async def read_info(
        self, client: BleakClient
    ) -> tuple[GlsDeviceInfo, BleakGATTService, BleakGATTCharacteristic]:
        """Read DIS (all optional) and the Glucose Feature; check 0x1808's characteristics."""
        gls, dis = self.services(client)
        for uuid, name in (
            (GLUCOSE_FEATURE, "Glucose Feature 0x2A51"),
            (GLUCOSE_MEASUREMENT, "Glucose Measurement 0x2A18"),
            (RECORD_ACCESS_CONTROL_POINT, "Record Access Control Point 0x2A52"),
        ):
            if gls.get_characteristic(uuid) is None:
                raise DeviceProtocolError(self.label, "discover", f"no {name} in 0x1808")
        racp = gls.get_characteristic(RECORD_ACCESS_CONTROL_POINT)
        assert racp is not None
        if "indicate" not in racp.properties or "write" not in racp.properties:
            raise DeviceProtocolError(self.label, "discover", "0x2A52 lacks write or indicate")
        feature = gls.get_characteristic(GLUCOSE_FEATURE)
        assert feature is not None
        values = await self.read_device_information(client, dis, regulatory=False)
        await self.read_battery_level(client)
        info = GlsDeviceInfo(
            bytes(await self.gatt("read_glucose_feature", client.read_gatt_char(feature))),
            values,
        )
        return info, gls, racp

    # -- callbacks: feed the core, never wait -------------------------------------------

    def on_measurement_value(self, _sender: BleakGATTCharacteristic, data: bytearray) -> None:
        """0x2A18 notification."""
        self.last_record_at = self.loop.time()
        if self.failure is None:
            core = self.core
            try:
                core.measurement(bytes(data), time.monotonic(), wall_clock.now())
            except DeviceProtocolError as exc:
                self.fail(exc)
            if core.refused:  # limit_reached, read as the attribute: once per record
                self.abort_at_limit()
        self.wakeup.set()

    def abort_at_limit(self) -> None:
        """At the record limit, start writing Abort from the callback (never waits): the
        meter is told at once even while the hand-on waits for a slow pipeline, and what it
        sends after the Abort is counted against :data:`MAX_RECORDS_AFTER_ABORT` from then
        on, so a meter that streams on is cut however far behind the pipeline is."""
        if (
            self._abort is None
            and self.core.limit_reached
            and self.failure is None
            and self.client is not None
            and self.racp is not None
        ):
            self.core.aborted()  # at once: what arrives from now on is after the Abort
            self._abort = self.loop.create_task(
                self.abort(self.client, self.racp), name=f"ble[{self.label}].abort"
            )

    async def ensure_aborted(self, client: BleakClient, racp: BleakGATTCharacteristic) -> float:
        """Write Abort unless it was (or is being) written; the loop time it was written."""
        if self._abort is None:
            self._abort = self.loop.create_task(
                self.abort(client, racp), name=f"ble[{self.label}].abort"
            )
        return await self._abort

    def on_context_value(self, _sender: BleakGATTCharacteristic, data: bytearray) -> None:
        """0x2A34 notification (it may release a held record past the limit)."""
        if self.failure is None:
            core = self.core
            try:
                core.context(bytes(data))
            except DeviceProtocolError as exc:
                self.fail(exc)
            if core.refused:
                self.abort_at_limit()
        self.wakeup.set()

    def on_racp_value(self, _sender: BleakGATTCharacteristic, data: bytearray) -> None:
        """0x2A52 indication (confirmed by the stack after this returns)."""
        if self.failure is None:
            try:
                self.core.racp_indication(bytes(data))
            except DeviceProtocolError as exc:
                self.fail(exc)
        self.wakeup.set()

    # -- handing on -------------------------------------------------------------------------

    async def hand_on(self, ready: RecordReady, facts: DeviceFacts) -> None:
        """Hand one complete record on, with the mark that commits with it."""
        record = ready.record
        context = record.context
        raw = RawMeasurement(
            GLUCOSE_MEASUREMENT,
            record.measurement,
            record.received_monotonic,
            record.received_wall,
            {GLUCOSE_MEASUREMENT_CONTEXT: context} if context is not None else {},
            {SYNC_KEY: bytes(ready.mark)},
        )
        await self.on_measurement(raw, facts)
        self.handed_on += 1

    async def fail_now(self, client: BleakClient, facts: DeviceFacts) -> NoReturn:
        """A callback found the meter at fault: the link is ending; hand on what was complete
        before, then raise its error."""
        failure = self.failure
        assert failure is not None
        await self.disconnect(client)
        while isinstance(event := self.core.next_event(), RecordReady):
            await self.hand_on(event, facts)
        self.log.warning(
            "gls_session_failed_by_device",
            measurements=self.handed_on,
            error=type(failure).__name__,
            **{f"peak_{buffer}": size for buffer, size in self.core.peaks.items()},
        )
        raise failure

    # -- RACP -------------------------------------------------------------------------------

    async def procedure(
        self,
        client: BleakClient,
        racp: BleakGATTCharacteristic,
        procedure: Procedure,
        facts: DeviceFacts,
    ) -> None:
        """Write the request; hand on its records (a report) until its final response."""
        name = procedure.name
        request = procedure.request
        self.log.info(
            "gls_racp_request",
            op_code=int(request.op_code),
            operator=int(request.operator),
            reason=procedure.reason.value,
        )
        self.racp = racp
        await self.gatt(name, client.write_gatt_char(racp, bytes(request), response=True))
        started = self.loop.time()
        last_progress = started
        seen = self.core.progress
        aborted_at: float | None = None
        while True:
            if self.failure is not None:
                await self.fail_now(client, facts)
            if self.loop.time() >= self.deadline:
                # Checked before each hand-on, so a meter streaming faster than the pipeline
                # cannot keep a stopping hub (end_now) or a passed deadline waiting. Records
                # not handed on stay on the meter: the mark does not cover them.
                if aborted_at is None:
                    await self.ensure_aborted(client, racp)
                raise _Deadline
            try:
                event = self.core.next_event()
            except DeviceProtocolError as exc:
                self.fail(exc)
                continue
            if isinstance(event, RecordReady):
                await self.hand_on(event, facts)
                continue
            if isinstance(event, ProcedureFinished):
                return
            if event is LIMIT_REACHED:
                self.log.info("gls_record_limit", records=self.core.accepted)
                aborted_at = await self.ensure_aborted(client, racp)
                continue
            if self.link_lost.is_set():
                self.core.link_lost()
                raise BleLinkLostError(self.phase, self.handed_on, self.label)
            now = self.loop.time()
            if self.core.progress != seen:
                seen = self.core.progress
                last_progress = now
            if aborted_at is not None and now >= aborted_at + ABORT_TIMEOUT_S:
                if self.core.after_abort and self.last_record_at >= aborted_at + ABORT_OBEYED_S:
                    try:
                        self.core.abort_unanswered()
                    except DeviceProtocolError as exc:
                        self.fail(exc)
                    continue
                self.log.warning("gls_abort_unanswered")
                return  # the limit ends the session: no more values are taken
            # Read every round: a stopping hub moves the deadline to now (end_now).
            give_up_at = min(started + RACP_PROCEDURE_MAX_S, self.deadline)
            if now >= give_up_at:
                if aborted_at is None:
                    await self.ensure_aborted(client, racp)
                if now >= self.deadline:
                    raise _Deadline
                raise DeviceProtocolError(
                    self.label, name, f"not finished within {RACP_PROCEDURE_MAX_S:g} s"
                )
            timeout_at = last_progress + self.procedure_timeout_s
            if now >= timeout_at:
                if aborted_at is None:
                    await self.ensure_aborted(client, racp)
                raise DeviceProtocolError(
                    self.label, name, f"no response within {self.procedure_timeout_s:g} s"
                )
            wake_at = min(timeout_at, give_up_at)
            if aborted_at is not None:
                wake_at = min(wake_at, aborted_at + ABORT_TIMEOUT_S)
            await self.woken_or_at(wake_at)

    async def woken_or_at(self, wake_at: float) -> None:
        """Wait until a callback wakes the session or the loop time ``wake_at`` passes.

        One timer serves every wait of a procedure: it is moved only when it would ring
        after ``wake_at``; ringing early (the procedure's progress moved ``wake_at`` on) only
        makes the caller look again and wait anew. A download wakes the session for nearly
        every record, and a fresh timeout per wait (``asyncio.timeout_at``: a timer armed
        and cancelled, a cancel scope) was most of the cost of each wake on the event loop.
        """
        timer = self._timer
        if timer is None or timer.when() > wake_at:
            if timer is not None:
                timer.cancel()
            self._timer = self.loop.call_at(wake_at, self._ring)
        self.wakeup.clear()
        await self.wakeup.wait()

    def _ring(self) -> None:
        self._timer = None
        self.wakeup.set()

    def cancel_timer(self) -> None:
        """The procedure is over: its timer must not ring into the next one (or after)."""
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None

    async def abort(self, client: BleakClient, racp: BleakGATTCharacteristic) -> float:
        """Best effort: write Abort ``03 00`` (the link may be gone); the loop time it was
        written, from which its answer is awaited. Run once, as :attr:`_abort`."""
        self.core.aborted()
        if not self.link_lost.is_set():
            try:
                async with asyncio.timeout(ABORT_TIMEOUT_S):
                    await client.write_gatt_char(racp, bytes(RacpRequest.abort()), response=True)
            except (BleakError, TimeoutError) as exc:
                self.log.warning("gls_abort_failed", error=type(exc).__name__)
            raise_if_cancelled()
        return self.loop.time()

    async def sync(
        self, client: BleakClient, racp: BleakGATTCharacteristic, facts: DeviceFacts
    ) -> bool:
        """The incremental sync (:mod:`drivers.gls_sync`); True when it resynced with "all".

        Raises:
            _Limit: ``max_records`` were handed on; the meter keeps the rest.
        """
        self.phase = "collect"
        while True:
            step = self.core.next_procedure()
            if isinstance(step, SyncDone):
                if step.reason is Reason.LIMIT:
                    raise _Limit
                self.log.info(step.reason.value, resynced=step.resynced)
                return step.resynced
            if step.reason is Reason.RESET:
                self.log.warning(step.reason.value)
            elif step.reason in (Reason.WRAPPED, Reason.COUNTS_DOWN):
                self.log.info(step.reason.value)
            try:
                await self.procedure(client, racp, step, facts)
            finally:
                self.cancel_timer()


def _att_name(code: int) -> str:
    names = {
        0x05: "insufficient authentication",
        0x0F: "insufficient encryption",
        0x80: "procedure already in progress",
        0x81: "CCCD improperly configured",
    }
    return names.get(code, "ATT error")


async def collect_glucose(
    ble: BleStack,
    address: str,
    on_measurement: OnMeasurement,
    mark: SyncMark | None,
    *,
    scan_timeout_s: float = SCAN_TIMEOUT_S,
    connect_timeout_s: float = CONNECT_TIMEOUT_S,
    session_timeout_s: float | None = None,
    procedure_timeout_s: float = RACP_PROCEDURE_TIMEOUT_S,
    max_records: int = MAX_RECORDS_PER_SESSION,
    pair: bool = False,
    found: BLEDevice | None = None,
    clock: ClockPolicy | None = None,
    vet: Callable[[DeviceFacts], None] | None = None,
) -> GlsSessionResult:
    """Sync the stored glucose records of one allowlisted meter from ``mark`` on.

    Args:
        ble: the opened stack.
        address: the meter's address (from the allowlist).
        on_measurement: awaited once per record, in the meter's order.
        mark: the committed high-water mark (None: first sync, report all).
        scan_timeout_s: how long to scan for the meter.
        connect_timeout_s: bleak's connect timeout (connection, set-up, discovery).
        session_timeout_s: cap on the radio part; must exceed scan + connect +
            ``procedure_timeout_s``. ``None``: no cap here.
        procedure_timeout_s: longest wait for the next value of an RACP procedure.
        max_records: records handed on at most; then the transfer is aborted.
        pair: pair (Just Works, or as the stack's policy allows) if not bonded.

        found: the device as the daemon's scan saw it advertise: no scan of its own.
        clock: whether to set the device's clock when it drifts (``None``: never).
        vet: called with the device's facts before any measurement is accepted; raises
            :class:`~agent.errors.DeviceSecurityError` for a device that is not the one
            pinned (:mod:`agent.ble.identity`).

    Raises:
        ConfigError: the timeouts do not nest.
        BleLinkError: not found, connect failed, a GATT operation failed.
        BleLinkLostError: the link dropped (complete records were handed on).
        DeviceFloodError: the meter filled a bounded buffer (``buffer`` names it:
            ``gls_ready``, ``racp_probe``, ``racp_indications``, ``gls_orphan_contexts``,
            ``records_after_abort``); the link was ended at once and the records complete
            before were handed on.
        DeviceProtocolError: a missing characteristic, an ATT error on the RACP (0x80
            procedure already in progress, 0x81 CCCD improperly configured, …), a bad or
            failed RACP response, no response within ``procedure_timeout_s``, or a
            procedure not finished within :data:`RACP_PROCEDURE_MAX_S`.
    """
    if max_records < 1:
        raise ConfigError("(session)", "max_records", "must be at least 1")
    check_session_timeout(
        session_timeout_s,
        scan_timeout_s,
        connect_timeout_s,
        procedure_timeout_s,
        "the RACP procedure timeout",
    )
    session = _GlsSession(
        ble,
        address,
        on_measurement,
        mark=mark,
        deadline=session_deadline(session_timeout_s),
        procedure_timeout_s=procedure_timeout_s,
        max_records=max_records,
    )
    slog = session.log
    device = found if found is not None else await session.find(scan_timeout_s)
    client = await session.connect(device, connect_timeout_s, pair)

    ended_by = SessionEnd.COMPLETE
    resynced = False
    try:
        async with session.setup_deadline():
            info, gls, racp = await session.read_info(client)
            facts = device_facts(session.address, info.dis, session.label)
            # Read only: the clock is set once every record has been handed over (below).
            facts = await with_device_clock(client, facts, session.label)
            if vet is not None:
                vet(facts)
            measurement = gls.get_characteristic(GLUCOSE_MEASUREMENT)
            assert measurement is not None
            await session.gatt(
                "subscribe_glucose_measurement",
                client.start_notify(measurement, session.on_measurement_value),
            )
            context = gls.get_characteristic(GLUCOSE_MEASUREMENT_CONTEXT)
            if context is not None:
                await session.gatt(
                    "subscribe_glucose_context",
                    client.start_notify(context, session.on_context_value),
                )
            await session.gatt("subscribe_racp", client.start_notify(racp, session.on_racp_value))
        slog.info("ble_session_subscribed")
        try:
            resynced = await session.sync(client, racp, facts)
        except _Deadline:
            ended_by = SessionEnd.DEADLINE
        except _Limit:
            ended_by = SessionEnd.LIMIT  # Abort was written when the limit was reached
        if ended_by is SessionEnd.COMPLETE:  # the meter holds nothing not yet handed on
            await session.set_clock_after_transfer(client, facts, clock)
    except BaseException:
        await session.disconnect(client)
        raise
    await session.disconnect(client)
    joiner = session.core.joiner
    if joiner.missing_contexts or joiner.dropped_contexts:
        slog.warning(
            "gls_context_unmatched",
            missing=joiner.missing_contexts,
            dropped=joiner.dropped_contexts,
        )
    slog.info(
        "ble_session_ended",
        measurements=session.handed_on,
        ended_by=ended_by.value,
        resynced=resynced,
        **{f"peak_{buffer}": size for buffer, size in session.core.peaks.items()},
    )
    return GlsSessionResult(session.label, session.handed_on, ended_by, resynced, info, facts)
