"""Outbox schema 2 (agent/outbox.py): migration from version 1, the kind sealed with the body,
dedup with conflicts, the refused state and reading pending records past a cursor.

Every test runs on a real SQLite file with real keys; the version-1 files are built the way
version 1 wrote them (its schema, its associated data), not by an older copy of the code.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any, Final

import pytest
from structlog.testing import capture_logs

from agent import config as config_mod
from agent import outbox as outbox_mod
from agent.daemon import status
from agent.errors import StorageError, StorageFullError, StorageUnusableError
from agent.outbox import (
    APPLICATION_ID,
    MAX_BATCH,
    SCHEMA_VERSION,
    AppendItem,
    AppendResult,
    AppendStatus,
    Outbox,
    OutboxCounts,
    OutboxRecord,
)
from agent.sealing import DataKey, Sealer, record_aad, sync_state_aad
from tests.example_config import minimal_config
from tests.outbox_helpers import HUB, NOW, FakeClock, RecordMaker, raw_connection

CANARY: Final = b"CANARY-digest-5e1d"


class ConflictMaker:
    """A make_conflict callback that builds ``conflict <seq> of <first>`` and remembers calls."""

    def __init__(self) -> None:
        self.calls: list[tuple[int, int]] = []

    def __call__(self, seq: int, first: int) -> bytes:
        self.calls.append((seq, first))
        return f"conflict {seq} of {first}".encode()


def _query(db_path: Path, sql: str, *args: object) -> list[tuple[Any, ...]]:
    raw = raw_connection(db_path)
    try:
        return raw.execute(sql, args).fetchall()
    finally:
        raw.close()


def _stored(seq: int) -> AppendResult:
    return AppendResult(seq, AppendStatus.STORED)


def _dup(seq: int) -> AppendResult:
    return AppendResult(seq, AppendStatus.DUPLICATE)


def _conflict(seq: int, first: int) -> AppendResult:
    return AppendResult(seq, AppendStatus.CONFLICT, conflict_of=first)


def _framed(kind: str, body: bytes) -> bytes:
    """A version-2 record's plaintext: ``u8 len ‖ kind ‖ body``."""
    return bytes([len(kind)]) + kind.encode() + body


# ---------------------------------------------------------------------------
# Migration 1 → 2
# ---------------------------------------------------------------------------

V1_BODIES: Final = {
    1: b"v1 observation 1",
    2: b"v1 device_qc 2",
    3: b"v1 telemetry 3",
    4: b"v1 damaged 4",
    5: b"v1 altered 5",
}


