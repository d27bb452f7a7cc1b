"""Tests of drivers.battery: Battery Level 0x2A19."""

from __future__ import annotations

import pytest

from agent.errors import DecodeError
from drivers.battery import BatteryLevel


@pytest.mark.parametrize("level", [0, 15, 100])
def test_valid_levels_round_trip(level: int) -> None:
    """0-100 % decode to the same percentage and re-encode."""
    value = BatteryLevel.from_bytes(bytes((level,)))
    assert value.level_pct == level
    assert bytes(value) == bytes((level,))


@pytest.mark.parametrize("level", [101, 255])
def test_above_100_rejected(level: int) -> None:
    """Values above 100 % are rejected naming 0x2A19."""
    with pytest.raises(DecodeError) as info:
        BatteryLevel.from_bytes(bytes((level,)))
    assert (info.value.characteristic, info.value.reason) == ("0x2A19", "Battery Level above 100 %")


@pytest.mark.parametrize("data", [b"", b"\x10\x00"])
def test_wrong_length_rejected(data: bytes) -> None:
    """Anything but one octet is rejected."""
    with pytest.raises(DecodeError):
        BatteryLevel.from_bytes(data)


def test_construction_validates() -> None:
    """A level above 100 % cannot be built for encoding either."""
    with pytest.raises(ValueError, match=r"outside 0\.\.100"):
        BatteryLevel(101)
