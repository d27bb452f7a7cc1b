"""The event loop stays responsive while the disk is slow (issue 7): the daemon's own Hub
(``collect=False``) with a real TLS mosquitto, its storage thread and encrypted outbox on disk,
every COMMIT made 200 ms slow (an SD card's fsync). A probe task sleeps 5 ms again and again on
the loop and records how late it wakes up: its p99 stays under 20 ms because the commits run
on the storage thread. The control shows the probe can fail: the same 200 ms per commit spent
on the loop's thread instead makes its p99 far exceed 20 ms.

Mock, at a named edge: :class:`SlowCommits` (the disk: the outbox's sqlite3 connection, each
COMMIT delayed by 200 ms).
"""

from __future__ import annotations

import asyncio
import sqlite3
import threading
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Final, Literal

from agent.daemon import Arrival, Fate, Hub
from agent.ingest_batcher import Outcome, Status
from agent.outbox import Outbox
from hil.broker import Broker
from hil.crash_child import DEVICE, DEVICE_CONFIG, ChildSettings, child_config, raw_measurement
from hil.pki import DevPki
from tests import phi_canaries

COMMIT_DELAY_S: Final = 0.2
"""The injected fsync: what one commit can take on an SD card."""

PROBE_INTERVAL_S: Final = 0.005
P99_BOUND_S: Final = 0.020
MIN_SLOW_COMMITS: Final = 3
BURSTS: Final = 4
BURST_SIZE: Final = 5
TIMEOUT_S: Final = 20.0

Where = Literal["storage_thread", "event_loop"]


class SlowCommits:
    """MOCK at the storage edge (a slow disk): wraps the outbox's real ``sqlite3.Connection``
    and delays every COMMIT by :data:`COMMIT_DELAY_S` before it reaches the real connection.

    ``where="storage_thread"``: the delay is spent on the calling thread, the storage thread,
    as a slow fsync is. ``where="event_loop"`` (the control): the same delay is spent on the
    event loop's thread (:func:`_fsync_on_the_loop`, a blocking sleep scheduled there), and
    the commit waits for it, as if the commit ran on the loop.
    """

    def __init__(
        self, real: sqlite3.Connection, where: Where, loop: asyncio.AbstractEventLoop
    ) -> None:
        self.real = real
        self.where = where
        self.loop = loop
        self.delayed = 0

    def execute(self, sql: str, *args: Any) -> sqlite3.Cursor:
        if sql.lstrip().upper().startswith("COMMIT"):
            self._slow_fsync()
            self.delayed += 1
        return self.real.execute(sql, *args)

    def _slow_fsync(self) -> None:
        if self.where == "storage_thread":
            time.sleep(COMMIT_DELAY_S)
            return
        done = threading.Event()
        self.loop.call_soon_threadsafe(_fsync_on_the_loop, done)
        done.wait()

    def __getattr__(self, name: str) -> Any:
        return getattr(self.real, name)


def _fsync_on_the_loop(done: threading.Event) -> None:
    """The control's delay: a blocking 200 ms on the event loop's thread."""
    time.sleep(COMMIT_DELAY_S)
    done.set()


def _slow_down(box: Outbox, where: Where, loop: asyncio.AbstractEventLoop) -> SlowCommits:
    """On the storage thread: every COMMIT of ``box`` becomes slow."""
    real = box._conn
    assert isinstance(real, sqlite3.Connection)
    slow = SlowCommits(real, where, loop)
    box._conn = slow  # type: ignore[assignment]
    return slow


def _heal(box: Outbox, slow: SlowCommits) -> None:
    box._conn = slow.real


class Observer:
    """The hub's observer: counts what was stored; wakes waiters on every change."""

    def __init__(self) -> None:
        self.fates: list[Fate] = []
        self._change = asyncio.Event()

    def stored(self, _arrival: Arrival, fate: Fate) -> None:
        self.fates.append(fate)
        self._changed()

    def delivered(self, _seqs: Sequence[int]) -> None:
        self._changed()

    def _changed(self) -> None:
        event, self._change = self._change, asyncio.Event()
        event.set()

    async def until_settled(self, count: int) -> None:
        while len(self.fates) < count:
            await self._change.wait()


