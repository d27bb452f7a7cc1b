"""Blood Pressure Service 1.1 characteristics: the enhanced measurements and the stored record.

- Enhanced Blood Pressure Measurement 0x2B34 (Indicate): :class:`EnhancedBloodPressureMeasurement`.
- Enhanced Intermediate Cuff Pressure 0x2B35 (Notify): :class:`EnhancedIntermediateCuffPressure`.
- Blood Pressure Record 0x2B36 (Indicate): :class:`BloodPressureRecord`.

Layout of 0x2B34 / 0x2B35 (GATT Specification Supplement, enhanced_blood_pressure_measurement
and enhanced_intermediate_cuff_pressure; BPS 1.1), little-endian, in this order:

=========================  ============  ===============================
field                      type          present when
=========================  ============  ===============================
Flags                      uint8         always
Systolic, Diastolic, MAP   3 x SFLOAT    always, 0x2B34 (unit per bit 0)
Cuff Pressure              SFLOAT        always, 0x2B35 (no unused fields)
Time Stamp                 uint32        flag bit 1, s since epoch, UTC
Pulse Rate                 SFLOAT        flag bit 2, beats/min
User ID                    uint8         flag bit 3 (0xFF = unknown)
Measurement Status         16-bit        flag bit 4 (as 0x2A35)
User Facing Time           uint32        flag bit 5, s since epoch
=========================  ============  ===============================

Flag bit 6 (Epoch Start 2000) selects the epoch of both time fields: 0 = 1900-01-01,
1 = 2000-01-01. Bit 7 is RFU.

Layout of 0x2B36 (GSS blood_pressure_record): Segmentation Header uint8 (bit 0 first
segment, bit 1 last segment, bits 2-7 rolling segment counter), Sequence Number uint16,
UUID uint16 of the recorded characteristic, the recorded characteristic's octets, then an
optional E2E-CRC uint16 "over all the data of a complete single or multi-message record".

Decisions (the rules of :mod:`drivers.blood_pressure` apply: strict length both ways,
RFU flag bits kept, Measurement Status kept raw):

- **Time fields are kept as the raw uint32 seconds** (so a value re-encodes to the same
  octets) and exposed as datetimes. Time Stamp is UTC-based (GSS), hence an *aware* UTC
  datetime. User Facing Time is the time shown to the user (UTC plus the device's zone
  and DST offsets, which the value does not carry), hence a *naive* datetime: calling it
  UTC would shift the reading by the patient's offset.
- **E2E-CRC presence** of 0x2B36 is not in the value itself. It is Blood Pressure
  Feature bit 6 (E2E-CRC supported), passed as ``e2e_crc=`` like :mod:`drivers.cgm`.
  When ``e2e_crc`` is None (``homehub decode``), presence is inferred for a single-
  segment record of a characteristic we decode: the recorded value's flags fix its
  length, so exactly 0 or 2 octets may follow it. A last segment that cannot be judged
  so (unknown UUID, or the end of a multi-segment record) is refused with None.
- **Only the segment with the Last Segment bit carries the CRC**: it covers the
  complete record, so it can only be sent once the record is complete.
- **CRC algorithm and coverage** (assumed, the reference is silent): the CGMS E2E-CRC,
  CRC-16/MCRF4XX (:func:`drivers.cgm.crc16_mcrf4xx`), over every preceding octet of the
  value (header, sequence number, UUID, recorded octets). A failing CRC is rejected. The
  CRC of a multi-segment record is kept but not verified (reassembly is not done here).
- **The recorded octets are decoded only for a complete (first and last) segment** whose
  UUID is 0x2B34, 0x2B35 or 0x2A35; they must decode strictly or the record is
  rejected. Other UUIDs and partial segments keep the raw octets, never interpreted.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import ClassVar, Final, Self

from drivers.blood_pressure import (
    BloodPressureFlags,
    BloodPressureMeasurement,
    MeasurementStatus,
    PressureUnit,
)
from drivers.cgm import crc16_mcrf4xx
from drivers.errors import DecodeError
from drivers.gatt_time import DateTime
from drivers.ieee11073 import MedFloat16
from drivers.wire import (
    MAX_ATTRIBUTE_VALUE_LEN,
    Cursor,
    check_length,
    check_presence,
    flags_octet,
    optional_fields,
    optional_sfloat,
    presence_flags,
)

#: Epoch of the time fields when flag bit 6 is 0 (GSS).
EPOCH_1900: Final = datetime(1900, 1, 1, tzinfo=UTC)
#: Epoch of the time fields when flag bit 6 (Epoch Start 2000) is 1 (GSS).
EPOCH_2000: Final = datetime(2000, 1, 1, tzinfo=UTC)
_UINT32_MAX: Final = 0xFFFF_FFFF


class EnhancedBloodPressureFlags(enum.IntFlag):
    """Flags octet of 0x2B34 and 0x2B35; bit 7 is RFU and kept as sent."""

    UNITS_KPA = 0x01
    TIME_STAMP_PRESENT = 0x02
    PULSE_RATE_PRESENT = 0x04
    USER_ID_PRESENT = 0x08
    MEASUREMENT_STATUS_PRESENT = 0x10
    USER_FACING_TIME_PRESENT = 0x20
    EPOCH_START_2000 = 0x40


_Flags = EnhancedBloodPressureFlags


def _epoch(flags: int) -> datetime:
    return EPOCH_2000 if flags & _Flags.EPOCH_START_2000 else EPOCH_1900


def _layout(flags: int, pressures: tuple[str, ...]) -> list[tuple[str, int]]:
    """Fields of a 0x2B34/0x2B35 value in wire order, as announced by ``flags``."""
    optional = (
        (_Flags.TIME_STAMP_PRESENT, "Time Stamp", 4),
        (_Flags.PULSE_RATE_PRESENT, "Pulse Rate", 2),
        (_Flags.USER_ID_PRESENT, "User ID", 1),
        (_Flags.MEASUREMENT_STATUS_PRESENT, "Measurement Status", 2),
        (_Flags.USER_FACING_TIME_PRESENT, "User Facing Time", 4),
    )
    return [("Flags", 1), *((name, 2) for name in pressures), *optional_fields(flags, optional)]


@dataclass(frozen=True, slots=True)
class _Tail:
    """The optional fields common to 0x2B34 and 0x2B35, in wire order."""

    time_stamp_s: int | None
    pulse_rate: MedFloat16 | None
    user_id: int | None
    measurement_status: MeasurementStatus | None
    user_facing_time_s: int | None

    def values(
        self,
    ) -> tuple[int | None, MedFloat16 | None, int | None, MeasurementStatus | None, int | None]:
        """The fields in wire order, as the trailing constructor arguments of 0x2B34/0x2B35."""
        return (
            self.time_stamp_s,
            self.pulse_rate,
            self.user_id,
            self.measurement_status,
            self.user_facing_time_s,
        )


def _decode(
    characteristic: str, data: bytes, pressures: tuple[str, ...]
) -> tuple[EnhancedBloodPressureFlags, tuple[MedFloat16, ...], _Tail]:
    flags = flags_octet(characteristic, data)
    check_length(characteristic, data, _layout(flags, pressures), flags=flags)
    cursor = Cursor(characteristic, data, offset=1)
    values = tuple(cursor.sfloat(name) for name in pressures)
    stamp = cursor.uint(4, "Time Stamp") if flags & _Flags.TIME_STAMP_PRESENT else None
    pulse = cursor.sfloat("Pulse Rate") if flags & _Flags.PULSE_RATE_PRESENT else None
    user = cursor.u8("User ID") if flags & _Flags.USER_ID_PRESENT else None
    status = (
        MeasurementStatus(cursor.u16("Measurement Status"))
        if flags & _Flags.MEASUREMENT_STATUS_PRESENT
        else None
    )
    facing = cursor.uint(4, "User Facing Time") if flags & _Flags.USER_FACING_TIME_PRESENT else None
    cursor.finish()
    return _Flags(flags), values, _Tail(stamp, pulse, user, status, facing)


def _presence(tail: _Tail) -> tuple[tuple[_Flags, object], ...]:
    """Each presence flag of 0x2B34/0x2B35 with its field (None when absent)."""
    return (
        (_Flags.TIME_STAMP_PRESENT, tail.time_stamp_s),
        (_Flags.PULSE_RATE_PRESENT, tail.pulse_rate),
        (_Flags.USER_ID_PRESENT, tail.user_id),
        (_Flags.MEASUREMENT_STATUS_PRESENT, tail.measurement_status),
        (_Flags.USER_FACING_TIME_PRESENT, tail.user_facing_time_s),
    )


def _check(flags: int, tail: _Tail) -> None:
    """Raise ValueError unless each presence flag matches its field and fields fit."""
    check_presence(flags, _presence(tail))
    if tail.user_id is not None and not 0 <= tail.user_id <= 0xFF:
        raise ValueError("User ID does not fit uint8")
    for seconds in (tail.time_stamp_s, tail.user_facing_time_s):
        if seconds is not None and not 0 <= seconds <= _UINT32_MAX:
            raise ValueError("time field does not fit uint32")


def _flags_for(unit: PressureUnit, epoch_start_2000: bool, tail: _Tail) -> _Flags:
    flags = _Flags(0)
    if unit is PressureUnit.KPA:
        flags |= _Flags.UNITS_KPA
    if epoch_start_2000:
        flags |= _Flags.EPOCH_START_2000
    return presence_flags(flags, _presence(tail))


def _encode_tail(tail: _Tail) -> bytes:
    out = b"" if tail.time_stamp_s is None else tail.time_stamp_s.to_bytes(4, "little")
    out += optional_sfloat(tail.pulse_rate)
    out += b"" if tail.user_id is None else bytes((tail.user_id,))
    if tail.measurement_status is not None:
        out += tail.measurement_status.raw.to_bytes(2, "little")
    if tail.user_facing_time_s is not None:
        out += tail.user_facing_time_s.to_bytes(4, "little")
    return out


class _EnhancedValue:
    """Checks, optional fields, time and flag accessors shared by 0x2B34 and 0x2B35.

    Needs the fields below.
    """

    __slots__ = ()

    flags: EnhancedBloodPressureFlags
    time_stamp_s: int | None
    pulse_rate: MedFloat16 | None
    user_id: int | None
    measurement_status: MeasurementStatus | None
    user_facing_time_s: int | None

    def __post_init__(self) -> None:
        _check(self.flags, self._tail())

    def _tail(self) -> _Tail:
        return _Tail(
            self.time_stamp_s,
            self.pulse_rate,
            self.user_id,
            self.measurement_status,
            self.user_facing_time_s,
        )

    @property
    def unit(self) -> PressureUnit:
        """Unit of the pressure fields (flag bit 0)."""
        return PressureUnit.KPA if self.flags & _Flags.UNITS_KPA else PressureUnit.MMHG

    @property
    def epoch_start_2000(self) -> bool:
        """Flag bit 6: the time fields count from 2000-01-01 (else 1900-01-01)."""
        return bool(self.flags & _Flags.EPOCH_START_2000)

    @property
    def epoch(self) -> datetime:
        """The epoch of both time fields, as an aware UTC datetime."""
        return _epoch(self.flags)

    @property
    def time_stamp(self) -> datetime | None:
        """Time Stamp as an aware UTC datetime (the field is UTC-based), or None."""
        if self.time_stamp_s is None:
            return None
        return self.epoch + timedelta(seconds=self.time_stamp_s)

    @property
    def user_facing_time(self) -> datetime | None:
        """User Facing Time as a *naive* datetime: the device's local wall clock, zone unknown."""
        if self.user_facing_time_s is None:
            return None
        return (self.epoch + timedelta(seconds=self.user_facing_time_s)).replace(tzinfo=None)


