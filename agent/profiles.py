"""Uplink profiles: the facts of each platform a hospital runs, as one table (sans-I/O).

A profile says how the messages of ``docs/platform-protocol.md`` travel on one platform: which
MQTT version, client id and user name, which topic each message takes (or which topic plus
properties), QoS, retained or not, the last will, the size and topic limits, the keepalive made
for a metered cellular link and the ack mode a hub defaults to. The messages themselves (COSE_Sign1
envelopes) are the same bytes on every platform. Nothing here does I/O; the uplink asks a profile
for a :class:`Publication` and hands it to paho.

=================  ===========================  =============================  =====================
fact               ``mqtt`` (mosquitto, EMQX,   ``azure_iot_hub``              ``aws_iot_core``
                   HiveMQ)
=================  ===========================  =============================  =====================
MQTT version       5                            3.1.1 (MQTT 5 is a preview,    5 (3.1.1 also)
                                                now deprecated)
client id          hub id                       hub id (= IoT Hub device id)   hub id (= thing name)
user name          none (certificate CN)        ``<host>/<hub>/?api-version=   none
                                                2021-04-12``
outbound topics    ``homehub/v1/<hub>/<kind>``  ``devices/<hub>/messages/      ``homehub/v1/<hub>/
                                                events/<property bag>``        <kind>``
inbound            ``.../receipts``,            ``devices/<hub>/messages/      ``.../receipts``,
                   ``.../commands``             devicebound/#`` + properties   ``.../commands``
QoS                0, 1, 2 (we use 1)           0, 1 (QoS 2 closes the         0, 1 (QoS 2 gets no
                                                connection)                    PUBACK)
retained           yes                          no (flag -> ``mqtt-retain``    yes
                                                property, not kept)
last will          retained ``offline`` status  ``offline`` status as a D2C    retained ``offline``
                                                message (``iothub-MessageType  status
                                                = Will``)
message limit      1 MB packet (EMQX default)   256 KB body + properties       128 KB payload
                                                (C2D: 64 KB)
topic limit        none                         none documented                256 bytes, 7 slashes
keepalive bounds   1-65535 s                    1-1177 s                       30-1200 s
keepalive chosen   900 s                        900 s                          900 s
ack default        ``receipt``                  ``puback``                     ``receipt``
=================  ===========================  =============================  =====================

Sources (each fact is also cited where its constant is defined):

- Azure IoT Hub: "Communicate with an IoT hub using the MQTT protocol",
  https://learn.microsoft.com/azure/iot/iot-mqtt-connect-to-iot-hub (MQTT 3.1.1 on 8883; client
  id = device id; user name; D2C topic and property bag; C2D topic; QoS 2 closes the network
  connection; RETAIN not persisted, passed on with an ``mqtt-retain`` property; keepalive at most
  1177 s; the Will on the events topic, sent as telemetry with ``iothub-MessageType`` ``Will``;
  256 KB); "IoT Hub quotas and throttling",
  https://learn.microsoft.com/azure/iot-hub/iot-hub-devguide-quotas-throttling (D2C 256 KB, C2D
  64 KB and 50 pending per device, C2D sends 100/min/unit on S1); "Create and read IoT Hub
  messages", https://learn.microsoft.com/azure/iot-hub/iot-hub-devguide-messages-construct (the
  size counts body, system property values, application property names and values; D2C messages
  are durable, retained up to 7 days); "IoT Hub MQTT 5 support (preview)",
  https://learn.microsoft.com/azure/iot/iot-mqtt-5-preview (new hubs in preview mode only; now
  deprecated).
- AWS IoT Core: "MQTT", https://docs.aws.amazon.com/iot/latest/developerguide/mqtt.html (MQTT
  3.1.1 and 5; QoS 0 and 1 only, a QoS 2 request gets no PUBACK/SUBACK; retained messages;
  persistent sessions, one hour by default; client id); "AWS IoT Core endpoints and quotas",
  https://docs.aws.amazon.com/general/latest/gr/iot-core.html#message-broker-limits (keepalive
  30-1200 s, default 1200, disconnect at 1.5x; payload 128 KB; topic 256 bytes and 7 slashes;
  client id 128 bytes; 8 topic filters per SUBSCRIBE).
- Plain MQTT 5: OASIS MQTT 5.0 §3.1.2.10 (keepalive 0-65535 s), §3.3.2 (topics); EMQX's
  ``mqtt.max_packet_size = 1MB`` default,
  https://docs.emqx.com/en/emqx/latest/guides/configuration/mqtt.html (mosquitto and HiveMQ
  default to far more, so 1 MB is the bound every one of the three accepts out of the box).

Ack mode (``ack = "receipt" | "puback"``): a reading may be deleted on the PUBACK only where the
PUBACK means the platform holds it durably. A plain broker's PUBACK does not (mosquitto loses
what it acknowledged when killed: reliability finding 1), nor does AWS IoT Core's: its message
broker keeps nothing for a topic without a subscriber and hands it to rules whose actions can
fail after the PUBACK. Azure IoT Hub's does: a device-to-cloud message is durable once
acknowledged (kept up to 7 days in the built-in endpoint) and receipts would cost the most
there, each one a cloud-to-device message against a send throttle of 100 a minute per S1 unit
for the whole fleet and 50 pending per device. So ``receipt`` for ``mqtt`` and ``aws_iot_core``,
``puback`` for ``azure_iot_hub`` (the platform must read the built-in endpoint within its
retention; a hospital that wants receipts on Azure can still configure ``receipt``).

Keepalive: an idle connection costs one PINGREQ/PINGRESP round trip per keepalive, measured here
at :data:`PING_ROUND_TRIP_IP_BYTES` IP bytes over TLS (``hil/bench/idle_link.py`` measures it
again). The goal is at most :data:`IDLE_BYTES_PER_DAY_GOAL` a day, so the keepalive must be at
least 86,400 × 204 / 30,720 = 574 s; :data:`CELLULAR_KEEPALIVE_S` = 900 s costs about 19 KB a
day (the 60 s of today: 287 KB) and fits under every platform's bound (Azure's 1177 s, AWS's
1200 s). The price: a link that blackholes while idle is seen after up to 1.5 keepalives
(22.5 min); while sending, the PUBACK and receipt timeouts see it within seconds. A carrier NAT
that forgets idle TCP mappings sooner than 15 minutes turns every idle period into a reconnect;
such a deployment lowers ``keepalive_s`` (checked against the profile's bounds by
:meth:`UplinkProfile.check_keepalive`).
"""

