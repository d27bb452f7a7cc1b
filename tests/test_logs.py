"""The journal: one JSON stream for the hub and its libraries, scrubbed at any depth, floods cut.

Each test configures logging in its own body (after pytest's log capture is installed, which
:func:`agent.logs.configure` replaces, so no unscrubbed library record reaches a report) and
writes what it captured to the PHI-scanned log directory.
"""

from __future__ import annotations

import io
import json
import logging
import re
from collections.abc import Iterator
from typing import Any

import pytest
import structlog

from agent import logs
from tests import phi_canaries

ADDRESS = phi_canaries.DEVICE_ADDRESS  # a canary: the suite fails if it reaches any log
TAIL = "..:" + ADDRESS[-5:]


class FakeClock:
    """Monotonic seconds that move only when a test says so."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


class Journal:
    """What :func:`agent.logs.configure` wrote, as parsed JSON lines."""

    def __init__(self) -> None:
        self.stream = io.StringIO()
        self.clock = FakeClock()

    def configure(self, level: str = "info") -> logs.RateLimiter:
        return logs.configure(level, self.stream, clock=self.clock)

    def text(self) -> str:
        return self.stream.getvalue()

    def lines(self) -> list[dict[str, Any]]:
        return [json.loads(line) for line in self.text().splitlines()]

    def events(self, event: str) -> list[dict[str, Any]]:
        return [line for line in self.lines() if line["event"] == event]

    def summaries(self) -> list[dict[str, Any]]:
        return self.events(logs.SUMMARY_EVENT)


@pytest.fixture
def journal(request: pytest.FixtureRequest) -> Iterator[Journal]:
    """A journal in memory; logging set back as it was afterwards, the text PHI-scanned."""
    saved = structlog.get_config()
    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level
    journal = Journal()
    try:
        yield journal
    finally:
        structlog.configure(**saved)
        root.handlers[:] = handlers
        root.setLevel(level)
        name = re.sub(r"[^A-Za-z0-9_.-]+", "_", request.node.nodeid)[-120:]
        (phi_canaries.log_dir() / f"{name}.journal.log").write_text(journal.text())


class TestLibraryRecords:
    @pytest.mark.parametrize("name", ["bumble.device", "bumble.l2cap", "paho", "paho.mqtt.client"])
    def test_stdlib_record_is_one_scrubbed_json_line(self, journal: Journal, name: str) -> None:
        """A library's warning is a JSON line with level, timestamp, logger and event, and the
        address in its arguments is cut to its tail."""
        journal.configure()
        logging.getLogger(name).warning("peer %s sent junk on handle 0x%04X", ADDRESS, 18)
        [line] = journal.lines()
        assert {"event", "level", "logger", "timestamp"} == set(line)
        assert f"peer {TAIL} sent junk on handle 0x0012" == line["event"]
        assert "warning" == line["level"]
        assert name == line["logger"]
        assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d+Z", line["timestamp"])
        assert ADDRESS not in journal.text()

    def test_library_debug_and_info_are_not_written(self, journal: Journal) -> None:
        """Below WARNING, library output stays out (it can carry payload bytes)."""
        journal.configure("debug")
        logging.getLogger("bumble.hci").debug("payload %s", "00ff")
        logging.getLogger("paho").info("connected")
        logging.getLogger("paho").error("socket error")
        assert ["socket error"] == [line["event"] for line in journal.lines()]

    def test_hub_and_library_lines_share_the_stream_and_the_fields(self, journal: Journal) -> None:
        """structlog's own events carry the same fields, their logger named by module."""
        journal.configure()
        structlog.get_logger("agent.uplink").warning("uplink_lost", device=ADDRESS)
        logging.getLogger("paho").warning("lost")
        own, library = journal.lines()
        assert {"event", "level", "logger", "timestamp"} <= set(own)
        assert ("agent.uplink", "warning", TAIL) == (own["logger"], own["level"], own["device"])
        assert set(library) <= set(own)


class TestRedaction:
    def test_nested_values_are_scrubbed(self, journal: Journal) -> None:
        """An address or a redacted key nested in dicts, lists and tuples is cut too."""
        journal.configure()
        structlog.get_logger("agent.test").info(
            "nested",
            peer={"address": "anything", "seen": [ADDRESS, ("x", {"payload": b"\x01"})]},
            pairs=[(ADDRESS, 1)],
            by_address={ADDRESS: "bonded"},
            raw=b"\x00\x01\x02",
            error=ValueError(f"no reply from {ADDRESS}"),
        )
        [line] = journal.lines()
        assert {
            "address": "<redacted>",
            "seen": [TAIL, ["x", {"payload": "<redacted>"}]],
        } == line["peer"]
        assert [[TAIL, 1]] == line["pairs"]
        assert {TAIL: "bonded"} == line["by_address"]
        assert "<3 bytes>" == line["raw"]
        assert f"ValueError: no reply from {TAIL}" == line["error"]
        assert ADDRESS not in journal.text()

    def test_top_level_redacted_keys(self, journal: Journal) -> None:
        """Every key of REDACTED_KEYS is replaced whatever its value's type."""
        journal.configure()
        fields: dict[str, Any] = {k: {"x": 1} for k in logs.REDACTED_KEYS}
        structlog.get_logger("agent.test").info("top", **fields)
        [line] = journal.lines()
        for key in logs.REDACTED_KEYS:
            assert "<redacted>" == line[key], key

    def test_depth_is_bounded(self) -> None:
        """A value nested past SCRUB_DEPTH_MAX is replaced, not walked."""
        value: list[Any] = [ADDRESS]
        for _ in range(logs.SCRUB_DEPTH_MAX + 3):
            value = [value]
        text = json.dumps(logs.scrub_value(value))
        assert "<nested too deep>" in text
        assert ADDRESS not in text

    def test_public_helpers_keep_working(self) -> None:
        """device_label and scrub_text, used across the agent and the virtual home."""
        assert TAIL == logs.device_label(ADDRESS)
        assert f"at {TAIL} and ..:AB:CD" == logs.scrub_text(f"at {ADDRESS} and 00-11-22-33-ab-cd")


