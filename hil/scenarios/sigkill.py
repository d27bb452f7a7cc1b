"""SIGKILL of the agent at random moments during sync and upload: a crash or a power cut must
not lose a reading that reached the outbox, nor deliver one twice after deduplication.

Two devices: a glucometer whose month of records the hub downloads over RACP (paced as a
real link paces it), its high-water mark committed with the records, so a sync killed midway
resumes where the last commit left it; and a cuff that keeps its memory and hands all of it
over at every connection (as many real cuffs do), so a reading it indicated just before a
kill, before the hub's commit, comes again. The daemon is killed :data:`KILLS` times by
hil/faults' :class:`~hil.faults.process.Killer`, alternately while readings come over the
radio (at the k-th ``ble_measurement_received`` line of its log: sync) and while committed
readings go to the platform (at the k-th ``measurement_stored`` line: upload), k drawn by
the Killer's seeded RNG, and started again after each; the cuff takes two measurements and
the meter one while it is down. The last life is stopped with SIGTERM.

Named workaround: a killed host leaves Bumble's virtual controller holding the LE link (it
does not end its connections when the next host resets it, as a real controller does), so
a device would think itself connected until a ~30 s timeout; the scenario ends the links
from the devices' side after each kill, as the adapter's reset would.
"""

from __future__ import annotations

import asyncio
from typing import Final

from hil.emulators.encoding import DateTime
from hil.emulators.glucometer import GlucoseRecord, mg_per_dl
from hil.faults.process import Killer, LinePredicate, log_event
from hil.scenarios.base import Scenario
from hil.scenarios.devices import Cuff, Glucometer
from hil.scenarios.home import Home, HomeError
from hil.scenarios.readings import morning_readings

KILLS: Final = 4
SEED: Final = 12
SYNC_KTH: Final = (1, 40)
"""The k-th ``ble_measurement_received`` of a life a sync kill lands on (uniform): the cuff
alone hands over 20 and more at each connection."""
UPLOAD_KTH: Final = (1, 3)
"""The k-th ``measurement_stored`` of a life an upload kill lands on (uniform): at least the
three readings taken while the daemon was down are new to it."""
SHOT_WAIT_S: Final = 30.0
"""A kill lands within a session (~1 s) or the drawn window; a cold start takes ~3 s."""
HELD: Final = morning_readings(20, first=100, day=24)
RECORDS: Final = tuple(
    GlucoseRecord(n, DateTime(2026, 11, 24, 6 + n // 60, n % 60, 30), mg_per_dl(str(80 + n)))
    for n in range(1, 61)
)
"""A meter's month of records: the hub's first sync downloads all 60 over RACP."""
RECORD_INTERVAL_S: Final = 0.0075
"""One record per connection event of the shortest interval: a download of ~0.5 s."""
LATER_RECORDS: Final = tuple(
    GlucoseRecord(0, DateTime(2026, 11, 24, 20, n, 0), mg_per_dl(str(150 + n)))
    for n in range(KILLS)
)
BETWEEN: Final = morning_readings(2 * KILLS, first=130, day=24)


def kth(event: str, k: int) -> LinePredicate:
    """True on the ``k``-th log line of ``event`` (the Killer calls it on its own thread,
    line by line, in order)."""
    matches = log_event(event)
    seen = 0

    def predicate(line: str) -> bool:
        nonlocal seen
        if matches(line):
            seen += 1
        return seen >= k

    return predicate


async def drive(home: Home) -> None:
    """Kill, restart, measure; :data:`KILLS` times."""
    killer = Killer(seed=SEED)
    for n in range(KILLS):
        agent = home.agent
        assert agent is not None
        sync = n % 2 == 0
        what = "SIGKILL during the devices' transfer (sync)" if sync else "SIGKILL during upload"
        event = "ble_measurement_received" if sync else "measurement_stored"
        k = round(killer.draw(SYNC_KTH if sync else UPLOAD_KTH))
        armed = killer.on_log(agent.pid, home.agent_log(), kth(event, k), name=f"{event} #{k}")
        async with home.fault(what):
            try:
                async with asyncio.timeout(SHOT_WAIT_S):
                    await armed.await_shot()
            except TimeoutError:
                await asyncio.to_thread(armed.cancel)
                raise HomeError(f"no moment for the kill within {SHOT_WAIT_S:g} s") from None
            await home.kill_agent()
            for label in ("cuff", "glucometer"):  # the adapter's reset (see the module doc)
                await home.emulator(label).drop_link()
        for reading in BETWEEN[2 * n : 2 * n + 2]:
            await home.measure("cuff", reading)
        await home.measure("glucometer", LATER_RECORDS[n])
        await home.start_agent()


SCENARIO: Final = Scenario(
    name="sigkill-during-sync-and-upload",
    purpose="the daemon SIGKILLed mid-transfer and mid-upload loses and repeats nothing",
    devices=(
        Cuff("cuff", HELD, options={"delete_on_confirm": False}),
        Glucometer("glucometer", RECORDS, options={"record_interval_s": RECORD_INTERVAL_S}),
    ),
    faults=(
        f"{KILLS} SIGKILLs (seed {SEED}), alternately at the k-th ble_measurement_received "
        f"(sync, k in {SYNC_KTH}) and measurement_stored (upload, k in {UPLOAD_KTH}) line of "
        "the daemon's log",
        "two cuff measurements and a glucose record taken while the daemon is down, each time",
    ),
    drive=drive,
    receipt_timeout_s=5.0,
    timeout_s=150.0,
)
