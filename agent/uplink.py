"""The MQTT uplink: paho-mqtt 2.2 driven by the asyncio event loop, without paho's thread.

:class:`Uplink` keeps one MQTT connection over TLS (client certificate, TLS ≥ 1.2, broker
certificate and host name verified) to the platform's broker, reconnects forever (never with
paho's own jitter-free reconnect: performance-anchors §B.2), and publishes signed envelopes at
QoS 1 where its profile (:mod:`agent.profiles`, ``[mqtt] profile``) puts them: MQTT 5 or 3.1.1,
client id and user name, topics (``homehub/v1/<hub_id>/readings`` on ``mqtt`` and
``aws_iot_core``, IoT Hub's ``devices/<hub_id>/messages/events/<property bag>``), the payload
limit and the keepalive bounds are the profile's. :meth:`Uplink.publish` returns only when the
broker's PUBACK carries a reason code below 0x80 and raises :class:`~agent.errors.UplinkError` on a
negative PUBACK, on a disconnect before the PUBACK, or when no PUBACK comes within
PUBACK_TIMEOUT_S: the caller (the outbox publisher) then puts the record back. paho is only a
transport with a small bounded window (reliability finding 2): the durable queue is the outbox.

How long to wait before the next attempt is :mod:`agent.retry`'s decision
(:class:`~agent.retry.Backoff`): full jitter between 0 and ``min(backoff_max_s, backoff_base_s ·
2^attempt)`` after a failure waiting can fix; after a refusal (:class:`UplinkRefusedError`: a
certificate not accepted, CONNACK 'not authorized') or a bug in this bridge, a jittered pause
never shorter than ``refusal_backoff_s``; from the first attempt again once a connection had
lasted :data:`~agent.retry.STABLE_PERIOD_S`.

How paho runs on the loop (the aiomqtt 2.x pattern, paho's ``examples/loop_asyncio.py``):

- ``on_socket_open``/``on_socket_close`` add and remove a reader that calls ``loop_read``;
  ``on_socket_register_write``/``unregister_write`` add and remove a writer calling
  ``loop_write``; a named task calls ``loop_misc`` every second (keepalive, PINGREQ).
- An SSL socket can hold decrypted bytes the selector cannot see: after ``loop_read`` we check
  ``SSLSocket.pending()`` and read again (bounded per wake-up, then rescheduled; also called
  once when a paused reader resumes, see inbound below).
- ``Client.connect`` blocks in ``socket.create_connection`` and the TLS handshake, so it runs in
  a one-worker executor, bounded by paho's ``connect_timeout`` inside our ATTEMPT_TIMEOUT_S.
  While it runs the loop does not touch that client: socket callbacks from the worker only
  record the socket, which is attached to the selector after the worker returns (an SSL object
  must never be used from two threads at once). A cheaper non-blocking connect would need
  paho's private ``_create_socket``; one short-lived, bounded thread per attempt is the price.
- paho reports the socket only after a successful handshake and does not close the socket of
  one that failed. The connection's TLS context records every socket it wraps
  (:class:`_HandshakeSockets`), so a handshake that fails, times out or is cancelled has its
  socket shut down at once (waking the blocked worker) and closed as the worker returns;
  :meth:`Uplink.run` returns only after the worker did.
- Every connection gets a fresh paho ``Client``, so paho never re-sends its in-memory copies
  after a reconnect: what was not acknowledged is re-sent by the outbox, byte-identical.
- An exception out of paho or out of our callbacks is a bug in this bridge: it is logged with
  its traceback (``mqtt_bridge_failed``), the connection is cut, and the next attempt waits as
  after a refusal, so a bug never turns into a silent, tight reconnect loop.

The client id is the hub id. A second client with the same id takes the session over
(MQTT 5 §3.1.4) and the two would evict each other, so nothing else may connect under it.
All methods run on the event loop's thread.

Session: on MQTT 5 Clean Start 0 with a Session Expiry Interval of SESSION_EXPIRY_S; on MQTT
3.1.1 (IoT Hub) Clean Session 0, without properties (so neither Receive Maximum nor Maximum
Packet Size: IoT Hub bounds what it sends itself, 50 pending cloud-to-device messages of 64 KB).
The broker keeps the hub's subscriptions (receipts, commands) and queues what the platform sends
it across short drops. Longer outages are the outbox's job.

PUBACK reason codes exist only on MQTT 5. On 3.1.1 a broker refusing a publish either drops the
connection (the publisher's connection-lost path re-sends) or acknowledges and discards it (IoT
Hub and mosquitto for a topic the ACL denies): which is why the uplink checks every payload
against its limit before sending (:func:`publish_limit_bytes`: the profile's payload limit, and
never more than the largest envelope a verifier takes, a batch's), and only ever publishes the
profile's topics.

Inbound messages (receipts, commands: :meth:`Uplink.on_message`): once a handler is registered,
the uplink subscribes at QoS 1 to the profile's inbound topics after every CONNACK (again on
each connection: a broker restarted without persistence has forgotten the session). Memory is
bounded however the platform behaves:

- CONNECT announces a Receive Maximum of INBOUND_QUEUE_MAX and a Maximum Packet Size of
  MAX_INBOUND_BYTES (plus headers): the broker sends at most that many unacknowledged QoS 1
  messages, and discards (as delivered) any larger one instead of sending it.
- paho runs with ``manual_ack``: a message is acknowledged only when its kind's dispatcher
  task (``uplink.inbound[<kind>]``) hands it to the handler, so at most INBOUND_QUEUE_MAX wait
  per kind and a flood waits at the broker (MQTT flow control), not in our memory.
- A message over the size bound, or of a kind without a handler, is acknowledged and dropped
  with ``mqtt_inbound_dropped`` (the same bytes would be dropped again). One whose connection
  ended before its turn (``mqtt_inbound_deferred``) is neither handled nor acknowledged: the
  broker sends it again on the next connection (acknowledging it on a new connection is
  impossible, and handling it would make the broker's redelivery look like a replay).
- A broker may send more than our Receive Maximum anyway: mosquitto 2.0.11 does once
  acknowledgements resume (up to 90 unacknowledged measured with a limit of 10). Such a message
  is never dropped: it waits, unacknowledged and in order, in its kind's *overflow*, and the
  connection stops reading its socket (``mqtt_inbound_paused``): the broker's further messages
  stay in TCP buffers and at the broker (TCP flow control). When a handler takes a message the
  overflow moves up into the queue; once it is empty reading resumes (``mqtt_inbound_resumed``).
  Memory stays bounded: INBOUND_QUEUE_MAX per kind plus what the one ``loop_read`` call that
  filled the queue still parses (:func:`inbound_overflow_max`; the reader stops after that
  call). A message beyond even that bound (a paho that parses more per call than it does
  today) is dropped unacknowledged as ``queue_full``, the old safety net.
- A paused reader is not a dead link. While paused no byte is read, so our liveness check is
  suspended (its timer cancelled, re-armed at resume) and so is the PUBACK deadline: both run
  on a *reading clock* that stands still while paused (:meth:`_Connection.read_clock`), as the
  PUBACKs and PINGRESPs the broker sent meanwhile wait behind the messages we do not read.
  ``loop_misc`` keeps running: paho's PINGREQs still tell the broker we live. What bounds a
  pause is paho's own ping timeout: the PINGRESP of a PINGREQ sent while paused stays unread,
  so a pause longer than about two keepalives (30 min at 900 s) ends the connection, and so a
  link that died while paused is seen then too. Nothing is lost: the held messages were never
  acknowledged and come again on the next connection. A handler that awaits a PUBACK of its
  own (a command's reply) while the reader is paused waits for it until the overflow drained
  (the platform link gives up on a reply after its own 10 s): only with a broker ignoring our
  Receive Maximum.
- The one window left: a message acknowledged and handled whose PUBACK the broker never got
  (the link dropped right then) comes again; a receipt handler then sees its rid replayed.

Events logged: ``mqtt_connecting``, ``mqtt_connected``, ``mqtt_connect_failed``,
``mqtt_disconnected`` (reason code), ``mqtt_backoff`` (delay), ``mqtt_puback_timeout``,
``mqtt_publish_refused``, ``mqtt_bridge_failed`` (with the traceback), ``mqtt_subscribed``,
``mqtt_subscribe_refused`` (reason codes), ``mqtt_inbound_dropped`` (kind, why, size),
``mqtt_inbound_deferred``, ``mqtt_inbound_paused`` (kind, held), ``mqtt_inbound_resumed``
(paused_s), ``mqtt_inbound_handler_failed``, ``mqtt_publish_too_large``,
``mqtt_reconnect_requested``, ``mqtt_observer_failed``, ``mqtt_last_will_failed``,
``mqtt_link_dead`` (nothing from the broker for 1.5 keepalives), and
``security`` (agent.security) for a broker certificate refused. Never payloads.

For the daemon's platform link: :meth:`Uplink.publish_message` (replies, status, events where
the profile puts them), :meth:`Uplink.reconnect` (after a certificate install: the files are
read again on every attempt), :meth:`Uplink.on_connected` / :meth:`Uplink.on_refused` (confirm
or revert a rotation on trial: :class:`Refusal`), :meth:`Uplink.set_last_will` (the signed
``offline`` status, asked for before each attempt).
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import socket
import ssl
import threading
from collections import deque
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from enum import StrEnum
from pathlib import Path
from typing import TYPE_CHECKING, Any, Final

import paho.mqtt.client as mqtt
import structlog
from paho.mqtt.enums import CallbackAPIVersion, MQTTErrorCode, MQTTProtocolVersion
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties
from paho.mqtt.reasoncodes import ReasonCode

from agent.cose import MAX_BATCH_MESSAGE_BYTES, MAX_MESSAGE_BYTES, check_key_file
from agent.errors import (
    HubError,
    KeyMaterialError,
    PublishNotQueuedError,
    PublishRefusedError,
    PublishRejectedError,
    UplinkError,
    UplinkRefusedError,
    UsageError,
)
from agent.profiles import (
    INBOUND,
    MQTT,
    OUTBOUND,
    MessageKind,
    MqttVersion,
    Publication,
    UplinkProfile,
)
from agent.receipts import envelope_digest
from agent.retry import (
    MQTT_BACKOFF_BASE_S,
    MQTT_BACKOFF_CAP_S,
    REFUSAL_BACKOFF_CAP_S,
    REFUSAL_BACKOFF_FLOOR_S,
    Backoff,
    Clock,
    FloorJitter,
    FullJitter,
    Rng,
    boot_jitter,
    retryable,
)
from agent.security import SecurityEvent, SecuritySink, report_security

if TYPE_CHECKING:
    from agent.config import Config

_log = structlog.get_logger(__name__)

# ---------------------------------------------------------------------------
# Constants
# ---------------------------------------------------------------------------

TLS_CONNECT_TIMEOUT_S: Final = 10.0
"""paho's ``connect_timeout``: bounds the TCP connect and each blocking read/write of the TLS
handshake. TCP (1 RTT) + TLS 1.3 (1–2 RTT) on a degraded cellular link with 2 s RTT (N8) is
about 6 s; 10 s leaves room for one retransmission."""

CONNACK_TIMEOUT_S: Final = 10.0
"""From CONNECT written to CONNACK: one RTT plus the broker's session lookup."""

