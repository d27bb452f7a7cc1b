"""The platform side of the running daemon (agent/platform_link.py) end to end: the daemon's
own :class:`agent.daemon.Hub` against a real TLS mosquitto, the reference receiver sending
receipts (hil/receiver.py) and the platform console (hil/platform_console.py) sending commands
signed with the platform key and verifying, with pycose, what the hub publishes on
``replies``, ``status`` and ``events``."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Final

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import serialization

from agent import config
from agent.cert_rotation import CertificateSlots, on_trial
from hil.broker import Broker
from hil.crash_child import DEVICE, DEVICE_CONFIG, raw_measurement
from hil.pki import DevPki
from hil.platform_console import HubMessage, PlatformConsole
from hil.receiver import Receiver
from tests.platform_hub import issue_for_csr, running_hub, write_hub_config

pytestmark = pytest.mark.timeout(120)

T: Final = 30.0
"""Every wait is bounded; on loopback each step takes milliseconds."""


@pytest.fixture
async def console(dev_pki: DevPki, broker: Broker) -> AsyncIterator[PlatformConsole]:
    async with PlatformConsole.for_dev_pki(dev_pki, broker.port) as running:
        async with asyncio.timeout(T):
            await running.subscribed.wait()
        yield running


@pytest.fixture
def config_path(tmp_path: Path, dev_pki: DevPki, broker: Broker) -> Path:
    return write_hub_config(tmp_path, dev_pki, broker.port)


def _online(m: HubMessage) -> bool:
    return m.kind == "status" and m.body["state"] == "online"


async def test_commands_round_trip_through_the_daemon(
    config_path: Path,
    dev_pki: DevPki,
    broker: Broker,
    receiver: Receiver,
    console: PlatformConsole,
) -> None:
    """sync_now, report_status, set_config and announce, each answered by a signed reply
    and acted on; the status is signed and retained; the announced dictionaries survive a
    restart of the daemon."""
    hub_id = dev_pki.hub_id
    async with running_hub(config_path) as hub:
        async with asyncio.timeout(T):
            first = await console.wait_for(_online)  # published after the connection
            await hub.receive(raw_measurement(1), DEVICE, DEVICE_CONFIG)
            await receiver.wait_until(lambda s: s.held_items >= 1)
            reply = await console.ask(hub_id, "sync_now")
        assert (True, "sync_now") == (reply.body["ok"], reply.body["op"])
        assert {"pending", "refused", "damaged", "awaiting_receipt", "dictionaries"} <= set(
            first.body
        )
        assert first.body["dictionaries"] == []

        async with asyncio.timeout(T):
            seen = len(console.messages)
            reply = await console.ask(hub_id, "report_status")
            status = await console.wait_for(_online, after=seen)
        assert reply.body["ok"] is True
        assert status.body["hub"] == hub_id
        assert status.body["iat"] >= first.body["iat"]

        async with asyncio.timeout(T):
            reply = await console.ask(
                hub_id, "set_config", {"key": "ble.cycle_interval_s", "value": 42.0}
            )
        assert reply.body["ok"] is True
        assert {"key": "ble.cycle_interval_s", "restart_required": True} == reply.body["result"]
        assert 42.0 == config.load(config_path).ble.cycle_interval_s

        async with asyncio.timeout(T):
            seen = len(console.messages)
            reply = await console.ask(hub_id, "announce", {"dictionaries": [1, 7]})
            status = await console.wait_for(_online, after=seen)
        assert reply.body["ok"] is True
        assert status.body["dictionaries"] == [1]  # 7 is not one the hub ships
        platform = hub.platform
        assert platform is not None
        dictionary = platform.dictionary()
        assert dictionary is not None
        assert dictionary.id == 1

    # A late subscriber gets the status the broker retained: the offline one of the stop.
    async with PlatformConsole.for_dev_pki(dev_pki, broker.port, client_id="late-console") as late:
        async with asyncio.timeout(T):
            retained = await late.wait_for(lambda m: m.kind == "status")
        assert retained.retained
        assert {"v": 1, "hub": hub_id, "iat": retained.body["iat"], "state": "offline"} == (
            retained.body
        )

    async with running_hub(config_path) as hub:
        platform = hub.platform
        assert platform is not None
        assert (1, 7) == platform.announced
        dictionary = platform.dictionary()
        assert dictionary is not None
        assert dictionary.id == 1
    assert 0 == hub.security_events


async def test_rejected_commands_are_security_events(
    config_path: Path, dev_pki: DevPki, console: PlatformConsole
) -> None:
    """A forged command (one bit of its signature flipped) gets no reply; an expired one and
    a replayed one are answered with their error; all three are security events, and the
    platform gets one ``security`` event for them (one per source an hour)."""
    hub_id = dev_pki.hub_id
    async with running_hub(config_path) as hub:
        async with asyncio.timeout(T):
            await console.wait_for(_online)
        forged = bytearray(console.command(hub_id, "report_status"))
        forged[-1] ^= 1
        expired = console.command(hub_id, "report_status", now=1_700_000_000)
        valid = console.command(hub_id, "sync_now")
        async with asyncio.timeout(T):
            await console.send(hub_id, bytes(forged))
            await console.send(hub_id, expired)
            await console.send(hub_id, valid)
            await console.send(hub_id, valid)  # replayed
            replies = [
                await console.wait_for(lambda m: m.kind == "replies"),
                await console.wait_for(
                    lambda m: m.kind == "replies" and m.body.get("op") == "sync_now"
                ),
            ]
            while hub.security_events < 3:
                await hub.security_noticed.wait()
                hub.security_noticed.clear()
            event = await console.wait_for(lambda m: m.kind == "events")
            second_reply = await console.wait_for(
                lambda m: m.kind == "replies" and m.body.get("error") == "replayed"
            )
        assert ("report_status", False, "expired") == (
            replies[0].body["op"],
            replies[0].body["ok"],
            replies[0].body["error"],
        )
        assert replies[1].body["ok"] is True
        assert second_reply.body["op"] == "sync_now"
        assert 3 == len(console.of("replies"))  # none for the forged one
        assert {"event": "security", "source": "command", "check": "forged"} == {
            k: event.body[k] for k in ("event", "source", "check")
        }
        platform = hub.platform
        assert platform is not None
        assert 3 == hub.security_events
        assert platform.gate.limited == 2


async def test_forged_receipt_raises_an_event(
    config_path: Path, dev_pki: DevPki, console: PlatformConsole
) -> None:
    hub_id = dev_pki.hub_id
    async with running_hub(config_path) as hub:
        async with asyncio.timeout(T):
            await console.wait_for(_online)
            receipt = bytearray(
                console.signer.receipt(
                    hub_id, [(bytes(16), [1])], iat=1_800_000_000, exp=1_800_000_060
                )
            )
            receipt[-1] ^= 1
            await console.send(hub_id, bytes(receipt), kind="receipts")
            event = await console.wait_for(lambda m: m.kind == "events")
        assert {"event": "security", "source": "receipt", "check": "forged", "hub": hub_id} == {
            k: event.body[k] for k in ("event", "source", "check", "hub")
        }
        assert 1 == hub.security_events


async def test_certificate_rotation_switches_and_confirms(
    config_path: Path, dev_pki: DevPki, broker: Broker, console: PlatformConsole
) -> None:
    """rotate_certificate -> a CSR in the reply -> the dev CA issues it -> install_certificate
    -> the hub reconnects with the new pair (the broker accepts it: the connection is up) and
    confirms it (the old pair deleted)."""
    hub_id = dev_pki.hub_id
    cfg = config.load(config_path)
    slots = CertificateSlots(cfg.mqtt.cert_file, cfg.mqtt.key_file)
    old_cert = slots.cert_file.read_bytes()
    async with running_hub(config_path) as hub:
        uplink = hub.uplink
        platform = hub.platform
        assert uplink is not None
        assert platform is not None
        async with asyncio.timeout(T):
            await console.wait_for(_online)
            reply = await console.ask(hub_id, "rotate_certificate")
        csr_der = reply.body["result"]["csr"]
        csr = x509.load_der_x509_csr(csr_der)
        assert reply.body["ok"] is True
        assert csr.is_signature_valid
        new_der = issue_for_csr(dev_pki, csr_der)
        connects = uplink.stats.connects
        async with asyncio.timeout(T):
            seen = len(console.messages)
            reply = await console.ask(hub_id, "install_certificate", {"cert": new_der})
            await uplink.wait_until(lambda s: s.connects > connects)
            await console.wait_for(_online, after=seen)  # sent on the new connection
            while on_trial(slots):
                await console.wait_for(lambda m: True, after=len(console.messages))
        assert reply.body["ok"] is True
        new_cert = x509.load_pem_x509_certificate(slots.cert_file.read_bytes())
        assert new_cert.public_bytes(serialization.Encoding.DER) == new_der
        key = serialization.load_pem_private_key(slots.key_file.read_bytes(), password=None)
        assert _spki(key.public_key()) == _spki(csr.public_key())
        assert slots.cert_file.read_bytes() != old_cert
        assert not slots.previous_cert.exists()
        assert not slots.previous_key.exists()
        assert (1, 0) == (platform.certificate_switches, platform.certificate_reverts)
        assert uplink.connected.is_set()


async def test_refused_certificate_reverts(
    config_path: Path,
    dev_pki: DevPki,
    foreign_pki: DevPki,
    broker: Broker,
    console: PlatformConsole,
) -> None:
    """A certificate the broker refuses (issued by another CA: the hub takes it, the broker
    does not) is reverted: the old pair is back and connected again."""
    hub_id = dev_pki.hub_id
    cfg = config.load(config_path)
    slots = CertificateSlots(cfg.mqtt.cert_file, cfg.mqtt.key_file)
    old_cert, old_key = slots.cert_file.read_bytes(), slots.key_file.read_bytes()
    async with running_hub(config_path) as hub:
        uplink = hub.uplink
        platform = hub.platform
        assert uplink is not None
        assert platform is not None
        async with asyncio.timeout(T):
            await console.wait_for(_online)
            reply = await console.ask(hub_id, "rotate_certificate")
            foreign_der = issue_for_csr(foreign_pki, reply.body["result"]["csr"])
            connects = uplink.stats.connects
            reply = await console.ask(hub_id, "install_certificate", {"cert": foreign_der})
            await uplink.wait_until(lambda s: s.connects > connects)
        assert reply.body["ok"] is True
        assert (1, 1) == (platform.certificate_switches, platform.certificate_reverts)
        assert (old_cert, old_key) == (slots.cert_file.read_bytes(), slots.key_file.read_bytes())
        assert not on_trial(slots)


def _spki(key: object) -> bytes:
    assert hasattr(key, "public_bytes")
    data: bytes = key.public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    return data
