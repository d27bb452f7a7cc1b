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
from structlog.testing import capture_logs

from agent import config, daemon, wall_clock
from agent.daemon import _power_cycle
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
        async with asyncio.timeout(T):
            await hub.modem_state_written.wait()
        # homehub status, while the daemon holds the port: the figures it last saw, without
        # the identifiers, in a private file.
        shown = daemon.status(config.load(path))["modem"]
        written = path.parent / "state" / "modem_status.json"
        assert 0o600 == written.stat().st_mode & 0o777
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
    assert "at" == shown["backend"]
    figures = shown["figures"]
    assert ("home", "LTE", -90, 15, "RM500Q-GL") == (
        figures["registration"],
        figures["technology"],
        figures["rsrp_dbm"],
        figures["sinr_db"],
        figures["model"],
    )
    assert (None, None) == (figures["imei"], figures["iccid"])
    assert shown["as_of"] is not None
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
    assert {"backend": "none"} == daemon.status(config.load(path))["modem"]


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
            # Readings are stamped with the network's time meanwhile (agent/wall_clock.py).
            correction = wall_clock.current_correction()
            assert correction is not None
            assert abs(correction - timedelta(days=2)) < timedelta(minutes=2)
            assert abs(wall_clock.now() - two_days_on) < timedelta(minutes=2)
        assert wall_clock.current_correction() is None  # cleared when the daemon stops
    assert ("clock_unsynced", "network_time") == (event.body["event"], event.body["check"])


class TestPowerCycleCommand:
    """``[modem] power_cycle_command``: the ladder's last rung runs it, bounded, logged by
    exit status only (agent/daemon.py ``_power_cycle``)."""

    @staticmethod
    def script(tmp_path: Path, body: str) -> Path:
        path = tmp_path / "power-cycle"
        path.write_text(f"#!/bin/sh\n{body}\n")
        path.chmod(0o700)
        return path

    async def test_it_runs(self, tmp_path: Path) -> None:
        marker = tmp_path / "cycled"
        with capture_logs() as logs:
            await _power_cycle(self.script(tmp_path, f'echo secret > "{marker}"'))
        assert "secret\n" == marker.read_text()
        assert ["modem_power_cycled"] == [e["event"] for e in logs]

    async def test_a_failing_command_is_logged_by_status(self, tmp_path: Path) -> None:
        with capture_logs() as logs:
            await _power_cycle(self.script(tmp_path, "echo noisy >&2; exit 3"))
        assert [("modem_power_cycle_failed", "exit status", 3)] == [
            (e["event"], e["reason"], e["status"]) for e in logs
        ]

    async def test_a_hanging_command_is_killed(
        self, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        """The clock edge: the 60 s bound shortened to 0.2 s (named mock)."""
        monkeypatch.setattr(daemon, "POWER_CYCLE_TIMEOUT_S", 0.2)
        with capture_logs() as logs:
            await _power_cycle(self.script(tmp_path, "exec sleep 600"))
        assert [("modem_power_cycle_failed", "timeout")] == [
            (e["event"], e["reason"]) for e in logs
        ]

    async def test_a_missing_command(self, tmp_path: Path) -> None:
        with capture_logs() as logs:
            await _power_cycle(tmp_path / "absent")
        assert ["modem_power_cycle_failed"] == [e["event"] for e in logs]

    def test_configured_only_with_an_at_modem(self, tmp_path: Path) -> None:
        example = Path(__file__).resolve().parents[1] / "config" / "homehub.example.toml"
        path = tmp_path / "h.toml"
        path.write_text(
            example.read_text().replace(
                'backend = "none"', 'backend = "none"\npower_cycle_command = "/bin/true"', 1
            )
        )
        with pytest.raises(config.ConfigError) as refused:
            config.load(path)
        assert ("modem.power_cycle_command", "only with a modem (backend 'at')") == (
            refused.value.key,
            refused.value.reason,
        )
