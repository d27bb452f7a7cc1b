"""The gpiod backend: its thread drives the lines through each state's pattern, off the
caller's thread, and goes dark and releases them on close() or on a failing write.

The GPIO edge is the one stand-in: :class:`RecordingLines` takes the line values where a
``gpiod.LineRequest`` would (there is no GPIO chip here). With the ``gpiod`` bindings installed
the real request is tried against a missing chip, and against the kernel's gpio-sim when it is
available (configfs, root); both are skipped with the reason otherwise.
"""

from __future__ import annotations

import contextlib
import os
import threading
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from typing import Final

import pytest
import structlog

from agent.config import IndicatorConfig
from agent.indicator import IndicatorState, NullIndicator, open_indicator
from agent.indicator.gpio import BlinkingIndicator, LineDriver, request_lines
from agent.indicator.patterns import Led, Wiring

WAIT_S: Final = 5.0
"""Bound on waiting for the thread's writes (they come within a phase: <= 1.4 s)."""

RGB = Wiring({Led.RED: 17, Led.GREEN: 27, Led.BLUE: 22})
DARK = {17: False, 27: False, 22: False}
GREEN = {17: False, 27: True, 22: False}
RED = {17: True, 27: False, 22: False}
BLUE = {17: False, 27: False, 22: True}


class RecordingLines:
    """The GPIO edge, named: records each write of line values; can fail from write ``fail_at``."""

    def __init__(self, fail_at: int | None = None) -> None:
        self.writes: list[dict[int, bool]] = []
        self.threads: set[str] = set()
        self.released = False
        self.fail_at = fail_at
        self._cond = threading.Condition()

    def set_values(self, values: Mapping[int, bool]) -> None:
        with self._cond:
            self.threads.add(threading.current_thread().name)
            if self.fail_at is not None and len(self.writes) >= self.fail_at:
                raise OSError(19, "No such device")
            self.writes.append(dict(values))
            self._cond.notify_all()

    def release(self) -> None:
        with self._cond:
            self.released = True
            self._cond.notify_all()

    def wait_for(self, predicate: Callable[[RecordingLines], bool]) -> None:
        with self._cond:
            assert self._cond.wait_for(lambda: predicate(self), WAIT_S), self.writes


def _ends_with(*values: dict[int, bool]) -> Callable[[RecordingLines], bool]:
    return lambda lines: lines.writes[-len(values) :] == list(values)


@pytest.fixture
def lines() -> RecordingLines:
    return RecordingLines()


@pytest.fixture
def indicator(lines: RecordingLines) -> Iterator[BlinkingIndicator]:
    blinking = BlinkingIndicator(lines, RGB)
    yield blinking
    blinking.close()


class TestBlinking:
    def test_steady_then_blinking_then_dark_on_close(
        self, indicator: BlinkingIndicator, lines: RecordingLines
    ) -> None:
        """All well lights green once; syncing blinks green (lit, dark, lit); a fault starts
        red at once; close() leaves all dark, releases the lines and ends the thread; every
        write on the indicator's own thread."""
        indicator.show(IndicatorState.ALL_WELL)
        lines.wait_for(_ends_with(GREEN))
        indicator.show(IndicatorState.SYNCING)  # green already: the next write is dark
        lines.wait_for(_ends_with(GREEN, DARK, GREEN))
        indicator.show(IndicatorState.FAULT)
        lines.wait_for(_ends_with(RED))
        indicator.close()
        assert not indicator.running
        assert lines.released
        assert DARK == lines.writes[-1]
        assert {"hub.indicator"} == lines.threads

    def test_a_repeated_state_does_not_restart_its_pattern(
        self, indicator: BlinkingIndicator, lines: RecordingLines
    ) -> None:
        """The daemon may call show() with the same state every tick: the rhythm goes on
        (starting: 1 s lit, 1 s dark; shown again and again, it still goes dark)."""
        indicator.show(IndicatorState.STARTING)
        lines.wait_for(_ends_with(BLUE))
        for _ in range(1000):
            indicator.show(IndicatorState.STARTING)
        lines.wait_for(_ends_with(BLUE, DARK))
        assert [BLUE, DARK] == lines.writes

    def test_show_is_cheap_and_after_close_does_nothing(
        self, indicator: BlinkingIndicator, lines: RecordingLines
    ) -> None:
        """show() only hands the state over; after close() it neither raises nor writes."""
        indicator.show(IndicatorState.NEEDS_ATTENTION)
        lines.wait_for(_ends_with({17: True, 27: True, 22: False}))
        indicator.close()
        count = len(lines.writes)
        for state in IndicatorState:
            indicator.show(state)
        indicator.close()  # twice is fine
        assert count == len(lines.writes)

    def test_close_before_any_state_leaves_the_lines_dark(self, lines: RecordingLines) -> None:
        blinking = BlinkingIndicator(lines, RGB)
        blinking.close()
        assert not blinking.running
        assert ([DARK], True) == (lines.writes, lines.released)

    def test_a_failing_write_is_logged_once_and_readings_go_on(self) -> None:
        """The chip goes away (injected ENODEV from the second write): indicator_failed once,
        the thread ends, the lines are released, show() still returns quietly."""
        failing = RecordingLines(fail_at=1)
        with structlog.testing.capture_logs() as events:
            blinking = BlinkingIndicator(failing, RGB)
            blinking.show(IndicatorState.SYNCING)
            failing.wait_for(lambda lines: lines.released)
            blinking.close()
            for state in IndicatorState:
                blinking.show(state)
        assert not blinking.running
        assert [GREEN] == failing.writes
        [event] = events
        assert ("indicator_failed", "warning", "OSError") == (
            event["event"],
            event["log_level"],
            event["error"],
        )


