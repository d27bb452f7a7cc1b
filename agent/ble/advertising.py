"""Advertising data (AD structures) to the fields bleak's ``AdvertisementData`` carries.

Sans-I/O: a list of ``(AD type, data)`` pairs in, an :class:`AdvertisementFields` out. The AD
types and their layouts are those of the Core Specification Supplement (CSS) v11, Part A:

=====================  ==========================================  =========
AD type                Content                                      CSS §
=====================  ==========================================  =========
0x02 / 0x03            incomplete / complete list of 16-bit UUIDs   1.1
0x04 / 0x05            incomplete / complete list of 32-bit UUIDs   1.1
0x06 / 0x07            incomplete / complete list of 128-bit UUIDs  1.1
0x08 / 0x09            shortened / complete local name (UTF-8)      1.2
0x0A                   TX power level, sint8 dBm                    1.5
0x16 / 0x20 / 0x21     service data, 16/32/128-bit UUID + data      1.11
0xFF                   manufacturer specific data: company id + …   1.4
=====================  ==========================================  =========

Advertisements come from any radio in range, so nothing here trusts them: a structure too
short for its type is skipped, a name that is not UTF-8 is decoded with replacement
characters, and the output is bounded by the 31 (legacy) or 1650 (extended) octets the
controller can deliver. UUIDs are parsed here rather than by ``bumble.core.UUID``, whose
``from_bytes`` appends every new value to a process-wide registry that would grow with every
stranger's advertisement.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Final

from agent.ble.uuids import from_le_bytes

AD_INCOMPLETE_16: Final = 0x02
AD_COMPLETE_16: Final = 0x03
AD_INCOMPLETE_32: Final = 0x04
AD_COMPLETE_32: Final = 0x05
AD_INCOMPLETE_128: Final = 0x06
AD_COMPLETE_128: Final = 0x07
AD_SHORTENED_LOCAL_NAME: Final = 0x08
AD_COMPLETE_LOCAL_NAME: Final = 0x09
AD_TX_POWER_LEVEL: Final = 0x0A
AD_SERVICE_DATA_16: Final = 0x16
AD_SERVICE_DATA_32: Final = 0x20
AD_SERVICE_DATA_128: Final = 0x21
AD_MANUFACTURER_SPECIFIC_DATA: Final = 0xFF

_UUID_LIST_WIDTH: Final = {
    AD_INCOMPLETE_16: 2,
    AD_COMPLETE_16: 2,
    AD_INCOMPLETE_32: 4,
    AD_COMPLETE_32: 4,
    AD_INCOMPLETE_128: 16,
    AD_COMPLETE_128: 16,
}
_SERVICE_DATA_UUID_WIDTH: Final = {
    AD_SERVICE_DATA_16: 2,
    AD_SERVICE_DATA_32: 4,
    AD_SERVICE_DATA_128: 16,
}


@dataclass(frozen=True, slots=True)
class AdvertisementFields:
    """What one advertisement (with its scan response) says, in bleak's terms.

    Attributes:
        local_name: the complete local name, else the shortened one, else ``None``.
        service_uuids: advertised service UUIDs, bleak-style 128-bit lower-case, in order,
            without duplicates.
        manufacturer_data: payload by Bluetooth SIG company identifier (last one wins).
        service_data: payload by bleak-style service UUID (last one wins).
        tx_power: the advertised TX power level in dBm, when present.
    """

    local_name: str | None = None
    service_uuids: list[str] = field(default_factory=list)
    manufacturer_data: dict[int, bytes] = field(default_factory=dict)
    service_data: dict[str, bytes] = field(default_factory=dict)
    tx_power: int | None = None


def parse_ad_structures(structures: Iterable[tuple[int, bytes]]) -> AdvertisementFields:
    """Map AD structures (type, data) to :class:`AdvertisementFields` (CSS Part A)."""
    complete_name: str | None = None
    short_name: str | None = None
    uuids: list[str] = []
    manufacturer: dict[int, bytes] = {}
    service_data: dict[str, bytes] = {}
    tx_power: int | None = None

    for ad_type, data in structures:
        if ad_type in _UUID_LIST_WIDTH:
            width = _UUID_LIST_WIDTH[ad_type]
            for start in range(0, len(data) - width + 1, width):
                value = from_le_bytes(data[start : start + width])
                if value not in uuids:
                    uuids.append(value)
        elif ad_type == AD_COMPLETE_LOCAL_NAME:
            complete_name = data.decode("utf-8", errors="replace")
        elif ad_type == AD_SHORTENED_LOCAL_NAME:
            short_name = data.decode("utf-8", errors="replace")
        elif ad_type == AD_TX_POWER_LEVEL and len(data) == 1:
            tx_power = int.from_bytes(data, "little", signed=True)
        elif ad_type in _SERVICE_DATA_UUID_WIDTH:
            width = _SERVICE_DATA_UUID_WIDTH[ad_type]
            if len(data) >= width:
                service_data[from_le_bytes(data[:width])] = data[width:]
        elif ad_type == AD_MANUFACTURER_SPECIFIC_DATA and len(data) >= 2:
            manufacturer[int.from_bytes(data[:2], "little")] = data[2:]

    return AdvertisementFields(
        local_name=complete_name if complete_name is not None else short_name,
        service_uuids=uuids,
        manufacturer_data=manufacturer,
        service_data=service_data,
        tx_power=tx_power,
    )
