"""An emulated glucometer: a Bumble peripheral with the Glucose Service 0x1808 (GLS 1.0).

GATT database (ble-spec-facts §4):

- Glucose Service 0x1808
    - Glucose Measurement 0x2A18: **Notify**, with its CCCD (GLS §3.1).
    - Glucose Measurement Context 0x2A34: **Notify**, with its CCCD (GLS §3.2).
    - Glucose Feature 0x2A51: Read, uint16 (GLS §3.3).
    - Record Access Control Point 0x2A52: Write + **Indicate**, with its CCCD (GLS §3.4);
      the request logic is :mod:`hil.emulators.racp_server`.
- Device Information Service 0x180A and, with a ``clock``, the Current Time Service 0x1805
  (:mod:`hil.emulators.peripheral`).

Behaviour, as a real meter: it stores records (:class:`GlucoseRecord`) with sequence
numbers and sends nothing until asked. A "report stored records" request makes it notify
each matching record (the measurement, then its context when it has one) and then indicate
the RACP Response Code. Records are kept until a "delete stored records" request.

The encoders here (:meth:`GlucoseRecord.measurement_value`, :meth:`GlucoseContext.value`)
are written from the GATT XML ``glucose_measurement`` / ``glucose_measurement_context``,
independently of ``drivers/``.

Fault injection: ``drop_link_after_records=n`` ends the link (reason 0x08, a radio loss to
the central) right after the n-th record of a report (every report);
``drop_link_after_sequence_numbers`` ends it right after the record with each of those
sequence numbers was sent (measurement and context) and left this host, once per number
(cuts at chosen points of one long transfer, resumed by the next sessions; ``drop_points``
holds those still to come); ``context_first`` sends each context before its measurement
(a meter that gets the order wrong, to test joining by sequence number);
:meth:`Glucometer.restart_numbering` clears the memory and numbers new records from a given
value (a meter reset, or one whose sequence number wrapped); ``count_down`` numbers each new
record one *below* the previous one (a meter whose newer records carry smaller sequence
numbers; stored oldest first all the same, so "last record" is still the newest, and the
numbers wrap from 0 to 0xFFFF); ``racp_silent`` accepts every RACP write (a Write Response)
and then never indicates anything nor sends a record (a meter whose RACP never answers;
switch it off to fix the meter).

Clock faults: with ``stamp_all_with`` the meter's clock is broken and every record (held at
start or added later) gets that one Base Time instead of its own: :data:`UNSET_BASE_TIME`
(every field 0, the GATT Date Time's "unknown": a clock never set) or any valid value (a
stuck clock); with ``time_fault`` each record also sets Sensor Status Annunciation bit 11
"time fault" (Glucose Feature bit 9 "time fault supported" is set by default).

Misbehaviour for the hub's bounds (``flood``, a :class:`Flood`): once asked for a report, the
meter sends without end, ignores Abort and never indicates the final Response Code:
``RECORDS`` the matching records, then fresh ones numbered on; ``CONTEXTS`` contexts whose
measurement never comes; ``RACP`` the first matching record, then RACP indications. The
flood's values are counted (``flood_sent``), not kept, so the emulator itself stays small.

Pace: by default a report goes as fast as the virtual radio takes it (nothing paces a
Bumble virtual link: thousands of records a second); ``record_interval_s`` paces it as a
meter sending one record per connection event of that interval (7.5 ms is the fastest
legal interval, 30-50 ms typical), each record on its own schedule from the request on.

Optional security: ``require_encryption`` makes the RACP refuse writes on an unencrypted
link with ATT Insufficient Encryption (0x0F), as GLS requires an encrypted link.

For tests: ``requests`` (the RACP values written, in order), ``sent`` (the values notified
or indicated, in order), events ``subscribed`` and ``disconnected``; never sleep.
"""

from __future__ import annotations

import asyncio
import dataclasses
import enum
import logging
from collections.abc import Collection, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Final

from bumble.att import ATT_INSUFFICIENT_ENCRYPTION_ERROR, ATT_Error
from bumble.core import UUID
from bumble.device import Connection, Device
from bumble.gatt import Characteristic, Service

