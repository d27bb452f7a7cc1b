"""Golden FHIR Bundles for blood pressure: fixed inputs give exactly the stored JSON.

Each scenario encodes a 0x2A35 value with the emulator's independent encoder, runs it through
``agent.ingest.prepare_blood_pressure`` with fixed device facts, clock and context, and
compares the Bundle with ``tests/golden/<name>.json`` field by field: a failure lists every
JSON path that differs. Numbers keep their written precision ("17.0" is not "17").

Regenerate (after reviewing the change!) with ``HOMEHUB_REGENERATE_GOLDEN=1``; the files are
never rewritten otherwise.
"""

from __future__ import annotations

import json
import os
import re
from dataclasses import dataclass
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path
from typing import Any, Final

import pytest
from fhir.resources.R4B.bundle import Bundle
from fhir.resources.R4B.device import Device
from fhir.resources.R4B.observation import Observation

from agent.ingest import BLOOD_PRESSURE_MEASUREMENT, prepare_blood_pressure
from agent.measurement import RawMeasurement
from agent.normalize.bundle import unresolved_references
from agent.normalize.clock import ClockFacts
from agent.normalize.device import DeviceFacts
from agent.normalize.phd import Context
from hil.emulators.cuff import BpReading, PressureUnit
from hil.emulators.encoding import DateTime

GOLDEN_DIR: Final = Path(__file__).parent / "golden"
REGENERATE: Final = os.environ.get("HOMEHUB_REGENERATE_GOLDEN") == "1"

RECEIVED: Final = datetime(2026, 11, 23, 9, 30, 5, tzinfo=UTC)  # 10:30:05 in Berlin
CTX: Final = Context("hub-0001", "patient-0001", "Europe/Berlin", RECEIVED)
CUFF: Final = DeviceFacts(
    address="F0:00:00:00:10:01",
    system_id="00A0B10012FFFE34",
    manufacturer="Homehub Test Devices",
    model="HH-BPM-1",
    serial="SN-0000-0001",
    firmware="1.4.2",
)


def _clock(current_time: bytes) -> ClockFacts:
    """A CTS read that completed 3 s before the first reading arrived."""
    return ClockFacts.from_current_time(current_time, datetime(2026, 11, 23, 9, 30, 2, tzinfo=UTC))


@dataclass(frozen=True)
class Scenario:
    """One golden case: the reading the cuff sends and its clock."""

    name: str
    reading: BpReading
    clock: ClockFacts | None


SCENARIOS: Final = (
    Scenario(
        "bp-mmhg",
        BpReading(128, 82, 97, time_stamp=DateTime(2026, 11, 23, 7, 58, 10), pulse_rate=71,
                  user_id=1, measurement_status=0x0004),
        # The cuff's clock reads 10:20:02 at 10:30:02 hub time: 10 minutes behind.
        _clock(bytes(DateTime(2026, 11, 23, 10, 20, 2)) + bytes((1, 0, 0))),
    ),
    Scenario(
        "bp-kpa",
        BpReading(Decimal("17.2"), Decimal("11.0"), Decimal("13.10"), unit=PressureUnit.KPA,
                  time_stamp=DateTime(2026, 11, 23, 8, 5, 3), pulse_rate=69),
        None,
    ),
    Scenario(
        "bp-nan",
        BpReading(131, 85, None, time_stamp=DateTime(2026, 11, 23, 8, 1, 42), pulse_rate=74),
        None,
    ),
    Scenario(
        "bp-unset-clock",
        BpReading(119, 76, 90, time_stamp=DateTime(2000, 1, 1, 0, 3, 0), pulse_rate=64),
        _clock(bytes(10)),  # Current Time with year, month and day 0
    ),
)  # fmt: skip


def build(scenario: Scenario) -> dict[str, Any]:
    """The Bundle the hub prepares for the scenario."""
    raw = RawMeasurement(BLOOD_PRESSURE_MEASUREMENT, bytes(scenario.reading), 0.0, RECEIVED)
    facts = DeviceFacts(**{**_fields(CUFF), "clock": scenario.clock})
    return prepare_blood_pressure(raw, facts, CTX).bundle


def _fields(facts: DeviceFacts) -> dict[str, Any]:
    return {name: getattr(facts, name) for name in facts.__slots__}


# -- JSON with exact decimals --------------------------------------------------------------

_DECIMAL = re.compile(r'"@decimal:([-0-9.E+]+)"')


def dumps(value: Any) -> str:
    """Indented JSON; Decimals written as the number they are, with their precision."""

    def default(obj: Any) -> str:
        if isinstance(obj, Decimal):
            return f"@decimal:{obj}"
        raise TypeError(type(obj).__name__)

    return _DECIMAL.sub(r"\1", json.dumps(value, indent=2, default=default)) + "\n"


def loads(text: str) -> Any:
    """JSON with every fractional number as a Decimal (exact, precision kept)."""
    return json.loads(text, parse_float=Decimal)


def _scalar(value: Any) -> tuple[str, str]:
    """A scalar's kind and JSON text: Decimal 128 and int 128 both read "number 128"."""
    if isinstance(value, bool) or value is None or isinstance(value, str):
        return (type(value).__name__, json.dumps(value))
    if isinstance(value, int | Decimal):
        return ("number", str(value))
    return (type(value).__name__, repr(value))


