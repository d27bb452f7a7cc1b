"""Glucose Service 0x1808 (GLS 1.0) characteristics.

- Glucose Measurement 0x2A18 (Notify): :class:`GlucoseMeasurement`.
- Glucose Measurement Context 0x2A34 (Notify): :class:`GlucoseMeasurementContext`.
- Glucose Feature 0x2A51 (Read): :class:`GlucoseFeature`.

The Record Access Control Point that drives the transfer is in :mod:`drivers.racp`.

Facts that decoders elsewhere get wrong (spec facts §4, §9):

- Time Offset is a **signed** 16-bit count of minutes; user-facing time is
  Base Time + Time Offset (:attr:`GlucoseMeasurement.user_facing_time`).
- Concentration is **SI on the wire**: kg/L or mol/L, the scale in the SFLOAT
  exponent (100 mg/dL = 100e-5 kg/L). No extra rescaling; exact conversions to
  mg/dL and mmol/L are :meth:`GlucoseMeasurement.concentration_mg_per_dl` and
  :meth:`~GlucoseMeasurement.concentration_mmol_per_l`. Converting *between* mass
  and molar units needs a molar mass and is left to the caller.
- Type-Sample Location: **Type is the low nibble**, Sample Location the high one
  (GATT XML note); Tester-Health likewise: Tester low, Health high.
- A measurement and its context are joined by **sequence number**, not by order.

Trailing octets: rejected, except for one documented case. Glucose Measurement
Context values may carry **zero octets of padding up to the characteristic's
17-octet maximum** (Nordic's library accepts such 17-octet buffers; the reference
vectors include one). Zero padding carries no information, its length is kept in
``padding_octets`` (JSON ``trailing_bytes``) so the value round-trips, and any
non-zero or longer excess is still rejected.
"""

from __future__ import annotations

import datetime as dt
import enum
from dataclasses import dataclass, field
from decimal import Decimal
from typing import ClassVar, Final, Self

from drivers.errors import DecodeError
from drivers.gatt_time import DateTime
from drivers.ieee11073 import MedFloat16
from drivers.wire import Cursor, check_length, flags_octet, optional_sfloat

#: Exercise Duration value meaning "overrun" (GATT XML glucose_measurement_context).
EXERCISE_DURATION_OVERRUN_S: Final = 0xFFFF
#: Nibble value meaning "not available" for Sample Location, Tester and Health.
NIBBLE_NOT_AVAILABLE: Final = 0x0F


# -- 0x2A18 ---------------------------------------------------------------------------


class GlucoseMeasurementFlags(enum.IntFlag):
    """Flags of 0x2A18; bits 5-7 RFU, kept as sent."""

    TIME_OFFSET_PRESENT = 0x01
    CONCENTRATION_TYPE_SAMPLE_LOCATION_PRESENT = 0x02
    CONCENTRATION_UNITS_MOL_PER_L = 0x04
    SENSOR_STATUS_ANNUNCIATION_PRESENT = 0x08
    CONTEXT_INFORMATION_FOLLOWS = 0x10


class ConcentrationUnit(enum.Enum):
    """Unit of the Glucose Concentration field (flag bit 2); the value is the JSON code."""

    KG_PER_L = "kg/L"
    MOL_PER_L = "mol/L"


class GlucoseType(enum.IntEnum):
    """Type nibble (low nibble of Type-Sample Location); 0 and 11-15 RFU."""

    CAPILLARY_WHOLE_BLOOD = 1
    CAPILLARY_PLASMA = 2
    VENOUS_WHOLE_BLOOD = 3
    VENOUS_PLASMA = 4
    ARTERIAL_WHOLE_BLOOD = 5
    ARTERIAL_PLASMA = 6
    UNDETERMINED_WHOLE_BLOOD = 7
    UNDETERMINED_PLASMA = 8
    INTERSTITIAL_FLUID = 9
    CONTROL_SOLUTION = 10


class SampleLocation(enum.IntEnum):
    """Sample Location nibble (high nibble); 0 and 5-14 RFU."""

    FINGER = 1
    ALTERNATE_SITE_TEST = 2
    EARLOBE = 3
    CONTROL_SOLUTION = 4
    NOT_AVAILABLE = 15


