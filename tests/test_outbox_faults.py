"""Storage faults: a full disk (real tmpfs and injected), I/O errors, corrupt files at start,
and the byte quota. A reading is reported stored only when its transaction committed, the
process carries on, and storing works again once the disk does."""

from __future__ import annotations

import asyncio
import errno
import os
import shutil
import sqlite3
import subprocess
from collections.abc import Iterator, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Final

import pytest
from cryptography.hazmat.primitives.asymmetric import ec
from structlog.testing import capture_logs

from agent import config as config_mod
from agent import publisher as publisher_mod
from agent.ble.uuids import BLOOD_PRESSURE_MEASUREMENT
from agent.daemon import Arrival, Fate, Hub, status
from agent.errors import StorageCorruptError, StorageError, StorageFullError
from agent.ingest import Signer
from agent.ingest_batcher import Item, Status, commit_batch
from agent.measurement import RawMeasurement
from agent.outbox import (
    CRITICAL_FRACTION,
    DEFAULT_QUOTA_BYTES,
    Outbox,
    OutboxCounts,
    StorageLevel,
    open_or_quarantine,
    peek_counts,
    storage_level,
)
from agent.publisher import Publisher
from agent.sealing import DataKey, Sealer
from agent.storage import StorageThread
from agent.uplink import Uplink, UplinkSettings
from hil.broker import Broker
from hil.crash_child import DEVICE, measurement
from hil.pki import DevPki
from tests.example_config import minimal_config

HUB: Final = "hub-test-1"
NOW: Final = 1_800_000_000.0
"""2027-01-15T08:00:00Z, the fake wall clock of every outbox here."""

# SQLite result codes (sqlite.org/rescode.html): extended code = primary | (n << 8).
SQLITE_FULL: Final = 13
SQLITE_IOERR_WRITE: Final = 10 | (3 << 8)
SQLITE_IOERR_FSYNC: Final = 10 | (4 << 8)


def _clock() -> float:
    return NOW


def _body(seq: int) -> bytes:
    return f"body {seq}".encode()


def _raw(db: Path) -> sqlite3.Connection:
    return sqlite3.connect(db, isolation_level=None)


@pytest.fixture
def sealer() -> Sealer:
    return Sealer(DataKey.generate())


@pytest.fixture
def db(tmp_path: Path) -> Path:
    return tmp_path / "outbox.db"


# ---------------------------------------------------------------------------
# Injected faults
# ---------------------------------------------------------------------------


class FaultInjectingConnection:
    """MOCK at the storage edge, in the style of SQLite's own fault simulation (faultsim):
    wraps the outbox's real ``sqlite3.Connection`` and makes the ``fail_at``-th write
    statement (INSERT, UPDATE, DELETE, COMMIT) raise ``sqlite3.OperationalError`` carrying
    ``sqlite_errorcode`` as SQLite reports a full disk (SQLITE_FULL) or a failed write or
    fsync (SQLITE_IOERR_*). Everything else reaches the real connection."""

    WRITES: Final = ("INSERT", "UPDATE", "DELETE", "COMMIT")

    def __init__(
        self,
        real: sqlite3.Connection,
        fail_at: int,
        code: int,
        name: str,
        only: tuple[str, ...] = WRITES,
    ) -> None:
        self.real = real
        self.fail_at = fail_at
        self.code = code
        self.name = name
        self.only = only
        self.writes = 0
        self.fired = False

    def execute(self, sql: str, *args: Any) -> sqlite3.Cursor:
        self._count(sql)
        return self.real.execute(sql, *args)

    def executemany(self, sql: str, *args: Any) -> sqlite3.Cursor:
        self._count(sql)
        return self.real.executemany(sql, *args)

    def _count(self, sql: str) -> None:
        if not sql.lstrip().upper().startswith(self.only):
            return
        self.writes += 1
        if self.writes == self.fail_at:
            self.fired = True
            error = sqlite3.OperationalError("injected fault")
            error.sqlite_errorcode = self.code
            error.sqlite_errorname = self.name
            raise error

    def __getattr__(self, name: str) -> Any:
        return getattr(self.real, name)


