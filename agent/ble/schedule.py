"""When to connect which allow-listed device: the collector's decisions, sans-I/O.

Health devices advertise when they hold data (BLP/GLP/PLXP: a cuff for about 30 s after a
measurement), so the hub listens to one passive scan for its whole life and connects a
device the moment it advertises, instead of visiting the configured devices in turn (where a
switched-off glucometer's scan timeout could outlast the cuff's 30 s). This module holds the
rules, with no radio and no event loop, so each can be tested alone:

- Only allow-listed addresses advertising their configured kind's service are ever
  connected (:meth:`CollectionSchedule.on_advertisement` answers :class:`Ignore` for the rest:
  an unknown device nearby, a cuff's address advertising a glucose service).
- At most ``max_connections`` sessions at once on the adapter; one per device.
- After a session a device is left alone for ``cooldown_s`` (``ble.cycle_interval_s``):
  devices keep advertising a while after a transfer, and one that always advertises must
  not keep the radio busy.
- After a failed session, the device's own backoff (:class:`agent.retry.KeyedBackoff`:
  full jitter by error class, a breaker for a device that breaks its protocol or fails a
  security check) decides when it may be tried again.

:class:`AdapterWatchdog` notices an adapter that has gone quiet: no advertisement at all for
``quiet_s`` while devices are configured. It asks first for the scan to be restarted, then,
if the adapter stays quiet for another ``quiet_s``, for a power cycle (at most one per
:data:`POWER_CYCLE_MIN_INTERVAL_S`), never while a session is connected.
"""

from __future__ import annotations

import enum
import time
from collections import OrderedDict
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Final

from agent.ble.uuids import BLOOD_PRESSURE_SERVICE, GLUCOSE_SERVICE, PULSE_OXIMETER_SERVICE
from agent.config import DeviceConfig
from agent.errors import UsageError
from agent.retry import KeyedBackoff

Clock = Callable[[], float]

SERVICE_OF_KIND: Final = {
    "blood_pressure": BLOOD_PRESSURE_SERVICE,
    "glucose": GLUCOSE_SERVICE,
    "pulse_oximeter": PULSE_OXIMETER_SERVICE,
}
"""The primary service a device of each ``devices.kind`` advertises (bleak-style UUID)."""

UNKNOWN_REMEMBERED: Final = 64
"""Distinct unknown advertisers remembered (to report each once); bounded because anyone in
radio range can advertise, with a new random address every few minutes."""

POWER_CYCLE_MIN_INTERVAL_S: Final = 3600.0
"""At most one adapter power cycle an hour: a home with no BLE device awake at night is
quiet, and a power cycle must not become a habit there."""


class IgnoreReason(enum.Enum):
    """Why an advertisement started no session."""

    UNKNOWN = "unknown"  #: not on the allow-list (never connected)
    WRONG_SERVICE = "wrong_service"  #: an allow-listed address without its kind's service
    BUSY = "busy"  #: a session with the device is running
    NO_SLOT = "no_slot"  #: ``max_connections`` sessions are running
    COOLING_DOWN = "cooling_down"  #: a session ended less than ``cooldown_s`` ago
    BACKING_OFF = "backing_off"  #: failed recently; its backoff has not passed


@dataclass(frozen=True, slots=True)
class Start:
    """Connect this device now (call :meth:`CollectionSchedule.started` right away)."""

    device: DeviceConfig


@dataclass(frozen=True, slots=True)
class Ignore:
    """Do nothing with this advertisement.

    Attributes:
        reason: why.
        first_time: for :attr:`IgnoreReason.UNKNOWN`: the first advertisement seen from this
            address (report it once).
    """

    reason: IgnoreReason
    first_time: bool = False


Decision = Start | Ignore


