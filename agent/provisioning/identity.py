"""The hub's identity on disk: its key, its certificate request, its certificate and the CA
chain it trusts.

The key is an ECDSA P-256 key in PEM, mode 0600, written atomically
(:func:`agent.cert_rotation.write_private_file`), and kept once it exists: a hub's key is its
identity, replaced only when the technician asks (``--rotate-key``). The certificate request
(CN = hub id) is public and goes to the depot's CA. A hub whose signing key lives in a
PKCS#11 token has a second request, signed in the token (:func:`ensure_signing_csr`), and a
second certificate (:func:`signing_slot`): step 4 checks every certificate before it writes
any. The certificate is installed only when it
is for this key and this hub id, issued by a CA of the given chain and valid now; the reasons
it is refused are :class:`CertificateRefusedError`'s checks, each with its fix
(:data:`CERTIFICATE_FIXES`).

Every function returns what it did (:class:`~agent.provisioning.steps.Outcome`) and writes
nothing when nothing changes, so a second run reports ``kept`` and ``unchanged``.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Final

from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from agent import cert_rotation, cose
from agent.errors import CertificateRefusedError, KeyMaterialError
from agent.provisioning.signing_csr import is_signing_request, signing_csr
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

SIGNING_CERTIFICATE_FIXES: Final = {
    **CERTIFICATE_FIXES,
    "not_a_certificate": (
        "the signing certificate is not a PEM X.509 certificate",
        "give the signing certificate the depot's CA issued (PEM, -----BEGIN CERTIFICATE-----)",
    ),
    "public_key": (
        "the signing certificate's key is not the token's signing key",
        "have the CA issue the signing certificate for this hub's signing request {request}"
        " (made in the token), not for its TLS request",
    ),
    "subject": (
        "the signing certificate's subject CN is not the hub id",
        "have the CA issue it for this hub's signing request {request}",
    ),
    "issuer": (
        "the signing certificate was not issued by a CA of the given chain",
        "give the CA chain of the CA that issued it (--ca, or pem.ca_chain in the bundle)",
    ),
    "validity": (
        "the signing certificate is not valid now (expired, or not yet valid)",
        "check the hub's clock (date -u); if it is right, have the CA issue a new signing"
        " certificate for {request}",
    ),
}
"""The same checks for the certificate of a signing key kept in a PKCS#11 token; ``{request}``
is its request's file."""


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


def ensure_signing_csr(
    public_key: ec.EllipticCurvePublicKey,
    hub_id: str,
    path: Path,
    sign: Callable[[bytes], bytes],
) -> Outcome:
    """The signing key's request (:mod:`agent.provisioning.signing_csr`, signed by ``sign``
    inside the token) at ``path``: kept when the file already holds one for this key and hub
    id, else written."""
    what = "signing certificate request"
    existing = _read_bounded(path, Step.CSR, what)
    if existing is not None:
        try:
            if is_signing_request(x509.load_pem_x509_csr(existing), public_key, hub_id):
                return Outcome.KEPT
        except ValueError:
            pass  # not a request: replaced below
    try:
        der = signing_csr(public_key, hub_id, sign)
    except KeyMaterialError as exc:
        raise ProvisionRefusedError(
            Step.CSR,
            f"the token cannot sign the signing key's request ({exc})",
            "check the token (its signing key pair); if it is damaged, run again with"
            " --rotate-key (both certificates are then issued again)",
        ) from None
    pem = x509.load_der_x509_csr(der).public_bytes(serialization.Encoding.PEM)
    _write_public(path, pem, Step.CSR, what)
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
class CertificateSlot:
    """One certificate step 4 imports: for which key, from which input, to which file.

    ``input_name`` is the key of the run's names (``"certificate"``: ``--cert`` or ``bundle
    pem.certificate``). The TLS client certificate goes out with the CAs between it and the
    root (the TLS handshake sends them); a signing certificate alone.
    """

    what: str
    public_key: ec.EllipticCurvePublicKey
    pem: bytes | None
    input_name: str
    path: Path
    with_intermediates: bool
    fixes: Mapping[str, tuple[str, str]]
    request: Path | None = None
    """The request the certificate is issued for (named in a fix as ``{request}``)."""


