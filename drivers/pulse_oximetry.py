"""Pulse Oximeter Service 0x1822 (PLXS 1.0) characteristics.

- PLX Spot-check Measurement 0x2A5E (Indicate; also how stored records come back
  through RACP): :class:`PlxSpotCheckMeasurement`.
- PLX Continuous Measurement 0x2A5F (Notify): :class:`PlxContinuousMeasurement`.
- PLX Features 0x2A60 (Read): :class:`PlxFeatures`.

SpO2 and pulse amplitude index are in %, pulse rate in beats/min, all SFLOAT.
The two measurements number their flag bits differently (spec facts §6.2), so each
has its own flags enum. Length is checked strictly; RFU flag bits are kept (see
:mod:`drivers.blood_pressure` for the reasoning, which applies unchanged).
"""

from __future__ import annotations

import enum
from dataclasses import dataclass, field
from typing import ClassVar, Self

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


class PlxMeasurementStatus(enum.IntFlag):
    """PLX Measurement Status (16 bits; 0-4 RFU, kept)."""

    MEASUREMENT_ONGOING = 1 << 5
    EARLY_ESTIMATED_DATA = 1 << 6
    VALIDATED_DATA = 1 << 7
    FULLY_QUALIFIED_DATA = 1 << 8
    DATA_FROM_MEASUREMENT_STORAGE = 1 << 9
    DATA_FOR_DEMONSTRATION = 1 << 10
    DATA_FOR_TESTING = 1 << 11
    CALIBRATION_ONGOING = 1 << 12
    MEASUREMENT_UNAVAILABLE = 1 << 13
    QUESTIONABLE_MEASUREMENT_DETECTED = 1 << 14
    INVALID_MEASUREMENT_DETECTED = 1 << 15


class PlxDeviceSensorStatus(enum.IntFlag):
    """PLX Device and Sensor Status (24 bits; 16-23 RFU, kept)."""

    EXTENDED_DISPLAY_UPDATE_ONGOING = 1 << 0
    EQUIPMENT_MALFUNCTION_DETECTED = 1 << 1
    SIGNAL_PROCESSING_IRREGULARITY_DETECTED = 1 << 2
    INADEQUATE_SIGNAL_DETECTED = 1 << 3
    POOR_SIGNAL_DETECTED = 1 << 4
    LOW_PERFUSION_DETECTED = 1 << 5
    ERRATIC_SIGNAL_DETECTED = 1 << 6
    NON_PULSATILE_SIGNAL_DETECTED = 1 << 7
    QUESTIONABLE_PULSE_DETECTED = 1 << 8
    SIGNAL_ANALYSIS_ONGOING = 1 << 9
    SENSOR_INTERFERENCE_DETECTED = 1 << 10
    SENSOR_UNCONNECTED_TO_USER = 1 << 11
    UNKNOWN_SENSOR_CONNECTED = 1 << 12
    SENSOR_DISPLACED = 1 << 13
    SENSOR_MALFUNCTIONING = 1 << 14
    SENSOR_DISCONNECTED = 1 << 15


def _check_word(value: int | None, bits: int, what: str) -> None:
    if value is not None and not 0 <= value < 1 << bits:
        raise ValueError(f"{what} does not fit {bits} bits")


def _check_status_words(
    measurement_status: PlxMeasurementStatus | None,
    device_sensor_status: PlxDeviceSensorStatus | None,
) -> None:
    _check_word(measurement_status, 16, "Measurement Status")
    _check_word(device_sensor_status, 24, "Device and Sensor Status")


def _status_bytes(
    measurement_status: PlxMeasurementStatus | None,
    device_sensor_status: PlxDeviceSensorStatus | None,
) -> bytes:
    out = b""
    if measurement_status is not None:
        out += int(measurement_status).to_bytes(2, "little")
    if device_sensor_status is not None:
        out += int(device_sensor_status).to_bytes(3, "little")
    return out


