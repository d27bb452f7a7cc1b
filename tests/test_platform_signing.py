"""The reference platform's signed receipts and commands (hil/platform_signing.py, pycose).

They must be exactly what docs/platform-protocol.md says, byte for byte in deterministic
encoding, and verify with the hub's own COSE code (agent/cose.py) as well as with pycose.
"""

from __future__ import annotations

import hashlib
from typing import Any, Final

import cbor2
import pytest
from cryptography import x509
from cryptography.hazmat.primitives.asymmetric import ec

from agent import cose
from hil.pki import PLATFORM_SIGNING_CN, DevPki
from hil.platform_signing import (
    COMMAND_CONTENT_TYPE,
    RECEIPT_CONTENT_TYPE,
    PlatformSigner,
    envelope_digest,
    verify_platform_message,
)

HUB: Final = "hub-0001"
D1: Final = bytes(range(16))
D2: Final = bytes(range(16, 32))


@pytest.fixture(scope="module")
def signer(dev_pki: DevPki) -> PlatformSigner:
    """The dev PKI's platform signing key."""
    return PlatformSigner.from_pem_file(dev_pki.platform_key)


def _outer(message: bytes) -> tuple[bytes, bytes, dict[str, Any]]:
    """(protected, payload, decoded payload) of a tagged COSE_Sign1."""
    tag = cbor2.loads(message)
    assert isinstance(tag, cbor2.CBORTag)
    assert 18 == tag.tag
    protected, unprotected, payload, signature = tag.value
    assert ({}, 64) == (dict(unprotected), len(signature))
    return protected, payload, cbor2.loads(payload)


class TestReceipt:
    def test_layout_and_deterministic_encoding(self, signer: PlatformSigner) -> None:
        """Protected header {1: -7, 3: ct, 4: kid}; payload the contract's map; all canonical."""
        message = signer.receipt(
            HUB,
            [(D1, [1, 2, 3])],
            [(D2, [4], "bad_signature")],
            iat=1_800_000_000,
            exp=1_800_000_600,
            rid=b"r" * 16,
        )
        assert cbor2.dumps(cbor2.loads(message), canonical=True) == message
        assert 0xD2 == message[0]  # tag 18 in its one-byte head
        protected, payload, body = _outer(message)
        assert cbor2.dumps(cbor2.loads(protected), canonical=True) == protected
        assert cbor2.dumps(cbor2.loads(payload), canonical=True) == payload
        assert {1: -7, 3: RECEIPT_CONTENT_TYPE, 4: signer.kid} == cbor2.loads(protected)
        assert {
            "v": 1,
            "hub": HUB,
            "rid": b"r" * 16,
            "iat": 1_800_000_000,
            "exp": 1_800_000_600,
            "held": [[D1, [1, 2, 3]]],
            "refused": [[D2, [4], "bad_signature"]],
        } == body

    def test_no_refused_key_when_none(self, signer: PlatformSigner) -> None:
        """``refused`` is optional: absent when nothing was refused; rid random, 16 bytes."""
        a = _outer(signer.receipt(HUB, [(D1, [9])], iat=10, exp=20))[2]
        b = _outer(signer.receipt(HUB, [(D1, [9])], iat=10, exp=20))[2]
        assert {"v", "hub", "rid", "iat", "exp", "held"} == set(a)
        assert (16, 16) == (len(a["rid"]), len(b["rid"]))
        assert a["rid"] != b["rid"]

    def test_verifies_with_the_hubs_cose_code(
        self, signer: PlatformSigner, dev_pki: DevPki
    ) -> None:
        """agent/cose.py verifies it with the key of the platform certificate (its kid)."""
        cert = x509.load_pem_x509_certificate(dev_pki.platform_cert.read_bytes())
        public_key = cert.public_key()
        assert isinstance(public_key, ec.EllipticCurvePublicKey)
        message = signer.receipt(HUB, [(D1, [1])], iat=10, exp=20)
        verified = cose.verify1(message, public_key, expected_content_type=RECEIPT_CONTENT_TYPE)
        assert (signer.kid, cose.key_id(public_key)) == (verified.kid, verified.kid)
        assert _outer(message)[1] == verified.payload

    def test_verifies_with_pycose_and_tampering_does_not(self, signer: PlatformSigner) -> None:
        """pycose's verification accepts it; one changed payload byte is refused."""
        message = signer.receipt(HUB, [(D1, [1])], iat=10, exp=20, rid=b"q" * 16)
        body = verify_platform_message(message, signer.public_key, RECEIPT_CONTENT_TYPE)
        assert [[D1, [1]]] == body["held"]
        tampered = bytearray(message)
        tampered[tampered.index(b"q" * 16)] ^= 1
        with pytest.raises(ValueError, match="signature does not verify"):
            verify_platform_message(bytes(tampered), signer.public_key, RECEIPT_CONTENT_TYPE)

    def test_strict_checks_the_contract(self, signer: PlatformSigner) -> None:
        """strict=True refuses what a hub would refuse; without it a test can build those."""
        with pytest.raises(ValueError, match="1 to 1000"):
            signer.receipt(HUB, [], iat=10, exp=20, strict=True)
        with pytest.raises(ValueError, match="exp - iat"):
            signer.receipt(HUB, [(D1, [1])], iat=10, exp=10 + 3601, strict=True)
        long_lived = signer.receipt(HUB, [(D1, [1])], iat=10, exp=10 + 3601)
        assert 3611 == _outer(long_lived)[2]["exp"]