class TestOpen:
    def test_open_indicator_drives_the_configured_lines(self) -> None:
        """open_indicator('gpiod') with the GPIO edge given: the configured wiring, here a
        single green LED on line 5, shows a fault's red on it."""
        single = RecordingLines()
        seen: list[tuple[Path, Wiring]] = []

        def open_lines(chip: Path, wiring: Wiring) -> LineDriver:
            seen.append((chip, wiring))
            return single

        cfg = IndicatorConfig(backend="gpiod", lines=(("green", 5),))
        indicator = open_indicator(cfg, open_lines=open_lines)
        try:
            indicator.show(IndicatorState.FAULT)
            single.wait_for(_ends_with({5: True}, {5: False}))
        finally:
            indicator.close()
        assert [(Path("/dev/gpiochip0"), Wiring({Led.GREEN: 5}))] == seen
        assert single.released


# ---------------------------------------------------------------------------
# The real gpiod bindings, when installed
# ---------------------------------------------------------------------------


def test_real_gpiod_with_a_missing_chip_runs_on_without_an_indicator(tmp_path: Path) -> None:
    """The bindings' own request on a chip that does not exist: indicator_unavailable, none."""
    pytest.importorskip("gpiod", reason="the gpiod bindings are not installed (optional: led)")
    cfg = IndicatorConfig(backend="gpiod", chip=tmp_path / "gpiochip9")
    with structlog.testing.capture_logs() as events:
        indicator = open_indicator(cfg)
    assert isinstance(indicator, NullIndicator)
    [event] = events
    assert "indicator_unavailable" == event["event"]
    assert event["reason"].startswith(f"{tmp_path / 'gpiochip9'} cannot be opened (ENOENT")


GPIO_SIM: Final = Path("/sys/kernel/config/gpio-sim")


@pytest.fixture
def sim_chip() -> Iterator[tuple[Path, Path]]:
    """A gpio-sim chip of 8 lines (configfs): its /dev path and its sysfs directory, where
    ``sim_gpio<N>/value`` is what the line is driven to."""
    pytest.importorskip("gpiod", reason="the gpiod bindings are not installed (optional: led)")
    if not GPIO_SIM.is_dir() or os.geteuid() != 0:
        pytest.skip("no gpio-sim here (needs root, configfs and 'modprobe gpio-sim')")
    device = GPIO_SIM / f"homehub-test-{os.getpid()}"
    bank = device / "gpio-bank0"
    device.mkdir()
    try:
        bank.mkdir()
        (bank / "num_lines").write_text("8")
        (device / "live").write_text("1")
        chip = (bank / "chip_name").read_text().strip()
        platform = (device / "dev_name").read_text().strip()
        yield Path("/dev") / chip, Path("/sys/devices/platform") / platform / chip
    finally:
        with contextlib.suppress(OSError):
            (device / "live").write_text("0")
        with contextlib.suppress(OSError):
            bank.rmdir()
        device.rmdir()


@pytest.mark.parametrize("active_low", [False, True])
def test_gpio_sim_lines_follow_the_state(sim_chip: tuple[Path, Path], active_low: bool) -> None:
    """On the kernel's simulated chip: green lights line 2 (low when active low), fault
    lights line 1, close() leaves every line dark and free."""
    chip, sysfs = sim_chip
    cfg = IndicatorConfig(
        backend="gpiod",
        chip=chip,
        lines=(("red", 1), ("green", 2), ("blue", 3)),
        active_low=active_low,
    )
    written = RecordingLines()

    def open_lines(path: Path, wiring: Wiring) -> LineDriver:
        real = request_lines(path, wiring, active_low=active_low)

        class Both:
            """The real request, and a record of each write to wait on."""

            def set_values(self, values: Mapping[int, bool]) -> None:
                real.set_values(values)
                written.set_values(values)

            def release(self) -> None:
                real.release()
                written.release()

        return Both()

    def level(offset: int) -> str:
        return (sysfs / f"sim_gpio{offset}" / "value").read_text().strip()

    on, off = ("0", "1") if active_low else ("1", "0")
    indicator = open_indicator(cfg, open_lines=open_lines)
    indicator.show(IndicatorState.ALL_WELL)
    written.wait_for(_ends_with({1: False, 2: True, 3: False}))
    assert (off, on, off) == (level(1), level(2), level(3))
    indicator.show(IndicatorState.FAULT)
    written.wait_for(_ends_with({1: True, 2: False, 3: False}))
    assert (on, off, off) == (level(1), level(2), level(3))
    indicator.close()
    assert written.released
