"""GATT UUIDs in bleak's form, and conversions between bleak and Bumble UUIDs.

bleak names every UUID by its 128-bit lower-case string; a 16-bit SIG UUID ``0xXXXX`` is
``0000xxxx-0000-1000-8000-00805f9b34fb`` (Core Spec Vol 3 Part B §2.5.1, Bluetooth Base UUID).
The 16-bit numbers below are from Bluetooth SIG Assigned Numbers §3.4 (services) and §3.8
(characteristics). This module is pure (no bleak, no Bumble) so that the normalizers can name
the characteristic a value came from without importing a Bluetooth stack.
"""

from __future__ import annotations

import uuid
from typing import Final


def sig_uuid(number: int) -> str:
    """bleak's string for a 16-bit SIG UUID (the Bluetooth Base UUID with ``number`` in it)."""
    return f"0000{number:04x}-0000-1000-8000-00805f9b34fb"


# fmt: off
BLOOD_PRESSURE_SERVICE: Final            = sig_uuid(0x1810)
BLOOD_PRESSURE_MEASUREMENT: Final        = sig_uuid(0x2A35)
INTERMEDIATE_CUFF_PRESSURE: Final        = sig_uuid(0x2A36)
BLOOD_PRESSURE_FEATURE: Final            = sig_uuid(0x2A49)

GLUCOSE_SERVICE: Final                   = sig_uuid(0x1808)
GLUCOSE_MEASUREMENT: Final               = sig_uuid(0x2A18)
GLUCOSE_MEASUREMENT_CONTEXT: Final       = sig_uuid(0x2A34)
GLUCOSE_FEATURE: Final                   = sig_uuid(0x2A51)

PULSE_OXIMETER_SERVICE: Final            = sig_uuid(0x1822)
PLX_SPOT_CHECK_MEASUREMENT: Final        = sig_uuid(0x2A5E)
PLX_CONTINUOUS_MEASUREMENT: Final        = sig_uuid(0x2A5F)
PLX_FEATURES: Final                      = sig_uuid(0x2A60)

RECORD_ACCESS_CONTROL_POINT: Final       = sig_uuid(0x2A52)

CURRENT_TIME_SERVICE: Final              = sig_uuid(0x1805)
CURRENT_TIME: Final                      = sig_uuid(0x2A2B)

DEVICE_INFORMATION_SERVICE: Final        = sig_uuid(0x180A)
SYSTEM_ID: Final                         = sig_uuid(0x2A23)
MODEL_NUMBER_STRING: Final               = sig_uuid(0x2A24)
SERIAL_NUMBER_STRING: Final              = sig_uuid(0x2A25)
FIRMWARE_REVISION_STRING: Final          = sig_uuid(0x2A26)
HARDWARE_REVISION_STRING: Final          = sig_uuid(0x2A27)
SOFTWARE_REVISION_STRING: Final          = sig_uuid(0x2A28)
MANUFACTURER_NAME_STRING: Final          = sig_uuid(0x2A29)
REGULATORY_CERTIFICATION_DATA_LIST: Final = sig_uuid(0x2A2A)

CLIENT_CHARACTERISTIC_CONFIGURATION: Final = sig_uuid(0x2902)
# fmt: on


def from_le_bytes(value: bytes) -> str:
    """bleak's string for a UUID given as 2, 4 or 16 little-endian octets (Vol 3 Part B §2.5.1).

    Raises:
        ValueError: not 2, 4 or 16 octets.
    """
    if len(value) == 2:
        return sig_uuid(int.from_bytes(value, "little"))
    if len(value) == 4:
        return f"{int.from_bytes(value, 'little'):08x}-0000-1000-8000-00805f9b34fb"
    if len(value) == 16:
        return str(uuid.UUID(bytes=value[::-1]))
    raise ValueError(f"a UUID has 2, 4 or 16 octets, not {len(value)}")
