"""One collection session with a Blood Pressure Service (BPS 1.0/1.1, UUID 0x1810) device.

Only bleak's public API (``BleakScanner``, ``BleakClient``) is used here, with the backends
of the opened :class:`~agent.ble.stack.BleStack`, so the same procedure runs over BlueZ and
over Bumble.

Theory of operation
-------------------
1. **Scan** (at most ``scan_timeout_s``) for the configured address advertising service
   0x1810. The address is an allowlist entry: no other device is ever connected to.
2. **Connect** (bleak's ``timeout`` = ``connect_timeout_s``, set-up and discovery included).
3. **Read** the Device Information Service strings and System ID (DIS 1.1, all optional)
   and the Blood Pressure Feature 0x2A49 (BPS §3.3, mandatory), then the device's clock,
   Current Time 0x2A2B, when it has CTS 0x1805 (:mod:`agent.ble.current_time`; best effort).
4. **Subscribe** to Blood Pressure Measurement 0x2A35 (BPS §3.1: indicate only). A cuff with
   stored readings sends them one indication at a time, each after the previous one's
   confirmation; the stack confirms each right after our callback returned.
5. Each value is handed on **as raw bytes**, undecoded, as a :class:`RawMeasurement` the
   moment it arrives, in arrival order: BlueZ confirms an indication before the pipeline
   commits it (reliability-catalogue finding 4), so the window between the two must be as
   short as the pipeline allows. Decoding is the pipeline's job (``drivers``).
6. The session **ends** when no measurement has arrived for ``quiet_period_s``, when
   ``max_measurements`` have arrived, or at the session deadline; it then disconnects. A
   **dropped link** raises :class:`~drivers.errors.BleLinkLostError` (after handing on
   everything that arrived): the device keeps what it did not see confirmed.

Buffering: the bleak callback cannot wait (the confirmation goes out when it returns), so
values land in a session buffer of ``max_measurements + MEASUREMENT_SLACK`` entries and the
session's own coroutine hands them on in order with ``await on_measurement(...)``. The
session stops at ``max_measurements``; the slack absorbs the indications already in flight
while the link is torn down, so a full buffer means a device that ignores the ATT flow
control (logged as ``ble_measurement_overflow``).

Cancellation: measurements buffered but not yet handed on when the caller cancels the
session are lost although the device saw them confirmed. Prefer ``session_timeout_s``
(which ends the radio part and still hands everything on) to wrapping the call in a
shorter ``asyncio.timeout``.

Errors (``drivers.errors``): :class:`~drivers.errors.BleLinkError` for "not found",
"connect failed", a failed or timed-out GATT operation; :class:`BleLinkLostError` for a
dropped link; :class:`~drivers.errors.DeviceProtocolError` for a device without service 0x1810,
characteristic 0x2A35 (indicating) or 0x2A49, or that answers a read with an ATT error.
The full address is needed to connect and sits in :class:`DeviceFacts`, but is never
logged nor put in an exception: logs and errors carry the label (last two octets).
"""

from __future__ import annotations

import asyncio
import enum
import math
import time
from collections import deque
from collections.abc import Awaitable, Callable, Coroutine, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Final, TypeVar

import structlog
from bleak import BleakClient, BleakScanner
from bleak.backends.characteristic import BleakGATTCharacteristic
from bleak.backends.device import BLEDevice
from bleak.backends.service import BleakGATTService
from bleak.exc import BleakError, BleakGATTProtocolError
from bleak.uuids import normalize_uuid_16

from agent.ble.current_time import with_device_clock
from agent.ble.stack import BleStack
from agent.ble.uuids import (
    BLOOD_PRESSURE_FEATURE,
    BLOOD_PRESSURE_MEASUREMENT,
    BLOOD_PRESSURE_SERVICE,
    DEVICE_INFORMATION_SERVICE,
    FIRMWARE_REVISION_STRING,
    HARDWARE_REVISION_STRING,
    MANUFACTURER_NAME_STRING,
    MODEL_NUMBER_STRING,
    SERIAL_NUMBER_STRING,
    SOFTWARE_REVISION_STRING,
    SYSTEM_ID,
)
from agent.cancellation import raise_if_cancelled
from agent.logs import device_label
from agent.normalize.device import DeviceFacts
from agent.normalize.regulatory import RegulatoryData
from drivers.device_information import DisString, DisStringCharacteristic, SystemId
from drivers.errors import (
    BleLinkError,
    BleLinkLostError,
    ConfigError,
    DecodeError,
    DeviceProtocolError,
)

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

