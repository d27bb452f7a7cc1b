"""Rotating the hub's client certificate: a CSR out, a certificate in, the old pair kept.

The platform's ``rotate_certificate`` and ``install_certificate`` commands
(docs/platform-protocol.md) drive this module; the uplink drives the switch-over.

Files, beside the configured ``mqtt.cert_file`` and ``mqtt.key_file`` (:class:`CertificateSlots`):

=====================  ==========================================================
``<key>.pending``      the new key (private, 0600), made by :func:`begin_rotation`
``<cert>.pending``     its certificate, checked and written by :func:`install`
``<key>.previous``     the old key, kept by :func:`promote` until :func:`confirm`
``<cert>.previous``    the old certificate, likewise
=====================  ==========================================================

The steps and who calls them:

1. ``rotate_certificate``: :func:`begin_rotation` makes a P-256 key into the pending slot
   and returns a CSR (DER) whose subject CN is the hub id, signed by that key. A second
   rotation replaces the pending key (a certificate for the first one is then refused).
2. ``install_certificate``: :func:`install` writes the certificate to the pending slot only
   if its public key is the pending key's, its subject CN is the hub id and, when a CA is
   given, it was issued by that CA and is valid now (:func:`check_certificate`); else
   :class:`~agent.errors.CertificateRefusedError` names the failed check.
3. The uplink then calls :func:`promote` (the pending pair becomes the configured files, the
   old pair moves to ``.previous``) and reconnects, reading the configured files again.
4. Once a connection with the new pair is up (CONNACK success), the uplink calls
   :func:`confirm`, which deletes the previous pair. If the broker or TLS *refuses* the new
   pair (:class:`~agent.errors.UplinkRefusedError`), the uplink calls :func:`revert`, which
   puts the previous pair back, and reconnects; a mere network failure is no verdict on the
   certificate and reverts nothing. :func:`on_trial` says whether a switch-over awaits its
   verdict (after a restart too: the state is in the files).
5. At start, before the first connection, :func:`recover` repairs a pair left mismatched by
   a crash between the two renames of :func:`promote` or :func:`revert`.

Each file is replaced atomically (temporary file, fsync, rename, fsync the directory); a key
and its certificate are two files, so :func:`recover` is the second half of that atomicity.

:func:`make_csr` and :func:`check_certificate` are pure; the rest reads and writes files.
"""

from __future__ import annotations

import datetime as dt
import os
import stat
from dataclasses import dataclass
from pathlib import Path
from typing import Final

from cryptography import x509
from cryptography.exceptions import InvalidSignature, UnsupportedAlgorithm
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from agent.errors import CertificateRefusedError, KeyMaterialError
from agent.private_files import read_private_file_up_to

MAX_CERT_BYTES: Final = 16 * 1024
"""A DER or PEM leaf certificate is 0.5-2 KB; the bound keeps a hostile one small."""
MAX_KEY_BYTES: Final = 16 * 1024
PRIVATE_FILE_MODE: Final = 0o600
CERT_FILE_MODE: Final = 0o644
"""A certificate is public; the mode of a configured one is kept when it is replaced."""


@dataclass(frozen=True, slots=True)
class CertificateSlots:
    """Where the client certificate and key live: the configured files and their slots."""

    cert_file: Path
    key_file: Path

    @property
    def pending_key(self) -> Path:
        return _beside(self.key_file, "pending")

    @property
    def pending_cert(self) -> Path:
        return _beside(self.cert_file, "pending")

    @property
    def previous_key(self) -> Path:
        return _beside(self.key_file, "previous")

    @property
    def previous_cert(self) -> Path:
        return _beside(self.cert_file, "previous")


def _beside(path: Path, slot: str) -> Path:
    return path.with_name(f"{path.name}.{slot}")


# ---------------------------------------------------------------------------
# Pure parts
# ---------------------------------------------------------------------------


def make_csr(key: ec.EllipticCurvePrivateKey, hub_id: str) -> bytes:
    """A PKCS#10 request (DER) for ``key`` with subject CN = ``hub_id``, signed ES256."""
    request = (
        x509.CertificateSigningRequestBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, hub_id)]))
        .sign(key, hashes.SHA256())
    )
    return request.public_bytes(serialization.Encoding.DER)


