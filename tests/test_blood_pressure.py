"""Tests of drivers.blood_pressure: BPS 0x2A35, 0x2A36 and 0x2A49."""

from __future__ import annotations

import itertools
from collections.abc import Callable

import pytest
from hypothesis import given
from hypothesis import strategies as st

from agent.errors import DecodeError
from drivers.blood_pressure import (
    BloodPressureFeature,
    BloodPressureFeatureBits,
    BloodPressureFlags,
    BloodPressureMeasurement,
    IntermediateCuffPressure,
    MeasurementStatus,
    MeasurementStatusBit,
    PressureUnit,
    PulseRateRange,
)
from drivers.gatt_time import DateTime
from drivers.ieee11073 import MedFloat16

SYS = MedFloat16.from_decimal("120")
DIA = MedFloat16.from_decimal("80")
MAP = MedFloat16.from_decimal("93.3")
STAMP = DateTime(2024, 3, 1, 7, 45, 12)
PULSE = MedFloat16.from_decimal("64")
USER = 2
STATUS = MeasurementStatus(0x0025)

#: Every combination of unit and the four optional fields.
COMBINATIONS = list(itertools.product([False, True], repeat=5))


def _build(combo: tuple[bool, ...]) -> BloodPressureMeasurement:
    kpa, ts, pr, uid, ms = combo
    return BloodPressureMeasurement.create(
        unit=PressureUnit.KPA if kpa else PressureUnit.MMHG,
        systolic=SYS,
        diastolic=DIA,
        mean_arterial_pressure=MAP,
        time_stamp=STAMP if ts else None,
        pulse_rate=PULSE if pr else None,
        user_id=USER if uid else None,
        measurement_status=STATUS if ms else None,
    )


def _expected_size(combo: tuple[bool, ...]) -> int:
    _, ts, pr, uid, ms = combo
    return 7 + 7 * ts + 2 * pr + 1 * uid + 2 * ms


class TestMeasurementRoundTrip:
    """0x2A35 encode/decode."""

    @pytest.mark.parametrize("combo", COMBINATIONS)
    def test_every_flag_combination_round_trips(self, combo: tuple[bool, ...]) -> None:
        """Each of the 32 unit/field combinations encodes to its size and decodes back."""
        measurement = _build(combo)
        data = bytes(measurement)
        assert _expected_size(combo) == len(data)
        assert measurement == BloodPressureMeasurement.from_bytes(data)

    @pytest.mark.parametrize("combo", COMBINATIONS)
    def test_flags_derived_from_fields(self, combo: tuple[bool, ...]) -> None:
        """create() sets exactly the flag bits of the unit and the present fields."""
        expected = sum(bit << i for i, bit in enumerate(combo))
        assert expected == int(_build(combo).flags)
        assert expected == bytes(_build(combo))[0]

    def test_known_value(self) -> None:
        """A hand-built value decodes to exact fields (Rudertier timestamp+pulse vector)."""
        m = BloodPressureMeasurement.from_bytes(bytes.fromhex("067d0055006200e707081b0e1e2d4800"))
        assert PressureUnit.MMHG is m.unit
        assert (
            m.systolic.value,
            m.diastolic.value,
            m.mean_arterial_pressure.value,
        ) == (125, 85, 98)
        assert DateTime(2023, 8, 27, 14, 30, 45) == m.time_stamp
        assert m.pulse_rate is not None
        assert m.pulse_rate.value == 72
        assert (m.user_id, m.measurement_status) == (None, None)

    def test_rfu_flag_bits_are_kept(self) -> None:
        """RFU flag bits 5-7 add no field, are accepted, and survive a round trip."""
        data = bytes.fromhex("e07d0055006200")
        m = BloodPressureMeasurement.from_bytes(data)
        assert int(m.flags) == 0xE0
        assert data == bytes(m)

    def test_flags_must_match_fields(self) -> None:
        """Constructing with a presence flag but no field is a ValueError."""
        with pytest.raises(ValueError, match="TIME_STAMP_PRESENT"):
            BloodPressureMeasurement(BloodPressureFlags.TIME_STAMP_PRESENT, SYS, DIA, MAP)
        with pytest.raises(ValueError, match="USER_ID_PRESENT"):
            BloodPressureMeasurement(BloodPressureFlags(0), SYS, DIA, MAP, user_id=1)

    def test_repr_hides_reading(self) -> None:
        """The repr shows the flags but no pressure, time, pulse or user."""
        text = repr(_build((False, True, True, True, True)))
        assert "BloodPressureMeasurement(flags=" in text
        for hidden in ("120", "2024", "64", "user_id", "systolic"):
            assert hidden not in text


