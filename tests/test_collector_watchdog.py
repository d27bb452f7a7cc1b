"""The collector's scan and its adapter watchdog on the Bumble virtual radio (agent/ble/
collector.py): the Collector itself, with the daemon's session replaced by a recorder (the
session is tested through the Hub in tests/test_collector.py) and the adapter's power switch
by a named test double (no hardware here)."""

from __future__ import annotations

import asyncio
import dataclasses
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Final

import pytest
from bleak.backends.device import BLEDevice
from structlog.testing import capture_logs

from agent.ble.collector import Collector, bluez_or_patterns
from agent.ble.stack import BleStack
from agent.config import BleConfig, DeviceConfig
from agent.retry import KeyedBackoff
from hil.emulators.cuff import BpReading
from hil.emulators.encoding import DateTime
from hil.emulators.glucometer import Glucometer, example_records
from hil.virtual_radio import VirtualRadio

pytestmark = pytest.mark.timeout(60)

WAIT_S: Final = 20.0
CUFF: Final = DeviceConfig(kind="blood_pressure", address="F0:00:00:00:10:01", label="cuff")
READING: Final = BpReading(120, 80, 93, time_stamp=DateTime(2026, 11, 30, 9, 0, 0))


def settings(stack: str, **override: float) -> BleConfig:
    """``[ble]`` as the daemon reads it; the watchdog's quiet time shortened for the test
    (the configuration's floor of 30 s is for homes, not for this radio)."""
    base = BleConfig(
        stack=stack,
        scan_timeout_s=5.0,
        connect_timeout_s=5.0,
        quiet_period_s=1.0,
        session_timeout_s=30.0,
        cycle_interval_s=0.5,
    )
    return dataclasses.replace(base, **override)


class PowerSwitch:
    """Test double for the adapter's power cycle (a USB port's power or BlueZ's Powered)."""

    def __init__(self) -> None:
        self.cycles = 0
        self.cycled = asyncio.Event()

    async def __call__(self) -> None:
        self.cycles += 1
        self.cycled.set()


@asynccontextmanager
async def collecting(
    ble: BleStack, cfg: BleConfig, switch: PowerSwitch
) -> AsyncIterator[tuple[Collector, list[tuple[str, str]], asyncio.Event]]:
    found: list[tuple[str, str]] = []
    started = asyncio.Event()

    async def session(device: DeviceConfig, seen: BLEDevice) -> None:
        found.append((device.label, seen.address.upper()))
        started.set()

    stop = asyncio.Event()
    collector = Collector(ble, cfg, [CUFF], session, KeyedBackoff(), stop, power_cycle=switch)
    task = asyncio.create_task(collector.run(), name="test.collector")
    try:
        yield collector, found, started
    finally:
        stop.set()
        ble.request_stop()
        async with asyncio.timeout(WAIT_S):
            await task


async def test_quiet_adapter_restarts_scan_then_power_cycles_and_scan_still_works() -> None:
    """No advertisement at all for adapter_quiet_s: the scan is restarted, then the adapter
    power-cycled; a device advertising afterwards is still found and its session started."""
    switch = PowerSwitch()
    async with VirtualRadio() as radio, BleStack.open(radio.stack) as ble:
        cfg = settings(radio.stack, adapter_quiet_s=0.3)
        with capture_logs() as events:
            async with collecting(ble, cfg, switch) as (collector, found, started):
                async with asyncio.timeout(WAIT_S):
                    await switch.cycled.wait()
                assert collector.watchdog.restarts >= 1
                await radio.add_cuff([READING], address=CUFF.address)
                async with asyncio.timeout(WAIT_S):
                    await started.wait()
    assert found[0] == ("cuff", CUFF.address)
    quiet = [e["action"] for e in events if e["event"] == "ble_adapter_quiet"]
    assert quiet[:2] == ["restart_scan", "power_cycle"]
    assert switch.cycles == 1  # at most one an hour


async def test_no_session_for_a_device_of_another_kind_at_an_allowed_address() -> None:
    """An allow-listed cuff address advertising a glucose service is not connected."""
    switch = PowerSwitch()
    async with VirtualRadio() as radio, BleStack.open(radio.stack) as ble:
        device = await radio.add_peripheral_device(CUFF.address, "glucometer")
        meter = Glucometer(device, example_records())
        await meter.start()
        try:
            async with collecting(ble, settings(radio.stack), switch) as (collector, found, _):
                for _ in range(3):  # three of its advertisements decided on
                    collector.heard.clear()
                    async with asyncio.timeout(WAIT_S):
                        await collector.heard.wait()
        finally:
            await meter.stop()
    assert found == []
    assert meter.connections == 0


def test_bluez_patterns_cover_the_configured_kinds_only() -> None:
    """BlueZ's passive scan matches the 16-bit service UUID of each configured kind, in the
    complete and incomplete lists, at the first three positions (CSS Part A §1.1)."""
    patterns = bluez_or_patterns([CUFF])
    assert {p.content_of_pattern for p in patterns} == {bytes.fromhex("1018")}
    assert sorted({p.start_position for p in patterns}) == [0, 2, 4]
    assert {int(p.ad_data_type) for p in patterns} == {0x02, 0x03}
    assert len(patterns) == 6
