"""The advertisement-driven collector: one passive scan for the daemon's life, a session per
allow-listed device the moment it advertises.

Theory of operation
-------------------
:class:`Collector` opens one bleak scanner (passive: the hub sends no scan requests; on
BlueZ, passive scanning goes through BlueZ's advertisement monitor and needs or-patterns,
:func:`bluez_or_patterns`) and hands every advertisement to the sans-I/O
:class:`~agent.ble.schedule.CollectionSchedule`. When it answers :class:`Start`, a named
task ``ble.session[<label>]`` runs the daemon's session for that device inside the
collector's :class:`asyncio.TaskGroup`, given the :class:`BLEDevice` the scan just saw (the
session does not scan again). Up to ``ble.max_connections`` sessions run at once, so a
switched-off glucometer never delays a cuff's reading: nothing waits on a device that is
not advertising.

Unknown devices are never connected; each is reported once (``ble_unknown_device_seen``,
with its label only). The :class:`~agent.ble.schedule.AdapterWatchdog` runs in the
collector's own loop: an adapter that has heard nothing for ``ble.adapter_quiet_s`` gets its
scan restarted, then a power cycle (``power_cycle``, when the stack offers one).

Stopping: the daemon sets ``stop`` and calls :meth:`BleStack.request_stop`; sessions end
normally (disconnect, hand on what they received), the scan stops, and :meth:`Collector.run`
returns once every session task has ended.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable, Callable, Sequence
from typing import Final

import structlog
from bleak import BleakScanner
from bleak.args.bluez import BlueZScannerArgs, OrPattern
from bleak.assigned_numbers import AdvertisementDataType
from bleak.backends.device import BLEDevice
from bleak.backends.scanner import AdvertisementData
from bleak.exc import BleakError

from agent.ble.schedule import (
    SERVICE_OF_KIND,
    AdapterWatchdog,
    CollectionSchedule,
    Ignore,
    IgnoreReason,
    Start,
    WatchdogAction,
)
from agent.ble.stack import BleStack
from agent.cancellation import raise_if_cancelled
from agent.config import BleConfig, DeviceConfig
from agent.errors import BleStackUnavailableError
from agent.logs import device_label
from agent.retry import KeyedBackoff

log = structlog.get_logger(__name__)

SCAN_STOP_TIMEOUT_S: Final = 5.0
"""Stopping (or restarting) the scan: one HCI command or D-Bus call, answered in ms."""

UUID_LIST_POSITIONS: Final = 3
"""On BlueZ, or-patterns match a service's UUID among the first three of an advertised
16-bit UUID list: health devices list their own service first, a few a battery or
device-information service before it."""

RunSession = Callable[[DeviceConfig, BLEDevice], Awaitable[None]]
"""The daemon's session for one device the scan found (logs and counts its outcome; raises
only :class:`BleStackUnavailableError`)."""

PowerCycle = Callable[[], Awaitable[None]]


def bluez_or_patterns(devices: Sequence[DeviceConfig]) -> list[OrPattern]:
    """BlueZ advertisement-monitor patterns that match the configured kinds' services.

    A 16-bit UUID is two little-endian octets inside an AD structure of type 0x02
    (incomplete list) or 0x03 (complete list) (CSS v11 Part A §1.1); patterns match at a
    fixed offset, so one per position (:data:`UUID_LIST_POSITIONS`).
    """
    patterns: list[OrPattern] = []
    for kind in sorted({d.kind for d in devices}):
        short = int(SERVICE_OF_KIND[kind][4:8], 16).to_bytes(2, "little")
        for ad_type in (
            AdvertisementDataType.INCOMPLETE_LIST_SERVICE_UUID16,
            AdvertisementDataType.COMPLETE_LIST_SERVICE_UUID16,
        ):
            for position in range(UUID_LIST_POSITIONS):
                patterns.append(OrPattern(2 * position, ad_type, short))
    return patterns


class Collector:
    """Collect from every allow-listed device as it advertises (module docstring).

    Args:
        ble: the opened stack.
        settings: ``[ble]``.
        devices: the allow-list.
        run_session: the daemon's session for one found device.
        backoff: the daemon's per-device backoff (its failures are counted by
            ``run_session``; the schedule consults it).
        stop: set when the daemon stops.
        power_cycle: power-cycles the adapter (the watchdog's last step), or ``None``.
    """

    def __init__(
        self,
        ble: BleStack,
        settings: BleConfig,
        devices: Sequence[DeviceConfig],
        run_session: RunSession,
        backoff: KeyedBackoff,
        stop: asyncio.Event,
        *,
        power_cycle: PowerCycle | None = None,
    ) -> None:
        self.ble = ble
        self.settings = settings
        self.devices = tuple(devices)
        self.run_session = run_session
        self.stop = stop
        self.power_cycle = power_cycle
        self.schedule = CollectionSchedule(
            self.devices,
            max_connections=settings.max_connections,
            cooldown_s=settings.cycle_interval_s,
            backoff=backoff,
        )
        self.watchdog = AdapterWatchdog(settings.adapter_quiet_s)
        self.sessions_started = 0
        self.unknown_seen = 0
        self.advertisements = 0
        self.listening = False
        """Whether the scan has started at least once (the stack answered)."""
        self.heard = asyncio.Event()
        """Set after each advertisement has been decided on (cleared by whoever waits)."""
        self._tg: asyncio.TaskGroup | None = None
        self._wake = asyncio.Event()

    # -- the scan ------------------------------------------------------------------------

    def _scanner(self) -> BleakScanner:
        bluez: BlueZScannerArgs = {}
        if self.ble.scanner_backend is None:  # BlueZ: passive needs an advertisement monitor
            bluez = {"or_patterns": list(bluez_or_patterns(self.devices))}
        return BleakScanner(
            detection_callback=self._on_advertisement,
            scanning_mode="passive",
            bluez=bluez,
            backend=self.ble.scanner_backend,
        )

    async def _start(self, scanner: BleakScanner) -> None:
        log.info("ble_scan_starting", mode="passive")
        try:
            await scanner.start()
        except BleakError as exc:
            raise_if_cancelled()
            raise BleStackUnavailableError(f"scan did not start ({type(exc).__name__})") from None
        except OSError as exc:
            raise_if_cancelled()
            raise BleStackUnavailableError(
                f"Bluetooth stack unreachable ({type(exc).__name__})"
            ) from None
        self.listening = True
        log.info(
            "ble_scan_listening",
            devices=len(self.devices),
            max_connections=self.settings.max_connections,
        )

    async def _stop(self, scanner: BleakScanner) -> None:
        try:
            async with asyncio.timeout(SCAN_STOP_TIMEOUT_S):
                await scanner.stop()
        except (BleakError, OSError, TimeoutError) as exc:
            log.warning("ble_scan_stop_failed", error=type(exc).__name__)

    def _on_advertisement(self, device: BLEDevice, advertisement: AdvertisementData) -> None:
        """bleak's detection callback: never waits."""
        self.watchdog.heard()
        self.advertisements += 1
        try:
            self._decide(device, advertisement)
        finally:
            self.heard.set()

    def _decide(self, device: BLEDevice, advertisement: AdvertisementData) -> None:
        if self.stop.is_set() or self._tg is None:
            return
        decision = self.schedule.on_advertisement(device.address, advertisement.service_uuids)
        if isinstance(decision, Ignore):
            if decision.reason is IgnoreReason.UNKNOWN and decision.first_time:
                self.unknown_seen += 1
                health = [
                    kind
                    for kind, uuid in SERVICE_OF_KIND.items()
                    if uuid in advertisement.service_uuids
                ]
                if health:
                    log.info(
                        "ble_unknown_device_seen",
                        device=device_label(device.address),
                        kinds=health,
                    )
            return
        assert isinstance(decision, Start)
        configured = decision.device
        self.schedule.started(configured)
        self.sessions_started += 1
        self._tg.create_task(
            self._session(configured, device), name=f"ble.session[{configured.label}]"
        )

    async def _session(self, configured: DeviceConfig, found: BLEDevice) -> None:
        try:
            await self.run_session(configured, found)
        finally:
            self.schedule.ended(configured)
            self._wake.set()

    # -- the loop ------------------------------------------------------------------------

    async def run(self) -> None:
        """Scan and collect until ``stop`` is set; return once every session has ended.

        Raises:
            BleStackUnavailableError: the scan cannot start or a session found the stack
                gone (the daemon reopens the stack after a backoff).
        """
        if not self.devices:
            # Nothing allow-listed: no scan (BlueZ cannot even run a passive one without a
            # pattern to watch for); a device added by `homehub pair` comes with a restart.
            log.info("ble_no_devices")
            await self.stop.wait()
            return
        try:
            scanner = self._scanner()
        except BleakError as exc:
            raise BleStackUnavailableError(f"scanner refused ({type(exc).__name__})") from None
        try:
            async with asyncio.TaskGroup() as tg:
                await self._start(scanner)
                self._tg = tg
                try:
                    await self._watch(scanner)
                finally:
                    self._tg = None
                    await self._stop(scanner)
        except BaseExceptionGroup as group:
            # The stack went away (the scan, or a session, found it gone): one plain error
            # for the daemon's stack backoff. Anything else is a bug and propagates as is.
            leaves = _leaves(group)
            if all(isinstance(e, BleStackUnavailableError) for e in leaves):
                raise leaves[0] from None
            raise

    async def _watch(self, scanner: BleakScanner) -> None:
        stop = asyncio.ensure_future(self.stop.wait())
        try:
            while not self.stop.is_set():
                self._wake.clear()
                wake = asyncio.ensure_future(self._wake.wait())
                try:
                    await asyncio.wait(
                        {stop, wake},
                        timeout=max(self.watchdog.due_in(), 0.05),
                        return_when=asyncio.FIRST_COMPLETED,
                    )
                finally:
                    wake.cancel()
                if self.stop.is_set():
                    return
                action = self.watchdog.check(
                    devices_configured=bool(self.devices),
                    sessions_active=self.schedule.active,
                )
                if action is WatchdogAction.NONE:
                    continue
                log.warning("ble_adapter_quiet", action=action.value, quiet_s=self.watchdog.quiet_s)
                await self._stop(scanner)
                if action is WatchdogAction.POWER_CYCLE and self.power_cycle is not None:
                    await self.power_cycle()
                await self._start(scanner)
        finally:
            stop.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await stop


def _leaves(exc: BaseException) -> list[BaseException]:
    """The exceptions inside (nested) exception groups, in order."""
    if isinstance(exc, BaseExceptionGroup):
        return [leaf for inner in exc.exceptions for leaf in _leaves(inner)]
    return [exc]


__all__ = ["Collector", "bluez_or_patterns"]
