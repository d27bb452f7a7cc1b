"""The virtual radio: Bumble virtual controllers linked in software, one of them served over HCI.

::

    agent process                         this process (VirtualRadio)
    ┌──────────────────────┐   HCI over   ┌───────────────────────────────────────────┐
    │ bleak → our Bumble   │   TCP on     │ hub controller ─┐                         │
    │ backend → Bumble host│ ◀──────────▶ │  (tcp-server)   │ LocalLink (the "air")   │
    │ "bumble:tcp-client:  │   loopback   │ cuff controller ┘ ← Bumble host ← cuff    │
    │  127.0.0.1:<port>"   │              │ (one controller per emulated peripheral)  │
    └──────────────────────┘              └───────────────────────────────────────────┘

Every controller is a ``bumble.controller.Controller`` on one ``bumble.link.LocalLink``, as
Bumble's own ``apps/controllers.py`` wires them. The hub's controller is reachable over a
``tcp-server`` HCI transport on loopback, so the agent opens it exactly as it would open any
Bumble transport from its configuration; each emulated peripheral gets its own controller and
an in-process Bumble host (``AsyncPipeSink``, as Bumble's ``testing.test_utils`` does).

The hub's controller corrects one gap of Bumble's virtual controller: LE Create Connection
Cancel (Core Spec Vol 4 Part E §7.8.13) must end the pending connection with an LE Connection
Complete event of status 0x02 "Unknown Connection Identifier"; Bumble's only answers the
command, which leaves the pending connection armed (it would complete when the device next
advertises) and a host's connect timeout hanging. Real controllers behave as corrected here.

Use::

    async with VirtualRadio() as radio:
        cuff = await radio.add_cuff(readings, address="F0:00:00:00:10:01")
        ...  # the agent uses radio.stack == "bumble:tcp-client:127.0.0.1:<port>"

or, for the demo, :func:`serve_virtual_home` in its own process until cancelled.
"""

from __future__ import annotations

import asyncio
import logging
import socket
from collections.abc import Callable, Sequence
from types import TracebackType
from typing import Any, Final, Self

from bumble import hci, ll
from bumble.controller import Controller
from bumble.device import Device
from bumble.host import Host
from bumble.link import LocalLink
from bumble.transport.common import AsyncPipeSink, StreamPacketSource

from agent.logs import scrub_text
from hil.emulators.cuff import BpReading, EmulatedCuff


class _ScrubAddresses(logging.Filter):
    """Cut full Bluetooth addresses out of Bumble's own log records (its controller emulator
    warns with the peer's address): the virtual home's logs follow the hub's rule, so the
    suite's PHI scan can hold every log of the run to it."""

    def filter(self, record: logging.LogRecord) -> bool:
        record.msg = scrub_text(record.getMessage())
        record.args = None
        return True


_SCRUB: Final = _ScrubAddresses()
for _name in [n for n in logging.Logger.manager.loggerDict if n.split(".")[0] == "bumble"]:
    logging.getLogger(_name).addFilter(_SCRUB)

LOOPBACK: Final = "127.0.0.1"
DEFAULT_CUFF_ADDRESS: Final = "F0:00:00:00:10:01"
"""The demo cuff's random static address (config/homehub.example.toml allowlists it)."""


