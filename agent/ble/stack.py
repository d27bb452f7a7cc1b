"""The Bluetooth stack under bleak, chosen by ``ble.stack``: BlueZ (bleak's default) or Bumble.

Configuration string (``[ble] stack`` in the hub's TOML)::

    "bluez"                      bleak's BlueZ backend over D-Bus (a Raspberry Pi)
    "bumble:<transport>"         our Bumble backend on any Bumble transport spec, e.g.
                                 "bumble:tcp-client:127.0.0.1:7001"  (the virtual home)
                                 "bumble:usb:0"                     (a USB HCI dongle)
                                 "bumble:serial:/dev/ttyACM0,1000000"  (an HCI-UART board)

The daemon opens the stack once (:meth:`BleStack.open`) and hands the opened
:class:`BleStack` to each session, which passes ``scanner_backend``/``client_backend`` to
``bleak.BleakScanner``/``bleak.BleakClient`` as their documented ``backend=`` argument
(``None``: bleak picks its platform backend). :func:`backends_for` gives the same pair from
the configuration string alone.
"""

from __future__ import annotations

import asyncio
import weakref
from collections.abc import AsyncIterator, Callable, Iterable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Final, Literal, Protocol

import structlog
from bleak.backends.client import BaseBleakClient
from bleak.backends.scanner import BaseBleakScanner

from agent.errors import BleStackUnavailableError, ConfigError

if TYPE_CHECKING:
    # Bumble is imported only when a ``bumble:`` stack is opened: a BlueZ hub never loads it
    # (it is most of the agent's start time and memory).
    from bumble.keys import KeyStore

    from agent.ble.bumble_host import BumbleHost, PairingPolicy
    from agent.config import DeviceConfig

log = structlog.get_logger(__name__)

BUMBLE_PREFIX: Final = "bumble:"
STACK_KEY: Final = "ble.stack"
BONDS_FILE: Final = "bonds.json"
"""The Bumble stack's bonds, in ``hub.state_dir`` (mode 0600)."""


@dataclass(frozen=True, slots=True)
class StackSpec:
    """A parsed ``ble.stack`` value.

    Attributes:
        kind: ``"bluez"`` or ``"bumble"``.
        transport: the Bumble transport spec (``"tcp-client:127.0.0.1:7001"``), or ``None``.
    """

    kind: Literal["bluez", "bumble"]
    transport: str | None = None

    @property
    def transport_kind(self) -> str | None:
        """The transport's scheme alone (``"tcp-client"``), for logs."""
        return self.transport.split(":", 1)[0] if self.transport else None


def parse_stack(stack: str) -> StackSpec:
    """Parse ``"bluez"`` or ``"bumble:<transport>"``.

    Raises:
        ConfigError: anything else (key ``ble.stack``).
    """
    if stack == "bluez":
        return StackSpec("bluez")
    if stack.startswith(BUMBLE_PREFIX) and len(stack) > len(BUMBLE_PREFIX):
        return StackSpec("bumble", stack[len(BUMBLE_PREFIX) :])
    raise ConfigError(
        STACK_KEY,
        STACK_KEY,
        "must be 'bluez' or 'bumble:<transport>' (e.g. 'bumble:tcp-client:127.0.0.1:7001')",
    )


def backends_for(
    stack: str,
) -> tuple[type[BaseBleakScanner] | None, type[BaseBleakClient] | None]:
    """bleak's ``backend=`` classes for a ``ble.stack`` value: ``(None, None)`` for BlueZ.

    The Bumble classes find their host when used, so the stack must be open
    (:meth:`BleStack.open`) by then.

    Raises:
        ConfigError: not a valid ``ble.stack`` value.
    """
    spec = parse_stack(stack)
    if spec.transport is None:
        return None, None
    from agent.ble.bumble_backend import backend_classes

    return backend_classes(spec.transport)


def first_contact_pairing(devices: Iterable[DeviceConfig]) -> Callable[[str], bool]:
    """The daemon's ``may_pair``: a new bond only with an allow-listed ``first_contact``
    device (a ``required`` device was bonded by ``homehub pair`` and is only ever encrypted
    with that bond; ``none`` never pairs; an unknown address never)."""
    allowed = frozenset(d.address.upper() for d in devices if d.pairing_mode == "first_contact")
    return lambda address: address.upper() in allowed


class StopListener(Protocol):
    """A session that can end early and normally (:meth:`BleStack.request_stop`)."""

    def end_now(self) -> None:
        """End as if the session deadline had passed now."""


