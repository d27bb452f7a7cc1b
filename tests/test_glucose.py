"""Tests of drivers.glucose: GLS 0x2A18, 0x2A34 and 0x2A51."""

from __future__ import annotations

import itertools
from collections.abc import Callable
from decimal import Decimal

import pytest
from hypothesis import given
from hypothesis import strategies as st

from agent.errors import DecodeError
from drivers.gatt_time import DateTime
from drivers.glucose import (
    ConcentrationUnit,
    GlucoseContextFlags,
    GlucoseFeature,
    GlucoseFeatureBits,
    GlucoseMeasurement,
    GlucoseMeasurementContext,
    GlucoseMeasurementFlags,
    MedicationUnit,
    SensorStatusAnnunciation,
)
from drivers.ieee11073 import MedFloat16

BASE = DateTime(2018, 6, 6, 14, 54, 18)
CONC = MedFloat16.from_decimal("96E-5")


def _measurement(combo: tuple[bool, ...]) -> GlucoseMeasurement:
    offset, conc, mol, ssa, ctx = combo
    unit = ConcentrationUnit.MOL_PER_L if mol else ConcentrationUnit.KG_PER_L
    return GlucoseMeasurement.create(
        sequence_number=0xBEEF,
        base_time=BASE,
        time_offset_min=-90 if offset else None,
        concentration=(CONC, unit, 2, 1) if conc else None,
        sensor_status_annunciation=SensorStatusAnnunciation(0x0F50) if ssa else None,
        context_follows=ctx,
    )


MEASUREMENT_COMBOS = list(itertools.product([False, True], repeat=5))


class TestMeasurement:
    """Glucose Measurement 0x2A18."""

    @pytest.mark.parametrize("combo", MEASUREMENT_COMBOS)
    def test_every_flag_combination_round_trips(self, combo: tuple[bool, ...]) -> None:
        """All 32 combinations encode to the announced size and decode back."""
        m = _measurement(combo)
        data = bytes(m)
        assert len(data) == 10 + 2 * combo[0] + 3 * combo[1] + 2 * combo[3]
        assert GlucoseMeasurement.from_bytes(data) == m

    @pytest.mark.parametrize("combo", MEASUREMENT_COMBOS)
    def test_every_truncation_and_extension_is_rejected(self, combo: tuple[bool, ...]) -> None:
        """Every shorter length and one extra octet raise DecodeError naming 0x2A18."""
        data = bytes(_measurement(combo))
        for cut in [*range(len(data)), len(data) + 1]:
            value = data[:cut] if cut < len(data) else data + b"\x00"
            with pytest.raises(DecodeError) as info:
                GlucoseMeasurement.from_bytes(value)
            assert info.value.characteristic == "0x2A18"

    def test_negative_offset_and_user_facing_time(self) -> None:
        """Time Offset is signed; user-facing time = base + offset (Nordic vector)."""
        m = GlucoseMeasurement.from_bytes(bytes.fromhex("1b0100e307021b0b0a1efbff1e00120501"))
        assert m.time_offset_min == -5
        assert m.user_facing_time == DateTime(2019, 2, 27, 11, 5, 30)
        assert m.sensor_status_annunciation == (
            SensorStatusAnnunciation.DEVICE_BATTERY_LOW
            | SensorStatusAnnunciation.SAMPLE_SIZE_INSUFFICIENT
            | SensorStatusAnnunciation.SENSOR_TEMPERATURE_TOO_LOW
        )
        assert (m.sample_type, m.sample_location, m.context_follows) == (2, 1, True)

    def test_offset_crosses_midnight(self) -> None:
        """A +30 min offset at 23:50 on 31 Dec moves to the next year."""
        m = GlucoseMeasurement.create(
            sequence_number=1, base_time=DateTime(2023, 12, 31, 23, 50, 0), time_offset_min=30
        )
        assert m.user_facing_time == DateTime(2024, 1, 1, 0, 20, 0)

    @pytest.mark.parametrize(
        ("base", "offset"),
        [(DateTime(0, 0, 0, 1, 2, 3), 5), (DateTime(9999, 12, 31, 23, 59, 0), 10)],
    )
    def test_user_facing_time_unknown(self, base: DateTime, offset: int) -> None:
        """Unknown base time or an offset past year 9999 gives no user-facing time."""
        m = GlucoseMeasurement.create(sequence_number=1, base_time=base, time_offset_min=offset)
        assert m.user_facing_time is None

    def test_si_units_convert_exactly(self) -> None:
        """0xB03F kg/L is exactly 63 mg/dL; 0xC037 mol/L is exactly 5.5 mmol/L."""
        kg = GlucoseMeasurement.from_bytes(bytes.fromhex("030400e20706060e390400003fb011"))
        assert (kg.unit, kg.concentration_mg_per_dl()) == (ConcentrationUnit.KG_PER_L, 63)
        assert kg.concentration_mmol_per_l() is None
        mol = GlucoseMeasurement.create(
            sequence_number=1,
            base_time=BASE,
            concentration=(MedFloat16.from_raw(0xC037), ConcentrationUnit.MOL_PER_L, 1, 1),
        )
        assert mol.concentration_mmol_per_l() == Decimal("5.5")
        assert str(mol.concentration_mmol_per_l()) == "5.5"

    def test_type_is_low_nibble(self) -> None:
        """Type-Sample Location 0x34 is type 4 (venous plasma), location 3 (earlobe)."""
        m = GlucoseMeasurement.from_bytes(bytes.fromhex("060400d0070102030405341134"))
        assert (m.sample_type, m.sample_location, m.unit) == (4, 3, ConcentrationUnit.MOL_PER_L)

    def test_minimal_has_no_unit(self) -> None:
        """Without a concentration there is no unit, whatever flag bit 2 says."""
        m = GlucoseMeasurement.from_bytes(bytes.fromhex("040100d0070102030405"))
        assert m.unit is None
        assert bytes(m) == bytes.fromhex("040100d0070102030405")

    def test_short_value_names_missing_field(self) -> None:
        """15 octets with flags 0x1B: the SSA is the first field that does not fit."""
        with pytest.raises(DecodeError) as info:
            GlucoseMeasurement.from_bytes(bytes.fromhex("1b0000e207041a0b091e1e00120501"))
        assert info.value.reason == (
            "Sensor Status Annunciation missing: flags 0x1B require 17 octets, got 15"
        )

    def test_repr_hides_reading(self) -> None:
        """The repr shows flags and sequence number only."""
        text = repr(_measurement((True, True, False, True, False)))
        assert text == (
            "GlucoseMeasurement(flags=<GlucoseMeasurementFlags.TIME_OFFSET_PRESENT|"
            "CONCENTRATION_TYPE_SAMPLE_LOCATION_PRESENT|SENSOR_STATUS_ANNUNCIATION_PRESENT: 11>, "
            "sequence_number=48879)"
        )


