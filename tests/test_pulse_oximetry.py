"""Tests of drivers.pulse_oximetry: PLXS 0x2A5E, 0x2A5F and 0x2A60."""

from __future__ import annotations

import itertools
from collections.abc import Callable

import pytest

from agent.errors import DecodeError
from drivers.gatt_time import DateTime
from drivers.ieee11073 import MedFloat16
from drivers.pulse_oximetry import (
    ContinuousFlags,
    PlxContinuousMeasurement,
    PlxDeviceSensorStatus,
    PlxFeatures,
    PlxMeasurementStatus,
    PlxSpotCheckMeasurement,
    PlxSupportedFeatures,
    SpotCheckFlags,
)

SPO2 = MedFloat16.from_decimal("97")
PR = MedFloat16.from_decimal("61")
PAI = MedFloat16.from_decimal("8.7")
STAMP = DateTime(2024, 11, 29, 23, 8, 57)
STATUS = PlxMeasurementStatus.VALIDATED_DATA | PlxMeasurementStatus.DATA_FROM_MEASUREMENT_STORAGE
DEVICE = PlxDeviceSensorStatus(0x800022)  # bits 1, 5 and RFU bit 23

COMBOS = list(itertools.product([False, True], repeat=5))


def _spot(combo: tuple[bool, ...]) -> PlxSpotCheckMeasurement:
    ts, ms, ds, pai, clock = combo
    return PlxSpotCheckMeasurement.create(
        spo2=SPO2,
        pulse_rate=PR,
        timestamp=STAMP if ts else None,
        measurement_status=STATUS if ms else None,
        device_sensor_status=DEVICE if ds else None,
        pulse_amplitude_index=PAI if pai else None,
        device_clock_not_set=clock,
    )


def _continuous(combo: tuple[bool, ...]) -> PlxContinuousMeasurement:
    fast, slow, ms, ds, pai = combo
    flags = ContinuousFlags(sum(bit << i for i, bit in enumerate(combo)))
    return PlxContinuousMeasurement(
        flags,
        SPO2,
        PR,
        (SPO2, PR) if fast else None,
        (PR, SPO2) if slow else None,
        STATUS if ms else None,
        DEVICE if ds else None,
        PAI if pai else None,
    )


class TestSpotCheck:
    """PLX Spot-check Measurement 0x2A5E."""

    @pytest.mark.parametrize("combo", COMBOS)
    def test_every_flag_combination_round_trips(self, combo: tuple[bool, ...]) -> None:
        """All 32 combinations (clock flag included) round-trip at the announced size."""
        ts, ms, ds, pai, clock = combo
        m = _spot(combo)
        data = bytes(m)
        assert len(data) == 5 + 7 * ts + 2 * ms + 3 * ds + 2 * pai
        assert PlxSpotCheckMeasurement.from_bytes(data) == m
        assert m.device_clock_not_set is clock

    @pytest.mark.parametrize("combo", COMBOS)
    def test_truncation_and_extension_rejected(self, combo: tuple[bool, ...]) -> None:
        """Every shorter length and one extra octet raise DecodeError naming 0x2A5E."""
        data = bytes(_spot(combo))
        for value in [data[:cut] for cut in range(len(data))] + [data + b"\x00"]:
            with pytest.raises(DecodeError) as info:
                PlxSpotCheckMeasurement.from_bytes(value)
            assert info.value.characteristic == "0x2A5E"

    def test_vector(self) -> None:
        """All optional fields: 24-bit device status and statuses decode exactly."""
        m = PlxSpotCheckMeasurement.from_bytes(
            bytes.fromhex("0facf3bef5e8070b1d170839204022000066e3")
        )
        assert (m.spo2.fhir_decimal, m.pulse_rate.fhir_decimal) == ("94.0", "147.0")
        assert m.timestamp == STAMP
        assert m.measurement_status == (
            PlxMeasurementStatus.MEASUREMENT_ONGOING
            | PlxMeasurementStatus.QUESTIONABLE_MEASUREMENT_DETECTED
        )
        assert m.device_sensor_status == (
            PlxDeviceSensorStatus.EQUIPMENT_MALFUNCTION_DETECTED
            | PlxDeviceSensorStatus.LOW_PERFUSION_DETECTED
        )

    def test_flags_must_match(self) -> None:
        """A presence flag without its field is refused."""
        with pytest.raises(ValueError, match="TIMESTAMP_PRESENT"):
            PlxSpotCheckMeasurement(SpotCheckFlags.TIMESTAMP_PRESENT, SPO2, PR)


