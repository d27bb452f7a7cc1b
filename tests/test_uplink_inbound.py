"""Inbound messages through the uplink (agent/uplink.py, Uplink.on_message) on a real TLS
mosquitto: the hub subscribes after every CONNACK, each message reaches its kind's handler in
order, a broker restarted without persistence gets the subscription again, a larger message
than the bound never reaches a handler, and a flood waits at the broker (Receive Maximum,
acknowledged as handled), never in the hub's memory: mosquitto 2.0.11 sends more than the
Receive Maximum once acknowledgements resume, and the hub then stops reading its socket until
a handler took a message (nothing dropped, memory bounded, the link kept).

The platform is a plain paho client with the platform receiver's certificate (the broker's
ACL lets it write every hub's receipts and commands).
"""

from __future__ import annotations

import asyncio
import ssl
import threading
from collections.abc import AsyncIterator, Iterator
from typing import Final

import paho.mqtt.client as mqtt
import pytest
from paho.mqtt.enums import CallbackAPIVersion, MQTTProtocolVersion

from agent.profiles import MessageKind
from agent.uplink import (
    INBOUND_QUEUE_MAX,
    INFLIGHT_MAX,
    LINK_DEAD_AFTER_KEEPALIVES,
    MAX_INBOUND_BYTES,
    InboundMessage,
    Uplink,
    inbound_overflow_max,
)
from hil.broker import Broker
from hil.pki import DevPki
from tests.conftest import HUB_ID, uplink_settings

TIMEOUT_S: Final = 15.0
HELD_MAX: Final = INBOUND_QUEUE_MAX + inbound_overflow_max(INFLIGHT_MAX)
"""What the hub may hold of one kind's flood: its queue and one loop_read's overflow."""
RECEIPTS: Final = f"homehub/v1/{HUB_ID}/receipts"
COMMANDS: Final = f"homehub/v1/{HUB_ID}/commands"


class Platform:
    """A paho client (its own thread) publishing to a hub's inbound topics at QoS 1."""

    def __init__(self, pki: DevPki, port: int) -> None:
        ctx = ssl.create_default_context(cafile=str(pki.ca_cert))
        ctx.load_cert_chain(pki.receiver_cert, pki.receiver_key)
        self.client = mqtt.Client(
            CallbackAPIVersion.VERSION2,
            client_id="test-platform",
            protocol=MQTTProtocolVersion.MQTTv5,
        )
        self.client.tls_set_context(ctx)
        self._connected = threading.Event()
        self.client.on_connect = lambda *_: self._connected.set()
        self.client.connect("127.0.0.1", port)
        self.client.loop_start()
        assert self._connected.wait(TIMEOUT_S)

    def publish(self, topic: str, payloads: list[bytes]) -> None:
        """Blocking until the broker PUBACKed every one (call through asyncio.to_thread)."""
        infos = [self.client.publish(topic, p, qos=1) for p in payloads]
        for info in infos:
            info.wait_for_publish(TIMEOUT_S)
            assert info.is_published()

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()


@pytest.fixture
def platform(dev_pki: DevPki, broker: Broker) -> Iterator[Platform]:
    p = Platform(dev_pki, broker.port)
    yield p
    p.close()


class Inbox:
    """A handler that records what arrives (and can be held to let messages pile up)."""

    def __init__(self) -> None:
        self.messages: list[InboundMessage] = []
        self.queued_at_call: list[int] = []
        self.release = asyncio.Event()
        self.release.set()
        self._change = asyncio.Event()
        self.uplink: Uplink | None = None

    async def __call__(self, message: InboundMessage) -> None:
        assert self.uplink is not None
        self.queued_at_call.append(self.uplink._inbound[message.kind].qsize())
        self.messages.append(message)
        event, self._change = self._change, asyncio.Event()
        event.set()
        await self.release.wait()

    async def until(self, count: int) -> None:
        while len(self.messages) < count:
            await self._change.wait()


@pytest.fixture
async def hub(dev_pki: DevPki, broker: Broker) -> AsyncIterator[tuple[Uplink, Inbox]]:
    uplink = Uplink(uplink_settings(dev_pki, broker.port))
    inbox = Inbox()
    inbox.uplink = uplink
    uplink.on_message("receipts", inbox)
    async with asyncio.TaskGroup() as tg:
        tg.create_task(uplink.run(), name="test.uplink")
        try:
            async with asyncio.timeout(TIMEOUT_S):
                await uplink.wait_until(lambda s: s.subscribed >= 1)
            yield uplink, inbox
        finally:
            inbox.release.set()
            await uplink.close()


