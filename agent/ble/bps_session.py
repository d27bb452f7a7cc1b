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
   **dropped link** raises :class:`~agent.errors.BleLinkLostError` (after handing on
   everything that arrived): the device keeps what it did not see confirmed.

Buffering: the bleak callback cannot wait (the confirmation goes out when it returns), so
values land in a session buffer of ``max_measurements + MEASUREMENT_SLACK`` entries and the
session's own coroutine hands them on in order with ``await on_measurement(...)``. The
session stops at ``max_measurements`` (the callback that accepts the last one ends the link
at once); the slack absorbs the indications already in flight while the link is torn down,
so a value beyond it means a device that ignores the ATT flow control: it is refused and the
session raises :class:`~agent.errors.DeviceFloodError` (logged ``ble_device_flood``).

Cancellation: measurements buffered but not yet handed on when the caller cancels the
session are lost although the device saw them confirmed. Prefer ``session_timeout_s``
(which ends the radio part and still hands everything on) to wrapping the call in a
shorter ``asyncio.timeout``.

Errors (``agent.errors``): :class:`~agent.errors.BleLinkError` for "not found",
"connect failed", a failed or timed-out GATT operation; :class:`BleLinkLostError` for a
dropped link; :class:`~agent.errors.DeviceProtocolError` for a device without service 0x1810,
characteristic 0x2A35 (indicating) or 0x2A49, or that answers a read with an ATT error.
The full address is needed to connect and sits in :class:`DeviceFacts`, but is never
logged nor put in an exception: logs and errors carry the label (last two octets).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Final

from bleak import BleakClient
from bleak.backends.characteristic import BleakGATTCharacteristic
from bleak.backends.device import BLEDevice
from bleak.backends.service import BleakGATTService

from agent.ble.current_time import ClockPolicy, with_device_clock
from agent.ble.gatt_session import (
    CONNECT_TIMEOUT_S,
    DISCONNECT_TIMEOUT_S,
    MEASUREMENT_SLACK,
    QUIET_PERIOD_S,
    SCAN_TIMEOUT_S,
    BufferedSession,
    SessionEnd,
    check_session_timeout,
    device_facts,
    session_deadline,
)
from agent.ble.stack import BleStack
from agent.ble.uuids import (
    BLOOD_PRESSURE_FEATURE,
    BLOOD_PRESSURE_MEASUREMENT,
    BLOOD_PRESSURE_SERVICE,
    REGULATORY_CERTIFICATION_DATA_LIST,
)
from agent.errors import ConfigError, DeviceProtocolError
from agent.measurement import OnMeasurement, RawMeasurement
from agent.normalize.device import DeviceFacts

__all__ = [
    "CONNECT_TIMEOUT_S",
    "DISCONNECT_TIMEOUT_S",
    "MAX_MEASUREMENTS_PER_SESSION",
    "MEASUREMENT_SLACK",
    "QUIET_PERIOD_S",
    "REGULATORY_CERTIFICATION_DATA_LIST",
    "SCAN_TIMEOUT_S",
    "SESSION_TIMEOUT_S",
    "BpsDeviceInfo",
    "BpsSessionResult",
    "OnMeasurement",
    "RawMeasurement",
    "SessionEnd",
    "collect_blood_pressure",
    "device_facts",
]

SESSION_TIMEOUT_S: Final = 120.0
"""Hard cap on one session, outer to all the above: 20 + 20 + a 200-reading transfer
(≈ 200 x 2 intervals ≈ 40 s) + 5 s quiet, with margin."""

MAX_MEASUREMENTS_PER_SESSION: Final = 200
"""A cuff stores about 100 readings per user for up to 2 users; at this bound the session
ends and the device keeps the rest for the next one."""


