"""The process a crash test kills: the daemon's own pipeline, fed without a radio.

One *life* of the child runs :class:`agent.daemon.Hub` itself (``collect=False``: no BLE
collector), with a configuration pointing at the test's outbox, keys and TLS mosquitto:
the same storage thread, group commit into the encrypted outbox, publisher and uplink as a
hub in the field. The child only feeds it and listens:

feeding
    Synthetic but valid blood-pressure measurements (0x2A35 bytes, each with its own device
    time) are handed to :meth:`agent.daemon.Hub.receive`, exactly as a BLE session hands
    them on, in bursts of random size (so commits group them differently every time).
listening
    The hub's observer reports ``stored <index> <seq> <idhash>`` (or ``duplicate …``) only
    once the reading's transaction committed, ``delivered <seq>`` once its PUBACK'd record
    was deleted, and ``drained`` once when everything fed was stored and nothing is pending.

``<idhash>`` is the first 16 hex digits of SHA-256 over the Observation identifier (what the
receiver sees as ``id``), computed with :func:`agent.ingest.prepare` on the same inputs: the
identifier names the patient and must not reach any output (tests scan every log for it).

Reports go to a :class:`multiprocessing.connection.Connection` (one message per report,
written atomically) when run by a test through a ``forkserver`` context, whose server has
imported this module once, so a life starts in milliseconds instead of the half second an
interpreter with paho and cryptography takes; or to stdout, one line each, when run as
``python -m hil.crash_child`` (see ``--help``). Either way it is its own process, killed
with SIGKILL by the test at moments the test draws.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import hashlib
import json
import random
import signal
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Final

from agent import config, logs
from agent.ble.uuids import BLOOD_PRESSURE_MEASUREMENT
from agent.config import DeviceConfig
from agent.daemon import Arrival, Fate, Hub, Rejected, Shed
from agent.ingest import prepare
from agent.measurement import RawMeasurement
from agent.normalize.device import DeviceFacts
from agent.normalize.phd import Context
from drivers.blood_pressure import BloodPressureMeasurement, PressureUnit
from drivers.gatt_time import DateTime
from drivers.ieee11073 import MedFloat16

MAX_BURST: Final = 8
"""Largest burst of readings handed to the hub at once: small, so kills land between many
commits."""
RADIO_GAP_S: Final = 0.0075
"""Pause between bursts while streaming until SIGTERM, until the life's first delivery: the
shortest BLE connection interval (Core 5.3, Vol 6, Part B, 4.5.1). The pace of a real radio,
not a synchronisation: unpaced, a life handed over ~1,000 readings before its first delivery,
and the test's reference receiver spent most of the campaign verifying them. From the first
delivery on, bursts follow back to back as a meter's download streams, so the SIGTERM the
test sends then lands mid-stream, with readings queued."""

BASE_DEVICE_TIME: Final = datetime(2026, 1, 1, 6, 0, 0)  # noqa: DTZ001 - device local time
"""Reading ``i`` was taken ``i`` minutes after this (device local time: no zone)."""

DEVICE_CONFIG: Final = DeviceConfig(
    kind="blood_pressure", address="F0:00:00:00:C8:01", label="crash-cuff"
)
"""The configured device the readings are attributed to (no radio is used)."""

DEVICE: Final = DeviceFacts(
    address="F0:00:00:00:C8:01",
    system_id="0110000000FEFFC8",
    manufacturer="Crash Test Medical",
    model="BP-CRASH",
    serial="CR-0001",
    firmware="1.0.0",
)


@dataclass(frozen=True, slots=True)
class ChildSettings:
    """Everything one life needs; plain values so it pickles to the forkserver."""

    db: str
    data_key: str
    signing_key: str
    hub_id: str
    patient_id: str
    broker_port: int
    ca_file: str
    cert_file: str
    key_file: str
    start: int
    """Index of the first reading this life ingests."""
    count: int
    """How many readings it ingests (0: only deliver what is pending)."""
    seed: int
    log_path: str | None = None
    """Where the child's structured log goes (warnings and above); stderr when None."""
    sigterm: bool = False
    """A graceful life: the readings are the hub's source (stopped like a BLE collector),
    each reported ``received <index>`` once handed on, and SIGTERM stops the hub as
    ``homehub run`` does; the process then exits 0."""


