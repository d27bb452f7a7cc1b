"""The daemon's Hub with its BLE collector on the virtual radio, against the test broker: the
scaffolding of the collector and device-quirk tests (tests/test_collector.py,
tests/test_device_quirks.py)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any, Final

from agent import config
from agent.daemon import Hub
from hil.broker import Broker
from hil.pki import DevPki
from hil.receiver import Receiver, VerifiedReading
from hil.virtual_home import TIMEZONE
from hil.virtual_radio import VirtualRadio
from tests import phi_canaries

WAIT_S: Final = 30.0
"""Bound on each wait: a session here takes ~1 s, the first MQTT connection ~1 s."""

CUFF_ADDRESS: Final = phi_canaries.DEVICE_ADDRESS


def hub_config(
    tmp_path: Path,
    radio: VirtualRadio,
    pki: DevPki,
    broker: Broker,
    devices: list[dict[str, Any]],
    **ble: Any,
) -> config.Config:
    """The daemon's configuration: the virtual radio, ``devices``, the test broker; ``ble``
    overrides keys of ``[ble]``."""
    state = tmp_path / "state"
    return config.from_mapping(
        {
            "hub": {"id": pki.hub_id, "timezone": TIMEZONE, "state_dir": str(state)},
            "patient": {"id": phi_canaries.PATIENT_ID},
            "ble": {
                "stack": radio.stack,
                "scan_timeout_s": 20.0,
                "connect_timeout_s": 10.0,
                "quiet_period_s": 1.0,
                "session_timeout_s": 60.0,
                "cycle_interval_s": 0.5,
                **ble,
            },
            "devices": devices,
            "outbox": {"path": str(state / "outbox.db"), "key_file": str(tmp_path / "data.key")},
            "signing": {"key_file": str(pki.hub_key)},
            "mqtt": {
                "host": "127.0.0.1",
                "port": broker.port,
                "ca_file": str(pki.ca_cert),
                "cert_file": str(pki.hub_cert),
                "key_file": str(pki.hub_key),
                "backoff_max_s": 1.0,
                "first_connect_jitter_s": 0.0,
            },
        },
        tmp_path / "homehub.toml",
    )


def cuff_entry(**extra: Any) -> dict[str, Any]:
    """The allow-list entry of the canary cuff."""
    return {"kind": "blood_pressure", "address": CUFF_ADDRESS, "label": "cuff", **extra}


@asynccontextmanager
async def running(cfg: config.Config) -> AsyncIterator[Hub]:
    """The daemon's Hub with its BLE collector, stopped as ``homehub run`` stops it."""
    hub = Hub(cfg)
    stop = asyncio.Event()
    run = asyncio.create_task(hub.run(stop), name="test.hub")
    ready = asyncio.create_task(hub.ready.wait(), name="test.hub_ready")
    try:
        async with asyncio.timeout(WAIT_S):
            await asyncio.wait({ready, run}, return_when=asyncio.FIRST_COMPLETED)
        if not ready.done():
            run.result()
        yield hub
    finally:
        ready.cancel()
        stop.set()
        async with asyncio.timeout(WAIT_S):
            await run


async def arrive(receiver: Receiver, count: int) -> list[VerifiedReading]:
    """The next ``count`` verified readings at the receiver, in arrival order."""
    got: list[VerifiedReading] = []
    async with asyncio.timeout(WAIT_S):
        while len(got) < count:
            got.append(await receiver.readings.get())
    return got


def events_named(events: list[dict[str, Any]], name: str) -> list[dict[str, Any]]:
    """The captured log events called ``name``."""
    return [e for e in events if e.get("event") == name]
