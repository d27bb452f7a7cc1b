"""``make test``'s share of the HIL kit: the quick scenarios (hil/scenarios/, ``quick=True``)
run for real, as ``python -m hil all --quick`` runs them: the daemon as ``homehub run``, a
real mosquitto, the reference platform, the Bumble virtual radio; then their report. Every
log of the runs goes to the suite's PHI scan as well as to the scenarios' own."""

from __future__ import annotations

import xml.etree.ElementTree as ET
from pathlib import Path

import pytest

from hil.__main__ import run_all
from hil.scenarios import SCENARIOS
from tests import phi_canaries

pytestmark = pytest.mark.timeout(300)  # above the quick scenarios' own bounds (90 s each)


async def test_quick_scenarios_pass_and_report(tmp_path: Path) -> None:
    quick = [s for s in SCENARIOS if s.quick]
    assert quick, "make test runs at least one scenario"
    try:
        results = await run_all(quick, tmp_path, echo=False)
    finally:
        for log in sorted((tmp_path / "runs").rglob("*.log")):
            phi_canaries.record_output(f"hil run {log.parent.name}/{log.name}", log.read_bytes())
    failures = {r.name: r.failures() for r in results if not r.passed}
    assert {} == failures
    for result in results:
        f = result.figures
        assert f.readings_expected > 0
        assert f.readings_expected == f.platform_stored  # exactly once after deduplication
        assert f.latency_p50_s is not None
        assert [c.name for c in result.checks][:3] == [
            "exactly once",
            "values and identifiers",
            "signatures",
        ]
    by_name = {r.name: r for r in results}
    if "broker-restart-no-persistence" in by_name:
        # The three readings taken while the broker was down wait at least a receipt timeout.
        restart = by_name["broker-restart-no-persistence"].figures
        assert restart.outbox_high_water >= 3
        assert restart.time_to_recover_s is not None
    suite = ET.parse(tmp_path / "junit.xml").getroot()  # noqa: S314 - our own file
    assert [s.name for s in quick] == [c.get("name") for c in suite.iter("testcase")]
    assert "0" == suite.get("failures")
    html = (tmp_path / "report.html").read_text()
    assert all(f'data-name="{s.name}"' in html for s in quick)