ATTEMPT_TIMEOUT_S: Final = TLS_CONNECT_TIMEOUT_S + CONNACK_TIMEOUT_S + 5.0
"""Outer bound of one connection attempt (DNS lookup included); > the two inner timeouts."""

PUBACK_TIMEOUT_S: Final = 30.0
"""A PUBACK takes one RTT (≤ 2 s on a degraded link) plus the broker's queueing. After 30 s the
connection is declared stuck and dropped: earlier than paho's keepalive detection (up to
2 × keepalive = 120 s), and the outbox re-sends (reliability N2: nothing stuck in flight)."""

SESSION_EXPIRY_S: Final = 3600
"""MQTT 5 Session Expiry Interval (§3.1.2.11.2): an hour is many times the 120 s backoff cap
and covers a typical cellular outage; it also bounds what a broker keeps for a hub that never
returns."""

MISC_INTERVAL_S: Final = 1.0
"""How often ``loop_misc`` runs (keepalive and ping timeout), as paho's own loop does; an
eighth of the keepalive when that is shorter, so that paho's PINGREQ leaves at most
keepalive / 8 late and its PINGRESP is due well before the liveness deadline."""

LINK_DEAD_AFTER_KEEPALIVES: Final = 1.5
"""A connection from which nothing arrived for this many keepalives is dead (issue 9: a
blackholed link detected within 1.5 keepalives). paho sends a PINGREQ once a keepalive passed
without traffic and gives up only a keepalive after that, up to 2 keepalives (+ a tick) after
the last byte; the broker answers a PINGREQ at once, so half a keepalive after the PINGREQ
is ample. The check is one timer per connection, re-armed from the last inbound byte."""

PROFILE_KEEPALIVE: Final = 0
"""``UplinkSettings.keepalive_s`` left at this takes the profile's keepalive
(:attr:`~agent.profiles.UplinkProfile.keepalive_s`, 900 s on every profile: ~19 KB an idle day
instead of ~287 KB at the former 60 s). 0 is free to mean that: MQTT's 'no keepalive' is
refused here (a link without one could never be declared dead)."""

DISCONNECT_TIMEOUT_S: Final = 1.0
""":meth:`Uplink.close` waits this long for the DISCONNECT to be written, then cuts."""

WORKER_JOIN_TIMEOUT_S: Final = 5.0
""":meth:`Uplink.run` waits this long for a connecting worker to return. One whose sockets we
shut down returns within milliseconds; only a DNS lookup cannot be interrupted (the resolver's
own 5 s timeout), and such a worker is left to end by itself."""

INFLIGHT_MAX: Final = 20
"""QoS 1 messages awaiting PUBACK on the wire; paho's and mosquitto's default
(performance-anchors §B.1)."""

HANDOFF_FACTOR: Final = 2
"""paho may hold this many times ``inflight_max`` messages handed to it: those beyond the
window wait in paho's queue and go out from within the PUBACK's own processing, as in paho's
threaded loop, instead of a loop iteration later. Bounded, and only a transport's copy: the
outbox stays the source of truth (what has no PUBACK is sent again after a reconnect)."""

MESSAGE_HEADROOM: Final = 16
"""Room in paho's queue beyond the publisher's window (:data:`HANDOFF_FACTOR` ×
``inflight_max``) for the platform link's own messages (status, events, replies): without it
a status sent while the publisher's window was full was refused by paho (``rc`` 15, queue
full), and so was the reading that came after it."""

_READS_PER_WAKEUP: Final = 16
"""``loop_read`` rounds per reader wake-up while the SSL buffer still holds bytes. Each round
parses up to :func:`inbound_overflow_max` packets (paho's ``loop_read`` reads as many packets as
it has messages in flight), so this bounds the event loop's time per wake-up. It does not bound
memory: the rounds stop as soon as the inbound queue overflows and reading pauses, so at most
one round's packets land in the overflow, however large this is."""

_CONNACK_REFUSALS: Final = frozenset({0x84, 0x85, 0x86, 0x87, 0x8A, 0x8C})
"""CONNACK codes waiting cannot fix: protocol version, client id, credentials, not authorized,
banned, authentication method (MQTT 5 §3.2.2.2)."""

_PUBACK_REFUSALS: Final = frozenset({0x87, 0x90, 0x99})
"""PUBACK codes a re-send cannot fix: not authorized, topic name invalid, payload format."""

_NO_MATCHING_SUBSCRIBERS: Final = 0x10
"""PUBACK 0x10: accepted, but nobody subscribed. Still 'delivered' in the PUBACK sense, which is
why delivery must move to platform receipts (reliability finding 1); counted in the stats."""


INBOUND_QUEUE_MAX: Final = 16
"""Inbound messages (receipts, commands) taken from the broker and not yet handled, per kind.
Also the MQTT 5 Receive Maximum the hub announces in CONNECT (§3.1.2.11.3): the broker sends
no more QoS 1 messages than this before we acknowledge one, and we acknowledge a message only
as its handler takes it, so a platform (or a broker) flooding the hub queues at the broker,
not in our memory. A receipt gathers up to 1,000 envelopes; 16 of them in hand is plenty."""

MAX_INBOUND_BYTES: Final = MAX_MESSAGE_BYTES
"""Largest inbound payload handled (a receipt of 1,000 single-reading items is ≈ 28 KB): what
:func:`agent.cose.verify1` accepts at all. Also announced as the MQTT 5 Maximum Packet Size
(with :data:`_INBOUND_PACKET_OVERHEAD_BYTES` for topic and properties): a broker discards a
larger message for us instead of sending it (§3.1.2.11.4)."""

_INBOUND_PACKET_OVERHEAD_BYTES: Final = 1024
"""Fixed header, topic (≈ 30 bytes) and properties of an inbound PUBLISH, generously."""


def inbound_overflow_max(inflight_max: int) -> int:
    """The most inbound messages held beyond the queues (all kinds together) on a connection
    publishing with ``inflight_max``: once one overflows, reading pauses after the current
    ``loop_read`` call, and one call of paho 2.2's parses at most ``max(1, len(_out_messages)
    + len(_in_messages))`` packets. ``_out_messages`` is bounded by ``max_queued_messages`` =
    ``inflight_max`` × HANDOFF_FACTOR + MESSAGE_HEADROOM; ``_in_messages`` holds only QoS 2
    messages, which a QoS 1 subscription never gets. Counted in messages of at most
    MAX_INBOUND_BYTES each: with the default INFLIGHT_MAX, 56 (≈ 2 MB at the worst, 16 × 2
    kinds queued besides)."""
    return max(1, inflight_max * HANDOFF_FACTOR + MESSAGE_HEADROOM)


@dataclass(frozen=True, slots=True)
class InboundMessage:
    """One message the platform sent the hub. ``payload`` (a COSE_Sign1) is kept out of the
    repr: it is unverified bytes from the network."""

    kind: MessageKind
    payload: bytes = field(repr=False)
    dup: bool = False
    """The broker's DUP flag: it may have sent this message before (a redelivery)."""


_Held = tuple["_Connection", int, int, InboundMessage]
"""An inbound message waiting for its handler: its connection, paho mid and QoS (for the
PUBACK as the handler takes it), and the message."""

InboundHandler = Callable[[InboundMessage], Awaitable[None]]
"""Handles one inbound message of its kind (:meth:`Uplink.on_message`); runs on the loop, one
message at a time per kind. Raising a :class:`~agent.errors.HubError` is logged
(``mqtt_inbound_handler_failed``); anything else is logged with its traceback. Either way the
next message is handled."""


PublishDone = Callable[[BaseException | None], None]
"""How a publish ended: ``None`` on a PUBACK, else the error (see :meth:`Uplink.publish_then`)."""


class RefusalCause(StrEnum):
    """Why a connection attempt was refused (:class:`Refusal`)."""

    SERVER_CERTIFICATE = "server_certificate"
    """The broker's certificate was not accepted (untrusted, expired, another host name): the
    hub sent nothing. No verdict on the hub's own certificate; a ``security`` event."""
    TLS_HANDSHAKE = "tls_handshake"
    """The handshake failed otherwise: under TLS 1.2 how the broker refuses our certificate."""
    CLOSED_BEFORE_CONNACK = "closed_before_connack"
    """The broker closed the connection before CONNACK: under TLS 1.3 how it refuses our
    certificate (the alert comes after our side of the handshake finished)."""
    CONNACK = "connack"
    """CONNACK with a refusal code (not authorized, banned, bad client id...)."""
    KEY_MATERIAL = "key_material"
    """Our own CA, certificate or key file could not be loaded."""


