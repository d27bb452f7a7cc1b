"""The patient's status indicator driven by the daemon (agent/indicator/, ``backend = "log"``).

The daemon (:class:`agent.daemon.Hub`, in this process) against a real TLS mosquitto: it shows
*starting* before its pipeline is up, *all well* once it is, *syncing* while a reading waits
for the platform online, and *needs attention* once an outage has lasted long enough. One
named injection: the outage threshold is 2 s here (a hub's configuration keeps it at 10
minutes or more; 6 hours by default). A hub whose disk is unusable at start shows *fault*.
The tests wait for the daemon's "shown" signal, never for time.
"""

from __future__ import annotations

import asyncio
import dataclasses
from pathlib import Path
from typing import Final

import pytest
from structlog.testing import capture_logs

from agent import config, hub_state, instance_lock
from agent.config import IndicatorConfig
from agent.daemon import Hub
from agent.indicator import IndicatorState
from agent.status_report import status
from hil.broker import Broker
from hil.crash_child import DEVICE, DEVICE_CONFIG, raw_measurement
from hil.pki import DevPki
from tests.example_config import example_config
from tests.platform_hub import running_hub, write_hub_config
from tests.test_end_to_end_receipts import _closed_port

pytestmark = pytest.mark.timeout(60)

T: Final = 20.0
OFFLINE_ATTENTION_S: Final = 2.0


async def _until_shown(hub: Hub, state: IndicatorState) -> None:
    async with asyncio.timeout(T):
        while hub.indicator_state is not state:
            hub.indicator_shown.clear()
            if hub.indicator_state is state:
                return
            await hub.indicator_shown.wait()


def _shown(logs: list[dict[str, object]]) -> list[object]:
    return [e["state"] for e in logs if e["event"] == "indicator_state"]


