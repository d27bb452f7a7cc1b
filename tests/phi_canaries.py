"""A pytest plugin that collects every log the suite produces and scans it for planted PHI.

Tests plant *canaries*: distinctive patient ids, device serials, full Bluetooth addresses,
reading values and key material used as test data. Every captured stdout/stderr/log section
of every test, and every file written under :func:`log_dir` (daemon and broker logs), is
scanned at the end by ``tests/test_zz_phi_scan.py`` (and again at session end, so a run that
deselects that test still fails on a leak).

The canaries below are the suite's standard test identities; fixtures that generate secrets
at run time (keys) add theirs with :func:`plant`.
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


def leaks() -> list[str]:
    """Every (canary, source) pair found so far, as text lines."""
    found: list[str] = []
    sources: list[tuple[str, str]] = list(_captured)
    for path in sorted(log_dir().rglob("*")):
        if path.is_file():
            sources.append((str(path), path.read_text(errors="replace")))
    for where, text in sources:
        for name, pattern in _planted.items():
            if pattern.search(text):
                found.append(f"{name} found in {where}")
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