@dataclass(frozen=True, slots=True)
class Imported:
    """What :func:`import_certificates` did: each certificate's outcome (in the order of the
    slots given), and the chain's."""

    outcomes: tuple[Outcome, ...]
    chain: Outcome
    expires: tuple[dt.datetime | None, ...]

    @property
    def certificate(self) -> Outcome:
        """The step's result: ``pending`` when one certificate waits, ``imported`` when one
        was installed, else ``unchanged`` or ``kept``."""
        for outcome in (Outcome.PENDING, Outcome.IMPORTED, Outcome.UNCHANGED):
            if outcome in self.outcomes:
                return outcome
        return Outcome.KEPT


@dataclass(frozen=True, slots=True)
class _Judged:
    outcome: Outcome
    """``kept``/``pending`` for a certificate not given; ``imported`` for one to install."""
    data: bytes | None
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
    """:func:`import_certificates` for a hub whose one key is its TLS and signing key."""
    slot = tls_slot(key.public_key(), cert_pem, cert_path)
    return import_certificates(
        hub_id,
        [slot],
        chain_pem=chain_pem,
        client_ca_pem=client_ca_pem,
        chain_path=chain_path,
        now=now,
        names=names,
    )


def tls_slot(
    public_key: ec.EllipticCurvePublicKey, cert_pem: bytes | None, cert_path: Path
) -> CertificateSlot:
    """The TLS client certificate's slot (``[mqtt] cert_file``)."""
    return CertificateSlot(
        "certificate", public_key, cert_pem, "certificate", cert_path, True, CERTIFICATE_FIXES
    )


def signing_slot(
    public_key: ec.EllipticCurvePublicKey, cert_pem: bytes | None, cert_path: Path, request: Path
) -> CertificateSlot:
    """The token signing key's certificate slot (``[signing] cert_file``), issued for the
    signing request at ``request``."""
    return CertificateSlot(
        "signing certificate",
        public_key,
        cert_pem,
        "signing_certificate",
        cert_path,
        False,
        SIGNING_CERTIFICATE_FIXES,
        request,
    )


