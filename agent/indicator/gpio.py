"""The LED on GPIO lines through libgpiod v2 (the ``gpiod`` bindings), blinking on its own thread.

The daemon calls :meth:`BlinkingIndicator.show` from its event loop; that call only records
the state and wakes the thread ``hub.indicator``, which owns the line request (libgpiod's
requests want one user at a time) and writes the lines at each phase change of the state's
pattern (:mod:`agent.indicator.patterns`). One thread, woken at most at each phase change
(>= 0.2 s apart) or on a new state, sleeping indefinitely on steady light; :meth:`close`
ends it within :data:`CLOSE_WAIT_S` and leaves the LED dark.

A GPIO write that fails (the chip went away) is logged once (``indicator_failed``) and ends
the thread: the LED goes dark, readings go on. ``gpiod`` is imported only here and only when
the backend is ``gpiod`` (it is an optional dependency: ``pip install 'homehub[led]'``).
"""

from __future__ import annotations

import contextlib
import importlib
import math
import threading
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any, Final, Protocol

import structlog

from agent.indicator.patterns import PATTERNS, Colour, Wiring, frame_at, line_values
from agent.indicator.rules import IndicatorState

__all__ = ["CLOSE_WAIT_S", "CONSUMER", "BlinkingIndicator", "LineDriver", "request_lines"]


def _log() -> structlog.typing.FilteringBoundLogger:
    """This module's logger, looked up at each (rare: a change, a failure) use, so that it
    follows the logging configuration of the moment rather than the first one it met."""
    logger: structlog.typing.FilteringBoundLogger = structlog.get_logger(__name__)
    return logger


CONSUMER: Final = "homehub-indicator"
"""The consumer name the kernel shows for the lines (``gpioinfo``)."""

CLOSE_WAIT_S: Final = 1.0
"""How long close() waits for the thread: it only has to wake and write the lines once."""

MIN_WAIT_S: Final = 0.01
"""Shortest sleep between two looks at the pattern: a phase ending within float rounding is
not a busy loop."""


class LineDriver(Protocol):
    """The GPIO edge: output lines, driven by logical value (True: LED on)."""

    def set_values(self, values: Mapping[int, bool]) -> None: ...

    def release(self) -> None: ...


class _LineRequest(Protocol):
    """The part of ``gpiod.LineRequest`` used here."""

    def set_values(self, values: dict[int | str, Any]) -> None: ...

    def release(self) -> None: ...


class _GpiodLines:
    """A :class:`LineDriver` over a ``gpiod.LineRequest``."""

    def __init__(self, request: _LineRequest, active: Any, inactive: Any) -> None:
        self._request = request
        self._active = active
        self._inactive = inactive

    def set_values(self, values: Mapping[int, bool]) -> None:
        self._request.set_values(
            {offset: self._active if on else self._inactive for offset, on in values.items()}
        )

    def release(self) -> None:
        self._request.release()


def request_lines(chip: Path, wiring: Wiring, *, active_low: bool) -> LineDriver:
    """Request the wired lines of ``chip`` as outputs, dark, with the kernel inverting them
    when the LED is wired active low.

    Raises:
        ImportError: the ``gpiod`` bindings are not installed.
        OSError: the chip cannot be opened or the lines are taken.
        ValueError: an offset the chip does not have.
    """
    gpiod = importlib.import_module("gpiod")
    line = importlib.import_module("gpiod.line")
    settings = gpiod.LineSettings(
        direction=line.Direction.OUTPUT,
        active_low=active_low,
        output_value=line.Value.INACTIVE,
    )
    request: _LineRequest = gpiod.request_lines(
        str(chip), config={tuple(wiring.offsets.values()): settings}, consumer=CONSUMER
    )
    return _GpiodLines(request, line.Value.ACTIVE, line.Value.INACTIVE)


class BlinkingIndicator:
    """An :class:`~agent.indicator.backends.Indicator` driving ``driver`` from its own thread.

    Args:
        driver: the requested lines (released by the thread when it ends).
        wiring: which line shows which colour.
        clock: monotonic seconds, for where a pattern stands.
    """

    def __init__(
        self,
        driver: LineDriver,
        wiring: Wiring,
        *,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._driver = driver
        self._wiring = wiring
        self._clock = clock
        self._cond = threading.Condition()
        self._state: IndicatorState | None = None
        self._since = 0.0
        self._closed = False
        self._thread = threading.Thread(target=self._run, name="hub.indicator", daemon=True)
        self._thread.start()

    def show(self, state: IndicatorState) -> None:
        """Start showing ``state`` (a pattern restarts only when the state changes)."""
        with self._cond:
            if self._closed or state == self._state:
                return
            self._state = state
            self._since = self._clock()
            self._cond.notify()

    def close(self) -> None:
        """Stop the thread (bounded by :data:`CLOSE_WAIT_S`); it leaves the LED dark."""
        with self._cond:
            self._closed = True
            self._cond.notify()
        self._thread.join(CLOSE_WAIT_S)

    @property
    def running(self) -> bool:
        """Whether the thread still drives the lines."""
        return self._thread.is_alive()

    def _run(self) -> None:
        written: dict[int, bool] | None = None
        try:
            while True:
                with self._cond:
                    if self._closed:
                        return
                    state, since = self._state, self._since
                    if state is None:
                        self._cond.wait()
                        continue
                    pattern = PATTERNS[state]
                    frame = frame_at(pattern, self._clock() - since)
                values = line_values(pattern.colour, frame.lit, self._wiring)
                if values != written:
                    self._driver.set_values(values)
                    written = values
                with self._cond:
                    if not self._closed and (self._state, self._since) == (state, since):
                        wait = frame.next_change_s
                        self._cond.wait(None if math.isinf(wait) else max(wait, MIN_WAIT_S))
        except Exception as exc:  # noqa: BLE001 - an LED must never stop readings
            _log().warning("indicator_failed", error=type(exc).__name__, exc_info=exc)
        finally:
            self._go_dark()

    def _go_dark(self) -> None:
        with contextlib.suppress(Exception):
            self._driver.set_values(line_values(Colour.GREEN, False, self._wiring))
        with contextlib.suppress(Exception):
            self._driver.release()
