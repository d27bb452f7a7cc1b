"""The fleet scenario's phases, run by the coordinator process.

1. **Identities and outboxes**: a dev PKI, one client certificate per hub, a broker sized for
   the fleet (hil/fleet/broker_setup.py), the platform subscribed; the worker processes
   (spawned) fill every hub's outbox with its backlog.
2. **Boot**: every hub starts at once and connects after its own boot jitter
   (``first_connect_jitter_s``); each hub's connect time is recorded.
3. **Drain, part of it**: every publisher runs; once the platform holds ``restart_at`` of all
   readings, the broker is stopped (gracefully), stays down ``down_s``, and starts again on
   the same port: with its persistence (sessions, subscriptions, queued messages kept) or
   without (everything forgotten), :class:`~hil.fleet.plan.RestartMode`.
4. **Reconnection**: each hub's first connect after the stop is recorded; the spread of those
   times after the broker was back is the figure that shows full jitter at work.
5. **Every backlog**: the run waits until every hub's outbox is empty (each reading deleted on
   the platform's receipt) and checks the platform handed each reading on exactly once.

Every wait is on an event (a worker's report, the receiver's count) under a deadline; the
only pause is the outage itself (``down_s``), which is the fault being injected.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import math
import multiprocessing
import os
import platform
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from multiprocessing.connection import Connection
from multiprocessing.process import BaseProcess
from pathlib import Path
from typing import Any, Final

from hil.bench.uplink import _process_cpu_s as process_cpu_s
from hil.broker import Broker
from hil.fleet.broker_setup import ensure_open_files, fleet_broker, open_files_needed
from hil.fleet.figures import spread
from hil.fleet.plan import FleetOptions, HubSpec, WorkerPlan, hub_id, make_hubs, share_out
from hil.fleet.platform_side import FleetPlatform
from hil.fleet.worker import (
    CONNECT,
    CONNECTED,
    DRAINED,
    FAILED,
    FILLED,
    PUBLISH,
    STOP,
    STOPPED,
    worker_main,
)
from hil.pki import DevPki, make_dev_pki

PHASE_TIMEOUT_S: Final = 300.0
"""Longest any one phase may take beyond what its parameters account for: a hub whose backoff
escalated several times may wait a minute or two (the cap is 120 s) before it tries again."""

FILL_S_PER_READING: Final = 0.01
"""A generous bound on filling one reading into an outbox (~0.5 ms measured here), for the
fill phase's deadline."""

SPAWN_S: Final = 60.0
"""Starting a worker's interpreter and importing the agent, at the worst on a loaded machine."""

JOIN_TIMEOUT_S: Final = 30.0


@dataclass(frozen=True, slots=True)
class FleetRun:
    """A run's figures (:func:`run_fleet`) and the connection offsets behind them, for the plot:
    seconds after the boot began and after the broker was back."""

    figures: dict[str, Any]
    boot_offsets_s: tuple[float, ...]
    reconnect_offsets_s: tuple[float, ...]


def run_fleet(
    options: FleetOptions, directory: Path, progress: Callable[[str], None] = lambda _: None
) -> FleetRun:
    """Run the scenario (see the module doc) with its files in ``directory``."""
    started = time.perf_counter()
    ensure_open_files(open_files_needed(options.hubs))
    pki = make_dev_pki(directory / "pki", hub_id(0))
    specs = make_hubs(pki, directory / "hubs", options.hubs)
    progress(f"{options.hubs} hub identities issued; starting the broker")
    with fleet_broker(pki, directory / "broker", options) as broker:
        plans = share_out(specs, pki, broker.port, options)
        run = asyncio.run(_run(options, pki, broker, specs, plans, directory, progress))
    run.figures["wall_s"] = round(time.perf_counter() - started, 3)
    return run


