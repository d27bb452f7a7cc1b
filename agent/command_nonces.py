"""The nonces of accepted commands, remembered until they expire, across restarts.

A command (docs/platform-protocol.md, Commands) carries a random 16-byte nonce and an expiry;
the hub accepts a nonce once. :class:`NonceMemory` is the sans-I/O core: it admits a nonce
that is new, refuses one it holds, forgets a nonce only once its expiry has passed, and holds
at most :data:`MAX_NONCES`. When it is full of unexpired nonces it refuses new commands
rather than forget one: only the platform key can fill it (a command is admitted after its
signature verified), and a command lives at most :data:`MAX_LIFETIME_S` plus the skew the hub
allows, so a full memory frees itself within the hour.

:class:`NonceFile` keeps the memory in the state directory: a private file (0600), written
whole on every admission (at most 24 KiB), atomically (temporary file, fsync, rename, fsync
the directory), before the command is carried out. A crash after the write and before the
command ran loses the command (the platform sends another), never lets one run twice.

A file that is unreadable or damaged at start is not trusted and not taken as empty either:
the memory starts with a *floor*, and every command issued at or before it is refused as
replayed. Any nonce the lost file held belonged to a command issued no later than
:data:`MAX_SKEW_S` after the moment of loading, so nothing it held can be replayed, and
commands issued after that pass (the platform's fresh commands within minutes).

File layout: the magic ``HHN1``, the floor (uint64 big-endian, Unix seconds), then per nonce
16 bytes of nonce and its expiry (uint64 big-endian).
"""

from __future__ import annotations

import struct
from collections.abc import Callable
from dataclasses import dataclass, field
from enum import Enum
from pathlib import Path
from typing import Final

import structlog

from agent.cert_rotation import write_private_file
from agent.errors import KeyMaterialError, StorageError
from agent.private_files import read_private_file_up_to
from agent.receipts import CLOCK_SKEW_S

log = structlog.get_logger("agent.command_nonces")

NONCE_BYTES: Final = 16
MAX_LIFETIME_S: Final = 3600
"""``exp - iat`` of a command, at most (docs/platform-protocol.md)."""
MAX_SKEW_S: Final = CLOCK_SKEW_S
"""A command is accepted from ``iat - MAX_SKEW_S`` (20 minutes) on: the hub's clock may be
that far behind the platform's, as for receipts (:data:`agent.receipts.CLOCK_SKEW_S`: the hub
corrects its clock by the network's time only beyond 15 minutes off)."""
MAX_NONCES: Final = 1024
"""Unexpired nonces held. A nonce is held at most ``MAX_LIFETIME_S + MAX_SKEW_S`` (80 min),
so the platform may send 1,024 commands in any 80 minutes: a home hub gets a handful a day."""

FILE_NAME: Final = "command_nonces"
_MAGIC: Final = b"HHN1"
_HEADER: Final = struct.Struct(">4sQ")
_ENTRY: Final = struct.Struct(">16sQ")
MAX_FILE_BYTES: Final = _HEADER.size + MAX_NONCES * _ENTRY.size
_UINT64_MAX: Final = 2**64 - 1


class Admission(Enum):
    """What :meth:`NonceMemory.admit` decided."""

    ADMITTED = "admitted"
    REPLAYED = "replayed"
    FULL = "full"


