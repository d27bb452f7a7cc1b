"""Scaffolding of the ``homehub provision`` tests: a fresh hub (a configuration as a hub image
ships it: placeholders, no key, no certificate; its signing key in a SoftHSM2 token when
given one), the depot's CA issuing for its CSRs, bundle files, and the CLI run as its own
process while the test's loop runs the reference platform's console."""

from __future__ import annotations

import asyncio
import datetime as dt
import json
import os
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final

from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

from hil.pki import DevPki
from tests import phi_canaries
from tests.keyhub import SOFTHSM_MODULE, Token
from tests.platform_hub import issue_for_csr

CLI_TIMEOUT_S: Final = 60.0
"""Bound on one CLI run (the check's own waits are shorter)."""


@dataclass(frozen=True, slots=True)
class FreshHub:
    """A hub as it leaves the image: where its files will be."""

    root: Path
    config: Path
    key: Path
    cert: Path
    ca: Path
    patient_file: Path

    @property
    def csr(self) -> Path:
        return self.cert.with_name("hub-0001.csr")

    @property
    def signing_csr(self) -> Path:
        """A PKCS#11 hub's second request: its token signing key's."""
        return self.cert.with_name("hub-0001-signing.csr")

    @property
    def signing_cert(self) -> Path:
        """Where provisioning installs a PKCS#11 hub's signing certificate by default."""
        return self.cert.with_name("signing.pem")


def fresh_hub(tmp_path: Path, hub_id: str = "hub-0001", *, token: Token | None = None) -> FreshHub:
    """A configuration with placeholders (host, patient), no key and no certificate yet, and
    the patient reference (the suite's canary) in a file for ``--patient-file``. With
    ``token``: ``[keys] provider = "pkcs11"`` on that SoftHSM2 token (no key in it yet)."""
    root = tmp_path / "hub"
    state = root / "state"
    state.mkdir(parents=True, mode=0o700)
    keys, tls = root / "keys", root / "tls"
    text = f"""\
# The hub's configuration as the image ships it (comments are kept by provisioning).
[hub]
id = "{hub_id}"
timezone = "UTC"
state_dir = "{state}"

[patient]
id = "unassigned"                 # set by homehub provision

[outbox]
path = "{state / "outbox.db"}"
key_file = "{keys / "data.key"}"

[signing]
key_file = "{keys / "hub.key"}"

[mqtt]
host = "platform.invalid"         # set by homehub provision
port = 8883
ca_file = "{tls / "ca.pem"}"
cert_file = "{tls / "hub.pem"}"
key_file = "{keys / "hub.key"}"
backoff_max_s = 1.0
first_connect_jitter_s = 0.0
"""
    if token is not None:
        text += f"""
[keys]
provider = "pkcs11"
pkcs11_module = "{SOFTHSM_MODULE}"
pkcs11_token = "{token.label}"
pkcs11_pin_file = "{token.pin_file}"
"""
    config = root / "homehub.toml"
    config.write_text(text)
    patient_file = root / "patient.txt"
    patient_file.write_text(phi_canaries.PATIENT_ID + "\n")
    return FreshHub(root, config, keys / "hub.key", tls / "hub.pem", tls / "ca.pem", patient_file)


def hub_public_key(hub: FreshHub) -> ec.EllipticCurvePublicKey:
    """The public half of the key provisioning made; its private half becomes a canary (its
    scalar and each PEM line), so the suite's scan proves it was never printed or logged."""
    pem = hub.key.read_bytes()
    key = serialization.load_pem_private_key(pem, password=None)
    assert isinstance(key, ec.EllipticCurvePrivateKey)
    name = f"provisioned key {hub.key}"
    phi_canaries.plant(f"{name} scalar", f"{key.private_numbers().private_value:064x}")
    for i, line in enumerate(pem.decode().splitlines()):
        if len(line) >= 40 and not line.startswith("-----"):
            phi_canaries.plant(f"{name} PEM line {i}", line)
    return key.public_key()


