"""The hub's identity on disk: its key, its certificate request, its certificate and the CA
chain it trusts.

The key is an ECDSA P-256 key in PEM, mode 0600, written atomically
(:func:`agent.cert_rotation.write_private_file`), and kept once it exists: a hub's key is its
identity, replaced only when the technician asks (``--rotate-key``). The certificate request
(CN = hub id) is public and goes to the depot's CA. The certificate is installed only when it
is for this key and this hub id, issued by a CA of the given chain and valid now; the reasons
it is refused are :class:`CertificateRefusedError`'s checks, each with its fix
(:data:`CERTIFICATE_FIXES`).

Every function returns what it did (:class:`~agent.provisioning.steps.Outcome`) and writes
nothing when nothing changes, so a second run reports ``kept`` and ``unchanged``.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Final

from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from agent import cert_rotation, cose
from agent.errors import CertificateRefusedError, KeyMaterialError
from agent.provisioning.steps import Outcome, ProvisionRefusedError, Step

MAX_PEM_FILE_BYTES: Final = 64 * 1024
"""A certificate, a chain or a CSR file: a few KB; anything larger is not one."""
PUBLIC_FILE_MODE: Final = 0o644
"""Certificates, chains and requests are public; the key alone is 0600."""

CERTIFICATE_FIXES: Final = {
    "not_a_certificate": (
        "is not a PEM X.509 certificate",
        "give the certificate file the depot's CA issued (PEM, -----BEGIN CERTIFICATE-----)",
    ),
    "public_key": (
        "the certificate's key is not the hub's key",
        "was the CSR from this hub? Run `homehub provision csr` again and have the CA issue"
        " a certificate for that request",
    ),
    "subject": (
        "the certificate's subject CN is not the hub id",
        "have the CA issue the certificate for this hub's CSR (its CN is the hub id)",
    ),
    "issuer": (
        "the certificate was not issued by a CA of the given chain",
        "give the CA chain of the CA that issued it (--ca, or pem.ca_chain in the bundle)",
    ),
    "validity": (
        "the certificate is not valid now (expired, or not yet valid)",
        "check the hub's clock (date -u); if it is right, have the CA issue a new certificate"
        " for the CSR",
    ),
}


@dataclass(frozen=True, slots=True)
class KeyResult:
    """The hub's key and what :func:`ensure_key` did."""

    key: ec.EllipticCurvePrivateKey
    outcome: Outcome


def ensure_key(path: Path, *, rotate: bool) -> KeyResult:
    """The hub key at ``path``: kept when it exists, created when it does not, replaced by a
    new one only with ``rotate``."""
    exists = path.exists() or path.is_symlink()
    if exists and not rotate:
        try:
            return KeyResult(cose.load_signing_key(path), Outcome.KEPT)
        except KeyMaterialError as exc:
            raise ProvisionRefusedError(
                Step.KEY,
                f"the hub key {path} cannot be used ({exc.reason})",
                "fix its mode (chmod 600) and owner; if it is damaged, run again with"
                " --rotate-key to make a new key (the certificate is then issued again)",
            ) from None
    key = ec.generate_private_key(ec.SECP256R1())
    pem = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    _make_parent(path, 0o700, Step.KEY)
    try:
        cert_rotation.write_private_file(path, pem, "hub key")
    except KeyMaterialError as exc:
        raise ProvisionRefusedError(
            Step.KEY, f"cannot write the hub key {path} ({exc.reason})", _writable_fix(path)
        ) from None
    return KeyResult(key, Outcome.ROTATED if exists else Outcome.CREATED)


def same_key(a: ec.EllipticCurvePublicKey, b: ec.EllipticCurvePublicKey) -> bool:
    """Whether two public keys are one key (their SubjectPublicKeyInfo)."""
    return _spki(a) == _spki(b)


def fingerprint(key: ec.EllipticCurvePublicKey) -> str:
    """A key's COSE kid in hex (the first 16 bytes of SHA-256 over its SPKI): public, and the
    name the platform's logs give the key."""
    return cose.key_id(key).hex()


def ensure_csr(key: ec.EllipticCurvePrivateKey, hub_id: str, path: Path) -> Outcome:
    """A PEM certificate request for ``key`` with CN ``hub_id`` at ``path``: kept when the
    file already holds one for this key and hub id, else written."""
    existing = _read_bounded(path, Step.CSR, "certificate request")
    if existing is not None:
        try:
            csr = x509.load_pem_x509_csr(existing)
            names = csr.subject.get_attributes_for_oid(NameOID.COMMON_NAME)
            public = csr.public_key()
            if (
                isinstance(public, ec.EllipticCurvePublicKey)
                and same_key(public, key.public_key())
                and [n.value for n in names] == [hub_id]
                and csr.is_signature_valid
            ):
                return Outcome.KEPT
        except ValueError:
            pass  # not a request: replaced below
    der = cert_rotation.make_csr(key, hub_id)
    pem = x509.load_der_x509_csr(der).public_bytes(serialization.Encoding.PEM)
    _write_public(path, pem, Step.CSR, "certificate request")
    return Outcome.WRITTEN