def _inject(
    box: Outbox,
    fail_at: int,
    code: int,
    name: str,
    only: tuple[str, ...] = FaultInjectingConnection.WRITES,
) -> FaultInjectingConnection:
    real = box._conn
    assert isinstance(real, sqlite3.Connection)
    faulty = FaultInjectingConnection(real, fail_at, code, name, only)
    box._conn = faulty  # type: ignore[assignment]
    return faulty


def _heal(box: Outbox, faulty: FaultInjectingConnection) -> None:
    box._conn = faulty.real


class TestInjectedFaults:
    @pytest.mark.parametrize(
        ("code", "name", "error_type"),
        [
            (SQLITE_FULL, "SQLITE_FULL", StorageFullError),
            (SQLITE_IOERR_WRITE, "SQLITE_IOERR_WRITE", StorageError),
            (SQLITE_IOERR_FSYNC, "SQLITE_IOERR_FSYNC", StorageError),
        ],
    )
    def test_fault_at_every_write_stores_nothing_then_recovers(
        self, db: Path, sealer: Sealer, code: int, name: str, error_type: type[StorageError]
    ) -> None:
        """A fault at any write of a batch reports none stored, changes nothing, and heals."""
        positions = 0
        for fail_at in range(1, 100):
            path = db.with_name(f"outbox-{fail_at}.db")
            with Outbox.open(path, sealer, HUB, clock=_clock) as box:
                commit_batch(box, [Item("observation", f"old{i}", _body) for i in range(3)])
                box.set_sync_state("gluco", "racp_hwm", b"\x03")
                batch = [
                    Item("observation", f"new{i}", _body, {("gluco", "racp_hwm"): b"\x06"})
                    for i in range(3)
                ]
                faulty = _inject(box, fail_at, code, name)
                outcomes = commit_batch(box, batch)
                _heal(box, faulty)
                if not faulty.fired:
                    assert [Status.STORED] * 3 == [o.status for o in outcomes]
                    break
                positions += 1
                assert [Status.NOT_STORED] * 3 == [o.status for o in outcomes]
                assert all(type(o.error) is error_type for o in outcomes)
                assert OutboxCounts(3, 0.0) == box.counts()
                assert b"\x03" == box.get_sync_state("gluco", "racp_hwm")
                # The disk is back: the same batch stores, with the next numbers (no gap).
                assert [4, 5, 6] == [o.seq for o in commit_batch(box, batch)]
                assert b"\x06" == box.get_sync_state("gluco", "racp_hwm")
            assert [("ok",)] == _raw(path).execute("PRAGMA integrity_check").fetchall()
        # 3 × (counter update, record, dedup entry) + sync state + COMMIT
        assert 11 == positions

    def test_io_error_on_delivery_keeps_record(self, db: Path, sealer: Sealer) -> None:
        """EIO while deleting a delivered record raises and keeps it pending, to be sent
        again (after a restart too) with the same bytes."""
        with Outbox.open(db, sealer, HUB, clock=_clock) as box:
            box.append("observation", "k", _body)
            (record,) = box.pending_after(0, 10)
            faulty = _inject(box, 1, SQLITE_IOERR_WRITE, "SQLITE_IOERR_WRITE")
            with pytest.raises(StorageError) as info:
                box.mark_delivered_many([record.seq])
            _heal(box, faulty)
            assert ("mark_delivered", "SQLITE_IOERR_WRITE: injected fault") == (
                info.value.operation,
                info.value.reason,
            )
            assert OutboxCounts(1, 0.0) == box.counts()
            assert [record] == box.pending_after(0, 10)
        with Outbox.open(db, sealer, HUB, clock=_clock) as box:
            (again,) = box.pending_after(0, 10)
            assert (record.seq, record.body) == (again.seq, again.body) == (1, b"body 1")
            assert box.mark_delivered(again.seq)
            assert OutboxCounts(0, None) == box.counts()


