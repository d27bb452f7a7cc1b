"""An emulated pulse oximeter: a Bumble peripheral with the Pulse Oximeter Service 0x1822.

GATT database (Pulse Oximeter Service 1.0, ble-spec-facts §6 and §7):

- Pulse Oximeter Service 0x1822
    - PLX Spot-check Measurement 0x2A5E: **Indicate** only, with its CCCD (PLXS §3.1).
    - PLX Continuous Measurement 0x2A5F: **Notify** only, with its CCCD (PLXS §3.2).
    - PLX Features 0x2A60: Read (PLXS §3.3): Supported Features uint16, then the Measurement
      Status Support (uint16) and Device and Sensor Status Support (uint24) words when
      Supported Features bits 0 and 1 announce them.
- Device Information Service 0x180A (:mod:`hil.emulators.peripheral`), and the Current Time
  Service 0x1805 only when given a ``clock``
  (:func:`hil.emulators.peripheral.current_time_service`).

    - Record Access Control Point 0x2A52: Write + Indicate, present exactly when the PLX
      Features claim spot-check measurement storage (bit 2; PLXS §3.4, ble-spec-facts §6.4).

Advertising: flags, complete local name, the 16-bit service UUID 0x1822.

Behaviour:

- **Spot-checks**, as the cuff's stored readings (:mod:`hil.emulators.cuff`): once the
  central enables *indications* on 0x2A5E, each held spot-check is indicated, one at a time,
  each after the previous one's ATT Handle Value Confirmation (Core Spec Vol 3 Part F
  §3.4.7.2-3); with ``delete_on_confirm`` it is forgotten once confirmed.
- **Continuous** measurements: once the central enables *notifications* on 0x2A5F, the
  samples of ``continuous`` are notified one per ``continuous_interval_s`` (the device's
  output rate, not a test synchronisation). Without ``continuous_repeat`` each sample is sent
  once over the emulator's life (a new connection continues where the last one stopped);
  with it, the samples go round and round while a central listens. Notifications are
  unconfirmed (Vol 3 Part F §3.4.7.1): a sample notified while the link drops is simply
  gone, as with a real oximeter. ``flood_continuous`` (misbehaviour, for the hub's bounds)
  notifies without pause. A caller may pace the stream itself instead
  (:meth:`EmulatedOximeter.notify_continuous`, one sample at a time, e.g. a night's output
  compressed in time) and bound when the central took the samples in
  (:meth:`EmulatedOximeter.central_round_trip`: an ATT request answered after them).

- **Measurement storage** (``stored_records``, with storage in the features): the RACP
  procedures as PLXS restricts them (ble-spec-facts §6.4): only the operator "all records"
  (0x01) for Report (0x01), Delete (0x02) and Report Number (0x04); Abort (0x03) with the
  Null operator. A report indicates each stored record on 0x2A5E (each after the previous
  confirmation), then ``06 00 01 01`` (or ``06 00 01 06`` when there is none); Report
  Number answers ``05 00 <uint16>``; Delete ``06 00 02 01``; Abort stops the report before
  its next record and answers ``06 00 03 01``. Other op codes answer 0x02 (op code not
  supported), operators 0x02-0x06 answer 0x04 (operator not supported), other operators
  0x03 (invalid operator), an operand 0x05 (invalid operand). ATT errors instead of a Write
  Response: 0xFD (CCCD improperly configured) when RACP indications, or for a report 0x2A5E
  indications, are not enabled; 0xFE (procedure already in progress) for any request but
  Abort while a procedure runs. Stored records are sent as given: give them Measurement
  Status bit 9 ("data from measurement storage"), as real devices do.

Encoding uses the emulators' own encoders (:mod:`hil.emulators.encoding`), never ``drivers/``.

For tests: ``confirmed_values`` (0x2A5E, in order, live and stored), ``notified_values``
(0x2A5F, in order), ``racp_requests`` and ``racp_responses`` (raw, in order), events
``spot_checks_confirmed``, ``continuous_done``, ``racp_idle``, ``disconnected``, and
:meth:`EmulatedOximeter.wait_for_notifications`: never sleep.
"""

from __future__ import annotations

import asyncio
import enum
import itertools
from collections.abc import Sequence
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any, Final

