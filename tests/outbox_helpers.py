"""What the outbox tests share: the hub id, a hand-driven clock, a recording make_record, a
plain second connection, and the fixtures (registered by tests/conftest.py)."""

from __future__ import annotations

import sqlite3
from collections.abc import Iterator
from pathlib import Path
from typing import Final

import pytest

from agent.outbox import Outbox
from agent.sealing import DataKey, Sealer

HUB: Final = "hub-test-1"
NOW: Final = 1_800_000_000.0


class FakeClock:
    """A hand-driven wall clock (Unix seconds)."""

    def __init__(self, now: float = NOW) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


class RecordMaker:
    """A make_record callback that builds ``<text> <seq>`` and remembers each call."""

    def __init__(self, text: str = "body") -> None:
        self.text = text
        self.calls: list[int] = []

    def __call__(self, seq: int) -> bytes:
        self.calls.append(seq)
        return f"{self.text} {seq}".encode()


def raw_connection(db_path: Path) -> sqlite3.Connection:
    """A second, plain connection to the database file (the 'attacker' or inspector)."""
    return sqlite3.connect(db_path, isolation_level=None)


@pytest.fixture
def sealer() -> Sealer:
    """A sealer under a fresh data key."""
    return Sealer(DataKey.generate())


@pytest.fixture
def db_path(tmp_path: Path) -> Path:
    """Where the outbox lives: a state directory of its own."""
    (tmp_path / "state").mkdir()
    return tmp_path / "state" / "outbox.db"


@pytest.fixture
def clock() -> FakeClock:
    """The outbox's wall clock, driven by the test."""
    return FakeClock()


@pytest.fixture
def box(db_path: Path, sealer: Sealer, clock: FakeClock) -> Iterator[Outbox]:
    """An open outbox of :data:`HUB`."""
    with Outbox.open(db_path, sealer, HUB, clock=clock) as ob:
        yield ob
