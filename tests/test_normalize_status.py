"""Status words map to the IG's ASN1ToHL7 bit codes by name; implausible values are flagged."""

from __future__ import annotations

from decimal import Decimal

import pytest

from agent.normalize.status import (
    BP_MEASUREMENT_STATUS,
    GLUCOSE_SENSOR_STATUS,
    GLUCOSE_TIME_FAULT,
    PLX_DEVICE_SENSOR_STATUS,
    PlausibleRange,
    StatusTable,
    bits_observation,
    implausible,
    status_components,
)


def codes_of(table: StatusTable, word: int) -> list[tuple[str, str]]:
    """(code, name) of each component ``word`` produces."""
    return [
        (c["code"]["coding"][0]["code"], c["code"]["coding"][0]["display"])
        for c in status_components(table, word)
    ]


class TestBloodPressureStatus:
    def test_ig_example_bits(self) -> None:
        """Body movement (bit 0) and improper position (bit 5): the IG bpm-status.json pair."""
        components = status_components(BP_MEASUREMENT_STATUS, 0x0021)
        assert components == [  # STU2: ASN1ToHL7 in HL7 Terminology, valueBoolean
            {
                "code": {
                    "coding": [
                        {
                            "system": "http://terminology.hl7.org/CodeSystem/ASN1ToHL7",
                            "code": "8410608.0",
                            "display": "body-movement",
                        }
                    ],
                    "text": "Too much body movement",
                },
                "valueBoolean": True,
            },
            {
                "code": {
                    "coding": [
                        {
                            "system": "http://terminology.hl7.org/CodeSystem/ASN1ToHL7",
                            "code": "8410608.5",
                            "display": "improper-body-position",
                        }
                    ],
                    "text": "The cuff was incorrectly placed with respect to the heart",
                },
                "valueBoolean": True,
            },
        ]

    @pytest.mark.parametrize(
        ("word", "expected"),
        [
            (0x0002, [("8410608.1", "cuff-too-loose")]),
            (0x0004, [("8410608.2", "irregular-pulse")]),
            (0x0008, [("8410608.3", "pulse-over-range-limit")]),
            (0x0010, [("8410608.4", "pulse-under-range-limit")]),
            (0x0018, []),  # pulse range 3: RFU
            (0xFFC0, []),  # RFU bits only
            (0x0000, []),
        ],
    )
    def test_each_bit_by_name(self, word: int, expected: list[tuple[str, str]]) -> None:
        """Each BLE condition maps to its IG code; the 2-bit range field by value."""
        assert codes_of(BP_MEASUREMENT_STATUS, word) == expected


class TestGlucoseStatus:
    def test_bits_0_to_10_follow_ble_order(self) -> None:
        """BLE bits 0-10 are IG .0-.10 with the IG's names."""
        assert codes_of(GLUCOSE_SENSOR_STATUS, 0x07FF) == [
            ("8417752.0", "device-battery-low"),
            ("8417752.1", "sensor-malfunction"),
            ("8417752.2", "sensor-sample-size-insufficient"),
            ("8417752.3", "sensor-strip-insertion"),
            ("8417752.4", "sensor-strip-type-incorrect"),
            ("8417752.5", "sensor-result-too-high"),
            ("8417752.6", "sensor-result-too-low"),
            ("8417752.7", "sensor-temp-too-high"),
            ("8417752.8", "sensor-temp-too-low"),
            ("8417752.9", "sensor-read-interrupt"),
            ("8417752.10", "device-gen-fault"),
        ]

    def test_time_fault_has_no_ig_code(self) -> None:
        """BLE bit 11 (time fault) is not .11 (sensor-temp-out-of-range): nothing."""
        assert codes_of(GLUCOSE_SENSOR_STATUS, GLUCOSE_TIME_FAULT) == []


class TestPulseOximeterStatus:
    def test_names_run_in_reverse(self) -> None:
        """BLE bit 15 is .0 sensor-disconnected, BLE bit 0 is .15 device-extended-update."""
        assert codes_of(PLX_DEVICE_SENSOR_STATUS, 0x8000) == [("150604.0", "sensor-disconnected")]
        assert codes_of(PLX_DEVICE_SENSOR_STATUS, 0x0001) == [
            ("150604.15", "device-extended-update")
        ]
        assert codes_of(PLX_DEVICE_SENSOR_STATUS, 0x0200) == [("150604.6", "signal-searching")]

    def test_all_sixteen_and_rfu(self) -> None:
        """Bits 0-15 give 16 distinct codes in IG order; RFU bits 16-23 give none."""
        got = codes_of(PLX_DEVICE_SENSOR_STATUS, 0xFFFF)
        assert [code for code, _ in got] == [f"150604.{n}" for n in range(16)]
        assert codes_of(PLX_DEVICE_SENSOR_STATUS, 0xFF0000) == []


@pytest.mark.parametrize(
    "table", [BP_MEASUREMENT_STATUS, GLUCOSE_SENSOR_STATUS, PLX_DEVICE_SENSOR_STATUS]
)
def test_tables_are_one_to_one(table: StatusTable) -> None:
    """No IG bit or name appears twice in a table."""
    assert len({b.bit for b in table.bits}) == len(table.bits)
    assert len({b.name for b in table.bits}) == len(table.bits)


def test_bits_observation_shape() -> None:
    """A bits Observation replaces profile and code, keeps the base, derives from the panel."""
    base = {"resourceType": "Observation", "meta": {"profile": ["x"]}, "status": "final"}
    obs = bits_observation(BP_MEASUREMENT_STATUS, 0x0004, base, "obs-1")
    assert obs is not None
    assert obs["meta"] == {
        "profile": ["http://hl7.org/fhir/uv/phd/StructureDefinition/PhdBitsEnumerationObservation"]
    }
    assert obs["code"]["coding"][0]["code"] == "8410608"
    assert obs["derivedFrom"] == [{"reference": "Observation/obs-1"}]
    assert base["meta"] == {"profile": ["x"]}  # the base is not modified
    assert bits_observation(BP_MEASUREMENT_STATUS, 0, base, "obs-1") is None


def test_plausible_range() -> None:
    """Inclusive bounds; None (a special value) is never implausible."""
    systolic = PlausibleRange(Decimal(40), Decimal(300), "mm[Hg]")
    assert [implausible(Decimal(v), systolic) for v in (39, 40, 300, 400)] == [
        True,
        False,
        False,
        True,
    ]
    assert implausible(None, systolic) is False