from bumble.att import ATT_Error
from bumble.core import UUID
from bumble.device import Connection, Device
from bumble.gatt import Characteristic, Service

from hil.emulators.encoding import DateTime, sfloat
from hil.emulators.gatt_peripheral import CCCD_INDICATE as CCCD_INDICATE  # re-exported
from hil.emulators.gatt_peripheral import CCCD_NOTIFY as CCCD_NOTIFY  # re-exported
from hil.emulators.gatt_peripheral import HeldReadingsPeripheral
from hil.emulators.peripheral import (
    DeviceInformation,
    EmulatedClock,
    control_point_characteristic,
    read_only_characteristic,
    unreadable_characteristic,
)

PULSE_OXIMETER_SERVICE: Final = 0x1822
PLX_SPOT_CHECK_MEASUREMENT: Final = 0x2A5E
PLX_CONTINUOUS_MEASUREMENT: Final = 0x2A5F
PLX_FEATURES: Final = 0x2A60
RECORD_ACCESS_CONTROL_POINT: Final = 0x2A52
GAP_DEVICE_NAME: Final = 0x2A00
"""Read on the central by :meth:`EmulatedOximeter.central_round_trip` (every GATT server has
the GAP service; an error answer serves as well)."""

DEFAULT_LOCAL_NAME: Final = "HH Oximeter"
DEFAULT_ADVERTISING_INTERVAL_MS: Final = 100.0
"""Within the 20 ms-1.28 s range devices use while they have data to hand over."""
DEFAULT_CONTINUOUS_INTERVAL_S: Final = 1.0
"""Finger oximeters update their displayed SpO2/PR about once a second."""

ATT_CCCD_IMPROPERLY_CONFIGURED: Final = 0xFD
"""Common profile error (Core Spec Supplement Part B §1.2) PLXS uses (ble-spec-facts §6.4)."""
ATT_PROCEDURE_ALREADY_IN_PROGRESS: Final = 0xFE
"""Common profile error (Core Spec Supplement Part B §1.2) PLXS uses (ble-spec-facts §6.4)."""


class RacpOpCode(enum.IntEnum):
    """RACP op codes PLXS uses (PLXS §3.4; ble-spec-facts §4.4, §6.4)."""

    REPORT_STORED_RECORDS = 0x01
    DELETE_STORED_RECORDS = 0x02
    ABORT_OPERATION = 0x03
    REPORT_NUMBER_OF_STORED_RECORDS = 0x04
    NUMBER_OF_STORED_RECORDS_RESPONSE = 0x05
    RESPONSE_CODE = 0x06


class RacpOperator(enum.IntEnum):
    """RACP operators: PLXS accepts only All Records, and Null for Abort."""

    NULL = 0x00
    ALL_RECORDS = 0x01
    LAST_RECORD = 0x06  #: 0x02-0x06 (≤, ≥, range, first, last) exist; PLXS refuses them


class RacpResponse(enum.IntEnum):
    """RACP Response Code values."""

    SUCCESS = 0x01
    OP_CODE_NOT_SUPPORTED = 0x02
    INVALID_OPERATOR = 0x03
    OPERATOR_NOT_SUPPORTED = 0x04
    INVALID_OPERAND = 0x05
    NO_RECORDS_FOUND = 0x06


Number = Decimal | int | bytes
"""A value to send as an SFLOAT: a number, or the two raw octets of a special value
(e.g. :data:`hil.emulators.encoding.SFLOAT_NAN`)."""


def _sfloat(value: Number) -> bytes:
    if isinstance(value, bytes):
        if len(value) != 2:
            raise ValueError("a raw SFLOAT is 2 octets")
        return value
    return sfloat(value)


def _uint(value: int, octets: int, what: str) -> bytes:
    if not 0 <= value < 1 << (8 * octets):
        raise ValueError(f"{what} does not fit {8 * octets} bits")
    return value.to_bytes(octets, "little")


def _status_tail(
    measurement_status: int | None,
    device_sensor_status: int | None,
    pulse_amplitude_index: Number | None,
) -> bytes:
    """The optional fields both PLX measurements end with, in wire order (PLXS §3.1, §3.2):
    Measurement Status (uint16), Device and Sensor Status (uint24), PAI (SFLOAT %)."""
    out = b""
    if measurement_status is not None:
        out += _uint(measurement_status, 2, "measurement status")
    if device_sensor_status is not None:
        out += _uint(device_sensor_status, 3, "device and sensor status")
    if pulse_amplitude_index is not None:
        out += _sfloat(pulse_amplitude_index)
    return out


