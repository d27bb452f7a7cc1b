"""The Bumble host: one ``bumble.device.Device`` per HCI transport, shared by scanner and clients.

The hub's bleak backend (:mod:`agent.ble.bumble_backend`) does not own a Bluetooth stack per
scanner or client, as BlueZ is one daemon for every bleak object; here one
:class:`BumbleHost` plays that role for one HCI transport (``tcp-client:127.0.0.1:7001``,
``usb:0``, ``serial:/dev/ttyACM0``, … any Bumble transport spec). It is opened once, powered
on with a fixed random static address (Core Spec Vol 6 Part B §1.3.2.1: the two most
significant bits are ``0b11``), and closed at shutdown.

Theory of operation
-------------------
- :func:`bumble_host` is the async context manager that opens a host and registers it under
  its transport spec; a nested ``bumble_host`` for the same spec shares it (reference count).
  The bleak backend classes look the host up with :func:`registered_host`.
- Scanning is reference-counted too: the first scan listener starts an active scan, the last
  one to leave stops it, and each advertisement is fanned out to every listener.
- A lost transport (the HCI socket closed) makes Bumble emit a flush, which ends every
  connection with a disconnection event; the host is then *lost*, and the next
  :meth:`BumbleHost.ensure_ready` reopens the transport (bounded by
  :data:`HCI_OPEN_TIMEOUT_S`), so a restarted radio does not need a restarted daemon.
- Peers seen while scanning are remembered (address type and name, at most
  :data:`MAX_REMEMBERED_PEERS`, oldest forgotten first), so a client given only an address
  string connects with the right address type.

Pairing is Bumble's SMP. :class:`PairingPolicy` says what the hub can do (Just Works by
default); its ``passkey`` hook is where a passkey-entry UI plugs in. Bonding keys live in
the device's key store: an in-memory one unless a ``keystore`` is given (bonds are then
lost on restart; a persistent, encrypted key store is future work).
"""

from __future__ import annotations

import asyncio
import weakref
from collections import OrderedDict
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Final

import structlog
from bumble import hci
from bumble.core import BaseBumbleError
from bumble.device import Advertisement, Connection, Device
from bumble.host import Host
from bumble.keys import KeyStore
from bumble.pairing import PairingConfig, PairingDelegate
from bumble.transport import open_transport
from bumble.transport.common import Transport

from agent.errors import BleLinkError
from agent.logs import device_label

log = structlog.get_logger(__name__)

HCI_OPEN_TIMEOUT_S: Final = 15.0
"""Opening the transport and powering on: an HCI reset plus about 15 init commands, each
bounded by Bumble's 10 s command timeout; a healthy controller answers in milliseconds."""

HCI_CLOSE_TIMEOUT_S: Final = 5.0
"""Disconnecting what is still connected and flushing the host at shutdown."""

DEFAULT_STATIC_ADDRESS: Final = "C0:48:55:42:00:01"
"""The hub's random static address when none is configured (two MSBs 0b11)."""

DEFAULT_NAME: Final = "homehub"

ORPHAN_GRACE_S: Final = 2.0
"""A central connection no client claimed this long after it completed (a connect cancelled
just as the controller completed it) is disconnected, so it cannot linger unseen."""

MAX_REMEMBERED_PEERS: Final = 256
"""Peers remembered from advertisements: enough for a crowded apartment block, bounded
because advertisements come from strangers too."""

ScanListener = Callable[[Advertisement], None]


@dataclass(frozen=True, slots=True)
class PairingPolicy:
    """How the hub pairs (Core Spec Vol 3 Part H §2.3.5.1 selects the method from these).

    Attributes:
        io_capability: the hub's I/O capability; ``NO_OUTPUT_NO_INPUT`` means Just Works.
        passkey: the passkey-entry hook: awaited when the peer displays a passkey the hub
            must enter; returns the 6-digit number, or ``None`` to refuse. Without a hook
            a passkey request is refused (pairing fails with "passkey entry failed").
        secure_connections: request LE Secure Connections.
        mitm: request MITM protection (needs an I/O capability other than none).
        bonding: keep the keys (bond) rather than pair for this connection only.
    """

    io_capability: PairingDelegate.IoCapability = PairingDelegate.IoCapability.NO_OUTPUT_NO_INPUT
    passkey: Callable[[], Awaitable[int | None]] | None = None
    secure_connections: bool = True
    mitm: bool = False
    bonding: bool = True


class _HubPairingDelegate(PairingDelegate):
    """Bumble's pairing questions answered by a :class:`PairingPolicy`."""

    def __init__(self, policy: PairingPolicy) -> None:
        super().__init__(io_capability=policy.io_capability)
        self._passkey = policy.passkey

    async def get_number(self) -> int | None:
        """The passkey to enter, from the policy's hook; ``None`` refuses."""
        if self._passkey is None:
            return None
        return await self._passkey()

    async def compare_numbers(self, number: int, digits: int) -> bool:
        """Numeric comparison needs a display and a yes/no input the hub does not have."""
        return False