class _Workers:
    """The worker processes (spawned) and what they reported, read by the event loop."""

    def __init__(self, plans: list[WorkerPlan]) -> None:
        context = multiprocessing.get_context("spawn")
        self._conns: list[Connection] = []
        self._procs: list[BaseProcess] = []
        for plan in plans:
            ours, theirs = context.Pipe()
            self._conns.append(ours)
            self._procs.append(
                context.Process(
                    target=worker_main, args=(plan, theirs), name=f"fleet-worker-{plan.index}"
                )
            )
        self.connects: dict[int, list[float]] = collections.defaultdict(list)
        self.drained: dict[int, float] = {}
        self.filled: dict[int, tuple[float, float]] = {}
        self.stopped: dict[int, dict[str, Any]] = {}
        self.failure: str | None = None
        self._change = asyncio.Event()
        self._loop: asyncio.AbstractEventLoop | None = None

    def start(self) -> None:
        self._loop = asyncio.get_running_loop()
        for n, (proc, conn) in enumerate(zip(self._procs, self._conns, strict=True)):
            proc.start()
            self._loop.add_reader(conn.fileno(), self._read, n)

    def _read(self, n: int) -> None:
        conn = self._conns[n]
        try:
            message = conn.recv()
        except EOFError:
            assert self._loop is not None
            self._loop.remove_reader(conn.fileno())
            if n not in self.stopped and self.failure is None:
                self.failure = f"worker {n} ended before it stopped"
            self._changed()
            return
        kind, who, value, *rest = message
        if kind == CONNECTED:
            self.connects[who].append(value)
        elif kind == DRAINED:
            self.drained[who] = value
        elif kind == FILLED:
            self.filled[who] = (value, rest[0])
        elif kind == STOPPED:
            self.stopped[who] = value
        elif kind == FAILED:
            self.failure = f"worker {who}: {value}"
        self._changed()

    def _changed(self) -> None:
        event, self._change = self._change, asyncio.Event()
        event.set()

    def send_all(self, command: str) -> None:
        for conn in self._conns:
            conn.send(command)

    async def until(self, predicate: Callable[[], bool], timeout_s: float, what: str) -> None:
        """Return once ``predicate()`` holds; raise if a worker failed or ``timeout_s`` passed."""
        try:
            async with asyncio.timeout(timeout_s):
                while not predicate():
                    if self.failure is not None:
                        raise RuntimeError(f"fleet: {self.failure}")
                    await self._change.wait()
        except TimeoutError:
            raise TimeoutError(f"fleet: not {what} within {timeout_s:.0f} s") from None

    def close(self) -> None:
        """Close the pipes first: a worker still waiting for a command then sees the end of
        its pipe and exits; join each (terminated if it has not ended within the timeout)."""
        for conn in self._conns:
            if self._loop is not None:
                with contextlib.suppress(ValueError, OSError):
                    self._loop.remove_reader(conn.fileno())
            conn.close()
        for proc in self._procs:
            if proc.pid is not None:
                proc.join(JOIN_TIMEOUT_S)
                if proc.is_alive():
                    proc.terminate()
                    proc.join(JOIN_TIMEOUT_S)


async def _run(
    options: FleetOptions,
    pki: DevPki,
    broker: Broker,
    specs: list[HubSpec],
    plans: list[WorkerPlan],
    directory: Path,
    progress: Callable[[str], None],
) -> FleetRun:
    workers = _Workers(plans)
    platform_side = FleetPlatform(pki, broker.port, specs, directory / "platform")
    try:
        workers.start()
        async with asyncio.TaskGroup() as tg:
            await platform_side.receiver.start()
            consumer = tg.create_task(platform_side.consume(), name="fleet.platform.consume")
            try:
                return await _phases(options, broker, specs, workers, platform_side, progress)
            finally:
                consumer.cancel()
                await platform_side.receiver.stop()
    finally:
        workers.close()