def _tail_bytes(
    measurement_status: PlxMeasurementStatus | None,
    device_sensor_status: PlxDeviceSensorStatus | None,
    pulse_amplitude_index: MedFloat16 | None,
) -> bytes:
    """The optional status words and PAI that end 0x2A5E and 0x2A5F, as sent on air."""
    out = _status_bytes(measurement_status, device_sensor_status)
    return out + optional_sfloat(pulse_amplitude_index)


@dataclass(frozen=True, slots=True)
class _TailFlags:
    """Flag bits announcing the status words and PAI that end 0x2A5E and 0x2A5F.

    The two characteristics number these bits differently (spec facts §6.2), so each
    passes its own; only the reading and writing of the fields is shared.
    """

    measurement_status: enum.IntFlag
    device_sensor_status: enum.IntFlag
    pulse_amplitude_index: enum.IntFlag

    def presence(
        self,
        measurement_status: PlxMeasurementStatus | None,
        device_sensor_status: PlxDeviceSensorStatus | None,
        pulse_amplitude_index: MedFloat16 | None,
    ) -> tuple[tuple[enum.IntFlag, object], ...]:
        """Each tail presence flag with its field (None when absent)."""
        return (
            (self.measurement_status, measurement_status),
            (self.device_sensor_status, device_sensor_status),
            (self.pulse_amplitude_index, pulse_amplitude_index),
        )

    def layout(self, flags: int) -> list[tuple[str, int]]:
        """Layout entries of the tail fields ``flags`` announces, in wire order."""
        optional = (
            (self.measurement_status, "Measurement Status", 2),
            (self.device_sensor_status, "Device and Sensor Status", 3),
            (self.pulse_amplitude_index, "Pulse Amplitude Index", 2),
        )
        return optional_fields(flags, optional)

    def read(
        self, cursor: Cursor, flags: int
    ) -> tuple[PlxMeasurementStatus | None, PlxDeviceSensorStatus | None, MedFloat16 | None]:
        """Read the tail fields ``flags`` announces, in wire order."""
        status = (
            PlxMeasurementStatus(cursor.u16("Measurement Status"))
            if flags & self.measurement_status
            else None
        )
        device = (
            PlxDeviceSensorStatus(cursor.uint(3, "Device and Sensor Status"))
            if flags & self.device_sensor_status
            else None
        )
        pai = cursor.sfloat("Pulse Amplitude Index") if flags & self.pulse_amplitude_index else None
        return status, device, pai


# -- 0x2A5E -----------------------------------------------------------------------------


class SpotCheckFlags(enum.IntFlag):
    """Flags of 0x2A5E; bits 5-7 RFU, kept."""

    TIMESTAMP_PRESENT = 0x01
    MEASUREMENT_STATUS_PRESENT = 0x02
    DEVICE_AND_SENSOR_STATUS_PRESENT = 0x04
    PULSE_AMPLITUDE_INDEX_PRESENT = 0x08
    DEVICE_CLOCK_NOT_SET = 0x10


_SPOT_CHECK_TAIL = _TailFlags(
    SpotCheckFlags.MEASUREMENT_STATUS_PRESENT,
    SpotCheckFlags.DEVICE_AND_SENSOR_STATUS_PRESENT,
    SpotCheckFlags.PULSE_AMPLITUDE_INDEX_PRESENT,
)


