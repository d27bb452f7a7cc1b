"""WAL checkpoints off the commit path and the storage thread's priorities.

The outbox checkpoints when the storage thread is idle (``Outbox.checkpoint_if_due``, run by
``StorageThread.when_idle``); SQLite's own automatic checkpoint is only a backstop that
bounds the WAL when the thread never idles. The publisher's calls (``call_low``) wait while
a store waits. Sizes are asserted, never times (speed is hil/bench/ble.py's).
"""

from __future__ import annotations

import asyncio
import threading
from pathlib import Path

import pytest
from structlog.testing import capture_logs

from agent import outbox as outbox_module
from agent.errors import StorageUnusableError
from agent.outbox import CHECKPOINT_AFTER_COMMITS, MAX_SEQ, WAL_AUTOCHECKPOINT_BYTES, Outbox
from agent.sealing import Sealer
from agent.storage import StorageThread
from tests.outbox_helpers import HUB, FakeClock, raw_connection

BODY = bytes(range(256)) * 16  # 4 KiB: like a glucose envelope, it needs overflow pages


def _append(box: Outbox, n: int) -> int:
    return box.append("observation", f"reading-{n}", lambda _seq: BODY).seq


def _wal_bytes(db_path: Path) -> int:
    wal = db_path.with_name(db_path.name + "-wal")
    return wal.stat().st_size if wal.exists() else 0


def test_the_backstop_is_set_on_the_connection(box: Outbox) -> None:
    conn = box._connection("test")
    page_size = conn.execute("PRAGMA page_size").fetchone()[0]
    assert conn.execute("PRAGMA wal_autocheckpoint").fetchone()[0] == (
        WAL_AUTOCHECKPOINT_BYTES // page_size
    )


def test_a_checkpoint_is_due_after_enough_commits_and_copies_every_frame(box: Outbox) -> None:
    box.checkpoint()
    assert box.commits_since_checkpoint == 0
    for n in range(CHECKPOINT_AFTER_COMMITS - 1):
        _append(box, n)
        assert not box.checkpoint_if_due()
    assert box.commits_since_checkpoint == CHECKPOINT_AFTER_COMMITS - 1
    _append(box, 10_000)
    assert box.checkpoint_if_due()
    assert box.commits_since_checkpoint == 0
    # Everything is in the database file now: the WAL holds nothing left to copy.
    frames, copied = box.checkpoint()
    assert frames == copied


def test_a_reader_holding_frames_keeps_the_checkpoint_due(box: Outbox, db_path: Path) -> None:
    _append(box, 1)
    box.checkpoint()
    reader = raw_connection(db_path)
    try:
        reader.execute("BEGIN")
        reader.execute("SELECT COUNT(*) FROM records").fetchone()  # a snapshot: frames pinned
        for n in range(2, 2 + CHECKPOINT_AFTER_COMMITS):
            _append(box, n)
        frames, copied = box.checkpoint()
        assert copied < frames  # the reader's snapshot needs the old pages
        assert box.commits_since_checkpoint == CHECKPOINT_AFTER_COMMITS
        reader.execute("COMMIT")
    finally:
        reader.close()
    assert box.checkpoint_if_due()
    assert box.commits_since_checkpoint == 0


def test_idle_checkpoints_keep_the_wal_at_a_few_commits(box: Outbox, db_path: Path) -> None:
    one_commit = 0
    commits = 20 * CHECKPOINT_AFTER_COMMITS
    for n in range(commits):
        before = _wal_bytes(db_path)
        _append(box, n)
        if n == 0:
            one_commit = _wal_bytes(db_path) - before
        box.checkpoint_if_due()
    assert one_commit > 0
    # The WAL restarts after each complete checkpoint: it never holds more than the commits
    # between two checkpoints (and the one that triggered it), whatever was written in all.
    assert _wal_bytes(db_path) <= (CHECKPOINT_AFTER_COMMITS + 1) * one_commit * 2
    assert _wal_bytes(db_path) * 10 < commits * one_commit


def test_without_idle_checkpoints_the_backstop_bounds_the_wal(
    db_path: Path, sealer: Sealer, clock: FakeClock, monkeypatch: pytest.MonkeyPatch
) -> None:
    bound = 256 * 1024
    monkeypatch.setattr(outbox_module, "WAL_AUTOCHECKPOINT_BYTES", bound)
    with Outbox.open(db_path, sealer, HUB, clock=clock) as box:
        for n in range(400):  # ≈ 2 MiB of records, eight times the bound
            _append(box, n)
        peak = _wal_bytes(db_path)
    one_transaction = 64 * 1024  # a 4 KiB record, its index entries and the counters
    assert peak <= bound + one_transaction


