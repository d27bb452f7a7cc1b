"""What the publisher sends next: fresh before backfill, batches for a backlog (sans-I/O).

The publisher (agent/publisher.py) reads the outbox in three *lanes* and asks this module what
to send next; nothing here touches the disk, the network or a clock.

Lanes (:func:`lane_of`):

- **fresh**: readings stored while the uplink is connected, or within
  :data:`FRESH_WINDOW_S` before the connection began: a reading someone just took. At every
  connection the publisher reads where the fresh lane begins (:meth:`agent.outbox.Outbox.
  fresh_from`: the oldest seq of the newest run of pending records stored within the window,
  else the next seq to be stored), so every seq from there on is fresh;
- **backfill**: everything older (what piled up while the link was down);
- **urgent**: backfill readings whose values crossed an alert limit when they were stored
  (agent/urgency.py): sent before the rest of the backlog, right after the fresh lane, and
  never held by the byte budget. Which seqs are urgent is kept in memory only (the publisher's
  :meth:`~agent.publisher.Publisher.mark_urgent`, at most :data:`URGENT_MAX`), never on disk:
  an "abnormal" mark beside a sealed record would be a health fact stored in the clear. After a
  restart they are backfill again, sent in their turn.

The fresh lane is always served first, then the urgent one, then backfill: the publisher
looks at the fresh lane again after every envelope it hands on when something was stored
meanwhile, so a reading taken during a long drain waits for at most the envelopes already in
flight. Backfill waits for the byte budget (agent/budget.py); the fresh and urgent lanes never
do.

Units (:func:`next_unit`): within a lane, in seq order, a lane that holds at least
:data:`BATCH_MIN` batchable readings waiting is sent in batches of up to ``batch_max``
readings (agent/envelopes.py cuts each to the profile's size); fewer go singly, at once,
without waiting for companions. A record is *not batchable* (goes alone) when it is not a
plain reading envelope, when the platform or broker refused it before (it has transient
attempts), when it is the suspect of a lost connection, or when it was in a batch that was
refused or that killed a connection (:class:`SoloSet`).

Poison in a batch. A batch shares one fate: a refusal or a lost connection can be any of its
readings' fault. So a batch is never blamed: a batch the broker refuses (PUBACK >= 0x80), the
platform refuses (a receipt's ``refused`` item), or that is the oldest envelope in flight
when a connection ends, is *split*: its readings join the :class:`SoloSet` and go singly from
then on, and the per-record rules (agent/publisher.py steps 4 and 5) find the poison among
them: refused after its transient tries, or refused after :data:`~agent.publisher.
MAX_CONNECTION_LOSSES` lost connections alone in flight, while the rest are delivered.
"""

from __future__ import annotations

import enum
from collections import OrderedDict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Final

FRESH_WINDOW_S: Final = 300.0
"""A reading stored this recently before the connection began is fresh ("a few minutes":
a cuff measured while the link was briefly down is not backfill)."""

BATCH_MIN: Final = 4
"""A lane with at least this many batchable readings waiting is drained in batches; with
fewer, each goes at once in its own envelope (a batch of 2-3 saves little and waits)."""

BATCH_MAX_READINGS: Final = 50
"""Default readings per batch (``[mqtt] batch_max_readings``): measured
(docs/platform-protocol.md) a reading in a batch of 50 costs 204-294 B with dictionary 1,
against 255-328 B in a batch of 10; larger batches gain little and a refused one costs more."""

SOLO_MAX: Final = 10_000
"""Readings remembered as to be sent singly; past it the oldest are forgotten (sent in a
batch again: a batch that fails is split again, so forgetting costs bytes, never a reading)."""


URGENT_MAX: Final = 1_000
"""Urgent seqs remembered; past it the oldest are forgotten (sent in their turn)."""


class Lane(enum.Enum):
    URGENT = "urgent"
    FRESH = "fresh"
    BACKFILL = "backfill"


def lane_of(seq: int, fresh_from: int, *, urgent: bool = False) -> Lane:
    """The lane of record ``seq`` when the fresh lane begins at ``fresh_from``. ``urgent``:
    its values crossed an alert limit (agent/urgency.py); a fresh one stays fresh."""
    if seq >= fresh_from:
        return Lane.FRESH
    return Lane.URGENT if urgent else Lane.BACKFILL


