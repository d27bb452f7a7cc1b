"""The shared core of the BLE collection sessions (:mod:`agent.ble.bps_session`,
:mod:`agent.ble.plx_session`, :mod:`agent.ble.gls_session`).

It holds what every session does the same way, on bleak's public API only:

- the session's time bounds (:data:`SCAN_TIMEOUT_S`, :data:`CONNECT_TIMEOUT_S`,
  :data:`QUIET_PERIOD_S`, :data:`DISCONNECT_TIMEOUT_S`), their nesting check
  (:func:`check_session_timeout`) and the deadline (:func:`session_deadline`);
- :class:`GattSession`: scanning for the allowlisted address advertising the session's
  service, connecting, the GATT-operation wrapper that maps bleak's failures to the hub's
  errors (:class:`~agent.errors.BleLinkError`, :class:`~agent.errors.BleLinkLostError`,
  :class:`~agent.errors.DeviceProtocolError`) and calls :func:`raise_if_cancelled` after
  every radio operation, service discovery, reading the Device Information Service
  (DIS 1.1, UUID 0x180A; all optional) and the Battery Level (BAS 0x180F, best effort:
  :meth:`GattSession.read_battery_level`), and disconnecting;
- :class:`DisValues` and :func:`device_facts`: the raw DIS values and their decoding into
  :class:`~agent.normalize.device.DeviceFacts` (service-agnostic);
- :class:`BufferedSession`: the bounded hand-on buffer of the sessions that end on a quiet
  period (BPS, PLXS): the bleak callback buffers, the session's coroutine hands on;
- ending a session from a bleak callback (:meth:`GattSession.fail`,
  :meth:`GattSession.end_link_now`): a device that fills a bounded buffer is refused at the
  value that hits the bound, the link is ended at once (even while the session's coroutine
  awaits a slow pipeline), what was complete is handed on, and the session raises
  :class:`~agent.errors.DeviceFloodError` naming the buffer;
- :class:`RawMeasurement` and :data:`OnMeasurement` (from :mod:`agent.measurement`): what a
  session hands the pipeline.

The full address is needed to connect and sits in :class:`DeviceFacts`, but is never
logged nor put in an exception: logs and errors carry the label (last two octets).
"""

from __future__ import annotations

import asyncio
import dataclasses
import enum
import math
import time
from collections import deque
from collections.abc import AsyncIterator, Coroutine
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Any, ClassVar, Final, Protocol, TypeVar

import structlog
from bleak import BleakClient, BleakScanner
from bleak.backends.device import BLEDevice
from bleak.backends.service import BleakGATTService
from bleak.exc import BleakError, BleakGATTProtocolError, BleakGATTProtocolErrorCode
from bleak_retry_connector import BleakNotFoundError, establish_connection

from agent import wall_clock
from agent.ble.current_time import CURRENT_TIME_READ_TIMEOUT_S, ClockPolicy, set_device_clock
from agent.ble.stack import BleStack
from agent.ble.uuids import (
    DEVICE_INFORMATION_SERVICE,
    FIRMWARE_REVISION_STRING,
    HARDWARE_REVISION_STRING,
    MANUFACTURER_NAME_STRING,
    MODEL_NUMBER_STRING,
    REGULATORY_CERTIFICATION_DATA_LIST,
    SERIAL_NUMBER_STRING,
    SOFTWARE_REVISION_STRING,
    SYSTEM_ID,
    sig_uuid,
)
from agent.cancellation import raise_if_cancelled
from agent.errors import (
    BleDeviceAbsentError,
    BleLinkError,
    BleLinkLostError,
    BleStackUnavailableError,
    ConfigError,
    DecodeError,
    DeviceFloodError,
    DeviceProtocolError,
    LinkSecurityError,
)
from agent.logs import device_label
from agent.measurement import OnMeasurement, RawMeasurement
from agent.normalize.device import DeviceFacts
from agent.normalize.regulatory import RegulatoryData
from drivers.battery import BatteryLevel
from drivers.device_information import DisString, DisStringCharacteristic, SystemId

log = structlog.get_logger(__name__)

T = TypeVar("T")

