"""What the reference platform holds, durably: readings, envelopes, parked messages, receipts.

One SQLite file (``<state dir>/platform.db``; in memory without a state directory), WAL with
``synchronous=FULL``: a transaction that returned from :meth:`PlatformStore.commit` survives a
crash of the process and of the machine, so the receiver acknowledges a message to the broker
(PUBACK) and sends a receipt only after the commit that stored it.

- ``readings``: one row per reading identity, keyed by (hub, id) as docs/wire-format.md says
  (a conflict record, ``conflict_of`` set, under ``id#conflict-<seq>``: kept apart, never
  merged), with the SHA-256 of the reading's own bytes. A later reading with the same key and
  the same bytes is a *duplicate* (a copy after a reconnect or a restart, in the same or in
  another envelope); with other bytes a *conflicting duplicate*, kept in ``parked`` for review.
- ``envelopes``: every verified envelope once, by its receipt digest, with its seqs and the
  signed bytes (the evidence), and how many times it arrived.
- ``parked``: messages the platform did not accept (failed verification, conflicting
  duplicates), with the reason code: counted, kept, never delivered.
- ``receipts``: the receipts sent (rid, hub, iat, exp, item counts): the rids a platform must
  never reuse, and an audit of what it vouched for.
- ``device_sets``: the device set of every reading stored (docs/platform-protocol.md "Devices
  by reference"), by (hub, digest): the deterministic CBOR of the array of the reading's
  Device resources, stored in the transaction that stores the reading, so a receipt holding
  an envelope vouches that the sets it carried are here; what a version-3 reading naming its
  set by digest is expanded with (:meth:`PlatformStore.device_set`).
- ``hub_certificates``: hub certificates the platform learned while running (a rotation's new
  certificate, :meth:`hil.receiver.Receiver.add_hub_certificate`), DER: a restart loads them
  again beside those it is started with, so a hub's old and new certificates both stay known.

This is test and demo infrastructure: the readings it holds are synthetic. It never logs a
reading's content.
"""

from __future__ import annotations

import enum
import hashlib
import sqlite3
import threading
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Final

import cbor2

from hil.platform_verify import VerifiedEnvelope, VerifiedReading

DB_NAME: Final = "platform.db"

_SCHEMA: Final = """
CREATE TABLE IF NOT EXISTS readings (
    hub TEXT NOT NULL,
    ident TEXT NOT NULL,
    seq INTEGER NOT NULL,
    kind TEXT NOT NULL,
    conflict_of INTEGER,
    reading_sha256 BLOB NOT NULL,
    reading BLOB NOT NULL,
    envelope_digest BLOB NOT NULL,
    received_at REAL NOT NULL,
    PRIMARY KEY (hub, ident)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS envelopes (
    digest BLOB PRIMARY KEY,
    hub TEXT NOT NULL,
    seqs TEXT NOT NULL,
    arrivals INTEGER NOT NULL,
    first_at REAL NOT NULL,
    envelope BLOB NOT NULL
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS parked (
    n INTEGER PRIMARY KEY,
    hub TEXT,
    code TEXT NOT NULL,
    reason TEXT NOT NULL,
    digest BLOB NOT NULL,
    received_at REAL NOT NULL,
    message BLOB NOT NULL
);
CREATE TABLE IF NOT EXISTS device_sets (
    hub TEXT NOT NULL,
    digest BLOB NOT NULL,
    devices BLOB NOT NULL,
    first_at REAL NOT NULL,
    PRIMARY KEY (hub, digest)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS hub_certificates (
    hub TEXT NOT NULL,
    sha256 BLOB NOT NULL,
    der BLOB NOT NULL,
    added_at REAL NOT NULL,
    PRIMARY KEY (hub, sha256)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS receipts (
    rid BLOB PRIMARY KEY,
    hub TEXT NOT NULL,
    iat INTEGER NOT NULL,
    exp INTEGER NOT NULL,
    held INTEGER NOT NULL,
    refused INTEGER NOT NULL
) WITHOUT ROWID;
"""