class HubController(Controller):
    """Bumble's virtual controller, with LE Create Connection Cancel and HCI Reset as the
    spec has them."""

    def on_hci_reset_command(self, command: hci.HCI_Reset_Command) -> Any:
        """Vol 4 Part E §7.3.2: a reset ends every connection and abandons a pending one.

        Bumble's controller answers it and resets nothing (a TODO there), so a device
        connected to a host that died (a SIGKILLed daemon, whose successor resets the
        controller when it opens it) stayed connected to nobody, and a connection attempt of
        the dead host completed later, for nobody. Here the attempt is dropped and each peer
        sees its link end as a real one sees a controller gone silent: supervision timeout
        (0x08); the host that reset gets no event for them (they ended with the old one).
        """
        self.pending_le_connection = None
        for connection in list(self.le_connections.values()):
            connection.send_ll_control_pdu(
                ll.TerminateInd(hci.HCI_ErrorCode.CONNECTION_TIMEOUT_ERROR)
            )
            del self.le_connections[connection.peer_address]
        return super().on_hci_reset_command(command)

    def on_hci_le_create_connection_cancel_command(
        self, command: hci.HCI_LE_Create_Connection_Cancel_Command
    ) -> hci.HCI_StatusReturnParameters:
        """Vol 4 Part E §7.8.13: Command Complete, then LE Connection Complete (0x02)."""
        pending = self.pending_le_connection
        if pending is None:
            return hci.HCI_StatusReturnParameters(hci.HCI_ErrorCode.COMMAND_DISALLOWED_ERROR)
        self.pending_le_connection = None
        failed = hci.HCI_LE_Connection_Complete_Event(
            status=hci.HCI_ErrorCode.UNKNOWN_CONNECTION_IDENTIFIER_ERROR,
            connection_handle=0,
            role=hci.Role.CENTRAL,
            peer_address_type=pending.peer_address.address_type,
            peer_address=pending.peer_address,
            connection_interval=0,
            peripheral_latency=0,
            supervision_timeout=0,
            central_clock_accuracy=0,
        )
        # After the Command Complete the caller sends for our return value.
        asyncio.get_running_loop().call_soon(self.send_hci_packet, failed)
        return hci.HCI_StatusReturnParameters(hci.HCI_ErrorCode.SUCCESS)


class _HostSink:
    """Controller to host: each packet to the host connected now, dropped without one (as a
    controller's events are lost with no host on its UART)."""

    def __init__(self) -> None:
        self.transport: asyncio.Transport | None = None
        self.gone: list[asyncio.Event] = []
        """Set (and dropped) when the host connected now goes: :meth:`VirtualRadio.host_gone`."""

    def host_went(self) -> None:
        self.transport = None
        gone, self.gone = self.gone, []
        for event in gone:
            event.set()

    def on_packet(self, packet: bytes) -> None:
        transport = self.transport
        if transport is not None and not transport.is_closing():
            transport.write(packet)


class _HciConnection(asyncio.Protocol):
    """One host's HCI connection to the hub's controller.

    Bumble's tcp-server transport keeps one "current client" that *any* connection's end
    clears: when a killed daemon's connection ended just after its successor connected, the
    successor's packets were dropped and its HCI Reset never answered. Here only the current
    connection's end clears it, a new host replaces the previous one, and a packet the dead
    host left half-sent is forgotten (the parser starts afresh), as on a real UART reset.
    """

    def __init__(self, source: StreamPacketSource, sink: _HostSink) -> None:
        self._source = source
        self._sink = sink
        self._transport: asyncio.Transport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        previous = self._sink.transport
        if previous is not None:
            previous.close()
            self._sink.host_went()
        self._source.parser.reset()
        self._transport = transport
        self._sink.transport = transport

    def connection_lost(self, exc: Exception | None) -> None:
        if self._sink.transport is self._transport:
            self._sink.host_went()

    def eof_received(self) -> bool:
        self.connection_lost(None)
        return False

    def data_received(self, data: bytes) -> None:
        if self._sink.transport is self._transport:
            self._source.data_received(data)


