"""Pulse-oximeter measurements become PHD IG FHIR resources that validate and keep exact values.

Inputs are the emulated oximeter's bytes (hil.emulators.oximeter, independent of drivers/), run
through the hub's real ingest (decode + normalize). Golden Bundles under tests/golden/ are
compared field by field (numbers by their decimal text, so precision counts); regenerate one
after a deliberate change with ``HOMEHUB_UPDATE_GOLDEN=1`` and review the diff.
"""

from __future__ import annotations

import dataclasses
import json
import os
import re
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path
from typing import Any, Final

import pytest
from fhir.resources.R4B.bundle import Bundle
from fhir.resources.R4B.device import Device
from fhir.resources.R4B.observation import Observation

from agent.ble.uuids import PLX_CONTINUOUS_MEASUREMENT, PLX_SPOT_CHECK_MEASUREMENT
from agent.errors import DecodeError
from agent.ingest import PREPARERS, prepare, received_identity, value_identity
from agent.measurement import RawMeasurement
from agent.normalize.bundle import full_url
from agent.normalize.clock import ClockFacts
from agent.normalize.device import DeviceFacts
from agent.normalize.phd import Context
from hil.emulators.encoding import SFLOAT_NAN, SFLOAT_NRES, DateTime
from hil.emulators.oximeter import (
    ContinuousSample,
    DeviceSensorStatus,
    MeasurementStatus,
    SpotCheck,
    example_continuous,
    example_spot_checks,
)

GOLDEN: Final = Path(__file__).parent / "golden"
OXIMETER = DeviceFacts(
    address="F0:00:00:00:20:02",
    system_id="0102030405060708",
    manufacturer="Homehub Test Devices",
    model="HH-PLX-1",
    serial="SN-PLX-0001",
    firmware="2.0.1",
)
CTX = Context(
    hub_id="hub-0001",
    patient_id="patient-0001",
    timezone="Europe/Berlin",
    received=datetime(2025, 3, 14, 7, 10, 5, 123456, tzinfo=UTC),
)
SPO2, PULSE, PAI, DEV_STATUS = "150456", "149530", "150448", "150604"
SPOT, FAST, SLOW = "150588", "150580", "150584"
IG_SYSTEM: Final = "http://hl7.org/fhir/uv/phd/StructureDefinition/PhdBaseObservation"
HUB_SYSTEM: Final = "urn:homehub:fhir:reading-id"
DEVICE_PATIENT: Final = "0102030405060708-patient-0001"


def bundle_of(value: bytes, uuid: str = PLX_SPOT_CHECK_MEASUREMENT) -> dict[str, Any]:
    """Run one raw value through the hub's ingest."""
    raw = RawMeasurement(uuid, value, 0.0, CTX.received)
    return prepare(raw, OXIMETER, CTX).bundle


def observations(bundle: dict[str, Any]) -> list[dict[str, Any]]:
    """The bundle's Observations, in order."""
    return [
        e["resource"] for e in bundle["entry"] if e["resource"]["resourceType"] == "Observation"
    ]


def by_code(bundle: dict[str, Any], code: str, modality: str | None = None) -> dict[str, Any]:
    """The one Observation with MDC ``code`` (and supplemental ``modality``, None = none)."""
    found = [
        o
        for o in observations(bundle)
        if o["code"]["coding"][0]["code"] == code and _modality(o) == modality
    ]
    assert len(found) == 1, (code, modality)
    return found[0]


def _modality(observation: dict[str, Any]) -> str | None:
    for component in observation.get("component", []):
        if component["code"]["coding"][0]["code"] == "68193":
            code: str = component["valueCodeableConcept"]["coding"][0]["code"]
            return code
    return None


def value(observation: dict[str, Any]) -> str:
    """The valueQuantity's value as decimal text (precision visible)."""
    number = observation["valueQuantity"]["value"]
    assert isinstance(number, Decimal)
    return str(number)


