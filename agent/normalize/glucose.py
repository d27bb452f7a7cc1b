"""A glucose record (GLS 0x2A18 with its 0x2A34 context) as FHIR R4 resources, per the HL7 PHD IG.

One record becomes:

- the glucose **PhdNumericObservation** (IG glucose-observation.json), coded by the sample
  *type* (ble-spec-facts §8.2: capillary whole blood MDC_CONC_GLU_CAPILLARY_WHOLEBLOOD
  160184 … ISF MDC_CONC_GLU_ISF 160212; an RFU type: MDC_CONC_GLU_GEN 160020), the value in
  mg/dL (kg/L × 100 000) or mmol/L (mol/L × 1000) exactly as the meter's SFLOAT states it
  (``Decimal.scaleb``: no rounding, precision kept), UCUM ``mg/dL`` / ``mmol/L``; the sample
  *location* as ``bodySite`` (MDC_CTXT_GLU_SAMPLELOCATION_* codes; "not available": none);
- when the Sensor Status Annunciation sets a mapped bit, a **PhdBitsEnumerationObservation**
  MDC_GLU_METER_DEV_STATUS 8417752, bits by name (:data:`agent.normalize.status.
  GLUCOSE_SENSOR_STATUS`, IG bits-observation.json), ``derivedFrom`` the glucose one;
- one Observation per context field present (IG meal-context-observation.json: context
  items are Observations of their own that point at the measurement they qualify with
  ``derivedFrom``, the FHIR form of the 11073 Source-Handle-Reference): meal, tester,
  health (PhdCodedEnumerationObservation), carbohydrate (g), medication (mg or mL), HbA1c
  (%) (PhdNumericObservation), exercise (PhdNumericObservation: the intensity %, over an
  ``effectivePeriod`` as long as the exercise: 11073-10417's Measure-Active-Period).

Decisions (docs/fhir-profile.md):

- **No LOINC for glucose.** The IG adds LOINC only to FHIR vital signs; glucose is not one
  and the IG's glucose examples carry MDC only. LOINC's glucometer codes (41653-7, 14743-9)
  name *capillary blood* only and the mapping is many-to-one (ble-spec-facts §8.3): a wrong
  LOINC is worse than none, so none is sent.
- **Time** is the user-facing time, Base Time + the signed Time Offset, in the hub's zone,
  mapped as :mod:`agent.normalize.clock` does for every device (coincident timestamp when
  the meter's clock was read). Sensor status bit 11 "time fault" makes the time unusable:
  ``effective[x]`` is the hub's receipt time with flag ``device-time-unknown``.
- **Identifiers**: the hub's ``device-patient-MDC-seq:<sequence number>`` (the record's
  identity: GLS numbers its records, so a meter with an unset clock still gives each record
  its own); and, when the user-facing time is usable and unflagged, the IG's
  conditional-create ``device-patient-MDC-<seconds since 2000>``.
- **Control solution** (type 10 or sample location 4) is **never** reported as patient
  glucose: it becomes a device quality-control Observation, MDC_CONC_GLU_CONTROL 160208,
  (PhdNumericObservation, PHD category) whose ``subject`` is the meter (no Patient
  reference, no context), tagged
  ``control-solution``, stored with kind :data:`KIND_DEVICE_QC`. It is kept (not dropped)
  so the sync mark commits past it and the QC history reaches the platform.
- **Context of another sequence number** or undecodable context: the glucose value is kept,
  the context is not reported, and a ``note`` says so.
- **Plausibility**: values outside 10-2000 mg/dL (0.5-111 mmol/L) are kept and flagged
  ``value-implausible`` (meters read 10-600 mg/dL; beyond that it is an error, not a patient).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import timedelta
from decimal import Decimal
from typing import Any, Final

from agent.normalize import codes
from agent.normalize.clock import ObservationTime, apply_time, observation_time
from agent.normalize.codes import Code, Unit
from agent.normalize.device import DeviceFacts
from agent.normalize.phd import (
    Context,
    Measured,
    ReadingIds,
    fhir_datetime,
    ig_timestamp,
    phd_category,
    value_fields,
)
from agent.normalize.status import (
    GLUCOSE_SENSOR_STATUS,
    GLUCOSE_TIME_FAULT,
    PlausibleRange,
    bits_observation,
    implausible,
    implausible_interpretation,
)
from drivers.glucose import (
    ConcentrationUnit,
    GlucoseMeasurement,
    GlucoseMeasurementContext,
    GlucoseType,
    MedicationUnit,
    SampleLocation,
)
from drivers.ieee11073 import MedFloat16

KIND_OBSERVATION: Final = "observation"
KIND_DEVICE_QC: Final = "device_qc"
"""Outbox/uplink kind of a control-solution result: clinical storage class (never shed), but
not an observation of the patient."""

# fmt: off
# ruff: noqa: E501  (aligned table: one code a line)
MDC_DEV_SPEC_PROFILE_GLUCOSE:        Final = codes.MDC_DEV_SPEC_PROFILE_GLUCOSE
MDC_CONC_GLU_GEN:                    Final = Code(160020, "MDC_CONC_GLU_GEN", "Glucose")
MDC_CONC_GLU_CAPILLARY_WHOLEBLOOD:   Final = Code(160184, "MDC_CONC_GLU_CAPILLARY_WHOLEBLOOD", "Glucose in capillary whole blood")
MDC_CONC_GLU_CAPILLARY_PLASMA:       Final = Code(160188, "MDC_CONC_GLU_CAPILLARY_PLASMA", "Glucose in capillary plasma")
MDC_CONC_GLU_VENOUS_WHOLEBLOOD:      Final = Code(160192, "MDC_CONC_GLU_VENOUS_WHOLEBLOOD", "Glucose in venous whole blood")
MDC_CONC_GLU_VENOUS_PLASMA:          Final = Code(160196, "MDC_CONC_GLU_VENOUS_PLASMA", "Glucose in venous plasma")
MDC_CONC_GLU_ARTERIAL_WHOLEBLOOD:    Final = Code(160200, "MDC_CONC_GLU_ARTERIAL_WHOLEBLOOD", "Glucose in arterial whole blood")
MDC_CONC_GLU_ARTERIAL_PLASMA:        Final = Code(160204, "MDC_CONC_GLU_ARTERIAL_PLASMA", "Glucose in arterial plasma")
MDC_CONC_GLU_UNDETERMINED_WHOLEBLOOD: Final = Code(160364, "MDC_CONC_GLU_UNDETERMINED_WHOLEBLOOD", "Glucose in whole blood (site undetermined)")
MDC_CONC_GLU_UNDETERMINED_PLASMA:    Final = Code(160368, "MDC_CONC_GLU_UNDETERMINED_PLASMA", "Glucose in plasma (site undetermined)")
MDC_CONC_GLU_ISF:                    Final = Code(160212, "MDC_CONC_GLU_ISF", "Glucose in interstitial fluid")
MDC_CONC_GLU_CONTROL:                Final = Code(160208, "MDC_CONC_GLU_CONTROL", "Glucose in control solution")
MDC_CONC_HBA1C:                      Final = Code(160220, "MDC_CONC_HBA1C", "HbA1c")
MDC_CTXT_GLU_EXERCISE:               Final = Code(8417760, "MDC_CTXT_GLU_EXERCISE", "Exercise")
MDC_CTXT_GLU_CARB:                   Final = Code(8417764, "MDC_CTXT_GLU_CARB", "Carbohydrate")
MDC_CTXT_MEDICATION:                 Final = Code(8417796, "MDC_CTXT_MEDICATION", "Medication")
MDC_CTXT_GLU_HEALTH:                 Final = Code(8417820, "MDC_CTXT_GLU_HEALTH", "Health")
MDC_CTXT_GLU_MEAL:                   Final = Code(8417864, "MDC_CTXT_GLU_MEAL", "Meal context")
MDC_CTXT_GLU_TESTER:                 Final = Code(8417884, "MDC_CTXT_GLU_TESTER", "Tester")
# fmt: on

UNIT_MG_PER_DL: Final = Unit("mg/dL", "mg/dL")
UNIT_MMOL_PER_L: Final = Unit("mmol/L", "mmol/L")
UNIT_GRAM: Final = Unit("g", "g")
UNIT_MILLIGRAM: Final = Unit("mg", "mg")
UNIT_MILLILITRE: Final = Unit("mL", "mL")
UNIT_PERCENT: Final = Unit("%", "%")

#: Type nibble → glucose code (ble-spec-facts §8.2); control solution handled apart.
TYPE_CODES: Final[dict[int, Code]] = {
    GlucoseType.CAPILLARY_WHOLE_BLOOD: MDC_CONC_GLU_CAPILLARY_WHOLEBLOOD,
    GlucoseType.CAPILLARY_PLASMA: MDC_CONC_GLU_CAPILLARY_PLASMA,
    GlucoseType.VENOUS_WHOLE_BLOOD: MDC_CONC_GLU_VENOUS_WHOLEBLOOD,
    GlucoseType.VENOUS_PLASMA: MDC_CONC_GLU_VENOUS_PLASMA,
    GlucoseType.ARTERIAL_WHOLE_BLOOD: MDC_CONC_GLU_ARTERIAL_WHOLEBLOOD,
    GlucoseType.ARTERIAL_PLASMA: MDC_CONC_GLU_ARTERIAL_PLASMA,
    GlucoseType.UNDETERMINED_WHOLE_BLOOD: MDC_CONC_GLU_UNDETERMINED_WHOLEBLOOD,
    GlucoseType.UNDETERMINED_PLASMA: MDC_CONC_GLU_UNDETERMINED_PLASMA,
    GlucoseType.INTERSTITIAL_FLUID: MDC_CONC_GLU_ISF,
}

#: Sample location nibble → MDC_CTXT_GLU_SAMPLELOCATION_* (ble-spec-facts §8.2).
LOCATION_CODES: Final[dict[int, tuple[int, str, str]]] = {
    SampleLocation.FINGER: (8417848, "MDC_CTXT_GLU_SAMPLELOCATION_FINGER", "Finger"),
    SampleLocation.ALTERNATE_SITE_TEST: (
        8417852,
        "MDC_CTXT_GLU_SAMPLELOCATION_AST",
        "Alternate site test",
    ),
    SampleLocation.EARLOBE: (8417856, "MDC_CTXT_GLU_SAMPLELOCATION_EARLOBE", "Earlobe"),
}

#: Coded context values: (MDC code or None when unverified, ref id, text). ``None`` codes
#: (bedtime, during menses: not found in the sources, ble-spec-facts §8.2) go as text only.
MEAL_VALUES: Final[dict[int, tuple[int | None, str, str]]] = {
    1: (8417868, "MDC_CTXT_GLU_MEAL_PREPRANDIAL", "Before a meal"),
    2: (8417872, "MDC_CTXT_GLU_MEAL_POSTPRANDIAL", "After a meal"),
    3: (8417876, "MDC_CTXT_GLU_MEAL_FASTING", "Fasting"),
    4: (8417880, "MDC_CTXT_GLU_MEAL_CASUAL", "Casual (snacks, drinks)"),
    5: (None, "MDC_CTXT_GLU_MEAL_BEDTIME", "Bedtime"),
}
TESTER_VALUES: Final[dict[int, tuple[int | None, str, str]]] = {
    1: (8417888, "MDC_CTXT_GLU_TESTER_SELF", "Self"),
    2: (8417892, "MDC_CTXT_GLU_TESTER_HCP", "Health care professional"),
    3: (8417896, "MDC_CTXT_GLU_TESTER_LAB", "Lab test"),
}
HEALTH_VALUES: Final[dict[int, tuple[int | None, str, str]]] = {
    1: (8417824, "MDC_CTXT_GLU_HEALTH_MINOR", "Minor health issues"),
    2: (8417828, "MDC_CTXT_GLU_HEALTH_MAJOR", "Major health issues"),
    3: (None, "MDC_CTXT_GLU_HEALTH_MENSES", "During menses"),
    4: (8417836, "MDC_CTXT_GLU_HEALTH_STRESS", "Under stress"),
    5: (8417840, "MDC_CTXT_GLU_HEALTH_NONE", "No health issues"),
}
CARBOHYDRATE_CODES: Final[dict[int, Code]] = {
    1: Code(8417768, "MDC_CTXT_GLU_CARB_BREAKFAST", "Carbohydrate: breakfast"),
    2: Code(8417772, "MDC_CTXT_GLU_CARB_LUNCH", "Carbohydrate: lunch"),
    3: Code(8417776, "MDC_CTXT_GLU_CARB_DINNER", "Carbohydrate: dinner"),
    4: Code(8417780, "MDC_CTXT_GLU_CARB_SNACK", "Carbohydrate: snack"),
    5: Code(8417784, "MDC_CTXT_GLU_CARB_DRINK", "Carbohydrate: drink"),
    6: Code(8417788, "MDC_CTXT_GLU_CARB_SUPPER", "Carbohydrate: supper"),
    7: Code(8417792, "MDC_CTXT_GLU_CARB_BRUNCH", "Carbohydrate: brunch"),
}
MEDICATION_CODES: Final[dict[int, Code]] = {
    1: Code(8417800, "MDC_CTXT_MEDICATION_RAPIDACTING", "Rapid-acting insulin"),
    2: Code(8417804, "MDC_CTXT_MEDICATION_SHORTACTING", "Short-acting insulin"),
    3: Code(8417808, "MDC_CTXT_MEDICATION_INTERMEDIATEACTING", "Intermediate-acting insulin"),
    4: Code(8417812, "MDC_CTXT_MEDICATION_LONGACTING", "Long-acting insulin"),
    5: Code(8417816, "MDC_CTXT_MEDICATION_PREMIX", "Pre-mixed insulin"),
}

EXERCISE_DURATION_OVERRUN_S: Final = 0xFFFF

MG_PER_DL_PER_MMOL_PER_L: Final = Decimal("18.016")
"""Glucose molar mass 180.156 g/mol (ble-spec-facts §4.1): only for the plausibility check in
mmol/L; values are never converted."""

PLAUSIBLE_MG_PER_DL: Final = PlausibleRange(Decimal(10), Decimal(2000), "mg/dL")
"""Meters read 10-600 mg/dL; the highest survived glucose is about 2600 mg/dL in case
reports, but beyond 2000 a home reading is a device or handling error: flagged, kept."""

CONTROL_SOLUTION_TAG: Final = {
    "system": codes.HUB_FLAG_SYSTEM,
    "code": "control-solution",
    "display": "Control-solution test (meter quality control), not a patient reading",
}
QC_PATIENT_PART: Final = "qc"
"""The identifiers' patient part for a control-solution test (it names no patient)."""
CONTEXT_DROPPED_NOTE: Final = "The meter's context for this reading was unusable; not reported"


