"""Device quirks through the daemon's own Hub and collector (issue 8, "Emulators: quirks and
adversaries, each a switch"): each quirk's readings are stored once and arrive with exact
values, flagged where the device sent something no healthy device sends.

Scaffolding: tests/collector_home.py (the Hub with its BLE collector on the Bumble virtual
radio, real outbox, TLS mosquitto, reference receiver). Nothing sleeps to synchronise.
"""

from __future__ import annotations

import asyncio
from decimal import Decimal
from pathlib import Path
from typing import Any, Final

import pytest
from structlog.testing import capture_logs

from hil.broker import Broker
from hil.emulators.cuff import BpReading, EmulatedCuff
from hil.emulators.encoding import DateTime
from hil.emulators.quirks import slow_setup
from hil.pki import DevPki
from hil.receiver import Receiver
from hil.virtual_home import summarize
from hil.virtual_radio import VirtualRadio
from tests.collector_home import (
    CUFF_ADDRESS,
    WAIT_S,
    arrive,
    cuff_entry,
    events_named,
    hub_config,
    running,
)

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


@pytest.mark.parametrize(("delay_s", "connect_timeout_s"), [(2.0, 10.0), (3.0, 1.0)])
async def test_slow_connection_setup(
    tmp_path: Path,
    dev_pki: DevPki,
    broker: Broker,
    receiver: Receiver,
    delay_s: float,
    connect_timeout_s: float,
) -> None:
    """A cuff that answers the set-up (MTU exchange) late: within ``ble.connect_timeout_s``
    its reading is collected; beyond it the session fails as a link error (``connect timed
    out``), the device backs off by its own delay, and the cuff still holds its reading
    (nothing was confirmed, so nothing is lost)."""
    async with VirtualRadio() as radio:
        cfg = hub_config(
            tmp_path, radio, dev_pki, broker, [cuff_entry()], connect_timeout_s=connect_timeout_s
        )
        with capture_logs() as events:
            async with running(cfg) as hub:
                device = await radio.add_peripheral_device(CUFF_ADDRESS, "cuff")
                slow = slow_setup(device, delay_s)
                cuff = EmulatedCuff(device, [NO_MAP])
                await cuff.start()
                try:
                    if connect_timeout_s > delay_s:
                        await arrive(receiver, 1)
                    async with asyncio.timeout(WAIT_S):
                        await hub.session_done.wait()
                    assert hub.stored == (1 if connect_timeout_s > delay_s else 0)
                finally:
                    await cuff.stop()
    assert slow.delayed >= 1
    if connect_timeout_s > delay_s:
        assert cuff.stored == ()
        assert events_named(events, "ble_session_done")[0]["measurements"] == 1
    else:
        assert cuff.stored == (NO_MAP,)
        failed = events_named(events, "ble_session_failed")[0]
        assert failed["reason"] == "..:12:34: connect timed out"
        assert failed["retry_in_s"] >= 0
        assert receiver.readings.empty()
