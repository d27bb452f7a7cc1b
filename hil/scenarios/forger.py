"""An attacker's MQTT client with the platform's broker credentials: it may write to every
hub's receipts and commands topics (the broker's ACL), but it does not hold the platform's
signing key. paho's own network thread, as the receiver's; each publish bounded."""

from __future__ import annotations

import asyncio
import ssl
from typing import Final

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion, MQTTProtocolVersion

from hil.scenarios.home import Home

PUBLISH_TIMEOUT_S: Final = 10.0
"""Connect and one QoS 1 publish on loopback: milliseconds; bounded well inside a wait."""


def _publish(home: Home, topic: str, payload: bytes) -> None:
    ctx = ssl.create_default_context(ssl.Purpose.SERVER_AUTH, cafile=str(home.pki.ca_cert))
    ctx.load_cert_chain(home.pki.receiver_cert, home.pki.receiver_key)
    client = mqtt.Client(
        CallbackAPIVersion.VERSION2, client_id="hil-forger", protocol=MQTTProtocolVersion.MQTTv5
    )
    client.tls_set_context(ctx)
    client.connect("127.0.0.1", home.broker.port, keepalive=30)
    client.loop_start()
    try:
        info = client.publish(topic, payload, qos=1)
        info.wait_for_publish(timeout=PUBLISH_TIMEOUT_S)
        if not info.is_published():
            raise TimeoutError(f"the forged message was not acknowledged in {PUBLISH_TIMEOUT_S} s")
    finally:
        client.disconnect()
        client.loop_stop()


async def publish_as_platform(home: Home, topic: str, payload: bytes) -> None:
    """Publish ``payload`` on ``topic`` as the attacker, off the event loop."""
    await asyncio.to_thread(_publish, home, topic, payload)