class Outcome(enum.Enum):
    """What storing one reading found."""

    NEW = "new"
    DUPLICATE = "duplicate"
    """The same reading (same key, same bytes) is held already."""
    CONFLICTING = "conflicting"
    """The key is held with other bytes: parked for review, not delivered."""


class PlatformStore:
    """The receiver's database; every method is thread-safe (one connection, one lock).

    Writes happen inside :meth:`transaction` (one commit, durable when it returns).
    """

    def __init__(self, path: Path | None) -> None:
        self.path = path
        self._lock = threading.RLock()
        self._db = sqlite3.connect(
            ":memory:" if path is None else str(path),
            isolation_level=None,
            check_same_thread=False,
        )
        if path is not None:
            self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=FULL")
        self._db.executescript(_SCHEMA)

    @classmethod
    def in_state_dir(cls, state_dir: Path | None) -> PlatformStore:
        """The store in ``state_dir`` (created 0700), or in memory when None."""
        if state_dir is None:
            return cls(None)
        state_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
        return cls(state_dir / DB_NAME)

    def close(self) -> None:
        """Close the connection."""
        with self._lock:
            self._db.close()

    @contextmanager
    def transaction(self) -> Iterator[None]:
        """One write transaction, committed (durably) on a normal exit, rolled back else."""
        with self._lock:
            self._db.execute("BEGIN IMMEDIATE")
            try:
                yield
            except BaseException:
                self._db.execute("ROLLBACK")
                raise
            self._db.execute("COMMIT")

    # -- writes (inside a transaction) ----------------------------------------------------

    def store_envelope(self, envelope: VerifiedEnvelope, now: float) -> list[Outcome]:
        """Store a verified envelope's readings; what each one was, in order."""
        digest = envelope.digest
        updated = self._db.execute(
            "UPDATE envelopes SET arrivals = arrivals + 1 WHERE digest = ?", (digest,)
        ).rowcount
        if not updated:
            self._db.execute(
                "INSERT INTO envelopes VALUES (?, ?, ?, 1, ?, ?)",
                (digest, envelope.hub_id, _seqs_text(envelope.seqs), now, envelope.envelope),
            )
        for reading in envelope.readings:
            if reading.device_set is not None:  # one named by reference is held already
                self._db.execute(
                    "INSERT OR IGNORE INTO device_sets VALUES (?, ?, ?, ?)",
                    (reading.hub_id, *reading.device_set, now),
                )
        return [self._store_reading(r, digest, now) for r in envelope.readings]

    def _store_reading(self, reading: VerifiedReading, digest: bytes, now: float) -> Outcome:
        ident = reading_key(reading)
        sha = hashlib.sha256(reading.reading_bytes).digest()
        row = self._db.execute(
            "SELECT reading_sha256 FROM readings WHERE hub = ? AND ident = ?",
            (reading.hub_id, ident),
        ).fetchone()
        if row is None:
            self._db.execute(
                "INSERT INTO readings VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
                (
                    reading.hub_id,
                    ident,
                    reading.seq,
                    reading.kind,
                    reading.conflict_of,
                    sha,
                    reading.reading_bytes,
                    digest,
                    now,
                ),
            )
            return Outcome.NEW
        if row[0] == sha:
            return Outcome.DUPLICATE
        self.park(
            reading.hub_id, "id_conflict", CONFLICTING_REASON, reading.reading_bytes, digest, now
        )
        return Outcome.CONFLICTING

    def park(
        self,
        hub: str | None,
        code: str,
        reason: str,
        message: bytes,
        digest: bytes,
        now: float,
    ) -> None:
        """Keep a message the platform did not accept (not delivered, counted)."""
        self._db.execute(
            "INSERT INTO parked (hub, code, reason, digest, received_at, message) "
            "VALUES (?, ?, ?, ?, ?, ?)",
            (hub, code, reason, digest, now, message),
        )

    def record_receipt(
        self, rid: bytes, hub: str, iat: int, exp: int, held: int, refused: int
    ) -> None:
        """Remember a receipt sent (its own transaction)."""
        with self.transaction():
            self._db.execute(
                "INSERT INTO receipts VALUES (?, ?, ?, ?, ?, ?)",
                (rid, hub, iat, exp, held, refused),
            )

    def add_hub_certificate(self, hub: str, der: bytes, now: float) -> bool:
        """Remember a hub certificate (its own durable transaction); False if held already.
        The caller checks it (:meth:`hil.platform_verify.HubDirectory.check`)."""
        with self.transaction():
            cursor = self._db.execute(
                "INSERT OR IGNORE INTO hub_certificates VALUES (?, ?, ?, ?)",
                (hub, hashlib.sha256(der).digest(), der, now),
            )
        return cursor.rowcount == 1

    # -- reads ----------------------------------------------------------------------------

    def device_set(self, hub: str, digest: bytes) -> list[dict[str, Any]] | None:
        """The Device resources of ``hub``'s device set ``digest``, None when not held (a
        :data:`hil.platform_verify.DeviceSetLookup`)."""
        with self._lock:
            row = self._db.execute(
                "SELECT devices FROM device_sets WHERE hub = ? AND digest = ?", (hub, digest)
            ).fetchone()
        if row is None:
            return None
        devices = cbor2.loads(row[0])
        return devices if isinstance(devices, list) else None

    def forget_device_sets(self, hub: str | None = None) -> int:
        """Drop the device sets of ``hub`` (every hub's when None), as a platform that lost
        them would; how many were dropped (tests of ``unknown_device``)."""
        with self.transaction():
            if hub is None:
                cursor = self._db.execute("DELETE FROM device_sets")
            else:
                cursor = self._db.execute("DELETE FROM device_sets WHERE hub = ?", (hub,))
        return cursor.rowcount

    def hub_certificates(self) -> list[tuple[str, bytes]]:
        """``(hub, DER)`` of every certificate remembered, in the order they were added."""
        with self._lock:
            rows = self._db.execute(
                "SELECT hub, der FROM hub_certificates ORDER BY added_at, hub, sha256"
            ).fetchall()
        return [(str(hub), bytes(der)) for hub, der in rows]

    def count(self, table: str) -> int:
        """Rows of one of the tables (readings, envelopes, parked, receipts, hub_certificates,
        device_sets)."""
        tables = ("readings", "envelopes", "parked", "receipts", "hub_certificates", "device_sets")
        if table not in tables:
            raise ValueError(f"no table {table!r}")
        with self._lock:
            (n,) = self._db.execute(f"SELECT count(*) FROM {table}").fetchone()  # noqa: S608
        return int(n)

    def seqs(self, hub: str) -> list[int]:
        """The seqs of the readings held for ``hub``, ascending."""
        with self._lock:
            rows = self._db.execute(
                "SELECT seq FROM readings WHERE hub = ? ORDER BY seq", (hub,)
            ).fetchall()
        return [int(r[0]) for r in rows]

    def arrivals(self, digest: bytes) -> int:
        """How many times the envelope with this receipt digest arrived (0: never)."""
        with self._lock:
            row = self._db.execute(
                "SELECT arrivals FROM envelopes WHERE digest = ?", (digest,)
            ).fetchone()
        return 0 if row is None else int(row[0])

    def rid_used(self, rid: bytes) -> bool:
        """Whether a receipt with this id was sent."""
        with self._lock:
            row = self._db.execute("SELECT 1 FROM receipts WHERE rid = ?", (rid,)).fetchone()
        return row is not None

    def parked_codes(self) -> list[str]:
        """The reason codes of the parked messages, in arrival order."""
        with self._lock:
            rows = self._db.execute("SELECT code FROM parked ORDER BY n").fetchall()
        return [str(r[0]) for r in rows]


CONFLICTING_REASON: Final = "id already received with a different envelope"


def reading_key(reading: VerifiedReading) -> str:
    """The identity a reading is deduplicated by (docs/wire-format.md)."""
    if reading.conflict_of is not None:
        return f"{reading.id}#conflict-{reading.seq}"
    return reading.id


def _seqs_text(seqs: Sequence[int]) -> str:
    return ",".join(str(s) for s in seqs)


def now_s() -> float:
    """Wall-clock seconds, for ``received_at``."""
    return time.time()
