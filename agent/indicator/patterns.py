"""What the LED shows for each state: a colour and a rhythm, and the line values (sans-I/O).

The hub's LED is an RGB LED (or ring) on up to three GPIO lines, one a colour. Each state has
its own colour *and* its own rhythm, so a hub wired with a single LED still tells the states
apart: a colour none of whose lines is wired is shown on every wired line instead.

- starting: blue, slow blink (1 s on, 1 s off);
- all well: green, steady;
- syncing: green, fast blink (0.25 s on, 0.25 s off);
- needs attention: amber (red and green), two flashes every 2 s;
- fault: red, three flashes every 2.2 s. Never steady red: the Raspberry Pi's own power LED
  is steady red, and a patient would take one for the other.

Off means the hub has no power or the service is not running (:func:`line_values` with
``lit=False``, what ``close()`` leaves).
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from enum import StrEnum
from typing import Final

from agent.indicator.rules import IndicatorState

__all__ = [
    "COLOUR_LEDS",
    "PATTERNS",
    "Colour",
    "Frame",
    "Led",
    "Pattern",
    "Wiring",
    "frame_at",
    "line_values",
]


class Led(StrEnum):
    """One colour of the RGB LED, on its own GPIO line."""

    RED = "red"
    GREEN = "green"
    BLUE = "blue"


class Colour(StrEnum):
    """What a pattern lights."""

    RED = "red"
    GREEN = "green"
    BLUE = "blue"
    AMBER = "amber"


COLOUR_LEDS: Final[Mapping[Colour, frozenset[Led]]] = {
    Colour.RED: frozenset({Led.RED}),
    Colour.GREEN: frozenset({Led.GREEN}),
    Colour.BLUE: frozenset({Led.BLUE}),
    Colour.AMBER: frozenset({Led.RED, Led.GREEN}),
}


@dataclass(frozen=True, slots=True)
class Pattern:
    """A colour and a rhythm: ``phases`` alternate lit and dark seconds, starting lit, and
    repeat; no phases is steady light."""

    colour: Colour
    phases: tuple[float, ...] = ()
    shows: str = ""
    """How docs/indicator.md describes it."""

    def __post_init__(self) -> None:
        if len(self.phases) % 2 or not all(p > 0 and math.isfinite(p) for p in self.phases):
            raise ValueError("phases must be pairs of positive, finite seconds")


PATTERNS: Final[Mapping[IndicatorState, Pattern]] = {
    IndicatorState.STARTING: Pattern(Colour.BLUE, (1.0, 1.0), "blue, slow blink (1 s on, 1 s off)"),
    IndicatorState.ALL_WELL: Pattern(Colour.GREEN, (), "green, steady"),
    IndicatorState.SYNCING: Pattern(
        Colour.GREEN, (0.25, 0.25), "green, fast blink (twice a second)"
    ),
    IndicatorState.NEEDS_ATTENTION: Pattern(
        Colour.AMBER, (0.2, 0.2, 0.2, 1.4), "amber, two flashes every 2 s"
    ),
    IndicatorState.FAULT: Pattern(
        Colour.RED, (0.2, 0.2, 0.2, 0.2, 0.2, 1.2), "red, three flashes every 2.2 s"
    ),
}


@dataclass(frozen=True, slots=True)
class Frame:
    """The LED at one moment of a pattern: lit or dark, and for how much longer."""

    lit: bool
    next_change_s: float
    """Seconds until it changes (``math.inf`` for steady light)."""


def frame_at(pattern: Pattern, elapsed_s: float) -> Frame:
    """Where ``pattern`` stands ``elapsed_s`` seconds after it started (negative: at 0)."""
    if not pattern.phases:
        return Frame(True, math.inf)
    period = sum(pattern.phases)
    t = max(0.0, elapsed_s) % period
    end = 0.0
    for i, length in enumerate(pattern.phases):
        end += length
        if t < end - _EPSILON_S:  # a phase ending within float rounding has ended
            return Frame(i % 2 == 0, end - t)
    return Frame(True, pattern.phases[0] + period - t)  # at the period's very end


_EPSILON_S: Final = 1e-9
"""Float rounding of phase sums (0.6 - 0.2 - 0.2 < 0.2): far below any phase's length."""


@dataclass(frozen=True, slots=True)
class Wiring:
    """The line offset of each wired colour on the chip (absent: not wired)."""

    offsets: Mapping[Led, int]

    def __post_init__(self) -> None:
        if not self.offsets:
            raise ValueError("at least one line must be wired")
        if len(set(self.offsets.values())) != len(self.offsets):
            raise ValueError("each colour needs its own line")


def line_values(colour: Colour, lit: bool, wiring: Wiring) -> dict[int, bool]:
    """The logical value (True: LED on) of every wired line showing ``colour`` lit or dark.

    A colour none of whose lines is wired lights every wired line (a single-colour LED shows
    the rhythm). Logical: an active-low line is inverted by the kernel (the request's
    ``active_low``), not here.
    """
    wanted = COLOUR_LEDS[colour]
    if not wanted & set(wiring.offsets):
        wanted = frozenset(wiring.offsets)
    return {offset: lit and led in wanted for led, offset in wiring.offsets.items()}