from __future__ import annotations

import re
import urllib.parse
from dataclasses import dataclass
from enum import IntEnum, StrEnum
from typing import Final

from agent.errors import UsageError

# ---------------------------------------------------------------------------
# Constants
# ---------------------------------------------------------------------------

HUB_ID_RE: Final = re.compile(r"^[a-z0-9][a-z0-9-]{0,62}$")
"""The hub id allowlist, the same as ``agent.config.HUB_ID_RE`` (a test keeps them equal; it is
repeated here so that agent/config.py can import this module without a cycle). It is within
every platform's rules: an IoT Hub device id (128 characters of ASCII letters, digits and
``-.+%_#*?!(),:=@$'``), an AWS thing name (``[a-zA-Z0-9:_-]{1,128}``) and client id (128 bytes,
no leading ``$``)."""

SECONDS_PER_DAY: Final = 86_400

PING_ROUND_TRIP_IP_BYTES: Final = 204
"""IP bytes of one idle keepalive round trip over TLS 1.3, as measured here (issue 9): PINGREQ
and PINGRESP, 2 MQTT bytes each in a 24-byte TLS record (5 header + 1 type + 16 tag), each in a
segment with 52 bytes of IPv4 + TCP headers with timestamps, plus the pure ACK of the PINGRESP:
2 × 76 + 52 = 204. ``hil/bench/idle_link.py`` measures it on loopback."""

IDLE_BYTES_PER_DAY_GOAL: Final = 30 * 1024
"""Issue 9's goal for an idle day's keepalive traffic: 30 KB."""

