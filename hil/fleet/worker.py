"""A worker process: several hubs of the fleet on one asyncio loop, as the coordinator says.

Spawned by :mod:`hil.fleet.scenario` with a :class:`~hil.fleet.plan.WorkerPlan` and one end of
a pipe. Commands (coordinator to worker), each awaited in this order:

- ``connect``: open every hub (:func:`hil.fleet.hub.open_hub`) and run its uplink; each
  connects after its own boot jitter;
- ``publish``: run every hub's publisher (the backlog starts to drain);
- ``stop``: stop the publishers (their own bounded drain), close the uplinks, close the outboxes.

Reports (worker to coordinator), tuples whose first item is the kind:

- ``(FILLED, worker, wall_s, cpu_s)``: every outbox holds its backlog;
- ``(CONNECTED, hub, t)``: a CONNACK of hub ``hub`` at ``t`` (``time.monotonic()``, one clock
  for every process of the machine);
- ``(DRAINED, hub, t)``: the hub's whole backlog was receipted and deleted at ``t``;
- ``(STOPPED, worker, figures)``: this worker's counters and CPU (:func:`_figures`);
- ``(FAILED, worker, text)``: an exception's type and message, then the process exits.

Counts and times only: no reading, patient or key ever crosses the pipe. The agent's own logs
are filtered to errors: two hundred hubs reporting a broker restart would bury everything else.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Sequence
from multiprocessing.connection import Connection
from typing import Any, Final

import structlog

from hil.bench.drain import fill_outbox
from hil.fleet.hub import FleetHub, newest_dictionary, open_hub
from hil.fleet.plan import WorkerPlan

FILLED: Final = "filled"
CONNECTED: Final = "connected"
DRAINED: Final = "drained"
STOPPED: Final = "stopped"
FAILED: Final = "failed"

CONNECT: Final = "connect"
PUBLISH: Final = "publish"
STOP: Final = "stop"

_GONE: Final = "coordinator-gone"


def worker_main(plan: WorkerPlan, conn: Connection) -> None:
    """The process's entry point (spawned): run the plan, report a failure before dying."""
    structlog.configure(wrapper_class=structlog.make_filtering_bound_logger(logging.ERROR))
    try:
        asyncio.run(_serve(plan, conn))
    except BaseException as exc:
        with contextlib.suppress(OSError):
            conn.send((FAILED, plan.index, f"{type(exc).__name__}: {exc}"))
        raise
    finally:
        conn.close()


class _Commands:
    """The coordinator's commands, read from the pipe by the event loop."""

    def __init__(self, conn: Connection) -> None:
        self._conn = conn
        self._queue: asyncio.Queue[str] = asyncio.Queue(maxsize=8)
        self._loop = asyncio.get_running_loop()
        self._loop.add_reader(conn.fileno(), self._read)

    def _read(self) -> None:
        try:
            command = self._conn.recv()
        except EOFError:
            self._loop.remove_reader(self._conn.fileno())
            command = _GONE
        self._queue.put_nowait(str(command))

    async def expect(self, command: str) -> None:
        """Return when ``command`` comes; anything else (or the coordinator gone) raises."""
        got = await self._queue.get()
        if got != command:
            raise RuntimeError(f"expected {command!r} from the coordinator, got {got!r}")

    def close(self) -> None:
        self._loop.remove_reader(self._conn.fileno())


class _Progress:
    """Records deleted per hub; reports a hub once its whole backlog is gone."""

    def __init__(self, conn: Connection, backlog: int) -> None:
        self._conn = conn
        self._backlog = backlog
        self._deleted: dict[int, int] = {}

    def connected(self, hub: int) -> None:
        self._conn.send((CONNECTED, hub, time.monotonic()))

    def deleted(self, hub: int, count: int) -> None:
        before = self._deleted.get(hub, 0)
        self._deleted[hub] = before + count
        if before < self._backlog <= before + count:
            self._conn.send((DRAINED, hub, time.monotonic()))


async def _serve(plan: WorkerPlan, conn: Connection) -> None:
    commands = _Commands(conn)
    try:
        started, cpu = time.perf_counter(), time.process_time()
        for spec in plan.hubs:
            fill_outbox(spec.outbox, spec.data_key, spec.key, 0, plan.options.backlog, spec.hub_id)
        conn.send((FILLED, plan.index, time.perf_counter() - started, time.process_time() - cpu))
        await commands.expect(CONNECT)
        cpu = time.process_time()
        hubs = await _run_hubs(plan, conn, commands)
        conn.send((STOPPED, plan.index, _figures(hubs, time.process_time() - cpu)))
    finally:
        commands.close()


async def _run_hubs(plan: WorkerPlan, conn: Connection, commands: _Commands) -> list[FleetHub]:
    progress = _Progress(conn, plan.options.backlog)
    dictionary = newest_dictionary()
    async with contextlib.AsyncExitStack() as stack:
        hubs = [
            await stack.enter_async_context(
                open_hub(spec, plan, dictionary, progress.connected, progress.deleted)
            )
            for spec in plan.hubs
        ]
        async with asyncio.TaskGroup() as tg:
            for hub in hubs:
                tg.create_task(hub.uplink.run(), name=f"fleet.uplink[{hub.spec.hub_id}]")
            await commands.expect(PUBLISH)
            publishers = [
                tg.create_task(hub.publisher.run(), name=f"fleet.publisher[{hub.spec.hub_id}]")
                for hub in hubs
            ]
            await commands.expect(STOP)
            for hub in hubs:
                hub.publisher.stop()
            await asyncio.gather(*publishers)
            for hub in hubs:
                await hub.uplink.close()
    return hubs


def _figures(hubs: Sequence[FleetHub], cpu_s: float) -> dict[str, Any]:
    """This worker's counters, summed over its hubs, and its CPU since ``connect``."""
    return {
        "hubs": len(hubs),
        "cpu_s": cpu_s,
        "connects": sum(h.uplink.stats.connects for h in hubs),
        "connect_failures": sum(h.uplink.stats.connect_failures for h in hubs),
        "envelopes": sum(h.publisher.stats.envelopes for h in hubs),
        "batches": sum(h.publisher.stats.batches for h in hubs),
        "receipts_accepted": sum(h.publisher.stats.receipts_accepted for h in hubs),
        "receipts_rejected": sum(h.publisher.stats.receipts_rejected for h in hubs),
        "receipt_timeouts": sum(h.publisher.stats.receipt_timeouts for h in hubs),
        "bytes_sent": sum(h.publisher.stats.bytes_sent for h in hubs),
    }
