"""``homehub provision`` for a hub whose signing key lives in a PKCS#11 token (SoftHSM2), end
to end against the virtual home's platform: a real mosquitto (TLS, client certificates, ACL)
with the test PKI, the reference platform's console answering provisioning checks and the
reference receiver, and the CLI as the technician runs it.

Such a hub has two keys: the TLS client key (a file: Python's TLS cannot use a token key) and
the signing key (made in the token, never extractable). Provisioning makes both, writes a CSR
for each (the signing one signed inside the token), imports both certificates, and proves the
result with a check the token signed. The platform is told the signing certificate only: its
check and its readings verify under that key, not under the TLS key. The token's PIN (planted
by :func:`tests.keyhub.init_token`), the TLS key and the patient reference appear in no
output.
"""

from __future__ import annotations

import asyncio
import stat
import tomllib
from collections.abc import AsyncIterator, Iterator, Sequence
from pathlib import Path
from typing import Any, Final

import cbor2
import pytest
from cryptography import x509
from cryptography.hazmat.primitives.asymmetric import ec
from pkcs11 import Attribute, KeyType, ObjectClass

from agent import config, cose
from agent.errors import ConfigError, KeyMaterialError
from agent.keys.pkcs11_provider import Pkcs11KeyProvider
from agent.provisioning.signing_csr import SIGNING_KEY_USAGE, signing_csr
from hil.broker import Broker
from hil.crash_child import DEVICE, DEVICE_CONFIG, raw_measurement
from hil.pki import DevPki
from hil.platform_console import PlatformConsole
from hil.receiver import Receiver
from tests import keyhub, phi_canaries
from tests.keyhub import SOFTHSM_MODULE, Token
from tests.platform_hub import running_hub
from tests.provision_home import (
    FreshHub,
    file_state,
    fresh_hub,
    hub_public_key,
    issue,
    issue_signing,
    provision,
    write_bundle,
)

T: Final = 10.0
"""Every wait is bounded; on loopback each takes milliseconds."""
UNCHANGED: Final = {"kept", "unchanged", "checked", "skipped"}
SIGNING_LABEL: Final = "homehub-signing"


@pytest.fixture
def token(tmp_path: Path) -> Token:
    """A fresh SoftHSM2 token (no key in it), its PIN planted as a canary."""
    if not keyhub.softhsm_available():
        pytest.skip("softhsm2 not installed (make system-deps)")
    pin_dir = tmp_path / "pin"
    pin_dir.mkdir(mode=0o700)
    return keyhub.init_token(pin_dir)


@pytest.fixture
def hub(tmp_path: Path, token: Token) -> FreshHub:
    return fresh_hub(tmp_path, token=token)


@pytest.fixture
async def console(dev_pki: DevPki, broker: Broker) -> AsyncIterator[PlatformConsole]:
    """The reference platform's console, confirming provisioning checks."""
    async with PlatformConsole.for_dev_pki(dev_pki, broker.port, confirm_checks=True) as running:
        async with asyncio.timeout(T):
            await running.subscribed.wait()
        yield running


@pytest.fixture
def in_token(token: Token) -> Iterator[Pkcs11KeyProvider]:
    """The test's own session on the token (the hub's provider class), to read what
    provisioning made there."""
    provider = Pkcs11KeyProvider(SOFTHSM_MODULE, token.label, token.pin)
    yield provider
    provider.close()


def token_key(provider: Pkcs11KeyProvider) -> ec.EllipticCurvePublicKey:
    """The signing key's public half as the token holds it now (not the provider's cache),
    after checking that its private half can never leave the token."""
    private = provider.session.get_key(
        object_class=ObjectClass.PRIVATE_KEY, key_type=KeyType.EC, label=SIGNING_LABEL
    )
    assert private[Attribute.SENSITIVE] is True
    assert private[Attribute.EXTRACTABLE] is False
    point = provider.session.get_key(
        object_class=ObjectClass.PUBLIC_KEY, key_type=KeyType.EC, label=SIGNING_LABEL
    )[Attribute.EC_POINT]
    return ec.EllipticCurvePublicKey.from_encoded_point(ec.SECP256R1(), bytes(point)[2:])


def kid_of(message: bytes) -> bytes:
    """The kid in a COSE_Sign1's protected header."""
    protected = cbor2.loads(cbor2.loads(message).value[0])
    kid = protected[4]
    assert isinstance(kid, bytes)
    return kid


