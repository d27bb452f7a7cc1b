"""An emulated blood-pressure cuff: a Bumble peripheral with the Blood Pressure Service 0x1810.

GATT database (Blood Pressure Service 1.0, ble-spec-facts §3 and §7):

- Blood Pressure Service 0x1810
    - Blood Pressure Measurement 0x2A35: **Indicate** only, with its CCCD (BPS §3.1).
    - Blood Pressure Feature 0x2A49: Read, uint16 (BPS §3.3).
- Device Information Service 0x180A: manufacturer, model, serial, firmware revision,
  System ID (:mod:`hil.emulators.peripheral`).
- Current Time Service 0x1805, only when given a ``clock``
  (:func:`hil.emulators.peripheral.current_time_service`).

Advertising: flags, complete local name, the 16-bit service UUID 0x1810.

Behaviour, as a real cuff after a measurement: it holds a list of stored readings. Once the
central writes the BPM CCCD with *indications* enabled (0x0002; notifications alone,
0x0001, deliver nothing, as on real cuffs), it indicates the readings one at a time, each
only after the previous indication's ATT Handle Value Confirmation (Core Spec Vol 3 Part F
§3.4.7.2-3: one outstanding indication per bearer). With ``delete_on_confirm`` a reading is
forgotten once confirmed, so a reading is never lost by a dropped link, only possibly sent
twice (real cuffs differ; some keep everything until the user erases it). When nothing is
left it stops advertising until :meth:`EmulatedCuff.add_reading` (a new measurement),
unless ``advertise_when_empty``.

Fault injection: ``drop_link_after=n`` ends the link (reason 0x08 "Connection Timeout", as a
radio loss looks to the central) right after the n-th confirmation of a connection;
:meth:`EmulatedCuff.drop_link` does the same on demand.

For tests: counters (``confirmations``, ``indications_sent``, ``connections``,
``link_drops``), the confirmed values in order (``confirmed_values``), and events to await
(``subscribed``, ``all_confirmed``, :meth:`EmulatedCuff.wait_for_confirmations`): never sleep.
"""

from __future__ import annotations

import asyncio
import enum
import itertools
import logging
from collections.abc import Sequence
from dataclasses import dataclass
from decimal import Decimal
from typing import Any, Final

from bumble import hci
from bumble.core import UUID
from bumble.device import Connection, Device
from bumble.gatt import Characteristic, Service

from hil.emulators.encoding import SFLOAT_NAN, DateTime, sfloat
from hil.emulators.peripheral import (
    DeviceInformation,
    EmulatedClock,
    advertising_data,
    current_time_service,
    device_information_service,
    fixed_value,
)

logger = logging.getLogger(__name__)

BLOOD_PRESSURE_SERVICE: Final = 0x1810
BLOOD_PRESSURE_MEASUREMENT: Final = 0x2A35
BLOOD_PRESSURE_FEATURE: Final = 0x2A49

DEFAULT_LOCAL_NAME: Final = "HH BP Cuff"
DEFAULT_FEATURE: Final = 0x0005
"""Blood Pressure Feature: body movement detection (bit 0), irregular pulse detection (bit 2)."""

DEFAULT_ADVERTISING_INTERVAL_MS: Final = 100.0
"""Within the 20 ms-1.28 s range real cuffs use while they have data to hand over."""

CCCD_INDICATE: Final = 0x02


class PressureUnit(enum.IntEnum):
    """BPM flags bit 0 (BPS §3.1): the pressures' unit."""

    MMHG = 0
    KPA = 1


class BpmFlags(enum.IntFlag):
    """Blood Pressure Measurement flags octet (BPS §3.1, GATT XML blood_pressure_measurement)."""

    UNITS_KPA = 0x01
    TIME_STAMP_PRESENT = 0x02
    PULSE_RATE_PRESENT = 0x04
    USER_ID_PRESENT = 0x08
    MEASUREMENT_STATUS_PRESENT = 0x10


