"""Devices with broken clocks over the virtual radio: every reading arrives, none twice.

The field report behind it: a cuff whose clock was never set (every Date Time field 0, the
spec's "unknown") sent four different readings; the hub confirmed all four and stored one.
Here the emulated cuff (hil/emulators/cuff.py, ``stamp_all_with``) stamps every reading
with the unset (or a stuck) time and, like many real cuffs, keeps its memory and sends all
of it again at every connection; ``homehub run`` runs as a real process against TLS
mosquitto and the reference receiver, as in tests/test_end_to_end.py. A glucometer with an
unset clock (hil/emulators/glucometer.py) is then reset: its new record 1 is a conflict.
No sleeps.
"""

from __future__ import annotations

import asyncio
from decimal import Decimal
from pathlib import Path
from typing import Final

import pytest

from agent.outbox import peek_counts
from hil.broker import Broker
from hil.emulators.cuff import UNSET_TIME_STAMP, BpReading, EmulatedCuff
from hil.emulators.encoding import DateTime
from hil.emulators.glucometer import (
    GLUCOSE_MEASUREMENT,
    SENSOR_STATUS_TIME_FAULT,
    UNSET_BASE_TIME,
    Glucometer,
    GlucoseRecord,
    mg_per_dl,
)
from hil.emulators.peripheral import DeviceInformation
from hil.pki import DevPki
from hil.receiver import Receiver, VerifiedReading
from hil.virtual_home import summarize
from hil.virtual_radio import VirtualRadio
from tests import phi_canaries
from tests.agent_process import agent_process, stop
from tests.virtual_home_fixtures import ARRIVAL_TIMEOUT_S, canary_agent_config, collect

pytestmark = pytest.mark.timeout(120)

STUCK: Final = DateTime(2026, 1, 1, 12, 0, 0)
"""A valid time a stuck clock puts on every reading."""
CANARY_DIS: Final = DeviceInformation(
    serial_number=phi_canaries.DEVICE_SERIAL, system_id=(0x0012FFFE34, 0xCA7A00)
)
METER_INFO: Final = DeviceInformation(
    model_number="HH-GLU-1",
    serial_number=phi_canaries.DEVICE_SERIAL,
    system_id=(0x0012FFFE34, 0xCA7A00),
)

READINGS: Final = (  # each with a correct time stamp, which the cuff's broken clock replaces
    BpReading(128, 82, 97, time_stamp=DateTime(2026, 11, 20, 7, 45, 10), pulse_rate=71),
    BpReading(141, 88, 106, time_stamp=DateTime(2026, 11, 21, 19, 2, 0), pulse_rate=77),
    BpReading(119, 76, 90, time_stamp=DateTime(2026, 11, 22, 8, 3, 5), pulse_rate=64),
    BpReading(131, 84, 99, time_stamp=DateTime(2026, 11, 22, 19, 40, 0), pulse_rate=70),
)
LATER: Final = BpReading(112, 74, 87, pulse_rate=62)


def values(reading: BpReading) -> tuple[object, ...]:
    """What distinguishes a reading apart from its time."""
    return (reading.systolic, reading.diastolic, reading.mean_arterial_pressure, reading.pulse_rate)


async def test_cuff_clock_modes_stamp_every_reading() -> None:
    """The emulator's broken clock: every held and added reading carries its stamp; the unset
    one is seven zero octets (Date Time "unknown") right after the pressures."""
    async with VirtualRadio() as radio:
        cuff = await radio.add_cuff(READINGS, stamp_all_with=UNSET_TIME_STAMP)
        await cuff.add_reading(LATER)
        stuck = await radio.add_cuff(
            READINGS[:1], address="F0:00:00:00:C1:02", stamp_all_with=STUCK
        )
    assert [UNSET_TIME_STAMP] * 5 == [r.time_stamp for r in cuff.stored]
    assert [values(r) for r in (*READINGS, LATER)] == [values(r) for r in cuff.stored]
    assert all(value[7:14] == bytes(7) and value[0] & 0x02 for value in cuff.encoded())
    assert [STUCK] == [r.time_stamp for r in stuck.stored]


