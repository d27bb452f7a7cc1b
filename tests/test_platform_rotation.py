"""A certificate rotation loses no reading when the hub signs with its TLS client key.

In the virtual home (and possibly in deployments) ``[signing] key_file`` is ``[mqtt]
key_file``: a rotation (``rotate_certificate`` -> CSR -> ``install_certificate``) replaces the
signing key too. Once a connection with the new certificate confirms the rotation the running
hub signs with the new key (no restart), while the envelopes already in its outbox stay signed
with the old one. The reference
platform keeps every certificate a hub has had (hil/platform_verify.py, HubDirectory), learns
the new one when it issues it (PlatformConsole.install_certificate -> the receiver's
add_hub_certificate, remembered in its state directory), and checks a certificate's validity at
signing time (a reading's ``hub_time``), not now.

The end-to-end test runs the daemon's own :class:`agent.daemon.Hub`, a real TLS mosquitto, the
reference receiver (receipts) and console; the unit tests pin the validity rule with an
injected clock.
"""

from __future__ import annotations

import asyncio
import datetime as dt
from collections.abc import Sequence
from decimal import Decimal
from pathlib import Path
from typing import Any, Final

import cbor2
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from agent import config, cose
from agent.cert_rotation import CertificateSlots, on_trial
from hil.broker import Broker
from hil.crash_child import DEVICE, DEVICE_CONFIG, raw_measurement
from hil.pki import DevPki
from hil.platform_console import CONTENT_TYPES, HubMessage, PlatformConsole
from hil.platform_signing import key_id, verify_platform_message
from hil.platform_verify import HubDirectory, RejectedError, VerifiedReading, verify_envelope
from hil.receiver import Receiver
from tests.platform_hub import issue_for_csr, running_hub, write_hub_config

pytestmark = pytest.mark.timeout(180)

T: Final = 30.0
"""Every wait is bounded; on loopback each step takes milliseconds."""

BACKLOG: Final = 3
NEW: Final = 2


class Observer:
    """The hub's observer (one for each run of the daemon): how many readings it stored,
    which seqs it deleted (receipted)."""

    def __init__(self) -> None:
        self.fates = 0
        self.deleted: list[int] = []
        self._change = asyncio.Event()

    def stored(self, arrival: Any, fate: Any) -> None:
        del arrival, fate
        self.fates += 1
        self._changed()

    async def until_stored(self, count: int) -> None:
        while self.fates < count:
            await self._change.wait()

    def delivered(self, seqs: Sequence[int]) -> None:
        self.deleted.extend(seqs)
        self._changed()

    def _changed(self) -> None:
        event, self._change = self._change, asyncio.Event()
        event.set()

    async def until_deleted(self, count: int) -> None:
        while len(set(self.deleted)) < count:
            await self._change.wait()


class Platform:
    """The receiver's consumer: each new reading's seq and kid; held at a gate until opened."""

    def __init__(self) -> None:
        self.kids: dict[int, bytes] = {}
        self.gate = asyncio.Event()
        self.arrived = asyncio.Event()

    async def consume(self, reading: VerifiedReading) -> None:
        self.kids[reading.seq] = reading.kid
        self.arrived.set()
        await self.gate.wait()


def _online(m: HubMessage) -> bool:
    return m.kind == "status" and m.body["state"] == "online"


def _signing_is_client_key(tmp_path: Path, dev_pki: DevPki, port: int) -> Path:
    """The platform hub's configuration with ``[signing] key_file`` = ``[mqtt] key_file``."""
    path = write_hub_config(tmp_path, dev_pki, port)
    keys = tmp_path / "keys"
    path.write_text(path.read_text().replace(str(keys / "signing.key"), str(keys / "client.key")))
    cfg = config.load(path)
    assert cfg.signing.key_file == cfg.mqtt.key_file
    return path


def _kid_of_pem_cert(path: Path) -> bytes:
    key = x509.load_pem_x509_certificate(path.read_bytes()).public_key()
    assert isinstance(key, ec.EllipticCurvePublicKey)
    return key_id(key)


