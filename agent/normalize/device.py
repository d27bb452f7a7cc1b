"""FHIR Device resources: one per BLE device (PhdDevice) and one for the hub (PhgDevice).

The PHD IG identifies a device by its IEEE EUI-64 System ID (from DIS 0x2A23) and its Bluetooth
address; the logical id is ``phd-<SYSID>.<BTMAC>`` (both upper-case hex without separators),
as in the IG's examples. The gateway is ``phg-<hub id>``.

**Decision: System ID in canonical EUI-64 order (OUI first).** DIS 0x2A23 carries the
Manufacturer Identifier (uint40) then the OUI (uint24), both little-endian; the EUI-64 is that
value byte-reversed (``drivers.device_information.SystemId.eui64``). The IG's example device
``phd-74E8FFFEFF051C00.001C05FFE874`` writes the octets in wire order instead; we use the
canonical order because it is the IEEE identifier a label, a Continua certificate and any
non-BLE transport of the same device show, and the OUI then reads as the manufacturer's.
The choice is fixed: changing it would change every device and Observation identifier.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from typing import Any, Final

from agent.normalize import codes
from agent.normalize.clock import ClockFacts
from agent.normalize.codes import (
    BT_MAC_SYSTEM,
    DEVICE_ID_SYSTEM,
    EUI64_SYSTEM,
    MDC_ID_PROD_SPEC_FW,
    MDC_ID_PROD_SPEC_HW,
    MDC_ID_PROD_SPEC_SW,
    MDC_MOC_VMS_MDS_SIMP,
    PHD_PROFILE,
    Code,
)
from agent.normalize.regulatory import RegulatoryData


@dataclass(frozen=True, slots=True)
class DeviceFacts:
    """What the hub learnt about a device over BLE (Device Information Service, address)."""

    address: str  #: public/static Bluetooth address, AA:BB:CC:DD:EE:FF
    system_id: str | None = None  #: EUI-64 as 16 upper-case hex digits, None when not exposed
    manufacturer: str | None = None
    model: str | None = None
    serial: str | None = None
    firmware: str | None = None
    hardware: str | None = None
    software: str | None = None
    #: The device clock read at connection (CTS 0x2A2B), None when not read.
    clock: ClockFacts | None = None
    #: DIS 0x2A2A Regulatory Certification Data List, decoded; None when not exposed.
    regulatory: RegulatoryData | None = None

    @property
    def mac_hex(self) -> str:
        """The Bluetooth address as 12 upper-case hex digits."""
        return self.address.replace(":", "").upper()

    @property
    def identifier_id(self) -> str:
        """The device part of an Observation identifier: SYSID, else the EUI-48 address."""
        return self.system_id or self.mac_hex

    @property
    def logical_id(self) -> str:
        """FHIR logical id, ``phd-<SYSID>.<BTMAC>``."""
        return f"phd-{self.system_id or 'NOSYSID'}.{self.mac_hex}"


def _dashed(hex_digits: str) -> str:
    return "-".join(hex_digits[i : i + 2] for i in range(0, len(hex_digits), 2))


def _id_type(code: str, display: str) -> dict[str, Any]:
    return {"coding": [{"system": DEVICE_ID_SYSTEM, "code": code, "display": display}]}


def phd_device(facts: DeviceFacts, specialization: Code) -> dict[str, Any]:
    """PhdDevice for a BLE personal health device."""
    identifiers: list[dict[str, Any]] = []
    if facts.system_id:
        identifiers.append(
            {
                "type": _id_type("SYSID", "IEEE 11073 System Identifier"),
                "system": EUI64_SYSTEM,
                "value": _dashed(facts.system_id),
            }
        )
    identifiers.append(
        {
            "type": _id_type("BTMAC", "Bluetooth MAC address"),
            "system": BT_MAC_SYSTEM,
            "value": _dashed(facts.mac_hex),
        }
    )
    resource: dict[str, Any] = {
        "resourceType": "Device",
        "id": facts.logical_id,
        "meta": {"profile": [PHD_PROFILE + "PhdDevice"]},
        "identifier": identifiers,
        "type": {
            "coding": [
                MDC_MOC_VMS_MDS_SIMP.codeable_concept()["coding"][0],
                specialization.codeable_concept()["coding"][0],
            ]
        },
        "specialization": [
            {"systemType": specialization.codeable_concept(), "version": "1"},
        ],
    }
    if facts.manufacturer:
        resource["manufacturer"] = facts.manufacturer
    if facts.serial:
        resource["serialNumber"] = facts.serial
    if facts.model:
        resource["modelNumber"] = facts.model
    versions = [
        {"type": code.codeable_concept(), "value": value}
        for code, value in (
            (MDC_ID_PROD_SPEC_FW, facts.firmware),
            (MDC_ID_PROD_SPEC_SW, facts.software),
            (MDC_ID_PROD_SPEC_HW, facts.hardware),
        )
        if value
    ]
    if facts.regulatory is not None:
        versions.extend(facts.regulatory.device_versions())
        properties = facts.regulatory.device_properties()
        if properties:
            resource["property"] = properties
    if versions:
        resource["version"] = versions
    return resource


PHG_EUI64_LABEL: Final = b"homehub PHG EUI-64 v1:"
"""Domain label of the hub's derived EUI-64 (:func:`phg_eui64`); fixed: changing it would
change every hub's identifier."""