class SensorStatusAnnunciation(enum.IntFlag):
    """Sensor Status Annunciation of 0x2A18 (16 bits; 12-15 RFU, kept)."""

    DEVICE_BATTERY_LOW = 1 << 0
    SENSOR_MALFUNCTION = 1 << 1
    SAMPLE_SIZE_INSUFFICIENT = 1 << 2
    STRIP_INSERTION_ERROR = 1 << 3
    STRIP_TYPE_INCORRECT = 1 << 4
    RESULT_HIGHER_THAN_DEVICE_CAN_PROCESS = 1 << 5
    RESULT_LOWER_THAN_DEVICE_CAN_PROCESS = 1 << 6
    SENSOR_TEMPERATURE_TOO_HIGH = 1 << 7
    SENSOR_TEMPERATURE_TOO_LOW = 1 << 8
    SENSOR_READ_INTERRUPTED = 1 << 9
    GENERAL_DEVICE_FAULT = 1 << 10
    TIME_FAULT = 1 << 11


def _nibbles(octet: int) -> tuple[int, int]:
    """(low, high) nibbles of an octet."""
    return octet & 0x0F, octet >> 4


def _measurement_layout(flags: int) -> list[tuple[str, int]]:
    layout = [("Flags", 1), ("Sequence Number", 2), ("Base Time", DateTime.SIZE)]
    if flags & GlucoseMeasurementFlags.TIME_OFFSET_PRESENT:
        layout.append(("Time Offset", 2))
    if flags & GlucoseMeasurementFlags.CONCENTRATION_TYPE_SAMPLE_LOCATION_PRESENT:
        layout += [("Glucose Concentration", 2), ("Type-Sample Location", 1)]
    if flags & GlucoseMeasurementFlags.SENSOR_STATUS_ANNUNCIATION_PRESENT:
        layout.append(("Sensor Status Annunciation", 2))
    return layout


def _require_flags(flags: int, pairs: tuple[tuple[enum.IntFlag, bool], ...]) -> None:
    """Raise ValueError unless each flag is set exactly when its field is present."""
    if not 0 <= flags <= 0xFF:
        raise ValueError("flags do not fit one octet")
    for flag, present in pairs:
        if bool(flags & flag) != present:
            raise ValueError(f"flag {flag.name} disagrees with the field's presence")


