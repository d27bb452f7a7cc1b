"""Tests of drivers.cgm: CGM Measurement 0x2AA7 and the E2E-CRC."""

from __future__ import annotations

import itertools
from collections.abc import Callable

import pytest

from agent.errors import DecodeError
from drivers.cgm import (
    CgmMeasurement,
    CgmMeasurementFlags,
    CgmMeasurementRecord,
    CgmSensorStatusAnnunciation,
    crc16_mcrf4xx,
)
from drivers.ieee11073 import MedFloat16

NORDIC = bytes.fromhex("0fe3d2e405000214ff02f0e5f38e3f")
GLUCOSE = MedFloat16.from_decimal("120")


def _record(combo: tuple[bool, ...]) -> CgmMeasurementRecord:
    trend, quality, warning, cal, status, crc = combo
    flags = CgmMeasurementFlags(
        trend * 0x01 + quality * 0x02 + warning * 0x20 + cal * 0x40 + status * 0x80
    )
    return CgmMeasurementRecord(
        flags,
        GLUCOSE,
        300,
        status_octet=0x02 if status else None,
        cal_temp_octet=0x14 if cal else None,
        warning_octet=0x01 if warning else None,
        trend=MedFloat16.from_decimal("0.2") if trend else None,
        quality=MedFloat16.from_decimal("99.7") if quality else None,
        has_e2e_crc=crc,
    )


COMBOS = list(itertools.product([False, True], repeat=6))


class TestCrc:
    """CRC-16/MCRF4XX."""

    def test_check_value(self) -> None:
        """The catalogue check value of CRC-16/MCRF4XX over "123456789" is 0x6F91."""
        assert crc16_mcrf4xx(b"123456789") == 0x6F91

    def test_nordic_record(self) -> None:
        """The Nordic record's 13 octets give 0x3F8E, as sent."""
        assert crc16_mcrf4xx(NORDIC[:13]) == 0x3F8E


class TestRecords:
    """CGM Measurement records."""

    @pytest.mark.parametrize("combo", COMBOS)
    def test_every_flag_combination_round_trips(self, combo: tuple[bool, ...]) -> None:
        """All 64 flag/CRC combinations encode with a matching Size and decode back."""
        trend, quality, warning, cal, status, crc = combo
        record = _record(combo)
        data = bytes(record)
        expected = 6 + warning + cal + status + 2 * trend + 2 * quality + 2 * crc
        assert (len(data), data[0], record.size) == (expected, expected, expected)
        assert CgmMeasurement.from_bytes(data).records == (record,)

    @pytest.mark.parametrize("combo", COMBOS[::5])
    def test_truncations_rejected(self, combo: tuple[bool, ...]) -> None:
        """Every shorter length raises DecodeError naming 0x2AA7."""
        data = bytes(_record(combo))
        for cut in range(len(data)):
            with pytest.raises(DecodeError) as info:
                CgmMeasurement.from_bytes(data[:cut])
            assert info.value.characteristic == "0x2AA7"

    def test_nordic_vector(self) -> None:
        """All fields + CRC: SSA octets in Status, Cal/Temp, Warning order."""
        (record,) = CgmMeasurement.from_bytes(NORDIC).records
        assert record.glucose_mg_dl.fhir_decimal == "12.34"
        assert record.time_offset_min == 5
        assert record.ssa_octets == (0x02, 0x14, 0xFF)
        ssa = record.sensor_status_annunciation
        assert CgmSensorStatusAnnunciation.DEVICE_BATTERY_LOW in ssa
        assert CgmSensorStatusAnnunciation.CALIBRATION_RECOMMENDED in ssa
        assert CgmSensorStatusAnnunciation.SENSOR_TEMPERATURE_TOO_HIGH in ssa
        assert int(ssa) == 0xFF1402
        assert record.has_e2e_crc
        assert bytes(record) == NORDIC

    def test_single_warning_octet_sits_at_bits_16_to_23(self) -> None:
        """A lone Warning octet is placed at bits 16-23, not read as the Status octet."""
        record = _record((False, False, True, False, False, False))
        assert record.ssa_octets == (0x01,)
        ssa = record.sensor_status_annunciation
        assert ssa == CgmSensorStatusAnnunciation.RESULT_LOWER_THAN_PATIENT_LOW_LEVEL

    def test_bad_crc_rejected(self) -> None:
        """A flipped CRC bit rejects the record."""
        data = NORDIC[:-1] + bytes((NORDIC[-1] ^ 0x01,))
        with pytest.raises(DecodeError, match="E2E-CRC does not match"):
            CgmMeasurement.from_bytes(data)

    def test_corrupted_glucose_rejected(self) -> None:
        """A changed glucose octet under a CRC rejects the record."""
        data = NORDIC[:2] + b"\xd3" + NORDIC[3:]
        with pytest.raises(DecodeError, match="E2E-CRC does not match"):
            CgmMeasurement.from_bytes(data)

    @pytest.mark.parametrize(
        ("wire", "reason"),
        [
            ("", "Size missing"),
            ("05000c100500", "record Size 5 below 6"),
            ("07000c10050000", "Size 7 disagrees with flags 0x00"),
            ("08000c1005", "record Size 8 overruns the value"),
            ("06000c100500ff", "record Size 255 overruns"),
        ],
    )
    def test_framing_errors(self, wire: str, reason: str) -> None:
        """Size octets that disagree with flags or data are rejected."""
        with pytest.raises(DecodeError, match=reason) as info:
            CgmMeasurement.from_bytes(bytes.fromhex(wire))
        assert info.value.characteristic == "0x2AA7"