@dataclass(slots=True)
class NonceMemory:
    """Nonces and their expiries (Unix seconds); sans-I/O.

    ``floor_s``: commands issued at or before it are refused as replayed (a lost file).
    """

    floor_s: int = 0
    max_nonces: int = MAX_NONCES
    _expiry_s: dict[bytes, int] = field(default_factory=dict)

    def __len__(self) -> int:
        return len(self._expiry_s)

    def __contains__(self, nonce: object) -> bool:
        return nonce in self._expiry_s

    def admit(self, nonce: bytes, *, issued_at_s: int, expires_at_s: int, now_s: int) -> Admission:
        """Remember ``nonce`` until ``expires_at_s`` if it is new; expired nonces are
        forgotten first. Changes nothing unless the result is ``ADMITTED``."""
        if len(nonce) != NONCE_BYTES:
            raise ValueError(f"a nonce is {NONCE_BYTES} bytes")
        self.prune(now_s)
        if nonce in self._expiry_s or issued_at_s <= self.floor_s:
            return Admission.REPLAYED
        if len(self._expiry_s) >= self.max_nonces:
            return Admission.FULL
        self._expiry_s[nonce] = expires_at_s
        return Admission.ADMITTED

    def forget(self, nonce: bytes) -> None:
        """Drop ``nonce`` (an admission that could not be made durable)."""
        self._expiry_s.pop(nonce, None)

    def prune(self, now_s: int) -> int:
        """Forget every nonce whose expiry has passed; returns how many."""
        expired = [n for n, exp in self._expiry_s.items() if exp < now_s]
        for nonce in expired:
            del self._expiry_s[nonce]
        return len(expired)

    def to_bytes(self) -> bytes:
        """The file's bytes (module docstring), nonces in expiry order."""
        entries = sorted(self._expiry_s.items(), key=lambda item: (item[1], item[0]))
        return _HEADER.pack(_MAGIC, self.floor_s) + b"".join(
            _ENTRY.pack(nonce, min(exp, _UINT64_MAX)) for nonce, exp in entries
        )

    @classmethod
    def from_bytes(cls, data: bytes, max_nonces: int = MAX_NONCES) -> NonceMemory:
        """Parse :meth:`to_bytes`; raises ``ValueError`` naming what is wrong."""
        if len(data) < _HEADER.size or data[:4] != _MAGIC:
            raise ValueError("not a nonce file")
        body = len(data) - _HEADER.size
        if body % _ENTRY.size:
            raise ValueError("truncated")
        if body // _ENTRY.size > max_nonces:
            raise ValueError("more nonces than the bound")
        _magic, floor_s = _HEADER.unpack_from(data)
        memory = cls(floor_s=floor_s, max_nonces=max_nonces)
        for offset in range(_HEADER.size, len(data), _ENTRY.size):
            nonce, exp = _ENTRY.unpack_from(data, offset)
            if nonce in memory._expiry_s:
                raise ValueError("a nonce twice")
            memory._expiry_s[nonce] = exp
        return memory


class NonceFile:
    """:class:`NonceMemory` kept in ``<state_dir>/command_nonces`` (module docstring).

    Synchronous file I/O with an fsync per admission: run it where slow calls belong (the
    daemon's storage thread).
    """

    def __init__(
        self, path: Path, clock: Callable[[], float], *, max_nonces: int = MAX_NONCES
    ) -> None:
        self.path = path
        self._clock = clock
        self._max_nonces = max_nonces
        self.memory = self._load()

    @classmethod
    def in_state_dir(cls, state_dir: Path, clock: Callable[[], float]) -> NonceFile:
        """The nonce file of a hub whose state directory is ``state_dir``."""
        return cls(state_dir / FILE_NAME, clock)

    def _load(self) -> NonceMemory:
        what = f"command nonce file {self.path}"
        try:
            bound = _HEADER.size + self._max_nonces * _ENTRY.size
            data = read_private_file_up_to(self.path, what, bound)
            if data is None:
                return NonceMemory(max_nonces=self._max_nonces)
            return NonceMemory.from_bytes(data, self._max_nonces)
        except (KeyMaterialError, ValueError) as exc:
            floor_s = int(self._clock()) + MAX_SKEW_S
            reason = exc.reason if isinstance(exc, KeyMaterialError) else str(exc)
            log.error("command_nonces_lost", reason=reason, refused_until_iat_s=floor_s)
            return NonceMemory(floor_s=floor_s, max_nonces=self._max_nonces)

    def admit(self, nonce: bytes, *, issued_at_s: int, expires_at_s: int) -> Admission:
        """Admit ``nonce`` and make the admission durable before returning ``ADMITTED``.

        Raises:
            StorageError: the file could not be written; the nonce is not admitted (the
                command must not run: it could run again after a restart).
        """
        now_s = int(self._clock())
        admission = self.memory.admit(
            nonce, issued_at_s=issued_at_s, expires_at_s=expires_at_s, now_s=now_s
        )
        if admission is Admission.ADMITTED:
            try:
                write_private_file(self.path, self.memory.to_bytes(), "command nonce file")
            except KeyMaterialError as exc:
                self.memory.forget(nonce)
                raise StorageError(str(self.path), "remember_nonce", exc.reason) from None
        return admission


__all__ = [
    "MAX_NONCES",
    "Admission",
    "NonceFile",
    "NonceMemory",
]
