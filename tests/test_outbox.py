"""Tests for agent/outbox.py: durability settings, sequence numbers, dedup, sealing at rest,
state transitions and error mapping, on real files with real fsync."""

from __future__ import annotations

import os
import random
import signal
import stat
import subprocess
import sys
from pathlib import Path

import pytest
from structlog.testing import capture_logs

from agent import outbox as outbox_mod
from agent.errors import (
    IntegrityError,
    RecordTooLargeError,
    StorageCorruptError,
    StorageError,
    StorageFullError,
)
from agent.outbox import (
    MAX_RECORD_BYTES,
    SCHEMA_VERSION,
    AppendResult,
    AppendStatus,
    Durability,
    Outbox,
    OutboxCounts,
    peek_counts,
)
from agent.sealing import DataKey, Sealer, create_data_key
from tests import phi_canaries
from tests.outbox_helpers import HUB, FakeClock, RecordMaker, raw_connection

CANARY = "CANARY-7f3a9c"


class Boom(Exception):
    """Raised by a make_record that fails on purpose."""


def _boom(_seq: int) -> bytes:
    raise Boom


def _append(ob: Outbox, key: str, text: str = "body") -> AppendResult:
    return ob.append("observation", key, RecordMaker(text))


def _stored(seq: int) -> AppendResult:
    return AppendResult(seq, AppendStatus.STORED)


def _dup(seq: int) -> AppendResult:
    return AppendResult(seq, AppendStatus.DUPLICATE)


def _state(db_path: Path, seq: int) -> str | None:
    """A record's state as the file says (None: no such record)."""
    raw = raw_connection(db_path)
    try:
        row = raw.execute("SELECT state FROM records WHERE seq = ?", (seq,)).fetchone()
    finally:
        raw.close()
    return None if row is None else str(row[0])


