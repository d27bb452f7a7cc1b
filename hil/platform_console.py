"""The platform's operator side of docs/platform-protocol.md: signed commands out; replies,
status and events in, verified with pycose against the hub's certificate.

The reference receiver (hil/receiver.py) takes readings and sends receipts; this console is
the rest of a platform, for the demo and the tests: it sends commands signed with the
platform key (:class:`hil.platform_signing.PlatformSigner`) on ``homehub/v1/<hub>/commands``
and collects what hubs publish on ``replies``, ``status`` and ``events``, each verified with
an independent COSE implementation (:func:`hil.platform_signing.verify_platform_message`) and
decoded. It connects with the receiver's certificate (the broker's ACL lets the platform write
commands and read those topics). Like the receiver, paho runs in its own thread and every
callback crosses to the event loop with ``call_soon_threadsafe``.

Certificate rotation: :meth:`PlatformConsole.install_certificate` hands a hub's new certificate
to the rest of the platform first (``on_certificate``: the receiver's
:meth:`hil.receiver.Receiver.add_hub_certificate`, durable before the hub can use the key) and
to the console's own keys, then sends ``install_certificate``. Every key a hub had stays
known: its outbox and its messages may come signed with either until it has restarted.

Provisioning checks (docs/platform-protocol.md, "Provisioning check"): with
``confirm_checks=True`` the console answers each ``provisioning_check`` event that verified
with a key of its hub by the signed command ``confirm_provisioning`` naming the event's
``check``; it counts them in :attr:`PlatformConsole.confirmed_checks`. Such an event is
never a reading: nothing of it reaches a patient's record.

It does not import the hub's code (agent/).
"""

from __future__ import annotations

import asyncio
import contextlib
import ssl
import time
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType
from typing import Any, Final, Self

import cbor2
import paho.mqtt.client as mqtt
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec
from paho.mqtt.enums import CallbackAPIVersion, MQTTProtocolVersion
from paho.mqtt.properties import Properties
from paho.mqtt.reasoncodes import ReasonCode

from hil.pki import DevPki
from hil.platform_signing import PlatformSigner, verify_platform_message

CONTENT_TYPES: Final = {
    "replies": "application/vnd.homehub.reply+cbor",
    "status": "application/vnd.homehub.status+cbor",
    "events": "application/vnd.homehub.event+cbor",
}
PROVISIONING_EVENT: Final = "provisioning_check"
CONFIRM_OP: Final = "confirm_provisioning"
CHECK_BYTES: Final = 16
COMMAND_VALIDITY_S: Final = 1200
"""``exp - iat`` of the console's commands: 20 minutes, so a hub whose clock is as far ahead
still takes them (docs/platform-protocol.md, Commands)."""
MESSAGES_KEPT: Final = 1000

CertificateSink = Callable[[str, bytes], Awaitable[object]]
"""Told ``(hub id, certificate DER)`` of a certificate issued to a hub (the receiver's
``add_hub_certificate``); raises to stop the installation."""


@dataclass(frozen=True, slots=True)
class HubMessage:
    """One verified message a hub published."""

    kind: str
    hub_id: str
    body: dict[str, Any]
    retained: bool
    raw: bytes = field(repr=False)