@dataclass(frozen=True, slots=True)
class GlucoseMeasurement:
    """Glucose Measurement 0x2A18 (GLS 1.0; GATT XML glucose_measurement); 10 to 17 octets.

    ``sample_type`` and ``sample_location`` are the raw nibbles (see
    :class:`GlucoseType`, :class:`SampleLocation`); present together with the
    concentration. Field values never appear in the repr.
    """

    flags: GlucoseMeasurementFlags
    sequence_number: int
    base_time: DateTime = field(repr=False)
    time_offset_min: int | None = field(default=None, repr=False)
    glucose_concentration: MedFloat16 | None = field(default=None, repr=False)
    sample_type: int | None = field(default=None, repr=False)
    sample_location: int | None = field(default=None, repr=False)
    sensor_status_annunciation: SensorStatusAnnunciation | None = field(default=None, repr=False)

    UUID: ClassVar[int] = 0x2A18
    CHARACTERISTIC: ClassVar[str] = "0x2A18"
    MIN_SIZE: ClassVar[int] = 10
    MAX_SIZE: ClassVar[int] = 17

    def __post_init__(self) -> None:
        has_conc = self.glucose_concentration is not None
        if has_conc != (self.sample_type is not None) or has_conc != (
            self.sample_location is not None
        ):
            raise ValueError("concentration, type and sample location come together")
        _require_flags(
            self.flags,
            (
                (GlucoseMeasurementFlags.TIME_OFFSET_PRESENT, self.time_offset_min is not None),
                (GlucoseMeasurementFlags.CONCENTRATION_TYPE_SAMPLE_LOCATION_PRESENT, has_conc),
                (
                    GlucoseMeasurementFlags.SENSOR_STATUS_ANNUNCIATION_PRESENT,
                    self.sensor_status_annunciation is not None,
                ),
            ),
        )
        if not 0 <= self.sequence_number <= 0xFFFF:
            raise ValueError("Sequence Number does not fit uint16")
        if self.time_offset_min is not None and not -0x8000 <= self.time_offset_min <= 0x7FFF:
            raise ValueError("Time Offset does not fit sint16")
        for nibble in (self.sample_type, self.sample_location):
            if nibble is not None and not 0 <= nibble <= 0x0F:
                raise ValueError("Type/Sample Location does not fit a nibble")
        ssa = self.sensor_status_annunciation
        if ssa is not None and not 0 <= ssa <= 0xFFFF:
            raise ValueError("Sensor Status Annunciation does not fit 16 bits")

    @classmethod
    def create(
        cls,
        *,
        sequence_number: int,
        base_time: DateTime,
        time_offset_min: int | None = None,
        concentration: tuple[MedFloat16, ConcentrationUnit, int, int] | None = None,
        sensor_status_annunciation: SensorStatusAnnunciation | None = None,
        context_follows: bool = False,
    ) -> Self:
        """Build a measurement, deriving the flags.

        ``concentration`` is (value, unit, type nibble, sample-location nibble).
        """
        flags = GlucoseMeasurementFlags(0)
        if time_offset_min is not None:
            flags |= GlucoseMeasurementFlags.TIME_OFFSET_PRESENT
        value = sample_type = location = None
        if concentration is not None:
            value, unit, sample_type, location = concentration
            flags |= GlucoseMeasurementFlags.CONCENTRATION_TYPE_SAMPLE_LOCATION_PRESENT
            if unit is ConcentrationUnit.MOL_PER_L:
                flags |= GlucoseMeasurementFlags.CONCENTRATION_UNITS_MOL_PER_L
        if sensor_status_annunciation is not None:
            flags |= GlucoseMeasurementFlags.SENSOR_STATUS_ANNUNCIATION_PRESENT
        if context_follows:
            flags |= GlucoseMeasurementFlags.CONTEXT_INFORMATION_FOLLOWS
        return cls(
            flags,
            sequence_number,
            base_time,
            time_offset_min,
            value,
            sample_type,
            location,
            sensor_status_annunciation,
        )

    @classmethod
    def from_bytes(cls, data: bytes) -> Self:
        """Decode a 0x2A18 value.

        Raises:
            DecodeError: shorter than its flags announce (names the missing field)
                or longer (counts the unexplained octets).
        """
        name = cls.CHARACTERISTIC
        flags = flags_octet(name, data)
        check_length(name, data, _measurement_layout(flags), flags=flags)
        cursor = Cursor(name, data, offset=1)
        sequence_number = cursor.u16("Sequence Number")
        base_time = DateTime.read(cursor, "Base Time")
        offset = None
        if flags & GlucoseMeasurementFlags.TIME_OFFSET_PRESENT:
            offset = cursor.sint(2, "Time Offset")
        value = sample_type = location = None
        if flags & GlucoseMeasurementFlags.CONCENTRATION_TYPE_SAMPLE_LOCATION_PRESENT:
            value = cursor.sfloat("Glucose Concentration")
            sample_type, location = _nibbles(cursor.u8("Type-Sample Location"))
        ssa = None
        if flags & GlucoseMeasurementFlags.SENSOR_STATUS_ANNUNCIATION_PRESENT:
            ssa = SensorStatusAnnunciation(cursor.u16("Sensor Status Annunciation"))
        cursor.finish()
        return cls(
            GlucoseMeasurementFlags(flags),
            sequence_number,
            base_time,
            offset,
            value,
            sample_type,
            location,
            ssa,
        )

    def __bytes__(self) -> bytes:
        """The value as sent on air."""
        out = bytes((int(self.flags),)) + self.sequence_number.to_bytes(2, "little")
        out += bytes(self.base_time)
        if self.time_offset_min is not None:
            out += self.time_offset_min.to_bytes(2, "little", signed=True)
        conc, sample_type, location = (
            self.glucose_concentration,
            self.sample_type,
            self.sample_location,
        )
        if conc is not None and sample_type is not None and location is not None:
            out += bytes(conc) + bytes((sample_type | location << 4,))
        if self.sensor_status_annunciation is not None:
            out += int(self.sensor_status_annunciation).to_bytes(2, "little")
        return out

    @property
    def unit(self) -> ConcentrationUnit | None:
        """Unit of the concentration (flag bit 2), None when no concentration is present."""
        if self.glucose_concentration is None:
            return None
        if self.flags & GlucoseMeasurementFlags.CONCENTRATION_UNITS_MOL_PER_L:
            return ConcentrationUnit.MOL_PER_L
        return ConcentrationUnit.KG_PER_L

    @property
    def context_follows(self) -> bool:
        """Flag bit 4: a 0x2A34 with the same sequence number follows."""
        return bool(self.flags & GlucoseMeasurementFlags.CONTEXT_INFORMATION_FOLLOWS)

    @property
    def user_facing_time(self) -> DateTime | None:
        """Base Time + Time Offset, or None when Base Time is not a usable date."""
        base = self.base_time.to_datetime()
        if base is None:
            return None
        try:
            return DateTime.from_datetime(base + dt.timedelta(minutes=self.time_offset_min or 0))
        except (OverflowError, ValueError):
            return None  # the offset leaves the Date Time range

    def concentration_mg_per_dl(self) -> Decimal | None:
        """The concentration in mg/dL, exact (1 kg/L = 100 000 mg/dL); None unless kg/L."""
        if self.unit is not ConcentrationUnit.KG_PER_L or self.glucose_concentration is None:
            return None
        if not self.glucose_concentration.is_number:
            return None
        return self.glucose_concentration.to_decimal().scaleb(5)

    def concentration_mmol_per_l(self) -> Decimal | None:
        """The concentration in mmol/L, exact (1 mol/L = 1000 mmol/L); None unless mol/L."""
        if self.unit is not ConcentrationUnit.MOL_PER_L or self.glucose_concentration is None:
            return None
        if not self.glucose_concentration.is_number:
            return None
        return self.glucose_concentration.to_decimal().scaleb(3)