@dataclass(frozen=True, slots=True)
class GlucoseRecord:
    """What normalization needs: a decoded measurement and, if usable, its context.

    Built by the preparer (``agent.ingest.glucose_record``), which decodes both values.
    """

    measurement: GlucoseMeasurement
    context: GlucoseMeasurementContext | None = None
    context_dropped: bool = False  #: a context was sent but is undecodable or mismatched

    @property
    def kind(self) -> str:
        """The outbox/uplink kind: :data:`KIND_DEVICE_QC` for control solution."""
        return KIND_DEVICE_QC if self.is_control_solution else KIND_OBSERVATION

    @property
    def is_control_solution(self) -> bool:
        """Type 10 or sample location 4 (GLS): a control-solution test, not the patient."""
        m = self.measurement
        return (
            m.sample_type == GlucoseType.CONTROL_SOLUTION
            or m.sample_location == SampleLocation.CONTROL_SOLUTION
        )


def _measured(value: MedFloat16) -> Measured:
    if value.special is not None:
        return Measured(None, value.special)
    return Measured(value.to_decimal())


def _scaled(value: MedFloat16, exponent: int) -> Measured:
    """The value × 10^exponent, exactly (the SFLOAT's digits kept)."""
    measured = _measured(value)
    if measured.value is None:
        return measured
    return Measured(measured.value.scaleb(exponent))