def issue(pki: DevPki, csr_path: Path, target: Path, *, expired: bool = False) -> Path:
    """The depot's CA issues a certificate for the CSR file (an expired one on request)."""
    csr_der = x509.load_pem_x509_csr(csr_path.read_bytes()).public_bytes(serialization.Encoding.DER)
    der = _expired_for_csr(pki, csr_der) if expired else issue_for_csr(pki, csr_der)
    target.write_bytes(x509.load_der_x509_certificate(der).public_bytes(serialization.Encoding.PEM))
    return target


def issue_signing(pki: DevPki, csr_path: Path, target: Path) -> Path:
    """The depot's CA issues a signing certificate for a token key's request: the CSR's
    subject and requested keyUsage, no clientAuth (it never authenticates a TLS link)."""
    csr = x509.load_pem_x509_csr(csr_path.read_bytes())
    usage = csr.extensions.get_extension_for_class(x509.KeyUsage)
    der = issue_for_csr(pki, csr.public_bytes(serialization.Encoding.DER), usage=usage)
    target.write_bytes(x509.load_der_x509_certificate(der).public_bytes(serialization.Encoding.PEM))
    return target


def _expired_for_csr(pki: DevPki, csr_der: bytes) -> bytes:
    now = dt.datetime.now(dt.UTC)
    return issue_for_csr(
        pki, csr_der, valid=(now - dt.timedelta(days=40), now - dt.timedelta(days=10))
    )


def write_bundle(
    path: Path,
    pki: DevPki,
    *,
    port: int,
    certificate: Path | None,
    signing_certificate: Path | None = None,
    patient: bool = True,
    extra: str = "",
    version: int = 1,
) -> Path:
    """A depot's bundle for ``pki``'s hub (the format of agent/provisioning/bundle.py)."""

    def pem(p: Path) -> str:
        return '"""\n' + p.read_text() + '"""'

    lines = [
        'format = "homehub-provisioning"',
        f"version = {version}",
        f'hub_id = "{pki.hub_id}"',
    ]
    if patient:
        lines.append(f'patient_id = "{phi_canaries.PATIENT_ID}"')
    lines += [
        extra,
        "[endpoint]",
        'host = "127.0.0.1"',
        f"port = {port}",
        'profile = "mqtt"',
        "[pem]",
        f"ca_chain = {pem(pki.ca_cert)}",
        f"platform_certificate = {pem(pki.platform_cert)}",
    ]
    if certificate is not None:
        lines.append(f"certificate = {pem(certificate)}")
    if signing_certificate is not None:
        lines.append(f"signing_certificate = {pem(signing_certificate)}")
    path.write_text("\n".join(lines) + "\n")
    return path


@dataclass(frozen=True, slots=True)
class Run:
    """One ``homehub provision`` run: exit code, stdout, stderr, and the JSON when asked."""

    code: int
    out: str
    err: str

    @property
    def json(self) -> dict[str, Any]:
        body = json.loads(self.out)
        assert isinstance(body, dict)
        return body

    def results(self) -> dict[str, str]:
        """Step name -> result."""
        return {step["name"]: step["result"] for step in self.json["steps"]}


async def provision(argv: Sequence[str]) -> Run:
    """``homehub provision ARGV`` as the technician runs it: its own process (its own event
    loop and logging). Its output is echoed into the test's (so the suite's PHI scan reads
    it) after asserting the patient reference appears in neither stream."""
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "agent",
        "provision",
        *argv,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
        stdin=asyncio.subprocess.DEVNULL,
    )
    try:
        async with asyncio.timeout(CLI_TIMEOUT_S):
            out_bytes, err_bytes = await proc.communicate()
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()
    out, err = out_bytes.decode(), err_bytes.decode()
    for text in (out, err):
        assert phi_canaries.PATIENT_ID not in text
    sys.stdout.write(out)
    sys.stderr.write(err)
    assert proc.returncode is not None
    return Run(proc.returncode, out, err)


def file_state(*paths: Path) -> dict[str, tuple[bytes, int]]:
    """Content and mode of each file: what a second run must leave as it was."""
    return {str(p): (p.read_bytes(), os.stat(p).st_mode) for p in paths}
