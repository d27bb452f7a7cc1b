"""Three devices measuring at the same moment: three cuffs in one home (a patient and two
relatives, each on the allow-list) hand over what they hold and then take a measurement in
the same instant. The hub holds up to three sessions at once (``ble.max_connections``); every
reading must arrive once, attributed to its own device (System ID in its identifiers)."""

from __future__ import annotations

import asyncio
from typing import Final

from hil.scenarios.base import Scenario
from hil.scenarios.devices import Cuff
from hil.scenarios.home import Home
from hil.scenarios.readings import morning_readings

LABELS: Final = ("cuff-a", "cuff-b", "cuff-c")
HELD: Final = {label: morning_readings(3, first=70 + 10 * n) for n, label in enumerate(LABELS)}
AT_ONCE: Final = {
    label: morning_readings(1, first=75 + 10 * n)[0] for n, label in enumerate(LABELS)
}


async def drive(home: Home) -> None:
    """Let each cuff deliver, then all three measure at once."""
    total = sum(len(r) for r in HELD.values())
    await home.until(lambda: len(home.arrivals) >= total, "every held reading")
    async with home.fault("three measurements in the same instant"):
        await asyncio.gather(*(home.measure(label, r) for label, r in AT_ONCE.items()))
        await home.until(lambda: len(home.arrivals) >= total + len(LABELS), "the three at once")


SCENARIO: Final = Scenario(
    name="three-devices-at-once",
    purpose="three allow-listed devices measuring at the same moment: all arrive, each once",
    devices=tuple(Cuff(label, HELD[label]) for label in LABELS),
    faults=("three cuffs measure in the same instant (three sessions at once)",),
    drive=drive,
    timeout_s=60.0,
)
