"""The hub's wall clock: the system's, corrected by the cellular network's time while the
system clock is known to be wrong.

Issue 10: "network time from the modem offered as a time source while the system clock is not
synchronized (a hub that boots with a wrong clock must not stamp readings with it)". Every
reading is stamped (``received_wall``: the Bundle's ``issued``, the payload's ``hub_time``) and
the device clocks' offsets are judged with :func:`now`. While the daemon finds the system
clock more than 15 minutes from the network's (agent/network_time.py), it sets the difference
here (:func:`set_correction`) and :func:`now` is the network's time; once they agree again (NTP
came, or the network stopped sending time) the correction is cleared. The system clock itself
is the operating system's to set (timesyncd, chrony), not a service's.

One correction per process: the daemon is the only writer, and clears it when it stops.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

_correction: timedelta | None = None


def now() -> datetime:
    """The hub's wall clock, in UTC."""
    current = datetime.now(UTC)
    return current if _correction is None else current + _correction


def set_correction(correction: timedelta | None) -> None:
    """Add ``correction`` to the system clock from now on (None: none)."""
    global _correction  # the process's one wall clock
    _correction = correction


def current_correction() -> timedelta | None:
    """The correction in force, if any."""
    return _correction
