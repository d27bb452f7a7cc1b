"""A throw-away public key infrastructure for one test or demo run.

One P-256 CA issues three kinds of leaf certificate:

- the broker's server certificate (subjectAltName ``127.0.0.1`` and ``localhost``, serverAuth);
- one client certificate per hub (CN = hub id, clientAuth). The hub's one key pair both
  authenticates the TLS connection and signs the COSE_Sign1 envelopes, so the receiver finds
  the signature key in the same certificate (matched by kid, agent/cose.py);
- the platform receiver's client certificate (CN = ``platform-receiver``);
- the platform's signing certificate (CN = ``platform-signing``, digitalSignature, no extended
  key usage for TLS): the key that signs receipts and commands (docs/platform-protocol.md),
  whose certificate a hub is configured with (``[platform] cert_file``). It is a key of its
  own, not the receiver's TLS key: a platform keeps its signing key apart from any one
  connection's credentials.

Everything is written to one directory (mode 0700) as PEM; private keys are 0600 and owned by
whoever ran :func:`make_dev_pki`. When mosquitto is started as root it drops privileges to the
``mosquitto`` user and only then loads its key, so that user must be able to read it: this
module does not loosen anything for that. hil/broker.py copies the broker's key into a
directory it owns and chowns *that copy* to the broker's user (see ``Broker``), because the
directories a test runner hands out (``/tmp/pytest-of-root/...``, mode 0700) cannot be
traversed by another user whatever the key file's own mode.

Never use any of this outside a test: the CA key sits next to the certificates it signs.
"""

from __future__ import annotations

import datetime as dt
import ipaddress
import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Final

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

RECEIVER_CN: Final = "platform-receiver"
"""CN of the platform receiver's certificate; the broker ACL grants it read access."""

PLATFORM_SIGNING_CN: Final = "platform-signing"
"""CN of the platform signing certificate (never a client of the broker)."""

HUB_ID_RE: Final = re.compile(r"^[a-z0-9][a-z0-9-]{0,62}$")
"""Same allowlist as agent/config.py: a CN becomes a topic level through the broker ACL."""

VALIDITY: Final = dt.timedelta(days=30)
"""Long enough for a soak run; short enough that a leaked dev key soon stops mattering."""

BACKDATE: Final = dt.timedelta(hours=1)
"""notBefore is an hour in the past so that a peer whose clock is slightly behind accepts it."""


@dataclass(frozen=True, slots=True)
class DevPki:
    """Paths of one run's PKI (all PEM). ``hub_key`` is both TLS client key and signing key."""

    dir: Path
    hub_id: str
    ca_cert: Path
    ca_key: Path
    server_cert: Path
    server_key: Path
    hub_cert: Path
    hub_key: Path
    receiver_cert: Path
    receiver_key: Path
    platform_cert: Path
    """The platform signing certificate: what a hub's ``[platform] cert_file`` names."""
    platform_key: Path
    """The platform signing key (hil/platform_signing.py, ``--platform-key``)."""

    def issue_client(self, cn: str) -> tuple[Path, Path]:
        """Issue another client certificate (e.g. a second hub) from this CA: (cert, key)."""
        _check_cn(cn)
        ca_key = serialization.load_pem_private_key(self.ca_key.read_bytes(), password=None)
        if not isinstance(ca_key, ec.EllipticCurvePrivateKey):
            raise TypeError("CA key is not an EC key")
        ca_cert = x509.load_pem_x509_certificate(self.ca_cert.read_bytes())
        return _issue_client(self.dir, cn, ca_cert, ca_key)

    def issue_server(
        self,
        name: str,
        hosts: tuple[str, ...] = ("localhost", "127.0.0.1"),
        *,
        expired: bool = False,
    ) -> tuple[Path, Path]:
        """Issue another broker certificate from this CA, for TLS negative tests: for ``hosts``
        (DNS names or IP addresses), or one that expired a day ago. Written as
        ``server-<name>.crt``/``.key``; (cert, key)."""
        _check_cn(name)
        ca_key = serialization.load_pem_private_key(self.ca_key.read_bytes(), password=None)
        if not isinstance(ca_key, ec.EllipticCurvePrivateKey):
            raise TypeError("CA key is not an EC key")
        ca_cert = x509.load_pem_x509_certificate(self.ca_cert.read_bytes())
        key = ec.generate_private_key(ec.SECP256R1())
        names: list[x509.GeneralName] = []
        for host in hosts:
            try:
                names.append(x509.IPAddress(ipaddress.ip_address(host)))
            except ValueError:
                names.append(x509.DNSName(host))
        valid = (
            (dt.datetime.now(dt.UTC) - dt.timedelta(days=2), dt.timedelta(days=1))
            if expired
            else None
        )
        cert = _leaf(
            ca_cert,
            ca_key,
            key,
            hosts[0],
            ExtendedKeyUsageOID.SERVER_AUTH,
            san=x509.SubjectAlternativeName(names),
            valid=valid,
        )
        return (
            _write_cert(self.dir / f"server-{name}.crt", cert),
            _write_key(self.dir / f"server-{name}.key", key),
        )


