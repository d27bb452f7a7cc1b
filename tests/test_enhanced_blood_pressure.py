"""Tests of drivers.enhanced_blood_pressure: BPS 1.1 0x2B34, 0x2B35 and 0x2B36."""

from __future__ import annotations

import itertools
import json
from datetime import UTC, datetime, timedelta, timezone

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from agent.cli import main
from agent.errors import DecodeError
from drivers.blood_pressure import BloodPressureMeasurement, MeasurementStatus, PressureUnit
from drivers.cgm import crc16_mcrf4xx
from drivers.enhanced_blood_pressure import (
    EPOCH_1900,
    EPOCH_2000,
    BloodPressureRecord,
    EnhancedBloodPressureFlags,
    EnhancedBloodPressureMeasurement,
    EnhancedIntermediateCuffPressure,
    seconds_since_epoch,
)
from drivers.ieee11073 import MedFloat16
from drivers.registry import decode

SYS = MedFloat16.from_decimal("120")
DIA = MedFloat16.from_decimal("80")
MAP = MedFloat16.from_decimal("93")
PULSE = MedFloat16.from_decimal("64")
CUFF = MedFloat16.from_decimal("16.0")
USER = 2
STATUS = MeasurementStatus(0x0025)
#: 2024-03-01T07:45:12Z since 2000-01-01: (24*365 + 6 leap days + 31 + 29) days = 8826 d;
#: 8826 * 86400 + 7*3600 + 45*60 + 12 = 762_594_312 = 0x2D744408.
STAMP_2000 = 762_594_312
#: The same instant since 1900-01-01: plus 36524 days (1900 is not a leap year).
STAMP_1900 = STAMP_2000 + 36_524 * 86_400
#: User facing time one hour ahead of UTC (a UTC+1 wall clock).
FACING_2000 = STAMP_2000 + 3600
#: FACING_2000 as the naive wall-clock datetime the device shows.
WALL_CLOCK = datetime(2024, 3, 1, 8, 45, 12, tzinfo=UTC).replace(tzinfo=None)

#: Every combination of unit, epoch and the five optional fields.
COMBINATIONS = list(itertools.product([False, True], repeat=7))


def _bpm(combo: tuple[bool, ...]) -> EnhancedBloodPressureMeasurement:
    kpa, e2000, ts, pr, uid, ms, uft = combo
    return EnhancedBloodPressureMeasurement.create(
        unit=PressureUnit.KPA if kpa else PressureUnit.MMHG,
        systolic=SYS,
        diastolic=DIA,
        mean_arterial_pressure=MAP,
        epoch_start_2000=e2000,
        time_stamp_s=STAMP_2000 if ts else None,
        pulse_rate=PULSE if pr else None,
        user_id=USER if uid else None,
        measurement_status=STATUS if ms else None,
        user_facing_time_s=FACING_2000 if uft else None,
    )


def _icp(combo: tuple[bool, ...]) -> EnhancedIntermediateCuffPressure:
    kpa, e2000, ts, pr, uid, ms, uft = combo
    return EnhancedIntermediateCuffPressure.create(
        unit=PressureUnit.KPA if kpa else PressureUnit.MMHG,
        cuff_pressure=CUFF,
        epoch_start_2000=e2000,
        time_stamp_s=STAMP_2000 if ts else None,
        pulse_rate=PULSE if pr else None,
        user_id=USER if uid else None,
        measurement_status=STATUS if ms else None,
        user_facing_time_s=FACING_2000 if uft else None,
    )


def _optional_size(combo: tuple[bool, ...]) -> int:
    _, _, ts, pr, uid, ms, uft = combo
    return 4 * ts + 2 * pr + 1 * uid + 2 * ms + 4 * uft