CONTEXT_FIELDS = list(itertools.product([False, True], repeat=8))


def _context(combo: tuple[bool, ...]) -> GlucoseMeasurementContext:
    carb, meal, th, ex, med, _litres, hba1c, ext = combo
    flags = GlucoseContextFlags(sum(bit << i for i, bit in enumerate(combo)))
    return GlucoseMeasurementContext(
        flags,
        7,
        extended_flags=0x69 if ext else None,
        carbohydrate_id=1 if carb else None,
        carbohydrate_kg=MedFloat16.from_decimal("0.114") if carb else None,
        meal=3 if meal else None,
        tester=1 if th else None,
        health=5 if th else None,
        exercise_duration_s=2221 if ex else None,
        exercise_intensity_pct=7 if ex else None,
        medication_id=5 if med else None,
        medication=MedFloat16.from_decimal("0.08") if med else None,
        hba1c_pct=MedFloat16.from_decimal("6.8") if hba1c else None,
    )


class TestContext:
    """Glucose Measurement Context 0x2A34."""

    @pytest.mark.parametrize("combo", CONTEXT_FIELDS)
    def test_every_flag_combination_round_trips(self, combo: tuple[bool, ...]) -> None:
        """All 256 flag combinations round-trip at the announced size."""
        carb, meal, th, ex, med, _, hba1c, ext = combo
        ctx = _context(combo)
        data = bytes(ctx)
        assert len(data) == 3 + ext + 3 * carb + meal + th + 3 * ex + 3 * med + 2 * hba1c
        assert GlucoseMeasurementContext.from_bytes(data) == ctx

    @pytest.mark.parametrize("combo", CONTEXT_FIELDS[::7])
    def test_every_truncation_is_rejected(self, combo: tuple[bool, ...]) -> None:
        """Every shorter length raises DecodeError naming 0x2A34."""
        data = bytes(_context(combo))
        for cut in range(len(data)):
            with pytest.raises(DecodeError) as info:
                GlucoseMeasurementContext.from_bytes(data[:cut])
            assert info.value.characteristic == "0x2A34"

    def test_medication_unit(self) -> None:
        """Flag bit 5 selects litres; kg otherwise; None without medication."""
        assert _context((0, 0, 0, 0, 1, 1, 0, 0)).medication_unit is MedicationUnit.LITRES
        assert _context((0, 0, 0, 0, 1, 0, 0, 0)).medication_unit is MedicationUnit.KILOGRAMS
        assert _context((0, 0, 0, 0, 0, 1, 0, 0)).medication_unit is None

    def test_nordic_vector(self) -> None:
        """Carbs + meal + tester/health + medication decode with nibbles in spec order."""
        ctx = GlucoseMeasurementContext.from_bytes(bytes.fromhex("970600d30472d00431035da0"))
        assert (ctx.carbohydrate_id, ctx.meal, ctx.tester, ctx.health) == (4, 4, 1, 3)
        assert ctx.carbohydrate_kg == MedFloat16.from_decimal("0.114")
        assert ctx.medication == MedFloat16.from_decimal("0.000093")

    @pytest.mark.parametrize("padding", [1, 14])
    def test_zero_padding_up_to_17_is_counted(self, padding: int) -> None:
        """Zero padding up to the 17-octet maximum is accepted, counted and re-encoded."""
        data = bytes.fromhex("000100") + bytes(padding)
        ctx = GlucoseMeasurementContext.from_bytes(data)
        assert ctx.padding_octets == padding
        assert bytes(ctx) == data

    @pytest.mark.parametrize(
        "data",
        [
            bytes.fromhex("000100") + bytes(15),  # 18 octets: beyond the maximum
            bytes.fromhex("00010000000001"),  # non-zero excess
            bytes.fromhex("840100bb5100ff"),  # non-zero after real fields
        ],
    )
    def test_other_trailing_octets_are_rejected(self, data: bytes) -> None:
        """Non-zero excess, or padding beyond 17 octets, is rejected with its count."""
        with pytest.raises(DecodeError, match="trailing octet"):
            GlucoseMeasurementContext.from_bytes(data)

    def test_pairs_come_together(self) -> None:
        """Tester without health is refused at construction."""
        with pytest.raises(ValueError, match="tester-health"):
            GlucoseMeasurementContext(GlucoseContextFlags.TESTER_HEALTH_PRESENT, 1, tester=1)

    @given(st.binary(max_size=20))
    def test_random_bytes(self, data: bytes) -> None:
        """Random bytes decode and round-trip, or raise DecodeError."""
        try:
            ctx = GlucoseMeasurementContext.from_bytes(data)
        except DecodeError:
            return
        assert bytes(ctx) == data


