"""``python -m hil``: the HIL scenarios (hil/scenarios/) and their report (hil/report/).

::

    python -m hil list                      # every scenario, its purpose, quick or not
    python -m hil run NAME [NAME...]        # run some
    python -m hil all [--quick]             # run every one (--quick: make test's subset)
        [--report DIR]                      # results.json, junit.xml, report.html + PNGs
        [--rig FILE]                        # on the real rig FILE describes (hil/rig.py)

Each scenario runs the real daemon (``homehub run``) on a fresh virtual home; one line per
scenario as it ends, the report at the end. Exit code 0 only if every scenario passed, 1 if
one failed, 2 for a bad command line or rig file. On a rig, a scenario needing what the rig
lacks is skipped with the reason (neither passed nor failed); 1 if nothing ran.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path

from hil.report import write_report
from hil.rig import Rig, RigError, open_rig
from hil.scenarios import SCENARIOS, by_name
from hil.scenarios.base import Scenario
from hil.scenarios.results import ScenarioResult
from hil.scenarios.runner import run_scenario


def build_parser() -> argparse.ArgumentParser:
    """The command line."""
    parser = argparse.ArgumentParser(prog="python -m hil", description=__doc__.split("\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)
    sub.add_parser("list", help="the scenarios")
    for name, help_text in (("run", "run the named scenarios"), ("all", "run every scenario")):
        p = sub.add_parser(name, help=help_text)
        if name == "run":
            p.add_argument("names", nargs="+", metavar="NAME")
        p.add_argument("--quick", action="store_true", help="only the quick subset")
        p.add_argument(
            "--report",
            type=Path,
            help="directory for results.json, junit.xml, report.html (default: a new one in /tmp)",
        )
        p.add_argument(
            "--rig",
            type=Path,
            metavar="FILE",
            help="run on the real rig FILE describes (hil/rig.example.toml); default: virtual",
        )
    return parser


async def run_all(
    scenarios: Sequence[Scenario],
    report_dir: Path,
    *,
    echo: bool = True,
    report: bool = True,
    rig: Rig | None = None,
) -> list[ScenarioResult]:
    """Run ``scenarios`` one after the other (each in ``report_dir/runs/<name>``), write the
    report into ``report_dir`` (unless ``report`` is False: hil/campaign.py writes it, with
    the fleet's run); the results."""
    results = []
    for scenario in scenarios:
        started = time.monotonic()
        result = await run_scenario(scenario, report_dir / "runs" / scenario.name, rig=rig)
        results.append(result)
        if echo:
            took = time.monotonic() - started
            verdict = "ok" if result.passed else "FAILED"
            if result.skipped is not None:
                verdict = f"SKIPPED ({result.skipped})"
            print(f"{scenario.name}: {verdict} in {took:.1f} s", flush=True)
            for line in result.failures():
                print(f"    {line}", flush=True)
    if report:
        await asyncio.to_thread(write_report, results, report_dir)
    return results


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point; the exit code."""
    args = build_parser().parse_args(argv)
    if args.command == "list":
        for s in SCENARIOS:
            print(f"{s.name:34} {'quick' if s.quick else '     '}  {s.purpose}")
        return 0
    try:
        chosen = [by_name(n) for n in args.names] if args.command == "run" else list(SCENARIOS)
    except KeyError as exc:
        print(f"python -m hil: {exc.args[0]}", file=sys.stderr)
        return 2
    if args.quick:
        chosen = [s for s in chosen if s.quick]
    try:
        rig = None if args.rig is None else open_rig(args.rig)
    except RigError as exc:
        print(f"python -m hil: {exc}", file=sys.stderr)
        return 2
    if rig is not None:
        print(rig.describe(), flush=True)
    report_dir = args.report or Path(tempfile.mkdtemp(prefix="homehub-hil-"))
    results = asyncio.run(run_all(chosen, report_dir, rig=rig))
    passed = sum(1 for r in results if r.passed)
    failed = sum(1 for r in results if r.failed)
    skipped = len(results) - passed - failed
    also = f", {skipped} skipped" if skipped else ""
    page = report_dir / "report.html"
    print(f"{passed} of {len(results)} scenarios passed{also}; report: {page}")
    return 0 if failed == 0 and (passed or not skipped) else 1


if __name__ == "__main__":
    raise SystemExit(main())
