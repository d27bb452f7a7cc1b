"""Read a device's clock at connection: Current Time 0x2A2B of the Current Time Service 0x1805.

The HL7 PHD IG's coincident timestamp (ble-spec-facts §2; reliability-catalogue D7/B9): the
hub reads the device's current time and notes its own UTC time at the same moment, so that the
normalizer can place the device's time stamps on the hub's timeline
(:mod:`agent.normalize.clock`). Every session calls it the same way, right after reading the
Device Information Service::

    facts = await with_device_clock(client, facts, label)

The read is best effort: a device without CTS, a refused or failed read, or a value that is not
10 octets leaves ``facts.clock`` as ``None`` (logged), and the session goes on — a clock is an
aid to the time stamps, never a reason to leave readings on the device. A dropped link is left
to the session's next GATT operation to report.

The hub time is the midpoint of the read request and its response: the device answers at some
instant in between, and the midpoint bounds the error by half the round trip (one or two
connection intervals, well under the one-second resolution of the time stamps).
"""

from __future__ import annotations

import asyncio
import dataclasses
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from typing import Final

import structlog
from bleak import BleakClient
from bleak.exc import BleakError

from agent.ble.uuids import (
    CURRENT_TIME,
    CURRENT_TIME_SERVICE,
)
from agent.normalize.clock import ClockFacts, parse_clock
from agent.normalize.device import DeviceFacts
from agent.normalize.phd import utc_now

log = structlog.get_logger(__name__)


@dataclass(frozen=True, slots=True)
class ClockPolicy:
    """Whether and when the hub sets a device's clock (``[ble] set_device_clock``,
    ``clock_set_threshold_s``)."""

    set_clock: bool = False
    threshold_s: float = 60.0


CURRENT_TIME_READ_TIMEOUT_S: Final = 5.0
"""One ATT read takes a few connection intervals (≤ 0.2 s); 5 s is the same allowance as the
session's disconnect wait, far inside the session deadline that encloses it."""


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
    try:
        service = client.services.get_service(CURRENT_TIME_SERVICE)
    except BleakError:
        slog.warning("ble_current_time_ambiguous")  # more than one 0x1805
        return None
    characteristic = service.get_characteristic(CURRENT_TIME) if service is not None else None
    if characteristic is None or "read" not in characteristic.properties:
        slog.info("ble_current_time_absent")
        return None
    before = now()
    try:
        async with asyncio.timeout(timeout_s):
            data = bytes(await client.read_gatt_char(characteristic))
    except (BleakError, TimeoutError) as exc:
        slog.warning("ble_current_time_unreadable", error=type(exc).__name__)
        return None
    after = now()
    clock = parse_clock(data, before + (after - before) / 2)
    if clock is None:
        slog.warning("ble_current_time_undecodable", size=len(data))
        return None
    slog.info("ble_current_time_read", clock_unset=clock.is_reset)
    return clock


async def with_device_clock(
    client: BleakClient,
    facts: DeviceFacts,
    label: str,
    *,
    timeout_s: float = CURRENT_TIME_READ_TIMEOUT_S,
    now: Callable[[], datetime] = utc_now,
    policy: ClockPolicy | None = None,
) -> DeviceFacts:
    """``facts`` with :attr:`DeviceFacts.clock` set from :func:`read_device_clock`.

    ``policy``: whether to set the device's clock when it drifts (``None``: never)."""
    clock = await read_device_clock(client, label, timeout_s=timeout_s, now=now)
    return dataclasses.replace(facts, clock=clock)
