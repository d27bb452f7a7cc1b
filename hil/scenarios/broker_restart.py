"""Broker restarted without persistence: what mosquitto acknowledged and had not delivered is
gone, and only the platform's receipts delete a reading on the hub, so nothing is lost.

The cuff hands over its memory; as soon as the first reading reaches the platform, mosquitto
(persistence off) is stopped, the cuff takes three more measurements while it is down (the
outbox grows), and mosquitto starts again empty: no session, no queued message. The hub
reconnects and sends again what no receipt named; the platform deduplicates by id.
"""

from __future__ import annotations

from typing import Final

from hil.scenarios.base import Scenario
from hil.scenarios.devices import Cuff
from hil.scenarios.home import Home
from hil.scenarios.readings import morning_readings

HELD: Final = morning_readings(12)
LATER: Final = morning_readings(3, first=12)


async def drive(home: Home) -> None:
    """Stop mosquitto mid-transfer, measure while it is down, start it again empty."""
    cuff = home.cuff("cuff")
    await home.until(lambda: len(home.arrivals) >= 1, "the first reading at the platform")
    async with home.fault("broker down, restarted without persistence"):
        await home.stop_broker()
        for reading in LATER:
            await home.measure("cuff", reading)
        total = len(HELD) + len(LATER)
        await home.until(lambda: cuff.confirmations >= total, "every reading handed to the hub")
        await home.until(
            lambda: len(home.agent_events("measurement_stored")) >= total,
            "every reading committed to the outbox",
        )
        await home.start_broker()


SCENARIO: Final = Scenario(
    name="broker-restart-no-persistence",
    purpose="mosquitto restarted empty mid-transfer: every reading still arrives exactly once",
    devices=(Cuff("cuff", HELD),),
    faults=(
        "mosquitto stopped right after the first reading reached the platform",
        "three measurements taken while it is down",
        "mosquitto started again without persistence (sessions and queued messages gone)",
    ),
    drive=drive,
    needs=frozenset(),  # the rig's broker is the runner's mosquitto too
    quick=True,
    broker_persistence=False,
    receipt_timeout_s=5.0,
    timeout_s=90.0,
)
