"""Three devices measuring at the same moment: a cuff, a glucometer and a pulse oximeter in
one home hand over what they hold and then take a measurement in the same instant. The hub
holds up to three sessions at once (``ble.max_connections``); every reading must arrive once,
with its own device's values, identifiers (its System ID) and time."""

from __future__ import annotations

import asyncio
from typing import Final

from hil.emulators.encoding import DateTime
from hil.emulators.glucometer import GlucoseRecord, mg_per_dl
from hil.emulators.oximeter import SpotCheck
from hil.scenarios.base import Scenario
from hil.scenarios.devices import Cuff, Glucometer, Oximeter
from hil.scenarios.home import Home
from hil.scenarios.readings import morning_readings

CUFF_HELD: Final = morning_readings(3, first=70)
METER_HELD: Final = tuple(
    GlucoseRecord(n, DateTime(2026, 11, 25, 7, 10 + n, 0), mg_per_dl(mg))
    for n, mg in ((1, "104"), (2, "131"), (3, "97"))
)
OXIMETER_HELD: Final = (
    SpotCheck(97, 64, timestamp=DateTime(2026, 11, 25, 7, 20, 0)),
    SpotCheck(95, 71, timestamp=DateTime(2026, 11, 25, 7, 21, 0)),
)
AT_ONCE: Final = {
    "cuff": morning_readings(1, first=79)[0],
    "glucometer": GlucoseRecord(0, DateTime(2026, 11, 25, 8, 0, 0), mg_per_dl("118")),
    "oximeter": SpotCheck(96, 68, timestamp=DateTime(2026, 11, 25, 8, 0, 0)),
}


async def drive(home: Home) -> None:
    """Let each device deliver, then all three measure at once."""
    total = len(CUFF_HELD) + len(METER_HELD) + len(OXIMETER_HELD)
    await home.until(lambda: len(home.arrivals) >= total, "every held reading")
    async with home.fault("three measurements in the same instant"):
        await asyncio.gather(*(home.measure(label, r) for label, r in AT_ONCE.items()))
    # The time to recover is then the burst's: until all three are at the platform.
    await home.until(lambda: len(home.arrivals) >= total + len(AT_ONCE), "the three at once")


SCENARIO: Final = Scenario(
    name="three-devices-at-once",
    purpose="a cuff, a glucometer and an oximeter measuring at once: all arrive, each once",
    devices=(
        Cuff("cuff", CUFF_HELD),
        Glucometer("glucometer", METER_HELD),
        Oximeter("oximeter", OXIMETER_HELD),
    ),
    faults=("three devices of three kinds measure in the same instant (three sessions at once)",),
    drive=drive,
    needs=frozenset(),  # three emulated devices: three dongles on a rig
    timeout_s=60.0,
)
