"""An unknown device next door: a cuff that is not on the allow-list advertises the same
service within range. The hub must never connect to it, report it once (label only, no
address), and deliver only the patient's own cuff."""

from __future__ import annotations

from typing import Final

from hil.scenarios.base import Expect, Scenario
from hil.scenarios.devices import Cuff
from hil.scenarios.home import Home
from hil.scenarios.readings import morning_readings

OWN: Final = morning_readings(4, day=23)
NEIGHBOUR: Final = morning_readings(4, first=40, day=23)


async def drive(home: Home) -> None:
    """The neighbour advertises throughout; the patient's cuff delivers."""
    neighbour = home.cuff("neighbour")
    async with home.fault("the neighbour's cuff advertising"):
        await home.until(lambda: len(home.arrivals) >= len(OWN), "the patient's readings")
        await home.until(
            lambda: len(home.agent_events("ble_unknown_device_seen")) >= 1,
            "the neighbour reported",
        )
    home.note(
        "neighbour left alone",
        neighbour.connections == 0,
        f"{neighbour.connections} connections to the neighbour's cuff",
    )


SCENARIO: Final = Scenario(
    name="unknown-device-next-door",
    purpose="a cuff not on the allow-list is never connected and reported once",
    devices=(
        Cuff("cuff", OWN),
        Cuff("neighbour", NEIGHBOUR, allow_listed=False, options={"advertise_when_empty": True}),
    ),
    faults=("an unknown cuff advertising the Blood Pressure Service next door",),
    drive=drive,
    needs=frozenset(),
    expect=Expect(unknown_devices=1),
    quick=False,
    timeout_s=60.0,
)
