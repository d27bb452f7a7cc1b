"""Golden FHIR Bundles for glucose: fixed inputs give exactly the stored JSON, field by field.

Each scenario encodes a 0x2A18 value (and its 0x2A34 context) with the glucometer emulator's
independent encoders, runs it through ``agent.ingest.prepare_glucose`` with fixed device
facts and context, and compares the Bundle with ``tests/golden/<name>.json``: a failure
lists every JSON path that differs. Regenerate (after reviewing!) with
``HOMEHUB_REGENERATE_GOLDEN=1``.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path
from typing import Any, Final

import pytest
from fhir.resources.R4B.bundle import Bundle
from fhir.resources.R4B.device import Device
from fhir.resources.R4B.observation import Observation

from agent.ble.uuids import GLUCOSE_MEASUREMENT, GLUCOSE_MEASUREMENT_CONTEXT
from agent.errors import DecodeError
from agent.ingest import PREPARERS, glucose_record, prepare, prepare_glucose
from agent.measurement import RawMeasurement
from agent.normalize.bundle import full_url, unresolved_references
from agent.normalize.clock import ClockFacts
from agent.normalize.device import DeviceFacts
from agent.normalize.glucose import (
    KIND_DEVICE_QC,
    KIND_OBSERVATION,
    glucose_observations,
)
from agent.normalize.phd import Context
from hil.emulators.encoding import DateTime
from hil.emulators.glucometer import GlucoseContext, Unit, mg_per_dl, mmol_per_l
from hil.emulators.glucometer import GlucoseRecord as MeterRecord
from tests.test_fhir_golden_bp import REGENERATE, differences, dumps, loads

GOLDEN_DIR: Final = Path(__file__).parent / "golden"
RECEIVED: Final = datetime(2026, 11, 23, 9, 30, 5, tzinfo=UTC)  # 10:30:05 in Berlin
CTX: Final = Context("hub-0001", "patient-0001", "Europe/Berlin", RECEIVED)
METER: Final = DeviceFacts(
    address="F0:00:00:00:10:03",
    system_id="00A0B10012FFFE35",
    manufacturer="Homehub Test Devices",
    model="HH-GLU-1",
    serial="SN-GLU-0001",
    firmware="1.4.2",
)
FULL_CONTEXT: Final = GlucoseContext(
    carbohydrate_id=1,
    carbohydrate_kg=Decimal("0.045"),
    meal=1,
    tester=1,
    health=5,
    exercise_duration_s=1800,
    exercise_intensity_pct=40,
    medication_id=1,
    medication=Decimal("0.000004"),
    hba1c_pct=Decimal("6.8"),
)


@dataclass(frozen=True)
class Scenario:
    """One golden case: the record the meter holds, and its clock read."""

    name: str
    record: MeterRecord
    clock: ClockFacts | None = None


SCENARIOS: Final = (
    Scenario(
        "glucose-mgdl-context",
        # 98.5 mg/dL, base 08:05 with offset -60 min: user-facing 07:05; battery low;
        # the meter's clock reads 10:20:02 at 10:30:02 hub time (10 minutes behind).
        MeterRecord(17, DateTime(2026, 11, 23, 8, 5, 0), mg_per_dl("98.5"), sample_type=1,
                    sample_location=1, time_offset_min=-60, sensor_status=0x0001,
                    context=FULL_CONTEXT),
        ClockFacts.from_current_time(
            bytes(DateTime(2026, 11, 23, 10, 20, 2)) + bytes((1, 0, 0)),
            datetime(2026, 11, 23, 9, 30, 2, tzinfo=UTC),
        ),
    ),
    Scenario(
        "glucose-mmol",
        # 5.50 mmol/L (precision kept: 550e-5 mol/L), capillary plasma, alternate site.
        MeterRecord(18, DateTime(2026, 11, 23, 9, 15, 30), mmol_per_l("5.50"),
                    unit=Unit.MOL_PER_L, sample_type=2, sample_location=2, time_offset_min=0),
    ),
    Scenario(
        "glucose-control-solution",
        MeterRecord(19, DateTime(2026, 11, 23, 9, 20, 0), mg_per_dl("120"), sample_type=10,
                    sample_location=4, context=GlucoseContext(meal=1)),
    ),
)  # fmt: skip


def raw_for(record: MeterRecord) -> RawMeasurement:
    """The RawMeasurement the session hands on for ``record``."""
    context = record.context_value()
    related = {GLUCOSE_MEASUREMENT_CONTEXT: context} if context is not None else {}
    return RawMeasurement(
        GLUCOSE_MEASUREMENT, record.measurement_value(), 0.0, RECEIVED, related=related
    )


def build(scenario: Scenario) -> dict[str, Any]:
    """The Bundle the hub prepares for the scenario."""
    facts = DeviceFacts(**{**_fields(METER), "clock": scenario.clock})
    return prepare_glucose(raw_for(scenario.record), facts, CTX).bundle


def _fields(facts: DeviceFacts) -> dict[str, Any]:
    return {name: getattr(facts, name) for name in facts.__slots__}


def observations(bundle: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """The Bundle's Observations by their first code."""
    return {
        e["resource"]["code"]["coding"][0]["code"]: e["resource"]
        for e in bundle["entry"]
        if e["resource"]["resourceType"] == "Observation"
    }