def _v1_database(path: Path, sealer: Sealer, hub: str = HUB) -> dict[int, bytes]:
    """A version-1 outbox as version 1 wrote it: its schema, kinds in clear, records sealed
    under ``record_aad(hub, seq, kind)``, an ``in_flight`` state, ``seen`` without content
    hashes, a sealed sync-state row. Returns the sealed blob of each record.

    - 1 observation, pending, claimed twice before (attempts 2)
    - 2 device_qc, in_flight, claimed 7 times
    - 3 telemetry, pending
    - 4 observation, damaged (set aside by version 1: sealed under another key)
    - 5 observation, pending, but its ciphertext was altered since (no longer opens)
    - seq 6 was delivered: only its ``seen`` entry is left; the counter is at 7.
    """
    other = Sealer(DataKey.generate())
    rows = [
        (1, "observation", "pending", sealer, 2),
        (2, "device_qc", "in_flight", sealer, 7),
        (3, "telemetry", "pending", sealer, 0),
        (4, "observation", "damaged", other, 1),
        (5, "observation", "pending", sealer, 0),
    ]
    sealed: dict[int, bytes] = {}
    conn = raw_connection(path)
    try:
        assert conn.execute("PRAGMA journal_mode = WAL").fetchone() == ("wal",)
        conn.execute("BEGIN")
        for statement in outbox_mod._SCHEMA_V1:
            conn.execute(statement)
        for seq, kind, state, key, attempts in rows:
            blob = key.seal(V1_BODIES[seq], aad=record_aad(hub, seq, kind))
            if seq == 5:
                blob = blob[:20] + bytes([blob[20] ^ 0x01]) + blob[21:]
            sealed[seq] = blob
            conn.execute(
                "INSERT INTO records (seq, kind, state, sealed, created_at, attempts) "
                "VALUES (?, ?, ?, ?, ?, ?)",
                (seq, kind, state, blob, NOW - 100 + seq, attempts),
            )
        for seq in range(1, 7):
            conn.execute(
                "INSERT INTO seen (dedup_hash, seq, seen_at) VALUES (?, ?, ?)",
                (sealer.keyed_hash(f"v1-key-{seq}".encode()), seq, NOW - 100 + seq),
            )
        conn.execute("UPDATE counters SET value = 7 WHERE name = 'next_seq'")
        conn.execute(
            "INSERT INTO sync_state (device, key, sealed, updated_at) VALUES (?, ?, ?, ?)",
            (
                "gluco",
                "racp_hwm",
                sealer.seal(b"\x2a\x00", aad=sync_state_aad(hub, "gluco", "racp_hwm")),
                NOW - 50,
            ),
        )
        conn.execute(
            "INSERT INTO meta (name, value) VALUES ('hub_id', ?), ('created_at', ?)",
            (hub, repr(NOW - 1000)),
        )
        conn.execute("PRAGMA user_version = 1")
        conn.execute(f"PRAGMA application_id = {APPLICATION_ID}")
        conn.execute("COMMIT")
    finally:
        conn.close()  # checkpoints the WAL: the whole file is the database
    assert not Path(f"{path}-wal").exists()
    return sealed


