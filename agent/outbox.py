"""The durable, encrypted outbox: SQLite on disk, one sealed record per reading envelope.

Theory of operation
-------------------
A reading is *stored* when :meth:`Outbox.append` returns. That call runs one SQLite
transaction (``BEGIN IMMEDIATE`` … ``COMMIT``) that checks the dedup key, allocates the next
hub-wide sequence number, lets the caller build and sign the envelope with that number
inside it, seals it, inserts it and records the dedup key. The database runs with
``journal_mode=WAL`` and ``synchronous=FULL``: in WAL mode ``NORMAL`` "might roll back
following a power loss" (SQLite pragma docs; reliability-catalogue.md finding 3), ``FULL``
fsyncs the WAL at every commit. Both pragmas are read back at open and the outbox refuses to
run if they were not honoured. BlueZ confirms an indication before we have stored it
(finding 4), so this commit is kept short and is the only durability point.

Record states::

    append ──► pending ──mark_delivered_many──► (deleted)
                  │
                  ├──mark_refused──► refused   (the platform refused it for good: kept,
                  │                              never re-sent automatically, reported)
                  └──does not open──► damaged  (altered or under an erased key: kept for
                                                 forensics, never sent)

What is *in flight* (handed to the uplink, PUBACK not yet seen) is the publisher's memory,
not a database state: :meth:`Outbox.pending_after` reads pending records past a cursor
without writing, so keeping the MQTT window full costs no fsync. After a restart or a
disconnect every pending record is sent again with the same sealed bytes (the platform
dedups by ``(hub, seq)``). Paho keeps its queue in RAM only (finding 2), so this table, not
paho, is the source of truth.

Kind: a record's kind (``observation``, ``device_qc``…) can reveal a condition (a glucose
control-solution test means diabetes), so it is sealed with the body; in clear the row says
only whether it is clinical (``class``), which the quota's shedding needs, and that column
is bound into the seal's associated data so it cannot be flipped.

Sequence numbers come from a counter row, not from SQLite's rowid, so they are never
reused after deletes or restarts (a number whose transaction rolled back was never
visible, and is handed out again). They live in 1..2**63-1, SQLite's INTEGER range.

Dedup and conflicts: the caller's dedup key (the reading's *identity*: device, patient, code
and the record's sequence number or its content; identifying) and the digest of what the
device sent are stored only as keyed hashes (:meth:`agent.sealing.Sealer.keyed_hash`) in
``seen``. The same identity with the same digest is a re-send: a duplicate, not stored
again. The same identity with another digest is a *conflict*: stored under a new sequence
number, its envelope built with ``conflict_of`` (the first record's seq), and reported; a
conflict is never discarded. A ``seen`` entry outlives its record, so a cuff that re-sends an
old reading after delivery is still recognised. ``seen`` is bounded by
:data:`SEEN_MAX_ENTRIES`, measured in sequence numbers rather than wall time because the
hub clock can be wrong at boot (catalogue D7): entries more than that many sequence numbers
old are pruned, except those whose record is still undelivered.

Errors: ``sqlite3`` errors become :class:`StorageFullError` (``SQLITE_FULL``, which SQLite
reports for ``ENOSPC``), :class:`StorageCorruptError` (``SQLITE_CORRUPT``,
``SQLITE_NOTADB``) or :class:`StorageError`, with ``path`` and ``operation`` as fields. A
record larger than :data:`MAX_RECORD_BYTES` raises :class:`RecordTooLargeError`, a
:class:`LocalError`: the pipeline built it, and retrying cannot help.

Corruption: :meth:`Outbox.open` runs ``PRAGMA quick_check`` and raises
:class:`StorageCorruptError` when it fails. :func:`open_or_quarantine` (what the daemon
calls) then moves the file and its ``-wal``/``-shm`` aside to ``<name>.corrupt-<UTC time>``
for inspection, opens a fresh outbox and logs ``outbox_quarantined`` (catalogue D5): never
a crash loop. The fresh file's sequence counter starts above anything the old one can have
handed out (:func:`open_or_quarantine`), so a (hub, seq) is never reused.

Quota: ``quota_bytes`` bounds the bytes the live pages of the database hold (pages in use,
not the free list; the WAL is bounded separately by :data:`JOURNAL_SIZE_LIMIT_BYTES`). At
:data:`CRITICAL_FRACTION` of it the outbox is *critical*: ``storage_critical`` is logged
once, non-clinical kinds (:data:`NON_CLINICAL_KINDS`: telemetry, logs) are refused and
those still pending are shed (deleted unsent). Clinical records are never deleted unsent:
past the quota itself, appends of any kind fail with :class:`StorageFullError` and roll
back whole, so a device that keeps its own records (RACP) keeps them, because its
high-water mark, committed in the same transaction, does not advance.

The API is synchronous and each call is one short transaction (one fsync per call, so batch
with :meth:`Outbox.append_many` and :meth:`Outbox.mark_delivered_many`). The daemon never
calls it from the event loop: one named thread owns the connection and the keys
(:mod:`agent.storage`), behind an async facade.

Schema versions: 1 (kind in clear, an ``in_flight`` state) is migrated to 2 at open, in one
transaction: every record is re-sealed with its kind inside, in-flight rows go back to
pending, ``seen`` gains the content hash (empty for entries from version 1: those match any
content, so a reading stored before the upgrade is still a duplicate, never a conflict).
"""

from __future__ import annotations

import contextlib
import enum
import os
import re
import sqlite3
import time
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Final, TypeVar

import structlog

from agent.errors import (
    IntegrityError,
    RecordTooLargeError,
    StorageCorruptError,
    StorageError,
    StorageFullError,
    StorageUnusableError,
)
from agent.sealing import Sealer, record_aad, sync_state_aad

log = structlog.get_logger(__name__)

T = TypeVar("T")

SCHEMA_VERSION: Final = 2
"""``PRAGMA user_version`` of the schema this code writes (see :data:`_MIGRATIONS`)."""

APPLICATION_ID: Final = 0x48484F42
"""``PRAGMA application_id`` ("HHOB"): marks the file as a homehub outbox."""

MAX_RECORD_BYTES: Final = 64 * 1024
"""Bound on one record's plaintext. A BP envelope is ~2 KiB; payloads are capped at 32 KiB
(agent/payload.py) and a COSE_Sign1 adds < 100 B, so 64 KiB leaves room without letting
one record swamp the card."""

MAX_BATCH: Final = 1000
"""Most records one :meth:`Outbox.append_many`, :meth:`Outbox.pending_after` or
:meth:`Outbox.mark_delivered_many` handles: a RACP dump of a full glucometer memory fits in
one transaction."""

MAX_DEDUP_KEY_BYTES: Final = 1024
MAX_SYNC_STATE_BYTES: Final = 4096

SEEN_MAX_ENTRIES: Final = 100_000
"""Dedup memory, in sequence numbers: about 27 years at 10 readings a day, far more than any
device's own memory can replay; ≈ 10 MB of hashes at most."""

MAX_SEQ: Final = 2**63 - 1
"""SQLite INTEGER is a signed 64-bit value."""

BUSY_TIMEOUT_MS: Final = 1000
"""How long a statement waits for another connection's lock (e.g. ``homehub status``
reading). Short: the daemon is the only writer, and its storage thread must not stall."""

JOURNAL_SIZE_LIMIT_BYTES: Final = 64 * 1024 * 1024
"""WAL size kept after a checkpoint (catalogue O5: WAL ≤ 64 MB)."""

WAL_AUTOCHECKPOINT_BYTES: Final = 16 * 1024 * 1024
"""Backstop: the WAL size at which SQLite checkpoints inside a commit by itself.

Checkpoints are the storage thread's idle work (:meth:`Outbox.checkpoint_if_due`, run by
:class:`agent.storage.StorageThread` when no call waits): SQLite's own automatic one (every
1,000 pages, ≈ 250 glucose readings here) ran inside whichever commit crossed the mark and
held that reading and the four behind it for 40-120 ms (hil/bench/ble.py). This backstop
only acts when the thread never idles (or an outbox is used without it) and keeps the WAL
a quarter of :data:`JOURNAL_SIZE_LIMIT_BYTES`; its stall is then that size's copy (an
overloaded hub's latency is already the queue's)."""