def differences(expected: Any, actual: Any, path: str = "$") -> list[str]:
    """Every JSON path where ``actual`` differs from ``expected``, with both values."""
    if isinstance(expected, dict) and isinstance(actual, dict):
        out: list[str] = []
        for key in sorted(expected.keys() | actual.keys()):
            where = f"{path}.{key}"
            if key not in actual:
                out.append(f"{where}: missing (expected {expected[key]!r})")
            elif key not in expected:
                out.append(f"{where}: unexpected {actual[key]!r}")
            else:
                out.extend(differences(expected[key], actual[key], where))
        return out
    if isinstance(expected, list) and isinstance(actual, list):
        out = [
            d
            for i, (e, a) in enumerate(zip(expected, actual, strict=False))
            for d in differences(e, a, f"{path}[{i}]")
        ]
        if len(expected) != len(actual):
            out.append(f"{path}: {len(actual)} items, expected {len(expected)}")
        return out
    if isinstance(expected, dict | list) or isinstance(actual, dict | list):
        return [f"{path}: {actual!r}, expected {expected!r}"]
    if _scalar(expected) != _scalar(actual):
        return [f"{path}: {_scalar(actual)[1]}, expected {_scalar(expected)[1]}"]
    return []


# -- the tests ------------------------------------------------------------------------------


@pytest.mark.parametrize("scenario", SCENARIOS, ids=[s.name for s in SCENARIOS])
def test_bundle_matches_golden_file(scenario: Scenario) -> None:
    """The prepared Bundle equals tests/golden/<scenario>.json, field by field."""
    path = GOLDEN_DIR / f"{scenario.name}.json"
    actual = loads(dumps(build(scenario)))  # through JSON: what the file would hold
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


def test_golden_scenarios_show_the_rules() -> None:
    """The files hold what they are named for: correction, kPa precision, NaN, unset clock."""
    mmhg, kpa, nan, unset = (loads((GOLDEN_DIR / f"{s.name}.json").read_text()) for s in SCENARIOS)

    def first(bundle: dict[str, Any], code: str) -> dict[str, Any]:
        return next(
            e["resource"]
            for e in bundle["entry"]
            if e["resource"]["resourceType"] == "Observation"
            if e["resource"]["code"]["coding"][0]["code"] == code
        )

    panel = first(mmhg, "150020")
    assert panel["effectiveDateTime"] == "2026-11-23T08:08:10+01:00"  # 10 min behind, corrected
    # IG conditional-create identifier: seconds since 2000-01-01 of the time the cuff said
    # (2026-11-23 07:58:10), not the corrected effective time.
    assert panel["identifier"][0] == {
        "system": "http://hl7.org/fhir/uv/phd/StructureDefinition/PhdBaseObservation",
        "value": "00A0B10012FFFE34-patient-0001-150020-848735890",
    }
    assert panel["identifier"][1]["system"] == "urn:homehub:fhir:reading-id"
    assert first(mmhg, "67975")["valueDateTime"] == "2026-11-23T10:20:02+01:00"
    bits = first(mmhg, "8410608")["component"][0]
    assert bits["code"]["coding"][0]["display"] == "irregular-pulse"
    assert bits["valueBoolean"] is True
    kpa_panel = first(kpa, "150020")
    assert str(kpa_panel["component"][2]["valueQuantity"]["value"]) == "13.10"
    assert "http://hl7.org/fhir/StructureDefinition/bp" not in kpa_panel["meta"]["profile"]
    assert "http://hl7.org/fhir/StructureDefinition/bp" in panel["meta"]["profile"]
    assert first(nan, "150020")["component"][2]["dataAbsentReason"]["coding"][0]["code"] == (
        "not-a-number"
    )
    unset_panel = first(unset, "150020")
    assert unset_panel["effectiveDateTime"] == "2026-11-23T09:30:05Z"
    assert [t["code"] for t in unset_panel["meta"]["tag"]] == [
        "device-time-implausible",
        "device-clock-unset",
    ]
    # An unset clock's time stamp does not identify the reading: only the hub identifier,
    # whose identity part is a digest of the value the cuff sent.
    assert [i["system"] for i in unset_panel["identifier"]] == ["urn:homehub:fhir:reading-id"]
    assert "-150020-sha256:" in unset_panel["identifier"][0]["value"]
    assert first(unset, "67975")["dataAbsentReason"]["coding"][0]["code"] == "unknown"


def test_differences_name_the_json_path() -> None:
    """A changed, missing or extra field is reported with its JSON path; precision counts."""
    expected = loads('{"a": [{"v": 17.0, "s": "x"}], "b": 1}')
    actual = {"a": [{"v": Decimal("17"), "t": "y"}], "c": 2}
    assert differences(expected, actual) == [
        "$.a[0].s: missing (expected 'x')",
        "$.a[0].t: unexpected 'y'",
        "$.a[0].v: 17, expected 17.0",
        "$.b: missing (expected 1)",
        "$.c: unexpected 2",
    ]
