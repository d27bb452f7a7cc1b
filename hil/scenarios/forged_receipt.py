"""A forged receipt: a receipt decides what the hub deletes, so one that is not the
platform's must delete nothing and be reported as a security event.

The platform first stores without receipting (every reading is PUBACKed and held, none
receipted). An attacker with the platform's broker credentials then sends the hub two
receipts naming exactly those envelopes: one signed with the attacker's own key
(``wrong_key``), one made by the platform and altered on the way (its signature no longer
verifies: ``forged``). The hub must log both as ``security`` events and keep every reading;
then the genuine platform receipts (the hub sends again after its receipt timeout) and the
outbox empties.
"""

from __future__ import annotations

import time
from typing import Final

from cryptography.hazmat.primitives.asymmetric import ec

from hil.platform_signing import PlatformSigner, envelope_digest
from hil.receiver import receipts_topic
from hil.scenarios.base import HUB_ID, Expect, Scenario
from hil.scenarios.devices import Cuff
from hil.scenarios.forger import publish_as_platform
from hil.scenarios.home import Home
from hil.scenarios.readings import morning_readings

HELD: Final = morning_readings(6, day=21)
RECEIPT_VALIDITY_S: Final = 600


def _held_items(home: Home) -> list[tuple[bytes, list[int]]]:
    """(digest, seqs) of every envelope the platform verified, in arrival order."""
    items: dict[bytes, list[int]] = {}
    for arrival in home.arrivals:
        items.setdefault(envelope_digest(arrival.reading.envelope), []).append(arrival.reading.seq)
    return list(items.items())


def tampered(message: bytes) -> bytes:
    """``message`` with the last octet of its signature changed (a COSE_Sign1 ends with it)."""
    return message[:-1] + bytes([message[-1] ^ 0x01])


async def drive(home: Home) -> None:
    """Forge two receipts while the platform holds everything unreceipted, then receipt."""
    await home.until(lambda: len(home.arrivals) >= len(HELD), "every reading at the platform")
    await home.until(lambda: home.pending == len(HELD), "the readings pending on the hub")
    items = _held_items(home)
    now = int(time.time())
    attacker = PlatformSigner(ec.generate_private_key(ec.SECP256R1()))
    platform = PlatformSigner.from_pem_file(home.pki.platform_key)
    forgeries = [
        attacker.receipt(HUB_ID, items, iat=now, exp=now + RECEIPT_VALIDITY_S),
        tampered(platform.receipt(HUB_ID, items, iat=now, exp=now + RECEIPT_VALIDITY_S)),
    ]
    async with home.fault("two forged receipts naming every held envelope"):
        for message in forgeries:
            await publish_as_platform(home, receipts_topic(HUB_ID), message)
        await home.until(
            lambda: len(home.agent_events("security")) >= len(forgeries),
            "the hub's security events",
        )
    pending = await home.fresh_sample()
    deletes = len(home.agent_events("measurements_delivered"))
    home.note(
        "nothing deleted by a forged receipt",
        pending == len(HELD) and deletes == 0,
        f"{pending} of {len(HELD)} readings still pending after the forgeries, {deletes} deletes",
    )
    await home.replace_platform(receipts=True)


SCENARIO: Final = Scenario(
    name="forged-receipt",
    purpose="receipts not made by the platform delete nothing and raise security events",
    devices=(Cuff("cuff", HELD),),
    faults=(
        "the platform stores without receipting",
        "a receipt signed with an attacker's key",
        "a platform receipt whose signature was altered in transit",
    ),
    drive=drive,
    needs=frozenset(),  # the forger publishes to the runner's mosquitto, as on a rig
    expect=Expect(security_checks=("forged", "wrong_key")),
    platform_receipts=False,
    receipt_timeout_s=5.0,
    timeout_s=90.0,
)
