"""Each uplink profile against a real mosquitto that enforces its rules (hil/broker_profiles.py).

Raw paho clients (the hub's certificate, another hub's, the platform's) use the profile's own
topic builders: the right topics pass, a wrong topic, an oversized message, QoS 2 and the
retain flag are refused where the profile says so. MQTT 5 refusals are read from the PUBACK or
the DISCONNECT; an MQTT 3.1.1 publish the broker drops is acknowledged anyway, so the platform's
subscriber must not receive it: the hub publishes a valid *fence* message after it, and the
subscriber's next message being the fence proves the dropped one never came (one client's
messages are delivered in order). Nothing sleeps: every wait is on an event, with a timeout.
"""

from __future__ import annotations

import queue
import re
import ssl
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any, Final

import paho.mqtt.client as mqtt
import pytest
from paho.mqtt.enums import CallbackAPIVersion, MQTTProtocolVersion
from paho.mqtt.properties import Properties
from paho.mqtt.reasoncodes import ReasonCode

from agent.profiles import (
    AWS_IOT_CORE,
    AZURE_IOT_HUB,
    INBOUND,
    MQTT,
    OUTBOUND,
    PROFILES,
    MessageKind,
    MqttVersion,
    UplinkProfile,
)
from hil.broker_profiles import ProfileBroker
from hil.pki import DevPki
from tests import phi_canaries
from tests.conftest import HUB_ID

TIMEOUT_S: Final = 10.0
OTHER_HUB: Final = "hub-0002"
HOST: Final = "127.0.0.1"

PUBACK_NOT_AUTHORIZED: Final = 0x87
_OVERSIZE_REFUSALS: Final = {("puback", 0x83), ("disconnect", 0x82)}
"""mosquitto > 2.0.11 answers a publish above ``message_size_limit`` with PUBACK 0x83; 2.0.11
(Debian 12, here) with 0x95, which a PUBACK may not carry, so paho drops the connection as a
protocol error (0x82): refused either way (tests/test_publisher.py, RC_PACKET_TOO_LARGE)."""
DISCONNECT_QOS_NOT_SUPPORTED: Final = 0x9B
DISCONNECT_RETAIN_NOT_SUPPORTED: Final = 0x9A


def _paho_version(profile: UplinkProfile) -> MQTTProtocolVersion:
    if profile.mqtt_version is MqttVersion.V5:
        return MQTTProtocolVersion.MQTTv5
    return MQTTProtocolVersion.MQTTv311