class TestNotifications:
    """Several records per notification."""

    def test_two_records(self) -> None:
        """Two 6-octet records split by Size and round-trip."""
        data = bytes.fromhex("06000c10050006000c100600")
        value = CgmMeasurement.from_bytes(data)
        assert [r.time_offset_min for r in value.records] == [5, 6]
        assert bytes(value) == data

    def test_mixed_crc_presence_rejected(self) -> None:
        """A record with a CRC next to one without is rejected."""
        data = NORDIC + bytes.fromhex("06000c100600")
        with pytest.raises(DecodeError, match="disagree on E2E-CRC"):
            CgmMeasurement.from_bytes(data)

    def test_feature_bit_enforced(self) -> None:
        """With e2e_crc from CGM Feature, presence must match it."""
        with pytest.raises(DecodeError, match="E2E-CRC required"):
            CgmMeasurement.from_bytes(bytes.fromhex("06000c100500"), e2e_crc=True)
        with pytest.raises(DecodeError, match="E2E-CRC not supported"):
            CgmMeasurement.from_bytes(NORDIC, e2e_crc=False)
        assert CgmMeasurement.from_bytes(NORDIC, e2e_crc=True).records[0].has_e2e_crc

    def test_error_offset_points_into_second_record(self) -> None:
        """An error in record 2 names it and gives its absolute offset."""
        data = bytes.fromhex("06000c100500") + NORDIC[:-1] + b"\x00"
        with pytest.raises(DecodeError) as info:
            CgmMeasurement.from_bytes(data)
        assert info.value.reason.startswith("record 2: E2E-CRC does not match")
        assert info.value.offset == 6 + 13


@pytest.mark.parametrize(
    ("build", "message"),
    [
        (lambda: CgmMeasurementRecord(CgmMeasurementFlags(0x100), GLUCOSE, 1), "one octet"),
        (lambda: CgmMeasurementRecord(CgmMeasurementFlags(0x80), GLUCOSE, 1), "STATUS_OCTET"),
        (lambda: CgmMeasurementRecord(CgmMeasurementFlags(0), GLUCOSE, 0x10000), "uint16"),
        (
            lambda: CgmMeasurementRecord(CgmMeasurementFlags(0x80), GLUCOSE, 1, status_octet=256),
            "uint8",
        ),
        (lambda: CgmMeasurement(()), "at least one record"),
    ],
)
def test_construction_validates(build: Callable[[], object], message: str) -> None:
    """Out-of-range or inconsistent fields are refused with ValueError."""
    with pytest.raises(ValueError, match=message):
        build()


def test_over_long_notification_rejected() -> None:
    """A value longer than an ATT value can be is rejected before parsing."""
    with pytest.raises(DecodeError, match="longer than 512"):
        CgmMeasurement.from_bytes(bytes.fromhex("06000c100500") * 86)