class TestCommand:
    def test_layout(self, signer: PlatformSigner) -> None:
        """A command: v, hub, nonce, iat, exp, op, args; canonical; verifies with agent/cose."""
        message = signer.command(
            HUB, "announce", {"dictionaries": [2, 1]}, iat=100, exp=200, nonce=b"n" * 16
        )
        assert cbor2.dumps(cbor2.loads(message), canonical=True) == message
        protected, _, body = _outer(message)
        assert {1: -7, 3: COMMAND_CONTENT_TYPE, 4: signer.kid} == cbor2.loads(protected)
        assert {
            "v": 1,
            "hub": HUB,
            "nonce": b"n" * 16,
            "iat": 100,
            "exp": 200,
            "op": "announce",
            "args": {"dictionaries": [2, 1]},
        } == body
        cose.verify1(message, signer.public_key, expected_content_type=COMMAND_CONTENT_TYPE)

    def test_strict_refuses_unknown_op(self, signer: PlatformSigner) -> None:
        """Unknown ops are buildable (a hub must reject them) but not in strict mode."""
        assert "reboot" == _outer(signer.command(HUB, "reboot", {}, iat=1, exp=2))[2]["op"]
        with pytest.raises(ValueError, match="op"):
            signer.command(HUB, "reboot", {}, iat=1, exp=2, strict=True)


def test_envelope_digest() -> None:
    """The first 16 bytes of SHA-256 over the message bytes."""
    assert hashlib.sha256(b"abc").digest()[:16] == envelope_digest(b"abc")
    assert 16 == len(envelope_digest(b""))


def test_dev_pki_platform_certificate(dev_pki: DevPki, signer: PlatformSigner) -> None:
    """The dev PKI issues the platform signing certificate for the signer's key, by its CA."""
    cert = x509.load_pem_x509_certificate(dev_pki.platform_cert.read_bytes())
    ca = x509.load_pem_x509_certificate(dev_pki.ca_cert.read_bytes())
    cert.verify_directly_issued_by(ca)
    assert [PLATFORM_SIGNING_CN] == [
        a.value for a in cert.subject.get_attributes_for_oid(x509.NameOID.COMMON_NAME)
    ]
    public_key = cert.public_key()
    assert isinstance(public_key, ec.EllipticCurvePublicKey)
    assert cose.key_id(public_key) == signer.kid
    assert 0o600 == dev_pki.platform_key.stat().st_mode & 0o777
