"""Sealing records at rest: the data key, its file, and AEAD over each outbox record.

Why the outbox is encrypted at all, and why the key lives elsewhere: HHS's breach
safe-harbor guidance asks that "decryption tools … be stored on a device or at a location
separate from the data" (reliability-catalogue.md finding 11). The SQLite file holds signed
FHIR readings; if the SD card is pulled, what it holds must be useless without the key.
The key file path comes from configuration (``outbox.key_file``) and
:func:`check_key_placement` refuses a key kept beside the database.

Key file (version 1, :data:`KEY_FILE_SIZE` = 50 bytes, mode 0600 or stricter)::

    offset  size  field
    0       8     magic  b"HHDATKEY"
    8       1     format version (1)
    9       1     protection: 0x00 = plain (the key is protected by file mode and
                  placement only; see below for the wrapped forms)
    10      32    the data key (random)
    42      8     check value: HMAC-SHA256(key, "homehub key check v1")[:8]; detects a
                  damaged key file before it makes every record look tampered with

Wrapped key file (version 1, :data:`WRAPPED_KEY_FILE_SIZE` = 70 bytes): the data key
encrypted by a key-encryption key (KEK) that a key provider (:mod:`agent.keys`) holds::

    offset  size  field
    0       8     magic  b"HHDATKEY"
    8       1     format version (1)
    9       1     protection: 0x10 = AES-256-GCM under a KEK in a file (or a systemd
                  credential), 0x11 = AES-256-GCM inside a PKCS#11 token (the KEK never
                  leaves it)
    10      12    GCM nonce (random)
    22      32    the encrypted data key
    54      16    GCM tag

The wrap's associated data is ``"homehub data key wrap v1" ‖ bytes 0..9``: the header
cannot be edited to make a file claim another provider. The tag replaces the check value.

Sealed record (version 1 of the format; one byte says algorithm *and* format version)::

    prefix (1) ‖ nonce (12, random) ‖ ciphertext ‖ tag (16)

The AEAD's associated data is ``prefix ‖ aad``, where ``aad`` comes from
:func:`record_aad` and binds hub id, sequence number and record kind: a row copied to
another seq, kind or hub fails to open.

Crypto choices:

- ChaCha20-Poly1305 by default: a Raspberry Pi 4 (BCM2711) has no AES/PMULL instructions and
  ChaCha20-Poly1305 runs ≈ 4.5× faster than AES-128-GCM there (performance-anchors.md);
  AES-256-GCM is selectable where policy (FIPS) requires it. ``hil/bench/aead.py`` measures
  both on a real ≈ 4.5 KB envelope: on this project's x86-64 VM (AES-NI) AES-256-GCM does
  ≈ 213k seal+open pairs/s, ChaCha20-Poly1305 ≈ 148k (AES 1.44× faster, 4.7 vs 6.8 µs a
  pair). That advantage exists only with AES instructions; on the target it reverses, and
  either cost is negligible at clinical rates, so the default follows the target.
- A fresh random 96-bit nonce per record. With random nonces one key stays safe for
  2**32 records (NIST SP 800-38D §8.3); at clinical rates (tens a day) that is centuries.
- The data key is never used directly: HKDF-SHA256 (RFC 5869) derives a sealing subkey
  ("homehub seal v1"), a dedup subkey ("homehub dedup v1") and a public key id
  ("homehub key id v1"), so each use has its own key (domain separation).

Key bytes never appear in a repr, str, log line or exception message. (Python cannot
reliably wipe memory; the key lives in immutable ``bytes`` for the life of the process.)
"""

from __future__ import annotations

import enum
import hashlib
import hmac
import os
import secrets
from pathlib import Path
from typing import Final, Protocol

import structlog
from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.ciphers.aead import AESGCM, ChaCha20Poly1305
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from agent.errors import IntegrityError, KeyMaterialError
from agent.private_files import read_private_file

log = structlog.get_logger(__name__)

DATA_KEY_BYTES: Final = 32
"""256-bit key: the key size of both ChaCha20-Poly1305 (RFC 8439) and AES-256-GCM."""

KEY_FILE_MAGIC: Final = b"HHDATKEY"
KEY_FILE_VERSION: Final = 1
KEY_CHECK_BYTES: Final = 8
KEY_FILE_HEADER_BYTES: Final = len(KEY_FILE_MAGIC) + 1 + 1
KEY_FILE_SIZE: Final = KEY_FILE_HEADER_BYTES + DATA_KEY_BYTES + KEY_CHECK_BYTES
"""8 magic + 1 version + 1 protection + 32 key + 8 check value = 50 bytes."""

