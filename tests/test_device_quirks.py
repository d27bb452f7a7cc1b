"""Device quirks through the daemon's own Hub and collector (issue 8, "Emulators: quirks and
adversaries, each a switch"): each quirk's readings are stored once and arrive with exact
values, flagged where the device sent something no healthy device sends.

Scaffolding: tests/collector_home.py (the Hub with its BLE collector on the Bumble virtual
radio, real outbox, TLS mosquitto, reference receiver). Nothing sleeps to synchronise.
"""

from __future__ import annotations

from decimal import Decimal
from pathlib import Path
from typing import Any, Final

import pytest

from hil.broker import Broker
from hil.emulators.cuff import BpReading
from hil.emulators.encoding import DateTime
from hil.pki import DevPki
from hil.receiver import Receiver
from hil.virtual_home import summarize
from hil.virtual_radio import VirtualRadio
from tests.collector_home import CUFF_ADDRESS, arrive, cuff_entry, hub_config, running

pytestmark = pytest.mark.timeout(120)

NO_MAP: Final = BpReading(126, 81, None, pulse_rate=68, time_stamp=DateTime(2026, 11, 30, 7, 45, 0))
"""A reading whose cuff did not compute a mean arterial pressure."""


def _map_component(payload: dict[str, Any]) -> dict[str, Any]:
    resources = [e["resource"] for e in payload["fhir"]["entry"]]
    panel = next(r for r in resources if r["code"]["coding"][0]["code"] == "150020")
    return next(c for c in panel["component"] if c["code"]["coding"][0]["code"] == "150023")


async def test_unused_map_sent_as_zero_is_kept_and_flagged(
    tmp_path: Path, dev_pki: DevPki, broker: Broker, receiver: Receiver
) -> None:
    """A cuff that sends 0 for a mean arterial pressure it did not compute (BPS asks for NaN):
    the reading is stored once and arrives with MAP 0 flagged implausible (kept as sent: the
    clinical call is the platform's, reliability-catalogue B4); a NaN MAP from a cuff that
    follows the spec arrives as absent, never as 0."""
    async with VirtualRadio() as radio:
        cfg = hub_config(tmp_path, radio, dev_pki, broker, [cuff_entry()])
        async with running(cfg) as hub:
            quirky = await radio.add_cuff([NO_MAP], address=CUFF_ADDRESS, unused_as_zero=True)
            (zero,) = await arrive(receiver, 1)
            await quirky.stop()
            proper = await radio.add_cuff([NO_MAP], address=CUFF_ADDRESS)
            (absent,) = await arrive(receiver, 1)
            await proper.stop()
            assert hub.stored == 2
    assert quirky.confirmed_values == [
        bytes(BpReading(126, 81, 0, pulse_rate=68, time_stamp=NO_MAP.time_stamp))
    ]
    assert summarize(zero).mean == Decimal(0)
    flags = [c["code"] for i in _map_component(zero.payload)["interpretation"] for c in i["coding"]]
    assert "value-implausible" in flags
    assert summarize(absent).mean is None
    assert _map_component(absent.payload)["dataAbsentReason"]["coding"][0]["code"] == "not-a-number"
    assert receiver.readings.empty()
