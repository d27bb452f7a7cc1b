"""SIGKILL of the agent at random moments during sync and upload: a crash or a power cut must
not lose a reading that reached the outbox, nor deliver one twice after deduplication.

Two devices: a glucometer whose month of records the hub downloads over RACP (paced as a
real link paces it), its high-water mark committed with the records, so a sync killed midway
resumes where the last commit left it; and a cuff that keeps its memory and hands all of it
over at every connection (as many real cuffs do), so a reading it indicated just before a
kill, before the hub's commit, comes again. The daemon is killed :data:`KILLS` times by
hil/faults' :class:`~hil.faults.process.Killer`, alternately while readings come over the
radio and while committed readings go to the platform, and started again after each: first
at a moment drawn within the meter's first RACP download (after its request), then at the
k-th ``measurement_stored`` line of the daemon's log (upload), then at the k-th
``ble_measurement_received`` of the cuff's transfer, then at an upload again; k and the
moment are drawn by the Killer's seeded RNG. The cuff takes two measurements and the meter
one while the daemon is down. The last life is stopped with SIGTERM.

A killed daemon leaves its adapter holding the links and the connection attempt it had; the
next daemon's HCI Reset ends them (hil/virtual_radio.py's hub controller does as the spec
says), so a device connected at the kill stays connected to nobody only until the daemon is
back.
"""

from __future__ import annotations

import asyncio
from typing import Final

from hil.emulators.encoding import DateTime
from hil.emulators.glucometer import GlucoseRecord, mg_per_dl
from hil.faults.process import Armed, Killer, LinePredicate, log_event
from hil.scenarios.base import Scenario
from hil.scenarios.devices import Cuff, Glucometer
from hil.scenarios.home import Home, HomeError
from hil.scenarios.readings import morning_readings

PLAN: Final = (
    ("racp", "SIGKILL mid RACP download (the meter's first sync)"),
    ("upload", "SIGKILL during upload"),
    ("transfer", "SIGKILL during the cuff's transfer"),
    ("upload", "SIGKILL during upload"),
)
"""The kills in order (what, and how the report names its window)."""
KILLS: Final = len(PLAN)
SEED: Final = 12
RACP_DELAY_S: Final = (0.0, 0.25)
"""After the meter's RACP request was seen (within a 100 ms sampling tick): inside its
~0.45 s download of 60 records."""
TRANSFER_KTH: Final = (1, 40)
"""The k-th ``ble_measurement_received`` of a life a transfer kill lands on (uniform): the
cuff alone hands over 20 and more at each connection."""
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


async def _arm(home: Home, killer: Killer, plan: str) -> Armed:
    """Arm the kill ``plan`` names against the current life (see :data:`PLAN`): the RACP
    kill waits for the meter's request (seen by the sampler's tick), then draws its moment."""
    agent = home.agent
    if agent is None:
        raise HomeError("no daemon to kill")
    if plan == "racp":
        life = home.lives
        await home.until(
            lambda: bool(home.agent_events("gls_racp_request", life=life)),
            "the meter's RACP request",
        )
        return killer.at_random(agent.pid, RACP_DELAY_S)
    event = "ble_measurement_received" if plan == "transfer" else "measurement_stored"
    k = round(killer.draw(TRANSFER_KTH if plan == "transfer" else UPLOAD_KTH))
    return killer.on_log(agent.pid, home.agent_log(), kth(event, k), name=f"{event} #{k}")


async def drive(home: Home) -> None:
    """Kill as :data:`PLAN` says, measure, restart; once per plan."""
    killer = Killer(seed=SEED)
    for n, (plan, name) in enumerate(PLAN):
        armed = await _arm(home, killer, plan)
        async with home.fault(name):
            try:
                async with asyncio.timeout(SHOT_WAIT_S):
                    await armed.await_shot()
            except TimeoutError:
                await asyncio.to_thread(armed.cancel)
                raise HomeError(f"no moment for the kill within {SHOT_WAIT_S:g} s") from None
            await home.kill_agent()
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
        f"{KILLS} SIGKILLs (seed {SEED}): within the meter's first RACP download, at the k-th "
        f"measurement_stored (upload, k in {UPLOAD_KTH}), at the k-th ble_measurement_received "
        f"of the cuff (k in {TRANSFER_KTH}), at an upload again",
        "two cuff measurements and a glucose record taken while the daemon is down, each time",
    ),
    drive=drive,
    needs=frozenset(),  # a real adapter ends the links as the next daemon resets it
    receipt_timeout_s=5.0,
    timeout_s=150.0,
)