def make_dev_pki(directory: Path, hub_id: str) -> DevPki:
    """Create a CA, the broker's server certificate, a hub and the receiver in ``directory``."""
    _check_cn(hub_id)
    if hub_id in (RECEIVER_CN, PLATFORM_SIGNING_CN):
        raise ValueError(f"{hub_id!r} is the platform's identity, not a hub id")
    directory.mkdir(mode=0o700, parents=True, exist_ok=True)
    os.chmod(directory, 0o700)
    now = dt.datetime.now(dt.UTC)

    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "homehub dev CA")])
    ca_ski = x509.SubjectKeyIdentifier.from_public_key(ca_key.public_key())
    ca_cert = (
        x509.CertificateBuilder()
        .subject_name(ca_name)
        .issuer_name(ca_name)
        .public_key(ca_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - BACKDATE)
        .not_valid_after(now + VALIDITY)
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=False,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=True,
                crl_sign=True,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(ca_ski, critical=False)
        .sign(ca_key, hashes.SHA256())
    )
    ca_cert_path = _write_cert(directory / "ca.crt", ca_cert)
    ca_key_path = _write_key(directory / "ca.key", ca_key)

    server_key = ec.generate_private_key(ec.SECP256R1())
    server_cert = _leaf(
        ca_cert,
        ca_key,
        server_key,
        "localhost",
        ExtendedKeyUsageOID.SERVER_AUTH,
        san=x509.SubjectAlternativeName(
            [x509.DNSName("localhost"), x509.IPAddress(ipaddress.IPv4Address("127.0.0.1"))]
        ),
    )
    server_cert_path = _write_cert(directory / "server.crt", server_cert)
    server_key_path = _write_key(directory / "server.key", server_key)

    hub_cert_path, hub_key_path = _issue_client(directory, hub_id, ca_cert, ca_key)
    receiver_cert_path, receiver_key_path = _issue_client(directory, RECEIVER_CN, ca_cert, ca_key)
    platform_key = ec.generate_private_key(ec.SECP256R1())
    platform_cert = _leaf(ca_cert, ca_key, platform_key, PLATFORM_SIGNING_CN, None, san=None)
    platform_cert_path = _write_cert(directory / "platform.crt", platform_cert)
    platform_key_path = _write_key(directory / "platform.key", platform_key)
    return DevPki(
        dir=directory,
        hub_id=hub_id,
        ca_cert=ca_cert_path,
        ca_key=ca_key_path,
        server_cert=server_cert_path,
        server_key=server_key_path,
        hub_cert=hub_cert_path,
        hub_key=hub_key_path,
        receiver_cert=receiver_cert_path,
        receiver_key=receiver_key_path,
        platform_cert=platform_cert_path,
        platform_key=platform_key_path,
    )


def _check_cn(cn: str) -> None:
    if not HUB_ID_RE.fullmatch(cn):
        raise ValueError("a client CN must match ^[a-z0-9][a-z0-9-]{0,62}$")


def _issue_client(
    directory: Path, cn: str, ca_cert: x509.Certificate, ca_key: ec.EllipticCurvePrivateKey
) -> tuple[Path, Path]:
    key = ec.generate_private_key(ec.SECP256R1())
    cert = _leaf(ca_cert, ca_key, key, cn, ExtendedKeyUsageOID.CLIENT_AUTH, san=None)
    return _write_cert(directory / f"{cn}.crt", cert), _write_key(directory / f"{cn}.key", key)


def _leaf(
    ca_cert: x509.Certificate,
    ca_key: ec.EllipticCurvePrivateKey,
    key: ec.EllipticCurvePrivateKey,
    cn: str,
    usage: x509.ObjectIdentifier | None,
    san: x509.SubjectAlternativeName | None,
    valid: tuple[dt.datetime, dt.timedelta] | None = None,
) -> x509.Certificate:
    """``valid``: (notBefore, lifetime) instead of now - BACKDATE and VALIDITY."""
    now = dt.datetime.now(dt.UTC)
    not_before, lifetime = valid if valid is not None else (now - BACKDATE, VALIDITY + BACKDATE)
    builder = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn)]))
        .issuer_name(ca_cert.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(not_before)
        .not_valid_after(not_before + lifetime)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=False,
                crl_sign=False,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()),
            critical=False,
        )
    )
    if usage is not None:
        builder = builder.add_extension(x509.ExtendedKeyUsage([usage]), critical=False)
    if san is not None:
        builder = builder.add_extension(san, critical=False)
    return builder.sign(ca_key, hashes.SHA256())


def _write_cert(path: Path, cert: x509.Certificate) -> Path:
    path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    os.chmod(path, 0o644)
    return path


def _write_key(path: Path, key: ec.EllipticCurvePrivateKey) -> Path:
    """Write a PKCS#8 PEM key created 0600 from the start (never briefly world-readable)."""
    pem = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW, 0o600)
    with os.fdopen(fd, "wb") as f:
        os.fchmod(f.fileno(), 0o600)
        f.write(pem)
    return path
