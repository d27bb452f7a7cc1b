"""Tests of drivers.gatt_time: Date Time, Current Time, Local Time Information."""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable

import pytest
from hypothesis import given
from hypothesis import strategies as st

from agent.errors import DecodeError
from drivers.gatt_time import (
    AdjustReason,
    CurrentTime,
    DateTime,
    DayOfWeek,
    LocalTimeInformation,
)


class TestDateTime:
    """Date Time 0x2A08."""

    def test_decode(self) -> None:
        """7 octets decode to raw fields and a naive datetime."""
        value = DateTime.from_bytes(bytes.fromhex("e707081b0e1e2d"))
        assert DateTime(2023, 8, 27, 14, 30, 45) == value
        assert dt.datetime(2023, 8, 27, 14, 30, 45) == value.to_datetime()  # noqa: DTZ001
        assert value.problem is None

    @pytest.mark.parametrize(
        ("fields", "problem"),
        [
            ((0, 0, 0, 18, 26, 32), "date unknown (year, month or day is 0)"),
            ((2024, 0, 5, 0, 0, 0), "date unknown (year, month or day is 0)"),
            ((4, 5, 6, 7, 8, 9), "year outside 1582..9999"),
            ((2024, 13, 1, 0, 0, 0), "month outside 1..12"),
            ((2024, 1, 1, 24, 0, 0), "time of day out of range"),
            ((2024, 1, 1, 0, 60, 0), "time of day out of range"),
            ((9999, 2, 31, 23, 59, 59), "day does not exist in its month"),
            ((2023, 2, 29, 0, 0, 0), "day does not exist in its month"),
        ],
    )
    def test_unusable_values_decode_raw(self, fields: tuple[int, ...], problem: str) -> None:
        """Unknown and out-of-range fields decode raw; to_datetime is None with a reason."""
        value = DateTime.from_bytes(bytes(DateTime(*fields)))
        assert fields == tuple(value.as_dict().values())
        assert problem == value.problem
        assert value.to_datetime() is None
        assert not value.is_usable

    def test_leap_day(self) -> None:
        """29 February of a leap year is a real date."""
        assert DateTime(2024, 2, 29, 0, 0, 0).is_usable

    @pytest.mark.parametrize("length", [0, 6, 8])
    def test_wrong_length(self, length: int) -> None:
        """Anything but 7 octets is rejected naming 0x2A08."""
        with pytest.raises(DecodeError) as info:
            DateTime.from_bytes(bytes(length))
        assert info.value.characteristic == "0x2A08"

    @given(st.binary(min_size=7, max_size=7))
    def test_round_trip(self, data: bytes) -> None:
        """Every 7-octet value decodes and re-encodes to itself."""
        assert data == bytes(DateTime.from_bytes(data))

    def test_from_datetime(self) -> None:
        """A naive datetime encodes; an aware one is refused."""
        assert bytes.fromhex("e8070b1d170839") == bytes(
            DateTime.from_datetime(dt.datetime(2024, 11, 29, 23, 8, 57))  # noqa: DTZ001
        )
        with pytest.raises(ValueError, match="naive"):
            DateTime.from_datetime(dt.datetime(2024, 1, 1, tzinfo=dt.UTC))

    def test_repr_hides_fields(self) -> None:
        """The repr shows no date or time."""
        assert repr(DateTime(2024, 1, 2, 3, 4, 5)) == "DateTime()"


