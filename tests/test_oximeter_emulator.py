"""The emulated oximeter's encodings are byte-exact, and agree with the hub's own decoders.

Expected bytes are worked out by hand from PLXS §3.1-3.3 (ble-spec-facts §6): the emulator's
encoders are independent of ``drivers/``, so decoding them with ``drivers`` checks one
against the other.
"""

from __future__ import annotations

from decimal import Decimal

import pytest

from drivers.ieee11073 import SpecialValue
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
from hil.emulators.encoding import SFLOAT_NAN, DateTime
from hil.emulators.oximeter import (
    ContinuousSample,
    DeviceSensorStatus,
    Features,
    MeasurementStatus,
    SpotCheck,
    SupportedFeatures,
    example_continuous,
    example_spot_checks,
)


def test_spot_check_with_every_field_is_19_octets() -> None:
    """Flags 0x0F, SpO2 97, PR 64, Date Time, status 0x0080, device status 0, PAI 4.2."""
    spot = example_spot_checks()[0]
    assert bytes(spot) == bytes.fromhex("0f61004000e907030e073b1e80000000002af0")
    assert len(bytes(spot)) == 19


def test_spot_check_decimal_spo2_and_device_status() -> None:
    """95.5 % is mantissa 955, exponent -1 (0xF3BB); low perfusion is bit 5 of 24."""
    spot = example_spot_checks()[1]
    assert bytes(spot) == bytes.fromhex("05bbf34700e907030e080205200000")


def test_minimal_spot_check_with_nan_and_clock_not_set() -> None:
    """Only SpO2 (NaN) and PR: 5 octets; flag bit 4 for an unset clock."""
    assert bytes(SpotCheck(SFLOAT_NAN, 70)) == bytes.fromhex("00ff074600")
    unset = SpotCheck(98, 60, timestamp=DateTime(2000, 1, 1, 0, 3, 12), device_clock_not_set=True)
    assert bytes(unset) == bytes.fromhex("1162003c00d007010100030c")


def test_continuous_normal_fast_pai() -> None:
    """Flags 0x11 (Fast, PAI): Normal 96/72, Fast 95/74, PAI 3.8."""
    sample = example_continuous()[0]
    assert bytes(sample) == bytes.fromhex("11600048005f004a0026f0")


def test_continuous_with_everything_is_20_octets() -> None:
    """Normal, Fast, Slow, both status words and PAI: the 20-octet maximum."""
    sample = ContinuousSample(
        96, 72, fast=(95, 74), slow=(97, 70), measurement_status=0x4000,
        device_sensor_status=0x000010, pulse_amplitude_index=Decimal("1.5"),
    )  # fmt: skip
    assert bytes(sample) == bytes.fromhex("1f600048005f004a006100460000401000000ff0")


def test_features_default() -> None:
    """Supported 0x005B, measurement status support 0x4880, device status support 0x008020."""
    assert bytes(Features()) == bytes.fromhex("5b008048208000")
    assert bytes(Features(SupportedFeatures(0), None, None)) == bytes.fromhex("0000")


def test_hub_decoders_read_the_emulators_values() -> None:
    """drivers.pulse_oximetry decodes every example to the values the emulator was given."""
    spot = PlxSpotCheckMeasurement.from_bytes(bytes(example_spot_checks()[0]))
    assert spot.flags == SpotCheckFlags(0x0F)
    assert (spot.spo2.to_decimal(), spot.pulse_rate.to_decimal()) == (97, 64)
    assert spot.measurement_status == PlxMeasurementStatus.VALIDATED_DATA
    assert spot.device_sensor_status == PlxDeviceSensorStatus(0)
    assert spot.pulse_amplitude_index is not None
    assert str(spot.pulse_amplitude_index.to_decimal()) == "4.2"
    assert spot.timestamp is not None
    assert spot.timestamp.as_dict() == {
        "year": 2025, "month": 3, "day": 14, "hours": 7, "minutes": 59, "seconds": 30,
    }  # fmt: skip
    second = PlxSpotCheckMeasurement.from_bytes(bytes(example_spot_checks()[1]))
    assert str(second.spo2.to_decimal()) == "95.5"
    assert second.device_sensor_status == PlxDeviceSensorStatus.LOW_PERFUSION_DETECTED

    nan = PlxSpotCheckMeasurement.from_bytes(bytes(SpotCheck(SFLOAT_NAN, 70)))
    assert nan.spo2.special is SpecialValue.NAN

    cont = PlxContinuousMeasurement.from_bytes(bytes(example_continuous()[0]))
    assert cont.flags == ContinuousFlags(0x11)
    assert cont.spo2pr_fast is not None
    assert [v.to_decimal() for v in cont.spo2pr_fast] == [95, 74]

    features = PlxFeatures.from_bytes(bytes(Features()))
    assert features.supported_features & PlxSupportedFeatures.SPO2PR_FAST
    assert features.measurement_status_support == PlxMeasurementStatus(0x4880)
    assert features.device_sensor_status_support == PlxDeviceSensorStatus(0x8020)


@pytest.mark.parametrize(
    ("emulator", "driver"),
    [(MeasurementStatus, PlxMeasurementStatus), (DeviceSensorStatus, PlxDeviceSensorStatus)],
)
def test_status_bit_names_match_the_decoder(emulator: type, driver: type) -> None:
    """Both sides name every status bit alike (checked: the normalizer maps by name)."""
    assert {m.name: m.value for m in emulator} == {m.name: m.value for m in driver}


def test_out_of_range_fields_are_refused() -> None:
    """A 17-bit measurement status or a 3-octet raw SFLOAT cannot be encoded."""
    with pytest.raises(ValueError, match="16 bits"):
        bytes(SpotCheck(97, 60, measurement_status=0x10000))
    with pytest.raises(ValueError, match="2 octets"):
        bytes(SpotCheck(b"\x00\x00\x00", 60))


def test_repr_hides_values() -> None:
    """A reading's repr names its flags, never its values."""
    assert repr(example_spot_checks()[1]) == "SpotCheck(flags=0x05)"
    assert "96" not in repr(example_continuous()[0])