# -- 0x2A34 ---------------------------------------------------------------------------


class GlucoseContextFlags(enum.IntFlag):
    """Flags of 0x2A34 (GATT XML glucose_measurement_context)."""

    CARBOHYDRATE_PRESENT = 0x01
    MEAL_PRESENT = 0x02
    TESTER_HEALTH_PRESENT = 0x04
    EXERCISE_PRESENT = 0x08
    MEDICATION_PRESENT = 0x10
    MEDICATION_UNITS_LITRES = 0x20
    HBA1C_PRESENT = 0x40
    EXTENDED_FLAGS_PRESENT = 0x80


class MedicationUnit(enum.Enum):
    """Unit of the Medication field (flag bit 5); the value is the JSON code."""

    KILOGRAMS = "kg"
    LITRES = "L"


class CarbohydrateId(enum.IntEnum):
    """Carbohydrate ID codes."""

    BREAKFAST = 1
    LUNCH = 2
    DINNER = 3
    SNACK = 4
    DRINK = 5
    SUPPER = 6
    BRUNCH = 7


class Meal(enum.IntEnum):
    """Meal codes."""

    PREPRANDIAL = 1
    POSTPRANDIAL = 2
    FASTING = 3
    CASUAL = 4
    BEDTIME = 5


class Tester(enum.IntEnum):
    """Tester nibble (low nibble of Tester-Health)."""

    SELF = 1
    HEALTH_CARE_PROFESSIONAL = 2
    LAB_TEST = 3
    NOT_AVAILABLE = 15


class Health(enum.IntEnum):
    """Health nibble (high nibble of Tester-Health)."""

    MINOR_HEALTH_ISSUES = 1
    MAJOR_HEALTH_ISSUES = 2
    DURING_MENSES = 3
    UNDER_STRESS = 4
    NO_HEALTH_ISSUES = 5
    NOT_AVAILABLE = 15


class MedicationId(enum.IntEnum):
    """Medication ID codes."""

    RAPID_ACTING_INSULIN = 1
    SHORT_ACTING_INSULIN = 2
    INTERMEDIATE_ACTING_INSULIN = 3
    LONG_ACTING_INSULIN = 4
    PRE_MIXED_INSULIN = 5


def _context_layout(flags: int) -> list[tuple[str, int]]:
    layout = [("Flags", 1), ("Sequence Number", 2)]
    if flags & GlucoseContextFlags.EXTENDED_FLAGS_PRESENT:
        layout.append(("Extended Flags", 1))
    if flags & GlucoseContextFlags.CARBOHYDRATE_PRESENT:
        layout += [("Carbohydrate ID", 1), ("Carbohydrate", 2)]
    if flags & GlucoseContextFlags.MEAL_PRESENT:
        layout.append(("Meal", 1))
    if flags & GlucoseContextFlags.TESTER_HEALTH_PRESENT:
        layout.append(("Tester-Health", 1))
    if flags & GlucoseContextFlags.EXERCISE_PRESENT:
        layout += [("Exercise Duration", 2), ("Exercise Intensity", 1)]
    if flags & GlucoseContextFlags.MEDICATION_PRESENT:
        layout += [("Medication ID", 1), ("Medication", 2)]
    if flags & GlucoseContextFlags.HBA1C_PRESENT:
        layout.append(("HbA1c", 2))
    return layout