def concentration(m: GlucoseMeasurement) -> tuple[Measured, Unit] | None:
    """The concentration in mg/dL (from kg/L) or mmol/L (from mol/L), exact; None if absent."""
    if m.glucose_concentration is None:
        return None
    if m.unit is ConcentrationUnit.MOL_PER_L:
        return _scaled(m.glucose_concentration, 3), UNIT_MMOL_PER_L
    return _scaled(m.glucose_concentration, 5), UNIT_MG_PER_DL


def _implausible(measured: Measured, unit: Unit) -> bool:
    if measured.value is None:
        return False
    value = measured.value
    if unit is UNIT_MMOL_PER_L:
        value = value * MG_PER_DL_PER_MMOL_PER_L
    return implausible(value, PLAUSIBLE_MG_PER_DL)


def reading_ids(
    m: GlucoseMeasurement, when: ObservationTime, device: DeviceFacts, patient: str, identity: str
) -> ReadingIds:
    """The record's identifiers: the hub's (``identity``: the sequence number, set by the
    preparer) and, when the meter's user-facing time identifies it (usable, no time fault, no
    time flag), the IG's conditional-create identifier with that time."""
    user_facing = m.user_facing_time
    local = user_facing.to_datetime() if user_facing is not None else None
    trusted = local is not None and not when.flags and when.device_time is not None
    return ReadingIds(
        device.identifier_id,
        patient,
        identity,
        ig_timestamp(local) if trusted and local is not None else None,
    )


