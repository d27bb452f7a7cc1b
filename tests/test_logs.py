"""The journal: one JSON stream for the hub and its libraries, scrubbed at any depth, floods cut.

Each test configures logging in its own body (after pytest's log capture is installed, which
:func:`agent.logs.configure` replaces, so no unscrubbed library record reaches a report) and
writes what it captured to the PHI-scanned log directory.
"""

from __future__ import annotations

import io
import json
import logging
import os
import re
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any, Final

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
    """A journal in memory; logging (and the hooks, lastResort and protected values that
    configure() sets) set back as it was afterwards, the text PHI-scanned."""
    saved = structlog.get_config()
    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level
    hooks = (sys.excepthook, threading.excepthook, sys.unraisablehook, logging.lastResort)
    journal = Journal()
    try:
        yield journal
    finally:
        structlog.configure(**saved)
        root.handlers[:] = handlers
        root.setLevel(level)
        sys.excepthook, threading.excepthook, sys.unraisablehook, logging.lastResort = hooks
        logging.captureWarnings(False)
        logs.forget_protected()
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


class TestEveryStdlibLogger:
    """Whatever logger a library uses, its record is one scrubbed JSON line (a)."""

    def test_a_logger_created_after_configure(self, journal: Journal) -> None:
        journal.configure()
        late = logging.getLogger("late.library.created_after_configure")
        late.warning("lost %s", ADDRESS)
        [line] = journal.lines()
        assert ("late.library.created_after_configure", f"lost {TAIL}") == (
            line["logger"],
            line["event"],
        )

    def test_percent_arguments_are_scrubbed_before_formatting(self, journal: Journal) -> None:
        """Bytes (which would print their content), containers with redacted keys, addresses
        in tuples and mappings: scrubbed as structlog's fields are."""
        journal.configure()
        lib = logging.getLogger("bumble.att")
        serial = phi_canaries.DEVICE_SERIAL.encode()
        lib.warning("bad PDU %s from %s", b"\x1b" + serial, ADDRESS)
        lib.warning("context %s", {"patient": phi_canaries.PATIENT_ID, "peer": ADDRESS})
        lib.warning("peers %r", [ADDRESS, (ADDRESS, 1)])
        lib.warning("%(peer)s sent %(data)s", {"peer": ADDRESS, "data": serial})
        events = [line["event"] for line in journal.lines()]
        assert [
            f"bad PDU <{len(serial) + 1} bytes> from {TAIL}",
            f"context {{'patient': '<redacted>', 'peer': '{TAIL}'}}",
            f"peers ['{TAIL}', ['{TAIL}', 1]]",
            f"{TAIL} sent <redacted>",
        ] == events
        assert [] == phi_canaries.scan_text(journal.text())

    def test_the_callers_record_is_left_as_it_was(self, journal: Journal) -> None:
        """Scrubbing works on a copy: another handler (pytest's caplog) sees the record."""
        journal.configure()
        seen: list[logging.LogRecord] = []

        class Keep(logging.Handler):
            def emit(self, record: logging.LogRecord) -> None:
                seen.append(record)

        logger = logging.getLogger("paho.test_copy")
        logger.addHandler(keep := Keep())
        try:
            logger.warning("raw %s", b"\x01\x02")
        finally:
            logger.removeHandler(keep)
        assert (b"\x01\x02",) == seen[0].args
        assert ["raw <2 bytes>"] == [line["event"] for line in journal.lines()]

    def test_a_logger_that_does_not_propagate(self, journal: Journal) -> None:
        """Decided: a library logger with propagate=False and no handler of its own would end
        at logging.lastResort, the bare message on stderr; configure() makes lastResort the
        hub's handler, so it is one scrubbed JSON line too, below WARNING nothing."""
        journal.configure()
        lonely = logging.getLogger("library.not_propagating")
        lonely.propagate = False
        try:
            lonely.info("chatter from %s", ADDRESS)
            lonely.warning("link to %s lost", ADDRESS)
        finally:
            lonely.propagate = True
        [line] = journal.lines()
        assert ("library.not_propagating", "warning", f"link to {TAIL} lost") == (
            line["logger"],
            line["level"],
            line["event"],
        )

    def test_a_record_that_cannot_be_formatted(
        self, journal: Journal, capsys: pytest.CaptureFixture[str]
    ) -> None:
        """'%d' given a string: one scrubbed line naming the template, never logging's raw
        '--- Logging error ---' dump of the arguments on stderr."""
        journal.configure()
        logging.getLogger("library.smp").warning("%d keys from %s", ADDRESS, ADDRESS)
        [line] = journal.lines()
        assert ("log_record_unformattable", "library.smp", "%d keys from %s", "TypeError") == (
            line["event"],
            line["of_logger"],
            line["template"],
            line["error"],
        )
        assert ("", "") == capsys.readouterr()
        assert ADDRESS not in journal.text()

    def test_protected_values_are_redacted_everywhere(self, journal: Journal) -> None:
        """A value without a telltale form (the patient's id), once protected, is replaced in
        structlog's fields and messages, library messages and tracebacks alike."""
        journal.configure()
        patient = phi_canaries.PATIENT_ID
        logs.protect([patient, "ab"])  # too short to protect: ignored
        structlog.get_logger("agent.test").warning("oops", note=f"for {patient.upper()}")
        logging.getLogger("paho").warning("topic hub/%s/x", patient)
        try:
            _failing(f"no bundle for {patient}")
        except RuntimeError:
            structlog.get_logger("agent.test").exception("failed")
        note, topic, failed = journal.lines()
        assert "for <redacted>" == note["note"]
        assert "topic hub/<redacted>/x" == topic["event"]
        assert failed["exception"].endswith("RuntimeError: no bundle for <redacted>")
        assert "ab" in logs.scrub_text("ab")
        assert [] == phi_canaries.scan_text(journal.text())

    def test_protected_values_are_bounded(self) -> None:
        try:
            logs.protect(f"value-{i:04d}" for i in range(logs.PROTECTED_MAX + 10))
            assert "value-0000" == logs.scrub_text("value-0000")  # the oldest, forgotten
            assert logs.REDACTED == logs.scrub_text(f"value-{logs.PROTECTED_MAX + 9:04d}")
        finally:
            logs.forget_protected()
        assert "value-0010" == logs.scrub_text("value-0010")