def is_fresh_at(created_at: float, window_start: float) -> bool:
    """Whether a record stored (hub wall time) at ``created_at`` is fresh when the freshness
    window starts at ``window_start`` (the connection's wall time less :data:`FRESH_WINDOW_S`)."""
    return created_at >= window_start


def fresh_boundary(newest: Iterable[tuple[int, float]], next_seq: int, window_start: float) -> int:
    """Where the fresh lane begins: the oldest seq of the unbroken run, newest first, of
    ``newest`` (``(seq, created_at)`` of pending records, seq descending) stored at or after
    ``window_start``; ``next_seq`` (what is stored from now on) when the newest is older."""
    boundary = next_seq
    for seq, created_at in newest:
        if not is_fresh_at(created_at, window_start):
            break
        boundary = seq
    return boundary


@dataclass(frozen=True, slots=True)
class Candidate:
    """A record waiting in a lane, as the plan sees it."""

    seq: int
    batchable: bool


class UnitKind(enum.Enum):
    SINGLE = "single"
    BATCH = "batch"
    READ_MORE = "read_more"
    """Read more of the lane first: a batch could take more readings than are read."""


@dataclass(frozen=True, slots=True)
class Unit:
    """What to send next: one record alone, or up to ``len(seqs)`` records in a batch (the
    envelope builder may take fewer: the rest wait for the next unit)."""

    kind: UnitKind
    seqs: tuple[int, ...] = ()


READ_MORE: Final = Unit(UnitKind.READ_MORE)


def next_unit(
    waiting: Sequence[Candidate],
    *,
    more_to_read: bool,
    batch_max: int,
    batch_min: int = BATCH_MIN,
) -> Unit | None:
    """The next unit of a lane whose records read so far and not yet sent are ``waiting``
    (seq order); ``more_to_read``: the lane has records past them. None: nothing to send.

    Batches take the leading run of batchable records; a run shorter than ``batch_max`` that
    reaches the end of what was read asks to read more first, so a batch is never cut short
    by a read boundary. Batching off: ``batch_max`` of 1.
    """
    if batch_max < 1 or batch_min < 2:
        raise ValueError("batch_max must be >= 1 and batch_min >= 2")
    if not waiting:
        return READ_MORE if more_to_read else None
    first = waiting[0]
    if not first.batchable or batch_max == 1:
        return Unit(UnitKind.SINGLE, (first.seq,))
    run: list[int] = []
    for candidate in waiting:
        if not candidate.batchable or len(run) == batch_max:
            break
        run.append(candidate.seq)
    if len(run) < batch_max and len(run) == len(waiting) and more_to_read:
        return READ_MORE
    if len(run) >= batch_min:
        return Unit(UnitKind.BATCH, tuple(run))
    return Unit(UnitKind.SINGLE, (first.seq,))


class SoloSet:
    """Seqs to send singly from now on (split batches), bounded by ``max_size``: the oldest
    additions are forgotten first."""

    def __init__(self, max_size: int = SOLO_MAX) -> None:
        if max_size < 1:
            raise ValueError("max_size must be >= 1")
        self._max = max_size
        self._seqs: OrderedDict[int, None] = OrderedDict()

    def __contains__(self, seq: object) -> bool:
        return seq in self._seqs

    def __len__(self) -> int:
        return len(self._seqs)

    def add(self, seqs: Iterable[int]) -> None:
        for seq in seqs:
            self._seqs[seq] = None
            self._seqs.move_to_end(seq)
        while len(self._seqs) > self._max:
            self._seqs.popitem(last=False)

    def discard(self, seqs: Iterable[int]) -> None:
        """Forget ``seqs`` (delivered or refused)."""
        for seq in seqs:
            self._seqs.pop(seq, None)


__all__ = [
    "BATCH_MAX_READINGS",
    "BATCH_MIN",
    "FRESH_WINDOW_S",
    "READ_MORE",
    "SOLO_MAX",
    "URGENT_MAX",
    "Candidate",
    "Lane",
    "SoloSet",
    "Unit",
    "UnitKind",
    "fresh_boundary",
    "is_fresh_at",
    "lane_of",
    "next_unit",
]