def reading_time(m: GlucoseMeasurement, device: DeviceFacts, ctx: Context) -> ObservationTime:
    """``effective[x]`` and time flags: user-facing time through :mod:`agent.normalize.clock`."""
    problem = m.base_time.problem
    user_facing = m.user_facing_time
    device_time = user_facing.to_datetime() if user_facing is not None else None
    if device_time is None and problem is None:
        problem = "Time Offset leaves the Date Time range"
    status = m.sensor_status_annunciation
    if status is not None and status & GLUCOSE_TIME_FAULT:
        device_time, problem = None, "time fault (Sensor Status Annunciation bit 11)"
    return observation_time(device_time, problem, device.clock, ctx, device.logical_id)


def _base(
    ctx: Context,
    device: DeviceFacts,
    code: Code,
    profile: str,
    ids: ReadingIds,
    when: ObservationTime,
) -> dict[str, Any]:
    observation: dict[str, Any] = {
        "resourceType": "Observation",
        "id": ids.logical_id(code.mdc),
        "meta": {"profile": [codes.PHD_PROFILE + profile]},
        "extension": [
            {
                "url": codes.GATEWAY_EXTENSION,
                "valueReference": {"reference": f"Device/phg-{ctx.hub_id}"},
            }
        ],
        "identifier": ids.identifiers(code.mdc),
        "status": "final",
        "category": [phd_category()],
        "code": code.codeable_concept(),
        "subject": {"reference": f"Patient/{ctx.patient_id}"},
        "device": {"reference": f"Device/{device.logical_id}"},
    }
    apply_time(observation, when, ctx)
    return observation