def _failing(reason: str) -> None:
    raise RuntimeError(reason)


class TestTracebacks:
    def test_exc_info_keeps_the_traceback_scrubbed(self, journal: Journal) -> None:
        """The pattern for broad except sites: the traceback is in the line, the address cut."""
        journal.configure()
        log = structlog.get_logger("agent.uplink")
        try:
            _failing(f"callback for {ADDRESS} broke")
        except Exception as exc:  # the pattern under test
            log.error("uplink_reader_failed", error=type(exc).__name__, exc_info=exc)
        [line] = journal.lines()
        assert "RuntimeError" == line["error"]
        assert line["exception"].startswith("Traceback (most recent call last):")
        assert "in _failing" in line["exception"]
        assert line["exception"].endswith(f"RuntimeError: callback for {TAIL} broke")
        assert ADDRESS not in journal.text()

    def test_log_exception_and_exc_info_true(self, journal: Journal) -> None:
        """log.exception() and exc_info=True inside the except block render the same way."""
        journal.configure()
        log = structlog.get_logger("agent.daemon")
        try:
            _failing(ADDRESS)
        except RuntimeError:
            log.exception("collector_failed")
            log.warning("collector_retrying", exc_info=True)
        first, second = journal.lines()
        assert ("error", "warning") == (first["level"], second["level"])
        for line in (first, second):
            assert line["exception"].endswith(f"RuntimeError: {TAIL}")
        assert ADDRESS not in journal.text()

    def test_library_exception_is_scrubbed(self, journal: Journal) -> None:
        """A library's logger.exception() comes out as JSON with the scrubbed traceback."""
        journal.configure()
        try:
            _failing(f"unexpected PDU from {ADDRESS}")
        except RuntimeError:
            logging.getLogger("bumble.gatt_client").exception("handler of %s failed", ADDRESS)
        [line] = journal.lines()
        assert f"handler of {TAIL} failed" == line["event"]
        assert line["exception"].endswith(f"RuntimeError: unexpected PDU from {TAIL}")
        assert ADDRESS not in journal.text()


class TestContext:
    def test_bound_and_context_variables_are_kept(self, journal: Journal) -> None:
        """bind() and structlog.contextvars fields reach the line."""
        journal.configure()
        log = structlog.get_logger("agent.ble").bind(device=logs.device_label(ADDRESS), seq=7)
        with structlog.contextvars.bound_contextvars(session="bps-1"):
            log.warning("ble_link_lost", phase="collect")
        [line] = journal.lines()
        assert (TAIL, 7, "bps-1", "collect") == (
            line["device"],
            line["seq"],
            line["session"],
            line["phase"],
        )

    def test_level_filter(self, journal: Journal) -> None:
        """Below the configured level nothing is written."""
        journal.configure("warning")
        log = structlog.get_logger("agent.test")
        log.info("quiet")
        log.warning("loud")
        assert ["loud"] == [line["event"] for line in journal.lines()]


FLOOD = 10_000


