"""Readings of devices with unset or stuck clocks, through the daemon's own pipeline.

A cuff whose clock was never set (Date Time all zero: BPS's "unknown") or is stuck (the same
valid time stamp on every reading) sent four different readings; a glucometer with an unset
clock sent three records with their own sequence numbers. Each distinct reading must be
stored once and reach the platform; a true re-send (a later session sending the same bytes)
must be a duplicate, stored and sent no more; a meter whose numbering restarted (the same
sequence number with other content) must be stored as a *conflict*: logged, sent with
``conflict_of`` and counted by the platform.

The hub is :class:`agent.daemon.Hub` itself (``collect=False``: readings come through
:meth:`~agent.daemon.Hub.receive`, exactly as a BLE session hands them on) with its real
encrypted outbox on disk, publisher and uplink, against a real TLS mosquitto and the
reference receiver (tests/conftest.py). The values are byte-exact, built with the drivers'
encoders and checked against the emulators' independent ones. Nothing sleeps: every wait is
for a condition, under a timeout.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Final

import pytest
from structlog.testing import capture_logs

from agent import config
from agent.ble.uuids import BLOOD_PRESSURE_MEASUREMENT, GLUCOSE_MEASUREMENT
from agent.config import DeviceConfig
from agent.daemon import Arrival, Fate, Hub
from agent.ingest_batcher import Outcome, Status
from agent.measurement import RawMeasurement
from agent.normalize.device import DeviceFacts
from drivers.blood_pressure import BloodPressureMeasurement, PressureUnit
from drivers.gatt_time import DateTime
from drivers.glucose import ConcentrationUnit, GlucoseMeasurement, SensorStatusAnnunciation
from drivers.ieee11073 import MedFloat16
from hil.broker import Broker
from hil.emulators.cuff import BpReading
from hil.emulators.encoding import DateTime as EmulatorDateTime
from hil.emulators.glucometer import GlucoseRecord, mg_per_dl
from hil.pki import DevPki
from hil.receiver import Receiver, VerifiedReading
from tests import phi_canaries

pytestmark = pytest.mark.timeout(90)

WAIT_S: Final = 20.0
"""Bound on each wait: storing takes milliseconds, the first connection to mosquitto ~1 s."""

UNSET: Final = DateTime(0, 0, 0, 0, 0, 0)
"""Date Time 0x2A08 with every field 0: the spec's "unknown" (a clock never set)."""
STUCK: Final = DateTime(2026, 1, 1, 12, 0, 0)
"""A valid time stamp a stuck clock puts on every reading."""

T0: Final = datetime(2026, 11, 23, 9, 30, 5, tzinfo=UTC)
"""The hub's receipt time of the first reading of the first session."""

CUFF: Final = DeviceConfig(kind="blood_pressure", address=phi_canaries.DEVICE_ADDRESS, label="cuff")
METER: Final = DeviceConfig(kind="glucose", address=phi_canaries.DEVICE_ADDRESS, label="meter")
FACTS: Final = DeviceFacts(
    address=phi_canaries.DEVICE_ADDRESS,
    system_id=phi_canaries.SYSTEM_ID_HEX,
    manufacturer="Homehub Test Devices",
    model="HH-CLOCK-1",
    serial=phi_canaries.DEVICE_SERIAL,
    firmware="1.0.0",
)

# (systolic, diastolic, MAP, pulse) of four different readings.
BP_VALUES: Final = ((128, 82, 97, 71), (141, 88, 106, 77), (119, 76, 90, 64), (131, 84, 99, 70))


def bp_value(systolic: int, diastolic: int, mean: int, pulse: int, stamp: DateTime) -> bytes:
    """A 0x2A35 value built with the hub's own encoder, checked byte for byte against the
    emulator's independent one (hil/emulators/cuff.py)."""
    value = bytes(
        BloodPressureMeasurement.create(
            unit=PressureUnit.MMHG,
            systolic=MedFloat16.from_decimal(systolic),
            diastolic=MedFloat16.from_decimal(diastolic),
            mean_arterial_pressure=MedFloat16.from_decimal(mean),
            time_stamp=stamp,
            pulse_rate=MedFloat16.from_decimal(pulse),
        )
    )
    emulated = BpReading(
        systolic,
        diastolic,
        mean,
        time_stamp=EmulatorDateTime(
            stamp.year, stamp.month, stamp.day, stamp.hours, stamp.minutes, stamp.seconds
        ),
        pulse_rate=pulse,
    )
    assert bytes(emulated) == value
    return value


