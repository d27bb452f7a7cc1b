"""Delivery the platform vouches for, end to end: the daemon (:class:`agent.daemon.Hub`, with
``[platform] cert_file`` and ``ack = "receipt"``) against a real TLS mosquitto and the
reference platform (hil/receiver.py: verifies with pycose, stores, sends signed receipts).

- A reading is deleted from the outbox only once the platform's receipt for it came: with a
  platform that stores but does not receipt, everything stays pending (PUBACKed and held);
  with one that receipts, the copies sent again after the receipt timeout are receipted and
  everything is deleted.
- The issue's headline with the real platform: mosquitto restarted without persistence in the
  middle of a 3,000-reading backlog loses nothing.
- Devices by reference (dictionary 3 announced): a platform that lost its store refuses a
  reading naming its Devices by digest (``unknown_device``); the hub sends it again with its
  Devices in full, and nothing is lost or refused.
"""

from __future__ import annotations

import asyncio
import socket
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Final

import pytest

from agent import dictionaries
from hil.broker import Broker
from hil.crash_child import DEVICE, DEVICE_CONFIG, raw_measurement
from hil.pki import DevPki
from hil.platform_console import PlatformConsole
from hil.platform_verify import Dictionaries
from hil.receiver import Receiver
from tests.platform_hub import running_hub, write_hub_config

pytestmark = pytest.mark.timeout(120)

T: Final = 30.0
BACKLOG: Final = 3000


class Deliveries:
    """The hub's observer: counts what it deleted."""

    def __init__(self) -> None:
        self.seqs: list[int] = []
        self._change = asyncio.Event()

    def stored(self, arrival: Any, fate: Any) -> None:
        del arrival, fate

    def delivered(self, seqs: Sequence[int]) -> None:
        self.seqs.extend(seqs)
        event, self._change = self._change, asyncio.Event()
        event.set()

    async def until(self, count: int) -> None:
        while len(set(self.seqs)) < count:
            await self._change.wait()


async def test_deleted_only_after_the_receipt(
    tmp_path: Path, dev_pki: DevPki, broker: Broker
) -> None:
    config_path = write_hub_config(tmp_path, dev_pki, broker.port, receipt_timeout_s=5.0)
    deliveries = Deliveries()
    async with running_hub(config_path, observer=deliveries) as hub:
        async with Receiver.for_dev_pki(dev_pki, broker.port, receipts=False) as silent:
            async with asyncio.timeout(T):
                await silent.subscribed.wait()
                for i in range(5):
                    await hub.receive(raw_measurement(i), DEVICE, DEVICE_CONFIG)
                await silent.wait_until(lambda s: s.verified >= 5)
                uplink = hub.uplink
                assert uplink is not None
                await uplink.wait_until(lambda s: s.acked >= 5)
            counts = await hub.counts()
            assert (5, 0, []) == (counts.pending, hub.delivered, deliveries.seqs)
            assert hub.awaiting_receipt >= 1  # PUBACKed, held by the platform, not receipted
        async with Receiver.for_dev_pki(dev_pki, broker.port) as receipting:
            async with asyncio.timeout(T):
                await receipting.subscribed.wait()
                await deliveries.until(5)  # the copies sent after the receipt timeout
            assert receipting.stats.held_items >= 1
        assert 0 == (await hub.counts()).pending
        assert 0 == hub.security_events


def _closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