CHECKPOINT_AFTER_COMMITS: Final = 32
"""Write transactions after which an idle checkpoint is due. A glucose reading's commit
appends ≈ 8 WAL frames; checkpointing 32 commits' frames (≈ 300 pages) took ≈ 2.7 ms here
(8 commits' 0.9 ms), so a reading arriving during one waits a few ms at most, against
40-120 ms behind SQLite's own 1,000-page one. Every 8 commits cost a quarter of the
single-reading store rate (the database file's fsync each time: hil/bench/outbox.py
≈ 880/s against ≈ 1,150/s); every 32 costs nothing measurable there."""

DEFAULT_QUOTA_BYTES: Final = 256 * 1024 * 1024
"""Default bound on the outbox's live data (config ``outbox.quota_bytes``). A sealed BP
envelope with its row and index entries takes ≈ 5.6 KB on disk (hil/bench/outbox.py), so
256 MiB hold ≈ 48,000 readings: 13 years of 10 readings a day, or a month of oximetry
summaries at one a minute, undelivered; and 256 MiB + the 64 MiB WAL is a small share of
even an 8 GB SD card."""

CRITICAL_FRACTION: Final = 0.9
"""Share of the quota at which the outbox turns critical (``storage_critical``, non-clinical
kinds shed): leaves 10 % (≈ 25 MiB by default, ≈ 5,000 readings) for clinical records
before the hard limit."""

NON_CLINICAL_KINDS: Final = frozenset({"telemetry", "log"})
"""Kinds that may be refused and shed under storage pressure; every other kind is clinical
(the safe default for a kind this table does not know)."""

CLASS_CLINICAL: Final = "clinical"
CLASS_OTHER: Final = "other"
"""The only things the clear ``class`` column can say (see the module docstring)."""

MAX_KIND_BYTES: Final = 32
"""A kind is a short token (:data:`_NAME_RE`); one length octet frames it in the seal."""

# SQLite primary result codes (sqlite.org/rescode.html); extended codes keep them in the
# low byte.
_SQLITE_CORRUPT: Final = 11
_SQLITE_FULL: Final = 13
_SQLITE_NOTADB: Final = 26
_SYNCHRONOUS_FULL: Final = 2

_CONTENT_HASH_LABEL: Final = b"content\x00"
"""Prefix that keeps a content hash apart from an identity hash under the same subkey."""

_NAME_RE: Final = re.compile(r"^[a-z0-9][a-z0-9_.-]{0,31}$")
"""Kinds, device labels and sync-state keys: short tokens, stored in clear. No ':' so a
Bluetooth address cannot be used as a device name by mistake."""

_SCHEMA_V1: Final = (
    """CREATE TABLE meta (
        name  TEXT PRIMARY KEY,
        value TEXT NOT NULL
    ) WITHOUT ROWID""",
    """CREATE TABLE counters (
        name  TEXT PRIMARY KEY,
        value INTEGER NOT NULL
    ) WITHOUT ROWID""",
    """CREATE TABLE records (
        seq        INTEGER PRIMARY KEY,
        kind       TEXT NOT NULL,
        state      TEXT NOT NULL CHECK (state IN ('pending', 'in_flight', 'damaged')),
        sealed     BLOB NOT NULL,
        created_at REAL NOT NULL,
        attempts   INTEGER NOT NULL DEFAULT 0
    )""",
    "CREATE INDEX records_by_state ON records (state, seq)",
    """CREATE TABLE seen (
        dedup_hash BLOB PRIMARY KEY,
        seq        INTEGER,
        seen_at    REAL NOT NULL
    ) WITHOUT ROWID""",
    "CREATE INDEX seen_by_seq ON seen (seq)",
    """CREATE TABLE sync_state (
        device     TEXT NOT NULL,
        key        TEXT NOT NULL,
        sealed     BLOB NOT NULL,
        updated_at REAL NOT NULL,
        PRIMARY KEY (device, key)
    ) WITHOUT ROWID""",
    "INSERT INTO counters (name, value) VALUES ('next_seq', 1)",
)
"""Version 1, kept as written so that an old file and a new one migrate the same way."""

_RECORDS_V2: Final = """CREATE TABLE records_v2 (
        seq        INTEGER PRIMARY KEY,
        class      TEXT NOT NULL CHECK (class IN ('clinical', 'other')),
        state      TEXT NOT NULL CHECK (state IN ('pending', 'damaged', 'refused')),
        sealed     BLOB NOT NULL,
        created_at REAL NOT NULL,
        attempts   INTEGER NOT NULL DEFAULT 0,
        refused_rc INTEGER
    )"""

_SEEN_V2: Final = """CREATE TABLE seen_v2 (
        dedup_hash   BLOB NOT NULL,
        content_hash BLOB NOT NULL,
        seq          INTEGER,
        seen_at      REAL NOT NULL,
        PRIMARY KEY (dedup_hash, content_hash)
    ) WITHOUT ROWID"""


@dataclass(frozen=True, slots=True)
class _MigrationContext:
    """What a migration step may need besides the connection."""

    sealer: Sealer
    hub_id: str


def _migrate_0_to_1(conn: sqlite3.Connection, _ctx: _MigrationContext) -> None:
    """Create the version-1 schema in an empty database."""
    for statement in _SCHEMA_V1:
        conn.execute(statement)


def _migrate_1_to_2(conn: sqlite3.Connection, ctx: _MigrationContext) -> None:
    """Kind into the seal, a ``refused`` state, in-flight back to pending, content hashes.

    Every record is opened under its version-1 associated data and sealed again with its
    kind inside (:func:`_seal_record`); one that does not open is kept as it is, damaged.
    ``attempts`` starts again at 0: version 1 counted claims (sends), version 2 counts
    transient refusals, and a count carried over would refuse a record for good at its
    first transient refusal.
    """
    conn.execute(_RECORDS_V2)
    rows = conn.execute("SELECT seq, kind, state, sealed, created_at FROM records ORDER BY seq")
    for seq, kind, state, sealed, created_at in rows.fetchall():
        klass = _record_class(kind)
        try:
            body = ctx.sealer.open(sealed, aad=record_aad(ctx.hub_id, seq, kind))
        except (IntegrityError, ValueError):
            state, resealed = "damaged", sealed
        else:
            state = "damaged" if state == "damaged" else "pending"
            resealed = _seal_record(ctx.sealer, ctx.hub_id, seq, klass, kind, body)
        conn.execute(
            "INSERT INTO records_v2 (seq, class, state, sealed, created_at) VALUES (?, ?, ?, ?, ?)",
            (seq, klass, state, resealed, created_at),
        )
    conn.execute("DROP TABLE records")
    conn.execute("ALTER TABLE records_v2 RENAME TO records")
    conn.execute("CREATE INDEX records_by_state ON records (state, seq)")
    conn.execute(_SEEN_V2)
    conn.execute(
        "INSERT INTO seen_v2 (dedup_hash, content_hash, seq, seen_at) "
        "SELECT dedup_hash, x'', seq, seen_at FROM seen"
    )
    conn.execute("DROP TABLE seen")
    conn.execute("ALTER TABLE seen_v2 RENAME TO seen")
    conn.execute("CREATE INDEX seen_by_seq ON seen (seq)")


_MIGRATIONS: Final[Mapping[int, Callable[[sqlite3.Connection, _MigrationContext], None]]] = {
    0: _migrate_0_to_1,
    1: _migrate_1_to_2,
}
"""``from user_version`` → step to ``from + 1``. All pending steps run in one transaction
with the ``user_version`` update, so an upgrade is all-or-nothing (catalogue U3)."""


def _record_class(kind: str) -> str:
    return CLASS_OTHER if kind in NON_CLINICAL_KINDS else CLASS_CLINICAL


