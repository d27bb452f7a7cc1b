"""One collection session with a Glucose Service (GLS 1.0, UUID 0x1808) meter: an incremental sync.

Only bleak's public API is used (through the sessions' shared core,
:mod:`agent.ble.gatt_session`), so the same procedure runs over BlueZ and over Bumble. The RACP
bytes come from :mod:`drivers.racp`.

Theory of operation (GLS/GLP collector procedure, ble-spec-facts §4.5)
---------------------------------------------------------------------
1. **Scan** for the allowlisted address advertising 0x1808; **connect** (optionally pair:
   GLS wants an encrypted link before the RACP is used).
2. **Read** DIS (all optional) and the Glucose Feature 0x2A51 (mandatory), then the meter's
   clock, Current Time 0x2A2B, when it has CTS 0x1805 (:mod:`agent.ble.current_time`).
3. **Subscribe**: notifications on Glucose Measurement 0x2A18 and (when present) Glucose
   Measurement Context 0x2A34, indications on the RACP 0x2A52. A meter answers a report
   request with ATT error 0x81 if the measurement CCCD is not enabled.
4. **Incremental sync** from the committed high-water mark (``sync_state("gls_last_seq")``,
   a :class:`SyncMark`: the sequence number of the last record committed and a
   fingerprint of its measurement value):

   - no mark: "report stored records: all" (``01 01``);
   - else probe the newest record ("last record", ``01 06``); if it is the marked record,
     nothing is new. Otherwise probe the marked record itself ("within range m..m",
     ``01 04 01 m m``): if it is still there with the same fingerprint the numbering
     continued, and the hub asks ">= m+1" (``01 03 01 m+1``) and, when the newest number
     is below the mark (the uint16 wrapped), also "<= newest". If the marked record is
     gone or differs, the meter's numbering restarted (memory cleared, reset, another
     meter behind the same address): the hub resyncs with "all". Never a silent skip:
     a resync may send readings again (the platform deduplicates them by their stable
     Observation.identifier), it never leaves one out.
   - Probed records are not handed on: they are either committed already or requested
     again by the following transfer.

5. Each measurement is **joined with its context by sequence number** (not by arrival
   order) and handed on, in the meter's order, as a :class:`RawMeasurement` with
   ``related={0x2A34: context}`` and ``sync_state={"gls_last_seq": mark}``, so the mark
   commits in the same outbox transaction as the reading: it never runs ahead of what is
   stored. A measurement that announces a context waits for it until the next
   measurement or the end of the procedure; a later record never overtakes an earlier one.
6. A procedure **ends** with the RACP Response Code indication ``06 00 01 xx``: success or
   "no records found"; anything else is a :class:`~agent.errors.DeviceProtocolError`.
   Each procedure is bounded by :data:`RACP_PROCEDURE_TIMEOUT_S` without progress (inner
   to the session deadline); on that timeout the hub writes Abort (``03 00``).

A **dropped link** raises :class:`~agent.errors.BleLinkLostError` after handing on every
complete record received; a record still waiting for its context is not handed on, and
since the mark stays below it the next session asks for it again.
"""

from __future__ import annotations

import asyncio
import enum
import hashlib
import time
from collections import deque
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Final

import structlog
from bleak import BleakClient
from bleak.backends.characteristic import BleakGATTCharacteristic
from bleak.backends.service import BleakGATTService
from bleak.exc import BleakError

from agent.ble.current_time import with_device_clock
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
from agent.errors import BleLinkLostError, ConfigError, DecodeError, DeviceProtocolError
from agent.measurement import OnMeasurement, RawMeasurement
from agent.normalize.device import DeviceFacts
from drivers.racp import (
    FilterType,
    NumberOfStoredRecords,
    OpCode,
    Operator,
    RacpRequest,
    RacpResponse,
    ResponseCode,
    ResponseCodeIndication,
    decode_response,
)

log = structlog.get_logger(__name__)


SYNC_KEY: Final = "gls_last_seq"
"""The outbox sync-state key of a glucometer's high-water mark (:class:`SyncMark`)."""

RACP_PROCEDURE_TIMEOUT_S: Final = 30.0
"""Longest wait for the next value of an RACP procedure (a record or the final response):
the ATT transaction timeout (Core Vol 3 Part F §3.3.3) and TI's GLUCOSE_PROCEDURE_TIMEOUT,
both 30 s (ble-spec-facts §4.5). It restarts with every record, so a long transfer is not
cut; inner to the session deadline."""