class TestRoundTrip:
    """Every flag combination encodes to the announced size and decodes back equal."""

    @pytest.mark.parametrize("combo", COMBINATIONS)
    def test_measurement(self, combo: tuple[bool, ...]) -> None:
        """0x2B34: 7 octets plus the flagged fields; decode(encode(v)) == v."""
        value = _bpm(combo)
        data = bytes(value)
        assert 7 + _optional_size(combo) == len(data)
        assert value == EnhancedBloodPressureMeasurement.from_bytes(data)
        assert data == bytes(EnhancedBloodPressureMeasurement.from_bytes(data))

    @pytest.mark.parametrize("combo", COMBINATIONS)
    def test_cuff_pressure(self, combo: tuple[bool, ...]) -> None:
        """0x2B35: 3 octets plus the flagged fields; decode(encode(v)) == v."""
        value = _icp(combo)
        data = bytes(value)
        assert 3 + _optional_size(combo) == len(data)
        assert value == EnhancedIntermediateCuffPressure.from_bytes(data)

    @pytest.mark.parametrize("combo", COMBINATIONS)
    @pytest.mark.parametrize("e2e_crc", [False, True])
    def test_record_of_each_measurement(self, combo: tuple[bool, ...], e2e_crc: bool) -> None:
        """0x2B36 around 0x2B34/0x2B35: 5 header octets, the value, 2 CRC octets if enabled."""
        for inner in (_bpm(combo), _icp(combo)):
            record = BloodPressureRecord.create(sequence_number=7, value=inner, e2e_crc=e2e_crc)
            data = bytes(record)
            assert 5 + len(bytes(inner)) + 2 * e2e_crc == len(data)
            for presence in (None, e2e_crc):
                decoded = BloodPressureRecord.from_bytes(data, e2e_crc=presence)
                assert record == decoded
                assert inner == decoded.value
                assert e2e_crc == decoded.e2e_crc_verified


def test_size_limits() -> None:
    """MIN_SIZE/MAX_SIZE are the lengths with no optional field and with all of them."""
    assert EnhancedBloodPressureMeasurement.MIN_SIZE == len(bytes(_bpm((False,) * 7)))
    assert EnhancedBloodPressureMeasurement.MAX_SIZE == len(bytes(_bpm((True,) * 7)))
    assert EnhancedIntermediateCuffPressure.MIN_SIZE == len(bytes(_icp((False,) * 7)))
    assert EnhancedIntermediateCuffPressure.MAX_SIZE == len(bytes(_icp((True,) * 7)))


class TestStrictLength:
    """Every truncation and one extra octet are rejected naming the characteristic."""

    @pytest.mark.parametrize("combo", COMBINATIONS)
    def test_measurement_truncations(self, combo: tuple[bool, ...]) -> None:
        """Each proper prefix of a 0x2B34 value raises DecodeError for 0x2B34."""
        data = bytes(_bpm(combo))
        for cut in range(len(data)):
            with pytest.raises(DecodeError) as info:
                EnhancedBloodPressureMeasurement.from_bytes(data[:cut])
            assert "0x2B34" == info.value.characteristic
            assert " missing: " in info.value.reason or " incomplete: " in info.value.reason

    @pytest.mark.parametrize("combo", COMBINATIONS)
    def test_cuff_pressure_truncations(self, combo: tuple[bool, ...]) -> None:
        """Each proper prefix of a 0x2B35 value raises DecodeError for 0x2B35."""
        data = bytes(_icp(combo))
        for cut in range(len(data)):
            with pytest.raises(DecodeError) as info:
                EnhancedIntermediateCuffPressure.from_bytes(data[:cut])
            assert "0x2B35" == info.value.characteristic

    @pytest.mark.parametrize("combo", COMBINATIONS)
    def test_extra_octet(self, combo: tuple[bool, ...]) -> None:
        """One octet past the flagged fields is rejected as 1 trailing octet."""
        for value, char in ((_bpm(combo), "0x2B34"), (_icp(combo), "0x2B35")):
            data = bytes(value) + b"\x00"
            with pytest.raises(DecodeError) as info:
                type(value).from_bytes(data)
            assert char == info.value.characteristic
            assert info.value.reason.startswith("1 trailing octet(s)")
            assert len(data) - 1 == info.value.offset

    @pytest.mark.parametrize("e2e_crc", [False, True])
    def test_record_truncations(self, e2e_crc: bool) -> None:
        """Each proper prefix of a 0x2B36 value raises DecodeError for 0x2B36."""
        data = bytes(BloodPressureRecord.create(sequence_number=1, value=_bpm((True,) * 7)))
        if e2e_crc:
            data = data + crc16_mcrf4xx(data).to_bytes(2, "little")
        for cut in range(len(data)):
            with pytest.raises(DecodeError) as info:
                BloodPressureRecord.from_bytes(data[:cut], e2e_crc=e2e_crc)
            assert "0x2B36" == info.value.characteristic

    def test_record_extra_octet(self) -> None:
        """An extra octet after a complete record (with its CRC) is rejected."""
        data = bytes(BloodPressureRecord.create(sequence_number=1, value=_bpm((False,) * 7)))
        with pytest.raises(DecodeError, match="trailing octet"):
            BloodPressureRecord.from_bytes(data + b"\x00", e2e_crc=False)
        with pytest.raises(DecodeError, match="0x2B36"):
            BloodPressureRecord.from_bytes(data + b"\x00")

    @pytest.mark.parametrize(
        ("data", "field"),
        [
            (b"", "Segmentation Header missing"),
            (b"\x03", "Sequence Number missing"),
            (b"\x03\x01", "Sequence Number incomplete"),
            (b"\x03\x01\x00\x34", "UUID incomplete"),
            (b"\x03\x01\x00\x34\x2b", "Recorded Characteristic missing"),
        ],
    )
    def test_record_header_fields_are_named(self, data: bytes, field: str) -> None:
        """A short record names its first missing field."""
        with pytest.raises(DecodeError) as info:
            BloodPressureRecord.from_bytes(data, e2e_crc=False)
        assert info.value.reason.startswith(field)