def load_certificates(data: bytes, what: str, step: Step) -> list[x509.Certificate]:
    """Every certificate of a PEM text (at least one), or a refusal naming ``what``."""
    try:
        certs = x509.load_pem_x509_certificates(data)
    except ValueError:
        certs = []
    if not certs:
        raise ProvisionRefusedError(
            step,
            f"{what} holds no PEM certificate",
            f"give {what} as PEM text (-----BEGIN CERTIFICATE-----)",
        )
    return certs


@dataclass(frozen=True, slots=True)
class Imported:
    """What :func:`import_certificate` did: the certificate's outcome and the chain's."""

    certificate: Outcome
    chain: Outcome
    expires: dt.datetime | None


def import_certificate(
    key: ec.EllipticCurvePrivateKey,
    hub_id: str,
    *,
    cert_pem: bytes | None,
    chain_pem: bytes | None,
    client_ca_pem: bytes | None,
    cert_path: Path,
    chain_path: Path,
    now: dt.datetime,
    names: Mapping[str, str],
) -> Imported:
    """Check the issued certificate and install it with the CA chain.

    With ``cert_pem``: its first certificate must be for ``key``, have CN ``hub_id``, be
    issued by a CA of the chain (``chain_pem``, else the installed chain; or of
    ``client_ca_pem``) and be valid at ``now``; then the certificate (followed by the
    intermediate CAs of the chain, for the TLS handshake) goes to ``cert_path`` and the chain
    to ``chain_path``, each only when its bytes change. Without it: the installed certificate
    is kept when it passes the same checks, else the step is ``pending`` (the CSR is with the
    CA). Refusals are :class:`ProvisionRefusedError` with the fix of
    :data:`CERTIFICATE_FIXES`.
    """
    chain: list[x509.Certificate] = []
    if chain_pem is not None:
        chain = load_certificates(
            chain_pem, f"the CA chain ({names['ca_chain']})", Step.CERTIFICATE
        )
        for ca in chain:
            _require_ca(ca)
    else:
        installed = _read_bounded(chain_path, Step.CERTIFICATE, "CA chain")
        if installed is not None:
            chain = load_certificates(installed, f"the CA chain {chain_path}", Step.CERTIFICATE)
    issuers = list(chain)
    if client_ca_pem is not None:
        issuers += load_certificates(
            client_ca_pem, f"the client CA ({names['client_ca']})", Step.CERTIFICATE
        )
    chain_outcome = Outcome.UNCHANGED
    if chain_pem is not None:
        chain_bytes = b"".join(c.public_bytes(serialization.Encoding.PEM) for c in chain)
        chain_outcome = _install(chain_path, chain_bytes, Step.CERTIFICATE, "CA chain")

    if cert_pem is None:
        current = _read_bounded(cert_path, Step.CERTIFICATE, "certificate")
        if current is None:
            return Imported(Outcome.PENDING, chain_outcome, None)
        what = f"the installed certificate {cert_path}"
        leaf = load_certificates(current, what, Step.CERTIFICATE)[0]
        try:
            _check(leaf, key, hub_id, issuers, now)
        except ProvisionRefusedError:
            return Imported(Outcome.PENDING, chain_outcome, leaf.not_valid_after_utc)
        return Imported(Outcome.KEPT, chain_outcome, leaf.not_valid_after_utc)

    leaf = load_certificates(
        cert_pem, f"the certificate ({names['certificate']})", Step.CERTIFICATE
    )[0]
    issuer = _check(leaf, key, hub_id, issuers, now)
    intermediates = _intermediates(issuer, issuers)
    data = b"".join(c.public_bytes(serialization.Encoding.PEM) for c in [leaf, *intermediates])
    outcome = _install(cert_path, data, Step.CERTIFICATE, "certificate")
    return Imported(
        Outcome.IMPORTED if outcome is Outcome.WRITTEN else Outcome.UNCHANGED,
        chain_outcome,
        leaf.not_valid_after_utc,
    )