async def test_receipts_reach_the_handler_in_order(
    hub: tuple[Uplink, Inbox], platform: Platform
) -> None:
    uplink, inbox = hub
    payloads = [f"receipt {i}".encode() for i in range(20)]
    await asyncio.to_thread(platform.publish, RECEIPTS, payloads)
    async with asyncio.timeout(TIMEOUT_S):
        await inbox.until(20)
    assert payloads == [m.payload for m in inbox.messages]
    assert {MessageKind.RECEIPTS} == {m.kind for m in inbox.messages}
    assert (20, 0, 0) == (
        uplink.stats.inbound,
        uplink.stats.inbound_dropped,
        uplink.stats.subscribe_refused,
    )


async def test_a_kind_without_handler_is_dropped_and_acknowledged(
    hub: tuple[Uplink, Inbox], platform: Platform
) -> None:
    """Commands are subscribed with receipts (the profile's inbound topics); without a
    handler one is dropped (counted, logged) and the receipt after it still arrives."""
    uplink, inbox = hub
    await asyncio.to_thread(platform.publish, COMMANDS, [b"a command"])
    await asyncio.to_thread(platform.publish, RECEIPTS, [b"a receipt"])
    async with asyncio.timeout(TIMEOUT_S):
        await inbox.until(1)
    assert [b"a receipt"] == [m.payload for m in inbox.messages]
    assert 1 == uplink.stats.inbound_dropped


async def test_larger_than_the_bound_never_reaches_the_handler(
    hub: tuple[Uplink, Inbox], platform: Platform
) -> None:
    """The hub's Maximum Packet Size makes the broker discard it; the next one arrives."""
    _uplink, inbox = hub
    await asyncio.to_thread(platform.publish, RECEIPTS, [b"x" * (MAX_INBOUND_BYTES + 2048)])
    await asyncio.to_thread(platform.publish, RECEIPTS, [b"small"])
    async with asyncio.timeout(TIMEOUT_S):
        await inbox.until(1)
    assert [b"small"] == [m.payload for m in inbox.messages]


async def test_flood_waits_at_the_broker(hub: tuple[Uplink, Inbox], platform: Platform) -> None:
    """The handler holds the first of 300 receipts until the broker has accepted all 300:
    what the hub holds meanwhile is bounded by its Receive Maximum (and, for a broker sending
    more, one loop_read's overflow); released, all 300 arrive in order and none was dropped."""
    uplink, inbox = hub
    inbox.release.clear()
    payloads = [f"flood {i}".encode() for i in range(300)]
    await asyncio.to_thread(platform.publish, RECEIPTS, payloads)
    async with asyncio.timeout(TIMEOUT_S):
        await inbox.until(1)
    held = uplink._inbound[MessageKind.RECEIPTS].qsize()
    assert held <= INBOUND_QUEUE_MAX
    inbox.release.set()
    async with asyncio.timeout(TIMEOUT_S):
        await inbox.until(300)
    assert payloads == [m.payload for m in inbox.messages]
    assert max(inbox.queued_at_call) <= INBOUND_QUEUE_MAX
    assert 0 == uplink.stats.inbound_dropped
    assert uplink.stats.inbound_held_peak <= HELD_MAX
    assert (0, 0) == (uplink.stats.inbound_held, uplink.stats.inbound_overflow)


PAUSE_KEEPALIVE_S: Final = 2
PAUSE_SLACK_S: Final = 0.3
"""The hold outlasts the liveness deadline by this much; paho's own ping timeout, the bound
on a pause, comes about 2 keepalives after the last read, 0.7 s later still."""