class TestHandComputedVectors:
    """Octets written out by hand from the field layout."""

    def test_measurement_all_fields_epoch_2000(self) -> None:
        """Flags 0x7E with every field; time stamp 0x2D744408 = 2024-03-01T07:45:12Z."""
        data = bytes.fromhex(
            "7e"  # flags: ts, pulse, user, status, user facing time, epoch 2000
            "7800" "5000" "5d00"  # 120, 80, 93 mmHg
            "0844742d"  # Time Stamp 762594312 s
            "4000"  # pulse 64
            "02"  # user 2
            "2500"  # status 0x0025
            "1852742d"  # User Facing Time 762597912 s (UTC+1)
        )  # fmt: skip
        m = EnhancedBloodPressureMeasurement.from_bytes(data)
        assert EnhancedBloodPressureFlags(0x7E) == m.flags
        assert (SYS, DIA, MAP) == (m.systolic, m.diastolic, m.mean_arterial_pressure)
        assert PressureUnit.MMHG == m.unit
        assert datetime(2024, 3, 1, 7, 45, 12, tzinfo=UTC) == m.time_stamp
        assert WALL_CLOCK == m.user_facing_time
        assert m.user_facing_time is not None
        assert m.user_facing_time.tzinfo is None
        assert (PULSE, 2) == (m.pulse_rate, m.user_id)
        assert STATUS == m.measurement_status
        assert m.epoch_start_2000
        assert data == bytes(_bpm((False, True, True, True, True, True, True)))

    def test_measurement_epoch_1900(self) -> None:
        """Flags 0x02 counts from 1900: 3918267912 s = 0xE98C0608 is the same instant."""
        data = bytes.fromhex("02" "7800" "5000" "5d00" "08068ce9")  # fmt: skip
        m = EnhancedBloodPressureMeasurement.from_bytes(data)
        assert STAMP_1900 == m.time_stamp_s == 3_918_267_912
        assert datetime(2024, 3, 1, 7, 45, 12, tzinfo=UTC) == m.time_stamp
        assert not m.epoch_start_2000
        assert EPOCH_1900 == m.epoch

    def test_cuff_pressure_kpa_minimal(self) -> None:
        """0x2B35 flags 0x01: one SFLOAT 16.0 kPa = mantissa 160, exponent -1 = 0xF0A0."""
        icp = EnhancedIntermediateCuffPressure.from_bytes(bytes.fromhex("01a0f0"))
        assert PressureUnit.KPA == icp.unit
        assert CUFF == icp.cuff_pressure
        assert icp.time_stamp is None
        assert icp.user_facing_time is None

    def test_rfu_flag_bit_is_kept(self) -> None:
        """Flag bit 7 (RFU) adds no field and survives the round trip."""
        data = bytes.fromhex("80" "7800" "5000" "5d00")  # fmt: skip
        assert data == bytes(EnhancedBloodPressureMeasurement.from_bytes(data))

    def test_record_with_crc(self) -> None:
        """Header 0x03, sequence 0x0102, UUID 0x2B34, 0x2B34 value, CRC-16/MCRF4XX 0xEBDE."""
        data = bytes.fromhex("03" "0201" "342b" "00" "7800" "5000" "5d00" "deeb")  # fmt: skip
        r = BloodPressureRecord.from_bytes(data)
        assert (True, True, 0) == (r.first_segment, r.last_segment, r.rolling_segment_counter)
        assert (0x0102, 0x2B34, 0xEBDE) == (r.sequence_number, r.recorded_uuid, r.e2e_crc)
        assert r.e2e_crc_verified
        assert _bpm((False,) * 7) == r.value
        assert data == bytes(r)

    def test_record_of_a_bps_1_0_measurement(self) -> None:
        """A record may hold a 0x2A35 value; it is decoded with the BPS 1.0 rules."""
        inner = bytes.fromhex("00" "7800" "5000" "5d00")  # fmt: skip
        r = BloodPressureRecord.from_bytes(bytes.fromhex("070000352a") + inner)
        assert 1 == r.rolling_segment_counter
        assert BloodPressureMeasurement.from_bytes(inner) == r.value
        assert r.e2e_crc is None


