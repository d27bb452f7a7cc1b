"""The characteristic registry behind ``homehub decode``: name -> decoder -> JSON.

:func:`decode` turns one characteristic value into a JSON-ready ``dict`` (a ``list``
of them for CGM Measurement 0x2AA7) whose keys are the field names of
``ble-test-vectors.json``; ``docs/wire-format.md`` lists them. :func:`decode_record`
returns the typed record instead, for code that wants the dataclass.

Conventions of the JSON form:

- Absent optional fields are ``null``.
- An SFLOAT/FLOAT field is a JSON number, or the code of its special value as a
  string (``"NaN"``, ``"NRes"``, ``"+INF"``, ``"-INF"``, ``"RFU"``) so that a
  special can never be read as a number or as "absent".
- Time stamps are nested objects of raw fields (``year`` … ``seconds``), as sent,
  even when not a real date; ``<field>_problem`` says why one is not usable.
- Epoch time fields (BPS 1.1 0x2B34/0x2B35) are ``{"seconds_since_epoch", "iso"}``:
  the raw uint32 and its ISO 8601 text, with ``+00:00`` for the UTC-based Time Stamp
  and without offset for User Facing Time (local wall clock, zone unknown).
- Bit fields are the raw integer (RFU bits included).

Errors: :class:`~drivers.errors.UsageError` for a characteristic or hex text we do
not accept; :class:`~drivers.errors.DecodeError` for a value that does not decode.
Decoders raise nothing else.
"""

from __future__ import annotations

import enum
import re
import string
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Final, Generic, TypeVar

from drivers.battery import BatteryLevel
from drivers.blood_pressure import (
    BloodPressureFeature,
    BloodPressureMeasurement,
    IntermediateCuffPressure,
    MeasurementStatus,
)
from drivers.cgm import CgmMeasurement
from drivers.device_information import DisString, DisStringCharacteristic, PnpId, SystemId
from drivers.enhanced_blood_pressure import (
    BloodPressureRecord,
    EnhancedBloodPressureMeasurement,
    EnhancedIntermediateCuffPressure,
    RecordedValue,
)
from drivers.errors import UsageError
from drivers.gatt_time import CurrentTime, DateTime, LocalTimeInformation
from drivers.glucose import GlucoseFeature, GlucoseMeasurement, GlucoseMeasurementContext
from drivers.ieee11073 import MedFloat, MedFloat16, MedFloat32
from drivers.pulse_oximetry import PlxContinuousMeasurement, PlxFeatures, PlxSpotCheckMeasurement
from drivers.racp import (
    NumberOfStoredRecords,
    RacpRequest,
    RacpResponse,
    decode_response,
)
from drivers.wire import MAX_ATTRIBUTE_VALUE_LEN

Json = dict[str, Any] | list[dict[str, Any]]
R = TypeVar("R")

#: Longest hex text accepted: two digits per octet of the longest ATT value, plus
#: one separator between octets and a "0x" prefix.
MAX_HEX_TEXT_LEN: Final = 3 * MAX_ATTRIBUTE_VALUE_LEN + 2

_BLUETOOTH_BASE_UUID = re.compile(r"^0000([0-9a-f]{4})-0000-1000-8000-00805f9b34fb$")
_SHORT_UUID = re.compile(r"^(?:0x)?([0-9a-f]{4})$")
_HEX_SEPARATORS = str.maketrans("", "", " \t\n:-_")


@dataclass(frozen=True, slots=True)
class Codec(Generic[R]):
    """How one characteristic (in one direction) is parsed and shown as JSON."""

    characteristic: str
    name: str
    parse: Callable[[bytes], R]
    render: Callable[[R], Json]


# -- JSON helpers ---------------------------------------------------------------------


def number(value: MedFloat | None) -> float | str | None:
    """An SFLOAT/FLOAT field as JSON: a number, a special's code, or None when absent."""
    if value is None:
        return None
    if value.special is not None:
        return value.special.value
    return float(value.to_decimal())


