"""A pytest plugin that collects every log the suite produces and scans it for planted PHI.

Tests plant *canaries*: distinctive patient ids, device serials, full Bluetooth addresses,
reading values and key material used as test data. Every captured stdout/stderr/log section
of every test, and every file written under :func:`log_dir` (daemon and broker logs), is
scanned at the end by ``tests/test_zz_phi_scan.py`` (and again at session end, so a run that
deselects that test still fails on a leak).

The canaries below are the suite's standard test identities; fixtures that generate secrets
at run time (keys) add theirs with :func:`plant`.

Output that pytest does not capture must be brought to the scan: a child process's stdout and
stderr (the daemon under test, mosquitto, a CLI run with ``capture_output=True``) either go to
a file under :func:`log_dir` (:func:`output_path` names one) or, once read, to
:func:`record_output`; :func:`scan_text` checks a text at once, for a test that asserts on
it.
"""

from __future__ import annotations

import os
import re
import shutil
import tempfile
from pathlib import Path
from typing import Any, Final

import pytest

#: Test identities every end-to-end test uses; none may ever appear in a log.
PATIENT_ID: Final = "patient-canary-5e1f"
DEVICE_SERIAL: Final = "SN-CANARY-77D1"
DEVICE_ADDRESS: Final = "F0:CA:7A:00:12:34"
SYSTEM_ID_HEX: Final = "CA7A0012FFFE34F0"

_planted: dict[str, re.Pattern[str]] = {}
_captured: list[tuple[str, str]] = []
_log_dir: Path | None = None
_reports_seen = 0


def plant(name: str, text: str, *, regex: bool = False) -> None:
    """Add a canary: ``text`` (or a regex) that must never appear in any log."""
    _planted[name] = re.compile(text if regex else re.escape(text), re.IGNORECASE)


for _name, _text in {
    "patient id": PATIENT_ID,
    "device serial": DEVICE_SERIAL,
    "full device address": DEVICE_ADDRESS,
    "full device address (hex)": DEVICE_ADDRESS.replace(":", ""),
    "system id": SYSTEM_ID_HEX,
}.items():
    plant(_name, _text)


def log_dir() -> Path:
    """Where fixtures write daemon, broker and receiver logs so that they are scanned."""
    global _log_dir
    if _log_dir is None:
        _log_dir = Path(tempfile.mkdtemp(prefix="homehub-test-logs-"))
        os.environ["HOMEHUB_TEST_LOG_DIR"] = str(_log_dir)
    return _log_dir


RECORDED_MAX_CHARS: Final = 4 * 1024 * 1024
"""Characters of one recorded output kept for the scan (its end is dropped past it): bounds
the plugin's memory when a test records a flood; a canary is logged early or repeatedly."""


def scan_text(text: str) -> list[str]:
    """The names of the planted canaries found in ``text``."""
    return [name for name, pattern in _planted.items() if pattern.search(text)]


def record_output(where: str, text: str | bytes) -> None:
    """Keep ``text`` (a child process's captured stdout or stderr) for the session's scan;
    ``where`` names it in a finding (the test and the stream)."""
    if isinstance(text, bytes):
        text = text.decode(errors="replace")
    if text:
        _captured.append((where, text[:RECORDED_MAX_CHARS]))


def output_path(name: str) -> Path:
    """A file under :func:`log_dir` for a child process's output (``stdout=path.open("w")``),
    scanned at the end; ``name`` is made a safe file name and the file is not yet created."""
    safe = re.sub(r"[^A-Za-z0-9_.-]+", "_", name)[-120:] or "output"
    path = log_dir() / f"{safe}.log"
    n = 1
    while path.exists():
        n += 1
        path = log_dir() / f"{safe}.{n}.log"
    return path


def leaks() -> list[str]:
    """Every (canary, source) pair found so far, as text lines."""
    found: list[str] = []
    sources: list[tuple[str, str]] = list(_captured)
    for path in sorted(log_dir().rglob("*")):
        if path.is_file():
            sources.append((str(path), path.read_text(errors="replace")))
    for where, text in sources:
        found.extend(f"{name} found in {where}" for name in scan_text(text))
    return found


def reports_seen() -> int:
    """How many test phase reports the plugin has seen (so the scan cannot pass unhooked)."""
    return _reports_seen


def pytest_configure(config: pytest.Config) -> None:
    """Create the log directory before any fixture asks for it."""
    log_dir()


def pytest_runtest_logreport(report: pytest.TestReport) -> None:
    """Keep every captured output section of every test phase."""
    global _reports_seen
    _reports_seen += 1
    for title, content in report.sections:
        if content:
            _captured.append((f"{report.nodeid} [{title}]", content))
    if report.longreprtext:
        _captured.append((f"{report.nodeid} [traceback]", report.longreprtext))


def pytest_sessionfinish(session: pytest.Session, exitstatus: Any) -> None:
    """Fail the session if any canary leaked, even when the scan test was deselected."""
    found = leaks()
    if found:
        reporter = session.config.pluginmanager.get_plugin("terminalreporter")
        if reporter is not None:
            reporter.write_line("PHI canaries found in logs:", red=True)
            for line in found:
                reporter.write_line("  " + line, red=True)
        session.exitstatus = pytest.ExitCode.TESTS_FAILED
    else:
        shutil.rmtree(log_dir(), ignore_errors=True)  # kept only when it holds evidence


@pytest.fixture(scope="session")
def phi_log_dir() -> Path:
    """The directory whose files are scanned for canaries."""
    return log_dir()