def glucose_value(sequence_number: int, mg_dl: str, base_time: DateTime = UNSET) -> bytes:
    """A 0x2A18 value of a meter with a broken clock, capillary whole blood from a finger:
    Base Time all zero with sensor status bit 11 "time fault" (an unset clock), or the given
    valid Base Time (a stuck clock). Built with the hub's encoder and checked against the
    emulator's (hil/emulators/glucometer.py)."""
    concentration = mg_per_dl(mg_dl)  # kg/L, as the wire carries it
    status = SensorStatusAnnunciation.TIME_FAULT if base_time == UNSET else None
    value = bytes(
        GlucoseMeasurement.create(
            sequence_number=sequence_number,
            base_time=base_time,
            concentration=(
                MedFloat16.from_decimal(concentration),
                ConcentrationUnit.KG_PER_L,
                1,
                1,
            ),
            sensor_status_annunciation=status,
        )
    )
    emulated = GlucoseRecord(
        sequence_number,
        EmulatorDateTime(
            base_time.year,
            base_time.month,
            base_time.day,
            base_time.hours,
            base_time.minutes,
            base_time.seconds,
        ),
        concentration,
        sensor_status=int(status) if status is not None else None,
    )
    assert emulated.measurement_value() == value
    return value


# -- the hub under test ---------------------------------------------------------------------


class Recorder:
    """The hub's observer: every arrival's fate and every delivered seq, in order."""

    def __init__(self) -> None:
        self.fates: list[Fate] = []
        self.delivered_seqs: list[int] = []
        self._change = asyncio.Event()

    def stored(self, arrival: Arrival, fate: Fate) -> None:
        """One arrival's fate, after its transaction committed."""
        self.fates.append(fate)
        self._changed()

    def delivered(self, seqs: Sequence[int]) -> None:
        """Records deleted after their PUBACK."""
        self.delivered_seqs.extend(seqs)
        self._changed()

    def _changed(self) -> None:
        event, self._change = self._change, asyncio.Event()
        event.set()

    async def wait_until(self, predicate: Callable[[], bool]) -> None:
        """Return once ``predicate()`` holds (bounded by :data:`WAIT_S`)."""
        async with asyncio.timeout(WAIT_S):
            while not predicate():
                await self._change.wait()


@dataclass
class Pipeline:
    """A running hub and its observer."""

    hub: Hub
    recorder: Recorder
    sessions: int = 0

    async def session(
        self, uuid: str, values: Sequence[bytes], device: DeviceConfig
    ) -> list[Outcome]:
        """Hand ``values`` on as one BLE session does (a new session: a later receipt time),
        and return their fates once each one's transaction committed."""
        start = len(self.recorder.fates)
        base = T0 + timedelta(days=self.sessions)
        for i, value in enumerate(values):
            raw = RawMeasurement(
                characteristic_uuid=uuid,
                data=value,
                received_monotonic=self.sessions * 86_400.0 + i,
                received_wall=base + timedelta(seconds=i),
            )
            await self.hub.receive(raw, FACTS, device)
        self.sessions += 1
        await self.recorder.wait_until(lambda: len(self.recorder.fates) >= start + len(values))
        fates = self.recorder.fates[start:]
        assert len(fates) == len(values)
        assert all(isinstance(f, Outcome) for f in fates), fates
        return [f for f in fates if isinstance(f, Outcome)]

    async def delivered(self, seqs: Sequence[int]) -> None:
        """Return once every record in ``seqs`` was acknowledged and deleted."""
        await self.recorder.wait_until(lambda: set(seqs) <= set(self.recorder.delivered_seqs))

    async def assert_nothing_pending(self) -> None:
        """The outbox holds nothing to send: nothing new can reach the platform."""
        counts = await self.hub.counts()
        assert (0, 0, 0) == (counts.pending, counts.refused, counts.damaged)