def time_stamp(value: DateTime | None) -> dict[str, int] | None:
    """A Date Time field as its raw fields, or None when absent."""
    return None if value is None else value.as_dict()


def _med_float(value: MedFloat) -> dict[str, Any]:
    return {
        "mantissa": value.mantissa,
        "exponent": value.exponent,
        "special": None if value.special is None else value.special.value,
        "value": None if value.special is not None else float(value.to_decimal()),
        "fhir_decimal": value.fhir_decimal,
    }


def _bp_status(status: MeasurementStatus | None) -> dict[str, Any] | None:
    if status is None:
        return None
    return {
        "body_movement_detected": status.body_movement_detected,
        "cuff_too_loose": status.cuff_too_loose,
        "irregular_pulse_detected": status.irregular_pulse_detected,
        "pulse_rate_range": status.pulse_rate_range.name.lower(),
        "improper_measurement_position": status.improper_measurement_position,
        "rfu_bits": status.rfu_bits,
    }


def _bp_status_fields(status: MeasurementStatus | None) -> dict[str, Any]:
    """The raw Measurement Status word of a 0x2A35-family value and its decoded bits."""
    return {
        "measurement_status": None if status is None else status.raw,
        "measurement_status_detail": _bp_status(status),
    }


def _bp_head(
    m: BloodPressureMeasurement
    | IntermediateCuffPressure
    | EnhancedBloodPressureMeasurement
    | EnhancedIntermediateCuffPressure,
) -> dict[str, Any]:
    """The leading flags and unit keys of every blood-pressure value."""
    return {"flags": int(m.flags), "unit": m.unit.value}


def _bp_tail(m: BloodPressureMeasurement | IntermediateCuffPressure) -> dict[str, Any]:
    """The optional fields that end 0x2A35 and 0x2A36 (same layout, BPS 1.0 §3.1/§3.2)."""
    return {
        "timestamp": time_stamp(m.time_stamp),
        "timestamp_problem": None if m.time_stamp is None else m.time_stamp.problem,
        "pulse_rate": number(m.pulse_rate),
        "user_id": m.user_id,
        **_bp_status_fields(m.measurement_status),
    }


def _bpm(m: BloodPressureMeasurement) -> Json:
    return {
        **_bp_head(m),
        "systolic": number(m.systolic),
        "diastolic": number(m.diastolic),
        "mean_arterial_pressure": number(m.mean_arterial_pressure),
        **_bp_tail(m),
    }


def _icp(m: IntermediateCuffPressure) -> Json:
    return {**_bp_head(m), "cuff_pressure": number(m.cuff_pressure), **_bp_tail(m)}


def epoch_time(seconds: int | None, moment: datetime | None) -> dict[str, Any] | None:
    """A uint32 epoch time field as its raw seconds and ISO 8601 text, or None when absent."""
    if seconds is None or moment is None:
        return None
    return {"seconds_since_epoch": seconds, "iso": moment.isoformat()}


def _enhanced_common(
    m: EnhancedBloodPressureMeasurement | EnhancedIntermediateCuffPressure,
) -> dict[str, Any]:
    return {
        "time_stamp": epoch_time(m.time_stamp_s, m.time_stamp),
        "pulse_rate": number(m.pulse_rate),
        "user_id": m.user_id,
        **_bp_status_fields(m.measurement_status),
        "user_facing_time": epoch_time(m.user_facing_time_s, m.user_facing_time),
        "epoch_start_2000": m.epoch_start_2000,
    }


def _enhanced_bpm(m: EnhancedBloodPressureMeasurement) -> dict[str, Any]:
    return {
        **_bp_head(m),
        "systolic": number(m.systolic),
        "diastolic": number(m.diastolic),
        "mean_arterial_pressure": number(m.mean_arterial_pressure),
        **_enhanced_common(m),
    }


def _enhanced_icp(m: EnhancedIntermediateCuffPressure) -> dict[str, Any]:
    return {**_bp_head(m), "cuff_pressure": number(m.cuff_pressure), **_enhanced_common(m)}


