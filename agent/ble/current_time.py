"""Read a device's clock at connection, and set it when it drifts: Current Time 0x2A2B (CTS 0x1805).

The HL7 PHD IG's coincident timestamp (ble-spec-facts §2; reliability-catalogue D7/B9): the
hub reads the device's current time and notes its own UTC time at the same moment, so that the
normalizer can place the device's time stamps on the hub's timeline
(:mod:`agent.normalize.clock`). Every session calls it the same way, right after reading the
Device Information Service::

    facts = await with_device_clock(client, facts, label, policy=clock)

The read is best effort: a device without CTS, a refused or failed read, or a value that is not
10 octets leaves ``facts.clock`` as ``None`` (logged), and the session goes on — a clock is an
aid to the time stamps, never a reason to leave readings on the device. A dropped link is left
to the session's next GATT operation to report.

The hub time is the midpoint of the read request and its response: the device answers at some
instant in between, and the midpoint bounds the error by half the round trip (one or two
connection intervals, well under the one-second resolution of the time stamps).

Setting the clock (issue 8, "Current Time"; :func:`set_device_clock`), right after the read,
when all of these hold:

- the :class:`ClockPolicy` asks for it (``[ble] set_device_clock``) and names the hub's zone;
- the device's clock is unset or reset (:attr:`ClockFacts.is_reset`), or differs from the
  hub's by more than ``threshold_s`` (``[ble] clock_set_threshold_s``);
- the hub's own clock is trusted (:attr:`ClockPolicy.hub_clock_trusted`): a hub that boots
  with a wrong clock must not spread it to the patient's devices;
- Current Time has the Write property: CTS 1.1 makes it optional (Read M, Notify M, Write O;
  ble-spec-facts §2), and a device without it is never written to.

The value written is the hub's wall-clock time in the patient's zone (``hub.timezone``), the
time the normalizer reads device time stamps in (:func:`agent.normalize.phd.localize`), as an
Exact Time 256 with Adjust Reason "External reference time update" (bit 1, GATT XML
current_time; ble-spec-facts §2): the hub passes on a time it got from outside (network time),
not one a person typed in (bit 0, "Manual time update"). The write is best effort too: a device
may refuse it (ATT 0x80 "Data field ignored" [MEM], Write Not Permitted 0x03, …); that is
logged by name and the session goes on.

The readings of the session that set the clock are still placed with the clock as it was read:
see :func:`with_device_clock`.
"""

from __future__ import annotations

import asyncio
import dataclasses
import math
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Final
from zoneinfo import ZoneInfo

import structlog
from bleak import BleakClient
from bleak.backends.characteristic import BleakGATTCharacteristic
from bleak.exc import BleakError, BleakGATTProtocolError, BleakGATTProtocolErrorCode

from agent.ble.uuids import (
    CURRENT_TIME,
    CURRENT_TIME_SERVICE,
)
from agent.cancellation import raise_if_cancelled
from agent.normalize.clock import ClockFacts, parse_clock
from agent.normalize.device import DeviceFacts
from agent.normalize.phd import utc_now
from drivers.gatt_time import AdjustReason, CurrentTime

log = structlog.get_logger(__name__)

HUB_CLOCK_FLOOR: Final = datetime(2026, 1, 1, tzinfo=UTC)
"""No hub running this agent has a real time before 2026: a clock behind it is one that booted
without a real-time clock or a time source (1970, or a build-time stamp) and has not been set."""


def hub_clock_plausible() -> bool:
    """The default trust check for the hub's own clock: not before :data:`HUB_CLOCK_FLOOR`.

    It catches only a clock that has obviously never been set. The system clock's sync state
    (NTP, and the modem's network time of issue 10, reported by the service of issue 11) is the
    stronger signal; a check built on it goes in :attr:`ClockPolicy.hub_clock_trusted`.
    """
    return utc_now() >= HUB_CLOCK_FLOOR