async def _phases(
    options: FleetOptions,
    broker: Broker,
    specs: list[HubSpec],
    workers: _Workers,
    platform_side: FleetPlatform,
    progress: Callable[[str], None],
) -> FleetRun:
    hubs, total = options.hubs, options.readings
    everyone = range(hubs)
    fill_deadline = SPAWN_S + FILL_S_PER_READING * options.per_process * options.backlog
    await workers.until(lambda: len(workers.filled) == options.processes, fill_deadline, "filled")
    async with asyncio.timeout(PHASE_TIMEOUT_S):
        await platform_side.receiver.subscribed.wait()
    progress(f"{total} readings in {hubs} outboxes; the fleet boots")

    platform_cpu, broker_cpu = time.process_time(), process_cpu_s(broker.pid)
    booted = time.monotonic()
    workers.send_all(CONNECT)
    await workers.until(
        lambda: len(workers.connects) == hubs,
        options.boot_jitter_s + PHASE_TIMEOUT_S,
        "every hub connected",
    )
    progress(f"every hub connected {time.monotonic() - booted:.1f} s after the boot; draining")

    publishing = time.monotonic()
    workers.send_all(PUBLISH)
    async with asyncio.timeout(PHASE_TIMEOUT_S):
        await platform_side.until_handed_on(math.ceil(options.restart_at * total))
    held_at_restart = platform_side.handed_on

    stopped = time.monotonic()
    broker_cpu = process_cpu_s(broker.pid) - broker_cpu
    await broker.astop()
    if options.down_s > 0:
        await asyncio.sleep(options.down_s)  # the outage itself: the fault, not a synchronisation
    await broker.astart()
    back = time.monotonic()
    progress(
        f"broker restarted ({options.restart.value}) with {held_at_restart}/{total} readings"
        f" at the platform, down {back - stopped:.2f} s"
    )

    def came_back(hub: int) -> bool:
        return any(t > stopped for t in workers.connects[hub])

    await workers.until(
        lambda: all(came_back(n) for n in everyone), PHASE_TIMEOUT_S, "every hub reconnected"
    )
    reconnects = [min(t for t in workers.connects[n] if t > stopped) for n in everyone]
    progress(f"every hub reconnected {max(reconnects) - back:.2f} s after the broker was back")
    await workers.until(lambda: len(workers.drained) == hubs, PHASE_TIMEOUT_S, "every hub drained")
    all_arrived = max(workers.drained.values())
    with contextlib.suppress(TimeoutError):  # a reading missing shows in the figures
        async with asyncio.timeout(PHASE_TIMEOUT_S / 10):
            await platform_side.until_handed_on(total)
    broker_cpu += process_cpu_s(broker.pid)
    workers.send_all(STOP)
    await workers.until(
        lambda: len(workers.stopped) == options.processes, PHASE_TIMEOUT_S, "stopped"
    )
    platform_cpu = time.process_time() - platform_cpu

    boot = [min(workers.connects[n]) for n in everyone]
    counters = collections.Counter[str]()
    for worker in workers.stopped.values():
        counters.update({k: v for k, v in worker.items() if k != "cpu_s"})
    worker_cpu = [workers.stopped[n]["cpu_s"] for n in sorted(workers.stopped)]
    options_dict = asdict(options)
    options_dict["restart"] = options.restart.value
    figures: dict[str, Any] = {
        "scenario": "fleet",
        "hubs": hubs,
        "processes": options.processes,
        "per_process": options.per_process,
        "readings_per_hub": options.backlog,
        "readings": total,
        "options": options_dict,
        "machine": {
            "cpus": os.cpu_count(),
            "system": f"{platform.system()} {platform.release()}",
            "python": platform.python_version(),
        },
        "fill_s": round(max(wall for wall, _ in workers.filled.values()), 3),
        "boot": spread(boot, booted).as_dict(),
        "restart": {
            "mode": options.restart.value,
            "down_s": round(back - stopped, 3),
            "held_at_restart": held_at_restart,
            "reconnects": spread(reconnects, back).as_dict(),
            "reconnects_after_stop_last_s": round(max(reconnects) - stopped, 3),
            "failed_attempts": counters["connect_failures"],
        },
        "drain_s": round(all_arrived - publishing, 3),
        "all_arrived_after_broker_back_s": round(all_arrived - back, 3),
        "platform": platform_side.delivery(specs, options.backlog),
        "hub_counters": dict(sorted(counters.items())),
        "cpu_s": {
            "workers": round(sum(worker_cpu), 3),
            "per_worker": [round(c, 3) for c in worker_cpu],
            "per_hub_ms": round(sum(worker_cpu) / hubs * 1000, 1),
            "platform": round(platform_cpu, 3),
            "broker": round(broker_cpu, 3),
        },
    }
    return FleetRun(
        figures,
        tuple(round(t - booted, 4) for t in sorted(boot)),
        tuple(round(t - back, 4) for t in sorted(reconnects)),
    )