@dataclass(frozen=True, slots=True)
class BpReading:
    """One stored blood-pressure reading, and its 0x2A35 encoding (``bytes(reading)``).

    Field order on the wire (BPS §3.1): flags, systolic, diastolic, mean arterial pressure
    (3 x SFLOAT in ``unit``), time stamp (Date Time, 7 octets), pulse rate (SFLOAT, beats
    per minute), user id (uint8, 0xFF = unknown user), measurement status (uint16); the last
    four present when given. A MAP of ``None`` is sent as SFLOAT NaN ("not computed").
    """

    systolic: Decimal | int
    diastolic: Decimal | int
    mean_arterial_pressure: Decimal | int | None
    unit: PressureUnit = PressureUnit.MMHG
    time_stamp: DateTime | None = None
    pulse_rate: Decimal | int | None = None
    user_id: int | None = None
    measurement_status: int | None = None

    def __post_init__(self) -> None:
        if self.user_id is not None and not 0 <= self.user_id <= 0xFF:
            raise ValueError("user id is a uint8")
        if self.measurement_status is not None and not 0 <= self.measurement_status <= 0xFFFF:
            raise ValueError("measurement status is 16 bits")

    @property
    def flags(self) -> BpmFlags:
        """The flags octet the present fields call for."""
        flags = BpmFlags(0)
        if self.unit is PressureUnit.KPA:
            flags |= BpmFlags.UNITS_KPA
        if self.time_stamp is not None:
            flags |= BpmFlags.TIME_STAMP_PRESENT
        if self.pulse_rate is not None:
            flags |= BpmFlags.PULSE_RATE_PRESENT
        if self.user_id is not None:
            flags |= BpmFlags.USER_ID_PRESENT
        if self.measurement_status is not None:
            flags |= BpmFlags.MEASUREMENT_STATUS_PRESENT
        return flags

    def __bytes__(self) -> bytes:
        """The Blood Pressure Measurement value (7 to 19 octets)."""
        mean = (
            SFLOAT_NAN
            if self.mean_arterial_pressure is None
            else sfloat(self.mean_arterial_pressure)
        )
        parts = [bytes([self.flags]), sfloat(self.systolic), sfloat(self.diastolic), mean]
        if self.time_stamp is not None:
            parts.append(bytes(self.time_stamp))
        if self.pulse_rate is not None:
            parts.append(sfloat(self.pulse_rate))
        if self.user_id is not None:
            parts.append(bytes([self.user_id]))
        if self.measurement_status is not None:
            parts.append(self.measurement_status.to_bytes(2, "little"))
        return b"".join(parts)

    def __repr__(self) -> str:
        # Reading values are PHI in the hub's logs; test output may name a reading only.
        return f"BpReading(flags=0x{int(self.flags):02X})"


def example_readings() -> list[BpReading]:
    """Three readings of one morning, as a cuff stores them (values chosen for tests/demo)."""
    return [
        BpReading(128, 82, 97, time_stamp=DateTime(2025, 3, 14, 7, 58, 10), pulse_rate=71,
                  user_id=1, measurement_status=0x0000),
        BpReading(131, 85, 100, time_stamp=DateTime(2025, 3, 14, 8, 1, 42), pulse_rate=74,
                  user_id=1, measurement_status=0x0004),
        BpReading(Decimal("17.2"), Decimal("11.0"), None, unit=PressureUnit.KPA,
                  time_stamp=DateTime(2025, 3, 14, 8, 5, 3), pulse_rate=69),
    ]  # fmt: skip


@dataclass(eq=False, slots=True)
class _Held:
    """A stored reading, with an identity (two equal readings are still two readings)."""

    reading: BpReading
    serial: int