async def _csr_and_certificates(
    hub: FreshHub, pki: DevPki, in_token: Pkcs11KeyProvider
) -> tuple[Path, Path, ec.EllipticCurvePublicKey]:
    """Steps 1-3 on the fresh hub (both keys, both requests), then the depot's CA issues a
    certificate for each request."""
    run = await provision(["csr", "--config", str(hub.config), "--json"])
    assert run.code == 0, run.err
    assert run.results() == {"identity": "unchanged", "key": "created", "csr": "written"}
    assert stat.S_IMODE(hub.key.stat().st_mode) == 0o600
    signing_key = token_key(in_token)
    detail = run.json["steps"][1]["detail"]
    assert f"kid {cose.key_id(signing_key).hex()}" in detail
    assert f"kid {cose.key_id(hub_public_key(hub)).hex()}" in detail

    # Two requests, CN = the hub id: the TLS one for the key file, the signing one for the
    # token's key, signed in the token and saying what it is for.
    tls_csr = x509.load_pem_x509_csr(hub.csr.read_bytes())
    signing_csr = x509.load_pem_x509_csr(hub.signing_csr.read_bytes())
    assert tls_csr.public_key() == hub_public_key(hub)
    assert signing_csr.public_key() == signing_key
    assert signing_csr.is_signature_valid
    assert signing_csr.signature_algorithm_oid == x509.SignatureAlgorithmOID.ECDSA_WITH_SHA256
    for request in (tls_csr, signing_csr):
        assert request.subject.rfc4514_string() == f"CN={pki.hub_id}"
    usage = signing_csr.extensions.get_extension_for_class(x509.KeyUsage)
    assert (usage.value, usage.critical) == (SIGNING_KEY_USAGE, True)
    assert not tls_csr.extensions

    tls_cert = issue(pki, hub.csr, hub.root / "issued.pem")
    signing_cert = issue_signing(pki, hub.signing_csr, hub.root / "issued-signing.pem")
    return tls_cert, signing_cert, signing_key


def _apply_args(
    hub: FreshHub, pki: DevPki, broker: Broker, cert: Path, signing_cert: Path
) -> list[str]:
    return [
        "apply",
        "--config",
        str(hub.config),
        "--cert",
        str(cert),
        "--signing-cert",
        str(signing_cert),
        "--ca",
        str(pki.ca_cert),
        "--platform-cert",
        str(pki.platform_cert),
        "--host",
        "127.0.0.1",
        "--port",
        str(broker.port),
        "--patient-file",
        str(hub.patient_file),
        "--timeout-s",
        "10",
        "--json",
    ]


def _files(hub: FreshHub) -> Sequence[Path]:
    return (hub.config, hub.key, hub.cert, hub.signing_cert, hub.ca, hub.csr, hub.signing_csr)


async def test_a_pkcs11_hub_from_arguments_end_to_end_then_again_changes_nothing(
    hub: FreshHub,
    dev_pki: DevPki,
    broker: Broker,
    console: PlatformConsole,
    in_token: Pkcs11KeyProvider,
) -> None:
    cert, signing_cert, signing_key = await _csr_and_certificates(hub, dev_pki, in_token)
    console.learn_hub_key(dev_pki.hub_id, signing_key)  # the platform holds the signing cert

    run = await provision(_apply_args(hub, dev_pki, broker, cert, signing_cert))

    assert run.code == 0, run.err
    assert run.results() == {
        "identity": "unchanged",
        "key": "kept",
        "csr": "kept",
        "certificate": "imported",
        "platform": "set",
        "patient": "bound",
        "configuration": "written",
        "handshake": "checked",
        "check": "checked",
    }
    cfg = tomllib.loads(hub.config.read_text())
    assert cfg["signing"]["cert_file"] == str(hub.signing_cert)
    assert cfg["keys"]["provider"] == "pkcs11"
    assert cfg["patient"]["id"] == phi_canaries.PATIENT_ID
    assert hub.signing_cert.read_bytes() == signing_cert.read_bytes()
    assert hub.cert.read_bytes() == cert.read_bytes()
    # The check was signed by the token's key (the console knows no other key of this hub),
    # confirmed, and the hub's reply to the confirmation verified too.
    assert console.confirmed_checks == 1
    async with asyncio.timeout(T):
        event = await console.wait_for(
            lambda m: m.kind == "events" and m.body["event"] == "provisioning_check"
        )
        reply = await console.wait_for(
            lambda m: m.kind == "replies" and m.body["op"] == "confirm_provisioning"
        )
    assert kid_of(event.raw) == cose.key_id(signing_key)
    assert reply.body["ok"] is True

    before = file_state(*_files(hub))
    again = await provision(_apply_args(hub, dev_pki, broker, cert, signing_cert))
    assert again.code == 0, again.err
    assert set(again.results().values()) <= UNCHANGED
    assert again.json["changed"] is False
    assert file_state(*_files(hub)) == before
    assert token_key(in_token) == signing_key  # the token's key was kept
    assert console.confirmed_checks == 2


