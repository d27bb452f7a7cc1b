"""Group commit for the ingest path: many arrivals, one outbox transaction, one fsync.

A glucometer's RACP download hands over hundreds of readings within a second; storing each
in its own transaction would cost one ``fsync`` each (≈ 2–10 ms on an SD card). The ingest
task instead takes what is waiting with :func:`collect_batch` (the first arrival and
whatever else is already queued, at most :data:`GROUP_COMMIT_MAX` items) and commits it at
once with :func:`commit_batch` in one :meth:`agent.outbox.Outbox.append_many`; what arrives
while that commit runs (on the storage thread, agent/storage.py) forms the next batch. A lone
reading therefore waits for nothing but its own commit, and a burst still shares fsyncs.
A window (``window_s``) can still be asked for, for callers that want to wait for
companions.

:func:`commit_batch` turns the outcome into one :class:`Outcome` per item, never raising for
storage faults: the caller reports ``stored`` only for items whose transaction committed.
``append_many`` is all-or-nothing, so when the batch fails for a reason that belongs to one
item (a record over the size bound) the items are retried one by one and only that item is
lost; a storage fault (disk full, I/O error, quota) fails the whole batch, and no item is
reported stored.

Pure asyncio and the outbox's synchronous API (:func:`commit_batch` runs on the storage
thread).
"""

from __future__ import annotations

import asyncio
import enum
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Final, TypeVar

from agent.errors import RecordTooLargeError, StorageError
from agent.outbox import MAX_BATCH, AppendItem, AppendResult, AppendStatus, Outbox

GROUP_COMMIT_WINDOW_S: Final = 0.0
"""How long a reading waits for companions before its commit starts: not at all. BlueZ
confirms an indication before we store it (reliability finding 4), so the commit starts at
once; a download's next readings (one per 7.5–50 ms connection event, Core Spec Vol 6 Part B
§4.5.1) queue up during that commit and share the next one."""

GROUP_COMMIT_MAX: Final = 256
"""Most items in one transaction: the ingest queue's size (agent.daemon.INGEST_QUEUE_MAX),
well under the outbox's own MAX_BATCH; ≈ 1.2 MB of sealed envelopes, one fsync."""

if GROUP_COMMIT_MAX > MAX_BATCH:  # pragma: no cover - a static relation between constants
    raise ImportError("GROUP_COMMIT_MAX exceeds the outbox's MAX_BATCH")

T = TypeVar("T")


class Status(enum.Enum):
    """What became of one item of a batch."""

    STORED = "stored"
    DUPLICATE = "duplicate"
    CONFLICT = "conflict"
    """Stored: the same identity as an earlier reading, other content (``conflict_of``)."""
    NOT_STORED = "not_stored"


@dataclass(frozen=True, slots=True)
class Item:
    """One record to append, as :class:`agent.outbox.AppendItem`, and the per-device sync
    state (``(device, key) → value``) that must commit with it."""

    kind: str
    dedup_key: str
    make_record: Callable[[int], bytes]
    sync_state: Mapping[tuple[str, str], bytes] = field(default_factory=dict)
    content_digest: bytes = b""
    make_conflict: Callable[[int, int], bytes] | None = None

    def append_item(self) -> AppendItem:
        """The outbox's view of this item."""
        return AppendItem(
            self.kind, self.dedup_key, self.make_record, self.content_digest, self.make_conflict
        )


@dataclass(frozen=True, slots=True)
class Outcome:
    """The fate of one item. ``seq`` for stored, conflict and duplicate items (``conflict_of``:
    the first record of that identity); ``error`` when not stored."""

    status: Status
    seq: int | None = None
    error: StorageError | RecordTooLargeError | None = None
    conflict_of: int | None = None


async def collect_batch(
    queue: asyncio.Queue[T],
    *,
    window_s: float = GROUP_COMMIT_WINDOW_S,
    max_items: int = GROUP_COMMIT_MAX,
) -> list[T]:
    """Wait for one item, then take more until ``window_s`` after it or ``max_items``.

    Items already waiting are taken at once; the window only bounds how long to wait for
    more. Never returns an empty list.
    """
    if max_items < 1 or window_s < 0:
        raise ValueError("max_items must be >= 1 and window_s >= 0")
    batch = [await queue.get()]
    loop = asyncio.get_running_loop()
    deadline = loop.time() + window_s
    while len(batch) < max_items:
        try:
            batch.append(queue.get_nowait())
            continue
        except asyncio.QueueEmpty:
            pass
        remaining = deadline - loop.time()
        if remaining <= 0:
            break
        try:
            async with asyncio.timeout(remaining):
                batch.append(await queue.get())
        except TimeoutError:
            break
    return batch


_STATUS: Final = {
    AppendStatus.STORED: Status.STORED,
    AppendStatus.DUPLICATE: Status.DUPLICATE,
    AppendStatus.CONFLICT: Status.CONFLICT,
}


def _outcome(result: AppendResult) -> Outcome:
    return Outcome(_STATUS[result.status], result.seq, conflict_of=result.conflict_of)


def commit_batch(outbox: Outbox, items: Sequence[Item]) -> list[Outcome]:
    """Append ``items`` in one transaction; one :class:`Outcome` per item, in order.

    A :class:`StorageError` (disk full, I/O error, quota, corrupt) leaves every item
    ``NOT_STORED`` with that error, and no sync state advances. A
    :class:`RecordTooLargeError` (one item's fault, permanent) makes the items go one by one,
    each with its own sync state, so only the offending item is lost (a later item's
    high-water mark may then pass it: re-reading it from the device could never store it).
    Other exceptions from ``make_record`` (bugs) propagate.
    """
    if not items:
        return []
    # Items are in arrival order, so a later item's value for a (device, key) (a higher
    # high-water mark) supersedes an earlier one's; all of them commit with all readings.
    sync_state: dict[tuple[str, str], bytes] = {}
    for item in items:
        sync_state.update(item.sync_state)
    try:
        results = outbox.append_many(
            [i.append_item() for i in items], sync_state=sync_state or None
        )
    except StorageError as exc:
        return [Outcome(Status.NOT_STORED, error=exc) for _ in items]
    except RecordTooLargeError as exc:
        if len(items) == 1:
            return [Outcome(Status.NOT_STORED, error=exc)]
        return [outcome for item in items for outcome in commit_batch(outbox, [item])]
    return [_outcome(r) for r in results]


__all__ = [
    "GROUP_COMMIT_MAX",
    "GROUP_COMMIT_WINDOW_S",
    "Item",
    "Outcome",
    "Status",
    "collect_batch",
    "commit_batch",
]