BASELINE_KEEPALIVE_S: Final = 60
"""The keepalive before profiles (``agent.uplink.UplinkSettings.keepalive_s``): ~287 KB a day."""

CELLULAR_KEEPALIVE_S: Final = 900
"""The keepalive every profile chooses for a metered cellular link (see the module doc):
≈ 19 KB an idle day, a quarter of an hour between modem wake-ups."""

MQTT_KEEPALIVE_MAX_S: Final = 65_535
"""MQTT 5 §3.1.2.10: a two-byte integer."""

AZURE_KEEPALIVE_MAX_S: Final = 1177
"""IoT Hub closes a connection 1.5 keepalives after the last packet but never later than
1767 s (the Azure load balancer's idle timeout), so 1767 / 1.5 = 1177 s is the largest
keepalive that is honoured (iot-mqtt-connect-to-iot-hub, "Default keep-alive timeout")."""

AWS_KEEPALIVE_MIN_S: Final = 30
AWS_KEEPALIVE_MAX_S: Final = 1200
"""AWS IoT Core: a client may ask for 30-1200 s; less than 30 is taken as 30, 0 or more than
1200 as 1200; disconnect after 1.5 keepalives (quotas page, "Connection inactivity")."""

AZURE_API_VERSION: Final = "2021-04-12"
"""The ``api-version`` of the IoT Hub user name (iot-mqtt-connect-to-iot-hub, "Using the MQTT
protocol directly (as a device)")."""

AZURE_MESSAGE_MAX_BYTES: Final = 256_000
"""IoT Hub's device-to-cloud limit, "256 KB", read as 256,000 bytes (the page does not say
whether KB is 1,000 or 1,024 bytes; the smaller reading is always safe). It counts the body,
the values of the system properties and the names and values of the application properties
(iot-hub-devguide-messages-construct, "Message size")."""

AZURE_PROPERTY_RESERVE_BYTES: Final = 1024
"""Of :data:`AZURE_MESSAGE_MAX_BYTES`, kept for the properties counted with the body: ours
(content type and message kind, < 60 bytes) and those IoT Hub stamps itself (device id,
authentication generation id and method, enqueued time: ~ 150 bytes)."""

AZURE_C2D_MAX_BYTES: Final = 64_000
"""IoT Hub's cloud-to-device limit, "64 KB" read as 64,000 bytes (quotas page, "Other
limits"): the largest receipt or command a platform on Azure can send."""

AWS_PAYLOAD_MAX_BYTES: Final = 128_000
"""AWS IoT Core's "128 KB" per publish payload, read as 128,000 bytes (quotas page)."""

AWS_TOPIC_MAX_BYTES: Final = 256
AWS_TOPIC_MAX_LEVELS: Final = 8
"""AWS IoT Core: a topic of at most 256 UTF-8 bytes and 7 forward slashes (8 levels)."""

AWS_CLIENT_ID_MAX_BYTES: Final = 128
AZURE_DEVICE_ID_MAX_BYTES: Final = 128

MQTT_PACKET_MAX_BYTES: Final = 1024 * 1024
"""EMQX's default ``max_packet_size`` (1 MB, whole packet), the smallest default of the three
brokers the ``mqtt`` profile names."""

PACKET_HEADER_RESERVE_BYTES: Final = 1024
"""Of a whole-packet limit, kept for the fixed header, topic and MQTT 5 properties (our topics
are < 100 bytes, our properties none)."""

SESSION_EXPIRY_S: Final = 3600
"""MQTT 5 Session Expiry Interval the profiles ask for: one hour, as ``agent.uplink`` does today
and AWS IoT Core's default persistent-session expiry."""

QOS: Final = 1
"""Every message travels at QoS 1 (at least once; the platform deduplicates)."""

AZURE_KIND_PROPERTY: Final = "homehub-kind"
"""Application property naming the message's kind on IoT Hub, where every message of a device
shares one topic: ``readings``, ``replies``, ``status``, ``events`` (device to cloud),
``receipts``, ``commands`` (cloud to device)."""

