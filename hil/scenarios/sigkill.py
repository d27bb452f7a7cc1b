"""SIGKILL of the agent at random moments during sync and upload: a crash or a power cut must
not lose a reading that reached the outbox, nor deliver one twice after deduplication.

The cuff keeps its memory and hands all of it over at every connection (as many real cuffs
do), so a reading it indicated just before a kill, before the hub's commit, comes again. The
daemon is killed :data:`KILLS` times by hil/faults' :class:`~hil.faults.process.Killer`,
alternately while the cuff is handing readings over (at the k-th ``ble_measurement_received``
line of its log: sync) and while committed readings go to the platform (at the k-th
``measurement_stored`` line: upload), k drawn by the Killer's seeded RNG, and started again
after each; two measurements are taken while it is down. The last life is
stopped with SIGTERM.

Named workaround: a killed host leaves Bumble's virtual controller holding the LE link (it
does not end its connections when the next host resets it, as a real controller does), so
the cuff would think itself connected until a ~30 s timeout; the scenario ends the link from
the cuff's side after each kill, as the adapter's reset would.
"""

from __future__ import annotations

import asyncio
from typing import Final

from hil.faults.process import Killer, LinePredicate, log_event
from hil.scenarios.base import Scenario
from hil.scenarios.devices import Cuff
from hil.scenarios.home import Home, HomeError
from hil.scenarios.readings import morning_readings

KILLS: Final = 4
SEED: Final = 12
KTH_LINE: Final = (1, 12)
"""The k-th line of the life's transfer or commits the kill lands on (uniform)."""
SHOT_WAIT_S: Final = 30.0
"""A kill lands within a session (~1 s) or the drawn window; a cold start takes ~3 s."""
HELD: Final = morning_readings(20, first=100, day=24)
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
        what = "SIGKILL during the cuff's transfer (sync)" if sync else "SIGKILL during upload"
        event = "ble_measurement_received" if sync else "measurement_stored"
        k = round(killer.draw(KTH_LINE))
        armed = killer.on_log(agent.pid, home.agent_log(), kth(event, k), name=f"{event} #{k}")
        async with home.fault(what):
            try:
                async with asyncio.timeout(SHOT_WAIT_S):
                    await armed.await_shot()
            except TimeoutError:
                await asyncio.to_thread(armed.cancel)
                raise HomeError(f"no moment for the kill within {SHOT_WAIT_S:g} s") from None
            await home.kill_agent()
            await home.cuff("cuff").drop_link()  # the adapter's reset (see the module doc)
        for reading in BETWEEN[2 * n : 2 * n + 2]:
            await home.measure("cuff", reading)
        await home.start_agent()


SCENARIO: Final = Scenario(
    name="sigkill-during-sync-and-upload",
    purpose="the daemon SIGKILLed mid-transfer and mid-upload loses and repeats nothing",
    devices=(Cuff("cuff", HELD, options={"delete_on_confirm": False}),),
    faults=(
        f"{KILLS} SIGKILLs (seed {SEED}), alternately at the k-th ble_measurement_received "
        f"(sync) and measurement_stored (upload) line of the daemon's log, k in {KTH_LINE}",
        "two measurements taken while the daemon is down, each time",
    ),
    drive=drive,
    receipt_timeout_s=5.0,
    timeout_s=150.0,
)