SCAN_TIMEOUT_S: Final = 20.0
"""How long to look for the device. A cuff advertises for about 30 s after a measurement
(BLP recommends 30 s of fast advertising), so 20 s catches it while leaving the rest of the
session for connecting and the transfer."""

CONNECT_TIMEOUT_S: Final = 20.0
"""Connection plus set-up (MTU exchange, discovery): bleak-retry-connector's inner connect
timeout, chosen from field experience with BlueZ (reliability-catalogue finding 6)."""

QUIET_PERIOD_S: Final = 5.0
"""Stored readings follow each other within one or two connection intervals (≤ 100 ms); 5 s
without one means the device has sent all it had (Cypress times out an RACP transfer after
5 s without an indication, ble-spec-facts §6.4)."""

BLUEZ_CONNECT_ATTEMPTS: Final = 3
"""Attempts ``bleak-retry-connector`` makes within one session on BlueZ (its default is 4):
with the 20 s per-attempt timeout, 60 s, inside the default 120 s session."""

DISCONNECT_TIMEOUT_S: Final = 5.0
"""Waiting for the Disconnection Complete before calling the link closed (inner to the
backends' own disconnect handling)."""

MEASUREMENT_SLACK: Final = 4
"""Values accepted beyond ``max_measurements`` for indications in flight while the session
disconnects: the link is ended from the callback that accepted the last one, and a device
sends the next indication only after a confirmation (Core Vol 3 Part F §3.4.7.2), so one at
most. A device past this slack ignores the ATT flow control: a flood."""


BATTERY_SERVICE: Final = sig_uuid(0x180F)
BATTERY_LEVEL: Final = sig_uuid(0x2A19)

BATTERY_SYNC_KEY: Final = "battery_level"
"""The outbox sync-state key of a device's Battery Level as last read (0x2A19's octet). It
commits with the session's first reading (a session that hands on none keeps nothing), the
way a first contact's identity pin does; ``homehub devices list`` shows it."""

BATTERY_READ_TIMEOUT_S: Final = CURRENT_TIME_READ_TIMEOUT_S
"""One ATT read, like the Current Time's: the same allowance, far inside the session."""


class SessionEnd(enum.Enum):
    """Why a session that ends on a quiet period (BPS, PLXS) ended normally."""

    QUIET = "quiet"  #: no measurement for the quiet period: the device has sent everything
    LIMIT = "limit"  #: ``max_measurements`` arrived; the device keeps the rest
    DEADLINE = "deadline"  #: ``session_timeout_s`` passed during the transfer


class DisFields(Protocol):
    """The raw DIS values :func:`device_facts` decodes (``None``: not exposed)."""

    @property
    def manufacturer_name(self) -> bytes | None: ...
    @property
    def model_number(self) -> bytes | None: ...
    @property
    def serial_number(self) -> bytes | None: ...
    @property
    def hardware_revision(self) -> bytes | None: ...
    @property
    def firmware_revision(self) -> bytes | None: ...
    @property
    def software_revision(self) -> bytes | None: ...
    @property
    def system_id(self) -> bytes | None: ...
    @property
    def regulatory_certification(self) -> bytes | None: ...


@dataclass(frozen=True, slots=True)
class DisValues:
    """Raw values of the Device Information Service 0x180A (DIS 1.1 §3), read at connection.

    ``None``: the device does not expose that (optional) characteristic, or it was not read.
    Identifiers (serial number, System ID) never appear in the repr.
    """

    manufacturer_name: bytes | None = field(default=None, repr=False)
    model_number: bytes | None = field(default=None, repr=False)
    serial_number: bytes | None = field(default=None, repr=False)
    hardware_revision: bytes | None = field(default=None, repr=False)
    firmware_revision: bytes | None = field(default=None, repr=False)
    software_revision: bytes | None = field(default=None, repr=False)
    system_id: bytes | None = field(default=None, repr=False)
    regulatory_certification: bytes | None = field(default=None, repr=False)


def _dis_undecodable(label: str, exc: DecodeError) -> None:
    log.warning(
        "ble_dis_undecodable", device=label, characteristic=exc.characteristic, reason=exc.reason
    )


