"""One collection session with a Pulse Oximeter Service (PLXS 1.0, UUID 0x1822) device.

The same procedure and guarantees as the blood-pressure session (:mod:`agent.ble.bps_session`,
both on :class:`agent.ble.gatt_session.BufferedSession`:
scan for the allowlisted address, connect, read, subscribe, hand each raw value on the moment
it arrives, end on quiet / limit / deadline, :class:`~agent.errors.BleLinkLostError` on a
dropped link), with the PLXS specifics:

1. **Read** DIS (all optional) and PLX Features 0x2A60 (PLXS §3.3, mandatory), then the
   device's clock, Current Time 0x2A2B, when it has CTS 0x1805 (:mod:`agent.ble.current_time`;
   best effort), for the coincident timestamp of spot-check time stamps.
2. **Subscribe** to PLX Spot-check Measurement 0x2A5E *indications* and PLX Continuous
   Measurement 0x2A5F *notifications*, whichever the device has (PLXS requires at least one).
   Spot-checks are handed on one for one, like the cuff's readings.
3. **Continuous data policy.** A worn oximeter notifies SpO2/PR about once a second for as
   long as the link lasts; one outbox record per notification would be 86 400 records a day.
   The session therefore hands on **at most one continuous value per**
   ``continuous_interval_s`` (default :data:`CONTINUOUS_INTERVAL_S`, 60 s): the first
   notification of each interval, exactly as the device sent it; the others are counted
   (``continuous_skipped``) and dropped. Why a sample and not a hub-made min/max/mean: every
   record stays a real, device-reported SpO2 with the device's own status bits and precision,
   decodable and traceable like any other reading, which is what a clinician reviewing a trend
   needs; a synthetic mean would hide the device's quality flags. The limitation (documented
   for the clinical team): a desaturation shorter than the interval may not be recorded; the
   interval is a session parameter (no configuration key yet) for programmes that need a
   denser trend.
   Spot-checks are never thinned.
4. **Measurement storage.** When PLX Features bit 2 says spot-checks are stored and the
   device has a Record Access Control Point 0x2A52 (write + indicate), the session enables
   RACP indications and writes "report stored records, all records" (``01 01``: PLXS allows
   no filter, ble-spec-facts §6.4). The stored records come back as 0x2A5E indications and
   are handed on like any spot-check; the report ends with ``06 00 01 xx``. A quiet period
   does not end the session while the report is unfinished, up to
   :data:`RACP_PROCEDURE_TIMEOUT_S` after the request. Because only "all records" exists,
   every session fetches the whole store again: the copies carry the same IG identifier
   (device time stamp) and the outbox drops them as duplicates. The hub never deletes
   records on the device: a record that arrived between a report and a delete would be lost.
   A refused request (ATT 0xFD / 0xFE, or an RACP error code) is logged and the session
   goes on with the live values.
5. The session ends as the BPS session does. A streaming oximeter keeps it alive until the
   session deadline (``SessionEnd.DEADLINE``), which is then the normal end.
"""

from __future__ import annotations

import math
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
    PLX_CONTINUOUS_MEASUREMENT,
    PLX_FEATURES,
    PLX_SPOT_CHECK_MEASUREMENT,
    PULSE_OXIMETER_SERVICE,
    RECORD_ACCESS_CONTROL_POINT,
)
from agent.errors import ConfigError, DecodeError, DeviceFloodError, DeviceProtocolError
from agent.measurement import OnMeasurement
from agent.normalize.device import DeviceFacts
from drivers.pulse_oximetry import PlxFeatures, PlxSupportedFeatures
from drivers.racp import (
    OpCode,
    RacpRequest,
    RacpService,
    ResponseCodeIndication,
    decode_response,
)

RACP_PROCEDURE_TIMEOUT_S: Final = 30.0
"""Longest wait, from the request, for a stored-records report to end: PLX devices hold at
most a few hundred spot-checks, indicated one per connection interval (≤ 100 ms), so a
complete report takes seconds. Inner to ``SESSION_TIMEOUT_S`` (120 s) of the daemon."""