class TestMigration:
    def test_v1_file_migrated_in_place(
        self, db_path: Path, sealer: Sealer, clock: FakeClock
    ) -> None:
        """Opening a version-1 file: version 2, every record reads back with its kind and
        body, in_flight became pending (attempts start again), a record that no longer
        opens became damaged with its bytes kept, the counter and sync state survive."""
        sealed_v1 = _v1_database(db_path, sealer)
        with capture_logs() as events, Outbox.open(db_path, sealer, HUB, clock=clock) as ob:
            assert _query(db_path, "PRAGMA user_version") == [(SCHEMA_VERSION,)]
            assert _query(db_path, "PRAGMA application_id") == [(APPLICATION_ID,)]
            records = ob.pending_after(0, 10)
            assert [(r.seq, r.kind, r.body, r.attempts, r.created_at) for r in records] == [
                (1, "observation", V1_BODIES[1], 0, NOW - 99),
                (2, "device_qc", V1_BODIES[2], 0, NOW - 98),
                (3, "telemetry", V1_BODIES[3], 0, NOW - 97),
            ]
            assert ob.counts() == OutboxCounts(pending=3, oldest_age_s=99.0, damaged=2)
            assert ob.get_sync_state("gluco", "racp_hwm") == b"\x2a\x00"
            assert ob.append("observation", "new", RecordMaker()) == _stored(7)
        (migrated,) = [e for e in events if e["event"] == "outbox_migrated"]
        assert (migrated["from_version"], migrated["to"]) == (1, 2)
        assert [e for e in events if e["event"] == "outbox_record_damaged"] == []
        rows = _query(db_path, "SELECT seq, class, state, sealed FROM records ORDER BY seq")
        assert [(seq, klass, state) for seq, klass, state, _ in rows] == [
            (1, "clinical", "pending"),
            (2, "clinical", "pending"),
            (3, "other", "pending"),
            (4, "clinical", "damaged"),
            (5, "clinical", "damaged"),
            (7, "clinical", "pending"),
        ]
        by_seq = {seq: blob for seq, _, _, blob in rows}
        # The damaged ones are kept exactly as they were, for forensics.
        assert (by_seq[4], by_seq[5]) == (sealed_v1[4], sealed_v1[5])
        # The good ones were sealed again, kind inside, bound to their class.
        for seq, kind, klass in [(1, "observation", "clinical"), (3, "telemetry", "other")]:
            assert by_seq[seq] != sealed_v1[seq]
            plain = sealer.open(by_seq[seq], aad=record_aad(HUB, seq, klass))
            assert plain == _framed(kind, V1_BODIES[seq])

    def test_no_kind_left_in_clear_after_migration(self, db_path: Path, sealer: Sealer) -> None:
        """The version-1 rows that held kinds in clear are zeroed when dropped (secure_delete
        on during the migration, whatever the build's default; FAST after it, when only
        sealed records are deleted): once checkpointed, no kind name is left in the file."""
        _v1_database(db_path, sealer)
        assert b"device_qc" in db_path.read_bytes()  # control: version 1 had it in clear
        with Outbox.open(db_path, sealer, HUB) as ob:
            conn = ob._conn
            assert conn is not None
            assert conn.execute("PRAGMA secure_delete").fetchone() == (2,)  # FAST
            assert [r.kind for r in ob.pending_after(0, 10)][1] == "device_qc"
            # The zeroed pages are in the WAL now; the main file gets them at a checkpoint.
            assert b"device_qc" not in Path(f"{db_path}-wal").read_bytes()
        assert not Path(f"{db_path}-wal").exists()  # closed: checkpointed into the file
        on_disk = db_path.read_bytes()
        for kind in (b"observation", b"device_qc", b"telemetry"):
            assert kind not in on_disk

    def test_v1_seen_entries_match_any_content(self, db_path: Path, sealer: Sealer) -> None:
        """A re-send of a reading stored (or delivered) before the upgrade is a duplicate,
        whatever its digest: version 1 kept no content hash, so it is never a conflict."""
        _v1_database(db_path, sealer)
        with Outbox.open(db_path, sealer, HUB, clock=FakeClock()) as ob:
            maker = RecordMaker()
            conflict = ConflictMaker()
            results = [
                ob.append("observation", "v1-key-1", maker, content_digest=b"any digest"),
                ob.append("observation", "v1-key-1", maker),
                ob.append_many([AppendItem("observation", "v1-key-6", maker, b"other", conflict)])[
                    0
                ],
                ob.append("device_qc", "v1-key-2", maker, content_digest=b"d"),
            ]
            assert results == [_dup(1), _dup(1), _dup(6), _dup(2)]
            assert (maker.calls, conflict.calls) == ([], [])
        assert _query(db_path, "SELECT DISTINCT content_hash FROM seen") == [(b"",)]

    def test_migrated_file_opens_again_unchanged(self, db_path: Path, sealer: Sealer) -> None:
        """The migration runs once: a second open migrates nothing and reads the same."""
        _v1_database(db_path, sealer)
        with Outbox.open(db_path, sealer, HUB) as ob:
            first = ob.pending_after(0, 10)
        before = _query(db_path, "SELECT seq, class, state, sealed FROM records ORDER BY seq")
        with capture_logs() as events, Outbox.open(db_path, sealer, HUB) as ob:
            assert ob.pending_after(0, 10) == first
        assert [e for e in events if e["event"] == "outbox_migrated"] == []
        after = _query(db_path, "SELECT seq, class, state, sealed FROM records ORDER BY seq")
        assert after == before

    def test_other_hub_refused_before_anything_changes(self, db_path: Path, sealer: Sealer) -> None:
        """A version-1 file of another hub is refused before any re-seal: the file's bytes
        are unchanged and it is still version 1; its own hub then migrates it."""
        _v1_database(db_path, sealer)
        image = db_path.read_bytes()
        with pytest.raises(StorageUnusableError) as info:
            Outbox.open(db_path, sealer, "hub-other")
        assert info.value.reason == "belongs to hub 'hub-test-1', not 'hub-other'"
        assert info.value.retryable is False
        assert db_path.read_bytes() == image
        assert _query(db_path, "PRAGMA user_version") == [(1,)]
        assert [name for _, name, *_ in _query(db_path, "PRAGMA table_info(records)")][:2] == [
            "seq",
            "kind",
        ]
        with Outbox.open(db_path, sealer, HUB) as ob:
            assert [r.seq for r in ob.pending_after(0, 10)] == [1, 2, 3]

    def test_failed_migration_leaves_v1_file_whole(self, db_path: Path, sealer: Sealer) -> None:
        """A migration that fails part-way (here a stray ``seen_v2`` table in its way, after
        the records were re-sealed) rolls back whole: version 1, kinds in clear, same bytes."""
        _v1_database(db_path, sealer)
        raw = raw_connection(db_path)
        raw.execute("CREATE TABLE seen_v2 (x)")
        raw.close()
        image = db_path.read_bytes()
        with pytest.raises(StorageError) as info:
            Outbox.open(db_path, sealer, HUB)
        assert (info.value.operation, info.value.reason) == (
            "open",
            "SQLITE_ERROR: table seen_v2 already exists",
        )
        assert db_path.read_bytes() == image
        assert _query(db_path, "PRAGMA user_version") == [(1,)]
        assert _query(db_path, "SELECT seq, kind, state FROM records ORDER BY seq") == [
            (1, "observation", "pending"),
            (2, "device_qc", "in_flight"),
            (3, "telemetry", "pending"),
            (4, "observation", "damaged"),
            (5, "observation", "pending"),
        ]