def device_facts(address: str, info: DisFields, label: str) -> DeviceFacts:
    """Decode the DIS values into :class:`DeviceFacts`; an undecodable value becomes ``None``."""
    strings: dict[DisStringCharacteristic, str] = {}
    for which, raw in (
        (DisStringCharacteristic.MANUFACTURER_NAME, info.manufacturer_name),
        (DisStringCharacteristic.MODEL_NUMBER, info.model_number),
        (DisStringCharacteristic.SERIAL_NUMBER, info.serial_number),
        (DisStringCharacteristic.HARDWARE_REVISION, info.hardware_revision),
        (DisStringCharacteristic.FIRMWARE_REVISION, info.firmware_revision),
        (DisStringCharacteristic.SOFTWARE_REVISION, info.software_revision),
    ):
        if raw is None:
            continue
        try:
            strings[which] = DisString.from_bytes(which, raw).value
        except DecodeError as exc:
            _dis_undecodable(label, exc)
    system_id: str | None = None
    if info.system_id is not None:
        try:
            system_id = SystemId.from_bytes(info.system_id).eui64.replace("-", "")
        except DecodeError as exc:
            _dis_undecodable(label, exc)
    regulatory: RegulatoryData | None = None
    if info.regulatory_certification is not None:
        try:
            regulatory = RegulatoryData.from_bytes(info.regulatory_certification)
        except DecodeError as exc:
            _dis_undecodable(label, exc)
    return DeviceFacts(
        address=address.upper(),
        system_id=system_id,
        regulatory=regulatory,
        manufacturer=strings.get(DisStringCharacteristic.MANUFACTURER_NAME),
        model=strings.get(DisStringCharacteristic.MODEL_NUMBER),
        serial=strings.get(DisStringCharacteristic.SERIAL_NUMBER),
        firmware=strings.get(DisStringCharacteristic.FIRMWARE_REVISION),
        hardware=strings.get(DisStringCharacteristic.HARDWARE_REVISION),
        software=strings.get(DisStringCharacteristic.SOFTWARE_REVISION),
    )


def check_session_timeout(
    session_timeout_s: float | None,
    scan_timeout_s: float,
    connect_timeout_s: float,
    tail_s: float,
    tail_name: str,
) -> None:
    """Check that the session deadline is outer to scan + connect + ``tail_s``.

    Raises:
        ConfigError: ``session_timeout_s`` is not larger than that sum.
    """
    if session_timeout_s is not None and (
        session_timeout_s <= scan_timeout_s + connect_timeout_s + tail_s
    ):
        raise ConfigError(
            "(session)",
            "ble.session_timeout_s",
            f"must exceed scan_timeout_s + connect_timeout_s + {tail_name}",
        )


def session_deadline(session_timeout_s: float | None) -> float:
    """The running loop's time at which the session ends (``math.inf``: no cap)."""
    if session_timeout_s is None:
        return math.inf
    return asyncio.get_running_loop().time() + session_timeout_s


def _link_security_failure(exc: BleakError, label: str) -> LinkSecurityError | None:
    """The hub's :class:`LinkSecurityError` for a backend's refusal to secure the link, by
    the backend's exception type (``None``: not a security failure).

    Bumble (agent/ble/bumble_backend.py): ``BumbleNotBondedError`` (no bond and the pairing
    policy forbids one: a ``required`` device ``homehub pair`` has not bonded) and
    ``BumbleLinkSecurityError`` (encryption with the stored keys failed: an impostor at a
    bonded address, or a device that lost its bond; or pairing failed). Imported only once
    the error is one of the Bumble backend's: a BlueZ hub never loads Bumble.
    """
    module = type(exc).__module__
    if module != "agent.ble.bumble_backend":
        return None
    from agent.ble.bumble_backend import BumbleLinkSecurityError, BumbleNotBondedError

    if isinstance(exc, BumbleNotBondedError):
        return LinkSecurityError(label, "bond", "not bonded, and only homehub pair may bond it")
    if isinstance(exc, BumbleLinkSecurityError):
        if exc.operation == "encrypt":
            return LinkSecurityError(
                label, "encryption", f"the link could not be encrypted with the bond ({exc.reason})"
            )
        return LinkSecurityError(label, "pairing", f"pairing failed ({exc.reason})")
    return None