class TestMeasurementRejects:
    """0x2A35 values that must be rejected."""

    @pytest.mark.parametrize("combo", COMBINATIONS)
    def test_every_truncation_names_the_missing_field(self, combo: tuple[bool, ...]) -> None:
        """Every shorter length raises DecodeError naming the first field it cuts."""
        data = bytes(_build(combo))
        layout = ["Flags", "Systolic", "Systolic", "Diastolic", "Diastolic"]
        layout += ["Mean Arterial Pressure"] * 2
        layout += ["Time Stamp"] * 7 * combo[1] + ["Pulse Rate"] * 2 * combo[2]
        layout += ["User ID"] * combo[3] + ["Measurement Status"] * 2 * combo[4]
        assert len(data) == len(layout)
        for length in range(len(data)):
            with pytest.raises(DecodeError) as info:
                BloodPressureMeasurement.from_bytes(data[:length])
            assert info.value.characteristic == "0x2A35"
            assert info.value.reason.startswith(layout[length] + " ")
            assert f"got {length}" in info.value.reason

    @pytest.mark.parametrize("combo", COMBINATIONS)
    @pytest.mark.parametrize("extra", [1, 2, 12])
    def test_trailing_octets_are_rejected(self, combo: tuple[bool, ...], extra: int) -> None:
        """Octets beyond what the flags explain are rejected, with their count."""
        data = bytes(_build(combo)) + bytes(extra)
        with pytest.raises(DecodeError) as info:
            BloodPressureMeasurement.from_bytes(data)
        assert info.value.reason.startswith(f"{extra} trailing octet(s)")
        assert len(data) - extra == info.value.offset

    def test_nordic_no_timestamp_vector(self) -> None:
        """Flags 0x03 with 7 octets: Time Stamp missing, flags and sizes quoted."""
        with pytest.raises(DecodeError) as info:
            BloodPressureMeasurement.from_bytes(bytes.fromhex("03020304050607"))
        assert info.value.reason == "Time Stamp missing: flags 0x03 require 14 octets, got 7"

    def test_empty_value(self) -> None:
        """A zero-length value lacks even the flags."""
        with pytest.raises(DecodeError, match="Flags missing"):
            BloodPressureMeasurement.from_bytes(b"")

    @given(st.binary(max_size=24))
    def test_random_bytes(self, data: bytes) -> None:
        """Any bytes decode (and re-encode to themselves) or raise DecodeError."""
        try:
            m = BloodPressureMeasurement.from_bytes(data)
        except DecodeError:
            return
        assert data == bytes(m)


class TestMeasurementStatus:
    """The Measurement Status word."""

    def test_named_bits_and_range(self) -> None:
        """0x1234 keeps RFU bits and names irregular pulse, range 2, improper position."""
        status = MeasurementStatus(0x1234)
        expected_bits = MeasurementStatusBit.IRREGULAR_PULSE_DETECTED
        expected_bits |= MeasurementStatusBit.IMPROPER_MEASUREMENT_POSITION
        assert status.bits == expected_bits
        assert PulseRateRange.BELOW_LOWER_LIMIT is status.pulse_rate_range
        assert status.rfu_bits == 0x1200
        assert (
            status.body_movement_detected,
            status.cuff_too_loose,
            status.irregular_pulse_detected,
            status.improper_measurement_position,
        ) == (False, False, True, True)

    @pytest.mark.parametrize("rng", list(PulseRateRange))
    def test_pulse_rate_range_values(self, rng: PulseRateRange) -> None:
        """Bits 3-4 carry the four range values, independent of the other bits."""
        assert rng is MeasurementStatus((rng.value << 3) | 0xFFE7).pulse_rate_range

    def test_out_of_range(self) -> None:
        """A status wider than 16 bits is refused."""
        with pytest.raises(ValueError, match="16 bits"):
            MeasurementStatus(0x10000)


