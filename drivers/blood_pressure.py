"""Blood Pressure Service 0x1810 (BPS 1.0) characteristics.

- Blood Pressure Measurement 0x2A35 (Indicate): :class:`BloodPressureMeasurement`.
- Intermediate Cuff Pressure 0x2A36 (Notify): :class:`IntermediateCuffPressure`.
- Blood Pressure Feature 0x2A49 (Read): :class:`BloodPressureFeature`.

Layout of 0x2A35 and 0x2A36 (GATT XML blood_pressure_measurement; BPS 1.0 §3.1/§3.2),
little-endian, in this order:

=========================  ============  ===============================
field                      type          present when
=========================  ============  ===============================
Flags                      uint8         always
Systolic / cuff pressure   SFLOAT        always (unit per flag bit 0)
Diastolic / unused         SFLOAT        always
MAP / unused               SFLOAT        always
Time Stamp                 Date Time     flag bit 1
Pulse Rate                 SFLOAT        flag bit 2
User ID                    uint8         flag bit 3
Measurement Status         16-bit        flag bit 4
=========================  ============  ===============================

Decisions:

- **Strict length.** A value shorter than its flags announce is rejected, naming the
  missing field; a longer one is rejected too ("never accept a value with bytes left
  unexplained by its flags"): an extra field we cannot name may be a field we would
  misread, and a reading is either fully understood or not stored.
- **RFU flag bits (5-7) are accepted and kept** (the Core convention: senders set
  them to 0, receivers ignore them). They add no fields, so with strict length a
  future field behind them is still rejected as trailing octets.
- **Measurement Status keeps the raw 16-bit word**, RFU bits included (devices set
  them), and names the defined bits and the 2-bit pulse-rate-range field.
- **ICP's unused Diastolic/MAP fields** shall be NaN (GSS) but are often 0x0000;
  they are kept raw for round-tripping and never interpreted.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass, field
from typing import ClassVar, Final, Self

from drivers.gatt_time import DateTime
from drivers.ieee11073 import MedFloat16
from drivers.wire import (
    Cursor,
    check_length,
    check_presence,
    flags_octet,
    optional_fields,
    optional_sfloat,
    presence_flags,
)

#: User ID value meaning "unknown user" (BPS 1.0 §3.1.1.6).
UNKNOWN_USER_ID: Final = 0xFF


class BloodPressureFlags(enum.IntFlag):
    """Flags octet of 0x2A35 and 0x2A36; bits 5-7 are RFU and kept as sent."""

    UNITS_KPA = 0x01
    TIME_STAMP_PRESENT = 0x02
    PULSE_RATE_PRESENT = 0x04
    USER_ID_PRESENT = 0x08
    MEASUREMENT_STATUS_PRESENT = 0x10


#: Short name for :class:`BloodPressureFlags`.
Flags = BloodPressureFlags


class PressureUnit(enum.Enum):
    """Unit of the pressure fields (flag bit 0); the value is the JSON code."""

    MMHG = "mmHg"
    KPA = "kPa"


class MeasurementStatusBit(enum.IntFlag):
    """The single-bit conditions of the Measurement Status word (BPS 1.0 §3.1.1.7)."""

    BODY_MOVEMENT_DETECTED = 0x0001
    CUFF_TOO_LOOSE = 0x0002
    IRREGULAR_PULSE_DETECTED = 0x0004
    IMPROPER_MEASUREMENT_POSITION = 0x0020


class PulseRateRange(enum.IntEnum):
    """Measurement Status bits 3-4, a 2-bit field."""

    WITHIN_RANGE = 0
    EXCEEDS_UPPER_LIMIT = 1
    BELOW_LOWER_LIMIT = 2
    RESERVED = 3


_PULSE_RATE_RANGE_SHIFT: Final = 3
_PULSE_RATE_RANGE_MASK: Final = 0x0018
_STATUS_DEFINED_MASK: Final = 0x003F
_STATUS_BITS_MASK: Final = 0x0027  # bits 0, 1, 2 and 5


@dataclass(frozen=True, slots=True)
class MeasurementStatus:
    """Measurement Status word of 0x2A35/0x2A36, kept raw (RFU bits 6-15 included)."""

    raw: int

    def __post_init__(self) -> None:
        if not 0 <= self.raw <= 0xFFFF:
            raise ValueError("Measurement Status does not fit 16 bits")

    @property
    def bits(self) -> MeasurementStatusBit:
        """The defined single-bit conditions that are set."""
        return MeasurementStatusBit(self.raw & _STATUS_BITS_MASK)

    @property
    def pulse_rate_range(self) -> PulseRateRange:
        """The 2-bit pulse-rate-range field (bits 3-4)."""
        return PulseRateRange((self.raw & _PULSE_RATE_RANGE_MASK) >> _PULSE_RATE_RANGE_SHIFT)

    @property
    def rfu_bits(self) -> int:
        """Bits 6-15 as sent (reserved; non-zero on some devices)."""
        return self.raw & ~_STATUS_DEFINED_MASK & 0xFFFF

    @property
    def body_movement_detected(self) -> bool:
        """Bit 0."""
        return bool(self.raw & MeasurementStatusBit.BODY_MOVEMENT_DETECTED)

    @property
    def cuff_too_loose(self) -> bool:
        """Bit 1."""
        return bool(self.raw & MeasurementStatusBit.CUFF_TOO_LOOSE)

    @property
    def irregular_pulse_detected(self) -> bool:
        """Bit 2."""
        return bool(self.raw & MeasurementStatusBit.IRREGULAR_PULSE_DETECTED)

    @property
    def improper_measurement_position(self) -> bool:
        """Bit 5."""
        return bool(self.raw & MeasurementStatusBit.IMPROPER_MEASUREMENT_POSITION)


# -- shared layout of 0x2A35 / 0x2A36 ---------------------------------------------------


def _layout(flags: int, first: str, second: str, third: str) -> list[tuple[str, int]]:
    """Fields of a BPM/ICP value in wire order, as announced by ``flags``."""
    optional = (
        (BloodPressureFlags.TIME_STAMP_PRESENT, "Time Stamp", DateTime.SIZE),
        (BloodPressureFlags.PULSE_RATE_PRESENT, "Pulse Rate", 2),
        (BloodPressureFlags.USER_ID_PRESENT, "User ID", 1),
        (BloodPressureFlags.MEASUREMENT_STATUS_PRESENT, "Measurement Status", 2),
    )
    return [("Flags", 1), (first, 2), (second, 2), (third, 2), *optional_fields(flags, optional)]


@dataclass(frozen=True, slots=True)
class _Decoded:
    """Fields common to 0x2A35 and 0x2A36, as read by :func:`_decode`."""

    flags: BloodPressureFlags
    pressures: tuple[MedFloat16, MedFloat16, MedFloat16]
    time_stamp: DateTime | None
    pulse_rate: MedFloat16 | None
    user_id: int | None
    measurement_status: MeasurementStatus | None


def _decode(characteristic: str, data: bytes, names: tuple[str, str, str]) -> _Decoded:
    flags = flags_octet(characteristic, data)
    check_length(characteristic, data, _layout(flags, *names), flags=flags)
    cursor = Cursor(characteristic, data, offset=1)
    pressures = (cursor.sfloat(names[0]), cursor.sfloat(names[1]), cursor.sfloat(names[2]))
    time_stamp = DateTime.read(cursor) if flags & BloodPressureFlags.TIME_STAMP_PRESENT else None
    pulse_rate = (
        cursor.sfloat("Pulse Rate") if flags & BloodPressureFlags.PULSE_RATE_PRESENT else None
    )
    user_id = cursor.u8("User ID") if flags & BloodPressureFlags.USER_ID_PRESENT else None
    status = (
        MeasurementStatus(cursor.u16("Measurement Status"))
        if flags & BloodPressureFlags.MEASUREMENT_STATUS_PRESENT
        else None
    )
    cursor.finish()
    return _Decoded(BloodPressureFlags(flags), pressures, time_stamp, pulse_rate, user_id, status)


def _presence(
    time_stamp: DateTime | None,
    pulse_rate: MedFloat16 | None,
    user_id: int | None,
    measurement_status: MeasurementStatus | None,
) -> tuple[tuple[BloodPressureFlags, object], ...]:
    """Each presence flag of 0x2A35/0x2A36 with its field (None when absent)."""
    return (
        (BloodPressureFlags.TIME_STAMP_PRESENT, time_stamp),
        (BloodPressureFlags.PULSE_RATE_PRESENT, pulse_rate),
        (BloodPressureFlags.USER_ID_PRESENT, user_id),
        (BloodPressureFlags.MEASUREMENT_STATUS_PRESENT, measurement_status),
    )


def _check_flags(
    flags: int,
    time_stamp: DateTime | None,
    pulse_rate: MedFloat16 | None,
    user_id: int | None,
    measurement_status: MeasurementStatus | None,
) -> None:
    """Raise ValueError unless each presence flag matches its field."""
    check_presence(flags, _presence(time_stamp, pulse_rate, user_id, measurement_status))
    if user_id is not None and not 0 <= user_id <= 0xFF:
        raise ValueError("User ID does not fit uint8")


def _flags_for(
    unit: PressureUnit,
    time_stamp: DateTime | None,
    pulse_rate: MedFloat16 | None,
    user_id: int | None,
    measurement_status: MeasurementStatus | None,
) -> BloodPressureFlags:
    flags = BloodPressureFlags(0)
    if unit is PressureUnit.KPA:
        flags |= BloodPressureFlags.UNITS_KPA
    return presence_flags(flags, _presence(time_stamp, pulse_rate, user_id, measurement_status))


def _encode_tail(
    time_stamp: DateTime | None,
    pulse_rate: MedFloat16 | None,
    user_id: int | None,
    measurement_status: MeasurementStatus | None,
) -> bytes:
    out = b"" if time_stamp is None else bytes(time_stamp)
    out += optional_sfloat(pulse_rate)
    out += b"" if user_id is None else bytes((user_id,))
    if measurement_status is not None:
        out += measurement_status.raw.to_bytes(2, "little")
    return out


class _BloodPressureValue:
    """Checks, encoding and unit shared by 0x2A35 and 0x2A36 (needs the fields below)."""

    __slots__ = ()

    flags: BloodPressureFlags
    time_stamp: DateTime | None
    pulse_rate: MedFloat16 | None
    user_id: int | None
    measurement_status: MeasurementStatus | None

    def __post_init__(self) -> None:
        _check_flags(
            self.flags, self.time_stamp, self.pulse_rate, self.user_id, self.measurement_status
        )

    def _encode(self, *pressures: MedFloat16) -> bytes:
        """The value as sent on air, given its three pressure fields in wire order."""
        head = bytes((int(self.flags),)) + b"".join(bytes(p) for p in pressures)
        return head + _encode_tail(
            self.time_stamp, self.pulse_rate, self.user_id, self.measurement_status
        )

    @property
    def unit(self) -> PressureUnit:
        """Unit of the pressure fields (flag bit 0): systolic, diastolic and MAP, or cuff."""
        return PressureUnit.KPA if self.flags & BloodPressureFlags.UNITS_KPA else PressureUnit.MMHG


# -- 0x2A35 -------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class BloodPressureMeasurement(_BloodPressureValue):
    """Blood Pressure Measurement 0x2A35 (BPS 1.0 §3.1; GATT XML); 7 to 19 octets.

    ``flags`` is kept as sent (RFU bits included) and must agree with which optional
    fields are present; build new values with :meth:`create`. Pressures are in
    :attr:`unit`, the pulse rate in beats/min. Field values never appear in the repr.
    """

    flags: BloodPressureFlags
    systolic: MedFloat16 = field(repr=False)
    diastolic: MedFloat16 = field(repr=False)
    mean_arterial_pressure: MedFloat16 = field(repr=False)
    time_stamp: DateTime | None = field(default=None, repr=False)
    pulse_rate: MedFloat16 | None = field(default=None, repr=False)
    user_id: int | None = field(default=None, repr=False)
    measurement_status: MeasurementStatus | None = field(default=None, repr=False)

    UUID: ClassVar[int] = 0x2A35
    CHARACTERISTIC: ClassVar[str] = "0x2A35"
    MIN_SIZE: ClassVar[int] = 7
    MAX_SIZE: ClassVar[int] = 19

    @classmethod
    def create(
        cls,
        *,
        unit: PressureUnit,
        systolic: MedFloat16,
        diastolic: MedFloat16,
        mean_arterial_pressure: MedFloat16,
        time_stamp: DateTime | None = None,
        pulse_rate: MedFloat16 | None = None,
        user_id: int | None = None,
        measurement_status: MeasurementStatus | None = None,
    ) -> Self:
        """Build a measurement, deriving the flags from the unit and present fields."""
        flags = _flags_for(unit, time_stamp, pulse_rate, user_id, measurement_status)
        return cls(
            flags,
            systolic,
            diastolic,
            mean_arterial_pressure,
            time_stamp,
            pulse_rate,
            user_id,
            measurement_status,
        )

    @classmethod
    def from_bytes(cls, data: bytes) -> Self:
        """Decode a 0x2A35 value.

        Raises:
            DecodeError: shorter than its flags announce (names the missing field) or
                longer (counts the unexplained octets).
        """
        d = _decode(cls.CHARACTERISTIC, data, ("Systolic", "Diastolic", "Mean Arterial Pressure"))
        return cls(
            d.flags, *d.pressures, d.time_stamp, d.pulse_rate, d.user_id, d.measurement_status
        )

    def __bytes__(self) -> bytes:
        """The value as sent on air."""
        return self._encode(self.systolic, self.diastolic, self.mean_arterial_pressure)


# -- 0x2A36 -------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class IntermediateCuffPressure(_BloodPressureValue):
    """Intermediate Cuff Pressure 0x2A36 (BPS 1.0 §3.2); the 0x2A35 layout.

    The first SFLOAT is the current cuff pressure. The next two are unused (the GSS
    says NaN; devices often send 0x0000): kept raw so the value round-trips, never
    interpreted. Notified while the cuff inflates; never a stored reading.
    """

    flags: BloodPressureFlags
    cuff_pressure: MedFloat16 = field(repr=False)
    unused_diastolic: MedFloat16 = field(default=MedFloat16.from_raw(0x07FF), repr=False)
    unused_mean_arterial_pressure: MedFloat16 = field(
        default=MedFloat16.from_raw(0x07FF), repr=False
    )
    time_stamp: DateTime | None = field(default=None, repr=False)
    pulse_rate: MedFloat16 | None = field(default=None, repr=False)
    user_id: int | None = field(default=None, repr=False)
    measurement_status: MeasurementStatus | None = field(default=None, repr=False)

    UUID: ClassVar[int] = 0x2A36
    CHARACTERISTIC: ClassVar[str] = "0x2A36"
    MIN_SIZE: ClassVar[int] = 7
    MAX_SIZE: ClassVar[int] = 19

    @classmethod
    def create(
        cls,
        *,
        unit: PressureUnit,
        cuff_pressure: MedFloat16,
        time_stamp: DateTime | None = None,
        pulse_rate: MedFloat16 | None = None,
        user_id: int | None = None,
        measurement_status: MeasurementStatus | None = None,
    ) -> Self:
        """Build a value with NaN in the unused fields, deriving the flags."""
        flags = _flags_for(unit, time_stamp, pulse_rate, user_id, measurement_status)
        nan = MedFloat16.from_raw(0x07FF)
        return cls(
            flags, cuff_pressure, nan, nan, time_stamp, pulse_rate, user_id, measurement_status
        )

    @classmethod
    def from_bytes(cls, data: bytes) -> Self:
        """Decode a 0x2A36 value (same rules as :meth:`BloodPressureMeasurement.from_bytes`)."""
        d = _decode(cls.CHARACTERISTIC, data, ("Cuff Pressure", "Unused Diastolic", "Unused MAP"))
        return cls(
            d.flags, *d.pressures, d.time_stamp, d.pulse_rate, d.user_id, d.measurement_status
        )

    def __bytes__(self) -> bytes:
        """The value as sent on air."""
        return self._encode(
            self.cuff_pressure, self.unused_diastolic, self.unused_mean_arterial_pressure
        )


# -- 0x2A49 -------------------------------------------------------------------------------


class BloodPressureFeatureBits(enum.IntFlag):
    """Blood Pressure Feature 0x2A49 bits (bits 0-5 BPS 1.0; 6-8 BPS 1.1); 9-15 RFU, kept."""

    BODY_MOVEMENT_DETECTION = 0x0001
    CUFF_FIT_DETECTION = 0x0002
    IRREGULAR_PULSE_DETECTION = 0x0004
    PULSE_RATE_RANGE_DETECTION = 0x0008
    MEASUREMENT_POSITION_DETECTION = 0x0010
    MULTIPLE_BONDS = 0x0020
    E2E_CRC = 0x0040
    USER_DATA_SERVICE = 0x0080
    USER_FACING_TIME = 0x0100


@dataclass(frozen=True, slots=True)
class BloodPressureFeature:
    """Blood Pressure Feature 0x2A49 (BPS 1.0 §3.3): a 16-bit word, exactly 2 octets."""

    features: BloodPressureFeatureBits

    UUID: ClassVar[int] = 0x2A49
    CHARACTERISTIC: ClassVar[str] = "0x2A49"

    def __post_init__(self) -> None:
        if not 0 <= self.features <= 0xFFFF:
            raise ValueError("Blood Pressure Feature does not fit 16 bits")

    @classmethod
    def from_bytes(cls, data: bytes) -> Self:
        """Decode exactly 2 octets.

        Raises:
            DecodeError: not exactly 2 octets.
        """
        check_length(cls.CHARACTERISTIC, data, [("Blood Pressure Feature", 2)])
        return cls(BloodPressureFeatureBits(int.from_bytes(data, "little")))

    def __bytes__(self) -> bytes:
        """The 2 octets as sent on air."""
        return int(self.features).to_bytes(2, "little")
