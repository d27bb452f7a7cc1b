"""The ``file`` key provider: a KEK in a private file or a systemd credential, a PEM signing key.

KEK file: exactly :data:`KEK_BYTES` random bytes, mode 0600 (or 0400, as systemd gives a
credential), a regular file owned by us or root, outside the hub's state directory (the
caller checks placement: :func:`agent.keys.check_kek_placement`). It is read once when the
provider opens and held in memory (immutable ``bytes``; Python cannot wipe memory).

With no KEK configured the provider is *plain*: the data key file holds the key itself
(:attr:`KeyProtection.PLAIN`), protected by mode and placement only, as before this
provider existed. ``wrap``/``unwrap`` then refuse.

Signing uses the PEM key of ``[signing] key_file`` via :func:`agent.cose.es256_sign`
(deterministic ECDSA, RFC 6979).
"""

from __future__ import annotations

import os
import secrets
from pathlib import Path
from typing import Final

import structlog
from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from agent import cose
from agent.errors import KeyMaterialError
from agent.private_files import read_private_file
from agent.sealing import (
    DATA_KEY_BYTES,
    WRAP_NONCE_BYTES,
    WRAPPED_KEY_BYTES,
    KeyProtection,
    destroy_key_file,
)

log = structlog.get_logger(__name__)

KEK_BYTES: Final = 32
"""A 256-bit AES key (AES-256-GCM, NIST SP 800-38D)."""


