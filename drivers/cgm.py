"""CGM Measurement 0x2AA7 (CGMS 1.0; GATT XML cgm_measurement) and its E2E-CRC.

One notification carries one or more records, each framed by its own Size octet:

=============================  ==========  =====================================
field                          type        present when
=============================  ==========  =====================================
Size                           uint8       always (counts itself and the CRC)
Flags                          uint8       always
CGM Glucose Concentration      SFLOAT      always, **mg/dL** (not SI, unlike GLS)
Time Offset                    uint16      always, minutes since session start
SSA Status octet               uint8       flag bit 7
SSA Cal/Temp octet             uint8       flag bit 6
SSA Warning octet              uint8       flag bit 5
CGM Trend Information          SFLOAT      flag bit 0, (mg/dL)/min
CGM Quality                    SFLOAT      flag bit 1, %
E2E-CRC                        uint16      iff CGM Feature bit 12 (E2E-CRC supported)
=============================  ==========  =====================================

Decisions:

- **Order of the Sensor Status Annunciation octets** (spec facts §9 item 11): the
  SSA is one 24-bit field written LSO first (GATT XML: Status = bits 0-7,
  Cal/Temp = 8-15, Warning = 16-23), of which only the flagged octets are sent.
  We read the present ones in ascending significance: Status, Cal/Temp, Warning.
  This matches Nordic's reading of the all-present case (first octet 0x02 =
  battery low). ``ssa_octets`` keeps them in wire order as well.
- **E2E-CRC presence is read from Size**: Size is the flagged length, or that plus 2
  when a CRC follows; anything else is rejected. A CRC that does not verify is
  rejected (a corrupted glucose value must never be stored). Pass ``e2e_crc`` (from
  CGM Feature bit 12) to :meth:`CgmMeasurement.from_bytes` to insist on presence or
  absence; all records of one notification must agree.
- CRC: CRC-16/MCRF4XX (CCITT polynomial 0x1021 reflected = 0x8408, init 0xFFFF, no
  final XOR), little-endian, over all preceding octets of the record.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass, field
from typing import ClassVar, Final, Self

from drivers.errors import DecodeError
from drivers.ieee11073 import MedFloat16
from drivers.wire import MAX_ATTRIBUTE_VALUE_LEN, Cursor, check_length, optional_sfloat

CHARACTERISTIC: Final = "0x2AA7"
#: Size, Flags, Glucose (2), Time Offset (2).
MIN_RECORD_SIZE: Final = 6
CRC_SIZE: Final = 2
_CRC_POLY_REFLECTED: Final = 0x8408
_CRC_INIT: Final = 0xFFFF


def crc16_mcrf4xx(data: bytes) -> int:
    """CRC-16/MCRF4XX of ``data`` (the CGMS E2E-CRC; check: ``b"123456789"`` -> 0x6F91)."""
    crc = _CRC_INIT
    for octet in data:
        crc ^= octet
        for _ in range(8):
            crc = (crc >> 1) ^ _CRC_POLY_REFLECTED if crc & 1 else crc >> 1
    return crc


class CgmMeasurementFlags(enum.IntFlag):
    """Flags of a CGM Measurement record; bits 2-4 RFU, kept."""

    TREND_INFORMATION_PRESENT = 0x01
    QUALITY_PRESENT = 0x02
    WARNING_OCTET_PRESENT = 0x20
    CAL_TEMP_OCTET_PRESENT = 0x40
    STATUS_OCTET_PRESENT = 0x80


class CgmSensorStatusAnnunciation(enum.IntFlag):
    """The 24-bit Sensor Status Annunciation (RFU bits 6-7, 14-15 kept)."""

    SESSION_STOPPED = 1 << 0
    DEVICE_BATTERY_LOW = 1 << 1
    SENSOR_TYPE_INCORRECT_FOR_DEVICE = 1 << 2
    SENSOR_MALFUNCTION = 1 << 3
    DEVICE_SPECIFIC_ALERT = 1 << 4
    GENERAL_DEVICE_FAULT = 1 << 5
    TIME_SYNCHRONIZATION_REQUIRED = 1 << 8
    CALIBRATION_NOT_ALLOWED = 1 << 9
    CALIBRATION_RECOMMENDED = 1 << 10
    CALIBRATION_REQUIRED = 1 << 11
    SENSOR_TEMPERATURE_TOO_HIGH = 1 << 12
    SENSOR_TEMPERATURE_TOO_LOW = 1 << 13
    RESULT_LOWER_THAN_PATIENT_LOW_LEVEL = 1 << 16
    RESULT_HIGHER_THAN_PATIENT_HIGH_LEVEL = 1 << 17
    RESULT_LOWER_THAN_HYPO_LEVEL = 1 << 18
    RESULT_HIGHER_THAN_HYPER_LEVEL = 1 << 19
    RATE_OF_DECREASE_EXCEEDED = 1 << 20
    RATE_OF_INCREASE_EXCEEDED = 1 << 21
    RESULT_LOWER_THAN_DEVICE_CAN_PROCESS = 1 << 22
    RESULT_HIGHER_THAN_DEVICE_CAN_PROCESS = 1 << 23


#: SSA octets in wire order: (flag, name, bit shift within the 24-bit field).
_SSA_OCTETS: Final = (
    (CgmMeasurementFlags.STATUS_OCTET_PRESENT, "SSA Status octet", 0),
    (CgmMeasurementFlags.CAL_TEMP_OCTET_PRESENT, "SSA Cal/Temp octet", 8),
    (CgmMeasurementFlags.WARNING_OCTET_PRESENT, "SSA Warning octet", 16),
)


def _body_layout(flags: int) -> list[tuple[str, int]]:
    layout = [("Size", 1), ("Flags", 1), ("CGM Glucose Concentration", 2), ("Time Offset", 2)]
    layout += [(name, 1) for flag, name, _ in _SSA_OCTETS if flags & flag]
    if flags & CgmMeasurementFlags.TREND_INFORMATION_PRESENT:
        layout.append(("CGM Trend Information", 2))
    if flags & CgmMeasurementFlags.QUALITY_PRESENT:
        layout.append(("CGM Quality", 2))
    return layout


@dataclass(frozen=True, slots=True)
class CgmMeasurementRecord:
    """One CGM Measurement record. Field values never appear in the repr."""

    flags: CgmMeasurementFlags
    glucose_mg_dl: MedFloat16 = field(repr=False)
    time_offset_min: int = field(repr=False)
    status_octet: int | None = field(default=None, repr=False)
    cal_temp_octet: int | None = field(default=None, repr=False)
    warning_octet: int | None = field(default=None, repr=False)
    trend: MedFloat16 | None = field(default=None, repr=False)
    quality: MedFloat16 | None = field(default=None, repr=False)
    has_e2e_crc: bool = False

    def __post_init__(self) -> None:
        if not 0 <= self.flags <= 0xFF:
            raise ValueError("flags do not fit one octet")
        pairs = (
            (CgmMeasurementFlags.STATUS_OCTET_PRESENT, self.status_octet),
            (CgmMeasurementFlags.CAL_TEMP_OCTET_PRESENT, self.cal_temp_octet),
            (CgmMeasurementFlags.WARNING_OCTET_PRESENT, self.warning_octet),
            (CgmMeasurementFlags.TREND_INFORMATION_PRESENT, self.trend),
            (CgmMeasurementFlags.QUALITY_PRESENT, self.quality),
        )
        for flag, value in pairs:
            if bool(self.flags & flag) != (value is not None):
                raise ValueError(f"flag {flag.name} disagrees with the field's presence")
        if not 0 <= self.time_offset_min <= 0xFFFF:
            raise ValueError("Time Offset does not fit uint16")
        for octet in (self.status_octet, self.cal_temp_octet, self.warning_octet):
            if octet is not None and not 0 <= octet <= 0xFF:
                raise ValueError("SSA octet does not fit uint8")

    @classmethod
    def from_bytes(cls, data: bytes) -> Self:
        """Decode exactly one record (``data[0]`` is its Size).

        Raises:
            DecodeError: Size disagrees with the flags or the data, or the CRC fails.
        """
        check_length(CHARACTERISTIC, data[:2], [("Size", 1), ("Flags", 1)])
        size, flags = data[0], data[1]
        layout = _body_layout(flags)
        body = sum(n for _, n in layout)
        if size == body + CRC_SIZE:
            layout.append(("E2E-CRC", CRC_SIZE))
        elif size != body:
            raise DecodeError(
                CHARACTERISTIC,
                f"Size {size} disagrees with flags 0x{flags:02X} "
                f"({body} octets, or {body + CRC_SIZE} with E2E-CRC)",
                0,
            )
        check_length(CHARACTERISTIC, data, layout, flags=flags)
        cursor = Cursor(CHARACTERISTIC, data, offset=2)
        glucose = cursor.sfloat("CGM Glucose Concentration")
        offset = cursor.u16("Time Offset")
        octets = [cursor.u8(name) if flags & flag else None for flag, name, _ in _SSA_OCTETS]
        trend = (
            cursor.sfloat("CGM Trend Information")
            if flags & CgmMeasurementFlags.TREND_INFORMATION_PRESENT
            else None
        )
        quality = (
            cursor.sfloat("CGM Quality") if flags & CgmMeasurementFlags.QUALITY_PRESENT else None
        )
        has_crc = size == body + CRC_SIZE
        if has_crc:
            sent = cursor.u16("E2E-CRC")
            if sent != crc16_mcrf4xx(data[:body]):
                raise DecodeError(CHARACTERISTIC, "E2E-CRC does not match the record", body)
        cursor.finish()
        return cls(
            CgmMeasurementFlags(flags),
            glucose,
            offset,
            octets[0],
            octets[1],
            octets[2],
            trend,
            quality,
            has_crc,
        )

    def __bytes__(self) -> bytes:
        """The record as sent on air, Size and (when ``has_e2e_crc``) a fresh CRC included."""
        body = bytes((int(self.flags),)) + bytes(self.glucose_mg_dl)
        body += self.time_offset_min.to_bytes(2, "little")
        body += bytes(o for o in self.ssa_octets)
        body += optional_sfloat(self.trend) + optional_sfloat(self.quality)
        size = 1 + len(body) + (CRC_SIZE if self.has_e2e_crc else 0)
        record = bytes((size,)) + body
        if self.has_e2e_crc:
            record += crc16_mcrf4xx(record).to_bytes(2, "little")
        return record

    @property
    def size(self) -> int:
        """The Size field: octets in this record including Size and CRC."""
        return len(bytes(self))

    @property
    def ssa_octets(self) -> tuple[int, ...]:
        """The SSA octets present, in wire order (Status, Cal/Temp, Warning)."""
        octets = (self.status_octet, self.cal_temp_octet, self.warning_octet)
        return tuple(o for o in octets if o is not None)

    @property
    def sensor_status_annunciation(self) -> CgmSensorStatusAnnunciation:
        """The present SSA octets placed at their bit positions in the 24-bit field."""
        value = 0
        octets = (self.status_octet, self.cal_temp_octet, self.warning_octet)
        for (_, _, shift), octet in zip(_SSA_OCTETS, octets, strict=True):
            if octet is not None:
                value |= octet << shift
        return CgmSensorStatusAnnunciation(value)


@dataclass(frozen=True, slots=True)
class CgmMeasurement:
    """One CGM Measurement notification: one or more records."""

    records: tuple[CgmMeasurementRecord, ...]

    UUID: ClassVar[int] = 0x2AA7
    CHARACTERISTIC: ClassVar[str] = CHARACTERISTIC

    def __post_init__(self) -> None:
        if not self.records:
            raise ValueError("a CGM Measurement carries at least one record")

    @classmethod
    def from_bytes(cls, data: bytes, *, e2e_crc: bool | None = None) -> Self:
        """Split a notification into records by their Size octets and decode each.

        Args:
            data: the notification value.
            e2e_crc: CGM Feature bit 12 when known; then every record must (or must
                not) carry an E2E-CRC. When None, records must merely agree.

        Raises:
            DecodeError: empty, a Size that overruns the value or is below 6, a record
                that does not decode, or records disagreeing on E2E-CRC presence.
        """
        if not data:
            check_length(CHARACTERISTIC, data, [("Size", 1)])
        if len(data) > MAX_ATTRIBUTE_VALUE_LEN:
            raise DecodeError(CHARACTERISTIC, f"longer than {MAX_ATTRIBUTE_VALUE_LEN} octets")
        records: list[CgmMeasurementRecord] = []
        pos = 0
        while pos < len(data):
            size = data[pos]
            if size < MIN_RECORD_SIZE:
                raise DecodeError(CHARACTERISTIC, f"record Size {size} below 6", pos)
            if pos + size > len(data):
                raise DecodeError(
                    CHARACTERISTIC,
                    f"record Size {size} overruns the value ({len(data) - pos} octets left)",
                    pos,
                )
            try:
                records.append(CgmMeasurementRecord.from_bytes(data[pos : pos + size]))
            except DecodeError as exc:
                where = pos + (exc.offset or 0)
                raise DecodeError(
                    CHARACTERISTIC, f"record {len(records) + 1}: {exc.reason}", where
                ) from None
            pos += size
        crc_presence = {r.has_e2e_crc for r in records}
        if len(crc_presence) > 1:
            raise DecodeError(CHARACTERISTIC, "records disagree on E2E-CRC presence")
        if e2e_crc is not None and crc_presence != {e2e_crc}:
            expected = "required by" if e2e_crc else "not supported per"
            raise DecodeError(CHARACTERISTIC, f"E2E-CRC {expected} CGM Feature")
        return cls(tuple(records))

    def __bytes__(self) -> bytes:
        """The notification as sent on air."""
        return b"".join(bytes(r) for r in self.records)
