"""The reference receiver's own verification accepts exactly homehub's wire format."""

from __future__ import annotations

import asyncio
import datetime as dt
import json
import signal
import sys
from decimal import Decimal
from pathlib import Path
from typing import Any, Final

import cbor2
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec

from agent import cose
from agent.uplink import Uplink, UplinkSettings
from hil.broker import Broker
from hil.pki import DevPki
from hil.receiver import HubDirectory, RejectedError, verify_reading
from tests import phi_canaries

TOPIC: Final = "homehub/v1/hub-0001/readings"


def _payload(**override: Any) -> bytes:
    body: dict[str, Any] = {
        "v": 1,
        "hub": "hub-0001",
        "seq": 7,
        "id": "reading-7",
        "kind": "observation",
        "hub_time": "2026-11-23T10:00:00Z",
        "fhir": {"valueQuantity": {"value": Decimal("120.5"), "unit": "mm[Hg]"}},
    }
    body.update(override)
    return cbor2.dumps({k: v for k, v in body.items() if v is not None}, canonical=True)


@pytest.fixture(scope="module")
def hub_key(dev_pki: DevPki) -> ec.EllipticCurvePrivateKey:
    """The dev PKI hub's signing key, loaded as the agent loads it."""
    return cose.load_signing_key(dev_pki.hub_key)


@pytest.fixture(scope="module")
def hubs(dev_pki: DevPki) -> HubDirectory:
    """The platform's directory with the dev hub's certificate."""
    return HubDirectory.load(dev_pki.ca_cert, [(dev_pki.hub_id, dev_pki.hub_cert)])


def _sign(key: ec.EllipticCurvePrivateKey, payload: bytes) -> bytes:
    return cose.sign1(payload, key, cose.key_id(key.public_key()))


def _reason(topic: str, envelope: bytes, hubs: HubDirectory) -> str:
    with pytest.raises(RejectedError) as caught:
        verify_reading(topic, envelope, hubs)
    return caught.value.reason


class TestAccepts:
    def test_agent_envelope_verifies(
        self, hub_key: ec.EllipticCurvePrivateKey, hubs: HubDirectory
    ) -> None:
        """An envelope made by agent/cose.py verifies in the independent receiver."""
        envelope = _sign(hub_key, _payload())
        reading = verify_reading(TOPIC, envelope, hubs)
        assert (
            reading.hub_id,
            reading.seq,
            reading.id,
            reading.kind,
        ) == ("hub-0001", 7, "reading-7", "observation")
        assert cose.key_id(hub_key.public_key()) == reading.kid
        assert Decimal("120.5") == reading.payload["fhir"]["valueQuantity"]["value"]
        assert envelope == reading.envelope

    def test_repr_hides_payload_and_envelope(
        self, hub_key: ec.EllipticCurvePrivateKey, hubs: HubDirectory
    ) -> None:
        """A VerifiedReading's repr carries no reading values."""
        text = repr(verify_reading(TOPIC, _sign(hub_key, _payload()), hubs))
        assert "120.5" not in text
        assert "envelope" not in text