# ---------------------------------------------------------------------------
# The kind is sealed, only the class is in clear
# ---------------------------------------------------------------------------


class TestKindSealed:
    def test_kind_in_no_column_and_no_file_byte(self, box: Outbox, db_path: Path) -> None:
        """After storing a device_qc and an observation record, neither kind's name is in any
        column of any table, nor anywhere in the database or WAL bytes; both read back."""
        box.append("device_qc", "qc-1", RecordMaker("qc"))
        box.append("observation", "obs-1", RecordMaker("obs"))
        assert [(r.seq, r.kind, r.body) for r in box.pending_after(0, 10)] == [
            (1, "device_qc", b"qc 1"),
            (2, "observation", b"obs 2"),
        ]
        secrets = (b"device_qc", b"observation")
        raw = raw_connection(db_path)
        try:
            tables = [
                t for (t,) in raw.execute("SELECT name FROM sqlite_master WHERE type='table'")
            ]
            assert {"records", "seen", "sync_state", "meta", "counters"} <= set(tables)
            scanned = 0
            for table in [*tables, "sqlite_master"]:
                columns = [c[1] for c in raw.execute(f"PRAGMA table_info({table})")]
                for column in columns:
                    for (value,) in raw.execute(f'SELECT "{column}" FROM "{table}"'):  # noqa: S608
                        scanned += 1
                        data = value.encode() if isinstance(value, str) else value
                        if isinstance(data, bytes):
                            assert not any(s in data for s in secrets), (table, column)
            assert [c[1] for c in raw.execute("PRAGMA table_info(records)")] == [
                "seq",
                "class",
                "state",
                "sealed",
                "created_at",
                "attempts",
                "refused_rc",
            ]
        finally:
            raw.close()
        assert scanned > 10
        wal = Path(f"{db_path}-wal").read_bytes()
        assert len(wal) > 0
        on_disk = db_path.read_bytes() + wal
        for secret in secrets:
            assert secret not in on_disk
            assert secret.decode().encode("utf-16-le") not in on_disk

    def test_record_plaintext_frames_kind_and_body(self, box: Outbox, db_path: Path) -> None:
        """The sealed plaintext is ``u8 len ‖ kind ‖ body``, bound to hub, seq and class."""
        box.append("device_qc", "qc-1", RecordMaker("qc"))
        ((blob,),) = _query(db_path, "SELECT sealed FROM records WHERE seq = 1")
        assert box._sealer.open(blob, aad=record_aad(HUB, 1, "clinical")) == b"\x09device_qcqc 1"

    def test_flipped_class_fails_and_is_never_shed(self, db_path: Path, sealer: Sealer) -> None:
        """A clinical record relabelled 'other' no longer opens; shedding under storage
        pressure sets it aside as damaged (kept), never deletes it unsent; the real
        non-clinical record is shed."""
        with Outbox.open(db_path, sealer, HUB) as ob:
            assert ob.append("observation", "obs-1", RecordMaker("obs")) == _stored(1)
            assert ob.append("telemetry", "tel-1", RecordMaker("tel")) == _stored(2)
            assert ob.append("observation", "obs-2", RecordMaker("obs")) == _stored(3)
        raw = raw_connection(db_path)
        raw.execute("UPDATE records SET class = 'other' WHERE seq = 1")
        raw.close()
        # Over the quota at once: the next append sheds non-clinical records first.
        with capture_logs() as events, Outbox.open(db_path, sealer, HUB, quota_bytes=1) as ob:
            with pytest.raises(StorageFullError) as info:
                ob.append("telemetry", "tel-2", RecordMaker("tel"))
            assert info.value.reason == "storage critical: kind telemetry shed"
            assert _query(db_path, "SELECT seq, class, state FROM records ORDER BY seq") == [
                (1, "other", "damaged"),
                (3, "clinical", "pending"),
            ]
            assert [(r.seq, r.body) for r in ob.pending_after(0, 10)] == [(3, b"obs 3")]
            counts = ob.counts()
            assert (counts.pending, counts.damaged) == (1, 1)
        (shed,) = [e for e in events if e["event"] == "outbox_shed"]
        assert shed["records"] == 1
        (damaged,) = [e for e in events if e["event"] == "outbox_record_damaged"]
        assert (damaged["seqs"], damaged["count"]) == ([1], 1)

    def test_flipped_class_found_by_reading(self, box: Outbox, db_path: Path) -> None:
        """Relabelling a clinical record 'other' (or back) makes it fail to open when read."""
        box.append("observation", "obs-1", RecordMaker())
        box.append("telemetry", "tel-1", RecordMaker())
        raw = raw_connection(db_path)
        raw.execute("UPDATE records SET class = 'other' WHERE seq = 1")
        raw.execute("UPDATE records SET class = 'clinical' WHERE seq = 2")
        raw.close()
        assert box.pending_after(0, 10) == []
        assert box.counts() == OutboxCounts(pending=0, oldest_age_s=None, damaged=2)