SESSION_TIMEOUT_S: Final = 120.0
"""Hard cap on one session, outer to all the above: 20 + 20 + a 200-reading transfer
(≈ 200 x 2 intervals ≈ 40 s) + 5 s quiet, with margin."""

DISCONNECT_TIMEOUT_S: Final = 5.0
"""Waiting for the Disconnection Complete before calling the link closed (inner to the
backends' own disconnect handling)."""

MAX_MEASUREMENTS_PER_SESSION: Final = 200
"""A cuff stores about 100 readings per user for up to 2 users; at this bound the session
ends and the device keeps the rest for the next one."""

MEASUREMENT_SLACK: Final = 4
"""Buffer entries beyond ``max_measurements`` for indications in flight while the session
disconnects: a device sends the next one only after a confirmation, so one at most."""

REGULATORY_CERTIFICATION_DATA_LIST: Final = normalize_uuid_16(0x2A2A)
"""DIS 0x2A2A (DIS 1.1 §3.9), optional; read with the other DIS values."""

OnMeasurement = Callable[["RawMeasurement", DeviceFacts], Awaitable[None]]
"""The pipeline's hook: store one raw measurement (from the device described)."""


@dataclass(frozen=True, slots=True)
class RawMeasurement:
    """One characteristic value as received, undecoded (BPS §3.1 Blood Pressure Measurement).

    Attributes:
        characteristic_uuid: bleak-style 128-bit UUID of the characteristic it came from.
        data: the value's bytes exactly as indicated (never in the repr: it is PHI).
        received_monotonic: ``time.monotonic()`` at arrival, for ordering and intervals.
        received_wall: the hub's UTC wall clock at arrival.
        related: see below.
        sync_state: see below.
    """

    characteristic_uuid: str
    data: bytes = field(repr=False)
    received_monotonic: float
    received_wall: datetime
    related: Mapping[str, bytes] = field(default_factory=dict, repr=False)
    """Values that belong to this one, by characteristic UUID (e.g. a glucose measurement's
    context 0x2A34, joined by sequence number in the session)."""
    sync_state: Mapping[str, bytes] = field(default_factory=dict, repr=False)
    """Per-device sync state (e.g. a glucometer's RACP high-water mark) that must commit in
    the same outbox transaction as this measurement, by key."""


@dataclass(frozen=True, slots=True)
class BpsDeviceInfo:
    """Raw values read at connection: DIS 0x180A strings and System ID, BP Feature 0x2A49.

    ``None``: the device does not expose that (optional) DIS characteristic. Identifiers
    (serial number, System ID) never appear in the repr.
    """

    blood_pressure_feature: bytes = field(repr=False)
    manufacturer_name: bytes | None = field(default=None, repr=False)
    model_number: bytes | None = field(default=None, repr=False)
    serial_number: bytes | None = field(default=None, repr=False)
    hardware_revision: bytes | None = field(default=None, repr=False)
    firmware_revision: bytes | None = field(default=None, repr=False)
    software_revision: bytes | None = field(default=None, repr=False)
    system_id: bytes | None = field(default=None, repr=False)
    regulatory_certification: bytes | None = field(default=None, repr=False)


class SessionEnd(enum.Enum):
    """Why a session ended normally."""

    QUIET = "quiet"  #: no measurement for the quiet period: the device has sent everything
    LIMIT = "limit"  #: ``max_measurements`` arrived; the device keeps the rest
    DEADLINE = "deadline"  #: ``session_timeout_s`` passed during the transfer


@dataclass(frozen=True, slots=True)
class BpsSessionResult:
    """What a session did.

    Attributes:
        device: the device's label (last two address octets).
        measurements: measurements received and handed on.
        ended_by: why it ended.
        info: the raw device information read at connection.
        facts: the decoded device information (holds the full address: not in the repr).
    """

    device: str
    measurements: int
    ended_by: SessionEnd
    info: BpsDeviceInfo
    facts: DeviceFacts = field(repr=False)