class TestContinuous:
    """PLX Continuous Measurement 0x2A5F."""

    @pytest.mark.parametrize("combo", COMBOS)
    def test_every_flag_combination_round_trips(self, combo: tuple[bool, ...]) -> None:
        """All 32 combinations round-trip at the announced size (max 20)."""
        fast, slow, ms, ds, pai = combo
        m = _continuous(combo)
        data = bytes(m)
        assert len(data) == 5 + 4 * fast + 4 * slow + 2 * ms + 3 * ds + 2 * pai
        assert PlxContinuousMeasurement.from_bytes(data) == m

    @pytest.mark.parametrize("combo", COMBOS)
    def test_truncation_and_extension_rejected(self, combo: tuple[bool, ...]) -> None:
        """Every shorter length and one extra octet raise DecodeError naming 0x2A5F."""
        data = bytes(_continuous(combo))
        for value in [data[:cut] for cut in range(len(data))] + [data + b"\x00"]:
            with pytest.raises(DecodeError) as info:
                PlxContinuousMeasurement.from_bytes(value)
            assert info.value.characteristic == "0x2A5F"

    def test_slow_pair_order(self) -> None:
        """The Slow pair follows the Fast pair, SpO2 before PR."""
        m = _continuous((True, True, False, False, False))
        assert bytes(m)[5:13] == bytes(SPO2) + bytes(PR) + bytes(PR) + bytes(SPO2)


class TestFeatures:
    """PLX Features 0x2A60."""

    @pytest.mark.parametrize(("ms", "ds"), list(itertools.product([False, True], repeat=2)))
    def test_round_trip(self, ms: bool, ds: bool) -> None:
        """Support words are present exactly when bits 0/1 say so."""
        features = PlxSupportedFeatures.MULTIPLE_BONDS
        if ms:
            features |= PlxSupportedFeatures.MEASUREMENT_STATUS_SUPPORT_PRESENT
        if ds:
            features |= PlxSupportedFeatures.DEVICE_AND_SENSOR_STATUS_SUPPORT_PRESENT
        value = PlxFeatures(features, STATUS if ms else None, DEVICE if ds else None)
        data = bytes(value)
        assert len(data) == 2 + 2 * ms + 3 * ds
        assert PlxFeatures.from_bytes(data) == value

    def test_vector(self) -> None:
        """0x00A3 with both support words decodes exactly."""
        value = PlxFeatures.from_bytes(bytes.fromhex("a3004010800100"))
        assert (
            value.supported_features,
            value.measurement_status_support,
            value.device_sensor_status_support,
        ) == (0xA3, 0x1040, 0x0180)

    @pytest.mark.parametrize(
        ("wire", "reason"),
        [
            ("a3", "Supported Features incomplete"),
            ("a3004010", "Device and Sensor Status Support missing"),
            ("000000", "1 trailing octet"),
        ],
    )
    def test_rejected(self, wire: str, reason: str) -> None:
        """Short or long feature values are rejected naming 0x2A60."""
        with pytest.raises(DecodeError, match=reason) as info:
            PlxFeatures.from_bytes(bytes.fromhex(wire))
        assert info.value.characteristic == "0x2A60"


@pytest.mark.parametrize(
    ("build", "message"),
    [
        (lambda: PlxSpotCheckMeasurement(SpotCheckFlags(0x100), SPO2, PR), "one octet"),
        (
            lambda: PlxSpotCheckMeasurement.create(
                spo2=SPO2, pulse_rate=PR, device_sensor_status=PlxDeviceSensorStatus(1 << 24)
            ),
            "24 bits",
        ),
        (
            lambda: PlxFeatures(PlxSupportedFeatures.MEASUREMENT_STATUS_SUPPORT_PRESENT),
            "MEASUREMENT_STATUS_SUPPORT_PRESENT",
        ),
        (lambda: PlxFeatures(PlxSupportedFeatures(0x10000)), "16 bits"),
    ],
)
def test_construction_validates(build: Callable[[], object], message: str) -> None:
    """Out-of-range or inconsistent fields are refused with ValueError."""
    with pytest.raises(ValueError, match=message):
        build()