CONTINUOUS_INTERVAL_S: Final = 60.0
"""At most one continuous SpO2/PR record per minute: a per-minute trend is what home
oximetry programmes review (and 1 440 records a day stay within the outbox quota), while
spot-checks, the patient's deliberate measurements, are all kept."""

MAX_MEASUREMENTS_PER_SESSION: Final = 200
"""Spot-checks plus forwarded continuous values; the device keeps unsent spot-checks."""

MAX_CONTINUOUS_RATE_HZ: Final = 50.0
"""Continuous notifications (forwarded or skipped) per second of session, on average, at
most. PLXS continuous values are SpO2/PR numerics that oximeters update about once a second
(the "fast" averaging a few times a second); 50 Hz is over ten times the fastest, while a
device notifying at BLE's own rate (hundreds per second) is cut. The skipped ones cost no
memory, only a counter, but without this bound such a device would keep the hub busy until
the session deadline."""

UNBOUNDED_SESSION_S: Final = 120.0
"""The session length the continuous bound assumes when the caller sets no deadline (the
daemon's default ``ble.session_timeout_s``)."""


@dataclass(frozen=True, slots=True)
class PlxSessionResult:
    """What a session did.

    Attributes:
        device: the device's label (last two address octets).
        measurements: values handed on (spot-checks and forwarded continuous values).
        continuous_skipped: continuous notifications dropped by the interval policy.
        ended_by: why it ended.
        racp: how the stored-records report went: ``None`` (not attempted: no storage),
            ``"success"``, ``"no_records_found"``, another RACP response code name in lower
            case, ``"refused"`` (ATT error on the write) or ``"unfinished"``.
        plx_features: the raw PLX Features value.
        facts: the decoded device information (holds the full address: not in the repr).
    """

    device: str
    measurements: int
    continuous_skipped: int
    ended_by: SessionEnd
    racp: str | None
    plx_features: bytes = field(repr=False)
    facts: DeviceFacts = field(repr=False)