class PlatformConsole:
    """Send commands to hubs, collect their verified replies, status and events."""

    def __init__(
        self,
        *,
        port: int,
        ca_file: Path,
        cert_file: Path,
        key_file: Path,
        signer: PlatformSigner,
        hub_keys: Mapping[str, ec.EllipticCurvePublicKey],
        host: str = "127.0.0.1",
        client_id: str = "platform-console",
        on_certificate: CertificateSink | None = None,
        confirm_checks: bool = False,
    ) -> None:
        self.host = host
        self.confirm_checks = confirm_checks
        self.confirmed_checks = 0
        """``confirm_provisioning`` commands sent (see the module doc)."""
        self.port = port
        self.signer = signer
        self.hub_keys: dict[str, list[ec.EllipticCurvePublicKey]] = {
            hub_id: [key] for hub_id, key in hub_keys.items()
        }
        """Every key each hub had, oldest first: its messages verify with any of them."""
        self.on_certificate = on_certificate
        self.messages: list[HubMessage] = []
        self.unverified = 0
        """Messages on the hub topics that did not verify (kept out of :attr:`messages`)."""
        self.subscribed = asyncio.Event()
        self._change = asyncio.Event()
        self._loop: asyncio.AbstractEventLoop | None = None
        ctx = ssl.create_default_context(ssl.Purpose.SERVER_AUTH, cafile=str(ca_file))
        ctx.minimum_version = ssl.TLSVersion.TLSv1_2
        ctx.load_cert_chain(cert_file, key_file)
        self._client = mqtt.Client(
            CallbackAPIVersion.VERSION2, client_id=client_id, protocol=MQTTProtocolVersion.MQTTv5
        )
        self._client.tls_set_context(ctx)
        self._client.reconnect_delay_set(min_delay=1, max_delay=4)
        self._client.suppress_exceptions = True
        self._client.on_connect = self._on_connect
        self._client.on_subscribe = self._on_subscribe
        self._client.on_disconnect = self._on_disconnect
        self._client.on_message = self._on_message

    @classmethod
    def for_dev_pki(
        cls, pki: DevPki, port: int, *, hub_cert: Path | None = None, **options: Any
    ) -> PlatformConsole:
        """A console for a :class:`hil.pki.DevPki`: its receiver certificate, its platform
        key, its hub (whose messages verify with ``hub_cert``, the PKI's by default)."""
        cert = x509.load_pem_x509_certificate((hub_cert or pki.hub_cert).read_bytes())
        key = cert.public_key()
        if not isinstance(key, ec.EllipticCurvePublicKey):
            raise TypeError("the hub's certificate is not for a P-256 key")
        return cls(
            port=port,
            ca_file=pki.ca_cert,
            cert_file=pki.receiver_cert,
            key_file=pki.receiver_key,
            signer=PlatformSigner.from_pem_file(pki.platform_key),
            hub_keys={pki.hub_id: key},
            **options,
        )

    # -- lifecycle ----------------------------------------------------------------------

    async def start(self) -> None:
        self._loop = asyncio.get_running_loop()
        self._client.connect_async(self.host, self.port, keepalive=30)
        self._client.loop_start()

    async def stop(self) -> None:
        self._client.disconnect()
        await asyncio.to_thread(self._client.loop_stop)

    async def __aenter__(self) -> Self:
        await self.start()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.stop()

    # -- commands -----------------------------------------------------------------------

    def command(
        self,
        hub_id: str,
        op: str,
        args: Mapping[str, Any] | None = None,
        *,
        now: int | None = None,
        validity_s: int = COMMAND_VALIDITY_S,
        nonce: bytes | None = None,
    ) -> bytes:
        """A signed command (not sent: :meth:`send` it, or alter it first)."""
        iat = int(time.time()) if now is None else now
        return self.signer.command(
            hub_id, op, dict(args or {}), iat=iat, exp=iat + validity_s, nonce=nonce
        )

    async def send(self, hub_id: str, message: bytes, kind: str = "commands") -> None:
        """Publish ``message`` on the hub's ``kind`` topic (``commands``; ``receipts`` for a
        test's own receipt), QoS 1, and wait for the PUBACK."""
        info = self._client.publish(f"homehub/v1/{hub_id}/{kind}", message, qos=1)
        await asyncio.to_thread(info.wait_for_publish, 10.0)
        if not info.is_published():
            raise TimeoutError("the broker did not acknowledge the command")

    async def ask(self, hub_id: str, op: str, args: Mapping[str, Any] | None = None) -> HubMessage:
        """Send one command and return the hub's verified reply to it (bound it with
        ``asyncio.timeout``)."""
        message = self.command(hub_id, op, args)
        nonce = _nonce_of(message)
        seen = len(self.messages)
        await self.send(hub_id, message)
        return await self.wait_for(
            lambda m: m.kind == "replies" and m.body.get("nonce") == nonce, after=seen
        )

    async def install_certificate(self, hub_id: str, cert_der: bytes) -> HubMessage:
        """Install a certificate the platform issued for ``hub_id``'s CSR: the platform learns
        it first (``on_certificate``, awaited: the receiver then verifies envelopes under the
        new key, and still under the old ones), the console learns its key, then the
        ``install_certificate`` command goes out; the hub's reply (bound it with
        ``asyncio.timeout``)."""
        key = x509.load_der_x509_certificate(cert_der).public_key()
        if not isinstance(key, ec.EllipticCurvePublicKey):
            raise TypeError("the hub's certificate is not for a P-256 key")
        if self.on_certificate is not None:
            await self.on_certificate(hub_id, cert_der)
        self.learn_hub_key(hub_id, key)
        return await self.ask(hub_id, "install_certificate", {"cert": cert_der})

    def learn_hub_key(self, hub_id: str, key: ec.EllipticCurvePublicKey) -> None:
        """Verify ``hub_id``'s messages with ``key`` too (the ones it had are kept)."""
        keys = self.hub_keys.setdefault(hub_id, [])
        if all(_spki(k) != _spki(key) for k in keys):
            keys.append(key)

    # -- what hubs published ---------------------------------------------------------------

    def of(self, kind: str) -> list[HubMessage]:
        return [m for m in self.messages if m.kind == kind]

    async def wait_for(
        self, predicate: Callable[[HubMessage], bool], *, after: int = 0
    ) -> HubMessage:
        """The first message (from index ``after``) for which ``predicate`` holds; waits for
        it (bound it with ``asyncio.timeout``)."""
        index = after
        while True:
            while index < len(self.messages):
                message = self.messages[index]
                index += 1
                if predicate(message):
                    return message
            await self._change.wait()

    # -- paho's thread -----------------------------------------------------------------------

    def _to_loop(self, fn: Callable[..., None], *args: Any) -> None:
        if self._loop is not None:
            with contextlib.suppress(RuntimeError):  # loop closed during shutdown
                self._loop.call_soon_threadsafe(fn, *args)

    def _on_connect(
        self, client: mqtt.Client, _u: Any, _f: Any, reason: ReasonCode, _p: Properties | None
    ) -> None:
        if reason.is_failure:
            return
        client.subscribe([(f"homehub/v1/+/{kind}", 1) for kind in CONTENT_TYPES])

    def _on_subscribe(self, *_: Any) -> None:
        self._to_loop(self.subscribed.set)

    def _on_disconnect(self, *_: Any) -> None:
        self._to_loop(self.subscribed.clear)

    def _on_message(self, _c: mqtt.Client, _u: Any, msg: mqtt.MQTTMessage) -> None:
        self._to_loop(self._arrived, msg.topic, bytes(msg.payload), bool(msg.retain))

    # -- the loop ------------------------------------------------------------------------------

    def _arrived(self, topic: str, payload: bytes, retained: bool) -> None:
        parts = topic.split("/")
        hub_id, kind = (parts[2], parts[3]) if len(parts) == 4 else ("", "")
        body = None
        if kind in CONTENT_TYPES:
            for key in self.hub_keys.get(hub_id, ()):
                with contextlib.suppress(ValueError, TypeError, KeyError):
                    body = verify_platform_message(payload, key, CONTENT_TYPES[kind])
                    break
        if body is None:
            self.unverified += 1
            return
        if len(self.messages) < MESSAGES_KEPT:
            self.messages.append(HubMessage(kind, hub_id, body, retained, payload))
        if kind == "events" and body.get("event") == PROVISIONING_EVENT:
            self._confirm(hub_id, body)
        event, self._change = self._change, asyncio.Event()
        event.set()

    def _confirm(self, hub_id: str, body: dict[str, Any]) -> None:
        """Answer a verified ``provisioning_check`` with ``confirm_provisioning``."""
        check = body.get("check")
        if not self.confirm_checks or not isinstance(check, bytes) or len(check) != CHECK_BYTES:
            return
        message = self.command(hub_id, CONFIRM_OP, {"check": check})
        self._client.publish(f"homehub/v1/{hub_id}/commands", message, qos=1)
        self.confirmed_checks += 1


def _spki(key: ec.EllipticCurvePublicKey) -> bytes:
    return key.public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )


def _nonce_of(message: bytes) -> bytes:
    body = cbor2.loads(cbor2.loads(message).value[2])
    nonce = body["nonce"]
    if not isinstance(nonce, bytes):
        raise TypeError("not a command")
    return nonce


__all__ = ["CONTENT_TYPES", "CertificateSink", "HubMessage", "PlatformConsole"]