class Peer:
    """A raw paho client on its own thread; every callback lands in a queue or an event."""

    def __init__(
        self,
        pki: DevPki,
        port: int,
        cert: tuple[Path, Path],
        client_id: str,
        version: MQTTProtocolVersion,
        *,
        keepalive_s: int = 60,
    ) -> None:
        ctx = ssl.create_default_context(cafile=str(pki.ca_cert))
        ctx.load_cert_chain(*cert)
        self.version = version
        self.client = mqtt.Client(
            CallbackAPIVersion.VERSION2, client_id=client_id, protocol=version
        )
        self.client.tls_set_context(ctx)
        self.connack: queue.Queue[tuple[int, Properties | None]] = queue.Queue()
        self.pubacks: dict[int, queue.Queue[int]] = {}
        self.subacks: queue.Queue[list[int]] = queue.Queue()
        self.messages: queue.Queue[mqtt.MQTTMessage] = queue.Queue()
        self.disconnected: queue.Queue[int] = queue.Queue()
        self.outcomes: queue.Queue[tuple[str, int, int]] = queue.Queue()
        self._lock = threading.Lock()
        self.client.on_connect = self._on_connect
        self.client.on_publish = self._on_publish
        self.client.on_subscribe = self._on_subscribe
        self.client.on_message = lambda _c, _u, msg: self.messages.put(msg)
        self.client.on_disconnect = self._on_disconnect
        clean: dict[str, Any] = (
            {"clean_start": True} if version is MQTTProtocolVersion.MQTTv5 else {}
        )
        self.client.connect(HOST, port, keepalive_s, **clean)
        self.client.loop_start()

    # paho callbacks (its thread)
    def _on_connect(self, _c: Any, _u: Any, _f: Any, rc: ReasonCode, props: Any) -> None:
        self.connack.put((rc.value, props if isinstance(props, Properties) else None))

    def _on_publish(self, _c: Any, _u: Any, mid: int, rc: ReasonCode, _p: Any) -> None:
        self._puback_queue(mid).put(rc.value)
        self.outcomes.put(("puback", mid, rc.value))

    def _on_subscribe(self, _c: Any, _u: Any, _mid: int, codes: list[ReasonCode], _p: Any) -> None:
        self.subacks.put([c.value for c in codes])

    def _on_disconnect(self, _c: Any, _u: Any, _f: Any, rc: ReasonCode, _p: Any) -> None:
        self.disconnected.put(rc.value)
        self.outcomes.put(("disconnect", -1, rc.value))

    def _puback_queue(self, mid: int) -> queue.Queue[int]:
        with self._lock:
            return self.pubacks.setdefault(mid, queue.Queue())

    # the test's side
    def connected(self) -> tuple[int, Properties | None]:
        """The CONNACK's reason code and properties."""
        return self.connack.get(timeout=TIMEOUT_S)

    def publish(self, topic: str, payload: bytes, *, qos: int = 1, retain: bool = False) -> int:
        """Publish; the mid to wait on."""
        info = self.client.publish(topic, payload, qos=qos, retain=retain)
        return info.mid

    def puback(self, mid: int) -> int:
        """The reason code of the PUBACK (or PUBCOMP) for ``mid``."""
        return self._puback_queue(mid).get(timeout=TIMEOUT_S)

    def puback_or_disconnect(self, mid: int) -> tuple[str, int]:
        """What came first for ``mid``: ``("puback", reason)`` or ``("disconnect", reason)``."""
        while True:
            what, got_mid, code = self.outcomes.get(timeout=TIMEOUT_S)
            if what == "disconnect" or got_mid == mid:
                return what, code

    def subscribe(self, topic_filter: str, qos: int = 1) -> list[int]:
        """Subscribe and return the SUBACK's codes."""
        self.client.subscribe(topic_filter, qos)
        return self.subacks.get(timeout=TIMEOUT_S)

    def next_message(self) -> mqtt.MQTTMessage:
        return self.messages.get(timeout=TIMEOUT_S)

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()


@pytest.fixture(params=list(PROFILES.values()), ids=lambda p: p.name)
def profile(request: pytest.FixtureRequest) -> UplinkProfile:
    assert isinstance(request.param, type(MQTT))
    return request.param


def _log_path(request: pytest.FixtureRequest) -> Path:
    name = re.sub(r"[^A-Za-z0-9_.-]+", "_", request.node.nodeid)[-120:]
    return phi_canaries.log_dir() / f"{name}.mosquitto.log"


def _start(
    profile: UplinkProfile, pki: DevPki, tmp_path: Path, request: pytest.FixtureRequest
) -> ProfileBroker:
    broker = ProfileBroker(pki, tmp_path / "broker", profile, log_path=_log_path(request))
    broker.start()
    return broker


@pytest.fixture
def broker(
    profile: UplinkProfile, dev_pki: DevPki, tmp_path: Path, request: pytest.FixtureRequest
) -> Iterator[ProfileBroker]:
    broker = _start(profile, dev_pki, tmp_path, request)
    try:
        yield broker
    finally:
        broker.close()


class Peers:
    """Opens the test's clients and closes them all at the end."""

    def __init__(self, pki: DevPki, broker: ProfileBroker) -> None:
        self.pki = pki
        self.broker = broker
        self.profile = broker.profile
        self.opened: list[Peer] = []

    def open(
        self, who: str, *, version: MQTTProtocolVersion | None = None, keepalive_s: int = 60
    ) -> Peer:
        if who == HUB_ID:
            cert = (self.pki.hub_cert, self.pki.hub_key)
        elif who == "platform":
            cert = (self.pki.receiver_cert, self.pki.receiver_key)
        else:
            cert = self.pki.issue_client(who)
        peer = Peer(
            self.pki,
            self.broker.port,
            cert,
            self.profile.client_id(who) if who != "platform" else "platform-receiver",
            version or _paho_version(self.profile),
            keepalive_s=keepalive_s,
        )
        self.opened.append(peer)
        return peer

    def hub(self, **kw: Any) -> Peer:
        peer = self.open(HUB_ID, **kw)
        assert peer.connected()[0] == 0
        return peer

    def platform(self) -> Peer:
        """The platform, subscribed to every hub's outbound topics (QoS 1)."""
        peer = self.open("platform", version=MQTTProtocolVersion.MQTTv5)
        assert peer.connected()[0] == 0
        if self.profile is AZURE_IOT_HUB:
            filters = ["devices/+/messages/events/#"]
        else:
            filters = [f"homehub/v1/+/{kind.value}" for kind in OUTBOUND]
        for f in filters:
            assert peer.subscribe(f) == [1]
        return peer


