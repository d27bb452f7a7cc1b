"""Tests for agent/ingest_batcher.py: what is queued is taken at once (a window only when asked
for), one commit per batch, and each item's fate: stored, duplicate, conflict or not stored."""

from __future__ import annotations

import asyncio
import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from agent.errors import RecordTooLargeError, StorageFullError
from agent.ingest_batcher import (
    GROUP_COMMIT_MAX,
    GROUP_COMMIT_WINDOW_S,
    Item,
    Outcome,
    Status,
    collect_batch,
    commit_batch,
)
from agent.outbox import MAX_RECORD_BYTES, Outbox
from agent.sealing import DataKey, Sealer

HUB = "hub-test-1"


def _body(seq: int) -> bytes:
    return f"body {seq}".encode()


def _too_large(_seq: int) -> bytes:
    return bytes(MAX_RECORD_BYTES + 1)


@pytest.fixture
def box(tmp_path: Path) -> Iterator[Outbox]:
    with Outbox.open(tmp_path / "outbox.db", Sealer(DataKey.generate()), HUB) as ob:
        yield ob


class CommitCounter:
    """Counts COMMIT statements on the outbox's connection (SQLite's trace callback)."""

    def __init__(self, box: Outbox) -> None:
        self.commits = 0
        conn = box._conn
        assert conn is not None
        conn.set_trace_callback(self._trace)

    def _trace(self, statement: str) -> None:
        if statement.strip().upper() == "COMMIT":
            self.commits += 1


class TestCollect:
    async def test_waiting_items_taken_at_once_up_to_max(self) -> None:
        """Items already queued are taken without waiting, at most max_items per batch."""
        queue: asyncio.Queue[int] = asyncio.Queue()
        for i in range(5):
            queue.put_nowait(i)
        async with asyncio.timeout(1.0):  # a 60 s window: returning proves it did not wait
            assert [0, 1, 2] == await collect_batch(queue, window_s=60.0, max_items=3)
            assert [3, 4] == await collect_batch(queue, window_s=0.0, max_items=3)

    async def test_lone_item_not_held_back(self) -> None:
        """By default (no window) a lone arrival is returned at once: its commit waits for
        no companion."""
        assert 0.0 == GROUP_COMMIT_WINDOW_S
        queue: asyncio.Queue[int] = asyncio.Queue()
        queue.put_nowait(7)
        async with asyncio.timeout(1.0):
            task = asyncio.create_task(collect_batch(queue))
            await asyncio.sleep(0)  # a yield, not a wait: one step of the task
            assert task.done()
            assert [7] == task.result()

    async def test_lone_item_committed_within_asked_window(self) -> None:
        """A window, when asked for, holds a lone arrival until it has passed, not much later."""
        queue: asyncio.Queue[int] = asyncio.Queue()
        queue.put_nowait(7)
        loop = asyncio.get_running_loop()
        started = loop.time()
        assert [7] == await collect_batch(queue, window_s=0.02)
        waited = loop.time() - started
        assert 0.02 <= waited < 0.52

    async def test_arrival_during_window_joins_batch(self) -> None:
        """An item put while the batch is open joins it; max_items ends the wait early."""
        queue: asyncio.Queue[int] = asyncio.Queue()
        task = asyncio.create_task(collect_batch(queue, window_s=60.0, max_items=2))
        queue.put_nowait(1)
        await asyncio.sleep(0)  # a yield, not a wait: the task takes the first item
        assert queue.empty()
        queue.put_nowait(2)
        async with asyncio.timeout(1.0):
            assert [1, 2] == await task

    async def test_bounds_checked(self) -> None:
        """max_items below 1 or a negative window are refused."""
        queue: asyncio.Queue[int] = asyncio.Queue()
        with pytest.raises(ValueError, match="max_items"):
            await collect_batch(queue, max_items=0)
        with pytest.raises(ValueError, match="window_s"):
            await collect_batch(queue, window_s=-1.0)