def _check(
    leaf: x509.Certificate,
    key: ec.EllipticCurvePrivateKey,
    hub_id: str,
    issuers: list[x509.Certificate],
    now: dt.datetime,
) -> x509.Certificate | None:
    """The CA that issued ``leaf`` once every check passed (None when no chain is known and
    only key and subject could be checked)."""
    der = leaf.public_bytes(serialization.Encoding.DER)
    candidates = [ca for ca in issuers if ca.subject == leaf.issuer] or issuers[:1]
    try:
        if not candidates:
            cert_rotation.check_certificate(der, public_key=key.public_key(), hub_id=hub_id)
            raise CertificateRefusedError("issuer")
        last: CertificateRefusedError | None = None
        for ca in candidates:
            try:
                cert_rotation.check_certificate(
                    der, public_key=key.public_key(), hub_id=hub_id, ca=ca, now=now
                )
            except CertificateRefusedError as exc:
                last = exc
                continue
            return ca
        assert last is not None
        raise last
    except CertificateRefusedError as exc:
        reason, fix = CERTIFICATE_FIXES.get(exc.check, (exc.check, "see docs/provisioning.md"))
        raise ProvisionRefusedError(Step.CERTIFICATE, reason, fix) from None


def _intermediates(
    issuer: x509.Certificate | None, chain: list[x509.Certificate]
) -> list[x509.Certificate]:
    """The CAs from ``issuer`` up to (not including) a self-signed root, for the client's
    side of the TLS handshake; bounded by the chain's length."""
    path: list[x509.Certificate] = []
    current = issuer
    for _ in range(len(chain)):
        if current is None or current.issuer == current.subject:
            break
        path.append(current)
        current = next((ca for ca in chain if ca.subject == current.issuer), None)
    return path


def _require_ca(cert: x509.Certificate) -> None:
    try:
        constraints = cert.extensions.get_extension_for_class(x509.BasicConstraints).value
    except x509.ExtensionNotFound:
        constraints = None
    if constraints is None or not constraints.ca:
        raise ProvisionRefusedError(
            Step.CERTIFICATE,
            "the CA chain holds a certificate that is not a CA (basicConstraints)",
            "give the CA certificates only (--ca, or pem.ca_chain in the bundle), not the"
            " hub's own certificate",
        )


def install_public(path: Path, data: bytes, step: Step, what: str) -> Outcome:
    """Write a public file (a certificate) when its bytes change: ``written`` or
    ``unchanged``."""
    return _install(path, data, step, what)


def _install(path: Path, data: bytes, step: Step, what: str) -> Outcome:
    current = _read_bounded(path, step, what)
    if current == data:
        return Outcome.UNCHANGED
    _write_public(path, data, step, what)
    return Outcome.WRITTEN


def _read_bounded(path: Path, step: Step, what: str) -> bytes | None:
    try:
        with path.open("rb") as f:
            data = f.read(MAX_PEM_FILE_BYTES + 1)
    except FileNotFoundError:
        return None
    except OSError as exc:
        raise ProvisionRefusedError(
            step, f"the {what} {path} cannot be read ({exc.strerror})", _writable_fix(path)
        ) from None
    if len(data) > MAX_PEM_FILE_BYTES:
        raise ProvisionRefusedError(
            step,
            f"the {what} {path} is larger than {MAX_PEM_FILE_BYTES} bytes",
            "remove the file: provisioning writes it again",
        )
    return data


def _write_public(path: Path, data: bytes, step: Step, what: str) -> None:
    _make_parent(path, 0o755, step)
    try:
        cert_rotation.write_private_file(path, data, what, PUBLIC_FILE_MODE)
    except KeyMaterialError as exc:
        raise ProvisionRefusedError(
            step, f"cannot write the {what} {path} ({exc.reason})", _writable_fix(path)
        ) from None


def _make_parent(path: Path, mode: int, step: Step) -> None:
    try:
        path.parent.mkdir(mode=mode, parents=True, exist_ok=True)
    except OSError as exc:
        raise ProvisionRefusedError(
            step, f"cannot create the directory {path.parent} ({exc.strerror})", _writable_fix(path)
        ) from None


def _writable_fix(path: Path) -> str:
    return f"run as a user who may write {path.parent} (e.g. with sudo)"


def _spki(key: ec.EllipticCurvePublicKey) -> bytes:
    return key.public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )


__all__ = [
    "CERTIFICATE_FIXES",
    "Imported",
    "KeyResult",
    "ensure_csr",
    "ensure_key",
    "fingerprint",
    "import_certificate",
    "install_public",
    "load_certificates",
    "same_key",
]


def pem_of(cert: x509.Certificate) -> bytes:
    """One certificate as PEM."""
    return cert.public_bytes(serialization.Encoding.PEM)


def cose_key(path: Path) -> ec.EllipticCurvePrivateKey:
    """A P-256 PEM key file, checked as the daemon checks its signing key."""
    return cose.load_signing_key(path)
