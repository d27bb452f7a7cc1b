"""What the publisher sends next (agent/batching.py), sans-I/O."""

from __future__ import annotations

from collections.abc import Sequence

import pytest

from agent.batching import (
    READ_MORE,
    Candidate,
    Lane,
    SoloSet,
    Unit,
    UnitKind,
    fresh_boundary,
    lane_of,
    next_unit,
)


def _run(seqs: Sequence[int], *, solo: Sequence[int] = ()) -> list[Candidate]:
    return [Candidate(s, s not in solo) for s in seqs]


def test_fresh_boundary() -> None:
    start = 1_000.0
    # Newest first: 105..100; 105-103 stored within the window, 102 before it.
    newest = [(105, 1_200.0), (104, 1_100.0), (103, 1_000.0), (102, 999.0), (101, 1_500.0)]
    assert 103 == fresh_boundary(newest, 106, start)
    # Nothing recent: only what is stored from now on is fresh.
    assert 106 == fresh_boundary([(105, 10.0)], 106, start)
    assert 7 == fresh_boundary([], 7, start)
    assert Lane.FRESH == lane_of(103, 103)
    assert Lane.BACKFILL == lane_of(102, 103)
    # The hook for readings flagged abnormal (nothing flags them yet).
    assert Lane.URGENT == lane_of(5, 103, urgent=True)
    assert Lane.FRESH == lane_of(105, 103, urgent=True)


def test_few_go_singly_more_in_batches() -> None:
    assert next_unit([], more_to_read=False, batch_max=50) is None
    assert READ_MORE == next_unit([], more_to_read=True, batch_max=50)
    # "More than a few": 3 go one by one, without waiting for companions.
    assert Unit(UnitKind.SINGLE, (1,)) == next_unit(
        _run([1, 2, 3]), more_to_read=False, batch_max=50
    )
    assert Unit(UnitKind.BATCH, (1, 2, 3, 4)) == next_unit(
        _run([1, 2, 3, 4]), more_to_read=False, batch_max=50
    )
    # At most batch_max; the rest waits for the next unit.
    assert Unit(UnitKind.BATCH, tuple(range(1, 51))) == next_unit(
        _run(range(1, 61)), more_to_read=True, batch_max=50
    )
    # A run that ends where the read ended: read more first, so no batch is cut short.
    assert READ_MORE == next_unit(_run(range(1, 21)), more_to_read=True, batch_max=50)
    # Batching off.
    assert Unit(UnitKind.SINGLE, (1,)) == next_unit(
        _run(range(1, 61)), more_to_read=True, batch_max=1
    )


def test_records_that_must_go_alone() -> None:
    # First not batchable (split earlier, transient attempts, the suspect): alone.
    assert Unit(UnitKind.SINGLE, (1,)) == next_unit(
        _run(range(1, 10), solo=[1]), more_to_read=False, batch_max=50
    )
    # A batch stops before one.
    assert Unit(UnitKind.BATCH, (1, 2, 3, 4, 5)) == next_unit(
        _run(range(1, 10), solo=[6]), more_to_read=True, batch_max=50
    )
    # Too short a run before one: singly.
    assert Unit(UnitKind.SINGLE, (1,)) == next_unit(
        _run(range(1, 10), solo=[3]), more_to_read=True, batch_max=50
    )
    with pytest.raises(ValueError, match="batch_max"):
        next_unit([], more_to_read=False, batch_max=0)


def test_solo_set_is_bounded() -> None:
    solo = SoloSet(max_size=3)
    solo.add([1, 2, 3])
    solo.add([4])
    assert (False, True, 3) == (1 in solo, 4 in solo, len(solo))
    solo.discard([2, 99])
    assert (False, 2) == (2 in solo, len(solo))
    with pytest.raises(ValueError, match="max_size"):
        SoloSet(0)