@pytest.fixture
def peers(dev_pki: DevPki, broker: ProfileBroker) -> Iterator[Peers]:
    opened = Peers(dev_pki, broker)
    try:
        yield opened
    finally:
        for peer in opened.opened:
            peer.close()


def _fenced_drop(
    profile: UplinkProfile, hub: Peer, platform: Peer, topic: str, payload: bytes
) -> None:
    """The hub publishes ``topic`` and then a valid fence; the platform's next message must be
    the fence (MQTT 3.1.1: the broker acknowledged and dropped the first)."""
    hub.puback(hub.publish(topic, payload))
    fence = profile.publication(HUB_ID, MessageKind.EVENTS)
    hub.puback(hub.publish(fence.topic, b"fence"))
    got = platform.next_message()
    assert (got.topic, got.payload) == (fence.topic, b"fence")


class TestAccepted:
    def test_every_outbound_message_arrives_on_the_profiles_topic(self, peers: Peers) -> None:
        p = peers.profile
        platform = peers.platform()
        hub = peers.hub()
        for kind in OUTBOUND:
            pub = p.publication(HUB_ID, kind)
            mid = hub.publish(pub.topic, kind.value.encode(), qos=pub.qos, retain=pub.retain)
            assert hub.puback(mid) == 0
            got = platform.next_message()
            assert (got.topic, got.payload, got.qos) == (pub.topic, kind.value.encode(), 1)

    def test_receipts_and_commands_reach_the_hub_and_are_told_apart(self, peers: Peers) -> None:
        p = peers.profile
        hub = peers.hub()
        for sub in p.subscriptions(HUB_ID):
            assert hub.subscribe(sub.topic_filter, sub.qos) == [1]
        platform = peers.platform()
        for kind in INBOUND:
            if p is AZURE_IOT_HUB:  # as IoT Hub delivers a C2D message: system + app properties
                topic = f"devices/{HUB_ID}/messages/devicebound/%24.mid=m1&homehub-kind={kind}"
            else:
                topic = f"homehub/v1/{HUB_ID}/{kind.value}"
            assert platform.puback(platform.publish(topic, b"signed")) == 0
            got = hub.next_message()
            assert (got.topic, p.inbound_kind(HUB_ID, got.topic)) == (topic, kind)

    def test_largest_allowed_message_passes(self, peers: Peers) -> None:
        p = peers.profile
        platform = peers.platform()
        hub = peers.hub()
        pub = p.publication(HUB_ID, MessageKind.READINGS)
        payload = b"r" * p.max_payload_bytes
        assert hub.puback(hub.publish(pub.topic, payload)) == 0
        assert len(platform.next_message().payload) == p.max_payload_bytes