async def _store(hub: Any, observer: Observer, first: int, count: int) -> None:
    """Readings ``first`` .. ``first + count - 1`` of the cuff, stored by the hub."""
    fates = observer.fates
    for n in range(first, first + count):
        await hub.receive(raw_measurement(n), DEVICE, DEVICE_CONFIG)
    await observer.until_stored(fates + count)


async def test_backlog_and_new_readings_verify_across_a_rotation(
    tmp_path: Path, dev_pki: DevPki, broker: Broker
) -> None:
    """Readings stored offline (signed with the old key), a rotation, one reading stored by
    the same daemon once the rotation is confirmed and more after a restart (signed with the
    new key): every reading, old and new, verifies on the
    platform, is receipted and deleted from the outbox; nothing is refused or parked; a
    restarted receiver still knows both certificates."""
    hub_id = dev_pki.hub_id
    config_path = _signing_is_client_key(tmp_path, dev_pki, broker.port)
    cfg = config.load(config_path)
    slots = CertificateSlots(cfg.mqtt.cert_file, cfg.mqtt.key_file)
    old_kid = _kid_of_pem_cert(dev_pki.hub_cert)
    state_dir = tmp_path / "platform"
    observer = Observer()

    # 1. Offline: the broker is down; the backlog is stored, signed with the old key.
    await broker.astop()
    async with running_hub(config_path, observer=observer) as hub:
        async with asyncio.timeout(T):
            await _store(hub, observer, 1, BACKLOG)
            counts = await hub.counts()
        assert (BACKLOG, BACKLOG) == (hub.stored, counts.pending)
    await broker.astart()

    # 2. Online: the platform takes one reading of the backlog and then holds the rest at the
    # broker (Receive Maximum 1, its consumer at a gate) while the certificate is rotated.
    platform = Platform()
    receiver = Receiver.for_dev_pki(
        dev_pki, broker.port, state_dir=state_dir, consumer=platform.consume, receive_maximum=1
    )
    async with receiver:
        console = PlatformConsole.for_dev_pki(
            dev_pki, broker.port, on_certificate=receiver.add_hub_certificate
        )
        async with console:
            async with asyncio.timeout(T):
                await asyncio.gather(receiver.subscribed.wait(), console.subscribed.wait())
            async with running_hub(config_path, observer=observer) as hub:
                uplink = hub.uplink
                assert uplink is not None
                async with asyncio.timeout(T):
                    await platform.arrived.wait()  # one backlog reading verified, old key
                    reply = await console.ask(hub_id, "rotate_certificate")
                    new_der = issue_for_csr(dev_pki, reply.body["result"]["csr"])
                    connects = uplink.stats.connects
                    seen = len(console.messages)
                    installed = await console.install_certificate(hub_id, new_der)
                    await uplink.wait_until(lambda s: s.connects > connects)
                    await console.wait_for(_online, after=seen)  # on the new connection
                    while on_trial(slots):
                        await console.wait_for(lambda m: True, after=len(console.messages))
                    # Confirmed: the running hub signs with the new key from now on.
                    await _store(hub, observer, BACKLOG + 1, 1)
                assert installed.body["ok"] is True
                assert list(platform.kids.values()) == [old_kid]
            new_cert = x509.load_der_x509_certificate(new_der)
            new_key = new_cert.public_key()
            assert isinstance(new_key, ec.EllipticCurvePublicKey)
            new_kid = key_id(new_key)
            assert [old_kid, new_kid] == receiver.hubs.kids(hub_id)
            store = receiver.store
            assert store is not None
            assert 1 == store.count("hub_certificates")

            # 3. The daemon restarts (signing with the new key) and stores new readings; the
            # platform opens its gate: the backlog's old-key envelopes and the new ones.
            async with running_hub(config_path, observer=observer) as hub:
                async with asyncio.timeout(T):
                    seen = len(console.messages)
                    status = await console.wait_for(_online, after=seen)
                    await _store(hub, observer, BACKLOG + 2, NEW - 1)
                    platform.gate.set()
                    await observer.until_deleted(BACKLOG + NEW)
                    counts = await hub.counts()
                assert (0, 0, 0) == (counts.pending, counts.refused, hub.refused)
                # The hub signs its status with the new key now: it verifies with it.
                body = verify_platform_message(status.raw, new_key, CONTENT_TYPES["status"])
                assert body["state"] == "online"

        all_seqs = list(range(1, BACKLOG + NEW + 1))
        assert all_seqs == sorted(set(observer.deleted))
        assert {seq: old_kid for seq in range(1, BACKLOG + 1)} | {
            seq: new_kid for seq in range(BACKLOG + 1, BACKLOG + NEW + 1)
        } == platform.kids
        assert all_seqs == store.seqs(hub_id)
        assert ([], 0, 0) == (store.parked_codes(), receiver.stats.rejected_total, 0)
        assert (0, 0) == (receiver.stats.refused_items, receiver.stats.parked)
        assert receiver.stats.held_items >= BACKLOG + NEW

    # 4. A restarted receiver, given only the old certificate, knows the new one from its
    # state directory: a reading the running hub signs with the new key verifies.
    platform = Platform()
    platform.gate.set()
    again = Receiver.for_dev_pki(
        dev_pki, broker.port, state_dir=state_dir, consumer=platform.consume
    )
    async with again:
        assert [old_kid, new_kid] == again.hubs.kids(hub_id)
        async with running_hub(config_path, observer=observer) as hub:
            async with asyncio.timeout(T):
                await again.subscribed.wait()
                await _store(hub, observer, BACKLOG + NEW + 1, 1)
                await observer.until_deleted(BACKLOG + NEW + 1)
        assert {BACKLOG + NEW + 1: new_kid} == platform.kids
        assert again.store is not None
        assert (0, []) == (again.stats.rejected_total, again.store.parked_codes())