def _seal_record(
    sealer: Sealer, hub_id: str, seq: int, klass: str, kind: str, body: bytes
) -> bytes:
    """Seal ``kind`` and ``body`` together: ``u8 len ‖ kind ‖ body``, bound to hub, seq and
    the clear class column."""
    raw_kind = kind.encode("ascii")
    if not 0 < len(raw_kind) <= MAX_KIND_BYTES:
        raise ValueError(f"kind must be 1..{MAX_KIND_BYTES} bytes")
    return sealer.seal(bytes([len(raw_kind)]) + raw_kind + body, aad=record_aad(hub_id, seq, klass))


def _open_record(
    sealer: Sealer, hub_id: str, seq: int, klass: str, sealed: bytes
) -> tuple[str, bytes]:
    """Open a version-2 record: its kind and body. IntegrityError/ValueError if it does not."""
    plain = sealer.open(sealed, aad=record_aad(hub_id, seq, klass))
    size = plain[0] if plain else 0
    if not 0 < size <= MAX_KIND_BYTES or len(plain) < 1 + size:
        raise IntegrityError(f"outbox seq {seq}", "record framing is wrong")
    try:
        kind = plain[1 : 1 + size].decode("ascii")
    except UnicodeDecodeError:
        raise IntegrityError(f"outbox seq {seq}", "record kind is not ASCII") from None
    return kind, plain[1 + size :]


class AppendStatus(enum.Enum):
    """What :meth:`Outbox.append_many` did with one item."""

    STORED = "stored"
    DUPLICATE = "duplicate"
    """The same identity with the same content was stored before: a re-send, not stored."""
    CONFLICT = "conflict"
    """The same identity with other content: stored under a new seq, reported."""


@dataclass(frozen=True, slots=True)
class AppendItem:
    """One record for :meth:`Outbox.append_many`.

    ``make_record(seq)`` builds the body (the signed envelope) once the seq is allocated;
    ``make_conflict(seq, first_seq)``, when given, builds it for a conflict (the envelope
    then names the first record). ``content_digest`` is what the device sent (empty: unknown,
    so a known identity is always a duplicate).
    """

    kind: str
    dedup_key: str
    make_record: Callable[[int], bytes]
    content_digest: bytes = b""
    make_conflict: Callable[[int, int], bytes] | None = None


@dataclass(frozen=True, slots=True)
class AppendResult:
    """What :meth:`Outbox.append` did with one item.

    ``seq`` is the new record's number (stored, conflict) or, for a duplicate, the number the
    matching copy got (``None`` is reserved for a dedup entry without a record; no version
    writes one). ``conflict_of`` is the first record's seq for a conflict.
    """

    seq: int | None
    status: AppendStatus
    conflict_of: int | None = None

    @property
    def duplicate(self) -> bool:
        """Whether it was a re-send, not stored again."""
        return self.status is AppendStatus.DUPLICATE


@dataclass(frozen=True, slots=True)
class OutboxRecord:
    """One pending record, opened. ``body`` (a signed envelope: PHI) stays out of the repr."""

    seq: int
    kind: str
    body: bytes = field(repr=False)
    created_at: float
    """Hub wall time (Unix seconds) when it was stored."""
    attempts: int
    """How many times the platform refused it transiently so far."""


@dataclass(frozen=True, slots=True)
class OutboxCounts:
    """Outbox depth for health messages and ``homehub status``.

    ``oldest_age_s`` is the age of the oldest pending record by the hub's wall clock, clamped
    at 0, or ``None`` when there is none. ``refused`` records were refused by the platform for
    good and ``damaged`` ones no longer open: both are kept, neither is sent.
    """

    pending: int
    oldest_age_s: float | None
    damaged: int = 0
    refused: int = 0
    used_bytes: int = field(default=0, compare=False)
    """Bytes held by the database's pages in use (what the quota bounds). Not compared: two
    counts are equal when they describe the same records."""


@dataclass(frozen=True, slots=True)
class Durability:
    """The durability pragmas as SQLite reports them on the outbox's connection."""

    journal_mode: str
    synchronous: int
    """0 OFF, 1 NORMAL, 2 FULL, 3 EXTRA."""


def _check_name(value: str, what: str) -> None:
    if not _NAME_RE.fullmatch(value):
        raise ValueError(f"{what} must match {_NAME_RE.pattern}")


def _storage_error(path: Path, operation: str, exc: sqlite3.Error) -> StorageError:
    """Map a sqlite3 error to the hub's storage errors, by result code, never by text."""
    code: int | None = getattr(exc, "sqlite_errorcode", None)
    name: str = getattr(exc, "sqlite_errorname", None) or type(exc).__name__
    primary = code & 0xFF if code is not None else None
    reason = f"{name}: {exc}"
    if primary == _SQLITE_FULL:
        return StorageFullError(str(path), operation, reason)
    if primary in (_SQLITE_CORRUPT, _SQLITE_NOTADB):
        return StorageCorruptError(str(path), operation, reason)
    return StorageError(str(path), operation, reason)


class StorageLevel(enum.Enum):
    """Where the outbox stands against its quota."""

    OK = "ok"
    CRITICAL = "critical"
    """At or past :data:`CRITICAL_FRACTION` of the quota: non-clinical kinds are shed."""
    FULL = "full"
    """At or past the quota: nothing more is stored until records are delivered."""


def storage_level(used_bytes: int, quota_bytes: int) -> StorageLevel:
    """Classify ``used_bytes`` against ``quota_bytes`` (for the outbox and ``homehub status``)."""
    if used_bytes >= quota_bytes:
        return StorageLevel.FULL
    if used_bytes >= quota_bytes * CRITICAL_FRACTION:
        return StorageLevel.CRITICAL
    return StorageLevel.OK


_USED_BYTES_SQL: Final = (
    "SELECT (page_count - freelist_count) * page_size "
    "FROM pragma_page_count(), pragma_freelist_count(), pragma_page_size()"
)
"""The three pragmas in one statement: each statement releases and re-takes the GIL, and
on a hub whose event loop is busy each re-take can wait for it (hil/bench/ble.py)."""


def _used_bytes(conn: sqlite3.Connection) -> int:
    """Bytes in the pages in use, as this connection (or its open transaction) sees them."""
    used: int = conn.execute(_USED_BYTES_SQL).fetchone()[0]
    return used


def _read_counts(conn: sqlite3.Connection, now: float) -> OutboxCounts:
    by_state = {
        state: (count, oldest)
        for state, count, oldest in conn.execute(
            "SELECT state, COUNT(*), MIN(created_at) FROM records GROUP BY state"
        )
    }
    pending, oldest = by_state.get("pending", (0, None))
    return OutboxCounts(
        pending=pending,
        oldest_age_s=max(0.0, now - oldest) if oldest is not None else None,
        damaged=by_state.get("damaged", (0, None))[0],
        refused=by_state.get("refused", (0, None))[0],
        used_bytes=_used_bytes(conn),
    )


