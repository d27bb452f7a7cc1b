"""Which BLE session collects from which kind of device: one entry per ``devices.kind``.

Every session has the same shape, so the daemon treats all devices alike::

    await SESSIONS[device.kind](ble, device, on_measurement, settings, sync_state,
                                found=found, vet=vet)

``found`` is the device as the collector's scan saw it advertise (``None``: the session scans
for it itself); ``vet`` checks the device's identity before any measurement is accepted
(:mod:`agent.ble.identity`); ``clock`` says whether to set the device's clock once its
transfer is complete (:mod:`agent.ble.current_time`). A device whose ``pairing`` is not
``none`` is connected with ``pair=True`` on Bumble: encrypted with its bond, or bonded first
as the stack's pairing policy allows (:func:`pair_for`); on BlueZ a ``required`` device is
connected without ``Pair()`` (the daemon checked its bond first), since BlueZ would bond it
afresh.
``on_measurement`` stores one raw measurement (it returns once the reading is queued for
the outbox); ``sync_state`` reads this device's committed sync state (a glucometer's RACP
high-water mark). A session that advances such state returns the new value inside the
:class:`RawMeasurement` (``sync_state``), so it commits in the same transaction as the
reading it covers: never ahead of it.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Final, Protocol

import structlog
from bleak.backends.device import BLEDevice

from agent.ble.bps_session import collect_blood_pressure
from agent.ble.current_time import ClockPolicy
from agent.ble.gls_session import (
    RACP_PROCEDURE_TIMEOUT_S,
    SYNC_KEY,
    collect_glucose,
    read_mark,
)
from agent.ble.plx_session import collect_pulse_oximetry
from agent.ble.stack import BleStack
from agent.config import BleConfig, DeviceConfig
from agent.logs import device_label
from agent.measurement import OnMeasurement
from agent.normalize.device import DeviceFacts

log = structlog.get_logger(__name__)


class SyncStateReader(Protocol):
    """Reads this device's committed sync state by key (``None`` when never set)."""

    def __call__(self, key: str) -> bytes | None: ...


@dataclass(frozen=True, slots=True)
class SessionOutcome:
    """How a session that did not raise ended."""

    measurements: int
    ended_by: str


def pair_for(ble: BleStack, device: DeviceConfig) -> bool:
    """bleak's ``pair`` for ``device``: whether the connection may secure the link by
    pairing. Bumble's backend encrypts with a stored bond first and bonds only as the stack's
    ``may_pair`` allows, so every secured device asks for it; on BlueZ ``pair=True`` calls
    ``Pair()``, which would bond a ``required`` device the daemon must never bond."""
    mode = device.pairing_mode
    bluez = ble.host is None
    return mode == "first_contact" or (mode == "required" and not bluez)


Vet = Callable[[DeviceFacts], None]
"""Checks a device's facts before any measurement is accepted; raises
:class:`~agent.errors.DeviceSecurityError`."""


class Session(Protocol):
    """A device kind's session (one entry of :data:`SESSIONS`)."""

    def __call__(
        self,
        ble: BleStack,
        device: DeviceConfig,
        on_measurement: OnMeasurement,
        settings: BleConfig,
        sync_state: SyncStateReader,
        /,
        *,
        found: BLEDevice | None = None,
        vet: Vet | None = None,
        clock: ClockPolicy | None = None,
    ) -> Awaitable[SessionOutcome]: ...


async def blood_pressure_session(
    ble: BleStack,
    device: DeviceConfig,
    on_measurement: OnMeasurement,
    settings: BleConfig,
    _sync_state: SyncStateReader,
    *,
    found: BLEDevice | None = None,
    vet: Vet | None = None,
    clock: ClockPolicy | None = None,
) -> SessionOutcome:
    """A BPS 1.0 cuff: indications of its stored measurements after connection."""
    result = await collect_blood_pressure(
        ble,
        device.address,
        on_measurement,
        scan_timeout_s=settings.scan_timeout_s,
        connect_timeout_s=settings.connect_timeout_s,
        quiet_period_s=settings.quiet_period_s,
        session_timeout_s=settings.session_timeout_s,
        pair=pair_for(ble, device),
        found=found,
        clock=clock,
        vet=vet,
    )
    return SessionOutcome(result.measurements, result.ended_by.value)


async def pulse_oximeter_session(
    ble: BleStack,
    device: DeviceConfig,
    on_measurement: OnMeasurement,
    settings: BleConfig,
    _sync_state: SyncStateReader,
    *,
    found: BLEDevice | None = None,
    vet: Vet | None = None,
    clock: ClockPolicy | None = None,
) -> SessionOutcome:
    """A PLXS 1.0 oximeter: spot-check indications, continuous notifications thinned to one
    per ``plx_session.CONTINUOUS_INTERVAL_S`` (policy in :mod:`agent.ble.plx_session`)."""
    result = await collect_pulse_oximetry(
        ble,
        device.address,
        on_measurement,
        scan_timeout_s=settings.scan_timeout_s,
        connect_timeout_s=settings.connect_timeout_s,
        quiet_period_s=settings.quiet_period_s,
        session_timeout_s=settings.session_timeout_s,
        pair=pair_for(ble, device),
        found=found,
        clock=clock,
        vet=vet,
    )
    return SessionOutcome(result.measurements, result.ended_by.value)


async def glucose_session(
    ble: BleStack,
    device: DeviceConfig,
    on_measurement: OnMeasurement,
    settings: BleConfig,
    sync_state: SyncStateReader,
    *,
    found: BLEDevice | None = None,
    vet: Vet | None = None,
    clock: ClockPolicy | None = None,
) -> SessionOutcome:
    """A GLS 1.0 glucometer: an incremental RACP sync from the committed high-water mark
    (``gls_last_seq``; policy in :mod:`agent.ble.gls_session`)."""
    # The RACP procedure timeout nests inside what the session deadline leaves after scan
    # and connect (30 s unless the configured session is shorter).
    room = settings.session_timeout_s - settings.scan_timeout_s - settings.connect_timeout_s
    stored = sync_state(SYNC_KEY)
    mark = read_mark(stored)
    if stored is not None and mark is None:
        # An unreadable mark (a 2- or 10-octet value is expected): resync all, never skip.
        log.warning(
            "gls_sync_mark_unreadable", device=device_label(device.address), size=len(stored)
        )
    result = await collect_glucose(
        ble,
        device.address,
        on_measurement,
        mark,
        scan_timeout_s=settings.scan_timeout_s,
        connect_timeout_s=settings.connect_timeout_s,
        session_timeout_s=settings.session_timeout_s,
        procedure_timeout_s=max(min(RACP_PROCEDURE_TIMEOUT_S, room / 2), 0.5),
        # GLS 1.0 requires an encrypted link for its characteristics (ble-spec-facts §4.5):
        # pair (as the stack's pairing policy allows) when not bonded yet; the address is
        # an allowlist entry, so only the configured meter is ever paired with.
        pair=pair_for(ble, device),
        found=found,
        clock=clock,
        vet=vet,
    )
    return SessionOutcome(result.measurements, result.ended_by.value)


#: ``devices.kind`` → its session. agent/config.py lists the same kinds (DEVICE_KINDS).
SESSIONS: Final[dict[str, Session]] = {
    "blood_pressure": blood_pressure_session,
    "glucose": glucose_session,
    "pulse_oximeter": pulse_oximeter_session,
}