def device_facts(address: str, info: BpsDeviceInfo, label: str) -> DeviceFacts:
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
            log.warning(
                "ble_dis_undecodable",
                device=label,
                characteristic=exc.characteristic,
                reason=exc.reason,
            )
    system_id: str | None = None
    if info.system_id is not None:
        try:
            system_id = SystemId.from_bytes(info.system_id).eui64.replace("-", "")
        except DecodeError as exc:
            log.warning(
                "ble_dis_undecodable",
                device=label,
                characteristic=exc.characteristic,
                reason=exc.reason,
            )
    regulatory: RegulatoryData | None = None
    if info.regulatory_certification is not None:
        try:
            regulatory = RegulatoryData.from_bytes(info.regulatory_certification)
        except DecodeError as exc:
            log.warning(
                "ble_dis_undecodable",
                device=label,
                characteristic=exc.characteristic,
                reason=exc.reason,
            )
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


class _Session:
    """The state of one session; :func:`collect_blood_pressure` is its public face."""

    def __init__(
        self,
        ble: BleStack,
        address: str,
        on_measurement: OnMeasurement,
        *,
        max_measurements: int,
        deadline: float,
    ) -> None:
        self.ble = ble
        self.address = address.upper()
        self.label = device_label(self.address)
        self.log = log.bind(device=self.label)
        self.on_measurement = on_measurement
        self.limit = max_measurements
        self.deadline = deadline
        self.loop = asyncio.get_running_loop()
        self.link_lost = asyncio.Event()
        self.wakeup = asyncio.Event()
        self.pending: deque[RawMeasurement] = deque()
        self.capacity = max_measurements + MEASUREMENT_SLACK
        self.received = 0
        self.handed_on = 0
        self.overflowed = 0
        self.last_arrival = self.loop.time()
        self.phase = "setup"

    # -- radio steps ------------------------------------------------------------------

    async def find(self, scan_timeout_s: float) -> BLEDevice:
        """Scan for the allowlisted address advertising service 0x1810."""
        self.log.info("ble_scan_started", limit_s=scan_timeout_s)
        try:
            async with (
                BleakScanner(
                    service_uuids=[BLOOD_PRESSURE_SERVICE], backend=self.ble.scanner_backend
                ) as scanner,
                asyncio.timeout(scan_timeout_s),
            ):
                async for device, advertisement in scanner.advertisement_data():
                    if (
                        device.address.upper() == self.address
                        and BLOOD_PRESSURE_SERVICE in advertisement.service_uuids
                    ):
                        self.log.info("ble_device_found", rssi=advertisement.rssi)
                        return device
        except TimeoutError:
            raise BleLinkError("not found", device=self.label) from None
        except BleakError as exc:
            raise BleLinkError(f"scan failed ({type(exc).__name__})", device=self.label) from None
        raise BleLinkError("scan ended without a result", device=self.label)

    async def gatt(self, procedure: str, operation: Coroutine[Any, Any, T]) -> T:
        """Run one bleak GATT operation, mapping its failure to the hub's errors."""
        try:
            result = await operation
        except BleakGATTProtocolError as exc:
            if self.link_lost.is_set():
                raise BleLinkLostError(self.phase, self.handed_on, self.label) from None
            raise DeviceProtocolError(
                self.label, procedure, f"ATT error 0x{int(exc.code):02X} ({exc.code.name})"
            ) from None
        except (BleakError, TimeoutError) as exc:
            if self.link_lost.is_set():
                raise BleLinkLostError(self.phase, self.handed_on, self.label) from None
            raise BleLinkError(
                f"{procedure} failed ({type(exc).__name__})", device=self.label
            ) from None
        raise_if_cancelled()
        return result

    async def read_info(self, client: BleakClient) -> tuple[BpsDeviceInfo, BleakGATTService]:
        """Read DIS (all optional) and the BP Feature; check 0x1810 has 0x2A35 and 0x2A49."""
        try:
            bps = client.services.get_service(BLOOD_PRESSURE_SERVICE)
            dis = client.services.get_service(DEVICE_INFORMATION_SERVICE)
        except BleakError:
            raise DeviceProtocolError(
                self.label, "discover", "more than one 0x1810 or 0x180A service"
            ) from None
        if bps is None:
            raise DeviceProtocolError(self.label, "discover", "no Blood Pressure Service 0x1810")
        feature = bps.get_characteristic(BLOOD_PRESSURE_FEATURE)
        if feature is None:
            raise DeviceProtocolError(
                self.label, "discover", "no Blood Pressure Feature 0x2A49 in 0x1810"
            )

        async def read(service: BleakGATTService | None, uuid: str) -> bytes | None:
            characteristic = service.get_characteristic(uuid) if service is not None else None
            if characteristic is None:
                return None
            return bytes(
                await self.gatt("read_device_information", client.read_gatt_char(characteristic))
            )

        info = BpsDeviceInfo(
            blood_pressure_feature=bytes(
                await self.gatt("read_bp_feature", client.read_gatt_char(feature))
            ),
            manufacturer_name=await read(dis, MANUFACTURER_NAME_STRING),
            model_number=await read(dis, MODEL_NUMBER_STRING),
            serial_number=await read(dis, SERIAL_NUMBER_STRING),
            hardware_revision=await read(dis, HARDWARE_REVISION_STRING),
            firmware_revision=await read(dis, FIRMWARE_REVISION_STRING),
            software_revision=await read(dis, SOFTWARE_REVISION_STRING),
            system_id=await read(dis, SYSTEM_ID),
            regulatory_certification=await read(dis, REGULATORY_CERTIFICATION_DATA_LIST),
        )
        return info, bps

    def measurement_characteristic(self, bps: BleakGATTService) -> BleakGATTCharacteristic:
        """0x2A35 in 0x1810, which must indicate (BPS §3.1)."""
        characteristic = bps.get_characteristic(BLOOD_PRESSURE_MEASUREMENT)
        if characteristic is None:
            raise DeviceProtocolError(
                self.label, "discover", "no Blood Pressure Measurement 0x2A35 in 0x1810"
            )
        if "indicate" not in characteristic.properties:
            raise DeviceProtocolError(
                self.label, "subscribe_bpm", "0x2A35 does not support indications"
            )
        return characteristic

    # -- measurements -----------------------------------------------------------------

    def on_disconnected(self, _client: BleakClient) -> None:
        """bleak's disconnected callback."""
        self.link_lost.set()
        self.wakeup.set()

    def on_indication(self, _sender: BleakGATTCharacteristic, data: bytearray) -> None:
        """bleak's notification callback: buffer the value; never waits."""
        self.received += 1
        self.last_arrival = self.loop.time()
        self.wakeup.set()
        if len(self.pending) >= self.capacity:
            self.overflowed += 1
            self.log.error("ble_measurement_overflow", received=self.received)
            return
        self.pending.append(
            RawMeasurement(
                characteristic_uuid=BLOOD_PRESSURE_MEASUREMENT,
                data=bytes(data),
                received_monotonic=time.monotonic(),
                received_wall=datetime.now(UTC),
            )
        )
        self.log.info("ble_measurement_received", index=self.received, size=len(data))

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
            if self.link_lost.is_set():
                return None
            if self.received >= self.limit:
                return SessionEnd.LIMIT
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