class SpotCheckFlags(enum.IntFlag):
    """PLX Spot-check Measurement flags (PLXS §3.1; ble-spec-facts §6.1)."""

    TIMESTAMP_PRESENT = 0x01
    MEASUREMENT_STATUS_PRESENT = 0x02
    DEVICE_AND_SENSOR_STATUS_PRESENT = 0x04
    PULSE_AMPLITUDE_INDEX_PRESENT = 0x08
    DEVICE_CLOCK_NOT_SET = 0x10


class ContinuousFlags(enum.IntFlag):
    """PLX Continuous Measurement flags (PLXS §3.2; ble-spec-facts §6.2): other bit positions
    than the spot-check's."""

    SPO2PR_FAST_PRESENT = 0x01
    SPO2PR_SLOW_PRESENT = 0x02
    MEASUREMENT_STATUS_PRESENT = 0x04
    DEVICE_AND_SENSOR_STATUS_PRESENT = 0x08
    PULSE_AMPLITUDE_INDEX_PRESENT = 0x10


class MeasurementStatus(enum.IntFlag):
    """PLX Measurement Status, 16 bits, bits 0-4 RFU (PLXS §3.1.1.4; ble-spec-facts §6.3)."""

    MEASUREMENT_ONGOING = 1 << 5
    EARLY_ESTIMATED_DATA = 1 << 6
    VALIDATED_DATA = 1 << 7
    FULLY_QUALIFIED_DATA = 1 << 8
    DATA_FROM_MEASUREMENT_STORAGE = 1 << 9
    DATA_FOR_DEMONSTRATION = 1 << 10
    DATA_FOR_TESTING = 1 << 11
    CALIBRATION_ONGOING = 1 << 12
    MEASUREMENT_UNAVAILABLE = 1 << 13
    QUESTIONABLE_MEASUREMENT_DETECTED = 1 << 14
    INVALID_MEASUREMENT_DETECTED = 1 << 15


class DeviceSensorStatus(enum.IntFlag):
    """PLX Device and Sensor Status, 24 bits, bits 16-23 RFU (PLXS §3.1.1.5; spec facts §6.3)."""

    EXTENDED_DISPLAY_UPDATE_ONGOING = 1 << 0
    EQUIPMENT_MALFUNCTION_DETECTED = 1 << 1
    SIGNAL_PROCESSING_IRREGULARITY_DETECTED = 1 << 2
    INADEQUATE_SIGNAL_DETECTED = 1 << 3
    POOR_SIGNAL_DETECTED = 1 << 4
    LOW_PERFUSION_DETECTED = 1 << 5
    ERRATIC_SIGNAL_DETECTED = 1 << 6
    NON_PULSATILE_SIGNAL_DETECTED = 1 << 7
    QUESTIONABLE_PULSE_DETECTED = 1 << 8
    SIGNAL_ANALYSIS_ONGOING = 1 << 9
    SENSOR_INTERFERENCE_DETECTED = 1 << 10
    SENSOR_UNCONNECTED_TO_USER = 1 << 11
    UNKNOWN_SENSOR_CONNECTED = 1 << 12
    SENSOR_DISPLACED = 1 << 13
    SENSOR_MALFUNCTIONING = 1 << 14
    SENSOR_DISCONNECTED = 1 << 15


class SupportedFeatures(enum.IntFlag):
    """PLX Features, Supported Features word (PLXS §3.3; ble-spec-facts §6.3)."""

    MEASUREMENT_STATUS_SUPPORT_PRESENT = 1 << 0
    DEVICE_AND_SENSOR_STATUS_SUPPORT_PRESENT = 1 << 1
    SPOT_CHECK_MEASUREMENT_STORAGE = 1 << 2
    SPOT_CHECK_TIMESTAMP = 1 << 3
    SPO2PR_FAST = 1 << 4
    SPO2PR_SLOW = 1 << 5
    PULSE_AMPLITUDE_INDEX = 1 << 6
    MULTIPLE_BONDS = 1 << 7


