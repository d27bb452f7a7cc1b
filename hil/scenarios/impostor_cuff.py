"""The impersonating cuff: another device at an allow-listed cuff's address, with its own
Device Information, must be hung up on before any of its readings is accepted.

The genuine cuff hands over its readings; the hub pins its identity with the first one (trust
on first use). The genuine cuff then leaves the air and an impostor takes its address,
advertising the same service and holding readings of its own. The hub must refuse it
(``security`` event, check ``identity``), confirm none of its readings and store none; the
breaker keeps it away for minutes, so it is reported once.
"""

from __future__ import annotations

from typing import Final

from hil.scenarios.base import Expect, Scenario
from hil.scenarios.devices import Cuff
from hil.scenarios.home import Home
from hil.scenarios.readings import morning_readings

GENUINE: Final = morning_readings(4, day=22)
IMPOSTOR: Final = morning_readings(3, first=30, day=22)


async def drive(home: Home) -> None:
    """Genuine first, then the impostor at its address."""
    await home.until(lambda: len(home.arrivals) >= len(GENUINE), "the genuine cuff's readings")
    await home.until(lambda: home.pending == 0, "the genuine readings receipted")
    async with home.fault("an impostor at the cuff's address"):
        await home.remove_device("cuff")
        impostor = await home.add_device(home.scenario.device("impostor"))
        await home.until(
            lambda: len(home.agent_events("security")) >= 1, "the hub refusing the impostor"
        )
        await home.remove_device("impostor")
    home.note(
        "impostor's readings refused",
        impostor.confirmations == 0,
        f"{impostor.connections} connections, {impostor.confirmations} readings confirmed",
    )


SCENARIO: Final = Scenario(
    name="impostor-cuff",
    purpose="a device impersonating the allow-listed cuff is refused before any reading",
    devices=(
        Cuff("cuff", GENUINE),
        Cuff("impostor", IMPOSTOR, impostor_of="cuff", starts=False),
    ),
    faults=("the genuine cuff leaves; an impostor with other DIS takes its address",),
    drive=drive,
    needs=frozenset(),  # remove_device on a rig resets and releases the device's dongle
    expect=Expect(security_checks=("identity",)),
    quick=True,
    timeout_s=90.0,
)