async def _disconnect(client: BleakClient, slog: Any) -> None:
    try:
        async with asyncio.timeout(DISCONNECT_TIMEOUT_S):
            await client.disconnect()
    except (BleakError, TimeoutError) as exc:
        slog.warning("ble_session_disconnect_failed", error=type(exc).__name__)


async def collect_blood_pressure(
    ble: BleStack,
    address: str,
    on_measurement: OnMeasurement,
    *,
    scan_timeout_s: float = SCAN_TIMEOUT_S,
    connect_timeout_s: float = CONNECT_TIMEOUT_S,
    quiet_period_s: float = QUIET_PERIOD_S,
    session_timeout_s: float | None = None,
    max_measurements: int = MAX_MEASUREMENTS_PER_SESSION,
    pair: bool = False,
) -> BpsSessionResult:
    """Collect the stored blood-pressure measurements of one allowlisted device.

    Args:
        ble: the opened stack (its bleak backends are used).
        address: the device's address ``AA:BB:CC:DD:EE:FF`` (from the allowlist).
        on_measurement: awaited once per measurement, in arrival order, as soon as possible.
        scan_timeout_s: how long to scan for the device.
        connect_timeout_s: bleak's connect timeout (connection, set-up and discovery).
        quiet_period_s: the session ends this long after the last measurement.
        session_timeout_s: hard cap on the radio part (scan to disconnect); must exceed
            ``scan_timeout_s + connect_timeout_s + quiet_period_s``. ``None``: no cap here.
        max_measurements: the session ends after this many measurements.
        pair: pair (Just Works, or as the stack's pairing policy allows) if not bonded.

    Returns:
        What happened, with the raw and decoded device information.

    Raises:
        ConfigError: the timeouts do not nest (``session_timeout_s`` too small).
        BleLinkError: not found, connect failed, a GATT operation failed or the session
            deadline passed before the transfer started.
        BleLinkLostError: the link dropped after set-up (measurements received until then
            were handed on; see its ``measurements``).
        DeviceProtocolError: the device lacks 0x1810, 0x2A35 (indicating) or 0x2A49, or
            refused a read.
    """
    if max_measurements < 1:
        raise ConfigError("(session)", "max_measurements", "must be at least 1")
    if session_timeout_s is not None and (
        session_timeout_s <= scan_timeout_s + connect_timeout_s + quiet_period_s
    ):
        raise ConfigError(
            "(session)",
            "ble.session_timeout_s",
            "must exceed scan_timeout_s + connect_timeout_s + quiet_period_s",
        )
    loop = asyncio.get_running_loop()
    deadline = loop.time() + session_timeout_s if session_timeout_s is not None else math.inf
    session = _Session(
        ble, address, on_measurement, max_measurements=max_measurements, deadline=deadline
    )
    slog = session.log

    try:
        async with asyncio.timeout_at(None if math.isinf(deadline) else deadline):
            device = await session.find(scan_timeout_s)
    except TimeoutError:
        raise BleLinkError("session deadline passed while scanning", device=session.label) from None

    client = BleakClient(
        device,
        disconnected_callback=session.on_disconnected,
        timeout=connect_timeout_s,
        pair=pair,
        backend=ble.client_backend,
    )
    try:
        await client.connect()
        raise_if_cancelled()
    except TimeoutError:
        raise BleLinkError("connect timed out", device=session.label) from None
    except BleakError as exc:
        raise BleLinkError(f"connect failed ({type(exc).__name__})", device=session.label) from None
    slog.info("ble_session_connected", mtu=client.mtu_size)

    try:
        try:
            async with asyncio.timeout_at(None if math.isinf(deadline) else deadline):
                info, bps = await session.read_info(client)
                facts = device_facts(session.address, info, session.label)
                facts = await with_device_clock(client, facts, session.label)
                measurement = session.measurement_characteristic(bps)
                await session.gatt(
                    "subscribe_bpm", client.start_notify(measurement, session.on_indication)
                )
        except TimeoutError:
            if session.link_lost.is_set():
                raise BleLinkLostError("setup", 0, session.label) from None
            raise BleLinkError(
                "session deadline passed during set-up", device=session.label
            ) from None
        slog.info("ble_session_subscribed")
        ended_by = await session.collect(facts, quiet_period_s)
    except BaseException:
        await _disconnect(client, slog)
        if session.pending:
            # Confirmed to the device but not handed on: the caller failed or cancelled.
            slog.error("ble_measurements_not_handed_on", count=len(session.pending))
        raise
    await _disconnect(client, slog)

    # Indications that arrived while disconnecting were confirmed too: hand them on.
    await session.hand_on(facts)
    if ended_by is None:
        slog.warning("ble_session_link_lost", measurements=session.handed_on)
        raise BleLinkLostError("collect", session.handed_on, session.label)
    if ended_by is SessionEnd.DEADLINE:
        slog.warning("ble_session_deadline", measurements=session.handed_on)
    slog.info(
        "ble_session_ended",
        measurements=session.handed_on,
        ended_by=ended_by.value,
        overflowed=session.overflowed,
    )
    return BpsSessionResult(session.label, session.handed_on, ended_by, info, facts)