class TestPublisherFaults:
    async def test_io_error_on_delete_keeps_publisher_running_and_retries_delete(
        self,
        tmp_path: Path,
        sealer: Sealer,
        monkeypatch: pytest.MonkeyPatch,
        dev_pki: DevPki,
        broker: Broker,
    ) -> None:
        """EIO on mark_delivered_many: outbox_unavailable is logged, the publisher carries
        on, the acknowledged record is not published again, and its deletion is retried
        until it sticks (the real uplink and a TLS mosquitto)."""
        monkeypatch.setattr(publisher_mod, "STORAGE_RETRY_S", 0.0)  # no 5 s pause in a test
        path = tmp_path / "outbox.db"
        uplink = Uplink(
            UplinkSettings(
                hub_id=dev_pki.hub_id,
                host="127.0.0.1",
                port=broker.port,
                ca_file=dev_pki.ca_cert,
                cert_file=dev_pki.hub_cert,
                key_file=dev_pki.hub_key,
            )
        )
        delivered: list[list[int]] = []
        done = asyncio.Event()

        def on_delivered(seqs: Sequence[int]) -> None:
            delivered.append(list(seqs))
            done.set()

        async with StorageThread() as storage:
            box = await storage.call(Outbox.open, path, sealer, HUB, clock=_clock)
            try:
                await storage.call(box.append, "observation", "k", _body)
                faulty = _inject(box, 1, SQLITE_IOERR_WRITE, "SQLITE_IOERR_WRITE", only=("DELETE",))
                publisher = Publisher(storage, box, uplink, on_delivered=on_delivered)
                running = asyncio.create_task(uplink.run())
                with capture_logs() as events:
                    task = asyncio.create_task(publisher.run())
                    async with asyncio.timeout(5.0):
                        await done.wait()
                    publisher.stop()
                    async with asyncio.timeout(5.0):
                        await task
                await uplink.close()
                await running
                counts = await storage.call(box.counts)
            finally:
                await storage.call(box.close)
        assert faulty.fired
        assert OutboxCounts(0, None) == counts
        assert (1, 1) == (uplink.stats.acked, uplink.stats.connects)
        assert [[1]] == delivered
        assert (1, 1) == (publisher.stats.published, publisher.stats.delivered)
        (event,) = [e for e in events if e["event"] == "outbox_unavailable"]
        assert ("StorageError", "mark_delivered") == (event["error"], event["operation"])
        assert "SQLITE_IOERR_WRITE: injected fault" == event["reason"]


# ---------------------------------------------------------------------------
# A real full disk: a size-limited tmpfs
# ---------------------------------------------------------------------------

SMALL_FS_BYTES: Final = 2 * 1024 * 1024


@pytest.fixture
def small_fs(tmp_path: Path) -> Iterator[Path]:
    """A 2 MiB tmpfs mounted under tmp_path; skipped where mounting is not allowed."""
    mount_point = tmp_path / "small"
    mount_point.mkdir()
    result = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", f"size={SMALL_FS_BYTES},mode=0700", "tmpfs", mount_point],
        capture_output=True,
        text=True,
        check=False,
    )
    if result.returncode != 0:
        pytest.skip(f"cannot mount a size-limited tmpfs here: {result.stderr.strip()}")
    try:
        yield mount_point
    finally:
        subprocess.run(["umount", "-l", mount_point], check=True)


