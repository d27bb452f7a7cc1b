"""The service's Done-when (issue 11), end to end: ``homehub run`` as a real process under a
real notify socket, a real broker outage, a blocked event loop, and SIGTERM.

- the daemon is its own process (``python -m tests.loop_blocker BLOCK_S run --config``: the
  product's ``agent.cli.main`` after one injected fault, below), with ``NOTIFY_SOCKET`` a
  datagram socket this test binds, as systemd does, and ``WATCHDOG_USEC`` 1 s (WATCHDOG=1
  every 0.5 s, agent/sd_notify.py);
- readings come the real way: an emulated cuff on a Bumble virtual controller, collected by
  the daemon's BLE collector, stored, published over TLS to mosquitto and receipted by the
  reference platform (hil/receiver.py);
- READY=1 arrives; the broker is stopped: WATCHDOG=1 keeps coming (the outage is the uplink's
  business, never a reason to be restarted) and STATUS= says offline, while readings taken
  meanwhile are stored;
- the injected fault: SIGUSR1 makes the daemon's main thread (its event loop) sleep
  :data:`BLOCK_S`: WATCHDOG=1 stops for as long, and comes back after;
- the broker is back: the readings of the outage arrive; SIGTERM: STOPPING=1, exit status 0,
  and nothing lost: every reading the cuff saw confirmed is at the platform or still pending
  in the outbox (read after the exit), none missing, none twice.
"""

from __future__ import annotations

import asyncio
import os
import signal
import socket
import sqlite3
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Final

import pytest

from hil.broker import Broker
from hil.emulators.cuff import BpReading
from hil.emulators.encoding import DateTime
from hil.pki import DevPki
from hil.receiver import Receiver
from hil.virtual_home import expected, summarize
from hil.virtual_radio import VirtualRadio
from tests import phi_canaries
from tests.virtual_home_fixtures import canary_agent_config, collect

pytestmark = [pytest.mark.slow, pytest.mark.timeout(90)]

T: Final = 30.0
"""Bound of each step (each takes well under a second to a few seconds here)."""
WATCHDOG_USEC: Final = 1_000_000
PERIOD_S: Final = WATCHDOG_USEC / 2e6
BLOCK_S: Final = 2.0
"""How long the injected fault blocks the loop: four watchdog periods."""
SLACK_S: Final = 0.15
"""A datagram sent just before the signal may be read just after it."""
OUTAGE_WATCHDOGS: Final = 4

READINGS: Final = (
    BpReading(128, 82, 97, time_stamp=DateTime(2026, 11, 20, 7, 45, 10), pulse_rate=71),
    BpReading(141, 88, 106, time_stamp=DateTime(2026, 11, 21, 19, 2, 0), pulse_rate=77),
    BpReading(119, 76, 90, time_stamp=DateTime(2026, 11, 22, 8, 3, 5), pulse_rate=64),
)
DURING_OUTAGE: Final = (
    BpReading(131, 84, 99, time_stamp=DateTime(2026, 11, 22, 19, 40, 0), pulse_rate=70),
    BpReading(126, 80, 95, time_stamp=DateTime(2026, 11, 22, 21, 15, 30), pulse_rate=66),
)
ALL: Final = len(READINGS) + len(DURING_OUTAGE)


@dataclass(frozen=True, slots=True)
class Note:
    """One datagram from the daemon: when it was read (loop time) and its fields."""

    at: float
    fields: dict[str, str]