class Outbox:
    """The outbox of one hub. Open with :meth:`open`; one instance per process."""

    def __init__(
        self,
        conn: sqlite3.Connection,
        path: Path,
        sealer: Sealer,
        hub_id: str,
        clock: Callable[[], float],
        quota_bytes: int = DEFAULT_QUOTA_BYTES,
    ) -> None:
        """Use :meth:`open`; this only stores an already-checked connection."""
        if quota_bytes <= 0:
            raise ValueError("quota_bytes must be > 0")
        self._conn: sqlite3.Connection | None = conn
        self.path: Final = path
        self.hub_id: Final = hub_id
        self.quota_bytes: Final = quota_bytes
        self._sealer: Final = sealer
        self._clock: Final = clock
        self._level = StorageLevel.OK
        #: Write transactions committed since the last complete checkpoint.
        self.commits_since_checkpoint = 0

    def __repr__(self) -> str:
        return f"Outbox(path={str(self.path)!r}, hub_id={self.hub_id!r})"

    # -- opening and closing ------------------------------------------------------------

    @classmethod
    def open(
        cls,
        path: Path,
        sealer: Sealer,
        hub_id: str,
        *,
        clock: Callable[[], float] = time.time,
        quota_bytes: int = DEFAULT_QUOTA_BYTES,
    ) -> Outbox:
        """Open (creating if needed) the outbox at ``path`` and check it before use.

        Creates the file with mode 0600 (SQLite gives the WAL and shm files the same mode),
        runs ``PRAGMA quick_check`` (:class:`StorageCorruptError` if not ``ok``: the
        quarantine hook), sets and reads back ``journal_mode=WAL`` and ``synchronous=FULL``
        (:class:`StorageError` if not honoured), migrates the schema, and refuses a file
        that belongs to another hub. ``clock`` gives hub wall time (Unix seconds).
        """
        record_aad(hub_id, 0, "check")  # validates hub_id (non-empty, bounded)
        try:
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o600)
        except FileExistsError:
            pass
        except OSError as exc:
            raise StorageError(str(path), "open", f"cannot create: {exc.strerror}") from None
        else:
            os.close(fd)
            try:
                _fsync_dir(path.parent)
            except OSError as exc:
                raise StorageError(str(path), "open", f"cannot sync: {exc.strerror}") from None
        try:
            conn = sqlite3.connect(str(path), timeout=BUSY_TIMEOUT_MS / 1000, isolation_level=None)
        except sqlite3.Error as exc:
            raise _storage_error(path, "open", exc) from exc
        try:
            cls._prepare(conn, path, _MigrationContext(sealer, hub_id), clock)
        except BaseException:
            conn.close()
            raise
        outbox = cls(conn, path, sealer, hub_id, clock, quota_bytes)
        try:
            outbox.prune_seen()
            counts = outbox.counts()
        except BaseException:
            outbox.close()
            raise
        log.info(
            "outbox_opened",
            path=str(path),
            key_id=sealer.key_id,
            pending=counts.pending,
            refused=counts.refused,
            damaged=counts.damaged,
            used_bytes=counts.used_bytes,
            quota_bytes=quota_bytes,
        )
        outbox._note_level(counts.used_bytes)
        return outbox

    @staticmethod
    def _prepare(
        conn: sqlite3.Connection,
        path: Path,
        ctx: _MigrationContext,
        clock: Callable[[], float],
    ) -> None:
        operation = "open"
        try:
            check = conn.execute("PRAGMA quick_check").fetchall()
            if check != [("ok",)]:
                # Quarantine hook (later issue): the caller sets the file aside.
                raise StorageCorruptError(str(path), operation, "quick_check failed")
            app_id = conn.execute("PRAGMA application_id").fetchone()[0]
            if app_id not in (0, APPLICATION_ID):
                raise StorageUnusableError(
                    str(path), operation, f"not a homehub outbox (0x{app_id:08x})"
                )
            conn.execute("PRAGMA trusted_schema = OFF")
            # While migrating, freed content is zeroed whatever the build's default: the 1→2
            # migration drops rows that held kinds in clear (set to FAST after it).
            conn.execute("PRAGMA secure_delete = ON")
            mode = conn.execute("PRAGMA journal_mode = WAL").fetchone()[0]
            conn.execute("PRAGMA synchronous = FULL")
            synchronous = conn.execute("PRAGMA synchronous").fetchone()[0]
            if str(mode).lower() != "wal" or synchronous != _SYNCHRONOUS_FULL:
                raise StorageUnusableError(
                    str(path),
                    operation,
                    f"durability not honoured: journal_mode={mode}, synchronous={synchronous}",
                )
            conn.execute(f"PRAGMA journal_size_limit = {JOURNAL_SIZE_LIMIT_BYTES}")
            page_size: int = conn.execute("PRAGMA page_size").fetchone()[0]
            conn.execute(f"PRAGMA wal_autocheckpoint = {WAL_AUTOCHECKPOINT_BYTES // page_size}")
            _migrate(conn, path, ctx, clock)
            # From now on only sealed records are deleted: zero what costs no extra I/O
            # (FAST; ON zeroes every freed overflow page and made a delivered record's delete
            # 2.5 times as costly, hil/bench/drain.py). Their ciphertext left in free pages
            # opens only with the data key, which factory reset destroys.
            conn.execute("PRAGMA secure_delete = FAST")
        except sqlite3.Error as exc:
            raise _storage_error(path, operation, exc) from exc

    def close(self) -> None:
        """Close the database; idempotent. Everything appended is already durable."""
        if self._conn is not None:
            conn, self._conn = self._conn, None
            conn.close()
            log.info("outbox_closed", path=str(self.path))

    def __enter__(self) -> Outbox:
        return self

    def __exit__(self, *_exc: object) -> None:
        self.close()

    def durability(self) -> Durability:
        """The journal mode and synchronous level in force on this connection."""
        conn = self._connection("durability")
        try:
            mode = conn.execute("PRAGMA journal_mode").fetchone()[0]
            synchronous = conn.execute("PRAGMA synchronous").fetchone()[0]
        except sqlite3.Error as exc:
            raise _storage_error(self.path, "durability", exc) from exc
        return Durability(journal_mode=str(mode), synchronous=int(synchronous))

    # -- storing ------------------------------------------------------------------------

    def append(
        self,
        kind: str,
        dedup_key: str,
        make_record: Callable[[int], bytes],
        *,
        content_digest: bytes = b"",
    ) -> AppendResult:
        """Store one record durably, unless the same identity and content were seen before.

        In one transaction: a duplicate (``dedup_key`` seen with the same ``content_digest``)
        returns its seq without calling ``make_record``; otherwise the next sequence number is
        allocated, ``make_record(seq)`` builds the body (the signed envelope, carrying
        ``seq``), which is sealed with its kind and stored as pending, and the identity and
        content hashes are recorded. A known identity with another digest is a conflict
        (:class:`AppendStatus`). When this returns, the record is on disk. If ``make_record``
        raises, nothing is stored and the exception propagates.
        """
        item = AppendItem(kind, dedup_key, make_record, content_digest)
        return self.append_many([item])[0]

    def append_many(
        self,
        items: Sequence[AppendItem | tuple[str, str, Callable[[int], bytes]]],
        *,
        sync_state: Mapping[tuple[str, str], bytes] | None = None,
    ) -> list[AppendResult]:
        """:meth:`append` for several records in one transaction (one fsync), all or none.

        ``sync_state`` maps ``(device, key)`` to a value committed in the same transaction,
        e.g. a glucometer's RACP high-water mark, so the cursor never runs ahead of (or
        behind) the readings it covers. An identity repeated within ``items`` is judged
        against the earlier item (duplicate or conflict) as if appended one by one.
        """
        if len(items) > MAX_BATCH:
            raise ValueError(f"at most {MAX_BATCH} records per batch")
        batch = [i if isinstance(i, AppendItem) else AppendItem(*i) for i in items]
        for item in batch:
            _check_name(item.kind, "kind")
            if not 0 < len(item.dedup_key.encode("utf-8")) <= MAX_DEDUP_KEY_BYTES:
                raise ValueError(f"dedup_key must be 1..{MAX_DEDUP_KEY_BYTES} bytes")
        states = [(d, k, v) for (d, k), v in (sync_state or {}).items()]
        for device, key, value in states:
            self._check_sync_state(device, key, value)
        if self._pressure() is not StorageLevel.OK:
            self._shed_non_clinical()
            refused = sorted({i.kind for i in batch if i.kind in NON_CLINICAL_KINDS})
            if refused:
                raise StorageFullError(
                    str(self.path), "append", f"storage critical: kind {refused[0]} shed"
                )
        with self._transaction("append") as conn:
            before = _used_bytes(conn)
            results = [self._append_one(conn, item) for item in batch]
            for device, key, value in states:
                self._put_sync_state(conn, device, key, value)
            after = _used_bytes(conn)
            if after > self.quota_bytes and after > before:
                self._note_level(after)
                raise StorageFullError(
                    str(self.path), "append", f"quota of {self.quota_bytes} bytes reached"
                )
        self._note_level(after)
        return results

    def _pressure(self) -> StorageLevel:
        """The quota level now (read outside any transaction: one statement)."""
        conn = self._connection("append")
        try:
            used = _used_bytes(conn)
        except sqlite3.Error as exc:
            raise _storage_error(self.path, "append", exc) from exc
        self._note_level(used)
        return self._level

    def _shed_non_clinical(self) -> int:
        """Delete pending non-clinical records (telemetry, logs): shed first under pressure.

        Its own transaction, so the shedding stands even when the append that follows is
        refused. Clinical kinds are never touched: a row is deleted only if it opens under
        class ``other`` (the class is bound into the seal), so a clinical row whose clear
        class was flipped is set aside as damaged instead of being deleted unsent.
        """
        with self._transaction("shed") as conn:
            rows = conn.execute(
                "SELECT seq, sealed FROM records WHERE state = 'pending' AND class = ?",
                (CLASS_OTHER,),
            ).fetchall()
            doomed: list[tuple[int]] = []
            bad: list[int] = []
            for seq, sealed in rows:
                try:
                    _open_record(self._sealer, self.hub_id, seq, CLASS_OTHER, sealed)
                except (IntegrityError, ValueError):
                    bad.append(seq)
                else:
                    doomed.append((seq,))
            shed: int = conn.executemany("DELETE FROM records WHERE seq = ?", doomed).rowcount
            conn.executemany(
                "UPDATE records SET state = 'damaged' WHERE seq = ?", [(s,) for s in bad]
            )
        if bad:
            log.error("outbox_record_damaged", path=str(self.path), seqs=bad[:10], count=len(bad))
        if shed:
            log.warning("outbox_shed", path=str(self.path), records=shed)
        return shed

    def _note_level(self, used_bytes: int) -> None:
        """Log the quota level when it changes (``storage_critical`` before the hard limit)."""
        level = storage_level(used_bytes, self.quota_bytes)
        if level is self._level:
            return
        previous, self._level = self._level, level
        fields = {"path": str(self.path), "used_bytes": used_bytes, "quota_bytes": self.quota_bytes}
        if level is StorageLevel.OK:
            log.info("storage_ok", previous=previous.value, **fields)
        elif level is StorageLevel.CRITICAL:
            log.warning("storage_critical", previous=previous.value, **fields)
        else:
            log.error("storage_full", previous=previous.value, **fields)

    @property
    def level(self) -> StorageLevel:
        """The quota level as of the last append, delivery or open."""
        return self._level

    def _append_one(self, conn: sqlite3.Connection, item: AppendItem) -> AppendResult:
        dedup_hash = self._sealer.keyed_hash(item.dedup_key.encode("utf-8"))
        content_hash = (
            self._sealer.keyed_hash(_CONTENT_HASH_LABEL + item.content_digest)
            if item.content_digest
            else b""
        )
        known = conn.execute(
            "SELECT seq, content_hash FROM seen WHERE dedup_hash = ? ORDER BY seq",
            (dedup_hash,),
        ).fetchall()
        for seq_seen, hash_seen in known:
            # An empty hash on either side (an entry from schema 1, a caller without a
            # digest) cannot tell content apart: a duplicate, never a conflict.
            if hash_seen == content_hash or not hash_seen or not content_hash:
                return AppendResult(seq=seq_seen, status=AppendStatus.DUPLICATE)
        # One statement, not a read and a write (each statement is a GIL round trip on a
        # busy hub). Past MAX_SEQ the sum overflows into a REAL: refused, rolled back.
        following = conn.execute(
            "UPDATE counters SET value = value + 1 WHERE name = 'next_seq' RETURNING value"
        ).fetchone()[0]
        if not isinstance(following, int) or following > MAX_SEQ:
            raise StorageUnusableError(str(self.path), "append", "sequence exhausted")
        seq = following - 1
        first: int | None = known[0][0] if known else None
        if first is not None and item.make_conflict is not None:
            body = item.make_conflict(seq, first)
        else:
            body = item.make_record(seq)
        if len(body) > MAX_RECORD_BYTES:
            raise RecordTooLargeError(item.kind, len(body), MAX_RECORD_BYTES)
        klass = _record_class(item.kind)
        sealed = _seal_record(self._sealer, self.hub_id, seq, klass, item.kind, body)
        now = self._clock()
        conn.execute(
            "INSERT INTO records (seq, class, state, sealed, created_at) "
            "VALUES (?, ?, 'pending', ?, ?)",
            (seq, klass, sealed, now),
        )
        conn.execute(
            "INSERT INTO seen (dedup_hash, content_hash, seq, seen_at) VALUES (?, ?, ?, ?)",
            (dedup_hash, content_hash, seq, now),
        )
        if first is not None:
            return AppendResult(seq=seq, status=AppendStatus.CONFLICT, conflict_of=first)
        return AppendResult(seq=seq, status=AppendStatus.STORED)

    # -- sync state ---------------------------------------------------------------------

    def set_sync_state(self, device: str, key: str, value: bytes) -> None:
        """Durably store a per-device value (sealed), e.g. the last RACP sequence number.

        ``device`` is the device's configured label (never its address) and ``key`` a short
        token; both are stored in clear, the value sealed and bound to hub, device and key.
        """
        self._check_sync_state(device, key, value)
        with self._transaction("set_sync_state") as conn:
            self._put_sync_state(conn, device, key, value)

    def get_sync_state(self, device: str, key: str) -> bytes | None:
        """The value last stored for ``(device, key)``, or ``None``; IntegrityError if altered."""
        _check_name(device, "device")
        _check_name(key, "key")
        conn = self._connection("get_sync_state")
        try:
            row = conn.execute(
                "SELECT sealed FROM sync_state WHERE device = ? AND key = ?", (device, key)
            ).fetchone()
        except sqlite3.Error as exc:
            raise _storage_error(self.path, "get_sync_state", exc) from exc
        if row is None:
            return None
        try:
            return self._sealer.open(row[0], aad=sync_state_aad(self.hub_id, device, key))
        except IntegrityError as exc:
            raise IntegrityError(f"sync state {device}/{key}", exc.reason) from None

    @staticmethod
    def _check_sync_state(device: str, key: str, value: bytes) -> None:
        _check_name(device, "device")
        _check_name(key, "key")
        if len(value) > MAX_SYNC_STATE_BYTES:
            raise ValueError(f"sync state values are at most {MAX_SYNC_STATE_BYTES} bytes")

    def _put_sync_state(
        self, conn: sqlite3.Connection, device: str, key: str, value: bytes
    ) -> None:
        sealed = self._sealer.seal(value, aad=sync_state_aad(self.hub_id, device, key))
        conn.execute(
            "INSERT INTO sync_state (device, key, sealed, updated_at) VALUES (?, ?, ?, ?) "
            "ON CONFLICT (device, key) DO UPDATE SET sealed = excluded.sealed, "
            "updated_at = excluded.updated_at",
            (device, key, sealed, self._clock()),
        )

    # -- delivering ---------------------------------------------------------------------

    def pending_after(self, after_seq: int, limit: int) -> list[OutboxRecord]:
        """The pending records with ``seq > after_seq`` (oldest first, at most ``limit``),
        opened; nothing is written unless a record does not open.

        A record that fails to open (altered, moved to another seq, sealed under another key)
        is set aside as ``damaged`` (kept for forensics, never sent) and logged
        (``outbox_record_damaged``); the good ones are returned, so one bad row never blocks
        delivery. Such records do not count against ``limit``: an empty list means no
        pending record past ``after_seq`` opens, even after a long run of damaged ones.
        """
        if not 1 <= limit <= MAX_BATCH:
            raise ValueError(f"limit must be 1..{MAX_BATCH}")
        conn = self._connection("pending_after")
        good: list[OutboxRecord] = []
        bad: list[int] = []
        cursor = after_seq
        while len(good) < limit:
            want = limit - len(good)
            try:
                rows = conn.execute(
                    "SELECT seq, class, sealed, created_at, attempts FROM records "
                    "WHERE state = 'pending' AND seq > ? ORDER BY seq LIMIT ?",
                    (cursor, want),
                ).fetchall()
            except sqlite3.Error as exc:
                raise _storage_error(self.path, "pending_after", exc) from exc
            self._open_rows(rows, good, bad)
            if len(rows) < want:
                break
            cursor = rows[-1][0]
        self._set_damaged(bad)
        return good

    def pending_in(self, seqs: Sequence[int]) -> list[OutboxRecord]:
        """The pending records among ``seqs`` (at most :data:`MAX_BATCH`), oldest first,
        opened; a record that does not open is set aside as :meth:`pending_after` does."""
        wanted = sorted(set(seqs))
        if len(wanted) > MAX_BATCH:
            raise ValueError(f"at most {MAX_BATCH} seqs")
        if not wanted:
            return []
        conn = self._connection("pending_in")
        marks = ",".join("?" * len(wanted))
        try:
            rows = conn.execute(
                "SELECT seq, class, sealed, created_at, attempts FROM records "  # noqa: S608 - only placeholders
                f"WHERE state = 'pending' AND seq IN ({marks}) ORDER BY seq",
                wanted,
            ).fetchall()
        except sqlite3.Error as exc:
            raise _storage_error(self.path, "pending_in", exc) from exc
        good: list[OutboxRecord] = []
        bad: list[int] = []
        self._open_rows(rows, good, bad)
        self._set_damaged(bad)
        return good

    def _open_rows(
        self,
        rows: Sequence[tuple[int, str, bytes, float, int]],
        good: list[OutboxRecord],
        bad: list[int],
    ) -> None:
        """Open each row into ``good``; the seqs of those that do not open into ``bad``."""
        for seq, klass, sealed, created_at, attempts in rows:
            try:
                kind, body = _open_record(self._sealer, self.hub_id, seq, klass, sealed)
            except (IntegrityError, ValueError):
                bad.append(seq)
                continue
            good.append(OutboxRecord(seq, kind, body, created_at, attempts))

    def _set_damaged(self, bad: Sequence[int]) -> None:
        """Set aside records that do not open (kept for forensics, never sent), logged."""
        if bad:
            with self._transaction("set_damaged") as conn:
                conn.executemany(
                    "UPDATE records SET state = 'damaged' WHERE seq = ?", [(s,) for s in bad]
                )
            log.error("outbox_record_damaged", path=str(self.path), seqs=bad[:10], count=len(bad))

    def mark_refused(self, seq: int, rc: int | None) -> bool:
        """The platform refused record ``seq`` for good: keep it, never send it again on
        its own (``refused``); ``False`` if it was not pending."""
        with self._transaction("mark_refused") as conn:
            changed: int = conn.execute(
                "UPDATE records SET state = 'refused', refused_rc = ? "
                "WHERE seq = ? AND state = 'pending'",
                (rc, seq),
            ).rowcount
        return changed == 1

    def note_attempt(self, seq: int) -> int:
        """Count one transient refusal of record ``seq``; returns the count (0: not pending)."""
        with self._transaction("note_attempt") as conn:
            row = conn.execute(
                "UPDATE records SET attempts = attempts + 1 WHERE seq = ? AND state = 'pending' "
                "RETURNING attempts",
                (seq,),
            ).fetchone()
        return int(row[0]) if row is not None else 0

    def refused(self, limit: int = 100) -> list[tuple[int, int | None]]:
        """``(seq, reason code)`` of refused records, oldest first (for ``homehub status``)."""
        conn = self._connection("refused")
        try:
            return _read_refused(conn, limit)
        except sqlite3.Error as exc:
            raise _storage_error(self.path, "refused", exc) from exc

    def all_sync_state(self) -> dict[tuple[str, str], bytes]:
        """Every committed sync-state value by ``(device, key)`` (read once at start)."""
        conn = self._connection("get_sync_state")
        try:
            rows = conn.execute("SELECT device, key, sealed FROM sync_state").fetchall()
        except sqlite3.Error as exc:
            raise _storage_error(self.path, "get_sync_state", exc) from exc
        out: dict[tuple[str, str], bytes] = {}
        for device, key, sealed in rows:
            try:
                out[(device, key)] = self._sealer.open(
                    sealed, aad=sync_state_aad(self.hub_id, device, key)
                )
            except IntegrityError:
                log.error("outbox_sync_state_damaged", key=key)
        return out

    def mark_delivered(self, seq: int) -> bool:
        """Delete a delivered record; ``False`` if it was already gone (a repeated ack).

        Its ``seen`` entry stays, so the same reading sent again is still a duplicate.
        """
        return self.mark_delivered_many([seq]) == 1

    def mark_delivered_many(self, seqs: Iterable[int]) -> int:
        """Delete several delivered records in one transaction; returns how many existed."""
        batch = [(s,) for s in seqs]
        if len(batch) > MAX_BATCH:
            raise ValueError(f"at most {MAX_BATCH} records per batch")
        with self._transaction("mark_delivered") as conn:
            deleted: int = conn.executemany(
                "DELETE FROM records WHERE seq = ? AND state = 'pending'", batch
            ).rowcount  # executemany sums the rows changed over the batch
            pruned = _prune_seen(conn)
            used = _used_bytes(conn)
        if pruned:
            log.info("outbox_seen_pruned", path=str(self.path), count=pruned)
        self._note_level(used)
        return deleted

    def prune_seen(self) -> int:
        """Apply the ``seen`` bound (:data:`SEEN_MAX_ENTRIES`) now; returns entries removed.

        Runs at open and with every :meth:`mark_delivered_many`; exposed for maintenance.
        """
        with self._transaction("prune_seen") as conn:
            removed = _prune_seen(conn)
        if removed:
            log.info("outbox_seen_pruned", path=str(self.path), count=removed)
        return removed

    def counts(self) -> OutboxCounts:
        """How many records are pending, refused and damaged, and the oldest pending one's age."""
        conn = self._connection("counts")
        try:
            return _read_counts(conn, self._clock())
        except sqlite3.Error as exc:
            raise _storage_error(self.path, "counts", exc) from exc

    def _raise_next_seq(self, floor: int) -> None:
        """Make the next sequence number at least ``floor`` (after a quarantine)."""
        if not 1 <= floor <= MAX_SEQ:
            raise ValueError("floor out of range")
        with self._transaction("raise_next_seq") as conn:
            conn.execute(
                "UPDATE counters SET value = MAX(value, ?) WHERE name = 'next_seq'", (floor,)
            )

    # -- checkpoints ----------------------------------------------------------------------

    def checkpoint_if_due(self) -> bool:
        """Checkpoint when :data:`CHECKPOINT_AFTER_COMMITS` write transactions have committed
        since the last checkpoint; whether it did. The storage thread's idle work."""
        if self._conn is None or self.commits_since_checkpoint < CHECKPOINT_AFTER_COMMITS:
            return False
        self.checkpoint()
        return True

    def checkpoint(self) -> tuple[int, int]:
        """A ``PASSIVE`` WAL checkpoint: copy the committed frames into the database file
        (fsynced, ``synchronous=FULL``) without waiting for readers; ``(frames in the WAL,
        frames checkpointed)``. Nothing committed depends on it: a commit is durable in the
        WAL. Frames a reader (``homehub status``) still needs stay for the next one, so the
        count starts over only when everything was copied."""
        conn = self._connection("checkpoint")
        try:
            _busy, wal_frames, copied = conn.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchone()
        except sqlite3.Error as exc:
            raise _storage_error(self.path, "checkpoint", exc) from exc
        if copied == wal_frames:
            self.commits_since_checkpoint = 0
        return int(wal_frames), int(copied)

    # -- plumbing -----------------------------------------------------------------------

    def _connection(self, operation: str) -> sqlite3.Connection:
        if self._conn is None:
            raise StorageUnusableError(str(self.path), operation, "outbox is closed")
        return self._conn

    @contextlib.contextmanager
    def _transaction(self, operation: str) -> Iterator[sqlite3.Connection]:
        """``BEGIN IMMEDIATE`` … ``COMMIT``; rolls back on any exception and re-raises it.

        ``IMMEDIATE`` takes the write lock up front, so a transaction never fails half-way
        on a lock upgrade. sqlite3 errors leave as storage errors; others (``make_record``'s)
        as they are.
        """
        conn = self._connection(operation)
        try:
            conn.execute("BEGIN IMMEDIATE")
        except sqlite3.Error as exc:
            raise _storage_error(self.path, operation, exc) from exc
        try:
            yield conn
            conn.execute("COMMIT")
            self.commits_since_checkpoint += 1
        except BaseException as exc:
            self._rollback(conn, operation)
            if isinstance(exc, sqlite3.Error):
                raise _storage_error(self.path, operation, exc) from exc
            raise

    def _rollback(self, conn: sqlite3.Connection, operation: str) -> None:
        if not conn.in_transaction:
            return  # SQLite already rolled back (e.g. after SQLITE_FULL or an I/O error)
        try:
            conn.execute("ROLLBACK")
        except sqlite3.Error as exc:
            log.error(
                "outbox_rollback_failed",
                path=str(self.path),
                operation=operation,
                error=getattr(exc, "sqlite_errorname", type(exc).__name__),
            )

    def pending_among(self, seqs: Iterable[int]) -> frozenset[int]:
        """Which of ``seqs`` are pending (a receipt naming an envelope the publisher no
        longer knows is stale, not forged, when its readings are all still pending: see
        agent/receipts.py). Reads only; at most :data:`MAX_BATCH` seqs per query."""
        wanted = sorted(set(seqs))
        conn = self._connection("pending_among")
        found: set[int] = set()
        try:
            for start in range(0, len(wanted), MAX_BATCH):
                chunk = wanted[start : start + MAX_BATCH]
                marks = ",".join("?" * len(chunk))
                rows = conn.execute(
                    f"SELECT seq FROM records WHERE state = 'pending' AND seq IN ({marks})",  # noqa: S608 - only placeholders
                    chunk,
                ).fetchall()
                found.update(int(row[0]) for row in rows)
        except sqlite3.Error as exc:
            raise _storage_error(self.path, "pending_among", exc) from exc
        return frozenset(found)

    def newest_pending(self, limit: int) -> tuple[list[tuple[int, float]], int]:
        """``(seq, created_at)`` of the ``limit`` newest pending records, newest first, and
        the next seq to be stored: where the publisher's fresh lane begins
        (:func:`agent.batching.fresh_boundary`). Reads only; nothing is unsealed (the walk
        uses the ``(state, seq)`` index and stops after ``limit`` rows)."""
        if not 1 <= limit <= MAX_BATCH:
            raise ValueError(f"limit must be 1..{MAX_BATCH}")
        conn = self._connection("newest_pending")
        try:
            rows = conn.execute(
                "SELECT seq, created_at FROM records WHERE state = 'pending' "
                "ORDER BY seq DESC LIMIT ?",
                (limit,),
            ).fetchall()
            (next_seq,) = conn.execute(
                "SELECT value FROM counters WHERE name = 'next_seq'"
            ).fetchone()
        except sqlite3.Error as exc:
            raise _storage_error(self.path, "newest_pending", exc) from exc
        return [(int(seq), float(created)) for seq, created in rows], int(next_seq)


