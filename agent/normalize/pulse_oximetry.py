"""Pulse-oximeter measurements (PLXS 0x2A5E, 0x2A5F) as FHIR R4 resources, per the HL7 PHD IG.

One measurement becomes PhdNumericObservations (IG example numeric-spotnumeric.json):

- SpO2, MDC_PULS_OXIM_SAT_O2 150456, ``%``, also the FHIR vital-signs ``oxygensat`` profile;
- pulse rate, MDC_PULS_OXIM_PULS_RATE 149530 / LOINC 8867-4, ``/min`` (``heartrate`` profile);
- pulse amplitude index, MDC_PULS_OXIM_PERF_REL 150448, ``%`` (not a vital sign), if sent;
- a PhdBitsEnumerationObservation MDC_PULS_OXIM_DEV_STATUS 150604 for the set Device and
  Sensor Status bits, mapped by name (:data:`agent.normalize.status.PLX_DEVICE_SENSOR_STATUS`).

**Modality** is a supplemental-types component (MDC_ATTR_SUPPLEMENTAL_TYPES 68193) on SpO2 and
pulse rate: a spot-check is MDC_MODALITY_SPOT 150588; a continuous measurement's SpO2PR-Fast is
MDC_MODALITY_FAST 150580 and SpO2PR-Slow MDC_MODALITY_SLOW 150584; SpO2PR-Normal carries none
(PLXS gives no averaging property for it). The supplemental code is the identifier's last part
(``device-patient-type-timestamp-supplemental``), so Normal, Fast and Slow values of one
notification never share an identifier.

Decisions (docs/fhir-profile.md):

- **SpO2 LOINC: 2708-6 and 59408-5.** 2708-6 "Oxygen saturation in Arterial blood" is what the
  IG example and the R4 ``oxygensat`` profile require; 59408-5 "… by Pulse oximetry" is the
  more precise concept, which R4 allows as an additional coding (US Core does the same).
- **Measurement Status, by name** (IG PhdBaseObservation "Measurement Status" table):
  invalid → ``dataAbsentReason`` error (status stays ``final``: PhdBaseObservation allows only
  final or preliminary); unavailable →
  ``dataAbsentReason`` not-performed; questionable, calibration ongoing, validated, early
  estimate, measurement ongoing → ``interpretation`` (PoCD measurement-status codes), the last
  two also status ``preliminary``; demonstration / testing data → ``meta.security`` HTEST.
  Fully qualified and from-storage carry no IG code: not reported (the raw word is in the
  decoded value). The status applies to every value of the measurement.
- **Device clock not set** (0x2A5E flag bit 4): the reading is kept, ``effective[x]`` is the
  hub's receipt time, and it carries the ``device-clock-unset`` flag; its time stamp does not
  identify it, so it gets no conditional-create identifier, only the hub's.
- **Implausible values** (SpO2 or PAI above 100 %, pulse rate outside 20-300 /min) are kept
  and flagged with an ``interpretation`` ``value-implausible``
  (:func:`agent.normalize.status.implausible_interpretation`).
- **No time stamp** (every continuous measurement, a spot-check without one):
  ``effective[x]`` is the hub's receipt time; the Observations carry only the hub identifier,
  whose identity part the preparer derives from the value's bytes (and, for a continuous
  sample, the receipt time: agent/ingest.py).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import timedelta
from decimal import Decimal
from typing import Any, Final

from agent.normalize import codes
from agent.normalize.clock import ObservationTime, TimeFlag, apply_time, observation_time
from agent.normalize.device import DeviceFacts
from agent.normalize.phd import (
    Context,
    Measured,
    ReadingIds,
    ig_timestamp,
    phd_category,
    value_fields,
    vital_signs_category,
)
from agent.normalize.status import (
    PLX_DEVICE_SENSOR_STATUS,
    PlausibleRange,
    bits_observation,
    implausible,
    implausible_interpretation,
)
from drivers.ieee11073 import MedFloat16
from drivers.pulse_oximetry import (
    PlxContinuousMeasurement,
    PlxDeviceSensorStatus,
    PlxMeasurementStatus,
    PlxSpotCheckMeasurement,
)

POCD_MEASUREMENT_STATUS_SYSTEM: Final = codes.POCD_MEASUREMENT_STATUS_SYSTEM
ACT_REASON_SYSTEM: Final = "http://terminology.hl7.org/CodeSystem/v3-ActReason"
LOINC_SPO2_PULSE_OXIMETRY: Final = "59408-5"
OXYGENSAT_PROFILE: Final = "http://hl7.org/fhir/StructureDefinition/oxygensat"
HEARTRATE_PROFILE: Final = "http://hl7.org/fhir/StructureDefinition/heartrate"

# fmt: off
# ruff: noqa: E501  (aligned table: one code a line)
MDC_PULS_OXIM_SAT_O2:        Final = codes.Code(150456, "MDC_PULS_OXIM_SAT_O2", "Oxygen saturation", "2708-6")
MDC_PULS_OXIM_PULS_RATE:     Final = codes.Code(149530, "MDC_PULS_OXIM_PULS_RATE", "Pulse rate", "8867-4")
MDC_PULS_OXIM_PERF_REL:      Final = codes.Code(150448, "MDC_PULS_OXIM_PERF_REL", "Pulse amplitude index")
MDC_MODALITY_SPOT:           Final = codes.Code(150588, "MDC_MODALITY_SPOT", "Spot check")
MDC_MODALITY_FAST:           Final = codes.Code(150580, "MDC_MODALITY_FAST", "Fast averaging")
MDC_MODALITY_SLOW:           Final = codes.Code(150584, "MDC_MODALITY_SLOW", "Slow averaging")
MDC_ATTR_SUPPLEMENTAL_TYPES: Final = codes.Code(68193, "MDC_ATTR_SUPPLEMENTAL_TYPES", "Supplemental types")
MDC_DEV_SPEC_PROFILE_PULS_OXIM: Final = codes.MDC_DEV_SPEC_PROFILE_PULS_OXIM
# fmt: on

UNIT_PERCENT: Final = codes.Unit("%", "%")
UNIT_PER_MIN: Final = codes.Unit("/min", "{beat}/min")

SPO2_PLAUSIBLE: Final = PlausibleRange(Decimal(0), Decimal(100), "%")
PULSE_PLAUSIBLE: Final = PlausibleRange(Decimal(20), Decimal(300), "/min")
"""Beyond the range of human pulse rates (neonates up to ~250 /min, adults down to ~25)."""
PAI_PLAUSIBLE: Final = PlausibleRange(Decimal(0), Decimal(100), "%")

#: Measurement Status bits → PoCD measurement-status interpretation codes (by name).
STATUS_INTERPRETATION: Final[dict[PlxMeasurementStatus, tuple[str, str]]] = {
    PlxMeasurementStatus.QUESTIONABLE_MEASUREMENT_DETECTED: ("questionable", "Questionable"),
    PlxMeasurementStatus.CALIBRATION_ONGOING: ("calibration-ongoing", "Calibration ongoing"),
    PlxMeasurementStatus.VALIDATED_DATA: ("validated", "Validated"),
    PlxMeasurementStatus.EARLY_ESTIMATED_DATA: ("early-indication", "Early indication"),
    PlxMeasurementStatus.MEASUREMENT_ONGOING: ("msmt-ongoing", "Measurement ongoing"),
}
PRELIMINARY: Final = (
    PlxMeasurementStatus.EARLY_ESTIMATED_DATA | PlxMeasurementStatus.MEASUREMENT_ONGOING
)
TEST_DATA: Final = (
    PlxMeasurementStatus.DATA_FOR_DEMONSTRATION | PlxMeasurementStatus.DATA_FOR_TESTING
)


@dataclass(frozen=True, slots=True)
class PlxValue:
    """One numeric value of a measurement and how it is coded."""

    code: codes.Code
    unit: codes.Unit
    measured: Measured
    plausible: PlausibleRange
    modality: codes.Code | None
    profile: str | None  #: the FHIR vital-signs profile, None for a non-vital sign


def _measured(value: MedFloat16) -> Measured:
    if value.special is not None:
        return Measured(None, value.special)
    return Measured(value.to_decimal())


def _spo2(value: MedFloat16, modality: codes.Code | None) -> PlxValue:
    return PlxValue(
        MDC_PULS_OXIM_SAT_O2, UNIT_PERCENT, _measured(value), SPO2_PLAUSIBLE, modality,
        OXYGENSAT_PROFILE,
    )  # fmt: skip


def _pulse(value: MedFloat16, modality: codes.Code | None) -> PlxValue:
    return PlxValue(
        MDC_PULS_OXIM_PULS_RATE, UNIT_PER_MIN, _measured(value), PULSE_PLAUSIBLE, modality,
        HEARTRATE_PROFILE,
    )  # fmt: skip


def _pai(value: MedFloat16) -> PlxValue:
    return PlxValue(
        MDC_PULS_OXIM_PERF_REL, UNIT_PERCENT, _measured(value), PAI_PLAUSIBLE, None, None
    )


def _code(code: codes.Code) -> dict[str, Any]:
    concept = code.codeable_concept()
    if code is MDC_PULS_OXIM_SAT_O2:
        concept["coding"].append({"system": codes.LOINC_SYSTEM, "code": LOINC_SPO2_PULSE_OXIMETRY})
    return concept


def _status_fields(status: PlxMeasurementStatus | None) -> dict[str, Any]:
    """Observation fields the Measurement Status calls for (module docstring)."""
    if status is None:
        return {}
    out: dict[str, Any] = {}
    if status & PlxMeasurementStatus.INVALID_MEASUREMENT_DETECTED:
        out["dataAbsentReason"] = "error"  # status stays final (PhdBaseObservation.status)
    elif status & PlxMeasurementStatus.MEASUREMENT_UNAVAILABLE:
        out["dataAbsentReason"] = "not-performed"
    if status & PRELIMINARY and "status" not in out:
        out["status"] = "preliminary"
    out["interpretation"] = [
        {
            "coding": [{"system": POCD_MEASUREMENT_STATUS_SYSTEM, "code": code}],
            "text": text,
        }
        for flag, (code, text) in STATUS_INTERPRETATION.items()
        if status & flag
    ]
    if status & TEST_DATA:
        out["security"] = [{"system": ACT_REASON_SYSTEM, "code": "HTEST"}]
    return out


def _observation(
    value: PlxValue,
    ids: ReadingIds,
    when: ObservationTime,
    status: PlxMeasurementStatus | None,
    device: DeviceFacts,
    ctx: Context,
) -> dict[str, Any]:
    profiles = [codes.PHD_PROFILE + "PhdNumericObservation"]
    categories: list[dict[str, Any]] = []
    if value.profile is not None:
        profiles.append(value.profile)
        categories.append(vital_signs_category())
    categories.append(phd_category())
    supplemental = (value.modality.mdc,) if value.modality is not None else ()
    mapped = _status_fields(status)
    meta: dict[str, Any] = {"profile": profiles}
    if "security" in mapped:
        meta["security"] = mapped["security"]
    observation: dict[str, Any] = {
        "resourceType": "Observation",
        "id": ids.logical_id(value.code.mdc, supplemental),
        "meta": meta,
        "extension": [
            {
                "url": codes.GATEWAY_EXTENSION,
                "valueReference": {"reference": f"Device/phg-{ctx.hub_id}"},
            }
        ],
        "identifier": ids.identifiers(value.code.mdc, supplemental),
        "status": mapped.get("status", "final"),
        "category": categories,
        "code": _code(value.code),
        "subject": {"reference": f"Patient/{ctx.patient_id}"},
        "device": {"reference": f"Device/{device.logical_id}"},
    }
    apply_time(observation, when, ctx)
    if "dataAbsentReason" in mapped and value.measured.special is None:
        observation["dataAbsentReason"] = {
            "coding": [{"system": codes.DATA_ABSENT_SYSTEM, "code": mapped["dataAbsentReason"]}]
        }
    else:
        observation.update(value_fields(value.measured, value.unit))
    interpretation = list(mapped.get("interpretation", []))
    if "valueQuantity" in observation and implausible(value.measured.value, value.plausible):
        interpretation += implausible_interpretation()
    if interpretation:
        observation["interpretation"] = interpretation
    if value.modality is not None:
        observation["component"] = [
            {
                "code": _code(MDC_ATTR_SUPPLEMENTAL_TYPES),
                "valueCodeableConcept": {
                    "coding": [
                        {
                            "system": codes.MDC_SYSTEM,
                            "code": str(value.modality.mdc),
                            "display": value.modality.ref_id,
                        }
                    ]
                },
            }
        ]
    return observation


def _status_observation(
    word: PlxDeviceSensorStatus,
    ids: ReadingIds,
    supplemental: tuple[int, ...],
    when: ObservationTime,
    derived_from: dict[str, Any],
    device: DeviceFacts,
    ctx: Context,
) -> dict[str, Any] | None:
    mdc = PLX_DEVICE_SENSOR_STATUS.code.mdc
    base: dict[str, Any] = {
        "resourceType": "Observation",
        "id": ids.logical_id(mdc, supplemental),
        "meta": {},
        "extension": [
            {
                "url": codes.GATEWAY_EXTENSION,
                "valueReference": {"reference": f"Device/phg-{ctx.hub_id}"},
            }
        ],
        "identifier": ids.identifiers(mdc, supplemental),
        "status": "final",
        "category": [phd_category()],
        "subject": {"reference": f"Patient/{ctx.patient_id}"},
        "device": {"reference": f"Device/{device.logical_id}"},
    }
    apply_time(base, when, ctx)
    if "security" in derived_from.get("meta", {}):
        base["meta"]["security"] = derived_from["meta"]["security"]
    return bits_observation(PLX_DEVICE_SENSOR_STATUS, int(word), base, derived_from["id"])


def _resources(
    values: list[PlxValue],
    ids: ReadingIds,
    when: ObservationTime,
    status: PlxMeasurementStatus | None,
    device_status: PlxDeviceSensorStatus | None,
    device: DeviceFacts,
    ctx: Context,
) -> list[dict[str, Any]]:
    observations = [_observation(value, ids, when, status, device, ctx) for value in values]
    if device_status is not None:
        primary = values[0]
        supplemental = (primary.modality.mdc,) if primary.modality is not None else ()
        bits = _status_observation(
            device_status, ids, supplemental, when, observations[0], device, ctx
        )
        if bits is not None:
            observations.append(bits)
    return observations


def spot_check_observations(
    measurement: PlxSpotCheckMeasurement, device: DeviceFacts, ctx: Context, identity: str
) -> list[dict[str, Any]]:
    """SpO2 (first: the record's identifier), pulse rate, PAI, device status.

    ``identity`` distinguishes the reading (:class:`ReadingIds`; set by the preparer).
    """
    stamp_value = measurement.timestamp
    device_time = stamp_value.to_datetime() if stamp_value is not None else None
    problem = stamp_value.problem if stamp_value is not None else None
    if measurement.device_clock_not_set and stamp_value is not None:
        # Flag bit 4: the time stamp is not to be trusted (nor used in an identifier).
        when = ObservationTime(
            ctx.received, device_time, timedelta(0), (TimeFlag.DEVICE_CLOCK_UNSET,), None
        )
    else:
        when = observation_time(device_time, problem, device.clock, ctx, device.logical_id)
    trusted = not measurement.device_clock_not_set and not when.flags
    ids = ReadingIds(
        device.identifier_id,
        ctx.patient_id,
        identity,
        ig_timestamp(device_time) if trusted and device_time is not None else None,
    )
    values = [
        _spo2(measurement.spo2, MDC_MODALITY_SPOT),
        _pulse(measurement.pulse_rate, MDC_MODALITY_SPOT),
    ]
    if measurement.pulse_amplitude_index is not None:
        values.append(_pai(measurement.pulse_amplitude_index))
    return _resources(
        values,
        ids,
        when,
        measurement.measurement_status,
        measurement.device_sensor_status,
        device,
        ctx,
    )


def continuous_observations(
    measurement: PlxContinuousMeasurement, device: DeviceFacts, ctx: Context, identity: str
) -> list[dict[str, Any]]:
    """SpO2 and pulse rate (Normal, then Fast and Slow when sent), PAI, device status.

    The first resource, the Normal SpO2, carries the record's identifier. A continuous
    measurement has no time stamp: no conditional-create identifier (PhdBaseObservation:
    not for real-time data or data without a time stamp), only the hub's (``identity``).
    """
    when = observation_time(None, None, device.clock, ctx, device.logical_id)
    ids = ReadingIds(device.identifier_id, ctx.patient_id, identity)
    values = [_spo2(measurement.spo2, None), _pulse(measurement.pulse_rate, None)]
    for pair, modality in (
        (measurement.spo2pr_fast, MDC_MODALITY_FAST),
        (measurement.spo2pr_slow, MDC_MODALITY_SLOW),
    ):
        if pair is not None:
            values += [_spo2(pair[0], modality), _pulse(pair[1], modality)]
    if measurement.pulse_amplitude_index is not None:
        values.append(_pai(measurement.pulse_amplitude_index))
    return _resources(
        values,
        ids,
        when,
        measurement.measurement_status,
        measurement.device_sensor_status,
        device,
        ctx,
    )


def plx_observations(
    measurement: PlxSpotCheckMeasurement | PlxContinuousMeasurement,
    device: DeviceFacts,
    ctx: Context,
    identity: str,
) -> list[dict[str, Any]]:
    """A decoded 0x2A5E or 0x2A5F value's Observations (the first is the primary)."""
    if isinstance(measurement, PlxSpotCheckMeasurement):
        return spot_check_observations(measurement, device, ctx, identity)
    return continuous_observations(measurement, device, ctx, identity)
