"""The hub's real Uplink against mosquitto enforcing each uplink profile (hil/broker_profiles.py):
readings and status go out on the profile's topics (MQTT 5 or IoT Hub's 3.1.1) and reach a
platform client, receipts and commands sent on the profile's inbound topics reach their own
handler, and what the broker forbids (another profile's topic, a payload over its limit) fails
in the test because the broker refuses it.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import queue
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Final

import pytest

from agent.errors import PublishRejectedError, UplinkError, UsageError
from agent.profiles import (
    AWS_IOT_CORE,
    AZURE_IOT_HUB,
    MQTT,
    PROFILES,
    MessageKind,
    MqttVersion,
    TopicLayout,
    UplinkProfile,
    azure_property_bag,
)
from agent.uplink import InboundMessage, Uplink, UplinkSettings
from hil.broker_profiles import ProfileBroker
from hil.pki import DevPki
from tests.conftest import HUB_ID, uplink_settings
from tests.uplink_platform import PlatformClient

TIMEOUT_S: Final = 10.0
NAMES: Final = sorted(PROFILES)


def _outbound_filter(profile: UplinkProfile) -> str:
    if profile.layout is TopicLayout.AZURE_DEVICE:
        return "devices/+/messages/events/#"
    return "homehub/v1/+/+"


def _inbound_topic(profile: UplinkProfile, kind: MessageKind) -> str:
    if profile.layout is TopicLayout.AZURE_DEVICE:
        return f"devices/{HUB_ID}/messages/devicebound/{azure_property_bag(kind)}"
    return f"homehub/v1/{HUB_ID}/{kind.value}"


@pytest.fixture
def profile_broker(
    request: pytest.FixtureRequest, dev_pki: DevPki, tmp_path: Path
) -> Iterator[ProfileBroker]:
    profile = PROFILES[request.param]
    with ProfileBroker(dev_pki, tmp_path / "broker", profile) as running:
        yield running


@contextlib.asynccontextmanager
async def _running(uplink: Uplink) -> AsyncIterator[Uplink]:
    async with asyncio.TaskGroup() as tg:
        tg.create_task(uplink.run(), name="test.uplink")
        try:
            async with asyncio.timeout(TIMEOUT_S):
                await uplink.connected.wait()
            yield uplink
        finally:
            await uplink.close()


@contextlib.contextmanager
def _platform(pki: DevPki, port: int, filters: list[str]) -> Iterator[PlatformClient]:
    p = PlatformClient(pki, port, filters)
    try:
        yield p
    finally:
        p.close()


class _Handler:
    def __init__(self) -> None:
        self.got: asyncio.Queue[InboundMessage] = asyncio.Queue()

    async def __call__(self, message: InboundMessage) -> None:
        self.got.put_nowait(message)


@pytest.mark.parametrize("profile_broker", NAMES, indirect=True)
async def test_each_profile_both_ways(dev_pki: DevPki, profile_broker: ProfileBroker) -> None:
    profile = profile_broker.profile
    uplink = Uplink(uplink_settings(dev_pki, profile_broker.port, profile=profile))
    receipts, commands = _Handler(), _Handler()
    uplink.on_message(MessageKind.RECEIPTS, receipts)
    uplink.on_message(MessageKind.COMMANDS, commands)
    with _platform(dev_pki, profile_broker.port, [_outbound_filter(profile)]) as platform:
        async with _running(uplink):
            async with asyncio.timeout(TIMEOUT_S):
                await uplink.wait_until(lambda s: s.subscribed >= 1)
                await uplink.publish(b"reading-envelope")
                await uplink.publish_message(MessageKind.STATUS, b"status", retain=True)
            reading = await asyncio.to_thread(platform.next_message)
            expected = profile.publication(HUB_ID, MessageKind.READINGS)
            assert (reading.topic, reading.payload, reading.qos) == (
                expected.topic,
                b"reading-envelope",
                1,
            )
            status = await asyncio.to_thread(platform.next_message)
            assert (status.topic, status.payload) == (
                profile.publication(HUB_ID, MessageKind.STATUS).topic,
                b"status",
            )
            assert uplink.stats.acked == 2  # PUBACKs on 3.1.1 too
            # Inbound: each kind on the profile's own topic, to its own handler.
            await asyncio.to_thread(
                platform.publish, _inbound_topic(profile, MessageKind.COMMANDS), b"command"
            )
            await asyncio.to_thread(
                platform.publish, _inbound_topic(profile, MessageKind.RECEIPTS), b"receipt"
            )
            async with asyncio.timeout(TIMEOUT_S):
                command = await commands.got.get()
                receipt = await receipts.got.get()
            assert (command.kind, command.payload) == (MessageKind.COMMANDS, b"command")
            assert (receipt.kind, receipt.payload) == (MessageKind.RECEIPTS, b"receipt")
            assert (receipts.got.qsize(), commands.got.qsize()) == (0, 0)
            assert uplink.stats.inbound_dropped == 0


@pytest.mark.parametrize("profile_broker", ["azure_iot_hub"], indirect=True)
async def test_another_profiles_topic_is_refused_by_the_broker(
    dev_pki: DevPki, profile_broker: ProfileBroker
) -> None:
    """A hub configured 'mqtt' against IoT Hub's rules: its homehub/v1/... readings are not
    IoT Hub's device topics; the broker's ACL refuses them (MQTT 5 PUBACK 0x87: for good)."""
    uplink = Uplink(uplink_settings(dev_pki, profile_broker.port, profile=MQTT))
    async with _running(uplink), asyncio.timeout(TIMEOUT_S):
        with pytest.raises(PublishRejectedError) as caught:
            await uplink.publish(b"reading-envelope")
    assert caught.value.rc == 0x87


def _lowered(profile: UplinkProfile, limit: int) -> UplinkProfile:
    return dataclasses.replace(profile, max_message_bytes=limit, max_payload_bytes=limit)


@pytest.mark.parametrize("name", NAMES)
async def test_oversized_is_refused_by_the_broker(
    dev_pki: DevPki, tmp_path: Path, name: str
) -> None:
    """The broker enforces a profile's limit (here lowered to 1,000 bytes so that the hub's own
    bound on an envelope does not hide it); a hub believing in a larger one finds out: MQTT 5
    a refused PUBACK or a dropped connection, IoT Hub's 3.1.1 acknowledged and dropped (seen
    with a fence message: the platform's next message is the fence)."""
    platform_rules = _lowered(PROFILES[name], 1000)
    hub_belief = _lowered(PROFILES[name], 2000)
    with ProfileBroker(dev_pki, tmp_path / "broker", platform_rules) as broker:
        uplink = Uplink(uplink_settings(dev_pki, broker.port, profile=hub_belief))
        outbound = [_outbound_filter(platform_rules)]
        with _platform(dev_pki, broker.port, outbound) as platform:
            async with _running(uplink):
                if platform_rules.mqtt_version is MqttVersion.V5:
                    with pytest.raises(UplinkError):  # PUBACK >= 0x80, or the link cut
                        async with asyncio.timeout(TIMEOUT_S):
                            await uplink.publish(b"x" * 1500)
                    async with asyncio.timeout(TIMEOUT_S):
                        await uplink.connected.wait()
                else:
                    async with asyncio.timeout(TIMEOUT_S):
                        await uplink.publish(b"x" * 1500)  # 3.1.1: acknowledged
                async with asyncio.timeout(TIMEOUT_S):
                    await uplink.publish(b"fence")
                seen = await asyncio.to_thread(platform.next_message)
                assert seen.payload == b"fence"
                with pytest.raises(queue.Empty):
                    platform.received.get_nowait()


