"""Rotating the hub's client certificate (agent/cert_rotation.py): a CSR for a new pending key,
a certificate installed only for that key and the hub's CN (and the CA's, valid now, when
given), the switch-over that keeps the old pair until confirmed, and the repair after a crash
between two renames. The end-to-end flow runs through the command desk with commands signed
by the reference platform.
"""

from __future__ import annotations

import datetime as dt
import os
import shutil
import ssl
import stat
from pathlib import Path
from typing import Final

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from agent import cert_rotation
from agent.cert_rotation import CertificateSlots
from agent.errors import CertificateRefusedError, KeyMaterialError
from hil.pki import DevPki
from tests.test_commands import HUB, NOW, FakeWallClock, command, make_desk, reply_of

WHEN: Final = dt.datetime.fromtimestamp(NOW, dt.UTC)


@pytest.fixture
def slots(tmp_path: Path, dev_pki: DevPki) -> CertificateSlots:
    """The dev PKI's hub pair copied into a private key directory, as configured files."""
    keys = tmp_path / "keys"
    keys.mkdir(mode=0o700)
    shutil.copy(dev_pki.hub_cert, keys / "hub.crt")
    shutil.copy(dev_pki.hub_key, keys / "hub.key")
    os.chmod(keys / "hub.key", 0o600)
    return CertificateSlots(keys / "hub.crt", keys / "hub.key")


def ca_of(pki: DevPki) -> tuple[x509.Certificate, ec.EllipticCurvePrivateKey]:
    key = serialization.load_pem_private_key(pki.ca_key.read_bytes(), password=None)
    assert isinstance(key, ec.EllipticCurvePrivateKey)
    return x509.load_pem_x509_certificate(pki.ca_cert.read_bytes()), key


def issue(
    pki: DevPki,
    public_key: ec.EllipticCurvePublicKey,
    *,
    cn: str = HUB,
    not_before: dt.datetime | None = None,
    days: int = 30,
    extra_cn: bool = False,
) -> bytes:
    """A DER client certificate from ``pki``'s CA."""
    ca_cert, ca_key = ca_of(pki)
    start = not_before or dt.datetime.now(dt.UTC) - dt.timedelta(hours=1)
    names = [x509.NameAttribute(NameOID.COMMON_NAME, cn)]
    if extra_cn:
        names.append(x509.NameAttribute(NameOID.COMMON_NAME, "other"))
    cert = (
        x509.CertificateBuilder()
        .subject_name(x509.Name(names))
        .issuer_name(ca_cert.subject)
        .public_key(public_key)
        .serial_number(x509.random_serial_number())
        .not_valid_before(start)
        .not_valid_after(start + dt.timedelta(days=days))
        .sign(ca_key, hashes.SHA256())
    )
    return cert.public_bytes(serialization.Encoding.DER)


def pending_public_key(slots: CertificateSlots) -> ec.EllipticCurvePublicKey:
    key = serialization.load_pem_private_key(slots.pending_key.read_bytes(), password=None)
    assert isinstance(key, ec.EllipticCurvePrivateKey)
    return key.public_key()


def spki(key: ec.EllipticCurvePublicKey | ec.EllipticCurvePrivateKey) -> bytes:
    public = key.public_key() if isinstance(key, ec.EllipticCurvePrivateKey) else key
    return public.public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )


def pair_spki(cert_file: Path, key_file: Path) -> tuple[bytes, bytes]:
    cert = x509.load_pem_x509_certificate(cert_file.read_bytes())
    key = serialization.load_pem_private_key(key_file.read_bytes(), password=None)
    assert isinstance(key, ec.EllipticCurvePrivateKey)
    cert_key = cert.public_key()
    assert isinstance(cert_key, ec.EllipticCurvePublicKey)
    return spki(cert_key), spki(key)