def validate(bundle: dict[str, Any]) -> None:
    """Every resource and the Bundle validate as FHIR R4B."""
    for entry in bundle["entry"]:
        resource = entry["resource"]
        model = Observation if resource["resourceType"] == "Observation" else Device
        model.model_validate(resource)
    Bundle.model_validate(bundle)


# -- golden files -----------------------------------------------------------------------

_DECIMAL = re.compile(r'"@decimal:([-0-9.Ee+]+)"')


def _encode(node: Any) -> Any:
    if isinstance(node, Decimal):
        return f"@decimal:{node}"
    if isinstance(node, dict):
        return {k: _encode(v) for k, v in node.items()}
    if isinstance(node, list):
        return [_encode(v) for v in node]
    return node


def to_json(bundle: dict[str, Any]) -> str:
    """JSON with Decimals written as JSON numbers exactly as their text (95.50 stays 95.50)."""
    return _DECIMAL.sub(r"\1", json.dumps(_encode(bundle), indent=2, ensure_ascii=False)) + "\n"


def _flatten(node: Any, path: str, out: dict[str, Any]) -> dict[str, Any]:
    if isinstance(node, dict):
        for key, item in node.items():
            _flatten(item, f"{path}.{key}", out)
    elif isinstance(node, list):
        for index, item in enumerate(node):
            _flatten(item, f"{path}[{index}]", out)
    elif isinstance(node, Decimal):
        out[path] = ("number", str(node))
    else:
        out[path] = node
    return out


def assert_golden(name: str, bundle: dict[str, Any]) -> None:
    """Field-by-field comparison with tests/golden/<name>.json (numbers by decimal text)."""
    path = GOLDEN / f"{name}.json"
    if os.environ.get("HOMEHUB_UPDATE_GOLDEN") == "1":
        path.write_text(to_json(bundle))
    golden = json.loads(path.read_text(), parse_float=Decimal, parse_int=Decimal)
    want = _flatten(golden, "", {})
    got = _flatten(json.loads(to_json(bundle), parse_float=Decimal, parse_int=Decimal), "", {})
    differing = {
        p: (want.get(p), got.get(p))
        for p in sorted(want.keys() | got.keys())
        if want.get(p) != got.get(p)
    }
    assert differing == {}


# -- tests ------------------------------------------------------------------------------


def test_preparers_cover_both_measurements() -> None:
    """0x2A5E and 0x2A5F are ingested; the record's identifier (and identity) is the SpO2
    Observation's hub identifier: its content digest, then the modality."""
    assert PLX_SPOT_CHECK_MEASUREMENT in PREPARERS
    assert PLX_CONTINUOUS_MEASUREMENT in PREPARERS
    data = bytes(example_spot_checks()[0])
    prepared = prepare(RawMeasurement(PLX_SPOT_CHECK_MEASUREMENT, data, 0.0, CTX.received),
                       OXIMETER, CTX)  # fmt: skip
    expected = f"{DEVICE_PATIENT}-150456-{value_identity(data)}-150588"
    assert (prepared.identifier, prepared.identity) == (expected, expected)


def test_spot_check_golden() -> None:
    """SpO2 spot-check: SpO2, pulse rate, PAI with SPOT modality; validated; golden Bundle."""
    bundle = bundle_of(bytes(example_spot_checks()[0]))
    validate(bundle)
    assert_golden("spo2-spot-check", bundle)