async def test_broker_restart_without_persistence_loses_nothing(
    tmp_path: Path, dev_pki: DevPki, broker: Broker
) -> None:
    """3,000 readings stored while offline drain to the reference platform; once it holds
    1,000, mosquitto restarts without persistence (what it PUBACKed and had not delivered is
    gone). Only receipts delete, so those are sent again: the platform holds all 3,000, each
    deleted from the outbox once, no security event."""
    offline = write_hub_config(tmp_path, dev_pki, _closed_port(), receipt_timeout_s=5.0)
    async with running_hub(offline) as hub:
        for i in range(BACKLOG):
            await hub.receive(raw_measurement(i), DEVICE, DEVICE_CONFIG)
    assert BACKLOG == hub.stored
    online = tmp_path / "homehub.toml"
    online.write_text(
        offline.read_text().replace(f"port = {_port_of(offline)}", f"port = {broker.port}")
    )
    deliveries = Deliveries()
    async with Receiver.for_dev_pki(dev_pki, broker.port) as platform:
        async with asyncio.timeout(T):
            await platform.subscribed.wait()
        async with running_hub(online, observer=deliveries) as hub:
            async with asyncio.timeout(T):
                await platform.wait_until(lambda s: s.verified >= 1000)
            await broker.arestart()
            async with asyncio.timeout(T * 2):
                await deliveries.until(BACKLOG)
            uplink = hub.uplink
            assert uplink is not None
            assert uplink.stats.connects >= 2
            assert 0 == (await hub.counts()).pending
            assert 0 == hub.security_events
        assert BACKLOG == platform.stats.verified  # each reading once, duplicates aside
        assert 0 == platform.stats.rejected_total
    assert sorted(set(deliveries.seqs)) == sorted(deliveries.seqs)
    assert BACKLOG == len(deliveries.seqs)


def _port_of(path: Path) -> int:
    for line in path.read_text().splitlines():
        if line.startswith("port = "):
            return int(line.removeprefix("port = "))
    raise AssertionError("no port in the configuration")


async def test_a_platform_that_lost_its_store_gets_the_devices_again(
    tmp_path: Path, dev_pki: DevPki, broker: Broker
) -> None:
    """The platform announces dictionary 3. The first reading carries its Devices in full;
    once its receipt is in, the second names them by digest. The platform is then rebuilt
    with an empty store (its database lost): the third reading, naming the Devices by digest,
    is refused ``unknown_device``; the hub marks nothing refused and sends it again with its
    Devices in full, which the platform holds. Every reading deleted once, none refused."""
    config_path = write_hub_config(tmp_path, dev_pki, broker.port, receipt_timeout_s=5.0)
    held = Dictionaries.load(dictionaries.PACKAGE_DIR)
    hub_id = dev_pki.hub_id
    deliveries = Deliveries()
    async with (
        PlatformConsole.for_dev_pki(dev_pki, broker.port) as console,
        running_hub(config_path, observer=deliveries) as hub,
    ):
        async with asyncio.timeout(T):
            await console.wait_for(lambda m: m.kind == "status")
            reply = await console.ask(hub_id, "announce", {"dictionaries": held.ids})
        assert reply.body["ok"] is True
        async with Receiver.for_dev_pki(dev_pki, broker.port, dictionaries=held) as platform:
            async with asyncio.timeout(T):
                await platform.subscribed.wait()
                for i in range(2):
                    await hub.receive(raw_measurement(i), DEVICE, DEVICE_CONFIG)
                    await deliveries.until(i + 1)
            store = platform.store
            assert store is not None
            assert (2, 2, 1) == (
                platform.stats.verified,
                platform.stats.compressed,
                store.count("device_sets"),
            )
        async with Receiver.for_dev_pki(
            dev_pki, broker.port, dictionaries=held, client_id="platform-rebuilt"
        ) as rebuilt:
            async with asyncio.timeout(T):
                await rebuilt.subscribed.wait()
                await hub.receive(raw_measurement(2), DEVICE, DEVICE_CONFIG)
                await deliveries.until(3)
            assert (1, 1) == (rebuilt.stats.refused_items, rebuilt.stats.verified)
            assert rebuilt.store is not None
            assert ["unknown_device"] == rebuilt.store.parked_codes()
        counts = await hub.counts()
        assert (0, 0) == (counts.pending, counts.refused)
        assert 0 == hub.security_events
    assert [1, 2, 3] == sorted(deliveries.seqs)
