"""The emulated oximeter's Record Access Control Point behaves as PLXS restricts it.

A raw bleak client (over the agent's Bumble backend and the virtual radio) writes RACP
requests byte by byte and checks the exact indications and ATT errors (ble-spec-facts §6.4).
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from dataclasses import dataclass

import pytest
from bleak import BleakClient, BleakScanner
from bleak.exc import BleakGATTProtocolError
from bleak.uuids import normalize_uuid_16

from agent.ble.stack import BleStack
from hil.emulators.encoding import DateTime
from hil.emulators.oximeter import (
    EmulatedOximeter,
    Features,
    MeasurementStatus,
    SpotCheck,
    SupportedFeatures,
)
from hil.virtual_radio import VirtualRadio
from tests.phi_canaries import DEVICE_ADDRESS

WAIT_S = 5.0
RACP = normalize_uuid_16(0x2A52)
SPOT = normalize_uuid_16(0x2A5E)
STORAGE = Features(
    SupportedFeatures.SPOT_CHECK_MEASUREMENT_STORAGE | SupportedFeatures.SPOT_CHECK_TIMESTAMP
)
FROM_STORAGE = int(MeasurementStatus.DATA_FROM_MEASUREMENT_STORAGE)


def stored(count: int) -> list[SpotCheck]:
    """``count`` stored spot-checks, a minute apart, flagged as from storage."""
    return [
        SpotCheck(95 + i % 4, 60 + i % 20, timestamp=DateTime(2025, 3, 1, 8, i // 60, i % 60),
                  measurement_status=FROM_STORAGE)
        for i in range(count)
    ]  # fmt: skip


@dataclass
class Link:
    """A connected raw client and what it received, by characteristic."""

    client: BleakClient
    oximeter: EmulatedOximeter
    racp: asyncio.Queue[bytes]
    spot: list[bytes]

    async def enable(self, *, racp: bool = True, spot: bool = True) -> None:
        """Enable indications on RACP and/or 0x2A5E."""
        if spot:
            await self.client.start_notify(SPOT, lambda _c, d: self.spot.append(bytes(d)))
        if racp:
            await self.client.start_notify(RACP, lambda _c, d: self.racp.put_nowait(bytes(d)))

    async def request(self, value: str) -> bytes:
        """Write an RACP request (hex); return the next RACP indication."""
        await self.client.write_gatt_char(RACP, bytes.fromhex(value), response=True)
        async with asyncio.timeout(WAIT_S):
            return await self.racp.get()


@pytest.fixture
async def radio() -> AsyncIterator[VirtualRadio]:
    """A virtual radio on a free loopback port."""
    async with VirtualRadio() as radio:
        yield radio


async def connect(radio: VirtualRadio, records: list[SpotCheck]) -> AsyncIterator[Link]:
    """Start an oximeter with ``records`` in storage and connect a raw client to it."""
    device = await radio.add_peripheral_device(DEVICE_ADDRESS, "oximeter")
    oximeter = EmulatedOximeter(device, stored_records=records, features=STORAGE)
    await oximeter.start()
    async with BleStack.open(radio.stack) as ble:
        found = await BleakScanner.find_device_by_address(
            DEVICE_ADDRESS, timeout=WAIT_S, backend=ble.scanner_backend
        )
        assert found is not None
        async with BleakClient(found, timeout=WAIT_S, backend=ble.client_backend) as client:
            yield Link(client, oximeter, asyncio.Queue(), [])


@pytest.fixture
async def link(radio: VirtualRadio) -> AsyncIterator[Link]:
    """A client connected to an oximeter holding two stored records."""
    async for connected in connect(radio, stored(2)):
        yield connected


async def test_report_all_indicates_every_record_then_success(link: Link) -> None:
    """``01 01``: each stored record on 0x2A5E, exact and in order, then ``06 00 01 01``."""
    await link.enable()
    assert await link.request("0101") == bytes.fromhex("06000101")
    assert link.spot == [bytes(r) for r in stored(2)]
    assert link.spot[0][0] & 0x02  # measurement status present, bit 9 "from storage" set
    assert link.spot[0][12:14] == FROM_STORAGE.to_bytes(2, "little")


async def test_report_number_then_delete_then_nothing_left(link: Link) -> None:
    """``04 01`` → ``05 00 02 00``; ``02 01`` → success; a report then finds no records."""
    await link.enable()
    assert await link.request("0401") == bytes.fromhex("05000200")
    assert await link.request("0201") == bytes.fromhex("06000201")
    assert link.oximeter.stored_records == []
    assert await link.request("0401") == bytes.fromhex("05000000")
    assert await link.request("0101") == bytes.fromhex("06000106")


@pytest.mark.parametrize(
    ("request_hex", "response_hex"),
    [
        ("0103", "06000104"),  # ≥ : operator not supported in PLXS
        ("0106", "06000104"),  # last record: operator not supported
        ("0100", "06000103"),  # Null with report: invalid operator
        ("0107", "06000103"),  # undefined operator
        ("010101", "06000105"),  # all records takes no operand
        ("0301", "06000303"),  # abort needs the Null operator
        ("0701", "06000702"),  # combined report: op code not supported
        ("01", "06000103"),  # no operator at all
    ],
)
async def test_refused_requests_answer_the_exact_response_code(
    link: Link, request_hex: str, response_hex: str
) -> None:
    """Every request PLXS does not allow gets its Response Code; nothing is reported."""
    await link.enable()
    assert await link.request(request_hex) == bytes.fromhex(response_hex)
    assert link.spot == []


async def test_write_without_racp_indications_is_att_error_fd(link: Link) -> None:
    """RACP indications off: ATT error 0xFD (CCCD improperly configured), no procedure."""
    await link.enable(racp=False)
    with pytest.raises(BleakGATTProtocolError) as caught:
        await link.client.write_gatt_char(RACP, bytes.fromhex("0101"), response=True)
    assert caught.value.code == 0xFD
    assert link.oximeter.racp_requests == []


async def test_report_without_spot_check_indications_is_att_error_fd(link: Link) -> None:
    """A report needs 0x2A5E indications too; Report Number does not."""
    await link.enable(spot=False)
    with pytest.raises(BleakGATTProtocolError) as caught:
        await link.client.write_gatt_char(RACP, bytes.fromhex("0101"), response=True)
    assert caught.value.code == 0xFD
    assert await link.request("0401") == bytes.fromhex("05000200")


async def test_second_request_while_reporting_is_att_error_fe_and_abort_stops_it(
    radio: VirtualRadio,
) -> None:
    """During a long report: ``04 01`` → ATT 0xFE; Abort ``03 00`` → ``06 00 03 01``, no more."""
    async for link in connect(radio, stored(200)):
        await link.enable()
        await link.client.write_gatt_char(RACP, bytes.fromhex("0101"), response=True)
        with pytest.raises(BleakGATTProtocolError) as caught:
            await link.client.write_gatt_char(RACP, bytes.fromhex("0401"), response=True)
        assert caught.value.code == 0xFE
        assert await link.request("0300") == bytes.fromhex("06000301")
        async with asyncio.timeout(WAIT_S):
            await link.oximeter.racp_idle.wait()
        assert link.racp.empty()  # the aborted report sends no Response Code
        assert 0 < len(link.spot) < 200
        assert link.spot == [bytes(r) for r in stored(200)][: len(link.spot)]