# ---------------------------------------------------------------------------
# The directory: every certificate a hub had; validity at signing time
# ---------------------------------------------------------------------------

HUB: Final = "hub-0001"
TOPIC: Final = f"homehub/v1/{HUB}/readings"
NOW: Final = dt.datetime(2026, 6, 1, tzinfo=dt.UTC)
"""The platform's clock in these tests."""
OLD_VALIDITY: Final = (
    dt.datetime(2026, 1, 1, tzinfo=dt.UTC),
    dt.datetime(2026, 3, 1, tzinfo=dt.UTC),
)
"""The old certificate's: expired at NOW."""


def _issue(
    pki: DevPki,
    key: ec.EllipticCurvePrivateKey,
    validity: tuple[dt.datetime, dt.datetime],
    cn: str = HUB,
) -> x509.Certificate:
    ca_key = serialization.load_pem_private_key(pki.ca_key.read_bytes(), None)
    assert isinstance(ca_key, ec.EllipticCurvePrivateKey)
    ca = x509.load_pem_x509_certificate(pki.ca_cert.read_bytes())
    return (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn)]))
        .issuer_name(ca.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(validity[0])
        .not_valid_after(validity[1])
        .sign(ca_key, hashes.SHA256())
    )


def _directory(pki: DevPki, *certs: x509.Certificate) -> HubDirectory:
    ca = x509.load_pem_x509_certificate(pki.ca_cert.read_bytes())
    directory = HubDirectory(ca, clock=lambda: NOW)
    for cert in certs:
        directory.add(HUB, cert)
    return directory


def _reading(seq: int, hub_time: str | None) -> dict[str, Any]:
    body: dict[str, Any] = {
        "v": 1,
        "hub": HUB,
        "seq": seq,
        "id": f"reading-{seq}",
        "kind": "observation",
        "hub_time": hub_time,
        "fhir": {"valueQuantity": {"value": Decimal("120.5"), "unit": "mm[Hg]"}},
    }
    return {k: v for k, v in body.items() if v is not None}