class TestJournald:
    """Lines to the journal carry their syslog priority, ``<N>``, before the JSON (b)."""

    def _pipe_lines(
        self, journal: Journal, monkeypatch: pytest.MonkeyPatch, journal_stream: str | None
    ) -> list[str]:
        read_fd, write_fd = os.pipe()
        status = os.fstat(write_fd)
        if journal_stream == "this pipe":
            journal_stream = f"{status.st_dev}:{status.st_ino}"
        if journal_stream is None:
            monkeypatch.delenv("JOURNAL_STREAM", raising=False)
        else:
            monkeypatch.setenv("JOURNAL_STREAM", journal_stream)
        with os.fdopen(read_fd) as reader:
            with os.fdopen(write_fd, "w") as stream:
                logs.configure("debug", stream, clock=journal.clock)
                log = structlog.get_logger("agent.test")
                log.debug("d")
                log.info("i")
                log.warning("w", device=ADDRESS)
                log.error("e")
                log.critical("c")
                logging.getLogger("paho").error("library %s", ADDRESS)
            text = reader.read()
        journal.stream.write(text)  # PHI-scanned with the journal
        return text.splitlines()

    def test_the_priority_prefix_when_stderr_is_the_journal(
        self, journal: Journal, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        lines = self._pipe_lines(journal, monkeypatch, "this pipe")
        prefixes = [line[: line.index("{")] for line in lines]
        assert ["<7>", "<6>", "<4>", "<3>", "<2>", "<3>"] == prefixes
        events = [json.loads(line[len(p) :]) for line, p in zip(lines, prefixes, strict=True)]
        assert ["d", "i", "w", "e", "c", f"library {TAIL}"] == [e["event"] for e in events]
        assert TAIL == events[2]["device"]

    @pytest.mark.parametrize("journal_stream", [None, "", "8:1234567", "garbage"])
    def test_no_prefix_otherwise(
        self, journal: Journal, monkeypatch: pytest.MonkeyPatch, journal_stream: str | None
    ) -> None:
        """Unset, or naming another file: plain JSON lines."""
        lines = self._pipe_lines(journal, monkeypatch, journal_stream)
        assert 6 == len(lines)
        assert all(line.startswith("{") for line in lines)

    def test_a_stream_without_a_file_is_not_the_journal(
        self, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        monkeypatch.setenv("JOURNAL_STREAM", "0:0")
        assert not logs.writes_to_journal(io.StringIO())


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

    def test_a_bluez_object_path_is_cut_too(self) -> None:
        """BlueZ names a device's object by its address with underscores (bleak may log it)."""
        path = "/org/bluez/hci0/dev_" + ADDRESS.replace(":", "_")
        assert f"/org/bluez/hci0/dev_{TAIL}" == logs.scrub_text(path)
        assert "handle 0a:0b, uuid 2a35" == logs.scrub_text("handle 0a:0b, uuid 2a35")


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


ROOT: Final = Path(__file__).resolve().parents[1]

CRASHING: Final = '''
"""A process that ends badly in every way Python reports on stderr, PHI in each report."""
import sys
import threading
import warnings

from agent import logs

patient_id, address, serial = sys.argv[1:]
logs.configure("info")
logs.protect([patient_id])  # as the daemon does with the configured patient id


class Finalized:
    def __del__(self) -> None:
        raise ValueError("finalizer for " + address)


def in_thread() -> None:
    raise OSError("thread lost " + address)


def crash() -> None:
    meter_serial = serial  # a local holding PHI: tracebacks show code, never values
    patient = patient_id
    raise RuntimeError(f"no bundle for {patient} from {address} ({len(meter_serial)})")


warnings.warn("deprecated call for " + address, UserWarning, stacklevel=1)
thread = threading.Thread(target=in_thread, name="hub.test_thread")
thread.start()
thread.join()
Finalized()
crash()
'''


class TestCrashOutput:
    """Python's own reports of an unhandled exception come out through the chain (c)."""

    @pytest.mark.parametrize("to_journal", [False, True], ids=["pipe", "journal"])
    def test_every_crash_report_is_a_scrubbed_json_line(
        self, tmp_path: Path, request: pytest.FixtureRequest, to_journal: bool
    ) -> None:
        """A real child process: a warning, a thread's exception, a finalizer's, and the
        main thread's, each with an address and the (protected) patient id in its message and
        the serial in a local: four JSON lines, scrubbed, on the journal with <N> first."""
        script = tmp_path / "crashing.py"
        script.write_text(CRASHING)
        env = {k: v for k, v in os.environ.items() if k != "JOURNAL_STREAM"}
        env["PYTHONPATH"] = str(ROOT)
        read_fd, write_fd = os.pipe()
        if to_journal:
            status = os.fstat(write_fd)
            env["JOURNAL_STREAM"] = f"{status.st_dev}:{status.st_ino}"
        args = [phi_canaries.PATIENT_ID, ADDRESS, phi_canaries.DEVICE_SERIAL]
        with subprocess.Popen(
            [sys.executable, str(script), *args],
            cwd=ROOT,
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=write_fd,
        ) as child:
            os.close(write_fd)
            with os.fdopen(read_fd) as reader:
                stderr = reader.read()
            assert 1 == child.wait(timeout=60)
        phi_canaries.record_output(f"{request.node.nodeid} [child stderr]", stderr)
        assert [] == phi_canaries.scan_text(stderr)
        lines = stderr.splitlines()
        prefixes = [line[: line.index("{")] for line in lines]
        assert (["<4>", "<2>", "<3>", "<2>"] if to_journal else [""] * 4) == prefixes
        warning, in_thread, finalizer, main = (
            json.loads(line[len(p) :]) for line, p in zip(lines, prefixes, strict=True)
        )
        assert ("py.warnings", "warning") == (warning["logger"], warning["level"])
        assert f"UserWarning: deprecated call for {TAIL}" in warning["event"]
        assert ("thread_exception_unhandled", "critical", "hub.test_thread", "OSError") == (
            in_thread["event"],
            in_thread["level"],
            in_thread["thread"],
            in_thread["error"],
        )
        assert in_thread["exception"].endswith(f"OSError: thread lost {TAIL}")
        assert ("exception_unraisable", "error", "ValueError") == (
            finalizer["event"],
            finalizer["level"],
            finalizer["error"],
        )
        assert finalizer["exception"].endswith(f"ValueError: finalizer for {TAIL}")
        assert ("unhandled_exception", "critical", "RuntimeError") == (
            main["event"],
            main["level"],
            main["error"],
        )
        assert main["exception"].startswith("Traceback (most recent call last):")
        assert "in crash" in main["exception"]
        assert main["exception"].endswith(
            f"RuntimeError: no bundle for <redacted> from {TAIL} ({len(args[2])})"
        )

    def test_hooks_someone_else_installed_are_kept(self, journal: Journal) -> None:
        """pytest's own thread and unraisable hooks stay (it reports those exceptions); a
        hook left at Python's default is replaced."""
        sys.excepthook = sys.__excepthook__
        theirs = threading.excepthook
        assert theirs is not threading.__excepthook__  # pytest's, in this process
        journal.configure()
        assert theirs is threading.excepthook
        assert sys.__excepthook__ is not sys.excepthook
        assert "_excepthook" == getattr(sys.excepthook, "__name__", None)


RUN_CRASHING: Final = '''
"""homehub run on the shipped example, whose daemon fails with a bug (injected: daemon.main
raises a RuntimeError with an address in its message and the patient id in a local)."""
import sys

from agent import cli, daemon

patient_id, address, config = sys.argv[1:]


def main(cfg: object) -> int:
    patient = patient_id
    raise RuntimeError(f"pipeline broke for {address} ({len(patient)})")


daemon.main = main
raise SystemExit(cli.main(["run", "--config", config, "--log-level", "info"]))
'''

EXAMPLE_CONFIG: Final = ROOT / "config" / "homehub.example.toml"


def test_homehub_run_crashing_writes_one_scrubbed_line(
    tmp_path: Path, request: pytest.FixtureRequest
) -> None:
    """homehub run's own path (configuration, logging, the daemon's start) in a real process,
    the daemon failing with an unhandled error: its stderr is one JSON line with the
    scrubbed traceback, exit 1."""
    script = tmp_path / "run_crashing.py"
    script.write_text(RUN_CRASHING)
    env = {k: v for k, v in os.environ.items() if k != "JOURNAL_STREAM"}
    env["PYTHONPATH"] = str(ROOT)
    done = subprocess.run(
        [sys.executable, str(script), phi_canaries.PATIENT_ID, ADDRESS, str(EXAMPLE_CONFIG)],
        cwd=ROOT,
        env=env,
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    phi_canaries.record_output(f"{request.node.nodeid} [child stdout]", done.stdout)
    phi_canaries.record_output(f"{request.node.nodeid} [child stderr]", done.stderr)
    assert (1, "") == (done.returncode, done.stdout)
    assert [] == phi_canaries.scan_text(done.stderr)
    [line] = [json.loads(text) for text in done.stderr.splitlines()]
    assert ("unhandled_exception", "critical", "RuntimeError") == (
        line["event"],
        line["level"],
        line["error"],
    )
    assert "in _cmd_run" in line["exception"]
    assert line["exception"].endswith(
        f"RuntimeError: pipeline broke for {TAIL} ({len(phi_canaries.PATIENT_ID)})"
    )
