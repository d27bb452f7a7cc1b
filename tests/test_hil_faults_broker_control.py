"""hil/faults/broker_control.py on a real persistent mosquitto: a graceful restart keeps an
MQTT 5 session (the CONNACK's session-present flag, seen by a real paho client over TLS), a
restart with ``forget`` and a crash lose it; a freeze stops the process (its state in /proc)
until the thaw. Each action lands on the fault timeline."""

from __future__ import annotations

import threading
from typing import Any, Final

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion, MQTTProtocolVersion
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

from hil.broker import Broker
from hil.faults.broker_control import BrokerControl
from hil.faults.events import FaultLog
from hil.faults.process import process_stopped
from hil.pki import DevPki

T: Final = 10.0
SESSION_EXPIRY_S: Final = 300


def _session_present(pki: DevPki, port: int) -> bool:
    """Connect a persistent session (subscribed to the hub's receipts); whether the broker
    still had it. Disconnects before returning."""
    connected, subscribed = threading.Event(), threading.Event()
    flags: list[bool] = []

    def on_connect(_c: mqtt.Client, _u: Any, f: mqtt.ConnectFlags, rc: Any, _p: Any) -> None:
        assert not rc.is_failure, rc
        flags.append(f.session_present)
        connected.set()

    client = mqtt.Client(
        CallbackAPIVersion.VERSION2, client_id="faults-probe", protocol=MQTTProtocolVersion.MQTTv5
    )
    client.tls_set(ca_certs=str(pki.ca_cert), certfile=str(pki.hub_cert), keyfile=str(pki.hub_key))
    client.on_connect = on_connect
    client.on_subscribe = lambda *_: subscribed.set()
    props = Properties(PacketTypes.CONNECT)
    props.SessionExpiryInterval = SESSION_EXPIRY_S
    client.connect("127.0.0.1", port, keepalive=30, clean_start=False, properties=props)
    client.loop_start()
    try:
        assert connected.wait(T), "no CONNACK"
        client.subscribe(f"homehub/v1/{pki.hub_id}/receipts", qos=1)
        assert subscribed.wait(T), "no SUBACK"
    finally:
        client.disconnect()
        client.loop_stop()
    return flags[0]


def test_restart_keeps_forget_and_crash_lose_the_session(
    dev_pki: DevPki, persistent_broker: Broker
) -> None:
    log = FaultLog()
    control = BrokerControl(persistent_broker, log)
    port = persistent_broker.port
    assert _session_present(dev_pki, port) is False
    control.restart()
    assert _session_present(dev_pki, port) is True
    control.restart(forget=True)
    assert _session_present(dev_pki, port) is False
    control.crash()  # the session since the last stop lived in memory only
    control.start()
    assert _session_present(dev_pki, port) is False
    assert persistent_broker.port == port
    actions = [(e.action, e.detail) for e in log.events("broker")]
    assert actions == [
        ("restart", f"port {port} keep"),
        ("restart", f"port {port} forget"),
        ("crash", f"port {port}"),
        ("start", f"port {port}"),
    ]


def test_freeze_stops_the_process_until_thaw(broker: Broker) -> None:
    control = BrokerControl(broker)
    pid = broker.pid
    assert pid is not None
    control.freeze()
    assert process_stopped(pid)
    control.thaw()
    assert not process_stopped(pid)
    control.stop()
    assert not broker.running