PHG_SPECIALIZATIONS: Final = (
    codes.MDC_DEV_SPEC_PROFILE_BPM,
    codes.MDC_DEV_SPEC_PROFILE_PULS_OXIM,
    codes.MDC_DEV_SPEC_PROFILE_GLUCOSE,
)
"""The specializations the hub decodes and maps (BPS, PLXS, GLS): PhgDevice
``specialization[MDCType]`` 1..*, one entry each."""


def phg_eui64(hub_id: str) -> str:
    """The hub's System Id: an EUI-64 derived from its hub id, 16 upper-case hex digits.

    PhgDevice requires a system identifier (the EUI-64, ``identifier[systemIdIdentifier]``).
    The hub has no IEEE-assigned one, so it uses a *locally administered* EUI-64 (IEEE
    "Guidelines for Use of EUI": first octet with the U/L bit set and the I/G bit clear): the
    first 8 octets of SHA-256(label ‖ hub id). Stable for a hub, unique across hubs in practice
    (64-bit hash), and it cannot collide with a manufacturer-assigned (OUI-based) System Id.
    """
    octets = bytearray(hashlib.sha256(PHG_EUI64_LABEL + hub_id.encode()).digest()[:8])
    octets[0] = (octets[0] | 0x02) & 0xFE
    return octets.hex().upper()


def phg_device(hub_id: str, software_version: str) -> dict[str, Any]:
    """PhgDevice (IG STU2): the hub itself, the gateway every Observation references.

    ``type`` MDC 531981 MDC_MOC_VMS_MDS_AHD (fixed by the profile), the EUI-64 System Id
    (:func:`phg_eui64`), one ``specialization`` per device kind the hub maps
    (:data:`PHG_SPECIALIZATIONS`), the software version (``version[MDCType]`` 1..*). The hub
    id stays as a second identifier (it names the hub on the uplink).
    """
    return {
        "resourceType": "Device",
        "id": f"phg-{hub_id}",
        "meta": {"profile": [PHD_PROFILE + "PhgDevice"]},
        "identifier": [
            {
                "type": _id_type("SYSID", "IEEE 11073 System Identifier"),
                "system": EUI64_SYSTEM,
                "value": _dashed(phg_eui64(hub_id)),
            },
            {"system": "urn:homehub:hub-id", "value": hub_id},
        ],
        "manufacturer": "homehub",
        "modelNumber": "homehub agent",
        "type": {
            "coding": [codes.MDC_MOC_VMS_MDS_AHD.codeable_concept()["coding"][0]],
            "text": "Personal health gateway",
        },
        "specialization": [{"systemType": code.codeable_concept()} for code in PHG_SPECIALIZATIONS],
        "version": [{"type": MDC_ID_PROD_SPEC_SW.codeable_concept(), "value": software_version}],
    }