async def test_starting_all_well_syncing_then_attention_after_a_long_outage(
    tmp_path: Path, dev_pki: DevPki, broker: Broker, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = write_hub_config(tmp_path, dev_pki, broker.port)
    path.write_text(path.read_text() + '\n[indicator]\nbackend = "log"\n')
    cfg = config.load(path)
    assert "log" == cfg.indicator.backend
    cfg = dataclasses.replace(  # the named injection: a 2 s outage is "long"
        cfg, indicator=dataclasses.replace(cfg.indicator, offline_attention_s=OFFLINE_ATTENTION_S)
    )
    monkeypatch.setattr(hub_state, "WRITE_MIN_INTERVAL_S", 0.05)  # homehub status at once
    hub = Hub(cfg, collect=False)
    stop = asyncio.Event()
    with capture_logs() as logs, instance_lock.hold(cfg.hub.state_dir):
        running = asyncio.create_task(hub.run(stop), name="test.hub")
        try:
            async with asyncio.timeout(T):
                await hub.ready.wait()
                uplink = hub.uplink
                assert uplink is not None
                await uplink.connected.wait()
            await _until_shown(hub, IndicatorState.ALL_WELL)
            # Online with a reading the platform has not receipted (none listens): syncing.
            await hub.receive(raw_measurement(0), DEVICE, DEVICE_CONFIG)
            await _until_shown(hub, IndicatorState.SYNCING)
            went_offline = asyncio.get_running_loop().time()
            await broker.astop()
            await _until_shown(hub, IndicatorState.NEEDS_ATTENTION)
            took_s = asyncio.get_running_loop().time() - went_offline
            # What the light shows, homehub status shows the technician.
            async with asyncio.timeout(T):
                while True:
                    hub.hub_state_written.clear()
                    shown = status(cfg)["indicator"]
                    if shown["state"] == "needs_attention":
                        break
                    await hub.hub_state_written.wait()
            assert {"backend": "log", "state": "needs_attention"} == shown
        finally:
            stop.set()
            async with asyncio.timeout(T):
                await running
    states = _shown(logs)
    assert ["starting", "all_well", "syncing"] == states[:3]
    # A short outage with the reading safe in the outbox is all well; a long one is not.
    assert states[3:] in (["all_well", "needs_attention"], ["needs_attention"])
    assert took_s >= OFFLINE_ATTENTION_S - 0.5  # not before the outage was long enough


async def test_an_unusable_disk_at_start_is_a_fault(tmp_path: Path) -> None:
    blocker = tmp_path / "state"
    blocker.write_text("a file where the state directory should be")
    cfg = dataclasses.replace(
        example_config(tmp_path, outbox_path=blocker / "outbox.db"),
        indicator=IndicatorConfig(backend="log"),
    )
    stop = asyncio.Event()
    stop.set()  # stop while waiting for the disk
    hub = Hub(cfg)
    with capture_logs() as logs:
        async with asyncio.timeout(T):
            await hub.run(stop)
    assert ["starting", "fault"] == _shown(logs)
    assert IndicatorState.FAULT is hub.indicator_state


async def test_a_supervised_part_in_its_restart_backoff_is_a_fault(
    tmp_path: Path, dev_pki: DevPki, broker: Broker, monkeypatch: pytest.MonkeyPatch
) -> None:
    """``[modem] backend = "modemmanager"`` on a system without a D-Bus system bus (a real
    absence: the bus address names a socket nobody listens on): ModemManager cannot be
    reached, the daemon backs off and tries again, and while it does the indicator says
    *fault*. Readings meanwhile are stored as ever."""
    monkeypatch.setenv("DBUS_SYSTEM_BUS_ADDRESS", f"unix:path={tmp_path / 'no-bus'}")
    path = write_hub_config(tmp_path, dev_pki, broker.port)
    path.write_text(
        path.read_text() + '\n[indicator]\nbackend = "log"\n\n[modem]\nbackend = "modemmanager"\n'
    )
    stored = Stored()
    hub = Hub(config.load(path), collect=False, observer=stored)
    stop = asyncio.Event()
    with capture_logs() as logs:
        running = asyncio.create_task(hub.run(stop), name="test.hub")
        try:
            await _until_shown(hub, IndicatorState.FAULT)
            await hub.receive(raw_measurement(0), DEVICE, DEVICE_CONFIG)
            async with asyncio.timeout(T):
                await stored.one.wait()  # the pipeline runs on beside the failing part
        finally:
            stop.set()
            async with asyncio.timeout(T):
                await running
    assert any(e["event"] == "modemmanager_unavailable" for e in logs)
    assert ["starting", "fault"] == _shown(logs)[:2]
    assert 1 == hub.stored


class Stored:
    """The hub's observer: set once a reading's transaction committed."""

    def __init__(self) -> None:
        self.one = asyncio.Event()

    def stored(self, arrival: object, fate: object) -> None:
        del arrival, fate
        self.one.set()

    def delivered(self, seqs: object) -> None:
        del seqs


async def test_a_device_is_overdue_after_three_days_without_a_reading(
    tmp_path: Path, dev_pki: DevPki
) -> None:
    """Judged by the monotonic clock (a Pi without an RTC has its wall clock set by NTP after
    the boot): the clock is the injection here, ``now`` handed to :meth:`Hub.condition`."""
    import time

    from agent.daemon import DEVICE_OVERDUE_S
    from agent.outbox import OutboxCounts

    path = write_hub_config(tmp_path, dev_pki, _closed_port())  # offline all along
    path.write_text(
        path.read_text()
        + f'\n[[devices]]\nkind = "blood_pressure"\naddress = "{DEVICE_CONFIG.address}"\n'
        + f'label = "{DEVICE_CONFIG.label}"\n'
    )
    stored = Stored()
    counts = OutboxCounts(pending=0, oldest_age_s=None)
    async with running_hub(path, observer=stored) as hub:
        start = time.monotonic()
        assert not hub.condition(counts, start + DEVICE_OVERDUE_S - 60).device_overdue
        assert hub.condition(counts, start + DEVICE_OVERDUE_S + 60).device_overdue
        # After a reading of the device: overdue 72 h after it.
        await hub.receive(raw_measurement(0), DEVICE, DEVICE_CONFIG)
        async with asyncio.timeout(T):
            await stored.one.wait()
        later = time.monotonic()
        assert not hub.condition(counts, later + DEVICE_OVERDUE_S - 60).device_overdue
        assert hub.condition(counts, later + DEVICE_OVERDUE_S + 60).device_overdue
        condition = hub.condition(counts, later)
        assert (True, True, False) == (
            condition.started,
            condition.storage_usable,
            condition.online,
        )