class TestCsr:
    def test_new_pending_key_and_its_csr(self, slots: CertificateSlots) -> None:
        der = cert_rotation.begin_rotation(slots, HUB)
        csr = x509.load_der_x509_csr(der)
        assert csr.is_signature_valid
        assert [a.value for a in csr.subject] == [HUB]
        csr_key = csr.public_key()
        assert isinstance(csr_key, ec.EllipticCurvePublicKey)
        assert spki(csr_key) == spki(pending_public_key(slots))
        assert stat.S_IMODE(slots.pending_key.stat().st_mode) == 0o600
        assert (slots.pending_cert.exists(), cert_rotation.has_pending_certificate(slots)) == (
            False,
            False,
        )

    def test_a_second_rotation_supersedes_the_first(
        self, slots: CertificateSlots, dev_pki: DevPki
    ) -> None:
        first = x509.load_der_x509_csr(cert_rotation.begin_rotation(slots, HUB)).public_key()
        assert isinstance(first, ec.EllipticCurvePublicKey)
        cert_rotation.begin_rotation(slots, HUB)
        with pytest.raises(CertificateRefusedError) as caught:
            cert_rotation.install(slots, issue(dev_pki, first), HUB)
        assert caught.value.check == "public_key"


class TestInstall:
    def test_installed_into_the_pending_slot(
        self, slots: CertificateSlots, dev_pki: DevPki
    ) -> None:
        cert_rotation.begin_rotation(slots, HUB)
        der = issue(dev_pki, pending_public_key(slots))
        ca, _ = ca_of(dev_pki)
        cert = cert_rotation.install(slots, der, HUB, ca=ca)
        assert cert.public_bytes(serialization.Encoding.DER) == der
        pem = slots.pending_cert.read_bytes()
        assert x509.load_pem_x509_certificate(pem).public_bytes(serialization.Encoding.DER) == der
        assert cert_rotation.has_pending_certificate(slots)

    @pytest.mark.parametrize(
        "case",
        ["garbage", "other_key", "other_cn", "two_cns", "foreign_ca", "expired", "not_yet"],
    )
    def test_refused(
        self, slots: CertificateSlots, dev_pki: DevPki, foreign_pki: DevPki, case: str
    ) -> None:
        cert_rotation.begin_rotation(slots, HUB)
        pending = pending_public_key(slots)
        past = dt.datetime.now(dt.UTC) - dt.timedelta(days=60)
        future = dt.datetime.now(dt.UTC) + dt.timedelta(days=1)
        der, check = {
            "garbage": (b"\x30\x03\x02\x01\x00", "not_a_certificate"),
            "other_key": (
                issue(dev_pki, ec.generate_private_key(ec.SECP256R1()).public_key()),
                "public_key",
            ),
            "other_cn": (issue(dev_pki, pending, cn="hub-0002"), "subject"),
            "two_cns": (issue(dev_pki, pending, extra_cn=True), "subject"),
            "foreign_ca": (issue(foreign_pki, pending), "issuer"),
            "expired": (issue(dev_pki, pending, not_before=past), "validity"),
            "not_yet": (issue(dev_pki, pending, not_before=future), "validity"),
        }[case]
        ca, _ = ca_of(dev_pki)
        with pytest.raises(CertificateRefusedError) as caught:
            cert_rotation.install(slots, der, HUB, ca=ca)
        assert (caught.value.check, slots.pending_cert.exists()) == (check, False)

    def test_without_a_ca_only_key_and_subject_are_checked(
        self, slots: CertificateSlots, foreign_pki: DevPki
    ) -> None:
        cert_rotation.begin_rotation(slots, HUB)
        past = dt.datetime.now(dt.UTC) - dt.timedelta(days=60)
        cert_rotation.install(
            slots, issue(foreign_pki, pending_public_key(slots), not_before=past), HUB
        )
        assert cert_rotation.has_pending_certificate(slots)

    def test_no_pending_key(self, slots: CertificateSlots, dev_pki: DevPki) -> None:
        der = issue(dev_pki, ec.generate_private_key(ec.SECP256R1()).public_key())
        with pytest.raises(CertificateRefusedError) as caught:
            cert_rotation.install(slots, der, HUB)
        assert caught.value.check == "no_pending_key"

    def test_validity_against_the_given_time(
        self, slots: CertificateSlots, dev_pki: DevPki
    ) -> None:
        """``now`` is injected: valid from notBefore to notAfter, both included."""
        cert_rotation.begin_rotation(slots, HUB)
        der = issue(dev_pki, pending_public_key(slots), not_before=WHEN, days=30)
        ca, _ = ca_of(dev_pki)
        end = WHEN + dt.timedelta(days=30)
        for now, valid in (
            (WHEN - dt.timedelta(seconds=1), False),
            (WHEN, True),
            (end, True),
            (end + dt.timedelta(seconds=1), False),
        ):
            if valid:
                cert_rotation.install(slots, der, HUB, ca=ca, now=now)
                continue
            with pytest.raises(CertificateRefusedError) as caught:
                cert_rotation.install(slots, der, HUB, ca=ca, now=now)
            assert caught.value.check == "validity"