class NotifySocket:
    """The socket systemd would hold: every datagram recorded with its arrival time."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.sock.bind(str(path))
        self.sock.setblocking(False)
        self.notes: list[Note] = []
        self._change = asyncio.Event()

    async def read(self) -> None:
        """Record datagrams until cancelled."""
        loop = asyncio.get_running_loop()
        while True:
            data = await loop.sock_recv(self.sock, 4096)
            fields = dict(line.split("=", 1) for line in data.decode().splitlines())
            self.notes.append(Note(loop.time(), fields))
            event, self._change = self._change, asyncio.Event()
            event.set()

    async def first(self, holds: Callable[[dict[str, str]], bool], after: int = 0) -> int:
        """The index of the first note from ``after`` on for which ``holds``."""
        index = after
        while True:
            while index < len(self.notes):
                if holds(self.notes[index].fields):
                    return index
                index += 1
            await self._change.wait()

    async def watchdogs(self, count: int, after: int) -> int:
        """The index of the ``count``-th WATCHDOG=1 from ``after`` on."""
        index = after - 1
        for _ in range(count):
            index = await self.first(_watchdog, index + 1)
        return index


def _watchdog(fields: dict[str, str]) -> bool:
    return fields.get("WATCHDOG") == "1"


def _pending_seqs(db: Path) -> set[int]:
    """Seqs still pending in the outbox (read-only; the daemon has exited)."""
    conn = sqlite3.connect(f"{db.resolve().as_uri()}?mode=ro", uri=True)
    try:
        rows = conn.execute("SELECT seq FROM records WHERE state = 'pending'").fetchall()
    finally:
        conn.close()
    return {int(seq) for (seq,) in rows}


async def test_homehub_run_under_a_notify_socket_through_outage_stall_and_stop(
    tmp_path: Path, dev_pki: DevPki, persistent_broker: Broker
) -> None:
    broker = persistent_broker
    notify = NotifySocket(tmp_path / "notify.sock")
    log_path = phi_canaries.log_dir() / "service-notify.agent.log"
    reading = asyncio.create_task(notify.read(), name="test.notify")
    async with Receiver.for_dev_pki(dev_pki, broker.port) as receiver, VirtualRadio() as radio:
        async with asyncio.timeout(T):
            await receiver.subscribed.wait()
        cuff = await radio.add_cuff(READINGS, address=phi_canaries.DEVICE_ADDRESS)
        config = canary_agent_config(tmp_path, radio, dev_pki, broker.port)
        text = config.read_text()
        assert 1 == text.count("backoff_max_s = 5.0")
        config.write_text(text.replace("backoff_max_s = 5.0", "backoff_max_s = 1.0"))
        with log_path.open("ab") as log_file:
            proc = await asyncio.create_subprocess_exec(
                sys.executable,
                "-m",
                "tests.loop_blocker",
                str(BLOCK_S),
                "run",
                "--config",
                str(config),
                stdin=asyncio.subprocess.DEVNULL,
                stdout=log_file,
                stderr=log_file,
                env={
                    **os.environ,
                    "NOTIFY_SOCKET": str(notify.path),
                    "WATCHDOG_USEC": str(WATCHDOG_USEC),
                    "PYTHONUNBUFFERED": "1",
                },
            )
        try:
            # READY=1 once the pipeline is up; the readings arrive, receipted.
            async with asyncio.timeout(T):
                ready = notify.notes[await notify.first(lambda f: f.get("READY") == "1")]
            assert ready.fields["STATUS"].startswith("1 device, ")
            first = await collect(receiver, len(READINGS))
            async with asyncio.timeout(T):
                await notify.watchdogs(2, after=0)
                await cuff.wait_for_confirmations(len(READINGS))

            # The outage: fed all along, and saying so.
            stopped_from = len(notify.notes)
            await broker.astop()
            async with asyncio.timeout(T):
                offline = await notify.first(
                    lambda f: f.get("STATUS", "").endswith("offline"), after=stopped_from
                )
                for later in DURING_OUTAGE:
                    await cuff.add_reading(later)
                await cuff.wait_for_confirmations(ALL)  # stored while offline
                through = await notify.watchdogs(OUTAGE_WATCHDOGS, after=offline)
            statuses = [
                n.fields["STATUS"] for n in notify.notes[offline:through] if "STATUS" in n.fields
            ]
            assert statuses
            assert all(s.endswith("offline") for s in statuses), statuses

            # The injected stall: no WATCHDOG=1 while the loop is blocked, then again.
            loop = asyncio.get_running_loop()
            before = len(notify.notes)
            blocked_at = loop.time()
            proc.send_signal(signal.SIGUSR1)
            async with asyncio.timeout(T):
                again = await notify.watchdogs(3, after=before)
            fed = [
                n.at - blocked_at
                for n in notify.notes[before : again + 1]
                if _watchdog(n.fields) and n.at - blocked_at > SLACK_S
            ]
            assert fed[0] >= BLOCK_S - SLACK_S, fed  # withheld for as long as it was blocked
            assert fed[-1] - fed[0] < 3 * PERIOD_S + 1.0, fed  # and fed again at its pace

            # The broker back: what was taken during the outage arrives.
            await broker.astart()
            later_got = await collect(receiver, len(DURING_OUTAGE))
            async with asyncio.timeout(T):
                await notify.first(
                    lambda f: f.get("STATUS", "").endswith("online"), after=len(notify.notes)
                )

            # SIGTERM: STOPPING=1, exit 0.
            stopping_from = len(notify.notes)
            proc.send_signal(signal.SIGTERM)
            async with asyncio.timeout(T):
                await notify.first(lambda f: f.get("STOPPING") == "1", after=stopping_from)
                assert 0 == await proc.wait()
        finally:
            if proc.returncode is None:
                proc.kill()
                await proc.wait()
            reading.cancel()
            notify.sock.close()

    # Nothing lost, nothing twice: the cuff's five readings are each at the platform once,
    # exact; whatever the platform did not receipt before the stop is still pending.
    got = [*first, *later_got]
    assert len({r.id for r in got}) == len(got) == ALL
    wanted = sorted((expected(r) for r in (*READINGS, *DURING_OUTAGE)), key=lambda s: s.effective)
    assert wanted == sorted((summarize(r) for r in got), key=lambda s: s.effective)
    delivered = {r.seq for r in got}
    pending = _pending_seqs(tmp_path / "state" / "outbox.db")
    assert set(range(1, ALL + 1)) == delivered | pending
    assert pending <= delivered  # a pending record awaits its receipt, it was not lost
    assert 0 == receiver.stats.conflicting_duplicates
    assert 0 == receiver.stats.rejected_total
