"""Pieces every emulated peripheral shares: advertising data and the Device Information Service.

- Advertising data is a sequence of AD structures ``length, type, data`` (Core Spec Vol 3
  Part C §11; types from the Core Specification Supplement Part A): Flags (§1.3), Complete
  Local Name (§1.2), Complete List of 16-bit Service UUIDs (§1.1). A legacy advertising PDU
  carries at most 31 octets (Vol 6 Part B §2.3.1.1).
- The Device Information Service 0x180A (DIS 1.1) with its read-only characteristics, the
  strings as UTF-8 without terminator and the System ID from :func:`encoding.system_id`.
- :func:`fixed_value`: a characteristic value that enforces its ATT permissions. Bumble's
  GATT server checks only the encryption/authentication permission bits, not "readable" or
  "writable"; a real device answers Read Not Permitted (0x02) / Write Not Permitted (0x03)
  (Core Spec Vol 3 Part F §3.2.5, §3.4.1.1), and so do the emulators.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Final

from bumble.att import ATT_READ_NOT_PERMITTED_ERROR, ATT_WRITE_NOT_PERMITTED_ERROR, ATT_Error
from bumble.core import UUID
from bumble.device import Connection
from bumble.gatt import Characteristic, CharacteristicValue, Service

from hil.emulators.encoding import system_id

AD_FLAGS: Final = 0x01
AD_COMPLETE_16_BIT_UUIDS: Final = 0x03
AD_COMPLETE_LOCAL_NAME: Final = 0x09

FLAG_LE_GENERAL_DISCOVERABLE: Final = 0x02
FLAG_BR_EDR_NOT_SUPPORTED: Final = 0x04

LEGACY_ADVERTISING_DATA_MAX: Final = 31

DEVICE_INFORMATION_SERVICE: Final = 0x180A
SYSTEM_ID: Final = 0x2A23
MODEL_NUMBER_STRING: Final = 0x2A24
SERIAL_NUMBER_STRING: Final = 0x2A25
FIRMWARE_REVISION_STRING: Final = 0x2A26
HARDWARE_REVISION_STRING: Final = 0x2A27
SOFTWARE_REVISION_STRING: Final = 0x2A28
MANUFACTURER_NAME_STRING: Final = 0x2A29


def fixed_value(value: bytes, *, readable: bool = True) -> CharacteristicValue[bytes]:
    """A constant value that refuses writes, and reads too unless ``readable``."""

    def read(_connection: Connection) -> bytes:
        if not readable:
            raise ATT_Error(ATT_READ_NOT_PERMITTED_ERROR)
        return value

    def write(_connection: Connection, _value: bytes) -> None:
        raise ATT_Error(ATT_WRITE_NOT_PERMITTED_ERROR)

    return CharacteristicValue(read=read, write=write)


def advertising_data(local_name: str, service_uuids: Sequence[int]) -> bytes:
    """Flags (LE General Discoverable, BR/EDR not supported), complete local name, and the
    complete list of 16-bit service UUIDs.

    Raises:
        ValueError: longer than a legacy advertising PDU can carry.
    """
    structures = [
        (AD_FLAGS, bytes([FLAG_LE_GENERAL_DISCOVERABLE | FLAG_BR_EDR_NOT_SUPPORTED])),
        (AD_COMPLETE_LOCAL_NAME, local_name.encode("utf-8")),
        (AD_COMPLETE_16_BIT_UUIDS, b"".join(u.to_bytes(2, "little") for u in service_uuids)),
    ]
    data = b"".join(bytes([len(value) + 1, ad_type]) + value for ad_type, value in structures)
    if len(data) > LEGACY_ADVERTISING_DATA_MAX:
        raise ValueError(f"advertising data is {len(data)} octets, at most 31 fit")
    return data


@dataclass(frozen=True, slots=True)
class DeviceInformation:
    """What a device's DIS 0x180A exposes (``None``: characteristic absent).

    Serial number and System ID identify the device (and so the patient): not in the repr.
    """

    manufacturer_name: str | None = "Homehub Test Devices"
    model_number: str | None = "HH-BPM-1"
    serial_number: str | None = field(default="SN-0000-0001", repr=False)
    hardware_revision: str | None = None
    firmware_revision: str | None = "1.4.2"
    software_revision: str | None = None
    #: (Manufacturer Identifier uint40, OUI uint24), or None for no System ID.
    system_id: tuple[int, int] | None = field(default=(0x12FFFE3456, 0x00A0B1), repr=False)

    def values(self) -> dict[int, bytes]:
        """The characteristic values by 16-bit UUID, exactly as a read returns them."""
        strings = {
            MANUFACTURER_NAME_STRING: self.manufacturer_name,
            MODEL_NUMBER_STRING: self.model_number,
            SERIAL_NUMBER_STRING: self.serial_number,
            HARDWARE_REVISION_STRING: self.hardware_revision,
            FIRMWARE_REVISION_STRING: self.firmware_revision,
            SOFTWARE_REVISION_STRING: self.software_revision,
        }
        result = {uuid: text.encode("utf-8") for uuid, text in strings.items() if text is not None}
        if self.system_id is not None:
            result[SYSTEM_ID] = system_id(*self.system_id)
        return result


def device_information_service(info: DeviceInformation) -> Service:
    """DIS 0x180A: one Read-only characteristic per value (DIS 1.1 §3)."""
    characteristics: list[Characteristic[bytes]] = [
        Characteristic(
            UUID.from_16_bits(uuid),
            Characteristic.Properties.READ,
            Characteristic.READABLE,
            fixed_value(value),
        )
        for uuid, value in sorted(info.values().items())
    ]
    return Service(UUID.from_16_bits(DEVICE_INFORMATION_SERVICE), characteristics)