class TestIntermediateCuffPressure:
    """0x2A36."""

    @pytest.mark.parametrize("combo", COMBINATIONS)
    def test_every_flag_combination_round_trips(self, combo: tuple[bool, ...]) -> None:
        """Each combination encodes with NaN unused fields and decodes back."""
        kpa, ts, pr, uid, ms = combo
        icp = IntermediateCuffPressure.create(
            unit=PressureUnit.KPA if kpa else PressureUnit.MMHG,
            cuff_pressure=SYS,
            time_stamp=STAMP if ts else None,
            pulse_rate=PULSE if pr else None,
            user_id=USER if uid else None,
            measurement_status=STATUS if ms else None,
        )
        data = bytes(icp)
        assert _expected_size(combo) == len(data)
        assert bytes.fromhex("ff07ff07") == data[3:7]
        assert icp == IntermediateCuffPressure.from_bytes(data)

    def test_zero_unused_fields_are_kept(self) -> None:
        """Unused fields sent as 0x0000 (Nordic vectors) decode and round-trip."""
        data = bytes.fromhex("156ff0000000003c001200")
        icp = IntermediateCuffPressure.from_bytes(data)
        assert PressureUnit.KPA is icp.unit
        assert icp.cuff_pressure.fhir_decimal == "11.1"
        assert MeasurementStatus(0x12) == icp.measurement_status
        assert data == bytes(icp)

    def test_truncation_names_characteristic(self) -> None:
        """A short ICP is rejected naming 0x2A36 and the cut field."""
        with pytest.raises(DecodeError) as info:
            IntermediateCuffPressure.from_bytes(bytes.fromhex("00d7f000"))
        assert (
            info.value.characteristic,
            info.value.reason,
        ) == ("0x2A36", "Unused Diastolic incomplete: flags 0x00 require 7 octets, got 4")


class TestFeature:
    """0x2A49."""

    def test_decode(self) -> None:
        """0x01FF sets all nine defined bits (Spezi), 0xFE00 keeps RFU bits."""
        assert BloodPressureFeature.from_bytes(b"\xff\x01").features == 0x01FF
        feature = BloodPressureFeature.from_bytes(b"\x21\xfe")
        assert BloodPressureFeatureBits.MULTIPLE_BONDS in feature.features
        assert bytes(feature) == b"\x21\xfe"

    @pytest.mark.parametrize("data", [b"", b"\x01", b"\x01\x02\x03"])
    def test_wrong_length(self, data: bytes) -> None:
        """Anything but 2 octets is rejected naming 0x2A49."""
        with pytest.raises(DecodeError) as info:
            BloodPressureFeature.from_bytes(data)
        assert info.value.characteristic == "0x2A49"


@pytest.mark.parametrize(
    ("build", "message"),
    [
        (lambda: BloodPressureMeasurement(BloodPressureFlags(0x100), SYS, DIA, MAP), "one octet"),
        (
            lambda: BloodPressureMeasurement.create(
                unit=PressureUnit.MMHG,
                systolic=SYS,
                diastolic=DIA,
                mean_arterial_pressure=MAP,
                user_id=256,
            ),
            "uint8",
        ),
        (lambda: BloodPressureFeature(BloodPressureFeatureBits(0x10000)), "16 bits"),
    ],
)
def test_construction_validates(build: Callable[[], object], message: str) -> None:
    """Out-of-range or inconsistent fields are refused with ValueError, never truncated."""
    with pytest.raises(ValueError, match=message):
        build()
