"""The daemon: collects from the configured devices, stores durably, publishes, forever.

Theory of operation
-------------------
Four named tasks (five with a platform) run in one :class:`asyncio.TaskGroup`; slow work
(decoding, FHIR, signing, sealing, SQLite and its fsync) runs on the one storage thread
(:mod:`agent.storage`), never on the event loop:

``hub.collector``
    One passive scan for the daemon's life (:mod:`agent.ble.collector`); an allow-listed
    device is connected the moment it advertises its service (no other device ever is), up
    to ``ble.max_connections`` at once, each session a named task ``ble.session[<label>]``.
    Before any reading is accepted the device's identity is checked against the one pinned
    (``devices.identity``, else the first one seen): an impostor yields no reading and a
    ``security`` event. Each measurement's raw bytes go onto a bounded queue the moment they
    arrive (:meth:`Hub.receive`). A failed session backs its device off (full jitter by error
    class, a breaker for a misbehaving or failing-security device); the device keeps what it
    did not get confirmed.
``hub.ingest``
    Takes what is queued (the first arrival and whatever else is waiting) and, on the
    storage thread, decodes, normalizes and stores it in one outbox transaction that
    allocates the sequence numbers and signs each envelope with its number inside (the
    durability point); it commits at once, and what arrives meanwhile forms the next batch.
    Invalid bytes are logged with their reason and not stored; a re-send (the same identity
    and content) is a duplicate; the same identity with other content is a conflict, stored
    and reported.
``hub.publisher``
    Keeps the MQTT window full and deletes acknowledged records in batches
    (:mod:`agent.publisher`); a record the platform refuses for good is set aside as
    refused and the rest keep flowing.
``hub.uplink``
    Keeps the MQTT connection, reconnecting with full-jitter exponential backoff.
``hub.platform``
    With ``[platform] cert_file`` only (:mod:`agent.platform_link`): the platform's commands
    (verified, answered, acted on), the retained status and its ``offline`` last will, the
    events (storage critical, battery low, clock unsynced, security, outbox quarantined) and
    the dictionaries the platform announced.

Beside them, small tasks report: ``hub.notify`` (systemd's READY, STATUS, WATCHDOG),
``hub.state`` with ``hub.uplink_watch`` (``<state_dir>/hub_state.json`` for ``homehub status``,
agent/hub_state.py), ``hub.indicator`` (the patient's status light, agent/indicator/) and,
with a modem, ``hub.modem`` and ``hub.modem_state``.

Stopping (SIGTERM, SIGINT) is ordered and bounded, well within the unit's stop timeout:
collecting stops (sessions end, disconnect and hand on what they received), everything
received is stored and committed, in-flight publishes get a moment for their PUBACK and the
acknowledged ones are deleted, the uplink sends DISCONNECT, the outbox closes, exit 0.
Nothing relies on cancelling a task mid-store.

The outbox is opened before any task starts and closed after all have ended, so nothing
is ever acknowledged to a device or to the broker against a closed database.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import functools
import itertools
import math
import os
import random
import signal
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Final, Protocol

import structlog
from bleak.backends.device import BLEDevice

from agent import hub_state, instance_lock, keys, wall_clock
from agent.ble import identity
from agent.ble.collector import Collector
from agent.ble.current_time import ClockPolicy, hub_clock_plausible
from agent.ble.gatt_session import BATTERY_SYNC_KEY
from agent.ble.sessions import SESSIONS, Session, SyncStateReader
from agent.ble.stack import BONDS_FILE, BleStack, first_contact_pairing
from agent.ble.uuids import PLX_CONTINUOUS_MEASUREMENT
from agent.cancellation import first_of
from agent.config import Config, DeviceConfig
from agent.errors import (
    BleDeviceAbsentError,
    BleLinkError,
    BleLinkLostError,
    BleStackUnavailableError,
    DecodeError,
    DeviceError,
    DeviceIdentityError,
    DeviceSecurityError,
    HubError,
    KeyMaterialError,
    LinkSecurityError,
    LocalError,
    ModemAbsentError,
    ModemManagerError,
    ModemManagerTimeoutError,
    ModemPortHeldError,
    StorageError,
    UsageError,
)
from agent.indicator import HubCondition, Indicator, IndicatorState, open_indicator, state_of
from agent.ingest import HubSigner, Prepared, Signer, SwitchableSigner, prepare
from agent.ingest_batcher import Item, Outcome, Status, collect_batch, commit_batch
from agent.logs import device_label
from agent.measurement import RawMeasurement
from agent.modem import state_file as modem_state_file
from agent.modem.link import ActionKind, EventKind, LinkEvent, LinkMachine, Step
from agent.modem.manager import ModemLink
from agent.modem.modemmanager import (
    ModemManagerClient,
    ModemManagerSnapshot,
    check_at_port,
    observation_of,
    open_modemmanager,
)
from agent.modem.status import ModemStatus
from agent.network_time import clock_disagrees
from agent.normalize.device import DeviceFacts
from agent.normalize.phd import Context
from agent.outbox import Outbox, OutboxCounts, StorageLevel, open_or_quarantine, storage_level
from agent.platform_link import PlatformLink
from agent.private_files import read_private_file_up_to
from agent.publisher import Publisher
from agent.retry import FullJitter, KeyedBackoff
from agent.sd_notify import Notifier, watchdog_interval_s
from agent.sealing import Sealer
from agent.security import SecurityEvent, load_platform_key
from agent.status_report import status
from agent.storage import StorageThread
from agent.uplink import DISCONNECT_TIMEOUT_S, Uplink, UplinkSettings
from agent.urgency import is_urgent
from drivers.battery import BatteryLevel

log = structlog.get_logger(__name__)

INGEST_QUEUE_MAX: Final = 256
"""Raw measurements waiting to be stored. The stack confirms an indication as soon as the
callback returns (BlueZ and Bumble alike), so this queue does not hold confirmations back; a
full queue makes the BLE session buffer (bounded) until ingest catches up."""

BLE_REOPEN_DELAY_S: Final = 5.0
"""Base of the backoff before the BLE stack is tried again (adapter gone, HCI not up, no
D-Bus or BlueZ): full jitter, growing to :data:`BLE_REOPEN_MAX_S`."""

BLE_REOPEN_MAX_S: Final = 120.0
"""Cap of that backoff: a hub whose adapter comes back is collecting again within minutes."""

STORAGE_RETRY_S: Final = 5.0
"""Pause before the disk is tried again after a storage error (disk full or failing): long
enough not to spin on a dead disk, short next to any delivery deadline."""

DEGRADED_CONTINUOUS_INTERVAL_S: Final = 15 * 60.0
"""Under quota pressure continuous oximetry keeps one sample per device per 15 minutes (its
summary series) instead of one per minute: spot-checks and every other clinical kind are
still all kept, and no stored record is ever deleted unsent."""

COLLECTOR_STOP_S: Final = 1.5
"""On stop, how long the collector has to end its session (disconnect, hand on what the
device sent) before it is cancelled. Inner to :data:`STOP_BUDGET_S`."""

UPLINK_STOP_S: Final = DISCONNECT_TIMEOUT_S + 0.5
"""On stop, how long the DISCONNECT may take: the uplink's own bound plus a margin."""

STOP_BUDGET_S: Final = 5.0
"""The whole ordered stop: :data:`COLLECTOR_STOP_S` (1.5 s) + storing what is queued (at most
:data:`INGEST_QUEUE_MAX` readings, one commit) + the publisher's
:data:`agent.publisher.STOP_DRAIN_S` (1 s) + :data:`UPLINK_STOP_S` (1.5 s) fit in it, and it is
a quarter of the unit's ``TimeoutStopSec`` (20 s), so systemd never has to SIGKILL us. Storing
what was received is never cut short: a reading confirmed to a device must be stored."""


INDICATOR_REFRESH_S: Final = 30.0
"""The patient's indicator is judged again at least this often (an outage growing long, a
device growing overdue, the clock), and at once after any change the daemon notices."""

INDICATOR_MIN_INTERVAL_S: Final = 1.0
"""Least time between two judgements: each reads the outbox's counts on the storage thread,
and a draining backlog changes them many times a second; an LED a second late is nothing."""

DEVICE_OVERDUE_S: Final = 72 * 3600.0
"""An allow-listed device with no reading for this long (or none since the daemon started
this long ago) asks for attention: three days covers a weekend away or a device left
uncharged, and still shows before a care team's weekly review would miss it."""


