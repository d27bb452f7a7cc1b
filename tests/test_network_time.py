"""The hub's clock judged against the cellular network's time (agent/network_time.py)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Final

import pytest

from agent.network_time import TOLERANCE_S, clock_disagrees

HUB_NOW: Final = datetime(2026, 12, 2, 18, 30, 5, tzinfo=UTC)


@pytest.mark.parametrize(
    ("network_time", "disagrees"),
    [
        ("2026-12-02T18:30:05+00:00", False),
        ("2026-12-02T19:30:05+01:00", False),  # the same instant in another zone
        ((HUB_NOW + timedelta(seconds=TOLERANCE_S)).isoformat(), False),
        ((HUB_NOW + timedelta(seconds=TOLERANCE_S + 1)).isoformat(), True),
        ((HUB_NOW - timedelta(days=2)).isoformat(), True),  # a Pi booted at its last shutdown
        (None, False),  # no network time: nothing is concluded
        ("2026-12-02T18:30:05", False),  # no offset: not a time to judge by
        ("not a time", False),
    ],
)
def test_clock_disagrees(network_time: str | None, disagrees: bool) -> None:
    assert disagrees == clock_disagrees(HUB_NOW, network_time)