class BumbleHost:
    """One opened Bumble host (transport + powered-on ``Device``). Build with :meth:`open`."""

    def __init__(
        self,
        transport_spec: str,
        static_address: hci.Address,
        name: str,
        keystore: KeyStore | None,
        pairing: PairingPolicy,
    ) -> None:
        self.transport_spec = transport_spec
        self.static_address = static_address
        self.name = name
        self.pairing = pairing
        self._keystore = keystore
        self._transport: Transport | None = None
        self._device: Device | None = None
        self._lost = False
        self._closed = False
        self._ready_lock = asyncio.Lock()
        #: Serialises LE connection creation: a controller takes one at a time (Vol 4 Part E
        #: §7.8.12 "Command Disallowed" while one is pending).
        self.connect_lock = asyncio.Lock()
        self._scan_listeners: list[ScanListener] = []
        self._scan_lock = asyncio.Lock()
        self._peers: OrderedDict[str, tuple[hci.Address, str | None]] = OrderedDict()
        self._claimed: weakref.WeakSet[Connection] = weakref.WeakSet()
        self._background: set[asyncio.Task[None]] = set()

    # -- life cycle -------------------------------------------------------------------

    @classmethod
    async def open(
        cls,
        transport_spec: str,
        *,
        static_address: str = DEFAULT_STATIC_ADDRESS,
        name: str = DEFAULT_NAME,
        keystore: KeyStore | None = None,
        pairing: PairingPolicy | None = None,
    ) -> BumbleHost:
        """Open the transport and power the controller on.

        Raises:
            ValueError: ``static_address`` is not a random static address.
            BleLinkError: the transport cannot be opened or the controller does not
                initialise within :data:`HCI_OPEN_TIMEOUT_S`.
        """
        address = hci.Address(static_address, hci.Address.RANDOM_DEVICE_ADDRESS)
        if not address.is_static:
            raise ValueError("the hub address must be a random static address (MSBs 0b11)")
        host = cls(transport_spec, address, name, keystore, pairing or PairingPolicy())
        await host._power_on()
        return host

    async def _power_on(self) -> None:
        kind = self.transport_spec.split(":", 1)[0]
        try:
            async with asyncio.timeout(HCI_OPEN_TIMEOUT_S):
                transport = await open_transport(self.transport_spec)
                try:
                    device = Device(
                        name=self.name,
                        address=self.static_address,
                        host=Host(transport.source, transport.sink),
                    )
                    if self._keystore is not None:
                        device.keystore = self._keystore
                    policy = self.pairing
                    device.pairing_config_factory = lambda _connection: PairingConfig(
                        sc=policy.secure_connections,
                        mitm=policy.mitm,
                        bonding=policy.bonding,
                        delegate=_HubPairingDelegate(policy),
                    )
                    await device.power_on()
                except BaseException:
                    await transport.close()
                    raise
        except TimeoutError:
            log.warning("ble_hci_open_timeout", transport=kind, limit_s=HCI_OPEN_TIMEOUT_S)
            raise BleLinkError(f"HCI transport '{kind}' did not initialise") from None
        except (OSError, BaseBumbleError) as exc:
            log.warning("ble_hci_open_failed", transport=kind, error=type(exc).__name__)
            raise BleLinkError(f"HCI transport '{kind}' cannot be opened") from None

        self._transport, self._device, self._lost = transport, device, False
        device.on(Device.EVENT_CONNECTION, self._on_connection)
        terminated = getattr(transport.source, "terminated", None)
        if isinstance(terminated, asyncio.Future):
            terminated.add_done_callback(lambda _f: self._on_transport_lost(transport))
        log.info("ble_host_ready", transport=kind, hub=device_label(str(self.static_address)))

    def _on_transport_lost(self, transport: Transport) -> None:
        if transport is self._transport and not self._closed:
            self._lost = True
            log.warning("ble_hci_transport_lost", transport=self.transport_spec.split(":", 1)[0])

    async def ensure_ready(self) -> Device:
        """The powered-on device, reopening the transport first if it was lost.

        Raises:
            BleLinkError: closed, or the transport cannot be reopened.
        """
        async with self._ready_lock:
            if self._closed:
                raise BleLinkError("the Bluetooth host is closed")
            if self._lost or self._device is None:
                await self._release()
                await self._power_on()
            assert self._device is not None
            return self._device

    @property
    def device(self) -> Device | None:
        """The powered-on device, or ``None`` when closed or the transport is lost."""
        return None if (self._closed or self._lost) else self._device

    async def close(self) -> None:
        """Disconnect every connection, stop scanning, close the transport. Idempotent."""
        if self._closed:
            return
        self._closed = True
        await self._release()
        log.info("ble_host_closed")

    async def _release(self) -> None:
        device, transport = self._device, self._transport
        self._device, self._transport = None, None
        self._scan_listeners.clear()
        for task in list(self._background):
            task.cancel()
        if device is not None and not self._lost:
            try:
                async with asyncio.timeout(HCI_CLOSE_TIMEOUT_S):
                    for connection in list(device.connections.values()):
                        await connection.disconnect()
                    if device.is_scanning:
                        await device.stop_scanning()
                    await device.power_off()
            except (TimeoutError, BaseBumbleError) as exc:
                log.warning("ble_host_close_incomplete", error=type(exc).__name__)
        if transport is not None:
            await transport.close()

    # -- connections ------------------------------------------------------------------

    def claim(self, connection: Connection) -> None:
        """A client owns ``connection`` (so the orphan guard leaves it alone)."""
        self._claimed.add(connection)

    def _on_connection(self, connection: Connection) -> None:
        if connection.role == hci.Role.CENTRAL:
            asyncio.get_running_loop().call_later(ORPHAN_GRACE_S, self._drop_if_orphan, connection)

    def _drop_if_orphan(self, connection: Connection) -> None:
        device = self.device
        if connection in self._claimed or device is None:
            return
        if device.connections.get(connection.handle) is not connection:
            return
        log.warning(
            "ble_orphan_connection_dropped",
            device=device_label(connection.peer_address.to_string(with_type_qualifier=False)),
        )
        task = asyncio.create_task(self._disconnect_quietly(connection), name="ble.drop_orphan")
        self._background.add(task)
        task.add_done_callback(self._background.discard)

    @staticmethod
    async def _disconnect_quietly(connection: Connection) -> None:
        try:
            async with asyncio.timeout(HCI_CLOSE_TIMEOUT_S):
                await connection.disconnect()
        except (TimeoutError, BaseBumbleError) as exc:
            log.warning("ble_orphan_disconnect_failed", error=type(exc).__name__)

    # -- scanning ---------------------------------------------------------------------

    async def add_scan_listener(self, listener: ScanListener, *, active: bool = True) -> None:
        """Deliver every advertisement to ``listener``; the first listener starts the scan."""
        async with self._scan_lock:
            device = await self.ensure_ready()
            self._scan_listeners.append(listener)
            if len(self._scan_listeners) == 1:
                device.on(Device.EVENT_ADVERTISEMENT, self._on_advertisement)
                try:
                    await device.start_scanning(active=active, filter_duplicates=False)
                except BaseException:
                    self._scan_listeners.remove(listener)
                    device.remove_listener(Device.EVENT_ADVERTISEMENT, self._on_advertisement)
                    raise

    async def remove_scan_listener(self, listener: ScanListener) -> None:
        """Stop delivering to ``listener``; the last listener to leave stops the scan."""
        async with self._scan_lock:
            if listener not in self._scan_listeners:
                return
            self._scan_listeners.remove(listener)
            device = self.device
            if self._scan_listeners or device is None:
                return
            device.remove_listener(Device.EVENT_ADVERTISEMENT, self._on_advertisement)
            if device.is_scanning:
                await device.stop_scanning()

    def _on_advertisement(self, advertisement: Advertisement) -> None:
        for listener in list(self._scan_listeners):
            listener(advertisement)

    # -- peers ------------------------------------------------------------------------

    def remember(self, address: hci.Address, name: str | None) -> None:
        """Note a peer's address type (and name) from its advertisement; bounded LRU."""
        key = address.to_string(with_type_qualifier=False)
        known = self._peers.pop(key, None)
        if name is None and known is not None:
            name = known[1]
        self._peers[key] = (address, name)
        while len(self._peers) > MAX_REMEMBERED_PEERS:
            self._peers.popitem(last=False)

    def known_peer(self, address: str) -> tuple[hci.Address, str | None] | None:
        """The remembered address (with its type) and name for ``AA:BB:CC:DD:EE:FF``."""
        return self._peers.get(address.upper())