def _coded_value(value: tuple[int | None, str, str]) -> dict[str, Any]:
    mdc, ref_id, text = value
    if mdc is None:
        return {"valueCodeableConcept": {"text": text}}
    return {
        "valueCodeableConcept": {
            "coding": [{"system": codes.MDC_SYSTEM, "code": str(mdc), "display": ref_id}],
            "text": text,
        }
    }


def _body_site(location: int | None) -> dict[str, Any] | None:
    entry = LOCATION_CODES.get(location) if location is not None else None
    if entry is None:
        return None
    mdc, ref_id, text = entry
    return {
        "coding": [{"system": codes.MDC_SYSTEM, "code": str(mdc), "display": ref_id}],
        "text": text,
    }


def control_solution_observation(
    record: GlucoseRecord, device: DeviceFacts, ctx: Context, identity: str
) -> dict[str, Any]:
    """The meter's quality-control result: subject is the meter, never the patient.

    A PhdNumericObservation (PhdBaseObservation allows a PhdDevice subject) with the PHD
    category; the identifiers' patient part is ``qc``.
    """
    m = record.measurement
    when = reading_time(m, device, ctx)
    ids = reading_ids(m, when, device, QC_PATIENT_PART, identity)
    observation = _base(ctx, device, MDC_CONC_GLU_CONTROL, "PhdNumericObservation", ids, when)
    observation["meta"]["tag"] = [dict(CONTROL_SOLUTION_TAG), *observation["meta"].get("tag", [])]
    observation["subject"] = {"reference": f"Device/{device.logical_id}"}
    value = concentration(m)
    if value is not None:
        observation.update(value_fields(*value))
    else:
        observation["dataAbsentReason"] = {
            "coding": [{"system": codes.DATA_ABSENT_SYSTEM, "code": "unknown"}]
        }
    return observation


