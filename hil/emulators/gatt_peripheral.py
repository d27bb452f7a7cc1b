"""The GATT-server life cycle every emulated peripheral shares, as base classes.

:class:`GattPeripheral` holds what a cuff, a glucometer and an oximeter do alike:

- Start and stop: add the device's own service(s), the Device Information Service, with a
  ``clock`` the Current Time Service and with a ``battery_level`` the Battery Service
  (:mod:`hil.emulators.peripheral`; off by default); power on; advertise
  (flags, complete local name, the service's 16-bit UUID) while there is something to hand
  over; stop: cancel its tasks, disconnect, stop advertising, power off.
- Connection bookkeeping, one central at a time: ``connections``, ``disconnected``, and
  advertising again once the link ends.
- Pairing (:mod:`hil.emulators.pairing`): ``pairing=`` (or :func:`hil.emulators.pairing.configure`
  before ``start``) picks Just Works, a passkey the device displays or numeric comparison,
  and whether it advertises in pairing mode (LE General Discoverable); ``pairings`` and
  ``pairing_failures`` count what happened (without it: Bumble's default, Just Works).
- Fault injection: :meth:`GattPeripheral.drop_link` ends the link with reason 0x08
  "Connection Timeout", as a radio loss looks to the central (``link_drops``).
- CCCD look-up, and an indication that waits for its ATT Handle Value Confirmation or the
  end of the link (Core Spec Vol 3 Part F §3.4.7.2-3: one outstanding indication per
  bearer), ending the link when the ATT transaction times out (§3.3.3).

:class:`HeldReadingsPeripheral` adds a device that holds readings and indicates them, one at
a time, once the central enables indications, forgetting each once confirmed (with
``delete_on_confirm``): the cuff's stored readings, the oximeter's spot-checks.

Each emulator keeps only its own service's logic and wire encoders; nothing here depends on
``drivers/``.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
from collections.abc import Coroutine, Sequence
from dataclasses import dataclass
from typing import Any, ClassVar, Final, Generic, SupportsBytes, TypeVar

from bumble import hci
from bumble.device import Connection, Device
from bumble.gatt import Characteristic, Service

from hil.emulators.pairing import EmulatedPairing, install, with_flags
from hil.emulators.peripheral import (
    DeviceInformation,
    EmulatedClock,
    advertising_data,
    battery_service,
    current_time_service,
    device_information_service,
)

logger = logging.getLogger(__name__)

CCCD_NOTIFY: Final = 0x01
"""Client Characteristic Configuration bit 0: notifications enabled (Vol 3 Part G §3.3.3.3)."""
CCCD_INDICATE: Final = 0x02
"""Client Characteristic Configuration bit 1: indications enabled (Vol 3 Part G §3.3.3.3)."""

DEFAULT_ADVERTISING_INTERVAL_MS: Final = 100.0
"""Within the 20 ms-1.28 s range devices use while they have data to hand over."""


class GattPeripheral:
    """A Bumble peripheral's shared life cycle (not yet powered on); subclasses add a service.

    Args:
        device: the peripheral's Bumble device (see :class:`hil.virtual_radio.VirtualRadio`).
        service_uuid: the 16-bit UUID of the device's own service, advertised.
        info: what DIS exposes.
        clock: the device's clock, exposed as CTS 0x1805; None: no CTS.
        local_name: the advertised complete local name.
        advertising_interval_ms: the advertising interval.
        pairing: how it pairs and whether it advertises in pairing mode (``None``:
            Bumble's default pairing, advertised as generally discoverable).
        battery_level: expose the Battery Service with this level (%); ``None``: no Battery
            Service. :attr:`battery_level` may be changed while the device runs (a service
            present at start stays; a level set only after start adds none).
    """

    #: Prefix of the task names and log messages ("cuff", "oximeter", ...).
    NAME: ClassVar[str] = "peripheral"

    def __init__(
        self,
        device: Device,
        *,
        service_uuid: int,
        info: DeviceInformation,
        clock: EmulatedClock | None,
        local_name: str,
        advertising_interval_ms: float = DEFAULT_ADVERTISING_INTERVAL_MS,
        pairing: EmulatedPairing | None = None,
        battery_level: int | None = None,
    ) -> None:
        self.device = device
        #: The Battery Level read now (%); None at start: no Battery Service.
        self.battery_level = battery_level
        self.pairing = pairing
        if pairing is not None:
            install(device, pairing)
        self.service_uuid = service_uuid
        self.info = info
        self.clock = clock
        self.local_name = local_name
        self.advertising_interval_ms = advertising_interval_ms

        self._connection: Connection | None = None
        self._link_gone: asyncio.Future[int] | None = None
        self._tasks: set[asyncio.Task[Any]] = set()
        self._started = False
        self._advertising_lock = asyncio.Lock()
        device.on(Device.EVENT_CONNECTION, self._on_connection)

        #: Connections accepted.
        self.connections = 0
        #: Links dropped by fault injection.
        self.link_drops = 0
        #: Indications sent and awaited (confirmed or not).
        self.indications_sent = 0
        #: Set whenever the central disconnects (cleared at the next connection).
        self.disconnected = asyncio.Event()
        #: Pairings completed (keys exchanged), and pairings that failed (SMP reasons).
        self.pairings = 0
        self.pairing_failures: list[int] = []

    # -- for subclasses ---------------------------------------------------------------------

    def _own_service(self) -> Service:
        """The device's own service (called once, by :meth:`start`)."""
        raise NotImplementedError

    def _has_data(self) -> bool:
        """Whether to advertise now (the default: always)."""
        return True

    def _connected(self, connection: Connection) -> None:
        """A central connected (bookkeeping done)."""

    def _disconnected(self) -> None:
        """The central disconnected (before ``disconnected`` is set)."""

    def _battery(self) -> int:
        return self.battery_level or 0

    # -- life cycle -------------------------------------------------------------------------

    async def start(self) -> None:
        """Add the services, power on, and advertise (if there is anything to hand over)."""
        self.device.add_services(
            [
                self._own_service(),
                device_information_service(self.info),
                *([current_time_service(self.clock)] if self.clock is not None else []),
                *([battery_service(self._battery)] if self.battery_level is not None else []),
            ]
        )
        await self.device.power_on()
        self._started = True
        if self._has_data():
            await self._advertise()

    async def stop(self) -> None:
        """Stop procedures and advertising; disconnect; power off."""
        self._started = False
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        connection = self._connection
        if connection is not None:
            await self._terminate(connection, hci.HCI_REMOTE_USER_TERMINATED_CONNECTION_ERROR)
        await self.device.stop_advertising()
        await self.device.power_off()

    async def _advertise(self) -> None:
        # Serialised and idempotent: a disconnection and a new measurement may both ask.
        async with self._advertising_lock:
            if self.device.is_advertising or self._connection is not None:
                return
            data = advertising_data(self.local_name, [self.service_uuid])
            if self.pairing is not None:
                data = with_flags(data, self.pairing.flags)
            await self.device.start_advertising(
                advertising_data=data,
                scan_response_data=b"",
                advertising_interval_min=self.advertising_interval_ms,
                advertising_interval_max=self.advertising_interval_ms,
            )

    def _spawn(self, coro: Coroutine[Any, Any, Any], name: str) -> asyncio.Task[Any]:
        """Run ``coro`` as a task named ``<NAME>.<name>``, cancelled by :meth:`stop`."""
        task = asyncio.create_task(coro, name=f"{self.NAME}.{name}")
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return task

    # -- connection -------------------------------------------------------------------------

    def _on_connection(self, connection: Connection) -> None:
        self.connections += 1
        self._connection = connection
        self._link_gone = asyncio.get_running_loop().create_future()
        self.disconnected.clear()
        self._connected(connection)
        connection.on(Connection.EVENT_DISCONNECTION, self._on_disconnection)
        connection.on(Connection.EVENT_PAIRING, self._on_pairing)
        connection.on(Connection.EVENT_PAIRING_FAILURE, self.pairing_failures.append)

    def _on_pairing(self, _keys: object) -> None:
        self.pairings += 1

    def _on_disconnection(self, reason: int) -> None:
        if self._link_gone is not None and not self._link_gone.done():
            self._link_gone.set_result(reason)
        self._connection = None
        self._disconnected()
        self.disconnected.set()
        if self._started and self._has_data():
            self._spawn(self._advertise(), "advertise")

    async def drop_link(self) -> None:
        """Fault injection: end the link as a radio loss does (reason 0x08 to the central)."""
        connection = self._connection
        if connection is not None:
            self.link_drops += 1
            await self._terminate(connection, hci.HCI_CONNECTION_TIMEOUT_ERROR)

    async def _terminate(self, connection: Connection, reason: int) -> None:
        if self._link_gone is not None and self._link_gone.done():
            return
        await connection.disconnect(reason)

    # -- CCCDs and indications ----------------------------------------------------------------

    def _cccd(self, connection: Connection, characteristic: Characteristic[bytes]) -> int:
        """The first octet of the central's CCCD for ``characteristic`` (0: none written)."""
        cccds = self.device.gatt_server.subscribers.get(connection, {})
        value = cccds.get(characteristic.handle, b"\x00\x00")
        return value[0] if len(value) == 2 else 0

    async def _indicate_confirmed(
        self, connection: Connection, characteristic: Characteristic[bytes], value: bytes
    ) -> bool:
        """Indicate ``value``; True once confirmed, False if the link or subscription went."""
        gone = self._link_gone
        if gone is None or gone.done():
            return False

        async def send_and_wait() -> bool:
            # The subscription check and the send inside indicate_subscriber run in one step
            # of this task (nothing yields between them), so Bumble cannot skip the send
            # silently, as it does for an unsubscribed or disconnected bearer: that must not
            # count as a confirmation.
            if not self._cccd(connection, characteristic) & CCCD_INDICATE:
                return False
            self.indications_sent += 1
            await self.device.indicate_subscriber(connection, characteristic, value)
            return True

        sending = asyncio.create_task(send_and_wait(), name=f"{self.NAME}.indicate")
        await asyncio.wait((sending, gone), return_when=asyncio.FIRST_COMPLETED)
        if not sending.done():
            sending.cancel()
            return False
        if sending.cancelled():
            return False
        error = sending.exception()
        if error is not None:
            # The ATT transaction timed out (Vol 3 Part F §3.3.3): the bearer is unusable.
            logger.warning("%s: indication not confirmed (%s)", self.NAME, type(error).__name__)
            await self._terminate(connection, hci.HCI_REMOTE_USER_TERMINATED_CONNECTION_ERROR)
            return False
        return sending.result()


Reading = TypeVar("Reading", bound=SupportsBytes)


@dataclass(eq=False, slots=True)
class _Held(Generic[Reading]):
    """A held reading, with an identity (two equal readings are still two readings)."""

    reading: Reading
    serial: int


class HeldReadingsPeripheral(GattPeripheral, Generic[Reading]):
    """A peripheral that holds readings and indicates them on one characteristic.

    Once the central enables *indications* on ``characteristic`` (notifications alone
    deliver nothing), each held reading not yet confirmed on this connection is indicated,
    one at a time, each after the previous one's confirmation; with ``delete_on_confirm`` a
    reading is forgotten once confirmed, so a dropped link never loses one, only possibly
    sends it twice. With nothing held the device stops advertising until a new reading,
    unless ``advertise_when_empty``.

    Args:
        readings: the held readings, oldest first.
        characteristic: the Indicate characteristic the readings go out on.
        delete_on_confirm: forget a reading once its indication is confirmed.
        advertise_when_empty: keep advertising when no reading is held.
        **options: for :class:`GattPeripheral`.
    """

    def __init__(
        self,
        device: Device,
        readings: Sequence[Reading],
        *,
        characteristic: Characteristic[bytes],
        delete_on_confirm: bool,
        advertise_when_empty: bool,
        service_uuid: int,
        info: DeviceInformation,
        clock: EmulatedClock | None,
        local_name: str,
        advertising_interval_ms: float = DEFAULT_ADVERTISING_INTERVAL_MS,
    ) -> None:
        super().__init__(
            device,
            service_uuid=service_uuid,
            info=info,
            clock=clock,
            local_name=local_name,
            advertising_interval_ms=advertising_interval_ms,
        )
        self.delete_on_confirm = delete_on_confirm
        self.advertise_when_empty = advertise_when_empty
        self._held_characteristic = characteristic
        self._serials = itertools.count()
        self._held: list[_Held[Reading]] = [_Held(r, next(self._serials)) for r in readings]
        self._confirmed_here: set[int] = set()
        self._delivery: asyncio.Task[None] | None = None
        characteristic.on(Characteristic.EVENT_SUBSCRIPTION, self._on_held_subscription)

        #: The values whose indication on ``characteristic`` was confirmed, in order
        #: (duplicates included).
        self.confirmed_values: list[bytes] = []
        #: Set when a central enables indications on ``characteristic``.
        self.subscribed = asyncio.Event()
        #: Set when a delivery run ended with every held reading confirmed.
        self.held_confirmed = asyncio.Event()

    # -- what the device holds ------------------------------------------------------------------

    @property
    def stored(self) -> tuple[Reading, ...]:
        """The readings held now, oldest first."""
        return tuple(h.reading for h in self._held)

    def encoded(self) -> list[bytes]:
        """The values of the held readings, in the order they will be indicated."""
        return [bytes(h.reading) for h in self._held]

    async def _hold(self, reading: Reading) -> None:
        """A new reading: hold it, indicate it if subscribed, else advertise."""
        self._held.append(_Held(reading, next(self._serials)))
        self.held_confirmed.clear()
        if self._connection is not None:
            self._start_delivery(self._connection)
        elif self._started:
            await self._advertise()

    def _has_data(self) -> bool:
        return bool(self._held) or self.advertise_when_empty

    async def _reading_confirmed(self) -> bool:
        """A held reading's indication was confirmed; False ends this delivery run."""
        return True

    # -- connection ---------------------------------------------------------------------------

    def _connected(self, connection: Connection) -> None:
        self._confirmed_here = set()
        self.subscribed.clear()

    def _disconnected(self) -> None:
        self._delivery = None

    # -- delivery -----------------------------------------------------------------------------

    def _on_held_subscription(self, bearer: Any, _notify: bool, indicate: bool) -> None:
        connection = self._connection
        if connection is not None and bearer is connection and indicate:
            self.subscribed.set()
            self._start_delivery(connection)

    def _start_delivery(self, connection: Connection) -> None:
        idle = self._delivery is None or self._delivery.done()
        if idle and self._cccd(connection, self._held_characteristic) & CCCD_INDICATE:
            self._delivery = self._spawn(self._deliver(connection), "deliver")

    async def _deliver(self, connection: Connection) -> None:
        """Indicate each held reading not yet confirmed on this connection, one at a time."""
        while True:
            pending = [h for h in self._held if h.serial not in self._confirmed_here]
            if not pending:
                self.held_confirmed.set()
                return
            held = pending[0]
            value = bytes(held.reading)
            if not await self._indicate_confirmed(connection, self._held_characteristic, value):
                return
            self._confirmed_here.add(held.serial)
            self.confirmed_values.append(value)
            if self.delete_on_confirm:
                self._held.remove(held)
            if not await self._reading_confirmed():
                return
