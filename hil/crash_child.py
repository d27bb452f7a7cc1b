"""The process a crash test kills: the real ingest → outbox → MQTT pipeline, minus the radio.

One *life* of the child opens the real outbox (SQLite WAL, synchronous=FULL, sealed with a
real data key), connects the real :class:`agent.uplink.Uplink` to a real mosquitto over TLS
with the hub's certificate, and then runs two tasks as the daemon does:

``ingest``
    Synthetic but valid blood-pressure measurements (0x2A35 bytes, each with its own device
    time, so its own identifier) go through :func:`agent.ingest.prepare` and are stored with
    :func:`agent.ingest_batcher.commit_batch` in batches of random size (group commit).
    Only after the commit returned is ``stored <index> <seq> <idhash>`` (or ``duplicate …``)
    reported.
``publisher``
    Puts records left in flight back to pending, claims, publishes, and deletes each record
    when its PUBACK arrives, reporting ``delivered <seq>``; when the outbox is empty and the
    ingest is done it reports ``drained`` once.

``<idhash>`` is the first 16 hex digits of SHA-256 over the identifier: the identifier itself
names the patient and must not reach any output (tests scan every log for it).

Reports go to a :class:`multiprocessing.connection.Connection` (one message per report,
written atomically) when run by a test through a ``forkserver`` context, whose server has
imported this module once, so a life starts in milliseconds instead of the half second an
interpreter with bumble, paho and cryptography takes; or to stdout, one line each, when run
as ``python -m hil.crash_child`` (see ``--help``). Either way it is its own process, killed
with SIGKILL by the test at moments the test draws.
"""

from __future__ import annotations

import argparse
import asyncio
import functools
import hashlib
import json
import random
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Final

from agent import cose, logs
from agent.errors import UplinkError
from agent.ingest import BLOOD_PRESSURE_MEASUREMENT, Signer, prepare
from agent.ingest_batcher import Item, Status, commit_batch
from agent.measurement import RawMeasurement
from agent.normalize.device import DeviceFacts
from agent.normalize.phd import Context
from agent.outbox import Outbox
from agent.sealing import Sealer, load_data_key
from agent.uplink import Uplink, UplinkSettings
from drivers.blood_pressure import BloodPressureMeasurement, PressureUnit
from drivers.gatt_time import DateTime
from drivers.ieee11073 import MedFloat16

PUBLISH_WINDOW: Final = 20
"""As the daemon's: records claimed and in flight at once."""

MAX_BATCH_ITEMS: Final = 8
"""Largest random group-commit batch: small, so kills land between many commits."""

BASE_DEVICE_TIME: Final = datetime(2026, 1, 1, 6, 0, 0)  # noqa: DTZ001 - device local time
"""Reading ``i`` was taken ``i`` minutes after this (device local time: no zone)."""

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


class _Life:
    """One run of the child, from opening the outbox until it is killed."""

    def __init__(self, settings: ChildSettings, report: Callable[[str], None]) -> None:
        self.s = settings
        self.report = report
        self.rng = random.Random(settings.seed)
        self.wake = asyncio.Event()
        self.ingest_done = asyncio.Event()

    async def run(self) -> None:
        s = self.s
        sealer = Sealer(load_data_key(Path(s.data_key)))
        signer = Signer.from_key(cose.load_signing_key(Path(s.signing_key)))
        uplink = Uplink(
            UplinkSettings(
                hub_id=s.hub_id,
                host="127.0.0.1",
                port=s.broker_port,
                ca_file=Path(s.ca_file),
                cert_file=Path(s.cert_file),
                key_file=Path(s.key_file),
                backoff_base_s=0.05,
                backoff_max_s=0.5,
            )
        )
        with Outbox.open(Path(s.db), sealer, s.hub_id) as outbox:
            outbox.release_in_flight()
            self.report("opened")
            async with asyncio.TaskGroup() as tg:
                tg.create_task(uplink.run(), name="crash.uplink")
                tg.create_task(self._publisher(outbox, uplink), name="crash.publisher")
                tg.create_task(self._ingest(outbox, signer), name="crash.ingest")

    async def _ingest(self, outbox: Outbox, signer: Signer) -> None:
        s = self.s
        index = s.start
        end = s.start + s.count
        while index < end:
            size = min(self.rng.randint(1, MAX_BATCH_ITEMS), end - index)
            indices = list(range(index, index + size))
            items: list[Item] = []
            for i in indices:
                received = datetime(2026, 1, 1, tzinfo=UTC) + timedelta(minutes=i, seconds=5)
                raw = RawMeasurement(
                    characteristic_uuid=BLOOD_PRESSURE_MEASUREMENT,
                    data=measurement(i),
                    received_monotonic=float(i),
                    received_wall=received,
                )
                ctx = Context(
                    hub_id=s.hub_id, patient_id=s.patient_id, timezone="UTC", received=received
                )
                prepared = prepare(raw, DEVICE, ctx)
                make = functools.partial(prepared.envelope, signer=signer)
                items.append(Item(prepared.kind, prepared.identifier, make))
            for i, item, outcome in zip(indices, items, commit_batch(outbox, items), strict=True):
                if outcome.status is Status.NOT_STORED:
                    raise RuntimeError(f"not stored: {outcome.error!r}")
                self.report(f"{outcome.status.value} {i} {outcome.seq} {id_hash(item.dedup_key)}")
            index += size
            self.wake.set()
            await asyncio.sleep(0)  # let the publisher run between commits, as the loop would
        self.ingest_done.set()
        self.wake.set()

    async def _publisher(self, outbox: Outbox, uplink: Uplink) -> None:
        drained = False
        while True:
            await uplink.connected.wait()
            outbox.release_in_flight()
            try:
                while True:
                    self.wake.clear()
                    records = outbox.claim(PUBLISH_WINDOW)
                    if not records:
                        if self.ingest_done.is_set() and not drained:
                            counts = outbox.counts()
                            if counts.pending == counts.in_flight == 0:
                                drained = True
                                self.report("drained")
                        await self.wake.wait()
                        continue
                    async with asyncio.TaskGroup() as tg:
                        for record in records:
                            tg.create_task(
                                self._publish_one(outbox, uplink, record.seq, record.body),
                                name=f"crash.publish[{record.seq}]",
                            )
            except* UplinkError:
                await uplink.disconnected_or_reconnected()

    async def _publish_one(self, outbox: Outbox, uplink: Uplink, seq: int, body: bytes) -> None:
        await uplink.publish(body)
        outbox.mark_delivered(seq)
        self.report(f"delivered {seq}")


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
