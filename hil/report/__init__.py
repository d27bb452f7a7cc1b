"""The report of a HIL run (issue 12): JUnit XML for CI systems (:mod:`hil.report.junit`) and
one self-contained HTML page with the scenario table, the fleet's section, the figures and
matplotlib plots (:mod:`hil.report.html`, :mod:`hil.report.plots`), written by
:func:`write_report`."""

from __future__ import annotations

from pathlib import Path

from hil.report.html import write_html
from hil.report.junit import write_junit
from hil.scenarios.results import FleetResult, ScenarioResult, write_run_json


def write_report(
    results: list[ScenarioResult], directory: Path, fleet: FleetResult | None = None
) -> dict[str, Path]:
    """Write ``results.json``, ``junit.xml`` and ``report.html`` (with its PNGs beside it)
    into ``directory``, the fleet scenario's part in each when ``fleet`` ran; their paths by
    kind."""
    directory.mkdir(parents=True, exist_ok=True)
    return {
        "json": write_run_json(results, fleet, directory / "results.json"),
        "junit": write_junit(results, directory / "junit.xml", fleet),
        "html": write_html(results, directory / "report.html", fleet),
    }