class Probe:
    """A task on the event loop: sleeps :data:`PROBE_INTERVAL_S` again and again and records
    how late each wake-up is (a measurement, not a synchronisation)."""

    def __init__(self) -> None:
        self.lateness: list[float] = []

    async def run(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            asked = loop.time()
            await asyncio.sleep(PROBE_INTERVAL_S)
            self.lateness.append(loop.time() - asked - PROBE_INTERVAL_S)

    def p99(self) -> float:
        ordered = sorted(self.lateness)
        return ordered[min(len(ordered) - 1, int(0.99 * len(ordered)))]


def _config(tmp_path: Path, pki: DevPki, broker: Broker) -> Any:
    state = tmp_path / "state"
    keys = tmp_path / "keys"
    state.mkdir(mode=0o700)
    keys.mkdir(mode=0o700)
    return child_config(
        ChildSettings(
            db=str(state / "outbox.db"),
            data_key=str(keys / "data.key"),
            signing_key=str(pki.hub_key),
            hub_id=pki.hub_id,
            patient_id=phi_canaries.PATIENT_ID,
            broker_port=broker.port,
            ca_file=str(pki.ca_cert),
            cert_file=str(pki.hub_cert),
            key_file=str(pki.hub_key),
            start=0,
            count=0,
            seed=0,
        )
    )


async def _run(tmp_path: Path, pki: DevPki, broker: Broker, where: Where) -> tuple[Probe, int]:
    """Feed BURSTS bursts of readings to a running Hub with slow commits; the probe's record
    and the number of commits that were delayed."""
    observer = Observer()
    hub = Hub(_config(tmp_path, pki, broker), observer=observer, collect=False)
    stop = asyncio.Event()
    probe = Probe()
    loop = asyncio.get_running_loop()
    async with asyncio.TaskGroup() as tg:
        running = tg.create_task(hub.run(stop), name="test.hub")
        try:
            async with asyncio.timeout(TIMEOUT_S):
                await hub.ready.wait()
            assert hub._storage is not None
            storage, box = hub._storage
            slow = await storage.call(_slow_down, box, where, loop)
            probing = tg.create_task(probe.run(), name="test.probe")
            async with asyncio.timeout(TIMEOUT_S):
                for burst in range(BURSTS):
                    for i in range(burst * BURST_SIZE, (burst + 1) * BURST_SIZE):
                        await hub.receive(raw_measurement(i), DEVICE, DEVICE_CONFIG)
                    # Each burst is its own ingest transaction: wait for its commit.
                    await observer.until_settled((burst + 1) * BURST_SIZE)
            probing.cancel()
            delayed = slow.delayed
            await storage.call(_heal, box, slow)
        finally:
            stop.set()
        async with asyncio.timeout(TIMEOUT_S):
            await running
    statuses = [f.status for f in observer.fates if isinstance(f, Outcome)]
    assert [Status.STORED] * BURSTS * BURST_SIZE == statuses
    assert BURSTS * BURST_SIZE == hub.stored
    return probe, delayed


async def test_loop_responsive_while_commits_are_slow(
    tmp_path: Path, dev_pki: DevPki, broker: Broker
) -> None:
    """Every COMMIT takes 200 ms more on the storage thread: every reading is stored, at
    least 3 commits were delayed, and the loop's probe wakes up late by under 20 ms at p99."""
    probe, delayed = await _run(tmp_path, dev_pki, broker, "storage_thread")
    assert delayed >= MIN_SLOW_COMMITS
    assert len(probe.lateness) >= 50
    p99 = probe.p99()
    print(f"storage thread: {delayed} slow commits, probe p99 {p99 * 1000:.1f} ms")
    assert p99 < P99_BOUND_S, f"probe p99 {p99 * 1000:.1f} ms with {delayed} slow commits"


async def test_control_the_same_delay_on_the_loop_fails_the_probe(
    tmp_path: Path, dev_pki: DevPki, broker: Broker
) -> None:
    """The control: the same 200 ms per commit spent on the event loop's thread makes the
    probe's p99 exceed 20 ms, so the test above can fail."""
    probe, delayed = await _run(tmp_path, dev_pki, broker, "event_loop")
    assert delayed >= MIN_SLOW_COMMITS
    p99 = probe.p99()
    print(f"event loop: {delayed} slow commits, probe p99 {p99 * 1000:.1f} ms")
    assert p99 > P99_BOUND_S
    assert max(probe.lateness) >= COMMIT_DELAY_S * 0.9
