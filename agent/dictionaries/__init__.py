"""The zstd dictionaries envelopes are compressed with, versioned by id.

Each dictionary is a file ``<id>.zdict`` whose zstd dictionary id equals our id, listed in
``manifest.json`` beside it with its SHA-256 and the device kinds it was trained on
(``hil/train_dictionaries.py`` made them from synthetic readings only; no real person's data
is in them). The same files are shipped to the platform (docs/platform-protocol.md
"Compression"): a dictionary's id names it in the protected header, so a file is never
changed once shipped; a new training gets a new id.

:func:`parse` checks a manifest and the files' bytes (sans-I/O); :func:`load` reads a
directory (this package's by default), each file bounded in size.
"""

from __future__ import annotations

import hashlib
import json
import os
import stat
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Final

import zstandard

from agent.derived_ids import READING_V1, READING_V2
from agent.device_refs import READING_V3
from agent.errors import IntegrityError

MANIFEST_NAME: Final = "manifest.json"
MAX_DICTIONARY_BYTES: Final = 256 * 1024
"""Largest dictionary file read; ours are 64 KiB."""
MAX_MANIFEST_BYTES: Final = 64 * 1024
MAX_DICTIONARIES: Final = 64
"""Largest number of dictionaries a manifest may list."""

COMPRESSION_LEVEL: Final = 15
"""zstd level of a single envelope (prepared for it at load). Measured on synthetic
readings: level 19 is 0-1 % smaller for twice the time, level 9 10-15 % larger."""

BATCH_COMPRESSION_LEVEL: Final = 9
"""zstd level of a batch (prepared for it at load). Measured on batches of 50 version-2
readings with dictionary 2 (``hil/bench/uplink.py`` reports the bytes it sends): level 9 is
137 B a reading at 22 µs of CPU, level 15 125 B at 428 µs; a backlog drains at the link's
speed only when compressing costs less than sending, and 12 B a reading is 10 %."""

PACKAGE_DIR: Final = Path(__file__).resolve().parent


@dataclass(frozen=True, slots=True)
class Dictionary:
    """One loaded zstd dictionary, prepared for compressing singles and batches."""

    id: int
    sha256_hex: str
    kinds: tuple[str, ...]
    data: bytes = field(repr=False)
    zstd: zstandard.ZstdCompressionDict = field(repr=False, compare=False)
    """Prepared for :data:`COMPRESSION_LEVEL` (a prepared dictionary fixes the level)."""
    zstd_batch: zstandard.ZstdCompressionDict = field(repr=False, compare=False)
    """The same dictionary prepared for :data:`BATCH_COMPRESSION_LEVEL`."""
    reading_version: int = READING_V1
    """The reading payload version the dictionary was trained on and is sent with: 2 means
    readings go without their derived identifiers (agent/derived_ids.py), 3 also with their
    Devices by reference once the platform holds them (agent/device_refs.py)."""

    @classmethod
    def from_bytes(
        cls,
        dictionary_id: int,
        data: bytes,
        *,
        sha256_hex: str,
        kinds: tuple[str, ...] = (),
        reading_version: int = READING_V1,
    ) -> Dictionary:
        """Check ``data`` against its expected SHA-256 and zstd dictionary id.

        Raises :class:`IntegrityError` (``what="dictionary <id>"``) naming the fault.
        """
        what = f"dictionary {dictionary_id}"
        if len(data) > MAX_DICTIONARY_BYTES:
            raise IntegrityError(what, f"{len(data)} bytes exceeds {MAX_DICTIONARY_BYTES}")
        if hashlib.sha256(data).hexdigest() != sha256_hex.lower():
            raise IntegrityError(what, "sha256 does not match the manifest")
        try:
            prepared = zstandard.ZstdCompressionDict(data, dict_type=zstandard.DICT_TYPE_FULLDICT)
            zstd_id = prepared.dict_id()
            prepared.precompute_compress(level=COMPRESSION_LEVEL)
            for_batches = zstandard.ZstdCompressionDict(
                data, dict_type=zstandard.DICT_TYPE_FULLDICT
            )
            for_batches.precompute_compress(level=BATCH_COMPRESSION_LEVEL)
        except zstandard.ZstdError:
            raise IntegrityError(what, "not a zstd dictionary") from None
        if zstd_id != dictionary_id:
            raise IntegrityError(what, f"its zstd dictionary id is {zstd_id}")
        return cls(
            dictionary_id, sha256_hex.lower(), kinds, data, prepared, for_batches, reading_version
        )

    def prepared(self, level: int) -> zstandard.ZstdCompressionDict:
        """The dictionary prepared for compressing at ``level`` (a prepared dictionary fixes
        the level it compresses at: asking one prepared for another level gets that level)."""
        if level == COMPRESSION_LEVEL:
            return self.zstd
        if level == BATCH_COMPRESSION_LEVEL:
            return self.zstd_batch
        other = zstandard.ZstdCompressionDict(self.data, dict_type=zstandard.DICT_TYPE_FULLDICT)
        other.precompute_compress(level=level)
        return other