def measurement(index: int) -> bytes:
    """The 0x2A35 value of synthetic reading ``index``: valid, deterministic, unique time."""
    taken = BASE_DEVICE_TIME + timedelta(minutes=index)
    m = BloodPressureMeasurement.create(
        unit=PressureUnit.MMHG,
        systolic=MedFloat16.from_decimal(110 + index % 40),
        diastolic=MedFloat16.from_decimal(70 + index % 20),
        mean_arterial_pressure=MedFloat16.from_decimal(85 + index % 25),
        time_stamp=DateTime(
            taken.year, taken.month, taken.day, taken.hour, taken.minute, taken.second
        ),
        pulse_rate=MedFloat16.from_decimal(60 + index % 30),
    )
    return bytes(m)


def id_hash(identifier: str) -> str:
    """What the child reports instead of an identifier (which names the patient)."""
    return hashlib.sha256(identifier.encode()).hexdigest()[:16]


def child_config(s: ChildSettings) -> config.Config:
    """The hub configuration of one life: the test's outbox, keys and broker."""
    source = Path(s.db).parent / "crash-child.toml"
    return config.from_mapping(
        {
            "hub": {"id": s.hub_id, "timezone": "UTC", "state_dir": str(Path(s.db).parent)},
            "patient": {"id": s.patient_id},
            "outbox": {"path": s.db, "key_file": s.data_key},
            "signing": {"key_file": s.signing_key},
            "mqtt": {
                "host": "127.0.0.1",
                "port": s.broker_port,
                "ca_file": s.ca_file,
                "cert_file": s.cert_file,
                "key_file": s.key_file,
                "backoff_max_s": 1.0,
                "first_connect_jitter_s": 0.0,
            },
        },
        source,
    )


def raw_measurement(index: int) -> RawMeasurement:
    """Reading ``index`` as a BLE session would hand it on."""
    received = datetime(2026, 1, 1, tzinfo=UTC) + timedelta(minutes=index, seconds=5)
    return RawMeasurement(
        characteristic_uuid=BLOOD_PRESSURE_MEASUREMENT,
        data=measurement(index),
        received_monotonic=float(index),
        received_wall=received,
    )