@dataclass(frozen=True, slots=True)
class Refusal:
    """A refused connection attempt, as :meth:`Uplink.on_refused` observers see it."""

    cause: RefusalCause
    error: UplinkRefusedError

    @property
    def of_client_certificate(self) -> bool:
        """Whether this can be a verdict on the hub's own certificate and key: everything but
        the broker's certificate refused by us. A certificate rotation on trial
        (:func:`agent.cert_rotation.on_trial`) is reverted on such a refusal."""
        return self.cause is not RefusalCause.SERVER_CERTIFICATE


ConnectedObserver = Callable[[], None]
"""Called on the loop after each successful CONNACK (:meth:`Uplink.on_connected`)."""

RefusedObserver = Callable[[Refusal], None]
"""Called on the loop after each refused attempt (:meth:`Uplink.on_refused`)."""

LastWill = Callable[[], bytes | None]
"""Called before each connection attempt: the signed ``offline`` status to leave as the
last will (at the profile's :meth:`~agent.profiles.UplinkProfile.last_will`), or None for no
will (:meth:`Uplink.set_last_will`)."""


def publish_limit_bytes(profile: UplinkProfile) -> int:
    """The largest MQTT payload the uplink publishes on ``profile``: the profile's
    ``max_payload_bytes`` (what its broker takes), and at most
    :data:`agent.cose.MAX_BATCH_MESSAGE_BYTES`, the largest envelope any verifier accepts (a
    batch, agent/envelopes.py). ``mqtt`` 1,047,552 B; ``azure_iot_hub`` 254,976 B;
    ``aws_iot_core`` 128,000 B. Larger is refused unsent (:class:`PublishRejectedError`). What
    an envelope of a kind may hold is its builder's business (a single reading, a reply, a
    status: :data:`agent.cose.MAX_MESSAGE_BYTES`)."""
    return min(profile.max_payload_bytes, MAX_BATCH_MESSAGE_BYTES)


def readings_topic(hub_id: str) -> str:
    """``homehub/v1/<hub_id>/readings``, the ``mqtt`` profile's readings topic (the hub id
    checked against the allowlist first). The uplink itself asks its profile
    (:meth:`~agent.profiles.UplinkProfile.publication`)."""
    return MQTT.publication(hub_id, MessageKind.READINGS).topic


# ---------------------------------------------------------------------------
# Settings and statistics
# ---------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class UplinkSettings:
    """Where and how to connect. Times in seconds.

    ``keepalive_s`` defaults to the profile's (:data:`PROFILE_KEEPALIVE`), as
    :meth:`from_config` has it from ``[mqtt] keepalive_s``; an explicit value is checked
    against the profile's bounds. After construction it holds the value used: a
    ``dataclasses.replace`` with another profile keeps it (and checks it against that one).
    """

    hub_id: str
    host: str
    port: int
    ca_file: Path
    cert_file: Path
    key_file: Path
    keepalive_s: int = PROFILE_KEEPALIVE
    backoff_base_s: float = MQTT_BACKOFF_BASE_S
    backoff_max_s: float = MQTT_BACKOFF_CAP_S
    refusal_backoff_s: float = REFUSAL_BACKOFF_FLOOR_S
    refusal_backoff_max_s: float = REFUSAL_BACKOFF_CAP_S
    first_connect_jitter_s: float = 0.0
    inflight_max: int = INFLIGHT_MAX
    session_expiry_s: int = SESSION_EXPIRY_S
    profile: UplinkProfile = MQTT
    """The platform's rules (:mod:`agent.profiles`): MQTT version, client id and user name,
    every topic (outbound publications, inbound subscriptions and kinds), the payload limit,
    the keepalive bounds and the last will's place."""

    def __post_init__(self) -> None:
        if self.keepalive_s == PROFILE_KEEPALIVE:
            object.__setattr__(self, "keepalive_s", self.profile.keepalive_s)  # frozen
        self.profile.check_hub_id(self.hub_id)  # the allowlist and the profile's limits
        if not 0 < self.port < 65536:
            raise UsageError("port", "must be 1-65535")
        if not 1 <= self.keepalive_s <= 65535:
            raise UsageError(
                "keepalive_s", "must be 1-65535 s (MQTT 5 §3.1.2.10; no keepalive is refused)"
            )
        self.profile.check_keepalive(self.keepalive_s)
        self.profile.username(self.hub_id, self.host)  # IoT Hub needs its host name
        if not 0 < self.backoff_base_s <= self.backoff_max_s:
            raise UsageError("backoff_base_s", "must be > 0 and <= backoff_max_s")
        if not 0 < self.refusal_backoff_s < self.refusal_backoff_max_s:
            raise UsageError(
                "refusal_backoff_s", "must be > 0 and < refusal_backoff_max_s (jittered, no loop)"
            )
        if not 1 <= self.inflight_max <= 1000:
            raise UsageError("inflight_max", "must be 1-1000")
        if self.first_connect_jitter_s < 0:
            raise UsageError("first_connect_jitter_s", "cannot be negative")

    def backoff(self, rng: Rng | None = None, clock: Clock | None = None) -> Backoff:
        """The reconnect policy these settings describe (:mod:`agent.retry`)."""
        return Backoff(
            FullJitter(self.backoff_base_s, self.backoff_max_s),
            FloorJitter(self.refusal_backoff_s, self.refusal_backoff_max_s),
            rng=rng,
            clock=clock,
        )

    @classmethod
    def from_config(cls, config: Config) -> UplinkSettings:
        """Settings from the hub's validated configuration (``[hub]`` and ``[mqtt]``)."""
        m = config.mqtt
        return cls(
            hub_id=config.hub.id,
            host=m.host,
            port=m.port,
            ca_file=m.ca_file,
            cert_file=m.cert_file,
            key_file=m.key_file,
            keepalive_s=m.keepalive_s,
            backoff_max_s=m.backoff_max_s,
            first_connect_jitter_s=m.first_connect_jitter_s,
            profile=m.profile,
        )


@dataclass(slots=True)
class UplinkStats:
    """Counters since start, for the health message and for tests to await."""

    connects: int = 0
    connect_failures: int = 0
    disconnects: int = 0
    acked: int = 0
    acked_no_subscribers: int = 0
    refused: int = 0
    lost_in_flight: int = 0
    in_flight: int = 0
    last_backoff_s: float = 0.0
    last_failure: str = ""
    subscribed: int = 0
    """SUBACKs granting every inbound subscription (one per connection)."""
    subscribe_refused: int = 0
    inbound: int = 0
    """Inbound messages handed to their handler."""
    inbound_dropped: int = 0
    """Inbound messages not handled: too large, of no registered kind, or over every bound."""
    inbound_paused: int = 0
    """Times reading paused because a broker sent more than our Receive Maximum."""
    inbound_held: int = 0
    """Inbound messages held now, queued or overflowed, every kind."""
    inbound_overflow: int = 0
    """Of :attr:`inbound_held`, those over a full queue: reading is paused while > 0."""
    inbound_held_peak: int = 0
    """The most inbound messages held at once (queued and overflowed, every kind): at most
    INBOUND_QUEUE_MAX per kind + :func:`inbound_overflow_max`."""
    pings_sent: int = 0
    """PINGREQs paho sent (the idle link's keepalive)."""
    server_certificate_refused: int = 0
    """Attempts ended because the broker's certificate was not accepted (nothing sent)."""


# ---------------------------------------------------------------------------
# One connection
# ---------------------------------------------------------------------------


class _HandshakeSockets:
    """Every socket paho's blocking ``connect`` opens for one connection, so that it gets closed.

    paho creates the socket inside ``Client.connect`` (TCP connect, then the TLS handshake) and
    reports it through ``on_socket_open`` only after the handshake succeeded; a handshake that
    fails, times out or is given up leaves an open socket that nobody closes until the garbage
    collector finds it (a descriptor leak on a hub that retries for days). The connection's TLS
    context (:class:`_TlsContext`) records each socket here as paho has it wrapped. The worker
    thread and the event loop meet here, under a lock:

    - the worker closes them all as it returns, when ``connect`` failed or the attempt was
      abandoned meanwhile (:func:`_blocking_connect`);
    - :meth:`abandon` (on the loop: the attempt timed out or was cancelled, the connection is
      over) closes them all if the worker has returned; otherwise it only shuts them down,
      which wakes a handshake blocked in a read at once without touching its SSL object from a
      second thread, and the worker closes them as it returns;
    - a socket recorded after :meth:`abandon` is closed at once and the handshake refused.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._sockets: list[socket.socket] = []
        self._abandoned = False
        self._worker_returned = False

    def record(self, sock: socket.socket) -> None:
        """A socket paho is about to use (worker thread)."""
        with self._lock:
            if not self._abandoned:
                self._sockets.append(sock)
                return
        sock.close()
        raise ConnectionAbortedError("connection attempt abandoned")

    def worker_returned(self, *, failed: bool) -> None:
        """The worker's ``connect`` returned or raised (worker thread)."""
        with self._lock:
            self._worker_returned = True
            close = failed or self._abandoned
        if close:
            self._close_all()

    def abandon(self) -> None:
        """Nobody will use these sockets any more (event loop)."""
        with self._lock:
            self._abandoned = True
            returned = self._worker_returned
            sockets = list(self._sockets)
        if returned:
            self._close_all()
            return
        for sock in sockets:
            with contextlib.suppress(OSError):  # already closed, or detached by the SSL wrapper
                # The plain socket's shutdown: SSLSocket.shutdown would also drop its SSL object.
                socket.socket.shutdown(sock, socket.SHUT_RDWR)

    def _close_all(self) -> None:
        with self._lock:
            sockets, self._sockets = self._sockets, []
        for sock in sockets:
            with contextlib.suppress(OSError):
                sock.close()