AZURE_CONTENT_TYPE: Final = "application/cose"
"""The ``$.ct`` system property of our IoT Hub messages: the body is a COSE message (RFC 9052
§9); the protected header names what its payload is."""


class MessageKind(StrEnum):
    """The messages of docs/platform-protocol.md, named as the ``mqtt`` profile's topic level."""

    READINGS = "readings"
    RECEIPTS = "receipts"
    COMMANDS = "commands"
    REPLIES = "replies"
    STATUS = "status"
    EVENTS = "events"


OUTBOUND: Final = (
    MessageKind.READINGS,
    MessageKind.REPLIES,
    MessageKind.STATUS,
    MessageKind.EVENTS,
)
"""Hub → platform."""

INBOUND: Final = (MessageKind.RECEIPTS, MessageKind.COMMANDS)
"""Platform → hub."""


class AckMode(StrEnum):
    """What deletes a reading from the outbox (docs/platform-protocol.md, "Receipts")."""

    RECEIPT = "receipt"
    PUBACK = "puback"


class MqttVersion(IntEnum):
    """The protocol level byte of CONNECT (the values paho's ``MQTTProtocolVersion`` uses)."""

    V311 = 4
    V5 = 5


class TopicLayout(StrEnum):
    """How a profile maps messages onto topics."""

    HOMEHUB = "homehub"
    """One topic per message: ``homehub/v1/<hub>/<kind>``."""
    AZURE_DEVICE = "azure_device"
    """IoT Hub's fixed device topics, the kind in the property bag."""


@dataclass(frozen=True, slots=True)
class Publication:
    """How one outbound message is published: the uplink passes these to paho as they are."""

    topic: str
    qos: int
    retain: bool


@dataclass(frozen=True, slots=True)
class Subscription:
    """A topic filter the hub subscribes to for its inbound messages."""

    topic_filter: str
    qos: int


