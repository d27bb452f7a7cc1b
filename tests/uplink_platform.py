"""A stand-in platform for uplink tests: a plain paho client (its own thread) with the platform
receiver's certificate, which the brokers' ACLs let read every hub's outbound topics and write
their inbound ones. It records what it receives in a bounded queue.
"""

from __future__ import annotations

import queue
import ssl
import threading
from dataclasses import dataclass
from typing import Final

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion, MQTTProtocolVersion

from hil.pki import DevPki

TIMEOUT_S: Final = 10.0
"""Every wait on the broker is bounded; on loopback each step takes milliseconds."""

QUEUE_MAX: Final = 1000


@dataclass(frozen=True, slots=True)
class Seen:
    """One message the platform received."""

    topic: str
    payload: bytes
    qos: int
    retain: bool


class PlatformClient:
    """Subscribes to ``filters`` at QoS 1 and records every message (see the module doc)."""

    def __init__(
        self,
        pki: DevPki,
        port: int,
        filters: list[str],
        *,
        client_id: str = "test-platform",
        protocol: MQTTProtocolVersion = MQTTProtocolVersion.MQTTv5,
    ) -> None:
        ctx = ssl.create_default_context(cafile=str(pki.ca_cert))
        ctx.load_cert_chain(pki.receiver_cert, pki.receiver_key)
        self.received: queue.Queue[Seen] = queue.Queue(QUEUE_MAX)
        self.client = mqtt.Client(
            CallbackAPIVersion.VERSION2, client_id=client_id, protocol=protocol
        )
        self.client.tls_set_context(ctx)
        self._subscribed = threading.Event()
        self._filters = filters
        self.client.on_connect = self._on_connect
        self.client.on_subscribe = lambda *_: self._subscribed.set()
        self.client.on_message = self._on_message
        self.client.connect("127.0.0.1", port)
        self.client.loop_start()
        if filters:
            assert self._subscribed.wait(TIMEOUT_S), "platform not subscribed"

    def _on_connect(self, *_: object) -> None:
        if self._filters:
            self.client.subscribe([(f, 1) for f in self._filters])

    def _on_message(self, _c: mqtt.Client, _u: object, msg: mqtt.MQTTMessage) -> None:
        self.received.put_nowait(Seen(msg.topic, bytes(msg.payload), msg.qos, bool(msg.retain)))

    def next_message(self, timeout_s: float = TIMEOUT_S) -> Seen:
        """Blocking (call through asyncio.to_thread): the next message, queue.Empty if none."""
        return self.received.get(timeout=timeout_s)

    def publish(self, topic: str, payload: bytes) -> None:
        """Blocking until the broker acknowledged it (call through asyncio.to_thread)."""
        info = self.client.publish(topic, payload, qos=1)
        info.wait_for_publish(TIMEOUT_S)
        assert info.is_published()

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()