def _migrate(
    conn: sqlite3.Connection, path: Path, ctx: _MigrationContext, clock: Callable[[], float]
) -> None:
    """Bring the schema to :data:`SCHEMA_VERSION` in one transaction; check the hub id."""
    hub_id = ctx.hub_id
    conn.execute("BEGIN IMMEDIATE")
    try:
        version: int = conn.execute("PRAGMA user_version").fetchone()[0]
        if version > SCHEMA_VERSION:
            raise StorageUnusableError(
                str(path), "migrate", f"schema {version} is newer than this agent"
            )
        if version >= 1:
            _check_owner(conn, path, hub_id)  # before a migration re-seals anything
        for step in range(version, SCHEMA_VERSION):
            _MIGRATIONS[step](conn, ctx)
        if version != SCHEMA_VERSION:
            conn.execute(f"PRAGMA user_version = {SCHEMA_VERSION}")
            conn.execute(f"PRAGMA application_id = {APPLICATION_ID}")
            log.info("outbox_migrated", path=str(path), from_version=version, to=SCHEMA_VERSION)
        conn.execute(
            "INSERT OR IGNORE INTO meta (name, value) VALUES ('hub_id', ?), ('created_at', ?)",
            (hub_id, repr(clock())),
        )
        _check_owner(conn, path, hub_id)
        conn.execute("COMMIT")
    except BaseException:
        if conn.in_transaction:
            conn.execute("ROLLBACK")
        raise


