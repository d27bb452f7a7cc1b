"""Encoders for the wire types the emulated devices send, written from the specifications.

Deliberately independent of ``drivers/`` (the hub's decoders): an emulator that shared the
hub's code could not catch the hub's mistakes.

- IEEE 11073-20601 SFLOAT (16 bit), as the Bluetooth SIG health services use it (GATT
  Specification Supplement "medfloat16"; ble-spec-facts §1.1): ``value = mantissa ×
  10^exponent``, exponent in bits 12-15 (signed 4-bit, −8…+7), mantissa in bits 0-11 (signed
  12-bit), little-endian on the wire. With exponent 0 the mantissas 0x7FE…0x802 are the
  special values (NaN 0x07FF, NRes 0x0800, ±INFINITY 0x07FE/0x0802, reserved 0x0801), so an
  encoder keeps ordinary mantissas within −2046…+2045.
- Date Time 0x2A08 (GATT XML ``date_time``): year uint16 (1582…9999, 0 = unknown), month
  (1…12, 0 = unknown), day (1…31, 0 = unknown), hours, minutes, seconds; 7 octets.
"""

from __future__ import annotations

from dataclasses import dataclass
from decimal import Decimal
from typing import Final

SFLOAT_NAN: Final = bytes.fromhex("ff07")  # 0x07FF, little-endian
SFLOAT_NRES: Final = bytes.fromhex("0008")  # 0x0800
SFLOAT_POSITIVE_INFINITY: Final = bytes.fromhex("fe07")  # 0x07FE
SFLOAT_NEGATIVE_INFINITY: Final = bytes.fromhex("0208")  # 0x0802

SFLOAT_MANTISSA_MIN: Final = -2046
SFLOAT_MANTISSA_MAX: Final = 2045
SFLOAT_EXPONENT_MIN: Final = -8
SFLOAT_EXPONENT_MAX: Final = 7


def sfloat(value: Decimal | int) -> bytes:
    """Encode ``value`` as an SFLOAT, keeping the precision its decimal form states.

    ``Decimal("97.5")`` is mantissa 975, exponent −1; ``Decimal("2.00")`` keeps two decimals
    (mantissa 200, exponent −2), as the HL7 PHD IG wants precision carried. A value whose
    mantissa does not fit is rescaled only while that stays exact (``20000`` → 2000e1).

    Raises:
        ValueError: not finite, or not exactly representable as an SFLOAT.
    """
    number = Decimal(value)
    if not number.is_finite():
        raise ValueError("use SFLOAT_NAN or the infinities for special values")
    sign, digits, exponent = number.as_tuple()
    assert isinstance(exponent, int)  # finite
    mantissa = int("".join(map(str, digits)) or "0") * (-1 if sign else 1)
    while not SFLOAT_MANTISSA_MIN <= mantissa <= SFLOAT_MANTISSA_MAX and mantissa % 10 == 0:
        mantissa //= 10
        exponent += 1
    while exponent > SFLOAT_EXPONENT_MAX and abs(mantissa) * 10 <= SFLOAT_MANTISSA_MAX:
        mantissa *= 10
        exponent -= 1
    if not SFLOAT_MANTISSA_MIN <= mantissa <= SFLOAT_MANTISSA_MAX:
        raise ValueError("mantissa does not fit an SFLOAT exactly")
    if not SFLOAT_EXPONENT_MIN <= exponent <= SFLOAT_EXPONENT_MAX:
        raise ValueError("exponent outside the SFLOAT range -8..7")
    raw = ((exponent & 0x0F) << 12) | (mantissa & 0x0FFF)
    return raw.to_bytes(2, "little")


@dataclass(frozen=True, slots=True)
class DateTime:
    """Date Time 0x2A08: a device's local clock reading, no time zone (0 = unknown field)."""

    year: int
    month: int
    day: int
    hours: int = 0
    minutes: int = 0
    seconds: int = 0

    def __post_init__(self) -> None:
        if not (self.year == 0 or 1582 <= self.year <= 9999):
            raise ValueError("year must be 1582..9999 or 0 (unknown)")
        if not 0 <= self.month <= 12:
            raise ValueError("month must be 1..12 or 0 (unknown)")
        if not 0 <= self.day <= 31:
            raise ValueError("day must be 1..31 or 0 (unknown)")
        if not (0 <= self.hours <= 23 and 0 <= self.minutes <= 59 and 0 <= self.seconds <= 59):
            raise ValueError("time of day out of range")

    def __bytes__(self) -> bytes:
        """The 7 octets on the wire."""
        return self.year.to_bytes(2, "little") + bytes(
            (self.month, self.day, self.hours, self.minutes, self.seconds)
        )


def system_id(manufacturer_identifier: int, organizationally_unique_identifier: int) -> bytes:
    """System ID 0x2A23 (GATT XML ``system_id``): Manufacturer Identifier uint40, then OUI
    uint24, both little-endian; 8 octets.

    Raises:
        ValueError: a part does not fit its width.
    """
    if not 0 <= manufacturer_identifier < 1 << 40:
        raise ValueError("Manufacturer Identifier is 40 bits")
    if not 0 <= organizationally_unique_identifier < 1 << 24:
        raise ValueError("OUI is 24 bits")
    return manufacturer_identifier.to_bytes(5, "little") + (
        organizationally_unique_identifier.to_bytes(3, "little")
    )
