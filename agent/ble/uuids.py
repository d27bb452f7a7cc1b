"""GATT UUIDs in bleak's form, and conversions between bleak and Bumble UUIDs.

bleak names every UUID by its 128-bit lower-case string; a 16-bit SIG UUID ``0xXXXX`` is
``0000xxxx-0000-1000-8000-00805f9b34fb`` (Core Spec Vol 3 Part B §2.5.1, Bluetooth Base UUID).
The 16-bit numbers below are from Bluetooth SIG Assigned Numbers §3.4 (services) and §3.8
(characteristics).
"""

from __future__ import annotations

import uuid
from typing import Final

from bleak.uuids import normalize_uuid_16
from bumble.core import UUID as BumbleUUID

BLOOD_PRESSURE_SERVICE: Final = normalize_uuid_16(0x1810)
BLOOD_PRESSURE_MEASUREMENT: Final = normalize_uuid_16(0x2A35)
INTERMEDIATE_CUFF_PRESSURE: Final = normalize_uuid_16(0x2A36)
BLOOD_PRESSURE_FEATURE: Final = normalize_uuid_16(0x2A49)

DEVICE_INFORMATION_SERVICE: Final = normalize_uuid_16(0x180A)
SYSTEM_ID: Final = normalize_uuid_16(0x2A23)
MODEL_NUMBER_STRING: Final = normalize_uuid_16(0x2A24)
SERIAL_NUMBER_STRING: Final = normalize_uuid_16(0x2A25)
FIRMWARE_REVISION_STRING: Final = normalize_uuid_16(0x2A26)
HARDWARE_REVISION_STRING: Final = normalize_uuid_16(0x2A27)
SOFTWARE_REVISION_STRING: Final = normalize_uuid_16(0x2A28)
MANUFACTURER_NAME_STRING: Final = normalize_uuid_16(0x2A29)

CLIENT_CHARACTERISTIC_CONFIGURATION: Final = normalize_uuid_16(0x2902)


def from_le_bytes(value: bytes) -> str:
    """bleak's string for a UUID given as 2, 4 or 16 little-endian octets (Vol 3 Part B §2.5.1).

    Raises:
        ValueError: not 2, 4 or 16 octets.
    """
    if len(value) == 2:
        return f"0000{int.from_bytes(value, 'little'):04x}-0000-1000-8000-00805f9b34fb"
    if len(value) == 4:
        return f"{int.from_bytes(value, 'little'):08x}-0000-1000-8000-00805f9b34fb"
    if len(value) == 16:
        return str(uuid.UUID(bytes=value[::-1]))
    raise ValueError(f"a UUID has 2, 4 or 16 octets, not {len(value)}")


def from_bumble(value: BumbleUUID) -> str:
    """bleak's string for a Bumble UUID."""
    return from_le_bytes(value.to_bytes(force_128=True))


def to_bumble(value: str) -> BumbleUUID:
    """The Bumble UUID for a bleak UUID string (any form bleak normalizes)."""
    return BumbleUUID(str(uuid.UUID(value)))