def _fill(directory: Path) -> Path:
    """Write a filler file until the filesystem is full (ENOSPC); returns its path."""
    filler = directory / "filler"
    fd = os.open(filler, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        for size in (64 * 1024, 4096, 512, 1):  # down to the last byte
            while True:
                try:
                    os.write(fd, bytes(size))
                except OSError as exc:
                    if exc.errno != errno.ENOSPC:
                        raise
                    break
    finally:
        os.close(fd)
    return filler


def _hub(tmp_path: Path, outbox_path: Path) -> Hub:
    cfg = minimal_config(
        tmp_path, hub_id=HUB, patient_id="patient-fault-1", outbox_path=outbox_path
    )
    return Hub(cfg)


def _arrivals(first: int, count: int) -> list[Arrival]:
    return [
        Arrival(
            DEVICE,
            "..:C8:01",
            "cuff",
            RawMeasurement(
                characteristic_uuid=BLOOD_PRESSURE_MEASUREMENT,
                data=measurement(i),
                received_monotonic=float(i),
                received_wall=datetime(2026, 11, 23, 9, 0, i % 60, tzinfo=UTC),
            ),
        )
        for i in range(first, first + count)
    ]


def _store(hub: Hub, box: Outbox, signer: Signer, arrivals: list[Arrival]) -> list[Fate]:
    """What the daemon's ingest does with one batch: store (the storage thread's part),
    then count and log (the loop's part)."""
    fates = hub._store_batch(box, signer, arrivals)
    hub._report(arrivals, fates)
    return fates


class TestDiskFull:
    def test_enospc_on_tmpfs_not_stored_then_recovers(
        self, tmp_path: Path, small_fs: Path, sealer: Sealer
    ) -> None:
        """On a full tmpfs the daemon's ingest logs measurement_not_stored, counts nothing
        stored, keeps going, and stores the same readings once space returns."""
        path = small_fs / "outbox.db"
        hub = _hub(tmp_path, path)
        signer = Signer.from_key(ec.generate_private_key(ec.SECP256R1()))
        with Outbox.open(path, sealer, HUB, clock=_clock) as box:
            _store(hub, box, signer, _arrivals(0, 2))
            assert (2, 2) == (hub.stored, box.counts().pending)
            filler = _fill(small_fs)
            with capture_logs() as events:
                fates = _store(hub, box, signer, _arrivals(2, 20))
            assert [Status.NOT_STORED] * 20 == [getattr(f, "status", None) for f in fates]
            assert 20 == hub.not_stored
            not_stored = [e for e in events if e["event"] == "measurement_not_stored"]
            assert 20 == len(not_stored)
            assert {("StorageFullError", "append")} == {
                (e["error"], e["operation"]) for e in not_stored
            }
            assert all(e["reason"].startswith("SQLITE_FULL: ") for e in not_stored)
            assert (2, 2) == (hub.stored, box.counts().pending)
            assert [("ok",)] == box._conn.execute("PRAGMA quick_check").fetchall()  # type: ignore[union-attr]
            filler.unlink()
            _store(hub, box, signer, _arrivals(2, 20))
            assert (22, 22, 0) == (hub.stored, box.counts().pending, hub.duplicates)
            assert list(range(1, 23)) == [r.seq for r in box.pending_after(0, 100)]
        assert [("ok",)] == _raw(path).execute("PRAGMA integrity_check").fetchall()


# ---------------------------------------------------------------------------
# Corrupt at start: quarantine
# ---------------------------------------------------------------------------


def _crash_image(
    db: Path, sealer: Sealer, dest: Path, records: int, *, checkpointed: bool = False
) -> Path:
    """The files a crash leaves: db + WAL holding ``records`` committed appends, or, when
    ``checkpointed``, everything in the db file and an empty WAL beside it (a WAL that holds
    page 1 would mask a damaged header in the db file)."""
    with Outbox.open(db, sealer, HUB, clock=_clock) as box:
        for i in range(records):
            box.append("observation", f"k{i}", lambda seq: f"reading {seq}".encode() * 40)
        if checkpointed:
            conn = box._conn
            assert conn is not None
            assert 0 == conn.execute("PRAGMA wal_checkpoint(TRUNCATE)").fetchone()[0]
        dest.mkdir()
        for suffix in ("", "-wal"):
            shutil.copyfile(f"{db}{suffix}", f"{dest / db.name}{suffix}")
    return dest / db.name


def _quarantined(directory: Path) -> list[str]:
    return sorted(p.name for p in directory.iterdir() if ".corrupt-" in p.name)


class TestQuarantine:
    def test_flipped_header_bytes_quarantined_fresh_outbox_opened(
        self, tmp_path: Path, sealer: Sealer
    ) -> None:
        """A file whose header magic is flipped is moved aside with its WAL; a fresh outbox
        opens, numbering above anything the old one could have used; an event is logged."""
        image = _crash_image(
            tmp_path / "outbox.db", sealer, tmp_path / "image", 5, checkpointed=True
        )
        data = bytearray(image.read_bytes())
        data[0:4] = bytes(b ^ 0xFF for b in data[0:4])
        image.write_bytes(bytes(data))
        wal = Path(f"{image}-wal").read_bytes()
        with capture_logs() as events, open_or_quarantine(image, sealer, HUB, clock=_clock) as box:
            assert OutboxCounts(0, None) == box.counts()
            assert box.append("observation", "new", _body).seq == int(NOW * 1_000_000)
        stamp = "20270115T080000Z"
        assert [f"outbox.db.corrupt-{stamp}", f"outbox.db.corrupt-{stamp}-wal"] == _quarantined(
            image.parent
        )
        assert bytes(data) == (image.parent / f"outbox.db.corrupt-{stamp}").read_bytes()
        assert wal == (image.parent / f"outbox.db.corrupt-{stamp}-wal").read_bytes()
        (event,) = [e for e in events if e["event"] == "outbox_quarantined"]
        assert event["reason"].startswith("SQLITE_NOTADB: ")
        assert (False, int(NOW * 1_000_000)) == (event["counter_salvaged"], event["next_seq"])
        assert "error" == event["log_level"]

    def test_page_size_bytes_flipped_quarantined(self, tmp_path: Path, sealer: Sealer) -> None:
        """Header bytes 16-17 (page size) flipped to an invalid size: quarantined, not fatal."""
        image = _crash_image(
            tmp_path / "outbox.db", sealer, tmp_path / "image", 3, checkpointed=True
        )
        data = bytearray(image.read_bytes())
        data[16:18] = b"\x12\x34"
        image.write_bytes(bytes(data))
        with open_or_quarantine(image, sealer, HUB, clock=_clock) as box:
            assert 0 == box.counts().pending
        stamp = "20270115T080000Z"
        assert [
            f"outbox.db.corrupt-{stamp}",
            f"outbox.db.corrupt-{stamp}-shm",
            f"outbox.db.corrupt-{stamp}-wal",
        ] == _quarantined(image.parent)

    def test_damaged_btree_quarantined_counter_salvaged(
        self, tmp_path: Path, sealer: Sealer
    ) -> None:
        """A b-tree page failing quick_check: quarantined, and the old counter is salvaged."""
        db = tmp_path / "outbox.db"
        with Outbox.open(db, sealer, HUB, clock=_clock) as box:
            for i in range(40):
                box.append("observation", f"k{i}", lambda seq: bytes(2000))
        raw = _raw(db)
        (seen_root,) = raw.execute(
            "SELECT rootpage FROM sqlite_master WHERE name = 'seen'"
        ).fetchone()
        raw.execute("UPDATE counters SET value = ? WHERE name = 'next_seq'", (2**62,))
        raw.close()
        data = bytearray(db.read_bytes())
        page_size = int.from_bytes(data[16:18], "big")
        offset = (seen_root - 1) * page_size + 3  # b-tree page header: number of cells
        data[offset : offset + 2] = (200).to_bytes(2, "big")
        db.write_bytes(bytes(data))
        with pytest.raises(StorageCorruptError):
            Outbox.open(db, sealer, HUB, clock=_clock).close()
        with capture_logs() as events, open_or_quarantine(db, sealer, HUB, clock=_clock) as box:
            assert 2**62 == box.append("observation", "new", _body).seq
        (event,) = [e for e in events if e["event"] == "outbox_quarantined"]
        assert ("quick_check failed", True) == (event["reason"], event["counter_salvaged"])

    def test_second_quarantine_in_same_second_gets_own_name(
        self, tmp_path: Path, sealer: Sealer
    ) -> None:
        """Two quarantines at the same time never overwrite each other's evidence."""
        db = tmp_path / "outbox.db"
        for _ in range(2):
            db.write_bytes(b"not a database " * 300)
            open_or_quarantine(db, sealer, HUB, clock=_clock).close()
            db.unlink()
            for suffix in ("-wal", "-shm"):
                Path(f"{db}{suffix}").unlink(missing_ok=True)
        stamp = "20270115T080000Z"
        assert [f"outbox.db.corrupt-{stamp}", f"outbox.db.corrupt-{stamp}-1"] == _quarantined(
            tmp_path
        )

    @pytest.mark.parametrize("cut", ["mid_frame", "header_only"])
    def test_truncated_wal_opens_consistent_prefix(
        self, tmp_path: Path, sealer: Sealer, cut: str
    ) -> None:
        """A WAL cut short (a disk that lied about fsync) is not corruption to SQLite: the
        torn tail's commits are gone, the rest opens consistent, and nothing is quarantined."""
        image = _crash_image(tmp_path / "outbox.db", sealer, tmp_path / "image", 12)
        wal = Path(f"{image}-wal")
        size = wal.stat().st_size
        with wal.open("r+b") as f:
            f.truncate(size // 2 + 100 if cut == "mid_frame" else 32)
        with capture_logs() as events, open_or_quarantine(image, sealer, HUB, clock=_clock) as box:
            records = box.pending_after(0, 100)
            assert 0 == box.counts().damaged  # every surviving record authenticates
            seqs = [r.seq for r in records]
            assert seqs == list(range(1, len(seqs) + 1))
            assert len(seqs) < 12
            assert all(r.body == f"reading {r.seq}".encode() * 40 for r in records)
            # The dedup entries and the counter rolled back with their records: consistent.
            assert box.append("observation", "k0", _body).duplicate is (len(seqs) > 0)
        assert [] == [e for e in events if e["event"] == "outbox_quarantined"]
        assert [] == _quarantined(image.parent)
        assert [("ok",)] == _raw(image).execute("PRAGMA integrity_check").fetchall()

    def test_flipped_wal_header_ignored_consistently(self, tmp_path: Path, sealer: Sealer) -> None:
        """A WAL whose header checksum is flipped is ignored whole; the file opens consistent."""
        image = _crash_image(tmp_path / "outbox.db", sealer, tmp_path / "image", 4)
        wal = Path(f"{image}-wal")
        data = bytearray(wal.read_bytes())
        data[24] ^= 0xFF  # WAL header checksum-1 (offset 24): the header no longer verifies
        wal.write_bytes(bytes(data))
        with open_or_quarantine(image, sealer, HUB, clock=_clock) as box:
            assert OutboxCounts(0, None) == box.counts()
            assert 1 == box.append("observation", "k0", _body).seq
        assert [] == _quarantined(image.parent)


# ---------------------------------------------------------------------------
# The quota
# ---------------------------------------------------------------------------

QUOTA: Final = 160 * 1024
"""Small enough to reach with a few dozen 2 kB records; the empty outbox uses 32 KiB."""


def _fill_until(box: Outbox, kind: str, level: StorageLevel, start: int) -> list[int]:
    """Append 2 kB records of ``kind`` until the outbox reaches ``level``; their seqs."""
    seqs: list[int] = []
    for i in range(start, start + 1000):
        result = box.append(kind, f"{kind}{i}", lambda seq: os.urandom(2000))
        assert result.seq is not None
        seqs.append(result.seq)
        if box.level is level:
            return seqs
    raise AssertionError(f"never reached {level}")


def _level(box: Outbox) -> StorageLevel:
    """The outbox's level now (a call, so a type checker does not carry an earlier value)."""
    return box.level


class TestQuota:
    def test_levels(self) -> None:
        """ok below 90 % of the quota, critical from 90 %, full from 100 %."""
        assert 0.9 == CRITICAL_FRACTION
        assert StorageLevel.OK == storage_level(899, 1000)
        assert StorageLevel.CRITICAL == storage_level(900, 1000)
        assert StorageLevel.CRITICAL == storage_level(999, 1000)
        assert StorageLevel.FULL == storage_level(1000, 1000)

    def test_default_quota_matches_config(self) -> None:
        """The config default of outbox.quota_bytes is the outbox's DEFAULT_QUOTA_BYTES."""
        assert DEFAULT_QUOTA_BYTES == config_mod.SCHEMA["outbox"]["quota_bytes"].default
        assert DEFAULT_QUOTA_BYTES == config_mod.OutboxConfig(Path("a"), Path("b")).quota_bytes

    def test_critical_sheds_non_clinical_first(self, db: Path, sealer: Sealer) -> None:
        """At 90 %: storage_critical once, telemetry refused and shed, clinical kept."""
        with capture_logs() as events, Outbox.open(db, sealer, HUB, quota_bytes=QUOTA) as box:
            telemetry = [box.append("telemetry", f"t{i}", _body).seq for i in range(5)]
            clinical = _fill_until(box, "observation", StorageLevel.CRITICAL, 0)
            assert 1 == [e["event"] for e in events].count("storage_critical")
            with pytest.raises(StorageFullError) as info:
                box.append("log", "l1", _body)
            assert "storage critical: kind log shed" == info.value.reason
            # Clinical records still go in while critical; telemetry was shed unsent.
            more = box.append("observation", "after-critical", _body).seq
            stored = [r.seq for r in box.pending_after(0, 1000)]
        assert [*clinical, more] == stored
        assert not set(telemetry) & set(stored)
        (shed,) = [e for e in events if e["event"] == "outbox_shed"]
        assert 5 == shed["records"]

    def test_full_refuses_clinical_and_keeps_high_water_mark(
        self, db: Path, sealer: Sealer
    ) -> None:
        """At the quota a batch with a RACP high-water mark fails whole (the mark stays), no
        record is deleted, and storing resumes once delivered records free space."""
        with capture_logs() as events, Outbox.open(db, sealer, HUB, quota_bytes=QUOTA) as box:
            box.set_sync_state("gluco", "racp_hwm", b"\x10")
            seqs = _fill_until(box, "observation", StorageLevel.CRITICAL, 0)
            hwm = b"\x10"
            refused: StorageFullError | None = None
            for i in range(100):
                value = bytes([0x11 + i])
                try:
                    (result,) = box.append_many(
                        [("observation", f"g{i}", lambda seq: os.urandom(2000))],
                        sync_state={("gluco", "racp_hwm"): value},
                    )
                except StorageFullError as exc:
                    refused = exc
                    break
                assert result.seq is not None
                seqs.append(result.seq)
                hwm = value
            assert refused is not None
            assert f"quota of {QUOTA} bytes reached" == refused.reason
            assert StorageLevel.FULL is _level(box)
            counts = box.counts()
            assert len(seqs) == counts.pending
            assert counts.used_bytes <= QUOTA
            # The refused batch's mark did not advance: the device keeps those records.
            assert hwm == box.get_sync_state("gluco", "racp_hwm")
            # Nothing clinical was deleted to make room: every record is still there.
            kept = [r.seq for r in box.pending_after(0, 1000)]
            assert seqs == kept
            # Delivery frees pages: storing resumes.
            box.mark_delivered_many(kept[: len(kept) // 2])
            assert StorageLevel.OK is _level(box)
            box.append_many(
                [("observation", "g-after", _body)], sync_state={("gluco", "racp_hwm"): b"\xff"}
            )
            assert b"\xff" == box.get_sync_state("gluco", "racp_hwm")
        levels = [e["event"] for e in events if e["event"].startswith("storage_")]
        assert ["storage_critical", "storage_full", "storage_ok"] == levels

    def test_status_shows_quota_and_level(self, tmp_path: Path, sealer: Sealer) -> None:
        """homehub status reports used bytes, the quota and the storage level."""
        path = tmp_path / "outbox.db"
        with Outbox.open(path, sealer, HUB) as box:
            box.append("observation", "k", _body)
            used = box.counts().used_bytes
        assert used == peek_counts(path).used_bytes > 0
        hub = _hub(tmp_path, path)
        report = status(hub.cfg)["outbox"]
        assert (used, DEFAULT_QUOTA_BYTES, "ok") == (
            report["used_bytes"],
            report["quota_bytes"],
            report["storage"],
        )