class TestRecordRules:
    """E2E-CRC presence, verification and segmentation of 0x2B36."""

    VALUE = bytes(_bpm((False,) * 7))

    def _record(self, header: int, uuid: int = 0x2B34, tail: bytes = b"") -> bytes:
        return bytes((header,)) + b"\x05\x00" + uuid.to_bytes(2, "little") + self.VALUE + tail

    def test_bad_crc_is_rejected(self) -> None:
        """A complete record whose CRC does not match is refused, the offset at the CRC."""
        data = self._record(0x03)
        crc = crc16_mcrf4xx(data) ^ 0x0001
        with pytest.raises(DecodeError, match="E2E-CRC does not match") as info:
            BloodPressureRecord.from_bytes(data + crc.to_bytes(2, "little"))
        assert len(data) == info.value.offset

    def test_feature_bit_contradicting_the_value_is_rejected(self) -> None:
        """e2e_crc=True on a record without CRC takes its last 2 octets as a failing CRC."""
        with pytest.raises(DecodeError, match="E2E-CRC does not match"):
            BloodPressureRecord.from_bytes(self._record(0x03), e2e_crc=True)

    def test_undecodable_recorded_value_is_rejected_with_offset(self) -> None:
        """A recorded 0x2B34 that announces a missing Time Stamp names it, offset in 0x2B36."""
        data = bytes.fromhex("03" "0000" "342b" "02" "7800" "5000" "5d00")  # fmt: skip
        with pytest.raises(DecodeError) as info:
            BloodPressureRecord.from_bytes(data, e2e_crc=False)
        assert info.value.reason.startswith("recorded 0x2B34: Time Stamp missing")
        assert 5 + 7 == info.value.offset

    def test_first_segment_keeps_raw_octets(self) -> None:
        """A first-only segment carries no CRC and is not decoded."""
        r = BloodPressureRecord.from_bytes(self._record(0x01)[:8])
        assert (True, False) == (r.first_segment, r.last_segment)
        assert self.VALUE[:3] == r.recorded
        assert r.value is None
        assert r.e2e_crc is None

    def test_last_segment_needs_the_feature_bit(self) -> None:
        """Without Blood Pressure Feature bit 6, a last segment's CRC presence is unknowable."""
        data = bytes.fromhex("0a" "0500" "342b" "5d000102")  # fmt: skip
        with pytest.raises(DecodeError, match="pass Blood Pressure Feature bit 6"):
            BloodPressureRecord.from_bytes(data)
        r = BloodPressureRecord.from_bytes(data, e2e_crc=True)
        assert (2, bytes.fromhex("5d00"), 0x0201) == (
            r.rolling_segment_counter,
            r.recorded,
            r.e2e_crc,
        )
        assert not r.e2e_crc_verified
        assert r.value is None

    def test_unknown_uuid_is_kept_raw(self) -> None:
        """A complete record of an unknown UUID is kept raw; its CRC presence must be given."""
        data = self._record(0x03, uuid=0x2A49)
        with pytest.raises(DecodeError, match="E2E-CRC presence unknown"):
            BloodPressureRecord.from_bytes(data)
        r = BloodPressureRecord.from_bytes(data, e2e_crc=False)
        assert (0x2A49, self.VALUE, None) == (r.recorded_uuid, r.recorded, r.value)

    @pytest.mark.parametrize(
        ("kwargs", "message"),
        [
            ({"segmentation_header": 0x100}, "Segmentation Header"),
            ({"sequence_number": 0x10000}, "Sequence Number"),
            ({"recorded_uuid": -1}, "UUID"),
            ({"recorded": b""}, "at least one"),
            ({"e2e_crc": 0x10000}, "E2E-CRC"),
            ({"segmentation_header": 0x01, "e2e_crc": 0}, "last segment"),
        ],
    )
    def test_invalid_records_are_refused(self, kwargs: dict[str, object], message: str) -> None:
        """Out-of-range or inconsistent record fields raise ValueError."""
        fields: dict[str, object] = {
            "segmentation_header": 0x03,
            "sequence_number": 0,
            "recorded_uuid": 0x2B34,
            "recorded": self.VALUE,
            "e2e_crc": None,
        }
        fields.update(kwargs)
        with pytest.raises(ValueError, match=message):
            BloodPressureRecord(**fields)  # type: ignore[arg-type]