class _TlsContext(ssl.SSLContext):
    """The client TLS context of one connection: records each socket it wraps in ``sockets``."""

    sockets: _HandshakeSockets

    def wrap_socket(
        self,
        sock: socket.socket,
        server_side: bool = False,
        do_handshake_on_connect: bool = True,
        suppress_ragged_eofs: bool = True,
        server_hostname: str | bytes | None = None,
        session: ssl.SSLSession | None = None,
    ) -> ssl.SSLSocket:
        """``SSLContext.wrap_socket``, recording the TCP socket and then its SSL socket."""
        self.sockets.record(sock)  # until the SSL socket takes its descriptor over
        wrapped = super().wrap_socket(
            sock,
            server_side=server_side,
            do_handshake_on_connect=do_handshake_on_connect,
            suppress_ragged_eofs=suppress_ragged_eofs,
            server_hostname=server_hostname,
            session=session,
        )
        self.sockets.record(wrapped)
        return wrapped


def _blocking_connect(
    client: mqtt.Client,
    sockets: _HandshakeSockets,
    host: str,
    port: int,
    keepalive_s: int,
    properties: Properties | None,
) -> MQTTErrorCode:
    """The worker's part of an attempt: paho's blocking connect (TCP, TLS, CONNECT written).

    ``properties``: MQTT 5's CONNECT properties, with Clean Start 0; None for MQTT 3.1.1,
    whose Clean Session 0 the client was made with.

    Whatever happens, the worker tells ``sockets`` it returned, which closes them when the
    attempt failed or was abandoned meanwhile.
    """
    failed = True
    try:
        if properties is None:
            rc = client.connect(host, port, keepalive_s)
        else:
            rc = client.connect(host, port, keepalive_s, clean_start=False, properties=properties)
        failed = rc != MQTTErrorCode.MQTT_ERR_SUCCESS
        return rc
    finally:
        sockets.worker_returned(failed=failed)


class _Connection:
    """One paho client and its socket, from connect to disconnect; never reused."""

    def __init__(self, uplink: Uplink, client: mqtt.Client, sockets: _HandshakeSockets) -> None:
        self.uplink = uplink
        self.client = client
        self.sockets = sockets
        self.loop = asyncio.get_running_loop()
        self.sock: Any = None
        self.attached = False
        self.want_write = False
        self.connected_at: float | None = None
        self.last_socket_error = ""
        self.paused_since: float | None = None
        """Loop time reading paused (the inbound overflow), None while reading."""
        self.paused_total_s = 0.0
        """Time spent paused before :attr:`paused_since`: the reading clock's lag."""
        self.last_inbound = self.read_clock()
        """Reading-clock time bytes last arrived from the broker (the liveness check)."""
        self.liveness: asyncio.TimerHandle | None = None
        self.refusal_cause: RefusalCause | None = None
        """Set where this attempt is refused (:class:`RefusalCause`)."""
        self.connack: asyncio.Future[bool] = self.loop.create_future()
        self.ended: asyncio.Future[Exception] = self.loop.create_future()
        self.pending: dict[int, tuple[PublishDone, float]] = {}
        """PUBACKs awaited, by paho message id, in the order published (dicts keep it): who
        to tell, and the reading-clock time the message was handed to paho (the PUBACK
        deadline: time paused does not count, see :meth:`read_clock`)."""
        # Whoever resolves connack with an error may find nobody awaiting it any more.
        self.connack.add_done_callback(_retrieve)
        client.on_socket_open = self._on_socket_open
        client.on_socket_close = self._on_socket_close
        client.on_socket_register_write = self._on_socket_register_write
        client.on_socket_unregister_write = self._on_socket_unregister_write
        client.on_connect = self._on_connect
        client.on_disconnect = self._on_disconnect
        client.on_publish = self._on_publish
        client.on_subscribe = self._on_subscribe
        client.on_message = self._on_message
        client.on_log = self._on_log

    @property
    def is_connected(self) -> bool:
        return self.connected_at is not None and not self.ended.done()

    def paused(self) -> bool:
        """Whether reading is paused (a method: it changes under the callbacks paho runs)."""
        return self.paused_since is not None

    def read_clock(self) -> float:
        """The loop's clock, standing still while reading is paused: the clock of the
        liveness check and the PUBACK deadline. Nothing can be read while paused (a PUBACK or
        PINGRESP waits behind the messages we do not read), so silence then is our doing and
        says nothing about the link (see the module doc, inbound)."""
        now = self.loop.time() if self.paused_since is None else self.paused_since
        return now - self.paused_total_s

    def pause_reading(self) -> None:
        """Stop reading the socket (the inbound overflow): the broker's further messages wait
        in TCP buffers and at the broker. Idempotent."""
        if self.paused_since is not None or self.ended.done():
            return
        self.paused_since = self.loop.time()
        if self.liveness is not None:
            self.liveness.cancel()
            self.liveness = None
        if self.attached and self.sock is not None:
            self.loop.remove_reader(self.sock)

    def resume_reading(self) -> float:
        """Read again (a handler took a message, the overflow is gone); returns how long
        reading was paused. Decrypted bytes may already wait in the SSL object, where the
        selector cannot see them: one read is scheduled at once."""
        since = self.paused_since
        if since is None or self.ended.done():
            return 0.0
        paused_s = self.loop.time() - since
        self.paused_total_s += paused_s
        self.paused_since = None
        if self.attached and self.sock is not None:
            self._arm_liveness()
            self.loop.add_reader(self.sock, self._on_readable)
            self.loop.call_soon(self._on_readable)
        return paused_s

    # -- selector plumbing (the worker thread only records, see the module doc) --------

    def attach(self) -> None:
        """Hand the socket to the event loop; called once the connecting worker returned."""
        self.attached = True
        if self.sock is None:
            raise UplinkError("paho connected without opening a socket")
        self.last_inbound = self.read_clock()
        self._arm_liveness()
        self.loop.add_reader(self.sock, self._on_readable)
        if self.want_write:
            self.loop.add_writer(self.sock, self._on_writable)

    def _on_socket_open(self, _c: mqtt.Client, _u: Any, sock: Any) -> None:
        self.sock = sock
        if self.attached and not self.paused():
            self.loop.add_reader(sock, self._on_readable)

    def _on_socket_close(self, _c: mqtt.Client, _u: Any, sock: Any) -> None:
        if self.attached:
            self.loop.remove_reader(sock)
            self.loop.remove_writer(sock)
        self.sock = None

    def _on_socket_register_write(self, _c: mqtt.Client, _u: Any, sock: Any) -> None:
        self.want_write = True
        if self.attached:
            self.loop.add_writer(sock, self._on_writable)

    def _on_socket_unregister_write(self, _c: mqtt.Client, _u: Any, sock: Any) -> None:
        self.want_write = False
        if self.attached:
            self.loop.remove_writer(sock)

    def _arm_liveness(self) -> None:
        """The liveness timer, due when the reading clock reaches the deadline (the reading
        clock runs with the loop's while this is armed: it is cancelled while paused)."""
        silence_s = LINK_DEAD_AFTER_KEEPALIVES * self.uplink.settings.keepalive_s
        due_in_s = self.last_inbound + silence_s - self.read_clock()
        self.liveness = self.loop.call_later(max(0.0, due_in_s), self._check_liveness)

    def _check_liveness(self) -> None:
        """Declare the link dead when nothing arrived for LINK_DEAD_AFTER_KEEPALIVES
        keepalives of reading, though paho pinged within one (see the constant); else
        re-arm. Never while paused (the timer is cancelled then, re-armed at resume)."""
        if self.ended.done() or self.paused():
            return
        keepalive_s = self.uplink.settings.keepalive_s
        silent_s = self.read_clock() - self.last_inbound
        if silent_s < LINK_DEAD_AFTER_KEEPALIVES * keepalive_s:
            self._arm_liveness()
            return
        self.uplink._log.warning(
            "mqtt_link_dead", silent_s=round(silent_s, 3), keepalive_s=keepalive_s
        )
        self.discard(
            UplinkError(
                f"nothing from the broker for {LINK_DEAD_AFTER_KEEPALIVES} keepalives"
                f" ({round(silent_s, 1)} s)"
            )
        )

    def _on_readable(self) -> None:
        if self.ended.done() or self.paused():
            return
        self.last_inbound = self.read_clock()
        try:
            for _ in range(_READS_PER_WAKEUP):
                rc = self.client.loop_read()
                sock = self.sock
                if rc != MQTTErrorCode.MQTT_ERR_SUCCESS or sock is None or self.ended.done():
                    return
                if self.paused():
                    return  # the inbound overflow: not one more round (resume reads again)
                if not (isinstance(sock, ssl.SSLSocket) and sock.pending() > 0):
                    return
        except Exception as exc:  # noqa: BLE001 - a raising reader would spin; cut instead
            self.bridge_failed("loop_read", exc)
            return
        self.loop.call_soon(self._on_readable)  # bytes still buffered: let others run first

    def _on_writable(self) -> None:
        if self.ended.done():
            return
        try:
            self.client.loop_write()
        except Exception as exc:  # noqa: BLE001 - see _on_readable
            self.bridge_failed("loop_write", exc)

    def misc(self) -> None:
        """paho's periodic duties: PINGREQ when idle, disconnect when PINGRESP is overdue."""
        if self.ended.done():
            return
        try:
            self.client.loop_misc()
        except Exception as exc:  # noqa: BLE001 - end this connection, not the uplink
            self.bridge_failed("loop_misc", exc)

    def bridge_failed(self, call: str, exc: Exception) -> None:
        """An exception out of paho or our callbacks: a bug. Log its traceback, then cut.

        Must be called from the ``except`` block that caught ``exc`` (``exc_info=True``). The
        connection ends with ``exc`` itself, which is not a HubError, so the supervisor backs
        off as after a refusal instead of reconnecting at once into the same bug.
        """
        self.uplink._log.error(
            "mqtt_bridge_failed", call=call, error=type(exc).__name__, exc_info=True
        )
        self.discard(exc)

    # -- MQTT callbacks ------------------------------------------------------------------

    def _on_connect(
        self,
        _c: mqtt.Client,
        _u: Any,
        flags: mqtt.ConnectFlags,
        reason: ReasonCode,
        _p: Properties | None,
    ) -> None:
        if self.connack.done():
            return
        if reason.is_failure:
            if reason.value in _CONNACK_REFUSALS:
                self.refusal_cause = RefusalCause.CONNACK
            self.connack.set_exception(
                (UplinkRefusedError if reason.value in _CONNACK_REFUSALS else UplinkError)(
                    f"CONNACK refused: {reason}", rc=reason.value
                )
            )
            return
        self.connected_at = self.loop.time()
        self.connack.set_result(bool(flags.session_present))
        self.uplink._subscribe(self)

    def _on_subscribe(
        self,
        _c: mqtt.Client,
        _u: Any,
        _mid: int,
        reasons: list[ReasonCode],
        _p: Properties | None,
    ) -> None:
        self.uplink._subscribed(reasons)

    def _on_message(self, _c: mqtt.Client, _u: Any, msg: mqtt.MQTTMessage) -> None:
        self.uplink._arrived(self, msg)

    def _on_disconnect(
        self,
        _c: mqtt.Client,
        _u: Any,
        flags: mqtt.DisconnectFlags,
        reason: ReasonCode,
        _p: Properties | None,
    ) -> None:
        by = "broker" if flags.is_disconnect_packet_from_server else "client"
        detail = f"; {self.last_socket_error}" if self.last_socket_error else ""
        if self.connected_at is None:
            # Closed before CONNACK: with TLS 1.3 this is how a refused client certificate
            # shows (the alert arrives after our handshake finished), so waiting rarely helps.
            self.refusal_cause = RefusalCause.CLOSED_BEFORE_CONNACK
            error: UplinkError = UplinkRefusedError(
                f"connection closed before CONNACK ({reason}{detail})"
            )
        else:
            error = UplinkError(f"disconnected by {by}: {reason}{detail}", rc=reason.value)
        self.end(error)

    def _on_publish(
        self, _c: mqtt.Client, _u: Any, mid: int, reason: ReasonCode, _p: Properties | None
    ) -> None:
        if mid not in self.pending:
            return
        stats = self.uplink.stats
        if reason.value >= 0x80:
            stats.refused += 1
            refused = (
                PublishRejectedError if reason.value in _PUBACK_REFUSALS else PublishRefusedError
            )
            self.settle(mid, refused(f"PUBACK refused: {reason}", rc=reason.value))
        else:
            stats.acked += 1
            if reason.value == _NO_MATCHING_SUBSCRIBERS:
                stats.acked_no_subscribers += 1
            self.settle(mid, None)

    def settle(self, mid: int, error: BaseException | None) -> None:
        """Tell whoever published message ``mid`` how it ended (once)."""
        entry = self.pending.pop(mid, None)
        if entry is None:
            return
        self.uplink.stats.in_flight -= 1
        self.uplink._changed()
        entry[0](error)

    def _on_log(self, _c: mqtt.Client, _u: Any, level: int, text: str) -> None:
        if level == mqtt.MQTT_LOG_ERR:
            self.last_socket_error = text[:200]
        elif text == "Sending PINGREQ":  # paho 2.x's own words: counted, not parsed further
            self.uplink.stats.pings_sent += 1
            self.uplink._changed()

    # -- ending ---------------------------------------------------------------------------

    def end(self, error: Exception) -> None:
        """The connection is over: fail what awaits it. Idempotent.

        ``error`` is an :class:`UplinkError`, or the exception of a bug (:meth:`bridge_failed`).
        """
        if self.ended.done():
            return
        self.ended.set_result(error)
        if self.liveness is not None:
            self.liveness.cancel()
        if not self.connack.done():
            self.connack.set_exception(error)
        lost = len(self.pending)
        ended = UplinkError(f"no PUBACK before the connection ended: {error}")
        for mid in list(self.pending):
            self.settle(mid, ended)
        self.uplink._connection_ended(self, error, lost)

    def discard(self, error: Exception) -> None:
        """End the connection now and close its socket ourselves (paho is not asked).

        While the connecting worker still runs, the socket is its own: it is shut down now and
        closed as the worker returns, never under its feet (:class:`_HandshakeSockets`).
        """
        self.end(error)
        sock, self.sock = self.sock, None
        if sock is not None and self.attached:  # attached: the worker has returned
            self.loop.remove_reader(sock)
            self.loop.remove_writer(sock)
            with contextlib.suppress(OSError):
                sock.close()
        self.sockets.abandon()