class TestOpen:
    def test_pragmas_are_wal_and_full(self, box: Outbox, db_path: Path) -> None:
        """The outbox runs with journal_mode=WAL and synchronous=FULL, schema version 2."""
        assert SCHEMA_VERSION == 2
        assert box.durability() == Durability(journal_mode="wal", synchronous=2)
        raw = raw_connection(db_path)
        assert raw.execute("PRAGMA journal_mode").fetchone() == ("wal",)
        assert raw.execute("PRAGMA user_version").fetchone() == (SCHEMA_VERSION,)
        assert raw.execute("PRAGMA application_id").fetchone() == (0x48484F42,)
        raw.close()

    def test_files_are_private(self, box: Outbox, db_path: Path) -> None:
        """The database, WAL and shm files are created with mode 0600."""
        _append(box, "k1")
        for suffix in ("", "-wal", "-shm"):
            mode = stat.S_IMODE(os.stat(f"{db_path}{suffix}").st_mode)
            assert (suffix, mode) == (suffix, 0o600)

    def test_reopen_keeps_everything(self, db_path: Path, sealer: Sealer, clock: FakeClock) -> None:
        """Records, states, attempts, sync state and dedup entries survive close and reopen."""
        with Outbox.open(db_path, sealer, HUB, clock=clock) as ob:
            ob.append_many(
                [("observation", f"k{i}", RecordMaker()) for i in range(1, 5)],
                sync_state={("gluco", "racp_hwm"): b"\x11\x00"},
            )
            assert ob.note_attempt(1) == 1
            assert ob.note_attempt(1) == 2
            assert ob.mark_refused(2, 0x87) is True
            before = ob.pending_after(0, 10)
        with Outbox.open(db_path, sealer, HUB, clock=clock) as ob:
            assert ob.counts() == OutboxCounts(pending=3, oldest_age_s=0.0, refused=1)
            assert ob.refused() == [(2, 0x87)]
            assert ob.get_sync_state("gluco", "racp_hwm") == b"\x11\x00"
            assert _append(ob, "k2") == _dup(2)
            assert _append(ob, "k3") == _dup(3)
            records = ob.pending_after(0, 10)
        assert records == before
        assert [(r.seq, r.kind, r.body, r.attempts) for r in records] == [
            (1, "observation", b"body 1", 2),
            (3, "observation", b"body 3", 0),
            (4, "observation", b"body 4", 0),
        ]

    def test_other_hub_refused(self, db_path: Path, sealer: Sealer) -> None:
        """A database created for one hub is refused by another (copied SD card)."""
        Outbox.open(db_path, sealer, HUB).close()
        with pytest.raises(StorageError) as info:
            Outbox.open(db_path, sealer, "hub-other")
        assert info.value.reason == "belongs to hub 'hub-test-1', not 'hub-other'"
        assert info.value.retryable is False

    def test_not_a_database_is_corrupt(self, db_path: Path, sealer: Sealer) -> None:
        """A file that is not SQLite fails at open with StorageCorruptError (quarantine hook)."""
        db_path.write_bytes(b"this is not a database, just text" * 200)
        with pytest.raises(StorageCorruptError) as info:
            Outbox.open(db_path, sealer, HUB)
        assert info.value.path == str(db_path)
        assert info.value.operation == "open"
        assert info.value.reason.startswith("SQLITE_NOTADB: ")

    @staticmethod
    def _scribble_pages(data: bytearray, page_size: int, _seen_root: int) -> str:
        for page in range(1, len(data) // page_size):  # every page but the header page
            data[page * page_size : page * page_size + 8] = b"\xff" * 8
        return "SQLITE_CORRUPT: database disk image is malformed"

    @staticmethod
    def _bad_cell_count(data: bytearray, page_size: int, seen_root: int) -> str:
        offset = (seen_root - 1) * page_size + 3  # b-tree page header: number of cells
        data[offset : offset + 2] = (200).to_bytes(2, "big")
        return "quick_check failed"

    @pytest.mark.parametrize("damage", ["_scribble_pages", "_bad_cell_count"])
    def test_damaged_file_fails_at_open(self, db_path: Path, sealer: Sealer, damage: str) -> None:
        """A damaged b-tree fails the open-time check with StorageCorruptError."""
        with Outbox.open(db_path, sealer, HUB) as ob:
            for i in range(40):
                ob.append("observation", f"k{i}", lambda seq: bytes(2000))
        assert not Path(f"{db_path}-wal").exists()
        raw = raw_connection(db_path)
        (seen_root,) = raw.execute(
            "SELECT rootpage FROM sqlite_master WHERE name = 'seen'"
        ).fetchone()
        raw.close()
        data = bytearray(db_path.read_bytes())
        reason = getattr(self, damage)(data, int.from_bytes(data[16:18], "big"), seen_root)
        db_path.write_bytes(bytes(data))
        with pytest.raises(StorageCorruptError) as info:
            Outbox.open(db_path, sealer, HUB)
        assert (info.value.operation, info.value.reason) == ("open", reason)
        assert info.value.retryable is False

    def test_foreign_sqlite_database_refused(self, db_path: Path, sealer: Sealer) -> None:
        """A SQLite file made by another application (application_id) is refused."""
        raw = raw_connection(db_path)
        raw.execute("PRAGMA application_id = 1234")
        raw.execute("CREATE TABLE t (a)")
        raw.close()
        with pytest.raises(StorageError) as info:
            Outbox.open(db_path, sealer, HUB)
        assert info.value.reason == "not a homehub outbox (0x000004d2)"

    def test_newer_schema_refused(self, db_path: Path, sealer: Sealer) -> None:
        """A database from a newer agent (higher user_version) is refused, not downgraded."""
        Outbox.open(db_path, sealer, HUB).close()
        raw = raw_connection(db_path)
        raw.execute("PRAGMA user_version = 99")
        raw.close()
        with pytest.raises(StorageError) as info:
            Outbox.open(db_path, sealer, HUB)
        assert info.value.reason == "schema 99 is newer than this agent"
        assert info.value.retryable is False

    def test_wal_unavailable_refused(self, db_path: Path, sealer: Sealer) -> None:
        """If WAL cannot be switched on (another rollback-mode reader), open fails."""
        raw = raw_connection(db_path)
        raw.execute("CREATE TABLE t (a)")
        raw.execute("BEGIN")
        raw.execute("SELECT * FROM t").fetchall()
        with pytest.raises(StorageError) as info:
            Outbox.open(db_path, sealer, HUB)
        raw.close()
        assert info.value.reason.startswith("SQLITE_BUSY")

    def test_missing_directory(self, tmp_path: Path, sealer: Sealer) -> None:
        """A database path in a missing directory is a StorageError naming the cause."""
        with pytest.raises(StorageError) as info:
            Outbox.open(tmp_path / "nope" / "o.db", sealer, HUB)
        assert info.value.reason == "cannot create: No such file or directory"

    def test_closed_outbox_refuses_calls(self, db_path: Path, sealer: Sealer) -> None:
        """After close, calls raise a non-transient StorageError; close is idempotent."""
        ob = Outbox.open(db_path, sealer, HUB)
        ob.close()
        ob.close()
        with pytest.raises(StorageError) as info:
            _append(ob, "k1")
        assert (info.value.operation, info.value.reason) == ("append", "outbox is closed")
        assert info.value.retryable is False


class TestSequence:
    def test_monotonic_from_one(self, box: Outbox) -> None:
        """Sequence numbers start at 1 and rise by one per stored record."""
        assert [_append(box, f"k{i}").seq for i in range(5)] == [1, 2, 3, 4, 5]

    def test_never_reused_after_delete_and_reopen(
        self, db_path: Path, sealer: Sealer, clock: FakeClock
    ) -> None:
        """Deleting the newest records and reopening never hands out an old number again."""
        with Outbox.open(db_path, sealer, HUB, clock=clock) as ob:
            for i in range(3):
                _append(ob, f"k{i}")
            assert ob.mark_delivered_many([1, 2, 3]) == 3
            assert ob.counts() == OutboxCounts(pending=0, oldest_age_s=None)
        with Outbox.open(db_path, sealer, HUB, clock=clock) as ob:
            assert _append(ob, "k9").seq == 4

    def test_make_record_sees_its_seq(self, box: Outbox) -> None:
        """make_record is called once with the seq the record is stored under."""
        maker = RecordMaker()
        _append(box, "k0")
        result = box.append("observation", "k1", maker)
        assert maker.calls == [2]
        assert result == _stored(2)
        assert box.pending_after(0, 5)[1].body == b"body 2"


class TestDedup:
    def test_duplicate_not_stored_and_maker_not_called(self, box: Outbox) -> None:
        """A seen dedup key returns the first copy's seq without calling make_record."""
        _append(box, "SN1|t1")
        maker = RecordMaker()
        result = box.append("observation", "SN1|t1", maker)
        assert result == _dup(1)
        assert result.duplicate is True
        assert maker.calls == []
        assert box.counts().pending == 1

    def test_duplicate_after_delivery_and_reopen(
        self, db_path: Path, sealer: Sealer, clock: FakeClock
    ) -> None:
        """A reading re-sent after its record was delivered is still a duplicate."""
        with Outbox.open(db_path, sealer, HUB, clock=clock) as ob:
            _append(ob, "SN1|t1")
            assert [r.seq for r in ob.pending_after(0, 1)] == [1]
            assert ob.mark_delivered(1) is True
        with Outbox.open(db_path, sealer, HUB, clock=clock) as ob:
            assert _append(ob, "SN1|t1") == _dup(1)
            assert ob.counts().pending == 0

    def test_duplicate_within_one_batch(self, box: Outbox) -> None:
        """A key repeated in one append_many is a duplicate of its first occurrence."""
        results = box.append_many(
            [("observation", "a", RecordMaker()), ("observation", "a", RecordMaker())]
        )
        assert results == [_stored(1), _dup(1)]

    def test_dedup_key_stored_only_as_keyed_hash(self, box: Outbox, db_path: Path) -> None:
        """The seen table holds the 32-byte keyed hash, not the dedup key."""
        _append(box, CANARY)
        raw = raw_connection(db_path)
        (stored,) = raw.execute("SELECT dedup_hash FROM seen").fetchone()
        raw.close()
        assert stored == box._sealer.keyed_hash(CANARY.encode())
        assert len(stored) == 32

    def test_seen_bound_keeps_undelivered(
        self, box: Outbox, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        """Pruning drops entries > SEEN_MAX_ENTRIES seqs old, unless their record is undelivered."""
        monkeypatch.setattr(outbox_mod, "SEEN_MAX_ENTRIES", 3)
        for i in range(1, 7):
            _append(box, f"k{i}")
        # next_seq is 7: entries with seq < 4 are old; seq 2 stays undelivered.
        assert box.mark_delivered_many([1, 3, 4]) == 3
        assert box.prune_seen() == 0  # already pruned by mark_delivered_many
        assert _append(box, "k1") == _stored(7)
        assert _append(box, "k3") == _stored(8)
        assert _append(box, "k2") == _dup(2)
        assert _append(box, "k4") == _dup(4)


class TestAtomicity:
    def test_append_many_all_or_nothing(self, box: Outbox) -> None:
        """make_record raising mid-batch stores nothing (records, seen, seq, sync state)."""
        good = RecordMaker()
        with pytest.raises(Boom):
            box.append_many(
                [("observation", "a", good), ("observation", "b", _boom)],
                sync_state={("gluco", "racp_hwm"): b"\x05"},
            )
        assert good.calls == [1]
        assert box.counts() == OutboxCounts(pending=0, oldest_age_s=None)
        assert box.get_sync_state("gluco", "racp_hwm") is None
        assert _append(box, "a") == _stored(1)

    def test_sync_state_commits_with_readings(self, box: Outbox) -> None:
        """A high-water mark given to append_many is stored with the readings."""
        box.append_many(
            [("observation", "g1", RecordMaker()), ("observation", "g2", RecordMaker())],
            sync_state={("gluco", "racp_hwm"): (42).to_bytes(2, "little")},
        )
        assert box.get_sync_state("gluco", "racp_hwm") == b"\x2a\x00"
        assert box.counts().pending == 2

    def test_sync_state_overwrite(self, box: Outbox) -> None:
        """set_sync_state replaces the previous value; unknown keys read as None."""
        box.set_sync_state("cuff", "last_time", b"one")
        box.set_sync_state("cuff", "last_time", b"two")
        assert box.get_sync_state("cuff", "last_time") == b"two"
        assert box.get_sync_state("cuff", "other") is None

    def test_sync_state_names_reject_addresses(self, box: Outbox) -> None:
        """A Bluetooth address cannot be used as a device name (names are stored in clear)."""
        with pytest.raises(ValueError, match="device must match"):
            box.set_sync_state("f0:00:00:00:10:01", "k", b"v")

    def test_record_too_large(self, box: Outbox) -> None:
        """A record over 64 KiB raises RecordTooLargeError and stores nothing; 64 KiB fits."""
        with pytest.raises(RecordTooLargeError) as info:
            box.append("observation", "big", lambda seq: bytes(MAX_RECORD_BYTES + 1))
        assert (info.value.size_bytes, info.value.limit_bytes) == (65537, 65536)
        assert box.counts().pending == 0
        ok = box.append("observation", "big", lambda seq: bytes(MAX_RECORD_BYTES))
        assert ok == _stored(1)

    def test_disk_full_maps_to_storage_full(self, box: Outbox) -> None:
        """SQLITE_FULL (here from max_page_count) raises StorageFullError and stores nothing."""
        _append(box, "k0")
        conn = box._conn
        assert conn is not None
        pages = conn.execute("PRAGMA page_count").fetchone()[0]
        conn.execute(f"PRAGMA max_page_count = {pages}")
        with pytest.raises(StorageFullError) as info:
            box.append("observation", "k1", lambda seq: os.urandom(60_000))
        assert info.value.operation == "append"
        assert info.value.reason.startswith("SQLITE_FULL: ")
        assert box.counts().pending == 1
        conn.execute(f"PRAGMA max_page_count = {2**30}")
        assert _append(box, "k1") == _stored(2)


class TestDelivery:
    def test_state_transitions(self, box: Outbox, clock: FakeClock) -> None:
        """pending → read past a cursor (nothing written, read again as often as asked) →
        deleted (mark_delivered); a repeated ack finds nothing."""
        for i in range(1, 5):
            _append(box, f"k{i}")
            clock.now += 10
        conn = box._conn
        assert conn is not None
        changes = conn.total_changes
        first = box.pending_after(0, 2)
        assert [(r.seq, r.kind, r.body, r.attempts) for r in first] == [
            (1, "observation", b"body 1", 0),
            (2, "observation", b"body 2", 0),
        ]
        assert [r.seq for r in box.pending_after(first[-1].seq, 10)] == [3, 4]
        assert box.pending_after(4, 10) == []
        # Reading is not claiming: the same records come back, and nothing was written.
        assert box.pending_after(0, 2) == first
        assert conn.total_changes == changes
        assert box.counts() == OutboxCounts(pending=4, oldest_age_s=40.0)
        assert box.mark_delivered(1) is True
        assert box.mark_delivered(1) is False
        assert box.counts() == OutboxCounts(pending=3, oldest_age_s=30.0)
        assert [r.seq for r in box.pending_after(0, 1)] == [2]
        assert box.mark_delivered_many([2, 4]) == 2
        assert box.mark_delivered_many([3, 4, 99]) == 1
        assert box.counts() == OutboxCounts(pending=0, oldest_age_s=None)
        assert box.pending_after(0, 10) == []

    def test_created_at_is_hub_wall_time(self, box: Outbox, clock: FakeClock) -> None:
        """created_at is the clock's time at append; ages never go negative."""
        _append(box, "k1")
        clock.now -= 3600  # the wall clock stepped back
        assert box.pending_after(0, 1)[0].created_at == 1_800_000_000.0
        assert box.counts().oldest_age_s == 0.0

    def test_record_repr_hides_body(self, box: Outbox) -> None:
        """An OutboxRecord's repr never shows the body (it is PHI)."""
        _append(box, "k1", text=CANARY)
        records = box.pending_after(0, 1)
        assert records[0].body == f"{CANARY} 1".encode()
        assert CANARY not in repr(records)

    def test_peek_counts_without_key(self, box: Outbox, db_path: Path) -> None:
        """peek_counts reads depth from the file without a key while the outbox is open."""
        _append(box, "k1")
        _append(box, "k2")
        assert box.mark_refused(1, 0x87) is True
        assert peek_counts(db_path, clock=lambda: 1_800_000_005.0) == OutboxCounts(
            pending=1, oldest_age_s=5.0, refused=1
        )

    @pytest.mark.parametrize("limit", [0, -1, 1001])
    def test_pending_after_limit_bounded(self, box: Outbox, limit: int) -> None:
        """pending_after reads 1..1000 records per call."""
        with pytest.raises(ValueError, match=r"^limit must be 1\.\.1000$"):
            box.pending_after(0, limit)


class TestAtRest:
    def test_plaintext_never_on_disk(self, db_path: Path, sealer: Sealer) -> None:
        """Bodies, dedup keys and sync values never appear in the db or WAL bytes."""
        ob = Outbox.open(db_path, sealer, HUB)
        ob.append_many(
            [("observation", f"{CANARY}-key-{i}", RecordMaker(CANARY)) for i in range(20)],
            sync_state={("gluco", "racp_hwm"): CANARY.encode()},
        )
        wal = Path(f"{db_path}-wal")
        on_disk = db_path.read_bytes() + wal.read_bytes()
        assert len(wal.read_bytes()) > 0
        assert CANARY.encode() not in on_disk
        assert CANARY.encode("utf-16-le") not in on_disk
        ob.close()  # checkpoints the WAL into the main file
        assert CANARY.encode() not in db_path.read_bytes()

    def _swap_sealed(self, db_path: Path, a: int, b: int) -> None:
        raw = raw_connection(db_path)
        blob_a = raw.execute("SELECT sealed FROM records WHERE seq = ?", (a,)).fetchone()[0]
        blob_b = raw.execute("SELECT sealed FROM records WHERE seq = ?", (b,)).fetchone()[0]
        raw.execute("UPDATE records SET sealed = ? WHERE seq = ?", (blob_b, a))
        raw.execute("UPDATE records SET sealed = ? WHERE seq = ?", (blob_a, b))
        raw.close()

    def test_swapped_rows_fail_and_are_set_aside(self, box: Outbox, db_path: Path) -> None:
        """Swapping two records' ciphertexts sets both aside as damaged (kept, logged by
        seq); the good record is still returned, so one bad row never blocks delivery."""
        for i in range(1, 4):
            _append(box, f"k{i}")
        self._swap_sealed(db_path, 1, 2)
        with capture_logs() as events:
            records = box.pending_after(0, 10)
        assert [(r.seq, r.body) for r in records] == [(3, b"body 3")]
        (event,) = [e for e in events if e["event"] == "outbox_record_damaged"]
        assert (event["seqs"], event["count"], event["log_level"]) == ([1, 2], 2, "error")
        assert box.counts() == OutboxCounts(pending=1, oldest_age_s=0.0, damaged=2)
        assert (_state(db_path, 1), _state(db_path, 2)) == ("damaged", "damaged")
        # Damaged records are never returned again, nor deleted by an ack.
        assert [r.seq for r in box.pending_after(0, 10)] == [3]
        assert box.mark_delivered_many([1, 2]) == 0
        assert box.counts().damaged == 2

    def test_changed_class_fails(self, box: Outbox, db_path: Path) -> None:
        """Relabelling a record's class in the table makes it fail to open."""
        _append(box, "k1")
        raw = raw_connection(db_path)
        raw.execute("UPDATE records SET class = 'other' WHERE seq = 1")
        raw.close()
        assert box.pending_after(0, 1) == []
        assert _state(db_path, 1) == "damaged"

    def test_moved_seq_fails(self, box: Outbox, db_path: Path) -> None:
        """Renumbering a record (to replay it as a new seq) makes it fail to open."""
        _append(box, "k1")
        raw = raw_connection(db_path)
        raw.execute("UPDATE records SET seq = 99 WHERE seq = 1")
        raw.close()
        with capture_logs() as events:
            assert box.pending_after(0, 1) == []
        assert [e["seqs"] for e in events if e["event"] == "outbox_record_damaged"] == [[99]]
        assert _state(db_path, 99) == "damaged"

    def test_flipped_byte_fails(self, box: Outbox, db_path: Path) -> None:
        """One flipped ciphertext byte makes the record fail to open."""
        _append(box, "k1")
        _append(box, "k2")
        raw = raw_connection(db_path)
        (blob,) = raw.execute("SELECT sealed FROM records WHERE seq = 1").fetchone()
        tampered = blob[:20] + bytes([blob[20] ^ 0x04]) + blob[21:]
        raw.execute("UPDATE records SET sealed = ? WHERE seq = 1", (tampered,))
        raw.close()
        assert [r.seq for r in box.pending_after(0, 10)] == [2]
        assert box.counts() == OutboxCounts(pending=1, oldest_age_s=0.0, damaged=1)
        raw = raw_connection(db_path)
        assert raw.execute("SELECT sealed FROM records WHERE seq = 1").fetchone() == (tampered,)
        raw.close()

    def test_other_key_cannot_read(self, db_path: Path, sealer: Sealer) -> None:
        """Records sealed under one data key do not open under another."""
        with Outbox.open(db_path, sealer, HUB) as ob:
            _append(ob, "k1")
        with Outbox.open(db_path, Sealer(DataKey.generate()), HUB) as ob:
            assert ob.pending_after(0, 1) == []
            assert (ob.counts().pending, ob.counts().damaged) == (0, 1)

    def test_swapped_sync_state_fails(self, box: Outbox, db_path: Path) -> None:
        """A sync-state value copied to another device fails to open."""
        box.set_sync_state("gluco", "racp_hwm", b"\x01")
        box.set_sync_state("cuff", "racp_hwm", b"\x02")
        raw = raw_connection(db_path)
        raw.execute(
            "UPDATE sync_state SET sealed = (SELECT sealed FROM sync_state WHERE device = 'gluco')"
            " WHERE device = 'cuff'"
        )
        raw.close()
        with pytest.raises(IntegrityError) as info:
            box.get_sync_state("cuff", "racp_hwm")
        assert info.value.what == "sync state cuff/racp_hwm"


_CHILD = """
import sys
from pathlib import Path
import structlog
structlog.configure(logger_factory=structlog.PrintLoggerFactory(sys.stderr))
from agent.outbox import Outbox
from agent.sealing import Sealer, load_data_key
db, key, start = Path(sys.argv[1]), Path(sys.argv[2]), int(sys.argv[3])
ob = Outbox.open(db, Sealer(load_data_key(key)), "hub-test-1")
i = start
while True:
    r = ob.append("observation", f"k{i}", lambda seq: f"reading {seq}".encode())
    sys.stdout.write(f"seq {r.seq}\\n")
    sys.stdout.flush()
    i += 1
"""


class TestCrash:
    def test_sigkill_loses_no_acknowledged_record(self, tmp_path: Path) -> None:
        """A writer killed by SIGKILL at random points loses no seq it reported stored."""
        (tmp_path / "state").mkdir()
        (tmp_path / "keys").mkdir()
        db = tmp_path / "state" / "outbox.db"
        key = tmp_path / "keys" / "data.key"
        sealer = Sealer(create_data_key(key))
        rng = random.Random(20260101)
        acknowledged: set[int] = set()
        start = 0
        root = Path(__file__).resolve().parent.parent
        for _ in range(4):
            stop_after = rng.randint(1, 60)
            err_path = phi_canaries.output_path("test_sigkill_loses_no_acknowledged_record stderr")
            with err_path.open("wb") as err:
                child = subprocess.Popen(
                    [sys.executable, "-c", _CHILD, str(db), str(key), str(start)],
                    stdout=subprocess.PIPE,
                    stderr=err,
                    cwd=root,
                )
                assert child.stdout is not None
                for _line in range(stop_after):
                    line = child.stdout.readline().decode()
                    assert line.startswith("seq "), err_path.read_text()
                    acknowledged.add(int(line.split()[1]))
                child.send_signal(signal.SIGKILL)
                assert child.wait(timeout=10) == -signal.SIGKILL
                child.stdout.close()
            start += 1000
            raw = raw_connection(db)
            assert raw.execute("PRAGMA integrity_check").fetchall() == [("ok",)]
            raw.close()
            with Outbox.open(db, sealer, HUB) as ob:
                stored = ob.pending_after(0, 1000)
                assert ob.counts().damaged == 0
            seqs = [r.seq for r in stored]
            assert acknowledged <= set(seqs)
            assert seqs == list(range(1, len(seqs) + 1))
            assert all(r.body == f"reading {r.seq}".encode() for r in stored)