class EmulatedCuff:
    """A blood-pressure cuff on a Bumble :class:`~bumble.device.Device` (not yet powered on).

    Args:
        device: the peripheral's Bumble device (its controller on a link; see
            :class:`hil.virtual_radio.VirtualRadio`).
        readings: the stored readings, oldest first.
        info: what DIS exposes.
        local_name: the advertised complete local name.
        feature: the Blood Pressure Feature value (uint16).
        delete_on_confirm: forget a reading once its indication is confirmed.
        drop_link_after: fault injection: drop the link after this many confirmations of
            a connection.
        advertise_when_empty: keep advertising when no reading is held.
        advertising_interval_ms: the advertising interval.
        clock: the cuff's clock, exposed as CTS 0x1805; None: no CTS.
    """

    def __init__(
        self,
        device: Device,
        readings: Sequence[BpReading],
        *,
        info: DeviceInformation | None = None,
        local_name: str = DEFAULT_LOCAL_NAME,
        feature: int = DEFAULT_FEATURE,
        delete_on_confirm: bool = True,
        drop_link_after: int | None = None,
        advertise_when_empty: bool = False,
        advertising_interval_ms: float = DEFAULT_ADVERTISING_INTERVAL_MS,
        clock: EmulatedClock | None = None,
    ) -> None:
        self.device = device
        self.clock = clock
        self.info = info or DeviceInformation()
        self.local_name = local_name
        self.feature = feature
        self.delete_on_confirm = delete_on_confirm
        self.drop_link_after = drop_link_after
        self.advertise_when_empty = advertise_when_empty
        self.advertising_interval_ms = advertising_interval_ms

        self._serials = itertools.count()
        self._held: list[_Held] = [_Held(r, next(self._serials)) for r in readings]
        self._measurement: Characteristic[bytes] = Characteristic(
            UUID.from_16_bits(BLOOD_PRESSURE_MEASUREMENT, "Blood Pressure Measurement"),
            Characteristic.Properties.INDICATE,
            Characteristic.Permissions(0),  # not readable: indicate only (BPS §3.1)
            fixed_value(b"", readable=False),
        )
        self._feature_characteristic: Characteristic[bytes] = Characteristic(
            UUID.from_16_bits(BLOOD_PRESSURE_FEATURE, "Blood Pressure Feature"),
            Characteristic.Properties.READ,
            Characteristic.READABLE,
            fixed_value(feature.to_bytes(2, "little")),
        )
        self._measurement.on(Characteristic.EVENT_SUBSCRIPTION, self._on_subscription)
        device.on(Device.EVENT_CONNECTION, self._on_connection)

        self._connection: Connection | None = None
        self._link_gone: asyncio.Future[int] | None = None
        self._confirmed_here: set[int] = set()
        self._delivery: asyncio.Task[None] | None = None
        self._tasks: set[asyncio.Task[Any]] = set()
        self._started = False
        self._advertising_lock = asyncio.Lock()

        #: Total ATT confirmations received, over all connections.
        self.confirmations = 0
        #: Indications sent (confirmed or not).
        self.indications_sent = 0
        #: Connections accepted.
        self.connections = 0
        #: Links dropped by fault injection.
        self.link_drops = 0
        #: The 0x2A35 values whose indication was confirmed, in order (duplicates included).
        self.confirmed_values: list[bytes] = []
        #: Set when a central enables indications on 0x2A35.
        self.subscribed = asyncio.Event()
        #: Set when a delivery run ended with every held reading confirmed; cleared by a new
        #: connection or measurement while readings are held.
        self.all_confirmed = asyncio.Event()
        #: Set whenever the central disconnects (cleared at the next connection).
        self.disconnected = asyncio.Event()
        self._confirmation_changed = asyncio.Event()

    # -- what the cuff holds --------------------------------------------------------

    @property
    def stored(self) -> tuple[BpReading, ...]:
        """The readings held now, oldest first."""
        return tuple(h.reading for h in self._held)

    def encoded(self) -> list[bytes]:
        """The 0x2A35 values of the held readings, in the order they will be indicated."""
        return [bytes(h.reading) for h in self._held]

    async def add_reading(self, reading: BpReading) -> None:
        """A new measurement: hold it, indicate it if subscribed, else advertise."""
        self._held.append(_Held(reading, next(self._serials)))
        self.all_confirmed.clear()
        if self._connection is not None:
            self._start_delivery(self._connection)
        elif self._started:
            await self._advertise()

    # -- life cycle -------------------------------------------------------------------

    async def start(self) -> None:
        """Add the services, power on, and advertise (if holding readings)."""
        self.device.add_services(
            [
                Service(
                    UUID.from_16_bits(BLOOD_PRESSURE_SERVICE, "Blood Pressure"),
                    [self._measurement, self._feature_characteristic],
                ),
                device_information_service(self.info),
                *([current_time_service(self.clock)] if self.clock is not None else []),
            ]
        )
        await self.device.power_on()
        self._started = True
        if self._held or self.advertise_when_empty:
            await self._advertise()

    async def stop(self) -> None:
        """Stop delivering and advertising; disconnect; power off."""
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
            await self.device.start_advertising(
                advertising_data=advertising_data(self.local_name, [BLOOD_PRESSURE_SERVICE]),
                scan_response_data=b"",
                advertising_interval_min=self.advertising_interval_ms,
                advertising_interval_max=self.advertising_interval_ms,
            )

    def _spawn(self, coro: Any, name: str) -> asyncio.Task[Any]:
        task = asyncio.create_task(coro, name=name)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return task

    # -- connection -------------------------------------------------------------------

    def _on_connection(self, connection: Connection) -> None:
        self.connections += 1
        self._connection = connection
        self._link_gone = asyncio.get_running_loop().create_future()
        self._confirmed_here = set()
        self.disconnected.clear()
        self.subscribed.clear()
        if self._held:
            self.all_confirmed.clear()
        connection.on(Connection.EVENT_DISCONNECTION, self._on_disconnection)

    def _on_disconnection(self, reason: int) -> None:
        if self._link_gone is not None and not self._link_gone.done():
            self._link_gone.set_result(reason)
        self._connection = None
        self._delivery = None
        self.disconnected.set()
        if self._started and (self._held or self.advertise_when_empty):
            self._spawn(self._advertise(), "cuff.advertise")

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

    # -- indications ------------------------------------------------------------------

    def _on_subscription(self, bearer: Any, notify_enabled: bool, indicate_enabled: bool) -> None:
        connection = self._connection
        if connection is None or bearer is not connection:
            return
        if indicate_enabled:
            self.subscribed.set()
            self._start_delivery(connection)

    def _indications_enabled(self, connection: Connection) -> bool:
        cccds = self.device.gatt_server.subscribers.get(connection, {})
        cccd = cccds.get(self._measurement.handle, b"\x00\x00")
        return len(cccd) == 2 and bool(cccd[0] & CCCD_INDICATE)

    def _start_delivery(self, connection: Connection) -> None:
        idle = self._delivery is None or self._delivery.done()
        if idle and self._indications_enabled(connection):
            self._delivery = self._spawn(self._deliver(connection), "cuff.deliver")

    async def _deliver(self, connection: Connection) -> None:
        """Indicate each held reading not yet confirmed on this connection, one at a time."""
        while True:
            pending = [h for h in self._held if h.serial not in self._confirmed_here]
            if not pending:
                self.all_confirmed.set()
                return
            held = pending[0]
            if not await self._indicate(connection, bytes(held.reading)):
                return
            self._confirmed_here.add(held.serial)
            self.confirmations += 1
            self.confirmed_values.append(bytes(held.reading))
            if self.delete_on_confirm:
                self._held.remove(held)
            self._confirmation_changed.set()
            if (
                self.drop_link_after is not None
                and len(self._confirmed_here) >= self.drop_link_after
            ):
                await self.drop_link()
                return

    async def _indicate(self, connection: Connection, value: bytes) -> bool:
        """Indicate ``value``; True once confirmed, False if the link or subscription went."""
        gone = self._link_gone
        if gone is None or gone.done():
            return False

        async def send_and_wait() -> bool:
            # The subscription check and the send inside indicate_subscriber run in one step
            # of this task (nothing yields between them), so Bumble cannot skip the send
            # silently, as it does for an unsubscribed or disconnected bearer.
            if not self._indications_enabled(connection):
                return False
            self.indications_sent += 1
            await self.device.indicate_subscriber(connection, self._measurement, value)
            return True

        sending = asyncio.create_task(send_and_wait(), name="cuff.indicate")
        await asyncio.wait((sending, gone), return_when=asyncio.FIRST_COMPLETED)
        if not sending.done():
            sending.cancel()
            return False
        if sending.cancelled():
            return False
        error = sending.exception()
        if error is not None:
            # The ATT transaction timed out (Vol 3 Part F §3.3.3): the bearer is unusable.
            logger.warning("cuff: indication not confirmed (%s)", type(error).__name__)
            await self._terminate(connection, hci.HCI_REMOTE_USER_TERMINATED_CONNECTION_ERROR)
            return False
        return sending.result()

    async def wait_for_confirmations(self, count: int) -> None:
        """Return once ``confirmations`` reaches ``count`` (wrap in a timeout)."""
        while self.confirmations < count:
            self._confirmation_changed.clear()
            await self._confirmation_changed.wait()