def hub_config(tmp_path: Path, pki: DevPki, broker: Broker) -> config.Config:
    """The daemon's configuration against the test's outbox, keys and broker."""
    state = tmp_path / "state"
    return config.from_mapping(
        {
            "hub": {"id": pki.hub_id, "timezone": "UTC", "state_dir": str(state)},
            "patient": {"id": phi_canaries.PATIENT_ID},
            "outbox": {"path": str(state / "outbox.db"), "key_file": str(tmp_path / "data.key")},
            "signing": {"key_file": str(pki.hub_key)},
            "mqtt": {
                "host": "127.0.0.1",
                "port": broker.port,
                "ca_file": str(pki.ca_cert),
                "cert_file": str(pki.hub_cert),
                "key_file": str(pki.hub_key),
                "backoff_max_s": 1.0,
                "first_connect_jitter_s": 0.0,
            },
        },
        tmp_path / "homehub.toml",
    )


@asynccontextmanager
async def running_pipeline(tmp_path: Path, pki: DevPki, broker: Broker) -> AsyncIterator[Pipeline]:
    """The daemon's Hub (no BLE collector), running until the block ends; then stopped as
    ``homehub run`` stops it."""
    recorder = Recorder()
    hub = Hub(hub_config(tmp_path, pki, broker), observer=recorder, collect=False)
    stop = asyncio.Event()
    run = asyncio.create_task(hub.run(stop), name="test.hub")
    ready = asyncio.create_task(hub.ready.wait(), name="test.hub_ready")
    try:
        async with asyncio.timeout(WAIT_S):
            await asyncio.wait({ready, run}, return_when=asyncio.FIRST_COMPLETED)
        if not ready.done():
            run.result()  # the hub failed to start: raise its error
        yield Pipeline(hub, recorder)
    finally:
        ready.cancel()
        stop.set()
        async with asyncio.timeout(WAIT_S):
            await run


def assert_platform_clean(receiver: Receiver, conflicts: int = 0) -> None:
    """Nothing refused or contradicted at the platform; ``conflicts`` flagged ones."""
    stats = receiver.stats
    assert 0 == stats.rejected_total, dict(stats.rejected)
    assert (0, conflicts) == (stats.conflicting_duplicates, stats.conflicts)


async def arrive(receiver: Receiver, count: int) -> list[VerifiedReading]:
    """The next ``count`` verified readings; fails at once on any rejection."""
    async with asyncio.timeout(WAIT_S):
        await receiver.wait_until(
            lambda s: receiver.readings.qsize() >= count or s.rejected_total > 0
        )
    assert 0 == receiver.stats.rejected_total, dict(receiver.stats.rejected)
    return [receiver.readings.get_nowait() for _ in range(count)]


def distinct_ids(readings: Sequence[VerifiedReading]) -> int:
    """How many different ids (an id names the patient: never shown in a failure)."""
    return len({r.id for r in readings})


def statuses(fates: Sequence[Outcome]) -> list[Status]:
    return [f.status for f in fates]


def seqs(fates: Sequence[Outcome]) -> list[int]:
    out = [f.seq for f in fates]
    assert all(s is not None for s in out)
    return [s for s in out if s is not None]


def systolic(reading: VerifiedReading) -> Decimal:
    """The systolic value of a BP panel as the platform reads it."""
    panel = reading.payload["fhir"]["entry"][0]["resource"]
    component = panel["component"][0]
    assert "8480-6" in {c["code"] for c in component["code"]["coding"]}  # systolic
    return Decimal(str(component["valueQuantity"]["value"]))


def glucose_mg_dl(reading: VerifiedReading) -> Decimal:
    """The glucose value of a record as the platform reads it."""
    quantity = reading.payload["fhir"]["entry"][0]["resource"]["valueQuantity"]
    assert "mg/dL" == quantity["code"]
    return Decimal(str(quantity["value"]))


