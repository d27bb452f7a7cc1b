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

Clock faults: readings normally carry the time stamp they were made with. With
``stamp_all_with`` the cuff's own clock is broken and stamps every reading (held at start or
added later) with that one Date Time instead: :data:`UNSET_TIME_STAMP` (every field 0, the
GATT Date Time's "unknown": a clock never set) or any valid value (a stuck clock).

Fault injection: ``drop_link_after=n`` ends the link (reason 0x08 "Connection Timeout", as a
radio loss looks to the central) right after the n-th confirmation of a connection;
:meth:`EmulatedCuff.drop_link` does the same on demand.

For tests: counters (``confirmations``, ``indications_sent``, ``connections``,
``link_drops``), the confirmed values in order (``confirmed_values``), and events to await
(``subscribed``, ``all_confirmed``, :meth:`EmulatedCuff.wait_for_confirmations`): never sleep.
"""

from __future__ import annotations

import asyncio
import dataclasses
import enum
from collections.abc import Sequence
from dataclasses import dataclass
from decimal import Decimal
from typing import Final

from bumble.core import UUID
from bumble.device import Connection, Device
from bumble.gatt import Characteristic, Service

from hil.emulators.encoding import SFLOAT_NAN, DateTime, sfloat
from hil.emulators.gatt_peripheral import CCCD_INDICATE as CCCD_INDICATE  # re-exported
from hil.emulators.gatt_peripheral import HeldReadingsPeripheral
from hil.emulators.peripheral import (
    DeviceInformation,
    EmulatedClock,
    read_only_characteristic,
    unreadable_characteristic,
)

BLOOD_PRESSURE_SERVICE: Final = 0x1810
BLOOD_PRESSURE_MEASUREMENT: Final = 0x2A35
BLOOD_PRESSURE_FEATURE: Final = 0x2A49

DEFAULT_LOCAL_NAME: Final = "HH BP Cuff"
DEFAULT_FEATURE: Final = 0x0005
"""Blood Pressure Feature: body movement detection (bit 0), irregular pulse detection (bit 2)."""

DEFAULT_ADVERTISING_INTERVAL_MS: Final = 100.0
"""Within the 20 ms-1.28 s range real cuffs use while they have data to hand over."""

UNSET_TIME_STAMP: Final = DateTime(0, 0, 0, 0, 0, 0)
"""Date Time with every field 0 (year, month and day 0 = unknown, GATT XML date_time): the
time stamp of a cuff whose clock was never set. Seven zero octets on the wire."""


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


class EmulatedCuff(HeldReadingsPeripheral[BpReading]):
    """A blood-pressure cuff on a Bumble :class:`~bumble.device.Device` (not yet powered on).

    Advertising, connections, link drops and the one-at-a-time delivery of held readings
    are :class:`~hil.emulators.gatt_peripheral.HeldReadingsPeripheral`'s; the cuff adds the
    Blood Pressure Service, ``confirmations`` and ``drop_link_after``.

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
        stamp_all_with: a broken clock: every reading is stamped with this Date Time instead
            of its own (:data:`UNSET_TIME_STAMP`: never set; a valid value: stuck).
        unused_as_zero: a quirk of some cuffs: a mean arterial pressure not computed is sent
            as 0 instead of the SFLOAT NaN BPS asks for.
        advertise_for_s: advertise only this long after a measurement (or after start),
            as real cuffs do (BLP: ~30 s of fast advertising), then fall silent until the next
            measurement, readings still held; ``None``: while readings are held.
    """

    NAME = "cuff"

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
        stamp_all_with: DateTime | None = None,
        advertise_for_s: float | None = None,
        unused_as_zero: bool = False,
    ) -> None:
        self.stamp_all_with = stamp_all_with
        self.unused_as_zero = unused_as_zero
        self.advertise_for_s = advertise_for_s
        self._window_ends: float | None = None
        #: Advertising windows that closed with no central having connected in them.
        self.windows_missed = 0
        self._connected_in_window = False
        readings = [self._stamped(r) for r in readings]
        self._measurement = unreadable_characteristic(  # indicate only (BPS §3.1)
            BLOOD_PRESSURE_MEASUREMENT,
            "Blood Pressure Measurement",
            Characteristic.Properties.INDICATE,
        )
        super().__init__(
            device,
            readings,
            characteristic=self._measurement,
            delete_on_confirm=delete_on_confirm,
            advertise_when_empty=advertise_when_empty,
            service_uuid=BLOOD_PRESSURE_SERVICE,
            info=info or DeviceInformation(),
            clock=clock,
            local_name=local_name,
            advertising_interval_ms=advertising_interval_ms,
        )
        self.feature = feature
        self.drop_link_after = drop_link_after
        self._feature_characteristic = read_only_characteristic(
            BLOOD_PRESSURE_FEATURE, feature.to_bytes(2, "little"), "Blood Pressure Feature"
        )

        #: Total ATT confirmations received, over all connections.
        self.confirmations = 0
        #: Set when a delivery run ended with every held reading confirmed; cleared by a new
        #: connection or measurement while readings are held.
        self.all_confirmed = self.held_confirmed
        self._confirmation_changed = asyncio.Event()

    async def add_reading(self, reading: BpReading) -> None:
        """A new measurement: hold it (stamped by a broken clock, if set), indicate it if
        subscribed, else advertise (for ``advertise_for_s``, when set)."""
        self._open_window()
        await self._hold(self._stamped(reading))

    async def start(self) -> None:
        """Power on and advertise what is held (for ``advertise_for_s``, when set)."""
        self._open_window()
        await super().start()

    def _open_window(self) -> None:
        if self.advertise_for_s is None:
            return
        loop = asyncio.get_running_loop()
        self._window_ends = loop.time() + self.advertise_for_s
        self._connected_in_window = False
        self._spawn(self._close_window(self._window_ends), "advertising_window")

    async def _close_window(self, ends: float) -> None:
        # The device's own timer (emulated behaviour, not test synchronisation).
        await asyncio.sleep(max(0.0, ends - asyncio.get_running_loop().time()))
        if self._window_ends != ends:
            return  # a newer measurement opened a newer window
        if not self._connected_in_window:
            self.windows_missed += 1
        async with self._advertising_lock:
            if self.device.is_advertising:
                await self.device.stop_advertising()

    def _has_data(self) -> bool:
        ends = self._window_ends
        if ends is not None and asyncio.get_running_loop().time() >= ends:
            return False
        return super()._has_data()

    def _stamped(self, reading: BpReading) -> BpReading:
        """``reading`` as this cuff's clock stamps it (and its quirks encode it)."""
        if self.unused_as_zero and reading.mean_arterial_pressure is None:
            reading = dataclasses.replace(reading, mean_arterial_pressure=0)
        if self.stamp_all_with is None:
            return reading
        return dataclasses.replace(reading, time_stamp=self.stamp_all_with)

    def _own_service(self) -> Service:
        return Service(
            UUID.from_16_bits(BLOOD_PRESSURE_SERVICE, "Blood Pressure"),
            [self._measurement, self._feature_characteristic],
        )

    def _connected(self, connection: Connection) -> None:
        super()._connected(connection)
        self._connected_in_window = True
        if self._held:
            self.all_confirmed.clear()

    async def _reading_confirmed(self) -> bool:
        self.confirmations += 1
        self._confirmation_changed.set()
        if self.drop_link_after is not None and len(self._confirmed_here) >= self.drop_link_after:
            await self.drop_link()
            return False
        return True

    async def wait_for_confirmations(self, count: int) -> None:
        """Return once ``confirmations`` reaches ``count`` (wrap in a timeout)."""
        while self.confirmations < count:
            self._confirmation_changed.clear()
            await self._confirmation_changed.wait()
