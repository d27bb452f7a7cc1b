"""The daily byte budget (agent/budget.py), sans-I/O, on a hand-driven wall clock."""

from __future__ import annotations

from typing import Final

import pytest

from agent.budget import (
    DAY_S,
    BudgetState,
    ByteBudget,
    cost_bytes,
    overhead_bytes,
    utc_day,
)

NOON: Final = 20_000 * DAY_S + 12 * 3600.0
"""Noon UTC of day 20,000 (2024-10-04)."""


def test_overhead_estimate_figures() -> None:
    # The figures the module docstring states.
    assert 305 == overhead_bytes(657)
    assert 773 == overhead_bytes(10_000)
    # One PUBLISH header, one TLS record, one segment, its ACK and the PUBACK round trip.
    assert 49 + 22 + 2 * 52 + 130 == overhead_bytes(0)
    assert 657 + 305 == cost_bytes(657)
    # Grows with the segments a payload needs, never shrinks.
    costs = [overhead_bytes(n) for n in range(0, 40_000, 97)]
    assert costs == sorted(costs)
    with pytest.raises(ValueError, match=">= 0"):
        overhead_bytes(-1)


def test_unlimited_budget_always_allows_and_still_counts() -> None:
    budget = ByteBudget(0)
    for _ in range(100):
        budget.charge(30_000, NOON)
    assert budget.allows(30_000, NOON)
    assert BudgetState(0, 100 * cost_bytes(30_000), utc_day(NOON), paused=False) == (
        budget.state(NOON)
    )
    assert budget.state(NOON).remaining_bytes is None


def test_pauses_at_the_budget_for_the_rest_of_the_day() -> None:
    budget = ByteBudget(10_000)
    assert budget.allows(None, NOON)
    budget.charge(4_000, NOON)  # 4,000 + 461
    assert budget.allows(4_000, NOON + 1)  # 8,922 <= 10,000
    budget.charge(4_000, NOON + 1)
    used = 2 * cost_bytes(4_000)
    assert used == budget.state(NOON + 1).used_bytes
    # The next 4,000 B envelope does not fit: paused, and a smaller one waits too.
    assert not budget.allows(4_000, NOON + 2)
    assert budget.paused
    assert not budget.allows(10, NOON + 3)
    assert not budget.allows(None, NOON + 4)
    assert BudgetState(10_000, used, utc_day(NOON), paused=True) == budget.state(NOON + 5)
    assert 10_000 - used == budget.state(NOON + 5).remaining_bytes
    # Fresh readings are charged while paused (they never wait): past the budget.
    budget.charge(5_000, NOON + 6)
    assert used + cost_bytes(5_000) == budget.state(NOON + 6).used_bytes
    # 12 h to midnight UTC; at 00:00:00 the count starts again.
    midnight = (utc_day(NOON) + 1) * DAY_S
    assert 12 * 3600.0 - 7 == budget.seconds_to_next_day(NOON + 7)
    assert not budget.allows(None, midnight - 0.001)
    assert BudgetState(10_000, 0, utc_day(NOON) + 1, paused=False) == budget.state(midnight)
    assert budget.allows(4_000, midnight)
    assert not budget.paused
    assert 0 == budget.state(midnight).used_bytes


def test_backfill_alone_never_passes_the_budget() -> None:
    budget = ByteBudget(50_000)
    sent = 0
    while budget.allows(1_234, NOON):
        sent += budget.charge(1_234, NOON)
    assert sent == budget.state(NOON).used_bytes <= 50_000
    assert sent + cost_bytes(1_234) > 50_000


def test_clock_set_back_starts_a_new_count() -> None:
    budget = ByteBudget(1_000)
    budget.charge(2_000, NOON)
    assert not budget.allows(None, NOON)
    assert budget.allows(None, NOON - DAY_S)  # another day, even an earlier one


def test_state_round_trip() -> None:
    budget = ByteBudget(1_000_000)
    budget.charge(12_345, NOON)
    restored = ByteBudget.from_bytes(1_000_000, budget.to_bytes())
    assert budget.state(NOON) == restored.state(NOON)
    assert 12 == len(budget.to_bytes())
    # Yesterday's count is not today's.
    assert 0 == restored.state(NOON + DAY_S).used_bytes
    # Nothing stored, or something else: a fresh count.
    assert 0 == ByteBudget.from_bytes(1_000, None).state(NOON).used_bytes
    assert 0 == ByteBudget.from_bytes(1_000, b"\x00" * 5).state(NOON).used_bytes


def test_bad_arguments() -> None:
    with pytest.raises(ValueError, match=">= 0"):
        ByteBudget(-1)


def test_the_modems_count_when_larger() -> None:
    """The module's data counters saw more than the estimate (keepalives, handshakes, a
    system update): the day's count is theirs; backfill pauses on it; persisted as counted;
    the next UTC day starts both at 0."""
    day0 = 20_000 * DAY_S
    budget = ByteBudget(100_000)
    budget.charge(10_000, day0 + 10)
    charged = budget.state(day0 + 10).used_bytes
    budget.note_link_bytes(5_000, day0 + 20)
    assert charged == budget.state(day0 + 20).used_bytes  # the estimate is larger yet
    budget.note_link_bytes(95_000, day0 + 30)
    assert 100_000 == budget.state(day0 + 30).used_bytes
    assert not budget.allows(None, day0 + 40)
    assert budget.paused
    restored = ByteBudget.from_bytes(100_000, budget.to_bytes())
    assert 100_000 == restored.state(day0 + 50).used_bytes
    assert budget.allows(None, day0 + DAY_S)
    assert 0 == budget.state(day0 + DAY_S).used_bytes
    with pytest.raises(ValueError, match="delta_bytes"):
        budget.note_link_bytes(-1, day0 + DAY_S)