@dataclass(frozen=True, slots=True)
class Arrival:
    """A raw measurement together with the device it came from."""

    device: DeviceFacts
    label: str  #: for logs: the last two address octets
    device_key: str  #: the configured label: names the device's sync state in the outbox
    raw: RawMeasurement
    session: int = 0
    """The BLE session that received it (0: a source of its own, :meth:`Hub.receive`)."""


@dataclass(frozen=True, slots=True)
class Rejected:
    """An arrival that did not decode (the reason is logged)."""

    error: DecodeError


@dataclass(frozen=True, slots=True)
class Shed:
    """A continuous-oximetry sample dropped under storage pressure (logged)."""

    level: StorageLevel


Fate = Outcome | Rejected | Shed
"""What became of one arrival."""


class _Uncommitted:
    """A device's readings handed on and not yet committed (or otherwise settled)."""

    def __init__(self) -> None:
        self.count = 0
        self._zero = asyncio.Event()
        self._zero.set()

    def add(self) -> None:
        self.count += 1
        self._zero.clear()

    def done(self) -> None:
        self.count = max(0, self.count - 1)
        if self.count == 0:
            self._zero.set()

    async def settled(self) -> None:
        """Return once every reading handed on so far has its fate."""
        await self._zero.wait()


class _Vetting:
    """A session's identity check (the sessions' ``vet``; :mod:`agent.ble.identity`).

    The pin configured by ``homehub pair`` wins; else the one the daemon kept at the first
    contact; else this session's identity becomes the pin, committed with its first reading.
    """

    def __init__(self, device: DeviceConfig, label: str, kept: bytes | None) -> None:
        self.label = label
        if device.identity is not None:
            self.pin: str | None = device.identity
            self.source = "config"
        else:
            self.pin = kept.decode("ascii", errors="replace") if kept is not None else None
            self.source = "first_contact"
        self.first_pin: str | None = None

    def __call__(self, facts: DeviceFacts) -> None:
        mismatch = identity.check_identity(facts, self.pin, self.source)
        if mismatch is not None:
            reason = (
                "the device exposes no identity where one is pinned"
                if mismatch.missing
                else "the device's identity differs from the pinned one"
            )
            raise DeviceIdentityError(self.label, mismatch.source, reason)
        if self.pin is None:
            self.first_pin = identity.identity_pin(facts)


class HubObserver(Protocol):
    """Told, on the event loop, what the hub did (tests and the crash child listen)."""

    def stored(self, arrival: Arrival, fate: Fate) -> None:
        """One arrival's fate, once its transaction committed (or failed)."""

    def delivered(self, seqs: Sequence[int]) -> None:
        """Records deleted after their PUBACK, in one transaction."""


def _open_keys(cfg: Config) -> tuple[Sealer, Signer]:
    """Open the key provider; load (or, on a fresh hub, create) the data key through it.

    The provider (``[keys]``: a KEK file or a PKCS#11 token) also signs: with ``pkcs11``
    the signing key never leaves the token. See :func:`agent.keys.open_data_key`.
    """
    provider = keys.open_provider(cfg)
    try:
        data_key = keys.open_data_key(cfg, provider)
        signer = Signer.from_provider(provider)
    except BaseException:
        provider.close()
        raise
    return Sealer(data_key), signer


def open_outbox(cfg: Config) -> tuple[Outbox, Signer]:
    """Open the keys and the outbox as the daemon does (on the storage thread)."""
    try:
        cfg.outbox.path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    except OSError as exc:
        # The state directory is missing and cannot be made (read-only or full disk, a file
        # in its place): a storage fault the daemon waits out, not a reason to crash-loop.
        raise StorageError(
            str(cfg.outbox.path), "open", f"state directory: {exc.strerror}"
        ) from None
    sealer, signer = _open_keys(cfg)
    outbox = open_or_quarantine(
        cfg.outbox.path, sealer, cfg.hub.id, quota_bytes=cfg.outbox.quota_bytes
    )
    return outbox, signer