class TestTimesAndConstruction:
    """Datetime views, the epoch helper, and constructor checks."""

    def test_uint32_limits_from_each_epoch(self) -> None:
        """0xFFFFFFFF s is 2036-02-07T06:28:15Z from 1900 and 2136-02-07T06:28:15Z from 2000."""
        top = 0xFFFF_FFFF
        old = EnhancedIntermediateCuffPressure.create(
            unit=PressureUnit.MMHG, cuff_pressure=CUFF, epoch_start_2000=False, time_stamp_s=top
        )
        new = EnhancedIntermediateCuffPressure.create(
            unit=PressureUnit.MMHG, cuff_pressure=CUFF, time_stamp_s=top
        )
        assert datetime(2036, 2, 7, 6, 28, 15, tzinfo=UTC) == old.time_stamp
        assert datetime(2136, 2, 7, 6, 28, 15, tzinfo=UTC) == new.time_stamp

    def test_seconds_since_epoch_inverts_the_views(self) -> None:
        """Aware moments convert through UTC; naive ones are taken as the wall clock."""
        paris = timezone(timedelta(hours=1))
        moment = datetime(2024, 3, 1, 8, 45, 12, tzinfo=paris)
        assert STAMP_2000 == seconds_since_epoch(moment, epoch_start_2000=True)
        assert STAMP_1900 == seconds_since_epoch(moment, epoch_start_2000=False)
        assert FACING_2000 == seconds_since_epoch(WALL_CLOCK, epoch_start_2000=True)
        assert 0 == seconds_since_epoch(EPOCH_2000, epoch_start_2000=True)
        with pytest.raises(ValueError, match="uint32"):
            seconds_since_epoch(EPOCH_1900, epoch_start_2000=True)
        with pytest.raises(ValueError, match="whole seconds"):
            seconds_since_epoch(EPOCH_2000 + timedelta(microseconds=1), epoch_start_2000=True)

    @pytest.mark.parametrize(
        ("flags", "kwargs", "message"),
        [
            (0x100, {}, "one octet"),
            (0x00, {"time_stamp_s": 1}, "TIME_STAMP_PRESENT"),
            (0x20, {}, "USER_FACING_TIME_PRESENT"),
            (0x08, {"user_id": 256}, "uint8"),
            (0x02, {"time_stamp_s": 1 << 32}, "uint32"),
        ],
    )
    def test_inconsistent_values_are_refused(
        self, flags: int, kwargs: dict[str, object], message: str
    ) -> None:
        """Flags that disagree with fields, or fields out of range, raise ValueError."""
        with pytest.raises(ValueError, match=message):
            EnhancedIntermediateCuffPressure(
                EnhancedBloodPressureFlags(flags),
                CUFF,
                **kwargs,  # type: ignore[arg-type]
            )

    def test_repr_holds_no_values(self) -> None:
        """Readings, times and recorded octets never appear in a repr."""
        m = _bpm((False, True, True, True, True, True, True))
        r = BloodPressureRecord.create(sequence_number=3, value=m, e2e_crc=True)
        for text in (repr(m), repr(r), repr(_icp((True,) * 7))):
            for secret in ("120", "762594312", "MedFloat16", "64", "recorded=", "e2e_crc="):
                assert secret not in text