class TestRejects:
    def test_payload_hub_must_match_topic(
        self, hub_key: ec.EllipticCurvePrivateKey, hubs: HubDirectory
    ) -> None:
        """A hub cannot speak for another: payload hub differs from the topic's hub id."""
        envelope = _sign(hub_key, _payload(hub="hub-0002"))
        assert _reason(TOPIC, envelope, hubs) == "payload hub differs from the topic's hub id"

    def test_unknown_hub(self, hub_key: ec.EllipticCurvePrivateKey, hubs: HubDirectory) -> None:
        """A topic naming a hub the platform has no certificate for is refused."""
        envelope = _sign(hub_key, _payload(hub="hub-0002"))
        assert _reason("homehub/v1/hub-0002/readings", envelope, hubs) == "unknown hub 'hub-0002'"

    def test_key_not_in_hub_certificate(self, hubs: HubDirectory) -> None:
        """An envelope signed by another key (its own kid) matches no certificate of the hub."""
        other = ec.generate_private_key(ec.SECP256R1())
        assert (
            _reason(TOPIC, _sign(other, _payload()), hubs)
            == "kid does not match any certificate of hub 'hub-0001'"
        )

    def test_flipped_payload_byte(
        self, hub_key: ec.EllipticCurvePrivateKey, hubs: HubDirectory
    ) -> None:
        """One altered payload byte: the signature does not verify."""
        envelope = bytearray(_sign(hub_key, _payload()))
        envelope[envelope.index(b"reading-7") + 8] ^= 0x02
        assert _reason(TOPIC, bytes(envelope), hubs) == "signature does not verify"

    @pytest.mark.parametrize(
        ("topic", "reason"),
        [
            ("homehub/v1/Hub-0001/readings", "topic is not homehub/v1/<hub id>/readings"),
            ("homehub/v1/hub-0001/readings/x", "topic is not homehub/v1/<hub id>/readings"),
            ("homehub/v2/hub-0001/readings", "topic is not homehub/v1/<hub id>/readings"),
        ],
    )
    def test_bad_topic(
        self, topic: str, reason: str, hub_key: ec.EllipticCurvePrivateKey, hubs: HubDirectory
    ) -> None:
        """Only homehub/v1/<valid hub id>/readings names a hub."""
        assert reason == _reason(topic, _sign(hub_key, _payload()), hubs)

    @pytest.mark.parametrize(
        ("override", "reason"),
        [
            ({"v": None}, "payload field 'v' missing or not int"),
            ({"v": 4}, "payload version 4 not supported"),
            ({"v": 2}, "payload: version 2 without 1 to 64 Bundle entries"),
            ({"seq": "7"}, "payload field 'seq' missing or not int"),
            ({"id": None}, "payload field 'id' missing or not str"),
            ({"kind": 3}, "payload field 'kind' missing or not str"),
            ({"seq": True}, "payload field 'seq' missing or not int"),
            ({"id": ""}, "payload seq negative or id empty"),
            (
                {"hub_time": cbor2.CBORTag(0, "2026-11-23T10:00:00Z")},
                "payload: CBOR tag 0 not allowed",
            ),
        ],
    )
    def test_bad_payload(
        self,
        override: dict[str, Any],
        reason: str,
        hub_key: ec.EllipticCurvePrivateKey,
        hubs: HubDirectory,
    ) -> None:
        """A correctly signed payload without the required fields is still refused."""
        assert reason == _reason(TOPIC, _sign(hub_key, _payload(**override)), hubs)

    def test_duplicate_keys_in_payload(
        self, hub_key: ec.EllipticCurvePrivateKey, hubs: HubDirectory
    ) -> None:
        """A signed payload with a duplicated key is ambiguous and refused."""
        payload = _payload()
        doubled = bytes([payload[0] + 1]) + payload[1:] + cbor2.dumps("v") + cbor2.dumps(1)
        assert _reason(TOPIC, _sign(hub_key, doubled), hubs) == "payload: duplicate map keys"

    def test_wrong_content_type(
        self, hub_key: ec.EllipticCurvePrivateKey, hubs: HubDirectory
    ) -> None:
        """Another content type is refused even with a valid signature."""
        envelope = cose.sign1(
            _payload(), hub_key, cose.key_id(hub_key.public_key()), "application/cbor"
        )
        reason = "content type is not application/vnd.homehub.reading+cbor"
        assert reason == _reason(TOPIC, envelope, hubs)

    @pytest.mark.parametrize(
        ("envelope", "reason"),
        [
            (b"", "envelope: malformed CBOR"),
            (cbor2.dumps([b"", {}, b"", b""]), "not a tagged COSE_Sign1 (CBOR tag 18)"),
            (
                cbor2.dumps(cbor2.CBORTag(18, [b"", {}, b""])),
                "COSE_Sign1 must be an array of 4 elements",
            ),
            (
                cbor2.dumps(cbor2.CBORTag(18, [b"", {1: 1}, b"", b""])),
                "unprotected header must be an empty map",
            ),
            (
                cbor2.dumps(cbor2.CBORTag(18, [b"", {}, b"", b"x" * 64])) + b"\x00",
                "envelope: trailing bytes after the CBOR item",
            ),
            (cbor2.dumps(cbor2.CBORTag(1, 0)), "envelope: CBOR tag 1 not allowed"),
            (
                cbor2.dumps(cbor2.CBORTag(18, [b"\xa0", {}, b"", b"x" * 64])),
                "protected header must hold exactly labels 1 (alg), 3 (content type), 4 (kid)",
            ),
            (
                cbor2.dumps(
                    cbor2.CBORTag(18, [cbor2.dumps({1: -35, 3: "x", 4: b""}), {}, b"", b"x" * 64])
                ),
                "alg is not ES256 (-7)",
            ),
        ],
    )
    def test_malformed_envelope(self, envelope: bytes, reason: str, hubs: HubDirectory) -> None:
        """Structural faults are named."""
        assert reason == _reason(TOPIC, envelope, hubs)