class Hub:
    """The running agent. ``await Hub(cfg).run(stop)`` returns once ``stop`` is set."""

    def __init__(
        self,
        cfg: Config,
        *,
        observer: HubObserver | None = None,
        collect: bool = True,
        source: Callable[[Hub], Awaitable[None]] | None = None,
        notifier: Notifier | None = None,
    ) -> None:
        """``notifier``: systemd's notify socket (agent/sd_notify.py), under ``Type=notify``.
        ``collect=False`` runs no BLE collector: readings come only through
        :meth:`receive`. ``source``, when given, runs as the collector instead of the BLE
        one and is stopped like it (it should return once :attr:`collecting_stopped` is set):
        the crash test and benchmarks feed the daemon's own pipeline this way."""
        self.cfg = cfg
        self._notifier = notifier
        self._observer = observer
        self._collect = collect
        self._source = source
        self._queue: asyncio.Queue[Arrival | None] = asyncio.Queue(maxsize=INGEST_QUEUE_MAX)
        self._collect_stop = asyncio.Event()
        self.collecting_stopped = self._collect_stop
        """Set when the hub stops: a ``source`` must stop handing readings on."""
        self._ble: BleStack | None = None
        self._sync_cache: dict[tuple[str, str], bytes] = {}
        self._backoff = KeyedBackoff()
        """Per-device backoff after failed sessions (agent/retry.py): full jitter, by error
        class, a breaker for a device that breaks its protocol."""
        self._stack_backoff = FullJitter(BLE_REOPEN_DELAY_S, BLE_REOPEN_MAX_S)
        self._stack_failures = 0
        """Consecutive times the Bluetooth stack itself could not be reached."""
        self._rng = random.Random()  # noqa: S311 - jitter, not cryptography
        self._last_continuous: dict[str, float] = {}
        self._publisher: Publisher | None = None
        self.platform: PlatformLink | None = None
        """Commands, status and events (:mod:`agent.platform_link`) while the hub runs with
        ``[platform] cert_file``."""
        self.uplink: Uplink | None = None
        """The MQTT uplink while the hub runs (its ``stats`` and ``wait_until``)."""
        self.modem: ModemLink | None = None
        """The cellular link (``[modem] backend = "at"``) while the hub runs."""
        self.modem_changed = asyncio.Event()
        """Set at each event of the cellular link (a phase entered, a fault, a rung), or each
        reading of ModemManager's figures."""
        self._modemmanager_figures = ModemStatus()
        self._modem_state_due = asyncio.Event()
        """Set at each link event: the figures homehub status reads may have changed."""
        self.modem_state_written = asyncio.Event()
        """Set each time the figures file for ``homehub status`` is written."""
        self._uncommitted: dict[str, _Uncommitted] = {}
        """Per device label: readings queued and not yet committed (see :meth:`_session`)."""
        self._sync_held: dict[str, int] = {}
        """Per device label: the session one of whose readings a storage fault kept out of the
        outbox. That session's later readings are stored without the sync state they carry,
        so a glucometer's high-water mark never passes the reading that was not stored: the
        next session asks again from the last committed mark (what was stored meanwhile
        comes again as duplicates). Written by :meth:`_report`, read by :meth:`_store_batch`,
        never at once: the ingest task stores a batch, then reports it, then takes the next."""
        self._session_numbers = itertools.count(1)
        self._urgent_stored: list[int] = []
        """Seqs of the last stored batch whose values crossed an alert limit
        (agent/urgency.py): written by :meth:`_store_batch` on the storage thread, read by
        :meth:`_report` on the loop once the call returned."""
        self._storage: tuple[StorageThread, Outbox] | None = None
        self.ready = asyncio.Event()
        """Set once the outbox is open and the tasks run."""
        self.stored = 0
        self.rejected = 0
        self.duplicates = 0
        self.conflicts = 0
        self.not_stored = 0
        self.shed_continuous = 0
        self.security_events = 0
        self._clock_policy = ClockPolicy(
            set_clock=cfg.ble.set_device_clock,
            threshold_s=cfg.ble.clock_set_threshold_s,
            timezone=cfg.hub.timezone,
            hub_clock_trusted=lambda: self.hub_clock_problem() is None,
        )
        self.sessions_done = 0
        self.session_done = asyncio.Event()
        """Set after each BLE session has ended and been logged (whoever waits clears it)."""
        self.security_noticed = asyncio.Event()
        """Set at the first ``security`` event (tests and the HIL rig wait on it)."""
        self._started_at = time.time()
        self._started_mono = time.monotonic()
        self._uplink_online = False
        self._uplink_since = self._started_at
        self._uplink_since_mono = self._started_mono
        """The same moment by the monotonic clock: how long an outage lasts must not jump
        with the wall clock (a Pi has no RTC: NTP sets its clock after the boot)."""
        self._last_delivery_at: float | None = None
        self._last_reading_at: dict[str, float] = {}
        """Per device label: when a reading of it was last committed (Unix time)."""
        self._last_reading_mono: dict[str, float] = {}
        """The same, by the monotonic clock, for the readings of this run."""
        self._last_session: dict[str, tuple[float, str]] = {}
        """Per device label: when its last session ended, and how (hub_state.SESSION_RESULTS)."""
        self._hub_state_due = asyncio.Event()
        """Set when something ``homehub status`` shows changed (agent/hub_state.py)."""
        self.hub_state_written = asyncio.Event()
        """Set each time the state file for ``homehub status`` is written."""
        self._indicator_due = asyncio.Event()
        """Set when something the patient's indicator shows may have changed."""
        self.indicator_state: IndicatorState | None = None
        """What the patient's indicator (agent/indicator/) shows now."""
        self.indicator_shown = asyncio.Event()
        """Set each time the indicator is shown another state."""
        self._sessions_active = 0
        self._parts_failing: set[str] = set()
        """Supervised parts in their restart backoff now (the modem link, ModemManager)."""
        self._storage_failing = False
        """The last store of a reading failed (cleared by the next that commits)."""

    def platform_security(self, event: SecurityEvent) -> None:
        """A ``security`` event about the platform side (a rejected receipt or command),
        already logged by :func:`agent.security.report_security`: counted here, and sent to
        the platform as an event."""
        self.security_events += 1
        self.security_noticed.set()
        if self.platform is not None:
            self.platform.security(event)

    @property
    def awaiting_receipt(self) -> int:
        """Envelopes PUBACKed and awaiting the platform's receipt now."""
        return self._publisher.awaiting_receipt if self._publisher is not None else 0

    @property
    def delivered(self) -> int:
        """Records delivered (PUBACK) and deleted since start."""
        return self._publisher.stats.delivered if self._publisher is not None else 0

    @property
    def in_flight(self) -> int:
        """Publishes awaiting their PUBACK now."""
        return self._publisher.in_flight if self._publisher is not None else 0

    @property
    def queued(self) -> int:
        """Readings received and waiting to be stored."""
        return self._queue.qsize()

    @property
    def refused(self) -> int:
        """Records the platform refused for good since start."""
        return self._publisher.stats.refused if self._publisher is not None else 0

    async def run(self, stop: asyncio.Event) -> None:
        """Run every task until ``stop`` is set, then stop in order (module docstring)."""
        indicator = open_indicator(self.cfg.indicator)
        try:
            self._show(indicator, IndicatorState.STARTING)
            await self._run_with(indicator, stop)
        finally:
            indicator.close()

    async def _run_with(self, indicator: Indicator, stop: asyncio.Event) -> None:
        async with StorageThread() as storage:
            opened = await self._open_outbox_when_possible(stop, storage, indicator)
            if opened is None:
                return
            outbox, signer = opened
            storage.when_idle(outbox.checkpoint_if_due)  # WAL checkpoints between readings
            try:
                # Switchable: a confirmed certificate rotation may bring the new signing key.
                await self._run(stop, storage, outbox, SwitchableSigner(signer), indicator)
            finally:
                await storage.call(outbox.close)
                log.info(
                    "hub_stopped",
                    stored=self.stored,
                    delivered=self.delivered,
                    rejected=self.rejected,
                    duplicates=self.duplicates,
                    conflicts=self.conflicts,
                    refused=self.refused,
                )

    def _on_modem_event(self, _event: LinkEvent | None) -> None:
        """A link event (logged by the link): its figures, the network's time among them,
        are new."""
        self.modem_changed.set()
        self._modem_state_due.set()
        self._follow_network_time()
        if self.platform is not None:
            self.platform.check_clock()

    def _follow_network_time(self) -> None:
        """Correct the hub's wall clock by the network's time while the system clock is more
        than 15 minutes from it; clear the correction once they agree (agent/wall_clock.py).
        The network's time is the last poll's (at most one poll interval old)."""
        if self.modem is None:
            return
        network_time = self.modem.status.network_time
        system = datetime.now(UTC)
        if network_time is None or not clock_disagrees(system, network_time):
            if wall_clock.current_correction() is not None:
                wall_clock.set_correction(None)
                log.info("wall_clock_uncorrected")
            return
        correction = datetime.fromisoformat(network_time) - system
        if wall_clock.current_correction() is None:
            log.warning("wall_clock_corrected", by_s=round(correction.total_seconds()))
        wall_clock.set_correction(correction)

    async def _modemmanager_round(
        self, client: ModemManagerClient, machine: LinkMachine, snapshot: ModemManagerSnapshot
    ) -> None:
        """Judge ModemManager's figures (and the uplink's reach); take the rung the machine
        chooses as ModemManager's own actions: re-register and radio cycle as a reconnect,
        a reset as its Reset. PIN, APN and the data call are ModemManager's (and
        NetworkManager's) business: never done from here."""
        now = time.monotonic()
        machine.observe(observation_of(snapshot), now)
        uplink = self.uplink
        machine.uplink_reachable(uplink is not None and uplink.connected.is_set(), now)
        action = machine.next_action(now)
        if action.kind is ActionKind.RECOVER and action.step is not None:
            step = action.step
            try:
                if step in (Step.REREGISTER, Step.RADIO_CYCLE):
                    await client.reconnect(apn=self.cfg.modem.apn)
                elif step is Step.MODEM_RESET:
                    await client.reset()
            except (ModemManagerError, UsageError) as exc:
                log.warning(
                    "modemmanager_recovery_failed", step=step.value, error=type(exc).__name__
                )
            machine.recovery_done(step, now)
            log.info("modem_recovery_step", step=step.value, via="modemmanager")
        for event in machine.events():
            if event.kind is not EventKind.RECOVERY_STEP:
                fields = {"phase": event.phase.value}
                if event.fault is not None:
                    fields["fault"] = event.fault.value
                log.info(event.kind.value, via="modemmanager", **fields)

    async def _write_modem_state(self, storage: StorageThread, stop: asyncio.Event) -> None:
        """Keep ``<state_dir>/modem_status.json`` (agent/modem/state_file.py) up to date for
        ``homehub status``: after a link event (or every
        :data:`~agent.modem.state_file.WRITE_EVERY_S`), written when the figures changed, at
        most once per that interval, on the storage thread (fsync)."""
        path = self.cfg.hub.state_dir / modem_state_file.STATE_FILE
        written: dict[str, Any] | None = None
        while not stop.is_set():
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(modem_state_file.WRITE_EVERY_S):
                    await first_of(self._modem_state_due.wait(), stop.wait())
            self._modem_state_due.clear()
            if stop.is_set():
                return
            self._follow_network_time()  # at least this often: NTP may have come meanwhile
            figures = self._modem_figures()
            on_disk = modem_state_file.figures_on_disk(figures)
            if on_disk == written:
                continue
            try:
                await storage.call(modem_state_file.write, path, figures, datetime.now(UTC))
            except StorageError as exc:
                log.warning("modem_state_not_written", reason=exc.reason)
                continue
            written = on_disk
            self.modem_state_written.set()
            with contextlib.suppress(TimeoutError):  # at most one write per interval
                async with asyncio.timeout(modem_state_file.WRITE_EVERY_S):
                    await stop.wait()

    def state_snapshot(self, *, stopped_at: float | None = None) -> hub_state.HubState:
        """What ``homehub status`` shows of this daemon (agent/hub_state.py): no PHI."""
        correction = wall_clock.current_correction()
        return hub_state.HubState(
            pid=os.getpid(),
            started_at=self._started_at,
            uplink_online=self._uplink_online,
            uplink_since=self._uplink_since,
            last_delivery_at=self._last_delivery_at,
            awaiting_receipt=self.awaiting_receipt,
            clock_problem=self.hub_clock_problem(),
            clock_correction_s=None if correction is None else round(correction.total_seconds(), 1),
            stopped_at=stopped_at,
            indicator_state=None
            if self.indicator_state is None or self.cfg.indicator.backend == "none"
            else self.indicator_state.value,
            devices=tuple(self._device_state(d) for d in self.cfg.devices),
        )

    def _device_state(self, device: DeviceConfig) -> hub_state.DeviceState:
        session = self._last_session.get(device.label)
        battery = self._sync_cache.get((device.label, BATTERY_SYNC_KEY))
        percent: int | None = None
        if battery is not None:
            with contextlib.suppress(DecodeError):
                percent = BatteryLevel.from_bytes(battery).level_pct
        return hub_state.DeviceState(
            label=device.label,
            kind=device.kind,
            device=device_label(device.address),
            last_reading_at=self._last_reading_at.get(device.label),
            last_session_at=None if session is None else session[0],
            last_session_result=None if session is None else session[1],
            battery_percent=percent,
        )

    async def _load_hub_state(self, storage: StorageThread) -> None:
        """Carry the devices' last reading and session, and the last delivery, over from the
        previous run's state file: a restart must not make a device look never seen."""
        path = self.cfg.hub.state_dir / hub_state.STATE_FILE
        previous = await storage.call(hub_state.read, path)
        if previous is None:
            return
        self._last_delivery_at = previous.last_delivery_at
        labels = {d.label for d in self.cfg.devices}
        for device in previous.devices:
            if device.label not in labels:
                continue
            if device.last_reading_at is not None:
                self._last_reading_at[device.label] = device.last_reading_at
            if device.last_session_at is not None and device.last_session_result is not None:
                self._last_session[device.label] = (
                    device.last_session_at,
                    device.last_session_result,
                )

    async def _write_hub_state(self, storage: StorageThread, state: hub_state.HubState) -> bool:
        """Write ``state`` on the storage thread (fsync); False (logged) when it failed."""
        path = self.cfg.hub.state_dir / hub_state.STATE_FILE
        try:
            await storage.call(hub_state.write, path, state)
        except StorageError as exc:
            log.warning("hub_state_not_written", reason=exc.reason)
            return False
        self.hub_state_written.set()
        return True

    async def _keep_hub_state(self, storage: StorageThread, stop: asyncio.Event) -> None:
        """Keep ``<state_dir>/hub_state.json`` up to date for ``homehub status``: looked at
        after each change the daemon notices (uplink, delivery, reading, session) and every
        :data:`~agent.hub_state.WRITE_MIN_INTERVAL_S` (the receipts awaited, the clock),
        written when it differs from the last write, at most once per that interval."""
        written: hub_state.HubState | None = None
        last_write = -math.inf
        loop = asyncio.get_running_loop()
        while not stop.is_set():
            self._hub_state_due.clear()
            state = self.state_snapshot()
            if state != written:
                wait_s = last_write + hub_state.WRITE_MIN_INTERVAL_S - loop.time()
                if wait_s > 0:  # at most one write per interval: this one at its end
                    with contextlib.suppress(TimeoutError):
                        async with asyncio.timeout(wait_s):
                            await stop.wait()
                    if stop.is_set():
                        return  # the stop writes the last state
                    self._hub_state_due.clear()
                    state = self.state_snapshot()
                if await self._write_hub_state(storage, state):
                    written = state
                last_write = loop.time()
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(hub_state.WRITE_MIN_INTERVAL_S):
                    await first_of(self._hub_state_due.wait(), stop.wait())

    async def _watch_uplink(self, uplink: Uplink) -> None:
        """Follow the uplink's connection (online since, offline since) for the state file;
        runs until cancelled at stop."""
        while True:
            await uplink.connected.wait()
            self._uplink_changed(online=True)
            # The connection's end (no cost per message, unlike wait_until's wake-ups) ...
            await uplink.disconnected_or_reconnected()
            if uplink.connected.is_set():  # ... and, were it not yet marked, its marking
                await uplink.wait_until(lambda _stats: not uplink.connected.is_set())
            self._uplink_changed(online=False)

    def _uplink_changed(self, *, online: bool) -> None:
        if online != self._uplink_online:
            self._uplink_online = online
            self._uplink_since = time.time()
            self._uplink_since_mono = time.monotonic()
            self._changed()

    def _changed(self) -> None:
        """Something ``homehub status`` or the patient's indicator shows may have changed."""
        self._hub_state_due.set()
        self._indicator_due.set()

    def _delivered(self, seqs: Sequence[int]) -> None:
        """Records deleted after their acknowledgement (the publisher's ``on_delivered``)."""
        self._last_delivery_at = time.time()
        self._changed()
        if self._observer is not None:
            self._observer.delivered(seqs)

    def _show(self, indicator: Indicator, state: IndicatorState) -> None:
        """Show ``state`` on the patient's indicator when it is not what it shows already."""
        if state is self.indicator_state:
            return
        self.indicator_state = state
        indicator.show(state)
        self.indicator_shown.set()
        self._hub_state_due.set()

    def condition(self, counts: OutboxCounts | None, now: float) -> HubCondition:
        """What the indicator's rules (agent/indicator/rules.py) judge, from what the daemon
        knows at ``now`` (``time.monotonic()``); ``counts`` None: the outbox could not be
        read."""
        online = self._uplink_online
        return HubCondition(
            started=self.ready.is_set(),
            storage_usable=counts is not None and not self._storage_failing,
            part_failing=self._ble_stack_failing() or bool(self._parts_failing),
            online=online,
            offline_for_s=None if online else max(0.0, now - self._uplink_since_mono),
            pending=0 if counts is None else counts.pending,
            session_active=self._sessions_active > 0,
            storage_critical=counts is not None
            and storage_level(counts.used_bytes, self.cfg.outbox.quota_bytes)
            is not StorageLevel.OK,
            # Only a clock never set: one the network's time corrects stamps readings right.
            clock_problem=self.hub_clock_problem() == "implausible",
            device_overdue=any(self._overdue(d.label, now) for d in self.cfg.devices),
        )

    def _overdue(self, label: str, now: float) -> bool:
        """No reading of ``label`` for :data:`DEVICE_OVERDUE_S`: by the monotonic clock since
        its last reading of this run, or since this run started; for a reading of an earlier
        run (the state file's), by the wall clock."""
        mono = self._last_reading_mono.get(label)
        if mono is not None:
            return now - mono > DEVICE_OVERDUE_S
        if now - self._started_mono > DEVICE_OVERDUE_S:
            return True
        earlier = self._last_reading_at.get(label)
        return earlier is not None and time.time() - earlier > DEVICE_OVERDUE_S

    def _part_failing(self, part: str, failing: bool) -> None:
        """``part`` entered (True) or left (False) its restart backoff."""
        if failing:
            self._parts_failing.add(part)
        else:
            self._parts_failing.discard(part)
        self._indicator_due.set()

    def _ble_stack_failing(self) -> bool:
        """The Bluetooth stack is in its restart backoff (no adapter, no BlueZ): nothing can
        be collected until it comes back."""
        collecting = self._collect and self._source is None and bool(self.cfg.devices)
        return collecting and self._stack_failures > 0 and self._ble is None

    async def _drive_indicator(
        self, indicator: Indicator, storage: StorageThread, outbox: Outbox, stop: asyncio.Event
    ) -> None:
        """Judge the hub's condition after each change (uplink, reading, delivery, session)
        and every :data:`INDICATOR_REFRESH_S`, at most every :data:`INDICATOR_MIN_INTERVAL_S`,
        and show the patient its state (only a change is shown). An outage is judged again
        the moment it becomes long enough to ask for attention."""
        attention_s = self.cfg.indicator.offline_attention_s
        while not stop.is_set():
            self._indicator_due.clear()
            counts: OutboxCounts | None
            try:
                async with asyncio.timeout(INDICATOR_REFRESH_S):
                    counts = await storage.call(outbox.counts)
            except (StorageError, TimeoutError):
                counts = None  # the outbox cannot be read (or is stuck): a fault
            now = time.monotonic()
            self._show(
                indicator,
                state_of(self.condition(counts, now), offline_attention_s=attention_s),
            )
            wait_s = INDICATOR_REFRESH_S
            if not self._uplink_online:
                until_attention = self._uplink_since_mono + attention_s - now
                if until_attention > 0:
                    wait_s = min(wait_s, until_attention)
            pace_s = min(INDICATOR_MIN_INTERVAL_S, wait_s)
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(pace_s):
                    await stop.wait()
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(wait_s - pace_s):
                    await first_of(self._indicator_due.wait(), stop.wait())

    def status_line(self, pending: int) -> str:
        """What ``systemctl status`` shows (STATUS=): devices, pending readings, the uplink
        and, with a modem, how (``3 devices, 0 pending, online via 5G NR5G-SA``)."""
        devices = len(self.cfg.devices)
        uplink = self.uplink
        online = uplink is not None and uplink.connected.is_set()
        line = f"{devices} device{'s' if devices != 1 else ''}, {pending} pending, "
        line += "online" if online else "offline"
        if self.cfg.modem.backend != "none":
            technology = self._modem_figures().technology
            if technology is not None and technology != "none":
                line += f" via {'5G ' if technology.startswith('NR5G') else ''}{technology}"
        return line

    async def _notify_systemd(
        self, notifier: Notifier, outbox: Outbox, storage: StorageThread, stop: asyncio.Event
    ) -> None:
        """READY=1 with the first status, then WATCHDOG=1 every half ``WATCHDOG_USEC`` and a
        fresh STATUS=, each only after a round trip through the storage thread (the outbox's
        counts) came back within the interval: the watchdog is fed while the event loop and
        the pipeline make progress, whatever the uplink does (an outage never restarts us)."""
        interval = watchdog_interval_s(os.environ)
        period = interval if interval is not None else NOTIFY_STATUS_S
        counts = await storage.call(outbox.counts)
        notifier.ready(self.status_line(counts.pending))
        while not stop.is_set():
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(period):
                    await stop.wait()
            if stop.is_set():
                break
            try:
                async with asyncio.timeout(period):
                    counts = await storage.call(outbox.counts)
            except TimeoutError:
                log.warning("watchdog_withheld", reason="storage", waited_s=period)
                continue
            except StorageError as exc:
                notifier.status(f"storage failing: {exc.reason}"[:80])
                continue
            if interval is not None:
                notifier.watchdog()
            notifier.status(self.status_line(counts.pending))
        notifier.stopping("stopping")

    def hub_clock_problem(self) -> str | None:
        """Why the hub's own clock is not to be trusted now, or None: ``"implausible"``
        (before its floor, agent/ble/current_time.py) or ``"network_time"`` (more than 15
        minutes from the cellular network's time, agent/network_time.py)."""
        if not hub_clock_plausible():
            return "implausible"
        if self.modem is not None and clock_disagrees(
            datetime.now(UTC), self.modem.status.network_time
        ):
            return "network_time"
        return None

    def _modem_figures(self) -> ModemStatus:
        """The cellular link's figures now (all unknown before its first round)."""
        return self.modem.status if self.modem is not None else self._modemmanager_figures

    async def _watch_modemmanager(self, stop: asyncio.Event) -> None:
        """``[modem] backend = "modemmanager"``: the OS's ModemManager holds the module and
        keeps its link up; the hub reads its figures every :data:`MODEMMANAGER_POLL_S` (and
        asks it to poll the extended signal). ModemManager absent, or no modem: logged, asked
        again after a backoff; never fatal."""
        backoff = FullJitter(MODEM_RESTART_S, MODEM_RESTART_MAX_S)
        failures = 0
        rng = random.Random()  # noqa: S311 - jitter, not cryptography
        # The AT path's machine judges ModemManager's figures too: the same faults, ladder
        # and caps decide when to ask it to reconnect or reset (never to fight it).
        machine = LinkMachine(apn=self.cfg.modem.apn)
        while not stop.is_set():
            try:
                async with open_modemmanager() as client:
                    await client.enable_signal()
                    while not stop.is_set():
                        snapshot = await client.snapshot()
                        self._modemmanager_figures = ModemStatus(**snapshot.figures())
                        failures = 0
                        await self._modemmanager_round(client, machine, snapshot)
                        self._on_modem_event(None)
                        with contextlib.suppress(TimeoutError):
                            async with asyncio.timeout(MODEMMANAGER_POLL_S):
                                await stop.wait()
            except (ModemManagerError, ModemAbsentError) as exc:
                failures += 1
                self._modemmanager_figures = ModemStatus()
                delay = backoff.delay(failures, rng)
                log.warning(
                    "modemmanager_unavailable", error=type(exc).__name__, retry_s=round(delay)
                )
                self._part_failing("modem", True)
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(delay):
                        await stop.wait()
                self._part_failing("modem", False)

    def _budget_report(self) -> str | None:
        """The byte budget's state for the status message: ``None`` without a budget,
        ``"paused"`` while backfill waits for the next UTC day, else ``"open"``."""
        if self._publisher is None:
            return None
        state = self._publisher.budget_state()
        if state.limit_bytes == 0:
            return None
        return "paused" if state.paused else "open"

    async def counts(self) -> OutboxCounts:
        """The outbox's depth now (read on the storage thread); the hub must be running."""
        if self._storage is None:
            raise RuntimeError("the hub is not running")
        storage, outbox = self._storage
        return await storage.call(outbox.counts)

    async def _run(
        self,
        stop: asyncio.Event,
        storage: StorageThread,
        outbox: Outbox,
        signer: SwitchableSigner,
        indicator: Indicator,
    ) -> None:
        cfg = self.cfg
        self._storage = (storage, outbox)
        self._sync_cache = await storage.call(outbox.all_sync_state)
        await self._load_hub_state(storage)
        counts = await storage.call(outbox.counts)
        log.info(
            "hub_started",
            hub=cfg.hub.id,
            devices=len(cfg.devices),
            pending=counts.pending,
            refused=counts.refused,
        )
        uplink = Uplink(UplinkSettings.from_config(cfg), security_sink=self.platform_security)
        self.uplink = uplink
        platform = await PlatformLink.start(
            cfg,
            storage=storage,
            outbox=outbox,
            signer=signer,
            uplink=uplink,
            wake_publisher=lambda: self._publisher.wake() if self._publisher else None,
            awaiting_receipt=lambda: self.awaiting_receipt,
            security_sink=self.platform_security,
            budget=self._budget_report,
            modem=self._modem_figures if cfg.modem.backend != "none" else None,
            hub_clock_problem=self.hub_clock_problem,
        )
        self.platform = platform
        publisher = Publisher(
            storage,
            outbox,
            uplink,
            on_delivered=self._delivered,
            ack=cfg.mqtt.ack,
            platform_key=load_platform_key(cfg.platform.cert_file)
            if cfg.platform.cert_file is not None
            else None,
            receipt_timeout_s=cfg.mqtt.receipt_timeout_s,
            on_security=self.platform_security,
            signer=signer,
            dictionary=platform.dictionary if platform is not None else None,
            batch_max_readings=cfg.mqtt.batch_max_readings,
            daily_budget_bytes=cfg.mqtt.daily_budget_bytes,
        )
        self._publisher = publisher
        self.modem = _modem_link(
            cfg,
            on_event=self._on_modem_event,
            reachable=uplink.connected.is_set,
            on_data_bytes=publisher.note_link_bytes,
        )
        modem_stop = asyncio.Event()
        watch_modemmanager = cfg.modem.backend == "modemmanager"
        try:
            async with asyncio.TaskGroup() as tg:
                tg.create_task(uplink.run(), name="hub.uplink")
                watch_uplink = tg.create_task(self._watch_uplink(uplink), name="hub.uplink_watch")
                state_stop = asyncio.Event()
                # No LED, no judging: nothing would show it.
                drive_indicator = (
                    tg.create_task(
                        self._drive_indicator(indicator, storage, outbox, state_stop),
                        name="hub.indicator",
                    )
                    if cfg.indicator.backend != "none"
                    else None
                )
                keep_state = tg.create_task(
                    self._keep_hub_state(storage, state_stop), name="hub.state"
                )
                if cfg.modem.backend != "none":
                    tg.create_task(
                        self._write_modem_state(storage, modem_stop), name="hub.modem_state"
                    )
                if self._notifier is not None and self._notifier.enabled:
                    tg.create_task(
                        self._notify_systemd(self._notifier, outbox, storage, modem_stop),
                        name="hub.notify",
                    )
                modem_task = (
                    tg.create_task(
                        _keep_modem(
                            self.modem, modem_stop, functools.partial(self._part_failing, "modem")
                        ),
                        name="hub.modem",
                    )
                    if self.modem is not None
                    else tg.create_task(self._watch_modemmanager(modem_stop), name="hub.modem")
                    if watch_modemmanager
                    else None
                )
                publishing = tg.create_task(publisher.run(), name="hub.publisher")
                ingest = tg.create_task(self._ingest(storage, outbox, signer), name="hub.ingest")
                collector = tg.create_task(self._collector(), name="hub.collector")
                platform_task = (
                    tg.create_task(platform.run(), name="hub.platform") if platform else None
                )
                self.ready.set()
                self._indicator_due.set()
                await stop.wait()
                log.info("hub_stopping")
                started = asyncio.get_running_loop().time()
                await self._stop_collecting(collector)
                modem_stop.set()  # the state writer ends at once
                if modem_task is not None:
                    # Nothing of the link needs settling: a round mid-command is cancelled.
                    modem_task.cancel()
                await self._queue.put(None)  # ingest stores what is queued, then ends
                await ingest
                publisher.stop()  # bounded by its own STOP_DRAIN_S
                if platform is not None and platform_task is not None:
                    platform.stop()  # the offline status, overlapping the publisher's drain
                    await platform_task
                await publishing
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(UPLINK_STOP_S):
                        await uplink.close()
                watch_uplink.cancel()
                state_stop.set()
                await keep_state
                if drive_indicator is not None:
                    await drive_indicator
                self._uplink_changed(online=False)
                await self._write_hub_state(storage, self.state_snapshot(stopped_at=time.time()))
                took_s = asyncio.get_running_loop().time() - started
                if took_s > STOP_BUDGET_S:
                    log.warning("hub_stop_overdue", took_s=round(took_s, 3), limit_s=STOP_BUDGET_S)
        finally:
            await uplink.close()  # idempotent; ends uplink.run() on every path
            if self.modem is not None:
                self.modem.close()
                wall_clock.set_correction(None)

    async def _stop_collecting(self, collector: asyncio.Task[None]) -> None:
        """End the BLE side: the sessions end normally (and hand on what they received);
        after :data:`COLLECTOR_STOP_S` the collector is cancelled."""
        self._collect_stop.set()
        if self._ble is not None:
            self._ble.request_stop()
        done, _ = await asyncio.wait({collector}, timeout=COLLECTOR_STOP_S)
        if not done:
            log.warning("ble_stop_overdue", limit_s=COLLECTOR_STOP_S)
            collector.cancel()
            await asyncio.wait({collector})

    async def _open_outbox_when_possible(
        self, stop: asyncio.Event, storage: StorageThread, indicator: Indicator
    ) -> tuple[Outbox, Signer] | None:
        """Open keys and outbox on the storage thread; while the disk fails transiently (full,
        I/O error), wait.

        Exiting instead would make systemd restart us into the same failure: a crash loop
        that wears the flash and floods the journal. Key and corruption problems that waiting
        cannot fix still end the start with their error.
        """
        while True:
            try:
                return await storage.call(open_outbox, self.cfg)
            except StorageError as exc:
                if not exc.retryable:
                    raise
                log.error(
                    "outbox_open_failed",
                    error=type(exc).__name__,
                    reason=exc.reason,
                    retry_in_s=STORAGE_RETRY_S,
                )
                self._show(indicator, IndicatorState.FAULT)  # readings cannot be kept
                if self._notifier is not None:
                    # Under systemd: say why, keep the start from timing out (a restart would
                    # only meet the same disk), and feed the watchdog (the loop is alive).
                    self._notifier.send(
                        STATUS=f"waiting for storage: {exc.reason}",
                        EXTEND_TIMEOUT_USEC=str(int(3 * STORAGE_RETRY_S * 1e6)),
                        WATCHDOG="1",
                    )
            try:
                async with asyncio.timeout(STORAGE_RETRY_S):
                    await stop.wait()
                return None
            except TimeoutError:
                continue

    # -- collecting ---------------------------------------------------------------------

    async def receive(
        self, raw: RawMeasurement, facts: DeviceFacts, device: DeviceConfig, *, session: int = 0
    ) -> None:
        """Queue one raw measurement for storing (the sessions' ``on_measurement``); returns
        once it is queued. Waits while the queue is full (the session buffers, bounded).
        ``session`` numbers the BLE session (:attr:`_sync_held`); a source of its own leaves
        it 0, so after a storage fault its sync state is held until the daemon restarts."""
        arrival = Arrival(facts, device_label(device.address), device.label, raw, session)
        await self._queue.put(arrival)

    async def _collector(self) -> None:
        if self._source is not None:
            await self._source(self)
            return
        if not self._collect:
            return
        while not self._collect_stop.is_set():
            collector: Collector | None = None
            try:
                async with BleStack.open(
                    self.cfg.ble.stack,
                    bonds_path=self.cfg.hub.state_dir / BONDS_FILE,
                    may_pair=first_contact_pairing(self.cfg.devices),
                ) as ble:
                    self._ble = ble
                    if self._collect_stop.is_set():
                        ble.request_stop()
                        return
                    collector = Collector(
                        ble,
                        self.cfg.ble,
                        self.cfg.devices,
                        functools.partial(self._session, ble),
                        self._backoff,
                        self._collect_stop,
                        power_cycle=ble.power_cycle,
                    )
                    await collector.run()
                    self._stack_failures = 0
            except BleLinkError as exc:
                # The adapter, BlueZ's D-Bus or the virtual radio's HCI port is not there:
                # try again after a full-jitter backoff (a fleet must not re-synchronise).
                if collector is not None and collector.listening:
                    self._stack_failures = 0  # it had worked: a new outage starts afresh
                delay_s = self._stack_backoff.delay(self._stack_failures, self._rng)
                self._stack_failures += 1
                log.warning(
                    "ble_stack_unavailable", reason=exc.reason, retry_in_s=round(delay_s, 3)
                )
                await self._pause(delay_s)
            finally:
                self._ble = None

    async def _pause(self, seconds: float) -> None:
        """Sleep ``seconds`` unless collecting is told to stop first."""
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(seconds):
                await self._collect_stop.wait()

    async def _session(
        self, ble: BleStack, device: DeviceConfig, found: BLEDevice | None = None
    ) -> None:
        """One session with ``device``, which the collector's scan just saw advertise
        (``found``; ``None``: the session scans for it). Logs and counts how it ended;
        raises only :class:`BleStackUnavailableError`."""
        label = device_label(device.address)
        bound = log.bind(device=label, kind=device.kind)
        vetting = _Vetting(device, label, self._sync_cache.get((device.label, identity.SYNC_KEY)))

        def sync_state(key: str) -> bytes | None:
            # Committed values only: the cache is updated after each commit (_note_stored).
            return self._sync_cache.get((device.label, key))

        session = SESSIONS[device.kind]
        self._sessions_active += 1
        self._indicator_due.set()
        try:
            result = await self._run_session(
                session, ble, device, found, vetting, sync_state, bound
            )
            self._last_session[device.label] = (time.time(), result)
            self._changed()
            # The device's next session starts only once this one's readings are committed:
            # it then resumes from the committed sync state (a glucometer's RACP mark) instead
            # of being asked again for what is still queued.
            uncommitted = self._uncommitted.get(device.label)
            if uncommitted is not None:
                await uncommitted.settled()
        finally:
            self._sessions_active -= 1
            self._indicator_due.set()
            self.sessions_done += 1
            self.session_done.set()

    async def _run_session(
        self,
        session: Session,
        ble: BleStack,
        device: DeviceConfig,
        found: BLEDevice | None,
        vetting: _Vetting,
        sync_state: SyncStateReader,
        bound: Any,
    ) -> str:
        """Run one session and log how it ended; that end as one of
        :data:`agent.hub_state.SESSION_RESULTS` (for ``homehub status``)."""
        on_measurement = functools.partial(
            self._on_measurement,
            device=device,
            vetting=vetting,
            session=next(self._session_numbers),
        )
        try:
            # BlueZ: a required device is connected only with the bond homehub pair made
            # (Bumble's backend refuses by itself: the stack's may_pair).
            bluez = ble.host is None
            if (
                device.pairing_mode == "required"
                and bluez
                and not await ble.is_bonded(device.address)
            ):
                raise LinkSecurityError(
                    device_label(device.address),
                    "bond",
                    "not bonded, and only homehub pair may bond it",
                )
            # Each session's own deadline (ble.session_timeout_s) ends the radio part and
            # still hands on everything received; an outer cancellation would drop readings
            # the device already saw confirmed.
            outcome = await session(
                ble,
                device,
                on_measurement,
                self.cfg.ble,
                sync_state,
                found=found,
                vet=vetting,
                clock=self._clock_policy,
            )
            bound.info(
                "ble_session_done", measurements=outcome.measurements, ended_by=outcome.ended_by
            )
            self._backoff.succeeded(device.label)
            return "completed"
        except BleStackUnavailableError:
            raise  # not this device's fault: the collector backs off at the stack level
        except BleDeviceAbsentError:
            # Switched off or asleep: a health device's normal state, not a failure to back
            # off from (its next advertisement must not be missed).
            bound.info("ble_device_absent")
            return "absent"
        except BleLinkLostError as exc:
            # Many cuffs hang up themselves after their transfer; bleak gives no reason, so a
            # drop after measurements is most likely that. What was received is handed on.
            if exc.measurements > 0:
                bound.info("ble_session_link_lost", phase=exc.phase, measurements=exc.measurements)
                self._backoff.succeeded(device.label)
                return "completed"
            else:
                retry_in_s = self._backoff.failed(device.label, exc)
                bound.warning(
                    "ble_session_link_lost",
                    phase=exc.phase,
                    measurements=0,
                    retry_in_s=round(retry_in_s, 3),
                )
                return "link_lost"
        except BleLinkError as exc:
            retry_in_s = self._backoff.failed(device.label, exc)
            bound.info("ble_session_failed", reason=exc.reason, retry_in_s=round(retry_in_s, 3))
            return "failed"
        except DeviceSecurityError as exc:
            # An impersonator, or a device that lost its bond: nothing of this session was
            # accepted. The breaker keeps it away for minutes; the event is for the platform's
            # security monitoring (no address, no serial: the label and which check failed).
            self.security_events += 1
            self.security_noticed.set()
            if self.platform is not None:
                self.platform.security(SecurityEvent("device", exc.check, "device check failed"))
            retry_in_s = self._backoff.failed(device.label, exc)
            bound.error(
                "security",
                check=exc.check,
                reason=exc.reason,
                source=getattr(exc, "source", None),
                retry_in_s=round(retry_in_s, 3),
            )
            return "security"
        except DeviceError as exc:
            # Not retryable: the per-device breaker keeps a misbehaving device away for minutes.
            retry_in_s = self._backoff.failed(device.label, exc)
            bound.warning(
                "ble_device_misbehaved",
                error=type(exc).__name__,
                reason=str(exc),
                retry_in_s=round(retry_in_s, 3),
            )
            return "misbehaved"

    async def _on_measurement(
        self,
        raw: RawMeasurement,
        facts: DeviceFacts,
        *,
        device: DeviceConfig,
        vetting: _Vetting,
        session: int,
    ) -> None:
        if vetting.first_pin is not None:
            # Trust on first use: the identity is pinned by the same commit as the first
            # reading it vouches for (a session that stores nothing pins nothing).
            raw = dataclasses.replace(
                raw, sync_state={**raw.sync_state, identity.SYNC_KEY: vetting.first_pin.encode()}
            )
            vetting.first_pin = None
        uncommitted = self._uncommitted.setdefault(device.label, _Uncommitted())
        uncommitted.add()
        try:
            await self.receive(raw, facts, device, session=session)
        except BaseException:
            uncommitted.done()  # never queued: nothing to wait for
            raise

    # -- storing ------------------------------------------------------------------------

    async def _ingest(self, storage: StorageThread, outbox: Outbox, signer: HubSigner) -> None:
        """Store what is queued, batch after batch, until the stop marker (``None``)."""
        while True:
            # What is queued, at once (no window): what arrives meanwhile is the next batch.
            batch = await collect_batch(self._queue)
            done = None in batch  # nothing is queued after the marker: collecting has ended
            arrivals = [a for a in batch if a is not None]
            if arrivals:
                fates = await storage.call(self._store_batch, outbox, signer, arrivals)
                self._report(arrivals, fates)
            if done:
                return

    def _store_batch(
        self, outbox: Outbox, signer: HubSigner, arrivals: Sequence[Arrival]
    ) -> list[Fate]:
        """On the storage thread: decode, normalize and store ``arrivals`` in one outbox
        transaction. Never raises for bad bytes or a storage fault: each arrival's fate says
        what became of it (the loop logs and counts, :meth:`_report`)."""
        cfg = self.cfg
        fates: list[Fate | None] = []
        items: list[Item] = []
        urgent: list[bool] = []
        for arrival in arrivals:
            if self._shed_continuous(outbox, arrival):
                fates.append(Shed(outbox.level))
                continue
            ctx = Context(
                hub_id=cfg.hub.id,
                patient_id=cfg.patient.id,
                timezone=cfg.hub.timezone,
                received=arrival.raw.received_wall,
            )
            try:
                prepared = prepare(arrival.raw, arrival.device, ctx)
            except DecodeError as exc:
                fates.append(Rejected(exc))
                continue
            # The reading and the sync state it advances commit in one transaction (none
            # after a reading of this session was not stored: _sync_held).
            sync = (
                {}
                if self._holds_sync(arrival)
                else {(arrival.device_key, k): v for k, v in arrival.raw.sync_state.items()}
            )
            items.append(
                Item(
                    prepared.kind,
                    prepared.dedup_key,
                    functools.partial(prepared.envelope, signer=signer),
                    sync,
                    prepared.content_digest,
                    functools.partial(_conflict_envelope, prepared, signer),
                )
            )
            urgent.append(is_urgent(prepared.bundle))
            fates.append(None)
        committed = commit_batch(outbox, items)
        self._urgent_stored = [
            outcome.seq
            for outcome, flagged in zip(committed, urgent, strict=True)
            if flagged
            and outcome.seq is not None
            and outcome.status in (Status.STORED, Status.CONFLICT)
        ]
        outcomes = iter(committed)
        return [fate if fate is not None else next(outcomes) for fate in fates]

    def _report(self, arrivals: Sequence[Arrival], fates: Sequence[Fate]) -> None:
        """On the loop: count, log, update the committed sync state, wake the publisher."""
        stored_any = False
        for arrival, fate in zip(arrivals, fates, strict=True):
            bound = log.bind(device=arrival.label)
            if isinstance(fate, Rejected):
                self.rejected += 1
                exc = fate.error
                bound.warning(
                    "measurement_rejected",
                    characteristic=exc.characteristic,
                    reason=exc.reason,
                    offset=exc.offset,
                )
            elif isinstance(fate, Shed):
                self.shed_continuous += 1
                bound.warning("continuous_sample_shed", level=fate.level.value)
            elif fate.status is Status.NOT_STORED:
                # Not stored: the device's confirmation already went out (BlueZ confirms
                # before we commit), so this is logged loudly; devices with memory resend.
                self.not_stored += 1
                self._storage_failing = True
                self._indicator_due.set()
                error = fate.error
                bound.error(
                    "measurement_not_stored",
                    error=type(error).__name__,
                    operation=getattr(error, "operation", "append"),
                    reason=str(getattr(error, "reason", error)),
                )
                # A storage fault (not a record too large to ever store): this session's
                # later readings must not advance the mark past this one.
                if isinstance(error, StorageError) and not self._holds_sync(arrival):
                    self._sync_held[arrival.device_key] = arrival.session
                    bound.warning("sync_state_held", session=arrival.session)
            else:
                if not self._holds_sync(arrival):
                    for key, value in arrival.raw.sync_state.items():
                        self._sync_cache[(arrival.device_key, key)] = value
                self._last_reading_at[arrival.device_key] = time.time()
                self._last_reading_mono[arrival.device_key] = time.monotonic()
                self._storage_failing = False
                self._changed()
                if fate.status is Status.DUPLICATE:
                    self.duplicates += 1
                    bound.info("measurement_duplicate", seq=fate.seq)
                elif fate.status is Status.CONFLICT:
                    self.conflicts += 1
                    stored_any = True
                    bound.warning(
                        "measurement_conflict", seq=fate.seq, conflict_of=fate.conflict_of
                    )
                else:
                    self.stored += 1
                    stored_any = True
                    bound.info("measurement_stored", seq=fate.seq)
            uncommitted = self._uncommitted.get(arrival.device_key)
            if uncommitted is not None:
                uncommitted.done()
            if self._observer is not None:
                self._observer.stored(arrival, fate)
        urgent, self._urgent_stored = self._urgent_stored, []
        if urgent:  # the seqs, never the values
            log.info("measurements_urgent", count=len(urgent), first_seq=urgent[0])
        if self._publisher is not None:
            if urgent:
                self._publisher.mark_urgent(urgent)
            if stored_any:
                self._publisher.wake()
        if self.platform is not None:  # a low battery, the outbox's quota level
            self.platform.after_commit(
                [
                    (a.device_key, a.label, a.raw.sync_state)
                    for a, f in zip(arrivals, fates, strict=True)
                    if isinstance(f, Outcome) and f.status is not Status.NOT_STORED
                ]
            )

    def _holds_sync(self, arrival: Arrival) -> bool:
        """Whether ``arrival``'s sync state must not advance (:attr:`_sync_held`)."""
        return self._sync_held.get(arrival.device_key) == arrival.session

    def _shed_continuous(self, outbox: Outbox, arrival: Arrival) -> bool:
        """Whether to drop this continuous-oximetry sample because storage is under pressure."""
        if arrival.raw.characteristic_uuid.lower() != PLX_CONTINUOUS_MEASUREMENT:
            return False
        now = arrival.raw.received_monotonic
        last = self._last_continuous.get(arrival.device_key)
        if (
            outbox.level is not StorageLevel.OK
            and last is not None
            and now - last < DEGRADED_CONTINUOUS_INTERVAL_S
        ):
            return True
        self._last_continuous[arrival.device_key] = now
        return False