WRAP_NONCE_BYTES: Final = 12
WRAP_TAG_BYTES: Final = 16
WRAPPED_KEY_BYTES: Final = WRAP_NONCE_BYTES + DATA_KEY_BYTES + WRAP_TAG_BYTES
"""What a :class:`KeyWrapper` returns for the 32-byte data key: nonce ‖ ciphertext ‖ tag."""
WRAPPED_KEY_FILE_SIZE: Final = KEY_FILE_HEADER_BYTES + WRAPPED_KEY_BYTES
"""8 magic + 1 version + 1 protection + 12 nonce + 32 wrapped key + 16 tag = 70 bytes."""

NONCE_BYTES: Final = 12
"""96-bit nonce: RFC 8439 §2.8 and the GCM recommended IV length (SP 800-38D §5.2.1.1)."""

TAG_BYTES: Final = 16
SEAL_OVERHEAD_BYTES: Final = 1 + NONCE_BYTES + TAG_BYTES
"""Prefix + nonce + tag: a sealed record is the plaintext plus 29 bytes."""

_LABEL_SEAL: Final = b"homehub seal v1"
_LABEL_DEDUP: Final = b"homehub dedup v1"
_LABEL_KEY_ID: Final = b"homehub key id v1"
_LABEL_CHECK: Final = b"homehub key check v1"
_AAD_WRAP: Final = b"homehub data key wrap v1"
_AAD_RECORD: Final = b"homehub record v1"
_AAD_SYNC_STATE: Final = b"homehub sync state v1"
_MAX_AAD_FIELD: Final = 0xFFFF
"""Each AAD text field is prefixed by a 16-bit length, so it is at most 65535 bytes."""


class KeyProtection(enum.IntEnum):
    """How the key bytes in a key file are protected (byte 9 of the file)."""

    PLAIN = 0x00
    """The key is stored as is; protected by file mode and by living apart from the data."""

    WRAPPED_FILE_KEK = 0x10
    """AES-256-GCM under a 256-bit KEK read from a file or a systemd credential."""

    WRAPPED_PKCS11 = 0x11
    """AES-256-GCM computed inside a PKCS#11 token by a non-extractable KEK."""


class KeyWrapper(Protocol):
    """What a key provider offers the data key file: wrap and unwrap under its KEK.

    Both take the 32-byte data key (or its wrapped form, nonce ‖ ciphertext ‖ tag:
    :data:`WRAPPED_KEY_BYTES`) and associated data that the wrap authenticates.
    ``unwrap`` raises :class:`KeyMaterialError` when the KEK is gone or the bytes or the
    associated data were altered; its message never holds key material.
    """

    @property
    def protection(self) -> KeyProtection:
        """The protection byte this wrapper writes (byte 9 of the key file)."""
        ...

    def wrap(self, key: bytes, aad: bytes) -> bytes:
        """Encrypt ``key`` under the KEK: nonce ‖ ciphertext ‖ tag."""
        ...

    def unwrap(self, wrapped: bytes, aad: bytes) -> bytes:
        """Decrypt what :meth:`wrap` returned; :class:`KeyMaterialError` on any failure."""
        ...


class AeadAlgorithm(enum.IntEnum):
    """The AEAD that sealed a record: byte 0 of every sealed record (format version 1)."""

    CHACHA20_POLY1305 = 0x01
    """RFC 8439. The default: fast in software on CPUs without AES instructions."""

    AES_256_GCM = 0x02
    """NIST SP 800-38D with a 256-bit key: for deployments whose policy requires AES."""


def _hkdf(key: bytes, label: bytes, length: int = 32) -> bytes:
    """Derive a subkey with HKDF-SHA256 (RFC 5869), no salt, ``label`` as info."""
    return HKDF(algorithm=hashes.SHA256(), length=length, salt=None, info=label).derive(key)


def _check_value(key: bytes) -> bytes:
    return hmac.new(key, _LABEL_CHECK, hashlib.sha256).digest()[:KEY_CHECK_BYTES]