class _Life:
    """One run of the child, from opening the outbox until it is killed."""

    def __init__(self, settings: ChildSettings, report: Callable[[str], None]) -> None:
        self.s = settings
        self.report = report
        self.rng = random.Random(settings.seed)
        self.cfg = child_config(settings)
        self.index_of: dict[bytes, int] = {}
        self.settled = 0
        self.progress = asyncio.Event()
        self.first_delivery = asyncio.Event()

    # -- the hub's observer ---------------------------------------------------------------

    def stored(self, arrival: Arrival, fate: Fate) -> None:
        """A reading's transaction committed (or failed): report it."""
        index = self.index_of[arrival.raw.data]
        if isinstance(fate, Rejected | Shed) or fate.seq is None:
            raise RuntimeError(f"reading {index} not stored: {fate!r}")
        word = fate.status.value
        if word not in ("stored", "duplicate"):
            raise RuntimeError(f"reading {index}: {word}")
        ctx = Context(self.s.hub_id, self.s.patient_id, "UTC", arrival.raw.received_wall)
        identifier = prepare(arrival.raw, arrival.device, ctx).identifier
        self.report(f"{word} {index} {fate.seq} {id_hash(identifier)}")
        self.settled += 1
        self.progress.set()

    def delivered(self, seqs: Sequence[int]) -> None:
        """Records deleted after their PUBACK: report each."""
        for seq in seqs:
            self.report(f"delivered {seq}")
        self.first_delivery.set()
        self.progress.set()

    # -- one life ----------------------------------------------------------------------

    async def run(self) -> None:
        if self.s.sigterm:
            await self._run_until_sigterm()
            return
        hub = Hub(self.cfg, observer=self, collect=False)
        stop = asyncio.Event()
        async with asyncio.TaskGroup() as tg:
            tg.create_task(hub.run(stop), name="crash.hub")
            await hub.ready.wait()
            self.report("opened")
            await self._feed(hub)
            await self._until_drained(hub)
            self.report("drained")
            await asyncio.Event().wait()  # stay alive until killed, as a daemon does

    async def _run_until_sigterm(self) -> None:
        """Feed as a BLE collector would until SIGTERM, then stop as the daemon does."""
        stop = asyncio.Event()
        hub = Hub(self.cfg, observer=self, source=self._feed_until_stopped)

        def on_sigterm() -> None:
            # What the stop will have to settle: publishes awaiting PUBACK, readings queued.
            self.report(f"sigterm in_flight={hub.in_flight} queued={hub.queued}")
            stop.set()

        asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, on_sigterm)
        await hub.run(stop)
        self.report("stopped")

    async def _feed_until_stopped(self, hub: Hub) -> None:
        """The hub's source: readings in bursts until the hub stops collecting."""
        await hub.ready.wait()
        self.report("opened")
        index = self.s.start
        while not hub.collecting_stopped.is_set():
            for _ in range(self.rng.randint(1, MAX_BURST)):
                raw = raw_measurement(index)
                self.index_of[raw.data] = index
                await hub.receive(raw, DEVICE, DEVICE_CONFIG)
                # Handed on: a BLE stack has confirmed it to the device by now.
                self.report(f"received {index}")
                index += 1
            # A radio's pace, then a download's (RADIO_GAP_S): not a synchronisation. The
            # first delivery cuts the pause short, so the stream follows it at once.
            if self.first_delivery.is_set():
                await asyncio.sleep(0)
            else:
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(RADIO_GAP_S):
                        await self.first_delivery.wait()

    async def _feed(self, hub: Hub) -> None:
        s = self.s
        index, end = s.start, s.start + s.count
        while index < end:
            size = min(self.rng.randint(1, MAX_BURST), end - index)
            for i in range(index, index + size):
                raw = raw_measurement(i)
                self.index_of[raw.data] = i
                await hub.receive(raw, DEVICE, DEVICE_CONFIG)
            index += size
            await asyncio.sleep(0)  # let a commit start between bursts, as radio timing does

    async def _until_drained(self, hub: Hub) -> None:
        while True:
            self.progress.clear()  # before looking: a change while we look wakes the wait
            if self.settled >= self.s.count and (await hub.counts()).pending == 0:
                return
            await self.progress.wait()


def _configure_logs(settings: ChildSettings) -> None:
    if settings.log_path is None:
        logs.configure("warning")
        return
    stream = open(settings.log_path, "a", buffering=1)  # noqa: SIM115 - lives with the process
    logs.configure("warning", stream)


def run_connected(settings: ChildSettings, conn: Connection) -> None:
    """Entry point for a ``multiprocessing`` (forkserver) process: reports to ``conn``."""
    _configure_logs(settings)

    def report(line: str) -> None:
        conn.send_bytes(line.encode())

    asyncio.run(_Life(settings, report).run())


def build_parser() -> argparse.ArgumentParser:
    """``python -m hil.crash_child SETTINGS_JSON``: the settings as one JSON object."""
    parser = argparse.ArgumentParser(prog="python -m hil.crash_child", description=__doc__)
    parser.add_argument("settings", help="ChildSettings as a JSON object")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run one life, reporting on stdout, one line each, flushed at once."""
    args = build_parser().parse_args(argv)
    settings = ChildSettings(**json.loads(args.settings))
    _configure_logs(settings)

    def report(line: str) -> None:
        sys.stdout.write(line + "\n")
        sys.stdout.flush()

    asyncio.run(_Life(settings, report).run())
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