@dataclass(frozen=True, slots=True)
class UplinkProfile:
    """One platform's rules (see the module doc for the table and its sources).

    Attributes:
        name: the value of ``[mqtt] profile``.
        mqtt_version: the protocol the hub speaks to it.
        layout: how messages map onto topics.
        ack_default: what deletes a reading unless the configuration says otherwise.
        qos_max: the highest QoS the platform accepts.
        retain_available: whether a retained message is kept for later subscribers.
        will_retained: whether the last will is published retained.
        max_message_bytes: the platform's own size limit, counted as it counts it.
        max_payload_bytes: the largest MQTT payload (envelope) the hub may send: the limit
            minus what the platform counts besides the payload. A broker's
            ``message_size_limit`` for this profile is this value.
        max_inbound_bytes: the largest message the platform can send to the hub.
        max_client_id_bytes: the platform's client id limit.
        max_topic_bytes: the platform's topic length limit (None: none that binds us).
        max_topic_levels: the platform's topic depth limit (None: none).
        keepalive_s: the keepalive chosen for cellular (:data:`CELLULAR_KEEPALIVE_S`).
        keepalive_min_s: the smallest keepalive the platform honours.
        keepalive_max_s: the largest keepalive the platform honours.
        session_expiry_s: MQTT 5 Session Expiry Interval (None for MQTT 3.1.1, where the
            session is kept by Clean Session 0 as long as the platform keeps it).
        sources: the vendor pages the facts come from.
    """

    name: str
    mqtt_version: MqttVersion
    layout: TopicLayout
    ack_default: AckMode
    qos_max: int
    retain_available: bool
    will_retained: bool
    max_message_bytes: int
    max_payload_bytes: int
    max_inbound_bytes: int
    max_client_id_bytes: int
    max_topic_bytes: int | None
    max_topic_levels: int | None
    keepalive_s: int
    keepalive_min_s: int
    keepalive_max_s: int
    session_expiry_s: int | None
    sources: tuple[str, ...]

    def __post_init__(self) -> None:
        if not self.keepalive_min_s <= self.keepalive_s <= self.keepalive_max_s:
            raise UsageError("keepalive_s", f"{self.name}: outside the profile's own bounds")
        if not 0 < self.max_payload_bytes <= self.max_message_bytes:
            raise UsageError("max_payload_bytes", f"{self.name}: must be 1..max_message_bytes")
        if self.will_retained and not self.retain_available:
            raise UsageError("will_retained", f"{self.name}: the platform keeps no retained")

    # -- identity ---------------------------------------------------------------------

    def check_hub_id(self, hub_id: str) -> None:
        """UsageError unless ``hub_id`` is a valid hub id whose client id and every topic fit
        this profile's limits."""
        if not HUB_ID_RE.fullmatch(hub_id):
            raise UsageError("hub_id", "must match ^[a-z0-9][a-z0-9-]{0,62}$")
        if len(hub_id.encode()) > self.max_client_id_bytes:
            raise UsageError(
                "hub_id", f"{self.name}: a client id is at most {self.max_client_id_bytes} bytes"
            )
        for kind in OUTBOUND:
            self.check_topic(self._topic(hub_id, kind))
        for sub in self._subscriptions(hub_id):
            self.check_topic(sub.topic_filter)

    def check_topic(self, topic: str) -> None:
        """UsageError unless ``topic`` fits this profile's topic length and depth limits."""
        size = len(topic.encode())
        if self.max_topic_bytes is not None and size > self.max_topic_bytes:
            raise UsageError(
                "topic", f"{self.name}: {size} bytes, the limit is {self.max_topic_bytes}"
            )
        levels = topic.count("/") + 1
        if self.max_topic_levels is not None and levels > self.max_topic_levels:
            raise UsageError(
                "topic", f"{self.name}: {levels} levels, the limit is {self.max_topic_levels}"
            )

    def client_id(self, hub_id: str) -> str:
        """The MQTT client id: the hub id on every platform (IoT Hub device id, AWS thing)."""
        self.check_hub_id(hub_id)
        return hub_id

    def username(self, hub_id: str, host: str) -> str | None:
        """The CONNECT user name, None where the certificate alone names the hub.

        ``host`` is the broker's host name as configured (``[mqtt] host``); IoT Hub wants its
        full name, e.g. ``contoso.azure-devices.net``.
        """
        self.check_hub_id(hub_id)
        if self.layout is TopicLayout.AZURE_DEVICE:
            if not host or "/" in host:
                raise UsageError("host", "azure_iot_hub: the IoT Hub's host name is required")
            return f"{host}/{hub_id}/?api-version={AZURE_API_VERSION}"
        return None

    # -- messages ---------------------------------------------------------------------

    def publication(self, hub_id: str, kind: MessageKind) -> Publication:
        """Topic, QoS and retain flag for one outbound message of ``kind``.

        ``status`` is retained where the platform keeps retained messages; on IoT Hub it is an
        ordinary device-to-cloud message (the platform keeps the last one it received, and IoT
        Hub's own connected/disconnected events tell it the rest).
        """
        if kind not in OUTBOUND:
            raise UsageError("kind", f"{kind.value} is sent by the platform, not by the hub")
        self.check_hub_id(hub_id)
        retain = kind is MessageKind.STATUS and self.retain_available
        return Publication(self._topic(hub_id, kind), QOS, retain)

    def last_will(self, hub_id: str) -> Publication:
        """Where the ``offline`` status signed at connect time goes as the last will.

        Every profile has one: retained on the status topic where retained messages exist; on
        IoT Hub on the events topic, which IoT Hub forwards as telemetry with
        ``iothub-MessageType`` ``Will`` (iot-mqtt-connect-to-iot-hub).
        """
        status = self.publication(hub_id, MessageKind.STATUS)
        return Publication(status.topic, status.qos, self.will_retained)

    def subscriptions(self, hub_id: str) -> tuple[Subscription, ...]:
        """The topic filters that bring receipts and commands to the hub."""
        self.check_hub_id(hub_id)
        return self._subscriptions(hub_id)

    def inbound_kind(self, hub_id: str, topic: str) -> MessageKind | None:
        """What an arrived message is, from its topic (and, on IoT Hub, its property bag);
        None for a topic that is not one of this hub's inbound messages."""
        if self.layout is TopicLayout.HOMEHUB:
            for kind in INBOUND:
                if topic == _homehub_topic(hub_id, kind):
                    return kind
            return None
        prefix = f"devices/{hub_id}/messages/devicebound/"
        if not topic.startswith(prefix):
            return None
        bag = topic[len(prefix) :].lstrip("?")
        values = dict(urllib.parse.parse_qsl(bag, keep_blank_values=True))
        value = values.get(AZURE_KIND_PROPERTY)
        for kind in INBOUND:
            if value == kind.value:
                return kind
        return None

    def check_keepalive(self, keepalive_s: int) -> None:
        """UsageError unless the platform honours ``keepalive_s`` as asked."""
        if not self.keepalive_min_s <= keepalive_s <= self.keepalive_max_s:
            raise UsageError(
                "keepalive_s",
                f"{self.name}: must be {self.keepalive_min_s}-{self.keepalive_max_s} s"
                " (the platform would use another value)",
            )

    def check_payload(self, size_bytes: int) -> None:
        """UsageError if an envelope of ``size_bytes`` is more than the platform takes."""
        if size_bytes > self.max_payload_bytes:
            raise UsageError(
                "payload",
                f"{self.name}: {size_bytes} bytes, the limit is {self.max_payload_bytes}",
            )

    # -- internals --------------------------------------------------------------------

    def _topic(self, hub_id: str, kind: MessageKind) -> str:
        if self.layout is TopicLayout.HOMEHUB:
            return _homehub_topic(hub_id, kind)
        return f"devices/{hub_id}/messages/events/{azure_property_bag(kind)}"

    def _subscriptions(self, hub_id: str) -> tuple[Subscription, ...]:
        if self.layout is TopicLayout.HOMEHUB:
            return tuple(Subscription(_homehub_topic(hub_id, kind), QOS) for kind in INBOUND)
        return (Subscription(f"devices/{hub_id}/messages/devicebound/#", QOS),)


