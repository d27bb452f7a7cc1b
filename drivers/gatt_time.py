"""GATT time characteristics: Date Time 0x2A08, Current Time 0x2A2B, Local Time Information 0x2A0F.

Date Time is also the time-stamp field of the blood-pressure, glucose and pulse-oximetry
measurements. All of them are *device-local wall-clock time with no zone*.

**Decision: decoding keeps raw fields; calendar validation is the consumer's.**
A 7-octet Date Time always decodes, whatever its field values: year 0 / month 0 /
day 0 mean "unknown" (GATT XML date_time), and real devices send out-of-range
values (year 4, 31 February; im97mori's tests). Rejecting them would throw away
the *reading* for a bad *time stamp*. Instead:

- :meth:`DateTime.to_datetime` returns a naive :class:`~datetime.datetime` or ``None``;
- :attr:`DateTime.problem` says why it is not usable (``None`` when it is).

The pipeline then decides (e.g. stamp with the hub's receive time and flag it).
Only the length is checked strictly.
"""

from __future__ import annotations

import datetime as dt
import enum
from dataclasses import dataclass, field
from typing import ClassVar, Final, Self

from drivers.wire import Cursor, check_length

#: GATT XML date_time: the year field's range when known (0 means unknown).
YEAR_MIN: Final = 1582
YEAR_MAX: Final = 9999

#: 0x2A0F Time Zone value meaning "unknown" [MEM, spec facts §2].
TIME_ZONE_UNKNOWN: Final = -128
#: 0x2A0F Time Zone range in 15-minute steps (UTC-12:00 … UTC+14:00).
TIME_ZONE_MIN: Final = -48
TIME_ZONE_MAX: Final = 56
TIME_ZONE_STEP_MIN: Final = 15
#: 0x2A0F DST Offset codes (GATT XML dst_offset) in minutes; 255 means unknown.
DST_OFFSET_MIN_BY_CODE: Final = {0: 0, 2: 30, 4: 60, 8: 120}
DST_OFFSET_UNKNOWN: Final = 255

#: 1/256 s in microseconds, for Fractions256 (exact: 1_000_000 / 256 = 3906.25).
_US_PER_SECOND: Final = 1_000_000


