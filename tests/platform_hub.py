"""Scaffolding of the platform-link tests: the daemon (:class:`agent.daemon.Hub`) configured
for a platform (``[platform] cert_file``, ``ack = "receipt"``) against the test's mosquitto,
with its own copies of the client certificate and key (a rotation replaces them) and a
separate signing key (the reference receiver keeps verifying with the PKI's hub certificate),
and a dev CA issuing a certificate for a CSR."""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import os
import shutil
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any, Final

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID

from agent import config
from agent.daemon import Hub
from hil.pki import DevPki
from tests import phi_canaries

HUB_TIMEOUT_S: Final = 30.0


def write_hub_config(
    tmp_path: Path, pki: DevPki, port: int, *, receipt_timeout_s: float = 60.0, **mqtt: Any
) -> Path:
    """The hub's TOML (a file: ``set_config`` edits it) and its private key copies."""
    keys = tmp_path / "keys"
    state = tmp_path / "state"
    for directory in (keys, state):
        directory.mkdir(mode=0o700, parents=True, exist_ok=True)
    cert = keys / "client.crt"
    key = keys / "client.key"
    signing = keys / "signing.key"
    shutil.copyfile(pki.hub_cert, cert)
    for source, target in ((pki.hub_key, key), (pki.hub_key, signing)):
        shutil.copyfile(source, target)
        os.chmod(target, 0o600)
    extra = "".join(f"{name} = {value!r}\n".replace("'", '"') for name, value in mqtt.items())
    text = f"""\
[hub]
id = "{pki.hub_id}"
timezone = "UTC"
state_dir = "{state}"

[patient]
id = "{phi_canaries.PATIENT_ID}"

[outbox]
path = "{state / "outbox.db"}"
key_file = "{keys / "data.key"}"

[signing]
key_file = "{signing}"

[mqtt]
host = "127.0.0.1"
port = {port}
ca_file = "{pki.ca_cert}"
cert_file = "{cert}"
key_file = "{key}"
backoff_max_s = 1.0
first_connect_jitter_s = 0.0
ack = "receipt"
receipt_timeout_s = {receipt_timeout_s}
{extra}
[platform]
cert_file = "{pki.platform_cert}"
"""
    path = tmp_path / "homehub.toml"
    path.write_text(text)
    return path


@contextlib.asynccontextmanager
async def running_hub(config_path: Path, **options: Any) -> AsyncIterator[Hub]:
    """``homehub run`` in this process (no BLE: readings through :meth:`Hub.receive`)."""
    hub = Hub(config.load(config_path), collect=False, **options)
    stop = asyncio.Event()
    run = asyncio.create_task(hub.run(stop), name="test.hub")
    try:
        ready = asyncio.create_task(hub.ready.wait())
        async with asyncio.timeout(HUB_TIMEOUT_S):
            await asyncio.wait({run, ready}, return_when=asyncio.FIRST_COMPLETED)
        ready.cancel()
        if run.done():
            run.result()  # raises what stopped it
        yield hub
    finally:
        stop.set()
        async with asyncio.timeout(HUB_TIMEOUT_S):
            await run


def issue_for_csr(
    pki: DevPki,
    csr_der: bytes,
    *,
    days: int = 30,
    valid: tuple[dt.datetime, dt.datetime] | None = None,
    usage: x509.Extension[x509.ExtensionType] | None = None,
) -> bytes:
    """What a platform's CA does with the hub's CSR: a certificate (DER) for its key and
    subject, issued by ``pki``'s CA: a client certificate valid for ``days`` from now, or
    over ``valid`` (not before, not after); ``usage``: that extension in place of
    clientAuth (a token key's signing certificate asks for keyUsage)."""
    csr = x509.load_der_x509_csr(csr_der)
    assert csr.is_signature_valid
    ca_key = serialization.load_pem_private_key(pki.ca_key.read_bytes(), password=None)
    assert isinstance(ca_key, ec.EllipticCurvePrivateKey)
    ca_cert = x509.load_pem_x509_certificate(pki.ca_cert.read_bytes())
    now = dt.datetime.now(dt.UTC)
    not_before, not_after = valid or (now - dt.timedelta(minutes=5), now + dt.timedelta(days=days))
    builder = (
        x509.CertificateBuilder()
        .subject_name(csr.subject)
        .issuer_name(ca_cert.subject)
        .public_key(csr.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(not_before)
        .not_valid_after(not_after)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
    )
    if usage is None:
        extended = x509.ExtendedKeyUsage([ExtendedKeyUsageOID.CLIENT_AUTH])
        builder = builder.add_extension(extended, critical=False)
    else:
        builder = builder.add_extension(usage.value, critical=usage.critical)
    return builder.sign(ca_key, hashes.SHA256()).public_bytes(serialization.Encoding.DER)