def check_certificate(
    cert_der: bytes,
    *,
    public_key: ec.EllipticCurvePublicKey,
    hub_id: str,
    ca: x509.Certificate | None = None,
    now: dt.datetime | None = None,
) -> x509.Certificate:
    """The certificate in ``cert_der`` if it may be installed for ``public_key``.

    Raises:
        CertificateRefusedError: ``not_a_certificate``, ``public_key`` (another key's),
            ``subject`` (CN is not ``hub_id``, or not exactly one CN), ``issuer`` (``ca``
            given and it did not issue it) or ``validity`` (``ca`` given and ``now`` outside
            the certificate's validity).
    """
    if len(cert_der) > MAX_CERT_BYTES:
        raise CertificateRefusedError("not_a_certificate")
    try:
        cert = x509.load_der_x509_certificate(cert_der)
        cert_key = cert.public_key()
        names = cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)
    except (ValueError, UnsupportedAlgorithm):
        raise CertificateRefusedError("not_a_certificate") from None
    if not isinstance(cert_key, ec.EllipticCurvePublicKey) or _spki(cert_key) != _spki(public_key):
        raise CertificateRefusedError("public_key")
    if len(names) != 1 or names[0].value != hub_id:
        raise CertificateRefusedError("subject")
    if ca is not None:
        try:
            cert.verify_directly_issued_by(ca)
        except (ValueError, TypeError, InvalidSignature):
            raise CertificateRefusedError("issuer") from None
        when = now if now is not None else dt.datetime.now(dt.UTC)
        if not cert.not_valid_before_utc <= when <= cert.not_valid_after_utc:
            raise CertificateRefusedError("validity")
    return cert


def _spki(key: ec.EllipticCurvePublicKey) -> bytes:
    return key.public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )


# ---------------------------------------------------------------------------
# The slots (files)
# ---------------------------------------------------------------------------


def begin_rotation(slots: CertificateSlots, hub_id: str) -> bytes:
    """Make a new P-256 key into the pending slot (0600) and return its CSR (DER).

    Any earlier pending key and certificate are replaced: only the latest CSR's certificate
    can be installed.

    Raises:
        KeyMaterialError: the key could not be written.
    """
    key = ec.generate_private_key(ec.SECP256R1())
    pem = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    _remove(slots.pending_cert, "pending certificate")
    write_private_file(slots.pending_key, pem, "pending client key")
    return make_csr(key, hub_id)


def install(
    slots: CertificateSlots,
    cert_der: bytes,
    hub_id: str,
    *,
    ca: x509.Certificate | None = None,
    now: dt.datetime | None = None,
) -> x509.Certificate:
    """Check ``cert_der`` against the pending key (:func:`check_certificate`) and write it
    to the pending certificate slot (PEM); :func:`promote` puts it in use.

    Raises:
        CertificateRefusedError: ``no_pending_key``, or a failed check; nothing written.
        KeyMaterialError: a slot file could not be read or written.
    """
    key = _load_key(slots.pending_key, "pending client key")
    if key is None:
        raise CertificateRefusedError("no_pending_key")
    cert = check_certificate(cert_der, public_key=key.public_key(), hub_id=hub_id, ca=ca, now=now)
    pem = cert.public_bytes(serialization.Encoding.PEM)
    write_private_file(slots.pending_cert, pem, "pending client certificate", CERT_FILE_MODE)
    return cert


def has_pending_certificate(slots: CertificateSlots) -> bool:
    """Whether an installed certificate waits for :func:`promote`."""
    return slots.pending_cert.exists() and slots.pending_key.exists()


def promote(slots: CertificateSlots) -> None:
    """Put the pending pair in use; the current pair becomes the previous one.

    Raises:
        CertificateRefusedError: ``no_pending_key`` when no installed certificate waits.
        KeyMaterialError: a file could not be read or written (a crash or failure midway is
            repaired by :func:`recover`).
    """
    if not has_pending_certificate(slots):
        raise CertificateRefusedError("no_pending_key")
    _copy(slots.cert_file, slots.previous_cert, "client certificate", MAX_CERT_BYTES)
    _copy(slots.key_file, slots.previous_key, "client key", MAX_KEY_BYTES)
    _rename(slots.pending_cert, slots.cert_file, "client certificate")
    _rename(slots.pending_key, slots.key_file, "client key")


def on_trial(slots: CertificateSlots) -> bool:
    """Whether the pair in use was promoted and awaits :func:`confirm` or :func:`revert`."""
    return slots.previous_cert.exists() and slots.previous_key.exists()


def confirm(slots: CertificateSlots) -> None:
    """The new pair has connected: forget the previous pair."""
    _remove(slots.previous_cert, "previous client certificate")
    _remove(slots.previous_key, "previous client key")


def revert(slots: CertificateSlots) -> None:
    """The new pair was refused: put the previous pair back (the new one is dropped).

    Raises:
        KeyMaterialError: no previous pair, or a file could not be written.
    """
    if not on_trial(slots):
        raise KeyMaterialError(f"client certificate {slots.cert_file}", "no previous pair")
    _rename(slots.previous_cert, slots.cert_file, "client certificate")
    _rename(slots.previous_key, slots.key_file, "client key")