@dataclass(frozen=True, slots=True)
class DateTime:
    """Date Time 0x2A08 (GATT XML date_time): 7 octets, raw fields, device-local time.

    ``year`` uint16 (0 = unknown), then uint8 ``month`` (0 = unknown), ``day``
    (0 = unknown), ``hours``, ``minutes``, ``seconds``. Values are kept as sent;
    see :attr:`problem`. The repr hides the fields (a time stamp is part of a reading).
    """

    year: int = field(repr=False)
    month: int = field(repr=False)
    day: int = field(repr=False)
    hours: int = field(repr=False)
    minutes: int = field(repr=False)
    seconds: int = field(repr=False)

    UUID: ClassVar[int] = 0x2A08
    SIZE: ClassVar[int] = 7

    def __post_init__(self) -> None:
        if not 0 <= self.year <= 0xFFFF:
            raise ValueError("Date Time year does not fit uint16")
        for value in (self.month, self.day, self.hours, self.minutes, self.seconds):
            if not 0 <= value <= 0xFF:
                raise ValueError("Date Time field does not fit uint8")

    @classmethod
    def read(cls, cursor: Cursor, name: str = "Time Stamp") -> Self:
        """Read the 7 octets at the cursor as the field ``name``."""
        raw = cursor.take(cls.SIZE, name)
        return cls(int.from_bytes(raw[0:2], "little"), raw[2], raw[3], raw[4], raw[5], raw[6])

    @classmethod
    def from_bytes(cls, data: bytes, characteristic: str = "0x2A08") -> Self:
        """Decode a Date Time value of exactly 7 octets.

        Raises:
            DecodeError: not exactly 7 octets.
        """
        check_length(characteristic, data, [("Date Time", cls.SIZE)])
        return cls.read(Cursor(characteristic, data), "Date Time")

    @classmethod
    def from_datetime(cls, value: dt.datetime) -> Self:
        """Encode a naive wall-clock datetime (sub-second part dropped).

        Raises:
            ValueError: ``value`` is timezone-aware (devices keep local time with no
                zone; convert first) or its year is before 1582.
        """
        if value.tzinfo is not None:
            raise ValueError("Date Time holds local wall-clock time; pass a naive datetime")
        if value.year < YEAR_MIN:
            raise ValueError("Date Time cannot hold years before 1582")
        return cls(value.year, value.month, value.day, value.hour, value.minute, value.second)

    def __bytes__(self) -> bytes:
        """The 7 octets as sent on the wire."""
        return self.year.to_bytes(2, "little") + bytes(
            (self.month, self.day, self.hours, self.minutes, self.seconds)
        )

    @property
    def problem(self) -> str | None:
        """Why :meth:`to_datetime` gives ``None`` (no field values quoted), or ``None``."""
        if self.year == 0 or self.month == 0 or self.day == 0:
            return "date unknown (year, month or day is 0)"
        if not YEAR_MIN <= self.year <= YEAR_MAX:
            return "year outside 1582..9999"
        if self.month > 12:
            return "month outside 1..12"
        if self.hours > 23 or self.minutes > 59 or self.seconds > 59:
            return "time of day out of range"
        try:
            dt.date(self.year, self.month, self.day)
        except ValueError:
            return "day does not exist in its month"
        return None

    @property
    def is_usable(self) -> bool:
        """True when the fields name a real instant (:attr:`problem` is None)."""
        return self.problem is None

    def to_datetime(self) -> dt.datetime | None:
        """The naive device-local datetime, or None when :attr:`problem` is set."""
        if self.problem is not None:
            return None
        return dt.datetime(  # noqa: DTZ001 - device-local time carries no zone (GATT)
            self.year, self.month, self.day, self.hours, self.minutes, self.seconds
        )

    def as_dict(self) -> dict[str, int]:
        """The raw fields under their JSON names (year … seconds)."""
        return {
            "year": self.year,
            "month": self.month,
            "day": self.day,
            "hours": self.hours,
            "minutes": self.minutes,
            "seconds": self.seconds,
        }


class DayOfWeek(enum.IntEnum):
    """Day of Week 0x2A09: 0 unknown, 1 Monday … 7 Sunday (values 8-255 RFU)."""

    UNKNOWN = 0
    MONDAY = 1
    TUESDAY = 2
    WEDNESDAY = 3
    THURSDAY = 4
    FRIDAY = 5
    SATURDAY = 6
    SUNDAY = 7


class AdjustReason(enum.IntFlag):
    """Current Time 0x2A2B Adjust Reason (GATT XML current_time); bits 4-7 RFU, kept raw."""

    MANUAL_TIME_UPDATE = 0x01
    EXTERNAL_REFERENCE_TIME_UPDATE = 0x02
    CHANGE_OF_TIME_ZONE = 0x04
    CHANGE_OF_DST = 0x08


