"""The uplink against a real mosquitto over mutual TLS, checked by the independent receiver."""

from __future__ import annotations

import asyncio
import collections
import contextlib
import gc
import os
import signal
import socket
import ssl
import threading
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any, Final

import cbor2
import paho.mqtt.client as mqtt
import pytest
from paho.mqtt.enums import CallbackAPIVersion, MQTTProtocolVersion
from paho.mqtt.reasoncodes import ReasonCode
from structlog.testing import capture_logs

from agent import cose
from agent import uplink as uplink_module
from agent.errors import UplinkError, UsageError
from agent.retry import STABLE_PERIOD_S
from agent.uplink import Uplink, readings_topic
from hil.broker import Broker
from hil.pki import DevPki
from hil.receiver import Receiver, VerifiedReading
from tests.conftest import HUB_ID, uplink_settings

TIMEOUT_S: Final = 10.0
"""Every await on the network is bounded; on loopback each step takes milliseconds."""

QUIET_WINDOW_S: Final = 1.0
"""How long something that must not happen is given to happen (a tight loop would repeat
hundreds of times in it)."""

HANDSHAKE_BOUND_S: Final = 0.3
"""Attempt or handshake timeout for the hanging-handshake tests (the clock edge, shortened)."""

CLOSED_WITHIN_S: Final = 2.0
"""The hub closes a given-up handshake's socket this soon (far below TLS_CONNECT_TIMEOUT_S,
after which paho alone would have given up, still without closing it)."""


@contextlib.asynccontextmanager
async def _running(uplink: Uplink) -> AsyncIterator[Uplink]:
    """run() as a named task; close() at the end, after which run() must return."""
    async with asyncio.TaskGroup() as tg:
        tg.create_task(uplink.run(), name="test.uplink")
        try:
            yield uplink
        finally:
            await uplink.close()


class _Hub:
    """Makes envelopes the way the agent's pipeline does: deterministic CBOR, ES256."""

    def __init__(self, pki: DevPki) -> None:
        self.key = cose.load_signing_key(pki.hub_key)
        self.kid = cose.key_id(self.key.public_key())

    def envelope(self, seq: int) -> bytes:
        payload = cbor2.dumps(
            {
                "v": 1,
                "hub": HUB_ID,
                "seq": seq,
                "id": f"reading-{seq}",
                "kind": "observation",
                "hub_time": "2026-11-23T10:00:00Z",
                "fhir": {"resourceType": "Bundle", "type": "collection"},
            },
            canonical=True,
        )
        return cose.sign1(payload, self.key, self.kid)


async def _deliver_all(uplink: Uplink, envelopes: dict[int, bytes], workers: int) -> None:
    """What the outbox publisher does: publish each until PUBACK, put it back on failure."""
    pending = collections.deque(sorted(envelopes))

    async def worker() -> None:
        while pending:
            seq = pending.popleft()
            try:
                await uplink.connected.wait()
                await uplink.publish(envelopes[seq])
            except UplinkError:
                pending.append(seq)
                await uplink.disconnected_or_reconnected()

    async with asyncio.TaskGroup() as tg:
        for i in range(workers):
            tg.create_task(worker(), name=f"test.publisher[{i}]")


def _drain(receiver: Receiver) -> list[VerifiedReading]:
    readings = []
    while not receiver.readings.empty():
        readings.append(receiver.readings.get_nowait())
    return readings


def _raw_publish(pki: DevPki, port: int, topic: str, payload: bytes) -> ReasonCode:
    """A plain paho client with the hub's certificate publishes once; returns the PUBACK reason.

    Blocking (paho's own thread): call through ``asyncio.to_thread``.
    """
    ctx = ssl.create_default_context(cafile=str(pki.ca_cert))
    ctx.load_cert_chain(pki.hub_cert, pki.hub_key)
    client = mqtt.Client(
        CallbackAPIVersion.VERSION2,
        client_id=f"{HUB_ID}-raw",  # not the uplink's id: that would take its session over
        protocol=MQTTProtocolVersion.MQTTv5,
    )
    client.tls_set_context(ctx)
    connected = threading.Event()
    acked = threading.Event()
    result: list[ReasonCode] = []
    client.on_connect = lambda *_: connected.set()

    def on_publish(_c: mqtt.Client, _u: Any, _mid: int, rc: ReasonCode, _p: Any) -> None:
        result.append(rc)
        acked.set()

    client.on_publish = on_publish
    client.connect("127.0.0.1", port)
    client.loop_start()
    try:
        assert connected.wait(TIMEOUT_S)
        client.publish(topic, payload, qos=1)
        assert acked.wait(TIMEOUT_S)
    finally:
        client.disconnect()
        client.loop_stop()
    return result[0]