from hil.emulators.encoding import DateTime, sfloat
from hil.emulators.gatt_peripheral import CCCD_INDICATE as CCCD_INDICATE  # re-exported
from hil.emulators.gatt_peripheral import CCCD_NOTIFY as CCCD_NOTIFY  # re-exported
from hil.emulators.gatt_peripheral import GattPeripheral
from hil.emulators.peripheral import (
    DeviceInformation,
    EmulatedClock,
    control_point_characteristic,
    read_only_characteristic,
    unreadable_characteristic,
)
from hil.emulators.racp_server import (
    Code,
    Op,
    RacpAttError,
    RacpServer,
    Report,
    Respond,
    response_code,
)

logger = logging.getLogger(__name__)

GLUCOSE_SERVICE: Final = 0x1808
GLUCOSE_MEASUREMENT: Final = 0x2A18
GLUCOSE_MEASUREMENT_CONTEXT: Final = 0x2A34
GLUCOSE_FEATURE: Final = 0x2A51
RECORD_ACCESS_CONTROL_POINT: Final = 0x2A52

DEFAULT_LOCAL_NAME: Final = "HH Glucometer"
DEFAULT_FEATURE: Final = 0x0001 | 0x0004 | 0x0020 | 0x0200
"""Glucose Feature: low battery (bit 0), sample size (bit 2), result high/low (bit 5),
time fault (bit 9)."""
DEFAULT_ADVERTISING_INTERVAL_MS: Final = 100.0

UNSET_BASE_TIME: Final = DateTime(0, 0, 0, 0, 0, 0)
"""Base Time with every field 0 (year, month and day 0 = unknown): a clock never set."""
SENSOR_STATUS_TIME_FAULT: Final = 1 << 11
"""Sensor Status Annunciation bit 11: "Time fault has occurred in the sensor and time may be
inaccurate" (GATT XML glucose_measurement)."""

GLUCOMETER_INFO: Final = DeviceInformation(model_number="HH-GLU-1", serial_number="SN-GLU-0001")


class Flood(enum.Enum):
    """What a flooding meter sends without end once asked for a report (module docstring)."""

    RECORDS = "records"
    CONTEXTS = "contexts"
    RACP = "racp"


class Unit(enum.Enum):
    """Concentration unit on the wire (0x2A18 flag bit 2)."""

    KG_PER_L = 0
    MOL_PER_L = 1


def mg_per_dl(value: str) -> Decimal:
    """A concentration given in mg/dL, as the kg/L value the wire carries (÷ 100 000, exact)."""
    return Decimal(value).scaleb(-5)


def mmol_per_l(value: str) -> Decimal:
    """A concentration given in mmol/L, as the mol/L value the wire carries (÷ 1000, exact)."""
    return Decimal(value).scaleb(-3)


@dataclass(frozen=True, slots=True)
class GlucoseContext:
    """Glucose Measurement Context 0x2A34 fields (GATT XML); ``None``: absent.

    Carbohydrate in kg and medication in kg (or litres with ``medication_litres``), as on
    the wire; HbA1c in percent.
    """

    carbohydrate_id: int | None = None
    carbohydrate_kg: Decimal | None = None
    meal: int | None = None
    tester: int | None = None
    health: int | None = None
    exercise_duration_s: int | None = None
    exercise_intensity_pct: int | None = None
    medication_id: int | None = None
    medication: Decimal | None = None
    medication_litres: bool = False
    hba1c_pct: Decimal | None = None

    def value(self, sequence_number: int) -> bytes:
        """The 0x2A34 value: flags, sequence number, then the present fields in XML order."""
        flags = 0
        body = b""
        if self.carbohydrate_id is not None and self.carbohydrate_kg is not None:
            flags |= 0x01
            body += bytes((self.carbohydrate_id,)) + sfloat(self.carbohydrate_kg)
        if self.meal is not None:
            flags |= 0x02
            body += bytes((self.meal,))
        if self.tester is not None and self.health is not None:
            flags |= 0x04
            body += bytes((self.tester | self.health << 4,))  # Tester low nibble
        if self.exercise_duration_s is not None and self.exercise_intensity_pct is not None:
            flags |= 0x08
            body += self.exercise_duration_s.to_bytes(2, "little")
            body += bytes((self.exercise_intensity_pct,))
        if self.medication_id is not None and self.medication is not None:
            flags |= 0x10 | (0x20 if self.medication_litres else 0)
            body += bytes((self.medication_id,)) + sfloat(self.medication)
        if self.hba1c_pct is not None:
            flags |= 0x40
            body += sfloat(self.hba1c_pct)
        return bytes((flags,)) + sequence_number.to_bytes(2, "little") + body