MODEM_RESTART_S: Final = 30.0
"""Base of the backoff before a modem link that failed (a bug, not a modem fault: those the
link's own ladder handles) is started again: full jitter, growing to :data:`MODEM_RESTART_MAX_S`."""

MODEM_RESTART_MAX_S: Final = 600.0

SIM_PIN_MAX_BYTES: Final = 64
"""A PIN is 4-8 digits; the file may end with a newline. Larger is not a PIN file."""


def _modem_link(
    cfg: Config,
    on_event: Callable[[LinkEvent | None], None],
    reachable: Callable[[], bool],
    on_data_bytes: Callable[[int], None],
) -> ModemLink | None:
    """The link manager ``[modem]`` asks for, or None (no modem: Ethernet or Wi-Fi)."""
    modem = cfg.modem
    if modem.backend != "at":
        return None
    assert modem.port is not None  # enforced by agent.config
    pin_file = modem.pin_file

    def pin() -> str | None:
        """The SIM PIN from its credential file, read when needed (never logged)."""
        if pin_file is None:
            return None
        try:
            data = read_private_file_up_to(pin_file, "SIM PIN file", SIM_PIN_MAX_BYTES)
        except KeyMaterialError as exc:
            log.error("modem_pin_unreadable", reason=exc.reason)
            return None
        if data is None:
            log.error("modem_pin_unreadable", reason="missing")
            return None
        return data.decode("ascii", errors="replace").strip()

    command = modem.power_cycle_command
    return ModemLink(
        modem.port,
        apn=modem.apn,
        pin=pin,
        baudrate=modem.baudrate,
        on_event=on_event,
        reachable=reachable,
        on_data_bytes=on_data_bytes,
        power_cycle=None if command is None else functools.partial(_power_cycle, command),
    )