@dataclass(frozen=True, slots=True)
class SpotCheck:
    """One spot-check reading and its 0x2A5E encoding (``bytes(spot_check)``, 5-19 octets).

    Wire order (PLXS §3.1): flags, SpO2 (SFLOAT %), PR (SFLOAT beats/min), timestamp (Date
    Time, 7), measurement status (uint16), device and sensor status (uint24), pulse amplitude
    index (SFLOAT %); the last four when given. ``device_clock_not_set`` sets flag bit 4.
    """

    spo2: Number
    pulse_rate: Number
    timestamp: DateTime | None = None
    measurement_status: int | None = None
    device_sensor_status: int | None = None
    pulse_amplitude_index: Number | None = None
    device_clock_not_set: bool = False

    @property
    def flags(self) -> SpotCheckFlags:
        """The flags octet the present fields call for."""
        flags = SpotCheckFlags(0)
        for flag, value in (
            (SpotCheckFlags.TIMESTAMP_PRESENT, self.timestamp),
            (SpotCheckFlags.MEASUREMENT_STATUS_PRESENT, self.measurement_status),
            (SpotCheckFlags.DEVICE_AND_SENSOR_STATUS_PRESENT, self.device_sensor_status),
            (SpotCheckFlags.PULSE_AMPLITUDE_INDEX_PRESENT, self.pulse_amplitude_index),
        ):
            if value is not None:
                flags |= flag
        if self.device_clock_not_set:
            flags |= SpotCheckFlags.DEVICE_CLOCK_NOT_SET
        return flags

    def __bytes__(self) -> bytes:
        """The PLX Spot-check Measurement value."""
        parts = [bytes([self.flags]), _sfloat(self.spo2), _sfloat(self.pulse_rate)]
        if self.timestamp is not None:
            parts.append(bytes(self.timestamp))
        parts.append(
            _status_tail(
                self.measurement_status, self.device_sensor_status, self.pulse_amplitude_index
            )
        )
        return b"".join(parts)

    def __repr__(self) -> str:
        # Reading values are PHI in the hub's logs; test output may name a reading only.
        return f"SpotCheck(flags=0x{int(self.flags):02X})"


@dataclass(frozen=True, slots=True)
class ContinuousSample:
    """One continuous measurement and its 0x2A5F encoding (5-20 octets).

    Wire order (PLXS §3.2): flags, SpO2PR-Normal (SpO2, PR), SpO2PR-Fast, SpO2PR-Slow (pairs
    of SFLOAT), measurement status (uint16), device and sensor status (uint24), PAI (SFLOAT);
    all but Normal when given.
    """

    spo2: Number
    pulse_rate: Number
    fast: tuple[Number, Number] | None = None
    slow: tuple[Number, Number] | None = None
    measurement_status: int | None = None
    device_sensor_status: int | None = None
    pulse_amplitude_index: Number | None = None

    @property
    def flags(self) -> ContinuousFlags:
        """The flags octet the present fields call for."""
        flags = ContinuousFlags(0)
        for flag, value in (
            (ContinuousFlags.SPO2PR_FAST_PRESENT, self.fast),
            (ContinuousFlags.SPO2PR_SLOW_PRESENT, self.slow),
            (ContinuousFlags.MEASUREMENT_STATUS_PRESENT, self.measurement_status),
            (ContinuousFlags.DEVICE_AND_SENSOR_STATUS_PRESENT, self.device_sensor_status),
            (ContinuousFlags.PULSE_AMPLITUDE_INDEX_PRESENT, self.pulse_amplitude_index),
        ):
            if value is not None:
                flags |= flag
        return flags

    def __bytes__(self) -> bytes:
        """The PLX Continuous Measurement value."""
        parts = [bytes([self.flags]), _sfloat(self.spo2), _sfloat(self.pulse_rate)]
        for pair in (self.fast, self.slow):
            if pair is not None:
                parts += [_sfloat(pair[0]), _sfloat(pair[1])]
        parts.append(
            _status_tail(
                self.measurement_status, self.device_sensor_status, self.pulse_amplitude_index
            )
        )
        return b"".join(parts)

    def __repr__(self) -> str:
        return f"ContinuousSample(flags=0x{int(self.flags):02X})"