def _single(key: ec.EllipticCurvePrivateKey, seq: int, hub_time: str | None) -> bytes:
    payload = cbor2.dumps(_reading(seq, hub_time), canonical=True)
    return cose.sign1(payload, key, cose.key_id(key.public_key()))


def _batch(key: ec.EllipticCurvePrivateKey, hub_times: Sequence[str]) -> bytes:
    readings = [cbor2.dumps(_reading(seq, t), canonical=True) for seq, t in enumerate(hub_times, 1)]
    payload = cbor2.dumps({"v": 1, "hub": HUB, "readings": readings}, canonical=True)
    return cose.sign1(
        payload, key, cose.key_id(key.public_key()), "application/vnd.homehub.readings+cbor"
    )


def _parked(envelope: bytes, hubs: HubDirectory) -> tuple[str, bool, str]:
    with pytest.raises(RejectedError) as caught:
        verify_envelope(TOPIC, envelope, hubs)
    return caught.value.code, caught.value.refusable, caught.value.reason


NOT_VALID: Final = ("certificate_not_valid", False, f"certificate of hub {HUB!r} is not valid now")


class TestValidityAtSigningTime:
    def test_backlog_stored_while_valid_verifies_after_expiry(self, dev_pki: DevPki) -> None:
        """A reading stored (signed) while the old certificate was valid verifies after it
        expired; a batch of such readings too."""
        key = ec.generate_private_key(ec.SECP256R1())
        hubs = _directory(dev_pki, _issue(dev_pki, key, OLD_VALIDITY))
        single = verify_envelope(TOPIC, _single(key, 7, "2026-02-01T10:00:00Z"), hubs)
        batch = verify_envelope(
            TOPIC, _batch(key, ["2026-01-01T00:00:00Z", "2026-03-01T00:00:00+00:00"]), hubs
        )
        assert ([7], cose.key_id(key.public_key())) == (single.seqs, single.kid)
        assert [1, 2] == batch.seqs

    @pytest.mark.parametrize(
        "hub_time",
        [
            "2026-03-01T00:00:01Z",  # stored after the certificate expired
            "2025-12-31T23:59:59Z",  # before it was valid
            None,  # no time: no signing time to check
            "yesterday",
            "2026-02-01T10:00:00",  # no offset: not a point in time
        ],
    )
    def test_signed_outside_validity_is_parked(self, dev_pki: DevPki, hub_time: str | None) -> None:
        """Under an expired certificate, a reading whose store time is not within its
        validity is parked (the platform's matter: a renewed certificate for the key can fix
        it), not refused."""
        key = ec.generate_private_key(ec.SECP256R1())
        hubs = _directory(dev_pki, _issue(dev_pki, key, OLD_VALIDITY))
        assert NOT_VALID == _parked(_single(key, 7, hub_time), hubs)

    def test_one_reading_of_a_batch_outside_parks_the_batch(self, dev_pki: DevPki) -> None:
        key = ec.generate_private_key(ec.SECP256R1())
        hubs = _directory(dev_pki, _issue(dev_pki, key, OLD_VALIDITY))
        envelope = _batch(key, ["2026-02-01T00:00:00Z", "2026-05-01T00:00:00Z"])
        assert NOT_VALID == _parked(envelope, hubs)

    def test_not_yet_valid_is_parked_whatever_the_reading_says(self, dev_pki: DevPki) -> None:
        key = ec.generate_private_key(ec.SECP256R1())
        later = (dt.datetime(2026, 7, 1, tzinfo=dt.UTC), dt.datetime(2026, 9, 1, tzinfo=dt.UTC))
        hubs = _directory(dev_pki, _issue(dev_pki, key, later))
        assert NOT_VALID == _parked(_single(key, 7, "2026-08-01T00:00:00Z"), hubs)

    def test_valid_now_needs_no_store_time(self, dev_pki: DevPki) -> None:
        """The usual case is unchanged: a certificate valid now, whatever the hub's clock."""
        key = ec.generate_private_key(ec.SECP256R1())
        valid = (dt.datetime(2026, 5, 1, tzinfo=dt.UTC), dt.datetime(2026, 7, 1, tzinfo=dt.UTC))
        hubs = _directory(dev_pki, _issue(dev_pki, key, valid))
        assert [7, 8] == [
            verify_envelope(TOPIC, _single(key, 7, None), hubs).seqs[0],
            verify_envelope(TOPIC, _single(key, 8, "1970-01-01T00:00:00Z"), hubs).seqs[0],
        ]