ABORT_TIMEOUT_S: Final = 5.0
"""Best-effort Abort after a timed-out procedure: one write, inner to the procedure timeout."""

MAX_RECORDS_PER_SESSION: Final = 1000
"""A meter stores 500-1000 records; beyond this the hub aborts the transfer and the meter
keeps the rest for the next session (the mark says where to continue)."""

MAX_BUFFERED: Final = 64
"""Records received but not yet handed on (notifications have no flow control; the
pipeline's hand-on is a queue put, so a full buffer means a stalled pipeline)."""

MAX_ORPHAN_CONTEXTS: Final = 16
"""Contexts held while their measurement has not arrived (a meter that sends the context
first needs one)."""

MAX_RACP_RESPONSES: Final = 4
"""RACP indications buffered: one procedure runs at a time, so one is expected."""

FINGERPRINT_SIZE: Final = 8


def fingerprint(measurement: bytes) -> bytes:
    """A record's identity for the mark: 8 octets of SHA-256 of its 0x2A18 value."""
    return hashlib.sha256(measurement).digest()[:FINGERPRINT_SIZE]


@dataclass(frozen=True, slots=True)
class SyncMark:
    """The committed high-water mark: ``sequence_number`` (uint16 LE) + 8-octet fingerprint.

    A 2-octet value (sequence number only) is accepted: continuity is then checked by the
    marked record's presence alone. ``bytes(mark)[:2]`` is the sequence number.
    """

    sequence_number: int
    fingerprint: bytes | None = field(default=None, repr=False)

    @classmethod
    def from_bytes(cls, data: bytes) -> SyncMark:
        """Decode a stored mark.

        Raises:
            ValueError: neither 2 nor 10 octets.
        """
        if len(data) == 2:
            return cls(int.from_bytes(data, "little"))
        if len(data) == 2 + FINGERPRINT_SIZE:
            return cls(int.from_bytes(data[:2], "little"), data[2:])
        raise ValueError(f"a sync mark has 2 or 10 octets, not {len(data)}")

    def __bytes__(self) -> bytes:
        """The stored value."""
        return self.sequence_number.to_bytes(2, "little") + (self.fingerprint or b"")

    def matches(self, measurement: bytes) -> bool:
        """Whether ``measurement`` is the marked record."""
        if len(measurement) < 3:
            return False
        if int.from_bytes(measurement[1:3], "little") != self.sequence_number:
            return False
        return self.fingerprint is None or fingerprint(measurement) == self.fingerprint


@dataclass(frozen=True, slots=True)
class JoinedRecord:
    """A measurement and its context (when it had one), joined by sequence number."""

    sequence_number: int
    measurement: bytes = field(repr=False)
    context: bytes | None = field(default=None, repr=False)
    received_monotonic: float = 0.0
    received_wall: datetime = field(default_factory=lambda: datetime.now(UTC))


@dataclass(slots=True)
class _Waiting:
    record: JoinedRecord
    wants_context: bool