def installed(slots: CertificateSlots, pki: DevPki) -> None:
    cert_rotation.begin_rotation(slots, HUB)
    cert_rotation.install(slots, issue(pki, pending_public_key(slots)), HUB)


class TestSwitchOver:
    def test_promote_then_confirm(self, slots: CertificateSlots, dev_pki: DevPki) -> None:
        old = (slots.cert_file.read_bytes(), slots.key_file.read_bytes())
        installed(slots, dev_pki)
        new_cert, new_key = slots.pending_cert.read_bytes(), slots.pending_key.read_bytes()
        cert_rotation.promote(slots)
        assert (slots.cert_file.read_bytes(), slots.key_file.read_bytes()) == (new_cert, new_key)
        assert (slots.previous_cert.read_bytes(), slots.previous_key.read_bytes()) == old
        assert stat.S_IMODE(slots.key_file.stat().st_mode) == 0o600
        assert stat.S_IMODE(slots.previous_key.stat().st_mode) == 0o600
        assert (cert_rotation.on_trial(slots), cert_rotation.has_pending_certificate(slots)) == (
            True,
            False,
        )
        # The configured files are a pair TLS takes.
        ssl.create_default_context(ssl.Purpose.SERVER_AUTH).load_cert_chain(
            slots.cert_file, slots.key_file
        )
        cert_rotation.confirm(slots)
        assert (cert_rotation.on_trial(slots), slots.previous_key.exists()) == (False, False)
        assert (slots.cert_file.read_bytes(), slots.key_file.read_bytes()) == (new_cert, new_key)

    def test_promote_then_revert(self, slots: CertificateSlots, dev_pki: DevPki) -> None:
        old = (slots.cert_file.read_bytes(), slots.key_file.read_bytes())
        installed(slots, dev_pki)
        cert_rotation.promote(slots)
        cert_rotation.revert(slots)
        assert (slots.cert_file.read_bytes(), slots.key_file.read_bytes()) == old
        assert cert_rotation.on_trial(slots) is False
        with pytest.raises(KeyMaterialError) as caught:
            cert_rotation.revert(slots)
        assert caught.value.reason == "no previous pair"

    def test_promote_needs_an_installed_certificate(self, slots: CertificateSlots) -> None:
        cert_rotation.begin_rotation(slots, HUB)  # a key, but no certificate yet
        with pytest.raises(CertificateRefusedError) as caught:
            cert_rotation.promote(slots)
        assert caught.value.check == "no_pending_key"
        assert cert_rotation.on_trial(slots) is False