def test_spot_check_values_codes_and_identifiers() -> None:
    """Exact values, MDC + LOINC codes, UCUM units and IG identifiers with the modality."""
    data = bytes(example_spot_checks()[1])
    bundle = bundle_of(data)
    spo2 = by_code(bundle, SPO2, SPOT)
    assert value(spo2) == "95.5"
    assert spo2["valueQuantity"]["code"] == "%"
    assert [c["code"] for c in spo2["code"]["coding"]] == [SPO2, "2708-6", "59408-5"]
    assert spo2["identifier"] == [  # 2025-03-14 08:02:05 = 795254525 s after 2000-01-01
        {"system": IG_SYSTEM, "value": f"{DEVICE_PATIENT}-150456-795254525-150588"},
        {"system": HUB_SYSTEM, "value": f"{DEVICE_PATIENT}-150456-{value_identity(data)}-150588"},
    ]
    pulse = by_code(bundle, PULSE, SPOT)
    assert (value(pulse), pulse["valueQuantity"]["code"]) == ("71", "/min")
    assert [c["code"] for c in pulse["code"]["coding"]] == [PULSE, "8867-4"]
    assert spo2["effectiveDateTime"] == "2025-03-14T08:02:05+01:00"
    assert spo2["issued"] == "2025-03-14T07:10:05Z"
    validate(bundle)


def test_device_sensor_status_maps_by_name() -> None:
    """BLE bit 5 low perfusion is 150604.10; bit 15 sensor disconnected is 150604.0."""
    word = DeviceSensorStatus.LOW_PERFUSION_DETECTED | DeviceSensorStatus.SENSOR_DISCONNECTED
    bundle = bundle_of(bytes(SpotCheck(97, 60, device_sensor_status=int(word))))
    status = by_code(bundle, DEV_STATUS)
    assert [c["code"]["coding"][0]["code"] for c in status["component"]] == [
        "150604.0",
        "150604.10",
    ]
    assert [c["code"]["coding"][0]["display"] for c in status["component"]] == [
        "sensor-disconnected",
        "signal-low-perfusion",
    ]
    assert all(c["valueBoolean"] is True for c in status["component"])
    spo2 = by_code(bundle, SPO2, SPOT)
    assert status["derivedFrom"] == [{"reference": full_url("Observation", spo2["id"])}]
    validate(bundle)


def test_no_device_status_observation_when_no_bit_is_set() -> None:
    """A zero Device and Sensor Status word adds no status Observation."""
    bundle = bundle_of(bytes(SpotCheck(97, 60, device_sensor_status=0)))
    assert [o["code"]["coding"][0]["code"] for o in observations(bundle)] == [SPO2, PULSE]


def test_measurement_status_maps_to_interpretation_and_htest() -> None:
    """Questionable → interpretation; testing data → meta.security HTEST on every value."""
    word = MeasurementStatus.QUESTIONABLE_MEASUREMENT_DETECTED | MeasurementStatus.DATA_FOR_TESTING
    bundle = bundle_of(bytes(SpotCheck(97, 60, measurement_status=int(word))))
    for observation in observations(bundle):
        assert observation["meta"]["security"] == [
            {"system": "http://terminology.hl7.org/CodeSystem/v3-ActReason", "code": "HTEST"}
        ]
        assert [i["coding"][0]["code"] for i in observation["interpretation"]] == ["questionable"]
        assert observation["status"] == "final"
    validate(bundle)


def test_early_estimate_is_preliminary() -> None:
    """Early estimated data → status preliminary, interpretation early-indication."""
    status = int(MeasurementStatus.EARLY_ESTIMATED_DATA)
    spo2 = by_code(bundle_of(bytes(SpotCheck(97, 60, measurement_status=status))), SPO2, SPOT)
    assert spo2["status"] == "preliminary"
    assert spo2["interpretation"][0]["coding"][0]["code"] == "early-indication"


def test_invalid_and_unavailable_become_data_absent() -> None:
    """Invalid → dataAbsentReason error (status final, as PhdBaseObservation requires);
    unavailable → not-performed."""
    invalid = int(MeasurementStatus.INVALID_MEASUREMENT_DETECTED)
    spo2 = by_code(bundle_of(bytes(SpotCheck(97, 60, measurement_status=invalid))), SPO2, SPOT)
    assert "valueQuantity" not in spo2
    assert spo2["dataAbsentReason"]["coding"][0]["code"] == "error"
    assert spo2["status"] == "final"
    unavailable = int(MeasurementStatus.MEASUREMENT_UNAVAILABLE)
    bundle = bundle_of(bytes(SpotCheck(97, 60, measurement_status=unavailable)))
    spo2 = by_code(bundle, SPO2, SPOT)
    assert spo2["dataAbsentReason"]["coding"][0]["code"] == "not-performed"
    assert spo2["status"] == "final"
    validate(bundle)


