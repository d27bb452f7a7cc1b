"""A cuff with a broken clock over the virtual radio: every reading arrives, none twice.

The field report behind it: a cuff whose clock was never set (every Date Time field 0, the
spec's "unknown") sent four different readings; the hub confirmed all four and stored one.
Here the emulated cuff (hil/emulators/cuff.py, ``stamp_all_with``) stamps every reading
with the unset (or a stuck) time and, like many real cuffs, keeps its memory and sends all
of it again at every connection; ``homehub run`` runs as a real process against TLS
mosquitto and the reference receiver, as in tests/test_end_to_end.py. No sleeps.
"""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Final

import pytest

from agent.outbox import peek_counts
from hil.broker import Broker
from hil.emulators.cuff import UNSET_TIME_STAMP, BpReading, EmulatedCuff
from hil.emulators.encoding import DateTime
from hil.emulators.peripheral import DeviceInformation
from hil.pki import DevPki
from hil.receiver import Receiver
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