async def test_a_pkcs11_hub_from_a_bundle_then_again_changes_nothing_then_it_runs(
    tmp_path: Path,
    hub: FreshHub,
    dev_pki: DevPki,
    broker: Broker,
    receiver: Receiver,
    console: PlatformConsole,
    in_token: Pkcs11KeyProvider,
) -> None:
    """Provisioned from the depot's bundle; a second run changes nothing; then ``homehub
    run`` on what provisioning wrote stores a reading signed by the token's key, which the
    reference receiver (told the signing certificate, as the platform is when its CA issues
    one) verifies and receipts, and the hub deletes."""
    cert, signing_cert, signing_key = await _csr_and_certificates(hub, dev_pki, in_token)
    console.learn_hub_key(dev_pki.hub_id, signing_key)
    await receiver.add_hub_certificate(
        dev_pki.hub_id, x509.load_pem_x509_certificate(signing_cert.read_bytes())
    )
    bundle = write_bundle(
        tmp_path / "hub-0001.toml",
        dev_pki,
        port=broker.port,
        certificate=cert,
        signing_certificate=signing_cert,
    )

    run = await provision(["bundle", str(bundle), "--config", str(hub.config), "--json"])

    assert run.code == 0, run.err
    assert run.results()["certificate"] == "imported"
    assert run.results()["check"] == "checked"
    assert run.json["complete"] is True
    before = file_state(*_files(hub))
    again = await provision(["bundle", str(bundle), "--config", str(hub.config)])
    assert again.code == 0, again.err
    assert "provisioned: nothing changed" in again.out
    assert file_state(*_files(hub)) == before
    assert token_key(in_token) == signing_key

    observer = _Observer()
    async with running_hub(hub.config, observer=observer) as daemon:
        async with asyncio.timeout(T * 3):
            await console.wait_for(lambda m: m.kind == "status" and m.body["state"] == "online")
            await daemon.receive(raw_measurement(1), DEVICE, DEVICE_CONFIG)
            reading = await receiver.readings.get()
            await observer.until_deleted(1)  # the platform's receipt deleted it
    assert reading.hub_id == dev_pki.hub_id
    assert reading.kid == cose.key_id(signing_key)
    assert receiver.stats.receipts_sent >= 1
    assert daemon.security_events == 0
    keyhub.plant_hub_secrets(keyhub.Hub(hub.root, hub.config, daemon.cfg, None), provider=in_token)


class _Observer:
    """The daemon's observer: which seqs it deleted on a receipt."""

    def __init__(self) -> None:
        self.deleted: list[int] = []
        self._change = asyncio.Event()

    def stored(self, arrival: Any, fate: Any) -> None:
        del arrival, fate

    def delivered(self, seqs: Sequence[int]) -> None:
        self.deleted.extend(seqs)
        event, self._change = self._change, asyncio.Event()
        event.set()

    async def until_deleted(self, count: int) -> None:
        while len(self.deleted) < count:
            await self._change.wait()


async def test_a_signing_certificate_for_another_key_is_refused_at_step_4(
    hub: FreshHub, dev_pki: DevPki, in_token: Pkcs11KeyProvider
) -> None:
    """The depot's likely slip: the signing certificate issued for the TLS request."""
    cert, _, _ = await _csr_and_certificates(hub, dev_pki, in_token)
    wrong = issue(dev_pki, hub.csr, hub.root / "wrong-signing.pem")
    before = file_state(hub.config)

    run = await provision(
        [
            "apply",
            "--config",
            str(hub.config),
            "--cert",
            str(cert),
            "--signing-cert",
            str(wrong),
            "--ca",
            str(dev_pki.ca_cert),
            "--json",
        ]
    )

    assert run.code == 2
    failed = run.json["failed"]
    assert failed["step"] == 4
    assert failed["reason"] == "the signing certificate's key is not the token's signing key"
    assert "hub-0001-signing.csr" in failed["fix"]
    assert run.err.startswith("homehub: provision: step 4 (import certificate): ")
    assert run.err.count("\n") == 1
    # Nothing of step 4 was written: not the TLS certificate, not the chain.
    assert not hub.cert.exists()
    assert not hub.signing_cert.exists()
    assert not hub.ca.exists()
    assert file_state(hub.config) == before


async def test_a_bundle_without_the_signing_certificate_is_refused_naming_the_field(
    tmp_path: Path, hub: FreshHub, dev_pki: DevPki, in_token: Pkcs11KeyProvider
) -> None:
    cert, _, _ = await _csr_and_certificates(hub, dev_pki, in_token)
    bundle = write_bundle(tmp_path / "b.toml", dev_pki, port=8883, certificate=cert)

    run = await provision(["bundle", str(bundle), "--config", str(hub.config), "--json"])

    assert run.code == 2
    failed = run.json["failed"]
    assert failed["step"] == 4
    assert "signing certificate (bundle pem.signing_certificate) is missing" in failed["reason"]
    assert "bundle pem.signing_certificate" in failed["fix"]
    assert not hub.cert.exists()