class RecordJoiner:
    """Joins 0x2A18 and 0x2A34 values by sequence number, releasing records in order (sans I/O).

    A measurement whose flags announce a context (bit 4) is held until that context
    arrives, until a measurement with another sequence number arrives, or until
    :meth:`flush`; records are released strictly in measurement order.
    """

    def __init__(self, max_orphans: int = MAX_ORPHAN_CONTEXTS) -> None:
        self._waiting: deque[_Waiting] = deque()
        self._contexts: dict[int, bytes] = {}
        self._max_orphans = max_orphans
        self.missing_contexts = 0
        self.dropped_contexts = 0

    def measurement(
        self, data: bytes, received_monotonic: float, received_wall: datetime
    ) -> list[JoinedRecord]:
        """Add a 0x2A18 value; returns the records now complete, in order.

        Raises:
            DecodeError: shorter than flags + sequence number.
        """
        if len(data) < 3:
            raise DecodeError("0x2A18", f"too short for a sequence number ({len(data)} octets)")
        seq = int.from_bytes(data[1:3], "little")
        wants = bool(data[0] & 0x10)
        context = self._contexts.pop(seq, None) if wants else None
        record = JoinedRecord(seq, data, context, received_monotonic, received_wall)
        out = self._release(stale_before=True)
        self._waiting.append(_Waiting(record, wants and context is None))
        return out + self._release(stale_before=False)

    def context(self, data: bytes) -> list[JoinedRecord]:
        """Add a 0x2A34 value; returns the records now complete, in order.

        Raises:
            DecodeError: shorter than flags + sequence number.
        """
        if len(data) < 3:
            raise DecodeError("0x2A34", f"too short for a sequence number ({len(data)} octets)")
        seq = int.from_bytes(data[1:3], "little")
        for waiting in self._waiting:
            if waiting.wants_context and waiting.record.sequence_number == seq:
                r = waiting.record
                waiting.record = JoinedRecord(
                    seq, r.measurement, data, r.received_monotonic, r.received_wall
                )
                waiting.wants_context = False
                return self._release(stale_before=False)
        if len(self._contexts) >= self._max_orphans:
            self.dropped_contexts += 1
            return []
        self._contexts[seq] = data
        return []

    def flush(self) -> list[JoinedRecord]:
        """End of procedure: release everything held; forget contexts without a measurement."""
        out = self._release(stale_before=True)
        self.dropped_contexts += len(self._contexts)
        self._contexts.clear()
        return out

    def discard(self) -> None:
        """The link went: forget what is held (it will be requested again)."""
        self._waiting.clear()
        self._contexts.clear()

    def _release(self, *, stale_before: bool) -> list[JoinedRecord]:
        out: list[JoinedRecord] = []
        while self._waiting:
            head = self._waiting[0]
            if head.wants_context and not stale_before:
                break
            if head.wants_context:
                self.missing_contexts += 1
            out.append(self._waiting.popleft().record)
        return out


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
    """MAX_RECORDS_PER_SESSION records were handed on."""


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
        deadline: float,
        procedure_timeout_s: float,
        max_records: int,
    ) -> None:
        super().__init__(ble, address, on_measurement, deadline=deadline)
        self.procedure_timeout_s = procedure_timeout_s
        self.max_records = max_records
        self.joiner = RecordJoiner()
        self.ready: deque[JoinedRecord] = deque()
        self.responses: deque[bytes] = deque()
        self.problem: str | None = None
        self.collecting = False
        self.probed: list[JoinedRecord] = []

    # -- radio steps ------------------------------------------------------------------

    def att_error_text(self, code: int) -> str:
        """ATT errors by name, with the GLS application errors 0x80 and 0x81."""
        return _att_name(code)

    async def disconnect(self, client: BleakClient) -> None:
        """Disconnect (best effort), then re-raise a cancellation swallowed on the way."""
        await super().disconnect(client)
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
        info = GlsDeviceInfo(
            bytes(await self.gatt("read_glucose_feature", client.read_gatt_char(feature))),
            values,
        )
        return info, gls, racp

    # -- callbacks (never wait) -----------------------------------------------------------

    def _accept(self, records: list[JoinedRecord]) -> None:
        if self.collecting:
            if len(self.ready) + len(records) > MAX_BUFFERED:
                self.problem = self.problem or "more records buffered than the bound"
            self.ready.extend(records)
        else:
            self.probed.extend(records)

    def on_measurement_value(self, _sender: BleakGATTCharacteristic, data: bytearray) -> None:
        """0x2A18 notification."""
        try:
            self._accept(self.joiner.measurement(bytes(data), time.monotonic(), datetime.now(UTC)))
        except DecodeError as exc:
            self.problem = self.problem or exc.reason
        self.wakeup.set()

    def on_context_value(self, _sender: BleakGATTCharacteristic, data: bytearray) -> None:
        """0x2A34 notification."""
        try:
            self._accept(self.joiner.context(bytes(data)))
        except DecodeError as exc:
            self.problem = self.problem or exc.reason
        self.wakeup.set()

    def on_racp_value(self, _sender: BleakGATTCharacteristic, data: bytearray) -> None:
        """0x2A52 indication (confirmed by the stack after this returns)."""
        if len(self.responses) >= MAX_RACP_RESPONSES:
            self.problem = self.problem or "unsolicited RACP indications"
        else:
            self.responses.append(bytes(data))
        self.wakeup.set()

    # -- handing on -------------------------------------------------------------------------

    async def hand_on(self, facts: DeviceFacts) -> None:
        """Hand every complete record on, in the meter's order, each with its mark."""
        while self.ready:
            if self.handed_on >= self.max_records:
                raise _Limit
            record = self.ready[0]
            related = (
                {GLUCOSE_MEASUREMENT_CONTEXT: record.context} if record.context is not None else {}
            )
            mark = SyncMark(record.sequence_number, fingerprint(record.measurement))
            raw = RawMeasurement(
                characteristic_uuid=GLUCOSE_MEASUREMENT,
                data=record.measurement,
                received_monotonic=record.received_monotonic,
                received_wall=record.received_wall,
                related=related,
                sync_state={SYNC_KEY: bytes(mark)},
            )
            await self.on_measurement(raw, facts)
            self.ready.popleft()
            self.handed_on += 1

    # -- RACP -------------------------------------------------------------------------------

    async def procedure(
        self,
        client: BleakClient,
        racp: BleakGATTCharacteristic,
        request: RacpRequest,
        facts: DeviceFacts,
        *,
        collect: bool,
    ) -> RacpResponse:
        """Write ``request``; collect (hand on) or probe the records; return the response."""
        self.collecting = collect
        self.probed = []
        self.responses.clear()
        name = f"racp_{OpCode(request.op_code).name.lower()}"
        self.log.info(
            "gls_racp_request", op_code=int(request.op_code), operator=int(request.operator)
        )
        await self.gatt(name, client.write_gatt_char(racp, bytes(request), response=True))
        last_progress = self.loop.time()
        seen = 0
        while True:
            if collect:
                await self.hand_on(facts)
            if self.problem is not None:
                raise DeviceProtocolError(self.label, name, self.problem)
            if self.link_lost.is_set():
                self.joiner.discard()
                raise BleLinkLostError(self.phase, self.handed_on, self.label)
            if self.responses:
                response = self._check(name, request, self.responses.popleft())
                self._accept(self.joiner.flush())
                if collect:
                    await self.hand_on(facts)
                return response
            now = self.loop.time()
            if len(self.ready) + len(self.probed) + self.handed_on != seen:
                seen = len(self.ready) + len(self.probed) + self.handed_on
                last_progress = now
            if now >= self.deadline:
                await self.abort(client, racp)
                raise _Deadline
            timeout_at = last_progress + self.procedure_timeout_s
            if now >= timeout_at:
                await self.abort(client, racp)
                raise DeviceProtocolError(
                    self.label, name, f"no response within {self.procedure_timeout_s:g} s"
                )
            self.wakeup.clear()
            try:
                async with asyncio.timeout_at(min(timeout_at, self.deadline)):
                    await self.wakeup.wait()
            except TimeoutError:
                continue

    def _check(self, name: str, request: RacpRequest, data: bytes) -> RacpResponse:
        try:
            response = decode_response(data)
        except DecodeError as exc:
            raise DeviceProtocolError(
                self.label, name, f"bad RACP response: {exc.reason}"
            ) from None
        if request.op_code is OpCode.REPORT_NUMBER_OF_STORED_RECORDS:
            if not isinstance(response, NumberOfStoredRecords):
                raise DeviceProtocolError(self.label, name, _describe(response))
            return response
        if not isinstance(response, ResponseCodeIndication):
            raise DeviceProtocolError(self.label, name, "count response to a report request")
        if response.request_op_code != request.op_code:
            raise DeviceProtocolError(
                self.label, name, f"response to op code 0x{response.request_op_code:02X}"
            )
        if response.response_code not in (ResponseCode.SUCCESS, ResponseCode.NO_RECORDS_FOUND):
            raise DeviceProtocolError(self.label, name, _describe(response))
        return response

    async def abort(self, client: BleakClient, racp: BleakGATTCharacteristic) -> None:
        """Best effort: write Abort ``03 00`` (the link may be gone)."""
        if self.link_lost.is_set():
            return
        try:
            async with asyncio.timeout(ABORT_TIMEOUT_S):
                await client.write_gatt_char(racp, bytes(RacpRequest.abort()), response=True)
        except (BleakError, TimeoutError) as exc:
            self.log.warning("gls_abort_failed", error=type(exc).__name__)
        raise_if_cancelled()

    async def sync(
        self,
        client: BleakClient,
        racp: BleakGATTCharacteristic,
        facts: DeviceFacts,
        mark: SyncMark | None,
    ) -> bool:
        """The incremental sync (module docstring, step 4); True when it resynced with "all"."""
        self.phase = "collect"

        async def report(request: RacpRequest) -> None:
            await self.procedure(client, racp, request, facts, collect=True)

        async def probe(request: RacpRequest) -> JoinedRecord | None:
            await self.procedure(client, racp, request, facts, collect=False)
            return self.probed[0] if self.probed else None

        if mark is None:
            self.log.info("gls_sync_first")
            await report(RacpRequest.report_all())
            return False
        newest = await probe(RacpRequest(OpCode.REPORT_STORED_RECORDS, Operator.LAST_RECORD))
        if newest is None:
            self.log.info("gls_sync_meter_empty")
            return False
        if mark.matches(newest.measurement):
            self.log.info("gls_sync_nothing_new")
            return False
        marked = await probe(RacpRequest.report_range(mark.sequence_number, mark.sequence_number))
        if marked is None or not mark.matches(marked.measurement):
            self.log.warning("gls_sequence_reset", marked_present=marked is not None)
            await report(RacpRequest.report_all())
            return True
        if mark.sequence_number < 0xFFFF:
            await report(RacpRequest.report_from(mark.sequence_number + 1))
        if newest.sequence_number < mark.sequence_number:
            self.log.info("gls_sequence_wrapped")
            await report(
                RacpRequest(
                    OpCode.REPORT_STORED_RECORDS,
                    Operator.LESS_THAN_OR_EQUAL_TO,
                    FilterType.SEQUENCE_NUMBER,
                    (newest.sequence_number,),
                )
            )
        return False


