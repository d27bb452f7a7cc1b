"""Envelope bytes per reading with the shipped dictionary, on held-out synthetic readings.

The readings are drawn with ``hil.train_dictionaries.HELD_OUT_SEED`` (the dictionaries were
trained on another seed's): made by the real pipeline, each with its own hub, patient and
device, so every random identifier in them is new to the dictionary. Measured with dictionary
2 (version-2 readings, without the identifiers a receiver derives: agent/derived_ids.py), what
a platform that announces it gets. The table is printed (``pytest -s``); the asserts hold what
was measured when the dictionary was trained, with a little room, so a change that makes
envelopes larger fails here.

Issue 9's byte goals: a reading in a batch <= 250 B holds for every kind, in batches of 10 and
of 50; a single glucose envelope with context <= 600 B holds for the median reading (the
largest of 40 is ~675 B); a single blood-pressure envelope <= 400 B does not (~513 B: about
140 B of it are the signature and protected header, and the device's and hub's own
identifiers, new to any dictionary, most of the rest), a strict xfail, so meeting it is
noticed.
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
    rows = measure(dictionaries.load()[2], count=40)
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
        ("blood_pressure", 540, 180, 128),
        ("glucose", 540, 162, 153),
        ("glucose+context", 550, 162, 153),
        ("pulse_oximetry", 475, 190, 136),
        ("mixed", 520, 218, 142),
    ],
)
def test_sizes_do_not_grow(kind: str, single_median: int, b10: int, b50: int) -> None:
    """Measured (bytes, median of 40) with dictionary 2, singles at zstd level 15 and batches
    at 9: BP 513 single, 170/122 per reading in a batch of 10/50; glucose 512, 154/146; glucose
    with context 522 single; SpO2 448, 181/129; a mixed hub backlog 492, 208/135. (Dictionary
    1, version-1 readings, level 15 throughout: BP 671, 255/204; glucose with context 792;
    mixed 659, 315/243.)"""
    row = _rows()[kind]
    assert row.dictionary[0] <= single_median, row
    assert row.batch10_dictionary <= b10, row
    assert row.batch50_dictionary <= b50, row


def test_goal_a_reading_in_a_batch() -> None:
    """<= 250 B a reading, every kind, in a batch of 10 and of 50."""
    for row in _rows().values():
        assert row.batch10_dictionary <= GOAL_BATCHED, row
        assert row.batch50_dictionary <= GOAL_BATCHED, row


def test_goal_single_glucose_with_context() -> None:
    """The median held-out glucose reading with context, alone in its envelope: <= 600 B."""
    assert _rows()["glucose+context"].dictionary[0] <= GOAL_SINGLE_GLUCOSE_CONTEXT


@pytest.mark.xfail(strict=True, reason="~515 B: signature, header and the device's own ids")
def test_goal_single_blood_pressure() -> None:
    assert _rows()["blood_pressure"].dictionary[0] <= GOAL_SINGLE_BP