class TestFuzz:
    """Random octets decode to a value that re-encodes identically, or raise DecodeError."""

    @settings(max_examples=400, deadline=None)
    @given(st.binary(max_size=30))
    def test_measurements(self, data: bytes) -> None:
        """0x2B34 and 0x2B35 accept or reject; accepted values round-trip."""
        for kind in (EnhancedBloodPressureMeasurement, EnhancedIntermediateCuffPressure):
            try:
                value = kind.from_bytes(data)
            except DecodeError:
                continue
            assert data == bytes(value)

    @settings(max_examples=400, deadline=None)
    @given(
        st.integers(0, 0xFF),
        st.sampled_from([0x2B34, 0x2B35, 0x2A35, 0x2A49]),
        st.binary(max_size=30),
        st.sampled_from([None, False, True]),
    )
    def test_records(self, header: int, uuid: int, body: bytes, e2e_crc: bool | None) -> None:
        """0x2B36 with any header and body accepts or rejects; accepted ones round-trip."""
        data = bytes((header,)) + b"\x01\x00" + uuid.to_bytes(2, "little") + body
        try:
            record = BloodPressureRecord.from_bytes(data, e2e_crc=e2e_crc)
        except DecodeError:
            return
        assert data == bytes(record)
        if record.complete and uuid != 0x2A49:
            assert record.value is not None


class TestCli:
    """`homehub decode` knows the three characteristics."""

    def test_decode_enhanced_measurement_json(self) -> None:
        """The registry renders every 0x2B34 field with snake_case names."""
        data = bytes(_bpm((False, True, True, True, True, True, True)))
        assert {
            "flags": 0x7E,
            "unit": "mmHg",
            "systolic": 120.0,
            "diastolic": 80.0,
            "mean_arterial_pressure": 93.0,
            "time_stamp": {
                "seconds_since_epoch": STAMP_2000,
                "iso": "2024-03-01T07:45:12+00:00",
            },
            "pulse_rate": 64.0,
            "user_id": 2,
            "measurement_status": 0x25,
            "measurement_status_detail": {
                "body_movement_detected": True,
                "cuff_too_loose": False,
                "irregular_pulse_detected": True,
                "pulse_rate_range": "within_range",
                "improper_measurement_position": True,
                "rfu_bits": 0,
            },
            "user_facing_time": {
                "seconds_since_epoch": FACING_2000,
                "iso": "2024-03-01T08:45:12",
            },
            "epoch_start_2000": True,
        } == decode("0x2B34", data)

    def test_cli_prints_json(self, capsys: pytest.CaptureFixture[str]) -> None:
        """`homehub decode 0x2B35 01a0f0` exits 0 with the JSON on stdout."""
        assert 0 == main(["decode", "0x2B35", "01a0f0"])
        out, err = capsys.readouterr()
        assert "" == err
        assert {
            "flags": 1,
            "unit": "kPa",
            "cuff_pressure": 16.0,
            "time_stamp": None,
            "pulse_rate": None,
            "user_id": None,
            "measurement_status": None,
            "measurement_status_detail": None,
            "user_facing_time": None,
            "epoch_start_2000": False,
        } == json.loads(out)

    def test_cli_decodes_a_record(self, capsys: pytest.CaptureFixture[str]) -> None:
        """`homehub decode 0x2B36 HEX` shows the header, the CRC state and the recorded value."""
        assert 0 == main(["decode", "2b36", "03 0201 342b 00 7800 5000 5d00 deeb"])
        out, _ = capsys.readouterr()
        got = json.loads(out)
        assert {
            "segmentation_header": 3,
            "first_segment": True,
            "last_segment": True,
            "rolling_segment_counter": 0,
            "sequence_number": 0x0102,
            "uuid": "0x2B34",
            "recorded_hex": "00780050005d00",
            "e2e_crc": 0xEBDE,
            "e2e_crc_verified": True,
        } == {k: v for k, v in got.items() if k != "recorded"}
        assert 120.0 == got["recorded"]["systolic"]

    @pytest.mark.parametrize("char", ["0x2B34", "0x2B35", "0x2B36"])
    def test_cli_rejects_a_truncated_value(
        self, char: str, capsys: pytest.CaptureFixture[str]
    ) -> None:
        """A truncated value exits 2 with a reason naming the characteristic."""
        assert 2 == main(["decode", char, "0278"])
        out, err = capsys.readouterr()
        assert "" == out
        assert err.startswith(f"homehub: invalid {char}")