class DataKey:
    """The 32-byte data key. Its repr shows only :attr:`key_id`, never the key.

    Attributes:
        key_id: 16 hex digits derived from the key by HKDF; safe to log and to compare.
    """

    __slots__ = ("_key", "key_id")

    def __init__(self, key: bytes) -> None:
        if len(key) != DATA_KEY_BYTES:
            raise KeyMaterialError("data key", f"must be {DATA_KEY_BYTES} bytes, got {len(key)}")
        self._key: Final = bytes(key)
        self.key_id: Final = _hkdf(self._key, _LABEL_KEY_ID, 8).hex()

    @classmethod
    def generate(cls) -> DataKey:
        """A fresh key from the operating system's CSPRNG."""
        return cls(secrets.token_bytes(DATA_KEY_BYTES))

    def __repr__(self) -> str:
        return f"DataKey(key_id={self.key_id!r})"

    __str__ = __repr__

    def __reduce__(self) -> tuple[object, ...]:
        """Refuse pickling: a pickle would carry the key bytes out of the process."""
        raise TypeError("DataKey cannot be pickled")

    def to_file_bytes(self) -> bytes:
        """The key file's content (format version 1, :attr:`KeyProtection.PLAIN`)."""
        return (
            KEY_FILE_MAGIC
            + bytes([KEY_FILE_VERSION, KeyProtection.PLAIN])
            + self._key
            + _check_value(self._key)
        )

    def to_wrapped_file_bytes(self, wrapper: KeyWrapper) -> bytes:
        """The wrapped key file's content: header ‖ ``wrapper.wrap(key)`` (70 bytes)."""
        header = KEY_FILE_MAGIC + bytes([KEY_FILE_VERSION, wrapper.protection])
        wrapped = wrapper.wrap(self._key, _AAD_WRAP + header)
        if len(wrapped) != WRAPPED_KEY_BYTES:
            raise KeyMaterialError(
                "data key wrap", f"provider returned {len(wrapped)} bytes, not {WRAPPED_KEY_BYTES}"
            )
        return header + wrapped

    @classmethod
    def from_file_bytes(
        cls, data: bytes, *, what: str = "data key file", wrapper: KeyWrapper | None = None
    ) -> DataKey:
        """Parse a key file's content; :class:`KeyMaterialError` says what is wrong.

        Without ``wrapper`` only a plain key file is accepted; with one, only a file wrapped
        by that kind of provider (no silent downgrade to a plain file, no mix-up).
        """
        expected = KEY_FILE_SIZE if wrapper is None else WRAPPED_KEY_FILE_SIZE
        if len(data) != expected:
            raise KeyMaterialError(what, f"size {len(data)} bytes, expected {expected}")
        if data[:8] != KEY_FILE_MAGIC:
            raise KeyMaterialError(what, "not a homehub data key file (bad magic)")
        if data[8] != KEY_FILE_VERSION:
            raise KeyMaterialError(what, f"unsupported format version {data[8]}")
        if wrapper is not None:
            return cls._from_wrapped(data, what, wrapper)
        if data[9] != KeyProtection.PLAIN:
            raise KeyMaterialError(what, f"unsupported key protection 0x{data[9]:02x}")
        key = data[10 : 10 + DATA_KEY_BYTES]
        if not hmac.compare_digest(_check_value(key), data[10 + DATA_KEY_BYTES :]):
            raise KeyMaterialError(what, "check value mismatch: the key file is damaged")
        return cls(key)

    @classmethod
    def _from_wrapped(cls, data: bytes, what: str, wrapper: KeyWrapper) -> DataKey:
        if data[9] != wrapper.protection:
            try:
                stored = KeyProtection(data[9]).name
            except ValueError:
                stored = f"0x{data[9]:02x}"
            raise KeyMaterialError(
                what,
                f"key protection is {stored}, the configured provider writes "
                f"{wrapper.protection.name}; refusing to mix providers",
            )
        header = data[:KEY_FILE_HEADER_BYTES]
        return cls(wrapper.unwrap(data[KEY_FILE_HEADER_BYTES:], _AAD_WRAP + header))

    def _subkey(self, label: bytes) -> bytes:
        return _hkdf(self._key, label)


def load_data_key(path: Path, wrapper: KeyWrapper | None = None) -> DataKey:
    """Read the data key file, refusing it unless it is private, well-formed and intact.

    Refused (:class:`KeyMaterialError`) when the file is missing, not a regular file, has
    any group/other permission bit, is owned by a uid other than ours or root, or has the
    wrong size, magic, version, protection id or check value. Mode and owner are taken
    from ``fstat`` on the opened descriptor, so they describe the bytes actually read.
    With ``wrapper`` (a key provider), the file must be wrapped by it and is unwrapped.
    """
    expected = KEY_FILE_SIZE if wrapper is None else WRAPPED_KEY_FILE_SIZE
    what = f"data key file {path}"
    data = read_private_file(
        path, what, expected, missing="missing (create it with the hub's init step)"
    )
    return DataKey.from_file_bytes(data, what=what, wrapper=wrapper)