def _check_owner(conn: sqlite3.Connection, path: Path, hub_id: str) -> None:
    row = conn.execute("SELECT value FROM meta WHERE name = 'hub_id'").fetchone()
    if row is not None and row[0] != hub_id:
        raise StorageUnusableError(str(path), "open", f"belongs to hub {row[0]!r}, not {hub_id!r}")


def _prune_seen(conn: sqlite3.Connection) -> int:
    """Drop ``seen`` entries older than :data:`SEEN_MAX_ENTRIES` sequence numbers, except
    those whose record is still in the outbox (an undelivered record must stay deduped)."""
    next_seq: int = conn.execute("SELECT value FROM counters WHERE name = 'next_seq'").fetchone()[0]
    return conn.execute(
        "DELETE FROM seen WHERE seq < ? AND seq NOT IN (SELECT seq FROM records)",
        (next_seq - SEEN_MAX_ENTRIES,),
    ).rowcount


def _fsync_dir(directory: Path) -> None:
    """fsync a directory so a newly created file in it survives a power cut."""
    fd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _read_refused(conn: sqlite3.Connection, limit: int) -> list[tuple[int, int | None]]:
    rows = conn.execute(
        "SELECT seq, refused_rc FROM records WHERE state = 'refused' ORDER BY seq LIMIT ?",
        (limit,),
    ).fetchall()
    return [(int(seq), rc) for seq, rc in rows]