def idle_bytes_per_day(
    keepalive_s: float, round_trip_ip_bytes: float = PING_ROUND_TRIP_IP_BYTES
) -> float:
    """IP bytes an idle connection costs a day: one keepalive round trip per ``keepalive_s``.

    An estimate: TCP keepalives are off on our sockets and nothing else crosses an idle
    MQTT link; a reconnect (a TLS handshake, ~5 KB) is not counted.
    """
    if keepalive_s <= 0:
        raise UsageError("keepalive_s", "must be > 0")
    return SECONDS_PER_DAY / keepalive_s * round_trip_ip_bytes


def azure_property_bag(kind: MessageKind) -> str:
    """IoT Hub property bag naming the body's content type (system property ``$.ct``) and the
    message kind (application property :data:`AZURE_KIND_PROPERTY`), RFC 2396-encoded as a
    query string. Built only from our own constants: nothing a device sent."""
    quote = urllib.parse.quote
    return f"$.ct={quote(AZURE_CONTENT_TYPE, safe='')}&{AZURE_KIND_PROPERTY}={quote(kind.value)}"


def _homehub_topic(hub_id: str, kind: MessageKind) -> str:
    return f"homehub/v1/{hub_id}/{kind.value}"


_DOCS_AZURE: Final = (
    "https://learn.microsoft.com/azure/iot/iot-mqtt-connect-to-iot-hub",
    "https://learn.microsoft.com/azure/iot-hub/iot-hub-devguide-quotas-throttling",
    "https://learn.microsoft.com/azure/iot-hub/iot-hub-devguide-messages-construct",
    "https://learn.microsoft.com/azure/iot/iot-mqtt-5-preview",
)
_DOCS_AWS: Final = (
    "https://docs.aws.amazon.com/iot/latest/developerguide/mqtt.html",
    "https://docs.aws.amazon.com/general/latest/gr/iot-core.html#message-broker-limits",
)
_DOCS_MQTT: Final = (
    "https://docs.oasis-open.org/mqtt/mqtt/v5.0/mqtt-v5.0.html",
    "https://docs.emqx.com/en/emqx/latest/guides/configuration/mqtt.html",
)