def glucose_observations(
    record: GlucoseRecord, device: DeviceFacts, ctx: Context, identity: str
) -> list[dict[str, Any]]:
    """The glucose Observation first, then its status bits and context Observations.

    ``identity`` distinguishes the record (the preparer's ``seq:<sequence number>``).
    A control-solution record yields only :func:`control_solution_observation`.
    """
    if record.is_control_solution:
        return [control_solution_observation(record, device, ctx, identity)]
    m = record.measurement
    when = reading_time(m, device, ctx)
    ids = reading_ids(m, when, device, ctx.patient_id, identity)
    code = TYPE_CODES.get(m.sample_type or 0, MDC_CONC_GLU_GEN)

    glucose = _base(ctx, device, code, "PhdNumericObservation", ids, when)
    value = concentration(m)
    if value is None:
        # Flag bit 1 clear: no concentration sent (a record of status only).
        glucose["dataAbsentReason"] = {
            "coding": [{"system": codes.DATA_ABSENT_SYSTEM, "code": "unknown"}]
        }
    else:
        glucose.update(value_fields(*value))
        if _implausible(*value):
            glucose["interpretation"] = implausible_interpretation()
    site = _body_site(m.sample_location)
    if site is not None:
        glucose["bodySite"] = site
    if record.context_dropped:
        glucose.setdefault("note", []).append({"text": CONTEXT_DROPPED_NOTE})
    out = [glucose]
    derived = [{"reference": f"Observation/{glucose['id']}"}]

    status = m.sensor_status_annunciation
    if status is not None:
        base = _base(
            ctx,
            device,
            codes.MDC_GLU_METER_DEV_STATUS,
            "PhdBitsEnumerationObservation",
            ids,
            when,
        )
        bits = bits_observation(GLUCOSE_SENSOR_STATUS, int(status), base, glucose["id"])
        if bits is not None:
            out.append(bits)

    if record.context is not None:
        for observation in _context_observations(record.context, ctx, device, when, ids):
            observation["derivedFrom"] = derived
            out.append(observation)
    return out