def peek_counts(path: Path, *, clock: Callable[[], float] = time.time) -> OutboxCounts:
    """Counts from an outbox file, read-only and without the key (for ``homehub status``).

    Safe while the daemon runs: WAL readers do not block the writer.
    """
    return _peek(path, "peek_counts", lambda conn: _read_counts(conn, clock()))


def peek_refused(path: Path, limit: int = 20) -> list[tuple[int, int | None]]:
    """``(seq, reason code)`` of the oldest refused records, read-only and without the key
    (for ``homehub status``: which records a technician should look at)."""
    return _peek(path, "peek_refused", lambda conn: _read_refused(conn, limit))


def _peek(path: Path, operation: str, read: Callable[[sqlite3.Connection], T]) -> T:
    """Run ``read`` on a read-only connection to the outbox at ``path``."""
    if not path.is_file():
        raise StorageUnusableError(str(path), operation, "no outbox at this path")
    try:
        conn = sqlite3.connect(f"{path.resolve().as_uri()}?mode=ro", uri=True)
    except sqlite3.Error as exc:
        raise _storage_error(path, operation, exc) from exc
    try:
        conn.execute(f"PRAGMA busy_timeout = {BUSY_TIMEOUT_MS}")
        return read(conn)
    except sqlite3.Error as exc:
        raise _storage_error(path, operation, exc) from exc
    finally:
        conn.close()


_QUARANTINE_SUFFIXES: Final = ("", "-wal", "-shm")
"""The database and the files SQLite keeps beside it in WAL mode, moved together."""

MAX_QUARANTINED_NAMES: Final = 100
"""Attempts at a free ``.corrupt-<time>[-n]`` name; more corrupt files than that in one
second means something else is wrong."""


def quarantine(path: Path, *, clock: Callable[[], float] = time.time) -> Path:
    """Move the database at ``path`` (and its ``-wal``/``-shm``) aside for inspection.

    The new name is ``<name>.corrupt-<UTC YYYYmmddTHHMMSSZ>`` (``-n`` added if taken), with
    the same ``-wal``/``-shm`` suffixes; the directory is fsynced so the move survives a power
    cut. Returns the new path of the database file.
    """
    stamp = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime(clock()))
    for n in range(MAX_QUARANTINED_NAMES):
        target = path.with_name(f"{path.name}.corrupt-{stamp}" + (f"-{n}" if n else ""))
        if not any(Path(f"{target}{suffix}").exists() for suffix in _QUARANTINE_SUFFIXES):
            break
    else:
        raise StorageUnusableError(str(path), "quarantine", "no free quarantine name")
    try:
        for suffix in _QUARANTINE_SUFFIXES:
            source = Path(f"{path}{suffix}")
            if source.exists():
                source.rename(f"{target}{suffix}")
        _fsync_dir(path.parent)
    except OSError as exc:
        raise StorageError(str(path), "quarantine", f"cannot move aside: {exc.strerror}") from None
    return target