POWER_CYCLE_TIMEOUT_S: Final = 60.0
"""Longest a power-cycle command may take (cutting, waiting, restoring: seconds); past it, it
is killed and the ladder goes on (the link sees whether the module came back)."""


async def _power_cycle(command: Path) -> None:
    """Run the configured power-cycle command (no arguments, no shell), bounded; its
    outcome is logged by exit status only (never its output)."""
    try:
        process = await asyncio.create_subprocess_exec(
            str(command),
            stdin=asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.DEVNULL,
            stderr=asyncio.subprocess.DEVNULL,
        )
    except OSError as exc:
        log.error("modem_power_cycle_failed", reason=exc.strerror)
        return
    try:
        async with asyncio.timeout(POWER_CYCLE_TIMEOUT_S):
            code = await process.wait()
    except TimeoutError:
        process.kill()
        await process.wait()
        log.error("modem_power_cycle_failed", reason="timeout", timeout_s=POWER_CYCLE_TIMEOUT_S)
        return
    if code != 0:
        log.error("modem_power_cycle_failed", reason="exit status", status=code)
    else:
        log.info("modem_power_cycled")


async def _keep_modem(
    link: ModemLink, stop: asyncio.Event, failing: Callable[[bool], None]
) -> None:
    """Run the modem link until ``stop``; a link that fails (a bug: the modem's own faults
    are its ladder's) is logged and started again after a backoff, never taking the readings'
    pipeline down with it. ``failing(True)`` while in that backoff, ``failing(False)`` after."""
    backoff = FullJitter(MODEM_RESTART_S, MODEM_RESTART_MAX_S)
    failures = 0
    rng = random.Random()  # noqa: S311 - jitter, not cryptography
    while not stop.is_set():
        try:
            if not await _port_free(link.port.path):
                # The operator's choice (use ModemManager, or stop it): asked again hourly.
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(MODEM_PORT_HELD_RECHECK_S):
                        await stop.wait()
                continue
            await link.run(stop)
        except Exception as exc:  # noqa: BLE001 - a failing part is restarted, not fatal
            failures += 1
            link.close()
            delay = backoff.delay(failures, rng)
            log.error(
                "modem_link_failed", error=type(exc).__name__, failures=failures, retry_s=delay
            )
            failing(True)
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(delay):
                    await stop.wait()
            failing(False)