class TestDelivery:
    async def test_every_message_arrives_verified_once(
        self, dev_pki: DevPki, broker: Broker, receiver: Receiver
    ) -> None:
        """50 envelopes: 50 PUBACKs, 50 verified readings with the right ids, nothing else."""
        hub = _Hub(dev_pki)
        envelopes = {seq: hub.envelope(seq) for seq in range(50)}
        uplink = Uplink(uplink_settings(dev_pki, broker.port))
        async with _running(uplink), asyncio.timeout(TIMEOUT_S):
            await _deliver_all(uplink, envelopes, workers=20)
            await receiver.wait_until(lambda s: s.verified >= 50)
        readings = _drain(receiver)
        assert [f"reading-{seq}" for seq in range(50)] == sorted(
            (r.id for r in readings), key=lambda i: int(i.split("-")[1])
        )
        assert {r.seq: r.envelope for r in readings} == envelopes
        assert (
            uplink.stats.acked,
            receiver.stats.duplicates,
            receiver.stats.conflicting_duplicates,
            receiver.stats.rejected_total,
        ) == (50, 0, 0, 0)
        assert (uplink.stats.connects, uplink.stats.disconnects, uplink.stats.in_flight) == (
            1,
            0,
            0,
        )

    async def test_broker_restart_mid_run_loses_and_doubles_nothing(
        self, dev_pki: DevPki, persistent_broker: Broker
    ) -> None:
        """Broker stopped with 10 PUBACKs outstanding and restarted: all 40 arrive exactly once."""
        broker = persistent_broker
        hub = _Hub(dev_pki)
        first = {seq: hub.envelope(seq) for seq in range(20)}
        second = {seq: hub.envelope(seq) for seq in range(20, 40)}
        uplink = Uplink(uplink_settings(dev_pki, broker.port, inflight_max=10))
        async with (
            Receiver.for_dev_pki(dev_pki, broker.port) as receiver,
            _running(uplink),
            asyncio.timeout(TIMEOUT_S),
        ):
            await receiver.subscribed.wait()
            await _deliver_all(uplink, first, workers=10)

            # Freeze the broker so that the next publishes stay unacknowledged, then stop it.
            assert broker.pid is not None
            os.kill(broker.pid, signal.SIGSTOP)
            async with asyncio.TaskGroup() as tg:
                tg.create_task(_deliver_all(uplink, second, workers=10), name="test.second")
                await uplink.wait_until(lambda s: s.in_flight == 10)
                os.kill(broker.pid, signal.SIGCONT)
                await broker.astop()
                await uplink.wait_until(lambda s: s.disconnects >= 1)
                await broker.astart()
            await receiver.wait_until(lambda s: s.verified >= 40)
            # The broker may have taken all 20 before it stopped (it resumes, then exits):
            # the receiver can then hold all 40 before the uplink is back; wait for it.
            await uplink.wait_until(lambda s: s.connects >= 2)

        readings = _drain(receiver)
        assert sorted(r.seq for r in readings) == list(range(40))
        assert {r.seq: r.envelope for r in readings} == first | second
        # Copies may reach the receiver twice (re-sent after a lost PUBACK, or re-delivered by
        # the broker), but only byte-identical ones; dedup by id is not hiding anything else.
        assert (receiver.stats.conflicting_duplicates, receiver.stats.rejected_total) == (0, 0)
        assert uplink.stats.connects >= 2
        assert uplink.stats.disconnects >= 1
        assert uplink.stats.in_flight == 0

    async def test_puback_without_subscriber_is_not_delivery(
        self, dev_pki: DevPki, broker: Broker
    ) -> None:
        """With nobody subscribed the broker still PUBACKs (0x10): PUBACK is not a receipt."""
        uplink = Uplink(uplink_settings(dev_pki, broker.port))
        async with _running(uplink), asyncio.timeout(TIMEOUT_S):
            await uplink.connected.wait()
            await uplink.publish(_Hub(dev_pki).envelope(1))
        assert (uplink.stats.acked, uplink.stats.acked_no_subscribers) == (1, 1)