@dataclass(frozen=True, slots=True)
class GlucoseMeasurementContext:
    """Glucose Measurement Context 0x2A34 (GLS 1.0; GATT XML); 3 to 17 octets.

    Paired fields come together: carbohydrate ID + kg, tester + health, exercise
    duration + intensity, medication ID + value. ``padding_octets`` counts zero
    padding (see the module docstring). Field values never appear in the repr.
    """

    flags: GlucoseContextFlags
    sequence_number: int
    extended_flags: int | None = field(default=None, repr=False)
    carbohydrate_id: int | None = field(default=None, repr=False)
    carbohydrate_kg: MedFloat16 | None = field(default=None, repr=False)
    meal: int | None = field(default=None, repr=False)
    tester: int | None = field(default=None, repr=False)
    health: int | None = field(default=None, repr=False)
    exercise_duration_s: int | None = field(default=None, repr=False)
    exercise_intensity_pct: int | None = field(default=None, repr=False)
    medication_id: int | None = field(default=None, repr=False)
    medication: MedFloat16 | None = field(default=None, repr=False)
    hba1c_pct: MedFloat16 | None = field(default=None, repr=False)
    padding_octets: int = 0

    UUID: ClassVar[int] = 0x2A34
    CHARACTERISTIC: ClassVar[str] = "0x2A34"
    MAX_SIZE: ClassVar[int] = 17

    def __post_init__(self) -> None:
        pairs = (
            ("carbohydrate", self.carbohydrate_id, self.carbohydrate_kg),
            ("tester-health", self.tester, self.health),
            ("exercise", self.exercise_duration_s, self.exercise_intensity_pct),
            ("medication", self.medication_id, self.medication),
        )
        for what, first, second in pairs:
            if (first is None) != (second is None):
                raise ValueError(f"{what} fields come together")
        _require_flags(
            self.flags,
            (
                (GlucoseContextFlags.EXTENDED_FLAGS_PRESENT, self.extended_flags is not None),
                (GlucoseContextFlags.CARBOHYDRATE_PRESENT, self.carbohydrate_id is not None),
                (GlucoseContextFlags.MEAL_PRESENT, self.meal is not None),
                (GlucoseContextFlags.TESTER_HEALTH_PRESENT, self.tester is not None),
                (GlucoseContextFlags.EXERCISE_PRESENT, self.exercise_duration_s is not None),
                (GlucoseContextFlags.MEDICATION_PRESENT, self.medication_id is not None),
                (GlucoseContextFlags.HBA1C_PRESENT, self.hba1c_pct is not None),
            ),
        )
        if not 0 <= self.sequence_number <= 0xFFFF:
            raise ValueError("Sequence Number does not fit uint16")
        octets = (
            self.extended_flags,
            self.carbohydrate_id,
            self.meal,
            self.exercise_intensity_pct,
            self.medication_id,
        )
        if any(v is not None and not 0 <= v <= 0xFF for v in octets):
            raise ValueError("a uint8 field does not fit")
        if any(v is not None and not 0 <= v <= 0x0F for v in (self.tester, self.health)):
            raise ValueError("Tester/Health does not fit a nibble")
        duration = self.exercise_duration_s
        if duration is not None and not 0 <= duration <= 0xFFFF:
            raise ValueError("Exercise Duration does not fit uint16")
        if self.padding_octets < 0 or (self.padding_octets and len(bytes(self)) > self.MAX_SIZE):
            raise ValueError("padding only up to the 17-octet maximum")

    @classmethod
    def from_bytes(cls, data: bytes) -> Self:
        """Decode a 0x2A34 value; zero padding up to 17 octets is accepted and counted.

        Raises:
            DecodeError: shorter than its flags announce, or longer with anything but
                zero padding up to 17 octets.
        """
        name = cls.CHARACTERISTIC
        flags = flags_octet(name, data)
        layout = _context_layout(flags)
        size = sum(n for _, n in layout)
        padding = data[size:]
        if padding and (any(padding) or len(data) > cls.MAX_SIZE):
            raise DecodeError(
                name,
                f"{len(padding)} trailing octet(s) not explained by flags 0x{flags:02X} "
                f"(expected {size} octets; only zero padding up to {cls.MAX_SIZE} is accepted)",
                offset=size,
            )
        check_length(name, data[:size], layout, flags=flags)
        cursor = Cursor(name, data[:size], offset=3)
        extended = carb_id = carb = meal = tester = health = None
        duration = intensity = med_id = med = hba1c = None
        if flags & GlucoseContextFlags.EXTENDED_FLAGS_PRESENT:
            extended = cursor.u8("Extended Flags")
        if flags & GlucoseContextFlags.CARBOHYDRATE_PRESENT:
            carb_id, carb = cursor.u8("Carbohydrate ID"), cursor.sfloat("Carbohydrate")
        if flags & GlucoseContextFlags.MEAL_PRESENT:
            meal = cursor.u8("Meal")
        if flags & GlucoseContextFlags.TESTER_HEALTH_PRESENT:
            tester, health = _nibbles(cursor.u8("Tester-Health"))
        if flags & GlucoseContextFlags.EXERCISE_PRESENT:
            duration = cursor.u16("Exercise Duration")
            intensity = cursor.u8("Exercise Intensity")
        if flags & GlucoseContextFlags.MEDICATION_PRESENT:
            med_id, med = cursor.u8("Medication ID"), cursor.sfloat("Medication")
        if flags & GlucoseContextFlags.HBA1C_PRESENT:
            hba1c = cursor.sfloat("HbA1c")
        cursor.finish()
        return cls(
            GlucoseContextFlags(flags),
            int.from_bytes(data[1:3], "little"),
            extended,
            carb_id,
            carb,
            meal,
            tester,
            health,
            duration,
            intensity,
            med_id,
            med,
            hba1c,
            len(padding),
        )

    def __bytes__(self) -> bytes:
        """The value as sent on air, padding included."""
        out = bytes((int(self.flags),)) + self.sequence_number.to_bytes(2, "little")
        if self.extended_flags is not None:
            out += bytes((self.extended_flags,))
        if self.carbohydrate_id is not None:
            out += bytes((self.carbohydrate_id,)) + optional_sfloat(self.carbohydrate_kg)
        if self.meal is not None:
            out += bytes((self.meal,))
        if self.tester is not None and self.health is not None:
            out += bytes((self.tester | self.health << 4,))
        if self.exercise_duration_s is not None and self.exercise_intensity_pct is not None:
            out += self.exercise_duration_s.to_bytes(2, "little")
            out += bytes((self.exercise_intensity_pct,))
        if self.medication_id is not None:
            out += bytes((self.medication_id,)) + optional_sfloat(self.medication)
        out += optional_sfloat(self.hba1c_pct)
        return out + bytes(self.padding_octets)

    @property
    def medication_unit(self) -> MedicationUnit | None:
        """Unit of the Medication field (flag bit 5), None when no medication is present."""
        if self.medication is None:
            return None
        if self.flags & GlucoseContextFlags.MEDICATION_UNITS_LITRES:
            return MedicationUnit.LITRES
        return MedicationUnit.KILOGRAMS


