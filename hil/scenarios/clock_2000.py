"""A device whose clock is in the year 2000: its battery was changed and its clock restarted
at 2000-01-01 00:00:00. Its readings carry year-2000 time stamps; the hub reads its Current
Time (CTS) at connection and maps them onto its own timeline through the coincident timestamp,
flags the clock as unset, and leaves out the IG identifier (a reset clock repeats time
stamps). The platform must see every reading once, at a time within minutes of now, never in
2000."""

from __future__ import annotations

import dataclasses
from typing import Final

from hil.emulators.cuff import BpReading
from hil.emulators.encoding import DateTime
from hil.emulators.peripheral import EmulatedClock
from hil.scenarios.base import Scenario
from hil.scenarios.devices import Cuff
from hil.scenarios.home import Home, HomeError
from hil.scenarios.readings import morning_readings


def _stamped(readings: tuple[BpReading, ...]) -> tuple[BpReading, ...]:
    """The readings as a clock reset to 2000-01-01 stamped them, in its first seconds."""
    return tuple(
        dataclasses.replace(r, time_stamp=DateTime(2000, 1, 1, 0, 0, n))
        for n, r in enumerate(readings)
    )


HELD: Final = _stamped(morning_readings(4, first=50))
LATER: Final = morning_readings(2, first=60)


async def drive(home: Home) -> None:
    """Hand over what it holds, then measure twice more, stamped by its own (2000) clock."""
    await home.until(lambda: len(home.arrivals) >= len(HELD), "the held readings")
    cuff = home.cuff("cuff")
    clock = cuff.clock
    if clock is None:
        raise HomeError("the cuff has no clock")
    for reading in LATER:
        now = clock.read()
        if now is None or now.year != 2000:
            raise HomeError("the cuff's clock is not in the year 2000")
        stamp = DateTime(now.year, now.month, now.day, now.hour, now.minute, now.second)
        await home.measure("cuff", dataclasses.replace(reading, time_stamp=stamp))


SCENARIO: Final = Scenario(
    name="clock-year-2000",
    purpose="a cuff whose clock restarted in 2000: readings land on the hub's timeline",
    devices=(
        Cuff(
            "cuff",
            HELD,
            options={"clock": EmulatedClock.after_battery_change()},
            trusted_time=False,
        ),
    ),
    faults=("the cuff's clock restarted at 2000-01-01 00:00:00 (battery change)",),
    drive=drive,
    needs=frozenset(),  # the cuff's clock is its emulator's
    timeout_s=60.0,
)
