"""The HIL report (hil/report/): JUnit XML a CI system reads, and the HTML page rendered by a
real headless Chromium (Debian's ``chromium``), which must show the scenario table and load
every plot. Made from results of two scenarios, one failed, without running them (the quick
subset's real run is tests/test_hil_quick.py)."""

from __future__ import annotations

import re
import shutil
import subprocess
import xml.etree.ElementTree as ET
from pathlib import Path
from typing import Final

import pytest

from hil.report import write_report
from hil.scenarios.base import Check
from hil.scenarios.results import Figures, ScenarioResult, from_json, percentile, to_json
from tests import phi_canaries

CHROMIUM_TIMEOUT_S: Final = 60.0
"""A cold headless Chromium renders this page in ~1 s; a loaded CI runner takes longer."""

RESULTS: Final = [
    ScenarioResult(
        name="broker-restart-no-persistence",
        purpose="mosquitto restarted empty mid-transfer",
        faults=("broker stopped", "broker started without persistence"),
        quick=True,
        checks=(Check("exactly once", True, "15 expected, 15 arrived, 15 stored"),),
        figures=Figures(
            readings_expected=15,
            device_sends=15,
            platform_received=18,
            platform_stored=15,
            duplicates_removed=3,
            time_to_recover_s=5.8,
            latency_p50_s=1.0,
            latency_p99_s=5.5,
            outbox_high_water=15,
            duration_s=7.5,
        ),
        depth=((0.5, 0), (1.0, 12), (2.0, 15), (7.0, 0)),
        fault_windows=(("broker down", 1.1, 2.5),),
        latencies_s=(0.9, 1.0, 1.1, 5.5),
    ),
    ScenarioResult(
        name="forged-receipt",
        purpose="forged receipts delete nothing",
        faults=("a receipt signed with an attacker's key",),
        quick=False,
        checks=(
            Check("exactly once", True, "6 expected, 6 arrived, 6 stored"),
            Check("security events", False, "logged none, expected {'forged': 1}"),
        ),
        figures=Figures(readings_expected=6, duration_s=7.4),
        error="timed out after 30 s waiting for the hub's security events",
    ),
]


def test_junit_names_each_scenario_and_what_failed(tmp_path: Path) -> None:
    paths = write_report(RESULTS, tmp_path)
    suite = ET.parse(paths["junit"]).getroot()  # noqa: S314 - our own file, just written
    assert ("testsuite", "2", "1") == (suite.tag, suite.get("tests"), suite.get("failures"))
    cases = {c.get("name"): c for c in suite.iter("testcase")}
    assert ["broker-restart-no-persistence", "forged-receipt"] == list(cases)
    assert cases["broker-restart-no-persistence"].find("failure") is None
    failure = cases["forged-receipt"].find("failure")
    assert failure is not None
    assert failure.text is not None
    assert failure.text.splitlines() == [
        "run: timed out after 30 s waiting for the hub's security events",
        "security events: logged none, expected {'forged': 1}",
    ]
    assert "7.40" == cases["forged-receipt"].get("time")


def test_results_survive_json() -> None:
    again = from_json(to_json(RESULTS))
    assert RESULTS == again
    assert [True, False] == [r.passed for r in again]
    assert (None, 2.0, 9.0) == (
        percentile([], 0.5),
        percentile([1, 2, 3], 0.5),
        percentile([float(x) for x in range(1, 10)], 0.99),
    )


def _chromium() -> str:
    found = shutil.which("chromium") or shutil.which("chromium-browser")
    if found is None:
        pytest.skip("chromium is not installed (make system-deps installs Debian's chromium)")
    return found


def render(html: Path, tmp_path: Path, *extra: str) -> subprocess.CompletedProcess[str]:
    """Headless Chromium on ``html`` with its own profile; its stderr kept for the scan."""
    result = subprocess.run(
        [
            _chromium(),
            "--headless",
            "--no-sandbox",  # root in a container has no user namespace for the sandbox
            "--disable-gpu",
            f"--user-data-dir={tmp_path / 'chromium-profile'}",
            *extra,
            html.as_uri(),
        ],
        capture_output=True,
        text=True,
        timeout=CHROMIUM_TIMEOUT_S,
        check=False,
    )
    phi_canaries.record_output("chromium stderr", result.stderr)
    return result


def test_html_renders_in_chromium_with_table_and_plots(tmp_path: Path) -> None:
    paths = write_report(RESULTS, tmp_path / "report")
    dom = render(paths["html"], tmp_path, "--dump-dom")
    assert 0 == dom.returncode, dom.stderr[-2000:]
    rows = re.findall(r'<tr class="scenario" data-name="([^"]+)">', dom.stdout)
    assert ["broker-restart-no-persistence", "forged-receipt"] == rows
    assert 'id="verdict">1 of 2 scenarios passed<' in dom.stdout
    images = re.findall(r'<img src="data:image/png;base64,[A-Za-z0-9+/=]+"', dom.stdout)
    names = re.findall(r'data-file="([^"]+\.png)"', dom.stdout)
    assert [
        "broker-restart-no-persistence-outbox.png",
        "forged-receipt-outbox.png",
        "latency.png",
    ] == names
    assert len(names) == len(images)
    # The page's own load handler counts the images the browser decoded.
    assert f'data-images-loaded="{len(names)}"' in dom.stdout
    for name in names:
        assert (paths["html"].parent / name).read_bytes().startswith(b"\x89PNG\r\n\x1a\n")
    shot = tmp_path / "page.png"
    screenshot = render(paths["html"], tmp_path, f"--screenshot={shot}", "--window-size=1400,1400")
    assert 0 == screenshot.returncode, screenshot.stderr[-2000:]
    assert shot.read_bytes().startswith(b"\x89PNG")
