"""A blood-pressure reading becomes PHD IG FHIR resources that validate and keep exact values."""

from __future__ import annotations

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
from agent.normalize.bundle import collection
from agent.normalize.codes import MDC_DEV_SPEC_PROFILE_BPM
from agent.normalize.device import DeviceFacts, phd_device, phg_device
from agent.normalize.phd import Measured
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


def _components(obs: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {c["code"]["coding"][0]["code"]: c for c in obs["component"]}


class TestPanel:
    def test_values_codes_and_units(self) -> None:
        """Systolic, diastolic and mean carry MDC + LOINC codes, UCUM mm[Hg] and exact values."""
        panel, pulse = blood_pressure_observations(_reading(), CUFF, CTX)
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
        panel, _ = blood_pressure_observations(_reading(), CUFF, CTX)
        assert panel["subject"] == {"reference": "Patient/patient-0001"}
        assert panel["device"] == {"reference": "Device/phd-0102030405060708.F00000001001"}
        assert panel["extension"][0]["valueReference"]["reference"] == "Device/phg-hub-0001"
        assert panel["effectiveDateTime"] == "2026-11-23T10:15:00+01:00"
        assert panel["issued"] == "2026-11-23T09:30:05Z"

    def test_identifier_is_the_ig_conditional_create_identifier(self) -> None:
        """device-patient-type-timestamp, from the device's own time, identical when re-sent."""
        panel, pulse = blood_pressure_observations(_reading(), CUFF, CTX)
        assert (
            panel["identifier"][0]["value"] == "0102030405060708-patient-0001-150020-20261123101500"
        )
        assert (
            pulse["identifier"][0]["value"] == "0102030405060708-patient-0001-149546-20261123101500"
        )
        later = Context(CTX.hub_id, CTX.patient_id, CTX.timezone, datetime(2026, 12, 1, tzinfo=UTC))
        again, _ = blood_pressure_observations(_reading(), CUFF, later)
        assert panel["identifier"] == again["identifier"]

    def test_kpa_and_precision(self) -> None:
        """kPa values keep the device's precision (17.0 stays 17.0)."""
        reading = _reading(
            unit="kPa",
            systolic=Measured(Decimal("17.0")),
            diastolic=Measured(Decimal("10.9")),
            mean_arterial_pressure=Measured(Decimal("12.90")),
        )
        panel, _ = blood_pressure_observations(reading, CUFF, CTX)
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
        panel, _ = blood_pressure_observations(
            _reading(mean_arterial_pressure=Measured(None, special)), CUFF, CTX
        )
        comp = _components(panel)["150023"]
        assert "valueQuantity" not in comp
        assert reason == comp["dataAbsentReason"]["coding"][0]["code"]
        Observation.model_validate(panel)

    def test_no_pulse_no_pulse_observation(self) -> None:
        """Without a pulse rate only the panel is produced."""
        assert len(blood_pressure_observations(_reading(pulse_rate=None), CUFF, CTX)) == 1

    def test_no_device_time_uses_receipt(self) -> None:
        """Without a device time stamp effective = hub receipt time, and the identifier says so."""
        panel, _ = blood_pressure_observations(_reading(device_time=None), CUFF, CTX)
        assert panel["effectiveDateTime"] == "2026-11-23T09:30:05Z"
        assert panel["identifier"][0]["value"].endswith("-R20261123093005")


class TestValidation:
    def test_everything_validates_with_fhir_resources(self) -> None:
        """Observations, both Devices and the Bundle validate as FHIR (R4B models)."""
        observations = blood_pressure_observations(_reading(), CUFF, CTX)
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
