"""The patient status indicator: the rules (every one, and as properties), the patterns and
their line values, the log backend, and opening each backend from ``[indicator]``."""

from __future__ import annotations

import dataclasses
import math
from pathlib import Path

import pytest
import structlog
from hypothesis import given, settings
from hypothesis import strategies as st

from agent.config import IndicatorConfig
from agent.indicator import (
    OFFLINE_ATTENTION_S,
    HubCondition,
    IndicatorState,
    LogIndicator,
    NullIndicator,
    open_indicator,
    state_of,
    wiring_of,
)
from agent.indicator.patterns import (
    PATTERNS,
    Colour,
    Frame,
    Led,
    Pattern,
    Wiring,
    frame_at,
    line_values,
)

WELL = HubCondition(
    started=True,
    storage_usable=True,
    part_failing=False,
    online=True,
    offline_for_s=None,
    pending=0,
    session_active=False,
    storage_critical=False,
    clock_problem=False,
    device_overdue=False,
)
"""A hub with nothing to say: up, online, nothing pending."""


def _with(**changes: object) -> HubCondition:
    return dataclasses.replace(WELL, **changes)  # type: ignore[arg-type]


def _offline(for_s: float | None, **changes: object) -> HubCondition:
    return _with(online=False, offline_for_s=for_s, **changes)


class TestRules:
    @pytest.mark.parametrize(
        ("condition", "state"),
        [
            (WELL, IndicatorState.ALL_WELL),
            (_with(started=False), IndicatorState.STARTING),
            (_with(storage_usable=False), IndicatorState.FAULT),
            (_with(part_failing=True), IndicatorState.FAULT),
            (_with(started=False, storage_usable=False), IndicatorState.FAULT),
            (_with(storage_critical=True), IndicatorState.NEEDS_ATTENTION),
            (_with(clock_problem=True), IndicatorState.NEEDS_ATTENTION),
            (_with(device_overdue=True), IndicatorState.NEEDS_ATTENTION),
            (_offline(OFFLINE_ATTENTION_S), IndicatorState.NEEDS_ATTENTION),
            (_offline(OFFLINE_ATTENTION_S - 1), IndicatorState.ALL_WELL),
            (_offline(None), IndicatorState.ALL_WELL),
            (_offline(60.0, pending=40), IndicatorState.ALL_WELL),
            (_with(pending=1), IndicatorState.SYNCING),
            (_with(session_active=True), IndicatorState.SYNCING),
            (_offline(60.0, session_active=True), IndicatorState.SYNCING),
            (_with(session_active=True, device_overdue=True), IndicatorState.NEEDS_ATTENTION),
            (_with(started=False, clock_problem=True), IndicatorState.STARTING),
            (_with(part_failing=True, storage_critical=True), IndicatorState.FAULT),
        ],
        ids=lambda v: v.value if isinstance(v, IndicatorState) else "",
    )
    def test_each_rule(self, condition: HubCondition, state: IndicatorState) -> None:
        assert state == state_of(condition)

    def test_offline_threshold_is_a_parameter(self) -> None:
        """The configured threshold decides, not the default; an offline_for_s reported while
        online is ignored."""
        assert IndicatorState.NEEDS_ATTENTION == state_of(
            _offline(600.0), offline_attention_s=600.0
        )
        assert IndicatorState.ALL_WELL == state_of(_offline(599.0), offline_attention_s=600.0)
        assert IndicatorState.ALL_WELL == state_of(_with(offline_for_s=1e9))

    def test_the_default_is_six_hours(self) -> None:
        assert 6 * 3600.0 == OFFLINE_ATTENTION_S == IndicatorConfig().offline_attention_s


conditions = st.builds(
    HubCondition,
    started=st.booleans(),
    storage_usable=st.booleans(),
    part_failing=st.booleans(),
    online=st.booleans(),
    offline_for_s=st.none() | st.floats(0.0, 30 * 86400.0),
    pending=st.integers(0, 10**6),
    session_active=st.booleans(),
    storage_critical=st.booleans(),
    clock_problem=st.booleans(),
    device_overdue=st.booleans(),
)
thresholds = st.floats(600.0, 7 * 86400.0)


