"""JUnit XML for CI systems: one ``testsuite`` ("homehub-hil"), one ``testcase`` per
scenario, a ``failure`` naming every check that failed (and the run's error), the checks and
figures in ``system-out``. The schema CI systems read (Jenkins, GitLab, GitHub actions):
counts on the suite, ``time`` in seconds."""

from __future__ import annotations

import xml.etree.ElementTree as ET
from dataclasses import asdict
from pathlib import Path
from typing import Final

from hil.scenarios.results import ScenarioResult

SUITE: Final = "homehub-hil"


def junit_xml(results: list[ScenarioResult]) -> str:
    """The JUnit XML document for ``results``."""
    failed = sum(1 for r in results if not r.passed)
    suite = ET.Element(
        "testsuite",
        name=SUITE,
        tests=str(len(results)),
        failures=str(failed),
        errors="0",
        skipped="0",
        time=f"{sum(r.figures.duration_s for r in results):.2f}",
    )
    for result in results:
        case = ET.SubElement(
            suite,
            "testcase",
            classname=f"hil.scenarios.{result.name.replace('-', '_')}",
            name=result.name,
            time=f"{result.figures.duration_s:.2f}",
        )
        if not result.passed:
            lines = result.failures()
            failure = ET.SubElement(case, "failure", message=lines[0] if lines else "failed")
            failure.text = "\n".join(lines)
        out = [f"{result.name}: {result.purpose}"]
        out += [f"[{'ok' if c.ok else 'FAILED'}] {c.name}: {c.detail}" for c in result.checks]
        out += [f"{k} = {v}" for k, v in asdict(result.figures).items()]
        ET.SubElement(case, "system-out").text = "\n".join(out)
    ET.indent(suite)
    return '<?xml version="1.0" encoding="UTF-8"?>\n' + ET.tostring(suite, encoding="unicode")


def write_junit(results: list[ScenarioResult], path: Path) -> Path:
    """Write ``junit.xml``."""
    path.write_text(junit_xml(results) + "\n")
    return path