def seconds_since_epoch(moment: datetime, *, epoch_start_2000: bool) -> int:
    """The uint32 time field for ``moment`` (aware: converted to UTC; naive: taken as wall clock).

    Raises:
        ValueError: sub-second part, or not representable as uint32 seconds from the epoch.
    """
    epoch = EPOCH_2000 if epoch_start_2000 else EPOCH_1900
    if moment.tzinfo is None:
        epoch = epoch.replace(tzinfo=None)
    delta = moment - epoch
    if delta.microseconds:
        raise ValueError("time fields carry whole seconds")
    seconds = delta.days * 86_400 + delta.seconds
    if not 0 <= seconds <= _UINT32_MAX:
        raise ValueError("moment is not representable as uint32 seconds since the epoch")
    return seconds


# -- 0x2B34 -------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class EnhancedBloodPressureMeasurement(_EnhancedValue):
    """Enhanced Blood Pressure Measurement 0x2B34 (BPS 1.1; GSS); 7 to 20 octets.

    ``flags`` is kept as sent (RFU bit 7 included) and must agree with which optional
    fields are present; build new values with :meth:`create`. Pressures are in
    :attr:`unit`, the pulse rate in beats/min, the time fields in seconds since
    :attr:`epoch`. Field values never appear in the repr.
    """

    flags: EnhancedBloodPressureFlags
    systolic: MedFloat16 = field(repr=False)
    diastolic: MedFloat16 = field(repr=False)
    mean_arterial_pressure: MedFloat16 = field(repr=False)
    time_stamp_s: int | None = field(default=None, repr=False)
    pulse_rate: MedFloat16 | None = field(default=None, repr=False)
    user_id: int | None = field(default=None, repr=False)
    measurement_status: MeasurementStatus | None = field(default=None, repr=False)
    user_facing_time_s: int | None = field(default=None, repr=False)

    UUID: ClassVar[int] = 0x2B34
    CHARACTERISTIC: ClassVar[str] = "0x2B34"
    MIN_SIZE: ClassVar[int] = 7
    MAX_SIZE: ClassVar[int] = 20
    PRESSURE_FIELDS: ClassVar[tuple[str, ...]] = ("Systolic", "Diastolic", "Mean Arterial Pressure")

    @classmethod
    def create(
        cls,
        *,
        unit: PressureUnit,
        systolic: MedFloat16,
        diastolic: MedFloat16,
        mean_arterial_pressure: MedFloat16,
        epoch_start_2000: bool = True,
        time_stamp_s: int | None = None,
        pulse_rate: MedFloat16 | None = None,
        user_id: int | None = None,
        measurement_status: MeasurementStatus | None = None,
        user_facing_time_s: int | None = None,
    ) -> Self:
        """Build a measurement, deriving the flags from the unit, epoch and present fields."""
        tail = _Tail(time_stamp_s, pulse_rate, user_id, measurement_status, user_facing_time_s)
        flags = _flags_for(unit, epoch_start_2000, tail)
        return cls(flags, systolic, diastolic, mean_arterial_pressure, *tail.values())

    @classmethod
    def from_bytes(cls, data: bytes) -> Self:
        """Decode a 0x2B34 value.

        Raises:
            DecodeError: shorter than its flags announce (names the missing field) or
                longer (counts the unexplained octets).
        """
        flags, (sys_, dia, map_), t = _decode(cls.CHARACTERISTIC, data, cls.PRESSURE_FIELDS)
        return cls(flags, sys_, dia, map_, *t.values())

    def __bytes__(self) -> bytes:
        """The value as sent on air."""
        head = bytes((int(self.flags),)) + bytes(self.systolic) + bytes(self.diastolic)
        return head + bytes(self.mean_arterial_pressure) + _encode_tail(self._tail())