def _context_observations(
    c: GlucoseMeasurementContext,
    ctx: Context,
    device: DeviceFacts,
    when: ObservationTime,
    ids: ReadingIds,
) -> list[dict[str, Any]]:
    out: list[dict[str, Any]] = []

    def numeric(code: Code, measured: Measured, unit: Unit) -> None:
        observation = _base(ctx, device, code, "PhdNumericObservation", ids, when)
        observation.update(value_fields(measured, unit))
        out.append(observation)

    def coded(code: Code, value: tuple[int | None, str, str] | None) -> None:
        if value is None:
            return  # "not available" (15) or RFU: nothing to report
        observation = _base(ctx, device, code, "PhdCodedEnumerationObservation", ids, when)
        observation.update(_coded_value(value))
        out.append(observation)

    if c.meal is not None:
        coded(MDC_CTXT_GLU_MEAL, MEAL_VALUES.get(c.meal))
    if c.tester is not None:
        coded(MDC_CTXT_GLU_TESTER, TESTER_VALUES.get(c.tester))
    if c.health is not None:
        coded(MDC_CTXT_GLU_HEALTH, HEALTH_VALUES.get(c.health))
    if c.carbohydrate_id is not None and c.carbohydrate_kg is not None:
        code = CARBOHYDRATE_CODES.get(c.carbohydrate_id, MDC_CTXT_GLU_CARB)
        numeric(code, _scaled(c.carbohydrate_kg, 3), UNIT_GRAM)  # kg → g
    if c.exercise_duration_s is not None and c.exercise_intensity_pct is not None:
        out.append(_exercise(c.exercise_duration_s, c.exercise_intensity_pct, ctx, device, when,
                             ids))  # fmt: skip
    if c.medication_id is not None and c.medication is not None:
        code = MEDICATION_CODES.get(c.medication_id, MDC_CTXT_MEDICATION)
        if c.medication_unit is MedicationUnit.LITRES:
            numeric(code, _scaled(c.medication, 3), UNIT_MILLILITRE)  # L → mL
        else:
            numeric(code, _scaled(c.medication, 6), UNIT_MILLIGRAM)  # kg → mg
    if c.hba1c_pct is not None:
        numeric(MDC_CONC_HBA1C, _measured(c.hba1c_pct), UNIT_PERCENT)
    return out


def _exercise(
    duration_s: int,
    intensity_pct: int,
    ctx: Context,
    device: DeviceFacts,
    when: ObservationTime,
    ids: ReadingIds,
) -> dict[str, Any]:
    """Exercise context as IEEE 11073-10417 models it: a numeric whose value is the
    intensity (%) and whose Measure-Active-Period is the duration. The PHD IG maps a
    Measure-Active-Period to ``effectivePeriod`` (PhdBaseObservation effective[x]); GLS gives
    no start, so the period ends at the measurement's time. 65535 s means "at least"
    (GLS §3.106.2): the period then starts 65535 s before and a note says so."""
    observation = _base(ctx, device, MDC_CTXT_GLU_EXERCISE, "PhdNumericObservation", ids, when)
    end = observation.pop("effectiveDateTime")
    start = when.effective - timedelta(seconds=duration_s)
    observation["effectivePeriod"] = {"start": fhir_datetime(start), "end": end}
    observation["valueQuantity"] = {
        "value": intensity_pct,
        "unit": UNIT_PERCENT.display,
        "system": codes.UCUM_SYSTEM,
        "code": UNIT_PERCENT.ucum,
    }
    if duration_s == EXERCISE_DURATION_OVERRUN_S:
        observation.setdefault("note", []).append(
            {"text": f"exercise lasted at least {EXERCISE_DURATION_OVERRUN_S} s (GLS overrun)"}
        )
    return observation
