"""``make hil``: every HIL scenario (hil/scenarios/) on the virtual home, then the fleet
scenario (hil/fleet/: 200 hubs, one broker that restarts), and the report.

For the Makefile and CI: ``--rounds N`` runs the whole set N times (a flaky recovery path
shows up in repetition long before it shows up in a patient's home), each round's report in
``<report>/round-<k>`` when N > 1; one line per scenario, the fleet's progress and figures,
a summary line of JSON at the end. ``--no-fleet`` skips the fleet, ``--quick`` (make test's
subset) never runs it. Exit code 0 only if every scenario and the fleet of every round passed.
``--rig FILE``: on the real rig FILE describes (hil/rig.py; ``make hil RIG=FILE``), without the
fleet (200 hubs are this machine's, not the rig's); a scenario the rig cannot run is skipped,
neither passed nor failed; a bad rig file exits 2.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import shutil
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from hil.__main__ import run_all
from hil.fleet.figures import report
from hil.fleet.plan import FleetOptions
from hil.fleet.scenario import run_fleet
from hil.report import write_report
from hil.rig import RigError, open_rig
from hil.scenarios import SCENARIOS
from hil.scenarios.results import FleetResult
from hil.scenarios.runner import platform_log


def _describe(exc: BaseException) -> str:
    """An exception's type and message; a task group's: each of its exceptions'."""
    if isinstance(exc, BaseExceptionGroup):
        return "; ".join(_describe(e) for e in exc.exceptions)
    return f"{type(exc).__name__}: {exc}"


def run_fleet_for_report(options: FleetOptions, run_dir: Path, *, echo: bool = True) -> FleetResult:
    """Run the fleet scenario (:func:`hil.fleet.scenario.run_fleet`) on files in a temporary
    directory under ``run_dir`` (the outboxes and the platform's store, removed after), with
    ``platform.log`` and the broker's ``mosquitto.log`` kept in ``run_dir``; its result, the
    run's error instead of an exception."""
    if run_dir.exists():
        shutil.rmtree(run_dir)
    run_dir.mkdir(parents=True)
    started = time.monotonic()

    def progress(line: str) -> None:
        if echo:
            print(f"  .. {line}", flush=True)

    try:
        with (
            # warnings and above: the platform's info events, one per duplicate, are thousands
            platform_log(run_dir / "platform.log", min_level=logging.WARNING),
            tempfile.TemporaryDirectory(prefix="work-", dir=run_dir) as tmp,
        ):
            try:
                run = run_fleet(options, Path(tmp), progress)
            finally:
                broker_log = Path(tmp) / "broker" / "mosquitto.log"
                if broker_log.exists():
                    shutil.copy(broker_log, run_dir / "mosquitto.log")
    except Exception as exc:  # noqa: BLE001 - the run's failure goes into the report
        result = FleetResult(error=_describe(exc), duration_s=round(time.monotonic() - started, 3))
    else:
        result = FleetResult(
            run.figures,
            run.boot_offsets_s,
            run.reconnect_offsets_s,
            duration_s=round(time.monotonic() - started, 3),
        )
    if echo:
        verdict = "ok" if result.passed else "FAILED"
        print(f"fleet: {verdict} in {result.duration_s:.1f} s", flush=True)
        if result.figures:
            report(result.figures, lambda line: print(f"    {line}", flush=True))
        for line in result.failures():
            print(f"    FAILED {line}", flush=True)
    return result


def main(argv: Sequence[str] | None = None) -> int:
    """Run the campaign; the exit code."""
    parser = argparse.ArgumentParser(prog="python -m hil.campaign", description=__doc__)
    parser.add_argument("--rounds", type=int, default=1)
    parser.add_argument("--report", type=Path, default=Path("build/hil-report"))
    parser.add_argument(
        "--quick", action="store_true", help="only make test's quick subset (no fleet)"
    )
    parser.add_argument("--no-fleet", action="store_true", help="skip the fleet scenario")
    parser.add_argument("--rig", type=Path, metavar="FILE", help="on this real rig (no fleet)")
    parser.add_argument(
        "--fleet-hubs", type=int, default=FleetOptions().hubs, help="hubs in the fleet scenario"
    )
    args = parser.parse_args(argv)
    try:
        rig = None if args.rig is None else open_rig(args.rig)
    except RigError as exc:
        print(f"python -m hil.campaign: {exc}", file=sys.stderr)
        return 2
    if rig is not None:
        print(rig.describe(), flush=True)
    fleet_options = None
    if not (args.quick or args.no_fleet or rig is not None):
        try:
            fleet_options = FleetOptions(hubs=args.fleet_hubs)
        except ValueError as exc:
            parser.error(str(exc))
    chosen = [s for s in SCENARIOS if s.quick or not args.quick]
    failed = passed = 0
    fleets: list[dict[str, Any]] = []
    started = time.monotonic()
    for round_no in range(1, args.rounds + 1):
        directory = args.report if args.rounds == 1 else args.report / f"round-{round_no}"
        results = asyncio.run(run_all(chosen, directory, report=False, rig=rig))
        failed += sum(1 for r in results if r.failed)
        passed += sum(1 for r in results if r.passed)
        fleet = None
        if fleet_options is not None:
            fleet = run_fleet_for_report(fleet_options, directory / "runs" / "fleet")
            failed += 0 if fleet.passed else 1
            fleets.append({"hubs": fleet_options.hubs, "passed": fleet.passed})
        write_report(results, directory, fleet)
        print(f"round {round_no}/{args.rounds}: report {directory / 'report.html'}", flush=True)
    print(
        json.dumps(
            {
                "rounds": args.rounds,
                "scenarios": [s.name for s in chosen],
                "fleet": fleets or None,
                "failed": failed,
                "took_s": round(time.monotonic() - started, 1),
            }
        )
    )
    return 0 if failed == 0 and (passed or rig is None) else 1  # a rig that ran nothing: 1


if __name__ == "__main__":
    raise SystemExit(main())