# -- 0x2B35 -------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class EnhancedIntermediateCuffPressure(_EnhancedValue):
    """Enhanced Intermediate Cuff Pressure 0x2B35 (BPS 1.1; GSS); 3 to 16 octets.

    Unlike 0x2A36 it has no unused Diastolic/MAP fields: one SFLOAT cuff pressure.
    Notified while the cuff inflates; never a stored reading.
    """

    flags: EnhancedBloodPressureFlags
    cuff_pressure: MedFloat16 = field(repr=False)
    time_stamp_s: int | None = field(default=None, repr=False)
    pulse_rate: MedFloat16 | None = field(default=None, repr=False)
    user_id: int | None = field(default=None, repr=False)
    measurement_status: MeasurementStatus | None = field(default=None, repr=False)
    user_facing_time_s: int | None = field(default=None, repr=False)

    UUID: ClassVar[int] = 0x2B35
    CHARACTERISTIC: ClassVar[str] = "0x2B35"
    MIN_SIZE: ClassVar[int] = 3
    MAX_SIZE: ClassVar[int] = 16
    PRESSURE_FIELDS: ClassVar[tuple[str, ...]] = ("Cuff Pressure",)

    @classmethod
    def create(
        cls,
        *,
        unit: PressureUnit,
        cuff_pressure: MedFloat16,
        epoch_start_2000: bool = True,
        time_stamp_s: int | None = None,
        pulse_rate: MedFloat16 | None = None,
        user_id: int | None = None,
        measurement_status: MeasurementStatus | None = None,
        user_facing_time_s: int | None = None,
    ) -> Self:
        """Build a value, deriving the flags from the unit, epoch and present fields."""
        tail = _Tail(time_stamp_s, pulse_rate, user_id, measurement_status, user_facing_time_s)
        flags = _flags_for(unit, epoch_start_2000, tail)
        return cls(flags, cuff_pressure, *tail.values())

    @classmethod
    def from_bytes(cls, data: bytes) -> Self:
        """Decode a 0x2B35 value (rules of :meth:`EnhancedBloodPressureMeasurement.from_bytes`)."""
        flags, (cuff,), t = _decode(cls.CHARACTERISTIC, data, cls.PRESSURE_FIELDS)
        return cls(flags, cuff, *t.values())

    def __bytes__(self) -> bytes:
        """The value as sent on air."""
        return bytes((int(self.flags),)) + bytes(self.cuff_pressure) + _encode_tail(self._tail())