def _short(uuid: str) -> str:
    """``0x1810`` for a bleak-style 128-bit UUID of the Bluetooth base."""
    return f"0x{uuid[4:8].upper()}"


class GattSession:
    """The state every session shares: the device, the link, the deadline, the GATT wrapper.

    Args:
        ble: the opened stack (its bleak backends are used).
        address: the allowlisted address; the only device ever connected to.
        on_measurement: the pipeline's hook.
        deadline: the loop time at which the session ends (``math.inf``: none).
    """

    service_uuid: ClassVar[str]
    """The session's primary service (set by each subclass), looked for in advertisements."""
    service_name: ClassVar[str]
    """Its spec name, for errors (e.g. ``"Blood Pressure Service"``)."""

    def __init__(
        self,
        ble: BleStack,
        address: str,
        on_measurement: OnMeasurement,
        *,
        deadline: float,
    ) -> None:
        self.ble = ble
        self.address = address.upper()
        self.label = device_label(self.address)
        self.log = log.bind(device=self.label)
        self._pipeline = on_measurement
        #: What the session calls for each reading: the pipeline's hook, the Battery Level
        #: read in this session joined to the first reading's sync state.
        self.on_measurement: OnMeasurement = self._hand_to_pipeline
        #: The Battery Level read in this session (%); None: not exposed or not read.
        self.battery_percent: int | None = None
        self._battery_unsent: bytes | None = None
        self.deadline = deadline
        self.loop = asyncio.get_running_loop()
        self.link_lost = asyncio.Event()
        self.wakeup = asyncio.Event()
        self.handed_on = 0
        self.phase = "setup"
        self.client: BleakClient | None = None
        #: The device's fault found in a bleak callback; the session raises it.
        self.failure: DeviceProtocolError | None = None
        self._ending: asyncio.Task[None] | None = None
        self._setup_bound: asyncio.Timeout | None = None
        ble.add_stop_listener(self)
        if ble.stopping.is_set():
            self.end_now()

    def end_now(self) -> None:
        """The hub is stopping: end as if the session deadline had passed now (the transfer
        ends normally: disconnect, and everything received is handed on; a set-up under way,
        before anything was received, is cut)."""
        self.deadline = min(self.deadline, self.loop.time())
        if self._setup_bound is not None:
            self._setup_bound.reschedule(self.deadline)
        self.wakeup.set()

    async def _unless_stopping(self, operation: Coroutine[Any, Any, T], what: str) -> T:
        """Run ``operation`` (a scan or a connection: nothing received yet) unless the hub
        stops first; then cancel it and raise :class:`BleLinkError`."""
        stopping = self.ble.stopping
        if stopping.is_set():
            operation.close()
            raise BleLinkError(f"hub stopping before {what}", device=self.label)
        task = asyncio.ensure_future(operation)
        stop = asyncio.ensure_future(stopping.wait())
        try:
            await asyncio.wait({task, stop}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            stop.cancel()
            if not task.done():
                task.cancel()
                await asyncio.wait({task})
        if task.cancelled():
            raise_if_cancelled()
            raise BleLinkError(f"hub stopping during {what}", device=self.label)
        return task.result()

    @property
    def at_deadline(self) -> float | None:
        """The deadline for ``asyncio.timeout_at`` (``None``: no cap)."""
        return None if math.isinf(self.deadline) else self.deadline

    # -- radio steps ------------------------------------------------------------------

    async def find(self, scan_timeout_s: float) -> BLEDevice:
        """Scan (within the session deadline) for the allowlisted address advertising the
        session's service."""
        try:
            async with asyncio.timeout_at(self.at_deadline):
                return await self._unless_stopping(self._scan(scan_timeout_s), "scanning")
        except TimeoutError:
            raise BleLinkError(
                "session deadline passed while scanning", device=self.label
            ) from None

    async def _scan(self, scan_timeout_s: float) -> BLEDevice:
        self.log.info("ble_scan_started", limit_s=scan_timeout_s)
        try:
            async with (
                BleakScanner(
                    service_uuids=[self.service_uuid], backend=self.ble.scanner_backend
                ) as scanner,
                asyncio.timeout(scan_timeout_s),
            ):
                async for device, advertisement in scanner.advertisement_data():
                    if (
                        device.address.upper() == self.address
                        and self.service_uuid in advertisement.service_uuids
                    ):
                        self.log.info("ble_device_found", rssi=advertisement.rssi)
                        return device
        except TimeoutError:
            raise_if_cancelled()
            raise BleDeviceAbsentError("not found", device=self.label) from None
        except BleakError as exc:
            raise_if_cancelled()
            raise BleLinkError(f"scan failed ({type(exc).__name__})", device=self.label) from None
        except OSError as exc:
            # bleak's BlueZ backend reaching the system D-Bus (dbus_fast): no socket, refused.
            raise_if_cancelled()
            raise BleStackUnavailableError(
                f"Bluetooth stack unreachable ({type(exc).__name__})", device=self.label
            ) from None
        raise BleLinkError("scan ended without a result", device=self.label)

    async def connect(self, device: BLEDevice, connect_timeout_s: float, pair: bool) -> BleakClient:
        """Connect (bleak's ``timeout``: connection, set-up and discovery); a cancellation
        swallowed on the way disconnects again and is re-raised.

        On BlueZ the connection goes through ``bleak-retry-connector``'s
        ``establish_connection`` (the connector Home Assistant relies on: BlueZ's transient
        errors, out-of-slot and D-Bus backoffs by type, reliability-catalogue finding 6), each
        attempt bounded by ``connect_timeout_s`` and all of them by the session deadline. On
        Bumble our backend connects once; the daemon's per-device backoff retries."""
        if self.ble.client_backend is None:
            opening = self._establish_bluez(device, connect_timeout_s, pair)
        else:
            opening = self._connect_once(device, connect_timeout_s, pair)
        try:
            client = await self._unless_stopping(opening, "connecting")
        except BleakNotFoundError:  # bleak-retry-connector: it stopped advertising
            raise_if_cancelled()
            raise BleDeviceAbsentError("not found when connecting", device=self.label) from None
        except TimeoutError:
            raise_if_cancelled()
            raise BleLinkError("connect timed out", device=self.label) from None
        except BleakError as exc:
            raise_if_cancelled()
            security = _link_security_failure(exc, self.label)
            if security is not None:
                raise security from None
            raise BleLinkError(
                f"connect failed ({type(exc).__name__})", device=self.label
            ) from None
        except OSError as exc:
            # bleak's BlueZ backend reaching the system D-Bus (dbus_fast): no socket, refused.
            raise_if_cancelled()
            raise BleStackUnavailableError(
                f"Bluetooth stack unreachable ({type(exc).__name__})", device=self.label
            ) from None
        try:
            raise_if_cancelled()
        except asyncio.CancelledError:
            await self.disconnect(client)
            raise
        self.log.info("ble_session_connected", mtu=client.mtu_size)
        self.client = client
        return client

    async def _establish_bluez(
        self, device: BLEDevice, connect_timeout_s: float, pair: bool
    ) -> BleakClient:
        async with asyncio.timeout_at(self.at_deadline):
            return await establish_connection(
                BleakClient,
                device,
                self.label,  # its logs and errors name the device by our label
                disconnected_callback=self.on_disconnected,
                max_attempts=BLUEZ_CONNECT_ATTEMPTS,
                pair=pair,
                timeout=connect_timeout_s,
            )

    async def _connect_once(
        self, device: BLEDevice, connect_timeout_s: float, pair: bool
    ) -> BleakClient:
        client = BleakClient(
            device,
            disconnected_callback=self.on_disconnected,
            timeout=connect_timeout_s,
            pair=pair,
            backend=self.ble.client_backend,
        )
        await client.connect()
        return client

    @asynccontextmanager
    async def setup_deadline(self) -> AsyncIterator[None]:
        """Bound the set-up by the session deadline; its passing is a link error."""
        try:
            async with asyncio.timeout_at(self.at_deadline) as bound:
                self._setup_bound = bound
                try:
                    yield
                finally:
                    self._setup_bound = None
        except TimeoutError:
            if self.link_lost.is_set():
                raise BleLinkLostError("setup", 0, self.label) from None
            raise BleLinkError("session deadline passed during set-up", device=self.label) from None

    def att_error_text(self, code: int) -> str:
        """How an ATT error code reads in a :class:`DeviceProtocolError` (bleak's name)."""
        return BleakGATTProtocolErrorCode(code).name

    async def gatt(self, procedure: str, operation: Coroutine[Any, Any, T]) -> T:
        """Run one bleak GATT operation, mapping its failure to the hub's errors."""
        try:
            result = await operation
        except BleakGATTProtocolError as exc:
            raise_if_cancelled()
            if self.failure is not None:
                raise self.failure from None
            if self.link_lost.is_set():
                raise BleLinkLostError(self.phase, self.handed_on, self.label) from None
            code = int(exc.args[0])
            raise DeviceProtocolError(
                self.label, procedure, f"ATT error 0x{code:02X} ({self.att_error_text(code)})"
            ) from None
        except (BleakError, TimeoutError) as exc:
            raise_if_cancelled()
            if self.failure is not None:
                raise self.failure from None
            if self.link_lost.is_set():
                raise BleLinkLostError(self.phase, self.handed_on, self.label) from None
            raise BleLinkError(
                f"{procedure} failed ({type(exc).__name__})", device=self.label
            ) from None
        raise_if_cancelled()
        return result

    def services(self, client: BleakClient) -> tuple[BleakGATTService, BleakGATTService | None]:
        """The session's service (mandatory) and DIS 0x180A (optional), each at most once."""
        short = _short(self.service_uuid)
        try:
            service = client.services.get_service(self.service_uuid)
            dis = client.services.get_service(DEVICE_INFORMATION_SERVICE)
        except BleakError:
            raise DeviceProtocolError(
                self.label, "discover", f"more than one {short} or 0x180A service"
            ) from None
        if service is None:
            raise DeviceProtocolError(self.label, "discover", f"no {self.service_name} {short}")
        return service, dis

    async def read_device_information(
        self, client: BleakClient, dis: BleakGATTService | None, *, regulatory: bool
    ) -> DisValues:
        """Read the DIS strings and System ID (and 0x2A2A when ``regulatory``), all optional."""

        async def read(uuid: str) -> bytes | None:
            characteristic = dis.get_characteristic(uuid) if dis is not None else None
            if characteristic is None:
                return None
            return bytes(
                await self.gatt("read_device_information", client.read_gatt_char(characteristic))
            )

        return DisValues(
            manufacturer_name=await read(MANUFACTURER_NAME_STRING),
            model_number=await read(MODEL_NUMBER_STRING),
            serial_number=await read(SERIAL_NUMBER_STRING),
            hardware_revision=await read(HARDWARE_REVISION_STRING),
            firmware_revision=await read(FIRMWARE_REVISION_STRING),
            software_revision=await read(SOFTWARE_REVISION_STRING),
            system_id=await read(SYSTEM_ID),
            regulatory_certification=(
                await read(REGULATORY_CERTIFICATION_DATA_LIST) if regulatory else None
            ),
        )

    async def read_battery_level(self, client: BleakClient) -> int | None:
        """Read Battery Level 0x2A19 of the Battery Service 0x180F when the device exposes it
        readable; the level in %, None otherwise.

        Best effort, like the Current Time read (:mod:`agent.ble.current_time`): absent,
        unreadable (an ATT error, a failure, no answer within :data:`BATTERY_READ_TIMEOUT_S`)
        or undecodable (above 100 %) only logs, never fails the session. A battery level is
        no health data: it is logged (``battery_pct``). The value read goes with the
        session's first reading (:data:`BATTERY_SYNC_KEY`).
        """
        service = client.services.get_service(BATTERY_SERVICE)
        characteristic = service.get_characteristic(BATTERY_LEVEL) if service is not None else None
        if characteristic is None or "read" not in characteristic.properties:
            self.log.info("ble_battery_level_absent")
            return None
        try:
            async with asyncio.timeout(BATTERY_READ_TIMEOUT_S):
                data = bytes(await client.read_gatt_char(characteristic))
        except (BleakError, TimeoutError) as exc:
            raise_if_cancelled()
            self.log.warning("ble_battery_level_unreadable", error=type(exc).__name__)
            return None
        try:
            level = BatteryLevel.from_bytes(data)
        except DecodeError as exc:
            self.log.warning("ble_battery_level_undecodable", size=len(data), reason=exc.reason)
            return None
        self.log.info("ble_battery_level_read", battery_pct=level.level_pct)
        self.battery_percent = level.level_pct
        self._battery_unsent = bytes(level)
        return level.level_pct

    async def _hand_to_pipeline(self, raw: RawMeasurement, facts: DeviceFacts) -> None:
        """Hand one reading to the pipeline; the first one carries the Battery Level read in
        this session (:data:`BATTERY_SYNC_KEY`), committed with it."""
        battery = self._battery_unsent
        if battery is not None:
            raw = dataclasses.replace(raw, sync_state={**raw.sync_state, BATTERY_SYNC_KEY: battery})
        await self._pipeline(raw, facts)
        self._battery_unsent = None

    async def set_clock_after_transfer(
        self, client: BleakClient, facts: DeviceFacts, policy: ClockPolicy | None
    ) -> None:
        """Set the device's clock as ``policy`` calls for (:func:`set_device_clock`), once
        the device has handed over everything it held: every reading stamped by the old
        clock has then been placed with the offset read at connection, and none is left on
        the device to be misplaced by a later session's corrected clock. Skipped when the
        hub is stopping, the link is gone or the session deadline has passed."""
        if policy is None or facts.clock is None:
            return
        if self.ble.stopping.is_set() or self.link_lost.is_set():
            return
        if self.loop.time() >= self.deadline:
            return
        await set_device_clock(client, facts.clock, policy, self.label)

    def on_disconnected(self, _client: BleakClient) -> None:
        """bleak's disconnected callback."""
        self.link_lost.set()
        self.wakeup.set()

    def fail(self, error: DeviceProtocolError) -> None:
        """A bleak callback found the device at fault: keep the first error, end the link now.

        Never waits. A :class:`DeviceFloodError` is logged as ``ble_device_flood`` with the
        buffer and its bound (never the values).
        """
        if self.failure is None:
            self.failure = error
            if isinstance(error, DeviceFloodError):
                self.log.error(
                    "ble_device_flood",
                    buffer=error.buffer,
                    limit=error.limit,
                    procedure=error.procedure,
                )
        self.end_link_now()

    def end_link_now(self) -> None:
        """Start disconnecting from a callback (never waits); :meth:`disconnect` awaits it."""
        self.wakeup.set()
        if self._ending is None and self.client is not None:
            self._ending = self.loop.create_task(
                self._disconnect_link(self.client), name=f"ble[{self.label}].end_link"
            )

    async def disconnect(self, client: BleakClient) -> None:
        """Disconnect (or await the disconnection a callback started), waiting at most
        :data:`DISCONNECT_TIMEOUT_S`; a failure is logged."""
        if self._ending is not None:
            await self._ending
            return
        await self._disconnect_link(client)

    async def _disconnect_link(self, client: BleakClient) -> None:
        try:
            async with asyncio.timeout(DISCONNECT_TIMEOUT_S):
                await client.disconnect()
        except (BleakError, TimeoutError) as exc:
            self.log.warning("ble_session_disconnect_failed", error=type(exc).__name__)


class BufferedSession(GattSession):
    """A session that hands each value on as it arrives and ends on quiet, limit or deadline.

    The bleak callback cannot wait (the confirmation goes out when it returns), so values land
    in a buffer (:meth:`arrived`) and the session's coroutine hands them on in order
    (:meth:`hand_on`). The buffer is bounded where the value arrives: at the
    ``max_measurements``-th value the callback ends the link at once (:meth:`end_link_now`),
    so the session stops at its limit even while the pipeline is slow; up to
    :data:`MEASUREMENT_SLACK` values still in flight are accepted and handed on. A value
    beyond ``max_measurements + MEASUREMENT_SLACK`` in one session means a device that ignores
    the ATT flow control: it is refused, and the session raises
    :class:`~agent.errors.DeviceFloodError` (``buffer="measurements"``) after handing on
    everything accepted before. The pending buffer never holds more than the values accepted,
    so the same bound holds it.
    """

    def __init__(
        self,
        ble: BleStack,
        address: str,
        on_measurement: OnMeasurement,
        *,
        max_measurements: int,
        deadline: float,
    ) -> None:
        super().__init__(ble, address, on_measurement, deadline=deadline)
        self.limit = max_measurements
        self.pending: deque[RawMeasurement] = deque()
        self.capacity = max_measurements + MEASUREMENT_SLACK
        self.received = 0
        self.overflowed = 0
        self.peak_pending = 0
        self.last_arrival = self.loop.time()

    def arrived(self, uuid: str, data: bytearray) -> None:
        """Buffer one value of characteristic ``uuid``; never waits (called by bleak)."""
        self.last_arrival = self.loop.time()
        self.wakeup.set()
        if self.failure is not None:
            self.overflowed += 1
            return
        if self.received >= self.capacity:
            self.overflowed += 1
            self.fail(DeviceFloodError(self.label, self.phase, "measurements", self.capacity))
            return
        self.received += 1
        self.pending.append(
            RawMeasurement(
                characteristic_uuid=uuid,
                data=bytes(data),
                received_monotonic=time.monotonic(),
                received_wall=wall_clock.now(),
            )
        )
        self.peak_pending = max(self.peak_pending, len(self.pending))
        self.log.info("ble_measurement_received", index=self.received, size=len(data))
        if self.received == self.limit:
            self.end_link_now()  # the limit: what is still in flight lands in the slack

    async def hand_on(self, facts: DeviceFacts) -> None:
        """Hand every buffered measurement on, in arrival order."""
        while self.pending:
            raw = self.pending[0]
            await self.on_measurement(raw, facts)
            self.pending.popleft()
            self.handed_on += 1

    async def collect(self, facts: DeviceFacts, quiet_period_s: float) -> SessionEnd | None:
        """Hand measurements on until quiet, limit or deadline; ``None`` if the link dropped."""
        self.phase = "collect"
        self.last_arrival = self.loop.time()
        while True:
            await self.hand_on(facts)
            if self.failure is not None:
                return None
            if self.received >= self.limit:
                return SessionEnd.LIMIT
            if self.link_lost.is_set():
                return None
            now = self.loop.time()
            if now >= self.deadline:
                return SessionEnd.DEADLINE
            quiet_at = self.last_arrival + quiet_period_s
            if now >= quiet_at:
                return SessionEnd.QUIET
            self.wakeup.clear()
            try:
                async with asyncio.timeout_at(min(quiet_at, self.deadline)):
                    await self.wakeup.wait()
            except TimeoutError:
                continue

    async def finish(
        self, client: BleakClient, facts: DeviceFacts, ended_by: SessionEnd | None
    ) -> SessionEnd:
        """Disconnect, then hand on what arrived meanwhile (it was confirmed too).

        Returns:
            ``ended_by``, what :meth:`collect` returned.

        Raises:
            DeviceFloodError: a bound was hit (what was accepted before was handed on).
            DeviceProtocolError: another fault found in a callback.
            BleLinkLostError: the link had dropped (``ended_by`` is ``None``).
        """
        await self.disconnect(client)
        await self.hand_on(facts)
        if self.failure is not None:
            self.log.warning(
                "ble_session_failed_by_device",
                measurements=self.handed_on,
                error=type(self.failure).__name__,
                peak_pending=self.peak_pending,
                refused=self.overflowed,
            )
            raise self.failure
        if ended_by is None:
            self.log.warning("ble_session_link_lost", measurements=self.handed_on)
            raise BleLinkLostError("collect", self.handed_on, self.label)
        return ended_by

    async def disconnect_after_failure(self, client: BleakClient) -> None:
        """Disconnect after the session failed or was cancelled; log what was not handed on."""
        await self.disconnect(client)
        if self.pending:
            # Confirmed to the device but not handed on: the caller failed or cancelled.
            self.log.error("ble_measurements_not_handed_on", count=len(self.pending))