class TestEveryCertificateKept:
    def test_old_and_new_keys_both_verify(self, dev_pki: DevPki) -> None:
        """After a rotation the directory holds both certificates, the kid picks one; adding
        one held already changes nothing."""
        old_key, new_key = (ec.generate_private_key(ec.SECP256R1()) for _ in range(2))
        new_validity = (
            dt.datetime(2026, 2, 15, tzinfo=dt.UTC),
            dt.datetime(2026, 9, 1, tzinfo=dt.UTC),
        )
        old, new = _issue(dev_pki, old_key, OLD_VALIDITY), _issue(dev_pki, new_key, new_validity)
        hubs = _directory(dev_pki, old, new, old)
        old_envelope = verify_envelope(TOPIC, _single(old_key, 1, "2026-02-20T08:00:00Z"), hubs)
        new_envelope = verify_envelope(TOPIC, _single(new_key, 2, "2026-05-31T08:00:00Z"), hubs)
        assert [cose.key_id(old_key.public_key()), cose.key_id(new_key.public_key())] == (
            hubs.kids(HUB)
        )
        assert [old, new] == hubs.certificates(HUB)
        assert (old_envelope.kid, new_envelope.kid) == tuple(hubs.kids(HUB))

    def test_renewed_certificate_for_the_same_key(self, dev_pki: DevPki) -> None:
        """A certificate renewed for the same key (same kid) is kept beside the first: a
        reading stored after the first expired verifies under the renewal."""
        key = ec.generate_private_key(ec.SECP256R1())
        renewal = (dt.datetime(2026, 2, 1, tzinfo=dt.UTC), dt.datetime(2026, 4, 1, tzinfo=dt.UTC))
        first = _issue(dev_pki, key, OLD_VALIDITY)
        hubs = _directory(dev_pki, first)
        envelope = _single(key, 7, "2026-03-15T00:00:00Z")
        assert NOT_VALID == _parked(envelope, hubs)
        hubs.add(HUB, _issue(dev_pki, key, renewal))
        assert [7] == verify_envelope(TOPIC, envelope, hubs).seqs
        assert 1 == len(hubs.kids(HUB))
        assert 2 == len(hubs.certificates(HUB))


async def test_receiver_refuses_a_certificate_it_cannot_vouch_for(
    tmp_path: Path, dev_pki: DevPki, foreign_pki: DevPki, broker: Broker
) -> None:
    """add_hub_certificate checks before it remembers: another CA's certificate, or one for
    another hub, is refused and nothing is stored; before start there is no store."""
    receiver = Receiver.for_dev_pki(dev_pki, broker.port, state_dir=tmp_path / "platform")
    own = x509.load_pem_x509_certificate(dev_pki.hub_cert.read_bytes())
    with pytest.raises(RuntimeError, match="not started"):
        await receiver.add_hub_certificate(dev_pki.hub_id, own)
    foreign = x509.load_pem_x509_certificate(foreign_pki.hub_cert.read_bytes())
    async with receiver:
        with pytest.raises(ValueError, match="not issued by the platform CA"):
            await receiver.add_hub_certificate(dev_pki.hub_id, foreign)
        with pytest.raises(ValueError, match="certificate CN is not 'hub-0002'"):
            await receiver.add_hub_certificate("hub-0002", own)
        store = receiver.store
        assert store is not None
        assert (0, 1) == (store.count("hub_certificates"), len(receiver.hubs.kids(dev_pki.hub_id)))
        assert not receiver.hubs.knows("hub-0002")