class _PlxSession(BufferedSession):
    """The buffered session with the PLXS service and the continuous policy."""

    service_uuid = PULSE_OXIMETER_SERVICE
    service_name = "Pulse Oximeter Service"

    def __init__(
        self,
        ble: BleStack,
        address: str,
        on_measurement: OnMeasurement,
        *,
        max_measurements: int,
        deadline: float,
        continuous_interval_s: float,
        continuous_limit: int,
    ) -> None:
        super().__init__(
            ble, address, on_measurement, max_measurements=max_measurements, deadline=deadline
        )
        self.continuous_interval_s = continuous_interval_s
        self.next_continuous_at = -math.inf
        self.continuous_skipped = 0
        self.continuous_received = 0
        self.continuous_limit = continuous_limit
        self.racp: str | None = None
        self.racp_give_up_at = -math.inf

    async def read_plx(self, client: BleakClient) -> tuple[bytes, DeviceFacts, BleakGATTService]:
        """Read PLX Features and DIS (all optional); 0x1822 must have 0x2A60."""
        plx, dis = self.services(client)
        features = plx.get_characteristic(PLX_FEATURES)
        if features is None:
            raise DeviceProtocolError(self.label, "discover", "no PLX Features 0x2A60 in 0x1822")
        feature_value = bytes(await self.gatt("read_plx_features", client.read_gatt_char(features)))
        values = await self.read_device_information(client, dis, regulatory=False)
        await self.read_battery_level(client)
        return feature_value, device_facts(self.address, values, self.label), plx

    def on_spot_check(self, _sender: BleakGATTCharacteristic, data: bytearray) -> None:
        """0x2A5E indication: every one is handed on."""
        self.arrived(PLX_SPOT_CHECK_MEASUREMENT, data)

    def on_racp(self, _sender: BleakGATTCharacteristic, data: bytearray) -> None:
        """RACP indication: the report's Response Code ends the procedure."""
        try:
            response = decode_response(bytes(data))
        except DecodeError as exc:
            self.log.warning("plx_racp_response_undecodable", reason=exc.reason)
            return
        if (
            isinstance(response, ResponseCodeIndication)
            and response.request_op_code == OpCode.REPORT_STORED_RECORDS
            and self.racp == "unfinished"
        ):
            code = response.code
            self.racp = code.name.lower() if code is not None else f"0x{response.response_code:02x}"
            self.log.info("plx_racp_report_ended", result=self.racp)
            self.wakeup.set()

    async def request_stored_records(
        self, client: BleakClient, features: bytes, plx: BleakGATTService
    ) -> None:
        """Ask for every stored spot-check when the device stores them (module docstring)."""
        try:
            storage = bool(
                PlxFeatures.from_bytes(features).supported_features
                & PlxSupportedFeatures.SPOT_CHECK_MEASUREMENT_STORAGE
            )
        except DecodeError as exc:
            self.log.warning("plx_features_undecodable", reason=exc.reason)
            return
        racp = plx.get_characteristic(RECORD_ACCESS_CONTROL_POINT)
        if not storage:
            return
        if racp is None or not {"write", "indicate"} <= set(racp.properties):
            self.log.warning("plx_racp_missing")
            return
        request = RacpRequest.report_all()
        request.check_for(RacpService.PLXS)
        await self.gatt("subscribe_racp", client.start_notify(racp, self.on_racp))
        self.racp = "unfinished"
        self.racp_give_up_at = self.loop.time() + RACP_PROCEDURE_TIMEOUT_S
        try:
            await self.gatt(
                "write_racp", client.write_gatt_char(racp, bytes(request), response=True)
            )
        except DeviceProtocolError as exc:
            self.racp = "refused"
            self.log.warning("plx_racp_refused", reason=exc.reason)
            return
        self.log.info("plx_racp_report_requested")

    async def collect(self, facts: DeviceFacts, quiet_period_s: float) -> SessionEnd | None:
        """As the BPS session, but a quiet period does not end an unfinished RACP report."""
        while True:
            ended = await super().collect(facts, quiet_period_s)
            if (
                ended is SessionEnd.QUIET
                and self.racp == "unfinished"
                and self.loop.time() < self.racp_give_up_at
            ):
                continue
            return ended

    def on_continuous(self, _sender: BleakGATTCharacteristic, data: bytearray) -> None:
        """0x2A5F notification: the first of each interval is handed on, the rest counted.

        More than ``continuous_limit`` in the session (:data:`MAX_CONTINUOUS_RATE_HZ`) is a
        flood: refused, the link ends, the session raises ``DeviceFloodError``.
        """
        now = self.loop.time()
        if self.failure is not None:
            return
        if self.continuous_received >= self.continuous_limit:
            self.fail(
                DeviceFloodError(
                    self.label, self.phase, "continuous_notifications", self.continuous_limit
                )
            )
            return
        self.continuous_received += 1
        if now < self.next_continuous_at:
            self.continuous_skipped += 1
            self.last_arrival = now  # a streaming device is still sending: not quiet
            return
        self.next_continuous_at = now + self.continuous_interval_s
        self.arrived(PLX_CONTINUOUS_MEASUREMENT, data)