class TestCurrentTime:
    """Current Time 0x2A2B."""

    def test_decode(self) -> None:
        """10 octets: date time, weekday, fractions and adjust reason."""
        value = CurrentTime.from_bytes(bytes.fromhex("e8070b1d17083905800a"))
        assert DateTime(2024, 11, 29, 23, 8, 57) == value.date_time
        assert DayOfWeek.FRIDAY is value.weekday
        assert value.fractions256 == 128
        assert (
            value.adjust_reason
        ) == AdjustReason.EXTERNAL_REFERENCE_TIME_UPDATE | AdjustReason.CHANGE_OF_DST
        assert dt.datetime(2024, 11, 29, 23, 8, 57, 500_000) == value.to_datetime()  # noqa: DTZ001

    def test_raw_fields_kept(self) -> None:
        """Feb 31, weekday 9 and RFU adjust bits decode raw and round-trip."""
        data = bytes.fromhex("0f27021f173b3b09fff2")
        value = CurrentTime.from_bytes(data)
        assert value.weekday is None
        assert value.problem == "day does not exist in its month"
        assert value.to_datetime() is None
        assert data == bytes(value)

    def test_from_datetime(self) -> None:
        """from_datetime fills weekday and fraction."""
        value = CurrentTime.from_datetime(
            dt.datetime(2024, 11, 29, 23, 8, 57, 500_000),  # noqa: DTZ001
            AdjustReason.MANUAL_TIME_UPDATE,
        )
        assert bytes.fromhex("e8070b1d170839058001") == bytes(value)

    @given(st.binary(min_size=10, max_size=10))
    def test_round_trip(self, data: bytes) -> None:
        """Every 10-octet value decodes and re-encodes to itself."""
        assert data == bytes(CurrentTime.from_bytes(data))

    @given(
        st.datetimes(
            min_value=dt.datetime(1582, 1, 1),  # noqa: DTZ001
            max_value=dt.datetime(9999, 12, 31, 23, 59, 59, 999_999),  # noqa: DTZ001
        ),
        st.integers(0, 0xFF),
    )
    def test_from_datetime_round_trip(self, value: dt.datetime, reason: int) -> None:
        """A wall-clock time encodes and decodes to itself, less than 1/256 s below it (the
        fraction is truncated), with its weekday and the Adjust Reason as given."""
        decoded = CurrentTime.from_bytes(bytes(CurrentTime.from_datetime(value, reason)))
        back = decoded.to_datetime()
        assert back is not None
        assert dt.timedelta(0) <= value - back <= dt.timedelta(microseconds=3906)  # < 3906.25
        assert value.isoweekday() == decoded.weekday
        assert reason == decoded.adjust_reason

    @pytest.mark.parametrize("length", [0, 7, 9, 11])
    def test_wrong_length(self, length: int) -> None:
        """Anything but 10 octets is rejected naming 0x2A2B."""
        with pytest.raises(DecodeError) as info:
            CurrentTime.from_bytes(bytes(length))
        assert info.value.characteristic == "0x2A2B"


class TestLocalTimeInformation:
    """Local Time Information 0x2A0F."""

    @pytest.mark.parametrize(
        ("data", "tz_min", "dst_min", "problem"),
        [
            ("0404", 60, 60, None),
            ("d000", -720, 0, None),
            ("3808", 840, 120, None),
            ("80ff", None, None, "time zone or DST offset unknown"),
            ("3900", None, 0, "time zone outside -48..+56 quarter hours"),
            ("0003", 0, None, "DST offset is not a defined code"),
        ],
    )
    def test_decode(
        self, data: str, tz_min: int | None, dst_min: int | None, problem: str | None
    ) -> None:
        """Offsets in minutes, None when unknown or undefined, raw kept for round trip."""
        value = LocalTimeInformation.from_bytes(bytes.fromhex(data))
        assert (tz_min, dst_min, problem) == (
            value.time_zone_offset_min,
            value.dst_offset_min,
            value.problem,
        )
        assert bytes.fromhex(data) == bytes(value)

    def test_wrong_length(self) -> None:
        """Anything but 2 octets is rejected naming 0x2A0F."""
        with pytest.raises(DecodeError) as info:
            LocalTimeInformation.from_bytes(b"\x00")
        assert (
            info.value.characteristic,
            info.value.reason,
        ) == ("0x2A0F", "DST Offset missing: require 2 octets, got 1")


@pytest.mark.parametrize(
    ("build", "message"),
    [
        (lambda: DateTime(0x10000, 1, 1, 0, 0, 0), "uint16"),
        (lambda: DateTime(2024, 256, 1, 0, 0, 0), "uint8"),
        (lambda: DateTime.from_datetime(dt.datetime(1200, 1, 1)), "1582"),  # noqa: DTZ001
        (lambda: CurrentTime(DateTime(2024, 1, 1, 0, 0, 0), 1, 256, AdjustReason(0)), "uint8"),
        (lambda: LocalTimeInformation(-129, 0), "fit"),
        (lambda: LocalTimeInformation(0, 256), "fit"),
    ],
)
def test_construction_validates(build: Callable[[], object], message: str) -> None:
    """Fields that do not fit their wire type are refused with ValueError."""
    with pytest.raises(ValueError, match=message):
        build()
