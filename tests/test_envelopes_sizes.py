"""Envelope bytes per reading with the shipped dictionary, on held-out synthetic readings.

The readings are drawn with ``hil.train_dictionaries.HELD_OUT_SEED`` (the dictionary was
trained on another seed's): made by the real pipeline, each with its own hub, patient and
device, so every random identifier in them is new to the dictionary. The table is printed
(``pytest -s``); the asserts hold what was measured when the dictionary was trained, with a
little room, so a change that makes envelopes larger fails here.

Issue 9's byte goals (a single blood-pressure envelope <= 400 B, glucose with context <= 600,
a reading in a batch <= 250) are met only for batches of 50 of blood pressure and of a mixed
hub backlog: a reading's Bundle carries about ten independent 128-bit identifiers (fullUrl
UUIDs, Observation ids, the content digest) that no dictionary can predict, ~20 bytes each
compressed; the unmet goals are strict xfails, so meeting one is noticed.
"""

from __future__ import annotations

import functools
from typing import Final

import cbor2
import pytest

from agent import dictionaries
from hil.train_dictionaries import (
    HELD_OUT_SEED,
    KINDS,
    TRAINING_READINGS_PER_KIND,
    TRAINING_SEED,
    SizeRow,
    hub_backlog,
    measure,
    print_sizes,
    synthetic_readings,
    training_samples,
)

GOAL_SINGLE_BP: Final = 400
GOAL_SINGLE_GLUCOSE_CONTEXT: Final = 600
GOAL_BATCHED: Final = 250


@functools.cache
def _rows() -> dict[str, SizeRow]:
    rows = measure(dictionaries.load()[1], count=40)
    print_sizes(rows, print)
    return {r.kind: r for r in rows}


def test_no_held_out_reading_is_in_the_training_set() -> None:
    """Not one held-out reading's identity (``id``) is among the training readings'."""
    trained = {
        cbor2.loads(p)["id"]
        for p in training_samples(KINDS, TRAINING_READINGS_PER_KIND, TRAINING_SEED)
    }
    held = [r for k in KINDS for r in synthetic_readings(k, 40, HELD_OUT_SEED)]
    held += hub_backlog(50, HELD_OUT_SEED + 50)
    assert len(trained) == len(KINDS) * TRAINING_READINGS_PER_KIND
    assert set() == {cbor2.loads(r.payload)["id"] for r in held} & trained


def test_dictionary_beats_zstd_alone_by_a_factor_of_2_5_on_singles() -> None:
    for row in _rows().values():
        assert row.dictionary[0] * 2.5 <= row.zstd[0], row
        assert row.zstd[0] * 3 <= row.stored[0], row


@pytest.mark.parametrize(
    ("kind", "single_median", "b10", "b50"),
    [
        ("blood_pressure", 690, 270, 215),
        ("glucose", 690, 275, 310),
        ("glucose+context", 880, 275, 310),
        ("pulse_oximetry", 665, 345, 265),
        ("mixed", 695, 335, 255),
    ],
)
def test_sizes_do_not_grow(kind: str, single_median: int, b10: int, b50: int) -> None:
    """Measured (bytes, median of 40): BP 657 single, 255/204 per reading in a batch of 10/50;
    glucose 656, 258/294; glucose with context 836 single; SpO2 629, 328/252; a mixed hub
    backlog 659, 315/243."""
    row = _rows()[kind]
    assert row.dictionary[0] <= single_median, row
    assert row.batch10_dictionary <= b10, row
    assert row.batch50_dictionary <= b50, row


def test_goal_reading_in_a_batch_of_50_blood_pressure_and_mixed() -> None:
    rows = _rows()
    assert rows["blood_pressure"].batch50_dictionary <= GOAL_BATCHED
    assert rows["mixed"].batch50_dictionary <= GOAL_BATCHED


@pytest.mark.xfail(strict=True, reason="~10 random 128-bit ids per Bundle: ~650 B floor")
def test_goal_single_blood_pressure() -> None:
    assert _rows()["blood_pressure"].dictionary[1] <= GOAL_SINGLE_BP


@pytest.mark.xfail(strict=True, reason="~10 random 128-bit ids per Bundle: ~800 B floor")
def test_goal_single_glucose_with_context() -> None:
    assert _rows()["glucose+context"].dictionary[1] <= GOAL_SINGLE_GLUCOSE_CONTEXT


@pytest.mark.xfail(strict=True, reason="a batch of 10 shares too little: ~255-330 B a reading")
def test_goal_reading_in_a_batch_of_10() -> None:
    assert all(r.batch10_dictionary <= GOAL_BATCHED for r in _rows().values())
