"""A blood-pressure reading becomes PHD IG FHIR resources that validate and keep exact values."""

from __future__ import annotations

import dataclasses
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

import pytest
from fhir.resources.R4B.bundle import Bundle
from fhir.resources.R4B.device import Device
from fhir.resources.R4B.observation import Observation

from agent.normalize.blood_pressure import (
    BloodPressureReading,
    Context,
    blood_pressure_observations,
)
from agent.normalize.bundle import collection, full_url, reading_bundle, unresolved_references
from agent.normalize.clock import ClockFacts, coincident_for
from agent.normalize.codes import MDC_DEV_SPEC_PROFILE_BPM
from agent.normalize.device import DeviceFacts, phd_device, phg_device
from agent.normalize.phd import Measured
from drivers.gatt_time import CurrentTime
from drivers.ieee11073 import SpecialValue

CUFF = DeviceFacts(
    address="F0:00:00:00:10:01",
    system_id="0102030405060708",
    manufacturer="Acme Medical",
    model="BP-1",
    serial="SN-4711",
    firmware="1.2.3",
)
CTX = Context(
    hub_id="hub-0001",
    patient_id="patient-0001",
    timezone="Europe/Berlin",
    received=datetime(2026, 11, 23, 9, 30, 5, tzinfo=UTC),
)


def _reading(**overrides: Any) -> BloodPressureReading:
    fields: dict[str, Any] = {
        "unit": "mmHg",
        "systolic": Measured(Decimal("128")),
        "diastolic": Measured(Decimal("82")),
        "mean_arterial_pressure": Measured(Decimal("97")),
        "device_time": datetime(2026, 11, 23, 10, 15, 0),  # noqa: DTZ001 - device-local, no zone
        "pulse_rate": Measured(Decimal("71")),
    }
    fields.update(overrides)
    return BloodPressureReading(**fields)


IDENTITY = "sha256:00112233445566778899aabbccddeeff"
"""The preparer's identity part (agent.ingest.value_identity); any fixed one will do here."""
IG_SYSTEM = "http://hl7.org/fhir/uv/phd/StructureDefinition/PhdBaseObservation"
HUB_SYSTEM = "urn:homehub:fhir:reading-id"


def bp_observations(
    reading: BloodPressureReading, device: DeviceFacts, ctx: Context
) -> list[dict[str, Any]]:
    """The normalizer's output for ``reading`` with the fixed :data:`IDENTITY`."""
    return blood_pressure_observations(reading, device, ctx, IDENTITY)