class TestRateLimit:
    def test_a_flood_of_identical_warnings(self, journal: Journal) -> None:
        """10,000 identical warnings in one window: the allowance, then one exact summary."""
        journal.configure()
        log = structlog.get_logger("agent.ble.gatt_session")
        for i in range(FLOOD):
            log.warning("ble_notification_unexpected", device=TAIL, n=i)
        allowance = logs.RATE_ALLOWANCES["warning"]
        assert allowance == len(journal.lines())
        assert list(range(allowance)) == [line["n"] for line in journal.lines()]
        journal.clock.now += logs.RATE_WINDOW_S
        log.info("tick")  # the next line of any key emits what is due
        [summary] = journal.summaries()
        assert FLOOD - allowance == summary["suppressed"]
        assert allowance == summary["passed"]
        assert ("agent.ble.gatt_session", "ble_notification_unexpected", "warning") == (
            summary["of_logger"],
            summary["of_event"],
            summary["level"],
        )
        assert allowance + 2 == len(journal.lines())  # the allowance, the summary, the tick

    def test_a_library_flood_with_varying_arguments_is_one_key(self, journal: Journal) -> None:
        """bumble's warnings keyed by template: 10,000 notifications are not 5,504 lines."""
        journal.configure()
        lib = logging.getLogger("bumble.gatt_client")
        for i in range(FLOOD):
            lib.warning("unexpected notification from %s on handle %d", ADDRESS, i)
        logs.flush_suppressed()
        lines = journal.lines()
        allowance = logs.RATE_ALLOWANCES["warning"]
        assert allowance + 1 == len(lines)
        [summary] = journal.summaries()
        assert FLOOD - allowance == summary["suppressed"]
        assert summary["of_event"].startswith("unexpected notification from ")
        assert ADDRESS not in journal.text()

    def test_a_preformatted_library_flood_is_one_key(self, journal: Journal) -> None:
        """Messages formatted before they reach us (no args: hil/virtual_radio.py's filter
        does that) differing only in numbers are still one key."""
        journal.configure()
        lib = logging.getLogger("bumble.test_preformatted")
        for i in range(FLOOD):
            lib.warning(f"unexpected notification on handle 0x{i:04x} ({i} so far)")
        logs.flush_suppressed()
        allowance = logs.RATE_ALLOWANCES["warning"]
        assert allowance + 1 == len(journal.lines())
        [summary] = journal.summaries()
        assert FLOOD - allowance == summary["suppressed"]
        assert "unexpected notification on handle # (# so far)" == summary["of_event"]

    def test_windows_roll_over_with_exact_counts(self, journal: Journal) -> None:
        """A flood over 100 s (one per 10 ms): two windows, each its allowance and its count."""
        journal.configure()
        log = structlog.get_logger("agent.test")
        start = journal.clock.now
        for i in range(FLOOD):
            journal.clock.now = start + i * 0.01
            log.warning("flood")
        logs.flush_suppressed()
        allowance = logs.RATE_ALLOWANCES["warning"]
        passed = journal.events("flood")
        summaries = journal.summaries()
        assert 2 * allowance == len(passed)
        assert [6000 - allowance, 4000 - allowance] == [s["suppressed"] for s in summaries]
        assert FLOOD == len(passed) + sum(s["suppressed"] for s in summaries)
        # the first summary came out when the second window opened, before its lines
        events = [line["event"] for line in journal.lines()]
        assert logs.SUMMARY_EVENT == events[allowance]

    def test_errors_have_a_higher_allowance_and_are_counted(self, journal: Journal) -> None:
        """Errors are limited too, but the summary counts every one, at error level."""
        journal.configure()
        log = structlog.get_logger("agent.uplink")
        for _ in range(1000):
            log.error("publish_failed")
        logs.flush_suppressed()
        allowance = logs.RATE_ALLOWANCES["error"]
        assert allowance > logs.RATE_ALLOWANCES["warning"]
        assert allowance == len(journal.events("publish_failed"))
        [summary] = journal.summaries()
        assert ("error", 1000 - allowance) == (summary["level"], summary["suppressed"])

    def test_levels_and_events_are_separate_keys_and_info_is_not_limited(
        self, journal: Journal
    ) -> None:
        """(logger, event, level) is the key; info lines all pass."""
        journal.configure()
        log = structlog.get_logger("agent.test")
        for _ in range(100):
            log.info("measurement_stored")
            log.warning("a")
            log.warning("b")
            structlog.get_logger("agent.other").warning("a")
        allowance = logs.RATE_ALLOWANCES["warning"]
        assert 100 == len(journal.events("measurement_stored"))
        assert 2 * allowance == len(journal.events("a"))
        assert allowance == len(journal.events("b"))
        assert [] == journal.summaries()  # none due yet: the window is still open

    def test_no_summary_when_nothing_was_suppressed(self, journal: Journal) -> None:
        """A key within its allowance leaves no summary when its window ends."""
        journal.configure()
        log = structlog.get_logger("agent.test")
        log.warning("once")
        journal.clock.now += 2 * logs.RATE_WINDOW_S
        log.warning("once")
        logs.flush_suppressed()
        assert ["once", "once"] == [line["event"] for line in journal.lines()]


class TestRateLimiterBounds:
    def test_keys_are_bounded_and_evicted_counts_are_emitted(self) -> None:
        """Past max_keys the oldest window closes with its summary: memory bounded, nothing
        dropped uncounted."""
        emitted: list[dict[str, Any]] = []
        clock = FakeClock()
        limiter = logs.RateLimiter(
            clock=clock, emit=emitted.append, allowances={"warning": 2}, max_keys=8
        )
        passed = 0
        for key in range(20):
            for _ in range(5):
                try:
                    limiter(None, "warning", {"event": f"e{key}", "level": "warning"})
                    passed += 1
                except structlog.DropEvent:
                    pass
                assert len(limiter) <= 8
        limiter.flush()
        assert 0 == len(limiter)
        assert 20 * 2 == passed
        assert 20 == len(emitted)
        assert 20 * 5 == passed + sum(e["suppressed"] for e in emitted)
        assert [f"e{k}" for k in range(20)] == [e["of_event"] for e in emitted]