def recover(slots: CertificateSlots) -> bool:
    """Repair the configured pair after a crash between two renames; ``True`` if repaired.

    :func:`promote` and :func:`revert` rename the certificate before the key, so a crash
    between leaves the configured certificate beside the wrong key, and the right key still
    in its slot (pending or previous): it is moved in.

    Raises:
        KeyMaterialError: a file is unreadable, or the pair mismatches and no slot holds the
            configured certificate's key.
    """
    cert = _load_cert(slots.cert_file)
    key = _load_key(slots.key_file, "client key")
    if cert is None or key is None:
        return False
    cert_spki = _spki_of(cert)
    if cert_spki == _spki(key.public_key()):
        return False
    for slot in (slots.pending_key, slots.previous_key):
        candidate = _load_key(slot, "client key slot")
        if candidate is not None and _spki(candidate.public_key()) == cert_spki:
            _rename(slot, slots.key_file, "client key")
            return True
    raise KeyMaterialError(
        f"client key {slots.key_file}", "is not the client certificate's key, nor is any slot's"
    )


def _spki_of(cert: x509.Certificate) -> bytes | None:
    key = cert.public_key()
    return _spki(key) if isinstance(key, ec.EllipticCurvePublicKey) else None


# ---------------------------------------------------------------------------
# Files
# ---------------------------------------------------------------------------


def write_private_file(path: Path, data: bytes, what: str, mode: int = PRIVATE_FILE_MODE) -> None:
    """Replace ``path`` with ``data``: a temporary file beside it created with ``mode`` (0600
    by default, whatever the umask), fsynced, renamed over ``path``, the directory fsynced.
    A crash leaves the old file or the new one.

    Raises:
        KeyMaterialError: the file or its directory cannot be written (``path`` unchanged).
    """
    temporary = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        temporary.unlink(missing_ok=True)  # left by a crash of a process with our pid
        fd = os.open(
            temporary, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC, mode
        )
        try:
            os.fchmod(fd, mode)
            view = memoryview(data)
            while view:
                view = view[os.write(fd, view) :]
            os.fsync(fd)
        finally:
            os.close(fd)
        os.replace(temporary, path)
        _fsync_dir(path.parent)
    except OSError as exc:
        temporary.unlink(missing_ok=True)
        raise KeyMaterialError(f"{what} {path}", f"cannot be written: {exc.strerror}") from None


def _fsync_dir(directory: Path) -> None:
    fd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _load_key(path: Path, what: str) -> ec.EllipticCurvePrivateKey | None:
    """The P-256 key in the private PEM file ``path``; ``None`` when there is no file."""
    data = read_private_file_up_to(path, f"{what} {path}", MAX_KEY_BYTES)
    if data is None:
        return None
    try:
        key = serialization.load_pem_private_key(data, password=None)
    except (ValueError, TypeError):
        raise KeyMaterialError(f"{what} {path}", "not an unencrypted PEM private key") from None
    if not isinstance(key, ec.EllipticCurvePrivateKey) or not isinstance(key.curve, ec.SECP256R1):
        raise KeyMaterialError(f"{what} {path}", "not a P-256 key")
    return key


def _load_cert(path: Path) -> x509.Certificate | None:
    what = f"client certificate {path}"
    try:
        with path.open("rb") as f:
            data = f.read(MAX_CERT_BYTES + 1)
    except FileNotFoundError:
        return None
    except OSError as exc:
        raise KeyMaterialError(what, f"cannot be read: {exc.strerror}") from None
    if len(data) > MAX_CERT_BYTES:
        raise KeyMaterialError(what, f"larger than {MAX_CERT_BYTES} bytes")
    try:
        return x509.load_pem_x509_certificate(data)
    except ValueError:
        raise KeyMaterialError(what, "not a PEM certificate") from None


def _copy(source: Path, target: Path, what: str, max_bytes: int) -> None:
    """Copy the regular file ``source`` to ``target`` atomically, with ``source``'s mode."""
    try:
        fd = os.open(source, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
        try:
            st = os.fstat(fd)
            data = os.read(fd, max_bytes + 1) if stat.S_ISREG(st.st_mode) else b""
        finally:
            os.close(fd)
    except OSError as exc:
        raise KeyMaterialError(f"{what} {source}", f"cannot be read: {exc.strerror}") from None
    if not stat.S_ISREG(st.st_mode) or len(data) > max_bytes:
        raise KeyMaterialError(f"{what} {source}", "not a regular file of its kind")
    write_private_file(target, data, what, stat.S_IMODE(st.st_mode))


def _rename(source: Path, target: Path, what: str) -> None:
    try:
        os.replace(source, target)
        _fsync_dir(target.parent)
    except OSError as exc:
        raise KeyMaterialError(f"{what} {target}", f"cannot be replaced: {exc.strerror}") from None


def _remove(path: Path, what: str) -> None:
    try:
        path.unlink(missing_ok=True)
    except OSError as exc:
        raise KeyMaterialError(f"{what} {path}", f"cannot be removed: {exc.strerror}") from None


__all__ = [
    "CertificateSlots",
    "begin_rotation",
    "check_certificate",
    "confirm",
    "has_pending_certificate",
    "install",
    "make_csr",
    "on_trial",
    "promote",
    "recover",
    "revert",
    "write_private_file",
]