MQTT: Final = UplinkProfile(
    name="mqtt",
    mqtt_version=MqttVersion.V5,
    layout=TopicLayout.HOMEHUB,
    ack_default=AckMode.RECEIPT,
    qos_max=2,
    retain_available=True,
    will_retained=True,
    max_message_bytes=MQTT_PACKET_MAX_BYTES,
    max_payload_bytes=MQTT_PACKET_MAX_BYTES - PACKET_HEADER_RESERVE_BYTES,
    max_inbound_bytes=MQTT_PACKET_MAX_BYTES - PACKET_HEADER_RESERVE_BYTES,
    max_client_id_bytes=65_535,
    max_topic_bytes=None,
    max_topic_levels=None,
    keepalive_s=CELLULAR_KEEPALIVE_S,
    keepalive_min_s=1,
    keepalive_max_s=MQTT_KEEPALIVE_MAX_S,
    session_expiry_s=SESSION_EXPIRY_S,
    sources=_DOCS_MQTT,
)
"""Plain MQTT 5: mosquitto, EMQX, HiveMQ; the topics of docs/platform-protocol.md."""

AZURE_IOT_HUB: Final = UplinkProfile(
    name="azure_iot_hub",
    mqtt_version=MqttVersion.V311,
    layout=TopicLayout.AZURE_DEVICE,
    ack_default=AckMode.PUBACK,
    qos_max=1,
    retain_available=False,
    will_retained=False,
    max_message_bytes=AZURE_MESSAGE_MAX_BYTES,
    max_payload_bytes=AZURE_MESSAGE_MAX_BYTES - AZURE_PROPERTY_RESERVE_BYTES,
    max_inbound_bytes=AZURE_C2D_MAX_BYTES,
    max_client_id_bytes=AZURE_DEVICE_ID_MAX_BYTES,
    max_topic_bytes=None,
    max_topic_levels=None,
    keepalive_s=CELLULAR_KEEPALIVE_S,
    keepalive_min_s=1,
    keepalive_max_s=AZURE_KEEPALIVE_MAX_S,
    session_expiry_s=None,
    sources=_DOCS_AZURE,
)
"""Azure IoT Hub over MQTT 3.1.1, X.509 device authentication (no password)."""

AWS_IOT_CORE: Final = UplinkProfile(
    name="aws_iot_core",
    mqtt_version=MqttVersion.V5,
    layout=TopicLayout.HOMEHUB,
    ack_default=AckMode.RECEIPT,
    qos_max=1,
    retain_available=True,
    will_retained=True,
    max_message_bytes=AWS_PAYLOAD_MAX_BYTES,
    max_payload_bytes=AWS_PAYLOAD_MAX_BYTES,
    max_inbound_bytes=AWS_PAYLOAD_MAX_BYTES,
    max_client_id_bytes=AWS_CLIENT_ID_MAX_BYTES,
    max_topic_bytes=AWS_TOPIC_MAX_BYTES,
    max_topic_levels=AWS_TOPIC_MAX_LEVELS,
    keepalive_s=CELLULAR_KEEPALIVE_S,
    keepalive_min_s=AWS_KEEPALIVE_MIN_S,
    keepalive_max_s=AWS_KEEPALIVE_MAX_S,
    session_expiry_s=SESSION_EXPIRY_S,
    sources=_DOCS_AWS,
)
"""AWS IoT Core over MQTT 5, X.509; the thing name is the hub id (the policy's
``iot:Connection.Thing.ThingName`` then names it in topics)."""

PROFILES: Final = {p.name: p for p in (MQTT, AZURE_IOT_HUB, AWS_IOT_CORE)}
"""Every profile by its ``[mqtt] profile`` name."""


def profile_named(name: str) -> UplinkProfile:
    """The profile ``[mqtt] profile = name`` selects; UsageError naming the choices if none."""
    try:
        return PROFILES[name]
    except KeyError:
        choices = ", ".join(repr(n) for n in PROFILES)
        raise UsageError("profile", f"unknown profile {name!r}; one of {choices}") from None