# ---------------------------------------------------------------------------------------
# Registry: the bleak backend classes find the host of their transport here.
# ---------------------------------------------------------------------------------------

_hosts: dict[str, tuple[BumbleHost, int]] = {}


def registered_host(transport_spec: str) -> BumbleHost | None:
    """The open host for ``transport_spec``, if :func:`bumble_host` opened one."""
    entry = _hosts.get(transport_spec)
    return entry[0] if entry else None


@asynccontextmanager
async def bumble_host(
    transport_spec: str,
    *,
    static_address: str = DEFAULT_STATIC_ADDRESS,
    name: str = DEFAULT_NAME,
    keystore: KeyStore | None = None,
    pairing: PairingPolicy | None = None,
) -> AsyncIterator[BumbleHost]:
    """Open (or share, when already open) the host of ``transport_spec``; close it on exit.

    A nested use for the same transport shares the first one's host and ignores its own
    options; the host closes when the outermost use exits.

    Raises:
        BleLinkError: the transport cannot be opened.
    """
    entry = _hosts.get(transport_spec)
    if entry is None:
        host = await BumbleHost.open(
            transport_spec,
            static_address=static_address,
            name=name,
            keystore=keystore,
            pairing=pairing,
        )
        _hosts[transport_spec] = (host, 1)
    else:
        host = entry[0]
        _hosts[transport_spec] = (host, entry[1] + 1)
    try:
        yield host
    finally:
        current_host, users = _hosts[transport_spec]
        if users > 1:
            _hosts[transport_spec] = (current_host, users - 1)
        else:
            del _hosts[transport_spec]
            await current_host.close()