class TestFeature:
    """Glucose Feature 0x2A51."""

    def test_decode(self) -> None:
        """0x03F0 sets bits 4-9 and not multiple bond."""
        feature = GlucoseFeature.from_bytes(bytes.fromhex("f003"))
        assert feature.features == 0x03F0
        assert GlucoseFeatureBits.MULTIPLE_BOND not in feature.features
        assert bytes(feature) == bytes.fromhex("f003")

    @pytest.mark.parametrize("length", [0, 1, 3])
    def test_wrong_length(self, length: int) -> None:
        """Anything but 2 octets is rejected naming 0x2A51."""
        with pytest.raises(DecodeError) as info:
            GlucoseFeature.from_bytes(bytes(length))
        assert info.value.characteristic == "0x2A51"


@pytest.mark.parametrize(
    ("build", "message"),
    [
        (lambda: GlucoseMeasurement(GlucoseMeasurementFlags(0x100), 1, BASE), "one octet"),
        (lambda: GlucoseMeasurement(GlucoseMeasurementFlags(1), 1, BASE), "TIME_OFFSET"),
        (
            lambda: GlucoseMeasurement(GlucoseMeasurementFlags(2), 1, BASE, None, CONC, 1, None),
            "come together",
        ),
        (lambda: GlucoseMeasurement.create(sequence_number=0x10000, base_time=BASE), "uint16"),
        (
            lambda: GlucoseMeasurement.create(
                sequence_number=1, base_time=BASE, time_offset_min=0x8000
            ),
            "sint16",
        ),
        (
            lambda: GlucoseMeasurement.create(
                sequence_number=1,
                base_time=BASE,
                concentration=(CONC, ConcentrationUnit.KG_PER_L, 16, 1),
            ),
            "nibble",
        ),
        (
            lambda: GlucoseMeasurement.create(
                sequence_number=1,
                base_time=BASE,
                sensor_status_annunciation=SensorStatusAnnunciation(0x10000),
            ),
            "16 bits",
        ),
        (lambda: GlucoseMeasurementContext(GlucoseContextFlags(0), 0x10000), "uint16"),
        (
            lambda: GlucoseMeasurementContext(GlucoseContextFlags.MEAL_PRESENT, 1, meal=256),
            "uint8",
        ),
        (
            lambda: GlucoseMeasurementContext(
                GlucoseContextFlags.TESTER_HEALTH_PRESENT, 1, tester=16, health=1
            ),
            "nibble",
        ),
        (
            lambda: GlucoseMeasurementContext(
                GlucoseContextFlags.EXERCISE_PRESENT,
                1,
                exercise_duration_s=0x10000,
                exercise_intensity_pct=1,
            ),
            "uint16",
        ),
        (lambda: GlucoseMeasurementContext(GlucoseContextFlags(0), 1, padding_octets=15), "17"),
        (lambda: GlucoseFeature(GlucoseFeatureBits(0x10000)), "16 bits"),
    ],
)
def test_construction_validates(build: Callable[[], object], message: str) -> None:
    """Out-of-range or inconsistent fields are refused with ValueError, never truncated."""
    with pytest.raises(ValueError, match=message):
        build()


def test_special_concentration_has_no_conversion() -> None:
    """A NaN concentration converts to neither mg/dL nor mmol/L."""
    nan = MedFloat16.from_raw(0x07FF)
    for unit in ConcentrationUnit:
        m = GlucoseMeasurement.create(
            sequence_number=1, base_time=BASE, concentration=(nan, unit, 1, 1)
        )
        assert (m.concentration_mg_per_dl(), m.concentration_mmol_per_l()) == (None, None)