# -- blood pressure ---------------------------------------------------------------------------


@pytest.mark.parametrize("stamp", [UNSET, STUCK], ids=["unset-clock", "stuck-clock"])
async def test_cuff_with_a_faulty_clock_every_reading_stored_once(
    stamp: DateTime,
    tmp_path: Path,
    dev_pki: DevPki,
    broker: Broker,
    receiver: Receiver,
) -> None:
    """Four different readings all stamped alike (unset: all-zero Date Time; stuck: one
    valid time) are four readings: stored, sent and received with four ids. The same four
    sent again in a later session are duplicates: nothing stored, nothing sent."""
    if stamp is UNSET:
        assert bytes(7) == bytes(UNSET)  # byte-exact "unknown"
    values = [bp_value(*v, stamp) for v in BP_VALUES]
    assert len(set(values)) == 4
    async with running_pipeline(tmp_path, dev_pki, broker) as pipe:
        first = await pipe.session(BLOOD_PRESSURE_MEASUREMENT, values, CUFF)
        assert [Status.STORED] * 4 == statuses(first)
        assert [1, 2, 3, 4] == seqs(first)
        got = await arrive(receiver, 4)
        await pipe.delivered([1, 2, 3, 4])

        again = await pipe.session(BLOOD_PRESSURE_MEASUREMENT, values, CUFF)
        assert [Status.DUPLICATE] * 4 == statuses(again)
        assert [1, 2, 3, 4] == seqs(again)  # each names the record it repeats
        await pipe.assert_nothing_pending()
        assert (4, 4, 0) == (pipe.hub.stored, pipe.hub.duplicates, pipe.hub.conflicts)

        # A new reading after the re-send is the next one to arrive: nothing was sent between.
        fresh = bp_value(112, 74, 87, 62, stamp)
        (later,) = await pipe.session(BLOOD_PRESSURE_MEASUREMENT, [fresh], CUFF)
        assert (Status.STORED, 5) == (later.status, later.seq)
        (barrier,) = await arrive(receiver, 1)
        assert 5 == barrier.seq
        await pipe.delivered([5])
        await pipe.assert_nothing_pending()

    assert [1, 2, 3, 4] == sorted(r.seq for r in got)
    ids = distinct_ids([*got, barrier])  # ids name the patient: only counts in messages
    assert 5 == ids
    by_seq = sorted(got, key=lambda r: r.seq)
    assert [Decimal(v[0]) for v in BP_VALUES] == [systolic(r) for r in by_seq]
    assert all("conflict_of" not in r.payload for r in (*got, barrier))
    assert receiver.readings.empty()
    assert 0 == receiver.stats.duplicates
    assert_platform_clean(receiver)


# -- glucose ----------------------------------------------------------------------------------


@pytest.mark.parametrize("stamp", [UNSET, STUCK], ids=["unset-clock", "stuck-clock"])
async def test_meter_with_a_faulty_clock_keeps_records_by_sequence_number(
    stamp: DateTime, tmp_path: Path, dev_pki: DevPki, broker: Broker, receiver: Receiver
) -> None:
    """Three records with different sequence numbers, all with the same Base Time (zero with
    the time fault bit, or one stuck value): three stored, three received with their own
    ids; re-sent: duplicates."""
    if stamp is UNSET:
        assert bytes(7) == bytes(UNSET)
    values = [glucose_value(n, mg, stamp) for n, mg in ((5, "112"), (6, "98"), (7, "143"))]
    async with running_pipeline(tmp_path, dev_pki, broker) as pipe:
        first = await pipe.session(GLUCOSE_MEASUREMENT, values, METER)
        assert [Status.STORED] * 3 == statuses(first)
        assert [1, 2, 3] == seqs(first)
        got = await arrive(receiver, 3)
        await pipe.delivered([1, 2, 3])

        again = await pipe.session(GLUCOSE_MEASUREMENT, values, METER)
        assert [Status.DUPLICATE] * 3 == statuses(again)
        assert [1, 2, 3] == seqs(again)
        await pipe.assert_nothing_pending()
        assert (3, 3, 0) == (pipe.hub.stored, pipe.hub.duplicates, pipe.hub.conflicts)

        (later,) = await pipe.session(GLUCOSE_MEASUREMENT, [glucose_value(8, "120", stamp)], METER)
        assert (Status.STORED, 4) == (later.status, later.seq)
        (barrier,) = await arrive(receiver, 1)
        assert 4 == barrier.seq
        await pipe.delivered([4])

    by_seq = sorted(got, key=lambda r: r.seq)
    assert [1, 2, 3] == [r.seq for r in by_seq]
    ids = distinct_ids([*got, barrier])
    assert 4 == ids
    keyed_by_seq = [r.id.endswith(f"-seq:{n}") for r, n in zip(by_seq, (5, 6, 7), strict=True)]
    assert [True] * 3 == keyed_by_seq
    assert [Decimal("112"), Decimal("98"), Decimal("143")] == [glucose_mg_dl(r) for r in by_seq]
    assert {"observation"} == {r.kind for r in got}
    assert receiver.readings.empty()
    assert_platform_clean(receiver)


