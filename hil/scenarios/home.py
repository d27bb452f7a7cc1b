"""One scenario run's home: the real parts, running, and what a scenario does to them.

:class:`Home` is what a scenario's ``drive`` acts on and what the runner measures:

- the platform: the reference receiver (hil/receiver.py) in this process, verifying with
  pycose into its durable store (``<run>/platform``), receipting with the platform key;
  :meth:`Home.replace_platform` swaps it for another (one that receipts or not) on the same
  store, as a platform redeploys;
- mosquitto (hil/broker.py) with the run's dev PKI: :meth:`Home.stop_broker`,
  :meth:`Home.start_broker`;
- the virtual radio with the scenario's emulated devices (:meth:`Home.cuff`,
  :meth:`Home.measure` for a new measurement, :meth:`Home.add_device` for one that turns up);
- ``homehub run`` as its own process, each life logging to ``<run>/agent-<n>.log``
  (:meth:`Home.start_agent`, :meth:`Home.stop_agent`, :meth:`Home.kill_agent`);
- what was measured: each verified reading's arrival, when each device reading was taken
  (:meth:`Home.measure` stamps it), the outbox's depth sampled every
  :data:`SAMPLE_INTERVAL_S` (read-only, the way ``homehub status`` reads it), fault windows.

Waiting is on conditions (:meth:`Home.until`), re-checked whenever something changes: a
reading arrives, or the sampler looked at the outbox and the daemon's log (another process's
state, which nothing here can await), always under a deadline.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import sys
import time
from collections.abc import AsyncIterator, Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final

from agent.errors import StorageError
from agent.outbox import peek_counts
from hil.broker import Broker
from hil.emulators.cuff import EmulatedCuff
from hil.pki import DevPki
from hil.receiver import Receiver, ReceiverStats, VerifiedReading
from hil.rig import Rig, RigRadio, cut_power
from hil.scenarios.base import Check, RunIdentities, Scenario
from hil.scenarios.devices import Device, device_information
from hil.virtual_radio import HubController, VirtualRadio

SAMPLE_INTERVAL_S: Final = 0.1
"""How often the outbox's depth and the daemon's log are looked at: the depth plot's grain."""
WAIT_S: Final = 30.0
"""Default bound of one :meth:`Home.until`: a cold start and a BLE session take ~3 s here."""
AGENT_STOP_TIMEOUT_S: Final = 20.0
"""The unit's TimeoutStopSec (the daemon's ordered stop takes at most 5 s)."""
LOG_READ_MAX_BYTES: Final = 16 * 1024 * 1024
"""A daemon log past this is not read further (a scenario's logs are kilobytes)."""


@dataclass(frozen=True, slots=True)
class Arrival:
    """A new verified reading at the platform and when (monotonic seconds, and wall time)."""

    reading: VerifiedReading
    at: float
    wall: float


@dataclass(slots=True)
class Timeline:
    """What the runner plots and reports, in seconds since the run's start."""

    depth: list[tuple[float, int]] = field(default_factory=list)
    """(t, pending records in the outbox)."""
    faults: list[tuple[str, float, float | None]] = field(default_factory=list)
    """(name, start, end) of each injected fault; end None while it lasts."""
    taken: dict[tuple[str, Any], float] = field(default_factory=dict)
    """(device label, values) -> when the device held that reading."""


class HomeError(RuntimeError):
    """Something of the home itself failed (not a check): the scenario errors."""