@dataclass(frozen=True, slots=True)
class Features:
    """PLX Features 0x2A60 (2-7 octets): the support words are sent when given, and their
    presence bits (0 and 1) are derived from that."""

    supported: SupportedFeatures = (
        SupportedFeatures.SPOT_CHECK_TIMESTAMP
        | SupportedFeatures.SPO2PR_FAST
        | SupportedFeatures.PULSE_AMPLITUDE_INDEX
    )
    measurement_status_support: int | None = field(
        default=int(
            MeasurementStatus.VALIDATED_DATA
            | MeasurementStatus.DATA_FOR_TESTING
            | MeasurementStatus.QUESTIONABLE_MEASUREMENT_DETECTED
        )
    )
    device_sensor_status_support: int | None = field(
        default=int(
            DeviceSensorStatus.LOW_PERFUSION_DETECTED | DeviceSensorStatus.SENSOR_DISCONNECTED
        )
    )

    def __bytes__(self) -> bytes:
        """The PLX Features value."""
        supported = int(self.supported) & ~0x3
        if self.measurement_status_support is not None:
            supported |= SupportedFeatures.MEASUREMENT_STATUS_SUPPORT_PRESENT
        if self.device_sensor_status_support is not None:
            supported |= SupportedFeatures.DEVICE_AND_SENSOR_STATUS_SUPPORT_PRESENT
        out = _uint(supported, 2, "supported features")
        if self.measurement_status_support is not None:
            out += _uint(self.measurement_status_support, 2, "measurement status support")
        if self.device_sensor_status_support is not None:
            out += _uint(self.device_sensor_status_support, 3, "device and sensor status support")
        return out


def example_spot_checks() -> list[SpotCheck]:
    """Two spot-checks of one morning (values chosen for tests and the demo)."""
    return [
        SpotCheck(97, 64, timestamp=DateTime(2025, 3, 14, 7, 59, 30),
                  measurement_status=int(MeasurementStatus.VALIDATED_DATA),
                  device_sensor_status=0, pulse_amplitude_index=Decimal("4.2")),
        SpotCheck(Decimal("95.5"), 71, timestamp=DateTime(2025, 3, 14, 8, 2, 5),
                  device_sensor_status=int(DeviceSensorStatus.LOW_PERFUSION_DETECTED)),
    ]  # fmt: skip


def example_continuous() -> list[ContinuousSample]:
    """A few seconds of a worn oximeter's continuous output (Normal and Fast, PAI)."""
    return [
        ContinuousSample(96, 72, fast=(95, 74), pulse_amplitude_index=Decimal("3.8")),
        ContinuousSample(96, 73, fast=(96, 73), pulse_amplitude_index=Decimal("3.9")),
        ContinuousSample(95, 75, fast=(94, 77), pulse_amplitude_index=Decimal("3.7")),
        ContinuousSample(97, 70, fast=(97, 69), pulse_amplitude_index=Decimal("4.0")),
    ]


