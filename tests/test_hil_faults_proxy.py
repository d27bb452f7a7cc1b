"""hil/faults/proxy.py against a real mosquitto (TLS, client certificates) and the hub's real
uplink (agent/uplink.py): a connection through the proxy works in ``pass`` and its bytes are
counted; a ``cut`` is seen by the client at once and refuses reconnects until ``pass``; a
``blackhole`` is found only by the MQTT keepalive, and the hub reconnects once the link is
back (bytes sent into it are delivered then); a ``flap`` yields one reconnect per cycle.
Every wait is on the uplink's or the proxy's counters, under a timeout.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
from collections.abc import AsyncIterator
from typing import Any, Final

import pytest

from agent.uplink import LINK_DEAD_AFTER_KEEPALIVES, Uplink
from hil.broker import Broker
from hil.faults.events import FaultLog
from hil.faults.proxy import LoopbackProxy, ProxyMode
from hil.pki import DevPki
from tests.conftest import uplink_settings

T: Final = 10.0
"""Any one wait: connects take ~50 ms on loopback, reconnects back off 0.2 s at most here."""
SLACK_S: Final = 0.3
"""Scheduling on a loaded 2-core runner, as tests/test_uplink_blackhole.py allows."""


@contextlib.asynccontextmanager
async def _uplink(pki: DevPki, port: int, **settings: Any) -> AsyncIterator[Uplink]:
    uplink = Uplink(uplink_settings(pki, port, backoff_base_s=0.05, backoff_max_s=0.2, **settings))
    async with asyncio.TaskGroup() as tg:
        tg.create_task(uplink.run(), name="test.uplink")
        try:
            yield uplink
        finally:
            await uplink.close()


async def test_pass_forwards_a_publish_and_counts_its_bytes(
    dev_pki: DevPki, broker: Broker
) -> None:
    async with LoopbackProxy(broker.port) as proxy, _uplink(dev_pki, proxy.port) as uplink:
        async with asyncio.timeout(T):
            await uplink.connected.wait()
            await uplink.publish(b"\xa0" * 1000)
        stats = proxy.stats()
    assert stats.mode is ProxyMode.PASS
    assert stats.accepted == 1
    assert stats.bytes_up > 1000  # the TLS handshake and the publish
    assert stats.bytes_down > 0  # the handshake, CONNACK, PUBACK
    assert uplink.stats.acked == 1


async def test_cut_resets_the_connection_and_refuses_until_pass(
    dev_pki: DevPki, broker: Broker
) -> None:
    log = FaultLog()
    async with LoopbackProxy(broker.port, log=log) as proxy, _uplink(dev_pki, proxy.port) as up:
        async with asyncio.timeout(T):
            await up.connected.wait()
            await proxy.aset_mode("cut")
            await up.wait_until(lambda s: s.disconnects == 1)
            await up.wait_until(lambda s: s.connect_failures >= 2)  # refused, not accepted
            assert proxy.stats().accepted == 1
            await proxy.aset_mode(ProxyMode.PASS)
            await up.wait_until(lambda s: s.connects == 2)
        stats = proxy.stats()
    assert (stats.reset, stats.cuts, stats.accepted, stats.open) == (1, 1, 2, 1)
    assert [e.action for e in log.events("proxy")] == ["pass", "cut", "pass", "stop"]


async def test_blackhole_is_found_by_the_keepalive_only(dev_pki: DevPki, broker: Broker) -> None:
    keepalive_s = 1
    loop = asyncio.get_running_loop()
    async with (
        LoopbackProxy(broker.port) as proxy,
        _uplink(dev_pki, proxy.port, keepalive_s=keepalive_s) as uplink,
    ):
        async with asyncio.timeout(T):
            await uplink.connected.wait()
            await proxy.aset_mode(ProxyMode.BLACKHOLE)
            blackholed_at = loop.time()
            before = proxy.stats()
            await uplink.wait_until(lambda s: s.disconnects == 1)
            detected_s = loop.time() - blackholed_at
            # The reconnect is accepted (the kernel completes TCP) but its TLS goes nowhere.
            after = await proxy.await_until(lambda s: s.accepted >= 2)
            assert uplink.stats.connects == 1
            # The link is back: the hub reconnects through it.
            await proxy.aset_mode(ProxyMode.PASS)
            await uplink.wait_until(lambda s: s.connects == 2)
    assert detected_s <= LINK_DEAD_AFTER_KEEPALIVES * keepalive_s + SLACK_S
    assert "keepalives" in uplink.stats.last_failure
    assert (after.bytes_up, after.bytes_down) == (before.bytes_up, before.bytes_down)


async def test_flap_yields_a_reconnect_per_cycle(dev_pki: DevPki, broker: Broker) -> None:
    cycles = 3
    async with LoopbackProxy(broker.port) as proxy, _uplink(dev_pki, proxy.port) as uplink:
        async with asyncio.timeout(T):
            await uplink.connected.wait()
            flap = proxy.flap(up_s=0.6, down_s=0.1, times=cycles)
            await flap.await_done()
            await uplink.wait_until(lambda s: s.connects == 1 + cycles)
        stats = proxy.stats()
    assert uplink.stats.disconnects == cycles
    assert (stats.cuts, stats.reset, stats.mode) == (cycles, cycles, ProxyMode.PASS)


def test_sync_use_and_the_connection_bound(broker: Broker) -> None:
    """No event loop in the caller; past ``max_connections`` a connection is reset at once;
    bytes sent into a blackhole are delivered once the link is back."""
    with (
        LoopbackProxy(broker.port, max_connections=1) as proxy,
        socket.create_connection(("127.0.0.1", proxy.port), timeout=T) as first,
        socket.create_connection(("127.0.0.1", proxy.port), timeout=T) as second,
    ):
        stats = proxy.wait_until(lambda s: s.over_limit == 1 and s.open == 1, T)
        with pytest.raises(ConnectionResetError):
            second.recv(1)
        proxy.blackhole()
        first.sendall(b"\x16" * 100)  # into the hole: held, as TCP holds them on a dead link
        proxy.pass_through()
        delivered = proxy.wait_until(lambda s: s.bytes_up == 100, T)
    assert (stats.accepted, stats.mode) == (1, ProxyMode.PASS)
    assert (delivered.accepted, delivered.over_limit) == (1, 1)
    assert proxy.stats().open == 0