async def test_meter_whose_numbering_restarted_reports_a_conflict(
    tmp_path: Path, dev_pki: DevPki, broker: Broker, receiver: Receiver
) -> None:
    """A meter reset (numbering restarted, clock unset) sends sequence number 1 again with
    another value: stored as a conflict of the first record, logged, sent with
    ``conflict_of`` and counted by the platform; both reach it. Re-sending either record
    afterwards is a duplicate of it, never a second conflict."""
    original = glucose_value(1, "104")
    restarted = glucose_value(1, "187")
    assert original != restarted
    async with running_pipeline(tmp_path, dev_pki, broker) as pipe:
        (first,) = await pipe.session(GLUCOSE_MEASUREMENT, [original], METER)
        assert (Status.STORED, 1, None) == (first.status, first.seq, first.conflict_of)
        (got_first,) = await arrive(receiver, 1)

        with capture_logs() as events:
            (second,) = await pipe.session(GLUCOSE_MEASUREMENT, [restarted], METER)
        assert (Status.CONFLICT, 2, 1) == (second.status, second.seq, second.conflict_of)
        conflicts = [e for e in events if e["event"] == "measurement_conflict"]
        assert [("warning", 2, 1, "..:12:34")] == [
            (e["log_level"], e["seq"], e["conflict_of"], e["device"]) for e in conflicts
        ]
        (got_second,) = await arrive(receiver, 1)
        await pipe.delivered([1, 2])
        assert 1 == receiver.stats.conflicts  # counted as it was handed on

        # The same two records again (the meter re-sent its memory): duplicates of each.
        resent = await pipe.session(GLUCOSE_MEASUREMENT, [restarted, original], METER)
        assert [(Status.DUPLICATE, 2), (Status.DUPLICATE, 1)] == [(f.status, f.seq) for f in resent]
        await pipe.assert_nothing_pending()
        assert (1, 2, 1) == (pipe.hub.stored, pipe.hub.duplicates, pipe.hub.conflicts)

        (later,) = await pipe.session(GLUCOSE_MEASUREMENT, [glucose_value(2, "131")], METER)
        assert (Status.STORED, 3) == (later.status, later.seq)
        (barrier,) = await arrive(receiver, 1)
        assert (3, None) == (barrier.seq, barrier.payload.get("conflict_of"))

    assert (1, 2) == (got_first.seq, got_second.seq)
    ids = distinct_ids([got_first, got_second])
    assert 1 == ids  # one identity: the platform keeps both apart by conflict_of
    keyed_by_seq = got_first.id.endswith("-seq:1")
    assert keyed_by_seq
    assert "conflict_of" not in got_first.payload
    assert 1 == got_second.payload["conflict_of"]
    assert (Decimal("104"), Decimal("187")) == (glucose_mg_dl(got_first), glucose_mg_dl(got_second))
    assert receiver.readings.empty()
    assert_platform_clean(receiver, conflicts=1)