async def test_low_priority_calls_wait_while_a_normal_call_waits() -> None:
    order: list[str] = []
    started, release = threading.Event(), threading.Event()

    def blocker() -> None:
        started.set()
        release.wait()

    async with StorageThread() as storage:
        blocking = asyncio.ensure_future(storage.call(blocker))
        await asyncio.to_thread(started.wait)
        # Queued in this order while the thread is busy: two low, then one normal call.
        low_1 = asyncio.ensure_future(storage.call_low(order.append, "delete"))
        low_2 = asyncio.ensure_future(storage.call_low(order.append, "read"))
        store = asyncio.ensure_future(storage.call(order.append, "store"))
        asyncio.get_running_loop().call_soon(release.set)  # after the three have queued
        await asyncio.gather(blocking, low_1, low_2, store)
    assert order == ["store", "delete", "read"]


async def test_idle_work_waits_for_the_callers_next_step() -> None:
    """Right after a store, a checkpoint due waits for the store's caller to hand in what
    queued up meanwhile: the next store runs first, then the idle work, once."""
    order: list[str] = []
    started, release = threading.Event(), threading.Event()

    def first_store() -> None:
        started.set()
        release.wait()
        order.append("store 1")

    async def ingest() -> None:
        await storage.call(first_store)
        await storage.call(order.append, "store 2")  # what arrived during the first, at once

    async with StorageThread() as storage:
        storage.when_idle(lambda: order.append("checkpoint"))
        stores = asyncio.ensure_future(ingest())
        await asyncio.to_thread(started.wait)
        release.set()
        await stores
        await storage.call(lambda: None)  # and the thread serves on after it
    assert order[:3] == ["store 1", "store 2", "checkpoint"]


async def test_idle_work_runs_on_the_thread_after_calls_and_its_errors_are_logged(
    db_path: Path, sealer: Sealer, clock: FakeClock
) -> None:
    ran = threading.Event()
    on_thread: list[bool] = []
    async with StorageThread() as storage:
        box = await storage.call(Outbox.open, db_path, sealer, HUB, clock=clock)

        def idle() -> None:
            on_thread.append(storage.on_thread())
            box.checkpoint_if_due()
            ran.set()

        storage.when_idle(idle)
        for n in range(CHECKPOINT_AFTER_COMMITS):
            ran.clear()
            await storage.call(_append, box, n)
            await asyncio.to_thread(ran.wait)
        # The eighth commit made a checkpoint due; the idle work ran it.
        assert await storage.call(lambda: box.commits_since_checkpoint) < CHECKPOINT_AFTER_COMMITS

        def failing() -> None:
            ran.set()
            raise OSError("disk gone")

        ran.clear()
        storage.when_idle(failing)
        with capture_logs() as events:
            await storage.call(lambda: None)
            await asyncio.to_thread(ran.wait)
            assert await storage.call(lambda: 41) == 41  # logged before the next call ran
        assert await storage.call(lambda: 42) == 42  # the thread serves on
        storage.when_idle(None)
        await storage.call(box.close)
    assert on_thread
    assert all(on_thread)
    # Logged once per idle spell (after each call), the thread serving on after each.
    assert {e["error"] for e in events if e["event"] == "storage_idle_work_failed"} == {"OSError"}


async def test_a_call_cancelled_before_it_ran_never_runs() -> None:
    ran: list[str] = []
    started, release = threading.Event(), threading.Event()

    def blocker() -> None:
        started.set()
        release.wait()

    async with StorageThread() as storage:
        blocking = asyncio.ensure_future(storage.call(blocker))
        await asyncio.to_thread(started.wait)
        doomed = asyncio.ensure_future(storage.call(ran.append, "doomed"))
        await asyncio.sleep(0)  # let it queue (a yield, not a wait for time)
        doomed.cancel()
        with pytest.raises(asyncio.CancelledError):
            await doomed  # the cancellation has reached the queued call by now
        release.set()
        await blocking
        assert await storage.call(ran.append, "after") is None
    assert ran == ["after"]


def test_the_sequence_ends_at_max_seq_minus_one_and_then_refuses(
    box: Outbox, db_path: Path
) -> None:
    # The next number is allocated in one UPDATE … RETURNING (one statement, not two).
    raw = raw_connection(db_path)
    try:
        raw.execute("UPDATE counters SET value = ? WHERE name = 'next_seq'", (MAX_SEQ - 1,))
    finally:
        raw.close()
    assert _append(box, 1) == MAX_SEQ - 1
    with pytest.raises(StorageUnusableError, match="sequence exhausted"):
        _append(box, 2)
    raw = raw_connection(db_path)
    try:
        assert raw.execute("SELECT value FROM counters WHERE name = 'next_seq'").fetchone() == (
            MAX_SEQ,
        )
        assert raw.execute("SELECT COUNT(*) FROM records").fetchone() == (1,)
    finally:
        raw.close()
