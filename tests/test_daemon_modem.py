"""The daemon with a cellular module (``[modem] backend = "at"``): its link runs beside the
pipeline and the signed status message carries the link's health, not its identifiers.

The daemon's own :class:`agent.daemon.Hub` (tests/platform_hub.py), a real TLS mosquitto, the
platform console verifying the status it publishes, and the modem emulator on a
pseudo-terminal (hil/emulators/modem.py) at its defaults: an RM500Q registered at home on
LTE, band 3, -90 dBm / -10 dB / 15 dB / -60 dBm.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Final

import pytest

from agent import config
from agent.status_messages import MODEM_STATUS_KEYS
from hil.broker import Broker
from hil.emulators.modem import EmulatedModem
from hil.emulators.modem_at import ModemState
from hil.pki import DevPki
from hil.platform_console import HubMessage, PlatformConsole
from tests.platform_hub import running_hub, write_hub_config

pytestmark = pytest.mark.timeout(120)

T: Final = 30.0


@pytest.fixture
def modem(tmp_path: Path) -> Iterator[EmulatedModem]:
    """At the real time: the hub's clock and the network's agree."""
    with EmulatedModem(tmp_path, ModemState(utc_now=lambda: datetime.now(UTC))) as emulated:
        yield emulated


@pytest.fixture
async def console(dev_pki: DevPki, broker: Broker) -> AsyncIterator[PlatformConsole]:
    async with PlatformConsole.for_dev_pki(dev_pki, broker.port) as running:
        async with asyncio.timeout(T):
            await running.subscribed.wait()
        yield running


def _online(m: HubMessage) -> bool:
    return m.kind == "status" and m.body["state"] == "online"


async def test_the_status_carries_the_links_health(
    tmp_path: Path,
    dev_pki: DevPki,
    broker: Broker,
    console: PlatformConsole,
    modem: EmulatedModem,
) -> None:
    path = write_hub_config(tmp_path, dev_pki, broker.port)
    path.write_text(path.read_text() + f'\n[modem]\nbackend = "at"\nport = "{modem.path}"\n')
    assert "at" == config.load(path).modem.backend
    async with running_hub(path) as hub:
        async with asyncio.timeout(T):
            await console.wait_for(_online)
            await hub.modem_changed.wait()  # the link's first round is done
            seen = len(console.messages)
            reply = await console.ask(dev_pki.hub_id, "report_status")
            status = await console.wait_for(_online, after=seen)
        assert reply.body["ok"] is True
        assert hub.modem is not None
        assert hub.hub_clock_problem() is None
    assert {
        "registration": "home",
        "technology": "LTE",
        "band": 3,
        "rsrp_dbm": -90,
        "rsrq_db": -10,
        "sinr_db": 15,
        "rssi_dbm": -60,
        "last_recovery": None,
    } == status.body["modem"]
    assert set(MODEM_STATUS_KEYS) == set(status.body["modem"])
    # The module was asked, and nothing of it reached the status that identifies it.
    assert modem.state.count("AT+CGSN") >= 1
    assert "860000000000017" not in repr(status.body)


async def test_without_a_modem_the_status_has_none(
    tmp_path: Path, dev_pki: DevPki, broker: Broker, console: PlatformConsole
) -> None:
    path = write_hub_config(tmp_path, dev_pki, broker.port)
    async with running_hub(path) as hub:
        async with asyncio.timeout(T):
            status = await console.wait_for(_online)
        assert hub.modem is None
    assert "modem" not in status.body


async def test_a_hub_clock_far_from_the_networks_raises_clock_unsynced(
    tmp_path: Path, dev_pki: DevPki, broker: Broker, console: PlatformConsole
) -> None:
    """The network's time (NITZ, +QLTS) two days from the hub's clock: a clock_unsynced event
    naming the check, and the hub's clock is not trusted (no device clock is set from it)."""
    two_days_on = datetime.now(UTC) + timedelta(days=2)
    with EmulatedModem(tmp_path, ModemState(utc_now=lambda: two_days_on)) as emulated:
        path = write_hub_config(tmp_path, dev_pki, broker.port)
        path.write_text(path.read_text() + f'\n[modem]\nbackend = "at"\nport = "{emulated.path}"\n')
        async with running_hub(path) as hub:
            async with asyncio.timeout(T):
                event = await console.wait_for(lambda m: m.kind == "events")
            assert "network_time" == hub.hub_clock_problem()
    assert ("clock_unsynced", "network_time") == (event.body["event"], event.body["check"])
