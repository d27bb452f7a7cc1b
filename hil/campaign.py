"""``make hil``: every HIL scenario (hil/scenarios/) on the virtual home, and the report.

A thin wrapper of ``python -m hil all`` for the Makefile and CI: ``--rounds N`` runs the
whole set N times (a flaky recovery path shows up in repetition long before it shows up in a
patient's home), each round's report in ``<report>/round-<k>`` when N > 1; one line per
scenario, a summary line of JSON at the end. Exit code 0 only if every scenario of every
round passed.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import time
from collections.abc import Sequence
from pathlib import Path

from hil.__main__ import run_all
from hil.scenarios import SCENARIOS


def main(argv: Sequence[str] | None = None) -> int:
    """Run the campaign; the exit code."""
    parser = argparse.ArgumentParser(prog="python -m hil.campaign", description=__doc__)
    parser.add_argument("--rounds", type=int, default=1)
    parser.add_argument("--report", type=Path, default=Path("build/hil-report"))
    parser.add_argument("--quick", action="store_true", help="only make test's quick subset")
    args = parser.parse_args(argv)
    chosen = [s for s in SCENARIOS if s.quick or not args.quick]
    failed = 0
    started = time.monotonic()
    for round_no in range(1, args.rounds + 1):
        directory = args.report if args.rounds == 1 else args.report / f"round-{round_no}"
        results = asyncio.run(run_all(chosen, directory))
        failed += sum(1 for r in results if not r.passed)
        print(f"round {round_no}/{args.rounds}: report {directory / 'report.html'}", flush=True)
    print(
        json.dumps(
            {
                "rounds": args.rounds,
                "scenarios": [s.name for s in chosen],
                "failed": failed,
                "took_s": round(time.monotonic() - started, 1),
            }
        )
    )
    return 0 if failed == 0 else 1


if __name__ == "__main__":
    raise SystemExit(main())