async def collect_pulse_oximetry(
    ble: BleStack,
    address: str,
    on_measurement: OnMeasurement,
    *,
    scan_timeout_s: float = SCAN_TIMEOUT_S,
    connect_timeout_s: float = CONNECT_TIMEOUT_S,
    quiet_period_s: float = QUIET_PERIOD_S,
    session_timeout_s: float | None = None,
    max_measurements: int = MAX_MEASUREMENTS_PER_SESSION,
    continuous_interval_s: float = CONTINUOUS_INTERVAL_S,
    pair: bool = False,
    found: BLEDevice | None = None,
    clock: ClockPolicy | None = None,
    vet: Callable[[DeviceFacts], None] | None = None,
) -> PlxSessionResult:
    """Collect spot-checks and (thinned) continuous values from one allowlisted oximeter.

    Args: as :func:`agent.ble.bps_session.collect_blood_pressure`, plus
        continuous_interval_s: hand on at most one continuous value per this many seconds
            (``0``: every notification).

        found: the device as the daemon's scan saw it advertise: no scan of its own.
        clock: whether to set the device's clock when it drifts (``None``: never).
        vet: called with the device's facts before any measurement is accepted; raises
            :class:`~agent.errors.DeviceSecurityError` for a device that is not the one
            pinned (:mod:`agent.ble.identity`).

    Raises:
        ConfigError: the timeouts do not nest, or a bound is negative.
        BleLinkError: not found, connect failed, a GATT operation failed or the deadline
            passed before the transfer started.
        BleLinkLostError: the link dropped after set-up (what arrived was handed on).
        DeviceFloodError: more values than ``max_measurements`` + slack, or continuous
            notifications faster than :data:`MAX_CONTINUOUS_RATE_HZ` on average (what
            was accepted before was handed on).
        DeviceProtocolError: no 0x1822, no 0x2A60, neither an indicating 0x2A5E nor a
            notifying 0x2A5F, or a refused read.
    """
    if max_measurements < 1:
        raise ConfigError("(session)", "max_measurements", "must be at least 1")
    if continuous_interval_s < 0:
        raise ConfigError("(session)", "continuous_interval_s", "must not be negative")
    check_session_timeout(
        session_timeout_s, scan_timeout_s, connect_timeout_s, quiet_period_s, "quiet_period_s"
    )
    session = _PlxSession(
        ble,
        address,
        on_measurement,
        max_measurements=max_measurements,
        deadline=session_deadline(session_timeout_s),
        continuous_interval_s=continuous_interval_s,
        continuous_limit=math.ceil(
            MAX_CONTINUOUS_RATE_HZ
            * (UNBOUNDED_SESSION_S if session_timeout_s is None else session_timeout_s)
        ),
    )
    slog = session.log
    device = found if found is not None else await session.find(scan_timeout_s)
    client = await session.connect(device, connect_timeout_s, pair)

    try:
        async with session.setup_deadline():
            features, facts, plx = await session.read_plx(client)
            # Read only: the clock is set once the transfer is complete (below).
            facts = await with_device_clock(client, facts, session.label)
            if vet is not None:
                vet(facts)
            spot = plx.get_characteristic(PLX_SPOT_CHECK_MEASUREMENT)
            continuous = plx.get_characteristic(PLX_CONTINUOUS_MEASUREMENT)
            subscribed = 0
            if spot is not None and "indicate" in spot.properties:
                await session.gatt(
                    "subscribe_spot_check", client.start_notify(spot, session.on_spot_check)
                )
                subscribed += 1
            if continuous is not None and "notify" in continuous.properties:
                await session.gatt(
                    "subscribe_continuous",
                    client.start_notify(continuous, session.on_continuous),
                )
                subscribed += 1
            if not subscribed:
                raise DeviceProtocolError(
                    session.label,
                    "discover",
                    "neither an indicating 0x2A5E nor a notifying 0x2A5F in 0x1822",
                )
            if spot is not None and "indicate" in spot.properties:
                await session.request_stored_records(client, features, plx)
        slog.info("ble_session_subscribed", characteristics=subscribed)
        ended_by = await session.collect(facts, quiet_period_s)
        if ended_by is SessionEnd.QUIET:  # the device has sent everything it held
            await session.set_clock_after_transfer(client, facts, clock)
    except BaseException:
        await session.disconnect_after_failure(client)
        raise
    ended_by = await session.finish(client, facts, ended_by)
    if session.racp == "unfinished":
        slog.warning("plx_racp_report_unfinished")
    slog.info(
        "ble_session_ended",
        measurements=session.handed_on,
        continuous_skipped=session.continuous_skipped,
        ended_by=ended_by.value,
        overflowed=session.overflowed,
        peak_measurements=session.peak_pending,
    )
    return PlxSessionResult(
        session.label,
        session.handed_on,
        session.continuous_skipped,
        ended_by,
        session.racp,
        features,
        facts,
    )
