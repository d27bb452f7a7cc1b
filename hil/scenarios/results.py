"""What one scenario run found: its checks, its figures and its timelines.

Plain frozen data, written as ``results.json`` beside the report, so the report
(hil/report/) is made from it alone and can be made again from a kept run.
"""

from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from hil.fleet.figures import failures as fleet_failures
from hil.scenarios.base import Check


@dataclass(frozen=True, slots=True)
class Figures:
    """The figures that matter for one run (times in seconds)."""

    readings_expected: int = 0
    """Readings the home's delivering devices held or took."""
    device_sends: int = 0
    """Readings the devices handed over (confirmed indications, re-sends included)."""
    platform_received: int = 0
    """Readings in messages the platform verified (copies included)."""
    platform_stored: int = 0
    """New readings the platform stored and delivered."""
    duplicates_removed: int = 0
    """Copies the platform recognised by id and did not deliver again."""
    time_to_recover_s: float | None = None
    """From the end of the last fault until the platform held everything and the outbox was
    empty; None for a run without a fault."""
    latency_p50_s: float | None = None
    """Measurement (the device holding the reading) to the platform's verified store."""
    latency_p99_s: float | None = None
    outbox_high_water: int = 0
    """Most records pending in the outbox at once, as sampled (every 100 ms)."""
    security_events: int = 0
    duration_s: float = 0.0


@dataclass(frozen=True, slots=True)
class ScenarioResult:
    """One scenario run."""

    name: str
    purpose: str
    faults: tuple[str, ...]
    quick: bool
    checks: tuple[Check, ...]
    figures: Figures
    error: str | None = None
    """Why the run itself failed (a wait timed out, a part did not start), if it did."""
    depth: tuple[tuple[float, int], ...] = ()
    fault_windows: tuple[tuple[str, float, float | None], ...] = ()
    latencies_s: tuple[float, ...] = ()
    run_dir: str = ""
    skipped: str | None = None
    """Why it did not run (a real rig lacks a part it needs: hil/rig.py), if it did not."""
    rig: str | None = None
    """The real rig it ran on (its ``[rig] name``), None for the virtual home."""

    @property
    def passed(self) -> bool:
        """No error and every check passed."""
        return self.error is None and bool(self.checks) and all(c.ok for c in self.checks)

    @property
    def failed(self) -> bool:
        """It ran and did not pass (a skipped scenario neither passed nor failed)."""
        return self.skipped is None and not self.passed

    def failures(self) -> list[str]:
        """One line per failed check (and the error), for JUnit and the console."""
        lines = [] if self.error is None else [f"run: {self.error}"]
        lines.extend(f"{c.name}: {c.detail}" for c in self.checks if not c.ok)
        return lines


def percentile(values: list[float], q: float) -> float | None:
    """The ``q`` quantile (0..1) by nearest rank; None for no values."""
    if not values:
        return None
    ordered = sorted(values)
    rank = max(1, math.ceil(q * len(ordered)))
    return ordered[rank - 1]


def to_json(results: list[ScenarioResult]) -> str:
    """The results as JSON (``results.json``)."""
    body = [{**asdict(r), "passed": r.passed} for r in results]
    return json.dumps(body, indent=1, sort_keys=True)


def from_json(text: str) -> list[ScenarioResult]:
    """Results read back from :func:`to_json`."""
    out = []
    for item in json.loads(text):
        item.pop("passed", None)
        item["checks"] = tuple(Check(**c) for c in item["checks"])
        item["figures"] = Figures(**item["figures"])
        item["faults"] = tuple(item["faults"])
        item["depth"] = tuple((t, n) for t, n in item["depth"])
        item["fault_windows"] = tuple((n, s, e) for n, s, e in item["fault_windows"])
        item["latencies_s"] = tuple(item["latencies_s"])
        out.append(ScenarioResult(**item))
    return out


def write_json(results: list[ScenarioResult], path: Path) -> Path:
    """Write ``results.json``."""
    path.write_text(to_json(results))
    return path


@dataclass(frozen=True, slots=True)
class FleetResult:
    """The fleet scenario's run (hil/fleet/, after the scenarios in ``make hil``): its figures
    as ``python -m hil.fleet`` prints them (none if the run itself failed) and the connection
    offsets its plot is drawn from (seconds after the boot, after the broker was back)."""

    figures: dict[str, Any] = field(default_factory=dict)
    boot_offsets_s: tuple[float, ...] = ()
    reconnect_offsets_s: tuple[float, ...] = ()
    error: str | None = None
    """Why the run itself failed (a phase timed out, a worker died), if it did."""
    duration_s: float = 0.0

    @property
    def passed(self) -> bool:
        """Every backlog arrived exactly once, every hub came back, not in a storm
        (:func:`hil.fleet.figures.failures`), and the run ended."""
        return not self.failures()

    def failures(self) -> list[str]:
        """One line per failure (the run's error first), for JUnit, the page and the console."""
        lines = [] if self.error is None else [f"run: {self.error}"]
        if self.figures:
            lines.extend(fleet_failures(self.figures))
        elif self.error is None:
            lines.append("run: no figures")
        return lines


def run_to_json(results: list[ScenarioResult], fleet: FleetResult | None) -> str:
    """A whole run as JSON (``results.json``): ``{"scenarios": [...], "fleet": {...} | null}``,
    each scenario as :func:`to_json` writes it, the fleet with its verdict."""
    body: dict[str, Any] = {"scenarios": json.loads(to_json(results)), "fleet": None}
    if fleet is not None:
        body["fleet"] = {**asdict(fleet), "passed": fleet.passed, "failures": fleet.failures()}
    return json.dumps(body, indent=1, sort_keys=True)


def run_from_json(text: str) -> tuple[list[ScenarioResult], FleetResult | None]:
    """A whole run read back from :func:`run_to_json`."""
    body = json.loads(text)
    results = from_json(json.dumps(body["scenarios"]))
    item = body["fleet"]
    if item is None:
        return results, None
    item.pop("passed", None)
    item.pop("failures", None)
    item["boot_offsets_s"] = tuple(item["boot_offsets_s"])
    item["reconnect_offsets_s"] = tuple(item["reconnect_offsets_s"])
    return results, FleetResult(**item)


def write_run_json(results: list[ScenarioResult], fleet: FleetResult | None, path: Path) -> Path:
    """Write ``results.json`` (:func:`run_to_json`)."""
    path.write_text(run_to_json(results, fleet))
    return path