class CollectionSchedule:
    """The collector's rules (module docstring). ``clock`` is monotonic seconds.

    Args:
        devices: the allow-list.
        max_connections: sessions at once on this adapter (``ble.max_connections``).
        cooldown_s: pause after a session before the device is connected again.
        backoff: per-device backoff after failures (the daemon's, shared).
        clock: monotonic seconds (injected by tests).
    """

    def __init__(
        self,
        devices: Iterable[DeviceConfig],
        *,
        max_connections: int,
        cooldown_s: float,
        backoff: KeyedBackoff,
        clock: Clock = time.monotonic,
    ) -> None:
        if max_connections < 1:
            raise UsageError("max_connections", "must be >= 1")
        self._by_address = {d.address.upper(): d for d in devices}
        self.max_connections = max_connections
        self.cooldown_s = cooldown_s
        self.backoff = backoff
        self.clock = clock
        self._busy: set[str] = set()
        self._not_before: dict[str, float] = {}
        self._unknown: OrderedDict[str, None] = OrderedDict()

    @property
    def active(self) -> int:
        """Sessions running now."""
        return len(self._busy)

    def busy(self, label: str) -> bool:
        """Whether a session with the device ``label`` is running."""
        return label in self._busy

    def on_advertisement(self, address: str, service_uuids: Sequence[str]) -> Decision:
        """Decide what an advertisement from ``address`` listing ``service_uuids`` starts."""
        address = address.upper()
        device = self._by_address.get(address)
        if device is None:
            first = address not in self._unknown
            if first:
                self._unknown[address] = None
                while len(self._unknown) > UNKNOWN_REMEMBERED:
                    self._unknown.popitem(last=False)
            return Ignore(IgnoreReason.UNKNOWN, first_time=first)
        if SERVICE_OF_KIND[device.kind] not in service_uuids:
            return Ignore(IgnoreReason.WRONG_SERVICE)
        if device.label in self._busy:
            return Ignore(IgnoreReason.BUSY)
        if self.clock() < self._not_before.get(device.label, 0.0):
            return Ignore(IgnoreReason.COOLING_DOWN)
        if self.backoff.ready_in(device.label) > 0:
            return Ignore(IgnoreReason.BACKING_OFF)
        if len(self._busy) >= self.max_connections:
            return Ignore(IgnoreReason.NO_SLOT)
        return Start(device)

    def started(self, device: DeviceConfig) -> None:
        """A session with ``device`` was started (takes a slot)."""
        self._busy.add(device.label)

    def ended(self, device: DeviceConfig) -> None:
        """The session with ``device`` ended, however (frees its slot, starts its cooldown;
        a failure's backoff is the :class:`KeyedBackoff`'s, counted by the caller)."""
        self._busy.discard(device.label)
        self._not_before[device.label] = self.clock() + self.cooldown_s


class WatchdogAction(enum.Enum):
    """What :meth:`AdapterWatchdog.check` asks for."""

    NONE = "none"
    RESTART_SCAN = "restart_scan"
    POWER_CYCLE = "power_cycle"


class AdapterWatchdog:
    """Notices an adapter that has gone quiet (module docstring). ``clock``: monotonic s."""

    def __init__(self, quiet_s: float, *, clock: Clock = time.monotonic) -> None:
        if quiet_s <= 0:
            raise UsageError("quiet_s", "must be > 0")
        self.quiet_s = quiet_s
        self.clock = clock
        self._last_heard = clock()
        self._windows = 0  #: consecutive quiet windows acted on
        self._last_power_cycle: float | None = None
        self.restarts = 0
        self.power_cycles = 0

    def heard(self) -> None:
        """An advertisement arrived (any device's): the adapter is alive."""
        self._last_heard = self.clock()
        self._windows = 0

    def due_in(self) -> float:
        """Seconds until :meth:`check` may next ask for something."""
        return max(0.0, self._last_heard + self.quiet_s * (self._windows + 1) - self.clock())

    def check(self, *, devices_configured: bool, sessions_active: int) -> WatchdogAction:
        """What to do now. Nothing while no device is configured or a session is connected
        (a connection is proof of life, and it must not be cut)."""
        now = self.clock()
        if not devices_configured or sessions_active > 0:
            self.heard()
            return WatchdogAction.NONE
        if now < self._last_heard + self.quiet_s * (self._windows + 1):
            return WatchdogAction.NONE
        self._windows += 1
        if self._windows >= 2 and (
            self._last_power_cycle is None
            or now - self._last_power_cycle >= POWER_CYCLE_MIN_INTERVAL_S
        ):
            self._last_power_cycle = now
            self.power_cycles += 1
            return WatchdogAction.POWER_CYCLE
        self.restarts += 1
        return WatchdogAction.RESTART_SCAN


__all__ = [
    "POWER_CYCLE_MIN_INTERVAL_S",
    "SERVICE_OF_KIND",
    "AdapterWatchdog",
    "CollectionSchedule",
    "Decision",
    "Ignore",
    "IgnoreReason",
    "Start",
    "WatchdogAction",
]
