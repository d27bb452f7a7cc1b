"""JUnit XML for CI systems: one ``testsuite`` ("homehub-hil"), one ``testcase`` per
scenario, a ``failure`` naming every check that failed (and the run's error), the checks and
figures in ``system-out``; the fleet scenario, when it ran, as one more ``testcase``
("fleet"), failed when a backlog did not arrive exactly once, a hub did not come back or the
reconnections were a synchronised storm (:func:`hil.fleet.figures.failures`). The schema CI
systems read (Jenkins, GitLab, GitHub actions): counts on the suite, ``time`` in seconds."""

from __future__ import annotations

import json
import xml.etree.ElementTree as ET
from dataclasses import asdict
from pathlib import Path
from typing import Final

from hil.fleet.figures import report
from hil.scenarios.results import FleetResult, ScenarioResult

SUITE: Final = "homehub-hil"


def junit_xml(results: list[ScenarioResult], fleet: FleetResult | None = None) -> str:
    """The JUnit XML document for ``results`` (and the fleet's run)."""
    failed = sum(1 for r in results if r.failed)
    duration = sum(r.figures.duration_s for r in results)
    if fleet is not None:
        failed += 0 if fleet.passed else 1
        duration += fleet.duration_s
    suite = ET.Element(
        "testsuite",
        name=SUITE,
        tests=str(len(results) + (fleet is not None)),
        failures=str(failed),
        errors="0",
        skipped=str(sum(1 for r in results if r.skipped is not None)),
        time=f"{duration:.2f}",
    )
    for result in results:
        case = ET.SubElement(
            suite,
            "testcase",
            classname=f"hil.scenarios.{result.name.replace('-', '_')}",
            name=result.name,
            time=f"{result.figures.duration_s:.2f}",
        )
        if result.skipped is not None:  # a real rig lacking a part it needs (hil/rig.py)
            ET.SubElement(case, "skipped", message=result.skipped)
        elif not result.passed:
            lines = result.failures()
            failure = ET.SubElement(case, "failure", message=lines[0] if lines else "failed")
            failure.text = "\n".join(lines)
        out = [f"{result.name}: {result.purpose}"]
        out += [f"[{'ok' if c.ok else 'FAILED'}] {c.name}: {c.detail}" for c in result.checks]
        out += [f"{k} = {v}" for k, v in asdict(result.figures).items()]
        ET.SubElement(case, "system-out").text = "\n".join(out)
    if fleet is not None:
        _fleet_case(suite, fleet)
    ET.indent(suite)
    return '<?xml version="1.0" encoding="UTF-8"?>\n' + ET.tostring(suite, encoding="unicode")


def _fleet_case(suite: ET.Element, fleet: FleetResult) -> None:
    case = ET.SubElement(
        suite, "testcase", classname="hil.fleet", name="fleet", time=f"{fleet.duration_s:.2f}"
    )
    lines = fleet.failures()
    if lines:
        ET.SubElement(case, "failure", message=lines[0]).text = "\n".join(lines)
    out: list[str] = []
    if fleet.figures:
        report(fleet.figures, out.append)
    out += [f"FAILED {line}" for line in lines]
    out.append(f"figures = {json.dumps(fleet.figures, sort_keys=True)}")
    ET.SubElement(case, "system-out").text = "\n".join(out)


def write_junit(
    results: list[ScenarioResult], path: Path, fleet: FleetResult | None = None
) -> Path:
    """Write ``junit.xml``."""
    path.write_text(junit_xml(results, fleet) + "\n")
    return path