class TestCommit:
    def test_full_batch_one_commit(self, box: Outbox) -> None:
        """Up to GROUP_COMMIT_MAX items share one transaction: one COMMIT, consecutive seqs."""
        counter = CommitCounter(box)
        items = [Item("observation", f"k{i}", _body) for i in range(GROUP_COMMIT_MAX)]
        outcomes = commit_batch(box, items)
        assert 1 == counter.commits
        assert [Outcome(Status.STORED, s) for s in range(1, GROUP_COMMIT_MAX + 1)] == outcomes
        assert GROUP_COMMIT_MAX == box.counts().pending

    def test_duplicates_reported_with_first_seq(self, box: Outbox) -> None:
        """A reading seen before (or twice in the batch) is a duplicate naming its first seq."""
        commit_batch(box, [Item("observation", "a", _body)])
        outcomes = commit_batch(
            box,
            [
                Item("observation", "b", _body),
                Item("observation", "a", _body),
                Item("observation", "b", _body),
            ],
        )
        assert [
            Outcome(Status.STORED, 2),
            Outcome(Status.DUPLICATE, 1),
            Outcome(Status.DUPLICATE, 2),
        ] == outcomes

    def test_conflict_stored_naming_the_first(self, box: Outbox) -> None:
        """The same identity with other content is stored through make_conflict and reported
        as a conflict naming the first seq; the same content again is a duplicate."""
        conflicts: list[tuple[int, int]] = []

        def make_conflict(seq: int, first: int) -> bytes:
            conflicts.append((seq, first))
            return f"conflict {seq} of {first}".encode()

        def item(digest: bytes) -> Item:
            return Item(
                "observation", "a", _body, content_digest=digest, make_conflict=make_conflict
            )

        assert [Outcome(Status.STORED, 1)] == commit_batch(box, [item(b"v1")])
        outcomes = commit_batch(box, [item(b"v2"), item(b"v1"), item(b"v2")])
        assert [
            Outcome(Status.CONFLICT, 2, conflict_of=1),
            Outcome(Status.DUPLICATE, 1),
            Outcome(Status.DUPLICATE, 2),
        ] == outcomes
        assert [(2, 1)] == conflicts
        bodies = [(r.seq, r.body) for r in box.pending_after(0, 10)]
        assert [(1, b"body 1"), (2, b"conflict 2 of 1")] == bodies

    def test_sync_state_last_value_wins_and_commits_with_readings(self, box: Outbox) -> None:
        """Sync state of all items commits with the batch; a later item's value supersedes."""
        counter = CommitCounter(box)
        commit_batch(
            box,
            [
                Item("observation", "g1", _body, {("gluco", "racp_hwm"): b"\x01"}),
                Item("observation", "g2", _body, {("gluco", "racp_hwm"): b"\x02"}),
            ],
        )
        assert 1 == counter.commits
        assert b"\x02" == box.get_sync_state("gluco", "racp_hwm")

    def test_too_large_item_loses_only_itself(self, box: Outbox) -> None:
        """A record over the size bound is not stored; the others of its batch are."""
        outcomes = commit_batch(
            box,
            [
                Item("observation", "a", _body),
                Item("observation", "big", _too_large),
                Item("observation", "c", _body),
            ],
        )
        assert [Status.STORED, Status.NOT_STORED, Status.STORED] == [o.status for o in outcomes]
        assert isinstance(outcomes[1].error, RecordTooLargeError)
        assert [1, None, 2] == [o.seq for o in outcomes]
        assert 2 == box.counts().pending

    def test_storage_error_stores_nothing(self, box: Outbox) -> None:
        """Disk full (here SQLite's max_page_count) leaves every item of the batch not stored."""
        conn = box._conn
        assert conn is not None
        pages = conn.execute("PRAGMA page_count").fetchone()[0]
        conn.execute(f"PRAGMA max_page_count = {pages}")
        items = [
            Item("observation", f"k{i}", lambda seq: os.urandom(20_000), {("cuff", "t"): b"1"})
            for i in range(3)
        ]
        outcomes = commit_batch(box, items)
        assert [Status.NOT_STORED] * 3 == [o.status for o in outcomes]
        assert all(isinstance(o.error, StorageFullError) for o in outcomes)
        assert 0 == box.counts().pending
        assert box.get_sync_state("cuff", "t") is None

    def test_empty_batch(self, box: Outbox) -> None:
        """An empty batch commits nothing."""
        counter = CommitCounter(box)
        assert [] == commit_batch(box, [])
        assert 0 == counter.commits