@dataclass(frozen=True, slots=True)
class PlxSpotCheckMeasurement:
    """PLX Spot-check Measurement 0x2A5E (PLXS 1.0; spec facts §6.1); 5 to 19 octets.

    When :attr:`device_clock_not_set`, the time stamp is not to be trusted.
    Field values never appear in the repr.
    """

    flags: SpotCheckFlags
    spo2: MedFloat16 = field(repr=False)
    pulse_rate: MedFloat16 = field(repr=False)
    timestamp: DateTime | None = field(default=None, repr=False)
    measurement_status: PlxMeasurementStatus | None = field(default=None, repr=False)
    device_sensor_status: PlxDeviceSensorStatus | None = field(default=None, repr=False)
    pulse_amplitude_index: MedFloat16 | None = field(default=None, repr=False)

    UUID: ClassVar[int] = 0x2A5E
    CHARACTERISTIC: ClassVar[str] = "0x2A5E"
    MIN_SIZE: ClassVar[int] = 5
    MAX_SIZE: ClassVar[int] = 19

    def __post_init__(self) -> None:
        tail = _SPOT_CHECK_TAIL.presence(
            self.measurement_status, self.device_sensor_status, self.pulse_amplitude_index
        )
        check_presence(self.flags, ((SpotCheckFlags.TIMESTAMP_PRESENT, self.timestamp), *tail))
        _check_status_words(self.measurement_status, self.device_sensor_status)

    @classmethod
    def create(
        cls,
        *,
        spo2: MedFloat16,
        pulse_rate: MedFloat16,
        timestamp: DateTime | None = None,
        measurement_status: PlxMeasurementStatus | None = None,
        device_sensor_status: PlxDeviceSensorStatus | None = None,
        pulse_amplitude_index: MedFloat16 | None = None,
        device_clock_not_set: bool = False,
    ) -> Self:
        """Build a measurement, deriving the flags."""
        tail = _SPOT_CHECK_TAIL.presence(
            measurement_status, device_sensor_status, pulse_amplitude_index
        )
        flags = presence_flags(
            SpotCheckFlags(0), ((SpotCheckFlags.TIMESTAMP_PRESENT, timestamp), *tail)
        )
        if device_clock_not_set:
            flags |= SpotCheckFlags.DEVICE_CLOCK_NOT_SET
        return cls(
            flags,
            spo2,
            pulse_rate,
            timestamp,
            measurement_status,
            device_sensor_status,
            pulse_amplitude_index,
        )

    @classmethod
    def from_bytes(cls, data: bytes) -> Self:
        """Decode a 0x2A5E value.

        Raises:
            DecodeError: shorter or longer than its flags announce.
        """
        name = cls.CHARACTERISTIC
        flags = flags_octet(name, data)
        layout = [("Flags", 1), ("SpO2", 2), ("PR", 2)]
        if flags & SpotCheckFlags.TIMESTAMP_PRESENT:
            layout.append(("Timestamp", DateTime.SIZE))
        layout += _SPOT_CHECK_TAIL.layout(flags)
        check_length(name, data, layout, flags=flags)
        cursor = Cursor(name, data, offset=1)
        spo2, pulse_rate = cursor.sfloat("SpO2"), cursor.sfloat("PR")
        timestamp = (
            DateTime.read(cursor, "Timestamp") if flags & SpotCheckFlags.TIMESTAMP_PRESENT else None
        )
        status, device, pai = _SPOT_CHECK_TAIL.read(cursor, flags)
        cursor.finish()
        return cls(SpotCheckFlags(flags), spo2, pulse_rate, timestamp, status, device, pai)

    def __bytes__(self) -> bytes:
        """The value as sent on air."""
        out = bytes((int(self.flags),)) + bytes(self.spo2) + bytes(self.pulse_rate)
        out += b"" if self.timestamp is None else bytes(self.timestamp)
        return out + _tail_bytes(
            self.measurement_status, self.device_sensor_status, self.pulse_amplitude_index
        )

    @property
    def device_clock_not_set(self) -> bool:
        """Flag bit 4: the device's clock was never set, so the time stamp is meaningless."""
        return bool(self.flags & SpotCheckFlags.DEVICE_CLOCK_NOT_SET)


# -- 0x2A5F -----------------------------------------------------------------------------


class ContinuousFlags(enum.IntFlag):
    """Flags of 0x2A5F; bits 5-7 RFU, kept."""

    SPO2PR_FAST_PRESENT = 0x01
    SPO2PR_SLOW_PRESENT = 0x02
    MEASUREMENT_STATUS_PRESENT = 0x04
    DEVICE_AND_SENSOR_STATUS_PRESENT = 0x08
    PULSE_AMPLITUDE_INDEX_PRESENT = 0x10