class Home:
    """The running home of one scenario (see the module doc); built by the runner."""

    def __init__(
        self,
        scenario: Scenario,
        run_dir: Path,
        pki: DevPki,
        ids: RunIdentities,
        broker: Broker,
        radio: VirtualRadio | RigRadio,
        rig: Rig | None = None,
    ) -> None:
        self.scenario = scenario
        self.run_dir = run_dir
        self.pki = pki
        self.ids = ids
        self.broker = broker
        self.radio = radio
        self.rig = rig
        """The real rig this home is on (hil/rig.py, with a :class:`RigRadio`), None for the
        virtual home."""
        self.config = run_dir / "homehub.toml"
        """The daemon's configuration (the runner writes it after the scenario's setup)."""
        self.mqtt_port = broker.port
        """Where the daemon connects: the broker, or a scenario's proxy in front of it."""
        self.config_overrides: dict[str, dict[str, Any]] = {}
        """Keys a scenario's setup sets in the daemon's configuration (section -> key)."""
        self.agent_wrappers: list[Callable[[Sequence[str]], list[str]]] = []
        """Wrappers of the daemon's command line, innermost first (a disk limit's
        ``prlimit``); :attr:`agent_base` replaces its start (the clock child)."""
        self.agent_base: list[str] | None = None
        """The command that runs ``homehub`` (before ``run --config``), None for the
        installed script."""
        self.parts = contextlib.AsyncExitStack()
        """The scenario's own rig parts, closed after the daemon stopped."""
        self.outbox_path = run_dir / "state" / "outbox.db"
        self.started = time.monotonic()
        self.timeline = Timeline()
        self.arrivals: list[Arrival] = []
        self.emulators: dict[str, Any] = {}
        """The running emulator of each device, by label."""
        self.measured: dict[str, list[Any]] = {}
        """Readings each device took during the run (:meth:`measure`)."""
        self.stopped: set[str] = set()
        """Labels of devices already powered off."""
        self.receiver: Receiver | None = None
        self.retired_stats: list[ReceiverStats] = []
        self.agent: asyncio.subprocess.Process | None = None
        self.agent_exits: list[tuple[str, int]] = []
        """(how it ended: ``"term"``, ``"kill"``, or ``"exited"`` by itself; exit code) of each
        life."""
        self.lives = 0
        self.pending = 0
        self.samples = 0
        """Outbox samples taken so far."""
        self.notes: list[Check] = []
        """Checks the scenario's ``drive`` made itself (reported with the platform-side ones)."""
        self._change = asyncio.Event()

    # -- time ---------------------------------------------------------------------------

    def now(self) -> float:
        """Seconds since the run started."""
        return time.monotonic() - self.started

    @contextlib.asynccontextmanager
    async def fault(self, name: str) -> AsyncIterator[None]:
        """Mark a fault's window on the timeline (shaded in the depth plot)."""
        index = len(self.timeline.faults)
        self.timeline.faults.append((name, self.now(), None))
        try:
            yield
        finally:
            self.timeline.faults[index] = (name, self.timeline.faults[index][1], self.now())

    def last_fault_end(self) -> float | None:
        """When the last fault ended (seconds since start), None without any."""
        ends = [end for _, _, end in self.timeline.faults if end is not None]
        return max(ends) if ends else None

    def note(self, name: str, ok: bool, detail: str) -> None:
        """Record a check of the scenario's own (e.g. "nothing deleted by a forged receipt")."""
        self.notes.append(Check(name, ok, detail))

    # -- changes and waiting ------------------------------------------------------------

    def changed(self) -> None:
        """Wake every :meth:`until` to look again."""
        event, self._change = self._change, asyncio.Event()
        event.set()

    async def until(
        self, condition: Callable[[], bool], what: str, timeout_s: float = WAIT_S
    ) -> None:
        """Return once ``condition()`` holds; :class:`HomeError` naming ``what`` after
        ``timeout_s``."""
        try:
            async with asyncio.timeout(timeout_s):
                while True:
                    change = self._change
                    if condition():
                        return
                    self._check_agent_alive(what)
                    await change.wait()
        except TimeoutError:
            raise HomeError(f"timed out after {timeout_s:g} s waiting for {what}") from None

    def _check_agent_alive(self, what: str) -> None:
        """A daemon that exited on its own ends the wait at once (it would only time out)."""
        agent = self.agent
        if (
            agent is not None
            and agent.returncode is not None
            and len(self.agent_exits) < self.lives
        ):
            code = agent.returncode
            self.agent_exits.append(("exited", code))
            raise HomeError(
                f"homehub run exited by itself with code {code} while waiting for {what} "
                f"(see agent-{self.lives}.log)"
            )

    async def fresh_sample(self) -> int:
        """Wait for an outbox sample begun after this call; the pending count it read."""
        target = self.samples + 2
        await self.until(lambda: self.samples >= target, "a fresh outbox sample")
        return self.pending

    async def sample_forever(self) -> None:
        """The sampler: the outbox's depth, then a wake-up for the waiters, every tick."""
        while True:
            pending = await asyncio.to_thread(self._peek_pending)
            if pending is not None:
                self.pending = pending
                self.timeline.depth.append((round(self.now(), 3), pending))
            self.samples += 1
            self.changed()
            await asyncio.sleep(SAMPLE_INTERVAL_S)  # a sampling period, not a synchronisation

    def _peek_pending(self) -> int | None:
        if not self.outbox_path.is_file():
            return None
        try:
            return peek_counts(self.outbox_path).pending
        except StorageError:
            return None  # mid-creation: the next tick reads it

    # -- the platform ---------------------------------------------------------------------

    def new_receiver(self, *, receipts: bool) -> Receiver:
        """A reference receiver on the run's durable store, recording each new reading."""

        async def arrived(reading: VerifiedReading) -> None:
            self.arrivals.append(Arrival(reading, time.monotonic(), time.time()))
            self.changed()

        return Receiver.for_dev_pki(
            self.pki,
            self.broker.port,
            receipts=receipts,
            state_dir=self.run_dir / "platform",
            consumer=arrived,
            queue_max=1_000_000,
        )

    async def start_platform(self, *, receipts: bool) -> Receiver:
        """Start a receiver and wait until it is subscribed."""
        receiver = self.new_receiver(receipts=receipts)
        await receiver.__aenter__()
        self.receiver = receiver
        await self.until(receiver.subscribed.is_set, "the platform's subscription")
        return receiver

    async def stop_platform(self) -> None:
        """Stop the receiver (its store keeps what it held)."""
        receiver, self.receiver = self.receiver, None
        if receiver is not None:
            self.retired_stats.append(receiver.stats)
            await receiver.__aexit__(None, None, None)

    async def replace_platform(self, *, receipts: bool) -> Receiver:
        """Another receiver on the same store (a platform redeployed)."""
        await self.stop_platform()
        return await self.start_platform(receipts=receipts)

    def platform_stats(self) -> list[ReceiverStats]:
        """The stats of every receiver of the run."""
        current = [] if self.receiver is None else [self.receiver.stats]
        return [*self.retired_stats, *current]

    # -- the broker -----------------------------------------------------------------------

    async def stop_broker(self) -> None:
        """Graceful stop (without persistence it forgets every session and queued message)."""
        await self.broker.astop()

    async def kill_broker(self) -> None:
        """SIGKILL mosquitto."""
        await self.broker.akill()

    async def start_broker(self) -> None:
        """Start it again on the same port."""
        await self.broker.astart()

    # -- devices --------------------------------------------------------------------------

    async def add_device(self, device: Device) -> Any:
        """Power on one of the scenario's devices (its readings count as taken now); its
        emulator. An impostor takes the address of the device it impersonates."""
        index = self.scenario.index(device.label)
        address_index = self.scenario.index(device.impostor_of or device.label)
        info = device_information(self.ids.serial(index), self.ids.system_id(index))
        emulator = await device.power_on(self.radio, self.ids.address(address_index), info)
        taken = self.now()
        for reading in device.readings:
            self.timeline.taken.setdefault((device.label, device.values(reading)), taken)
        self.emulators[device.label] = emulator
        return emulator

    async def remove_device(self, label: str) -> None:
        """Power device ``label`` off and take its controller off the air (its address is
        then free for another device: an impostor)."""
        emulator = self.emulators[label]
        await emulator.stop()
        if emulator in self.radio.cuffs:
            self.radio.cuffs.remove(emulator)  # stopped once: the radio's close leaves it alone
        self.stopped.add(label)
        if isinstance(self.radio, RigRadio):  # a real controller: reset, its dongle released
            await self.radio.release(emulator.device)
            return
        address = emulator.device.random_address
        for controller in list(self.radio.link.controllers):
            if controller.random_address == address:
                self.radio.link.remove_controller(controller)

    async def stop_devices(self) -> None:
        """Stop every running emulator the radio does not stop itself (all but its cuffs)."""
        for label, emulator in self.emulators.items():
            if label not in self.stopped and emulator not in self.radio.cuffs:
                self.stopped.add(label)
                await emulator.stop()

    async def reset_links(self) -> None:
        """The hub's radio falls silent at once (its power is cut): its connection attempt is
        abandoned and every device sees its link end (reason 0x08, a supervision timeout).

        A daemon that is only killed needs none of this: its successor's HCI Reset ends the
        links and the attempt (hil/virtual_radio.py's hub controller). A power cut takes the
        adapter down with the daemon, so the devices notice before the hub is back
        (:meth:`power_cut`). On a rig nothing is done: the relay cuts the real adapter.
        """
        if isinstance(self.radio, RigRadio):
            return
        for controller in self.radio.link.controllers:
            if isinstance(controller, HubController):
                controller.pending_le_connection = None
        for label, emulator in self.emulators.items():
            if label not in self.stopped:
                await emulator.drop_link()

    def cuff(self, label: str) -> EmulatedCuff:
        """The running emulated cuff ``label``."""
        emulator = self.emulators[label]
        if not isinstance(emulator, EmulatedCuff):
            raise HomeError(f"{label} is not a cuff")
        return emulator

    def emulator(self, label: str) -> Any:
        """The running emulator of device ``label``."""
        return self.emulators[label]

    async def measure(self, label: str, reading: Any) -> Any:
        """Device ``label`` takes a new measurement now; the reading as it holds it."""
        device = self.scenario.device(label)
        self.timeline.taken[(label, device.values(reading))] = self.now()
        held = await device.take(self.emulators[label], reading)
        self.measured.setdefault(label, []).append(held)
        return held

    # -- the daemon -----------------------------------------------------------------------

    def agent_command(self) -> list[str]:
        """``homehub run``: the installed console script beside this interpreter, else the
        same entry point through ``python -m agent``."""
        script = Path(sys.executable).with_name("homehub")
        base = [str(script)] if script.is_file() else [sys.executable, "-m", "agent"]
        if self.agent_base is not None:
            base = self.agent_base
        command = [*base, "run", "--config", str(self.config)]
        for wrap in self.agent_wrappers:
            command = wrap(command)
        return command

    async def start_agent(self) -> asyncio.subprocess.Process:
        """Start a new life of ``homehub run``, its log in ``agent-<life>.log``."""
        if self.agent is not None and self.agent.returncode is None:
            raise HomeError("the agent is already running")
        self.lives += 1
        log = (self.run_dir / f"agent-{self.lives}.log").open("ab")
        try:
            self.agent = await asyncio.create_subprocess_exec(
                *self.agent_command(),
                stdin=asyncio.subprocess.DEVNULL,
                stdout=log,
                stderr=log,
                env={**os.environ, "PYTHONUNBUFFERED": "1"},
                start_new_session=True,  # a Ctrl-C aimed at the runner is the runner's
            )
        finally:
            log.close()
        return self.agent

    async def stop_agent(self) -> int:
        """SIGTERM, as systemd stops it; SIGKILL after the unit's stop timeout."""
        agent = self.agent
        if agent is None:
            raise HomeError("no agent to stop")
        if agent.returncode is None:
            agent.send_signal(signal.SIGTERM)
            try:
                async with asyncio.timeout(AGENT_STOP_TIMEOUT_S):
                    await agent.wait()
            except TimeoutError:
                agent.kill()
                await agent.wait()
        return self._exited(agent, "term")

    async def kill_agent(self) -> int:
        """SIGKILL the daemon (a power cut, an OOM kill)."""
        agent = self.agent
        if agent is None:
            raise HomeError("no agent to kill")
        if agent.returncode is None:
            agent.kill()
            await agent.wait()
        return self._exited(agent, "kill")

    async def power_cut(self) -> None:
        """The hub loses power. On the virtual home a power cut is the daemon SIGKILLed
        (:meth:`kill_agent`) and the adapter reset (:meth:`reset_links`: every link ends, the
        connection attempt is dropped); the modem and the broker connection die with the
        process. The hub boots again with :meth:`start_agent`. A real rig cuts the hub's
        supply instead (a power relay), with the same checks after."""
        if self.rig is not None:  # the relay (hil/rig.py cut_power)
            await cut_power(self)
            return
        await self.kill_agent()
        await self.reset_links()

    def _exited(self, agent: asyncio.subprocess.Process, how: str) -> int:
        code = agent.returncode
        assert code is not None
        if len(self.agent_exits) < self.lives:
            self.agent_exits.append((how, code))
        return code

    def agent_log(self, life: int | None = None) -> Path:
        """The log file of daemon life ``life`` (default: the current one)."""
        return self.run_dir / f"agent-{life or self.lives}.log"

    def agent_events(
        self, name: str | None = None, *, life: int | None = None
    ) -> list[dict[str, Any]]:
        """The daemon's log events of every life, or of ``life`` (``name``: only those), in
        order."""
        events: list[dict[str, Any]] = []
        lives = [life] if life is not None else range(1, self.lives + 1)
        for n in lives:
            path = self.run_dir / f"agent-{n}.log"
            with contextlib.suppress(OSError), path.open("rb") as f:
                data = f.read(LOG_READ_MAX_BYTES)
            for line in data.decode("utf-8", "replace").splitlines():
                if not line.startswith("{"):
                    continue
                with contextlib.suppress(json.JSONDecodeError):
                    event = json.loads(line)
                    if isinstance(event, dict) and (name is None or event.get("event") == name):
                        events.append(event)
        return events

    def log_paths(self) -> list[Path]:
        """Every log the run wrote: the daemon's lives, mosquitto's, the platform's."""
        return sorted(p for p in self.run_dir.glob("*.log") if p.is_file())