class TestRuleProperties:
    @settings(max_examples=300, deadline=None)
    @given(condition=conditions, threshold=thresholds)
    def test_fault_dominates(self, condition: HubCondition, threshold: float) -> None:
        """Storage unusable or a part failing is a fault, whatever else holds."""
        faulty = dataclasses.replace(condition, storage_usable=False)
        assert IndicatorState.FAULT == state_of(faulty, offline_attention_s=threshold)
        failing = dataclasses.replace(condition, part_failing=True)
        assert IndicatorState.FAULT == state_of(failing, offline_attention_s=threshold)

    @settings(max_examples=300, deadline=None)
    @given(condition=conditions, threshold=thresholds, fraction=st.floats(0.0, 0.999))
    def test_a_short_outage_never_asks_for_attention(
        self, condition: HubCondition, threshold: float, fraction: float
    ) -> None:
        """Offline for less than the threshold, with nothing else wrong: never attention."""
        short = dataclasses.replace(
            condition,
            online=False,
            offline_for_s=threshold * fraction,
            storage_critical=False,
            clock_problem=False,
            device_overdue=False,
        )
        assert IndicatorState.NEEDS_ATTENTION != state_of(short, offline_attention_s=threshold)

    @settings(max_examples=300, deadline=None)
    @given(condition=conditions, threshold=thresholds)
    def test_a_healthy_started_hub_is_never_fault_or_starting(
        self, condition: HubCondition, threshold: float
    ) -> None:
        healthy = dataclasses.replace(
            condition, started=True, storage_usable=True, part_failing=False
        )
        state = state_of(healthy, offline_attention_s=threshold)
        assert state not in (IndicatorState.FAULT, IndicatorState.STARTING)
        attention = (
            healthy.storage_critical
            or healthy.clock_problem
            or healthy.device_overdue
            or (
                not healthy.online
                and healthy.offline_for_s is not None
                and healthy.offline_for_s >= threshold
            )
        )
        assert (state is IndicatorState.NEEDS_ATTENTION) == attention


RGB = Wiring({Led.RED: 17, Led.GREEN: 27, Led.BLUE: 22})


class TestPatterns:
    def test_every_state_has_its_own_rhythm(self) -> None:
        """A single-colour LED still tells the five states apart: no two rhythms alike."""
        assert set(IndicatorState) == set(PATTERNS)
        rhythms = [p.phases for p in PATTERNS.values()]
        assert len(set(rhythms)) == len(rhythms)
        assert PATTERNS[IndicatorState.FAULT].phases, "steady red is the Pi's power LED"

    def test_steady_light(self) -> None:
        assert Frame(True, math.inf) == frame_at(PATTERNS[IndicatorState.ALL_WELL], 1e6)

    @pytest.mark.parametrize(
        ("elapsed", "lit", "left"),
        [
            (-5.0, True, 0.2),
            (0.0, True, 0.2),
            (0.1, True, 0.1),
            (0.2, False, 0.2),
            (0.5, True, 0.1),
            (0.6, False, 1.4),
            (1.9, False, 0.1),
            (2.0, True, 0.2),
            (2.0 * 1000 + 0.3, False, 0.1),
        ],
    )
    def test_two_flashes_every_two_seconds(self, elapsed: float, lit: bool, left: float) -> None:
        frame = frame_at(PATTERNS[IndicatorState.NEEDS_ATTENTION], elapsed)
        assert lit == frame.lit
        assert left == pytest.approx(frame.next_change_s, abs=1e-6)

    @settings(max_examples=300, deadline=None)
    @given(state=st.sampled_from(list(IndicatorState)), elapsed=st.floats(0.0, 10 * 86400.0))
    def test_the_next_change_is_within_a_phase(self, state: IndicatorState, elapsed: float) -> None:
        """Blinking patterns always say when they change next, within their longest phase."""
        pattern = PATTERNS[state]
        frame = frame_at(pattern, elapsed)
        if pattern.phases:
            assert 0.0 < frame.next_change_s <= max(pattern.phases) + 1e-9
        else:
            assert frame.lit
            assert math.isinf(frame.next_change_s)

    def test_a_pattern_needs_pairs_of_positive_phases(self) -> None:
        for phases in ((1.0,), (1.0, 0.0), (1.0, math.inf), (-1.0, 1.0)):
            with pytest.raises(ValueError, match="pairs of positive"):
                Pattern(Colour.RED, phases)


