"""The indicator's backends and the one way to open one from ``[indicator]``.

- ``none``: does nothing (a hub without an LED, and where a GPIO cannot be opened);
- ``log``: a structlog line ``indicator_state`` (``state=...``) on each change: what the tests
  and a bench without an LED watch;
- ``gpiod``: an RGB LED on GPIO lines (:mod:`agent.indicator.gpio`).

An LED must never stop readings: a GPIO that cannot be opened is logged once
(``indicator_unavailable``, with the reason) and the hub runs on with ``none``; ``show()``
never raises and never blocks.
"""

from __future__ import annotations

import contextlib
import errno
import threading
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Protocol

import structlog

from agent.indicator.patterns import Led, Wiring
from agent.indicator.rules import IndicatorState

if TYPE_CHECKING:
    from agent.config import IndicatorConfig
    from agent.indicator.gpio import LineDriver

__all__ = ["Indicator", "LogIndicator", "NullIndicator", "open_indicator", "wiring_of"]


def _log() -> structlog.typing.FilteringBoundLogger:
    """This module's logger, looked up at each (rare: a change, a failure) use, so that it
    follows the logging configuration of the moment rather than the first one it met."""
    logger: structlog.typing.FilteringBoundLogger = structlog.get_logger(__name__)
    return logger


class Indicator(Protocol):
    """What the daemon drives: the patient's status light."""

    def show(self, state: IndicatorState) -> None:
        """Show ``state`` from now on; cheap, never raises, never blocks."""
        ...

    def close(self) -> None:
        """Stop showing anything (the LED goes dark); bounded."""
        ...


class NullIndicator:
    """No indicator."""

    def show(self, state: IndicatorState) -> None:
        """Nothing to show it on."""

    def close(self) -> None:
        """Nothing to close."""


class LogIndicator:
    """Logs ``indicator_state`` with ``state`` each time the state changes (not on repeats)."""

    def __init__(self) -> None:
        self._shown: IndicatorState | None = None
        self._lock = threading.Lock()

    def show(self, state: IndicatorState) -> None:
        """Log the new state, once."""
        with self._lock:
            if state == self._shown:
                return
            self._shown = state
        with contextlib.suppress(Exception):  # a closed log stream must not reach the daemon
            _log().info("indicator_state", state=state.value)

    def close(self) -> None:
        """Nothing held."""


def wiring_of(cfg: IndicatorConfig) -> Wiring:
    """The wired colours of ``[indicator] lines``."""
    return Wiring({Led(colour): offset for colour, offset in cfg.lines})


LinesOpener = Callable[[Path, Wiring], "LineDriver"]


def _gpiod_lines(cfg: IndicatorConfig) -> LinesOpener:
    from agent.indicator.gpio import request_lines

    def opener(chip: Path, wiring: Wiring) -> LineDriver:
        return request_lines(chip, wiring, active_low=cfg.active_low)

    return opener


def open_indicator(cfg: IndicatorConfig, *, open_lines: LinesOpener | None = None) -> Indicator:
    """The indicator ``cfg.backend`` names; ``none`` when its GPIO cannot be opened.

    ``open_lines`` replaces the real GPIO request (tests: a chip whose open fails).
    """
    if cfg.backend == "log":
        return LogIndicator()
    if cfg.backend != "gpiod":
        return NullIndicator()
    from agent.indicator.gpio import BlinkingIndicator

    wiring = wiring_of(cfg)
    opener = open_lines or _gpiod_lines(cfg)
    try:
        driver = opener(cfg.chip, wiring)
    except ImportError:
        _unavailable(cfg, "the gpiod module is not installed (pip install 'homehub[led]')")
        return NullIndicator()
    except OSError as exc:
        name = errno.errorcode.get(exc.errno or 0, type(exc).__name__)
        _unavailable(cfg, f"{cfg.chip} cannot be opened ({name}: {exc.strerror or exc})")
        return NullIndicator()
    except Exception as exc:  # noqa: BLE001 - an LED must never stop readings
        _unavailable(cfg, f"the lines cannot be requested ({type(exc).__name__})")
        return NullIndicator()
    return BlinkingIndicator(driver, wiring)


def _unavailable(cfg: IndicatorConfig, reason: str) -> None:
    _log().warning(
        "indicator_unavailable",
        backend=cfg.backend,
        chip=str(cfg.chip),
        lines=sorted(wiring_of(cfg).offsets.values()),
        reason=reason,
    )