@pytest.mark.parametrize(("raw", "reason"), [(SFLOAT_NAN, "not-a-number"), (SFLOAT_NRES, "error")])
def test_special_values_become_data_absent_reason(raw: bytes, reason: str) -> None:
    """A special SFLOAT never becomes a value: dataAbsentReason per the IG's FLOATs page."""
    bundle = bundle_of(bytes(SpotCheck(raw, 60)))
    spo2 = by_code(bundle, SPO2, SPOT)
    assert "valueQuantity" not in spo2
    assert spo2["dataAbsentReason"]["coding"][0]["code"] == reason
    assert value(by_code(bundle, PULSE, SPOT)) == "60"
    validate(bundle)


def test_implausible_spo2_is_kept_and_flagged() -> None:
    """SpO2 130 % stays 130 and carries the value-implausible interpretation; PR 60 does not."""
    bundle = bundle_of(bytes(SpotCheck(130, 60)))
    spo2 = by_code(bundle, SPO2, SPOT)
    assert value(spo2) == "130"
    assert [[c["code"] for c in i["coding"]] for i in spo2["interpretation"]] == [
        ["questionable", "value-implausible"]
    ]
    assert "interpretation" not in by_code(bundle, PULSE, SPOT)
    validate(bundle)


def test_clock_not_set_keeps_reading_with_hub_time_golden() -> None:
    """Flag bit 4: effective = hub receipt, flagged; the unset clock's time stamp identifies
    nothing, so no IG identifier: only the hub's, from the value's bytes."""
    spot = SpotCheck(98, 60, timestamp=DateTime(2000, 1, 1, 0, 3, 12), device_clock_not_set=True)
    bundle = bundle_of(bytes(spot))
    spo2 = by_code(bundle, SPO2, SPOT)
    assert spo2["effectiveDateTime"] == "2025-03-14T07:10:05Z"
    assert [t["code"] for t in spo2["meta"]["tag"]] == ["device-clock-unset"]
    assert spo2["identifier"] == [
        {"system": HUB_SYSTEM,
         "value": f"{DEVICE_PATIENT}-150456-{value_identity(bytes(spot))}-150588"},
    ]  # fmt: skip
    validate(bundle)
    assert_golden("spo2-spot-check-clock-not-set", bundle)


def test_continuous_golden() -> None:
    """SpO2 continuous: Normal (no modality), Fast (FAST), PAI; receipt time; golden Bundle."""
    data = bytes(example_continuous()[0])
    bundle = bundle_of(data, PLX_CONTINUOUS_MEASUREMENT)
    validate(bundle)
    assert [(o["code"]["coding"][0]["code"], _modality(o)) for o in observations(bundle)] == [
        (SPO2, None),
        (PULSE, None),
        (SPO2, FAST),
        (PULSE, FAST),
        (PAI, None),
    ]
    normal = by_code(bundle, SPO2)
    part = received_identity(data, CTX.received)
    assert part.endswith("@20250314T071005.123456Z")
    assert normal["identifier"] == [
        {"system": HUB_SYSTEM, "value": f"{DEVICE_PATIENT}-150456-{part}"}
    ]
    assert by_code(bundle, SPO2, FAST)["identifier"] == [
        {"system": HUB_SYSTEM, "value": f"{DEVICE_PATIENT}-150456-{part}-150580"}
    ]
    assert value(by_code(bundle, PAI)) == "3.8"
    assert normal["effectiveDateTime"] == "2025-03-14T07:10:05Z"
    assert_golden("spo2-continuous", bundle)


