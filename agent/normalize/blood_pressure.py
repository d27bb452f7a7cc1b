"""A blood-pressure measurement as FHIR R4 resources, per the HL7 PHD IG.

One 0x2A35 measurement becomes:
- a PhdCompoundNumericObservation (also the FHIR vital-signs ``bp`` profile when in mmHg: that
  profile fixes ``mm[Hg]``, so a kPa panel claims only the PHD profile) coded
  MDC_PRESS_BLD_NONINV / LOINC 85354-9 with systolic, diastolic and mean components,
- when the cuff sent a pulse rate, a PhdNumericObservation MDC_PULS_RATE_NON_INV / LOINC 8867-4
  (the ``bp`` profile has no slot for pulse: the IG reports it as its own Observation), and
- when the Measurement Status sets a mapped bit, a PhdBitsEnumerationObservation
  MDC_BLOOD_PRESSURE_MEASUREMENT_STATUS (8410608) derived from the panel (IG bpm-status.json).

All reference the cuff (``device``), the hub (gateway extension) and the patient; times follow
:mod:`agent.normalize.clock` (device time mapped onto the hub's timeline when the cuff's clock
was read, receipt time plus a flag when the cuff's time is unusable), ``issued`` is the hub's
receipt time. Values outside :data:`PLAUSIBLE` (and a diastolic above the systolic) are kept
and flagged with an ``interpretation`` (:mod:`agent.normalize.status`).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal
from typing import Any, Final

from agent.normalize import codes
from agent.normalize.clock import ObservationTime, apply_time, observation_time
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
    BP_MEASUREMENT_STATUS,
    PlausibleRange,
    bits_observation,
    implausible,
    implausible_interpretation,
)

MMHG_PER_KPA: Final = Decimal("7.50062")
"""1 kPa = 7.50062 mmHg (1 mmHg = 0.133322 kPa, ble-spec-facts §3.1): only for range checks;
values are never converted."""

PLAUSIBLE: Final[dict[str, PlausibleRange]] = {
    "systolic": PlausibleRange(Decimal(40), Decimal(300), "mm[Hg]"),
    "diastolic": PlausibleRange(Decimal(20), Decimal(200), "mm[Hg]"),
    "mean": PlausibleRange(Decimal(25), Decimal(250), "mm[Hg]"),
    "pulse": PlausibleRange(Decimal(20), Decimal(250), "/min"),
}
"""Physiologically possible values (adults, non-invasive), wider than any alarm limit: beyond
them the number is a device or handling error, so it is flagged (never dropped). Pressures in
mmHg; kPa readings are compared after conversion."""


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
    time_problem: str | None = None  #: why a time stamp that was sent is unusable
    measurement_status: int | None = None  #: the raw Measurement Status word, if sent


BP_PROFILE: Final = "http://hl7.org/fhir/StructureDefinition/bp"
"""FHIR R4 vital-signs blood pressure profile: fixes the components' unit to ``mm[Hg]``, so
a kPa panel does not claim it (docs/fhir-profile.md)."""
HEARTRATE_PROFILE: Final = "http://hl7.org/fhir/StructureDefinition/heartrate"


def _common(
    ctx: Context,
    device: DeviceFacts,
    code: codes.Code,
    profiles: list[str],
    identifiers: list[dict[str, Any]],
    observation_id: str,
    vital_sign: bool = True,
) -> dict[str, Any]:
    return {
        "resourceType": "Observation",
        "id": observation_id,
        "meta": {"profile": profiles},
        "extension": [
            {
                "url": codes.GATEWAY_EXTENSION,
                "valueReference": {"reference": f"Device/phg-{ctx.hub_id}"},
            }
        ],
        "identifier": identifiers,
        "status": "final",
        "category": [vital_signs_category(), phd_category()] if vital_sign else [phd_category()],
        "code": code.codeable_concept(),
        "subject": {"reference": f"Patient/{ctx.patient_id}"},
        "device": {"reference": f"Device/{device.logical_id}"},
    }


def reading_time(
    reading: BloodPressureReading, device: DeviceFacts, ctx: Context
) -> ObservationTime:
    """The reading's ``effective[x]`` and time flags (rules in :mod:`agent.normalize.clock`)."""
    return observation_time(
        reading.device_time, reading.time_problem, device.clock, ctx, device.logical_id
    )


