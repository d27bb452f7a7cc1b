"""A blood-pressure measurement as FHIR R4 resources, per the HL7 PHD IG.

One 0x2A35 measurement becomes:
- a PhdCompoundNumericObservation (also the FHIR vital-signs ``bp`` profile) coded
  MDC_PRESS_BLD_NONINV / LOINC 85354-9 with systolic, diastolic and mean components, and
- when the cuff sent a pulse rate, a PhdNumericObservation MDC_PULS_RATE_NON_INV / LOINC 8867-4
  (the ``bp`` profile has no slot for pulse: the IG reports it as its own Observation).

Both reference the cuff (``device``), the hub (gateway extension) and the patient, carry the
cuff's own time in ``effectiveDateTime`` and the hub's reception time in ``issued``.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

from agent.normalize import codes
from agent.normalize.device import DeviceFacts
from agent.normalize.phd import (
    Context,
    Measured,
    fhir_datetime,
    identifier_timestamp,
    localize,
    observation_identifier,
    value_fields,
)


@dataclass(frozen=True, slots=True)
class BloodPressureReading:
    """What normalization needs from a Blood Pressure Measurement, unit-tagged and exact."""

    unit: str  #: "mmHg" or "kPa", as flag bit 0 said
    systolic: Measured
    diastolic: Measured
    mean_arterial_pressure: Measured
    device_time: datetime | None  #: the cuff's naive local time stamp, None if absent/unusable
    pulse_rate: Measured | None = None
    user_id: int | None = None


def _common(
    ctx: Context, device: DeviceFacts, code: codes.Code, profiles: list[str], ident: str
) -> dict[str, Any]:
    return {
        "resourceType": "Observation",
        "meta": {"profile": profiles},
        "extension": [
            {
                "url": codes.GATEWAY_EXTENSION,
                "valueReference": {"reference": f"Device/phg-{ctx.hub_id}"},
            }
        ],
        "identifier": [{"value": ident}],
        "status": "final",
        "category": [
            {
                "coding": [{"system": codes.OBSERVATION_CATEGORY_SYSTEM, "code": "vital-signs"}],
                "text": "Vital Signs",
            },
            {"coding": [{"system": codes.PHD_CATEGORY_SYSTEM, "code": "phd-observation"}]},
        ],
        "code": code.codeable_concept(),
        "subject": {"reference": f"Patient/{ctx.patient_id}"},
        "device": {"reference": f"Device/{device.logical_id}"},
    }


def _times(reading: BloodPressureReading, ctx: Context) -> dict[str, Any]:
    effective = (
        localize(reading.device_time, ctx.timezone)
        if reading.device_time is not None
        else ctx.received
    )
    return {
        "effectiveDateTime": fhir_datetime(effective),
        "issued": fhir_datetime(ctx.received),
    }


def blood_pressure_observations(
    reading: BloodPressureReading, device: DeviceFacts, ctx: Context
) -> list[dict[str, Any]]:
    """The panel Observation, then the pulse-rate Observation when present."""
    unit = codes.UNIT_KPA if reading.unit == "kPa" else codes.UNIT_MMHG
    stamp = identifier_timestamp(reading.device_time, ctx.received)
    panel_id = observation_identifier(
        device.identifier_id, ctx.patient_id, codes.MDC_PRESS_BLD_NONINV.mdc, stamp
    )
    panel = _common(
        ctx,
        device,
        codes.MDC_PRESS_BLD_NONINV,
        [
            codes.PHD_PROFILE + "PhdCompoundNumericObservation",
            "http://hl7.org/fhir/StructureDefinition/bp",
        ],
        panel_id,
    )
    panel.update(_times(reading, ctx))
    panel["component"] = [
        {"code": code.codeable_concept(), **value_fields(measured, unit)}
        for code, measured in (
            (codes.MDC_PRESS_BLD_NONINV_SYS, reading.systolic),
            (codes.MDC_PRESS_BLD_NONINV_DIA, reading.diastolic),
            (codes.MDC_PRESS_BLD_NONINV_MEAN, reading.mean_arterial_pressure),
        )
    ]
    out = [panel]
    if reading.pulse_rate is not None:
        pulse_id = observation_identifier(
            device.identifier_id, ctx.patient_id, codes.MDC_PULS_RATE_NON_INV.mdc, stamp
        )
        pulse = _common(
            ctx,
            device,
            codes.MDC_PULS_RATE_NON_INV,
            [
                codes.PHD_PROFILE + "PhdNumericObservation",
                "http://hl7.org/fhir/StructureDefinition/heartrate",
            ],
            pulse_id,
        )
        pulse.update(_times(reading, ctx))
        pulse.update(value_fields(reading.pulse_rate, codes.UNIT_PER_MIN))
        out.append(pulse)
    return out