def import_certificates(
    hub_id: str,
    slots: Sequence[CertificateSlot],
    *,
    chain_pem: bytes | None,
    client_ca_pem: bytes | None,
    chain_path: Path,
    now: dt.datetime,
    names: Mapping[str, str],
) -> Imported:
    """Check the issued certificates and install them with the CA chain.

    For each slot with a PEM given: its first certificate must be for the slot's key, have
    CN ``hub_id``, be issued by a CA of the chain (``chain_pem``, else the installed chain;
    or of ``client_ca_pem``) and be valid at ``now``. Without one: the installed certificate
    is kept when it passes the same checks, else the slot is ``pending`` (its CSR is with the
    CA). Every check runs before anything is written: a refusal
    (:class:`ProvisionRefusedError`, with the slot's fix) leaves every file as it was. Then
    the chain goes to ``chain_path`` and each certificate to its file, each only when its
    bytes change.
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
    judged = [_judge(slot, hub_id, issuers, now, names) for slot in slots]
    given = [slot.pem is not None for slot in slots]
    for slot, verdict in zip(slots, judged, strict=True):
        if any(given) and verdict.outcome is Outcome.PENDING:
            others = [s for s, g in zip(slots, given, strict=True) if g]
            raise ProvisionRefusedError(
                Step.CERTIFICATE,
                f"the {slot.what} ({names[slot.input_name]}) is missing, while the"
                f" {others[0].what} is given: this hub needs both",
                f"give the {slot.what} the CA issued for this hub too"
                f' ({names[slot.input_name]}); docs/provisioning.md, "PKCS#11"',
            )

    chain_outcome = Outcome.UNCHANGED
    if chain_pem is not None:
        chain_bytes = b"".join(c.public_bytes(serialization.Encoding.PEM) for c in chain)
        chain_outcome = _install(chain_path, chain_bytes, Step.CERTIFICATE, "CA chain")
    outcomes: list[Outcome] = []
    for slot, verdict in zip(slots, judged, strict=True):
        if verdict.data is None:
            outcomes.append(verdict.outcome)
            continue
        written = _install(slot.path, verdict.data, Step.CERTIFICATE, slot.what)
        outcomes.append(Outcome.IMPORTED if written is Outcome.WRITTEN else Outcome.UNCHANGED)
    return Imported(tuple(outcomes), chain_outcome, tuple(v.expires for v in judged))


def _judge(
    slot: CertificateSlot,
    hub_id: str,
    issuers: list[x509.Certificate],
    now: dt.datetime,
    names: Mapping[str, str],
) -> _Judged:
    """One slot's certificate checked: what to install, or what the installed one is."""
    if slot.pem is None:
        current = _read_bounded(slot.path, Step.CERTIFICATE, slot.what)
        if current is None:
            return _Judged(Outcome.PENDING, None, None)
        what = f"the installed {slot.what} {slot.path}"
        leaf = load_certificates(current, what, Step.CERTIFICATE)[0]
        try:
            _check(leaf, slot, hub_id, issuers, now)
        except ProvisionRefusedError:
            return _Judged(Outcome.PENDING, None, leaf.not_valid_after_utc)
        return _Judged(Outcome.KEPT, None, leaf.not_valid_after_utc)
    what = f"the {slot.what} ({names[slot.input_name]})"
    leaf = load_certificates(slot.pem, what, Step.CERTIFICATE)[0]
    issuer = _check(leaf, slot, hub_id, issuers, now)
    path = [leaf, *_intermediates(issuer, issuers)] if slot.with_intermediates else [leaf]
    data = b"".join(c.public_bytes(serialization.Encoding.PEM) for c in path)
    return _Judged(Outcome.IMPORTED, data, leaf.not_valid_after_utc)


def _check(
    leaf: x509.Certificate,
    slot: CertificateSlot,
    hub_id: str,
    issuers: list[x509.Certificate],
    now: dt.datetime,
) -> x509.Certificate | None:
    """The CA that issued ``leaf`` once every check passed (None when no chain is known and
    only key and subject could be checked)."""
    der = leaf.public_bytes(serialization.Encoding.DER)
    candidates = [ca for ca in issuers if ca.subject == leaf.issuer] or issuers[:1]
    public_key = slot.public_key
    try:
        if not candidates:
            cert_rotation.check_certificate(der, public_key=public_key, hub_id=hub_id)
            raise CertificateRefusedError("issuer")
        last: CertificateRefusedError | None = None
        for ca in candidates:
            try:
                cert_rotation.check_certificate(
                    der, public_key=public_key, hub_id=hub_id, ca=ca, now=now
                )
            except CertificateRefusedError as exc:
                last = exc
                continue
            return ca
        assert last is not None
        raise last
    except CertificateRefusedError as exc:
        reason, fix = slot.fixes.get(exc.check, (exc.check, "see docs/provisioning.md"))
        if slot.request is not None:
            fix = fix.replace("{request}", str(slot.request))
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
    "SIGNING_CERTIFICATE_FIXES",
    "CertificateSlot",
    "Imported",
    "KeyResult",
    "ensure_csr",
    "ensure_key",
    "ensure_signing_csr",
    "fingerprint",
    "import_certificate",
    "import_certificates",
    "install_public",
    "load_certificates",
    "same_key",
    "signing_slot",
    "tls_slot",
]


def pem_of(cert: x509.Certificate) -> bytes:
    """One certificate as PEM."""
    return cert.public_bytes(serialization.Encoding.PEM)


def cose_key(path: Path) -> ec.EllipticCurvePrivateKey:
    """A P-256 PEM key file, checked as the daemon checks its signing key."""
    return cose.load_signing_key(path)