class VirtualRadio:
    """A software "air" with the hub's controller served over HCI/TCP and emulated devices.

    Args:
        host: the loopback address to serve the hub's HCI on.
        port: the TCP port; 0 picks a free one (read :attr:`hci_port`).
    """

    def __init__(self, *, host: str = LOOPBACK, port: int = 0) -> None:
        self._bind = (host, port)
        self.link = LocalLink()  # type: ignore[no-untyped-call]  # (Bumble leaves it untyped)
        self._server: asyncio.Server | None = None
        self._host_sink: _HostSink | None = None
        self._hub_controller: HubController | None = None
        self._controllers: list[Controller] = []
        self.cuffs: list[EmulatedCuff] = []
        self.hci_port = 0

    @property
    def hci_transport(self) -> str:
        """The Bumble transport spec the agent opens: ``tcp-client:127.0.0.1:<port>``."""
        return f"tcp-client:{self._bind[0]}:{self.hci_port}"

    @property
    def stack(self) -> str:
        """The agent's ``ble.stack`` value for this radio."""
        return f"bumble:{self.hci_transport}"

    def host_gone(self) -> asyncio.Event:
        """An event set once the host connected to the hub's controller now has gone (its
        connection ended: an agent stopped); already set when none is connected."""
        event = asyncio.Event()
        sink = self._host_sink
        if sink is None or sink.transport is None:
            event.set()
        else:
            sink.gone.append(event)
        return event

    async def __aenter__(self) -> Self:
        # IPPROTO_TCP explicitly: asyncio sets TCP_NODELAY only on sockets whose proto says
        # TCP, and an accepted socket inherits it; without it Nagle's algorithm delays every
        # controller-to-host packet by a delayed-ACK period (~40 ms on Linux loopback).
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM, socket.IPPROTO_TCP)
        try:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            sock.bind(self._bind)
            self.hci_port = sock.getsockname()[1]
            source, sink = StreamPacketSource(), _HostSink()
            self._server = await asyncio.get_running_loop().create_server(
                lambda: _HciConnection(source, sink), sock=sock
            )
        except BaseException:
            sock.close()
            raise
        self._host_sink = sink
        self._hub_controller = HubController(
            "hub", host_source=source, host_sink=sink, link=self.link
        )
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        for cuff in self.cuffs:
            await cuff.stop()
        for controller in [*self._controllers, self._hub_controller]:
            if controller is not None and controller in self.link.controllers:
                self.link.remove_controller(controller)
        server, self._server = self._server, None
        if server is not None:
            # The listening socket and the host's connection both: the agent sees the radio go.
            server.close()
            client = self._host_sink.transport if self._host_sink is not None else None
            if client is not None:
                client.close()
            await server.wait_closed()

    async def add_peripheral_device(self, address: str, name: str) -> Device:
        """A new controller on the link with an in-process Bumble host; not powered on."""
        controller = Controller(f"peripheral-{len(self._controllers)}", link=self.link)
        self._controllers.append(controller)
        return Device(
            name=name,
            address=hci.Address(address, hci.Address.RANDOM_DEVICE_ADDRESS),
            host=Host(controller, AsyncPipeSink(controller)),
        )

    async def add_cuff(
        self,
        readings: Sequence[BpReading],
        *,
        address: str = DEFAULT_CUFF_ADDRESS,
        **options: Any,
    ) -> EmulatedCuff:
        """Start an emulated blood-pressure cuff (options: see :class:`EmulatedCuff`)."""
        device = await self.add_peripheral_device(address, options.get("local_name", "cuff"))
        cuff = EmulatedCuff(device, readings, **options)
        await cuff.start()
        self.cuffs.append(cuff)
        return cuff


async def serve_virtual_home(
    port: int,
    readings: Sequence[BpReading],
    ready: Callable[[], None],
    *,
    address: str = DEFAULT_CUFF_ADDRESS,
    host: str = LOOPBACK,
    **cuff_options: Any,
) -> None:
    """Run a virtual radio with one cuff on ``host:port`` until cancelled.

    ``ready()`` is called once the HCI port accepts connections and the cuff advertises;
    the agent then uses ``ble.stack = "bumble:tcp-client:<host>:<port>"``.
    """
    async with VirtualRadio(host=host, port=port) as radio:
        await radio.add_cuff(readings, address=address, **cuff_options)
        ready()
        await asyncio.Event().wait()