def _recorded_value(value: RecordedValue | None) -> Json | None:
    if isinstance(value, EnhancedBloodPressureMeasurement):
        return _enhanced_bpm(value)
    if isinstance(value, EnhancedIntermediateCuffPressure):
        return _enhanced_icp(value)
    if isinstance(value, BloodPressureMeasurement):
        return _bpm(value)
    return None


def _bp_record(r: BloodPressureRecord) -> Json:
    return {
        "segmentation_header": r.segmentation_header,
        "first_segment": r.first_segment,
        "last_segment": r.last_segment,
        "rolling_segment_counter": r.rolling_segment_counter,
        "sequence_number": r.sequence_number,
        "uuid": f"0x{r.recorded_uuid:04X}",
        "recorded_hex": r.recorded.hex(),
        "recorded": _recorded_value(r.value),
        "e2e_crc": r.e2e_crc,
        # A complete record whose CRC fails is rejected; a segment's CRC is not checked.
        "e2e_crc_verified": r.e2e_crc_verified if r.e2e_crc is not None else None,
    }


def _flag_names(value: int, enum_type: Any) -> list[str]:
    return [member.name.lower() for member in enum_type if value & member.value]


def _feature_bits(features: enum.IntFlag) -> Json:
    """A feature word as its raw integer and the names of the bits it sets."""
    return {"features": int(features), "supported": _flag_names(features, type(features))}


def _bp_feature(f: BloodPressureFeature) -> Json:
    return _feature_bits(f.features)


def _date_time(d: DateTime) -> Json:
    return {**d.as_dict(), "problem": d.problem}


def _current_time(c: CurrentTime) -> Json:
    return {
        **c.date_time.as_dict(),
        "day_of_week": c.day_of_week,
        "fractions256": c.fractions256,
        "adjust_reason": int(c.adjust_reason),
        "problem": c.problem,
    }


def _local_time(t: LocalTimeInformation) -> Json:
    return {
        "time_zone": t.time_zone,
        "dst_offset": t.dst_offset,
        "time_zone_offset_min": t.time_zone_offset_min,
        "dst_offset_min": t.dst_offset_min,
        "problem": t.problem,
    }


def _dis_string(s: DisString) -> Json:
    return {"value": s.value, "padding_octets": len(s.padding)}


def _system_id(s: SystemId) -> Json:
    return {
        "manufacturer_identifier": s.manufacturer_identifier,
        "organizationally_unique_identifier": s.organizationally_unique_identifier,
        "eui64": s.eui64,
    }


def _pnp_id(p: PnpId) -> Json:
    return {
        "vendor_id_source": p.vendor_id_source,
        "vendor_id": p.vendor_id,
        "product_id": p.product_id,
        "product_version": p.product_version,
    }


def _optional_int(value: int | None) -> int | None:
    return None if value is None else int(value)


def _glucose(m: GlucoseMeasurement) -> Json:
    return {
        "flags": int(m.flags),
        "sequence_number": m.sequence_number,
        "base_time": m.base_time.as_dict(),
        "base_time_problem": m.base_time.problem,
        "time_offset_min": m.time_offset_min,
        "user_facing_time": time_stamp(m.user_facing_time),
        "glucose_concentration": number(m.glucose_concentration),
        "unit": None if m.unit is None else m.unit.value,
        "type": m.sample_type,
        "sample_location": m.sample_location,
        "sensor_status": _optional_int(m.sensor_status_annunciation),
        "context_follows": m.context_follows,
    }


def _glucose_context(c: GlucoseMeasurementContext) -> Json:
    return {
        "flags": int(c.flags),
        "sequence_number": c.sequence_number,
        "extended_flags": c.extended_flags,
        "carbohydrate_id": c.carbohydrate_id,
        "carbohydrate_kg": number(c.carbohydrate_kg),
        "meal": c.meal,
        "tester": c.tester,
        "health": c.health,
        "exercise_duration_s": c.exercise_duration_s,
        "exercise_intensity_pct": c.exercise_intensity_pct,
        "medication_id": c.medication_id,
        "medication_value": number(c.medication),
        "medication_unit": None if c.medication_unit is None else c.medication_unit.value,
        "hba1c_pct": number(c.hba1c_pct),
        "trailing_bytes": c.padding_octets,
    }