async def test_a_held_handler_pauses_reading_and_keeps_the_link(
    dev_pki: DevPki, broker: Broker, platform: Platform
) -> None:
    """The handler takes one receipt at a time as the test lets it while the broker holds
    300: mosquitto 2.0.11 soon sends one more than the Receive Maximum, the hub stops reading
    (the overflow) and the handler is then held for longer than the liveness deadline of
    1.5 keepalives. The link stays up (paused reading is not silence; paho still pings), a
    reading published meanwhile is neither acknowledged nor failed until reading resumes;
    released, all 300 arrive in order, none dropped, never more held than the bound."""
    loop = asyncio.get_running_loop()
    uplink = Uplink(uplink_settings(dev_pki, broker.port, keepalive_s=PAUSE_KEEPALIVE_S))
    gate = asyncio.Semaphore(0)
    inbox = Inbox()
    inbox.uplink = uplink

    async def held(message: InboundMessage) -> None:
        await inbox(message)
        await gate.acquire()

    payloads = [f"held {i}".encode() for i in range(300)]

    def open_gate() -> None:
        for _ in payloads:
            gate.release()

    uplink.on_message("receipts", held)
    async with asyncio.TaskGroup() as tg:
        tg.create_task(uplink.run(), name="test.uplink")
        try:
            async with asyncio.timeout(TIMEOUT_S):
                await uplink.wait_until(lambda s: s.subscribed >= 1)
            await asyncio.to_thread(platform.publish, RECEIPTS, payloads)
            async with asyncio.timeout(TIMEOUT_S):
                # One at a time until the broker overshoots: then the queue is full, one
                # message waits over it and the reader is paused.
                while uplink.stats.inbound_overflow == 0:
                    taken = len(inbox.messages)
                    if taken:
                        gate.release()
                    await inbox.until(taken + 1)
                    await uplink.wait_until(
                        lambda s: s.inbound_overflow > 0 or s.inbound_held >= INBOUND_QUEUE_MAX
                    )
            paused_at = loop.time()
            pauses, pings = uplink.stats.inbound_paused, uplink.stats.pings_sent
            reading = uplink.publish_nowait(b"a reading while paused")
            # The hold itself (what is tested is that time passes): past the liveness
            # deadline, counted from the pause, not from any synchronisation.
            deadline_s = LINK_DEAD_AFTER_KEEPALIVES * PAUSE_KEEPALIVE_S + PAUSE_SLACK_S
            await asyncio.sleep(paused_at + deadline_s - loop.time())
            still_paused = (uplink.stats.inbound_paused, uplink.stats.inbound_overflow > 0)
            up = (uplink.connected.is_set(), uplink.stats.disconnects, reading.done())
            pinged = uplink.stats.pings_sent > pings
            open_gate()
            async with asyncio.timeout(TIMEOUT_S):
                await reading
                await inbox.until(len(payloads))
        finally:
            open_gate()
            await uplink.close()
    assert ((pauses, True), (True, 0, False), True) == (still_paused, up, pinged)
    assert payloads == [m.payload for m in inbox.messages]
    assert max(inbox.queued_at_call) <= INBOUND_QUEUE_MAX
    assert (0, 1, 0) == (
        uplink.stats.inbound_dropped,
        uplink.stats.connects,
        uplink.stats.connect_failures,
    )
    assert uplink.stats.inbound_paused >= 1
    assert INBOUND_QUEUE_MAX < uplink.stats.inbound_held_peak <= HELD_MAX


async def test_subscribed_again_after_a_broker_lost_its_sessions(
    hub: tuple[Uplink, Inbox], platform: Platform, broker: Broker, dev_pki: DevPki
) -> None:
    """mosquitto restarted without persistence forgets the session; the next CONNACK
    subscribes again, and a receipt sent after that arrives."""
    uplink, inbox = hub
    platform.close()
    await broker.arestart()
    async with asyncio.timeout(TIMEOUT_S):
        await uplink.wait_until(lambda s: s.subscribed >= 2)
    again = Platform(dev_pki, broker.port)
    try:
        await asyncio.to_thread(again.publish, RECEIPTS, [b"after the restart"])
        async with asyncio.timeout(TIMEOUT_S):
            await inbox.until(1)
    finally:
        again.close()
    assert [b"after the restart"] == [m.payload for m in inbox.messages]


def test_register_rules(dev_pki: DevPki) -> None:
    uplink = Uplink(uplink_settings(dev_pki, 1883))

    async def handler(_m: InboundMessage) -> None:
        return None

    uplink.on_message(MessageKind.COMMANDS, handler)
    with pytest.raises(RuntimeError, match="already"):
        uplink.on_message("commands", handler)
    with pytest.raises(Exception, match="sent by the hub"):
        uplink.on_message("readings", handler)