_CONTINUOUS_TAIL = _TailFlags(
    ContinuousFlags.MEASUREMENT_STATUS_PRESENT,
    ContinuousFlags.DEVICE_AND_SENSOR_STATUS_PRESENT,
    ContinuousFlags.PULSE_AMPLITUDE_INDEX_PRESENT,
)


@dataclass(frozen=True, slots=True)
class PlxContinuousMeasurement:
    """PLX Continuous Measurement 0x2A5F (PLXS 1.0; spec facts §6.2); 5 to 20 octets.

    SpO2PR-Normal is always present; Fast and Slow are (SpO2, PR) pairs.
    """

    flags: ContinuousFlags
    spo2: MedFloat16 = field(repr=False)
    pulse_rate: MedFloat16 = field(repr=False)
    spo2pr_fast: tuple[MedFloat16, MedFloat16] | None = field(default=None, repr=False)
    spo2pr_slow: tuple[MedFloat16, MedFloat16] | None = field(default=None, repr=False)
    measurement_status: PlxMeasurementStatus | None = field(default=None, repr=False)
    device_sensor_status: PlxDeviceSensorStatus | None = field(default=None, repr=False)
    pulse_amplitude_index: MedFloat16 | None = field(default=None, repr=False)

    UUID: ClassVar[int] = 0x2A5F
    CHARACTERISTIC: ClassVar[str] = "0x2A5F"
    MAX_SIZE: ClassVar[int] = 20

    def __post_init__(self) -> None:
        tail = _CONTINUOUS_TAIL.presence(
            self.measurement_status, self.device_sensor_status, self.pulse_amplitude_index
        )
        check_presence(
            self.flags,
            (
                (ContinuousFlags.SPO2PR_FAST_PRESENT, self.spo2pr_fast),
                (ContinuousFlags.SPO2PR_SLOW_PRESENT, self.spo2pr_slow),
                *tail,
            ),
        )
        _check_status_words(self.measurement_status, self.device_sensor_status)

    @classmethod
    def from_bytes(cls, data: bytes) -> Self:
        """Decode a 0x2A5F value.

        Raises:
            DecodeError: shorter or longer than its flags announce.
        """
        name = cls.CHARACTERISTIC
        flags = flags_octet(name, data)
        layout = [("Flags", 1), ("SpO2PR-Normal SpO2", 2), ("SpO2PR-Normal PR", 2)]
        if flags & ContinuousFlags.SPO2PR_FAST_PRESENT:
            layout += [("SpO2PR-Fast SpO2", 2), ("SpO2PR-Fast PR", 2)]
        if flags & ContinuousFlags.SPO2PR_SLOW_PRESENT:
            layout += [("SpO2PR-Slow SpO2", 2), ("SpO2PR-Slow PR", 2)]
        layout += _CONTINUOUS_TAIL.layout(flags)
        check_length(name, data, layout, flags=flags)
        cursor = Cursor(name, data, offset=1)
        spo2, pulse_rate = cursor.sfloat("SpO2"), cursor.sfloat("PR")
        fast = slow = None
        if flags & ContinuousFlags.SPO2PR_FAST_PRESENT:
            fast = (cursor.sfloat("SpO2PR-Fast SpO2"), cursor.sfloat("SpO2PR-Fast PR"))
        if flags & ContinuousFlags.SPO2PR_SLOW_PRESENT:
            slow = (cursor.sfloat("SpO2PR-Slow SpO2"), cursor.sfloat("SpO2PR-Slow PR"))
        status, device, pai = _CONTINUOUS_TAIL.read(cursor, flags)
        cursor.finish()
        return cls(ContinuousFlags(flags), spo2, pulse_rate, fast, slow, status, device, pai)

    def __bytes__(self) -> bytes:
        """The value as sent on air."""
        out = bytes((int(self.flags),)) + bytes(self.spo2) + bytes(self.pulse_rate)
        for pair in (self.spo2pr_fast, self.spo2pr_slow):
            if pair is not None:
                out += bytes(pair[0]) + bytes(pair[1])
        return out + _tail_bytes(
            self.measurement_status, self.device_sensor_status, self.pulse_amplitude_index
        )


