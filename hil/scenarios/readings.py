"""Synthetic readings the scenarios' devices hold: every one distinct in its values, so the
platform's copy of each is told apart without its time, and time-stamped in the past."""

from __future__ import annotations

from hil.emulators.cuff import BpReading
from hil.emulators.encoding import DateTime


def morning_readings(count: int, *, first: int = 0, day: int = 20) -> tuple[BpReading, ...]:
    """``count`` blood-pressure readings, one a minute from 07:00 on 2026-11-``day``, with
    distinct systolic/pulse pairs (reading ``first + n``)."""
    out = []
    for n in range(first, first + count):
        out.append(
            BpReading(
                110 + n % 60,
                70 + n % 25,
                85 + n % 30,
                time_stamp=DateTime(2026, 11, day, 7 + n // 60, n % 60, 5),
                pulse_rate=55 + n // 60 * 60 + n % 60,
            )
        )
    return tuple(out)
