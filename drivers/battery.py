"""Battery Service 0x180F: Battery Level 0x2A19 (GATT XML battery_level)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar, Final, Self

from drivers.errors import DecodeError
from drivers.wire import check_length

#: Battery Level is a percentage; 101-255 are not defined (spec facts §7).
BATTERY_LEVEL_MAX_PCT: Final = 100


@dataclass(frozen=True, slots=True)
class BatteryLevel:
    """Battery Level 0x2A19: one uint8, 0-100 %; larger values are rejected."""

    level_pct: int

    UUID: ClassVar[int] = 0x2A19
    CHARACTERISTIC: ClassVar[str] = "0x2A19"

    def __post_init__(self) -> None:
        if not 0 <= self.level_pct <= BATTERY_LEVEL_MAX_PCT:
            raise ValueError("Battery Level outside 0..100 %")

    @classmethod
    def from_bytes(cls, data: bytes) -> Self:
        """Decode exactly one octet.

        Raises:
            DecodeError: not exactly one octet, or above 100 %.
        """
        check_length(cls.CHARACTERISTIC, data, [("Battery Level", 1)])
        if data[0] > BATTERY_LEVEL_MAX_PCT:
            raise DecodeError(cls.CHARACTERISTIC, "Battery Level above 100 %", 0)
        return cls(data[0])

    def __bytes__(self) -> bytes:
        """The octet as sent on air."""
        return bytes((self.level_pct,))