class FileKeyProvider:
    """KEK from a file (or none: plain), signing key from a PEM file.

    Args:
        kek_file: the KEK file, or ``None`` for the plain data key file of old.
        signing_key_file: the hub's P-256 signing key (PEM, mode 0600).
        kek_is_credential: the KEK comes from ``$CREDENTIALS_DIRECTORY`` (read-only: it is
            provisioned, never created or destroyed by the hub).
    """

    __slots__ = ("_kek", "_kek_file", "_kek_is_credential", "_signing_key", "_signing_key_file")

    def __init__(
        self, kek_file: Path | None, signing_key_file: Path, *, kek_is_credential: bool = False
    ) -> None:
        self._kek_file: Final = kek_file
        self._kek_is_credential: Final = kek_is_credential
        self._signing_key_file: Final = signing_key_file
        self._kek: bytes | None = None
        self._signing_key: ec.EllipticCurvePrivateKey | None = None

    def __repr__(self) -> str:
        return f"FileKeyProvider(kek_file={str(self._kek_file)!r})"

    def __reduce__(self) -> tuple[object, ...]:
        """Refuse pickling: a pickle would carry the KEK out of the process."""
        raise TypeError("FileKeyProvider cannot be pickled")

    @property
    def name(self) -> str:
        """``"file"``."""
        return "file"

    @property
    def protection(self) -> KeyProtection:
        """WRAPPED_FILE_KEK with a KEK, PLAIN without."""
        return KeyProtection.PLAIN if self._kek_file is None else KeyProtection.WRAPPED_FILE_KEK

    @property
    def kek_file(self) -> Path | None:
        """Where the KEK lives (``None``: plain)."""
        return self._kek_file

    # -- the KEK -------------------------------------------------------------------------

    def has_kek(self) -> bool:
        """Whether the KEK file exists (always ``True`` for a plain provider)."""
        return self._kek_file is None or self._kek_file.exists()

    def create_kek(self) -> None:
        """Write a new random KEK file, mode 0600, O_EXCL; fsync file and directory."""
        path = self._require_kek_file()
        what = f"KEK file {path}"
        if self._kek_is_credential:
            raise KeyMaterialError(what, "is a systemd credential: provision it, the hub cannot")
        try:
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o600)
        except FileExistsError:
            raise KeyMaterialError(what, "already exists; refusing to replace a KEK") from None
        except OSError as exc:
            raise KeyMaterialError(what, f"cannot create: {exc.strerror}") from None
        try:
            os.fchmod(fd, 0o600)
            os.write(fd, secrets.token_bytes(KEK_BYTES))
            os.fsync(fd)
        except OSError as exc:
            raise KeyMaterialError(what, f"cannot write: {exc.strerror}") from None
        finally:
            os.close(fd)
        dfd = os.open(path.parent, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
        try:
            os.fsync(dfd)
        finally:
            os.close(dfd)
        log.info("kek_created", provider="file", path=str(path))

    def destroy_kek(self) -> bool:
        """Overwrite and unlink the KEK file; ``False`` for a credential or a plain provider."""
        self._kek = None
        if self._kek_file is None:
            return False
        if self._kek_is_credential:
            log.warning("kek_not_destroyed", provider="file", reason="systemd credential")
            return False
        return destroy_key_file(self._kek_file, "KEK file")

    def _require_kek_file(self) -> Path:
        if self._kek_file is None:
            raise KeyMaterialError("KEK", "provider 'file' has no kek_file: the data key is plain")
        return self._kek_file

    def _load_kek(self) -> bytes:
        if self._kek is None:
            self._kek = _read_private_file(self._require_kek_file(), "KEK file", KEK_BYTES)
        return self._kek

    def wrap(self, key: bytes, aad: bytes) -> bytes:
        """AES-256-GCM under the KEK with a fresh random nonce: nonce ‖ ciphertext ‖ tag."""
        if len(key) != DATA_KEY_BYTES:
            raise KeyMaterialError("data key wrap", f"key must be {DATA_KEY_BYTES} bytes")
        nonce = os.urandom(WRAP_NONCE_BYTES)
        return nonce + AESGCM(self._load_kek()).encrypt(nonce, key, aad)

    def unwrap(self, wrapped: bytes, aad: bytes) -> bytes:
        """Reverse :meth:`wrap`; :class:`KeyMaterialError` if the KEK does not open it."""
        if len(wrapped) != WRAPPED_KEY_BYTES:
            raise KeyMaterialError(
                "data key unwrap", f"{len(wrapped)} bytes, not {WRAPPED_KEY_BYTES}"
            )
        nonce, body = wrapped[:WRAP_NONCE_BYTES], wrapped[WRAP_NONCE_BYTES:]
        try:
            return AESGCM(self._load_kek()).decrypt(nonce, body, aad)
        except InvalidTag:
            raise KeyMaterialError(
                "data key unwrap", "authentication failed: another KEK, or the file was altered"
            ) from None

    # -- signing -------------------------------------------------------------------------

    def _key(self) -> ec.EllipticCurvePrivateKey:
        if self._signing_key is None:
            self._signing_key = cose.load_signing_key(self._signing_key_file)
        return self._signing_key

    def sign(self, message: bytes) -> bytes:
        """Deterministic ES256 (RFC 6979) over ``message``: ``r || s``."""
        return cose.es256_sign(self._key(), message)

    def public_key(self) -> ec.EllipticCurvePublicKey:
        """The PEM key's public half."""
        return self._key().public_key()

    def close(self) -> None:
        """Forget the keys held in memory."""
        self._kek = None
        self._signing_key = None


def _read_private_file(path: Path, what: str, size: int) -> bytes:
    """Read exactly ``size`` bytes from a private regular file (checked on the open fd)."""
    return read_private_file(path, f"{what} {path}", size)


def read_pin_file(path: Path) -> str:
    """A token PIN from a private file (0600/0400); one trailing newline is ignored."""
    what = f"PIN file {path}"
    try:
        size = os.stat(path).st_size
    except OSError as exc:
        raise KeyMaterialError(what, f"cannot stat: {exc.strerror}") from None
    if not 1 <= size <= 256:
        raise KeyMaterialError(what, f"size {size} bytes, expected 1..256")
    raw = _read_private_file(path, "PIN file", size)
    try:
        pin = raw.decode("utf-8").removesuffix("\n")
    except UnicodeDecodeError:
        raise KeyMaterialError(what, "not UTF-8 text") from None
    if not pin:
        raise KeyMaterialError(what, "empty")
    return pin