class TestFailures:
    async def test_tampered_envelope_is_rejected_by_receiver(
        self, dev_pki: DevPki, broker: Broker, receiver: Receiver
    ) -> None:
        """One flipped payload byte, published with the hub's own cert: rejected, not delivered."""
        envelope = bytearray(_Hub(dev_pki).envelope(7))
        envelope[envelope.index(b"reading-7") + 8] ^= 0x01  # reading-7 -> reading-6
        reason = await asyncio.to_thread(
            _raw_publish, dev_pki, broker.port, readings_topic(HUB_ID), bytes(envelope)
        )
        assert reason.value == 0  # the broker accepted it: only the signature can catch it
        async with asyncio.timeout(TIMEOUT_S):
            await receiver.wait_until(lambda s: s.rejected_total >= 1)
        assert dict(receiver.stats.rejected) == {"signature does not verify": 1}
        assert (
            receiver.rejections[0].hub_id,
            receiver.rejections[0].reason,
        ) == ("hub-0001", "signature does not verify")
        assert (receiver.stats.verified, receiver.readings.empty()) == (0, True)

    async def test_acl_refuses_another_hubs_topic(self, dev_pki: DevPki, broker: Broker) -> None:
        """A hub whose certificate says hub-0001 cannot publish as hub-0002: PUBACK 0x87."""
        uplink = Uplink(uplink_settings(dev_pki, broker.port, hub_id="hub-0002"))
        async with _running(uplink), asyncio.timeout(TIMEOUT_S):
            await uplink.connected.wait()
            with pytest.raises(UplinkError) as caught:
                await uplink.publish(_Hub(dev_pki).envelope(1))
        assert (caught.value.rc, caught.value.retryable) == (0x87, False)
        assert caught.value.reason == "PUBACK refused: Not authorized"
        assert (uplink.stats.acked, uplink.stats.refused) == (0, 1)

    async def test_refused_publish_is_not_retried_in_a_tight_loop(
        self, dev_pki: DevPki, broker: Broker
    ) -> None:
        """PUBACK 0x87: a publisher that waits for disconnected_or_reconnected() does not send
        again while the refusing connection stays up (nothing more within a second)."""
        uplink = Uplink(uplink_settings(dev_pki, broker.port, hub_id="hub-0002"))
        async with _running(uplink), asyncio.timeout(TIMEOUT_S):
            publisher = asyncio.create_task(
                _deliver_all(uplink, {1: _Hub(dev_pki).envelope(1)}, workers=1),
                name="test.publisher",
            )
            await uplink.wait_until(lambda s: s.refused >= 1)
            with pytest.raises(TimeoutError):
                async with asyncio.timeout(QUIET_WINDOW_S):
                    await uplink.wait_until(lambda s: s.refused >= 2)
            publisher.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await publisher
        assert (uplink.stats.refused, uplink.stats.connects, uplink.stats.connect_failures) == (
            1,
            1,
            0,
        )

    async def test_disconnect_before_puback_raises(self, dev_pki: DevPki, broker: Broker) -> None:
        """A publish whose connection dies before the PUBACK raises UplinkError (re-queue)."""
        uplink = Uplink(uplink_settings(dev_pki, broker.port))
        async with _running(uplink), asyncio.timeout(TIMEOUT_S):
            await uplink.connected.wait()
            assert broker.pid is not None
            os.kill(broker.pid, signal.SIGSTOP)  # received by the kernel, never acknowledged
            publish = asyncio.create_task(uplink.publish(_Hub(dev_pki).envelope(1)))
            await uplink.wait_until(lambda s: s.in_flight == 1)
            await broker.akill()
            with pytest.raises(UplinkError) as caught:
                await publish
        assert caught.value.reason.startswith("no PUBACK before the connection ended")
        assert (
            uplink.stats.lost_in_flight,
            uplink.stats.acked,
            uplink.stats.in_flight,
        ) == (1, 0, 0)

    async def test_puback_timeout_drops_the_connection(
        self, dev_pki: DevPki, broker: Broker, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        """No PUBACK in time (frozen broker): UplinkError and the stuck connection is dropped."""
        monkeypatch.setattr(uplink_module, "PUBACK_TIMEOUT_S", 0.2)  # the clock edge, shortened
        uplink = Uplink(uplink_settings(dev_pki, broker.port))
        async with _running(uplink), asyncio.timeout(TIMEOUT_S):
            await uplink.connected.wait()
            assert broker.pid is not None
            os.kill(broker.pid, signal.SIGSTOP)
            try:
                with pytest.raises(UplinkError) as caught:
                    await uplink.publish(_Hub(dev_pki).envelope(1))
                assert not uplink.connected.is_set()
            finally:
                os.kill(broker.pid, signal.SIGCONT)
            await uplink.connected.wait()  # and it comes back by itself
        assert caught.value.reason == "no PUBACK within 0.2 s"
        assert (uplink.stats.disconnects, uplink.stats.connects) == (1, 2)

    async def test_silent_broker_is_detected_by_keepalive(
        self, dev_pki: DevPki, broker: Broker
    ) -> None:
        """A broker that stops answering (no RST) is noticed by the liveness check (nothing for
        1.5 keepalives, before paho's own 2); then back. The blackholed link is in
        test_uplink_blackhole.py."""
        uplink = Uplink(uplink_settings(dev_pki, broker.port, keepalive_s=1))
        async with _running(uplink), asyncio.timeout(TIMEOUT_S):
            await uplink.connected.wait()
            assert broker.pid is not None
            os.kill(broker.pid, signal.SIGSTOP)
            try:
                await uplink.wait_until(lambda s: s.disconnects >= 1)
            finally:
                os.kill(broker.pid, signal.SIGCONT)
            await uplink.connected.wait()
        assert uplink.stats.last_failure.startswith("nothing from the broker for 1.5 keepalives")
        assert (uplink.stats.connects, uplink.stats.disconnects) == (2, 1)

    async def test_publish_while_disconnected_raises(self, dev_pki: DevPki, broker: Broker) -> None:
        """publish() never queues in RAM: without a connection it raises at once."""
        uplink = Uplink(uplink_settings(dev_pki, broker.port))
        with pytest.raises(UplinkError) as caught:
            await uplink.publish(b"\x00")
        assert caught.value.reason == "not connected"


class _CoalescingFakeBroker:
    """A fake MQTT 5 broker for one transport edge: it answers ``batch`` PUBLISHes with one write
    (one TLS record) holding a PINGRESP and then all their PUBACKs. The client's SSL layer
    decrypts the whole record at once, so the socket stays silent for the rest. paho's
    ``loop_read`` reads at most as many packets as messages are in flight (here one short), so
    only a reader that drains ``SSLSocket.pending()`` completes every publish. mosquitto writes
    each packet on its own; a broker that batches, or an inbound PUBLISH (platform receipts)
    travelling with PUBACKs, produces exactly this.

    With ``connack_reason`` ≥ 0x80 it refuses every CONNECT with that CONNACK reason code, which
    mosquitto with our PKI cannot be made to send (it refuses a certificate in TLS instead)."""

    def __init__(self, pki: DevPki, batch: int, connack_reason: int = 0) -> None:
        self.batch = batch
        self.connack_reason = connack_reason  # ≥ 0x80: refuse every CONNECT with it
        self.connects = 0
        self.ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        self.ctx.load_cert_chain(pki.server_cert, pki.server_key)
        self.server: asyncio.Server | None = None

    async def __aenter__(self) -> int:
        self.server = await asyncio.start_server(self._serve, "127.0.0.1", 0, ssl=self.ctx)
        port: int = self.server.sockets[0].getsockname()[1]
        return port

    async def __aexit__(self, *_exc: object) -> None:
        assert self.server is not None
        self.server.close()
        await self.server.wait_closed()

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        held: list[bytes] = []
        with contextlib.suppress(asyncio.IncompleteReadError, ConnectionError):
            while True:
                first = (await reader.readexactly(1))[0]
                length, shift = 0, 0
                while True:  # variable byte integer (MQTT 5 §1.5.5)
                    byte = (await reader.readexactly(1))[0]
                    length |= (byte & 0x7F) << shift
                    shift += 7
                    if not byte & 0x80:
                        break
                body = await reader.readexactly(length)
                kind = first >> 4
                if kind == 1:  # CONNECT -> CONNACK with our reason code, no properties
                    self.connects += 1
                    writer.write(b"\x20\x03\x00" + bytes([self.connack_reason]) + b"\x00")
                    if self.connack_reason >= 0x80:  # MQTT 5 §3.2.2.2: then close
                        await writer.drain()
                        break
                elif kind == 3:  # PUBLISH QoS 1: hold its PUBACK (reason omitted = success)
                    topic_length = int.from_bytes(body[:2], "big")
                    held.append(b"\x40\x02" + body[2 + topic_length : 4 + topic_length])
                    if len(held) == self.batch:
                        writer.write(b"\xd0\x00" + b"".join(held))  # one write, one record
                        held.clear()
                elif kind == 12:  # PINGREQ
                    writer.write(b"\xd0\x00")
                elif kind == 14:  # DISCONNECT
                    break
                await writer.drain()
        writer.close()


@contextlib.contextmanager
def _silent_listener() -> Iterator[socket.socket]:
    """A TCP listener on loopback that never answers: a TLS handshake to it hangs.

    Nothing accepts in the background: the kernel completes each TCP handshake and queues the
    connection, and only the test accepts (:func:`_held_until_eof`), so every descriptor this
    process holds for the server side is one the test opened and closed itself.
    """
    with socket.create_server(("127.0.0.1", 0)) as listener:
        listener.setblocking(False)
        yield listener


async def _held_until_eof(listener: socket.socket) -> float:
    """Accept the next connection and read until the hub closes it; how long it stayed open."""
    loop = asyncio.get_running_loop()
    conn, _ = await loop.sock_accept(listener)
    with conn:
        opened = loop.time()
        with contextlib.suppress(ConnectionResetError):
            while await loop.sock_recv(conn, 4096):  # the ClientHello, then nothing until EOF
                pass
        return loop.time() - opened


def _open_fds() -> int:
    """Open file descriptors of this process, once garbage of earlier tests is collected
    (a collected socket closes its fd: counted before and after, it would look like a
    change made by the test)."""
    gc.collect()
    return len(os.listdir("/proc/self/fd"))


class TestHandshakeSockets:
    """A TLS handshake that hangs, fails or is cancelled: its socket is closed, no fd leaks."""

    async def test_attempt_timeout_closes_the_hanging_handshake(
        self, dev_pki: DevPki, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        """ATTEMPT_TIMEOUT_S fires while the worker is inside paho's connect (the handshake
        waits for a ServerHello that never comes): the socket is shut down and closed at once,
        and the next attempt fares the same."""
        monkeypatch.setattr(uplink_module, "ATTEMPT_TIMEOUT_S", HANDSHAKE_BOUND_S)
        with _silent_listener() as listener:
            before = _open_fds()
            port = listener.getsockname()[1]
            uplink = Uplink(uplink_settings(dev_pki, port))
            async with _running(uplink), asyncio.timeout(TIMEOUT_S):
                held_s = [await _held_until_eof(listener) for _ in range(2)]
            assert _open_fds() == before
        # Held until our timeout (accepted a moment after the attempt started) and closed right
        # after it, not when paho's 10 s read timeout would have ended the worker.
        assert all(0.8 * HANDSHAKE_BOUND_S <= held < CLOSED_WITHIN_S for held in held_s)
        assert uplink.stats.last_failure == "TCP connect or TLS handshake not done in 0.3 s"
        assert uplink.stats.connects == 0

    async def test_handshake_timeout_in_paho_closes_the_socket(
        self, dev_pki: DevPki, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        """paho's own connect_timeout ends the handshake with TimeoutError: paho does not close
        the socket it never reported; the worker does, before it returns."""
        monkeypatch.setattr(uplink_module, "TLS_CONNECT_TIMEOUT_S", HANDSHAKE_BOUND_S)
        with _silent_listener() as listener:
            before = _open_fds()
            port = listener.getsockname()[1]
            uplink = Uplink(uplink_settings(dev_pki, port))
            async with _running(uplink), asyncio.timeout(TIMEOUT_S):
                held_s = [await _held_until_eof(listener) for _ in range(2)]
                await uplink.wait_until(lambda s: s.connect_failures >= 2)
            assert _open_fds() == before
        assert all(held < CLOSED_WITHIN_S for held in held_s)
        assert uplink.stats.last_failure == "TCP connect or TLS handshake timed out (0.3 s)"

    async def test_close_during_the_handshake_closes_the_socket(self, dev_pki: DevPki) -> None:
        """close() while the worker waits in the handshake (10 s read timeout): run() returns
        at once, having shut the socket down and waited for the worker to close it."""
        loop = asyncio.get_running_loop()
        with _silent_listener() as listener:
            before = _open_fds()
            uplink = Uplink(uplink_settings(dev_pki, listener.getsockname()[1]))
            async with asyncio.timeout(TIMEOUT_S):
                async with _running(uplink):
                    conn, _ = await loop.sock_accept(listener)
                    client_hello = await loop.sock_recv(conn, 4096)  # the handshake has begun
                    closing = loop.time()
                closed_after_s = loop.time() - closing
                with conn:
                    assert await loop.sock_recv(conn, 4096) == b""  # EOF: the hub closed it
            assert _open_fds() == before
        assert client_hello[:1] == b"\x16"  # a TLS handshake record
        assert closed_after_s < CLOSED_WITHIN_S
        assert (uplink.stats.connects, uplink.stats.connect_failures) == (0, 0)


class TestTransport:
    async def test_pubacks_coalesced_in_one_tls_record(self, dev_pki: DevPki) -> None:
        """PINGRESP + five PUBACKs in one TLS record: all five publishes complete."""
        async with _CoalescingFakeBroker(dev_pki, batch=5) as port:
            uplink = Uplink(uplink_settings(dev_pki, port))
            envelope = _Hub(dev_pki).envelope(1)
            async with _running(uplink), asyncio.timeout(TIMEOUT_S):
                await uplink.connected.wait()
                await asyncio.gather(*(uplink.publish(envelope) for _ in range(5)))
        assert (uplink.stats.acked, uplink.stats.in_flight) == (5, 0)

    async def test_refused_connack_is_not_retried_in_a_tight_loop(self, dev_pki: DevPki) -> None:
        """CONNACK 0x87 'Not authorized': not retryable, every pause at least the floor."""
        floor_s, cap_s = 0.2, 0.4
        fake = _CoalescingFakeBroker(dev_pki, batch=1, connack_reason=0x87)
        with capture_logs() as events:
            async with fake as port:
                uplink = Uplink(
                    uplink_settings(
                        dev_pki, port, refusal_backoff_s=floor_s, refusal_backoff_max_s=cap_s
                    )
                )
                async with _running(uplink), asyncio.timeout(TIMEOUT_S):
                    await uplink.wait_until(lambda s: s.connect_failures >= 3)
        failed = [e for e in events if e["event"] == "mqtt_connect_failed"]
        assert [(e["rc"], e["retryable"]) for e in failed[:3]] == [(0x87, False)] * 3
        assert failed[0]["reason"] == "CONNACK refused: Not authorized"
        delays = [e["delay_s"] for e in events if e["event"] == "mqtt_backoff"][:2]
        assert all(floor_s <= d <= cap_s for d in delays)
        assert delays[0] != delays[1]
        assert (uplink.stats.connects, fake.connects) == (0, uplink.stats.connect_failures)


class TestTls:
    async def test_client_cert_from_another_ca_is_refused(
        self, dev_pki: DevPki, foreign_pki: DevPki, broker: Broker
    ) -> None:
        """A hub certificate from a foreign CA never gets a session; backoff is the long one."""
        uplink = Uplink(
            uplink_settings(
                dev_pki,
                broker.port,
                cert_file=foreign_pki.hub_cert,
                key_file=foreign_pki.hub_key,
            )
        )
        async with _running(uplink), asyncio.timeout(TIMEOUT_S):
            await uplink.wait_until(lambda s: s.last_backoff_s > 0)
        assert (uplink.stats.connects, uplink.stats.connect_failures) == (0, 1)
        assert uplink.stats.last_failure.startswith("connection closed before CONNACK")
        assert uplink.stats.last_backoff_s >= 0.5
        await broker.astop()  # the broker logs after it refused; its exit flushes everything
        assert "certificate verify failed" in broker.log_tail()

    async def test_refused_certificate_is_not_retried_in_a_tight_loop(
        self, dev_pki: DevPki, foreign_pki: DevPki, broker: Broker
    ) -> None:
        """Refusal after refusal, every pause is at least the floor and jittered."""
        floor_s, cap_s = 0.2, 0.4
        settings = uplink_settings(
            dev_pki,
            broker.port,
            cert_file=foreign_pki.hub_cert,
            key_file=foreign_pki.hub_key,
            refusal_backoff_s=floor_s,
            refusal_backoff_max_s=cap_s,
        )
        loop = asyncio.get_running_loop()
        with capture_logs() as events:
            uplink = Uplink(settings)
            started = loop.time()
            async with _running(uplink), asyncio.timeout(TIMEOUT_S):
                await uplink.wait_until(lambda s: s.connect_failures >= 3)
                elapsed_s = loop.time() - started
        backoffs = [e for e in events if e["event"] == "mqtt_backoff"]
        delays = [e["delay_s"] for e in backoffs[:2]]
        assert all(floor_s <= d <= cap_s for d in delays)
        assert delays[0] != delays[1]
        assert [(e["attempt"], e["retryable"]) for e in backoffs[:2]] == [(1, False), (2, False)]
        assert elapsed_s >= sum(delays) - 0.01  # three attempts, two pauses (logged rounded)
        assert uplink.stats.connects == 0

    # The TLS negatives (another CA, host name, expired, wrong CA) are in test_uplink_tls.py.


class TestLifecycle:
    async def test_log_events_and_backoff_without_broker(self, dev_pki: DevPki) -> None:
        """Nothing listening: connecting, connect_failed and jittered backoff ≤ cap, forever."""
        with capture_logs() as events:
            uplink = Uplink(uplink_settings(dev_pki, _closed_port()))
            async with _running(uplink), asyncio.timeout(TIMEOUT_S):
                await uplink.wait_until(lambda s: s.connect_failures >= 3)
        names = [e["event"] for e in events]
        assert names[:3] == ["mqtt_connecting", "mqtt_connect_failed", "mqtt_backoff"]
        backoffs = [e for e in events if e["event"] == "mqtt_backoff"]
        assert [e["attempt"] for e in backoffs[:3]] == [1, 2, 3]
        assert all(0 <= e["delay_s"] <= 0.5 for e in backoffs)
        failed = next(e for e in events if e["event"] == "mqtt_connect_failed")
        assert (failed["retryable"], failed["rc"]) == (True, None)
        assert failed["reason"].startswith("cannot reach the broker")

    async def test_bridge_bug_is_logged_with_traceback_then_backed_off(
        self, dev_pki: DevPki, broker: Broker, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        """An exception out of a paho callback: logged with its traceback, the connection cut,
        the next attempt after a refusal's pause (a bug is not retryable), and back again."""

        def on_publish(*_args: Any) -> None:
            raise RuntimeError("bug in on_publish")

        monkeypatch.setattr(uplink_module._Connection, "_on_publish", on_publish)  # the fault
        with capture_logs() as events:
            uplink = Uplink(uplink_settings(dev_pki, broker.port))
            async with _running(uplink), asyncio.timeout(TIMEOUT_S):
                await uplink.connected.wait()
                with pytest.raises(UplinkError) as caught:
                    await uplink.publish(_Hub(dev_pki).envelope(1))
                await uplink.wait_until(lambda s: s.connects >= 2)
        failed = [e for e in events if e["event"] == "mqtt_bridge_failed"]
        assert [(e["call"], e["error"], e["exc_info"], e["log_level"]) for e in failed] == [
            ("loop_read", "RuntimeError", True, "error")
        ]
        assert caught.value.reason.startswith("no PUBACK before the connection ended")
        backoff = next(e for e in events if e["event"] == "mqtt_backoff")
        assert (backoff["retryable"], backoff["delay_s"] >= 0.5) == (False, True)
        assert uplink.stats.last_failure == "bug in the MQTT bridge: RuntimeError"
        assert (uplink.stats.disconnects, uplink.stats.lost_in_flight) == (1, 1)

    @pytest.mark.parametrize("stable", [True, False])
    async def test_backoff_resets_only_after_a_stable_session(
        self, dev_pki: DevPki, broker: Broker, stable: bool
    ) -> None:
        """Failures while the broker is down count up; a session that lasted STABLE_PERIOD_S
        (on the injected clock) starts the count again, a shorter one does not."""
        clock = _FakeClock()
        with capture_logs() as events:
            uplink = Uplink(uplink_settings(dev_pki, broker.port), clock=clock)
            async with _running(uplink), asyncio.timeout(TIMEOUT_S):
                await uplink.connected.wait()
                await broker.astop()
                await uplink.wait_until(lambda s: s.connect_failures >= 2)
                await broker.astart()
                await uplink.wait_until(lambda s: s.connects >= 2)
                failures = uplink.stats.connect_failures
                clock.now += STABLE_PERIOD_S if stable else STABLE_PERIOD_S - 0.1
                mark = len(events)
                await broker.astop()
                await uplink.wait_until(lambda s: s.connect_failures > failures)
        after = next(e for e in events[mark:] if e["event"] == "mqtt_backoff")
        # Before the second session: 1 (the first drop) + one per failed connect.
        assert after["attempt"] == (1 if stable else 1 + failures + 1)

    async def test_close_sends_disconnect_and_run_returns(
        self, dev_pki: DevPki, broker: Broker
    ) -> None:
        """close() writes a DISCONNECT (reason 0) before the socket closes; run() returns."""
        with capture_logs() as events:
            uplink = Uplink(uplink_settings(dev_pki, broker.port))
            async with _running(uplink), asyncio.timeout(TIMEOUT_S):
                await uplink.connected.wait()
        assert not uplink.connected.is_set()
        ended = [e for e in events if e["event"] == "mqtt_disconnected"]
        assert [(e["rc"], e["reason"]) for e in ended] == [
            (0, "disconnected by client: Normal disconnection")
        ]
        assert (uplink.stats.connects, uplink.stats.disconnects) == (1, 0)

    async def test_run_fails_fast_on_a_bad_key_file(self, dev_pki: DevPki, tmp_path: Path) -> None:
        """A client key readable by others stops run() at once with KeyMaterialError."""
        loose = tmp_path / "hub.key"
        loose.write_bytes(dev_pki.hub_key.read_bytes())
        loose.chmod(0o644)
        uplink = Uplink(uplink_settings(dev_pki, 1, key_file=loose))
        with pytest.raises(Exception, match="mode 0644") as caught:
            await uplink.run()
        assert type(caught.value).__name__ == "KeyMaterialError"

    def test_hub_id_is_validated(self, dev_pki: DevPki) -> None:
        """A hub id outside the allowlist can never become a topic."""
        for bad in ("hub/+", "Hub-1", "hub#", "", "-hub", "a" * 64):
            with pytest.raises(UsageError):
                readings_topic(bad)
        with pytest.raises(UsageError):
            uplink_settings(dev_pki, 8883, hub_id="hub/0001")
        assert readings_topic("hub-0001") == "homehub/v1/hub-0001/readings"


class _FakeClock:
    """Monotonic seconds that move only when the test says so (the backoff's clock edge)."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def _closed_port() -> int:
    """A loopback port nobody listens on (bound, then released)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
    return port