class TestRefused:
    def test_another_hubs_topics_and_the_hubs_inbound_topics(self, peers: Peers) -> None:
        """A hub may not publish as another hub, nor on its own inbound topics, nor outside
        the profile's topics."""
        p = peers.profile
        platform = peers.platform()
        hub = peers.hub()
        other = p.publication(OTHER_HUB, MessageKind.READINGS).topic
        if p is AZURE_IOT_HUB:
            wrong = [
                other,
                f"devices/{HUB_ID}/messages/devicebound/homehub-kind=receipts",
                f"homehub/v1/{HUB_ID}/readings",
            ]
        else:
            wrong = [other, *(f"homehub/v1/{HUB_ID}/{k.value}" for k in INBOUND)]
            wrong.append(f"homehub/v1/{HUB_ID}/readings/extra")
        for topic in wrong:
            if p.mqtt_version is MqttVersion.V5:
                assert (topic, hub.puback(hub.publish(topic, b"x"))) == (
                    topic,
                    PUBACK_NOT_AUTHORIZED,
                )
            else:
                _fenced_drop(p, hub, platform, topic, b"x")
        assert platform.messages.empty()

    def test_another_hubs_inbound_messages_never_reach_the_hub(self, peers: Peers) -> None:
        """mosquitto 2.0 grants the SUBSCRIBE and checks read access on delivery: the other
        hub's receipt never arrives, the fence on the hub's own filter does."""
        p = peers.profile
        hub = peers.hub()
        for sub in (*p.subscriptions(OTHER_HUB), *p.subscriptions(HUB_ID)):
            assert hub.subscribe(sub.topic_filter) == [1]
        platform = peers.platform()
        if p is AZURE_IOT_HUB:
            stolen = f"devices/{OTHER_HUB}/messages/devicebound/homehub-kind=receipts"
            fence = f"devices/{HUB_ID}/messages/devicebound/homehub-kind=receipts"
        else:
            stolen = f"homehub/v1/{OTHER_HUB}/receipts"
            fence = f"homehub/v1/{HUB_ID}/receipts"
        for topic in (stolen, fence):
            assert platform.puback(platform.publish(topic, b"receipt")) == 0
        assert hub.next_message().topic == fence
        assert hub.messages.empty()

    def test_oversized_message(self, peers: Peers) -> None:
        p = peers.profile
        platform = peers.platform()
        hub = peers.hub()
        pub = p.publication(HUB_ID, MessageKind.READINGS)
        payload = b"r" * (p.max_payload_bytes + 1)
        if p.mqtt_version is MqttVersion.V5:
            outcome = hub.puback_or_disconnect(hub.publish(pub.topic, payload))
            assert outcome in _OVERSIZE_REFUSALS
            hub.close()  # paho would send the refused message again on its own reconnects
            fence = p.publication(HUB_ID, MessageKind.EVENTS).topic
            fresh = peers.hub()
            assert fresh.puback(fresh.publish(fence, b"fence")) == 0
            got = platform.next_message()
            assert (got.topic, got.payload) == (fence, b"fence")
        else:
            _fenced_drop(p, hub, platform, pub.topic, payload)

    def test_qos_2(self, peers: Peers) -> None:
        """Where the platform refuses QoS 2 the broker disconnects the hub (IoT Hub closes the
        connection too); plain MQTT takes it."""
        p = peers.profile
        hub = peers.hub()
        topic = p.publication(HUB_ID, MessageKind.EVENTS).topic
        mid = hub.publish(topic, b"q2", qos=2)
        if p.qos_max == 2:
            assert hub.puback(mid) == 0
            return
        code = hub.disconnected.get(timeout=TIMEOUT_S)
        if p.mqtt_version is MqttVersion.V5:
            assert code == DISCONNECT_QOS_NOT_SUPPORTED
        else:
            assert code != 0

    def test_retained_status(self, peers: Peers) -> None:
        """Retained where the platform keeps it (a late subscriber gets the status); on IoT Hub
        the flag gets the hub disconnected."""
        p = peers.profile
        hub = peers.hub()
        status = p.publication(HUB_ID, MessageKind.STATUS)
        mid = hub.publish(status.topic, b"online", retain=True)
        if not p.retain_available:
            assert status.retain is False
            assert hub.disconnected.get(timeout=TIMEOUT_S) != 0
            return
        assert status.retain is True
        assert hub.puback(mid) == 0x10  # accepted; no subscriber yet
        late = peers.platform()  # subscribes after the status was published
        got = late.next_message()
        assert (got.topic, got.payload, got.retain) == (status.topic, b"online", True)


class TestKeepalive:
    def test_profiles_keepalive_is_accepted_as_asked(self, peers: Peers) -> None:
        p = peers.profile
        hub = peers.open(HUB_ID, keepalive_s=p.keepalive_s)
        code, props = hub.connected()
        assert code == 0
        assert getattr(props, "ServerKeepAlive", None) is None

    @pytest.mark.parametrize("profile", [AWS_IOT_CORE, AZURE_IOT_HUB], ids=lambda p: p.name)
    def test_a_keepalive_beyond_the_bound(self, peers: Peers) -> None:
        """MQTT 5 (AWS): the broker answers with its bound, as AWS uses 1200 s for more. MQTT
        3.1.1 (IoT Hub): no way to say so; mosquitto, like IoT Hub, accepts the connection (IoT
        Hub then times it out at 1767 s whatever was asked)."""
        p = peers.profile
        hub = peers.open(HUB_ID, keepalive_s=p.keepalive_max_s + 1)
        code, props = hub.connected()
        expected = p.keepalive_max_s if p.mqtt_version is MqttVersion.V5 else None
        assert (code, getattr(props, "ServerKeepAlive", None)) == (0, expected)
