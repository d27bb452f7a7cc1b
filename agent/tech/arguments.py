"""Argument types the ``homehub`` commands share: a bad value is argparse's one-line usage
error (exit 2) naming it and the range."""

from __future__ import annotations

import argparse
from collections.abc import Callable


def seconds_up_to(most_s: float) -> Callable[[str], float]:
    """An argparse ``type`` for a duration in seconds, 0 < S <= ``most_s``."""

    def parse(text: str) -> float:
        try:
            value = float(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r} is not a number of seconds") from None
        if not 0 < value <= most_s:  # also refuses nan
            raise argparse.ArgumentTypeError(f"{text!r} is not in (0, {most_s:g}] seconds")
        return value

    return parse
