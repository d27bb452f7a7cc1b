"""The uplink's API for the daemon's platform link (issue 9), on a real TLS mosquitto:
publish_message (status retained where the profile allows, events never), reconnect() reading
the certificate files again and cutting a refusal backoff short, on_connected/on_refused
observers, and the last will (published on an unclean drop, not on a reconnect).
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import shutil
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Final

import pytest

from agent import cose
from agent.errors import PublishRejectedError, UplinkError, UsageError
from agent.profiles import AWS_IOT_CORE, AZURE_IOT_HUB, MQTT, MessageKind, UplinkProfile
from agent.uplink import Refusal, RefusalCause, Uplink, publish_limit_bytes
from hil.broker import Broker
from hil.pki import DevPki
from tests.conftest import HUB_ID, uplink_settings
from tests.uplink_platform import PlatformClient

TIMEOUT_S: Final = 10.0
READINGS: Final = f"homehub/v1/{HUB_ID}/readings"
STATUS: Final = f"homehub/v1/{HUB_ID}/status"
EVENTS: Final = f"homehub/v1/{HUB_ID}/events"


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


async def test_status_retained_when_asked_events_never(dev_pki: DevPki, broker: Broker) -> None:
    async with _running(Uplink(uplink_settings(dev_pki, broker.port))) as uplink:
        async with asyncio.timeout(TIMEOUT_S):
            await uplink.publish_message(MessageKind.STATUS, b"status-online", retain=True)
            await uplink.publish_message("events", b"event-1", retain=True)
        # Subscribed only now: only a retained message can still arrive.
        with _platform(dev_pki, broker.port, [STATUS, EVENTS]) as platform:
            first = await asyncio.to_thread(platform.next_message)
            assert (first.topic, first.payload, first.retain) == (STATUS, b"status-online", True)
            async with asyncio.timeout(TIMEOUT_S):
                await uplink.publish_message(MessageKind.EVENTS, b"fence")
            fence = await asyncio.to_thread(platform.next_message)
            assert (fence.topic, fence.payload, fence.retain) == (EVENTS, b"fence", False)


async def test_publish_message_rules(dev_pki: DevPki, broker: Broker) -> None:
    small = dataclasses.replace(AWS_IOT_CORE, max_payload_bytes=1000)
    uplink = Uplink(uplink_settings(dev_pki, broker.port, profile=small))
    with pytest.raises(UsageError):
        uplink.publish_message(MessageKind.RECEIPTS, b"x")
    with pytest.raises(UplinkError, match="not connected"):
        await uplink.publish_message(MessageKind.EVENTS, b"x")
    async with _running(uplink):
        too_large = b"\0" * 1001
        with pytest.raises(PublishRejectedError):
            await uplink.publish_message(MessageKind.EVENTS, too_large)
        assert uplink.stats.in_flight == 0
        async with asyncio.timeout(TIMEOUT_S):
            await uplink.publish_message(MessageKind.REPLIES, b"reply")
        assert uplink.stats.acked == 1


@pytest.mark.parametrize(
    ("profile", "limit"),
    [(MQTT, 1_047_552), (AZURE_IOT_HUB, 254_976), (AWS_IOT_CORE, 128_000)],
    ids=lambda v: v.name if isinstance(v, UplinkProfile) else str(v),
)
def test_the_publish_limit_is_the_profiles_within_a_batch(
    dev_pki: DevPki, profile: UplinkProfile, limit: int
) -> None:
    """A batch envelope may be far larger than a single reading's bound; the profile's own
    limit is what binds on every profile today."""
    uplink = Uplink(uplink_settings(dev_pki, 1, profile=profile))
    assert (limit, limit) == (publish_limit_bytes(profile), uplink.max_publish_bytes)
    assert cose.MAX_MESSAGE_BYTES < limit <= cose.MAX_BATCH_MESSAGE_BYTES


async def test_a_batch_sized_message_goes_and_one_over_the_limit_never(
    dev_pki: DevPki, broker: Broker
) -> None:
    """On the mqtt profile a 100 KB envelope (three times a single reading's bound) is
    published and arrives whole; one byte over the limit is refused unsent: the platform's
    next message after it is the fence."""
    batch = bytes(range(256)) * 400  # 102,400 bytes
    assert len(batch) > cose.MAX_MESSAGE_BYTES
    with _platform(dev_pki, broker.port, [READINGS]) as platform:
        async with _running(Uplink(uplink_settings(dev_pki, broker.port))) as uplink:
            async with asyncio.timeout(TIMEOUT_S):
                await uplink.publish(batch)
            over = b"\0" * (uplink.max_publish_bytes + 1)
            refused: list[BaseException | None] = []
            uplink.publish_then(over, refused.append)
            assert [PublishRejectedError] == [type(e) for e in refused]
            assert uplink.stats.in_flight == 0
            async with asyncio.timeout(TIMEOUT_S):
                await uplink.publish(b"fence")
            seen = [await asyncio.to_thread(platform.next_message) for _ in range(2)]
    assert [(READINGS, batch), (READINGS, b"fence")] == [(m.topic, m.payload) for m in seen]
    assert platform.received.empty()
    assert (2, 0) == (uplink.stats.acked, uplink.stats.refused)


def _install(cert: Path, key: Path, cert_file: Path, key_file: Path) -> None:
    shutil.copyfile(cert, cert_file)
    shutil.copyfile(key, key_file)
    key_file.chmod(0o600)


async def test_reconnect_reads_the_files_again_and_cuts_the_backoff(
    dev_pki: DevPki, foreign_pki: DevPki, broker: Broker, tmp_path: Path
) -> None:
    cert_file, key_file = tmp_path / "hub.crt", tmp_path / "hub.key"
    _install(dev_pki.hub_cert, dev_pki.hub_key, cert_file, key_file)
    settings = uplink_settings(
        dev_pki,
        broker.port,
        cert_file=cert_file,
        key_file=key_file,
        refusal_backoff_s=30.0,  # far longer than the test's timeout: only reconnect() helps
        refusal_backoff_max_s=60.0,
    )
    uplink = Uplink(settings)
    connected: list[int] = []
    refused: list[Refusal] = []
    uplink.on_connected(lambda: connected.append(uplink.stats.connects))
    uplink.on_refused(refused.append)
    async with _running(uplink):
        assert connected == [1]
        # A certificate the broker's CA never issued (same CN), installed as a rotation would.
        _install(foreign_pki.hub_cert, foreign_pki.hub_key, cert_file, key_file)
        async with asyncio.timeout(TIMEOUT_S):
            await uplink.reconnect()
            await uplink.wait_until(lambda s: s.connect_failures >= 1)
        assert [r.cause for r in refused] in (
            [RefusalCause.CLOSED_BEFORE_CONNACK],
            [RefusalCause.TLS_HANDSHAKE],
        )
        assert refused[0].of_client_certificate
        assert uplink.stats.last_backoff_s >= 30.0
        assert uplink.stats.server_certificate_refused == 0
        # Reverted: reconnect() at once, not after the refusal's 30 s.
        _install(dev_pki.hub_cert, dev_pki.hub_key, cert_file, key_file)
        async with asyncio.timeout(TIMEOUT_S):
            await uplink.reconnect()
            await uplink.wait_until(lambda s: s.connects >= 2)
        assert connected == [1, 2]
        assert len(refused) == 1


async def test_last_will_on_an_unclean_drop_only(dev_pki: DevPki, broker: Broker) -> None:
    calls: list[int] = []

    def will() -> bytes:
        calls.append(1)
        return f"offline-{len(calls)}".encode()

    uplink = Uplink(uplink_settings(dev_pki, broker.port), last_will=will)
    with _platform(dev_pki, broker.port, [STATUS]) as platform:
        async with _running(uplink):
            assert len(calls) == 1
            async with asyncio.timeout(TIMEOUT_S):
                await uplink.reconnect()  # a clean DISCONNECT: the will is discarded
                await uplink.wait_until(lambda s: s.connects >= 2)
                assert len(calls) == 2
                await uplink.publish_message(MessageKind.STATUS, b"fence")
            fence = await asyncio.to_thread(platform.next_message)
            assert fence.payload == b"fence"  # not offline-1
            # An unclean end: the socket closed without DISCONNECT.
            conn = uplink._conn
            assert conn is not None
            conn.discard(UplinkError("test: cut"))
            will_seen = await asyncio.to_thread(platform.next_message)
            assert (will_seen.topic, will_seen.payload) == (STATUS, b"offline-2")


async def test_a_raising_observer_or_will_hook_does_not_cut_the_link(
    dev_pki: DevPki, broker: Broker
) -> None:
    def broken() -> bytes:
        raise RuntimeError("bug")

    def broken_observer() -> None:
        raise RuntimeError("bug")

    uplink = Uplink(uplink_settings(dev_pki, broker.port), last_will=broken)
    seen: list[int] = []
    uplink.on_connected(broken_observer)
    uplink.on_connected(lambda: seen.append(1))
    async with _running(uplink):
        assert seen == [1]
        async with asyncio.timeout(TIMEOUT_S):
            await uplink.publish_message(MessageKind.EVENTS, b"e")
