"""A blackholed link (issue 9's Done-when): a TCP proxy between the hub and a real mosquitto
stops forwarding in both directions while both TCP connections stay open. The uplink must
declare the link dead within 1.5 keepalives of the blackhole (agent.uplink's liveness check;
paho alone takes up to 2), measured on the loop's monotonic clock; and not before, on a
healthy idle link that pinged.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from typing import Final

from agent.uplink import LINK_DEAD_AFTER_KEEPALIVES, Uplink
from hil.broker import Broker
from hil.pki import DevPki
from tests.conftest import uplink_settings

KEEPALIVE_S: Final = 2
TIMEOUT_S: Final = 10.0
SLACK_S: Final = 0.3
"""Scheduling on a loaded 2-core runner; the check itself is one timer, not a tick."""
CHUNK_BYTES: Final = 65_536


class BlackholeProxy:
    """Forwards TCP both ways until :attr:`blackholed` is set; then reads and drops everything,
    keeping both connections open (a carrier NAT that lost the mapping, a dead radio)."""

    def __init__(self, upstream_port: int) -> None:
        self.upstream_port = upstream_port
        self.blackholed = False
        self.port = 0
        self._server: asyncio.Server | None = None
        self._tasks: set[asyncio.Task[None]] = set()

    async def __aenter__(self) -> BlackholeProxy:
        self._server = await asyncio.start_server(self._serve, "127.0.0.1", 0)
        self.port = self._server.sockets[0].getsockname()[1]
        return self

    async def __aexit__(self, *_: object) -> None:
        assert self._server is not None
        self._server.close()
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        up_reader, up_writer = await asyncio.open_connection("127.0.0.1", self.upstream_port)
        for name, src, dst in (("up", reader, up_writer), ("down", up_reader, writer)):
            task = asyncio.create_task(self._pump(src, dst), name=f"test.proxy.{name}")
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)

    async def _pump(self, src: asyncio.StreamReader, dst: asyncio.StreamWriter) -> None:
        try:
            while data := await src.read(CHUNK_BYTES):
                if not self.blackholed:
                    dst.write(data)
                    await dst.drain()
        finally:
            if not self.blackholed:
                dst.close()


@contextlib.asynccontextmanager
async def _running(uplink: Uplink) -> AsyncIterator[Uplink]:
    async with asyncio.TaskGroup() as tg:
        tg.create_task(uplink.run(), name="test.uplink")
        try:
            yield uplink
        finally:
            await uplink.close()


async def test_blackholed_link_is_dead_within_one_and_a_half_keepalives(
    dev_pki: DevPki, broker: Broker
) -> None:
    loop = asyncio.get_running_loop()
    async with BlackholeProxy(broker.port) as proxy:
        uplink = Uplink(uplink_settings(dev_pki, proxy.port, keepalive_s=KEEPALIVE_S))
        async with _running(uplink):
            async with asyncio.timeout(TIMEOUT_S):
                await uplink.connected.wait()
                # Healthy and idle: two keepalive round trips, the link stays up.
                await uplink.wait_until(lambda s: s.pings_sent >= 2)
            assert uplink.stats.disconnects == 0
            proxy.blackholed = True
            blackholed_at = loop.time()
            async with asyncio.timeout(TIMEOUT_S):
                await uplink.wait_until(lambda s: s.disconnects >= 1)
            detected_s = loop.time() - blackholed_at
    assert detected_s <= LINK_DEAD_AFTER_KEEPALIVES * KEEPALIVE_S + SLACK_S
    assert "1.5 keepalives" in uplink.stats.last_failure