def _connect_error(exc: OSError) -> UplinkError:
    """An UplinkError for what paho's blocking connect raised (TCP or TLS)."""
    if isinstance(exc, ssl.SSLCertVerificationError):
        return UplinkRefusedError(f"TLS: broker certificate not accepted ({exc.verify_message})")
    if isinstance(exc, ssl.SSLError):
        return UplinkRefusedError(f"TLS handshake failed ({exc.reason})")
    if isinstance(exc, TimeoutError):
        return UplinkError(f"TCP connect or TLS handshake timed out ({TLS_CONNECT_TIMEOUT_S} s)")
    return UplinkError(f"cannot reach the broker ({exc.strerror or type(exc).__name__})")


_VERIFY_CHECKS: Final = {
    9: ("not_yet_valid", "broker certificate not yet valid"),
    10: ("expired", "broker certificate expired"),
    62: ("host_name_mismatch", "broker certificate not issued for the configured host"),
    64: ("host_name_mismatch", "broker certificate not issued for the configured address"),
}
"""OpenSSL verify codes (X509_V_ERR_*) named apart in a ``security`` event; every other code
(18, 19, 20, 21: no chain to the configured CA) is ``untrusted``."""


def _tls_refusal_cause(exc: OSError) -> RefusalCause | None:
    """The refusal an exception of the TLS handshake is, None for a network failure."""
    if isinstance(exc, ssl.SSLCertVerificationError):
        return RefusalCause.SERVER_CERTIFICATE
    if isinstance(exc, ssl.SSLError):
        return RefusalCause.TLS_HANDSHAKE
    return None


def _server_certificate_check(code: int | None) -> tuple[str, str]:
    """The ``security`` event's check and fixed detail for a broker certificate refused with
    OpenSSL's verify ``code``."""
    if code is not None and code in _VERIFY_CHECKS:
        return _VERIFY_CHECKS[code]
    return "untrusted", "broker certificate not issued by the configured CA"


def _describe(error: Exception) -> tuple[int | None, str]:
    """The reason code and the reason of why a connection ended, for stats and logs."""
    if isinstance(error, UplinkError):
        return error.rc, error.reason
    return None, f"bug in the MQTT bridge: {type(error).__name__}"


def _retrieve(fut: asyncio.Future[Any]) -> None:
    if not fut.cancelled():
        fut.exception()


# ---------------------------------------------------------------------------
# The uplink
# ---------------------------------------------------------------------------