def _glucose_feature(f: GlucoseFeature) -> Json:
    return _feature_bits(f.features)


def _racp_response(r: RacpResponse) -> Json:
    if isinstance(r, NumberOfStoredRecords):
        return {"op_code": int(r.OP_CODE), "operator": 0, "number_of_records": r.number_of_records}
    return {
        "op_code": int(r.OP_CODE),
        "operator": 0,
        "request_op_code": r.request_op_code,
        "response_code": r.response_code,
        "response_code_name": None if r.code is None else r.code.name.lower(),
    }


def _racp_request(r: RacpRequest) -> Json:
    return {
        "op_code": int(r.op_code),
        "operator": int(r.operator),
        "filter_type": _optional_int(r.filter_type),
        "operand": [v.as_dict() if isinstance(v, DateTime) else v for v in r.operand],
    }


def _plx_tail(m: PlxSpotCheckMeasurement | PlxContinuousMeasurement) -> dict[str, Any]:
    """The optional status words and PAI that end 0x2A5E and 0x2A5F."""
    return {
        "measurement_status": _optional_int(m.measurement_status),
        "device_sensor_status": _optional_int(m.device_sensor_status),
        "pulse_amplitude_index": number(m.pulse_amplitude_index),
    }


def _plx_spot_check(m: PlxSpotCheckMeasurement) -> Json:
    return {
        "flags": int(m.flags),
        "spo2": number(m.spo2),
        "pulse_rate": number(m.pulse_rate),
        "timestamp": time_stamp(m.timestamp),
        "timestamp_problem": None if m.timestamp is None else m.timestamp.problem,
        **_plx_tail(m),
        "device_clock_not_set": m.device_clock_not_set,
    }


def _plx_continuous(m: PlxContinuousMeasurement) -> Json:
    fast = m.spo2pr_fast or (None, None)
    slow = m.spo2pr_slow or (None, None)
    return {
        "flags": int(m.flags),
        "spo2": number(m.spo2),
        "pulse_rate": number(m.pulse_rate),
        "spo2_fast": number(fast[0]),
        "pulse_rate_fast": number(fast[1]),
        "spo2_slow": number(slow[0]),
        "pulse_rate_slow": number(slow[1]),
        **_plx_tail(m),
    }


def _plx_features(f: PlxFeatures) -> Json:
    return {
        "supported_features": int(f.supported_features),
        "measurement_status_support": _optional_int(f.measurement_status_support),
        "device_sensor_status_support": _optional_int(f.device_sensor_status_support),
    }


def _cgm(m: CgmMeasurement) -> Json:
    return [
        {
            "size": r.size,
            "flags": int(r.flags),
            "glucose_mg_dl": number(r.glucose_mg_dl),
            "time_offset_min": r.time_offset_min,
            "ssa_octets": list(r.ssa_octets),
            "sensor_status_annunciation": int(r.sensor_status_annunciation),
            "trend": number(r.trend),
            "quality": number(r.quality),
            "crc_present": r.has_e2e_crc,
            # A record whose CRC fails is rejected, so a present CRC is a valid one.
            "crc_valid": True if r.has_e2e_crc else None,
        }
        for r in m.records
    ]


def _battery(b: BatteryLevel) -> Json:
    return {"battery_level": b.level_pct}


# -- the tables -----------------------------------------------------------------------


def _dis_codec(which: DisStringCharacteristic, name: str) -> Codec[Any]:
    def parse(data: bytes) -> DisString:
        return DisString.from_bytes(which, data)

    return Codec(which.characteristic, name, parse, _dis_string)


def _table(*codecs: Codec[Any]) -> dict[str, Codec[Any]]:
    return {codec.characteristic: codec for codec in codecs}


