"""An offline hub idles: while the broker cannot be reached, the publisher waits for the
uplink instead of spinning (found by the BLE bench: ``_until_connected`` awaited an event
that was already set, so an offline hub burned a whole core and slowed storing).

The daemon's own Hub runs with its real outbox and uplink against a loopback port nobody
listens on; readings are stored meanwhile. The process's CPU time over the wait is compared
with the wall time of the same wait: a spinning loop uses all of it, an idle one a sliver.
CPU time counts only this process, so a busy neighbour on the machine does not move it.
"""

from __future__ import annotations

import asyncio
import socket
import time
from pathlib import Path
from typing import Final

import pytest

from agent import config
from agent.daemon import Hub
from hil.crash_child import DEVICE, DEVICE_CONFIG, raw_measurement
from hil.pki import DevPki
from tests import phi_canaries

pytestmark = pytest.mark.timeout(60)

WAIT_S: Final = 20.0
ATTEMPTS: Final = 6
"""Connection attempts waited for: with the 0.05-0.5 s backoff, about 1-2 s offline."""


def _closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


async def test_offline_hub_does_not_spin(tmp_path: Path, dev_pki: DevPki) -> None:
    state = tmp_path / "state"
    cfg = config.from_mapping(
        {
            "hub": {"id": dev_pki.hub_id, "state_dir": str(state)},
            "patient": {"id": phi_canaries.PATIENT_ID},
            "outbox": {"path": str(state / "outbox.db"), "key_file": str(tmp_path / "data.key")},
            "signing": {"key_file": str(dev_pki.hub_key)},
            "mqtt": {
                "host": "127.0.0.1",
                "port": _closed_port(),
                "ca_file": str(dev_pki.ca_cert),
                "cert_file": str(dev_pki.hub_cert),
                "key_file": str(dev_pki.hub_key),
                "backoff_max_s": 1.0,
                "first_connect_jitter_s": 0.0,
            },
        },
        tmp_path / "homehub.toml",
    )
    hub = Hub(cfg, collect=False)
    stop = asyncio.Event()
    run = asyncio.create_task(hub.run(stop), name="test.hub")
    try:
        async with asyncio.timeout(WAIT_S):
            await hub.ready.wait()
        for i in range(3):
            await hub.receive(raw_measurement(i), DEVICE, DEVICE_CONFIG)
        wall0, cpu0 = time.monotonic(), time.process_time()
        uplink = hub.uplink
        assert uplink is not None
        async with asyncio.timeout(WAIT_S):
            await uplink.wait_until(lambda stats: stats.connect_failures >= ATTEMPTS)
        wall, cpu = time.monotonic() - wall0, time.process_time() - cpu0
        counts = await hub.counts()
    finally:
        stop.set()
        async with asyncio.timeout(WAIT_S):
            await run
    assert (hub.stored, counts.pending, hub.delivered) == (3, 3, 0)
    assert cpu < 0.5 * wall, f"{cpu:.2f} s of CPU in {wall:.2f} s offline"
