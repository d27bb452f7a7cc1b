"""The HIL report (hil/report/): JUnit XML a CI system reads, and the HTML page rendered by a
real headless Chromium (Debian's ``chromium``), which must show the scenario table and load
every plot. Made from results of two scenarios, one failed, and of fleet runs (200 hubs, one
passed, one failed), without running them (the quick subset's real run is
tests/test_hil_quick.py, a real fleet's report tests/test_hil_fleet.py)."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import xml.etree.ElementTree as ET
from pathlib import Path
from typing import Any, Final

import pytest

from hil.fleet.figures import spread
from hil.report import write_report
from hil.report.junit import junit_xml
from hil.scenarios.base import Check
from hil.scenarios.results import (
    Figures,
    FleetResult,
    ScenarioResult,
    from_json,
    percentile,
    run_from_json,
    run_to_json,
    to_json,
)
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


def fleet_result(reconnects_s: list[float], missing: int = 0) -> FleetResult:
    """A fleet run's result as hil/fleet/scenario.py makes it, for ``len(reconnects_s)`` hubs
    coming back at these offsets after the broker; ``missing`` readings never arrived."""
    hubs, backlog = len(reconnects_s), 100
    readings = hubs * backlog
    boot_s = [i * 30.0 / hubs for i in range(hubs)]
    figures: dict[str, Any] = {
        "scenario": "fleet",
        "hubs": hubs,
        "processes": 8,
        "per_process": 25,
        "readings_per_hub": backlog,
        "readings": readings,
        "options": {
            "batch_max_readings": 50,
            "backoff_base_s": 1.0,
            "backoff_max_s": 120.0,
            "boot_jitter_s": 30.0,
        },
        "machine": {"cpus": 2},
        "fill_s": 6.1,
        "boot": spread(boot_s, 0.0).as_dict(),
        "restart": {
            "mode": "persistent",
            "down_s": 10.4,
            "held_at_restart": readings // 2,
            "reconnects": spread(reconnects_s, 0.0).as_dict(),
            "failed_attempts": 4 * hubs,
        },
        "drain_s": 48.0,
        "all_arrived_after_broker_back_s": max(reconnects_s) + 0.3,
        "platform": {
            "readings_expected": readings,
            "readings_handed_on": readings - missing,
            "missing": missing,
            "unexpected": 0,
            "handed_on_twice": 0,
            "exactly_once": missing == 0,
            "duplicates_removed": 7000,
            "rejected": 0,
            "envelopes": 900,
            "receipts_sent": 950,
        },
        "hub_counters": {"receipt_timeouts": 0},
        "cpu_s": {"workers": 15.0, "per_hub_ms": 75.0, "platform": 18.0, "broker": 0.7},
        "wall_s": 104.0,
    }
    return FleetResult(figures, tuple(boot_s), tuple(reconnects_s), duration_s=104.5)


FLEET: Final = fleet_result([i * 0.17 for i in range(200)])
"""200 hubs back over 34 s, at most one in 100 ms: passed."""
STORM: Final = fleet_result([0.01 + i * 0.0002 for i in range(200)], missing=3)
"""200 hubs back within 40 ms, and 3 readings missing: failed twice over."""


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


def test_junit_fails_the_fleet_on_a_storm_or_a_missing_reading() -> None:
    def cases(fleet: FleetResult) -> tuple[ET.Element, dict[str | None, ET.Element]]:
        suite = ET.fromstring(junit_xml(RESULTS, fleet))  # noqa: S314 - our own document
        return suite, {c.get("name"): c for c in suite.iter("testcase")}

    suite, passed = cases(FLEET)
    assert ("3", "1") == (suite.get("tests"), suite.get("failures"))
    assert ["broker-restart-no-persistence", "forged-receipt", "fleet"] == list(passed)
    assert passed["fleet"].find("failure") is None
    out = passed["fleet"].findtext("system-out") or ""
    assert out.startswith("fleet: 200 hubs in 8 processes")
    assert "reconnects per 1 s: [6, 6, 6," in out
    suite, failed = cases(STORM)
    assert ("3", "2") == (suite.get("tests"), suite.get("failures"))
    failure = failed["fleet"].find("failure")
    assert failure is not None
    assert failure.text is not None
    assert failure.text.splitlines() == [
        "backlog: 19997 readings handed on of 20000 expected, 3 missing, 0 twice, 0 unexpected",
        "reconnections: 200 of 200 hubs within one 100 ms, a synchronised storm",
    ]
    assert "104.50" == failed["fleet"].get("time")
    assert not STORM.passed


def test_results_survive_json() -> None:
    again = from_json(to_json(RESULTS))
    assert RESULTS == again
    assert [True, False] == [r.passed for r in again]
    assert (None, 2.0, 9.0) == (
        percentile([], 0.5),
        percentile([1, 2, 3], 0.5),
        percentile([float(x) for x in range(1, 10)], 0.99),
    )
    assert (RESULTS, FLEET) == run_from_json(run_to_json(RESULTS, FLEET))
    assert (RESULTS, None) == run_from_json(run_to_json(RESULTS, None))
    body = json.loads(run_to_json(RESULTS, STORM))
    assert (False, 2) == (body["fleet"]["passed"], len(body["fleet"]["failures"]))
    assert 200 == body["fleet"]["figures"]["restart"]["reconnects"]["max_per_100ms"]


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
    paths = write_report(RESULTS, tmp_path / "report", FLEET)
    dom = render(paths["html"], tmp_path, "--dump-dom")
    assert 0 == dom.returncode, dom.stderr[-2000:]
    rows = re.findall(r'<tr class="scenario" data-name="([^"]+)"', dom.stdout)
    assert ["broker-restart-no-persistence", "forged-receipt"] == rows
    assert 'id="verdict">1 of 2 scenarios passed<' in dom.stdout
    assert 'id="fleet-summary">fleet of 200 hubs: passed<' in dom.stdout
    # The fleet's section: its verdict, its figures, its plot.
    assert "<h2>Fleet: 200 hubs, one broker that restarts</h2>" in dom.stdout
    assert '<p id="fleet-verdict"><span class="pass">PASS</span></p>' in dom.stdout
    fleet = dict(
        re.findall(r'<tr data-figure="([^"]+)"><th>[^<]+</th><td>([^<]+)</td>', dom.stdout)
    )
    assert list(fleet) == [
        "hubs",
        "processes",
        "backlog",
        "boot",
        "restart",
        "reconnects",
        "peak",
        "per-second",
        "storm",
        "delivered",
        "exactly-once",
        "all-arrived",
        "duration",
    ]
    assert fleet["reconnects"] == "0.00 / 16.83 / 30.43 / 33.83 s (200 hubs)"
    assert fleet["peak"].startswith("6 in one second (3% of the hubs")
    assert fleet["storm"] == "no: 1 of 200 hubs in the busiest 100 ms"
    assert fleet["delivered"] == "20000 / 20000 / 7000"
    assert fleet["all-arrived"].startswith("34.1 s after the broker was back")
    assert re.search(r'<div id="fleet-plots"><figure><img src="data:image/png;base64,', dom.stdout)
    images = re.findall(r'<img src="data:image/png;base64,[A-Za-z0-9+/=]+"', dom.stdout)
    names = re.findall(r'data-file="([^"]+\.png)"', dom.stdout)
    assert [
        "broker-restart-no-persistence-outbox.png",
        "forged-receipt-outbox.png",
        "latency.png",
        "fleet-reconnects.png",
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