class Uplink:
    """The hub's MQTT connection to the platform (see the module docstring).

    Use: run :meth:`run` as a task; await :attr:`connected` before publishing; call
    :meth:`publish` for each envelope (at most ``inflight_max`` await their PUBACK at once, the
    rest wait); :meth:`close` for a clean DISCONNECT, after which :meth:`run` returns.
    """

    def __init__(
        self,
        settings: UplinkSettings,
        *,
        rng: Rng | None = None,
        clock: Clock | None = None,
        security_sink: SecuritySink | None = None,
        last_will: LastWill | None = None,
    ) -> None:
        """``rng`` and ``clock`` are the backoff's edges (:mod:`agent.retry`), for tests.

        ``security_sink`` gets a ``security`` event (:func:`agent.security.report_security`,
        source ``"uplink"``) for every broker certificate the hub refused (the daemon passes
        ``Hub.platform_security``). ``last_will``: see :meth:`set_last_will`.
        """
        self.settings = settings
        self._backoff = settings.backoff(rng, clock)
        self._worker: concurrent.futures.Future[MQTTErrorCode] | None = None
        self._readings = settings.profile.publication(settings.hub_id, MessageKind.READINGS)
        self._max_publish_bytes = publish_limit_bytes(settings.profile)
        self.topic = self._readings.topic
        """The readings topic of the profile (kept for callers that read it)."""
        self._security_sink = security_sink
        self._last_will = last_will
        self._connected_observers: list[ConnectedObserver] = []
        self._refused_observers: list[RefusedObserver] = []
        self._attempt_refusal: RefusalCause | None = None
        self._attempt_verify_code: int | None = None
        """OpenSSL's verify code (X509_V_ERR_*) when this attempt refused the broker's
        certificate."""
        self._reconnect_now = False
        self._wake = asyncio.Event()
        self.connected = asyncio.Event()
        self.stats = UplinkStats()
        self._window = asyncio.Semaphore(settings.inflight_max)
        self._conn: _Connection | None = None
        self._closing = asyncio.Event()
        self._stopping = False
        self._running = False
        self._change = asyncio.Event()
        self._watchers = 0
        self._executor = concurrent.futures.ThreadPoolExecutor(
            max_workers=1, thread_name_prefix="uplink-connect"
        )
        self._log = _log.bind(hub=settings.hub_id)
        self._handlers: dict[MessageKind, InboundHandler] = {}
        self._inbound: dict[MessageKind, asyncio.Queue[_Held]] = {}
        self._overflow: dict[MessageKind, deque[_Held]] = {}
        """Per kind, messages that arrived over a full queue (a broker ignoring our Receive
        Maximum), unacknowledged, in order; reading is paused while any is here."""
        self._overflow_max = inbound_overflow_max(settings.inflight_max)

    # -- public API ---------------------------------------------------------------------

    async def run(self) -> None:
        """Connect and stay connected until :meth:`close`; reconnect after :mod:`agent.retry`'s
        backoff. Returns only once the connecting worker thread has returned (bounded).

        Raises :class:`KeyMaterialError` at once if the TLS client key or certificates cannot
        be used at start (a configuration fault); later failures are retried.
        """
        if self._running:
            raise RuntimeError("Uplink.run() is already running")
        self._running = True
        try:
            self._tls_context()  # fail fast on a broken key or certificate
            async with asyncio.TaskGroup() as tg:
                supervisor = tg.create_task(self._supervise(), name="uplink.supervise")
                dispatchers = [
                    tg.create_task(self._dispatch(kind), name=f"uplink.inbound[{kind.value}]")
                    for kind in self._handlers
                ]
                await self._closing.wait()
                supervisor.cancel()
                for task in dispatchers:
                    task.cancel()
        finally:
            self._running = False
            self._executor.shutdown(wait=False, cancel_futures=True)
            await self._join_worker()

    async def publish(self, payload: bytes) -> None:
        """Publish one envelope at QoS 1 and return when the broker acknowledged it.

        At most ``inflight_max`` calls wait for their PUBACK at once; the others wait for a
        slot. Raises as :meth:`publish_nowait`'s future does.
        """
        async with self._window:
            await self.publish_nowait(payload)

    def publish_nowait(self, payload: bytes) -> asyncio.Future[None]:
        """Hand one envelope to the broker at QoS 1 now; the future completes on its PUBACK
        (fails as :meth:`publish_then` says)."""
        fut: asyncio.Future[None] = asyncio.get_running_loop().create_future()

        def done(error: BaseException | None) -> None:
            if fut.done():
                return
            if error is None:
                fut.set_result(None)
            else:
                fut.set_exception(error)

        self.publish_then(payload, done)
        return fut

    def publish_then(self, payload: bytes, done: PublishDone) -> bytes:
        """Hand one envelope to the broker at QoS 1 now; ``done(None)`` on its PUBACK. Returns
        the digest a platform's receipt names the envelope by
        (:func:`agent.receipts.envelope_digest` of the MQTT payload as sent).

        The hot path of a caller that bounds its own window (the publisher): no task, no
        future, no timer per message; ``done`` runs once, on the loop, possibly before this
        returns. It gets :class:`UplinkError` when not connected or when the connection ends
        first, :class:`~agent.errors.PublishRefusedError` (``rc`` set;
        :class:`~agent.errors.PublishRejectedError` for 'not authorized' and the like) on a
        PUBACK reason code ≥ 0x80; a PUBACK overdue by PUBACK_TIMEOUT_S drops the connection
        (checked every MISC_INTERVAL_S), which fails it too. The caller re-queues. A payload
        over :attr:`max_publish_bytes` (a batch may be up to it) gets
        :class:`~agent.errors.PublishRejectedError` at once and is never sent.
        """
        digest = envelope_digest(payload)
        self._publish(self._readings, payload, done)
        return digest

    def publish_message(
        self, kind: MessageKind | str, payload: bytes, *, retain: bool = False
    ) -> asyncio.Future[None]:
        """Publish one signed message of an outbound ``kind`` (``replies``, ``status``,
        ``events``; ``readings`` too, though the publisher uses :meth:`publish_then`) where the
        profile puts it (:meth:`~agent.profiles.UplinkProfile.publication`: topic and QoS; on
        IoT Hub the kind travels in the topic's property bag).

        ``retain``: ask for a retained message; it is retained only where the profile allows
        it for ``kind`` (the status on ``mqtt`` and ``aws_iot_core``; never on IoT Hub, which
        disconnects a client setting the flag), else sent plain.

        The future completes on the PUBACK and fails as :meth:`publish_then` says: not
        connected, connection lost first, PUBACK refused. Nothing is queued or re-sent here:
        a status or event that fails is the caller's to send again (or to drop: a newer status
        replaces it). A payload larger than :attr:`max_publish_bytes` fails with
        :class:`~agent.errors.PublishRejectedError` without being sent.
        """
        kind = MessageKind(kind)
        if kind not in OUTBOUND:
            raise UsageError("kind", f"{kind.value} is sent by the platform, not by the hub")
        s = self.settings
        pub = s.profile.publication(s.hub_id, kind)
        if pub.retain and not retain:
            pub = Publication(pub.topic, pub.qos, False)
        fut: asyncio.Future[None] = asyncio.get_running_loop().create_future()

        def done(error: BaseException | None) -> None:
            if fut.done():
                return
            if error is None:
                fut.set_result(None)
            else:
                fut.set_exception(error)

        self._publish(pub, payload, done)
        return fut

    @property
    def max_publish_bytes(self) -> int:
        """The largest payload :meth:`publish_then` and :meth:`publish_message` send
        (:func:`publish_limit_bytes` of the profile): what sizes a batch."""
        return self._max_publish_bytes

    def _publish(self, pub: Publication, payload: bytes, done: PublishDone) -> None:
        """Hand one message to paho on the current connection; ``done`` on its PUBACK."""
        limit = self._max_publish_bytes
        if len(payload) > limit:
            # The broker would refuse it (MQTT 5) or drop it silently (IoT Hub's 3.1.1 PUBACK
            # says nothing), or no verifier would take it: refused for good, never sent.
            self._log.warning("mqtt_publish_too_large", size_bytes=len(payload), limit=limit)
            done(PublishRejectedError(f"{len(payload)} bytes, the uplink takes {limit}"))
            return
        conn = self._conn
        if conn is None or not conn.is_connected:
            done(UplinkError("not connected"))
            return
        info = conn.client.publish(pub.topic, payload, qos=pub.qos, retain=pub.retain)
        if info.rc != MQTTErrorCode.MQTT_ERR_SUCCESS:
            self._log.warning("mqtt_publish_refused", rc=int(info.rc))
            reason = f"paho refused the publish: {mqtt.error_string(info.rc)}"
            if info.rc == MQTTErrorCode.MQTT_ERR_QUEUE_SIZE:
                # Nothing was sent and the connection goes on: the caller may hand it again
                # now (not after a reconnect, which may never come).
                done(PublishNotQueuedError(reason, rc=int(info.rc)))
            else:
                done(UplinkError(reason))
            return
        conn.pending[info.mid] = (done, conn.read_clock())
        self.stats.in_flight += 1
        self._changed()

    def on_connected(self, observer: ConnectedObserver) -> None:
        """Call ``observer()`` on the loop after every successful CONNACK (before anything is
        published on that connection), e.g. to confirm a certificate rotation on trial
        (:func:`agent.cert_rotation.confirm`) or to publish the ``online`` status. An observer
        that raises is logged (``mqtt_observer_failed``) and the connection goes on."""
        self._connected_observers.append(observer)

    def on_refused(self, observer: RefusedObserver) -> None:
        """Call ``observer(refusal)`` on the loop after every refused attempt
        (:class:`Refusal`: a TLS or CONNACK refusal, or our own key material unusable; not a
        network failure, which says nothing about certificates). The uplink then backs off at
        least ``refusal_backoff_s``; a :meth:`reconnect` (after reverting a rotation) cuts the
        wait short. Use :attr:`Refusal.of_client_certificate` to tell whether the hub's own
        certificate may be the cause."""
        self._refused_observers.append(observer)

    def set_last_will(self, last_will: LastWill | None) -> None:
        """``last_will()`` is called before each connection attempt (on the loop, so it must
        be quick: signing one small status is ~1 ms); the bytes it returns (a signed
        ``offline`` status) become the connection's last will at the profile's
        :meth:`~agent.profiles.UplinkProfile.last_will` (retained where the profile says).
        None, or a raising hook (logged ``mqtt_last_will_failed``), connects without a will.
        Takes effect from the next attempt."""
        self._last_will = last_will

    async def reconnect(self) -> None:
        """Drop the current connection (a clean DISCONNECT when connected, so the broker does
        not publish the last will; waits DISCONNECT_TIMEOUT_S at most) and connect again at
        once, reading the CA, certificate and key files again: after a certificate install
        (:func:`agent.cert_rotation.promote` or :func:`~agent.cert_rotation.revert`).

        An attempt under way is abandoned, a backoff wait is cut short. Returns once the old
        connection is gone; :meth:`on_connected` / :meth:`on_refused` tell how the new one
        went. Publishes awaiting their PUBACK fail with :class:`UplinkError` (the outbox
        sends them again).
        """
        if self._stopping:
            return
        self._reconnect_now = True
        self._wake.set()
        conn = self._conn
        if conn is None:
            return
        self._log.info("mqtt_reconnect_requested")
        if conn.is_connected:
            conn.client.disconnect()
            await asyncio.wait({conn.ended}, timeout=DISCONNECT_TIMEOUT_S)
        conn.discard(UplinkError("reconnect requested"))

    def on_message(self, kind: MessageKind | str, handler: InboundHandler) -> None:
        """Hand every message the platform sends of ``kind`` (``"receipts"``, ``"commands"``)
        to ``handler``, on the loop, one at a time, in arrival order.

        Register before :meth:`run`; once one handler is registered the uplink subscribes
        (QoS 1) to the profile's inbound topics after every CONNACK (the Clean Start 0 session
        keeps the subscription across short drops; subscribing again is harmless and needed
        after a broker lost its sessions). At most :data:`INBOUND_QUEUE_MAX` messages of a kind
        wait for their handler; each is acknowledged (PUBACK) as its handler takes it, so the
        broker (bounded by our Receive Maximum) keeps the rest. Messages over
        :data:`MAX_INBOUND_BYTES`, or of a kind nobody handles, are acknowledged and dropped
        (``mqtt_inbound_dropped``). A message taken after its connection ended is not handled
        and not acknowledged: the broker sends it again on the next connection.
        """
        kind = MessageKind(kind)
        if kind not in INBOUND:
            raise UsageError("kind", f"{kind.value} is sent by the hub, not by the platform")
        if self._running:
            raise RuntimeError("register inbound handlers before Uplink.run()")
        if kind in self._handlers:
            raise RuntimeError(f"a handler for {kind.value} is already registered")
        self._handlers[kind] = handler
        self._inbound[kind] = asyncio.Queue(maxsize=INBOUND_QUEUE_MAX)
        self._overflow[kind] = deque()

    async def disconnected_or_reconnected(self) -> None:
        """Return once the connection current at the call has ended; at once if there is none.

        For a publisher after an :class:`UplinkError`: it then awaits :attr:`connected` again
        instead of retrying against the same (broken or refusing) connection in a tight loop.
        """
        conn = self._conn
        if conn is not None and conn.is_connected:
            await asyncio.wait({conn.ended})

    async def close(self) -> None:
        """Send DISCONNECT (waiting DISCONNECT_TIMEOUT_S at most), stop reconnecting, end run()."""
        self._stopping = True
        conn = self._conn
        if conn is not None and conn.is_connected:
            conn.client.disconnect()
            await asyncio.wait({conn.ended}, timeout=DISCONNECT_TIMEOUT_S)
        if conn is not None:
            conn.discard(UplinkRefusedError("uplink closed"))
        self._closing.set()
        self._executor.shutdown(wait=False, cancel_futures=True)

    async def wait_until(self, predicate: Callable[[UplinkStats], bool]) -> None:
        """Return once ``predicate(self.stats)`` holds (wrap in ``asyncio.timeout``)."""
        self._watchers += 1
        try:
            while not predicate(self.stats):
                await self._change.wait()
        finally:
            self._watchers -= 1

    # -- the supervisor -----------------------------------------------------------------

    async def _supervise(self) -> None:
        s = self.settings
        backoff = self._backoff
        try:
            await asyncio.sleep(boot_jitter(s.first_connect_jitter_s, backoff.rng))
            while not self._is_stopping():
                self._reconnect_now = False
                self._wake.clear()
                error: Exception
                try:
                    conn = await self._connect()
                except UplinkError as exc:
                    error = exc
                    self._connect_failed(exc.rc, exc.reason, retryable=exc.retryable)
                    if isinstance(exc, UplinkRefusedError) and not self._reconnect_now:
                        self._refused(exc)
                except Exception as exc:  # noqa: BLE001 - a bug: logged whole, backed off slowly
                    error = exc
                    self._connect_failed(*_describe(exc), retryable=False, exc_info=True)
                else:
                    backoff.up()
                    self._notify_connected()
                    error = await self._serve(conn)
                if self._is_stopping():
                    return
                if self._reconnect_now:
                    continue  # asked for (reconnect()): at once, no backoff
                delay = backoff.failed(error)
                self.stats.last_backoff_s = delay
                self._log.info(
                    "mqtt_backoff",
                    delay_s=round(delay, 3),
                    attempt=backoff.attempts,
                    retryable=retryable(error),
                )
                self._changed()
                # The backoff itself, not a synchronisation; reconnect() cuts it short.
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(delay):
                        await self._wake.wait()
        finally:
            conn_left = self._conn
            if conn_left is not None:
                conn_left.discard(UplinkRefusedError("uplink stopped"))

    def _notify_connected(self) -> None:
        for observer in list(self._connected_observers):
            try:
                observer()
            except Exception as exc:  # noqa: BLE001 - an observer's bug must not cut the link
                self._log.error(
                    "mqtt_observer_failed",
                    observer="connected",
                    error=type(exc).__name__,
                    exc_info=True,
                )

    def _refused(self, error: UplinkRefusedError) -> None:
        """A refused attempt: a ``security`` event for a broker certificate we refused, then
        the observers (:meth:`on_refused`)."""
        cause = self._attempt_refusal
        if cause is None:
            return  # closed or cancelled by ourselves: no verdict
        if cause is RefusalCause.SERVER_CERTIFICATE:
            self.stats.server_certificate_refused += 1
            check, detail = _server_certificate_check(self._attempt_verify_code)
            report_security(
                SecurityEvent(source="uplink", check=check, detail=detail), self._security_sink
            )
        refusal = Refusal(cause, error)
        for observer in list(self._refused_observers):
            try:
                observer(refusal)
            except Exception as exc:  # noqa: BLE001 - see _notify_connected
                self._log.error(
                    "mqtt_observer_failed",
                    observer="refused",
                    error=type(exc).__name__,
                    exc_info=True,
                )

    def _connect_failed(
        self, rc: int | None, reason: str, *, retryable: bool, exc_info: bool = False
    ) -> None:
        """Count and log a failed attempt; ``exc_info`` from the ``except`` block of a bug."""
        self.stats.connect_failures += 1
        self.stats.last_failure = reason
        self._log.warning(
            "mqtt_connect_failed", reason=reason, rc=rc, retryable=retryable, exc_info=exc_info
        )
        self._changed()

    async def _connect(self) -> _Connection:
        """One attempt: TCP + TLS in the worker, then CONNECT/CONNACK on the loop."""
        s = self.settings
        self._attempt_refusal = None
        self._attempt_verify_code = None
        try:
            ctx = self._tls_context()
        except KeyMaterialError as exc:
            self._attempt_refusal = RefusalCause.KEY_MATERIAL
            raise UplinkRefusedError(f"TLS material unusable: {exc}") from None
        profile = s.profile
        v5 = profile.mqtt_version is MqttVersion.V5
        client = mqtt.Client(
            CallbackAPIVersion.VERSION2,
            client_id=profile.client_id(s.hub_id),
            protocol=MQTTProtocolVersion.MQTTv5 if v5 else MQTTProtocolVersion.MQTTv311,
            # MQTT 3.1.1: Clean Session 0 keeps the subscriptions and queued QoS 1 messages
            # (paho takes clean_session only for 3.1.1; MQTT 5's Clean Start is connect's).
            clean_session=None if v5 else False,
            reconnect_on_failure=False,
            manual_ack=True,  # an inbound message is acknowledged as its handler takes it
        )
        username = profile.username(s.hub_id, s.host)
        if username is not None:
            client.username_pw_set(username)  # no password: the certificate authenticates
        client.tls_set_context(ctx)
        client.connect_timeout = TLS_CONNECT_TIMEOUT_S
        client.max_inflight_messages_set(s.inflight_max)
        client.max_queued_messages_set(s.inflight_max * HANDOFF_FACTOR + MESSAGE_HEADROOM)
        conn = _Connection(self, client, ctx.sockets)
        self._conn = conn
        self._set_will(client)
        props: Properties | None = None
        if v5:
            props = Properties(PacketTypes.CONNECT)  # type: ignore[no-untyped-call]
            props.SessionExpiryInterval = s.session_expiry_s
            props.ReceiveMaximum = INBOUND_QUEUE_MAX
            props.MaximumPacketSize = MAX_INBOUND_BYTES + _INBOUND_PACKET_OVERHEAD_BYTES
        self._log.info("mqtt_connecting", host=s.host, port=s.port, profile=profile.name)
        connecting = self._executor.submit(
            _blocking_connect, client, ctx.sockets, s.host, s.port, s.keepalive_s, props
        )
        self._worker = connecting
        handshake_done = False
        try:
            async with asyncio.timeout(ATTEMPT_TIMEOUT_S):
                try:
                    rc = await asyncio.wrap_future(connecting)
                except OSError as exc:  # raised by paho's blocking part, in the worker
                    conn.refusal_cause = _tls_refusal_cause(exc)
                    if isinstance(exc, ssl.SSLCertVerificationError):
                        self._attempt_verify_code = exc.verify_code
                    raise _connect_error(exc) from None
                handshake_done = True
                if rc != MQTTErrorCode.MQTT_ERR_SUCCESS:
                    raise UplinkError(f"CONNECT not sent: {mqtt.error_string(rc)}")
                conn.attach()
                async with asyncio.timeout(CONNACK_TIMEOUT_S):
                    session_present = await asyncio.shield(conn.connack)
        except TimeoutError:  # ours (asyncio.timeout), paho's socket timeouts are mapped above
            if handshake_done:
                error = UplinkError("no CONNACK in time")
            else:
                error = UplinkError(
                    f"TCP connect or TLS handshake not done in {ATTEMPT_TIMEOUT_S} s"
                )
            conn.discard(error)
            raise error from None
        except Exception as exc:  # an UplinkError, or a bug (from paho's connect, a callback)
            conn.discard(exc)
            self._attempt_refusal = conn.refusal_cause
            raise
        except BaseException:  # cancelled, or the process is going
            conn.discard(UplinkRefusedError("connect cancelled"))
            raise
        self.stats.connects += 1
        self.connected.set()
        self._log.info("mqtt_connected", session_present=session_present)
        self._changed()
        return conn

    def _set_will(self, client: mqtt.Client) -> None:
        """The last will of this attempt, from the :meth:`set_last_will` hook."""
        hook = self._last_will
        if hook is None:
            return
        try:
            payload = hook()
        except Exception as exc:  # noqa: BLE001 - no will rather than no connection
            self._log.error("mqtt_last_will_failed", error=type(exc).__name__, exc_info=True)
            return
        if payload is None:
            return
        s = self.settings
        if len(payload) > min(s.profile.max_payload_bytes, MAX_MESSAGE_BYTES):
            self._log.error("mqtt_last_will_failed", error="too_large", size_bytes=len(payload))
            return
        will = s.profile.last_will(s.hub_id)
        client.will_set(will.topic, payload, qos=will.qos, retain=will.retain)

    async def _serve(self, conn: _Connection) -> Exception:
        """Run ``loop_misc`` while ``conn`` lives; return why it ended."""

        async def misc() -> None:
            interval_s = min(MISC_INTERVAL_S, self.settings.keepalive_s / 8)
            while True:
                await asyncio.sleep(interval_s)  # a periodic duty, not a synchronisation
                conn.misc()
                self._check_puback_deadline(conn)

        async with asyncio.TaskGroup() as tg:
            ticker = tg.create_task(misc(), name="uplink.loop_misc")
            await asyncio.wait({conn.ended})
            ticker.cancel()
        return conn.ended.result()

    def _check_puback_deadline(self, conn: _Connection) -> None:
        """Drop a connection whose oldest PUBACK is overdue (reliability N2: nothing stays
        stuck in flight); what was in flight is re-sent by the outbox after the reconnect.
        On the reading clock: a PUBACK cannot be read while reading is paused."""
        oldest = next(iter(conn.pending.values()), None)
        if oldest is None or conn.read_clock() - oldest[1] < PUBACK_TIMEOUT_S:
            return
        self._log.warning("mqtt_puback_timeout", timeout_s=PUBACK_TIMEOUT_S)
        error = UplinkError(f"no PUBACK within {PUBACK_TIMEOUT_S} s")
        for mid in list(conn.pending):
            conn.settle(mid, error)
        conn.discard(error)

    async def _join_worker(self) -> None:
        """Wait (WORKER_JOIN_TIMEOUT_S at most) for the last connecting worker to return, so
        that no thread of ours outlives :meth:`run` holding a socket."""
        worker = self._worker
        if worker is None or worker.done():
            return
        joined = asyncio.wrap_future(worker)
        joined.add_done_callback(_retrieve)  # its outcome was, or will never be, wanted
        await asyncio.wait({joined}, timeout=WORKER_JOIN_TIMEOUT_S)

    # -- inbound ----------------------------------------------------------------------------

    def _subscribe(self, conn: _Connection) -> None:
        """At CONNACK (from paho's callback): subscribe to the inbound topics, QoS 1. Sent
        before any publish of this connection, so a receipt for one of them finds the
        subscription in place even on a fresh session."""
        if not self._handlers:
            return
        s = self.settings
        topics = [
            (sub.topic_filter, sub.qos)  # (filter, QoS) pairs: paho takes them for 3.1.1 and 5
            for sub in s.profile.subscriptions(s.hub_id)
        ]
        rc, _mid = conn.client.subscribe(topics)
        if rc != MQTTErrorCode.MQTT_ERR_SUCCESS:
            self.stats.subscribe_refused += 1
            self._log.warning("mqtt_subscribe_failed", rc=int(rc))

    def _subscribed(self, reasons: list[ReasonCode]) -> None:
        refused = [r.value for r in reasons if r.is_failure]
        if refused:
            # No receipt or command will arrive on this connection: the platform's ACL is
            # wrong. Publishing goes on (with receipts, what is not receipted is sent again).
            self.stats.subscribe_refused += 1
            self._log.error("mqtt_subscribe_refused", rc=refused)
        else:
            self.stats.subscribed += 1
            self._log.info("mqtt_subscribed", topics=len(reasons))
        self._changed()

    def _arrived(self, conn: _Connection, msg: mqtt.MQTTMessage) -> None:
        """An inbound PUBLISH (from paho's callback, on the loop): queue it for its handler."""
        s = self.settings
        kind = s.profile.inbound_kind(s.hub_id, msg.topic)
        queue = self._inbound.get(kind) if kind is not None else None
        size = len(msg.payload)
        if kind is None or queue is None or size > MAX_INBOUND_BYTES:
            # Acknowledged and dropped: the same bytes again would be dropped again.
            conn.client.ack(msg.mid, msg.qos)
            why = "too_large" if size > MAX_INBOUND_BYTES else "unhandled"
            self._inbound_dropped(kind, why, size)
            return
        held = (conn, msg.mid, msg.qos, InboundMessage(kind, bytes(msg.payload), bool(msg.dup)))
        overflow = self._overflow[kind]
        if queue.full() or overflow:
            # Only a broker ignoring our Receive Maximum gets here: the message waits
            # unacknowledged behind the queue, and reading pauses (module doc, inbound).
            if sum(len(d) for d in self._overflow.values()) >= self._overflow_max:
                # Beyond what one loop_read can parse: the safety net, not reached with paho
                # 2.2. Not acknowledged: the broker sends it again on the next connection.
                self._inbound_dropped(kind, "queue_full", size)
                return
            overflow.append(held)
            if not conn.paused():
                conn.pause_reading()
                self.stats.inbound_paused += 1
                self._log.warning(
                    "mqtt_inbound_paused", kind=kind.value, held=self.stats.inbound_held + 1
                )
        else:
            queue.put_nowait(held)
        self._note_held()

    def _note_held(self) -> None:
        """The held counts in the stats, after a message came in or moved up."""
        stats = self.stats
        stats.inbound_overflow = sum(len(d) for d in self._overflow.values())
        stats.inbound_held = stats.inbound_overflow + sum(q.qsize() for q in self._inbound.values())
        stats.inbound_held_peak = max(stats.inbound_held_peak, stats.inbound_held)
        self._changed()

    def _took(self, kind: MessageKind) -> None:
        """A dispatcher took a message of ``kind``: the overflow moves up into the room made,
        and reading resumes once no kind has an overflow left."""
        queue, overflow = self._inbound[kind], self._overflow[kind]
        while overflow and not queue.full():
            queue.put_nowait(overflow.popleft())
        self._note_held()
        conn = self._conn
        if conn is None or not conn.paused() or any(self._overflow.values()):
            return
        paused_s = conn.resume_reading()
        self._log.info("mqtt_inbound_resumed", paused_s=round(paused_s, 3))

    def _inbound_dropped(self, kind: MessageKind | None, why: str, size: int) -> None:
        self.stats.inbound_dropped += 1
        self._log.warning(
            "mqtt_inbound_dropped",
            kind=kind.value if kind is not None else None,
            why=why,
            size_bytes=size,
        )
        self._changed()

    async def _dispatch(self, kind: MessageKind) -> None:
        """Hand the queued messages of ``kind`` to its handler, one at a time."""
        queue, handler = self._inbound[kind], self._handlers[kind]
        while True:
            conn, mid, qos, message = await queue.get()
            self._took(kind)
            if conn is not self._conn or not conn.is_connected:
                self._log.info("mqtt_inbound_deferred", kind=kind.value)
                continue  # unacknowledged: the broker sends it again on the next connection
            if qos > 0:
                conn.client.ack(mid, qos)
            self.stats.inbound += 1
            self._changed()
            try:
                await handler(message)
            except HubError as exc:
                self._log.warning(
                    "mqtt_inbound_handler_failed", kind=kind.value, error=type(exc).__name__
                )
            except Exception as exc:  # noqa: BLE001 - a bug in a handler: logged whole, next
                self._log.error(
                    "mqtt_inbound_handler_failed",
                    kind=kind.value,
                    error=type(exc).__name__,
                    exc_info=True,
                )

    # -- helpers ----------------------------------------------------------------------------

    def _tls_context(self) -> _TlsContext:
        """Verify the broker against our CA and its host name; present our client certificate.

        What ``ssl.create_default_context`` sets up for a client (certificate and host name
        required), without its one environment hook (SSLKEYLOGFILE would write session keys),
        in a context of one connection that records its sockets (:class:`_HandshakeSockets`).
        """
        s = self.settings
        check_key_file(s.key_file, "MQTT client key")
        try:
            ctx = _TlsContext(ssl.PROTOCOL_TLS_CLIENT)
            ctx.sockets = _HandshakeSockets()
            ctx.verify_mode = ssl.CERT_REQUIRED
            ctx.check_hostname = True
            ctx.load_verify_locations(cafile=str(s.ca_file))
            ctx.minimum_version = ssl.TLSVersion.TLSv1_2
            ctx.load_cert_chain(s.cert_file, s.key_file)
        except (OSError, ssl.SSLError) as exc:
            reason = getattr(exc, "strerror", None) or getattr(exc, "reason", None) or "unusable"
            raise KeyMaterialError(
                "MQTT TLS material", f"CA, certificate or key: {reason}"
            ) from None
        return ctx

    def _connection_ended(self, conn: _Connection, error: Exception, lost: int) -> None:
        if conn is not self._conn:
            return
        self._conn = None
        for overflow in self._overflow.values():
            # Never acknowledged: the broker sends them again on the next connection.
            kept = [held for held in overflow if held[0] is not conn]
            overflow.clear()
            overflow.extend(kept)
        self._note_held()
        self.stats.lost_in_flight += lost
        if conn.connected_at is not None:
            self.connected.clear()
            rc, reason = _describe(error)
            if self._stopping:  # our own close(): not a failure worth counting
                self._log.info("mqtt_disconnected", rc=rc, reason=reason)
            else:
                self.stats.disconnects += 1
                self.stats.last_failure = reason
                self._log.warning("mqtt_disconnected", rc=rc, reason=reason, in_flight_lost=lost)
        self._changed()

    def _is_stopping(self) -> bool:
        return self._stopping

    def _changed(self) -> None:
        """Wake :meth:`wait_until` callers (nothing to do, and nothing allocated, when none
        waits: this runs twice per message)."""
        if self._watchers:
            event, self._change = self._change, asyncio.Event()
            event.set()