def _in_mmhg(value: Decimal, unit: str) -> Decimal:
    return value * MMHG_PER_KPA if unit == "kPa" else value


def _flag_component(component: dict[str, Any], measured: Measured, unit: str, key: str) -> None:
    if measured.value is not None and implausible(_in_mmhg(measured.value, unit), PLAUSIBLE[key]):
        component["interpretation"] = implausible_interpretation()


def blood_pressure_observations(
    reading: BloodPressureReading, device: DeviceFacts, ctx: Context, identity: str
) -> list[dict[str, Any]]:
    """The panel Observation, then pulse rate and measurement status when present.

    ``identity`` is what distinguishes this reading (:class:`ReadingIds`, set by the
    preparer: a digest of the value the cuff sent).
    """
    unit = codes.UNIT_KPA if reading.unit == "kPa" else codes.UNIT_MMHG
    when = reading_time(reading, device, ctx)
    trusted = reading.device_time is not None and not when.flags
    ids = ReadingIds(
        device.identifier_id,
        ctx.patient_id,
        identity,
        ig_timestamp(reading.device_time) if trusted and reading.device_time else None,
    )
    panel_code = codes.MDC_PRESS_BLD_NONINV
    profiles = [codes.PHD_PROFILE + "PhdCompoundNumericObservation"]
    if unit is codes.UNIT_MMHG:
        profiles.append(BP_PROFILE)
    panel = _common(
        ctx,
        device,
        panel_code,
        profiles,
        ids.identifiers(panel_code.mdc),
        ids.logical_id(panel_code.mdc),
    )
    apply_time(panel, when, ctx)
    components = []
    for code, measured, key in (
        (codes.MDC_PRESS_BLD_NONINV_SYS, reading.systolic, "systolic"),
        (codes.MDC_PRESS_BLD_NONINV_DIA, reading.diastolic, "diastolic"),
        (codes.MDC_PRESS_BLD_NONINV_MEAN, reading.mean_arterial_pressure, "mean"),
    ):
        component = {"code": code.codeable_concept(), **value_fields(measured, unit)}
        _flag_component(component, measured, reading.unit, key)
        components.append(component)
    panel["component"] = components
    systolic, diastolic = reading.systolic.value, reading.diastolic.value
    if systolic is not None and diastolic is not None and diastolic > systolic:
        panel["interpretation"] = implausible_interpretation(
            "Diastolic above systolic: implausible; kept as sent"
        )
    out = [panel]
    if reading.pulse_rate is not None:
        pulse_code = codes.MDC_PULS_RATE_NON_INV
        pulse = _common(
            ctx,
            device,
            pulse_code,
            [codes.PHD_PROFILE + "PhdNumericObservation", HEARTRATE_PROFILE],
            ids.identifiers(pulse_code.mdc),
            ids.logical_id(pulse_code.mdc),
        )
        apply_time(pulse, when, ctx)
        pulse.update(value_fields(reading.pulse_rate, codes.UNIT_PER_MIN))
        rate = reading.pulse_rate.value
        if rate is not None and implausible(rate, PLAUSIBLE["pulse"]):
            pulse["interpretation"] = implausible_interpretation()
        out.append(pulse)
    if reading.measurement_status is not None:
        status_code = codes.MDC_BLOOD_PRESSURE_MEASUREMENT_STATUS
        base = _common(
            ctx,
            device,
            status_code,
            [],
            ids.identifiers(status_code.mdc),
            ids.logical_id(status_code.mdc),
            vital_sign=False,  # not a vital sign: PHD category only
        )
        apply_time(base, when, ctx)
        status = bits_observation(
            BP_MEASUREMENT_STATUS,
            reading.measurement_status,
            base,
            ids.logical_id(panel_code.mdc),
        )
        if status is not None:
            out.append(status)
    return out
