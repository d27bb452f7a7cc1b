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
    9       1     protection algorithm: 0x00 = plain (the key is protected by file
                  mode and placement only). Reserved so a later issue can add
                  wrapping (a KEK held in a TPM / PKCS#11 token) without a new magic.
    10      32    the data key (random)
    42      8     check value: HMAC-SHA256(key, "homehub key check v1")[:8]; detects a
                  damaged key file before it makes every record look tampered with

Sealed record (version 1 of the format; one byte says algorithm *and* format version)::

    prefix (1) ‖ nonce (12, random) ‖ ciphertext ‖ tag (16)

The AEAD's associated data is ``prefix ‖ aad``, where ``aad`` comes from
:func:`record_aad` and binds hub id, sequence number and record kind: a row copied to
another seq, kind or hub fails to open.

Crypto choices:

- ChaCha20-Poly1305 by default: a Raspberry Pi 4 (BCM2711) has no AES/PMULL instructions and
  ChaCha20-Poly1305 runs ≈ 4.5× faster than AES-128-GCM there (performance-anchors.md);
  AES-256-GCM is selectable where policy (FIPS) requires it.
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
import stat
from pathlib import Path
from typing import Final

import structlog
from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.ciphers.aead import AESGCM, ChaCha20Poly1305
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from drivers.errors import IntegrityError, KeyMaterialError

log = structlog.get_logger(__name__)

DATA_KEY_BYTES: Final = 32
"""256-bit key: the key size of both ChaCha20-Poly1305 (RFC 8439) and AES-256-GCM."""

KEY_FILE_MAGIC: Final = b"HHDATKEY"
KEY_FILE_VERSION: Final = 1
KEY_CHECK_BYTES: Final = 8
KEY_FILE_SIZE: Final = len(KEY_FILE_MAGIC) + 1 + 1 + DATA_KEY_BYTES + KEY_CHECK_BYTES
"""8 magic + 1 version + 1 protection + 32 key + 8 check value = 50 bytes."""

NONCE_BYTES: Final = 12
"""96-bit nonce: RFC 8439 §2.8 and the GCM recommended IV length (SP 800-38D §5.2.1.1)."""

TAG_BYTES: Final = 16
SEAL_OVERHEAD_BYTES: Final = 1 + NONCE_BYTES + TAG_BYTES
"""Prefix + nonce + tag: a sealed record is the plaintext plus 29 bytes."""

_LABEL_SEAL: Final = b"homehub seal v1"
_LABEL_DEDUP: Final = b"homehub dedup v1"
_LABEL_KEY_ID: Final = b"homehub key id v1"
_LABEL_CHECK: Final = b"homehub key check v1"
_AAD_RECORD: Final = b"homehub record v1"
_AAD_SYNC_STATE: Final = b"homehub sync state v1"
_MAX_AAD_FIELD: Final = 0xFFFF
"""Each AAD text field is prefixed by a 16-bit length, so it is at most 65535 bytes."""


class KeyProtection(enum.IntEnum):
    """How the key bytes in a key file are protected (byte 9 of the file)."""

    PLAIN = 0x00
    """The key is stored as is; protected by file mode and by living apart from the data."""


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

    @classmethod
    def from_file_bytes(cls, data: bytes, *, what: str = "data key file") -> DataKey:
        """Parse a key file's content; :class:`KeyMaterialError` says what is wrong."""
        if len(data) != KEY_FILE_SIZE:
            raise KeyMaterialError(what, f"size {len(data)} bytes, expected {KEY_FILE_SIZE}")
        if data[:8] != KEY_FILE_MAGIC:
            raise KeyMaterialError(what, "not a homehub data key file (bad magic)")
        if data[8] != KEY_FILE_VERSION:
            raise KeyMaterialError(what, f"unsupported format version {data[8]}")
        if data[9] != KeyProtection.PLAIN:
            raise KeyMaterialError(what, f"unsupported key protection 0x{data[9]:02x}")
        key = data[10 : 10 + DATA_KEY_BYTES]
        if not hmac.compare_digest(_check_value(key), data[10 + DATA_KEY_BYTES :]):
            raise KeyMaterialError(what, "check value mismatch: the key file is damaged")
        return cls(key)

    def _subkey(self, label: bytes) -> bytes:
        return _hkdf(self._key, label)


def load_data_key(path: Path) -> DataKey:
    """Read the data key file, refusing it unless it is private, well-formed and intact.

    Refused (:class:`KeyMaterialError`) when the file is missing, not a regular file, has
    any group/other permission bit, is owned by a uid other than ours or root, or has the
    wrong size, magic, version, protection id or check value. Mode and owner are taken
    from ``fstat`` on the opened descriptor, so they describe the bytes actually read.
    """
    what = f"data key file {path}"
    try:
        fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    except FileNotFoundError:
        raise KeyMaterialError(what, "missing (create it with the hub's init step)") from None
    except OSError as exc:
        raise KeyMaterialError(what, f"cannot open: {exc.strerror}") from None
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            raise KeyMaterialError(what, "not a regular file")
        if st.st_mode & 0o077:
            mode = stat.S_IMODE(st.st_mode)
            raise KeyMaterialError(what, f"mode {mode:04o} gives group/other access; need 0600")
        if st.st_uid not in (os.geteuid(), 0):
            raise KeyMaterialError(what, f"owned by uid {st.st_uid}, not by uid {os.geteuid()}")
        if st.st_size != KEY_FILE_SIZE:
            raise KeyMaterialError(what, f"size {st.st_size} bytes, expected {KEY_FILE_SIZE}")
        data = os.read(fd, KEY_FILE_SIZE + 1)
    except OSError as exc:
        raise KeyMaterialError(what, f"cannot read: {exc.strerror}") from None
    finally:
        os.close(fd)
    return DataKey.from_file_bytes(data, what=what)


def create_data_key(path: Path) -> DataKey:
    """Create a new data key file at ``path``, mode 0600; never replace an existing one.

    Replacing a data key would make every record sealed under the old one unreadable, so
    an existing file (even a damaged one) is an error. The key is written to a temporary
    file made with ``O_CREAT | O_EXCL`` and mode 0600 from the start, fsynced, then
    hard-linked to ``path`` (``link(2)`` fails if ``path`` exists, unlike ``rename(2)``),
    and the directory is fsynced: after a crash either the whole key file exists or none.
    The parent directory must exist.
    """
    what = f"data key file {path}"
    key = DataKey.generate()
    data = key.to_file_bytes()
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
    return load_data_key(path)


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