# -- 0x2B36 -------------------------------------------------------------------------------

#: A recorded value this module decodes inside a Blood Pressure Record.
RecordedValue = (
    EnhancedBloodPressureMeasurement | EnhancedIntermediateCuffPressure | BloodPressureMeasurement
)

_RECORDED: Final[dict[int, type[RecordedValue]]] = {
    0x2B34: EnhancedBloodPressureMeasurement,
    0x2B35: EnhancedIntermediateCuffPressure,
    0x2A35: BloodPressureMeasurement,
}

#: Segmentation Header, Sequence Number, UUID.
RECORD_HEADER_SIZE: Final = 5
CRC_SIZE: Final = 2


class SegmentationHeaderBits(enum.IntFlag):
    """Segmentation Header bits 0-1; bits 2-7 are the rolling segment counter."""

    FIRST_SEGMENT = 0x01
    LAST_SEGMENT = 0x02


_COUNTER_SHIFT: Final = 2
_COUNTER_MAX: Final = 63
_RECORD_CHARACTERISTIC: Final = "0x2B36"


def _bpm_size(flags: int) -> int:
    """Length of a 0x2A35 value with these flags (BPS 1.0 §3.1)."""
    optional = (
        (BloodPressureFlags.TIME_STAMP_PRESENT, DateTime.SIZE),
        (BloodPressureFlags.PULSE_RATE_PRESENT, 2),
        (BloodPressureFlags.USER_ID_PRESENT, 1),
        (BloodPressureFlags.MEASUREMENT_STATUS_PRESENT, 2),
    )
    return BloodPressureMeasurement.MIN_SIZE + sum(n for flag, n in optional if flags & flag)