@pytest.mark.parametrize("profile", [AZURE_IOT_HUB, AWS_IOT_CORE], ids=lambda p: p.name)
async def test_a_hub_within_its_profile_never_sends_more_than_the_limit(
    dev_pki: DevPki, profile: UplinkProfile
) -> None:
    """The uplink's own check: over the profile's limit fails PublishRejectedError unsent."""
    small = _lowered(profile, 1000)
    uplink = Uplink(uplink_settings(dev_pki, 1, profile=small))
    with pytest.raises(PublishRejectedError):
        await uplink.publish_nowait(b"x" * 1001)


@pytest.mark.parametrize("name", NAMES)
def test_the_keepalive_defaults_to_the_profiles(dev_pki: DevPki, name: str) -> None:
    """Left out, the keepalive is the profile's (900 s for cellular, as from_config has it);
    a profile with another one is followed; an explicit value is kept and still checked
    against the profile's bounds."""
    profile = PROFILES[name]
    assert 900 == uplink_settings(dev_pki, 8883, profile=profile).keepalive_s
    other = dataclasses.replace(profile, keepalive_s=1000)
    assert 1000 == uplink_settings(dev_pki, 8883, profile=other).keepalive_s
    assert 60 == uplink_settings(dev_pki, 8883, profile=profile, keepalive_s=60).keepalive_s
    with pytest.raises(UsageError, match="keepalive_s"):
        uplink_settings(dev_pki, 8883, profile=profile, keepalive_s=profile.keepalive_max_s + 1)
    bare = UplinkSettings(
        hub_id=HUB_ID,
        host="127.0.0.1",
        port=8883,
        ca_file=dev_pki.ca_cert,
        cert_file=dev_pki.hub_cert,
        key_file=dev_pki.hub_key,
    )
    assert (MQTT, 900) == (bare.profile, bare.keepalive_s)