# ---------------------------------------------------------------------------
# Dedup with conflicts
# ---------------------------------------------------------------------------


class TestConflicts:
    def test_same_digest_duplicate_other_digest_conflict(self, box: Outbox) -> None:
        """Same identity and digest: a duplicate of the first seq (nothing built). Same
        identity, other digest: a conflict, stored under a new seq through make_conflict
        naming the first; that content again is a duplicate of the conflict's seq."""
        maker, conflict = RecordMaker(), ConflictMaker()

        def append(digest: bytes) -> AppendResult:
            (result,) = box.append_many([AppendItem("observation", "id", maker, digest, conflict)])
            return result

        assert append(b"v1") == _stored(1)
        assert append(b"v1") == _dup(1)
        assert append(b"v2") == _conflict(2, 1)
        assert append(b"v2") == _dup(2)
        assert append(b"v3") == _conflict(3, 1)
        assert append(b"v1") == _dup(1)
        assert maker.calls == [1]
        assert conflict.calls == [(2, 1), (3, 1)]
        assert [(r.seq, r.body) for r in box.pending_after(0, 10)] == [
            (1, b"body 1"),
            (2, b"conflict 2 of 1"),
            (3, b"conflict 3 of 1"),
        ]
        assert box.append("observation", "id", maker, content_digest=b"v4").duplicate is False

    def test_conflict_without_make_conflict_uses_make_record(self, box: Outbox) -> None:
        """A conflict is never discarded: without make_conflict its record is make_record's."""
        assert box.append("observation", "id", RecordMaker(), content_digest=b"a") == _stored(1)
        maker = RecordMaker("other")
        assert box.append("observation", "id", maker, content_digest=b"b") == _conflict(2, 1)
        assert maker.calls == [2]
        assert box.pending_after(1, 10)[0].body == b"other 2"

    def test_conflicts_within_one_batch(self, box: Outbox) -> None:
        """In one append_many each item is judged against the earlier ones, as if appended
        one by one; the conflict names the first item's seq."""
        conflict = ConflictMaker()
        items: list[AppendItem | tuple[str, str, Callable[[int], bytes]]] = [
            AppendItem("observation", "id", RecordMaker(), b"a", conflict),
            AppendItem("observation", "id", RecordMaker(), b"a", conflict),
            AppendItem("observation", "id", RecordMaker(), b"b", conflict),
            AppendItem("observation", "id", RecordMaker(), b"b", conflict),
            AppendItem("observation", "id", RecordMaker(), b"", conflict),
            ("observation", "other", RecordMaker()),
        ]
        assert box.append_many(items) == [
            _stored(1),
            _dup(1),
            _conflict(2, 1),
            _dup(2),
            _dup(1),
            _stored(3),
        ]
        assert conflict.calls == [(2, 1)]
        assert box.counts().pending == 3

    def test_no_digest_is_duplicate_either_way(self, box: Outbox) -> None:
        """An item without a digest on a known identity is a duplicate; an identity first
        stored without a digest matches any later content."""
        box.append("observation", "with", RecordMaker(), content_digest=b"x")
        box.append("observation", "without", RecordMaker())
        maker = RecordMaker()
        assert box.append("observation", "with", maker) == _dup(1)
        assert box.append("observation", "without", maker, content_digest=b"y") == _dup(2)
        assert maker.calls == []

    def test_conflicts_remembered_after_delivery_and_reopen(
        self, db_path: Path, sealer: Sealer
    ) -> None:
        """Both contents of an identity stay known after their records were delivered."""
        with Outbox.open(db_path, sealer, HUB) as ob:
            ob.append("observation", "id", RecordMaker(), content_digest=b"a")
            ob.append("observation", "id", RecordMaker(), content_digest=b"b")
            assert ob.mark_delivered_many([1, 2]) == 2
        with Outbox.open(db_path, sealer, HUB) as ob:
            maker = RecordMaker()
            assert ob.append("observation", "id", maker, content_digest=b"b") == _dup(2)
            assert ob.append("observation", "id", maker, content_digest=b"a") == _dup(1)
            assert ob.append("observation", "id", maker, content_digest=b"c") == _conflict(3, 1)

    def test_digest_stored_only_as_keyed_hash(self, box: Outbox, db_path: Path) -> None:
        """The digest of what the device sent is stored only as a 32-byte keyed hash, apart
        from the identity's hash."""
        box.append("observation", "id", RecordMaker(), content_digest=CANARY)
        ((dedup_hash, content_hash),) = _query(db_path, "SELECT dedup_hash, content_hash FROM seen")
        assert dedup_hash == box._sealer.keyed_hash(b"id")
        assert len(content_hash) == 32
        assert content_hash not in (dedup_hash, box._sealer.keyed_hash(CANARY))
        box.close()
        assert CANARY not in db_path.read_bytes()