class TestDirectory:
    def test_certificate_from_another_ca_is_refused(
        self, dev_pki: DevPki, foreign_pki: DevPki
    ) -> None:
        """A hub certificate not issued by the platform CA cannot be registered."""
        directory = HubDirectory.load(dev_pki.ca_cert, [])
        foreign = x509.load_pem_x509_certificate(foreign_pki.hub_cert.read_bytes())
        with pytest.raises(ValueError, match="certificate not issued by the platform CA"):
            directory.add("hub-0001", foreign)

    def test_cn_must_equal_hub_id(self, dev_pki: DevPki) -> None:
        """A certificate is registered only under the hub id its CN names."""
        directory = HubDirectory.load(dev_pki.ca_cert, [])
        cert = x509.load_pem_x509_certificate(dev_pki.hub_cert.read_bytes())
        with pytest.raises(ValueError, match="certificate CN is not 'hub-0002'"):
            directory.add("hub-0002", cert)

    def test_expired_certificate(self, dev_pki: DevPki) -> None:
        """A reading signed under an expired certificate is refused."""
        ca_key = serialization.load_pem_private_key(dev_pki.ca_key.read_bytes(), None)
        assert isinstance(ca_key, ec.EllipticCurvePrivateKey)
        ca = x509.load_pem_x509_certificate(dev_pki.ca_cert.read_bytes())
        key = ec.generate_private_key(ec.SECP256R1())
        past = dt.datetime(2020, 1, 1, tzinfo=dt.UTC)
        cert = (
            x509.CertificateBuilder()
            .subject_name(x509.Name([x509.NameAttribute(x509.NameOID.COMMON_NAME, "hub-0001")]))
            .issuer_name(ca.subject)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(past)
            .not_valid_after(past + dt.timedelta(days=1))
            .sign(ca_key, hashes.SHA256())
        )
        directory = HubDirectory(ca)
        directory.add("hub-0001", cert)
        assert (
            _reason(TOPIC, _sign(key, _payload()), directory)
            == "certificate of hub 'hub-0001' is not valid now"
        )


class TestCommandLine:
    async def test_prints_verified_readings_and_rejections(
        self,
        dev_pki: DevPki,
        broker: Broker,
        hub_key: ec.EllipticCurvePrivateKey,
        tmp_path: Path,
    ) -> None:
        """python -m hil.receiver: a JSON line per reading on stdout, a line per rejection;
        with --platform-key, receipts (held for the reading, refused for the tampered copy)."""
        proc = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "hil.receiver",
            "--broker-port",
            str(broker.port),
            "--ca",
            str(dev_pki.ca_cert),
            "--cert",
            str(dev_pki.receiver_cert),
            "--key",
            str(dev_pki.receiver_key),
            "--hub-cert",
            f"hub-0001={dev_pki.hub_cert}",
            "--platform-key",
            str(dev_pki.platform_key),
            "--state-dir",
            str(tmp_path / "platform"),
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
        )
        assert proc.stdout is not None
        assert proc.stderr is not None
        uplink = Uplink(
            UplinkSettings(
                hub_id="hub-0001",
                host="127.0.0.1",
                port=broker.port,
                ca_file=dev_pki.ca_cert,
                cert_file=dev_pki.hub_cert,
                key_file=dev_pki.hub_key,
            )
        )
        read: list[bytes] = []

        async def err_line() -> bytes:
            assert proc.stderr is not None
            read.append(await proc.stderr.readline())
            return read[-1]

        try:
            async with asyncio.timeout(15), asyncio.TaskGroup() as tg:
                while b"receiver_subscribed" not in await err_line():
                    pass
                tg.create_task(uplink.run(), name="test.uplink")
                await uplink.connected.wait()
                envelope = _sign(hub_key, _payload())
                await uplink.publish(envelope)
                line = json.loads(await proc.stdout.readline())
                receipts: list[bytes] = []
                while b"receiver_receipt_sent" not in (text := await err_line()):
                    pass
                receipts.append(text)
                tampered = bytearray(envelope)
                tampered[tampered.index(b"reading-7") + 8] ^= 0x01
                await uplink.publish(bytes(tampered))
                while not (rejection := await err_line()).startswith(b"rejected"):
                    pass
                while b"receiver_receipt_sent" not in (text := await err_line()):
                    pass
                receipts.append(text)
                await uplink.close()
        finally:
            if proc.returncode is None:
                proc.send_signal(signal.SIGTERM)
            try:
                returncode = await asyncio.wait_for(proc.wait(), 10)
                read.append(await asyncio.wait_for(proc.stderr.read(), 10))
            finally:
                name = "test_prints_verified_readings_and_rejections: stderr"
                phi_canaries.record_output(name, b"".join(read))
        assert {
            "hub": "hub-0001",
            "seq": 7,
            "id": "reading-7",
            "kind": "observation",
            "kid": cose.key_id(hub_key.public_key()).hex(),
        } == {k: v for k, v in line.items() if k != "payload"}
        assert line["payload"]["fhir"]["valueQuantity"]["value"] == 120.5
        assert rejection == b"rejected hub=hub-0001: signature does not verify\n"
        assert [(b"held=1", b"refused=0"), (b"held=0", b"refused=1")] == [
            (r[r.index(b"held=") :].split()[0], r[r.index(b"refused=") :].split()[0])
            for r in receipts
        ]
        assert (tmp_path / "platform" / "platform.db").exists()
        assert returncode == 0