# -- 0x2A51 ---------------------------------------------------------------------------


class GlucoseFeatureBits(enum.IntFlag):
    """Glucose Feature 0x2A51 bits; 11-15 RFU, kept."""

    LOW_BATTERY_DETECTION = 1 << 0
    SENSOR_MALFUNCTION_DETECTION = 1 << 1
    SENSOR_SAMPLE_SIZE = 1 << 2
    SENSOR_STRIP_INSERTION_ERROR_DETECTION = 1 << 3
    SENSOR_STRIP_TYPE_ERROR_DETECTION = 1 << 4
    SENSOR_RESULT_HIGH_LOW_DETECTION = 1 << 5
    SENSOR_TEMPERATURE_HIGH_LOW_DETECTION = 1 << 6
    SENSOR_READ_INTERRUPT_DETECTION = 1 << 7
    GENERAL_DEVICE_FAULT = 1 << 8
    TIME_FAULT = 1 << 9
    MULTIPLE_BOND = 1 << 10


@dataclass(frozen=True, slots=True)
class GlucoseFeature:
    """Glucose Feature 0x2A51 (GLS 1.0): a 16-bit word, exactly 2 octets."""

    features: GlucoseFeatureBits

    UUID: ClassVar[int] = 0x2A51
    CHARACTERISTIC: ClassVar[str] = "0x2A51"

    def __post_init__(self) -> None:
        if not 0 <= self.features <= 0xFFFF:
            raise ValueError("Glucose Feature does not fit 16 bits")

    @classmethod
    def from_bytes(cls, data: bytes) -> Self:
        """Decode exactly 2 octets.

        Raises:
            DecodeError: not exactly 2 octets.
        """
        check_length(cls.CHARACTERISTIC, data, [("Glucose Feature", 2)])
        return cls(GlucoseFeatureBits(int.from_bytes(data, "little")))

    def __bytes__(self) -> bytes:
        """The 2 octets as sent on air."""
        return int(self.features).to_bytes(2, "little")