def create_data_key(path: Path, wrapper: KeyWrapper | None = None) -> DataKey:
    """Create a new data key file at ``path``, mode 0600; never replace an existing one.

    With ``wrapper`` (a key provider) the file holds the key wrapped by the provider's KEK;
    without, the plain form.

    Replacing a data key would make every record sealed under the old one unreadable, so
    an existing file (even a damaged one) is an error. The key is written to a temporary
    file made with ``O_CREAT | O_EXCL`` and mode 0600 from the start, fsynced, then
    hard-linked to ``path`` (``link(2)`` fails if ``path`` exists, unlike ``rename(2)``),
    and the directory is fsynced: after a crash either the whole key file exists or none.
    The parent directory must exist.
    """
    what = f"data key file {path}"
    key = DataKey.generate()
    data = key.to_file_bytes() if wrapper is None else key.to_wrapped_file_bytes(wrapper)
    tmp = path.with_name(f".{path.name}.{secrets.token_hex(6)}.tmp")
    try:
        try:
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o600)
            try:
                os.fchmod(fd, 0o600)  # the umask can only clear bits; make the mode explicit
                if os.write(fd, data) != len(data):
                    raise KeyMaterialError(what, "short write")
                os.fsync(fd)
            finally:
                os.close(fd)
            os.link(tmp, path)
        finally:
            tmp.unlink(missing_ok=True)
        _fsync_dir(path.parent)
    except FileExistsError:
        raise KeyMaterialError(what, "already exists; refusing to replace a data key") from None
    except OSError as exc:
        raise KeyMaterialError(what, f"cannot create: {exc.strerror}") from None
    log.info("data_key_created", path=str(path), key_id=key.key_id)
    return load_data_key(path, wrapper)


