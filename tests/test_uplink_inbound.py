"""Inbound messages through the uplink (agent/uplink.py, Uplink.on_message) on a real TLS
mosquitto: the hub subscribes after every CONNACK, each message reaches its kind's handler in
order, a broker restarted without persistence gets the subscription again, a larger message
than the bound never reaches a handler, and a flood waits at the broker (Receive Maximum,
acknowledged as handled), never in the hub's memory.

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
from agent.uplink import INBOUND_QUEUE_MAX, MAX_INBOUND_BYTES, InboundMessage, Uplink
from hil.broker import Broker
from hil.pki import DevPki
from tests.conftest import HUB_ID, uplink_settings

TIMEOUT_S: Final = 15.0
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
    what the hub holds meanwhile is bounded by its Receive Maximum; released, all 300 arrive
    in order and none was dropped."""
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