class EmulatedOximeter(HeldReadingsPeripheral[SpotCheck]):
    """A pulse oximeter on a Bumble :class:`~bumble.device.Device` (not yet powered on).

    Advertising, connections, link drops and the one-at-a-time delivery of held spot-checks
    are :class:`~hil.emulators.gatt_peripheral.HeldReadingsPeripheral`'s; the oximeter adds
    the Pulse Oximeter Service, the continuous stream and measurement storage (RACP).

    Args:
        device: the peripheral's Bumble device (see :class:`hil.virtual_radio.VirtualRadio`).
        spot_checks: the held spot-check readings, oldest first.
        continuous: the continuous samples to stream once notifications are enabled.
        stored_records: the spot-checks in measurement storage, reported through RACP
            (requires storage in ``features``).
        info: what DIS exposes.
        clock: the oximeter's clock, exposed as CTS 0x1805; None: no CTS.
        local_name: the advertised complete local name.
        features: the PLX Features value.
        continuous_interval_s: time between two continuous notifications.
        continuous_repeat: stream ``continuous`` round and round until the link ends.
        flood_continuous: misbehave: notify without pause, ignoring
            ``continuous_interval_s`` (as fast as the stack takes them).
        delete_on_confirm: forget a spot-check once its indication is confirmed.
        advertise_when_empty: keep advertising with no spot-check held (a worn oximeter that
            streams continuously).
        advertising_interval_ms: the advertising interval.
    """

    NAME = "oximeter"

    def __init__(
        self,
        device: Device,
        spot_checks: Sequence[SpotCheck] = (),
        continuous: Sequence[ContinuousSample] = (),
        *,
        stored_records: Sequence[SpotCheck] = (),
        info: DeviceInformation | None = None,
        clock: EmulatedClock | None = None,
        local_name: str = DEFAULT_LOCAL_NAME,
        features: Features | None = None,
        continuous_interval_s: float = DEFAULT_CONTINUOUS_INTERVAL_S,
        continuous_repeat: bool = False,
        flood_continuous: bool = False,
        delete_on_confirm: bool = True,
        advertise_when_empty: bool = False,
        advertising_interval_ms: float = DEFAULT_ADVERTISING_INTERVAL_MS,
    ) -> None:
        if continuous_interval_s <= 0:
            raise ValueError("continuous_interval_s must be positive")
        features = features or Features()
        has_storage = bool(features.supported & SupportedFeatures.SPOT_CHECK_MEASUREMENT_STORAGE)
        if stored_records and not has_storage:
            raise ValueError("stored records need spot-check measurement storage in features")
        self._spot = unreadable_characteristic(  # indicate only (PLXS §3.1)
            PLX_SPOT_CHECK_MEASUREMENT,
            "PLX Spot-check Measurement",
            Characteristic.Properties.INDICATE,
        )
        super().__init__(
            device,
            spot_checks,
            characteristic=self._spot,
            delete_on_confirm=delete_on_confirm,
            advertise_when_empty=advertise_when_empty,
            service_uuid=PULSE_OXIMETER_SERVICE,
            info=info or DeviceInformation(model_number="HH-PLX-1"),
            clock=clock,
            local_name=local_name,
            advertising_interval_ms=advertising_interval_ms,
        )
        self.features = features
        self.has_storage = has_storage
        self.stored_records: list[SpotCheck] = list(stored_records)
        self.continuous = tuple(continuous)
        self.continuous_interval_s = continuous_interval_s
        self.continuous_repeat = continuous_repeat
        self.flood_continuous = flood_continuous

        self._samples = (
            itertools.cycle(self.continuous) if continuous_repeat else iter(self.continuous)
        )
        self._samples_left = len(self.continuous)
        self._continuous = unreadable_characteristic(  # notify only (PLXS §3.2)
            PLX_CONTINUOUS_MEASUREMENT,
            "PLX Continuous Measurement",
            Characteristic.Properties.NOTIFY,
        )
        self._features = read_only_characteristic(
            PLX_FEATURES, bytes(self.features), "PLX Features"
        )
        self._racp = control_point_characteristic(
            RECORD_ACCESS_CONTROL_POINT, "Record Access Control Point", self._on_racp_write
        )
        self._continuous.on(Characteristic.EVENT_SUBSCRIPTION, self._on_continuous_subscription)

        self._streaming: asyncio.Task[None] | None = None
        self._racp_procedure: asyncio.Task[None] | None = None
        self._abort_requested = False
        self._notified_changed = asyncio.Event()

        #: The 0x2A5F values notified, in order.
        self.notified_values: list[bytes] = []
        #: Set when a delivery run ended with every held spot-check confirmed.
        self.spot_checks_confirmed = self.held_confirmed
        #: Set when a (non-repeating) continuous stream has sent its last sample.
        self.continuous_done = asyncio.Event()
        #: RACP requests written (raw, in order), and the RACP indications confirmed.
        self.racp_requests: list[bytes] = []
        self.racp_responses: list[bytes] = []
        #: Set while no RACP procedure runs.
        self.racp_idle = asyncio.Event()
        self.racp_idle.set()

    # -- what the oximeter holds ------------------------------------------------------

    def encoded_continuous(self) -> list[bytes]:
        """The 0x2A5F values of one pass through the continuous samples."""
        return [bytes(s) for s in self.continuous]

    async def add_spot_check(self, reading: SpotCheck) -> None:
        """A new spot-check: hold it, indicate it if subscribed, else advertise."""
        await self._hold(reading)

    # -- life cycle -------------------------------------------------------------------

    def _own_service(self) -> Service:
        return Service(
            UUID.from_16_bits(PULSE_OXIMETER_SERVICE, "Pulse Oximeter"),
            [
                self._spot,
                self._continuous,
                self._features,
                *([self._racp] if self.has_storage else []),
            ],
        )

    def _has_data(self) -> bool:
        return super()._has_data() or bool(self.stored_records) or self._samples_left > 0

    def _disconnected(self) -> None:
        super()._disconnected()
        if self._streaming is not None:
            self._streaming.cancel()
            self._streaming = None

    # -- continuous: notifications ------------------------------------------------------

    def _on_continuous_subscription(self, bearer: Any, notify: bool, _indicate: bool) -> None:
        connection = self._connection
        if connection is None or bearer is not connection:
            return
        idle = self._streaming is None or self._streaming.done()
        if notify and idle and self._samples_left > 0:
            self._streaming = self._spawn(self._stream(connection), "stream")
        elif not notify and self._streaming is not None:
            self._streaming.cancel()
            self._streaming = None

    async def _stream(self, connection: Connection) -> None:
        """Notify the continuous samples at the configured rate while subscribed."""
        first = True
        while self._samples_left > 0:
            if not first:
                # The device's output rate; a flooding one only yields to its own stack.
                await asyncio.sleep(0 if self.flood_continuous else self.continuous_interval_s)
            first = False
            if self._connection is not connection:
                return
            if not self._cccd(connection, self._continuous) & CCCD_NOTIFY:
                return
            value = bytes(next(self._samples))
            if not self.continuous_repeat:
                self._samples_left -= 1
            await self.device.notify_subscriber(connection, self._continuous, value)
            self.notified_values.append(value)
            self._notified_changed.set()
        self.continuous_done.set()

    async def wait_for_notifications(self, count: int) -> None:
        """Return once ``notified_values`` holds ``count`` values (wrap in a timeout)."""
        while len(self.notified_values) < count:
            self._notified_changed.clear()
            await self._notified_changed.wait()

    # -- continuous: paced by the caller ------------------------------------------------

    @property
    def continuous_subscribed(self) -> bool:
        """Whether a central is connected with notifications on 0x2A5F enabled."""
        connection = self._connection
        return connection is not None and bool(
            self._cccd(connection, self._continuous) & CCCD_NOTIFY
        )

    async def notify_continuous(self, sample: ContinuousSample) -> bool:
        """Notify ``sample`` on 0x2A5F now, the caller pacing the stream (a scenario that
        compresses a night's 1 Hz output in time); recorded in ``notified_values`` as the
        emulator's own stream records its samples. False, and nothing sent, when no central
        listens (no link, or notifications not enabled)."""
        connection = self._connection
        if connection is None or not self._cccd(connection, self._continuous) & CCCD_NOTIFY:
            return False
        value = bytes(sample)
        await self.device.notify_subscriber(connection, self._continuous, value)
        self.notified_values.append(value)
        self._notified_changed.set()
        return True

    async def central_round_trip(self) -> bool:
        """One ATT request to the central and its answer: a Read Using Characteristic UUID of
        the GAP Device Name 0x2A00 over its GATT server (whatever it answers, an error
        included). ATT PDUs travel in order on the bearer and a host hands each notification
        to its subscriber as it takes it in, so once this returns the central has taken in
        every notification sent before it: a bound on *when* the central saw them, for a
        scenario judging a rule of the central's clock (not a wait for a guessed time).
        False without a link."""
        connection = self._connection
        if connection is None:
            return False
        await connection.gatt_client.read_characteristics_by_uuid(
            UUID.from_16_bits(GAP_DEVICE_NAME), None
        )
        return self._connection is connection

    # -- measurement storage: RACP ------------------------------------------------------

    def _on_racp_write(self, connection: Connection, value: bytes) -> None:
        """A request: refuse it with an ATT error, or start (or abort) a procedure."""
        request = bytes(value)
        if not self._cccd(connection, self._racp) & CCCD_INDICATE:
            raise ATT_Error(ATT_CCCD_IMPROPERLY_CONFIGURED)
        running = self._racp_procedure is not None and not self._racp_procedure.done()
        op = request[0] if request else None
        if running and op != RacpOpCode.ABORT_OPERATION:
            raise ATT_Error(ATT_PROCEDURE_ALREADY_IN_PROGRESS)
        if op == RacpOpCode.REPORT_STORED_RECORDS and not (
            self._cccd(connection, self._spot) & CCCD_INDICATE
        ):
            raise ATT_Error(ATT_CCCD_IMPROPERLY_CONFIGURED)
        self.racp_requests.append(request)
        if op == RacpOpCode.ABORT_OPERATION:
            previous = self._racp_procedure if running else None
            self._abort_requested = previous is not None
            task = self._spawn(self._abort(connection, request, previous), "abort")
        else:
            task = self._spawn(self._procedure(connection, request), "racp")
        self._racp_procedure = task
        self.racp_idle.clear()
        task.add_done_callback(self._racp_done)

    def _racp_done(self, task: asyncio.Task[None]) -> None:
        if task is self._racp_procedure:
            self.racp_idle.set()

    async def _respond(self, connection: Connection, value: bytes) -> None:
        if await self._indicate_confirmed(connection, self._racp, value):
            self.racp_responses.append(value)

    async def _response_code(self, connection: Connection, op: int, code: RacpResponse) -> None:
        await self._respond(connection, bytes([RacpOpCode.RESPONSE_CODE, 0, op, code]))

    @staticmethod
    def _all_records_problem(operator: int, operand: bytes) -> RacpResponse | None:
        """PLXS accepts the operator "all records" without operand, nothing else."""
        if operator == RacpOperator.ALL_RECORDS:
            return RacpResponse.INVALID_OPERAND if operand else None
        if RacpOperator.ALL_RECORDS < operator <= RacpOperator.LAST_RECORD:
            return RacpResponse.OPERATOR_NOT_SUPPORTED
        return RacpResponse.INVALID_OPERATOR

    async def _procedure(self, connection: Connection, request: bytes) -> None:
        """Run one Report / Delete / Report Number request (module docstring)."""
        op = request[0] if request else 0
        if op not in (
            RacpOpCode.REPORT_STORED_RECORDS,
            RacpOpCode.DELETE_STORED_RECORDS,
            RacpOpCode.REPORT_NUMBER_OF_STORED_RECORDS,
        ):
            await self._response_code(connection, op, RacpResponse.OP_CODE_NOT_SUPPORTED)
            return
        if len(request) < 2:
            await self._response_code(connection, op, RacpResponse.INVALID_OPERATOR)
            return
        problem = self._all_records_problem(request[1], request[2:])
        if problem is not None:
            await self._response_code(connection, op, problem)
            return
        if op == RacpOpCode.REPORT_NUMBER_OF_STORED_RECORDS:
            count = len(self.stored_records).to_bytes(2, "little")
            response = bytes([RacpOpCode.NUMBER_OF_STORED_RECORDS_RESPONSE, 0]) + count
            await self._respond(connection, response)
        elif op == RacpOpCode.DELETE_STORED_RECORDS:
            self.stored_records.clear()
            await self._response_code(connection, op, RacpResponse.SUCCESS)
        elif not self.stored_records:
            await self._response_code(connection, op, RacpResponse.NO_RECORDS_FOUND)
        else:
            for record in list(self.stored_records):
                if self._abort_requested:
                    return  # the Abort answers; the aborted report does not
                value = bytes(record)
                if not await self._indicate_confirmed(connection, self._spot, value):
                    return
                self.confirmed_values.append(value)
            await self._response_code(connection, op, RacpResponse.SUCCESS)

    async def _abort(
        self, connection: Connection, request: bytes, running: asyncio.Task[None] | None
    ) -> None:
        """Abort (0x03 with the Null operator, no operand): stop the report, then answer."""
        valid = request[1:] == bytes([RacpOperator.NULL])
        if not valid:
            self._abort_requested = False
        if running is not None:
            await asyncio.gather(running, return_exceptions=True)
        self._abort_requested = False
        code = RacpResponse.SUCCESS if valid else RacpResponse.INVALID_OPERATOR
        await self._response_code(connection, RacpOpCode.ABORT_OPERATION, code)
