"""Shared by the pairing tests: a glucometer that pairs as told, on the virtual radio."""

from __future__ import annotations

import asyncio
from typing import Final

from bleak import BleakScanner
from bleak.backends.device import BLEDevice

from agent.ble.stack import BleStack
from hil.emulators.glucometer import Glucometer, example_records
from hil.emulators.pairing import EmulatedPairing, configure
from hil.virtual_radio import VirtualRadio
from tests.conftest import METER_INFO
from tests.phi_canaries import DEVICE_ADDRESS

WAIT_S: Final = 10.0


async def start_meter(
    radio: VirtualRadio,
    pairing: EmulatedPairing | None = None,
    *,
    address: str = DEVICE_ADDRESS,
    require_encryption: bool = False,
) -> Glucometer:
    """A glucometer at ``address`` pairing as ``pairing`` says (Just Works by default)."""
    device = await radio.add_peripheral_device(address, "glucometer")
    meter = Glucometer(
        device, example_records(), info=METER_INFO, require_encryption=require_encryption
    )
    configure(meter, pairing or EmulatedPairing.just_works())
    await meter.start()
    return meter


def hci_client_watch(radio: VirtualRadio) -> asyncio.Event:
    """An event set when the radio's HCI server sees its current host go (a restarted agent).

    Bumble's tcp-server transport clears its one client on ``connection_lost``; a new host
    connecting before the old connection's loss is processed would be cleared with it, a
    race only an in-process restart within microseconds can hit: wait for this first.
    """
    transport = radio._transport
    assert transport is not None
    connection = getattr(transport.sink, "transport", None)
    assert isinstance(connection, asyncio.BaseTransport)
    protocol = connection.get_protocol()
    gone = asyncio.Event()
    lost = protocol.connection_lost

    def connection_lost(error: Exception | None) -> None:
        lost(error)
        gone.set()

    protocol.connection_lost = connection_lost  # type: ignore[method-assign]
    return gone


async def find(ble: BleStack, address: str = DEVICE_ADDRESS) -> BLEDevice:
    """Scan until ``address`` advertises."""
    async with BleakScanner(backend=ble.scanner_backend) as scanner:
        async with asyncio.timeout(WAIT_S):
            async for device, _adv in scanner.advertisement_data():
                if device.address == address:
                    return device
    raise AssertionError("unreachable")