@dataclass(frozen=True, slots=True)
class BpsDeviceInfo:
    """Raw values read at connection: DIS 0x180A strings and System ID, BP Feature 0x2A49.

    ``None``: the device does not expose that (optional) DIS characteristic. Identifiers
    (serial number, System ID) never appear in the repr. :func:`device_facts` decodes it.
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


class _BpsSession(BufferedSession):
    """The state of one session; :func:`collect_blood_pressure` is its public face."""

    service_uuid = BLOOD_PRESSURE_SERVICE
    service_name = "Blood Pressure Service"

    async def read_info(self, client: BleakClient) -> tuple[BpsDeviceInfo, BleakGATTService]:
        """Read the BP Feature and DIS (all optional); 0x1810 must have 0x2A49."""
        bps, dis = self.services(client)
        feature = bps.get_characteristic(BLOOD_PRESSURE_FEATURE)
        if feature is None:
            raise DeviceProtocolError(
                self.label, "discover", "no Blood Pressure Feature 0x2A49 in 0x1810"
            )
        feature_value = bytes(await self.gatt("read_bp_feature", client.read_gatt_char(feature)))
        values = await self.read_device_information(client, dis, regulatory=True)
        await self.read_battery_level(client)
        info = BpsDeviceInfo(
            blood_pressure_feature=feature_value,
            manufacturer_name=values.manufacturer_name,
            model_number=values.model_number,
            serial_number=values.serial_number,
            hardware_revision=values.hardware_revision,
            firmware_revision=values.firmware_revision,
            software_revision=values.software_revision,
            system_id=values.system_id,
            regulatory_certification=values.regulatory_certification,
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

    def on_indication(self, _sender: BleakGATTCharacteristic, data: bytearray) -> None:
        """bleak's notification callback: buffer the value; never waits."""
        self.arrived(BLOOD_PRESSURE_MEASUREMENT, data)


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
    found: BLEDevice | None = None,
    clock: ClockPolicy | None = None,
    vet: Callable[[DeviceFacts], None] | None = None,
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

        found: the device as the daemon's scan saw it advertise: no scan of its own.
        clock: whether to set the device's clock when it drifts (``None``: never).
        vet: called with the device's facts before any measurement is accepted; raises
            :class:`~agent.errors.DeviceSecurityError` for a device that is not the one
            pinned (:mod:`agent.ble.identity`).

    Returns:
        What happened, with the raw and decoded device information.

    Raises:
        ConfigError: the timeouts do not nest (``session_timeout_s`` too small).
        BleLinkError: not found, connect failed, a GATT operation failed or the session
            deadline passed before the transfer started.
        BleLinkLostError: the link dropped after set-up (measurements received until then
            were handed on; see its ``measurements``).
        DeviceFloodError: more than ``max_measurements`` + :data:`MEASUREMENT_SLACK`
            values (a device ignoring the ATT flow control); those accepted before were
            handed on, the link was ended at once.
        DeviceProtocolError: the device lacks 0x1810, 0x2A35 (indicating) or 0x2A49, or
            refused a read.
    """
    if max_measurements < 1:
        raise ConfigError("(session)", "max_measurements", "must be at least 1")
    check_session_timeout(
        session_timeout_s, scan_timeout_s, connect_timeout_s, quiet_period_s, "quiet_period_s"
    )
    session = _BpsSession(
        ble,
        address,
        on_measurement,
        max_measurements=max_measurements,
        deadline=session_deadline(session_timeout_s),
    )
    slog = session.log
    device = found if found is not None else await session.find(scan_timeout_s)
    client = await session.connect(device, connect_timeout_s, pair)

    try:
        async with session.setup_deadline():
            info, bps = await session.read_info(client)
            facts = device_facts(session.address, info, session.label)
            # Read only: the clock is set once the transfer is complete (below).
            facts = await with_device_clock(client, facts, session.label)
            if vet is not None:
                vet(facts)
            measurement = session.measurement_characteristic(bps)
            await session.gatt(
                "subscribe_bpm", client.start_notify(measurement, session.on_indication)
            )
        slog.info("ble_session_subscribed")
        ended_by = await session.collect(facts, quiet_period_s)
        if ended_by is SessionEnd.QUIET:  # the device has sent everything it held
            await session.set_clock_after_transfer(client, facts, clock)
    except BaseException:
        await session.disconnect_after_failure(client)
        raise
    # Indications that arrived while disconnecting were confirmed too: hand them on.
    ended_by = await session.finish(client, facts, ended_by)
    if ended_by is SessionEnd.DEADLINE:
        slog.warning("ble_session_deadline", measurements=session.handed_on)
    slog.info(
        "ble_session_ended",
        measurements=session.handed_on,
        ended_by=ended_by.value,
        overflowed=session.overflowed,
        peak_measurements=session.peak_pending,
    )
    return BpsSessionResult(session.label, session.handed_on, ended_by, info, facts)
