"""DIS 0x2A2A Regulatory Certification Data List: strict MDER decoding and PhdDevice elements."""

from __future__ import annotations

import asyncio
from typing import Final

import pytest
from fhir.resources.R4B.device import Device

from agent.ble.bps_session import collect_blood_pressure
from agent.ble.stack import BleStack
from agent.errors import DecodeError
from agent.measurement import RawMeasurement
from agent.normalize.codes import MDC_DEV_SPEC_PROFILE_BPM
from agent.normalize.device import DeviceFacts, phd_device
from agent.normalize.regulatory import RegulatoryData
from hil.emulators.cuff import example_readings
from hil.emulators.peripheral import DeviceInformation
from hil.virtual_radio import VirtualRadio
from tests.phi_canaries import DEVICE_ADDRESS

VERSION: Final = bytes.fromhex("020100020600")  # Continua version 6.0
CERT_LIST: Final = bytes.fromhex("020200080002000400048004")  # 4, 32772
REG_STATUS: Final = bytes.fromhex("020300028000")  # ASN.1 bit 0 set: unregulated
OTHER_BODY: Final = bytes.fromhex("01010001ff")  # IEEE authority: skipped
ENTRIES: Final = VERSION + CERT_LIST + OTHER_BODY + REG_STATUS
VALUE: Final = (4).to_bytes(2, "big") + len(ENTRIES).to_bytes(2, "big") + ENTRIES


def test_decodes_continua_entries() -> None:
    """Version, certified interfaces and regulation status; other authorities skipped."""
    assert RegulatoryData.from_bytes(VALUE) == RegulatoryData((6, 0), (4, 32772), True)


def test_regulated_device() -> None:
    """Regulation status with bit 0 clear: regulated (unregulated False)."""
    entry = bytes.fromhex("020300020000")
    value = bytes.fromhex("0001") + len(entry).to_bytes(2, "big") + entry
    assert RegulatoryData.from_bytes(value).unregulated is False


@pytest.mark.parametrize(
    ("value", "reason"),
    [
        (VALUE + b"\x00", "list length does not match the value"),
        (VALUE[:-1], "list length does not match the value"),
        (bytes.fromhex("0001"), "length needs 2 octets"),
        (
            bytes.fromhex("00010006020100030600"),
            "auth-body-data needs 3 octets",
        ),
        (bytes.fromhex("0001000702010003060000"), "trailing octets"),
    ],
)
def test_rejects_malformed(value: bytes, reason: str) -> None:
    """Lengths must match exactly; the reason names the problem."""
    with pytest.raises(DecodeError) as info:
        RegulatoryData.from_bytes(value)
    assert (info.value.characteristic, info.value.reason) == ("0x2A2A", reason)


def test_phd_device_carries_regulatory_data() -> None:
    """The PhdDevice gets the Continua version and properties, and validates (R4B)."""
    facts = DeviceFacts("F0:00:00:00:10:01", "0102030405060708", firmware="1.2.3",
                        regulatory=RegulatoryData.from_bytes(VALUE))  # fmt: skip
    device = phd_device(facts, MDC_DEV_SPEC_PROFILE_BPM)
    assert [v["value"] for v in device["version"]] == ["1.2.3", "6.0"]
    assert device["version"][1]["type"]["coding"][0]["code"] == "532352"
    assert [p["type"]["coding"][0]["code"] for p in device["property"]] == [
        "532353",
        "532353",
        "532354.0",
    ]
    assert [p["valueCode"][0]["coding"][0]["code"] for p in device["property"]] == [
        "4",
        "32772",
        "Y",
    ]
    Device.model_validate(device)


async def test_session_reads_regulatory_data(radio: VirtualRadio, ble: BleStack) -> None:
    """A cuff exposing 0x2A2A: the session reads it raw and decodes it into the facts."""
    await radio.add_cuff(
        example_readings()[:1],
        address=DEVICE_ADDRESS,
        info=DeviceInformation(regulatory_certification=VALUE),
    )
    facts: list[DeviceFacts] = []

    async def keep(_raw: RawMeasurement, info: DeviceFacts) -> None:
        facts.append(info)

    async with asyncio.timeout(20):
        result = await collect_blood_pressure(
            ble, DEVICE_ADDRESS, keep, scan_timeout_s=5, connect_timeout_s=5, quiet_period_s=0.2
        )
    assert result.info.regulatory_certification == VALUE
    assert [f.regulatory for f in facts] == [RegulatoryData((6, 0), (4, 32772), True)]