@dataclass(frozen=True, slots=True)
class ManifestEntry:
    """One line of the manifest: a dictionary's id, file name, SHA-256 and kinds."""

    id: int
    file: str
    sha256_hex: str
    kinds: tuple[str, ...]
    reading_version: int = READING_V1


def parse_manifest(text: bytes) -> tuple[ManifestEntry, ...]:
    """The entries of a ``manifest.json``; raises :class:`IntegrityError` naming the fault."""
    what = "dictionary manifest"
    if len(text) > MAX_MANIFEST_BYTES:
        raise IntegrityError(what, f"larger than {MAX_MANIFEST_BYTES} bytes")
    try:
        doc = json.loads(text)
    except (ValueError, UnicodeDecodeError):
        raise IntegrityError(what, "not JSON") from None
    if not isinstance(doc, dict) or doc.get("v") != 1:
        raise IntegrityError(what, "not a version 1 manifest")
    items = doc.get("dictionaries")
    if not isinstance(items, list) or len(items) > MAX_DICTIONARIES:
        raise IntegrityError(what, f"'dictionaries' must be a list of at most {MAX_DICTIONARIES}")
    out: list[ManifestEntry] = []
    for item in items:
        if not isinstance(item, dict):
            raise IntegrityError(what, "an entry is not an object")
        did, sha, kinds = item.get("id"), item.get("sha256"), item.get("kinds", [])
        if type(did) is not int or not 0 < did < 2**31:
            raise IntegrityError(what, "an entry's id is not an integer in 1..2^31-1")
        if not (
            isinstance(sha, str) and len(sha) == 64 and all(c in "0123456789abcdef" for c in sha)
        ):
            raise IntegrityError(what, f"entry {did}: sha256 is not 64 lower-case hex digits")
        if not (isinstance(kinds, list) and all(isinstance(k, str) for k in kinds)):
            raise IntegrityError(what, f"entry {did}: kinds is not a list of strings")
        if item.get("file", f"{did}.zdict") != f"{did}.zdict":
            raise IntegrityError(what, f"entry {did}: file must be named {did}.zdict")
        if any(e.id == did for e in out):
            raise IntegrityError(what, f"id {did} listed twice")
        version = item.get("reading_version", READING_V1)
        if type(version) is not int or version not in (READING_V1, READING_V2, READING_V3):
            raise IntegrityError(what, f"entry {did}: reading_version is not 1, 2 or 3")
        out.append(ManifestEntry(did, f"{did}.zdict", sha, tuple(kinds), version))
    return tuple(out)


def parse(manifest: bytes, read: Callable[[str], bytes]) -> Mapping[int, Dictionary]:
    """Every dictionary the manifest lists, its bytes got by ``read(file name)``, checked."""
    return {
        e.id: Dictionary.from_bytes(
            e.id,
            read(e.file),
            sha256_hex=e.sha256_hex,
            kinds=e.kinds,
            reading_version=e.reading_version,
        )
        for e in parse_manifest(manifest)
    }


def load(directory: Path = PACKAGE_DIR) -> Mapping[int, Dictionary]:
    """The dictionaries of ``directory`` (this package's by default), as its manifest lists
    them. Raises :class:`IntegrityError` for a missing, oversized or altered file."""
    manifest = _read_bounded(directory / MANIFEST_NAME, MAX_MANIFEST_BYTES, "dictionary manifest")
    return parse(
        manifest,
        lambda name: _read_bounded(directory / name, MAX_DICTIONARY_BYTES, f"dictionary {name}"),
    )


def _read_bounded(path: Path, limit: int, what: str) -> bytes:
    """A regular file's bytes, refused beyond ``limit`` (never read past it)."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    except OSError as exc:
        raise IntegrityError(what, f"{path}: cannot be opened ({exc.strerror})") from None
    with os.fdopen(fd, "rb") as f:
        if not stat.S_ISREG(os.fstat(f.fileno()).st_mode):
            raise IntegrityError(what, f"{path}: not a regular file")
        data = f.read(limit + 1)
    if len(data) > limit:
        raise IntegrityError(what, f"{path}: larger than {limit} bytes")
    return data
