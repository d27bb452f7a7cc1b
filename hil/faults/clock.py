"""Wall-clock steps for a hub process: NTP jumping the clock, a hub booting in 1970, a wrong RTC.

The hub reads the wall clock through :func:`time.time` (and its kin) and ``datetime.now`` (its
own :mod:`agent.wall_clock` adds the network-time correction on top). This part steps what
those return **inside one child process**, with no test hook in the product: the child is
``python -m hil.faults.clock_child`` (:func:`child_argv`), which :func:`install` s the step and
then runs :func:`agent.cli.main` unchanged. The step can be set at start, added each time the
child gets :data:`STEP_SIGNAL` (:func:`step`), and once at a time after start.

What it steps: ``time.time``, ``time.time_ns``, ``time.gmtime()`` and ``time.localtime()``
without an argument, ``datetime.datetime.now``, ``utcnow`` and ``today`` (the name
``datetime.datetime`` becomes a subclass whose constructors and ``isinstance`` behave as the
real class's). What it does not step, by design or by reach:

- ``time.monotonic`` and asyncio's timers: a real step does not move them either;
- C code reading the clock itself: OpenSSL's certificate validity checks, SQLite's
  ``CURRENT_TIMESTAMP``, ``datetime.date.today``. A step meant to expire certificates needs
  the system clock (root, ``CAP_SYS_TIME``) or libfaketime; Linux time namespaces offset only
  the monotonic and boot clocks, not the wall clock;
- modules that bound ``time.time`` or ``datetime`` before :func:`install` (the child installs
  first, so only the interpreter's own start-up modules);
- pickling a ``datetime`` in the stepped process fails (``datetime.datetime`` is not the
  class pickle looks up); the agent pickles none.

Each step is announced on the child's stderr as one JSON line, in the agent's log format:
``{"event": "hil_clock_stepped", "by_s": ..., "offset_s": ...}`` (no PHI), so a scenario's
report and :func:`hil.faults.process.log_event` see it.
"""

from __future__ import annotations

import datetime as _dt
import json
import os
import signal
import sys
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Final, SupportsIndex

from hil.faults.events import FaultLog, record

STEP_SIGNAL: Final = signal.SIGUSR2
"""What :func:`step` sends; the agent handles SIGTERM and SIGINT only, and tests/loop_blocker.py
uses SIGUSR1."""
STEPPED_EVENT: Final = "hil_clock_stepped"
"""The ``event`` of the line each step writes on stderr."""

_real_time = time.time
_real_time_ns = time.time_ns
_real_gmtime = time.gmtime
_real_localtime = time.localtime
_real_datetime = _dt.datetime


@dataclass(frozen=True, slots=True)
class ClockSteps:
    """When the clock_child steps the clock, and by how much (seconds, + ahead, - back).

    Attributes:
        at_start_s: the offset from the first instruction on.
        on_signal_s: added each time the child gets :data:`STEP_SIGNAL`.
        after_s: when set, ``after_step_s`` is added once this long after start.
        after_step_s: the timed step.
    """

    at_start_s: float = 0.0
    on_signal_s: float = 0.0
    after_s: float | None = None
    after_step_s: float = 0.0

    def args(self) -> list[str]:
        """The clock_child's options for these steps."""
        out = ["--step-s", repr(self.at_start_s), "--signal-step-s", repr(self.on_signal_s)]
        if self.after_s is not None:
            out += ["--after-s", repr(self.after_s), "--after-step-s", repr(self.after_step_s)]
        return out


def child_argv(
    steps: ClockSteps, homehub_args: Sequence[str], *, python: str = sys.executable
) -> list[str]:
    """The command line of ``homehub <homehub_args>`` under ``steps``."""
    return [python, "-m", "hil.faults.clock_child", *steps.args(), "--", *homehub_args]


def step(pid: int, log: FaultLog | None = None) -> None:
    """Ask the clock_child ``pid`` for its signal step (it announces it on stderr once taken)."""
    os.kill(pid, STEP_SIGNAL)
    record(log, "clock", "step", f"pid {pid}")


class SteppedClock:
    """The offset in force in this process, once :func:`install` ed."""

    def __init__(self, offset_s: float) -> None:
        self._offset_s = offset_s
        self._lock = threading.Lock()

    @property
    def offset_s(self) -> float:
        """Seconds added to the real wall clock."""
        return self._offset_s

    def step(self, by_s: float) -> None:
        """Add ``by_s`` to the offset and announce it on stderr."""
        with self._lock:
            self._offset_s += by_s
            offset = self._offset_s
        line = json.dumps({"event": STEPPED_EVENT, "by_s": by_s, "offset_s": offset})
        os.write(2, (line + "\n").encode())  # one write: whole, between the agent's lines

    def time(self) -> float:
        """The stepped ``time.time()``."""
        return _real_time() + self._offset_s


_installed: SteppedClock | None = None


def install(offset_s: float = 0.0) -> SteppedClock:
    """Step this process's wall clock by ``offset_s`` from now on (once per process)."""
    global _installed  # the process has one wall clock
    if _installed is not None:
        raise RuntimeError("the stepped clock is already installed in this process")
    clock = SteppedClock(offset_s)

    def stepped_time() -> float:
        return clock.time()

    def stepped_time_ns() -> int:
        return _real_time_ns() + int(clock.offset_s * 1e9)

    def stepped_gmtime(secs: float | SupportsIndex | None = None) -> time.struct_time:
        return _real_gmtime(clock.time() if secs is None else secs)

    def stepped_localtime(secs: float | SupportsIndex | None = None) -> time.struct_time:
        return _real_localtime(clock.time() if secs is None else secs)

    time.time = stepped_time
    time.time_ns = stepped_time_ns
    time.gmtime = stepped_gmtime
    time.localtime = stepped_localtime
    _dt.datetime = _SteppedDatetime  # type: ignore[misc]
    _installed = clock
    return clock


class _LooksReal(type):
    """``isinstance(real_datetime, datetime.datetime)`` stays true once the name is ours."""

    def __instancecheck__(cls, obj: object) -> bool:
        return isinstance(obj, _real_datetime)

    def __subclasscheck__(cls, sub: type) -> bool:
        return issubclass(sub, _real_datetime)


class _SteppedDatetime(_real_datetime, metaclass=_LooksReal):
    """``datetime.datetime`` in a stepped process: ``now`` and kin read the stepped
    ``time.time``; everything else, constructors included, yields real datetimes."""

    def __new__(cls, *args: Any, **kwargs: Any) -> _dt.datetime:  # type: ignore[misc]
        return _real_datetime(*args, **kwargs)

    @classmethod
    def now(cls, tz: _dt.tzinfo | None = None) -> _dt.datetime:  # type: ignore[override]
        return _real_datetime.fromtimestamp(time.time(), tz)

    @classmethod
    def utcnow(cls) -> _dt.datetime:  # type: ignore[override]
        return _real_datetime.fromtimestamp(time.time(), _dt.UTC).replace(tzinfo=None)

    @classmethod
    def today(cls) -> _dt.datetime:  # type: ignore[override]
        return _real_datetime.fromtimestamp(time.time())
