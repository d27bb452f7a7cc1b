"""The virtual radio's hub controller resets as a real one does (hil/virtual_radio.py).

A daemon SIGKILLed with a device connected leaves its controller holding the link; the next
daemon opens the controller and resets it (HCI Reset, Core Spec Vol 4 Part E §7.3.2), which on
a real controller ends every connection and abandons a pending connection attempt. Bumble's
virtual controller did neither, so the device stayed connected to nobody. These tests drive
the hub controller with plain Bumble hosts over the radio's own HCI transport: the first host
"dies" by dropping its transport, the second resets.
"""

from __future__ import annotations

import asyncio
import contextlib
from typing import Final

from bumble import hci
from bumble.core import PhysicalTransport
from bumble.device import Connection, Device
from bumble.transport import open_transport

from hil.virtual_radio import HubController, VirtualRadio

PERIPHERAL: Final = "F0:5E:00:00:00:01"
HUB: Final = "F0:5E:00:00:00:A0"
WAIT_S: Final = 10.0
"""Each step takes milliseconds on the in-process link."""


def _hub_controller(radio: VirtualRadio) -> HubController:
    controllers = [c for c in radio.link.controllers if isinstance(c, HubController)]
    assert len(controllers) == 1
    return controllers[0]


async def _host(radio: VirtualRadio, transport: object) -> Device:
    device = Device.with_hci(
        "hub",
        hci.Address(HUB, hci.Address.RANDOM_DEVICE_ADDRESS),
        transport.source,  # type: ignore[attr-defined]
        transport.sink,  # type: ignore[attr-defined]
    )
    await device.power_on()  # sends HCI Reset first
    return device


async def test_reset_by_the_next_host_ends_the_dead_hosts_link() -> None:
    async with VirtualRadio() as radio:
        peripheral = await radio.add_peripheral_device(PERIPHERAL, "gadget")
        await peripheral.power_on()
        ended: asyncio.Future[int] = asyncio.get_running_loop().create_future()

        def on_connection(connection: Connection) -> None:
            connection.on("disconnection", lambda reason: ended.set_result(reason))

        peripheral.on("connection", on_connection)
        await peripheral.start_advertising(auto_restart=False)
        async with asyncio.timeout(WAIT_S):
            first = await open_transport(radio.hci_transport)
            host = await _host(radio, first)
            await host.connect(PERIPHERAL, transport=PhysicalTransport.LE)
            await first.close()  # the daemon dies: nothing ends the link
        assert 1 == len(_hub_controller(radio).le_connections)
        assert not ended.done()
        async with asyncio.timeout(WAIT_S):
            second = await open_transport(radio.hci_transport)
            try:
                await _host(radio, second)
                reason = await ended
            finally:
                await second.close()
        assert hci.HCI_ErrorCode.CONNECTION_TIMEOUT_ERROR == reason
        assert {} == _hub_controller(radio).le_connections


async def test_reset_abandons_the_dead_hosts_connection_attempt() -> None:
    async with VirtualRadio() as radio:
        peripheral = await radio.add_peripheral_device(PERIPHERAL, "gadget")
        await peripheral.power_on()  # on the air, not advertising: the attempt stays pending
        controller = _hub_controller(radio)
        armed = asyncio.Event()
        create = controller.on_hci_le_create_connection_command

        def observed(command: hci.HCI_LE_Create_Connection_Command) -> object:
            result = create(command)
            armed.set()
            return result

        controller.on_hci_le_create_connection_command = observed  # type: ignore[method-assign]
        async with asyncio.timeout(WAIT_S):
            first = await open_transport(radio.hci_transport)
            host = await _host(radio, first)
            attempt = asyncio.create_task(
                host.connect(PERIPHERAL, transport=PhysicalTransport.LE), name="test.connect"
            )
            await armed.wait()
            assert controller.pending_le_connection is not None
            await first.close()  # the daemon dies with its attempt armed
            attempt.cancel()  # (its host is gone: nothing reaches the controller)
            with contextlib.suppress(BaseException):
                await attempt
        assert controller.pending_le_connection is not None
        async with asyncio.timeout(WAIT_S):
            second = await open_transport(radio.hci_transport)
            try:
                await _host(radio, second)
            finally:
                await second.close()
        assert controller.pending_le_connection is None
        assert {} == controller.le_connections