def _att_name(code: int) -> str:
    names = {
        0x05: "insufficient authentication",
        0x0F: "insufficient encryption",
        0x80: "procedure already in progress",
        0x81: "CCCD improperly configured",
    }
    return names.get(code, "ATT error")


def _describe(response: RacpResponse) -> str:
    if isinstance(response, NumberOfStoredRecords):
        return "unexpected number-of-records response"
    code = response.code
    return f"RACP response code 0x{response.response_code:02X}" + (
        f" ({code.name.lower()})" if code is not None else ""
    )


def read_mark(value: bytes | None, label: str) -> SyncMark | None:
    """The committed mark, or None (never synced, or an unreadable value: resync all)."""
    if value is None:
        return None
    try:
        return SyncMark.from_bytes(value)
    except ValueError:
        log.warning("gls_sync_mark_unreadable", device=label, size=len(value))
        return None


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

    Raises:
        ConfigError: the timeouts do not nest.
        BleLinkError: not found, connect failed, a GATT operation failed.
        BleLinkLostError: the link dropped (complete records were handed on).
        DeviceProtocolError: a missing characteristic, an ATT error on the RACP (0x80
            procedure already in progress, 0x81 CCCD improperly configured, …), a bad or
            failed RACP response, or no response within ``procedure_timeout_s``.
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
        deadline=session_deadline(session_timeout_s),
        procedure_timeout_s=procedure_timeout_s,
        max_records=max_records,
    )
    slog = session.log
    device = await session.find(scan_timeout_s)
    client = await session.connect(device, connect_timeout_s, pair)

    ended_by = SessionEnd.COMPLETE
    resynced = False
    try:
        async with session.setup_deadline():
            info, gls, racp = await session.read_info(client)
            facts = device_facts(session.address, info.dis, session.label)
            facts = await with_device_clock(client, facts, session.label)
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
            resynced = await session.sync(client, racp, facts, mark)
        except _Deadline:
            ended_by = SessionEnd.DEADLINE
        except _Limit:
            await session.abort(client, racp)
            ended_by = SessionEnd.LIMIT
    except BaseException:
        await session.disconnect(client)
        raise
    await session.disconnect(client)
    if session.joiner.missing_contexts or session.joiner.dropped_contexts:
        slog.warning(
            "gls_context_unmatched",
            missing=session.joiner.missing_contexts,
            dropped=session.joiner.dropped_contexts,
        )
    slog.info(
        "ble_session_ended",
        measurements=session.handed_on,
        ended_by=ended_by.value,
        resynced=resynced,
    )
    return GlsSessionResult(session.label, session.handed_on, ended_by, resynced, info, facts)