NOTIFY_STATUS_S: Final = 30.0
"""How often STATUS= is refreshed when systemd set no watchdog."""

MODEMMANAGER_POLL_S: Final = 60.0
"""How often ModemManager's figures are read (its own signal polling runs every 30 s)."""

MODEM_PORT_HELD_RECHECK_S: Final = 3600.0
"""How often a port ModemManager holds is checked again (the operator may stop it)."""


async def _port_free(port: str) -> bool:
    """Whether the AT link may use ``port``: False (logged, with the fix) while ModemManager
    holds it, so the two never fight over the module; True when ModemManager does not run or
    does not answer (the link's own exclusive open then decides)."""
    try:
        await check_at_port(port)
    except ModemPortHeldError as exc:
        log.error("modem_port_not_used", holder=exc.holder, fix=exc.fix)
        return False
    except ModemManagerTimeoutError:
        log.warning("modem_port_check_unanswered")
    return True


def _conflict_envelope(prepared: Prepared, signer: HubSigner, seq: int, first: int) -> bytes:
    """The envelope of a conflicting reading: it names the first record of its identity."""
    return prepared.envelope(seq, signer, conflict_of=first)


def main(cfg: Config) -> int:
    """Run the daemon until SIGTERM or SIGINT; the exit code for ``homehub run``."""

    async def _main() -> None:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, stop.set)
        notifier = Notifier.from_env()
        try:
            await Hub(cfg, notifier=notifier).run(stop)
        finally:
            notifier.close()

    try:
        with contextlib.ExitStack() as held:
            _hold_instance_lock(cfg, held)
            asyncio.run(_main())
    except (HubError, BaseExceptionGroup) as exc:
        errors = _leaves(exc)
        hub_errors = [e for e in errors if isinstance(e, HubError)]
        if len(hub_errors) != len(errors):
            raise  # not ours: a bug; let the traceback (no PHI: values stay in locals) show it
        for error in hub_errors:
            log.error("hub_failed", error=type(error).__name__, reason=str(error))
        refused = all(isinstance(e, LocalError | KeyMaterialError) for e in hub_errors)
        return 2 if refused else 1
    return 0


def _hold_instance_lock(cfg: Config, held: contextlib.ExitStack) -> None:
    """Hold ``<state_dir>/homehub.lock`` for the daemon's life (agent/instance_lock.py): a
    second daemon is refused, and so is ``factory-reset`` while this one runs. A state
    directory that cannot hold it yet (missing, read-only) does not stop the start: the
    storage wait reports and retries that disk; the lock is then not held."""
    try:
        cfg.hub.state_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
        held.enter_context(instance_lock.hold(cfg.hub.state_dir))
    except OSError as exc:
        log.warning("instance_lock_unavailable", reason=exc.strerror or type(exc).__name__)


def _leaves(exc: BaseException) -> list[BaseException]:
    """The exceptions inside (nested) exception groups, in order."""
    if isinstance(exc, BaseExceptionGroup):
        return [leaf for inner in exc.exceptions for leaf in _leaves(inner)]
    return [exc]


__all__ = ["Hub", "main", "open_outbox", "status"]