# -- 0x2A60 -----------------------------------------------------------------------------


class PlxSupportedFeatures(enum.IntFlag):
    """PLX Features Supported Features word (16 bits; 8-15 RFU, kept)."""

    MEASUREMENT_STATUS_SUPPORT_PRESENT = 1 << 0
    DEVICE_AND_SENSOR_STATUS_SUPPORT_PRESENT = 1 << 1
    SPOT_CHECK_MEASUREMENT_STORAGE = 1 << 2
    SPOT_CHECK_TIMESTAMP = 1 << 3
    SPO2PR_FAST = 1 << 4
    SPO2PR_SLOW = 1 << 5
    PULSE_AMPLITUDE_INDEX = 1 << 6
    MULTIPLE_BONDS = 1 << 7


@dataclass(frozen=True, slots=True)
class PlxFeatures:
    """PLX Features 0x2A60 (PLXS 1.0; spec facts §6.3); 2 to 7 octets.

    The two support words are present exactly when Supported Features bits 0 and 1
    say so; they use the bit layout of the status words they describe.
    """

    supported_features: PlxSupportedFeatures
    measurement_status_support: PlxMeasurementStatus | None = None
    device_sensor_status_support: PlxDeviceSensorStatus | None = None

    UUID: ClassVar[int] = 0x2A60
    CHARACTERISTIC: ClassVar[str] = "0x2A60"

    def __post_init__(self) -> None:
        _check_word(self.supported_features, 16, "Supported Features")
        support_pairs: tuple[tuple[enum.IntFlag, object], ...] = (
            (
                PlxSupportedFeatures.MEASUREMENT_STATUS_SUPPORT_PRESENT,
                self.measurement_status_support,
            ),
            (
                PlxSupportedFeatures.DEVICE_AND_SENSOR_STATUS_SUPPORT_PRESENT,
                self.device_sensor_status_support,
            ),
        )
        for flag, value in support_pairs:
            if bool(self.supported_features & flag) != (value is not None):
                raise ValueError(f"bit {flag.name} disagrees with the field's presence")
        _check_word(self.measurement_status_support, 16, "Measurement Status Support")
        _check_word(self.device_sensor_status_support, 24, "Device and Sensor Status Support")

    @classmethod
    def from_bytes(cls, data: bytes) -> Self:
        """Decode a 0x2A60 value.

        Raises:
            DecodeError: shorter or longer than its Supported Features announce.
        """
        name = cls.CHARACTERISTIC
        check_length(name, data[:2], [("Supported Features", 2)])
        features = int.from_bytes(data[:2], "little")
        layout = [("Supported Features", 2)]
        if features & PlxSupportedFeatures.MEASUREMENT_STATUS_SUPPORT_PRESENT:
            layout.append(("Measurement Status Support", 2))
        if features & PlxSupportedFeatures.DEVICE_AND_SENSOR_STATUS_SUPPORT_PRESENT:
            layout.append(("Device and Sensor Status Support", 3))
        check_length(name, data, layout)
        cursor = Cursor(name, data, offset=2)
        status = (
            PlxMeasurementStatus(cursor.u16("Measurement Status Support"))
            if features & PlxSupportedFeatures.MEASUREMENT_STATUS_SUPPORT_PRESENT
            else None
        )
        device = (
            PlxDeviceSensorStatus(cursor.uint(3, "Device and Sensor Status Support"))
            if features & PlxSupportedFeatures.DEVICE_AND_SENSOR_STATUS_SUPPORT_PRESENT
            else None
        )
        cursor.finish()
        return cls(PlxSupportedFeatures(features), status, device)

    def __bytes__(self) -> bytes:
        """The value as sent on air."""
        out = int(self.supported_features).to_bytes(2, "little")
        return out + _status_bytes(
            self.measurement_status_support, self.device_sensor_status_support
        )