def _recorded_size(uuid: int, recorded: bytes) -> int | None:
    """Length the recorded value's own flags announce, or None when we cannot tell."""
    if uuid not in _RECORDED or not recorded:
        return None
    flags = recorded[0]
    if uuid == BloodPressureMeasurement.UUID:
        return _bpm_size(flags)
    pressures = (
        EnhancedBloodPressureMeasurement.PRESSURE_FIELDS
        if uuid == EnhancedBloodPressureMeasurement.UUID
        else EnhancedIntermediateCuffPressure.PRESSURE_FIELDS
    )
    return sum(size for _, size in _layout(flags, pressures))


@dataclass(frozen=True, slots=True)
class BloodPressureRecord:
    """Blood Pressure Record 0x2B36 (BPS 1.1; GSS): one segment of a stored record.

    ``recorded`` holds the recorded characteristic's octets of this segment, raw;
    :attr:`value` decodes them for a complete record of a known UUID. ``e2e_crc`` is
    the CRC as sent, or None when absent. Field values never appear in the repr.
    """

    segmentation_header: int
    sequence_number: int
    recorded_uuid: int
    recorded: bytes = field(repr=False)
    e2e_crc: int | None = field(default=None, repr=False)

    UUID: ClassVar[int] = 0x2B36
    CHARACTERISTIC: ClassVar[str] = _RECORD_CHARACTERISTIC

    def __post_init__(self) -> None:
        if not 0 <= self.segmentation_header <= 0xFF:
            raise ValueError("Segmentation Header does not fit one octet")
        if not 0 <= self.sequence_number <= 0xFFFF:
            raise ValueError("Sequence Number does not fit uint16")
        if not 0 <= self.recorded_uuid <= 0xFFFF:
            raise ValueError("UUID does not fit 16 bits")
        if not self.recorded:
            raise ValueError("a record carries at least one recorded octet")
        if self.e2e_crc is not None:
            if not 0 <= self.e2e_crc <= 0xFFFF:
                raise ValueError("E2E-CRC does not fit uint16")
            if not self.last_segment:
                raise ValueError("only the last segment carries the E2E-CRC")

    @classmethod
    def create(
        cls,
        *,
        sequence_number: int,
        value: RecordedValue,
        e2e_crc: bool = False,
        rolling_segment_counter: int = 0,
    ) -> Self:
        """Build a single-segment record of ``value``, with a fresh E2E-CRC when ``e2e_crc``."""
        if not 0 <= rolling_segment_counter <= _COUNTER_MAX:
            raise ValueError("rolling segment counter does not fit 6 bits")
        header = (rolling_segment_counter << _COUNTER_SHIFT) | int(
            SegmentationHeaderBits.FIRST_SEGMENT | SegmentationHeaderBits.LAST_SEGMENT
        )
        record = cls(header, sequence_number, value.UUID, bytes(value))
        if not e2e_crc:
            return record
        return cls(
            header, sequence_number, value.UUID, record.recorded, crc16_mcrf4xx(bytes(record))
        )

    @classmethod
    def from_bytes(cls, data: bytes, *, e2e_crc: bool | None = None) -> Self:
        """Decode one 0x2B36 indication.

        Args:
            data: the indication value.
            e2e_crc: Blood Pressure Feature bit 6 when known: the last segment must (or
                must not) end with an E2E-CRC. When None, presence is inferred from the
                recorded value's length, which needs a complete record of a known UUID.

        Raises:
            DecodeError: header fields missing, no recorded octets, E2E-CRC presence
                unknowable or wrong, a CRC that fails, or a recorded value that does not
                decode.
        """
        char = cls.CHARACTERISTIC
        header_layout = [("Segmentation Header", 1), ("Sequence Number", 2), ("UUID", 2)]
        if len(data) > MAX_ATTRIBUTE_VALUE_LEN:
            raise DecodeError(char, f"longer than {MAX_ATTRIBUTE_VALUE_LEN} octets")
        check_length(char, data[:RECORD_HEADER_SIZE], header_layout)
        cursor = Cursor(char, data)
        header = cursor.u8("Segmentation Header")
        sequence = cursor.u16("Sequence Number")
        uuid = cursor.u16("UUID")
        body = data[RECORD_HEADER_SIZE:]
        last = bool(header & SegmentationHeaderBits.LAST_SEGMENT)
        complete = last and bool(header & SegmentationHeaderBits.FIRST_SEGMENT)
        has_crc = cls._crc_present(uuid, body, last=last, complete=complete, e2e_crc=e2e_crc)
        recorded_len = len(body) - (CRC_SIZE if has_crc else 0)
        if recorded_len < 1:
            crc_size = CRC_SIZE if has_crc else 0
            raise DecodeError(
                char,
                f"Recorded Characteristic missing: require {RECORD_HEADER_SIZE + 1 + crc_size}"
                f" octets, got {len(data)}",
                RECORD_HEADER_SIZE,
            )
        recorded = cursor.take(recorded_len, "Recorded Characteristic")
        crc = cursor.u16("E2E-CRC") if has_crc else None
        cursor.finish()
        if crc is not None and complete and crc != crc16_mcrf4xx(data[:-CRC_SIZE]):
            raise DecodeError(char, "E2E-CRC does not match the record", len(data) - CRC_SIZE)
        record = cls(header, sequence, uuid, recorded, crc)
        if complete and uuid in _RECORDED:
            try:
                _RECORDED[uuid].from_bytes(recorded)
            except DecodeError as exc:
                raise DecodeError(
                    char,
                    f"recorded {exc.characteristic}: {exc.reason}",
                    RECORD_HEADER_SIZE + (exc.offset or 0),
                ) from None
        return record

    @staticmethod
    def _crc_present(
        uuid: int, body: bytes, *, last: bool, complete: bool, e2e_crc: bool | None
    ) -> bool:
        if not last:
            return False
        if e2e_crc is not None:
            return e2e_crc
        expected = _recorded_size(uuid, body) if complete else None
        if expected is not None and len(body) in (expected, expected + CRC_SIZE):
            return len(body) == expected + CRC_SIZE
        if expected is not None:
            # Neither with nor without a CRC: let the strict decode name the problem.
            return False
        raise DecodeError(
            _RECORD_CHARACTERISTIC,
            "E2E-CRC presence unknown for this segment: pass Blood Pressure Feature bit 6",
            RECORD_HEADER_SIZE,
        )

    def __bytes__(self) -> bytes:
        """The indication value as sent on air, the E2E-CRC as stored."""
        out = bytes((self.segmentation_header,)) + self.sequence_number.to_bytes(2, "little")
        out += self.recorded_uuid.to_bytes(2, "little") + self.recorded
        if self.e2e_crc is not None:
            out += self.e2e_crc.to_bytes(2, "little")
        return out

    @property
    def first_segment(self) -> bool:
        """Segmentation Header bit 0."""
        return bool(self.segmentation_header & SegmentationHeaderBits.FIRST_SEGMENT)

    @property
    def last_segment(self) -> bool:
        """Segmentation Header bit 1."""
        return bool(self.segmentation_header & SegmentationHeaderBits.LAST_SEGMENT)

    @property
    def rolling_segment_counter(self) -> int:
        """Segmentation Header bits 2-7 (0-63)."""
        return self.segmentation_header >> _COUNTER_SHIFT

    @property
    def complete(self) -> bool:
        """Both first and last segment: the whole recorded value is in this indication."""
        return self.first_segment and self.last_segment

    @property
    def e2e_crc_verified(self) -> bool:
        """A CRC is present and matches (complete records only; ``from_bytes`` rejects bad ones)."""
        return (
            self.e2e_crc is not None
            and self.complete
            and self.e2e_crc == crc16_mcrf4xx(bytes(self)[:-CRC_SIZE])
        )

    @property
    def value(self) -> RecordedValue | None:
        """The recorded value decoded, for a complete record of 0x2B34/0x2B35/0x2A35; else None.

        Raises:
            DecodeError: the recorded octets do not decode (not possible after ``from_bytes``).
        """
        kind = _RECORDED.get(self.recorded_uuid)
        if kind is None or not self.complete:
            return None
        return kind.from_bytes(self.recorded)