@dataclass(frozen=True, slots=True)
class GlucoseRecord:
    """One stored glucose record and its 0x2A18 encoding.

    ``concentration`` is in the wire's SI unit (kg/L or mol/L; see :func:`mg_per_dl`),
    ``sample_type`` the low nibble (1 capillary whole blood … 9 ISF, 10 control solution),
    ``sample_location`` the high nibble (1 finger, 2 AST, 3 earlobe, 4 control solution,
    15 not available). Values never appear in the repr.
    """

    sequence_number: int
    base_time: DateTime = field(repr=False)
    concentration: Decimal | None = field(repr=False)
    unit: Unit = Unit.KG_PER_L
    sample_type: int = 1
    sample_location: int = 1
    time_offset_min: int | None = field(default=None, repr=False)
    sensor_status: int | None = field(default=None, repr=False)
    context: GlucoseContext | None = field(default=None, repr=False)

    def __post_init__(self) -> None:
        if not 0 <= self.sequence_number <= 0xFFFF:
            raise ValueError("sequence number is a uint16")
        if self.time_offset_min is not None and not -0x8000 <= self.time_offset_min <= 0x7FFF:
            raise ValueError("time offset is a sint16")
        if not (0 <= self.sample_type <= 0x0F and 0 <= self.sample_location <= 0x0F):
            raise ValueError("type and sample location are nibbles")

    def measurement_value(self) -> bytes:
        """The 0x2A18 value (GATT XML glucose_measurement), 10 to 17 octets."""
        flags = 0
        out = b""
        if self.time_offset_min is not None:
            flags |= 0x01
            out += self.time_offset_min.to_bytes(2, "little", signed=True)
        if self.concentration is not None:
            flags |= 0x02 | (0x04 if self.unit is Unit.MOL_PER_L else 0)
            out += sfloat(self.concentration)
            out += bytes((self.sample_type | self.sample_location << 4,))
        if self.sensor_status is not None:
            flags |= 0x08
            out += self.sensor_status.to_bytes(2, "little")
        if self.context is not None:
            flags |= 0x10
        head = bytes((flags,)) + self.sequence_number.to_bytes(2, "little")
        return head + bytes(self.base_time) + out

    def context_value(self) -> bytes | None:
        """The 0x2A34 value sent after the measurement, or None."""
        if self.context is None:
            return None
        return self.context.value(self.sequence_number)

    def user_facing_time_key(self) -> tuple[int, ...]:
        """Base Time + Time Offset as (Y, M, D, h, m, s), for the RACP time filter."""
        t = self.base_time
        # A device-local wall time: UTC only as a zone without DST, so the sum is exact.
        base = datetime(t.year, t.month, t.day, t.hours, t.minutes, t.seconds, tzinfo=UTC)
        moment = base + timedelta(minutes=self.time_offset_min or 0)
        return (moment.year, moment.month, moment.day, moment.hour, moment.minute, moment.second)

    def with_sequence_number(self, sequence_number: int) -> GlucoseRecord:
        """The same record renumbered."""
        return GlucoseRecord(
            sequence_number,
            self.base_time,
            self.concentration,
            self.unit,
            self.sample_type,
            self.sample_location,
            self.time_offset_min,
            self.sensor_status,
            self.context,
        )


def example_records(first_sequence_number: int = 1) -> list[GlucoseRecord]:
    """Four records of one day (values chosen for tests/demo): mg/dL with context, a
    mmol/L reading from an alternate site, a control-solution test, and a meter clock set
    back by 60 minutes (negative offset) with a status bit. Numbers wrap at 0xFFFF."""
    n = first_sequence_number
    return [
        GlucoseRecord(n, DateTime(2025, 3, 14, 7, 30, 0), mg_per_dl("112"),
                      sample_type=1, sample_location=1, time_offset_min=0,
                      sensor_status=0x0000,
                      context=GlucoseContext(carbohydrate_id=1, carbohydrate_kg=Decimal("0.045"),
                                             meal=1, tester=1, health=5,
                                             exercise_duration_s=1800, exercise_intensity_pct=40,
                                             medication_id=1, medication=Decimal("0.000004"),
                                             hba1c_pct=Decimal("6.8"))),
        GlucoseRecord((n + 1) & 0xFFFF, DateTime(2025, 3, 14, 12, 15, 0), mmol_per_l("7.9"),
                      unit=Unit.MOL_PER_L, sample_type=2, sample_location=2, time_offset_min=0),
        GlucoseRecord((n + 2) & 0xFFFF, DateTime(2025, 3, 14, 12, 20, 0), mg_per_dl("120"),
                      sample_type=10, sample_location=4),
        GlucoseRecord((n + 3) & 0xFFFF, DateTime(2025, 3, 14, 20, 0, 0), mg_per_dl("98.5"),
                      sample_type=1, sample_location=1, time_offset_min=-60,
                      sensor_status=0x0001,
                      context=GlucoseContext(meal=2)),
    ]  # fmt: skip