#: Values sent by a device (notify, indicate, read), by canonical characteristic.
DEVICE_CODECS: Final[Mapping[str, Codec[Any]]] = _table(
    Codec("SFLOAT", "IEEE 11073 SFLOAT", MedFloat16.from_bytes, _med_float),
    Codec("FLOAT", "IEEE 11073 FLOAT", MedFloat32.from_bytes, _med_float),
    Codec("0x2A08", "Date Time", DateTime.from_bytes, _date_time),
    Codec("0x2A0F", "Local Time Information", LocalTimeInformation.from_bytes, _local_time),
    Codec("0x2A2B", "Current Time", CurrentTime.from_bytes, _current_time),
    Codec("0x2A35", "Blood Pressure Measurement", BloodPressureMeasurement.from_bytes, _bpm),
    Codec("0x2A36", "Intermediate Cuff Pressure", IntermediateCuffPressure.from_bytes, _icp),
    Codec("0x2A49", "Blood Pressure Feature", BloodPressureFeature.from_bytes, _bp_feature),
    Codec(
        "0x2B34",
        "Enhanced Blood Pressure Measurement",
        EnhancedBloodPressureMeasurement.from_bytes,
        _enhanced_bpm,
    ),
    Codec(
        "0x2B35",
        "Enhanced Intermediate Cuff Pressure",
        EnhancedIntermediateCuffPressure.from_bytes,
        _enhanced_icp,
    ),
    Codec("0x2B36", "Blood Pressure Record", BloodPressureRecord.from_bytes, _bp_record),
    Codec("0x2A18", "Glucose Measurement", GlucoseMeasurement.from_bytes, _glucose),
    Codec(
        "0x2A34",
        "Glucose Measurement Context",
        GlucoseMeasurementContext.from_bytes,
        _glucose_context,
    ),
    Codec("0x2A51", "Glucose Feature", GlucoseFeature.from_bytes, _glucose_feature),
    Codec("0x2A52", "Record Access Control Point", decode_response, _racp_response),
    Codec(
        "0x2A5E",
        "PLX Spot-check Measurement",
        PlxSpotCheckMeasurement.from_bytes,
        _plx_spot_check,
    ),
    Codec(
        "0x2A5F",
        "PLX Continuous Measurement",
        PlxContinuousMeasurement.from_bytes,
        _plx_continuous,
    ),
    Codec("0x2A60", "PLX Features", PlxFeatures.from_bytes, _plx_features),
    Codec("0x2AA7", "CGM Measurement", CgmMeasurement.from_bytes, _cgm),
    Codec("0x2A19", "Battery Level", BatteryLevel.from_bytes, _battery),
    Codec("0x2A23", "System ID", SystemId.from_bytes, _system_id),
    Codec("0x2A50", "PnP ID", PnpId.from_bytes, _pnp_id),
    _dis_codec(DisStringCharacteristic.MODEL_NUMBER, "Model Number String"),
    _dis_codec(DisStringCharacteristic.SERIAL_NUMBER, "Serial Number String"),
    _dis_codec(DisStringCharacteristic.FIRMWARE_REVISION, "Firmware Revision String"),
    _dis_codec(DisStringCharacteristic.HARDWARE_REVISION, "Hardware Revision String"),
    _dis_codec(DisStringCharacteristic.SOFTWARE_REVISION, "Software Revision String"),
    _dis_codec(DisStringCharacteristic.MANUFACTURER_NAME, "Manufacturer Name String"),
)

#: Values the hub writes to a device (``--from-hub``), by canonical characteristic.
HUB_CODECS: Final[Mapping[str, Codec[Any]]] = _table(
    Codec("0x2A52", "Record Access Control Point", RacpRequest.from_bytes, _racp_request),
    Codec("0x2A2B", "Current Time", CurrentTime.from_bytes, _current_time),
    Codec("0x2A0F", "Local Time Information", LocalTimeInformation.from_bytes, _local_time),
)