def destroy_key_file(path: Path, what: str = "data key file") -> bool:
    """Crypto-erase a key file: overwrite it with random bytes, fsync, unlink, fsync the dir.

    Returns ``False`` when there was no file. The overwrite is best effort: on flash
    (SD card, eMMC) the old blocks may survive wear levelling, which is why a wrapped data
    key's real erasure is destroying the KEK (:meth:`agent.keys.KeyProvider.destroy_kek`).
    Raises :class:`KeyMaterialError` when the file cannot be overwritten or removed.
    """
    what = f"{what} {path}"
    try:
        fd = os.open(path, os.O_WRONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
    except FileNotFoundError:
        return False
    except OSError as exc:
        raise KeyMaterialError(what, f"cannot open to destroy: {exc.strerror}") from None
    try:
        size = os.fstat(fd).st_size
        os.write(fd, secrets.token_bytes(size))
        os.fsync(fd)
    except OSError as exc:
        raise KeyMaterialError(what, f"cannot overwrite: {exc.strerror}") from None
    finally:
        os.close(fd)
    try:
        path.unlink()
        _fsync_dir(path.parent)
    except OSError as exc:
        raise KeyMaterialError(what, f"cannot remove: {exc.strerror}") from None
    log.info("key_file_destroyed", path=str(path))
    return True


def _fsync_dir(directory: Path) -> None:
    """fsync a directory so a new entry in it survives a power cut."""
    fd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def check_key_placement(key_file: Path, database: Path) -> bool:
    """Refuse a key file kept beside the database; say whether it is on another filesystem.

    Raises :class:`KeyMaterialError` when ``key_file`` lies in the database's directory or
    below it (a copy of the state directory would carry both). Returns ``True`` when the
    key is on a different filesystem than the database (the safe-harbor case: e.g. a
    separate medium or a credential store), ``False`` when they share one (the caller
    should warn: a stolen SD card would then hold both).
    """
    key_abs = key_file.resolve()
    db_dir = database.resolve().parent
    if key_abs.is_relative_to(db_dir):
        raise KeyMaterialError(
            f"data key file {key_file}", f"lies inside the database directory {db_dir}"
        )
    return os.stat(key_abs).st_dev != os.stat(db_dir).st_dev


def _lp(raw: bytes) -> bytes:
    """``raw`` prefixed with its length as a big-endian u16."""
    return len(raw).to_bytes(2, "big") + raw


def _text_field(text: str, name: str) -> bytes:
    raw = text.encode("utf-8")
    if not raw or len(raw) > _MAX_AAD_FIELD:
        raise ValueError(f"{name} must be 1..{_MAX_AAD_FIELD} bytes of UTF-8")
    return _lp(raw)


def record_aad(hub_id: str, seq: int, kind: str) -> bytes:
    """Associated data binding a sealed record to its hub, sequence number and kind.

    Encoding (unambiguous: every variable field is length-prefixed)::

        u16 len ‖ "homehub record v1" ‖ u16 len ‖ hub_id ‖ u64 seq ‖ u16 len ‖ kind

    (lengths and ``seq`` big-endian, texts UTF-8). Raises ``ValueError`` (a caller's bug)
    for an empty or oversized text or a ``seq`` outside 0..2**64-1.
    """
    if not 0 <= seq < 2**64:
        raise ValueError("seq must fit in an unsigned 64-bit integer")
    return (
        _lp(_AAD_RECORD)
        + _text_field(hub_id, "hub_id")
        + seq.to_bytes(8, "big")
        + _text_field(kind, "kind")
    )


def sync_state_aad(hub_id: str, device: str, key: str) -> bytes:
    """Associated data binding a sealed sync-state value to its hub, device and key name."""
    return (
        _lp(_AAD_SYNC_STATE)
        + _text_field(hub_id, "hub_id")
        + _text_field(device, "device")
        + _text_field(key, "key")
    )


class Sealer:
    """Seals and opens records with one data key.

    ``algorithm`` chooses how new records are sealed; :meth:`open` accepts any supported
    algorithm (the prefix byte says which), so changing the setting never strands records.
    """

    __slots__ = ("_aeads", "_dedup_key", "algorithm", "key_id")

    def __init__(
        self, key: DataKey, algorithm: AeadAlgorithm = AeadAlgorithm.CHACHA20_POLY1305
    ) -> None:
        seal_key = key._subkey(_LABEL_SEAL)
        self._aeads: Final[dict[int, ChaCha20Poly1305 | AESGCM]] = {
            AeadAlgorithm.CHACHA20_POLY1305: ChaCha20Poly1305(seal_key),
            AeadAlgorithm.AES_256_GCM: AESGCM(seal_key),
        }
        self._dedup_key: Final = key._subkey(_LABEL_DEDUP)
        self.algorithm: Final = algorithm
        self.key_id: Final = key.key_id

    def __repr__(self) -> str:
        return f"Sealer(key_id={self.key_id!r}, algorithm={self.algorithm.name})"

    def __reduce__(self) -> tuple[object, ...]:
        """Refuse pickling: a pickle would carry subkeys out of the process."""
        raise TypeError("Sealer cannot be pickled")

    def seal(self, plaintext: bytes, *, aad: bytes) -> bytes:
        """Encrypt and authenticate ``plaintext``; ``aad`` is authenticated, not stored."""
        prefix = bytes([self.algorithm])
        nonce = os.urandom(NONCE_BYTES)
        return prefix + nonce + self._aeads[self.algorithm].encrypt(nonce, plaintext, prefix + aad)

    def open(self, sealed: bytes, *, aad: bytes) -> bytes:
        """Authenticate and decrypt; :class:`IntegrityError` if anything was changed.

        Fails when the ciphertext, nonce or prefix was altered, when ``aad`` differs from
        the one used to seal (the record was moved to another seq/kind/hub), or when it was
        sealed under another key. The error names only the algorithm and the size.
        """
        if len(sealed) < SEAL_OVERHEAD_BYTES:
            raise IntegrityError("sealed record", f"too short ({len(sealed)} bytes)")
        aead = self._aeads.get(sealed[0])
        if aead is None:
            raise IntegrityError("sealed record", f"unknown algorithm id 0x{sealed[0]:02x}")
        nonce = sealed[1 : 1 + NONCE_BYTES]
        try:
            return aead.decrypt(nonce, sealed[1 + NONCE_BYTES :], sealed[:1] + aad)
        except InvalidTag:
            name = AeadAlgorithm(sealed[0]).name
            raise IntegrityError(
                "sealed record", f"{name} authentication failed ({len(sealed)} bytes)"
            ) from None

    def keyed_hash(self, data: bytes) -> bytes:
        """HMAC-SHA256 of ``data`` under the dedup subkey (32 bytes).

        Used for dedup keys, which contain device serials and times: stored only as this
        hash, they can be compared but not read back or guessed without the key.
        """
        return hmac.new(self._dedup_key, data, hashlib.sha256).digest()