class TestRecover:
    def test_a_consistent_pair_is_left_alone(self, slots: CertificateSlots) -> None:
        assert cert_rotation.recover(slots) is False

    def test_crash_between_the_renames_of_promote(
        self, slots: CertificateSlots, dev_pki: DevPki
    ) -> None:
        installed(slots, dev_pki)
        new_key = slots.pending_key.read_bytes()
        # promote() up to its first rename: the old pair copied, the certificate moved in.
        shutil.copy(slots.cert_file, slots.previous_cert)
        shutil.copy(slots.key_file, slots.previous_key)
        os.replace(slots.pending_cert, slots.cert_file)
        cert_spki, key_spki = pair_spki(slots.cert_file, slots.key_file)
        assert cert_spki != key_spki
        assert cert_rotation.recover(slots) is True
        assert slots.key_file.read_bytes() == new_key
        assert len(set(pair_spki(slots.cert_file, slots.key_file))) == 1
        assert cert_rotation.on_trial(slots)

    def test_crash_between_the_renames_of_revert(
        self, slots: CertificateSlots, dev_pki: DevPki
    ) -> None:
        old = (slots.cert_file.read_bytes(), slots.key_file.read_bytes())
        installed(slots, dev_pki)
        cert_rotation.promote(slots)
        os.replace(slots.previous_cert, slots.cert_file)
        assert cert_rotation.recover(slots) is True
        assert (slots.cert_file.read_bytes(), slots.key_file.read_bytes()) == old

    def test_no_slot_holds_the_key(self, slots: CertificateSlots, dev_pki: DevPki) -> None:
        cert_path, _ = dev_pki.issue_client("hub-0003")
        shutil.copy(cert_path, slots.cert_file)
        with pytest.raises(KeyMaterialError) as caught:
            cert_rotation.recover(slots)
        assert caught.value.reason == "is not the client certificate's key, nor is any slot's"


class TestThroughTheDesk:
    """rotate_certificate and install_certificate as the platform sends them."""

    def test_rotate_then_install(self, tmp_path: Path, dev_pki: DevPki) -> None:
        config_file = tmp_path / "homehub.toml"
        config_file.write_text("")
        ca, _ = ca_of(dev_pki)
        desk = make_desk(tmp_path, config_file, FakeWallClock(), client_ca=ca)
        keys = tmp_path / "keys"
        shutil.copy(dev_pki.hub_cert, keys / "hub.crt")
        shutil.copy(dev_pki.hub_key, keys / "hub.key")
        rotated = desk.handle(command("rotate_certificate", nonce=b"r" * 16))
        result = reply_of(rotated.reply)
        assert (result["ok"], sorted(result["result"])) == (True, ["csr"])
        csr = x509.load_der_x509_csr(result["result"]["csr"])
        csr_key = csr.public_key()
        assert isinstance(csr_key, ec.EllipticCurvePublicKey)

        wrong = desk.handle(
            command(
                "install_certificate",
                {"cert": issue(dev_pki, csr_key, cn="hub-0002", not_before=WHEN)},
                nonce=b"w" * 16,
            )
        )
        assert reply_of(wrong.reply) == {
            "v": 1,
            "hub": HUB,
            "nonce": b"w" * 16,
            "op": "install_certificate",
            "ok": False,
            "error": "certificate_refused",
            "result": {"check": "subject"},
        }

        not_yet = desk.handle(
            command(
                "install_certificate",
                {"cert": issue(dev_pki, csr_key, not_before=WHEN + dt.timedelta(seconds=1))},
                nonce=b"x" * 16,
            )
        )
        assert reply_of(not_yet.reply)["result"] == {"check": "validity"}  # by the desk's clock

        right = desk.handle(
            command(
                "install_certificate",
                {"cert": issue(dev_pki, csr_key, not_before=WHEN)},
                nonce=b"i" * 16,
            )
        )
        assert (right.ok, reply_of(right.reply)["ok"]) == (True, True)
        slots = CertificateSlots(keys / "hub.crt", keys / "hub.key")
        assert cert_rotation.has_pending_certificate(slots)
        cert_rotation.promote(slots)
        assert len(set(pair_spki(slots.cert_file, slots.key_file))) == 1