# ---------------------------------------------------------------------------
# Refused records
# ---------------------------------------------------------------------------


def _status_config(tmp_path: Path, db_path: Path) -> config_mod.Config:
    return minimal_config(tmp_path, hub_id=HUB, patient_id="patient-v2-1", outbox_path=db_path)


class TestRefused:
    def test_refused_kept_not_sent_not_deleted(self, box: Outbox, clock: FakeClock) -> None:
        """mark_refused keeps the record out of pending_after, counted and listed with its
        rc; an ack does not delete it; the records after it still flow."""
        for i in range(1, 5):
            box.append("observation", f"k{i}", RecordMaker())
            clock.now += 10
        assert box.mark_refused(1, 0x87) is True
        assert box.mark_refused(1, 0x87) is False  # not pending any more
        assert box.mark_refused(99, None) is False
        assert box.mark_refused(3, None) is True
        assert [r.seq for r in box.pending_after(0, 10)] == [2, 4]
        assert box.counts() == OutboxCounts(pending=2, oldest_age_s=30.0, refused=2)
        assert box.refused() == [(1, 0x87), (3, None)]
        assert box.refused(limit=1) == [(1, 0x87)]
        assert box.mark_delivered_many([1, 2, 3]) == 1
        assert box.refused() == [(1, 0x87), (3, None)]
        assert box.counts() == OutboxCounts(pending=1, oldest_age_s=10.0, refused=2)
        # Its identity is still known: a re-send is a duplicate, not a second record.
        assert box.append("observation", "k1", RecordMaker()) == _dup(1)

    def test_note_attempt_counts_transient_refusals(self, box: Outbox) -> None:
        """note_attempt counts per pending record and shows in pending_after; 0 otherwise."""
        box.append("observation", "k1", RecordMaker())
        box.append("observation", "k2", RecordMaker())
        assert [box.note_attempt(2), box.note_attempt(2), box.note_attempt(2)] == [1, 2, 3]
        assert [(r.seq, r.attempts) for r in box.pending_after(0, 10)] == [(1, 0), (2, 3)]
        assert box.mark_refused(2, 0x97) is True
        assert box.note_attempt(2) == 0
        assert box.note_attempt(99) == 0

    def test_refused_survives_reopen_and_shows_in_status(
        self, tmp_path: Path, db_path: Path, sealer: Sealer
    ) -> None:
        """A refused record is durable and ``homehub status`` reports it (without the key)."""
        with Outbox.open(db_path, sealer, HUB, clock=FakeClock()) as ob:
            ob.append("observation", "k1", RecordMaker())
            ob.append("observation", "k2", RecordMaker())
            ob.mark_refused(2, 0x87)
        with Outbox.open(db_path, sealer, HUB) as ob:
            assert ob.refused() == [(2, 0x87)]
            assert [r.seq for r in ob.pending_after(0, 10)] == [1]
        report = status(_status_config(tmp_path, db_path))["outbox"]
        assert (report["pending"], report["refused"], report["damaged"]) == (1, 1, 0)
        assert [{"seq": 2, "rc": 0x87}] == report["refused_records"]