class Glucometer(GattPeripheral):
    """A glucometer on a Bumble :class:`~bumble.device.Device` (not yet powered on).

    Args:
        device: the peripheral's Bumble device (see :class:`hil.virtual_radio.VirtualRadio`).
        records: the stored records, oldest first (sequence numbers increasing).
        info: what DIS exposes.
        local_name: the advertised complete local name.
        feature: the Glucose Feature value (uint16).
        drop_link_after_records: fault injection: drop the link after this many records of
            one report.
        drop_link_after_sequence_numbers: fault injection: drop the link right after the
            record with each of these sequence numbers was sent, once per number.
        context_first: send each context before its measurement.
        require_encryption: refuse RACP writes on an unencrypted link (ATT 0x0F).
        clock: expose this clock as Current Time 0x2A2B (None: no CTS).
        flood: misbehave: answer a report with an endless stream (:class:`Flood`).
        stamp_all_with: a broken clock: every record gets this Base Time instead of its own
            (:data:`UNSET_BASE_TIME`: never set; a valid value: stuck).
        time_fault: every record sets Sensor Status bit 11 "time fault".
        record_interval_s: pace a report at one record per this many seconds (0: unpaced).
        count_down: number each new record one below the previous one (wrapping at 0).
        racp_silent: accept RACP writes and never answer them (no record, no indication).
        battery_level: expose the Battery Service with this level (%); None: none.
    """

    NAME = "glucometer"

    def __init__(
        self,
        device: Device,
        records: Sequence[GlucoseRecord],
        *,
        info: DeviceInformation = GLUCOMETER_INFO,
        local_name: str = DEFAULT_LOCAL_NAME,
        feature: int = DEFAULT_FEATURE,
        drop_link_after_records: int | None = None,
        drop_link_after_sequence_numbers: Collection[int] = (),
        context_first: bool = False,
        require_encryption: bool = False,
        clock: EmulatedClock | None = None,
        flood: Flood | None = None,
        stamp_all_with: DateTime | None = None,
        time_fault: bool = False,
        record_interval_s: float = 0.0,
        count_down: bool = False,
        racp_silent: bool = False,
        battery_level: int | None = None,
    ) -> None:
        self.stamp_all_with = stamp_all_with
        self.time_fault = time_fault
        records = [self._stamped(r) for r in records]
        notify = Characteristic.Properties.NOTIFY
        self._measurement = unreadable_characteristic(
            GLUCOSE_MEASUREMENT, "Glucose Measurement", notify
        )
        self._context = unreadable_characteristic(
            GLUCOSE_MEASUREMENT_CONTEXT, "Glucose Measurement Context", notify
        )
        self._feature = read_only_characteristic(
            GLUCOSE_FEATURE, feature.to_bytes(2, "little"), "Glucose Feature"
        )
        self._racp = control_point_characteristic(
            RECORD_ACCESS_CONTROL_POINT, "Record Access Control Point", self._racp_write
        )
        super().__init__(
            device,
            service_uuid=GLUCOSE_SERVICE,
            info=info,
            clock=clock,
            local_name=local_name,
            advertising_interval_ms=DEFAULT_ADVERTISING_INTERVAL_MS,
            battery_level=battery_level,
        )
        self.drop_link_after_records = drop_link_after_records
        #: Sequence numbers after whose record the link is still to be dropped (once each).
        self.drop_points: set[int] = set(drop_link_after_sequence_numbers)
        self.context_first = context_first
        self.record_interval_s = record_interval_s
        self.require_encryption = require_encryption
        self.flood = flood
        #: Values sent by a flood beyond the matching records (counted, not kept).
        self.flood_sent = 0
        #: Switches (module docstring): may be flipped while the meter runs.
        self.count_down = count_down
        self.racp_silent = racp_silent
        self._records: list[GlucoseRecord] = list(records)
        self._next_seq = self._after(self._records[-1].sequence_number) if records else 0
        self.racp = RacpServer(lambda: self._records, self._delete)

        #: The RACP values written by the central, in order.
        self.requests: list[bytes] = []
        #: (characteristic 16-bit UUID, value) notified or indicated, in order.
        self.sent: list[tuple[int, bytes]] = []
        #: Set when a central enables RACP indications.
        self.subscribed = asyncio.Event()
        #: Set when a report procedure ended (final value indicated or link gone).
        self.procedure_done = asyncio.Event()
        self._request_written = asyncio.Event()

    # -- memory ---------------------------------------------------------------------------

    @property
    def stored(self) -> tuple[GlucoseRecord, ...]:
        """The records held now, oldest first."""
        return tuple(self._records)

    def add_record(self, record: GlucoseRecord) -> GlucoseRecord:
        """A new measurement, numbered (and, with a broken clock, stamped) by the meter: the
        given number is replaced."""
        numbered = self._stamped(record).with_sequence_number(self._next_seq)
        self._records.append(numbered)
        self._next_seq = self._after(self._next_seq)
        return numbered

    def _after(self, sequence_number: int) -> int:
        """The number the meter gives the record after ``sequence_number``."""
        return (sequence_number + (-1 if self.count_down else 1)) & 0xFFFF

    def _stamped(self, record: GlucoseRecord) -> GlucoseRecord:
        """``record`` as this meter's clock stamps it."""
        if self.stamp_all_with is not None:
            record = dataclasses.replace(record, base_time=self.stamp_all_with)
        if self.time_fault:
            status = (record.sensor_status or 0) | SENSOR_STATUS_TIME_FAULT
            record = dataclasses.replace(record, sensor_status=status)
        return record

    def restart_numbering(self, first_sequence_number: int) -> None:
        """Forget every record; new ones are numbered from ``first_sequence_number``."""
        self._records.clear()
        self._next_seq = first_sequence_number & 0xFFFF

    def _delete(self, sequence_number: int) -> None:
        self._records = [r for r in self._records if r.sequence_number != sequence_number]

    async def wait_for_requests(self, count: int) -> None:
        """Return once ``count`` RACP requests were written in all (wrap in a timeout)."""
        while len(self.requests) < count:
            self._request_written.clear()
            await self._request_written.wait()

    # -- life cycle -------------------------------------------------------------------------

    def _own_service(self) -> Service:
        return Service(
            UUID.from_16_bits(GLUCOSE_SERVICE, "Glucose"),
            [self._measurement, self._context, self._feature, self._racp],
        )

    def _connected(self, connection: Connection) -> None:
        self.subscribed.clear()
        self.racp.finished()

    def _disconnected(self) -> None:
        self.racp.finished()

    # -- RACP -------------------------------------------------------------------------------

    def _racp_write(self, connection: Connection, value: bytes) -> None:
        data = bytes(value)
        self.requests.append(data)
        self._request_written.set()
        if self.require_encryption and not connection.is_encrypted:
            raise ATT_Error(ATT_INSUFFICIENT_ENCRYPTION_ERROR)
        try:
            action = self.racp.handle(
                data,
                racp_indications=bool(self._cccd(connection, self._racp) & CCCD_INDICATE),
                measurement_notifications=bool(
                    self._cccd(connection, self._measurement) & CCCD_NOTIFY
                ),
            )
        except RacpAttError as exc:
            raise ATT_Error(exc.code) from None
        if self.flood is not None and self.racp.busy and data[:1] == b"\x03":
            return  # a flooding meter ignores Abort: no answer, the stream goes on
        if self.racp_silent:
            return  # written and acknowledged, never answered (the link's end clears busy)
        if isinstance(action, Report):
            self.procedure_done.clear()
            if self.flood is not None:
                self._spawn(self._flood(connection, action, self.flood), "flood")
            else:
                self._spawn(self._report(connection, action), "report")
        else:
            self._spawn(self._respond(connection, action), "respond")

    async def _respond(self, connection: Connection, action: Respond) -> None:
        if action.then is not None:
            action.then()
        await self._indicate(connection, action.value)

    async def _report(self, connection: Connection, report: Report) -> None:
        """Notify each record (measurement, context), then indicate the response code."""
        loop = asyncio.get_running_loop()
        started = loop.time()
        try:
            for index, record in enumerate(report.records, start=1):
                if self.record_interval_s and index > 1:
                    # The meter's own pace (not a test's wait): record n leaves in the n-th
                    # connection event after the request, however long sending took.
                    await asyncio.sleep(
                        max(0.0, started + (index - 1) * self.record_interval_s - loop.time())
                    )
                if self.racp.abort_requested or self._connection is not connection:
                    return
                assert isinstance(record, GlucoseRecord)
                parts = [(self._measurement, GLUCOSE_MEASUREMENT, record.measurement_value())]
                context = record.context_value()
                if context is not None:
                    entry = (self._context, GLUCOSE_MEASUREMENT_CONTEXT, context)
                    parts.insert(0, entry) if self.context_first else parts.append(entry)
                for characteristic, uuid, value in parts:
                    self.sent.append((uuid, value))
                    await self.device.notify_subscriber(connection, characteristic, value)
                if self.drop_link_after_records is not None and (
                    index >= self.drop_link_after_records
                ):
                    await self.drop_link()
                    return
                if record.sequence_number in self.drop_points:
                    self.drop_points.discard(record.sequence_number)
                    await self._sent_on_air(connection)
                    await self.drop_link()
                    return
            if not self.racp.abort_requested:
                # The procedure is over once its final response is sent: a collector may
                # write its next request as soon as that indication arrives.
                self.racp.finished()
                await self._indicate(connection, report.final)
        finally:
            self.racp.finished()
            self.procedure_done.set()

    async def _sent_on_air(self, connection: Connection) -> None:
        """Wait until the controller took every packet queued for ``connection`` (its Number
        Of Completed Packets): a cut then falls right after the last record sent, as the
        central sees it, instead of overtaking the records still queued in this host."""
        queue = self.device.host.le_acl_packet_queue
        if queue is not None and self._connection is connection:
            await queue.drain(connection.handle)

    async def _flood(self, connection: Connection, report: Report, flood: Flood) -> None:
        """Answer ``report`` without end (module docstring), until the link goes."""
        template = example_records()[1]  # no context: a record complete on its own
        first = report.records[0]
        assert isinstance(first, GlucoseRecord)
        seq = first.sequence_number
        meal = GlucoseContext(meal=1)
        head: list[GlucoseRecord] = []
        if flood is Flood.RECORDS:
            head = [r for r in report.records if isinstance(r, GlucoseRecord)]
        elif flood is Flood.RACP:
            head = [first]
        try:
            for record in head:
                value = record.measurement_value()
                self.sent.append((GLUCOSE_MEASUREMENT, value))
                await self.device.notify_subscriber(connection, self._measurement, value)
                seq = record.sequence_number
            while self._connection is connection:
                seq = (seq + 1) & 0xFFFF
                if flood is Flood.RECORDS:
                    value = template.with_sequence_number(seq).measurement_value()
                    await self.device.notify_subscriber(connection, self._measurement, value)
                elif flood is Flood.CONTEXTS:
                    value = meal.value(seq)
                    await self.device.notify_subscriber(connection, self._context, value)
                else:
                    value = response_code(Op.REPORT_STORED_RECORDS, Code.SUCCESS)
                    await self.device.indicate_subscriber(connection, self._racp, value)
                self.flood_sent += 1
                await asyncio.sleep(0)  # the meter's own pace: as fast as its stack takes them
        except Exception as exc:  # noqa: BLE001 - the link went under the stream
            logger.info("glucometer: flood ended (%s)", type(exc).__name__)
        finally:
            self.racp.finished()
            self.procedure_done.set()

    async def _indicate(self, connection: Connection, value: bytes) -> None:
        if self._connection is not connection:
            return
        self.sent.append((RECORD_ACCESS_CONTROL_POINT, value))
        try:
            await self.device.indicate_subscriber(connection, self._racp, value)
        except Exception as exc:  # noqa: BLE001 - an unconfirmed indication ends the link
            logger.warning("glucometer: RACP indication not confirmed (%s)", type(exc).__name__)