class BleStack:
    """An opened Bluetooth stack: the bleak backends to use and, for Bumble, its host."""

    def __init__(
        self,
        spec: StackSpec,
        scanner_backend: type[BaseBleakScanner] | None,
        client_backend: type[BaseBleakClient] | None,
        host: BumbleHost | None,
    ) -> None:
        self.spec = spec
        self.scanner_backend = scanner_backend
        self.client_backend = client_backend
        self.host = host
        self.stopping = asyncio.Event()
        """Set by :meth:`request_stop`: sessions end as at their deadline (disconnect, hand
        on what they received) and no new one starts."""
        self._listeners: weakref.WeakSet[StopListener] = weakref.WeakSet()

    def add_stop_listener(self, listener: StopListener) -> None:
        """Have ``listener.end_now()`` called by :meth:`request_stop` (held weakly: a session
        that ended is forgotten with it)."""
        self._listeners.add(listener)

    def request_stop(self) -> None:
        """Ask every session on this stack to end now, normally (the daemon is stopping)."""
        self.stopping.set()
        for listener in list(self._listeners):
            listener.end_now()

    async def is_bonded(self, address: str) -> bool:
        """Whether this stack holds a bond with ``AA:BB:CC:DD:EE:FF`` (on BlueZ: asked over
        D-Bus, :mod:`agent.ble.bluez_devices`).

        Raises:
            BleStackUnavailableError: BlueZ cannot be asked (no D-Bus, no BlueZ, no adapter).
        """
        if self.host is None:
            from agent.ble.bluez_devices import open_adapter

            async with open_adapter() as adapter:
                return await adapter.is_bonded(address)
        return await self.host.is_bonded(address)

    async def power_cycle(self) -> None:
        """Power-cycle the adapter (the scan watchdog's last step): Bumble's controller is
        reset through its HCI transport; BlueZ's adapter has ``Powered`` set off and on.

        Raises:
            BleStackUnavailableError: BlueZ cannot be asked.
            BleLinkError: the Bumble transport cannot be reopened.
        """
        if self.host is None:
            from agent.ble.bluez_devices import open_adapter

            async with open_adapter() as adapter:
                await adapter.power_cycle()
            return
        await self.host.power_cycle()

    async def remove_bond(self, address: str) -> bool:
        """Delete the bond with ``AA:BB:CC:DD:EE:FF`` (Bumble only); whether there was one.

        Raises:
            BleStackUnavailableError: on BlueZ (remove it through BlueZ's D-Bus API).
        """
        if self.host is None:
            raise BleStackUnavailableError("bonds on BlueZ are kept by BlueZ, not this stack")
        return await self.host.remove_bond(address)

    @classmethod
    @asynccontextmanager
    async def open(
        cls,
        stack: str,
        *,
        static_address: str | None = None,
        keystore: KeyStore | None = None,
        pairing: PairingPolicy | None = None,
        bonds_path: Path | None = None,
        may_pair: Callable[[str], bool] | None = None,
    ) -> AsyncIterator[BleStack]:
        """Open the stack for the daemon's lifetime; closes the Bumble host on exit.

        The daemon::

            BleStack.open(cfg.ble.stack,
                          bonds_path=cfg.hub.state_dir / BONDS_FILE,
                          may_pair=first_contact_pairing(cfg.devices))

        Args:
            stack: the ``ble.stack`` value.
            static_address: the hub's random static address on a Bumble controller (default:
                :data:`agent.ble.bumble_host.DEFAULT_STATIC_ADDRESS`).
            keystore: where Bumble keeps bonding keys (default: ``bonds_path``, else memory).
            pairing: how the hub pairs on Bumble (default: Just Works, nobody to ask).
            bonds_path: the persisted bonds (Bumble's JSON key store, mode 0600, its
                directory created 0700), so a restart does not mean pairing again.
            may_pair: whether a new bond may be made with an address (replaces
                ``pairing.may_pair``); ``None``: as ``pairing`` says (default: anyone).

        Raises:
            ConfigError: not a valid ``ble.stack`` value.
            KeyMaterialError: ``bonds_path`` or its directory is not private, or unreadable.
            BleLinkError: the Bumble transport cannot be opened (transient: retry later).
        """
        spec = parse_stack(stack)
        if spec.transport is None:
            log.info("ble_stack_open", stack="bluez")
            yield cls(spec, None, None, None)
            return
        from dataclasses import replace

        from agent.ble.bumble_backend import backend_classes
        from agent.ble.bumble_host import (
            DEFAULT_STATIC_ADDRESS,
            PairingPolicy,
            bumble_host,
            open_bond_store,
        )

        scanner, client = backend_classes(spec.transport)
        address = static_address or DEFAULT_STATIC_ADDRESS
        if keystore is None and bonds_path is not None:
            keystore = await open_bond_store(bonds_path, address)
        if may_pair is not None:
            pairing = replace(pairing or PairingPolicy(), may_pair=may_pair)
        async with bumble_host(
            spec.transport,
            static_address=address,
            keystore=keystore,
            pairing=pairing,
        ) as host:
            log.info("ble_stack_open", stack="bumble", transport=spec.transport_kind)
            yield cls(spec, scanner, client, host)