# -- public API -----------------------------------------------------------------------


def _supported() -> str:
    return ", ".join(sorted(set(DEVICE_CODECS) | set(HUB_CODECS)))


def parse_characteristic(name: str) -> str:
    """Canonicalise a characteristic name: ``"2a35"``, ``"0x2A35"``, the 128-bit
    Bluetooth-base UUID -> ``"0x2A35"``; ``"sfloat"``/``"float"`` -> ``"SFLOAT"``/``"FLOAT"``.

    Raises:
        UsageError: malformed, or not a characteristic this registry decodes.
    """
    text = name.strip().lower()
    if text in ("sfloat", "float"):
        return text.upper()
    match = _SHORT_UUID.match(text) or _BLUETOOTH_BASE_UUID.match(text)
    if match is None:
        raise UsageError(
            "characteristic",
            "expected a 16-bit UUID such as 0x2A35 or 2a35, a Bluetooth-base UUID, "
            "'sfloat' or 'float'",
        )
    canonical = f"0x{int(match.group(1), 16):04X}"
    if canonical not in DEVICE_CODECS and canonical not in HUB_CODECS:
        raise UsageError("characteristic", f"{canonical} is not supported; known: {_supported()}")
    return canonical


def parse_hex(text: str) -> bytes:
    """Parse a value written as hex: ``"067d00"``, ``"06 7D 00"``, ``"06:7d:00"``, ``"0x067d00"``.

    Spaces, tabs, newlines, ``:``, ``-`` and ``_`` between digits are ignored.

    Raises:
        UsageError: not hex, an odd number of digits, or longer than an ATT value.
    """
    if len(text) > MAX_HEX_TEXT_LEN:
        raise UsageError("hex", f"longer than {MAX_ATTRIBUTE_VALUE_LEN} octets")
    digits = text.strip()
    if digits[:2].lower() == "0x":
        digits = digits[2:]
    digits = digits.translate(_HEX_SEPARATORS)
    if any(ch not in string.hexdigits for ch in digits):
        raise UsageError("hex", "contains a character that is not a hex digit")
    if len(digits) % 2:
        raise UsageError("hex", "odd number of hex digits")
    data = bytes.fromhex(digits)
    if len(data) > MAX_ATTRIBUTE_VALUE_LEN:
        raise UsageError("hex", f"longer than {MAX_ATTRIBUTE_VALUE_LEN} octets")
    return data


def codec_for(characteristic: str, *, from_hub: bool = False) -> Codec[Any]:
    """The codec of ``characteristic`` (any accepted spelling) in the given direction.

    Raises:
        UsageError: unknown characteristic, or one the hub never writes when ``from_hub``.
    """
    key = parse_characteristic(characteristic)
    table = HUB_CODECS if from_hub else DEVICE_CODECS
    codec = table.get(key)
    if codec is None:
        if from_hub:
            raise UsageError("--from-hub", f"the hub does not write {key}")
        raise UsageError("characteristic", f"{key} is only written by the hub; use --from-hub")
    return codec


def decode_record(characteristic: str, data: bytes, *, from_hub: bool = False) -> Any:
    """Decode ``data`` into the typed record of ``characteristic``.

    Raises:
        UsageError: see :func:`codec_for`.
        DecodeError: the value does not decode.
    """
    return codec_for(characteristic, from_hub=from_hub).parse(data)


def decode(characteristic: str, data: bytes, *, from_hub: bool = False) -> Json:
    """Decode ``data`` into the JSON-ready form of ``characteristic``.

    Args:
        characteristic: ``"0x2A35"``, ``"2a35"``, ``"2A35"``, ``"sfloat"``, ``"float"``…
        data: the value as sent on air.
        from_hub: decode a value the hub writes (RACP requests, Current Time).

    Raises:
        UsageError: unknown characteristic or direction.
        DecodeError: the value does not decode (the reason names what is wrong).
    """
    codec = codec_for(characteristic, from_hub=from_hub)
    return codec.render(codec.parse(data))