def _salvage_next_seq(quarantined: Path) -> int | None:
    """The quarantined file's sequence counter, if it can still be read (read-only)."""
    try:
        conn = sqlite3.connect(f"{quarantined.resolve().as_uri()}?mode=ro", uri=True)
    except sqlite3.Error:
        return None
    try:
        row = conn.execute("SELECT value FROM counters WHERE name = 'next_seq'").fetchone()
    except sqlite3.Error:
        return None
    finally:
        conn.close()
    return int(row[0]) if row is not None and isinstance(row[0], int) else None


def open_or_quarantine(
    path: Path,
    sealer: Sealer,
    hub_id: str,
    *,
    clock: Callable[[], float] = time.time,
    quota_bytes: int = DEFAULT_QUOTA_BYTES,
) -> Outbox:
    """:meth:`Outbox.open`, but a corrupt file is quarantined and a fresh outbox opened.

    Corrupt means :class:`StorageCorruptError` at open (``quick_check`` failed, or not a
    database at all). The file goes aside (:func:`quarantine`), ``outbox_quarantined`` is
    logged with the new name, and a fresh outbox is created. Its sequence counter starts at
    the larger of the old file's counter (when still readable) and the wall clock in
    microseconds, so no sequence number the old file handed out is handed out again; a
    second failure (the fresh file corrupt too: the disk is bad) propagates.
    """
    try:
        return Outbox.open(path, sealer, hub_id, clock=clock, quota_bytes=quota_bytes)
    except StorageCorruptError as exc:
        reason = exc.reason
    moved = quarantine(path, clock=clock)
    salvaged = _salvage_next_seq(moved)
    floor = max(salvaged or 1, int(clock() * 1_000_000), 1)
    log.error(
        "outbox_quarantined",
        path=str(path),
        moved_to=str(moved),
        reason=reason,
        counter_salvaged=salvaged is not None,
        next_seq=floor,
    )
    outbox = Outbox.open(path, sealer, hub_id, clock=clock, quota_bytes=quota_bytes)
    try:
        outbox._raise_next_seq(floor)
    except BaseException:
        outbox.close()
        raise
    return outbox


# -- a device's sync state from outside the daemon (homehub devices) ---------------------------

_SQLITE_BUSY: Final = 5
_SQLITE_LOCKED: Final = 6


def peek_sync_state(
    path: Path, hub_id: str, key: str, sealer: Callable[[], Sealer]
) -> dict[str, bytes]:
    """``device → value`` of sync-state ``key`` for every device that has one, read-only
    (``homehub devices list``: a device's battery level). ``sealer()`` opens the key, and
    is called only when there is a value to open; a value that does not open is left out
    (logged ``outbox_sync_state_damaged``). Safe while the daemon runs (a WAL reader)."""
    _check_name(key, "key")
    rows = _peek(
        path,
        "peek_sync_state",
        lambda conn: conn.execute(
            "SELECT device, sealed FROM sync_state WHERE key = ?", (key,)
        ).fetchall(),
    )
    if not rows:
        return {}
    box = sealer()
    out: dict[str, bytes] = {}
    for device, sealed in rows:
        try:
            out[str(device)] = box.open(sealed, aad=sync_state_aad(hub_id, device, key))
        except IntegrityError:
            log.error("outbox_sync_state_damaged", key=key)
    return out


def move_sync_state(
    path: Path,
    hub_id: str,
    old: str,
    new: str,
    sealer: Callable[[], Sealer],
    *,
    then: Callable[[], None],
) -> int:
    """Move every sync-state value of device ``old`` to ``new`` (``homehub devices rename``:
    a glucometer keeps its RACP mark, any device its first-contact identity pin); the number
    of values moved. Values ``new`` already had (a removed device's under the same label)
    are dropped: a device never inherits another's state.

    Each value is sealed to its device's label (:func:`agent.sealing.sync_state_aad`), so it
    is opened and sealed again for ``new``: ``sealer()`` opens the key, and is called only
    when there is a value to move. One that does not open is dropped (the daemon would
    ignore it too: a glucometer resyncs, an identity is pinned again). ``then`` (the
    configuration's edit) runs inside the transaction, before its commit: when it raises,
    nothing is moved.

    The outbox is taken for this process alone (``locking_mode = EXCLUSIVE``, for the
    milliseconds of the move): while another process holds it open, the daemon above all
    (it would go on writing the old label's values from memory), this waits
    :data:`BUSY_TIMEOUT_MS`, then refuses with :class:`StorageError`, changing nothing, and
    ``then`` is not run. No outbox yet: only ``then`` runs.

    Raises:
        StorageError: the outbox is open in another process, or failed.
    """
    _check_name(old, "device")
    _check_name(new, "device")
    if not path.is_file():
        then()
        return 0
    with _taken_alone(path, "move_sync_state") as conn:
        rows = conn.execute(
            "SELECT key, sealed, updated_at FROM sync_state WHERE device = ?", (old,)
        ).fetchall()
        moved: list[tuple[str, str, bytes, float]] = []
        if rows:
            box = sealer()
            for key, sealed, updated_at in rows:
                try:
                    value = box.open(sealed, aad=sync_state_aad(hub_id, old, key))
                except IntegrityError:
                    log.error("outbox_sync_state_damaged", key=key)
                    continue
                resealed = box.seal(value, aad=sync_state_aad(hub_id, new, key))
                moved.append((new, key, resealed, updated_at))
        conn.execute("DELETE FROM sync_state WHERE device IN (?, ?)", (old, new))
        conn.executemany(
            "INSERT INTO sync_state (device, key, sealed, updated_at) VALUES (?, ?, ?, ?)",
            moved,
        )
        then()
    return len(moved)


def forget_sync_state(path: Path, device: str, *, then: Callable[[], None]) -> int:
    """Delete every sync-state value of ``device`` (``homehub devices remove``: a device
    added later under the same label must not inherit the removed one's RACP mark or, worse,
    its first-contact identity pin, which would have it refused as an impostor); the number
    deleted. ``then`` (the configuration's edit) runs inside the transaction, before its
    commit: when it raises, nothing is deleted. Taken as :func:`move_sync_state` takes the
    outbox: refused while another process (the daemon) holds it open.

    Raises:
        StorageError: the outbox is open in another process, or failed.
    """
    _check_name(device, "device")
    if not path.is_file():
        then()
        return 0
    with _taken_alone(path, "forget_sync_state") as conn:
        deleted = conn.execute("DELETE FROM sync_state WHERE device = ?", (device,)).rowcount
        then()
    return int(deleted)


@contextlib.contextmanager
def _taken_alone(path: Path, operation: str) -> Iterator[sqlite3.Connection]:
    """The outbox for this process alone (``locking_mode = EXCLUSIVE``), in one exclusive
    transaction committed when the block ends normally and rolled back when it raises.

    Raises:
        StorageError: another process holds it open (busy past :data:`BUSY_TIMEOUT_MS`:
            "stop homehub run first"), or SQLite failed.
    """
    try:
        conn = sqlite3.connect(path, timeout=BUSY_TIMEOUT_MS / 1000, isolation_level=None)
    except sqlite3.Error as exc:
        raise _storage_error(path, operation, exc) from exc
    try:
        conn.execute("PRAGMA locking_mode = EXCLUSIVE")
        conn.execute("PRAGMA synchronous = FULL")
        conn.execute("BEGIN EXCLUSIVE")
        try:
            yield conn
            conn.execute("COMMIT")
        except BaseException:
            with contextlib.suppress(sqlite3.Error):
                conn.execute("ROLLBACK")
            raise
    except sqlite3.Error as exc:
        if getattr(exc, "sqlite_errorcode", 0) & 0xFF in (_SQLITE_BUSY, _SQLITE_LOCKED):
            # Busy at the first read: in WAL mode the exclusive lock is taken then.
            raise StorageError(
                str(path),
                operation,
                "the outbox is open in another process: stop homehub run first",
            ) from None
        raise _storage_error(path, operation, exc) from exc
    finally:
        conn.close()