class TestLineValues:
    @pytest.mark.parametrize(
        ("colour", "lit_lines"),
        [
            (Colour.RED, {17}),
            (Colour.GREEN, {27}),
            (Colour.BLUE, {22}),
            (Colour.AMBER, {17, 27}),
        ],
    )
    def test_rgb(self, colour: Colour, lit_lines: set[int]) -> None:
        assert {o: o in lit_lines for o in (17, 27, 22)} == line_values(colour, True, RGB)
        assert dict.fromkeys((17, 27, 22), False) == line_values(colour, False, RGB)

    def test_a_colour_not_wired_lights_what_is(self) -> None:
        """A single green LED shows red and amber too (the rhythm tells them apart); a red
        and green LED shows amber as both, blue as both."""
        green_only = Wiring({Led.GREEN: 5})
        for colour in Colour:
            assert {5: True} == line_values(colour, True, green_only)
        red_green = Wiring({Led.RED: 1, Led.GREEN: 2})
        assert {1: True, 2: False} == line_values(Colour.RED, True, red_green)
        assert {1: True, 2: True} == line_values(Colour.BLUE, True, red_green)

    def test_wiring_is_checked(self) -> None:
        with pytest.raises(ValueError, match="at least one"):
            Wiring({})
        with pytest.raises(ValueError, match="its own line"):
            Wiring({Led.RED: 3, Led.BLUE: 3})

    def test_wiring_of_the_configuration(self) -> None:
        """A colour left out of lines is not wired."""
        cfg = IndicatorConfig(backend="gpiod", lines=(("green", 4), ("blue", 9)))
        assert {Led.GREEN: 4, Led.BLUE: 9} == dict(wiring_of(cfg).offsets)


class TestBackends:
    def test_log_backend_logs_each_change_once(self) -> None:
        indicator = open_indicator(IndicatorConfig(backend="log"))
        assert isinstance(indicator, LogIndicator)
        shown = [
            IndicatorState.STARTING,
            IndicatorState.STARTING,
            IndicatorState.ALL_WELL,
            IndicatorState.ALL_WELL,
            IndicatorState.ALL_WELL,
            IndicatorState.SYNCING,
            IndicatorState.ALL_WELL,
            IndicatorState.FAULT,
            IndicatorState.FAULT,
        ]
        with structlog.testing.capture_logs() as events:
            for state in shown:
                indicator.show(state)
            indicator.close()
        assert [
            ("indicator_state", "info", s)
            for s in ("starting", "all_well", "syncing", "all_well", "fault")
        ] == [(e["event"], e["log_level"], e["state"]) for e in events]

    def test_none_backend_is_silent(self) -> None:
        indicator = open_indicator(IndicatorConfig())
        assert isinstance(indicator, NullIndicator)
        with structlog.testing.capture_logs() as events:
            for state in IndicatorState:
                indicator.show(state)
            indicator.close()
        assert [] == events

    def test_gpiod_without_the_module_runs_on_without_an_indicator(
        self, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        """The gpiod bindings absent (sys.modules entry None: import fails, as when not
        installed): one indicator_unavailable line, and an indicator that does nothing."""
        monkeypatch.setitem(__import__("sys").modules, "gpiod", None)
        cfg = IndicatorConfig(backend="gpiod")
        with structlog.testing.capture_logs() as events:
            indicator = open_indicator(cfg)
            for state in IndicatorState:
                indicator.show(state)
            indicator.close()
        assert isinstance(indicator, NullIndicator)
        [event] = events
        assert ("indicator_unavailable", "warning", "gpiod", "/dev/gpiochip0", [17, 22, 27]) == (
            event["event"],
            event["log_level"],
            event["backend"],
            event["chip"],
            event["lines"],
        )
        assert event["reason"].startswith("the gpiod module is not installed")

    @pytest.mark.parametrize(
        ("error", "reason"),
        [
            (
                FileNotFoundError(2, "No such file or directory"),
                "/nonexistent/gpiochip9 cannot be opened (ENOENT: No such file or directory)",
            ),
            (
                OSError(16, "Device or resource busy"),
                "/nonexistent/gpiochip9 cannot be opened (EBUSY: Device or resource busy)",
            ),
            (ValueError("invalid offset"), "the lines cannot be requested (ValueError)"),
        ],
    )
    def test_a_gpio_that_cannot_be_opened_is_logged_once(
        self, error: Exception, reason: str
    ) -> None:
        """The GPIO edge (injected: no GPIO chip here) refuses: logged with the reason, none."""

        def refusing(_chip: Path, _wiring: Wiring) -> object:
            raise error

        cfg = IndicatorConfig(backend="gpiod", chip=Path("/nonexistent/gpiochip9"))
        with structlog.testing.capture_logs() as events:
            indicator = open_indicator(cfg, open_lines=refusing)  # type: ignore[arg-type]
            indicator.show(IndicatorState.FAULT)
        assert isinstance(indicator, NullIndicator)
        assert [("indicator_unavailable", reason)] == [(e["event"], e["reason"]) for e in events]


def test_the_docs_table_shows_each_state_as_the_led_does() -> None:
    """docs/indicator.md's row of each state describes its pattern as agent/indicator does."""
    doc = (Path(__file__).resolve().parents[1] / "docs" / "indicator.md").read_text()
    for state, pattern in PATTERNS.items():
        assert f"| `{state.value}` | {pattern.shows} |" in doc, state