# ---------------------------------------------------------------------------
# pending_after
# ---------------------------------------------------------------------------


class TestPendingAfter:
    def test_cursor_and_limit(self, box: Outbox) -> None:
        """Records with seq > cursor, oldest first, at most limit; delivered ones skipped;
        paging by the last seq read visits every pending record exactly once."""
        for i in range(1, 11):
            box.append("observation", f"k{i}", RecordMaker())
        box.mark_delivered_many([2, 5, 6])
        assert [r.seq for r in box.pending_after(0, 3)] == [1, 3, 4]
        assert [r.seq for r in box.pending_after(4, 3)] == [7, 8, 9]
        assert [r.seq for r in box.pending_after(5, 1)] == [7]
        assert [r.seq for r in box.pending_after(-1, 1)] == [1]
        assert box.pending_after(10, 5) == []
        paged: list[int] = []
        cursor = 0
        while page := box.pending_after(cursor, 2):
            paged.extend(r.seq for r in page)
            cursor = page[-1].seq
        assert paged == [1, 3, 4, 7, 8, 9, 10]
        assert len(box.pending_after(0, MAX_BATCH)) == 7

    @pytest.mark.parametrize("limit", [0, -5, MAX_BATCH + 1])
    def test_limit_bounded(self, box: Outbox, limit: int) -> None:
        """limit must be 1..MAX_BATCH."""
        with pytest.raises(ValueError, match=rf"^limit must be 1\.\.{MAX_BATCH}$"):
            box.pending_after(0, limit)

    def test_damaged_set_aside_rest_returned(self, box: Outbox, db_path: Path) -> None:
        """A record that does not open is marked damaged and logged once; it does not count
        against the limit, the others are returned and the next pages still flow."""
        for i in range(1, 6):
            box.append("observation", f"k{i}", RecordMaker())
        ((blob,),) = _query(db_path, "SELECT sealed FROM records WHERE seq = 2")
        raw = raw_connection(db_path)
        raw.execute(
            "UPDATE records SET sealed = ? WHERE seq = 2",
            (blob[:-1] + bytes([blob[-1] ^ 0x80]),),
        )
        raw.close()
        with capture_logs() as events:
            first = box.pending_after(0, 3)
            rest = box.pending_after(first[-1].seq, 3)
            again = box.pending_after(0, 10)
        assert [r.seq for r in first] == [1, 3, 4]
        assert [r.seq for r in rest] == [5]
        assert [r.seq for r in again] == [1, 3, 4, 5]
        damaged = [e for e in events if e["event"] == "outbox_record_damaged"]
        assert [(e["seqs"], e["count"]) for e in damaged] == [([2], 1)]
        assert box.counts() == OutboxCounts(pending=4, oldest_age_s=0.0, damaged=1)

    def test_long_damaged_run_does_not_hide_good_records(
        self, db_path: Path, sealer: Sealer
    ) -> None:
        """More damaged records past the cursor than the limit (here sealed under a data key
        the hub no longer has) still let the good ones after them through in one call: an
        empty answer means nothing is left to send."""
        with Outbox.open(db_path, Sealer(DataKey.generate()), HUB) as ob:
            ob.append_many([("observation", f"old{i}", RecordMaker()) for i in range(7)])
        with (
            capture_logs() as events,
            Outbox.open(db_path, sealer, HUB, clock=FakeClock()) as ob,
        ):
            ob.append("observation", "new1", RecordMaker("new"))
            ob.append("observation", "new2", RecordMaker("new"))
            assert [(r.seq, r.body) for r in ob.pending_after(0, 2)] == [
                (8, b"new 8"),
                (9, b"new 9"),
            ]
            assert ob.pending_after(9, 2) == []
            assert ob.counts() == OutboxCounts(pending=2, oldest_age_s=0.0, damaged=7)
        damaged = [e for e in events if e["event"] == "outbox_record_damaged"]
        assert [(e["seqs"], e["count"]) for e in damaged] == [(list(range(1, 8)), 7)]

    def test_reading_writes_nothing_and_rereads_same_after_restart(
        self, db_path: Path, sealer: Sealer
    ) -> None:
        """pending_after writes nothing (the sealed bytes stay as stored), and after a restart
        the same records come back, byte for byte."""
        with Outbox.open(db_path, sealer, HUB) as ob:
            ob.append("observation", "k1", RecordMaker())
            ob.append("device_qc", "k2", RecordMaker())
            sealed = _query(db_path, "SELECT seq, sealed FROM records ORDER BY seq")
            conn = ob._conn
            assert conn is not None
            changes = conn.total_changes
            before = ob.pending_after(0, 10)
            assert ob.pending_after(0, 10) == before
            assert conn.total_changes == changes
        assert _query(db_path, "SELECT seq, sealed FROM records ORDER BY seq") == sealed
        with Outbox.open(db_path, sealer, HUB) as ob:
            after = ob.pending_after(0, 10)
        assert after == before
        assert [type(r) for r in after] == [OutboxRecord, OutboxRecord]
        assert [(r.seq, r.kind, r.body) for r in after] == [
            (1, "observation", b"body 1"),
            (2, "device_qc", b"body 2"),
        ]