def _components(obs: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {c["code"]["coding"][0]["code"]: c for c in obs["component"]}


class TestPanel:
    def test_values_codes_and_units(self) -> None:
        """Systolic, diastolic and mean carry MDC + LOINC codes, UCUM mm[Hg] and exact values."""
        panel, pulse = bp_observations(_reading(), CUFF, CTX)
        assert panel["code"]["coding"] == [
            {
                "system": "urn:iso:std:iso:11073:10101",
                "code": "150020",
                "display": "MDC_PRESS_BLD_NONINV",
            },
            {"system": "http://loinc.org", "code": "85354-9"},
        ]
        comps = _components(panel)
        assert Decimal("128") == comps["150021"]["valueQuantity"]["value"]
        assert comps["150021"]["valueQuantity"]["code"] == "mm[Hg]"
        assert comps["150021"]["code"]["coding"][1]["code"] == "8480-6"
        assert Decimal("82") == comps["150022"]["valueQuantity"]["value"]
        assert comps["150022"]["code"]["coding"][1]["code"] == "8462-4"
        assert Decimal("97") == comps["150023"]["valueQuantity"]["value"]
        assert len(comps["150023"]["code"]["coding"]) == 1  # MAP is not a FHIR vital sign
        assert pulse["code"]["coding"][0]["code"] == "149546"
        assert pulse["code"]["coding"][1]["code"] == "8867-4"
        assert Decimal("71") == pulse["valueQuantity"]["value"]
        assert pulse["valueQuantity"]["code"] == "/min"

    def test_references_and_times(self) -> None:
        """Patient, device, gateway references; device time in the hub's zone; issued = receipt."""
        panel, _ = bp_observations(_reading(), CUFF, CTX)
        assert panel["subject"] == {"reference": "Patient/patient-0001"}
        assert panel["device"] == {"reference": "Device/phd-0102030405060708.F00000001001"}
        assert panel["extension"][0]["valueReference"]["reference"] == "Device/phg-hub-0001"
        # (the Bundle turns these into the entries' fullUrls: agent.normalize.bundle)
        assert panel["effectiveDateTime"] == "2026-11-23T10:15:00+01:00"
        assert panel["issued"] == "2026-11-23T09:30:05Z"

    def test_identifier_is_the_ig_conditional_create_identifier(self) -> None:
        """device-patient-type-timestamp, the timestamp part the device's own time as seconds
        since 2000-01-01 (IG algorithm), identical when re-sent; then the hub identifier."""
        panel, pulse = bp_observations(_reading(), CUFF, CTX)
        assert panel["identifier"] == [  # 2026-11-23 10:15:00
            {"system": IG_SYSTEM, "value": "0102030405060708-patient-0001-150020-848744100"},
            {"system": HUB_SYSTEM, "value": f"0102030405060708-patient-0001-150020-{IDENTITY}"},
        ]
        assert pulse["identifier"][0]["value"] == "0102030405060708-patient-0001-149546-848744100"
        later = Context(CTX.hub_id, CTX.patient_id, CTX.timezone, datetime(2026, 12, 1, tzinfo=UTC))
        again, _ = bp_observations(_reading(), CUFF, later)
        assert panel["identifier"] == again["identifier"]

    def test_kpa_and_precision(self) -> None:
        """kPa values keep the device's precision (17.0 stays 17.0)."""
        reading = _reading(
            unit="kPa",
            systolic=Measured(Decimal("17.0")),
            diastolic=Measured(Decimal("10.9")),
            mean_arterial_pressure=Measured(Decimal("12.90")),
        )
        panel, _ = bp_observations(reading, CUFF, CTX)
        comps = _components(panel)
        assert comps["150021"]["valueQuantity"]["code"] == "kPa"
        assert str(comps["150021"]["valueQuantity"]["value"]) == "17.0"
        assert str(comps["150023"]["valueQuantity"]["value"]) == "12.90"

    @pytest.mark.parametrize(
        ("special", "reason"),
        [
            (SpecialValue.NAN, "not-a-number"),
            (SpecialValue.NRES, "error"),
            (SpecialValue.RESERVED, "error"),
            (SpecialValue.POSITIVE_INFINITY, "positive-infinity"),
            (SpecialValue.NEGATIVE_INFINITY, "negative-infinity"),
        ],
    )
    def test_special_value_becomes_data_absent_reason(
        self, special: SpecialValue, reason: str
    ) -> None:
        """A special SFLOAT never becomes a number: it is a dataAbsentReason."""
        panel, _ = bp_observations(
            _reading(mean_arterial_pressure=Measured(None, special)), CUFF, CTX
        )
        comp = _components(panel)["150023"]
        assert "valueQuantity" not in comp
        assert reason == comp["dataAbsentReason"]["coding"][0]["code"]
        Observation.model_validate(panel)

    def test_no_pulse_no_pulse_observation(self) -> None:
        """Without a pulse rate only the panel is produced."""
        assert len(bp_observations(_reading(pulse_rate=None), CUFF, CTX)) == 1

    def test_no_device_time_uses_receipt(self) -> None:
        """Without a device time stamp effective = hub receipt time, and no IG identifier."""
        panel, _ = bp_observations(_reading(device_time=None), CUFF, CTX)
        assert panel["effectiveDateTime"] == "2026-11-23T09:30:05Z"
        assert [i["system"] for i in panel["identifier"]] == [HUB_SYSTEM]


class TestValidation:
    def test_everything_validates_with_fhir_resources(self) -> None:
        """Observations, both Devices and the Bundle validate as FHIR (R4B models)."""
        observations = bp_observations(_reading(), CUFF, CTX)
        devices = [phd_device(CUFF, MDC_DEV_SPEC_PROFILE_BPM), phg_device("hub-0001", "0.1.0")]
        for obs in observations:
            Observation.model_validate(obs)
        for dev in devices:
            Device.model_validate(dev)
        bundle = collection([*observations, *devices], "2026-11-23T09:30:05Z")
        parsed = Bundle.model_validate(bundle)
        assert len(parsed.entry or []) == 4
        ids = [e["resource"]["id"] for e in bundle["entry"]]
        assert len(set(ids)) == len(ids)


def _interpretation_codes(node: dict[str, Any]) -> list[str]:
    return [c["code"] for i in node.get("interpretation", []) for c in i["coding"]]


class TestPlausibility:
    @pytest.mark.parametrize(
        ("systolic", "flagged"), [("400", True), ("300", False), ("39", True), ("128", False)]
    )
    def test_systolic_kept_and_flagged(self, systolic: str, flagged: bool) -> None:
        """An implausible systolic stays as sent and its component is flagged."""
        panel, _ = bp_observations(_reading(systolic=Measured(Decimal(systolic))), CUFF, CTX)
        comp = _components(panel)["150021"]
        assert str(comp["valueQuantity"]["value"]) == systolic
        assert _interpretation_codes(comp) == (
            ["questionable", "value-implausible"] if flagged else []
        )
        Observation.model_validate(panel)

    def test_kpa_compared_in_mmhg(self) -> None:
        """53.3 kPa (about 400 mmHg) is flagged; 17.0 kPa is not."""
        reading = _reading(
            unit="kPa",
            systolic=Measured(Decimal("53.3")),
            diastolic=Measured(Decimal("10.9")),
            mean_arterial_pressure=Measured(Decimal("17.0")),
        )
        panel, _ = bp_observations(reading, CUFF, CTX)
        comps = _components(panel)
        assert _interpretation_codes(comps["150021"]) == ["questionable", "value-implausible"]
        assert _interpretation_codes(comps["150023"]) == []

    def test_diastolic_above_systolic(self) -> None:
        """Diastolic above systolic flags the panel itself."""
        panel, _ = bp_observations(
            _reading(systolic=Measured(Decimal("80")), diastolic=Measured(Decimal("120"))),
            CUFF,
            CTX,
        )
        assert _interpretation_codes(panel) == ["questionable", "value-implausible"]
        assert (
            panel["interpretation"][0]["text"]
            == "Diastolic above systolic: implausible; kept as sent"
        )

    @pytest.mark.parametrize(("rate", "flagged"), [("0", True), ("300", True), ("71", False)])
    def test_pulse(self, rate: str, flagged: bool) -> None:
        """A pulse of 0 or 300 /min is kept and flagged."""
        _, pulse = bp_observations(_reading(pulse_rate=Measured(Decimal(rate))), CUFF, CTX)
        assert str(pulse["valueQuantity"]["value"]) == rate
        assert _interpretation_codes(pulse) == (
            ["questionable", "value-implausible"] if flagged else []
        )


class TestMeasurementStatus:
    def test_status_observation(self) -> None:
        """Status bits become a bits Observation derived from the panel, same time and ids."""
        panel, pulse, status = bp_observations(_reading(measurement_status=0x0004), CUFF, CTX)
        bundle = collection([panel, pulse, status], "2026-11-23T09:30:05Z")
        panel_id = bundle["entry"][0]["resource"]["id"]
        assert status["derivedFrom"] == [{"reference": f"Observation/{panel_id}"}]
        in_bundle = bundle["entry"][2]["resource"]["derivedFrom"]
        assert in_bundle == [{"reference": full_url("Observation", panel_id)}]
        assert status["identifier"][0]["value"] == (
            "0102030405060708-patient-0001-8410608-848744100"
        )
        assert status["component"][0]["code"]["coding"][0]["code"] == "8410608.2"
        assert status["effectiveDateTime"] == panel["effectiveDateTime"]
        assert [c["coding"][0]["code"] for c in status["category"]] == ["phd"]
        Observation.model_validate(status)

    def test_no_bits_no_observation(self) -> None:
        """A status word with no mapped bit set adds nothing."""
        assert len(bp_observations(_reading(measurement_status=0xFFC0), CUFF, CTX)) == 2


class TestClockAndBundle:
    def test_bundle_with_clock_resolves_every_reference(self) -> None:
        """With a clock read the Bundle holds the coincident timestamp; every reference resolves."""
        clock = ClockFacts.from_current_time(
            bytes(CurrentTime.from_datetime(datetime(2026, 11, 23, 10, 20, 5))),  # noqa: DTZ001
            CTX.received,
        )
        cuff = dataclasses.replace(CUFF, clock=clock)
        observations = bp_observations(_reading(measurement_status=0x0001), cuff, CTX)
        bundle = reading_bundle(
            observations,
            phd_device(cuff, MDC_DEV_SPEC_PROFILE_BPM),
            phg_device("hub-0001", "0.1.0"),
            coincident_for(cuff, CTX),
            "2026-11-23T09:30:05Z",
        )
        types = [e["resource"]["resourceType"] for e in bundle["entry"]]
        assert types == ["Observation"] * 3 + ["Device", "Device", "Observation"]
        assert unresolved_references(bundle) == []
        coin_ref = full_url("Observation", clock.logical_id(cuff.logical_id))
        for obs in (e["resource"] for e in bundle["entry"][:3]):
            assert {
                "url": "http://hl7.org/fhir/uv/phd/StructureDefinition/CoincidentTimeStampReference",
                "valueReference": {"reference": coin_ref},
            } in obs["extension"]
        # the cuff is 10 minutes behind: effective moves 10 minutes later
        assert observations[0]["effectiveDateTime"] == "2026-11-23T10:25:00+01:00"
        Bundle.model_validate(bundle)

    def test_no_time_stamp_no_coincident_timestamp(self) -> None:
        """A reading without a device time stamp gets no coincident timestamp (IG rule)."""
        clock = ClockFacts.from_current_time(bytes(10), CTX.received)
        cuff = DeviceFacts(CUFF.address, CUFF.system_id, clock=clock)
        observations = bp_observations(_reading(device_time=None), cuff, CTX)
        bundle = reading_bundle(
            observations,
            phd_device(cuff, MDC_DEV_SPEC_PROFILE_BPM),
            phg_device("hub-0001", "0.1.0"),
            coincident_for(cuff, CTX),
            "2026-11-23T09:30:05Z",
        )
        assert len(bundle["entry"]) == 4
        assert unresolved_references(bundle) == []

    def test_walker_finds_a_dangling_reference(self) -> None:
        """The reference walker reports a reference that names no entry (Patient excepted)."""
        observations = bp_observations(_reading(), CUFF, CTX)
        bundle = collection([*observations], "2026-11-23T09:30:05Z")
        assert sorted(set(unresolved_references(bundle))) == [
            "Device/phd-0102030405060708.F00000001001",
            "Device/phg-hub-0001",
        ]