def test_continuous_slow_and_statuses() -> None:
    """Slow values carry MDC_MODALITY_SLOW; the status word applies to all values."""
    sample = ContinuousSample(
        96,
        72,
        slow=(Decimal("97.0"), 70),
        measurement_status=int(MeasurementStatus.VALIDATED_DATA),
        device_sensor_status=int(DeviceSensorStatus.SENSOR_DISPLACED),
    )
    bundle = bundle_of(bytes(sample), PLX_CONTINUOUS_MEASUREMENT)
    assert value(by_code(bundle, SPO2, SLOW)) == "97.0"
    for observation in observations(bundle)[:4]:
        assert observation["interpretation"][0]["coding"][0]["code"] == "validated"
    status = by_code(bundle, DEV_STATUS)
    assert [c["code"]["coding"][0]["display"] for c in status["component"]] == ["sensor-displaced"]
    validate(bundle)


def test_spot_checks_without_time_stamp_are_told_apart_by_content() -> None:
    """Time-less spot-checks: different values get different identifiers; the same stored
    spot-check re-sent (RACP report-all, a later session) gets the same one."""
    ids = []
    for spot, microsecond in ((SpotCheck(97, 60), 1000), (SpotCheck(96, 60), 2000),
                              (SpotCheck(97, 60), 3000)):  # fmt: skip
        ctx = Context(
            CTX.hub_id, CTX.patient_id, CTX.timezone, CTX.received.replace(microsecond=microsecond)
        )
        raw = RawMeasurement(PLX_SPOT_CHECK_MEASUREMENT, bytes(spot), 0.0, ctx.received)
        ids.append(prepare(raw, OXIMETER, ctx).identifier)
    assert ids[0] != ids[1]
    assert ids[0] == ids[2]
    assert ids[0] == f"{DEVICE_PATIENT}-150456-{value_identity(bytes(SpotCheck(97, 60)))}-150588"


def test_bundle_is_stable_across_resends() -> None:
    """The same spot-check received later gives the same identifiers and Observation ids."""
    first = bundle_of(bytes(example_spot_checks()[0]))
    later_ctx = Context(CTX.hub_id, CTX.patient_id, CTX.timezone, datetime(2025, 4, 1, tzinfo=UTC))
    raw = RawMeasurement(
        PLX_SPOT_CHECK_MEASUREMENT, bytes(example_spot_checks()[0]), 0.0, later_ctx.received
    )
    again = prepare(raw, OXIMETER, later_ctx).bundle
    ids = [(o["id"], o["identifier"]) for o in observations(first)]
    assert ids == [(o["id"], o["identifier"]) for o in observations(again)]


def test_malformed_value_is_a_decode_error() -> None:
    """A truncated spot-check is refused with a DecodeError, never stored."""
    with pytest.raises(DecodeError):
        bundle_of(bytes(example_spot_checks()[0])[:-1])


def test_device_clock_offset_is_applied_with_coincident_timestamp() -> None:
    """A clock 10 min ahead: effective = device time - 10 min; the coincident Observation is
    in the Bundle and referenced; the identifier keeps the device's own time stamp."""
    current_time = bytes.fromhex("e907030e081405050000")  # 2025-03-14 08:20:05, Fri
    clocked = dataclasses.replace(
        OXIMETER, clock=ClockFacts.from_current_time(current_time, CTX.received)
    )
    raw = RawMeasurement(
        PLX_SPOT_CHECK_MEASUREMENT, bytes(example_spot_checks()[1]), 0.0, CTX.received
    )
    bundle = prepare(raw, clocked, CTX).bundle
    spo2 = by_code(bundle, SPO2, SPOT)
    assert spo2["effectiveDateTime"] == "2025-03-14T07:52:05+01:00"
    assert spo2["identifier"][0]["value"].endswith("-150456-795254525-150588")
    (reference,) = [
        e["valueReference"]["reference"]
        for e in spo2["extension"]
        if e["url"].endswith("CoincidentTimeStampReference")
    ]
    coincident = [o for o in observations(bundle) if full_url("Observation", o["id"]) == reference]
    assert coincident[0]["code"]["coding"][0]["code"] == "67975"
    validate(bundle)