@pytest.mark.parametrize("scenario", SCENARIOS, ids=[s.name for s in SCENARIOS])
def test_bundle_matches_golden_file(scenario: Scenario) -> None:
    """The prepared Bundle equals tests/golden/<scenario>.json, field by field."""
    path = GOLDEN_DIR / f"{scenario.name}.json"
    actual = loads(dumps(build(scenario)))
    if REGENERATE:
        GOLDEN_DIR.mkdir(exist_ok=True)
        path.write_text(dumps(actual))
    expected = loads(path.read_text())
    diff = differences(expected, actual)
    assert not diff, "\n".join([f"{path.name} differs:", *diff])


@pytest.mark.parametrize("scenario", SCENARIOS, ids=[s.name for s in SCENARIOS])
def test_golden_bundle_validates_and_resolves(scenario: Scenario) -> None:
    """Bundle, every Observation and Device validate (R4B); every reference resolves inside."""
    bundle = loads((GOLDEN_DIR / f"{scenario.name}.json").read_text())
    Bundle.model_validate(bundle)
    for entry in bundle["entry"]:
        resource = entry["resource"]
        model = Observation if resource["resourceType"] == "Observation" else Device
        model.model_validate(resource)
    assert unresolved_references(bundle) == []


def test_mg_per_dl_with_context_shows_the_rules() -> None:
    """Value exact in mg/dL, user-facing time mapped by the clock, identifier as the meter
    reported, status bit by name, every context item derived from the glucose Observation."""
    obs = observations(loads((GOLDEN_DIR / "glucose-mgdl-context.json").read_text()))
    glucose = obs["160184"]
    assert (str(glucose["valueQuantity"]["value"]), glucose["valueQuantity"]["code"]) == (
        "98.5",
        "mg/dL",
    )
    assert glucose["effectiveDateTime"] == "2026-11-23T07:15:00+01:00"  # 07:05 + 10 min
    # IG identifier: the user-facing time the meter reported (07:05:00) as seconds since
    # 2000; the hub identifier: the record's sequence number.
    assert glucose["identifier"] == [
        {
            "system": "http://hl7.org/fhir/uv/phd/StructureDefinition/PhdBaseObservation",
            "value": "00A0B10012FFFE35-patient-0001-160184-848732700",
        },
        {
            "system": "urn:homehub:fhir:reading-id",
            "value": "00A0B10012FFFE35-patient-0001-160184-seq:17",
        },
    ]
    assert glucose["bodySite"]["coding"][0]["code"] == "8417848"
    assert obs["8417752"]["component"][0]["code"]["coding"][0]["display"] == "device-battery-low"
    own = {"reference": full_url("Observation", glucose["id"])}
    context_codes = ["8417864", "8417884", "8417820", "8417768", "8417760", "8417800", "160220"]
    assert all(obs[code]["derivedFrom"] == [own] for code in context_codes)
    assert obs["8417864"]["valueCodeableConcept"]["coding"][0]["code"] == "8417868"
    assert str(obs["8417768"]["valueQuantity"]["value"]) == "45"  # 0.045 kg -> g
    assert (
        str(obs["8417800"]["valueQuantity"]["value"]),
        obs["8417800"]["valueQuantity"]["code"],
    ) == ("4", "mg")
    assert str(obs["160220"]["valueQuantity"]["value"]) == "6.8"
    assert "loinc" not in str(glucose["code"])