@pytest.mark.parametrize("stamp", [UNSET_TIME_STAMP, STUCK], ids=["unset-clock", "stuck-clock"])
async def test_cuff_with_broken_clock_every_reading_arrives_once(
    stamp: DateTime,
    tmp_path: Path,
    dev_pki: DevPki,
    receiver: Receiver,
    broker: Broker,
    request: pytest.FixtureRequest,
) -> None:
    """Four different readings stamped alike arrive as four, with four ids. The cuff sends
    all of them again at its next connection: nothing more arrives; a new reading taken
    after that is the next (and only) one to arrive."""
    async with VirtualRadio() as radio:
        cuff: EmulatedCuff = await radio.add_cuff(
            READINGS,
            address=phi_canaries.DEVICE_ADDRESS,
            info=CANARY_DIS,
            delete_on_confirm=False,  # keeps its memory: every session re-sends all of it
            stamp_all_with=stamp,
        )
        config = canary_agent_config(tmp_path, radio, dev_pki, broker.port)
        async with agent_process(config, request.node.nodeid) as agent:
            got = await collect(receiver, len(READINGS))
            async with asyncio.timeout(ARRIVAL_TIMEOUT_S):
                # A second session sent all four again (and the agent confirmed them).
                await cuff.wait_for_confirmations(2 * len(READINGS))
            await cuff.add_reading(LATER)
            (later,) = await collect(receiver, 1)
            assert 0 == await stop(agent)

    assert [1, 2, 3, 4] == sorted(r.seq for r in got)
    ids = len({r.id for r in (*got, later)})  # ids name the patient: only the count
    assert len(READINGS) + 1 == ids
    by_seq = sorted(got, key=lambda r: r.seq)
    assert [values(r) for r in READINGS] == [
        (s.systolic, s.diastolic, s.mean, s.pulse) for s in map(summarize, by_seq)
    ]
    assert 5 == later.seq  # the re-sent four were never stored again
    assert receiver.readings.empty()
    stats = receiver.stats
    assert (0, 0, 0, 0) == (
        stats.rejected_total,
        stats.duplicates,
        stats.conflicting_duplicates,
        stats.conflicts,
    )
    counts = peek_counts(tmp_path / "state" / "outbox.db")
    assert (0, 0) == (counts.pending, counts.refused)


async def test_meter_with_unset_clock_then_reset_arrives_whole_and_conflict_flagged(
    tmp_path: Path,
    dev_pki: DevPki,
    receiver: Receiver,
    broker: Broker,
    request: pytest.FixtureRequest,
) -> None:
    """A glucometer with an unset clock (Base Time zero, time fault) holding three records:
    all three arrive, each with its own id. The meter is then reset (memory cleared,
    numbering restarted at 1) and takes a new reading: the agent resyncs, and the new record
    1 arrives as a conflict of the old record 1 (``conflict_of`` = its hub seq), counted by
    the platform; later sessions send nothing more."""
    records = [
        GlucoseRecord(n, DateTime(2025, 3, 14, 7, 30 + n), mg_per_dl(mg))
        for n, mg in ((1, "112"), (2, "98"), (3, "143"))
    ]
    async with VirtualRadio() as radio:
        device = await radio.add_peripheral_device(phi_canaries.DEVICE_ADDRESS, "glucometer")
        meter = Glucometer(
            device, records, info=METER_INFO, stamp_all_with=UNSET_BASE_TIME, time_fault=True
        )
        held = meter.stored
        assert [(UNSET_BASE_TIME, SENSOR_STATUS_TIME_FAULT)] * 3 == [
            (r.base_time, r.sensor_status) for r in held
        ]
        await meter.start()
        config = canary_agent_config(
            tmp_path, radio, dev_pki, broker.port, kind="glucose", label="glucometer"
        )
        async with agent_process(config, request.node.nodeid) as agent:
            first = await collect(receiver, len(records))
            meter.restart_numbering(1)
            reset = meter.add_record(
                GlucoseRecord(0, DateTime(2025, 3, 15, 6, 0), mg_per_dl("187"))
            )
            (conflict,) = await collect(receiver, 1)
            async with asyncio.timeout(ARRIVAL_TIMEOUT_S):
                await meter.wait_for_requests(len(meter.requests) + 2)  # two more sessions
            assert receiver.readings.empty()
            assert 0 == await stop(agent)
        await meter.stop()

    # What the meter sent first: its records, stamped by its broken clock.
    sent = [value for uuid, value in meter.sent if uuid == GLUCOSE_MEASUREMENT][:3]
    assert [r.measurement_value() for r in held] == sent
    assert [1, 2, 3] == sorted(r.seq for r in first)
    ids = len({r.id for r in first})  # ids name the patient: only counts in messages
    assert 3 == ids
    by_seq = {r.seq: r for r in first}
    assert [Decimal("112"), Decimal("98"), Decimal("143")] == [
        glucose_mg_dl(by_seq[s]) for s in (1, 2, 3)
    ]
    (old_one,) = [by_seq[s] for s in sorted(by_seq) if by_seq[s].id.endswith("-seq:1")]
    assert (1, UNSET_BASE_TIME, 4, old_one.seq) == (
        reset.sequence_number,
        reset.base_time,
        conflict.seq,
        conflict.payload.get("conflict_of"),
    )
    same_identity = conflict.id == old_one.id  # ids name the patient: compared, not shown
    assert same_identity
    assert Decimal("187") == glucose_mg_dl(conflict)
    stats = receiver.stats
    assert (0, 0, 1) == (stats.rejected_total, stats.conflicting_duplicates, stats.conflicts)
    counts = peek_counts(tmp_path / "state" / "outbox.db")
    assert (0, 0) == (counts.pending, counts.refused)


def glucose_mg_dl(reading: VerifiedReading) -> Decimal:
    """The glucose value of a record as the platform reads it."""
    quantity = reading.payload["fhir"]["entry"][0]["resource"]["valueQuantity"]
    assert "mg/dL" == quantity["code"]
    return Decimal(str(quantity["value"]))