@dataclass(frozen=True, slots=True)
class ClockPolicy:
    """Whether and when the hub sets a device's clock (``[ble] set_device_clock``,
    ``clock_set_threshold_s``).

    Attributes:
        set_clock: write the hub's time to a device's Current Time when due.
        threshold_s: a device clock that differs from the hub's by more than this is set
            (an unset or reset one always is).
        timezone: the patient's IANA zone (``hub.timezone``): devices keep local wall time,
            and the drift and the value written are wall-clock time in this zone. ``None``:
            the zone is unknown here, so no clock is ever set (logged when one is due).
        hub_clock_trusted: whether the hub's own clock may be passed on now; checked before
            every write (default :func:`hub_clock_plausible`).
    """

    set_clock: bool = False
    threshold_s: float = 60.0
    timezone: str | None = None
    hub_clock_trusted: Callable[[], bool] = hub_clock_plausible

    def __post_init__(self) -> None:
        if math.isnan(self.threshold_s) or self.threshold_s < 0:
            raise ValueError("threshold_s must be a number of seconds >= 0")
        if self.timezone is not None:
            ZoneInfo(self.timezone)  # raises for an unknown zone: found at start, not per write


CURRENT_TIME_READ_TIMEOUT_S: Final = 5.0
"""One ATT read takes a few connection intervals (≤ 0.2 s); 5 s is the same allowance as the
session's disconnect wait, far inside the session deadline that encloses it."""

CURRENT_TIME_WRITE_TIMEOUT_S: Final = CURRENT_TIME_READ_TIMEOUT_S
"""A Write Request and its response take as long as a read: the same allowance."""

ATT_DATA_FIELD_IGNORED: Final = 0x80
"""CTS 1.1 application error: the server did not apply a Current Time write [MEM, spec facts
§2]. bleak's error-code enum has no name for application errors (0x80-0x9F)."""


def att_error_name(code: int) -> str:
    """An ATT error code's name for the logs: bleak's, CTS's 0x80, or ``ATT_ERROR_0xNN``."""
    if code == ATT_DATA_FIELD_IGNORED:
        return "DATA_FIELD_IGNORED"
    # bleak's enum takes any value (an unknown one gets a made-up name): look among its members.
    known = {member.value: member.name for member in BleakGATTProtocolErrorCode}
    return known.get(code) or f"ATT_ERROR_0x{code:02X}"


def drift_s(clock: ClockFacts, timezone: str) -> int | None:
    """How far the device's clock runs ahead of the hub's (negative: behind), whole seconds,
    wall-clock time in ``timezone``; None when the device's time is unknown."""
    offset = clock.offset(timezone)  # hub minus device
    return None if offset is None else -int(offset.total_seconds())


def clock_set_due(clock: ClockFacts, policy: ClockPolicy) -> bool:
    """Whether ``policy`` calls for setting a clock read as ``clock`` (the Write property and
    the hub clock's trust are checked by :func:`set_device_clock`). Pure."""
    if not policy.set_clock or policy.timezone is None:
        return False
    if clock.is_reset:
        return True
    drift = drift_s(clock, policy.timezone)
    return drift is not None and abs(drift) > policy.threshold_s


def current_time_value(hub_now: datetime, timezone: str) -> bytes:
    """The 10-octet Current Time the hub writes: ``hub_now`` (aware) as wall-clock time in
    ``timezone``, its weekday and 1/256 s, Adjust Reason "External reference time update"."""
    local = hub_now.astimezone(ZoneInfo(timezone)).replace(tzinfo=None)
    return bytes(CurrentTime.from_datetime(local, AdjustReason.EXTERNAL_REFERENCE_TIME_UPDATE))


def _current_time_characteristic(
    client: BleakClient, slog: structlog.typing.FilteringBoundLogger
) -> BleakGATTCharacteristic | None:
    """Current Time 0x2A2B of the device's only CTS 0x1805, None when absent or ambiguous."""
    try:
        service = client.services.get_service(CURRENT_TIME_SERVICE)
    except BleakError:
        slog.warning("ble_current_time_ambiguous")  # more than one 0x1805
        return None
    return service.get_characteristic(CURRENT_TIME) if service is not None else None


async def read_device_clock(
    client: BleakClient,
    label: str,
    *,
    timeout_s: float = CURRENT_TIME_READ_TIMEOUT_S,
    now: Callable[[], datetime] = utc_now,
) -> ClockFacts | None:
    """Read Current Time 0x2A2B if the device exposes it readable; None otherwise.

    Args:
        client: a connected client with services discovered.
        label: the device's log label (last two address octets).
        timeout_s: bound on the read.
        now: the hub's UTC wall clock (injected by tests).
    """
    slog = log.bind(device=label)
    characteristic = _current_time_characteristic(client, slog)
    if characteristic is None or "read" not in characteristic.properties:
        slog.info("ble_current_time_absent")
        return None
    before = now()
    try:
        async with asyncio.timeout(timeout_s):
            data = bytes(await client.read_gatt_char(characteristic))
    except (BleakError, TimeoutError) as exc:
        raise_if_cancelled()
        slog.warning("ble_current_time_unreadable", error=type(exc).__name__)
        return None
    after = now()
    clock = parse_clock(data, before + (after - before) / 2)
    if clock is None:
        slog.warning("ble_current_time_undecodable", size=len(data))
        return None
    slog.info("ble_current_time_read", clock_unset=clock.is_reset)
    return clock