def test_mmol_keeps_precision() -> None:
    """5.50 mmol/L stays "5.50" (550e-5 mol/L × 1000), coded capillary plasma, site AST."""
    obs = observations(loads((GOLDEN_DIR / "glucose-mmol.json").read_text()))
    glucose = obs["160188"]
    assert str(glucose["valueQuantity"]["value"]) == "5.50"
    assert glucose["valueQuantity"]["code"] == "mmol/L"
    assert glucose["effectiveDateTime"] == "2026-11-23T09:15:30+01:00"
    assert glucose["bodySite"]["coding"][0]["code"] == "8417852"


def test_control_solution_is_never_patient_glucose() -> None:
    """Type 10 / location 4: one QC Observation about the meter, no Patient, no context."""
    bundle = loads((GOLDEN_DIR / "glucose-control-solution.json").read_text())
    obs = observations(bundle)
    assert list(obs) == ["160208"]
    qc = obs["160208"]
    assert qc["subject"] == {"reference": full_url("Device", "phd-00A0B10012FFFE35.F00000001003")}
    assert "Patient/" not in dumps(bundle)
    assert qc["meta"]["tag"][0]["code"] == "control-solution"
    for location_only in (MeterRecord(20, DateTime(2026, 11, 23, 9, 0), mg_per_dl("99"),
                                      sample_type=1, sample_location=4),):  # fmt: skip
        prepared = prepare_glucose(raw_for(location_only), METER, CTX)
        assert prepared.kind == KIND_DEVICE_QC
        assert list(observations(prepared.bundle)) == ["160208"]


def test_identifier_is_stable_across_resends() -> None:
    """The same record received at another time gets the same identifier and Bundle ids."""
    record = SCENARIOS[0].record
    later = Context(CTX.hub_id, CTX.patient_id, CTX.timezone, datetime(2026, 11, 24, tzinfo=UTC))
    first = prepare(raw_for(record), METER, CTX)
    again = prepare(
        RawMeasurement(GLUCOSE_MEASUREMENT, record.measurement_value(), 1.0, later.received,
                       related=raw_for(record).related),
        METER,
        later,
    )  # fmt: skip
    assert (first.kind, first.identifier) == (KIND_OBSERVATION, again.identifier)
    ids = [[e["resource"]["id"] for e in p.bundle["entry"]] for p in (first, again)]
    assert ids[0] == ids[1]
    assert GLUCOSE_MEASUREMENT in PREPARERS


def test_time_fault_and_bad_context() -> None:
    """Status bit 11 (time fault): receipt time and flag device-time-unknown, no IG identifier
    (the meter's time does not identify the record), the sequence number does; a context with
    another sequence number is dropped with a note."""
    record = MeterRecord(21, DateTime(2026, 11, 23, 8, 0), mg_per_dl("105"), sensor_status=0x0800)
    stray = GlucoseContext(meal=2).value(99)
    decoded = glucose_record(record.measurement_value(), stray)
    assert (decoded.context, decoded.context_dropped) == (None, True)
    out = glucose_observations(decoded, METER, CTX, "seq:21")
    assert len(out) == 1  # bit 11 has no IG code: no bits Observation; no context
    glucose = out[0]
    assert glucose["effectiveDateTime"] == "2026-11-23T09:30:05Z"
    assert [t["code"] for t in glucose["meta"]["tag"]] == ["device-time-unknown"]
    assert glucose["identifier"] == [
        {
            "system": "urn:homehub:fhir:reading-id",
            "value": "00A0B10012FFFE35-patient-0001-160184-seq:21",
        }
    ]
    assert glucose["note"][-1]["text"].startswith("The meter's context")
    with pytest.raises(DecodeError):
        glucose_record(record.measurement_value()[:-1], None)


def test_implausible_value_is_flagged_and_kept() -> None:
    """2500 mg/dL is kept as sent and flagged value-implausible."""
    record = MeterRecord(22, DateTime(2026, 11, 23, 8, 0), mg_per_dl("2500"))
    glucose = glucose_observations(
        glucose_record(record.measurement_value(), None), METER, CTX, "seq:22"
    )[0]
    # 250e-4 kg/L × 10^5 = 2.50E+3 mg/dL: written as FHIR's integer 2500 (IG FLOATS table).
    assert str(glucose["valueQuantity"]["value"]) == "2500"
    assert [c["code"] for c in glucose["interpretation"][0]["coding"]] == [
        "questionable",
        "value-implausible",
    ]
