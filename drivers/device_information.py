"""Device Information Service 0x180A characteristics (DIS 1.1, GATT XML).

- The six UTF-8 strings (manufacturer, model, serial, hardware/firmware/software
  revision): :class:`DisString`.
- System ID 0x2A23: :class:`SystemId`.
- PnP ID 0x2A50: :class:`PnpId`.

Decisions:

- **Strings**: no length prefix, no terminator on the wire. Trailing NUL and space
  octets (firmware sending a fixed C buffer) are split off into ``padding`` and kept,
  so the value round-trips. What remains must be strict UTF-8 without control
  characters (an embedded NUL followed by more text is garbage we cannot explain),
  else :class:`~drivers.errors.DecodeError`. The only length bound is ATT's 512 octets
  (Core Vol 3 Part F §3.2.9): DIS sets none, and we must not cut a serial number.
- **System ID byte order**: the wire holds Manufacturer Identifier (uint40) then
  OUI (uint24), both little-endian, so the canonical EUI-64 (OUI first, most
  significant octet first) is the **byte-reversed** wire value:
  wire ``74 E8 FF FE FF 05 1C 00`` is EUI-64 ``00-1C-05-FF-FE-FF-E8-74``
  (OUI 00-1C-05, derived from MAC 00-1C-05-FF-E8-74 with FF-FE inserted).
  :attr:`SystemId.eui64` uses that canonical order. The HL7 PHD IG's example device
  writes the wire order instead (``74-E8-FF-FE-FF-05-1C-00``); it is available as
  :attr:`SystemId.wire_order_hex` for anyone who must match that example.
- System ID and serial numbers identify a device that identifies a patient: they
  never appear in reprs.
"""

from __future__ import annotations

import enum
import unicodedata
from dataclasses import dataclass, field
from typing import ClassVar, Self

from drivers.errors import DecodeError
from drivers.wire import MAX_ATTRIBUTE_VALUE_LEN, Cursor, check_length

_PADDING_OCTETS = b"\x00 "


class DisStringCharacteristic(enum.IntEnum):
    """The UTF-8 string characteristics of DIS, by UUID."""

    MODEL_NUMBER = 0x2A24
    SERIAL_NUMBER = 0x2A25
    FIRMWARE_REVISION = 0x2A26
    HARDWARE_REVISION = 0x2A27
    SOFTWARE_REVISION = 0x2A28
    MANUFACTURER_NAME = 0x2A29

    @property
    def characteristic(self) -> str:
        """The UUID as used in errors and the registry, e.g. ``"0x2A29"``."""
        return f"0x{self.value:04X}"


@dataclass(frozen=True, slots=True)
class DisString:
    """One DIS string value: the text and the NUL/space padding that followed it."""

    characteristic: DisStringCharacteristic
    value: str = field(repr=False)
    padding: bytes = field(default=b"", repr=False)

    def __post_init__(self) -> None:
        if self.padding.strip(_PADDING_OCTETS):
            raise ValueError("DIS string padding may hold only NUL and space octets")
        problem = _text_problem(self.value)
        if problem is not None:
            raise ValueError(f"DIS string: {problem}")
        if len(bytes(self)) > MAX_ATTRIBUTE_VALUE_LEN:
            raise ValueError("DIS string longer than an ATT value can be")

    @classmethod
    def from_bytes(cls, characteristic: DisStringCharacteristic, data: bytes) -> Self:
        """Decode a DIS string value.

        Raises:
            DecodeError: longer than 512 octets, not UTF-8, or holding a control
                character (including a NUL followed by more text).
        """
        name = characteristic.characteristic
        if len(data) > MAX_ATTRIBUTE_VALUE_LEN:
            raise DecodeError(name, f"longer than {MAX_ATTRIBUTE_VALUE_LEN} octets")
        text = data.rstrip(_PADDING_OCTETS)
        try:
            value = text.decode("utf-8", errors="strict")
        except UnicodeDecodeError as exc:
            raise DecodeError(name, "not valid UTF-8", offset=exc.start) from None
        problem = _text_problem(value)
        if problem is not None:
            raise DecodeError(name, problem)
        return cls(characteristic, value, data[len(text) :])

    def __bytes__(self) -> bytes:
        """The value as read from the device (text then padding)."""
        return self.value.encode("utf-8") + self.padding


def _text_problem(value: str) -> str | None:
    """Why ``value`` is not an acceptable DIS string, or None."""
    if any(unicodedata.category(ch) == "Cc" for ch in value):
        return "control character inside the string"
    if value != value.rstrip("\x00 "):
        return "trailing NUL or space belongs in padding"
    return None


