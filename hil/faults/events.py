"""The timeline of injected faults: what each part of :mod:`hil.faults` did, and when.

A scenario's report (hil/report/) must say which fault was in force when the hub did what
it did; so every part takes an optional :class:`FaultLog` and appends one :class:`FaultEvent`
per action (a mode change, a kill, a broker stop). Times are ``time.monotonic()`` (the rig's
own clock, which a clock step injected into the hub does not move). Details are the rig's
words only: never a reading, an identifier or a key (the events end up in reports).
"""

from __future__ import annotations

import threading
import time
from collections import deque
from dataclasses import dataclass
from typing import Final

MAX_EVENTS: Final = 10_000
"""A flapping link for an hour at 1 Hz is 7,200 events; older ones are dropped past this."""


@dataclass(frozen=True, slots=True)
class FaultEvent:
    """One action of one fault part.

    Attributes:
        at: ``time.monotonic()`` when the action took effect.
        part: which part acted (``proxy``, ``broker``, ``killer``, ``clock``, ``disk``).
        action: what it did (``cut``, ``pass``, ``SIGKILL``, ``restart``...).
        detail: the rig's own words (a pid, a port, a delay); never PHI.
    """

    at: float
    part: str
    action: str
    detail: str = ""


class FaultLog:
    """A bounded, thread-safe list of :class:`FaultEvent` (parts act from their own threads)."""

    def __init__(self, max_events: int = MAX_EVENTS) -> None:
        if max_events < 1:
            raise ValueError("max_events must be >= 1")
        self._events: deque[FaultEvent] = deque(maxlen=max_events)
        self._lock = threading.Lock()
        self.dropped = 0
        """Events pushed out by newer ones (the report says the timeline is partial)."""

    def record(self, part: str, action: str, detail: str = "") -> FaultEvent:
        """Append an event stamped now; return it."""
        event = FaultEvent(time.monotonic(), part, action, detail)
        with self._lock:
            if len(self._events) == self._events.maxlen:
                self.dropped += 1
            self._events.append(event)
        return event

    def events(self, part: str | None = None) -> list[FaultEvent]:
        """A copy of the events, oldest first (only ``part``'s when given)."""
        with self._lock:
            return [e for e in self._events if part is None or e.part == part]


def record(log: FaultLog | None, part: str, action: str, detail: str = "") -> None:
    """Record on ``log`` when there is one (parts work without a log too)."""
    if log is not None:
        log.record(part, action, detail)