async def set_device_clock(
    client: BleakClient,
    clock: ClockFacts,
    policy: ClockPolicy,
    label: str,
    *,
    timeout_s: float = CURRENT_TIME_WRITE_TIMEOUT_S,
    now: Callable[[], datetime] = utc_now,
) -> bool:
    """Write the hub's time to Current Time 0x2A2B when ``policy`` calls for it (module
    docstring); True when the device accepted the write.

    Never raises for the device's sake: a refusal (an ATT error, logged by name), a failure or
    a timeout is logged as ``ble_current_time_set_failed`` and False is returned. Logs carry
    the drift in whole seconds (:func:`drift_s`), never a time.

    Args:
        client: a connected client with services discovered.
        clock: what :func:`read_device_clock` read in this connection.
        policy: whether, when, and in which zone.
        label: the device's log label (last two address octets).
        timeout_s: bound on the Write Request and its response.
        now: the hub's UTC wall clock (injected by tests).
    """
    timezone = policy.timezone
    if timezone is None:
        if policy.set_clock:  # the drift cannot be told without the patient's zone
            log.info("ble_current_time_set_skipped", device=label, reason="no_timezone")
        return False
    if not clock_set_due(clock, policy):
        return False
    slog = log.bind(device=label, drift_s=drift_s(clock, timezone), clock_unset=clock.is_reset)
    if not policy.hub_clock_trusted():
        slog.warning("ble_current_time_set_skipped", reason="hub_clock_untrusted")
        return False
    characteristic = _current_time_characteristic(client, slog)
    if characteristic is None or "write" not in characteristic.properties:
        slog.info("ble_current_time_set_skipped", reason="not_writable")
        return False
    try:
        async with asyncio.timeout(timeout_s):
            value = current_time_value(now(), timezone)
            await client.write_gatt_char(characteristic, value, response=True)
    except BleakGATTProtocolError as exc:
        raise_if_cancelled()
        slog.warning("ble_current_time_set_failed", error=att_error_name(int(exc.args[0])))
        return False
    except (BleakError, TimeoutError) as exc:
        raise_if_cancelled()
        slog.warning("ble_current_time_set_failed", error=type(exc).__name__)
        return False
    raise_if_cancelled()
    slog.info("ble_current_time_set")
    return True


async def with_device_clock(
    client: BleakClient,
    facts: DeviceFacts,
    label: str,
    *,
    timeout_s: float = CURRENT_TIME_READ_TIMEOUT_S,
    now: Callable[[], datetime] = utc_now,
    policy: ClockPolicy | None = None,
) -> DeviceFacts:
    """``facts`` with :attr:`DeviceFacts.clock` set from :func:`read_device_clock`; then the
    device's clock set as ``policy`` calls for (:func:`set_device_clock`; ``None``: never).

    ``facts.clock`` stays the clock *as read*, before any write: every reading this session
    hands on was stamped by that clock (the device stamped and stored it before this
    connection), so it is that clock's offset that places them on the hub's timeline. Placing
    them with the corrected clock would move each by the very drift just removed. Only later
    sessions read the corrected clock, for readings taken after it was set.

    Writing here, before the transfer, has one flaw: a reading still on the device when the
    session ends early (the link lost mid-transfer) comes in a later session, stamped by the
    old clock but placed by the corrected one, off by the drift removed. The collection
    sessions therefore read with ``policy=None`` and set the clock only once the device has
    handed over everything (:meth:`agent.ble.gatt_session.GattSession.set_clock_after_transfer`).
    """
    clock = await read_device_clock(client, label, timeout_s=timeout_s, now=now)
    if clock is not None and policy is not None:
        await set_device_clock(client, clock, policy, label, timeout_s=timeout_s, now=now)
    return dataclasses.replace(facts, clock=clock)