@dataclass(frozen=True, slots=True)
class CurrentTime:
    """Current Time 0x2A2B (CTS 1.1, GATT XML current_time): 10 octets.

    Exact Time 256 (Day Date Time = Date Time + Day of Week, then Fractions256 in
    1/256 s) followed by Adjust Reason. The hub reads it to measure the device's
    clock skew (HL7 PHD IG) and may write it to set the clock.
    """

    date_time: DateTime
    day_of_week: int = field(repr=False)
    fractions256: int = field(repr=False)
    adjust_reason: AdjustReason

    UUID: ClassVar[int] = 0x2A2B
    SIZE: ClassVar[int] = 10
    _LAYOUT: ClassVar[list[tuple[str, int]]] = [
        ("Date Time", 7),
        ("Day of Week", 1),
        ("Fractions256", 1),
        ("Adjust Reason", 1),
    ]

    def __post_init__(self) -> None:
        for value in (self.day_of_week, self.fractions256, int(self.adjust_reason)):
            if not 0 <= value <= 0xFF:
                raise ValueError("Current Time field does not fit uint8")

    @classmethod
    def from_bytes(cls, data: bytes) -> Self:
        """Decode exactly 10 octets; field values are kept raw (see module docstring).

        Raises:
            DecodeError: not exactly 10 octets.
        """
        check_length("0x2A2B", data, cls._LAYOUT)
        cursor = Cursor("0x2A2B", data)
        date_time = DateTime.read(cursor, "Date Time")
        return cls(
            date_time,
            cursor.u8("Day of Week"),
            cursor.u8("Fractions256"),
            AdjustReason(cursor.u8("Adjust Reason")),
        )

    @classmethod
    def from_datetime(cls, value: dt.datetime, adjust_reason: int = 0) -> Self:
        """Encode a naive wall-clock datetime, with its weekday and 1/256 s fraction.

        ``adjust_reason`` is an :class:`AdjustReason` (or its raw octet); none by default.
        """
        fraction = value.microsecond * 256 // _US_PER_SECOND
        return cls(
            DateTime.from_datetime(value), value.isoweekday(), fraction, AdjustReason(adjust_reason)
        )

    def __bytes__(self) -> bytes:
        """The 10 octets as sent on the wire."""
        return bytes(self.date_time) + bytes(
            (self.day_of_week, self.fractions256, int(self.adjust_reason))
        )

    @property
    def weekday(self) -> DayOfWeek | None:
        """The Day of Week field as an enum, None for RFU values 8-255."""
        try:
            return DayOfWeek(self.day_of_week)
        except ValueError:
            return None

    @property
    def problem(self) -> str | None:
        """Why :meth:`to_datetime` gives None, or None (see :attr:`DateTime.problem`)."""
        return self.date_time.problem

    def to_datetime(self) -> dt.datetime | None:
        """The naive device-local datetime including the 1/256 s fraction, or None."""
        base = self.date_time.to_datetime()
        if base is None:
            return None
        return base.replace(microsecond=self.fractions256 * _US_PER_SECOND // 256)


@dataclass(frozen=True, slots=True)
class LocalTimeInformation:
    """Local Time Information 0x2A0F (GATT XML local_time_information): 2 octets.

    ``time_zone`` sint8 in 15-minute steps from UTC (-48..+56, -128 unknown);
    ``dst_offset`` uint8 code (0 standard, 2 +0.5 h, 4 +1 h, 8 +2 h, 255 unknown).
    Raw codes are kept; the ``*_min`` properties are None when unknown or out of range.
    """

    time_zone: int
    dst_offset: int

    UUID: ClassVar[int] = 0x2A0F
    SIZE: ClassVar[int] = 2

    def __post_init__(self) -> None:
        if not -128 <= self.time_zone <= 127 or not 0 <= self.dst_offset <= 0xFF:
            raise ValueError("Local Time Information field does not fit its type")

    @classmethod
    def from_bytes(cls, data: bytes) -> Self:
        """Decode exactly 2 octets.

        Raises:
            DecodeError: not exactly 2 octets.
        """
        check_length("0x2A0F", data, [("Time Zone", 1), ("DST Offset", 1)])
        cursor = Cursor("0x2A0F", data)
        return cls(cursor.sint(1, "Time Zone"), cursor.u8("DST Offset"))

    def __bytes__(self) -> bytes:
        """The 2 octets as sent on the wire."""
        return self.time_zone.to_bytes(1, "little", signed=True) + bytes((self.dst_offset,))

    @property
    def time_zone_offset_min(self) -> int | None:
        """Standard-time offset from UTC in minutes, None when unknown or out of range."""
        if not TIME_ZONE_MIN <= self.time_zone <= TIME_ZONE_MAX:
            return None
        return self.time_zone * TIME_ZONE_STEP_MIN

    @property
    def dst_offset_min(self) -> int | None:
        """Daylight-saving offset in minutes, None when unknown or an undefined code."""
        return DST_OFFSET_MIN_BY_CODE.get(self.dst_offset)

    @property
    def problem(self) -> str | None:
        """Why the offsets are not usable, or None."""
        if self.time_zone == TIME_ZONE_UNKNOWN or self.dst_offset == DST_OFFSET_UNKNOWN:
            return "time zone or DST offset unknown"
        if self.time_zone_offset_min is None:
            return "time zone outside -48..+56 quarter hours"
        if self.dst_offset_min is None:
            return "DST offset is not a defined code"
        return None