@dataclass(frozen=True, slots=True)
class SystemId:
    """System ID 0x2A23: Manufacturer Identifier (uint40) + OUI (uint24), 8 octets.

    See the module docstring for the byte-order convention of :attr:`eui64`.
    """

    manufacturer_identifier: int = field(repr=False)
    organizationally_unique_identifier: int = field(repr=False)

    UUID: ClassVar[int] = 0x2A23
    CHARACTERISTIC: ClassVar[str] = "0x2A23"
    SIZE: ClassVar[int] = 8

    def __post_init__(self) -> None:
        if not 0 <= self.manufacturer_identifier < 1 << 40:
            raise ValueError("Manufacturer Identifier does not fit 40 bits")
        if not 0 <= self.organizationally_unique_identifier < 1 << 24:
            raise ValueError("OUI does not fit 24 bits")

    @classmethod
    def from_bytes(cls, data: bytes) -> Self:
        """Decode exactly 8 octets.

        Raises:
            DecodeError: not exactly 8 octets.
        """
        layout = [("Manufacturer Identifier", 5), ("Organizationally Unique Identifier", 3)]
        check_length(cls.CHARACTERISTIC, data, layout)
        cursor = Cursor(cls.CHARACTERISTIC, data)
        return cls(cursor.uint(5, layout[0][0]), cursor.uint(3, layout[1][0]))

    @classmethod
    def from_eui64(cls, eui64: str) -> Self:
        """Parse a canonical EUI-64 (``"00-1C-05-FF-FE-FF-E8-74"``, separators optional)."""
        digits = eui64.replace("-", "").replace(":", "")
        if len(digits) != 16:
            raise ValueError("an EUI-64 has 16 hex digits")
        value = int(digits, 16)
        return cls(value & ((1 << 40) - 1), value >> 40)

    def __bytes__(self) -> bytes:
        """The 8 octets as sent on air."""
        return self.manufacturer_identifier.to_bytes(
            5, "little"
        ) + self.organizationally_unique_identifier.to_bytes(3, "little")

    @property
    def eui64(self) -> str:
        """Canonical EUI-64, OUI first, upper-case, dash-separated (the reversed wire value)."""
        octets = bytes(self)[::-1]
        return "-".join(f"{b:02X}" for b in octets)

    @property
    def wire_order_hex(self) -> str:
        """The 8 octets in wire order as upper-case hex (the HL7 PHD IG example's form)."""
        return bytes(self).hex().upper()


class VendorIdSource(enum.IntEnum):
    """PnP ID Vendor ID Source (GATT XML pnp_id)."""

    BLUETOOTH_SIG = 1
    USB_IF = 2


@dataclass(frozen=True, slots=True)
class PnpId:
    """PnP ID 0x2A50: Vendor ID Source u8, Vendor ID u16, Product ID u16, Product Version u16.

    The Vendor ID Source is kept raw (values other than 1 and 2 are reserved).
    """

    vendor_id_source: int
    vendor_id: int
    product_id: int
    product_version: int

    UUID: ClassVar[int] = 0x2A50
    CHARACTERISTIC: ClassVar[str] = "0x2A50"

    def __post_init__(self) -> None:
        if not 0 <= self.vendor_id_source <= 0xFF:
            raise ValueError("Vendor ID Source does not fit uint8")
        for value in (self.vendor_id, self.product_id, self.product_version):
            if not 0 <= value <= 0xFFFF:
                raise ValueError("PnP ID field does not fit uint16")

    @classmethod
    def from_bytes(cls, data: bytes) -> Self:
        """Decode exactly 7 octets.

        Raises:
            DecodeError: not exactly 7 octets.
        """
        layout = [("Vendor ID Source", 1), ("Vendor ID", 2), ("Product ID", 2)]
        layout.append(("Product Version", 2))
        check_length(cls.CHARACTERISTIC, data, layout)
        cursor = Cursor(cls.CHARACTERISTIC, data)
        return cls(
            cursor.u8("Vendor ID Source"),
            cursor.u16("Vendor ID"),
            cursor.u16("Product ID"),
            cursor.u16("Product Version"),
        )

    def __bytes__(self) -> bytes:
        """The 7 octets as sent on air."""
        return (
            bytes((self.vendor_id_source,))
            + self.vendor_id.to_bytes(2, "little")
            + self.product_id.to_bytes(2, "little")
            + self.product_version.to_bytes(2, "little")
        )