async def test_rotate_key_replaces_the_token_key_and_both_requests(
    hub: FreshHub, in_token: Pkcs11KeyProvider
) -> None:
    first = await provision(["csr", "--config", str(hub.config), "--json"])
    assert first.code == 0, first.err
    key = token_key(in_token)
    requests = file_state(hub.csr, hub.signing_csr)

    rotated = await provision(["csr", "--config", str(hub.config), "--rotate-key", "--json"])

    assert rotated.code == 0, rotated.err
    assert rotated.results() == {"identity": "unchanged", "key": "rotated", "csr": "written"}
    new = token_key(in_token)
    assert new != key
    assert x509.load_pem_x509_csr(hub.signing_csr.read_bytes()).public_key() == new
    assert file_state(hub.csr, hub.signing_csr) != requests


async def test_a_signing_certificate_for_a_hub_whose_tls_key_signs_is_refused(
    tmp_path: Path, dev_pki: DevPki
) -> None:
    """A file hub has one key and one certificate: a second certificate is a mistake."""
    hub = fresh_hub(tmp_path)
    run = await provision(["csr", "--config", str(hub.config)])
    assert run.code == 0, run.err
    cert = issue(dev_pki, hub.csr, hub.root / "issued.pem")

    run = await provision(
        ["apply", "--config", str(hub.config), "--cert", str(cert), "--signing-cert", str(cert),
         "--ca", str(dev_pki.ca_cert), "--no-check", "--json"]
    )  # fmt: skip

    assert run.code == 2
    assert run.json["failed"]["step"] == 4
    assert "this hub signs with its TLS key" in run.json["failed"]["reason"]
    assert "leave out --signing-cert" in run.json["failed"]["fix"]
    assert not hub.cert.exists()


def test_a_signing_request_the_token_signed_with_another_key_is_refused() -> None:
    """The request is verified before it is written: a token whose signature does not match
    the public key it reports gives no request."""
    reported = ec.generate_private_key(ec.SECP256R1()).public_key()
    other = ec.generate_private_key(ec.SECP256R1())
    with pytest.raises(KeyMaterialError, match="does not verify"):
        signing_csr(reported, "hub-0001", lambda message: cose.es256_sign(other, message))


def test_the_signing_certificate_file_is_not_the_client_certificate(tmp_path: Path) -> None:
    hub = fresh_hub(tmp_path)
    text = hub.config.read_text().replace("[signing]\n", f'[signing]\ncert_file = "{hub.cert}"\n')
    hub.config.write_text(text)
    with pytest.raises(ConfigError) as caught:
        config.load(hub.config)
    assert caught.value.key == "signing.cert_file"
    assert "[mqtt] cert_file" in caught.value.reason


async def test_a_bundle_without_certificates_stops_pending_naming_both_requests(
    tmp_path: Path, hub: FreshHub, dev_pki: DevPki
) -> None:
    bundle = write_bundle(tmp_path / "b.toml", dev_pki, port=8883, certificate=None)

    run = await provision(["bundle", str(bundle), "--config", str(hub.config), "--json"])

    assert run.code == 0, run.err
    results = run.results()
    assert (results["key"], results["csr"]) == ("created", "written")
    assert results["certificate"] == "pending"
    assert results["handshake"] == results["check"] == "skipped"
    detail = run.json["steps"][3]["detail"]
    assert f"--cert once the CA issued one for {hub.csr}" in detail
    assert f"--signing-cert once the CA issued one for {hub.signing_csr}" in detail
    assert "cert_file" not in tomllib.loads(hub.config.read_text())["signing"]


async def test_a_platform_holding_only_the_tls_certificate_does_not_confirm(
    hub: FreshHub,
    dev_pki: DevPki,
    broker: Broker,
    console: PlatformConsole,
    in_token: Pkcs11KeyProvider,
) -> None:
    """The check is signed by the token: a platform told the client certificate alone cannot
    verify it, and step 9 says which certificate it lacks."""
    cert, signing_cert, _ = await _csr_and_certificates(hub, dev_pki, in_token)
    console.learn_hub_key(dev_pki.hub_id, hub_public_key(hub))  # the TLS key only
    args = _apply_args(hub, dev_pki, broker, cert, signing_cert)
    args[args.index("--timeout-s") + 1] = "1"

    run = await provision(args)

    assert run.code == 1
    failed = run.json["failed"]
    assert failed["step"] == 9
    assert "must know this hub's signing certificate" in failed["fix"]
    assert console.confirmed_checks == 0
    assert console.unverified >= 1
